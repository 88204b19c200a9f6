//! Flag definitions in flagd's schema, read from JSON (flagd's files, or `flags:` of takt.yml
//! turned into JSON), checked as a whole: every problem is reported, each at its JSON path.

use datalogic_rs::bumpalo::Bump;
use datalogic_rs::operator::EvalContext;
use datalogic_rs::{CustomOperator, DataValue, Engine, Logic};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A flag's `state` (the event log's type: a change records it).
pub use takt_model::FlagState as State;

/// The type of a flag's variants (all of them: mixed types are a problem).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Boolean,
    String,
    Integer,
    Float,
    Object,
}

impl Kind {
    /// `boolean`, `string`, `integer`, `float` or `object`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Boolean => "boolean",
            Kind::String => "string",
            Kind::Integer => "integer",
            Kind::Float => "float",
            Kind::Object => "object",
        }
    }

    fn of(v: &Value) -> Option<Kind> {
        Some(match v {
            Value::Bool(_) => Kind::Boolean,
            Value::String(_) => Kind::String,
            Value::Number(n) if n.is_i64() || n.is_u64() => Kind::Integer,
            Value::Number(_) => Kind::Float,
            Value::Object(_) => Kind::Object,
            Value::Null | Value::Array(_) => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Boolean => "a boolean",
            Kind::String => "a string",
            Kind::Integer => "an integer",
            Kind::Float => "a float",
            Kind::Object => "an object",
        }
    }
}

/// One flag, checked; its targeting compiled once.
#[derive(Debug, Clone)]
pub struct Flag {
    pub key: String,
    pub state: State,
    pub kind: Kind,
    pub variants: BTreeMap<String, Value>,
    /// flagd allows none (null or absent): without a targeting match the client's code default
    /// applies.
    pub default_variant: Option<String>,
    /// The targeting rule with every `$ref` replaced; `None` for none (or `{}`).
    pub targeting: Option<Value>,
    pub(crate) compiled: Option<Arc<Logic>>,
    pub metadata: Map<String, Value>,
}

/// A set of flags (one flagd document) and the engine that evaluates them.
pub struct FlagSet {
    pub(crate) flags: BTreeMap<String, Flag>,
    pub(crate) engine: Engine,
    /// The document's own `metadata`.
    pub metadata: Map<String, Value>,
}

impl fmt::Debug for FlagSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagSet")
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

impl FlagSet {
    pub fn get(&self, key: &str) -> Option<&Flag> {
        self.flags.get(key)
    }

    /// Every flag, by key.
    pub fn flags(&self) -> impl Iterator<Item = &Flag> {
        self.flags.values()
    }
}

