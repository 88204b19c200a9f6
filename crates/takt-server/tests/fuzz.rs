//! Property tests over the parsers that read what strangers send: webhook push payloads, ref
//! names, artifact names, `Authorization` values and `Range` headers. Whatever the input, they
//! answer (a value or an error that says why), never panic, and what they accept is safe.
//! Case counts are fixed, so the run is bounded (a few seconds in the dev profile).

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use proptest::prelude::*;
use takt_server::hooks::parse_push;
use takt_server::projects::check_ref_name;

/// Pieces that real and hostile payloads are made of.
const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"ref\"",
    "\"after\"",
    "\"deleted\"",
    "\"refs/heads/main\"",
    "\"refs/tags/v1\"",
    "\"refs/heads/../../etc\"",
    "\"refs/heads/a.lock\"",
    "\"refs/heads/\"",
    "\"0000000000000000000000000000000000000000\"",
    "\"0123456789abcdef0123456789abcdef01234567\"",
    "\"xyz\"",
    "true",
    "false",
    "null",
    "1e999",
    "-0",
    "\"\\u202e\"",
    "\"\\u0000\"",
    " ",
    "\"",
    "\\",
    "\u{feff}",
    "\"refs/heads/a@{1}\"",
];

fn assembled() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(PIECES), 0..40).prop_map(|v| v.concat().into_bytes())
}

fn ref_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("a".to_string()),
            Just("/".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just(".lock".to_string()),
            Just("@{".to_string()),
            Just("-".to_string()),
            any::<char>().prop_map(|c| c.to_string()),
        ],
        0..30,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn push_payloads_never_panic_and_accepted_ones_are_safe(body in prop_oneof![assembled(), prop::collection::vec(any::<u8>(), 0..300)]) {
        if let Ok(p) = parse_push(&body) {
            prop_assert!(p.git_ref.starts_with("refs/heads/") || p.git_ref.starts_with("refs/tags/"));
            prop_assert!(!p.git_ref.contains(".."));
            prop_assert!(p.after.len() == 40 || p.after.len() == 64);
            prop_assert!(p.after.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn well_formed_pushes_are_read(branch in "[a-z][a-z0-9_-]{0,20}(/[a-z0-9_-]{1,10}){0,3}", sha in "[0-9a-f]{40}") {
        let body = serde_json::json!({"ref": format!("refs/heads/{branch}"), "after": sha}).to_string();
        let p = parse_push(body.as_bytes()).unwrap();
        prop_assert_eq!(p.after, sha);
    }

    #[test]
    fn accepted_ref_names_follow_gits_rules(name in ref_like()) {
        if check_ref_name("branch", &name).is_ok() {
            prop_assert!(!name.is_empty() && name.len() <= 255);
            prop_assert!(!name.contains("..") && !name.contains("@{") && !name.contains("//"), "{:?}", name);
            prop_assert!(!name.starts_with('/') && !name.ends_with('/') && !name.ends_with('.'));
            prop_assert!(!name.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c)));
            prop_assert!(name.split('/').all(|p| !p.starts_with('.') && !p.ends_with(".lock")));
        }
    }

    #[test]
    fn accepted_artifact_names_are_plain_ascii(name in prop_oneof![ref_like(), "[ -~]{0,30}", any::<String>()]) {
        if takt_pipeline::check_artifact_name(&name).is_ok() {
            prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b)));
            prop_assert!(!name.contains("..") && !name.starts_with(['.', '-', '+']));
        }
        // A job name always gives a valid artifact name.
        let made = takt_pipeline::artifact_name_for_job(&name);
        prop_assert!(takt_pipeline::check_artifact_name(&made).is_ok(), "{:?} → {:?}", name, made);
    }

    #[test]
    fn authorization_and_range_values_never_panic(v in "[ -~]{0,60}", size in 0u64..10_000) {
        let _ = takt_server::bearer(&v);
        if let Some((a, b)) = takt_server::runs::parse_range(&v, size) {
            prop_assert!(a < b && b <= size);
        }
    }
}
