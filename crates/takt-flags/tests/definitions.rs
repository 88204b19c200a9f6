//! Flag definitions: every broken one gets its own problem at its JSON path; valid ones
//! evaluate with flagd's reasons.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use serde_json::{Map, Value, json};
use takt_flags::{ErrorCode, Kind, Reason, parse};

fn problems(doc: Value) -> Vec<String> {
    parse(&doc).unwrap_err().iter().map(ToString::to_string).collect()
}

#[test]
fn each_broken_definition_says_where_and_why() {
    let cases = [
        (
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": true, "b": "x"}}}}),
            "/flags/f/variants/b: variants of mixed types: `a` is a boolean, `b` is a string",
        ),
        (
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "z"}}}),
            "/flags/f/defaultVariant: defaultVariant `z` names no variant of `f` (its variants: a)",
        ),
        (
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"on": 1, "off": 0}, "defaultVariant": "off",
                "targeting": {"if": [{"==": [{"var": "x"}, 1]}, "onn", "off"]}}}}),
            "/flags/f/targeting/if/1: the rule returns `onn`, which names no variant of `f` (its variants: off, on)",
        ),
        (
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
                "targeting": {"fractional": [["a", 2.5], ["b", 1]]}}}}),
            "/flags/f/targeting/fractional/0/1: weight `2.5` is not a whole number from 0 to 2147483647",
        ),
        (
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a",
                "targeting": {"no_such_op": [1]}}}}),
            "/flags/f/targeting/no_such_op: unknown operator `no_such_op` in the targeting of `f`",
        ),
        (
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": "a"}, "targeting": {"$ref": "nope"}}},
                "$evaluators": {"emails": {"in": [{"var": "email"}, ["a@b"]]}}}),
            "/flags/f/targeting: `$ref: nope` names no evaluator (`$evaluators` has: emails)",
        ),
        (
            json!({"flags": {"f": {"state": "ON", "variants": {"a": "a"}}}}),
            "/flags/f/state: flag `f` needs `state`: ENABLED or DISABLED",
        ),
        (
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVarient": "a"}}}),
            "/flags/f/defaultVarient: unknown key `defaultVarient` in flag `f`",
        ),
        (
            json!({"flags": {"f": {"state": "ENABLED", "variants": {}}}}),
            "/flags/f/variants: flag `f` needs `variants`",
        ),
        (json!({"flag": {}}), "/flag: unknown key `flag`"),
    ];
    for (doc, says) in cases {
        let p = problems(doc.clone());
        assert!(
            p.iter().any(|x| x.starts_with(says)),
            "{doc}\nwanted `{says}`, got {p:#?}"
        );
    }
    // Evaluators that name each other over and over do not grow without bound.
    let mut evaluators = serde_json::Map::new();
    evaluators.insert("e0".into(), json!({"==": [1, 1]}));
    for i in 1..40 {
        let r = json!({"$ref": format!("e{}", i - 1)});
        evaluators.insert(format!("e{i}"), json!({"and": [r, r, r, r]}));
    }
    let bomb = json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a",
        "targeting": {"if": [{"$ref": "e15"}, "a", "a"]}}}, "$evaluators": evaluators});
    let p = problems(bomb);
    assert!(
        p.iter()
            .any(|x| x.contains("more than 200000 nodes once their `$ref`s are replaced")),
        "{p:#?}"
    );
    // All at once, not the first only.
    let p = problems(json!({"flags": {
        "a": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "y"},
        "b": {"state": "NOPE", "variants": {"x": 1}}
    }}));
    assert_eq!(p.len(), 2, "{p:#?}");
}

#[test]
fn evaluations_answer_with_flagds_reasons() {
    let set = parse(&json!({
        "flags": {
            "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
            "killed": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
            "no-default": {"state": "ENABLED", "variants": {"big": 10, "small": 1.5}, "defaultVariant": null,
                "targeting": {"if": [{"$ref": "staff"}, "big", null]}},
            "color": {"state": "ENABLED", "variants": {"red": {"hex": "f00"}, "blue": {"hex": "00f"}}, "defaultVariant": "blue",
                "targeting": {"if": [{"$ref": "staff"}, "red"]}},
            "bool-rule": {"state": "ENABLED", "variants": {"true": "yes", "false": "no"}, "defaultVariant": "false",
                "targeting": {"starts_with": [{"var": "email"}, "ops"]}},
            "key-of": {"state": "ENABLED", "variants": {"key-of": "me", "other": "not me"}, "defaultVariant": "other",
                "targeting": {"var": "$flagd.flagKey"}},
            "after": {"state": "ENABLED", "variants": {"old": "old", "new": "new"}, "defaultVariant": "old",
                "targeting": {"if": [{">": [{"var": "$flagd.timestamp"}, 1_800_000_000]}, "new", "old"]}}
        },
        "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@corp.example"]}}
    }))
    .unwrap();
    let ctx = |email: &str| -> Map<String, Value> {
        json!({"targetingKey": "u-1", "email": email})
            .as_object()
            .unwrap()
            .clone()
    };
    let staff = ctx("ada@corp.example");
    let guest = ctx("bob@example.org");
    let at = 1_700_000_000;

    let r = set.evaluate("static", &guest, at);
    assert_eq!((r.reason, r.value), (Reason::Static, Some(json!(true))));
    let r = set.evaluate("killed", &guest, at);
    assert_eq!((r.reason, r.value, r.variant), (Reason::Disabled, None, None));
    let r = set.evaluate("no-default", &staff, at);
    assert_eq!((r.reason, r.value), (Reason::TargetingMatch, Some(json!(10))));
    let r = set.evaluate("no-default", &guest, at);
    assert_eq!(
        (r.reason, r.value),
        (Reason::Default, None),
        "the client's code default"
    );
    assert_eq!(set.get("no-default").unwrap().kind, Kind::Float);
    let r = set.evaluate("color", &guest, at);
    assert_eq!((r.reason, r.variant.as_deref()), (Reason::Default, Some("blue")));
    let r = set.evaluate("color", &staff, at);
    assert_eq!(r.value, Some(json!({"hex": "f00"})));
    let r = set.evaluate("bool-rule", &ctx("ops@x"), at);
    assert_eq!((r.reason, r.value), (Reason::TargetingMatch, Some(json!("yes"))));
    assert_eq!(set.evaluate("key-of", &guest, at).value, Some(json!("me")));
    assert_eq!(set.evaluate("after", &guest, at).variant.as_deref(), Some("old"));
    assert_eq!(
        set.evaluate("after", &guest, 1_900_000_000).variant.as_deref(),
        Some("new")
    );
    let r = set.evaluate("nope", &guest, at);
    assert_eq!((r.reason, r.error), (Reason::Error, Some(ErrorCode::FlagNotFound)));
    // OFREP's shape: no value where the client uses its code default.
    let j = serde_json::to_value(set.evaluate("killed", &guest, at)).unwrap();
    assert_eq!(j, json!({"key": "killed", "reason": "DISABLED"}));
}
