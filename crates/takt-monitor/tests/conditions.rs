//! No input makes the condition parser or evaluator panic: arbitrary text, and text built from
//! the language's own pieces (placeholders, paths, functions, operators) in any order.

use proptest::prelude::*;
use std::time::Duration;
use takt_monitor::condition::{Condition, Probe};

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[STATUS]".to_string()),
        Just("[BODY]".to_string()),
        Just("[BODY].a[0].b".to_string()),
        Just("[CERTIFICATE_EXPIRATION]".to_string()),
        Just(" == ".to_string()),
        Just(" < ".to_string()),
        Just("len(".to_string()),
        Just("has(".to_string()),
        Just("pat(".to_string()),
        Just("any(".to_string()),
        Just(")".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(".".to_string()),
        Just("*".to_string()),
        Just("48h".to_string()),
        Just("é".to_string()),
        "[a-z0-9,]{0,4}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn no_input_panics(text in prop_oneof![".{0,40}", prop::collection::vec(piece(), 0..8).prop_map(|v| v.concat())]) {
        if let Ok(c) = Condition::parse(&text) {
            let probes = [
                Probe::default(),
                Probe {
                    status: Some(200),
                    response_time: Duration::from_millis(5),
                    body: Some(r#"{"a":[{"b":"é*x"}]}"#.into()),
                    connected: true,
                    certificate_expiration: Some(Duration::from_secs(3600)),
                    ip: Some("::1".into()),
                    dns_rcode: Some("NOERROR".into()),
                },
            ];
            for p in &probes {
                let v = c.evaluate(p);
                prop_assert!(!v.explained.is_empty());
            }
        }
    }
}
