//! `takt serve` for real: the binary on 127.0.0.1, a real HTTP client, the real event log.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};
use takt_server::auth::Scope;

#[tokio::test]
async fn every_route_refuses_missing_wrong_and_insufficient_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().expect("the first admin token is printed");
    let mut by_scope = Vec::new();
    for scope in Scope::ALL {
        by_scope.push((scope, new_token(&s, &admin, scope).await));
    }
    // Tokens limited to a project: every route that names another project, or none, is 403.
    let repo = Repo::new(&[("takt.yml", "jobs:\n  a: {script: [true]}\n")]);
    add_project(&s, &admin, "web", repo.path()).await;
    let mut limited = Vec::new();
    for scope in [Scope::Read, Scope::Ci, Scope::Deploy] {
        limited.push((scope, limited_token(&s, &admin, scope, &["web"]).await));
    }
    let c = client();
    for route in takt_api::ROUTES {
        let (method, path, perm) = (route.method.as_str(), route.path, route.permission);
        let req = |token: Option<&str>| {
            let mut r = c.request(method.parse().unwrap(), url(&s, path));
            if method == "POST" {
                r = r.json(&serde_json::json!({"name": "x", "scope": "read"}));
            }
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send()
        };
        let Some(perm) = perm else {
            let st = req(None).await.unwrap().status();
            if path.contains("/hooks/") {
                // Signed by the sender, not by a token: an unknown provider/project is 404.
                assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}");
            } else if path.contains("/heartbeats/") {
                // A heartbeat check's own token is its proof: none, none taken.
                assert_eq!(st, StatusCode::UNAUTHORIZED, "{method} {path}");
            } else if path.starts_with("/badge/") {
                // Public only for a project that says so: none here.
                assert_eq!(st, StatusCode::UNAUTHORIZED, "{method} {path}");
            } else {
                assert_eq!(st, StatusCode::OK, "{method} {path} is public");
            }
            continue;
        };
        assert_eq!(
            req(None).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        assert_eq!(
            req(Some("takt_0000")).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a wrong token"
        );
        for (scope, token) in &by_scope {
            let status = req(Some(token)).await.unwrap().status();
            if scope.allows(perm) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} as {scope}: {status}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} as {scope}");
            }
        }
        for (scope, token) in &limited {
            let r = req(Some(token)).await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path} as {scope} of web");
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            let error = body["error"].as_str().unwrap_or_default();
            if scope.allows(perm) {
                assert!(error.contains("is limited to projects web"), "{method} {path}: {body}");
            }
        }
    }
    // On its own project, a limited token is a token of its scope.
    let ci_web = &limited[1].1;
    let (st, b) = post_json(&s, "/api/v1/projects/web/trigger", ci_web, serde_json::json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let runs = get_json(&s, "/api/v1/runs?project=web", ci_web).await;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1), "{runs}");
    // An admin token cannot be limited; a limit must name projects that exist.
    for (body, says) in [
        (
            serde_json::json!({"name": "x", "scope": "admin", "projects": ["web"]}),
            "an admin token cannot be limited",
        ),
        (
            serde_json::json!({"name": "x", "scope": "ci", "projects": ["nope"]}),
            "no project named `nope`",
        ),
        (
            serde_json::json!({"name": "x", "scope": "deploy", "environments": ["a/b"]}),
            "`a/b` is not an environment name",
        ),
    ] {
        let (st, b) = post_json(&s, "/api/v1/tokens", &admin, body).await;
        assert!(st.is_client_error(), "{b}");
        assert!(b["error"].as_str().unwrap_or_default().contains(says), "{b}");
    }
    // The OpenAPI document lists every route, with the schemas of its bodies.
    let doc = get_json(&s, "/api/v1/openapi.json", &admin).await;
    for r in takt_api::ROUTES {
        let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
        assert!(op.is_object(), "{} {} missing from OpenAPI", r.method.as_str(), r.path);
        assert_eq!(op["operationId"], r.op.name());
    }
    assert!(doc["components"]["schemas"]["DeployAnswer"]["properties"]["outcome"].is_object());
}

