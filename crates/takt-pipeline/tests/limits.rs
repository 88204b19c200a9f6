//! What a file may ask for (src/limits.rs): every input here once overflowed the stack or took
//! seconds to minutes. Each case runs on a thread with a 2 MiB stack (cargo's default for test
//! threads, set explicitly so that the bound holds whatever RUST_MIN_STACK says) and must end in
//! positioned diagnostics naming the limit — or, at the limits, in a plan that runs to the end.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use std::fmt::Write;
use takt_model::JobStatus;
use takt_pipeline::limits::*;
use takt_pipeline::{Diagnostics, Pipeline, PlanContext, Schedule, critical_path, parse, plan};

/// Runs `f` on a thread with a 2 MiB stack; a stack overflow aborts the test binary.
fn small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// Parses `text` on a small stack and returns the diagnostics it must give.
fn refused(text: String) -> Diagnostics {
    small_stack(move || match parse("takt.yml", text.as_bytes()) {
        Ok(p) => panic!("accepted a file with {} jobs", p.jobs.len()),
        Err(d) => d,
    })
}

/// The diagnostics' text, checked to be positioned and to contain `want`.
fn says(d: &Diagnostics, want: &str) -> String {
    let s = d.to_string();
    assert!(s.contains(want), "expected {want:?} in:\n{s}");
    assert!(s.starts_with("takt.yml:"), "{s}");
    for i in &d.items {
        assert!(i.pos.line >= 1 && i.pos.col >= 1, "{s}");
    }
    assert!(d.items.len() <= MAX_DIAGNOSTICS + 1, "{} diagnostics", d.items.len());
    s
}

fn job_with_if(expr: &str) -> String {
    format!("jobs:\n  a:\n    script: [x]\n    rules:\n      - if: '{expr}'\n")
}

#[test]
fn expression_2000_parentheses_deep() {
    let e = format!("{}$A{}", "(".repeat(2000), ")".repeat(2000));
    let d = refused(job_with_if(&e));
    let s = says(&d, "expression nested deeper than 64 levels");
    assert!(
        s.starts_with("takt.yml:5:13:"),
        "file, line and column of the `if`: {s}"
    );
    assert!(s.contains("the limit is 64"), "{s}");
}

#[test]
fn expression_100000_parentheses_deep() {
    let e = format!("{}$A{}", "(".repeat(100_000), ")".repeat(100_000));
    let d = refused(job_with_if(&e));
    says(&d, "the limit is 4096 bytes");
    // Straight to the expression parser, without the length check in the way of the depth.
    let deep = format!("{}$A", "(".repeat(3000));
    let err = small_stack(move || takt_pipeline::expr::Expr::parse(&deep).unwrap_err());
    assert!(err.contains("nested deeper than 64 levels"), "{err}");
}

#[test]
fn long_flat_expression_is_not_a_deep_tree() {
    // 1,000 `&&`s within the length limit: parsed, evaluated and dropped on a small stack.
    let e = "$A && ".repeat(600) + "$A";
    let y = job_with_if(&e);
    let ok = small_stack(move || {
        let p = parse("takt.yml", y.as_bytes()).unwrap();
        let mut cx = PlanContext::default();
        cx.variables.insert("A".into(), "1".into());
        plan(&p, &cx).unwrap().jobs.len()
    });
    assert_eq!(ok, 1);
}

#[test]
fn yaml_10000_lists_deep() {
    let d = refused(format!("jobs: {}{}\n", "[".repeat(10_000), "]".repeat(10_000)));
    says(&d, "YAML nested deeper than 64 levels; the limit is 64");
}

#[test]
fn yaml_10000_mappings_deep() {
    let d = refused(format!("jobs: {}x{}\n", "{a: ".repeat(10_000), "}".repeat(10_000)));
    says(&d, "YAML nested deeper than 64 levels; the limit is 64");
    // Block style, one level per line.
    let mut s = String::from("jobs:\n");
    for i in 0..200 {
        let _ = writeln!(s, "{}a:", " ".repeat(i + 2));
    }
    says(&refused(s), "YAML nested deeper than 64 levels");
}

#[test]
fn aliases_cannot_splice_past_the_depth_limit() {
    // Each anchor nests the previous one 60 levels deeper: 40 of them once made a tree 2,400
    // levels deep, which overflowed the stack when it was cloned or dropped.
    let mut s = String::from("x0: &a0 ");
    s.push_str(&"[".repeat(60));
    s.push('x');
    s.push_str(&"]".repeat(60));
    s.push('\n');
    for i in 1..40 {
        let _ = writeln!(s, "x{i}: &a{i} {}*a{}{}", "[".repeat(60), i - 1, "]".repeat(60));
    }
    s.push_str("jobs: {a: {script: [x]}}\n");
    let d = refused(s);
    let s = says(&d, "YAML nested deeper than 64 levels");
    assert!(s.starts_with("takt.yml:2:"), "at the alias: {s}");
}

