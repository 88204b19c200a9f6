//! A real `takt serve` on 127.0.0.1 for tests, and small HTTP helpers.
#![allow(dead_code)]

use super::takt;
use reqwest::StatusCode;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use takt_server::auth::Scope;

pub struct Server {
    pub child: Child,
    pub base: String,
    pub printed_token: Option<String>,
    pub _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(data: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let mut cmd = takt();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("TAKT_ADMIN_TOKEN")
        // Tests that want polling say so; others must not see runs they did not ask for.
        .env("TAKT_POLL_SECONDS", "0")
        // Jobs as today (their pids visible, test directories writable); tests of isolation
        // choose it (tests/it/isolation.rs).
        .env("TAKT_ISOLATION", "none");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut printed_token = None;
    let mut base = None;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(t) = line.split(": ").nth(1).filter(|_| line.starts_with("admin token")) {
            printed_token = Some(t.trim().to_string());
        }
        if let Some(i) = line.find("listening on http://") {
            base = Some(
                line[i + "listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string(),
            );
            break;
        }
    }
    // Keep draining stdout so logging never blocks the server.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Server {
        child,
        base: base.expect("the server said where it listens"),
        printed_token,
        _dir: None,
    }
}

/// TLS for this test process's HTTP clients: rustls on ring, as the binary installs it.
pub fn tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client() -> reqwest::Client {
    tls();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub async fn new_token(s: &Server, admin: &str, scope: Scope) -> String {
    limited_token(s, admin, scope, &[]).await
}

/// A token of `scope` limited to `projects` (none: not limited), named `SCOPE-bot`.
pub async fn limited_token(s: &Server, admin: &str, scope: Scope, projects: &[&str]) -> String {
    let r = client()
        .post(format!("{}/api/v1/tokens", s.base))
        .bearer_auth(admin)
        .json(&serde_json::json!({"name": format!("{scope}-bot"), "scope": scope.to_string(), "projects": projects}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn url(s: &Server, path: &str) -> String {
    let path = path
        .replace("{id}", "00000000")
        .replace("{name}", "demo")
        .replace("{project}", "demo")
        .replace("{run}", "1")
        .replace("{version}", "1");
    format!("{}{path}", s.base)
}

/// GET a path with a token; the JSON body.
pub async fn get_json(s: &Server, path: &str, token: &str) -> serde_json::Value {
    let r = client().get(url(s, path)).bearer_auth(token).send().await.unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().await.unwrap()
}

/// `/readyz` (no token needed).
pub async fn readyz(s: &Server) -> serde_json::Value {
    client()
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn post_json(
    s: &Server,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let r = client()
        .post(url(s, path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Waits (bounded) until the project has `n` finished runs; returns the runs.
pub async fn finished_runs(s: &Server, token: &str, project: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = get_json(s, &format!("/api/v1/runs?project={project}"), token).await;
        let list = runs["runs"].as_array().unwrap().clone();
        if list.iter().filter(|r| r.get("finished_at").is_some()).count() >= n {
            let mut list = list;
            list.sort_by_key(|r| r["run"].as_u64());
            return list;
        }
        assert!(Instant::now() < deadline, "runs did not finish: {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds project `name` for `repo` (admin token); panics unless created.
pub async fn add_project(s: &Server, admin: &str, name: &str, repo: &std::path::Path) {
    let (st, body) = post_json(
        s,
        "/api/v1/projects",
        admin,
        serde_json::json!({"name": name, "repo": repo.display().to_string()}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
}

/// PUT a project secret.
pub async fn put_secret(s: &Server, admin: &str, project: &str, name: &str, value: &str) -> StatusCode {
    client()
        .put(format!("{}/api/v1/projects/{project}/secrets/{name}", s.base))
        .bearer_auth(admin)
        .body(value.to_string())
        .send()
        .await
        .unwrap()
        .status()
}

/// Waits (bounded) until run `run` of `project` has finished; returns it.
pub async fn finished_run(s: &Server, token: &str, project: &str, run: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client()
            .get(format!("{}/api/v1/runs/{project}/{run}", s.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            let v: serde_json::Value = r.json().await.unwrap();
            if v.get("finished_at").is_some() {
                return v;
            }
            assert!(Instant::now() < deadline, "run #{run} did not finish: {v}");
        } else {
            assert!(Instant::now() < deadline, "run #{run} never appeared");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until `f` holds.
pub async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// The job named `name` in a run shown by the API.
pub fn job_of<'a>(run: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    run["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no job {name} in {run:#}"))
}

/// GET a path with a token; the body as text (any status).
pub async fn get_text(s: &Server, path: &str, token: &str) -> String {
    client()
        .get(format!("{}{path}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// GET a path with a token; the status only.
pub async fn get_status(s: &Server, path: &str, token: &str) -> StatusCode {
    client()
        .get(format!("{}{path}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// A port nothing listens on now.
/// A free port from below the ephemeral range, as the supervisor picks its instances' (a
/// port the kernel hands out for port 0 may be taken by any test's outgoing connection before
/// it is bound).
pub fn free_port() -> u16 {
    takt_driver::free_port().unwrap()
}

/// Waits until environment `project/env` has no deploy in flight and has finished at least `n`.
pub async fn settled(s: &Server, token: &str, project: &str, env: &str, n: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get_json(s, &format!("/api/v1/environments/{project}/{env}"), token).await;
        let done = v["history"]
            .as_array()
            .map(|h| h.iter().filter(|d| d.get("outcome").is_some()).count())
            .unwrap_or(0);
        if done >= n && v["deploying"].is_null() {
            return v;
        }
        assert!(Instant::now() < deadline, "{env} did not settle: {v:#}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// The `takt` CLI against server `s` with `token`: exit code, stdout, stderr.
pub fn cli(s: &Server, token: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = takt()
        .args(args)
        .args(["--server", &s.base, "--token", token])
        .output()
        .expect("takt runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}
