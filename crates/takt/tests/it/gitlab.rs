//! `.gitlab-ci.yml` files run unchanged by `takt run`: the plain-shell pipelines of the GitLab
//! corpus (crates/takt-pipeline/tests/gitlab/), each run in a real repository, must run the jobs
//! their expected plan lists for a push to the default branch, and pass.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::*;
use serde_json::json;
use std::path::Path;

/// Corpus cases whose scripts are plain shell (echo, mkdir, cat, grep).
const PLAIN_SHELL: &[&str] = &[
    "05-extends-chain",
    "06-reference-scripts",
    "08-include-glob",
    "09-workflow-rules",
    "10-matrix-needs",
    "11-dag-needs",
    "12-hidden-any-yaml",
    "14-expire-in",
    "19-default-inherit",
    "20-duplicate-keys",
    "22-spec-inputs",
    "26-merge-keys",
    "28-variables-forms",
    "35-scripts-plain-shell",
    "38-child-pipeline",
];

fn corpus(case: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../takt-pipeline/tests/gitlab")
        .join(case)
}

/// The case's files (all but expected.txt), relative path → contents.
fn case_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().unwrap() != "expected.txt" {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out
}

/// The jobs the expected plan runs for a push to main (`name [stage] after|needs [...]`).
fn expected_main_jobs(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
    let section = text
        .split("\n== ")
        .find(|s| s.starts_with("push to main"))
        .unwrap_or_else(|| panic!("{}: no push-to-main plan", dir.display()));
    section
        .lines()
        .skip(1)
        .filter_map(|l| {
            let at = ["] after [", "] needs ["].iter().filter_map(|m| l.find(m)).min()?;
            Some(l[..l[..at].rfind(" [")?].to_string())
        })
        .collect()
}

fn log_of(repo: &Repo, report: &serde_json::Value, name: &str) -> String {
    std::fs::read_to_string(repo.data_dir().join(job(report, name)["log"].as_str().unwrap())).unwrap()
}

#[test]
fn the_plain_shell_pipelines_of_the_corpus_run_as_planned() {
    for case in PLAIN_SHELL {
        let dir = corpus(case);
        let files = case_files(&dir);
        let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let repo = Repo::new(&refs);
        let (out, r) = repo.run(&[]);
        assert!(out.status.success(), "{case}: {}\n{r:#}", stderr(&out));
        assert_eq!(r["status"], "success", "{case}: {r:#}");
        let mut ran: Vec<String> = r["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect();
        let mut want = expected_main_jobs(&dir);
        assert!(!want.is_empty(), "{case}: the expected plan lists no job");
        ran.sort();
        want.sort();
        assert_eq!(ran, want, "{case}: the jobs run are the ones planned");
        match *case {
            // The variable of the workflow rule that made the run reaches the job.
            "09-workflow-rules" => {
                let log = log_of(&repo, &r, "test");
                assert!(log.lines().any(|l| l.ends_with("Z test main")), "{log}");
            }
            // `expand: false` keeps `$` as written; pipeline and job variables both arrive.
            "28-variables-forms" => {
                let log = log_of(&repo, &r, "show");
                assert!(log.contains("staging $NOT_EXPANDED plain yes"), "{log}");
            }
            // `!reference` lines run as the template's commands, in order.
            "06-reference-scripts" => {
                let log = log_of(&repo, &r, "test");
                let test = log.lines().position(|l| l.ends_with("Z test")).unwrap();
                let one = log.lines().position(|l| l.ends_with("Z setup one")).unwrap();
                let two = log.lines().position(|l| l.ends_with("Z setup two")).unwrap();
                assert!(one < two && two < test, "{log}");
                // `$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH`: a local run of main is on the
                // default branch.
                assert!(log_of(&repo, &r, "deploy").contains("deploy to eu-west-1"));
            }
            // `inherit: variables` lets through none, or the names listed.
            "19-default-inherit" => {
                assert!(
                    log_of(&repo, &r, "inherits-all")
                        .lines()
                        .any(|l| l.ends_with("Z default before"))
                );
                assert!(!log_of(&repo, &r, "inherits-nothing").contains("default before"));
                assert!(log_of(&repo, &r, "no-variables").lines().any(|l| l.ends_with("Z []")));
                assert!(
                    log_of(&repo, &r, "some-variables")
                        .lines()
                        .any(|l| l.ends_with("Z [] [2]"))
                );
            }
            // Each trigger job ran its child pipeline as a run of its own, and waited for it.
            "38-child-pipeline" => {
                let child_log = |job_name: &str| {
                    let n = job(&r, job_name)["child_run"].as_u64().unwrap();
                    let dir = repo
                        .data_dir()
                        .join("logs")
                        .join(r["project"].as_str().unwrap())
                        .join(n.to_string());
                    (n, std::fs::read_to_string(dir.join("0-docs-build.1.log")).unwrap())
                };
                let (a, log) = child_log("docs");
                assert!(
                    log.lines()
                        .any(|l| l.ends_with("Z docs for [api] release [yes] from parent_pipeline")),
                    "{log}"
                );
                let (b, log) = child_log("optional-child");
                assert!(
                    log.lines()
                        .any(|l| l.ends_with("Z docs for [] release [] from parent_pipeline")),
                    "{log}"
                );
                assert!(a != b && a > 1 && b > 1, "child runs {a} and {b}");
                let report = job(&r, "report")["started_at"].as_str().unwrap();
                assert!(
                    report >= job(&r, "docs")["finished_at"].as_str().unwrap(),
                    "the next stage waits for the child"
                );
            }
            "10-matrix-needs" => {
                let log = log_of(&repo, &r, "build: [macos, arm64]");
                assert!(log.contains("build macos"), "{log}");
            }
            _ => {}
        }
    }
}

#[test]
fn parallel_jobs_get_gitlabs_node_index_and_total() {
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "shard:\n  parallel: 3\n  script:\n    - echo \"shard $CI_NODE_INDEX of $CI_NODE_TOTAL on $CI_DEFAULT_BRANCH\"\n",
    )]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for i in 1..=3 {
        let log = log_of(&repo, &r, &format!("shard {i}/3"));
        assert!(log.contains(&format!("shard {i} of 3 on main")), "{log}");
    }
}

