//! A corpus of broken pipeline files: each gets its own clear message with file:line:column,
//! exit code 2, and never a panic.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::*;
use std::path::Path;

const CORPUS: &[(&str, &str)] = &[
    ("01-unclosed-bracket", "YAML syntax error"),
    ("02-tab-indent", "tabs"),
    ("03-empty", "the file is empty"),
    ("04-only-comment", "the file is empty"),
    ("05-top-level-list", "must be a mapping"),
    ("06-unknown-top-key", "did you mean `jobs`?"),
    ("07-gitlab-job-at-top", "jobs belong under `jobs:`"),
    ("08-unknown-job-key", "did you mean `script`?"),
    ("09-no-script", "has no `script`"),
    ("10-empty-script", "has an empty `script`"),
    ("11-script-wrong-type", "must be a string or a list of strings"),
    ("12-unknown-stage", "did you mean `build`?"),
    ("13-needs-missing", "needs `bulid`, which is not defined"),
    ("14-needs-cycle", "cycle"),
    ("15-needs-self", "needs itself"),
    ("16-negative-timeout", "negative"),
    ("17-absurd-timeout", "longer than 7 days"),
    ("18-bad-duration-unit", "unknown unit `parsecs`"),
    ("19-zero-timeout", "must be more than zero"),
    ("20-duplicate-keys", "duplicate key `script`"),
    ("21-alias-bomb", "alias"),
    (
        "22-reference-missing",
        "`!reference [.setup, script]` names `.setup`, which is not defined",
    ),
    ("23-bad-when", "is not a job `when`"),
    ("24-bad-rules-if", "bad `if` expression"),
    ("25-bad-glob", "bad glob"),
    ("26-retry-too-many", "a number from 0 to 10"),
    ("27-extends-cycle", "`extends` forms a cycle"),
    ("28-extends-missing", "names `.tmpl`, which is not defined"),
    ("29-allow-failure-type", "must be true or false"),
    ("30-bad-variable-name", "not a valid variable name"),
    ("31-bad-regex", "bad regular expression"),
    ("32-two-documents", "more than one YAML document"),
    ("33-matrix-too-big", "more than 200 jobs"),
    ("34-artifact-path-traversal", "leaves the project directory"),
    (
        "35-include-remote",
        "`include: remote` (https://example.com/ci.yml) needs a GitLab server",
    ),
    ("36-version", "unsupported `version`"),
    ("37-no-jobs", "no `jobs:` section"),
    ("38-bad-budget", "`soon` is not a duration"),
    ("39-stages-wrong-type", "must be a string or a list of strings"),
    ("40-only-and-rules", "job `a` has both `rules` and `only`/`except`"),
    (
        "41-artifact-name-slash",
        "contains '/': use only ASCII letters, digits and . _ - +",
    ),
    ("42-job-not-a-mapping", "must be a mapping"),
    ("43-needs-not-list", "must be a list"),
    (
        "44-delayed-without-start-in",
        "job `a` has `when: delayed` without `start_in`",
    ),
    ("45-three-errors", "error"),
    // The security issue's corpus (docs/security.md).
    ("46-artifact-name-bidi", "contains '\\u{202e}'"),
    ("47-deep-expression", "expression nested deeper than 64 levels"),
    ("48-too-many-stages", "lists 3000 stages; the limit is 1000"),
    // The newcomer-fixes issue.
    ("49-seven-field-cron", "it has 7 fields; write five"),
    ("50-script-colon", "quote this line"),
    // The deployment state-machine issue.
    (
        "51-on-restart-unknown",
        "`on_restart` is `rollback` or `continue`, not `resume`",
    ),
    // The monitoring issue: the condition's own line and column.
    (
        "52-check-bad-condition",
        "52-check-bad-condition.yml:9:10: error: invalid condition `[RESPONSE_TIEM] < 500`: unknown placeholder [RESPONSE_TIEM]: did you mean [RESPONSE_TIME]?",
    ),
    // The flow metrics issue: bands in the wrong order.
    (
        "53-metrics-bands-backwards",
        "53-metrics-bands-backwards.yml:7:23: error: `metrics.bands.change_fail_rate`: the bounds must go from the smallest (elite) to the largest (medium)",
    ),
    // The remediation issue: a recurring drill must mean it to turn production down.
    (
        "54-drill-production",
        "54-drill-production.yml:10:18: error: drill `weekly` turns down production environment `production`",
    ),
    // The forge-and-team issue: a protected environment nobody may deploy to.
    (
        "55-protected-by-nobody",
        "55-protected-by-nobody.yml:6:16: error: `protected` names no token, so nobody could deploy here",
    ),
    // The flags issue: flagd's definitions, placed at their line and column.
    (
        "56-flag-default-names-no-variant",
        "56-flag-default-names-no-variant.yml:8:21: error: defaultVariant `of` names no variant of `dark-mode` (its variants: off, on)",
    ),
];

