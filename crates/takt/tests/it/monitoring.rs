//! Health checks for real: a service on 127.0.0.1 that the test turns unhealthy and healthy
//! again; takt probes it at its interval and records `check_state_changed` only when the check
//! crosses a threshold (3 failures down, 2 successes up), with the result that did it explained.
//! The check going down opens an incident (impact from its first failing result) that people
//! move on with `takt incident`; the check coming back resolves it.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use common::server::*;
use common::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

#[derive(Default)]
struct Service {
    status: AtomicU16,
    hits: AtomicU32,
    /// How long each answer takes (milliseconds): slow is degraded.
    delay_ms: AtomicU64,
}

async fn healthz(State(s): State<Arc<Service>>) -> (StatusCode, String) {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let delay = s.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let code = StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap();
    let body = if code == StatusCode::OK { "ok" } else { "down" };
    (code, format!("{{\"status\":\"{body}\"}}"))
}

/// The next event of `kind` after `after` (a long poll: no sleeping here either).
async fn next(s: &Server, token: &str, kind: &str, after: i64) -> serde_json::Value {
    for _ in 0..4 {
        let page = get_json(s, &format!("/api/v1/events?kind={kind}&after={after}&wait=8"), token).await;
        if let Some(e) = page["events"].as_array().and_then(|a| a.first()) {
            return e.clone();
        }
    }
    panic!("no {kind} after {after} within 32 s");
}

async fn next_change(s: &Server, token: &str, after: i64) -> serde_json::Value {
    next(s, token, "check_state_changed", after).await
}

/// What `promtool check metrics` (Debian's prometheus package) says about an exposition;
/// empty when it has nothing to say.
fn promtool_check_metrics(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/promtool (Debian's prometheus: ./test.sh installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said.trim().to_string()
    } else {
        format!("exit {:?}: {said}", out.status.code())
    }
}