#[test]
fn the_default_branch_of_a_local_run_is_origin_head_else_main() {
    // A repository whose only branch is `trunk` and whose origin says `trunk` is the default.
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "job:\n  script:\n    - echo \"default=$CI_DEFAULT_BRANCH\"\n",
    )]);
    repo.git(&["branch", "-m", "main", "trunk"]);
    repo.git(&["update-ref", "refs/remotes/origin/trunk", "HEAD"]);
    repo.git(&["symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/trunk"]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(log_of(&repo, &r, "job").contains("default=trunk"));
}

#[test]
fn dotenv_reports_reach_the_jobs_that_take_the_artifacts() {
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        r##"
stages: [build, deploy]
build:
  stage: build
  script:
    - echo "VERSION=1.2.3" > build.env
    - echo "# a comment" >> build.env
    - echo "URL=https://example.com/?a=b" >> build.env
  artifacts:
    reports:
      dotenv: build.env
deploy:
  stage: deploy
  variables:
    VERSION: from-the-file
  script:
    - echo "deploying $VERSION to $URL"
without-artifacts:
  stage: deploy
  needs:
    - job: build
      artifacts: false
  script:
    - echo "version [$VERSION]"
"##,
    )]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}\n{r:#}", stderr(&out));
    // GitLab's precedence: a dotenv variable wins over the job's own `variables:`.
    let log = log_of(&repo, &r, "deploy");
    assert!(
        log.lines()
            .any(|l| l.ends_with("Z deploying 1.2.3 to https://example.com/?a=b")),
        "{log}"
    );
    let log = log_of(&repo, &r, "without-artifacts");
    assert!(log.lines().any(|l| l.ends_with("Z version []")), "{log}");
    // The event log has them, with the report file listed.
    let events = repo.events();
    let outputs: Vec<&takt_model::EventKind> = events
        .iter()
        .map(|e| &e.kind)
        .filter(|k| matches!(k, takt_model::EventKind::JobOutputs { .. }))
        .collect();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let takt_model::EventKind::JobOutputs {
        job, dotenv, reports, ..
    } = outputs[0]
    else {
        unreachable!()
    };
    assert_eq!(job, "build");
    assert_eq!(dotenv[0], ("VERSION".to_string(), "1.2.3".to_string()));
    assert_eq!(reports[0].kind, "dotenv");
    assert_eq!(reports[0].path, "build.env");
}

