//! `flags:`: feature flags in flagd's schema, written as YAML (docs/flags.md). The section is
//! turned into a flagd document and checked by `takt-flags`; each of its problems is placed at
//! the line and column of the node its JSON path names. A flag's `environments:` may give an
//! environment its own `state`, `targeting` or `defaultVariant`; each environment's document is
//! checked too. `$include` names flagd JSON files (paths from the repository's root) whose
//! flags and evaluators join the section's, unchanged: their problems are placed in those files.

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

/// How many flagd files `flags: $include` may name.
const MAX_FLAG_FILES: usize = 20;

/// The flagd JSON files `flags: $include` names (a path or a list of them, from the
/// repository's root), for the caller to read (see [`crate::gitlab::IncludeWalk`]). Paths that
/// leave the repository are not asked for: `flags` reports them.
pub(crate) fn flag_files(root: &Node) -> Vec<(Pos, String)> {
    let Some(inc) = root.get("flags").and_then(|f| f.get("$include")) else {
        return Vec::new();
    };
    paths(inc)
        .into_iter()
        .filter_map(|n| Some((n.pos, n.as_str()?.to_string())))
        .filter(|(_, p)| inside(p))
        .take(MAX_FLAG_FILES)
        .collect()
}

/// The nodes `$include` names: a list, or one path.
fn paths(inc: &Node) -> Vec<&Node> {
    match &inc.kind {
        NodeKind::Seq(items) => items.iter().collect(),
        _ => vec![inc],
    }
}

/// A relative path that stays inside the repository.
fn inside(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && !p.split('/').any(|c| c == ".." || c.is_empty())
}

impl Cx {
    /// The flags of the flagd files `$include` names, added to `flags` and `evaluators` (with
    /// their positions, in the file's own lines); a key defined twice is a problem where it is
    /// defined again.
    fn included_flags(
        &mut self,
        inc: &Node,
        flags: &mut Map<String, Value>,
        evaluators: &mut Map<String, Value>,
        pos: &mut BTreeMap<String, Pos>,
    ) {
        let items = paths(inc);
        if items.len() > MAX_FLAG_FILES {
            self.err(
                inc.pos,
                format!("`$include` names {} files; the limit is {MAX_FLAG_FILES}", items.len()),
            );
            return;
        }
        for n in items {
            let Some(path) = n.as_str() else {
                self.err(
                    n.pos,
                    "`$include` names flagd JSON files by their paths from the repository's root",
                );
                continue;
            };
            if !inside(path) {
                self.err(
                    n.pos,
                    format!(
                        "`$include: {path}`: the path must be relative to the repository's root and stay inside it"
                    ),
                );
                continue;
            }
            let Some(bytes) = self.flag_files.get(path).cloned() else {
                self.err(
                    n.pos,
                    format!("`$include` names `{path}`, which is not in the repository"),
                );
                continue;
            };
            self.table.push(path.to_string());
            let offset = self.table.len() * crate::gitlab::INCLUDE_LINE_BASE;
            let Ok(text) = std::str::from_utf8(&bytes) else {
                self.err(n.pos, format!("`{path}` is not UTF-8"));
                continue;
            };
            let loaded = match crate::yaml::load_all(text, crate::yaml::Duplicates::Refuse) {
                Ok(l) => l,
                Err(errs) => {
                    for d in errs {
                        self.push(crate::gitlab::shifted_diag(d, offset));
                    }
                    continue;
                }
            };
            for d in loaded.problems {
                self.push(crate::gitlab::shifted_diag(d, offset));
            }
            let Some(doc) = loaded.documents.first().and_then(|(_, d)| d.as_ref()) else {
                self.err(
                    n.pos,
                    format!("`{path}` is empty: a flagd file holds `{{\"flags\": {{...}}}}`"),
                );
                continue;
            };
            let doc = crate::gitlab::shifted(doc, offset);
            let NodeKind::Map(entries) = &doc.kind else {
                self.err(doc.pos, format!("`{path}`: a flagd file is an object with `flags`"));
                continue;
            };
            for (k, v) in entries {
                match key(k) {
                    "flags" => {
                        let NodeKind::Map(fs) = &v.kind else {
                            self.err(v.pos, "`flags` maps flag keys to their definitions");
                            continue;
                        };
                        for (fk, fv) in fs {
                            let name = key(fk);
                            if flags.contains_key(name) {
                                self.err(fk.pos, format!("flag `{name}` is defined twice (in takt.yml or another `$include` file)"));
                                continue;
                            }
                            let j = self.json_of(fv, &format!("/flags/{}", seg(name)), pos);
                            flags.insert(name.to_string(), j);
                        }
                    }
                    "$evaluators" => {
                        let NodeKind::Map(es) = &v.kind else {
                            self.err(v.pos, "`$evaluators` maps names to JsonLogic rules");
                            continue;
                        };
                        for (ek, ev) in es {
                            let name = key(ek);
                            let j = self.json_of(ev, &format!("/$evaluators/{}", seg(name)), pos);
                            match evaluators.get(name) {
                                Some(seen) if *seen != j => self.err(
                                    ek.pos,
                                    format!("evaluator `{name}` is defined twice, differently (in takt.yml or another `$include` file)"),
                                ),
                                _ => {
                                    evaluators.insert(name.to_string(), j);
                                }
                            }
                        }
                    }
                    "$schema" | "metadata" => {}
                    other => self.err(k.pos, format!("unknown key `{other}` in flagd file `{path}`: a flagd file has flags, $evaluators, metadata and $schema")),
                }
            }
        }
    }

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
        let mut include = None;
        if let NodeKind::Map(entries) = &n.kind {
            for (k, v) in entries {
                let name = key(k);
                if name == "$evaluators" {
                    evaluators = Some(self.json_of(v, "/$evaluators", &mut pos));
                } else if name == "$include" {
                    include = Some(v);
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
        // Flags from flagd files: whole flags (an environment's own settings are takt.yml's).
        let mut evaluators = match evaluators {
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                self.err(
                    place(&pos, "/$evaluators"),
                    "`$evaluators` maps names to JsonLogic rules",
                );
                None
            }
            None => None,
        };
        if let Some(inc) = include {
            let mut e = evaluators.take().unwrap_or_default();
            self.included_flags(inc, &mut flags, &mut e, &mut pos);
            evaluators = (!e.is_empty()).then_some(e);
        }
        let mut base = Map::new();
        base.insert("flags".into(), Value::Object(flags));
        if let Some(e) = evaluators {
            base.insert("$evaluators".into(), Value::Object(e));
        }
        let base = Value::Object(base);
        let base_ok = match takt_flags::parse(&base) {
            Ok(_) => true,
            Err(problems) => {
                for p in problems {
                    self.err(place(&pos, &p.path), p.message);
                }
                false
            }
        };
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
                // Under what the environment changed: placed there. Elsewhere (an evaluator only
                // this environment's rule names, say): at the environment's first setting, unless
                // the file's own problems were reported already.
                for p in problems {
                    let Some(c) = changed
                        .iter()
                        .find(|c| p.path == **c || p.path.starts_with(&format!("{c}/")))
                    else {
                        if base_ok && let Some(first) = changed.first() {
                            let flag_at = first.rsplit_once('/').map_or(first.as_str(), |(f, _)| f);
                            let at = format!("{flag_at}/environments/{}", seg(&env));
                            self.err(
                                place(&pos, &at),
                                format!("in environment `{env}`: {} (at {})", p.message, p.path),
                            );
                        }
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