/// A problem in a flag document, at a JSON pointer (`/flags/new-checkout/defaultVariant`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// One segment of a JSON pointer (RFC 6901: `~` and `/` escaped), as [`Problem::path`]s are
/// written.
pub fn seg(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

struct Cx {
    problems: Vec<Problem>,
    /// Rule nodes made so far by resolving `$ref`s, over the whole document: evaluators that
    /// name each other several times would otherwise grow without bound (a "ref bomb").
    nodes: usize,
    /// The operators a rule may use (an unknown one would fail only when evaluated).
    ops: std::collections::BTreeSet<String>,
}

impl Cx {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// How deep `$ref`s may nest (an evaluator that names itself would never end).
const MAX_REF_DEPTH: usize = 16;

/// How many rule nodes a document's targeting rules may hold once every `$ref` is replaced.
pub const MAX_RULE_NODES: usize = 200_000;

/// Reads and checks a flagd document: `{"flags": {...}, "$evaluators"?: {...}, "metadata"?: {...}}`.
pub fn parse(doc: &Value) -> Result<FlagSet, Vec<Problem>> {
    let engine = engine();
    let mut ops: std::collections::BTreeSet<String> = engine.builtin_operator_names().map(str::to_string).collect();
    ops.extend(["starts_with", "ends_with"].map(String::from));
    let mut cx = Cx {
        problems: Vec::new(),
        nodes: 0,
        ops,
    };
    let Some(top) = doc.as_object() else {
        cx.err("", "a flag document is an object with `flags`");
        return Err(cx.problems);
    };
    for k in top.keys() {
        if !["$schema", "flags", "$evaluators", "metadata"].contains(&k.as_str()) {
            cx.err(
                &format!("/{}", seg(k)),
                format!("unknown key `{k}`: a flag document has flags, $evaluators and metadata"),
            );
        }
    }
    let empty = Map::new();
    let evaluators = match top.get("$evaluators") {
        None => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            cx.err("/$evaluators", "`$evaluators` maps names to JsonLogic rules");
            &empty
        }
    };
    let metadata = metadata(&mut cx, top.get("metadata"), "/metadata");
    let mut flags = BTreeMap::new();
    match top.get("flags") {
        Some(Value::Object(m)) => {
            for (key, def) in m {
                if let Some(f) = flag(&mut cx, &engine, evaluators, key, def) {
                    flags.insert(key.clone(), f);
                }
            }
        }
        Some(_) => cx.err("/flags", "`flags` maps flag keys to their definitions"),
        None => cx.err("", "a flag document needs `flags`"),
    }
    if cx.problems.is_empty() {
        Ok(FlagSet {
            flags,
            engine,
            metadata,
        })
    } else {
        Err(cx.problems)
    }
}

fn metadata(cx: &mut Cx, v: Option<&Value>, at: &str) -> Map<String, Value> {
    match v {
        None => Map::new(),
        Some(Value::Object(m)) => {
            for (k, x) in m {
                if !matches!(x, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                    cx.err(
                        &format!("{at}/{}", seg(k)),
                        "metadata values are strings, numbers or booleans",
                    );
                }
            }
            m.clone()
        }
        Some(_) => {
            cx.err(at, "`metadata` is an object");
            Map::new()
        }
    }
}

fn flag(cx: &mut Cx, engine: &Engine, evaluators: &Map<String, Value>, key: &str, def: &Value) -> Option<Flag> {
    let at = format!("/flags/{}", seg(key));
    if key.is_empty() {
        cx.err(&at, "a flag key cannot be empty");
    }
    let Some(m) = def.as_object() else {
        cx.err(&at, format!("flag `{key}` must be an object with state and variants"));
        return None;
    };
    let before = cx.problems.len();
    for k in m.keys() {
        if !["state", "variants", "defaultVariant", "targeting", "metadata"].contains(&k.as_str()) {
            cx.err(
                &format!("{at}/{}", seg(k)),
                format!(
                    "unknown key `{k}` in flag `{key}`: use state, variants, defaultVariant, targeting or metadata"
                ),
            );
        }
    }
    let state = match m.get("state").and_then(Value::as_str) {
        Some("ENABLED") => State::Enabled,
        Some("DISABLED") => State::Disabled,
        _ => {
            cx.err(
                &format!("{at}/state"),
                format!("flag `{key}` needs `state`: ENABLED or DISABLED"),
            );
            State::Disabled
        }
    };
    let mut variants = BTreeMap::new();
    let mut kind: Option<(Kind, String)> = None;
    match m.get("variants") {
        Some(Value::Object(vs)) if !vs.is_empty() => {
            for (name, v) in vs {
                let vat = format!("{at}/variants/{}", seg(name));
                let Some(k) = Kind::of(v) else {
                    cx.err(
                        &vat,
                        format!("variant `{name}` must be a boolean, string, number or object"),
                    );
                    continue;
                };
                kind = match kind {
                    None => Some((k, name.clone())),
                    Some((seen, first)) => match (seen, k) {
                        (a, b) if a == b => Some((a, first)),
                        (Kind::Integer | Kind::Float, Kind::Integer | Kind::Float) => Some((Kind::Float, first)),
                        (seen, k) => {
                            cx.err(
                                &vat,
                                format!(
                                    "variants of mixed types: `{first}` is {}, `{name}` is {}",
                                    seen.name(),
                                    k.name()
                                ),
                            );
                            Some((seen, first))
                        }
                    },
                };
                variants.insert(name.clone(), v.clone());
            }
        }
        _ => cx.err(
            &format!("{at}/variants"),
            format!("flag `{key}` needs `variants`: an object of at least one named value"),
        ),
    }
    let names = || variants.keys().cloned().collect::<Vec<_>>().join(", ");
    let default_variant = match m.get("defaultVariant") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => {
            if !variants.is_empty() && !variants.contains_key(d) {
                cx.err(
                    &format!("{at}/defaultVariant"),
                    format!(
                        "defaultVariant `{d}` names no variant of `{key}` (its variants: {})",
                        names()
                    ),
                );
            }
            Some(d.clone())
        }
        Some(_) => {
            cx.err(
                &format!("{at}/defaultVariant"),
                "`defaultVariant` is a variant's name, or null",
            );
            None
        }
    };
    let metadata = metadata(cx, m.get("metadata"), &format!("{at}/metadata"));
    let tat = format!("{at}/targeting");
    let targeting = match m.get("targeting") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) if o.is_empty() => None,
        Some(t) => Some(resolve(cx, evaluators, t, &tat, 0)),
    };
    let compiled = match &targeting {
        Some(t) => {
            check_results(cx, t, &variants, key, &tat);
            match engine.compile(t) {
                Ok(l) => Some(Arc::new(l)),
                Err(e) => {
                    cx.err(&tat, format!("flag `{key}`: invalid JsonLogic: {e}"));
                    None
                }
            }
        }
        None => None,
    };
    if cx.problems.len() > before {
        return None;
    }
    Some(Flag {
        key: key.to_string(),
        state,
        kind: kind.map_or(Kind::Boolean, |(k, _)| k),
        variants,
        default_variant,
        targeting,
        compiled,
        metadata,
    })
}

