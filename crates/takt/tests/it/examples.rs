//! The examples in `examples/` run as the README says, each in a repository of its own.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::*;
use std::path::Path;

fn copy_example(name: &str) -> Repo {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name);
    let mut files = Vec::new();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        files.push((
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read_to_string(e.path()).unwrap(),
        ));
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    Repo::new(&refs)
}

#[test]
fn multi_stage_builds_tests_and_packages() {
    let repo = copy_example("multi-stage");
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}\n{r:#}", stderr(&out));
    assert_eq!(job(&r, "unit-tests")["tests"]["tests"], 3);
    assert_eq!(job(&r, "unit-tests")["tests"]["failures"], 0);
    assert_eq!(job(&r, "package")["artifact"]["name"], "calc");
}

#[test]
fn failing_test_stops_the_line() {
    let repo = copy_example("failing-test");
    let (out, r) = repo.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(job(&r, "unit-tests")["tests"]["failures"], 1);
    assert_eq!(job(&r, "package")["status"], "skipped");
    assert_eq!(job(&r, "notify")["status"], "success");
    assert_eq!(job(&r, "cleanup")["status"], "success");
}

#[test]
fn dag_follows_needs() {
    let repo = copy_example("dag");
    let (out, r) = repo.run(&["--jobs", "2"]);
    assert!(out.status.success(), "{}\n{r:#}", stderr(&out));
    let done = |n: &str| job(&r, n)["finished_at"].as_str().unwrap().to_string();
    assert!(
        done("test-api") < done("build-web"),
        "test-api did not wait for build-web\n{r:#}"
    );
    assert_eq!(job(&r, "package")["artifact"]["name"], "bundle");
}

#[test]
fn a_subdirectory_with_its_own_takt_yml_is_a_project() {
    let y = "jobs:\n  where:\n    script:\n      - 'case \"$CI_PROJECT_DIR\" in */svc) ;; *) exit 7;; esac'\n      - test -f main.py\n    rules:\n      - changes: [main.py]\n";
    let repo = Repo::new(&[
        ("svc/takt.yml", y),
        ("svc/main.py", "print(1)"),
        ("takt.yml", "jobs:\n  root: {script: [false]}\n"),
    ]);
    let out = takt()
        .arg("run")
        .arg(repo.path().join("svc"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["project"], "svc");
    assert_eq!(job(&r, "where")["status"], "success");
}
