//! Property tests: the parser and the planner never panic, whatever they are fed. A file
//! either gives positioned diagnostics, or a pipeline that is planned (with and without
//! variables, and restricted to one job) and scheduled to the end — jobs failing at random —
//! with its critical path. Generators cover token soup, structured pipelines, deep nesting, many
//! stages and long expressions; inputs stay small enough that the limits keep every case fast
//! (case counts are fixed: the whole file runs in a few seconds in the dev profile).

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use proptest::prelude::*;
use std::fmt::Write;
use std::time::Duration;
use takt_model::JobStatus;
use takt_pipeline::expr::Expr;
use takt_pipeline::limits::MAX_DIAGNOSTICS;
use takt_pipeline::{Plan, PlanContext, Schedule, critical_path, plan};

/// Runs a plan to the end: each poll starts every ready job; every third one fails.
fn run(p: &Plan) {
    let mut s = Schedule::new(p);
    let mut k = 0usize;
    for _ in 0..=2 * p.jobs.len() + 1 {
        let (_, ready) = s.poll();
        if ready.is_empty() {
            break;
        }
        for i in ready {
            s.start(i);
            k += 1;
            let status = if k.is_multiple_of(3) {
                JobStatus::Failed
            } else {
                JobStatus::Success
            };
            s.finish(i, status, k.is_multiple_of(6));
        }
    }
    // Nothing is left running; what still waits is cancelled.
    s.cancel_waiting();
    assert!(s.all_done());
    let d: Vec<Duration> = (0..p.jobs.len())
        .map(|i| Duration::from_millis((i % 7) as u64))
        .collect();
    let path = critical_path(p, &d);
    assert!(!path.is_empty() && path.iter().all(|i| *i < p.jobs.len()));
}

fn check(bytes: &[u8]) {
    match takt_pipeline::parse("takt.yml", bytes) {
        Ok(p) => {
            assert!(!p.jobs.is_empty());
            let mut cx = PlanContext::default();
            for c in [0, 1, 2] {
                if c == 1 {
                    cx.variables.insert("A".into(), "x".into());
                    cx.variables.insert("CI_COMMIT_BRANCH".into(), "main".into());
                    cx.changed_files = Some(vec!["src/a.rs".into()]);
                }
                if c == 2 {
                    cx.only_jobs = vec![p.jobs[p.jobs.len() / 2].name.clone()];
                }
                if let Ok(pl) = plan(&p, &cx) {
                    assert!(!pl.jobs.is_empty());
                    run(&pl);
                }
            }
        }
        Err(d) => {
            assert!(!d.items.is_empty());
            assert!(d.items.len() <= MAX_DIAGNOSTICS + 1);
            for i in &d.items {
                assert!(i.pos.line >= 1 && i.pos.col >= 1, "{d}");
            }
        }
    }
}

/// Pieces of `rules: if:` expressions, valid and not.
const EXPR_PIECES: &[&str] = &[
    "(",
    ")",
    "$A",
    "${A}",
    "$CI_COMMIT_BRANCH",
    "'x'",
    "\"main\"",
    "null",
    "/^ma/",
    "/x/i",
    "==",
    "!=",
    "=~",
    "!~",
    "&&",
    "||",
    " ",
    "$",
    "/",
    "'",
    "=",
    "!",
];

fn expr_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(0..EXPR_PIECES.len(), 0..120).prop_map(|v| v.iter().map(|i| EXPR_PIECES[*i]).collect())
}

/// Balanced (or, with `cut`, unbalanced) nesting around a comparison, up to 200 deep.
fn nested_expr() -> impl Strategy<Value = String> {
    (0..200usize, 0..3usize, any::<bool>()).prop_map(|(depth, op, cut)| {
        let inner = ["$A == 'x'", "$A && $B || $C", "$CI_COMMIT_BRANCH =~ /^m/"][op];
        let close = if cut { depth / 2 } else { depth };
        format!("{}{inner}{}", "(".repeat(depth), ")".repeat(close))
    })
}

#[derive(Debug, Clone)]
struct GenJob {
    stage: usize,
    needs: Option<Vec<usize>>,
    rule: Option<String>,
    when: usize,
    parallel: usize,
    extends: Option<usize>,
}

fn gen_job() -> impl Strategy<Value = GenJob> {
    (
        0..45usize,
        prop::option::weighted(0.4, prop::collection::vec(0..70usize, 0..4)),
        prop::option::weighted(0.3, prop_oneof![expr_soup(), nested_expr()]),
        0..6usize,
        prop_oneof![4 => Just(0usize), 1 => 1..4usize],
        prop::option::weighted(0.2, 0..3usize),
    )
        .prop_map(|(stage, needs, rule, when, parallel, extends)| GenJob {
            stage,
            needs,
            rule,
            when,
            parallel,
            extends,
        })
}