#[test]
fn coverage_and_environment_are_recorded_on_the_run() {
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        r##"
stages: [test, deploy]
unit:
  stage: test
  script:
    - echo "TOTAL   120   30   75%"
    - echo "TOTAL   120   12   90%"
  coverage: '/^TOTAL.+?(\d+\%)$/'
lint:
  stage: test
  script: echo "Coverage 70.5 percent"
  coverage: '/Coverage \d+\.\d+/'
review:
  stage: deploy
  script: echo deploy
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    url: https://$CI_COMMIT_REF_SLUG.example.com
"##,
    )]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}\n{r:#}", stderr(&out));
    // GitLab takes the last matching line.
    assert_eq!(job(&r, "unit")["coverage"], 90.0);
    assert_eq!(job(&r, "lint")["coverage"], 70.5);
    assert_eq!(r["coverage"], 80.25, "the run's figure is the mean of its jobs'");
    let env = &job(&r, "review")["environment"];
    assert_eq!(env["name"], "review/main");
    assert_eq!(env["action"], "start");
    assert_eq!(env["url"], "https://main.example.com");
}

#[test]
fn a_delayed_job_waits_its_start_in() {
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "stages: [a, b]\nfirst:\n  stage: a\n  script: echo first\nlater:\n  stage: b\n  when: delayed\n  start_in: 2 seconds\n  script: echo later\n",
    )]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let at = |name: &str, field: &str| {
        time::OffsetDateTime::parse(
            job(&r, name)[field].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let gap = at("later", "started_at") - at("first", "finished_at");
    assert!(
        gap >= time::Duration::seconds(2),
        "started {gap} after the stage before"
    );
    assert!(!stderr(&out).contains("not honoured"), "{}", stderr(&out));
}

#[test]
fn a_job_keeps_several_caches_each_under_its_key() {
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "build:\n  script:\n    - test -f .npm/a && echo npm-restored || echo npm-cold\n    - test -f vendor/b && echo vendor-restored || echo vendor-cold\n    - mkdir -p .npm vendor && echo a > .npm/a && echo b > vendor/b\n  cache:\n    - key: npm\n      paths: [.npm/]\n    - key: vendor\n      paths: [vendor/]\n",
    )]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let caches = &job(&r, "build")["caches"];
    assert_eq!(caches[0]["key"], "npm");
    assert_eq!(caches[1]["key"], "vendor");
    assert_eq!(
        (&caches[0]["saved"], &caches[1]["saved"]),
        (&json!(true), &json!(true)),
        "{caches:#}"
    );
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = log_of(&repo, &r, "build");
    assert!(log.lines().any(|l| l.ends_with("Z npm-restored")), "{log}");
    assert!(log.lines().any(|l| l.ends_with("Z vendor-restored")), "{log}");
    let caches = &job(&r, "build")["caches"];
    assert_eq!(
        (&caches[0]["hit"], &caches[1]["hit"]),
        (&json!(true), &json!(true)),
        "{caches:#}"
    );
}

