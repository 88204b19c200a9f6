//! The plan and the stop-the-line scheduler, driven with real pipeline files.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use std::collections::HashMap;
use takt_model::JobStatus;
use takt_pipeline::{PlanContext, Schedule, parse, plan};

fn pipeline(yaml: &str) -> takt_pipeline::Pipeline {
    parse("takt.yml", yaml.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn names(p: &takt_pipeline::Plan, ids: &[usize]) -> Vec<String> {
    ids.iter().map(|i| p.jobs[*i].job.name.clone()).collect()
}

const THREE_STAGES: &str = "
jobs:
  compile: {stage: build, script: [make]}
  unit: {stage: test, script: [make test]}
  lint: {stage: test, script: [make lint]}
  notify-failure: {stage: .post, script: [echo], when: on_failure}
  pack: {stage: package, script: [tar]}
  cleanup: {stage: .post, script: [rm], when: always}
";

#[test]
fn stage_order_then_stop_the_line() {
    let p = plan(&pipeline(THREE_STAGES), &PlanContext::default()).unwrap();
    let mut s = Schedule::new(&p);
    let (skips, ready) = s.poll();
    assert!(skips.is_empty());
    assert_eq!(names(&p, &ready), ["compile"]);
    s.start(ready[0]);
    assert!(s.poll().1.is_empty(), "nothing else may start while build runs");
    s.finish(ready[0], JobStatus::Success, false);
    let (_, ready) = s.poll();
    assert_eq!(names(&p, &ready), ["unit", "lint"]);
    s.start(ready[0]);
    s.start(ready[1]);
    s.finish(ready[0], JobStatus::Failed, false);
    // `lint` is still running: the line is stopped, but running jobs finish.
    let (skips, ready) = s.poll();
    assert!(
        ready.is_empty() && skips.is_empty(),
        "pack waits for lint before it is decided: {skips:?}"
    );
    s.finish(2, JobStatus::Success, false); // lint
    let (skips, ready) = s.poll();
    let skipped: Vec<_> = skips
        .iter()
        .map(|k| (p.jobs[k.job].job.name.as_str(), k.reason.as_str()))
        .collect();
    assert_eq!(skipped, [("pack", "the line stopped: `unit` failed")]);
    assert_eq!(
        names(&p, &ready),
        ["notify-failure", "cleanup"],
        "on_failure and always still run"
    );
}

#[test]
fn on_failure_is_skipped_when_nothing_failed_and_allow_failure_does_not_stop_the_line() {
    let p = plan(
        &pipeline(&THREE_STAGES.replace("make lint]", "make lint], allow_failure: true")),
        &PlanContext::default(),
    )
    .unwrap();
    let mut s = Schedule::new(&p);
    let mut order = Vec::new();
    loop {
        let (skips, ready) = s.poll();
        for k in skips {
            order.push(format!("{}:{}", p.jobs[k.job].job.name, k.status));
        }
        if ready.is_empty() {
            break;
        }
        for i in ready {
            s.start(i);
            let failed = p.jobs[i].job.name == "lint";
            s.finish(
                i,
                if failed { JobStatus::Failed } else { JobStatus::Success },
                p.jobs[i].allow_failure,
            );
            order.push(format!(
                "{}:{}",
                p.jobs[i].job.name,
                if failed { "failed" } else { "ok" }
            ));
        }
    }
    assert_eq!(
        order,
        [
            "compile:ok",
            "unit:ok",
            "lint:failed",
            "pack:ok",
            "notify-failure:skipped",
            "cleanup:ok"
        ]
    );
    assert!(s.all_done());
    assert_eq!(s.stopped_by(), None);
}

#[test]
fn needs_form_a_dag_and_skip_when_a_need_did_not_run() {
    let y = "
jobs:
  a: {stage: build, script: [x]}
  b: {stage: build, script: [x], when: manual}
  c: {stage: test, script: [x], needs: [a]}
  d: {stage: test, script: [x], needs: [b]}
  e: {stage: deploy, script: [x], needs: []}
";
    let p = plan(&pipeline(y), &PlanContext::default()).unwrap();
    let mut s = Schedule::new(&p);
    let (skips, ready) = s.poll();
    assert_eq!(
        names(&p, &ready),
        ["a", "e"],
        "needs: [] starts at once, whatever its stage"
    );
    assert_eq!(skips.len(), 2);
    assert_eq!(skips[0].status, JobStatus::Manual);
    assert_eq!(skips[1].reason, "needed job `b` did not run");
    s.start(0);
    s.start(4);
    s.finish(0, JobStatus::Success, false);
    let (_, ready) = s.poll();
    assert_eq!(names(&p, &ready), ["c"]);
}

#[test]
fn rules_choose_jobs_per_commit() {
    let y = r#"
jobs:
  docs:
    script: [x]
    rules:
      - changes: [docs/**/*]
  release:
    script: [x]
    rules:
      - if: $CI_COMMIT_TAG =~ /^v\d+/
        when: manual
      - if: $CI_COMMIT_BRANCH == "main"
      - when: never
  always: {script: [x]}
"#;
    let p = pipeline(y);
    let mut cx = PlanContext {
        variables: HashMap::from([("CI_COMMIT_BRANCH".to_string(), "feature".to_string())]),
        changed_files: Some(vec!["src/lib.rs".into()]),
        ..Default::default()
    };
    let pl = plan(&p, &cx).unwrap();
    assert_eq!(
        pl.jobs.iter().map(|j| j.job.name.as_str()).collect::<Vec<_>>(),
        ["always"]
    );
    cx.changed_files = Some(vec!["docs/guide/x.md".into()]);
    cx.variables.insert("CI_COMMIT_BRANCH".into(), "main".into());
    let pl = plan(&p, &cx).unwrap();
    assert_eq!(pl.jobs.len(), 3);
    cx.variables.remove("CI_COMMIT_BRANCH");
    cx.variables.insert("CI_COMMIT_TAG".into(), "v1.2".into());
    let pl = plan(&p, &cx).unwrap();
    let rel = pl.jobs.iter().find(|j| j.job.name == "release").unwrap();
    assert_eq!(rel.when, takt_pipeline::When::Manual);
}

#[test]
fn matrix_expands_and_needs_on_the_base_name_wait_for_all() {
    let y = "
jobs:
  test:
    stage: test
    script: [x]
    parallel:
      matrix:
        - OS: [linux, mac]
          ARCH: [amd64, arm64]
        - OS: bsd
  report: {stage: deploy, script: [x], needs: [test]}
";
    let p = plan(&pipeline(y), &PlanContext::default()).unwrap();
    let n: Vec<_> = p.jobs.iter().map(|j| j.job.name.as_str()).collect();
    assert_eq!(
        n,
        [
            "test [OS=linux, ARCH=amd64]",
            "test [OS=linux, ARCH=arm64]",
            "test [OS=mac, ARCH=amd64]",
            "test [OS=mac, ARCH=arm64]",
            "test [OS=bsd]",
            "report"
        ]
    );
    assert_eq!(p.jobs[5].deps, [0, 1, 2, 3, 4]);
    assert!(p.jobs[0].job.variables.contains(&("OS".into(), "linux".into())));
}

#[test]
fn only_jobs_keeps_what_they_need() {
    let y = "
jobs:
  a: {stage: build, script: [x]}
  b: {stage: test, script: [x], needs: [a]}
  c: {stage: test, script: [x]}
";
    let cx = PlanContext {
        only_jobs: vec!["b".into()],
        ..Default::default()
    };
    let p = plan(&pipeline(y), &cx).unwrap();
    assert_eq!(
        p.jobs.iter().map(|j| j.job.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(p.jobs[1].deps, [0]);
    let cx = PlanContext {
        only_jobs: vec!["zz".into()],
        ..Default::default()
    };
    assert!(
        plan(&pipeline(y), &cx)
            .unwrap_err()
            .to_string()
            .contains("no job is named `zz`")
    );
}

#[test]
fn extends_and_default_merge_like_gitlab() {
    let y = "
default:
  before_script: [echo default]
  retry: 1
.base:
jobs:
  .base:
    variables: {A: '1', B: '2'}
    script: [base]
    timeout: 10m
  child:
    extends: .base
    variables: {B: '3'}
    retry: 0
";
    let e = parse("takt.yml", y.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("unknown key `.base`"), "{e}");
    let y = y.replace(".base:\njobs:", "jobs:");
    let p = pipeline(&y);
    let j = &p.jobs[0];
    assert_eq!(j.name, "child");
    assert_eq!(j.script, ["base"]);
    assert_eq!(j.before_script, ["echo default"]);
    assert_eq!(j.retry.max, 0);
    assert_eq!(j.timeout, Some(std::time::Duration::from_secs(600)));
    assert_eq!(
        j.variables,
        [("A".to_string(), "1".to_string()), ("B".to_string(), "3".to_string())]
    );
}

#[test]
fn critical_path_follows_the_slowest_chain() {
    let y = "
jobs:
  a: {stage: build, script: [x]}
  b: {stage: build, script: [x]}
  c: {stage: test, script: [x], needs: [a]}
  d: {stage: test, script: [x], needs: [b]}
";
    let p = plan(&pipeline(y), &PlanContext::default()).unwrap();
    let secs = |s: &[u64]| s.iter().map(|x| std::time::Duration::from_secs(*x)).collect::<Vec<_>>();
    let path = takt_pipeline::critical_path(&p, &secs(&[5, 1, 1, 9]));
    assert_eq!(names(&p, &path), ["b", "d"]);
}

/// Runs a schedule to its end with every started job passing; `job:status` in order.
fn run_all(p: &takt_pipeline::Plan, s: &mut Schedule) -> Vec<String> {
    let mut order = Vec::new();
    loop {
        let (skips, ready) = s.poll();
        for k in &skips {
            order.push(format!("{}:{}", p.jobs[k.job].job.name, k.status));
        }
        if ready.is_empty() && skips.is_empty() {
            break;
        }
        for i in ready {
            s.start(i);
            s.finish(i, JobStatus::Success, p.jobs[i].allow_failure);
            order.push(format!("{}:ok", p.jobs[i].job.name));
        }
    }
    order
}

const MANUAL: &str = "
jobs:
  build: {stage: build, script: [make]}
  review: {stage: build, script: [x], when: manual}
  approve: {stage: test, script: [x], when: manual, allow_failure: false}
  lint: {stage: test, script: [x]}
  deploy: {stage: deploy, script: [x]}
  smoke: {stage: deploy, script: [x], needs: [approve]}
  early: {stage: deploy, script: [x], needs: []}
  cleanup: {stage: .post, script: [rm], when: always}
";

/// GitLab's manual jobs: one that may fail (the default outside `rules`) waits for a person
/// without holding anything; one with `allow_failure: false` holds every job after it (by
/// stage or `needs`, `always` jobs too) while jobs beside it run.
#[test]
fn a_blocking_manual_job_holds_what_comes_after_it() {
    let p = plan(&pipeline(MANUAL), &PlanContext::default()).unwrap();
    let mut s = Schedule::new(&p);
    let mut order = run_all(&p, &mut s);
    order.sort();
    assert_eq!(
        order,
        [
            "approve:manual",
            "build:ok",
            "cleanup:skipped",
            "deploy:skipped",
            "early:ok",
            "lint:ok",
            "review:manual",
            "smoke:skipped"
        ]
    );
    assert!(s.all_done());
    assert_eq!(s.blocked_by().map(|b| p.jobs[b].job.name.as_str()), Some("approve"));

    // Without `allow_failure: false` nothing is held.
    let p = plan(
        &pipeline(&MANUAL.replace(", allow_failure: false", "")),
        &PlanContext::default(),
    )
    .unwrap();
    let mut s = Schedule::new(&p);
    let order = run_all(&p, &mut s);
    assert!(order.contains(&"deploy:ok".to_string()), "{order:?}");
    assert!(
        order.contains(&"smoke:skipped".to_string()),
        "a need that did not run: {order:?}"
    );
    assert_eq!(s.blocked_by(), None);
}

#[test]
fn manual_jobs_take_gitlabs_allow_failure_defaults_and_a_named_one_is_played() {
    let p = plan(
        &pipeline(
            "
jobs:
  a: {script: [x], when: manual}
  b: {script: [x], when: manual, allow_failure: false}
  c: {script: [x], rules: [{when: manual}]}
  d: {script: [x], rules: [{when: manual, allow_failure: true}]}
  e: {script: [x], when: manual, allow_failure: {exit_codes: [3]}}
",
        ),
        &PlanContext::default(),
    )
    .unwrap();
    let allowed: Vec<(&str, bool)> = p.jobs.iter().map(|j| (j.job.name.as_str(), j.allow_failure)).collect();
    assert_eq!(
        allowed,
        [("a", true), ("b", false), ("c", false), ("d", true), ("e", false)]
    );
    // `takt run --job b` plays it.
    let cx = PlanContext {
        only_jobs: vec!["b".into()],
        ..PlanContext::default()
    };
    let p = plan(
        &pipeline("jobs:\n  b: {script: [x], when: manual, allow_failure: false}\n"),
        &cx,
    )
    .unwrap();
    assert_eq!(p.jobs[0].when, takt_pipeline::When::OnSuccess);
}