/// Valid conditions, most of what the structured generator uses.
const CONDITIONS: &[&str] = &[
    "$A == 'x'",
    "$CI_COMMIT_BRANCH == \"main\"",
    "$A && $B",
    "($A || $C) && $CI_COMMIT_BRANCH =~ /^ma/",
    "$MISSING",
    "$A != null",
];

/// A pipeline file from the structure: stages in job order (with a few jobs elsewhere),
/// templates, jobs with needs on earlier jobs, rules, `parallel`, `extends`. `wild` adds needs
/// on any job (missing or cyclic) and generated expressions (mostly wrong).
fn pipeline_text(stages: usize, jobs: &[GenJob], wild: bool) -> String {
    let stages = stages.max(1);
    let mut s = String::from("stages: [");
    for i in 0..stages {
        let _ = write!(s, "s{i}, ");
    }
    s.push_str("]\njobs:\n  .t0: {script: [x], variables: {A: x}}\n  .t1: {extends: .t0, when: manual}\n  .t2: {extends: [.t1, .t0]}\n");
    let n = jobs.len();
    for (i, j) in jobs.iter().enumerate() {
        let stage = if j.stage > 42 { j.stage % stages } else { i * stages / n };
        let _ = write!(s, "  j{i}:\n    stage: s{stage}\n    script: [x]\n");
        let when = [
            "on_success",
            "on_failure",
            "always",
            "manual",
            "on_success",
            "on_success",
        ][j.when];
        let _ = writeln!(s, "    when: {when}");
        if let Some(needs) = &j.needs {
            let names: Vec<String> = needs
                .iter()
                .filter_map(|k| match (k % 12, i) {
                    (0, _) if wild => Some(format!("j{k}")),
                    (_, 0) => None,
                    _ => Some(format!("j{}", k % i)),
                })
                .collect();
            let _ = writeln!(s, "    needs: [{}]", names.join(", "));
        }
        if let Some(r) = &j.rule {
            let cond = if wild && r.len().is_multiple_of(4) {
                r.as_str()
            } else {
                CONDITIONS[r.len() % CONDITIONS.len()]
            };
            let _ = writeln!(
                s,
                "    rules:\n      - if: '{}'\n        when: manual\n      - changes: [src/**/*]\n      - when: on_success",
                cond.replace('\'', "''")
            );
        }
        if j.parallel > 0 {
            let _ = writeln!(s, "    parallel: {}", j.parallel);
        }
        if let Some(t) = j.extends {
            let _ = writeln!(s, "    extends: .t{t}");
        }
    }
    s
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
    fn expression_soup_never_panics(s in expr_soup()) {
        if let Ok(e) = Expr::parse(&s) {
            let vars = [("A", "x"), ("B", ""), ("CI_COMMIT_BRANCH", "main")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::HashMap<_, _>>();
            let _ = e.eval(&vars);
        }
    }

    #[test]
    fn nested_expressions_parse_or_say_why(s in nested_expr()) {
        match Expr::parse(&s) {
            Ok(e) => { let _ = e.eval(&std::collections::HashMap::new()); }
            Err(m) => prop_assert!(!m.is_empty()),
        }
    }

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

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn structured_pipelines_parse_plan_and_run(
        stages in 1..40usize,
        jobs in prop::collection::vec(gen_job(), 1..70),
        wild in prop::bool::weighted(0.2),
    ) {
        check(pipeline_text(stages, &jobs, wild).as_bytes());
    }

    #[test]
    fn deep_yaml_never_panics(opens in prop::collection::vec(0..3usize, 0..400), close in any::<bool>()) {
        // A mix of flow lists, flow mappings and block mappings, up to 400 deep.
        let mut s = String::from("jobs: {a: {script: [x], variables: ");
        let mut tail = String::new();
        for o in &opens {
            match o {
                0 => { s.push('['); tail.insert(0, ']'); }
                1 => { s.push_str("{k: "); tail.insert(0, '}'); }
                _ => { s.push_str("{k: ["); tail.insert_str(0, "]}"); }
            }
        }
        s.push('x');
        if close {
            s.push_str(&tail);
        }
        s.push_str("}}\n");
        check(s.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn many_stages_never_panic(stages in 0..1500usize, per_stage in 1..3usize, needs in any::<bool>()) {
        let mut s = String::from("stages: [");
        for i in 0..stages {
            let _ = write!(s, "s{i},");
        }
        s.push_str("]\njobs:\n");
        for i in 0..stages.min(1200) {
            for k in 0..per_stage {
                let n = if needs && i > 0 { format!(", needs: [j{}-0]", i - 1) } else { String::new() };
                let _ = writeln!(s, "  j{i}-{k}: {{stage: s{i}, script: [x]{n}}}");
            }
        }
        check(s.as_bytes());
    }

    #[test]
    fn long_expressions_never_panic(n in 0..1200usize, nest in 0..80usize) {
        let e = format!("{}{}$A{}", "(".repeat(nest), "$A && ".repeat(n), ")".repeat(nest));
        check(format!("jobs:\n  a:\n    script: [x]\n    rules:\n      - if: '{e}'\n").as_bytes());
    }
}
