//! Changes at run time, pure: what `takt flag set|kill` asks for, turned into the flag's new
//! setting (or refused, saying why), and the flag documents with such settings written in.
//! The caller parses the patched document, so a change is checked as the file is.

use crate::define::{Flag, Kind, State};
use serde_json::{Value, json};
use std::fmt;
use takt_model::FlagSetting;

/// What a person asks of one flag in one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Serve this variant to everyone (the default variant, no targeting).
    Variant(String),
    /// A boolean flag on for this percentage of targeting keys (flagd's `fractional`).
    Rollout(u8),
    State(State),
}

/// Why a change was refused; the text says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl Flag {
    /// What decides this flag's answer.
    pub fn setting(&self) -> FlagSetting {
        FlagSetting {
            state: self.state,
            default_variant: self.default_variant.clone(),
            targeting: self.targeting.clone(),
            variants: self.variants.clone(),
        }
    }

    /// The variants a boolean flag answers `true` and `false` with.
    fn on_off(&self) -> Option<(&str, &str)> {
        let named = |want: bool| {
            self.variants
                .iter()
                .find(|(_, v)| v.as_bool() == Some(want))
                .map(|(k, _)| k.as_str())
        };
        Some((named(true)?, named(false)?))
    }

    /// The percentage of a rollout takt made (`takt flag set --rollout N`), if the targeting is
    /// one.
    pub fn rollout(&self) -> Option<u8> {
        let (on, off) = self.on_off()?;
        let t = self.targeting.as_ref()?;
        (0..=100u8).find(|n| *t == rollout_rule(on, off, *n))
    }
}

/// flagd's `fractional` split of `on` (n %) and `off` (the rest), bucketed by flag key and
/// targeting key as flagd does.
fn rollout_rule(on: &str, off: &str, n: u8) -> Value {
    json!({"fractional": [[on, n], [off, 100 - n]]})
}

/// The setting `flag` gets from `change`. A flag with a targeting rule of its own (not a
/// rollout takt made) keeps it unless `replace_targeting`: `--variant` and `--rollout` would
/// throw it away.
pub fn apply(flag: &Flag, change: &Change, replace_targeting: bool) -> Result<FlagSetting, Refused> {
    let mut s = flag.setting();
    let own_rule = flag.targeting.is_some() && flag.rollout().is_none();
    let keep = |what: &str| {
        Refused(format!(
            "flag `{}` has a targeting rule of its own; {what} would replace it: pass --replace-targeting to do so (or change the rule in takt.yml)",
            flag.key
        ))
    };
    match change {
        Change::State(state) => s.state = *state,
        Change::Variant(v) => {
            if !flag.variants.contains_key(v) {
                let names: Vec<&str> = flag.variants.keys().map(String::as_str).collect();
                return Err(Refused(format!(
                    "flag `{}` has no variant `{v}` (its variants: {})",
                    flag.key,
                    names.join(", ")
                )));
            }
            if own_rule && !replace_targeting {
                return Err(keep(&format!("serving `{v}` to everyone")));
            }
            s.default_variant = Some(v.clone());
            s.targeting = None;
            s.state = State::Enabled;
        }
        Change::Rollout(n) => {
            if *n > 100 {
                return Err(Refused(format!("--rollout {n}: a percentage is 0 to 100")));
            }
            let Some((on, off)) = flag.on_off().filter(|_| flag.kind == Kind::Boolean) else {
                return Err(Refused(format!(
                    "flag `{}` is {} flag: --rollout splits a boolean flag's true and false variants; use --variant, or a `fractional` rule in takt.yml",
                    flag.key,
                    match flag.kind {
                        Kind::Boolean => "a boolean flag without both a true and a false variant, not a",
                        Kind::String => "a string",
                        Kind::Integer => "an integer",
                        Kind::Float => "a float",
                        Kind::Object => "an object",
                    }
                )));
            };
            if own_rule && !replace_targeting {
                return Err(keep(&format!("a {n} % rollout")));
            }
            s.targeting = Some(rollout_rule(on, off, *n));
            if s.default_variant.is_none() {
                // Without a targeting key `fractional` names nothing: the default answers.
                s.default_variant = Some(off.to_string());
            }
            s.state = State::Enabled;
        }
    }
    Ok(s)
}

/// Whether a setting answers the same for everyone (no targeting, or disabled): a candidate
/// for removal once it has not changed for a while.
pub fn uniform(s: &FlagSetting) -> bool {
    s.state == State::Disabled || s.targeting.is_none()
}

/// The flag document `doc` with each `(key, setting)` written in: its state, default variant
/// and targeting (variants stay the file's). Keys the document does not define are left out.
pub fn patch<'a>(doc: &Value, settings: impl IntoIterator<Item = (&'a str, &'a FlagSetting)>) -> Value {
    let mut doc = doc.clone();
    for (key, s) in settings {
        let Some(Value::Object(f)) = doc.get_mut("flags").and_then(|f| f.get_mut(key)) else {
            continue;
        };
        f.insert("state".into(), json!(s.state));
        f.insert("defaultVariant".into(), json!(s.default_variant));
        match &s.targeting {
            Some(t) => f.insert("targeting".into(), t.clone()),
            None => f.remove("targeting"),
        };
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn doc() -> Value {
        json!({"flags": {
            "new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"},
            "color": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "red",
                       "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "blue"]}},
        }})
    }

    #[test]
    fn a_rollout_is_a_fractional_split_that_takt_recognises_again() {
        let set = parse(&doc()).unwrap();
        let f = set.get("new-checkout").unwrap();
        let s = apply(f, &Change::Rollout(25), false).unwrap();
        assert_eq!(s.targeting, Some(json!({"fractional": [["on", 25], ["off", 75]]})));
        let patched = parse(&patch(&doc(), [("new-checkout", &s)])).unwrap();
        let g = patched.get("new-checkout").unwrap();
        assert_eq!(g.rollout(), Some(25));
        // A rollout takt made may be changed again without --replace-targeting.
        assert!(apply(g, &Change::Rollout(50), false).is_ok());
        assert!(apply(g, &Change::Variant("on".into()), false).is_ok());
        // About a quarter of the keys are on.
        let on = (0..2000)
            .filter(|i| {
                let ctx = json!({"targetingKey": format!("user-{i}")});
                patched.evaluate("new-checkout", ctx.as_object().unwrap(), 0).value == Some(json!(true))
            })
            .count();
        assert!((400..600).contains(&on), "{on} of 2000 on");
    }

    #[test]
    fn a_rule_of_its_own_is_kept_unless_told_and_a_string_flag_takes_no_rollout() {
        let set = parse(&doc()).unwrap();
        let c = set.get("color").unwrap();
        let e = apply(c, &Change::Variant("blue".into()), false).unwrap_err();
        assert!(e.0.contains("--replace-targeting"), "{e}");
        let s = apply(c, &Change::Variant("blue".into()), true).unwrap();
        assert_eq!(
            (s.default_variant.as_deref(), s.targeting.is_none()),
            (Some("blue"), true)
        );
        let e = apply(c, &Change::Rollout(10), true).unwrap_err();
        assert!(e.0.contains("a string flag"), "{e}");
        let e = apply(c, &Change::Variant("green".into()), true).unwrap_err();
        assert!(e.0.contains("no variant `green`"), "{e}");
        // A state change keeps the rule.
        let s = apply(c, &Change::State(State::Disabled), false).unwrap();
        assert_eq!((s.state, s.targeting.is_some()), (State::Disabled, true));
        assert!(uniform(&s));
        assert!(!uniform(&c.setting()));
    }
}