#[tokio::test]
async fn the_first_admin_token_is_created_once_and_kept_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let token = s.printed_token.clone().unwrap();
    let file = dir.path().join("admin-token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // One process owns the data directory.
    let out = takt()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("in use by another takt process"),
        "{}",
        stderr(&out)
    );
    drop(s);
    // A restart keeps the token and prints none.
    let s = start(dir.path(), &[]);
    assert!(s.printed_token.is_none());
    let r = client()
        .get(url(&s, "/api/v1/tokens"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tokens"].as_array().unwrap().len(), 1);
    assert!(!body.to_string().contains("hash"));

    // TAKT_ADMIN_TOKEN sets the admin token instead.
    let dir2 = tempfile::tempdir().unwrap();
    let s2 = start(dir2.path(), &[("TAKT_ADMIN_TOKEN", "takt_from_the_environment")]);
    assert!(s2.printed_token.is_none());
    assert!(!dir2.path().join("admin-token").exists());
    let r = client()
        .get(url(&s2, "/api/v1/tokens"))
        .bearer_auth("takt_from_the_environment")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_requests_get_4xx_with_the_reason_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[("TAKT_MAX_BODY_BYTES", "1000")]);
    let admin = s.printed_token.clone().unwrap();
    let c = client();
    let post = |body: String| {
        c.post(url(&s, "/api/v1/tokens"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post("{\"name\": ".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("EOF while parsing"));
    let r = post(format!("{{\"name\": \"{}\", \"scope\": \"read\"}}", "x".repeat(2000)))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = post("{\"name\": \"a\", \"scope\": \"root\"}".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("unknown scope `root`"));
    let r = post("{\"name\": \"a\", \"scope\": \"read\", \"extra\": 1}".into())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .get(url(&s, "/api/v1/events?limit=abc"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .get(url(&s, "/api/v1/events?limit=0"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c.get(url(&s, "/api/v1/nope")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let list = get_json(&s, "/api/v1/tokens", &admin).await;
    assert_eq!(
        list["tokens"].as_array().unwrap().len(),
        1,
        "nothing was stored by the bad requests"
    );
}

#[tokio::test]
async fn events_page_and_filter_and_revoked_tokens_stop_working() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().unwrap();
    let c = client();
    let mut ci = String::new();
    for _ in 0..4 {
        ci = new_token(&s, &admin, Scope::Ci).await;
    }
    // 5 token_created events, read two at a time.
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    for _ in 0..10 {
        let mut u = String::from("/api/v1/events?kind=token_created&limit=2");
        if let Some(a) = after {
            u.push_str(&format!("&after={a}"));
        }
        let page = get_json(&s, &u, &ci).await;
        for e in page["events"].as_array().unwrap() {
            assert!(e.get("hash").is_none(), "hashes stay inside: {e}");
            seen.push(e["seq"].as_i64().unwrap());
        }
        match page["next_after"].as_i64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    let list = get_json(&s, "/api/v1/tokens", &admin).await;
    let ids: Vec<String> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let admin_id = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["scope"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c
        .delete(url(&s, &format!("/api/v1/tokens/{admin_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "the last admin token stays");
    for id in ids.iter().filter(|i| **i != admin_id) {
        let r = c
            .delete(url(&s, &format!("/api/v1/tokens/{id}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let r = c.get(url(&s, "/api/v1/events")).bearer_auth(&ci).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a revoked token is refused at once"
    );
    let revoked = get_json(&s, "/api/v1/events?kind=token_revoked", &admin).await;
    assert_eq!(revoked["events"].as_array().unwrap().len(), 4);
}

/// `wait` makes `/api/v1/events` a long poll: it answers with the first matching event
/// appended after `after` (no client polls), waits its whole time when none comes (an event
/// of another kind does not end it), and refuses a wait beyond 25 s.
#[tokio::test]
async fn events_long_poll_answers_with_the_next_event() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().unwrap();
    let head = get_json(&s, &format!("/api/v1/events?after={}&limit=1", i64::MAX), &admin).await["head"]
        .as_i64()
        .unwrap();
    assert!(head > 0, "the first admin token's event is in the log");
    let poll = {
        let (base, admin) = (s.base.clone(), admin.clone());
        tokio::spawn(async move {
            let u = format!("{base}/api/v1/events?kind=token_created&after={head}&wait=8");
            let r = client().get(u).bearer_auth(admin).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<serde_json::Value>().await.unwrap()
        })
    };
    new_token(&s, &admin, Scope::Read).await;
    let page = poll.await.unwrap();
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page:#}");
    assert_eq!(events[0]["kind"], "token_created");
    assert!(events[0]["seq"].as_i64().unwrap() > head);
    // Nothing of that kind comes: it waits its whole second, then answers with none.
    let head = page["head"].as_i64().unwrap().max(events[0]["seq"].as_i64().unwrap());
    let t = std::time::Instant::now();
    let page = get_json(
        &s,
        &format!("/api/v1/events?kind=token_revoked&after={head}&wait=1"),
        &admin,
    )
    .await;
    assert!(page["events"].as_array().unwrap().is_empty(), "{page:#}");
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let r = client()
        .get(url(&s, "/api/v1/events?wait=26"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("`wait` is at most 25 seconds"));
}

#[test]
fn structured_logs_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = takt()
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut json_line = None;
    for _ in 0..10 {
        let Some(Ok(l)) = lines.next() else { break };
        if l.starts_with('{') {
            json_line = Some(l);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&json_line.expect("a JSON log line")).unwrap();
    assert_eq!(v["level"], "INFO");
    assert!(v["fields"]["message"].is_string(), "{v}");
}

#[test]
fn bad_settings_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = takt()
        .args(["serve", "--listen", "not-an-address", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("listen address `not-an-address`"),
        "{}",
        stderr(&out)
    );
    let cfg = dir.path().join("takt.toml");
    std::fs::write(&cfg, "listne = \"127.0.0.1:1\"\n").unwrap();
    let out = takt().args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("listne"), "{}", stderr(&out));
}

#[test]
fn login_and_token_commands_talk_to_the_server() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().unwrap();
    let cli = |args: &[&str]| {
        takt()
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("TAKT_SERVER")
            .env_remove("TAKT_TOKEN")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = cli(&["token", "ls", "--server", &s.base]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("401") && stderr(&out).contains("takt login"),
        "{}",
        stderr(&out)
    );

    let out = cli(&["login", "--server", &s.base, "--token", &admin]);
    assert!(out.status.success(), "{}", stderr(&out));
    let creds = home.path().join(".config/takt/credentials");
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&creds).unwrap().contains(&s.base));

    // From now on the credentials file supplies server and token.
    let out = cli(&["token", "create", "--scope", "ci", "--name", "pipeline", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(created["token"].as_str().unwrap().starts_with("takt_"));
    let out = cli(&["token", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let out = cli(&["token", "revoke", created["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&["token", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    let out = cli(&["token", "create", "--scope", "root", "--name", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown scope `root`"), "{}", stderr(&out));
    let out = cli(&["login", "--server", &s.base, "--token", "takt_wrong"]);
    assert_eq!(out.status.code(), Some(2), "a wrong token is not saved");
    let out = cli(&["token", "ls", "--server", "http://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot reach the server"), "{}", stderr(&out));
}

#[tokio::test]
async fn projects_are_mirrored_and_each_commit_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().unwrap();
    let ci = new_token(&s, &admin, Scope::Ci).await;
    let repo = Repo::new(&[(
        "takt.yml",
        "jobs:\n  build: {script: ['echo built $CI_COMMIT_SHORT_SHA']}\n  test: {stage: test, script: [true]}\n",
    )]);
    let repo_path = repo.path().display().to_string();

    let (st, _) = post_json(
        &s,
        "/api/v1/projects",
        &admin,
        serde_json::json!({"name": "demo", "repo": repo_path}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(dir.path().join("mirrors/demo.git/HEAD").exists(), "a bare mirror");
    let (st, _) = post_json(
        &s,
        "/api/v1/projects",
        &admin,
        serde_json::json!({"name": "demo", "repo": repo_path}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, body) = post_json(
        &s,
        "/api/v1/projects",
        &admin,
        serde_json::json!({"name": "../x", "repo": repo_path}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    let (st, body) = post_json(
        &s,
        "/api/v1/projects",
        &admin,
        serde_json::json!({"name": "ghost", "repo": "/no/such/repo"}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("cannot mirror"), "{body}");
    assert!(!dir.path().join("mirrors/ghost.git").exists(), "nothing left behind");
    assert_eq!(
        get_json(&s, "/api/v1/projects", &ci).await["projects"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Trigger: queued, runs, finishes.
    let (st, body) = post_json(&s, "/api/v1/projects/demo/trigger", &ci, serde_json::json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    let runs = finished_runs(&s, &ci, "demo", 1).await;
    assert_eq!(runs[0]["status"], "success", "{runs:?}");
    assert_eq!(runs[0]["branch"], "main");
    assert_eq!(runs[0]["trigger"]["api"]["token"], "ci-bot");
    let run = get_json(&s, "/api/v1/runs/demo/1", &ci).await;
    assert_eq!(run["jobs"].as_array().unwrap().len(), 2, "{run}");

    // The same commit again is a duplicate; `force` makes another run.
    let (st, body) = post_json(&s, "/api/v1/projects/demo/trigger", &ci, serde_json::json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["duplicate"], true);
    assert_eq!(body["run"], 1);
    let (st, _) = post_json(
        &s,
        "/api/v1/projects/demo/trigger",
        &ci,
        serde_json::json!({"force": true}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    finished_runs(&s, &ci, "demo", 2).await;

    // A new commit is fetched into the mirror and gets its own run; a broken one fails.
    repo.commit(&[("takt.yml", "jobs:\n  build: {script: [exit 4]}\n")], "break it");
    let (st, body) = post_json(
        &s,
        "/api/v1/projects/demo/trigger",
        &ci,
        serde_json::json!({"rev": "main"}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    let runs = finished_runs(&s, &ci, "demo", 3).await;
    assert_eq!(runs[2]["status"], "failed");
    assert_ne!(runs[2]["commit"], runs[0]["commit"]);

    // A commit whose takt.yml is invalid is still a run: failed, with the reason.
    repo.commit(&[("takt.yml", "jobs:\n  build: {scirpt: [x]}\n")], "typo");
    let (st, _) = post_json(&s, "/api/v1/projects/demo/trigger", &ci, serde_json::json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let runs = finished_runs(&s, &ci, "demo", 4).await;
    assert_eq!(runs[3]["status"], "failed");
    assert!(
        runs[3]["reason"].as_str().unwrap().contains("unknown key `scirpt`"),
        "{:?}",
        runs[3]
    );

    // Bad input.
    let (st, _) = post_json(&s, "/api/v1/projects/nope/trigger", &ci, serde_json::json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, body) = post_json(
        &s,
        "/api/v1/projects/demo/trigger",
        &ci,
        serde_json::json!({"rev": "no-such-branch"}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("unknown revision"), "{body}");
    let (st, _) = post_json(
        &s,
        "/api/v1/projects/demo/trigger",
        &ci,
        serde_json::json!({"rev": "--upload-pack=x"}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let r = client()
        .get(url(&s, "/api/v1/runs/demo/notanumber"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "authorization comes before parsing"
    );
    let r = client()
        .get(url(&s, "/api/v1/runs/demo/notanumber"))
        .bearer_auth(&ci)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (st, _) = post_json(
        &s,
        "/api/v1/projects/demo/trigger",
        &new_token(&s, &admin, Scope::Read).await,
        serde_json::json!({}),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

#[test]
fn project_trigger_and_runs_commands() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().unwrap();
    let repo = Repo::new(&[("takt.yml", "jobs:\n  only: {script: [true]}\n")]);
    let cli = |args: &[&str]| {
        takt()
            .env("TAKT_SERVER", &s.base)
            .env("TAKT_TOKEN", &admin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = cli(&["project", "add", "svc", "--repo", &repo.path().display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&["project", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "svc");
    let out = cli(&["trigger", "svc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("queued run #1 of svc"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cli(&["runs", "ls", "--project", "svc", "--json"]);
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if runs[0]["status"] == "success" {
            break;
        }
        assert!(Instant::now() < deadline, "{runs}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cli(&["trigger", "svc"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already has a run (#1)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = cli(&["runs", "show", "svc", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("run #1 of svc: success") && text.contains("only"),
        "{text}"
    );
    let out = cli(&["runs", "show", "svc", "9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no run #9"), "{}", stderr(&out));
}