/// A Prometheus server scraping takt's `/metrics` every 100 ms, stopped when dropped.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(s: &Server, token: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let target = s.base.trim_start_matches("http://");
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 100ms}}\nscrape_configs:\n  - job_name: takt\n    authorization: {{credentials: {token}}}\n    static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .unwrap();
        let d = dir.path().display();
        let child = std::process::Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={d}/prometheus.yml"))
            .arg(format!("--storage.tsdb.path={d}/tsdb"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/status`, fetched with no token.
async fn status_html(s: &Server) -> String {
    let r = client().get(url(s, "/status")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

/// `/status.json`, fetched with no token.
async fn status(s: &Server) -> serde_json::Value {
    let r = client().get(url(s, "/status.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// The status page's Atom feed's entries, as Python's `feedparser` (Debian's
/// python3-feedparser) reads them: id and title.
async fn atom_entries(s: &Server) -> Vec<serde_json::Value> {
    let r = client().get(url(s, "/status/feed.xml")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml")
    );
    let xml = r.text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.xml");
    std::fs::write(&file, &xml).unwrap();
    let script = "import feedparser, json, sys\nd = feedparser.parse(sys.argv[1])\nassert not d.bozo, d.bozo_exception\nassert d.version == 'atom10', d.version\nprint(json.dumps([{'id': e.id, 'title': e.title} for e in d.entries]))";
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .expect("/usr/bin/python3 (with python3-feedparser: ./test.sh installs it)");
    assert!(
        out.status.success(),
        "feedparser: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A server with project `web` whose takt.yml is `yml`; the log's head before it was added.
async fn serve_project(yml: &str) -> (Repo, tempfile::TempDir, Server, String, i64) {
    let repo = Repo::new(&[("takt.yml", yml)]);
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let head = get_json(&s, &format!("/api/v1/events?after={}&limit=1", i64::MAX), &admin).await["head"]
        .as_i64()
        .unwrap();
    add_project(&s, &admin, "web", repo.path()).await;
    (repo, dir, s, admin, head)
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
        "jobs:\n  a: {{script: [x]}}\nchecks:\n  api:\n    service: shop\n    http: {{url: \"http://127.0.0.1:{port}/healthz\"}}\n    interval: 100ms\n    timeout: 2s\n    public: true\n    degraded_latency: 300ms\n    conditions:\n      - \"[STATUS] == 200\"\n      - \"[BODY].status == ok\"\n  port:\n    service: shop\n    tcp: {{host: 127.0.0.1, port: {port}}}\n    interval: 1h\n"
    );
    let (_repo, _dir, s, admin, head) = serve_project(&yml).await;
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

    // A real Prometheus scrapes takt's /metrics and sees the check down; promtool finds
    // nothing to say about the exposition.
    let text = get_text(&s, "/metrics", &admin).await;
    let lint = promtool_check_metrics(&text);
    assert!(lint.is_empty(), "promtool check metrics: {lint}\n{text}");
    let prom = Prometheus::start(&s, &admin);
    let query = format!("{}/api/v1/query?query=takt_check_up%7Bcheck%3D%22api%22%7D", prom.url);
    until("prometheus scraped the check's state", || {
        let query = query.clone();
        async move {
            match client().get(&query).send().await {
                Ok(r) => r.text().await.unwrap_or_default().contains("\"service\":\"shop\""),
                Err(_) => false,
            }
        }
    })
    .await;
    let v: serde_json::Value = client().get(&query).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "0", "down: {v:#}");
    drop(prom);

    // The check going down opened an incident, its impact from the first failing result.
    let opened = next(&s, &admin, "incident_opened", head).await;
    assert!(opened["seq"].as_i64() > down["seq"].as_i64(), "{opened:#}");
    // Its service's state changed first (what status-page subscribers hear of): one check of
    // two down is a partial outage.
    let service = next(&s, &admin, "service_state_changed", head).await;
    assert_eq!(
        (
            &service["service"],
            &service["state"],
            &service["from"],
            &service["public"],
            &service["checks"]
        ),
        (
            &json!("shop"),
            &json!("partial_outage"),
            &json!("operational"),
            &json!(true),
            &json!(["api"])
        ),
        "{service:#}"
    );
    assert!(
        service["seq"].as_i64() < opened["seq"].as_i64(),
        "{service:#} {opened:#}"
    );
    let list = get_json(&s, "/api/v1/incidents", &admin).await;
    let i = &list["incidents"][0];
    assert_eq!(list["incidents"].as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(
        (&i["id"], &i["trigger"], &i["status"], &i["severity"]),
        (
            &json!("web#1"),
            &json!("check"),
            &json!("investigating"),
            &json!("major")
        ),
        "`port` (which never changed state) still passes: major, not critical; {list:#}"
    );
    assert_eq!(
        (&i["checks"], &i["services"]),
        (&json!(["api"]), &json!(["shop"])),
        "{i:#}"
    );
    let impact = takt_model::timefmt::parse_rfc3339(i["impact_started_at"].as_str().unwrap()).unwrap();
    assert!(
        (impact - time("since")).abs() < time::Duration::milliseconds(1),
        "{i:#} {down:#}"
    );

    // The public status page shows it, with no token: HTML, JSON and an Atom feed that a real
    // Atom parser reads.
    // Results are written in batches of up to a second.
    until("the failing results are kept", || async {
        status(&s).await["services"][0]["uptime"]
            .as_f64()
            .is_some_and(|u| u < 1.0)
    })
    .await;
    let page = status(&s).await;
    assert_eq!(page["state"], "major_outage", "{page:#}");
    assert_eq!(page["services"][0]["name"], "shop", "{page:#}");
    assert_eq!(page["services"][0]["days"].as_array().unwrap().len(), 90, "{page:#}");
    let uptime = page["services"][0]["uptime"].as_f64().unwrap();
    assert!(
        uptime > 0.0 && uptime < 1.0,
        "some results passed, some failed: {page:#}"
    );
    assert_eq!(page["open_incidents"][0]["id"], "web#1", "{page:#}");
    let html = status_html(&s).await;
    assert!(
        html.contains("Major outage") && html.contains("Current incidents"),
        "{html}"
    );
    assert!(!html.contains("<script"), "plain HTML: {html}");
    let feed = atom_entries(&s).await;
    assert_eq!(feed.len(), 1, "{feed:?}");
    assert!(
        feed[0]["title"].as_str().unwrap().contains("check `api` failing"),
        "{feed:?}"
    );
    assert_eq!(feed[0]["id"], "tag:takt,2026:incident-web-1");

    // People move it on.
    let deployer = new_token(&s, &admin, takt_server::auth::Scope::Deploy).await;
    let reader = new_token(&s, &admin, takt_server::auth::Scope::Read).await;
    let (code, out, err) = cli(&s, &deployer, &["incident", "ack", "web#1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("web#1: acknowledged; investigating"), "{out}");
    let (code, _, err) = cli(
        &s,
        &deployer,
        &[
            "incident",
            "status",
            "web#1",
            "identified",
            "--note",
            "the disk is full",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = cli(&s, &reader, &["incident", "note", "web#1", "reading may not change it"]);
    assert_eq!(code, Some(2), "a read token cannot change an incident: {out}{err}");
    let (code, out, err) = cli(&s, &reader, &["incident", "show", "web#1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("incident web#1  major  identified  in web/"), "{out}");
    assert!(
        out.contains("the disk is full") && out.contains("acknowledged by token"),
        "{out}"
    );
    assert!(out.contains("suspects: no deployment"), "{out}");
    let (code, out, _) = cli(&s, &reader, &["incident", "ls"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("web#1") && out.contains("identified"), "{out}");

    // Bad input says what is wrong, exit 2, and changes nothing.
    for (args, says) in [
        (&["incident", "show", "web"][..], "give PROJECT#N"),
        (&["incident", "show", "web#99"], "no incident web#99"),
        (
            &["incident", "cause", "web#1", "web/production#9"],
            "no deployment web/production#9",
        ),
        (&["incident", "cause", "web#1", "production"], "give PROJECT/ENV#N"),
        (&["incident", "status", "web#1", "fixed"], "invalid value 'fixed'"),
    ] {
        let (code, out, err) = cli(&s, &deployer, args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (st, b) = post_json(
        &s,
        "/api/v1/projects/web/incidents/1/update",
        &deployer,
        json!({"stauts": "resolved"}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "unknown fields are refused: {b}");
    assert!(b["error"].as_str().unwrap().contains("unknown field `stauts`"), "{b}");

    // The check coming back resolves it, automatically.
    svc.status.store(200, Ordering::SeqCst);
    let up = next_change(&s, &admin, down["seq"].as_i64().unwrap()).await;
    assert_eq!(up["state"], "up", "{up:#}");
    assert_eq!(up["streak"], 2, "{up:#}");
    assert_eq!(up["reason"], "[STATUS] (200) == 200", "{up:#}");
    let resolved = next(&s, &admin, "incident_resolved", up["seq"].as_i64().unwrap()).await;
    assert_eq!(
        (&resolved["id"], &resolved["auto"]),
        (&json!("web#1"), &json!(true)),
        "{resolved:#}"
    );
    let (code, out, err) = cli(&s, &deployer, &["incident", "ack", "web#1"]);
    assert_eq!(
        code,
        Some(1),
        "a resolved incident is refused, not bad input: {out}{err}"
    );
    assert!(err.contains("is resolved"), "{err}");
    let (_, out, _) = cli(&s, &reader, &["incident", "ls"]);
    assert!(out.contains("no open incidents"), "{out}");
    // The page is built at most once a second.
    until("the status page shows the recovery", || async {
        status(&s).await["state"] == "operational"
    })
    .await;
    let page = status(&s).await;
    assert_eq!(page["open_incidents"], json!([]), "{page:#}");
    assert_eq!(page["resolved_incidents"][0]["status"], "resolved", "{page:#}");
    let recovered = next(&s, &admin, "service_state_changed", service["seq"].as_i64().unwrap()).await;
    assert_eq!(
        (&recovered["state"], &recovered["from"]),
        (&json!("operational"), &json!("partial_outage")),
        "{recovered:#}"
    );
    let detail = get_json(&s, "/api/v1/projects/web/incidents/1", &reader).await;
    let kinds: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "incident_opened",
            "incident_acknowledged",
            "incident_updated",
            "incident_resolved"
        ],
        "{detail:#}"
    );

    // Slow (over `degraded_latency`), three results in a row: degraded, which the status
    // page shows and subscribers hear of, but no incident opens.
    svc.delay_ms.store(400, Ordering::SeqCst);
    let degraded = next_change(&s, &admin, up["seq"].as_i64().unwrap()).await;
    assert_eq!(
        (&degraded["state"], &degraded["streak"]),
        (&json!("degraded"), &json!(3)),
        "{degraded:#}"
    );
    let reason = degraded["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("degraded: [RESPONSE_TIME] (") && reason.ends_with(") > 300 (degraded_latency)"),
        "{degraded:#}"
    );
    let service = next(&s, &admin, "service_state_changed", recovered["seq"].as_i64().unwrap()).await;
    assert_eq!(service["state"], "degraded", "{service:#}");
    until("the status page shows the service degraded", || async {
        status(&s).await["state"] == "degraded"
    })
    .await;
    assert!(status_html(&s).await.contains("Degraded performance"));
    svc.delay_ms.store(0, Ordering::SeqCst);
    let up = next_change(&s, &admin, degraded["seq"].as_i64().unwrap()).await;
    assert_eq!((&up["state"], &up["streak"]), (&json!("up"), &json!(2)), "{up:#}");
    let list = get_json(&s, "/api/v1/incidents?all=true", &admin).await;
    assert_eq!(
        list["incidents"].as_array().unwrap().len(),
        1,
        "degraded opens none: {list:#}"
    );
}

/// A heartbeat check: beats sent with its own token keep it up; a missed one (`every` +
/// `grace`) takes it down at once and opens an incident; the next beat brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_goes_down_when_a_beat_is_missed_and_up_with_the_next() {
    let yml = "jobs:\n  a: {script: [x]}\nenvironments:\n  production: {driver: command, deploy: \"true\", remind_every: 1s}\nchecks:\n  backup:\n    environment: production\n    heartbeat: {every: 1s, grace: 500ms}\n  api:\n    tcp: {host: 127.0.0.1, port: 9}\n    interval: 1h\n";
    let (_repo, _dir, s, admin, head) = serve_project(yml).await;

    let (code, out, err) = cli(&s, &admin, &["check", "heartbeat", "web", "backup", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let hb: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = hb["token"].as_str().unwrap().to_string();
    assert_eq!(hb["url"], format!("{}/api/v1/heartbeats/web/backup", s.base), "{hb:#}");
    let beat = |token: Option<String>| {
        let url = format!("{}/api/v1/heartbeats/web/backup", s.base);
        async move {
            let mut req = client().post(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send().await.unwrap().status()
        }
    };
    // Only the check's own token is taken; a probed check has none.
    assert_eq!(beat(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(beat(Some(admin.clone())).await, StatusCode::UNAUTHORIZED);
    let last = if token.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &token[..63]);
    assert_eq!(beat(Some(forged)).await, StatusCode::UNAUTHORIZED);
    let (code, _, err) = cli(&s, &admin, &["check", "heartbeat", "web", "api"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("only `heartbeat:` checks take beats"), "{err}");
    let reader = new_token(&s, &admin, takt_server::auth::Scope::Read).await;
    let (code, _, err) = cli(&s, &reader, &["check", "heartbeat", "web", "backup"]);
    assert_eq!(code, Some(2), "a check's token is an admin's to hand out: {err}");

    // Beats every 300 ms for 2 s: the check stays up, nothing is recorded.
    until("the service takes beats", || async {
        beat(Some(token.clone())).await == StatusCode::OK
    })
    .await;
    for _ in 0..7 {
        assert_eq!(beat(Some(token.clone())).await, StatusCode::OK);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let page = get_json(
        &s,
        &format!("/api/v1/events?kind=check_state_changed&after={head}"),
        &admin,
    )
    .await;
    assert_eq!(page["events"], json!([]), "{page:#}");

    // No beat: down within 1.5 s of the last one, and an incident opens.
    let down = next_change(&s, &admin, head).await;
    assert_eq!(
        (&down["check"], &down["state"], &down["streak"]),
        (&json!("backup"), &json!("down"), &json!(1)),
        "{down:#}"
    );
    assert!(
        down["reason"].as_str().unwrap().starts_with("no beat within 1.5s"),
        "{down:#}"
    );
    let opened = next(&s, &admin, "incident_opened", head).await;
    assert_eq!(opened["checks"], json!(["backup"]), "{opened:#}");
    // Nobody acknowledges it: a reminder each `remind_every` (1 s), until someone does.
    let first = next(&s, &admin, "incident_reminder", opened["seq"].as_i64().unwrap()).await;
    let second = next(&s, &admin, "incident_reminder", first["seq"].as_i64().unwrap()).await;
    assert_eq!(
        (&first["id"], &first["count"], &second["count"]),
        (&json!("web#1"), &json!(1), &json!(2)),
        "{first:#} {second:#}"
    );
    let t = |e: &serde_json::Value| takt_model::timefmt::parse_rfc3339(e["at"].as_str().unwrap()).unwrap();
    assert!(
        t(&second) - t(&first) >= time::Duration::seconds(1),
        "{first:#} {second:#}"
    );
    let (code, out, err) = cli(&s, &admin, &["incident", "ack", "web#1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // The third would have come a second after the second.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let page = get_json(
        &s,
        &format!("/api/v1/events?kind=incident_reminder&after={}", second["seq"]),
        &admin,
    )
    .await;
    assert_eq!(page["events"], json!([]), "acknowledged: no more reminders; {page:#}");
    let (_, out, _) = cli(&s, &reader, &["check", "ls", "web"]);
    assert!(
        out.lines()
            .any(|l| l.contains("backup") && l.contains("heartbeat") && l.contains("down")),
        "{out}"
    );

    // One beat brings it back and resolves the incident.
    assert_eq!(beat(Some(token.clone())).await, StatusCode::OK);
    let up = next_change(&s, &admin, down["seq"].as_i64().unwrap()).await;
    assert_eq!(
        (&up["state"], &up["reason"]),
        (&json!("up"), &json!("a beat arrived")),
        "{up:#}"
    );
    let resolved = next(&s, &admin, "incident_resolved", up["seq"].as_i64().unwrap()).await;
    assert_eq!(resolved["auto"], true, "{resolved:#}");
}

/// A maintenance window under way: its service's check still goes down (its state is a
/// fact), but opens no incident and joins none, and the status page shows the service under
/// maintenance; a check of another service opens its incident as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_maintenance_window_a_failing_check_opens_no_incident() {
    let from = takt_model::timefmt::rfc3339(takt_model::OffsetDateTime::now_utc() - time::Duration::minutes(1));
    let yml = format!(
        "jobs:\n  a: {{script: [x]}}\nchecks:\n  backup:\n    service: shop\n    public: true\n    heartbeat: {{every: 300ms, grace: 100ms}}\n  export:\n    service: api\n    heartbeat: {{every: 300ms, grace: 100ms}}\nmaintenance:\n  - {{at: \"{from}\", duration: 1h, services: [shop]}}\n"
    );
    let (_repo, _dir, s, admin, head) = serve_project(&yml).await;
    let first = next_change(&s, &admin, head).await;
    let second = next_change(&s, &admin, first["seq"].as_i64().unwrap()).await;
    let mut downs = [first["check"].as_str().unwrap(), second["check"].as_str().unwrap()];
    downs.sort_unstable();
    assert_eq!(downs, ["backup", "export"]);
    // A beat brings `export` back: its incident resolves, which the incident follower does
    // after it has taken both downs (it takes the log in order).
    let (_, out, _) = cli(&s, &admin, &["check", "heartbeat", "web", "export", "--json"]);
    let hb: serde_json::Value = serde_json::from_str(&out).unwrap();
    let r = client()
        .post(hb["url"].as_str().unwrap())
        .bearer_auth(hb["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    next(&s, &admin, "incident_resolved", second["seq"].as_i64().unwrap()).await;
    // (`export` may have missed its next beat since, and opened another: only `backup` matters.)
    let list = get_json(&s, "/api/v1/incidents?all=true", &admin).await;
    let incidents = list["incidents"].as_array().unwrap();
    assert!(
        incidents.iter().all(|i| i["checks"] == json!(["export"])),
        "`backup` is under maintenance: {list:#}"
    );
    assert!(incidents.iter().any(|i| i["status"] == "resolved"), "{list:#}");
    let page = status(&s).await;
    assert_eq!(page["services"][0]["state"], "under_maintenance", "{page:#}");
    assert_eq!(page["maintenance"][0]["active"], true, "{page:#}");
    let html = status_html(&s).await;
    assert!(
        html.contains("Under maintenance") && html.contains("Under way"),
        "{html}"
    );
}

/// A window that ends while its service's check is still down: the incident opens when the
/// window ends (not at the check's next change), and subscribers hear the service go from
/// under maintenance to its outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_still_down_when_its_window_ends_opens_its_incident_then() {
    let now = takt_model::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    // It ends 3 to 4 s from now.
    let from = now - time::Duration::seconds(56);
    let end = from + time::Duration::minutes(1);
    let yml = format!(
        "jobs:\n  a: {{script: [x]}}\nchecks:\n  backup:\n    service: shop\n    heartbeat: {{every: 300ms, grace: 100ms}}\nmaintenance:\n  - {{at: \"{}\", duration: 1m}}\n",
        takt_model::timefmt::rfc3339(from)
    );
    let (_repo, _dir, s, admin, head) = serve_project(&yml).await;
    let down = next_change(&s, &admin, head).await;
    assert_eq!(down["state"], "down", "{down:#}");
    let t = |e: &serde_json::Value| takt_model::timefmt::parse_rfc3339(e["at"].as_str().unwrap()).unwrap();
    assert!(
        t(&down) < end,
        "the test's window was over before the check went down: {down:#}"
    );
    let service = next(&s, &admin, "service_state_changed", head).await;
    assert_eq!(
        (&service["state"], &service["from"]),
        (&json!("under_maintenance"), &json!("operational")),
        "{service:#}"
    );
    let opened = next(&s, &admin, "incident_opened", head).await;
    assert!(
        t(&opened) >= end,
        "opened at the window's end, not inside it: {opened:#}"
    );
    assert_eq!(opened["checks"], json!(["backup"]), "{opened:#}");
    let outage = next(&s, &admin, "service_state_changed", service["seq"].as_i64().unwrap()).await;
    assert_eq!(
        (&outage["state"], &outage["from"]),
        (&json!("major_outage"), &json!("under_maintenance")),
        "{outage:#}"
    );
    assert!(t(&outage) >= end, "{outage:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_check_goes_down_when_a_series_crosses_its_threshold() {
    // A service's own Prometheus page: a queue's depth the test moves, beside other series.
    let depth = Arc::new(AtomicU64::new(5));
    let hits = Arc::new(AtomicU32::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = {
        let (depth, hits) = (depth.clone(), hits.clone());
        move || {
            hits.fetch_add(1, Ordering::SeqCst);
            let d = depth.load(Ordering::SeqCst);
            async move {
                format!(
                    "# HELP jobs_queued Jobs waiting.\n# TYPE jobs_queued gauge\njobs_queued{{queue=\"mail\",region=\"eu\"}} {d}\njobs_queued{{queue=\"mail\",region=\"us\"}} 1\njobs_queued{{queue=\"sms\",region=\"eu\"}} 900\n# TYPE up gauge\nup 1\n"
                )
            }
        }
    };
    let app = axum::Router::new().route("/metrics", get(page));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let yml = format!(
        "jobs:\n  a: {{script: [x]}}\nchecks:\n  mail-queue:\n    metric: {{url: \"http://127.0.0.1:{port}/metrics\", name: jobs_queued, labels: {{queue: mail}}, op: \"<\", value: 100}}\n    interval: 100ms\n"
    );
    let (_repo, _dir, s, admin, head) = serve_project(&yml).await;
    // Healthy: 5 + 1 waiting in the mail queue (the sms queue's 900 is not selected).
    until("the check probes the page", || async {
        hits.load(Ordering::SeqCst) >= 3
    })
    .await;
    let list = get_json(&s, "/api/v1/projects/web/checks", &admin).await;
    assert_eq!(list["checks"][0]["probe"], "metric", "{list:#}");
    let page = get_json(
        &s,
        &format!("/api/v1/events?kind=check_state_changed&after={head}"),
        &admin,
    )
    .await;
    assert_eq!(page["events"], json!([]), "healthy, nothing recorded: {page:#}");
    depth.store(250, Ordering::SeqCst);
    let down = next_change(&s, &admin, head).await;
    assert_eq!(
        (&down["check"], &down["state"]),
        (&json!("mail-queue"), &json!("down")),
        "{down:#}"
    );
    assert_eq!(down["reason"], "[BODY].value (251) < 100", "{down:#}");
    let opened = next(&s, &admin, "incident_opened", head).await;
    assert_eq!(opened["checks"], json!(["mail-queue"]), "{opened:#}");
    depth.store(7, Ordering::SeqCst);
    let up = next_change(&s, &admin, down["seq"].as_i64().unwrap()).await;
    assert_eq!(up["state"], "up", "{up:#}");
}