/// The README's `.gitlab-ci.yml` example lints, with the one warning it promises.
#[test]
fn the_readmes_gitlab_example_lints() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let start = readme.find("# .gitlab-ci.yml\n").expect("the README has the example");
    let end = start + readme[start..].find("```").unwrap();
    let repo = Repo::new(&[(".gitlab-ci.yml", &readme[start..end])]);
    let out = takt().arg("lint").arg(repo.path()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().filter(|l| l.contains(": warning: ")).count(), 1, "{err}");
    assert!(
        stderr(&out).contains("image `rust:1.80` is not used"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_failing_child_pipeline_fails_its_trigger_job_only_with_strategy_depend() {
    let repo = Repo::new(&[
        (
            ".gitlab-ci.yml",
            "stages: [first, second]\nmissing:\n  stage: first\n  trigger:\n    include: nope.yml\n  allow_failure: true\ndepends:\n  stage: second\n  trigger:\n    include: child.yml\n    strategy: depend\nfire-and-forget:\n  stage: second\n  trigger:\n    include: child.yml\n",
        ),
        ("child.yml", "fails:\n  script: [exit 3]\n"),
    ]);
    // Both trigger jobs start together, whatever the machine's cores (the failure of one
    // stops the line for jobs not started yet).
    let (out, r) = repo.run(&["--jobs", "4"]);
    assert!(!out.status.success(), "{r:#}");
    assert_eq!(job(&r, "depends")["status"], "failed", "{r:#}");
    assert_eq!(job(&r, "fire-and-forget")["status"], "success", "{r:#}");
    let missing = job(&r, "missing");
    assert_eq!(missing["status"], "failed");
    assert!(
        missing["reason"]
            .as_str()
            .unwrap()
            .contains("nope.yml is not in commit"),
        "{missing:#}"
    );
    // The child runs are runs of the project like any other, started by their parent.
    let events = repo.events();
    let parents: Vec<u64> = events
        .iter()
        .filter_map(|e| match &e.kind {
            takt_model::EventKind::RunQueued {
                trigger: takt_model::Trigger::Parent { run, .. },
                ..
            } => Some(*run),
            _ => None,
        })
        .collect();
    assert_eq!(parents, vec![1, 1], "{parents:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_a_child_pipeline_as_a_run_of_the_project() {
    use common::server::*;
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let repo = Repo::new(&[
        (
            ".gitlab-ci.yml",
            "stages: [build, docs]\nbuild:\n  stage: build\n  script: echo build\ndocs:\n  stage: docs\n  trigger:\n    include: ci/docs.yml\n    strategy: depend\n",
        ),
        (
            "ci/docs.yml",
            "docs-build:\n  script: echo \"child of $CI_PIPELINE_SOURCE\"\n",
        ),
    ]);
    add_project(&s, &admin, "demo", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/demo/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st.as_u16(), 202, "{b}");
    let parent = finished_run(&s, &admin, "demo", 1).await;
    assert_eq!(parent["status"], "success", "{parent:#}");
    assert_eq!(job_of(&parent, "docs")["child_run"], 2, "{parent:#}");
    let child = finished_run(&s, &admin, "demo", 2).await;
    assert_eq!(
        child["trigger"],
        json!({"parent": {"run": 1, "job": "docs"}}),
        "{child:#}"
    );
    assert_eq!(job_of(&child, "docs-build")["status"], "success", "{child:#}");
    // The next run of the project is numbered after the child.
    let (st, b) = post_json(
        &s,
        "/api/v1/projects/demo/trigger",
        &admin,
        json!({"rev": "main", "force": true}),
    )
    .await;
    assert_eq!(st.as_u16(), 202, "{b}");
    assert_eq!(b["run"], 3, "{b}");
    finished_run(&s, &admin, "demo", 4).await;
}

#[test]
fn jobs_of_a_resource_group_run_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let yml = format!(
        "deploy:\n  parallel: 3\n  resource_group: production\n  script:\n    - echo \"start $CI_NODE_INDEX\" >> {t}\n    - sleep 0.3\n    - echo \"end $CI_NODE_INDEX\" >> {t}\n",
        t = trace.display()
    );
    let repo = Repo::new(&[(".gitlab-ci.yml", &yml)]);
    let (out, r) = repo.run(&["--jobs", "3"]);
    assert!(out.status.success(), "{}\n{r:#}", stderr(&out));
    // Each start is followed by its own end before the next start.
    let lines: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    for pair in lines.chunks(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.starts_with("start ") && b.starts_with("end ") && a[6..] == b[4..],
            "{lines:?}"
        );
    }
}

#[test]
fn lint_reads_the_child_pipelines_too() {
    let repo = Repo::new(&[
        (".gitlab-ci.yml", "docs:\n  trigger:\n    include: ci/docs.yml\n"),
        ("ci/docs.yml", "docs-build:\n  scirpt: [make]\n"),
    ]);
    let out = takt().arg("lint").arg(repo.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("ci/docs.yml:2:3: error: unknown key `scirpt`"), "{err}");
    assert!(err.contains("1 error in the child pipeline"), "{err}");
    repo.commit(&[("ci/docs.yml", "docs-build:\n  script: [make]\n")], "fix");
    let out = takt().arg("lint").arg(repo.path()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_that_are_not_public_need_more_than_a_read_token() {
    use common::server::*;
    use takt_server::auth::Scope;
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "secret-build:\n  script: [echo inside > out.txt]\n  artifacts:\n    paths: [out.txt]\n    public: false\nopen-build:\n  script: [echo open > open.txt]\n  artifacts:\n    paths: [open.txt]\n",
    )]);
    add_project(&s, &admin, "demo", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/demo/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st.as_u16(), 202, "{b}");
    let run = finished_run(&s, &admin, "demo", 1).await;
    assert_eq!(run["status"], "success", "{run:#}");
    let short = &repo.rev("HEAD")[..8];
    let (read, ci) = (
        new_token(&s, &admin, Scope::Read).await,
        new_token(&s, &admin, Scope::Ci).await,
    );
    let blob = |name: &str| format!("/api/v1/artifacts/{name}/1-{short}/blob");
    assert_eq!(get_status(&s, &blob("secret-build"), &read).await.as_u16(), 403);
    assert_eq!(get_text(&s, &blob("secret-build"), &ci).await, "inside\n");
    assert_eq!(get_text(&s, &blob("open-build"), &read).await, "open\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_run_is_cancelled_through_its_parent() {
    use common::server::*;
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("started");
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let child = format!("wait:\n  script:\n    - touch {}\n    - sleep 60\n", flag.display());
    let repo = Repo::new(&[
        (
            ".gitlab-ci.yml",
            "docs:\n  trigger:\n    include: child.yml\n    strategy: depend\n",
        ),
        ("child.yml", &child),
    ]);
    add_project(&s, &admin, "demo", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/demo/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st.as_u16(), 202, "{b}");
    until("the child's job started", || {
        let f = flag.clone();
        async move { f.exists() }
    })
    .await;
    let (st, b) = post_json(&s, "/api/v1/runs/demo/2/cancel", &admin, json!({})).await;
    assert_eq!(st.as_u16(), 409, "{b}");
    assert!(b.to_string().contains("cancel run #1"), "{b}");
    let (st, b) = post_json(&s, "/api/v1/runs/demo/1/cancel", &admin, json!({})).await;
    assert_eq!(st.as_u16(), 202, "{b}");
    assert_eq!(finished_run(&s, &admin, "demo", 1).await["status"], "cancelled");
    assert_eq!(finished_run(&s, &admin, "demo", 2).await["status"], "cancelled");
}

#[test]
fn hostile_child_pipelines_and_dotenv_reports_are_refused() {
    // A child pipeline outside the repository is a lint error naming the job.
    let repo = Repo::new(&[(".gitlab-ci.yml", "escape:\n  trigger:\n    include: ../../etc/passwd\n")]);
    let out = takt().arg("lint").arg(repo.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("must name a file inside the repository"),
        "{}",
        stderr(&out)
    );
    // A pipeline that triggers itself stops at two levels of children.
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "again:\n  trigger:\n    include: .gitlab-ci.yml\n    strategy: depend\n",
    )]);
    let (out, r) = repo.run(&[]);
    assert!(!out.status.success(), "{r:#}");
    let runs: Vec<takt_model::Trigger> = repo
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            takt_model::EventKind::RunQueued { trigger, .. } => Some(trigger),
            _ => None,
        })
        .collect();
    assert_eq!(runs.len(), 3, "a parent, a child and a grandchild: {runs:?}");
    // A dotenv report that is a symlink (to a file outside the workspace) is not read.
    let repo = Repo::new(&[(
        ".gitlab-ci.yml",
        "stages: [a, b]\nleak:\n  stage: a\n  script: [ln -s /etc/hostname build.env]\n  artifacts:\n    reports: {dotenv: build.env}\nread:\n  stage: b\n  script: ['echo \"[$HOSTNAME_LEAK]\"']\n",
    )]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}\n{r:#}", stderr(&out));
    let log = log_of(&repo, &r, "leak");
    assert!(log.contains("dotenv report: build.env: not a regular file"), "{log}");
}