#[test]
fn long_extends_chain() {
    let mut s = String::from("jobs:\n  .t0: {script: [x]}\n");
    for i in 1..5000 {
        let _ = writeln!(s, "  .t{i}: {{extends: .t{}}}", i - 1);
    }
    s.push_str("  a: {extends: .t4999}\n");
    let d = refused(s);
    says(&d, "`extends` is nested more than 10 levels deep; the limit is 10");
}

#[test]
fn extends_cycle() {
    let d = refused("jobs:\n  .a: {extends: .b}\n  .b: {extends: .a, script: [x]}\n  j: {extends: .a}\n".into());
    says(&d, "`extends` forms a cycle");
}

#[test]
fn extends_fan_out_is_resolved_once_per_template() {
    // Ten levels, each template extending the one below four times: 4^10 (a million)
    // resolutions without memoisation.
    let mut s = String::from("jobs:\n  .t0: {script: [x], variables: {A: '1'}}\n");
    for i in 1..10 {
        let p = i - 1;
        let _ = writeln!(s, "  .t{i}: {{extends: [.t{p}, .t{p}, .t{p}, .t{p}]}}");
    }
    s.push_str("  a: {extends: .t9}\n");
    let jobs = small_stack(move || parse("takt.yml", s.as_bytes()).unwrap().jobs.len());
    assert_eq!(jobs, 1);
}

#[test]
fn extends_and_default_cannot_copy_without_bound() {
    // A 2,000-node template extended by 1,000 jobs would be two million nodes.
    let mut s = String::from("jobs:\n  .big:\n    script: [x]\n    variables:\n");
    for i in 0..1000 {
        let _ = writeln!(s, "      V{i}: x");
    }
    for i in 0..1000 {
        let _ = writeln!(s, "  j{i}: {{extends: .big}}");
    }
    says(&refused(s), &format!("the limit is {MAX_EXPANDED_NODES}"));
}

fn stages_file(stages: usize, jobs_per_stage: usize) -> String {
    let mut s = String::from("stages: [");
    for i in 0..stages {
        let _ = write!(s, "s{i}, ");
    }
    s.push_str("]\njobs:\n");
    for i in 0..stages {
        for k in 0..jobs_per_stage {
            let _ = writeln!(s, "  j{i}-{k}: {{stage: s{i}, script: [x]}}");
        }
    }
    s
}

#[test]
fn three_thousand_stages_are_refused() {
    let text = stages_file(3000, 1);
    assert!(text.len() > 100_000, "the issue's 140 KB file");
    let d = refused(text);
    let s = says(&d, "`stages` lists 3000 stages; the limit is 1000");
    assert!(s.starts_with("takt.yml:1:9:"), "{s}");
}

/// Runs a plan to the end: every ready job starts and succeeds, until all are done.
fn run_to_completion(p: &takt_pipeline::Plan) -> usize {
    let mut s = Schedule::new(p);
    let mut finished = 0;
    loop {
        let (skips, ready) = s.poll();
        finished += skips.len();
        if ready.is_empty() {
            break;
        }
        for i in ready {
            s.start(i);
            s.finish(i, JobStatus::Success, false);
            finished += 1;
        }
    }
    assert!(s.all_done());
    finished
}

fn plan_and_run(p: &Pipeline) -> usize {
    let pl = plan(p, &PlanContext::default()).unwrap();
    let d = vec![std::time::Duration::from_secs(1); pl.jobs.len()];
    let path = critical_path(&pl, &d);
    assert!(!path.is_empty());
    run_to_completion(&pl)
}