fn lint(path: &Path) -> (Option<i32>, String) {
    let out = takt().arg("lint").arg(path).output().expect("takt runs");
    (out.status.code(), stderr(&out))
}

fn has_position(stderr: &str, file: &str) -> bool {
    stderr.lines().any(|l| {
        l.strip_prefix(file)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|rest| {
                let mut parts = rest.splitn(3, ':');
                let line = parts.next().and_then(|x| x.parse::<usize>().ok());
                let col = parts.next().and_then(|x| x.parse::<usize>().ok());
                line.is_some_and(|l| l >= 1)
                    && col.is_some_and(|c| c >= 1)
                    && parts.next().is_some_and(|m| m.starts_with(" error: "))
            })
    })
}

#[test]
fn every_broken_file_gets_its_own_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let on_disk = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(on_disk, CORPUS.len(), "every corpus file has an expectation");
    for (name, expect) in CORPUS {
        let path = dir.join(format!("{name}.yml"));
        let (code, err) = lint(&path);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(err.contains(expect), "{name}: expected `{expect}` in:\n{err}");
        assert!(
            has_position(&err, &path.display().to_string()),
            "{name}: no file:line:col in:\n{err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

#[test]
fn all_errors_are_reported_at_once_with_exact_positions() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/45-three-errors.yml");
    let (_, err) = lint(&path);
    let p = path.display().to_string();
    assert!(err.contains(&format!("{p}:2:7: error: unknown key `scirpt`")), "{err}");
    assert!(
        err.contains(&format!(
            "{p}:3:29: error: `timeout` of job `b`: `never` is not a duration"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{p}:4:28: error: job `c` needs `zz`")), "{err}");
    // The misspelt `script` is the one problem of job `a`: no second "has no `script`".
    assert!(!err.contains("has no `script`"), "{err}");
    assert!(err.contains("3 errors"), "{err}");
}

#[test]
fn huge_and_non_utf8_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("takt.yml");
    let mut s = String::from("jobs:\n  a:\n    script:\n");
    while s.len() < 10 * 1024 * 1024 {
        s.push_str("      - echo 0123456789012345678901234567890123456789\n");
    }
    std::fs::write(&big, &s).unwrap();
    let (code, err) = lint(&big);
    assert_eq!(code, Some(2));
    assert!(err.contains("the limit is 1048576 bytes"), "{err}");

    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, b"jobs:\n  a:\n    script: [\xff\xfe]\n").unwrap();
    let (code, err) = lint(&bad);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!("{}:3:14: error: invalid UTF-8", bad.display())),
        "{err}"
    );

    let (code, err) = lint(&dir.path().join("missing.yml"));
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn a_good_file_lints_clean_and_reserves_nothing_now() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("takt.yml");
    std::fs::write(
        &f,
        "flags: {}\nenvironments:\n  staging: {port: 8080}\njobs:\n  a: {script: [x]}\n",
    )
    .unwrap();
    let out = takt().arg("lint").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // `flags` was reserved until takt served flags (OFREP); an empty one is fine.
    assert!(!stderr(&out).contains("not supported yet"), "{}", stderr(&out));
    let out = takt().arg("lint").arg(&f).arg("--json").output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["not_supported_yet"], serde_json::json!([]));
}
