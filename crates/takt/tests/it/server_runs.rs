//! The server's run queue for real: limits, newest-only, cancel, retry, logs over HTTP and
//! SSE, secrets, and a server killed with -9 in the middle of a run.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};
use takt_server::auth::Scope;

/// A job that records its pid and waits until `flag` exists.
fn waiting_job(pids: &std::path::Path, flag: &std::path::Path) -> String {
    format!(
        "jobs:\n  wait:\n    script:\n      - echo $$ > {}/$CI_PIPELINE_ID\n      - while [ ! -f {} ]; do sleep 0.05; done\n",
        pids.display(),
        flag.display()
    )
}

/// Waits (bounded) for the pid that run `run`'s waiting job wrote.
async fn job_pid(pids: &std::path::Path, run: u64) -> i32 {
    let f = pids.join(run.to_string());
    until("the job started", || {
        let f = f.clone();
        async move { std::fs::read_to_string(&f).is_ok_and(|t| t.ends_with('\n')) }
    })
    .await;
    std::fs::read_to_string(&f).unwrap().trim().parse().unwrap()
}

async fn trigger(s: &Server, token: &str, rev: &str) -> serde_json::Value {
    let (st, b) = post_json(s, "/api/v1/projects/demo/trigger", token, json!({"rev": rev})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    b
}

#[tokio::test]
async fn newest_mode_supersedes_waiting_runs_and_cancel_kills_a_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let (pids, flag) = (dir.path().join("pids"), dir.path().join("flag"));
    std::fs::create_dir_all(&pids).unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let ci = new_token(&s, &admin, Scope::Ci).await;
    let repo = Repo::new(&[("takt.yml", &waiting_job(&pids, &flag))]);
    add_project(&s, &admin, "demo", repo.path()).await;
    let (st, b) = post_json(
        &s,
        "/api/v1/projects/demo/settings",
        &admin,
        json!({"queue": "newest", "concurrency": 1}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, _) = post_json(&s, "/api/v1/projects/demo/settings", &admin, json!({"concurrency": 0})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = post_json(&s, "/api/v1/projects/demo/settings", &admin, json!({"bogus": 1})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    trigger(&s, &ci, "main").await;
    let pid = job_pid(&pids, 1).await;
    // Two more commits while run 1 runs: with concurrency 1 they wait; the newer supersedes.
    repo.commit(&[("x", "2")], "two");
    assert_eq!(trigger(&s, &ci, "main").await["run"], 2);
    repo.commit(&[("x", "3")], "three");
    assert_eq!(trigger(&s, &ci, "main").await["run"], 3);
    let r2 = finished_run(&s, &ci, "demo", 2).await;
    assert_eq!(r2["status"], "cancelled", "{r2}");
    assert!(r2["reason"].as_str().unwrap().contains("superseded by run #3"), "{r2}");
    assert!(!pids.join("3").exists(), "run 3 waits for the project's one slot");

    // Cancel the running run: its process dies; then run 3 starts.
    let out = takt()
        .args(["runs", "cancel", "demo", "1", "--server", &s.base, "--token", &ci])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r1 = finished_run(&s, &ci, "demo", 1).await;
    assert_eq!(r1["status"], "cancelled", "{r1}");
    assert!(!alive(pid), "the job's process was killed");
    until("run 3 started", || {
        let p = pids.join("3");
        async move { p.exists() }
    })
    .await;
    std::fs::write(&flag, "").unwrap();
    assert_eq!(finished_run(&s, &ci, "demo", 3).await["status"], "success");
    // A finished run cannot be cancelled; a missing one is 404.
    let (st, b) = post_json(&s, "/api/v1/runs/demo/3/cancel", &ci, json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    let (st, _) = post_json(&s, "/api/v1/runs/demo/99/cancel", &ci, json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_global_limit_holds_runs_of_every_project_and_every_mode_runs_each_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (pids, flag) = (dir.path().join("pids"), dir.path().join("flag"));
    std::fs::create_dir_all(&pids).unwrap();
    let s = start(&dir.path().join("data"), &[("TAKT_CONCURRENCY", "2")]);
    let admin = s.printed_token.clone().unwrap();
    let repo = Repo::new(&[("takt.yml", &waiting_job(&pids, &flag))]);
    add_project(&s, &admin, "demo", repo.path()).await;
    for i in 0..4 {
        repo.commit(&[("x", &i.to_string())], "c");
        trigger(&s, &admin, "main").await;
    }
    until("two runs started", || {
        let p = pids.clone();
        async move { std::fs::read_dir(&p).unwrap().count() == 2 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(std::fs::read_dir(&pids).unwrap().count(), 2, "at most 2 at once");
    let m = get_text(&s, "/metrics", &admin).await;
    assert!(
        m.contains("takt_runs_waiting 2") && m.contains("takt_runs_running 2"),
        "{m}"
    );
    std::fs::write(&flag, "").unwrap();
    for n in 1..=4 {
        assert_eq!(finished_run(&s, &admin, "demo", n).await["status"], "success");
    }
}

#[tokio::test]
async fn retry_of_failed_jobs_takes_passed_jobs_and_their_artifacts_over() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("flag");
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let ci = new_token(&s, &admin, Scope::Ci).await;
    let yml = format!(
        "stages: [build, test]\njobs:\n  build:\n    stage: build\n    script: ['echo built-in-$CI_PIPELINE_ID > out.txt']\n    artifacts: {{paths: [out.txt]}}\n  test:\n    stage: test\n    script: ['cat out.txt', 'test -f {}']\n",
        flag.display()
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    add_project(&s, &admin, "demo", repo.path()).await;
    trigger(&s, &ci, "main").await;
    let r1 = finished_run(&s, &ci, "demo", 1).await;
    assert_eq!(r1["status"], "failed", "{r1}");
    let (st, b) = post_json(&s, "/api/v1/runs/demo/1/retry", &ci, json!({"failed": "yes"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");

    std::fs::write(&flag, "").unwrap();
    let out = takt()
        .args([
            "runs", "retry", "demo", "1", "--failed", "--json", "--server", &s.base, "--token", &ci,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r2 = finished_run(&s, &ci, "demo", 2).await;
    assert_eq!(r2["status"], "success", "{r2}");
    assert_eq!(r2["trigger"]["retry"]["of"], 1);
    assert_eq!(r2["commit"], r1["commit"]);
    let build = job_of(&r2, "build");
    assert!(build["reason"].as_str().unwrap().contains("passed in run #1"), "{r2}");
    assert!(build.get("exit_code").is_none(), "build did not run again: {r2}");
    // The test job of run 2 read run 1's artifact.
    let log = get_text(&s, "/api/v1/runs/demo/2/logs/test", &ci).await;
    assert!(log.contains(" built-in-1\n"), "{log}");
    // Nothing failed in run 2: --failed has nothing to do; a whole retry runs everything.
    let (st, b) = post_json(&s, "/api/v1/runs/demo/2/retry", &ci, json!({"failed": true})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    let (st, b) = post_json(&s, "/api/v1/runs/demo/2/retry", &ci, json!({})).await;
    assert_eq!((st, &b["run"]), (StatusCode::ACCEPTED, &json!(3)), "{b}");
    let r3 = finished_run(&s, &ci, "demo", 3).await;
    assert_eq!(job_of(&r3, "build")["exit_code"], 0, "{r3}");
    // Token use is an event, and shows in the token list (recorded at most once a minute).
    let tokens = get_json(&s, "/api/v1/tokens", &admin).await;
    let bot = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci-bot")
        .unwrap();
    assert!(bot["last_used_at"].as_str().unwrap().ends_with('Z'), "{tokens}");
    let used = get_json(&s, "/api/v1/events?kind=token_used", &admin).await;
    let ids: Vec<&serde_json::Value> = used["events"].as_array().unwrap().iter().map(|e| &e["id"]).collect();
    assert_eq!(ids.iter().filter(|i| **i == &bot["id"]).count(), 1, "{used}");
}

#[tokio::test]
async fn logs_are_served_whole_by_range_and_live_as_server_sent_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let read = new_token(&s, &admin, Scope::Read).await;
    let yml = "jobs:\n  count:\n    script: ['for i in $(seq 1 30); do echo line $i; sleep 0.03; done']\n";
    let repo = Repo::new(&[("takt.yml", yml)]);
    add_project(&s, &admin, "demo", repo.path()).await;
    trigger(&s, &admin, "main").await;
    // Follow live as soon as the job has a log.
    until("the job's log exists", || {
        let c = client()
            .get(format!("{}/api/v1/runs/demo/1/logs/count", s.base))
            .bearer_auth(&read);
        async move { c.send().await.unwrap().status() == StatusCode::OK }
    })
    .await;
    let mut res = client()
        .get(format!("{}/api/v1/runs/demo/1/logs/count", s.base))
        .bearer_auth(&read)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let mut first_line_at = None;
    let started = Instant::now();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), res.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if first_line_at.is_none() && text.contains(" line 1\n") {
            first_line_at = Some(started.elapsed());
        }
        if text.contains("event: end") {
            break;
        }
    }
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| l.contains("Z line "))
        .collect();
    let want: Vec<String> = (1..=30).map(|i| format!(" line {i}")).collect();
    assert_eq!(data.len(), 30, "{text}");
    for (d, w) in data.iter().zip(&want) {
        assert!(d.ends_with(w.as_str()), "{d} vs {w}");
    }
    assert!(
        first_line_at.unwrap() < started.elapsed() - Duration::from_millis(300),
        "lines arrived live"
    );
    let r = finished_run(&s, &read, "demo", 1).await;
    assert_eq!(r["status"], "success");

    // Whole, by range, resumed SSE, and errors.
    let whole = get_text(&s, "/api/v1/runs/demo/1/logs/count", &read).await;
    assert!(whole.contains(" line 30\n"));
    let res = client()
        .get(format!("{}/api/v1/runs/demo/1/logs/count", s.base))
        .bearer_auth(&read)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 0-9/{}", whole.len()).as_str()
    );
    assert_eq!(res.text().await.unwrap(), &whole[..10]);
    let res = client()
        .get(format!("{}/api/v1/runs/demo/1/logs/count", s.base))
        .bearer_auth(&read)
        .header("range", format!("bytes={}-", whole.len() + 5))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let cut = whole.find(" line 20\n").unwrap() + " line 20\n".len();
    let resumed = client()
        .get(format!("{}/api/v1/runs/demo/1/logs/count?follow=true", s.base))
        .bearer_auth(&read)
        .header("last-event-id", cut.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !resumed.contains(" line 20") && resumed.contains(" line 21") && resumed.contains("event: end"),
        "{resumed}"
    );
    let st = get_status(&s, "/api/v1/runs/demo/1/logs/nosuch", &read).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // The CLI: whole and followed.
    for follow in [false, true] {
        let mut cmd = takt();
        cmd.args(["logs", "demo/1", "count", "--server", &s.base, "--token", &read]);
        if follow {
            cmd.arg("-f");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(" line 1\n") && text.contains(" line 30\n"), "{text}");
    }
    let out = takt()
        .args(["logs", "demo", "--server", &s.base, "--token", &read])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test]
async fn secrets_are_encrypted_given_to_declaring_jobs_of_protected_branches_and_masked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &[]);
    let admin = s.printed_token.clone().unwrap();
    let value = "s3cret-value-42";
    let yml = "jobs:\n  use:\n    secrets: [API_TOKEN]\n    script:\n      - test \"$API_TOKEN\" = s3cret-value-42\n      - echo \"token=$API_TOKEN\"\n      - printf '%s' \"$API_TOKEN\" | head -c 8; sleep 0.3; printf '%s split\\n' \"$(printf '%s' \"$API_TOKEN\" | tail -c +9)\"\n  other:\n    script: ['test -z \"$API_TOKEN\"', 'test -z \"$TAKT_WEBHOOK_SECRET\"']\n";
    let repo = Repo::new(&[("takt.yml", yml)]);
    add_project(&s, &admin, "demo", repo.path()).await;

    // Setting: from stdin via the CLI; bad names and too-short values refused.
    let mut child = takt()
        .args([
            "secret",
            "set",
            "demo",
            "API_TOKEN",
            "--server",
            &s.base,
            "--token",
            &admin,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{value}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        put_secret(&s, &admin, "demo", "TAKT_WEBHOOK_SECRET", "hook-secret").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        put_secret(&s, &admin, "demo", "bad-name", "long enough").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put_secret(&s, &admin, "demo", "SHORT", "ab").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put_secret(&s, &admin, "nosuch", "X_Y", "long enough").await,
        StatusCode::NOT_FOUND
    );
    let ci = new_token(&s, &admin, Scope::Ci).await;
    let st = get_status(&s, "/api/v1/projects/demo/secrets", &ci).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "secrets are for admins");
    let list = get_json(&s, "/api/v1/projects/demo/secrets", &admin).await;
    let names: Vec<&str> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["API_TOKEN", "TAKT_WEBHOOK_SECRET"]);
    assert!(!list.to_string().contains(value));

    // On the default branch: given to the job that declares it, masked in its log.
    trigger(&s, &ci, "main").await;
    let r = finished_run(&s, &ci, "demo", 1).await;
    assert_eq!(r["status"], "success", "{r}");
    let log = get_text(&s, "/api/v1/runs/demo/1/logs/use", &ci).await;
    assert!(log.contains("token=***\n") && log.contains("*** split\n"), "{log}");
    assert!(!log.contains(value) && !log.contains("alue-42"), "{log}");

    // On another branch: not given (the job fails its check and says why), until protected.
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.commit(&[("f", "1")], "feature");
    trigger(&s, &ci, "feature").await;
    let r = finished_run(&s, &ci, "demo", 2).await;
    assert_eq!(job_of(&r, "use")["status"], "failed", "{r}");
    let log = get_text(&s, "/api/v1/runs/demo/2/logs/use", &ci).await;
    assert!(log.contains("secrets API_TOKEN are not given to this run"), "{log}");
    let (st, _) = post_json(
        &s,
        "/api/v1/projects/demo/settings",
        &admin,
        json!({"protected": ["feature"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = post_json(&s, "/api/v1/runs/demo/2/retry", &ci, json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(finished_run(&s, &ci, "demo", 3).await["status"], "success");

    // Never in clear: not in the API, not in the database files.
    let ev = get_text(&s, "/api/v1/events?kind=secret_set", &admin).await;
    assert!(
        ev.contains("API_TOKEN") && !ev.contains("ciphertext") && !ev.contains(value),
        "{ev}"
    );
    for f in std::fs::read_dir(&data).unwrap().flatten() {
        if f.file_name().to_string_lossy().starts_with("takt.db") {
            let bytes = std::fs::read(f.path()).unwrap();
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{:?}",
                f.path()
            );
        }
    }
    // Removing.
    let out = takt()
        .args([
            "secret",
            "rm",
            "demo",
            "API_TOKEN",
            "--server",
            &s.base,
            "--token",
            &admin,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = takt()
        .args(["secret", "ls", "demo", "--json", "--server", &s.base, "--token", &admin])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("API_TOKEN"));
    let st = client()
        .delete(format!("{}/api/v1/projects/demo/secrets/API_TOKEN", s.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// A server running a job that waits for ever, killed with -9: returns (dir, data dir, ci
/// token, flag file) once the job's processes are gone. The job passes once `flag` exists.
async fn killed_mid_run() -> (tempfile::TempDir, std::path::PathBuf, String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (pids, flag) = (dir.path().join("pids"), dir.path().join("flag"));
    std::fs::create_dir_all(&pids).unwrap();
    let data = dir.path().join("data");
    let mut s = start(&data, &[]);
    let admin = s.printed_token.clone().unwrap();
    let ci = new_token(&s, &admin, Scope::Ci).await;
    let yml = format!(
        "jobs:\n  long:\n    script:\n      - test -f {flag} && exit 0\n      - echo $$ > {pids}/$CI_PIPELINE_ID\n      - sleep 1000\n",
        flag = flag.display(),
        pids = pids.display()
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    add_project(&s, &admin, "demo", repo.path()).await;
    trigger(&s, &ci, "main").await;
    let pid = job_pid(&pids, 1).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = s.child.wait();
    eventually("the orphaned job process is gone", Duration::from_secs(10), || {
        !alive(pid)
    });
    drop(s);
    drop(repo); // the mirror has the commit
    (dir, data, ci, flag)
}

#[tokio::test]
async fn a_server_killed_with_9_leaves_no_job_behind_and_requeues_its_runs() {
    let (_dir, data, ci, flag) = killed_mid_run().await;
    std::fs::write(&flag, "").unwrap();
    let s2 = start(&data, &[]);
    assert!(s2.printed_token.is_none(), "the admin token was kept");
    let r1 = finished_run(&s2, &ci, "demo", 1).await; // the ci token survived: nothing acknowledged was lost
    assert_eq!(r1["status"], "interrupted", "{r1}");
    assert!(
        r1["reason"]
            .as_str()
            .unwrap()
            .contains("a new run of the commit was queued"),
        "{r1}"
    );
    assert_eq!(job_of(&r1, "long")["status"], "interrupted", "{r1}");
    let r2 = finished_run(&s2, &ci, "demo", 2).await;
    assert_eq!(r2["status"], "success", "{r2}");
    assert_eq!(r2["trigger"]["restart"]["of"], 1);
    assert_eq!(r2["commit"], r1["commit"]);
}

#[tokio::test]
async fn with_on_restart_fail_interrupted_runs_are_not_run_again() {
    let (_dir, data, ci, _flag) = killed_mid_run().await;
    let s = start(&data, &[("TAKT_ON_RESTART", "fail")]);
    let r1 = finished_run(&s, &ci, "demo", 1).await;
    assert_eq!(r1["status"], "interrupted", "{r1}");
    assert!(r1["reason"].as_str().unwrap().contains("not run again"), "{r1}");
    // Recovery is done before the server listens: had it queued a run, it would be listed.
    let runs = get_json(&s, "/api/v1/runs?project=demo", &ci).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
}

/// `takt logs P/N -f` without a job follows every job at once, each line prefixed with its
/// job's name as it comes (as `docker compose logs -f`). The two jobs wait on this test, which
/// lets each go on only once the CLI has printed the other's last line: a CLI that followed one
/// job after the other would stall.
#[tokio::test]
async fn logs_follow_interleaves_parallel_jobs_with_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    std::fs::create_dir(&gate).unwrap();
    let g = gate.display();
    let wait = |f: &str| format!("for i in $(seq 400); do [ -f {g}/{f} ] && break; sleep 0.05; done; [ -f {g}/{f} ]");
    let yml = format!(
        "jobs:\n  alpha:\n    script:\n      - echo a1\n      - '{}'\n      - echo a2\n  b:\n    script:\n      - '{}'\n      - echo b1\n      - '{}'\n      - echo b2\n",
        wait("a2"),
        wait("b1"),
        wait("b2")
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "demo", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/demo/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let mut child = takt()
        .args(["logs", "demo/1", "-f", "--server", &s.base, "--token", &admin])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Each line is the job's name (padded to the longest), ` | `, then the log's own line
    // (`<time> <text>`).
    let steps = [
        ("alpha | ", "a1", Some("b1")),
        ("b     | ", "b1", Some("a2")),
        ("alpha | ", "a2", Some("b2")),
        ("b     | ", "b2", None),
    ];
    let is = |line: &str, word: &str| line.ends_with(&format!("Z {word}"));
    let mut seen = Vec::new();
    for (k, (prefix, word, then)) in steps.iter().enumerate() {
        loop {
            let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(20)) else {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "no `{prefix}… {word}` within 20 s; printed so far: {seen:?}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            seen.push(line.clone());
            assert!(line.starts_with("alpha | ") || line.starts_with("b     | "), "{seen:?}");
            if line.starts_with(prefix) && is(&line, word) {
                break;
            }
            assert!(
                !steps[k + 1..].iter().any(|(_, later, _)| is(&line, later)),
                "out of order: {seen:?}"
            );
        }
        if let Some(f) = then {
            std::fs::write(gate.join(f), "").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(finished_run(&s, &admin, "demo", 1).await["status"], "success");
}

#[tokio::test]
async fn a_badge_shows_the_branchs_last_run_to_whom_the_project_allows() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let read = new_token(&s, &admin, Scope::Read).await;
    let repo = Repo::new(&[("takt.yml", "jobs:\n  ok: {script: [true]}\n")]);
    add_project(&s, &admin, "demo", repo.path()).await;
    let badge = || async {
        let r = client().get(url(&s, "/badge/demo.svg")).send().await.unwrap();
        let status = r.status();
        let kind = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        (status, kind, r.text().await.unwrap())
    };
    // Not public yet: a token is needed.
    assert_eq!(badge().await.0, StatusCode::UNAUTHORIZED);
    assert!(get_text(&s, "/badge/demo.svg", &read).await.contains(">unknown<"));
    trigger(&s, &admin, "main").await;
    finished_run(&s, &admin, "demo", 1).await;
    let (st, b) = post_json(
        &s,
        "/api/v1/projects/demo/settings",
        &admin,
        json!({"public_badge": true}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, kind, svg) = badge().await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(kind.as_deref(), Some("image/svg+xml"));
    assert!(
        svg.starts_with("<svg ") && svg.contains("aria-label=\"pipeline: passed\""),
        "{svg}"
    );
    // Well-formed XML, as a browser's parser sees it.
    let mut reader = quick_xml::Reader::from_str(&svg);
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Eof => break,
            _ => continue,
        }
    }
    // Another branch has no run; an unknown name is not found.
    let other = client()
        .get(url(&s, "/badge/demo.svg?branch=other"))
        .send()
        .await
        .unwrap();
    assert!(other.text().await.unwrap().contains(">unknown<"));
    assert_eq!(get_status(&s, "/badge/nope.svg", &admin).await, StatusCode::NOT_FOUND);
    let unknown = client().get(url(&s, "/badge/nope.svg")).send().await.unwrap();
    assert_eq!(
        unknown.status(),
        StatusCode::UNAUTHORIZED,
        "an unknown name answers as a private project"
    );
    assert_eq!(get_status(&s, "/badge/demo.png", &admin).await, StatusCode::NOT_FOUND);
}
