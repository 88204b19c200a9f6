//! Evaluation, as flagd does it: the state, then the targeting rule over the context (with
//! `$flagd.flagKey` and `$flagd.timestamp` added), then the variant it names.

use crate::define::{FlagSet, State};
use datalogic_rs::DataValue;
use datalogic_rs::bumpalo::Bump;
use datalogic_rs::datavalue::NumberValue;
use serde::Serialize;
use serde_json::{Map, Value};
use std::cell::RefCell;

thread_local! {
    /// Each thread's evaluation arena, emptied before each evaluation (its memory kept).
    static ARENA: RefCell<Bump> = RefCell::new(Bump::new());
}

/// The rule's data: the context's values, borrowed into the arena as they are (no copy of its
/// strings), with `$flagd` (`flagKey`, `timestamp`) in place of any the caller sent.
fn root<'a>(context: &'a Map<String, Value>, key: &'a str, timestamp: i64, arena: &'a Bump) -> DataValue<'a> {
    let flagd: &[(&str, DataValue<'_>)] = arena.alloc_slice_fill_iter([
        ("flagKey", DataValue::String(key)),
        ("timestamp", DataValue::Number(NumberValue::Integer(timestamp))),
    ]);
    let mut entries = datalogic_rs::bumpalo::collections::Vec::with_capacity_in(context.len() + 1, arena);
    entries.extend(
        context
            .iter()
            .filter(|(k, _)| k.as_str() != "$flagd")
            .map(|(k, v)| (k.as_str(), data(v, arena))),
    );
    entries.push(("$flagd", DataValue::Object(flagd)));
    DataValue::Object(entries.into_bump_slice())
}

fn data<'a>(v: &'a Value, arena: &'a Bump) -> DataValue<'a> {
    match v {
        Value::Null => DataValue::Null,
        Value::Bool(b) => DataValue::Bool(*b),
        Value::Number(n) => DataValue::Number(match n.as_i64() {
            Some(i) => NumberValue::Integer(i),
            None => NumberValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => DataValue::String(s),
        Value::Array(a) => DataValue::Array(arena.alloc_slice_fill_iter(a.iter().map(|x| data(x, arena)))),
        Value::Object(m) => {
            DataValue::Object(arena.alloc_slice_fill_iter(m.iter().map(|(k, x)| (k.as_str(), data(x, arena)))))
        }
    }
}

/// Why an evaluation answered what it did (OpenFeature's reasons, as flagd sends them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// No targeting: the default variant.
    Static,
    /// The targeting rule named the variant.
    TargetingMatch,
    /// The targeting rule named none (or there is no default variant): the default applies.
    Default,
    /// The flag is disabled: no value, the client's code default applies.
    Disabled,
    Error,
}

/// What went wrong (OpenFeature's error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    FlagNotFound,
    General,
}

/// One evaluation. `value` is `None` where the client should use its code default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolution {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub reason: Reason,
    #[serde(rename = "errorCode", skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    #[serde(rename = "errorDetails", skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Reason {
    /// The reason as OFREP writes it (`TARGETING_MATCH`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

impl Resolution {
    fn new(key: &str, reason: Reason) -> Resolution {
        Resolution {
            key: key.to_string(),
            value: None,
            variant: None,
            reason,
            error: None,
            message: None,
        }
    }

    fn error(key: &str, code: ErrorCode, message: String) -> Resolution {
        Resolution {
            error: Some(code),
            message: Some(message),
            ..Resolution::new(key, Reason::Error)
        }
    }
}

impl FlagSet {
    /// Evaluates flag `key` for `context` (an OpenFeature evaluation context: `targetingKey`
    /// and any attributes) at `timestamp` (Unix seconds, the `$flagd.timestamp` of rules).
    pub fn evaluate(&self, key: &str, context: &Map<String, Value>, timestamp: i64) -> Resolution {
        let Some(flag) = self.flags.get(key) else {
            return Resolution::error(key, ErrorCode::FlagNotFound, format!("no flag `{key}`"));
        };
        if flag.state == State::Disabled {
            return Resolution::new(key, Reason::Disabled);
        }
        let decided = match &flag.compiled {
            None => Ok((flag.default_variant.clone(), Reason::Static)),
            Some(logic) => ARENA.with(|cell| {
                let mut arena = cell.borrow_mut();
                arena.reset();
                let arena: &Bump = &arena;
                let data = root(context, key, timestamp, arena);
                match self.engine.evaluate(logic, data, arena) {
                    Err(e) => Err(Resolution::error(
                        key,
                        ErrorCode::General,
                        format!("the targeting rule of `{key}` failed: {e}"),
                    )),
                    Ok(DataValue::Null) => Ok((flag.default_variant.clone(), Reason::Default)),
                    Ok(v) => match variant_name(v) {
                        Some(name) => Ok((Some(name), Reason::TargetingMatch)),
                        None => Err(Resolution::error(
                            key,
                            ErrorCode::General,
                            format!("the targeting rule of `{key}` returned no variant name"),
                        )),
                    },
                }
            }),
        };
        let (variant, reason) = match decided {
            Ok(d) => d,
            Err(r) => return r,
        };
        let Some(variant) = variant else {
            // No default variant: the client's code default.
            return Resolution::new(key, Reason::Default);
        };
        match flag.variants.get(&variant) {
            Some(value) => Resolution {
                value: Some(value.clone()),
                variant: Some(variant),
                ..Resolution::new(key, reason)
            },
            None => Resolution::error(
                key,
                ErrorCode::General,
                format!("variant `{variant}` not found in flag `{key}`"),
            ),
        }
    }
}

/// A rule's result as a variant name, as flagd reads it (`toString()`): strings as they are,
/// booleans and numbers written out.
fn variant_name(v: &DataValue<'_>) -> Option<String> {
    Some(match v {
        DataValue::String(s) => (*s).to_string(),
        DataValue::Bool(b) => b.to_string(),
        DataValue::Number(NumberValue::Integer(i)) => i.to_string(),
        DataValue::Number(NumberValue::Float(f)) => f.to_string(),
        _ => return None,
    })
}
