//! The followers of the event log miss nothing: with a live broadcast of 16 events every
//! follower lags all the time, and still each green run of a burst is deployed once or recorded
//! as superseded, and `/metrics` counts every run; a server killed with -9 between a green
//! run and its deploy deploys it, once, after the restart.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One project `app` whose build stores an artifact with distinct bytes per run, and an
/// `auto: true` command-driver environment `live` whose deploy script waits while `hold`
/// exists (bounded: 30 s) and logs the version of each start.
fn config(dir: &std::path::Path) -> String {
    let hold = dir.join("hold");
    let log = dir.join("deployed");
    format!(
        "jobs:\n  build:\n    script: [\"echo $CI_PIPELINE_ID > app\"]\n    artifacts: {{name: app, paths: [app]}}\n\
         environments:\n  live:\n    driver: command\n    auto: true\n    deploy: \"i=0; while [ -f {} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; if [ $TAKT_DEPLOY_STEP = start ]; then echo $TAKT_ARTIFACT_VERSION >> {}; fi\"\n",
        hold.display(),
        log.display()
    )
}

/// Every event of `kind` in project `app`, through the API's pages.
async fn events(s: &Server, token: &str, kind: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = get_json(
            s,
            &format!("/api/v1/events?project=app&kind={kind}&limit=1000&after={after}"),
            token,
        )
        .await;
        let batch = page["events"].as_array().cloned().unwrap_or_default();
        if batch.is_empty() {
            return out;
        }
        after = batch.last().unwrap()["seq"].as_i64().unwrap();
        out.extend(batch);
    }
}

/// For each run, how its auto-deploy to `live` ended: `deploy_started` or the skip's reason.
async fn outcomes(s: &Server, token: &str) -> BTreeMap<u64, Vec<String>> {
    let mut by_run: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for e in events(s, token, "deploy_started").await {
        if let Some(run) = e["trigger"]["pipeline"]["run"].as_u64() {
            by_run.entry(run).or_default().push("deployed".into());
        }
    }
    for e in events(s, token, "deploy_skipped").await {
        let run = e["run"].as_u64().unwrap();
        by_run
            .entry(run)
            .or_default()
            .push(e["reason"].as_str().unwrap().to_string());
    }
    by_run
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_300_green_runs_is_each_deployed_once_or_superseded_while_every_follower_lags() {
    const RUNS: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(&[("takt.yml", &config(dir.path()))]);
    let s = start(&dir.path().join("data"), &[("TAKT_FOLLOW_CAPACITY", "16")]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "app", repo.path()).await;
    // The first deploy is held until the whole burst is queued: most runs find `live` busy.
    std::fs::write(dir.path().join("hold"), "").unwrap();
    for _ in 0..RUNS {
        let (st, b) = post_json(
            &s,
            "/api/v1/projects/app/trigger",
            &admin,
            json!({"rev": "main", "force": true}),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while events(&s, &admin, "run_finished").await.len() < RUNS as usize {
        assert!(std::time::Instant::now() < deadline, "the runs did not finish");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    std::fs::remove_file(dir.path().join("hold")).unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let by_run = loop {
        let by_run = outcomes(&s, &admin).await;
        let v = get_json(&s, "/api/v1/environments/app/live", &admin).await;
        let newest = v["running"]["version"]
            .as_str()
            .is_some_and(|x| x.starts_with(&format!("{RUNS}-")));
        if by_run.len() == RUNS as usize && newest && v["deploying"].is_null() {
            break by_run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every run settled: {} of {RUNS}; live: {v}",
            by_run.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for run in 1..=RUNS {
        let got = by_run.get(&run).cloned().unwrap_or_default();
        assert!(
            got == ["deployed"] || got == ["superseded"],
            "run #{run}: {got:?} (each run once: deployed or superseded)"
        );
    }
    assert_eq!(by_run[&RUNS], ["deployed"], "the newest run is deployed");
    let deployed = by_run.values().filter(|v| v[0] == "deployed").count();
    assert!(deployed >= 2, "the held first deploy, then the newest: {deployed}");
    // The script ran for the deployed runs' artifacts only.
    let log = std::fs::read_to_string(dir.path().join("deployed")).unwrap();
    let mut ran: Vec<u64> = log
        .lines()
        .map(|v| v.split('-').next().unwrap().parse().unwrap())
        .collect();
    ran.dedup();
    let wanted: Vec<u64> = by_run
        .iter()
        .filter(|(_, v)| v[0] == "deployed")
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(ran, wanted, "{log}");

    // /metrics counted every run and every job (an observer: it cannot fall behind).
    let text = get_text(&s, "/metrics", &admin).await;
    let green = events(&s, &admin, "run_finished").await.len() as f64;
    assert_eq!(green, RUNS as f64);
    assert_eq!(
        metric(&text, "takt_runs_finished_total{status=\"success\"}"),
        green,
        "{text}"
    );
    let jobs = events(&s, &admin, "job_finished").await.len() as f64;
    assert_eq!(
        metric(&text, "takt_jobs_finished_total{status=\"success\"}"),
        jobs,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_run_waiting_for_its_deploy_when_the_server_is_killed_deploys_once_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(&[("takt.yml", &config(dir.path()))]);
    let data = dir.path().join("data");
    let env = [("TAKT_ADMIN_TOKEN", "admin-secret-token-1")];
    let admin = "admin-secret-token-1";
    let mut s = start(&data, &env);
    add_project(&s, admin, "app", repo.path()).await;
    // Run 1's deploy holds `live` busy; run 2 is green and waits for it.
    std::fs::write(dir.path().join("hold"), "").unwrap();
    for run in 1..=2 {
        let (st, b) = post_json(
            &s,
            "/api/v1/projects/app/trigger",
            admin,
            json!({"rev": "main", "force": true}),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{b}");
        finished_run(&s, admin, "app", run).await;
    }
    until("run 1 deploys", || async {
        get_json(&s, "/api/v1/environments/app/live", admin).await["deploying"].is_object()
    })
    .await;
    assert!(!outcomes(&s, admin).await.contains_key(&2), "run 2 waits");
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    std::fs::remove_file(dir.path().join("hold")).unwrap();

    let s = start(&data, &env);
    until("run 2 is deployed", || async {
        let v = get_json(&s, "/api/v1/environments/app/live", admin).await;
        v["running"]["version"].as_str().is_some_and(|x| x.starts_with("2-")) && v["deploying"].is_null()
    })
    .await;
    let by_run = outcomes(&s, admin).await;
    assert_eq!(
        by_run.get(&2).map(Vec::as_slice),
        Some(&["deployed".to_string()][..]),
        "{by_run:?}"
    );
    // Started again, the server does not deploy run 2 a second time.
    drop(s);
    let s = start(&data, &env);
    readyz(&s).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let again = outcomes(&s, admin).await;
    assert_eq!(again.get(&2), by_run.get(&2), "{again:?}");
}
