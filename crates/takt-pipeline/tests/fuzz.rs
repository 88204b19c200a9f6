//! Property tests: the parser never panics, whatever it is fed, and always answers with either
//! a pipeline or positioned diagnostics.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use proptest::prelude::*;

fn check(bytes: &[u8]) {
    match takt_pipeline::parse("takt.yml", bytes) {
        Ok(p) => assert!(!p.jobs.is_empty()),
        Err(d) => {
            assert!(!d.items.is_empty());
            for i in &d.items {
                assert!(i.pos.line >= 1 && i.pos.col >= 1, "{d}");
            }
        }
    }
}

const PIECES: &[&str] = &[
    "jobs:",
    "\n",
    "  ",
    "    ",
    "a:",
    "b:",
    "script:",
    "[x]",
    "- ",
    "needs:",
    "[a]",
    "[b]",
    "stage:",
    "build",
    "test",
    "rules:",
    "- if: $A == \"x\"",
    "when:",
    "manual",
    "timeout:",
    "5m",
    "-1s",
    "&x",
    "*x",
    "<<:",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "'",
    "\"",
    "\t",
    "extends:",
    ".t",
    "parallel:",
    "matrix:",
    "{A: [1,2]}",
    "artifacts:",
    "paths:",
    "cache:",
    "key:",
    "files:",
    "variables:",
    "retry:",
    "2",
    "#",
    "---",
    "!!str",
    "|",
    ">",
    "~",
    "null",
    "allow_failure:",
    "true",
    "stages:",
    "default:",
    "budget:",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&bytes);
    }

    #[test]
    fn yaml_like_token_soup_never_panics(idx in proptest::collection::vec(0..PIECES.len(), 0..80)) {
        let s: String = idx.iter().map(|i| PIECES[*i]).collect();
        check(s.as_bytes());
    }

    #[test]
    fn rule_expressions_never_panic(s in "[$A-Za-z_ ()=!~&|/\"'.*\\[\\]{}0-9]{0,60}") {
        let _ = takt_pipeline::expr::Expr::parse(&s);
    }
}
