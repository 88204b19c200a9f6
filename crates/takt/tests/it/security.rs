//! The security regression corpus (docs/security.md): each test is one hole an attacker found
//! in a release build, reproduced against the real binary on 127.0.0.1. Every one of them
//! failed before its fix.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};
use takt_model::{Event, EventKind, Trigger};
use takt_server::auth::Scope;

const OK_JOB: &str = "jobs:\n  hello:\n    script: [echo hello]\n";

/// Item 1: a `rules: if:` nested 2,000 parentheses deep aborted the server at planning, and
/// every restart planned the same run again. Now the run fails with a positioned diagnostic,
/// `takt lint` says the same with exit code 2, and the server keeps answering.
#[tokio::test]
async fn a_deeply_nested_expression_fails_its_run_and_the_server_lives() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("{}$A == \"x\"{}", "(".repeat(2000), ")".repeat(2000));
    let yml = format!("jobs:\n  a:\n    script: [echo a]\n    rules:\n      - if: '{deep}'\n");
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let lint = takt().arg("lint").arg(repo.path()).output().unwrap();
    assert_eq!(lint.status.code(), Some(2), "{}", stderr(&lint));
    assert!(stderr(&lint).contains("takt.yml:5:"), "{}", stderr(&lint));

    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "demo", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/demo/trigger", &admin, json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let run = finished_run(&s, &admin, "demo", 1).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let reason = run["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("takt.yml:5:"), "{run:#}");
    let r = client().get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Item 1: a run whose planning was cut off by a server crash is failed at the next start,
/// with the reason, instead of being planned again.
#[tokio::test]
async fn a_run_the_server_died_planning_is_failed_not_planned_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let repo = Repo::new(&[("takt.yml", OK_JOB)]);
    let commit = repo.rev("HEAD");
    let mut s = start(&data, &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "demo", repo.path()).await;
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    {
        // What the log holds after a crash during planning: queued, planning, nothing else.
        let store = takt_store::Store::open_sqlite(&data.join("takt.db")).await.unwrap();
        for kind in [
            EventKind::RunQueued {
                commit: commit.clone(),
                branch: Some("main".into()),
                tag: None,
                trigger: Trigger::Api { token: "t".into() },
                dirty: false,
                merge_request: None,
            },
            EventKind::RunPlanning,
        ] {
            store.append(&Event::now("demo", Some(1), kind)).await.unwrap();
        }
        store.close().await;
    }
    let s = start(&data, &[]);
    let run = finished_run(&s, &admin, "demo", 1).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(run["reason"].as_str().unwrap().contains("planning"), "{run:#}");
    assert!(run["jobs"].as_array().is_none_or(|j| j.is_empty()), "{run:#}");
    // Nothing else was queued for it, and the server works: a new trigger runs.
    let (st, b) = post_json(&s, "/api/v1/projects/demo/trigger", &admin, json!({"force": true})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["run"], 2, "{b}");
    assert_eq!(finished_run(&s, &admin, "demo", 2).await["status"], "success");
}

