//! Notifications and schedules for real: a receiver on 127.0.0.1 that fails first, a slow one,
//! a Slack-compatible one, and a cron schedule with seconds.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::server::*;
use common::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Received {
    cloudevents: Vec<(String, serde_json::Value)>,
    slack: Vec<serde_json::Value>,
    tries: HashMap<String, u32>,
    /// Deliveries the refusing receiver (410) got.
    refused: u32,
}

type Shared = Arc<Mutex<Received>>;

async fn receiver() -> (String, Shared) {
    let shared: Shared = Arc::default();
    let app = axum::Router::new()
        .route(
            "/ce",
            post(|State(s): State<Shared>, h: HeaderMap, body: String| async move {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let mut r = s.lock().unwrap();
                let id = v["id"].as_str().unwrap().to_string();
                let n = r.tries.entry(id).or_insert(0);
                *n += 1;
                if *n == 1 {
                    return StatusCode::INTERNAL_SERVER_ERROR; // every first try fails
                }
                let ct = h["content-type"].to_str().unwrap().to_string();
                r.cloudevents.push((ct, v));
                StatusCode::OK
            }),
        )
        .route(
            "/slack",
            post(|State(s): State<Shared>, body: String| async move {
                s.lock().unwrap().slack.push(serde_json::from_str(&body).unwrap());
                StatusCode::OK
            }),
        )
        .route(
            "/gone",
            post(|State(s): State<Shared>| async move {
                s.lock().unwrap().refused += 1;
                StatusCode::GONE // a refusal: not worth trying again
            }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                StatusCode::OK
            }),
        )
        .with_state(shared.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), shared)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_cloudevents_with_retries_and_slack_messages_and_slow_ones_delay_nothing() {
    let (base, got) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().unwrap();
    let yml = format!(
        "notify:\n  - webhook: {base}/slow\n  - webhook: {base}/gone\n    events: [run_finished]\n  - webhook: {base}/ce\n    events: [run_queued, run_started, run_finished]\n  - slack: {base}/slack\njobs:\n  build: {{script: [true]}}\n"
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    add_project(&s, &admin, "demo", repo.path()).await;
    let t0 = Instant::now();
    let (st, b) = post_json(&s, "/api/v1/projects/demo/trigger", &admin, serde_json::json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let r = finished_run(&s, &admin, "demo", 1).await;
    assert_eq!(r["status"], "success");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "a slow receiver delayed the run: {:?}",
        t0.elapsed()
    );

    until("three CloudEvents and a Slack message arrived", || {
        let g = got.clone();
        async move {
            let g = g.lock().unwrap();
            g.cloudevents.len() == 3 && g.slack.len() == 1
        }
    })
    .await;
    {
        let g = got.lock().unwrap();
        let types: Vec<&str> = g.cloudevents.iter().map(|(_, v)| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "dev.cdevents.pipelinerun.queued.0.2.0",
                "dev.cdevents.pipelinerun.started.0.2.0",
                "dev.cdevents.pipelinerun.finished.0.2.0"
            ]
        );
        for (ct, v) in &g.cloudevents {
            assert_eq!(ct, "application/cloudevents+json");
            assert_eq!(v["specversion"], "1.0");
            assert_eq!(v["subject"], "demo/1");
            assert_eq!(v["source"], "/takt/projects/demo");
            assert!(v["time"].as_str().unwrap().ends_with('Z'));
        }
        assert_eq!(g.cloudevents[2].1["data"]["subject"]["content"]["outcome"], "success");
        assert!(g.tries.values().all(|n| *n == 2), "{:?}", g.tries);
        let slack = &g.slack[0];
        assert!(
            slack["text"].as_str().unwrap().contains("run #1 of demo passed"),
            "{slack}"
        );
        assert_eq!(slack["blocks"][0]["type"], "section");
    }

    // Each delivery is recorded, with its attempts.
    until("deliveries recorded", || {
        let (s, admin) = (&s, &admin);
        async move {
            let ev = get_json(s, "/api/v1/events?kind=notification_sent&limit=1000", admin).await;
            let to = |end: &str| {
                ev["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| e["target"].as_str().unwrap().ends_with(end))
                    .count()
            };
            to("/ce") == 3 && to("/gone") == 1
        }
    })
    .await;
    let ev = get_json(&s, "/api/v1/events?kind=notification_sent&limit=1000", &admin).await;
    // A refusal (410) is recorded after one attempt: refusals are not tried again.
    let gone: Vec<_> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"].as_str().unwrap().ends_with("/gone"))
        .collect();
    assert_eq!(gone.len(), 1, "{ev}");
    assert_eq!(
        (
            gone[0]["attempts"].as_u64(),
            gone[0]["ok"].as_bool(),
            gone[0]["status"].as_u64()
        ),
        (Some(1), Some(false), Some(410))
    );
    assert_eq!(got.lock().unwrap().refused, 1);
    for e in ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"].as_str().unwrap().ends_with("/ce"))
    {
        assert_eq!(
            (e["attempts"].as_u64(), e["ok"].as_bool()),
            (Some(2), Some(true)),
            "{e}"
        );
    }
}

#[tokio::test]
async fn a_cron_schedule_of_the_default_branch_starts_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().unwrap();
    let repo = Repo::new(&[(
        "takt.yml",
        "schedules:\n  often: \"*/2 * * * * *\"\njobs:\n  build: {script: [true]}\n",
    )]);
    add_project(&s, &admin, "demo", repo.path()).await;
    let r = finished_run(&s, &admin, "demo", 1).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["trigger"]["schedule"]["name"], "often");
    assert_eq!(r["branch"], "main");
    // A schedule runs the branch head again even though that commit already ran.
    let r2 = finished_run(&s, &admin, "demo", 2).await;
    assert_eq!(r2["commit"], r["commit"]);
}
