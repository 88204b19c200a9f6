//! `flags:`: feature flags in flagd's schema, written as YAML (docs/flags.md). The section is
//! turned into a flagd document and checked by `takt-flags`; each of its problems is placed at
//! the line and column of the node its JSON path names. A flag's `environments:` may give an
//! environment its own `state`, `targeting` or `defaultVariant`; each environment's document is
//! checked too.

use super::{Cx, key};
use crate::diag::Pos;
use crate::model::FlagsConfig;
use crate::yaml::{Node, NodeKind};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use takt_flags::seg;

/// A flag's fields as one environment sets them.
type Override = (String, Map<String, Value>);

/// How many environments flags may give settings of their own.
const MAX_FLAG_ENVIRONMENTS: usize = 100;

/// What an environment may set for itself.
const ENV_KEYS: &[&str] = &["state", "targeting", "defaultVariant"];

/// A YAML scalar as JSON, by YAML 1.2's core schema (quoted scalars are strings).
fn scalar(value: &str, plain: bool) -> Value {
    if !plain {
        return Value::String(value.to_string());
    }
    match value {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        v => {
            if let Ok(i) = v.parse::<i64>() {
                return Value::from(i);
            }
            if v.contains(['.', 'e', 'E'])
                && let Ok(f) = v.parse::<f64>()
                && f.is_finite()
                && let Some(n) = serde_json::Number::from_f64(f)
            {
                return Value::Number(n);
            }
            Value::String(v.to_string())
        }
    }
}

impl Cx {
    /// The node as JSON; every node's position recorded under its JSON pointer.
    fn json_of(&mut self, n: &Node, at: &str, pos: &mut BTreeMap<String, Pos>) -> Value {
        pos.insert(at.to_string(), n.pos);
        match &n.kind {
            NodeKind::Scalar { value, plain } => scalar(value, *plain),
            NodeKind::Seq(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| self.json_of(x, &format!("{at}/{i}"), pos))
                    .collect(),
            ),
            NodeKind::Map(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    let name = key(k).to_string();
                    let value = self.json_of(v, &format!("{at}/{}", seg(&name)), pos);
                    m.insert(name, value);
                }
                Value::Object(m)
            }
            NodeKind::Reference(_) => {
                self.err(n.pos, "`!reference` is not allowed in `flags`");
                Value::Null
            }
        }
    }

    pub(super) fn flags(&mut self, n: &Node) -> Option<FlagsConfig> {
        let NodeKind::Map(_) = &n.kind else {
            self.err(
                n.pos,
                "`flags` maps flag keys to their definitions (and may hold `$evaluators`)",
            );
            return None;
        };
        // As flagd lays it out: the flags under /flags, `$evaluators` beside them.
        let mut pos = BTreeMap::new();
        pos.insert(String::new(), n.pos);
        pos.insert("/flags".to_string(), n.pos);
        let mut flags = Map::new();
        let mut evaluators = None;
        if let NodeKind::Map(entries) = &n.kind {
            for (k, v) in entries {
                let name = key(k);
                if name == "$evaluators" {
                    evaluators = Some(self.json_of(v, "/$evaluators", &mut pos));
                } else {
                    let j = self.json_of(v, &format!("/flags/{}", seg(name)), &mut pos);
                    flags.insert(name.to_string(), j);
                }
            }
        }
        // Each environment's overrides, taken out of the flags.
        let mut overrides: BTreeMap<String, Vec<Override>> = BTreeMap::new();
        for (flag, def) in flags.iter_mut() {
            let Some(envs) = def.as_object_mut().and_then(|d| d.remove("environments")) else {
                continue;
            };
            let at = format!("/flags/{}/environments", seg(flag));
            let Value::Object(envs) = envs else {
                self.err(
                    place(&pos, &at),
                    "a flag's `environments` maps environment names to their state, targeting or defaultVariant",
                );
                continue;
            };
            for (env, o) in envs {
                let eat = format!("{at}/{}", seg(&env));
                let Value::Object(o) = o else {
                    self.err(
                        place(&pos, &eat),
                        format!("environment `{env}` of flag `{flag}`: give state, targeting or defaultVariant"),
                    );
                    continue;
                };
                for k in o.keys().filter(|k| !ENV_KEYS.contains(&k.as_str())) {
                    self.err(
                        place(&pos, &format!("{eat}/{}", seg(k))),
                        format!("unknown key `{k}` for environment `{env}` of flag `{flag}`: an environment sets state, targeting or defaultVariant"),
                    );
                }
                overrides.entry(env).or_default().push((flag.clone(), o));
            }
        }
        let mut base = Map::new();
        base.insert("flags".into(), Value::Object(flags));
        if let Some(e) = evaluators {
            base.insert("$evaluators".into(), e);
        }
        let base = Value::Object(base);
        if let Err(problems) = takt_flags::parse(&base) {
            for p in problems {
                self.err(place(&pos, &p.path), p.message);
            }
        }
        let mut environments = BTreeMap::new();
        // Each environment's document is checked whole: as many as there can be environments.
        if overrides.len() > MAX_FLAG_ENVIRONMENTS {
            self.err(
                n.pos,
                format!(
                    "flags set {} environments of their own; the limit is {MAX_FLAG_ENVIRONMENTS}",
                    overrides.len()
                ),
            );
            overrides.clear();
        }
        for (env, changes) in overrides {
            let mut doc = base.clone();
            let mut changed: Vec<String> = Vec::new();
            for (flag, o) in changes {
                if let Some(def) = doc
                    .pointer_mut(&format!("/flags/{}", seg(&flag)))
                    .and_then(Value::as_object_mut)
                {
                    for (k, v) in o.into_iter().filter(|(k, _)| ENV_KEYS.contains(&k.as_str())) {
                        changed.push(format!("/flags/{}/{}", seg(&flag), seg(&k)));
                        def.insert(k, v);
                    }
                }
            }
            if let Err(problems) = takt_flags::parse(&doc) {
                // Only what the environment changed: the rest was reported for the file.
                for p in problems {
                    let Some(c) = changed
                        .iter()
                        .find(|c| p.path == **c || p.path.starts_with(&format!("{c}/")))
                    else {
                        continue;
                    };
                    let (flag_at, field) = c.rsplit_once('/').unwrap_or((c.as_str(), ""));
                    let moved = format!("{flag_at}/environments/{}/{field}{}", seg(&env), &p.path[c.len()..]);
                    self.err(place(&pos, &moved), format!("in environment `{env}`: {}", p.message));
                }
            }
            environments.insert(env, doc);
        }
        Some(FlagsConfig {
            document: base,
            environments,
            pos: n.pos,
        })
    }
}

/// Where a JSON pointer's node is: its own position, or its nearest parent's.
fn place(pos: &BTreeMap<String, Pos>, at: &str) -> Pos {
    let mut p = at;
    loop {
        if let Some(x) = pos.get(p) {
            return *x;
        }
        match p.rsplit_once('/') {
            Some((parent, _)) => p = parent,
            None => return pos.values().next().copied().unwrap_or(Pos { line: 1, col: 1 }),
        }
    }
}
