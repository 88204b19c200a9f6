//! Remediation and escalation for real: a version that passes its canary breaks production
//! later (a switch the test flips); the check that sees it opens an incident, and takt rolls
//! that deployment back itself, marks it as the cause, and the incident resolves when the
//! check passes again. An incident nobody acknowledges pages the on-call subscriber (and only
//! it) until someone does.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use common::server::*;
use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};
use takt_server::auth::Scope;

/// The deploy example's service, answering 500 to `/` whenever the Python expression `when`
/// holds; `preamble` goes after its `BROKEN = False` line.
fn example_app_failing_when(when: &str, preamble: &str) -> String {
    let app = std::fs::read_to_string(format!("{}/../../examples/deploy/app.py", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let bug = format!("        elif {when}:\n            self.reply(500, \"broken\\n\")\n");
    app.replace("        elif BROKEN:\n", &format!("{bug}        elif BROKEN:\n"))
        .replace("BROKEN = False", &format!("BROKEN = False{preamble}"))
}

/// The deploy example's service, with a bug in `v2` that only shows once the switch file
/// exists.
fn app(version: &str, switch: &std::path::Path) -> String {
    let broken = if version == "v2" { "True" } else { "False" };
    example_app_failing_when(
        &format!("{broken} and os.path.exists({:?})", switch.display().to_string()),
        &format!("  # {version}"),
    )
}

/// The events of `kind` after `after`, waiting (long poll) for at least one.
async fn next(s: &Server, token: &str, kind: &str, after: i64) -> Value {
    for _ in 0..4 {
        let page = get_json(s, &format!("/api/v1/events?kind={kind}&after={after}&wait=8"), token).await;
        if let Some(e) = page["events"].as_array().and_then(|a| a.first()) {
            return e.clone();
        }
    }
    panic!("no {kind} after {after} within 32 s");
}

async fn head(s: &Server, token: &str) -> i64 {
    get_json(s, &format!("/api/v1/events?after={}&limit=1", i64::MAX), token).await["head"]
        .as_i64()
        .unwrap()
}

/// `PROJECT#N` → its API path.
fn incident_path(id: &str) -> String {
    let (project, n) = id.rsplit_once('#').unwrap();
    format!("/api/v1/projects/{project}/incidents/{n}")
}

fn at(e: &Value) -> time::OffsetDateTime {
    takt_model::timefmt::parse_rfc3339(e["at"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_after_the_canary_is_rolled_back_by_remediation() {
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("break-now");
    let port = free_port();
    let yml = format!(
        "stages: [package]\njobs:\n  package:\n    stage: package\n    script: [cp app.py app]\n    artifacts: {{name: app, paths: [app]}}\n\
         environments:\n  production:\n    driver: process\n    port: {port}\n    start: exec python3 \"$TAKT_ARTIFACT_PATH\"\n    auto: true\n\
         \x20   remediate: rollback\n    strategy:\n      canary:\n        steps: [{{set_weight: 50}}]\n    smoke:\n      - http: {{path: /, status: 200}}\n\
         checks:\n  home:\n    environment: production\n    http: {{url: \"http://127.0.0.1:{port}/\"}}\n    interval: 200ms\n    failure_threshold: 2\n    success_threshold: 1\n"
    );
    let repo = Repo::new(&[("takt.yml", &yml), ("app.py", &app("v1", &switch))]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let reader = new_token(&s, &admin, Scope::Read).await;
    add_project(&s, &admin, "shop", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/shop/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let v = settled(&s, &reader, "shop", "production", 1).await;
    assert_eq!(v["history"][0]["outcome"], "succeeded", "v1: {v:#}");
    repo.commit(&[("app.py", &app("v2", &switch))], "v2: a bug behind a switch");
    let (st, b) = post_json(&s, "/api/v1/projects/shop/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let v = settled(&s, &reader, "shop", "production", 2).await;
    assert_eq!(v["history"][0]["outcome"], "succeeded", "v2 passed its canary: {v:#}");
    let v2 = v["running"]["version"].as_str().unwrap().to_string();
    assert!(v2.starts_with("2-"), "{v:#}");

    // Users' traffic through the public port, every 20 ms, until the test has what it needs.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed_seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = {
        let (stop, failed_seen) = (stop.clone(), failed_seen.clone());
        tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::SeqCst) {
                let ok = c
                    .get(format!("http://127.0.0.1:{port}/"))
                    .send()
                    .await
                    .is_ok_and(|r| !r.status().is_server_error());
                if !ok {
                    failed_seen.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Production breaks later: the check fails twice, an incident opens, takt rolls v2 back.
    let after = head(&s, &reader).await;
    let flipped = time::OffsetDateTime::now_utc();
    std::fs::write(&switch, "").unwrap();
    let opened = next(&s, &reader, "incident_opened", after).await;
    let id = opened["id"].as_str().unwrap().to_string();
    // Detected within two results (200 ms apart) and a probe's time.
    assert!(at(&opened) - flipped < time::Duration::seconds(3), "{opened:#}");
    let started = next(&s, &reader, "incident_remediation", after).await;
    let v = get_json(&s, "/api/v1/environments/shop/production", &reader).await;
    assert_eq!(started["outcome"], "started", "{started:#}\n{v:#}");
    assert_eq!(started["action"], "rollback");
    assert_eq!(started["deploy"], "shop/production#2");
    assert!(
        at(&started) - at(&opened) < time::Duration::seconds(1),
        "at once: {started:#}"
    );
    let seq = started["seq"].as_i64().unwrap();
    let done = next(&s, &reader, "incident_remediation", seq).await;
    assert_eq!(done["outcome"], "succeeded", "{done:#}");
    let v = get_json(&s, "/api/v1/environments/shop/production", &reader).await;
    assert!(
        v["running"]["version"].as_str().unwrap().starts_with("1-"),
        "back on v1: {v:#}"
    );
    assert_eq!(v["history"][0]["rollback"], true, "{v:#}");
    // The check passes again on v1: the incident resolves itself, v2 marked as its cause.
    let resolved = next(&s, &reader, "incident_resolved", seq).await;
    assert_eq!(resolved["id"], id.as_str());
    let i = get_json(&s, &incident_path(&id), &reader).await;
    assert_eq!(i["cause"], "shop/production#2", "{i:#}");
    assert_eq!(i["remediation"]["outcome"], "succeeded", "{i:#}");
    let notes: Vec<&str> = i["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["note"].as_str())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("remediation: rollback of shop/production#2 started")),
        "{notes:?}"
    );
    // One remediation per incident: no second rollback.
    let page = get_json(
        &s,
        &format!("/api/v1/events?kind=incident_remediation&after={after}"),
        &reader,
    )
    .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2, "{page:#}");

    // The proxy's counters were read at the first failing result and at the resolution: the
    // postmortem says how many requests failed in between (the users' and the check's own).
    let traffic = |seq: i64| next(&s, &reader, "incident_traffic", seq);
    let impact = traffic(after).await;
    assert_eq!(
        (&impact["id"], &impact["mark"]),
        (&json!(id), &json!("impact")),
        "{impact:#}"
    );
    let end = traffic(impact["seq"].as_i64().unwrap()).await;
    assert_eq!(end["mark"], "resolved", "{end:#}");
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let n = id.rsplit('#').next().unwrap();
    let pm = get_json(&s, &format!("/api/v1/projects/shop/incidents/{n}/postmortem"), &reader).await;
    let (failed, total) = (
        pm["postmortem"]["requests"]["failed"]
            .as_u64()
            .unwrap_or_else(|| panic!("{pm:#}")),
        pm["postmortem"]["requests"]["total"].as_u64().unwrap(),
    );
    let seen = failed_seen.load(Ordering::SeqCst);
    // v2 answered 500 from the switch to the rollback: over a probe interval and a rollback
    // at 20 ms a request. The users' failures before the first failing probe are not counted.
    assert!(
        failed >= 5 && failed <= total,
        "{failed} of {total}; the load saw {seen} fail: {pm:#}"
    );
    // Nothing made up: at most the users' failures and the check's own probes meanwhile.
    let probes = u64::try_from((at(&end) - at(&impact)).whole_milliseconds() / 200 + 2).unwrap();
    assert!(
        failed <= seen + probes,
        "{failed} failed, the load saw {seen}, {probes} probes: {pm:#}"
    );
    let md = pm["markdown"].as_str().unwrap();
    assert!(
        md.contains(&format!(
            "- Requests failed: {failed} of {total} through the proxy of production"
        )),
        "{md}"
    );
}

/// While an environment's first version is being deployed nothing there takes traffic yet: a
/// check of it that fails meanwhile opens no incident (remediation would stop that very
/// deploy, and the deploy's smoke checks judge it), but one still failing once the deploy has
/// finished opens its incident then. (The check probes a stand-in the test turns bad when the
/// deploy starts, so that it cannot fail before.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_deploy_still_starting_opens_no_incident_one_that_finished_broken_does() {
    let bad = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stand_in = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/",
            get(|State(bad): State<Arc<std::sync::atomic::AtomicBool>>| async move {
                if bad.load(Ordering::SeqCst) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }),
        )
        .with_state(bad.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yml = format!(
        "stages: [package]\njobs:\n  package:\n    stage: package\n    script: [cp app.py app]\n    artifacts: {{name: app, paths: [app]}}\n\
         environments:\n  production:\n    driver: process\n    port: {port}\n    start: sleep 3 && exec python3 \"$TAKT_ARTIFACT_PATH\"\n    auto: true\n\
         \x20   remediate: rollback\n\
         checks:\n  home:\n    environment: production\n    http: {{url: \"http://{stand_in}/\"}}\n    interval: 100ms\n    failure_threshold: 2\n    success_threshold: 1\n"
    );
    let repo = Repo::new(&[("takt.yml", &yml), ("app.py", &example_app_failing_when("False", ""))]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "shop", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/shop/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    next(&s, &admin, "deploy_started", 0).await;
    bad.store(true, Ordering::SeqCst);
    let v = settled(&s, &admin, "shop", "production", 1).await;
    assert_eq!(
        v["history"][0]["outcome"], "succeeded",
        "not stopped by a remediation: {v:#}"
    );
    let finished = takt_model::timefmt::parse_rfc3339(v["history"][0]["finished_at"].as_str().unwrap()).unwrap();
    let down = get_json(&s, "/api/v1/events?kind=check_state_changed", &admin).await;
    let first = &down["events"][0];
    assert_eq!(first["state"], "down", "{down:#}");
    assert!(at(first) < finished, "down while the deploy ran: {down:#}\n{v:#}");
    let opened = next(&s, &admin, "incident_opened", 0).await;
    assert!(
        at(&opened) >= finished,
        "opened once the deploy finished: {opened:#}\n{v:#}"
    );
    assert!(
        at(&opened) - finished < time::Duration::seconds(2),
        "and at once: {opened:#}\n{v:#}"
    );
}

/// The deploy example's service, which goes bad once the switch file is newer than its
/// process (a leak that a restart cures).
fn leaky_app(switch: &std::path::Path) -> String {
    let path = format!("{:?}", switch.display().to_string());
    example_app_failing_when(
        &format!("os.path.exists({path}) and os.path.getmtime({path}) > STARTED"),
        "\nimport time\nSTARTED = time.time()",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_goes_bad_is_restarted_by_remediation() {
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("leak-now");
    let port = free_port();
    let yml = format!(
        "stages: [package]\njobs:\n  package:\n    stage: package\n    script: [cp app.py app]\n    artifacts: {{name: app, paths: [app]}}\n\
         environments:\n  production:\n    driver: process\n    port: {port}\n    instances: 2\n    start: exec python3 \"$TAKT_ARTIFACT_PATH\"\n    auto: true\n\
         \x20   remediate: restart\n\
         flags:\n  cart-v2: {{state: ENABLED, variants: {{on: true, off: false}}, defaultVariant: on}}\n\
         checks:\n  home:\n    environment: production\n    http: {{url: \"http://127.0.0.1:{port}/\"}}\n    interval: 200ms\n    failure_threshold: 2\n    success_threshold: 1\n"
    );
    let repo = Repo::new(&[("takt.yml", &yml), ("app.py", &leaky_app(&switch))]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "shop", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/shop/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let v = settled(&s, &admin, "shop", "production", 1).await;
    assert_eq!(v["history"][0]["outcome"], "succeeded", "{v:#}");
    let before = get_json(&s, "/api/v1/environments/shop/production", &admin).await;
    // No incident may be open before the service goes bad: one opened while the instances were
    // still starting would still be open when the leak starts, and no new one would open.
    let mut open = Value::Null;
    for _ in 0..100 {
        open = get_json(&s, "/api/v1/incidents", &admin).await;
        if open["incidents"].as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open["incidents"], json!([]), "{open:#}");

    // A flag flipped just before: a suspect too, said by remediation and never flipped back.
    let (code, _, err) = cli(&s, &admin, &["flag", "kill", "shop", "cart-v2", "--env", "production"]);
    assert_eq!(code, Some(0), "{err}");
    let after = head(&s, &admin).await;
    std::fs::write(&switch, "").unwrap();
    let opened = next(&s, &admin, "incident_opened", after).await;
    let started = next(&s, &admin, "incident_remediation", opened["seq"].as_i64().unwrap()).await;
    assert_eq!(
        (&started["action"], &started["outcome"]),
        (&json!("restart"), &json!("started")),
        "{started:#}"
    );
    assert!(
        started["detail"].as_str().is_some_and(|d| d.contains(
            "not flipped back): flag `cart-v2` in shop/production: ENABLED default on → DISABLED default on"
        )),
        "{started:#}"
    );
    assert_eq!(started["deploy"], "shop/production#1");
    let done = next(&s, &admin, "incident_remediation", started["seq"].as_i64().unwrap()).await;
    assert_eq!(done["outcome"], "succeeded", "{done:#}");
    assert!(
        done["detail"].as_str().unwrap().contains("restarted (2 instances)"),
        "{done:#}"
    );
    // Resolved once the check passes again (perhaps already while the second instance
    // restarted: the first one answers half of the requests by then).
    let resolved = next(&s, &admin, "incident_resolved", opened["seq"].as_i64().unwrap()).await;
    assert_eq!(resolved["id"], opened["id"]);
    // New processes on the same ports; no new deployment.
    let now = get_json(&s, "/api/v1/environments/shop/production", &admin).await;
    let instances = |v: &Value| -> Vec<(u64, u64)> {
        v["supervisor"]["slots"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["instances"].as_array().unwrap().iter())
            .map(|i| (i["port"].as_u64().unwrap(), i["pid"].as_u64().unwrap_or(0)))
            .collect()
    };
    let (old, new) = (instances(&before), instances(&now));
    assert_eq!(old.len(), 2);
    for ((port, pid), (port2, pid2)) in old.iter().zip(&new) {
        assert_eq!(port, port2);
        assert_ne!(pid, pid2, "{old:?} {new:?}");
    }
    assert_eq!(now["history"].as_array().unwrap().len(), 1, "{now:#}");
}

/// What a notify subscriber received: each CloudEvent's `type`.
#[derive(Default)]
struct Inbox {
    types: parking_lot::Mutex<Vec<String>>,
    changed: tokio::sync::Notify,
}

async fn receive(State(inbox): State<Arc<Inbox>>, body: axum::body::Bytes) -> StatusCode {
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    inbox
        .types
        .lock()
        .push(v["type"].as_str().unwrap_or_default().to_string());
    inbox.changed.notify_waiters();
    StatusCode::OK
}

async fn inbox() -> (Arc<Inbox>, String) {
    let inbox = Arc::new(Inbox::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (inbox, url)
}

/// A service on 127.0.0.1 whose `/healthz` answers the status the test sets (200 first):
/// the status, and its port.
async fn switchable_service() -> (Arc<AtomicU16>, u16) {
    let status = Arc::new(AtomicU16::new(200));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let svc = status.clone();
    let app = axum::Router::new().route(
        "/healthz",
        get(move || {
            let svc = svc.clone();
            async move { StatusCode::from_u16(svc.load(Ordering::SeqCst)).unwrap() }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (status, port)
}

fn pages(inbox: &Inbox) -> usize {
    inbox
        .types
        .lock()
        .iter()
        .filter(|t| t.contains("incident_paged"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_incident_pages_on_call_until_someone_acknowledges_it() {
    // A service the test breaks; a deploy command that succeeds; a remediation that fails.
    let (status, port) = switchable_service().await;
    let (on_call, on_call_url) = inbox().await;
    let (others, others_url) = inbox().await;
    let yml = format!(
        "jobs:\n  build: {{script: [echo app > app], artifacts: {{name: app, paths: [app]}}}}\n\
         environments:\n  production:\n    driver: command\n    deploy: \"true\"\n    auto: true\n\
         \x20   remediate: {{command: \"echo cannot fix $TAKT_DEPLOY >&2; exit 3\"}}\n    escalate_after: 1h\n    remind_every: 1s\n\
         checks:\n  api:\n    environment: production\n    http: {{url: \"http://127.0.0.1:{port}/healthz\"}}\n    interval: 100ms\n    failure_threshold: 2\n\
         notify:\n  - {{webhook: \"{on_call_url}\", on_call: true, events: [incident_opened]}}\n  - {{webhook: \"{others_url}\"}}\n"
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "shop", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/shop/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    settled(&s, &admin, "shop", "production", 1).await;

    let after = head(&s, &admin).await;
    status.store(500, Ordering::SeqCst);
    let opened = next(&s, &admin, "incident_opened", after).await;
    let id = opened["id"].as_str().unwrap().to_string();
    let seq = opened["seq"].as_i64().unwrap();
    let started = next(&s, &admin, "incident_remediation", seq).await;
    assert_eq!(started["outcome"], "started", "{started:#}");
    let failed = next(&s, &admin, "incident_remediation", started["seq"].as_i64().unwrap()).await;
    assert_eq!(failed["outcome"], "failed", "{failed:#}");
    // Its output goes to a file (it may print its secrets), which the detail names.
    let detail = failed["detail"].as_str().unwrap();
    assert!(detail.contains("exit status: 3"), "{failed:#}");
    let log = detail.rsplit("its output: ").next().unwrap().trim_end_matches(')');
    let output = std::fs::read_to_string(log).unwrap();
    assert!(output.contains("cannot fix shop/production#1"), "{output}");
    // The failed remediation pages at once (not after the hour of escalate_after), then once
    // a second (remind_every) while nobody acknowledges.
    let first = next(&s, &admin, "incident_paged", seq).await;
    assert_eq!(first["reason"], "remediation_failed", "{first:#}");
    assert!(at(&first) - at(&failed) < time::Duration::seconds(1), "{first:#}");
    let second = next(&s, &admin, "incident_paged", first["seq"].as_i64().unwrap()).await;
    assert_eq!(
        (second["count"].as_u64(), &second["reason"]),
        (Some(2), &json!("unresolved"))
    );
    let gap = at(&second) - at(&first);
    assert!(gap >= time::Duration::milliseconds(900), "{gap}");
    // Pages reach the on-call subscriber only.
    let deadline = Instant::now() + Duration::from_secs(20);
    while pages(&on_call) < 2 && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(500), on_call.changed.notified()).await;
    }
    assert!(pages(&on_call) >= 2, "{:?}", on_call.types.lock());
    let (code, out, err) = cli(&s, &admin, &["incident", "ack", &id]);
    assert_eq!(code, Some(0), "{out}{err}");
    let acked = head(&s, &admin).await;
    // No page after the acknowledgement (three remind_every periods).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let page = get_json(&s, &format!("/api/v1/events?kind=incident_paged&after={acked}"), &admin).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 0, "{page:#}");
    assert_eq!(pages(&others), 0, "{:?}", others.types.lock());
    assert!(
        others.types.lock().iter().any(|t| t.contains("incident")),
        "the other subscriber hears of the incident: {:?}",
        others.types.lock()
    );
    let i = get_json(&s, &incident_path(&id), &admin).await;
    assert_eq!(i["pages"], 2, "{i:#}");

    // The postmortem draft names the deploy, the remediation and every page, in order.
    let file = dir.path().join("postmortem.md");
    let (code, out, err) = cli(&s, &admin, &["postmortem", &id, "-o", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    let md = std::fs::read_to_string(&file).unwrap();
    let order = [
        "deploy shop/production#1 started",
        "shop/production#1 succeeded",
        "check `api` fails",
        &format!("incident {id} opened"),
        "remediation: command of shop/production#1 started",
        "remediation: command of shop/production#1 failed",
        "on call paged (page 1, remediation_failed)",
        "on call paged (page 2, unresolved)",
        "acknowledged by token",
    ];
    let mut from = 0;
    for want in order {
        let Some(k) = md[from..].find(want) else {
            panic!("`{want}` after byte {from} of:\n{md}");
        };
        from += k + want.len();
    }
    assert!(md.contains("- Pages to on call: 2"), "{md}");
    assert!(md.contains("## Root cause") && md.contains("5. Why?"), "{md}");
    let (code, out, _) = cli(&s, &admin, &["postmortem", &id, "--format", "json"]);
    assert_eq!(code, Some(0));
    let pm: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pm["pages"], 2, "{pm:#}");
    assert!(pm["time_to_acknowledge_s"].as_i64().is_some(), "{pm:#}");
}

/// A drill kills every instance of a running environment under takt's own load: it reports
/// how long the failure took to detect and to recover from, and how many requests failed;
/// a production environment is refused without `--yes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_that_kills_all_instances_measures_detection_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (staging, production) = (free_port(), free_port());
    let env = |name: &str, port: u16, extra: &str| {
        format!(
            "  {name}:\n    driver: process\n    port: {port}\n    instances: 2\n    start: exec python3 \"$TAKT_ARTIFACT_PATH\"\n{extra}"
        )
    };
    let yml = format!(
        "stages: [package]\njobs:\n  package:\n    stage: package\n    script: [cp app.py app]\n    artifacts: {{name: app, paths: [app]}}\n\
         environments:\n{}{}\
         checks:\n  prod_instances:\n    process: {{environment: production}}\n    interval: 100ms\n    failure_threshold: 1\n",
        env("staging", staging, "    auto: true\n"),
        env("production", production, "    requires: [staging]\n"),
    );
    let repo = Repo::new(&[("takt.yml", &yml), ("app.py", &app("v1", &dir.path().join("unused")))]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "shop", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/shop/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    settled(&s, &admin, "shop", "staging", 1).await;
    let before = get_json(&s, "/api/v1/environments/shop/staging", &admin).await;

    let (code, out, err) = cli(
        &s,
        &admin,
        &[
            "drill",
            "run",
            "staging",
            "--kill",
            "all-instances",
            "--load",
            "50",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let l: Value = serde_json::from_str(&out).unwrap();
    let d = &l["drills"][0];
    assert_eq!(d["outcome"], "recovered", "{d:#}");
    assert_eq!(d["killed"], 2, "{d:#}");
    let (requests, failed) = (d["requests"].as_u64().unwrap(), d["failed"].as_u64().unwrap());
    assert!(failed >= 1 && failed < requests, "{d:#}");
    assert_eq!(d["detected_by"], "load", "no check watches staging: {d:#}");
    let (detect, recover) = (d["detect_ms"].as_u64().unwrap(), d["recover_ms"].as_u64().unwrap());
    assert!(detect < 1000 && detect <= recover && recover < 20_000, "{d:#}");
    // The instances came back, with new processes.
    let after = get_json(&s, "/api/v1/environments/shop/staging", &admin).await;
    let pids = |v: &Value| -> Vec<u64> {
        v["supervisor"]["slots"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                s["instances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|i| i["pid"].as_u64())
            })
            .collect()
    };
    let (old, new) = (pids(&before), pids(&after));
    assert_eq!(new.len(), 2, "{after:#}");
    assert!(old.iter().all(|p| !new.contains(p)), "{old:?} {new:?}");
    let (code, out, _) = cli(&s, &admin, &["drill", "ls", "--project", "shop"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("all_instances") && out.contains("recovered"), "{out}");
    // The components in /metrics: both instances alive and open again, each restarted once.
    let text = get_text(&s, "/metrics", &admin).await;
    let labels = "project=\"shop\",environment=\"staging\"";
    for want in [
        format!("takt_instances{{{labels},state=\"alive\"}} 2"),
        format!("takt_instances{{{labels},state=\"port_open\"}} 2"),
        format!("takt_instance_restarts{{{labels}}} 2"),
    ] {
        assert!(text.contains(&want), "{want} in:\n{text}");
    }
    // A process check of an environment where nothing runs is down, and says so.
    let page = get_json(&s, "/api/v1/events?kind=check_state_changed", &admin).await;
    let down = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["check"] == "prod_instances")
        .unwrap_or_else(|| panic!("{page:#}"));
    assert_eq!(down["state"], "down", "{down:#}");
    assert!(
        down["reason"].as_str().unwrap().contains("[CONNECTED] (false) == true"),
        "{down:#}"
    );

    // Production is refused without --yes (and nothing runs there, which it says too).
    let (code, _, err) = cli(&s, &admin, &["drill", "run", "production", "--kill", "instance"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("is a production environment") && err.contains("--yes"),
        "{err}"
    );

    // A recurring drill (`drills:`, every 2 s here) starts by itself once the default branch
    // has it.
    let scheduled = format!(
        "{yml}drills:\n  often:\n    environment: staging\n    kill: instance\n    load: 20\n    cron: \"*/2 * * * * *\"\n"
    );
    let at = head(&s, &admin).await;
    repo.commit(&[("takt.yml", &scheduled)], "a recurring drill");
    let (st, b) = post_json(&s, "/api/v1/projects/shop/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let started = next(&s, &admin, "drill_started", at).await;
    assert_eq!(started["by"], "drill schedule often", "{started:#}");
    assert_eq!(started["kill"], "instance");
    let finished = next(&s, &admin, "drill_finished", started["seq"].as_i64().unwrap()).await;
    assert_eq!(finished["killed"], 1, "{finished:#}");
}

/// A server killed while a remediation runs: when it starts again, that remediation is
/// recorded as failed (nothing carries it on), which pages on call at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remediation_cut_off_by_a_restart_ends_failed_and_pages() {
    let (status, port) = switchable_service().await;
    let yml = format!(
        "jobs:\n  build: {{script: [echo app > app], artifacts: {{name: app, paths: [app]}}}}\n\
         environments:\n  production:\n    driver: command\n    deploy: \"true\"\n    auto: true\n\
         \x20   remediate: {{command: \"sleep 30\"}}\n    escalate_after: 1h\n\
         checks:\n  api:\n    environment: production\n    http: {{url: \"http://127.0.0.1:{port}/healthz\"}}\n    interval: 100ms\n    failure_threshold: 2\n"
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = start(&data, &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "shop", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/shop/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    settled(&s, &admin, "shop", "production", 1).await;
    let after = head(&s, &admin).await;
    status.store(500, Ordering::SeqCst);
    let started = next(&s, &admin, "incident_remediation", after).await;
    assert_eq!(started["outcome"], "started", "{started:#}");
    let seq = started["seq"].as_i64().unwrap();
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    drop(s);

    let s = start(&data, &[]);
    let ended = next(&s, &admin, "incident_remediation", seq).await;
    assert_eq!(ended["outcome"], "failed", "{ended:#}");
    assert!(
        ended["detail"].as_str().unwrap().starts_with("interrupted"),
        "{ended:#}"
    );
    let page = next(&s, &admin, "incident_paged", seq).await;
    assert_eq!(page["reason"], "remediation_failed", "{page:#}");
}