/// The rule with every `{"$ref": NAME}` replaced by `$evaluators.NAME` (itself resolved).
fn resolve(cx: &mut Cx, evaluators: &Map<String, Value>, v: &Value, at: &str, depth: usize) -> Value {
    cx.nodes += 1;
    if cx.nodes > MAX_RULE_NODES {
        if cx.nodes == MAX_RULE_NODES + 1 {
            cx.err(
                at,
                format!("the targeting rules hold more than {MAX_RULE_NODES} nodes once their `$ref`s are replaced: use fewer, smaller evaluators"),
            );
        }
        return Value::Null;
    }
    match v {
        Value::Object(o) if o.len() == 1 && o.contains_key("$ref") => {
            let Some(name) = o.get("$ref").and_then(Value::as_str) else {
                cx.err(at, "`$ref` names an evaluator of `$evaluators`");
                return Value::Null;
            };
            if depth >= MAX_REF_DEPTH {
                cx.err(
                    at,
                    format!("`$ref: {name}` nests deeper than {MAX_REF_DEPTH} (an evaluator that names itself?)"),
                );
                return Value::Null;
            }
            match evaluators.get(name) {
                Some(e) => resolve(cx, evaluators, e, &format!("/$evaluators/{}", seg(name)), depth + 1),
                None => {
                    let known: Vec<&str> = evaluators.keys().map(String::as_str).collect();
                    cx.err(
                        at,
                        format!(
                            "`$ref: {name}` names no evaluator (`$evaluators` has: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                    Value::Null
                }
            }
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    (
                        k.clone(),
                        resolve(cx, evaluators, x, &format!("{at}/{}", seg(k)), depth),
                    )
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, x)| resolve(cx, evaluators, x, &format!("{at}/{i}"), depth))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What a rule can be seen to return without running it: the string results of `if` and the
/// variants of `fractional` must name variants, and `fractional`'s weights are whole numbers.
fn check_results(cx: &mut Cx, v: &Value, variants: &BTreeMap<String, Value>, key: &str, at: &str) {
    let names = || variants.keys().cloned().collect::<Vec<_>>().join(", ");
    let named = |cx: &mut Cx, r: &Value, at: &str| {
        if let Value::String(s) = r
            && !variants.contains_key(s)
        {
            cx.err(
                at,
                format!(
                    "the rule returns `{s}`, which names no variant of `{key}` (its variants: {})",
                    names()
                ),
            );
        }
    };
    match v {
        Value::Object(o) => {
            if let Some(op) = o.keys().next().filter(|op| o.len() == 1 && !cx.ops.contains(*op)) {
                cx.err(
                    &format!("{at}/{}", seg(op)),
                    format!("unknown operator `{op}` in the targeting of `{key}` (flagd's: JsonLogic's, fractional, sem_ver, starts_with, ends_with)"),
                );
            }
            for (op, args) in o {
                let aat = format!("{at}/{}", seg(op));
                match (op.as_str(), args) {
                    ("if" | "?:", Value::Array(a)) => {
                        for (i, r) in a.iter().enumerate() {
                            let result = i % 2 == 1 || (i == a.len() - 1 && a.len() % 2 == 1 && i > 0);
                            if result {
                                named(cx, r, &format!("{aat}/{i}"));
                            }
                        }
                    }
                    ("fractional", Value::Array(a)) => {
                        for (i, b) in a.iter().enumerate() {
                            let Value::Array(bucket) = b else { continue };
                            let bat = format!("{aat}/{i}");
                            if bucket.is_empty() || bucket.len() > 2 {
                                cx.err(&bat, "a `fractional` bucket is [variant] or [variant, weight]");
                                continue;
                            }
                            named(cx, &bucket[0], &format!("{bat}/0"));
                            if let Some(w) = bucket.get(1)
                                && !w.as_i64().is_some_and(|w| (0..=i64::from(i32::MAX)).contains(&w))
                                && !w.is_object()
                            {
                                cx.err(
                                    &format!("{bat}/1"),
                                    format!("weight `{w}` is not a whole number from 0 to 2147483647"),
                                );
                            }
                        }
                    }
                    _ => {}
                }
                check_results(cx, args, variants, key, &aat);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                check_results(cx, x, variants, key, &format!("{at}/{i}"));
            }
        }
        _ => {}
    }
}

/// JsonLogic's core, flagd's `fractional` and `sem_ver` (datalogic-rs's `flagd` feature), and
/// flagd's `starts_with` / `ends_with`: strings only, anything else is null.
fn engine() -> Engine {
    Engine::builder()
        .add_operator("starts_with", Affix { start: true })
        .add_operator("ends_with", Affix { start: false })
        .build()
}

struct Affix {
    start: bool,
}

impl CustomOperator for Affix {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        _ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> datalogic_rs::Result<&'a DataValue<'a>> {
        let out = match args {
            [DataValue::String(s), DataValue::String(affix)] => DataValue::Bool(if self.start {
                s.starts_with(affix)
            } else {
                s.ends_with(affix)
            }),
            _ => DataValue::Null,
        };
        Ok(arena.alloc(out))
    }
}
