//! Evaluation, as flagd does it: the state, then the targeting rule over the context (with
//! `$flagd.flagKey` and `$flagd.timestamp` added), then the variant it names.

use crate::define::{FlagSet, State};
use datalogic_rs::DataValue;
use datalogic_rs::bumpalo::Bump;
use datalogic_rs::datavalue::NumberValue;
use serde::Serialize;
use serde_json::{Map, Value, json};

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
        let (variant, reason) = match &flag.compiled {
            None => (flag.default_variant.clone(), Reason::Static),
            Some(logic) => {
                let mut data = context.clone();
                data.insert("$flagd".into(), json!({"flagKey": key, "timestamp": timestamp}));
                let data = Value::Object(data);
                let arena = Bump::new();
                match self.engine.evaluate(logic, &data, &arena) {
                    Err(e) => {
                        return Resolution::error(
                            key,
                            ErrorCode::General,
                            format!("the targeting rule of `{key}` failed: {e}"),
                        );
                    }
                    Ok(DataValue::Null) => (flag.default_variant.clone(), Reason::Default),
                    Ok(v) => match variant_name(v) {
                        Some(name) => (Some(name), Reason::TargetingMatch),
                        None => {
                            return Resolution::error(
                                key,
                                ErrorCode::General,
                                format!("the targeting rule of `{key}` returned no variant name"),
                            );
                        }
                    },
                }
            }
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