#[test]
fn a_thousand_stages_at_the_limit_plan_and_run() {
    let text = stages_file(MAX_STAGES, 1);
    let (jobs, run, path) = small_stack(move || {
        let p = parse("takt.yml", text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let pl = plan(&p, &PlanContext::default()).unwrap();
        let d = vec![std::time::Duration::from_secs(1); pl.jobs.len()];
        let path = critical_path(&pl, &d).len();
        (p.jobs.len(), run_to_completion(&pl), path)
    });
    assert_eq!((jobs, run), (MAX_STAGES, MAX_STAGES));
    assert_eq!(path, MAX_STAGES, "one job per stage: the critical path is every job");
}

/// `MAX_JOBS` jobs in five stages, in chains of 50 `needs` (each job needs the one before it),
/// half of them with artifacts.
fn needs_chains_file() -> String {
    let mut s = String::from("stages: [a, b, c, d, e]\njobs:\n");
    let per_stage = MAX_JOBS / 5;
    for st in ["a", "b", "c", "d", "e"] {
        for k in 0..per_stage {
            let needs = if k.is_multiple_of(50) {
                String::new()
            } else {
                format!(", needs: [{st}{}]", k - 1)
            };
            let arts = if k.is_multiple_of(2) {
                ", artifacts: {paths: [out]}"
            } else {
                ""
            };
            let _ = writeln!(s, "  {st}{k}: {{stage: {st}, script: [x]{needs}{arts}}}");
        }
    }
    s
}

#[test]
fn five_thousand_jobs_with_needs_chains_plan_and_run() {
    let text = needs_chains_file();
    assert!(text.len() < MAX_FILE_BYTES);
    let (jobs, run) = small_stack(move || {
        let p = parse("takt.yml", text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        (p.jobs.len(), plan_and_run(&p))
    });
    assert_eq!((jobs, run), (MAX_JOBS, MAX_JOBS));
}

#[test]
fn too_many_jobs_after_matrix_expansion() {
    // 30 jobs × 200 instances = 6,000 jobs.
    let mut s = String::from("jobs:\n");
    for i in 0..30 {
        let _ = writeln!(s, "  j{i}: {{script: [x], parallel: 200}}");
    }
    says(&refused(s), &format!("more than {MAX_JOBS} jobs"));
}

#[test]
fn matrix_is_checked_before_it_is_multiplied() {
    // 200 × 10,000 combinations would be built before the old check.
    let mut s = String::from("jobs:\n  j:\n    script: [x]\n    parallel:\n      matrix:\n        - A: [");
    for i in 0..200 {
        let _ = write!(s, "a{i},");
    }
    s.push_str("]\n          B: [");
    for i in 0..10_000 {
        let _ = write!(s, "b{i},");
    }
    s.push_str("]\n");
    says(&refused(s), "makes more than 200 jobs; the limit is 200");
}

#[test]
fn needs_per_job_and_in_all() {
    let mut s = String::from("jobs:\n");
    for i in 0..51 {
        let _ = writeln!(s, "  n{i}: {{script: [x]}}");
    }
    s.push_str("  j:\n    script: [x]\n    needs: [");
    for i in 0..51 {
        let _ = write!(s, "n{i},");
    }
    s.push_str("]\n");
    says(&refused(s), "lists 51 jobs; the limit is 50");

    // 24 matrix jobs of 200 instances, 200 jobs needing all of them: 200 × 4,800 > 250,000.
    let mut s = String::from("jobs:\n");
    for i in 0..24 {
        let _ = writeln!(s, "  m{i}: {{stage: build, script: [x], parallel: 200}}");
    }
    let needs: Vec<String> = (0..24).map(|i| format!("m{i}")).collect();
    for i in 0..200 {
        let _ = writeln!(s, "  j{i}: {{script: [x], needs: [{}]}}", needs.join(", "));
    }
    says(&refused(s), &format!("the limit is {MAX_NEED_EDGES}"));
}

#[test]
fn commands_per_job() {
    let mut s = String::from("jobs:\n  j:\n    script:\n");
    for _ in 0..=MAX_SCRIPT_LINES {
        s.push_str("      - x\n");
    }
    says(&refused(s), &format!("has {} commands", MAX_SCRIPT_LINES + 1));
}

#[test]
fn diagnostics_are_capped_and_hints_stay_cheap() {
    // 1,500 jobs each needing 50 jobs that do not exist: 75,000 problems, each of which once
    // looked for a "did you mean" among all the job names.
    let mut s = String::from("jobs:\n");
    let needs: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let needs = needs.join(",");
    for i in 0..1500 {
        let _ = writeln!(s, "  j{i}: {{script: [x], needs: [{needs}]}}");
    }
    let d = refused(s);
    let s = says(&d, "more problems (takt reports the first 100)");
    assert_eq!(d.items.len(), MAX_DIAGNOSTICS + 1, "{s}");
}

#[test]
fn many_duplicate_keys_stay_linear() {
    // 40,000 keys in one mapping, all distinct but one: the duplicate check was quadratic.
    let mut s = String::from("variables:\n");
    for i in 0..40_000 {
        let _ = writeln!(s, "  V{i}: x");
    }
    s.push_str("  V7: y\njobs: {a: {script: [x]}}\n");
    let d = refused(s);
    says(&d, "duplicate key `V7` (first defined at line 9)");
}
