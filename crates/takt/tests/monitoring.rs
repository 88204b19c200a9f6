//! Health checks for real: a service on 127.0.0.1 that the test turns unhealthy and healthy
//! again; takt probes it at its interval and records `check_state_changed` only when the check
//! crosses a threshold (3 failures down, 2 successes up), with the result that did it explained.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

mod common;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use common::server::*;
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

#[derive(Default)]
struct Service {
    status: AtomicU16,
    hits: AtomicU32,
}

async fn healthz(State(s): State<Arc<Service>>) -> (StatusCode, String) {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let code = StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap();
    let body = if code == StatusCode::OK { "ok" } else { "down" };
    (code, format!("{{\"status\":\"{body}\"}}"))
}

/// The next `check_state_changed` after `after` (a long poll: no sleeping here either).
async fn next_change(s: &Server, token: &str, after: i64) -> serde_json::Value {
    for _ in 0..4 {
        let page = get_json(
            s,
            &format!("/api/v1/events?kind=check_state_changed&after={after}&wait=20"),
            token,
        )
        .await;
        if let Some(e) = page["events"].as_array().and_then(|a| a.first()) {
            return e.clone();
        }
    }
    panic!("no check_state_changed after {after} within 80 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_goes_down_after_three_failures_and_up_after_two_successes() {
    let svc = Arc::new(Service::default());
    svc.status.store(200, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .with_state(svc.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let yml = format!(
        "jobs:\n  a: {{script: [x]}}\nchecks:\n  api:\n    service: shop\n    http: {{url: \"http://127.0.0.1:{port}/healthz\"}}\n    interval: 100ms\n    timeout: 2s\n    conditions:\n      - \"[STATUS] == 200\"\n      - \"[BODY].status == ok\"\n"
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let head = get_json(&s, &format!("/api/v1/events?after={}&limit=1", i64::MAX), &admin).await["head"]
        .as_i64()
        .unwrap();
    add_project(&s, &admin, "web", repo.path()).await;
    // Probed while healthy: nothing is recorded (only changes are events).
    until("the check probes the service", || async {
        svc.hits.load(Ordering::SeqCst) >= 3
    })
    .await;
    let page = get_json(
        &s,
        &format!("/api/v1/events?kind=check_state_changed&after={head}"),
        &admin,
    )
    .await;
    assert_eq!(page["events"], serde_json::json!([]), "{page:#}");

    svc.status.store(503, Ordering::SeqCst);
    let down = next_change(&s, &admin, head).await;
    assert_eq!(down["project"], "web");
    assert_eq!(down["check"], "api");
    assert_eq!(down["service"], "shop");
    assert_eq!(down["state"], "down");
    assert_eq!(down["streak"], 3, "{down:#}");
    assert_eq!(down["reason"], "[STATUS] (503) == 200", "{down:#}");
    let time = |k: &str| takt_model::timefmt::parse_rfc3339(down[k].as_str().unwrap()).unwrap();
    assert!(
        time("since") <= time("at"),
        "the streak began before it was recorded: {down:#}"
    );

    svc.status.store(200, Ordering::SeqCst);
    let up = next_change(&s, &admin, down["seq"].as_i64().unwrap()).await;
    assert_eq!(up["state"], "up", "{up:#}");
    assert_eq!(up["streak"], 2, "{up:#}");
    assert_eq!(up["reason"], "[STATUS] (200) == 200", "{up:#}");
}