/// Items 2 and 10: a `ci` token could label a feature commit `main` and get main's secrets;
/// refs were not validated.
#[tokio::test]
async fn a_run_branch_must_contain_its_commit_and_refs_must_be_valid() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(&[("takt.yml", OK_JOB)]);
    let main1 = repo.rev("HEAD");
    repo.commit(&[("a", "1")], "second on main");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.commit(&[("b", "1")], "feature work");
    let feature = repo.rev("HEAD");
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["tag", "v1", &main1]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let ci = new_token(&s, &admin, Scope::Ci).await;
    add_project(&s, &admin, "demo", repo.path()).await;
    let trigger = |body: serde_json::Value| post_json(&s, "/api/v1/projects/demo/trigger", &ci, body);

    let (st, b) = trigger(json!({"rev": feature, "ref": "refs/heads/main"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["error"].as_str().unwrap().contains("not on branch `main`"), "{b}");
    let (st, b) = trigger(json!({"rev": feature, "ref": "refs/tags/v1"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let (st, b) = trigger(json!({"rev": main1, "ref": "refs/heads/nope"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    for bad in [
        "refs/heads/../../../etc".to_string(),
        format!("refs/heads/{}", "x".repeat(100_000)),
        "refs/heads/a\u{7}b".to_string(),
        "refs/heads/x.lock".to_string(),
        "refs/heads/a//b".to_string(),
        "refs/heads/@{-1}".to_string(),
    ] {
        let (st, b) = trigger(json!({"rev": main1, "ref": bad})).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
        assert!(
            b["error"].as_str().unwrap().len() < 400,
            "the error quotes the whole ref: {b}"
        );
    }
    // What is true is accepted: the feature head on its branch, an older main commit (it is
    // on main), the tag's own commit.
    for body in [
        json!({"rev": feature, "ref": "refs/heads/feature"}),
        json!({"rev": main1, "ref": "refs/heads/main"}),
        json!({"rev": main1, "ref": "refs/tags/v1"}),
    ] {
        let (st, b) = trigger(body.clone()).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{body}: {b}");
    }
    let runs = finished_runs(&s, &ci, "demo", 3).await;
    assert_eq!(runs.len(), 3, "refused triggers made no run: {runs:#?}");
}

/// Item 4: two concurrent revocations of the only two admin tokens both succeeded.
#[tokio::test]
async fn the_last_admin_token_cannot_be_revoked_even_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let mut admin = s.printed_token.clone().unwrap();
    let admin_ids = |v: serde_json::Value| -> Vec<String> {
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["scope"] == "admin")
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    for round in 0..10 {
        let before = admin_ids(get_json(&s, "/api/v1/tokens", &admin).await);
        assert_eq!(before.len(), 1, "round {round}");
        let other = new_token(&s, &admin, Scope::Admin).await;
        let after = admin_ids(get_json(&s, "/api/v1/tokens", &admin).await);
        let other_id = after.iter().find(|id| !before.contains(id)).unwrap().clone();
        let mine_id = before[0].clone();
        let del = |token: String, id: String| {
            let url = format!("{}/api/v1/tokens/{id}", s.base);
            async move { client().delete(url).bearer_auth(token).send().await.unwrap().status() }
        };
        // Each revokes the other, at once.
        let (a, b) = tokio::join!(del(admin.clone(), other_id), del(other.clone(), mine_id));
        let ok = [a, b].iter().filter(|s| **s == StatusCode::NO_CONTENT).count();
        assert_eq!(ok, 1, "round {round}: {a} and {b}");
        for st in [a, b] {
            assert!(
                [StatusCode::NO_CONTENT, StatusCode::CONFLICT, StatusCode::UNAUTHORIZED].contains(&st),
                "{st}"
            );
        }
        // Exactly one admin token is left, and it works.
        if a != StatusCode::NO_CONTENT {
            admin = other;
        }
        let left = admin_ids(get_json(&s, "/api/v1/tokens", &admin).await);
        assert_eq!(left.len(), 1, "round {round}");
    }
    // And the last one cannot revoke itself.
    let me = admin_ids(get_json(&s, "/api/v1/tokens", &admin).await).remove(0);
    let r = client()
        .delete(format!("{}/api/v1/tokens/{me}", s.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
}

/// Item 6: unauthenticated requests to 20,000 made-up paths grew /metrics to 31 MB.
#[tokio::test]
async fn made_up_paths_and_methods_create_no_metric_series() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let c = client();
    for i in 0..300 {
        let r = c.get(format!("{}/nope-{i}", s.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let m = reqwest::Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
        let _ = c.request(m, format!("{}/api/v1/runs", s.base)).send().await.unwrap();
    }
    let text = get_text(&s, "/metrics", &admin).await;
    assert!(!text.contains("nope-"), "a path became a label");
    assert!(!text.contains("method=\"X1"), "a method became a label");
    assert!(text.contains("route=\"unmatched\""), "{text}");
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(text.len() < 64 * 1024, "/metrics is {} bytes", text.len());
    // The store's size is shown (item 8).
    assert!(text.contains("takt_store_bytes "), "{text}");
    assert!(text.contains("takt_store_wal_bytes "), "{text}");
    // The machine's and the process's own figures (the remediation issue's system area).
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let rss = value("process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 1e9, "{rss}");
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_cpu_seconds_total") > 0.0);
    assert!(value("takt_disk_free_bytes") > 0.0 && value("takt_disk_free_bytes") <= value("takt_disk_total_bytes"));
    assert!(value("takt_host_memory_available_bytes") <= value("takt_host_memory_total_bytes"));
    assert!(text.contains("takt_host_cpu_seconds_total{mode=\"idle\"} "), "{text}");
}

/// Failed logins, bad webhook signatures and refusals are counted, and summed up in one
/// `security_summary` event per period (1 s here, a minute by default) when there were any:
/// never one event per request.
#[tokio::test]
async fn refused_requests_are_summed_up_once_a_period() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[("TAKT_SECURITY_SUMMARY_SECONDS", "1")]);
    let admin = s.printed_token.clone().unwrap();
    let reader = new_token(&s, &admin, takt_server::auth::Scope::Read).await;
    let repo = Repo::new(&[("takt.yml", "jobs:\n  a: {script: [x]}\n")]);
    add_project(&s, &admin, "app", repo.path()).await;
    let head = get_json(&s, &format!("/api/v1/events?after={}&limit=1", i64::MAX), &admin).await["head"]
        .as_i64()
        .unwrap();
    let c = client();
    for _ in 0..5 {
        let r = c
            .get(format!("{}/api/v1/runs", s.base))
            .bearer_auth("takt_wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = c
        .post(format!("{}/api/v1/tokens", s.base))
        .bearer_auth(&reader)
        .json(&json!({"name": "x", "scope": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .post(format!("{}/api/v1/hooks/github/app", s.base))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", "sha256=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let page = get_json(
        &s,
        &format!("/api/v1/events?kind=security_summary&after={head}&wait=8"),
        &admin,
    )
    .await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page:#}");
    let e = &events[0];
    assert_eq!(e["failed_logins"], 5, "{e:#}");
    assert_eq!(e["bad_signatures"], 1, "{e:#}");
    assert_eq!(e["unauthorized"], 6, "the 5 logins and the webhook: {e:#}");
    assert_eq!(e["forbidden"], 1, "{e:#}");
    // A quiet period records nothing.
    let seq = e["seq"].as_i64().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let page = get_json(&s, &format!("/api/v1/events?kind=security_summary&after={seq}"), &admin).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 0, "{page:#}");
}

/// Item 7: a remote that accepts a connection and never answers hung `project add` forever.
#[tokio::test]
async fn a_remote_that_never_answers_times_out_and_its_git_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts, reads nothing, answers nothing, holds each connection until the test ends.
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for c in listener.incoming().take(20).flatten() {
            h.lock().unwrap().push(c);
        }
    });
    let s = start(&dir.path().join("data"), &[("TAKT_GIT_TIMEOUT", "2")]);
    let admin = s.printed_token.clone().unwrap();
    let url = format!("http://127.0.0.1:{port}/silent.git");
    let t = Instant::now();
    let (st, b) = post_json(&s, "/api/v1/projects", &admin, json!({"name": "silent", "repo": url})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(t.elapsed() < Duration::from_secs(9), "took {:?}", t.elapsed());
    assert!(b["error"].as_str().unwrap().contains("cannot mirror"), "{b}");
    // No git process for that remote is left.
    eventually("git processes gone", Duration::from_secs(5), || {
        !std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read(p.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&format!("127.0.0.1:{port}")))
                .unwrap_or(false)
        })
    });
    // The server answers meanwhile and after.
    let r = client().get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(held);
}

/// Item 11: `TAKT_MAX_ARTIFACT_BYTES` was not applied to job artifacts.
#[tokio::test]
async fn a_job_artifact_over_the_limit_fails_the_job_and_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let yml = "jobs:\n  big:\n    script: [head -c 5000000 /dev/zero > big.bin]\n    artifacts: {paths: [big.bin]}\n  small:\n    script: [echo hi > s.txt]\n    artifacts: {paths: [s.txt]}\n";
    let repo = Repo::new(&[("takt.yml", yml)]);
    let s = start(&dir.path().join("data"), &[("TAKT_MAX_ARTIFACT_BYTES", "1000")]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "demo", repo.path()).await;
    let (st, _) = post_json(&s, "/api/v1/projects/demo/trigger", &admin, json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let run = finished_run(&s, &admin, "demo", 1).await;
    assert_eq!(job_of(&run, "big")["status"], "failed", "{run:#}");
    let list = get_json(&s, "/api/v1/artifacts", &admin).await;
    let names: Vec<&str> = list["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert!(!names.contains(&"big"), "{list:#}");
    let log = get_text(&s, "/api/v1/runs/demo/1/logs/big", &admin).await;
    assert!(log.contains("over the server's limit of 1000 bytes"), "{log}");
}

/// Item 12: `takt runs ls | head -1` panicked (exit 101 with a backtrace) on the closed pipe.
#[tokio::test]
async fn a_closed_pipe_ends_the_cli_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(&[("takt.yml", OK_JOB)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "demo", repo.path()).await;
    for _ in 0..3 {
        post_json(&s, "/api/v1/projects/demo/trigger", &admin, json!({"force": true})).await;
    }
    finished_runs(&s, &admin, "demo", 3).await;
    for args in [
        vec!["runs", "ls", "--server", &s.base, "--token", &admin],
        vec!["lint", repo.path().to_str().unwrap()],
    ] {
        let mut child = takt()
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before anything is written
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{args:?}: {}", stderr(&out));
    }
}

/// Item 13: `Authorization: bearer …` (lower case) got 401; the scheme is case-insensitive.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let r = client()
            .get(format!("{}/api/v1/projects", s.base))
            .header("authorization", format!("{scheme} {admin}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{scheme}");
    }
    let r = client()
        .get(format!("{}/api/v1/projects", s.base))
        .header("authorization", format!("Basic {admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// Reads an SSE body to its end (bounded by the client's timeout); the data lines and whether
/// an `end` event came.
async fn sse(s: &Server, token: &str, path: &str, last_id: Option<&str>) -> (Vec<String>, bool) {
    let mut req = client()
        .get(format!("{}{path}", s.base))
        .bearer_auth(token)
        .header("accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let text = r.text().await.unwrap();
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|l| l.trim().to_string())
        .collect();
    (data, text.contains("event: end"))
}

/// Item 14: `Last-Event-ID` beyond the log's end replayed from byte 0; following a job that
/// had not started gave 404 instead of waiting for it.
#[tokio::test]
async fn sse_answers_from_the_end_and_waits_for_a_job_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("flag");
    let yml = format!(
        "stages: [one, two]\njobs:\n  first:\n    stage: one\n    script:\n      - echo first-line\n      - while [ ! -f {} ]; do sleep 0.05; done\n  second:\n    stage: two\n    script: [echo second-line]\n",
        flag.display()
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "demo", repo.path()).await;
    post_json(&s, "/api/v1/projects/demo/trigger", &admin, json!({})).await;
    // `second` has not started (it waits for `first`): the stream waits for it.
    let follower = {
        let (base, admin) = (s.base.clone(), admin.clone());
        tokio::spawn(async move {
            tls();
            let r = reqwest::Client::new()
                .get(format!("{base}/api/v1/runs/demo/1/logs/second?follow=true"))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        })
    };
    until("first runs", || async {
        let run = get_json(&s, "/api/v1/runs/demo/1", &admin).await;
        run["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().any(|x| x["name"] == "first" && x.get("log").is_some()))
    })
    .await;
    std::fs::write(&flag, "").unwrap();
    let (st, text) = follower.await.unwrap();
    assert_eq!(st, StatusCode::OK);
    assert!(text.contains("second-line") && text.contains("event: end"), "{text}");
    finished_run(&s, &admin, "demo", 1).await;
    // An offset past the end: nothing is replayed, the stream just ends.
    let (data, ended) = sse(&s, &admin, "/api/v1/runs/demo/1/logs/first", Some("99999999")).await;
    assert!(ended);
    assert!(!data.iter().any(|l| l.contains("first-line")), "{data:?}");
    let (data, _) = sse(&s, &admin, "/api/v1/runs/demo/1/logs/first", Some("0")).await;
    assert!(data.iter().any(|l| l.contains("first-line")), "{data:?}");
    let r = client()
        .get(format!("{}/api/v1/runs/demo/1/logs/first", s.base))
        .bearer_auth(&admin)
        .header("accept", "text/event-stream")
        .header("last-event-id", "not-a-number")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A job the run does not have: 404 at once.
    let r = client()
        .get(format!("{}/api/v1/runs/demo/1/logs/nope?follow=true", s.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Item 16: artifact names took bidi overrides and look-alike dots.
#[tokio::test]
async fn artifact_names_outside_the_safe_set_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let ci = new_token(&s, &admin, Scope::Ci).await;
    for name in [
        "ab%E2%80%AEcd",
        "%EF%BC%8E%EF%BC%8E",
        "a%20b",
        ".hidden",
        "caf%C3%A9",
        "a..b",
    ] {
        let r = client()
            .put(format!("{}/api/v1/artifacts/{name}/1", s.base))
            .bearer_auth(&ci)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{name}");
    }
    let r = client()
        .put(format!("{}/api/v1/artifacts/app_1.0+b-2/1.0.0-rc.1", s.base))
        .bearer_auth(&ci)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // In a pipeline: lint refuses the name, with its position.
    let repo = Repo::new(&[(
        "takt.yml",
        "jobs:\n  a:\n    script: [touch f]\n    artifacts:\n      name: \"ab\\u202Ecd\"\n      paths: [f]\n",
    )]);
    let lint = takt().arg("lint").arg(repo.path()).output().unwrap();
    assert_eq!(lint.status.code(), Some(2), "{}", stderr(&lint));
    assert!(stderr(&lint).contains("takt.yml:5:"), "{}", stderr(&lint));
}

/// Found in review: takt wrote a step's script into the workspace following whatever the job
/// had put there, so `ln -s ~/.bashrc ../after_script.sh` made the server write the file; and
/// a symlink given as an artifact published what it pointed at (the admin token).
#[tokio::test]
async fn the_server_never_follows_a_symlink_a_job_left_in_its_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "untouched\n").unwrap();
    let secret = dir.path().join("server-secret");
    std::fs::write(&secret, "the-server-secret-bytes\n").unwrap();
    let yml = format!(
        "jobs:\n  plant:\n    script:\n      - ln -s {victim} ../after_script.sh\n      - ln -s {secret} t\n      - ln -s {secret} report.xml\n    after_script: [echo written-by-the-after-script]\n    artifacts:\n      paths: [t]\n      reports: {{junit: report.xml}}\n",
        victim = victim.display(),
        secret = secret.display()
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "demo", repo.path()).await;
    post_json(&s, "/api/v1/projects/demo/trigger", &admin, json!({})).await;
    let run = finished_run(&s, &admin, "demo", 1).await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n", "{run:#}");
    // The artifact is the link itself (in a tar), not the file it names.
    let list = get_json(&s, "/api/v1/artifacts", &admin).await;
    let a = list["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "plant")
        .unwrap_or_else(|| panic!("{list:#} {run:#}"))
        .clone();
    let bytes = client()
        .get(format!(
            "{}/api/v1/artifacts/plant/{}/blob",
            s.base,
            a["version"].as_str().unwrap()
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&bytes).contains("the-server-secret-bytes"),
        "the artifact holds what the link named"
    );
    let log = get_text(&s, "/api/v1/runs/demo/1/logs/plant", &admin).await;
    assert!(log.contains("not a regular file"), "{log}");
    assert!(!log.contains("the-server-secret-bytes"), "{log}");
}
