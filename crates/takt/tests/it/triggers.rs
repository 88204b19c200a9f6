//! Triggers for real: signed webhooks in GitHub's, Gitea's and GitLab's formats, polling, and
//! a post-receive hook installed into a real bare repository.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::server::*;
use common::*;
use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::json;
use takt_server::auth::Scope;

const SECRET: &str = "webhook-secret-1";

fn sign(body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn hook(
    s: &Server,
    provider: &str,
    project: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (StatusCode, serde_json::Value) {
    let mut r = client()
        .post(format!("{}/api/v1/hooks/{provider}/{project}", s.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let r = r.send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(serde_json::Value::Null))
}

fn push(r: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": r, "before": "0000000000000000000000000000000000000000", "after": after,
        "repository": {"full_name": "team/demo"}, "commits": [], "deleted": false
    }))
    .unwrap()
}

#[tokio::test]
async fn signed_webhooks_start_one_run_per_commit_and_refuse_bad_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().unwrap();
    let read = new_token(&s, &admin, Scope::Read).await;
    let repo = Repo::new(&[("takt.yml", "jobs:\n  build: {script: ['echo $CI_COMMIT_REF_NAME']}\n")]);
    add_project(&s, &admin, "demo", repo.path()).await;

    repo.commit(&[("a.txt", "1")], "one");
    let one = repo.rev("HEAD");
    let body = push("refs/heads/main", &one);
    let gh = |sig: Option<String>, delivery: &str, event: &str| {
        let mut h = vec![
            ("x-github-event", event.to_string()),
            ("x-github-delivery", delivery.to_string()),
        ];
        if let Some(sig) = sig {
            h.push(("x-hub-signature-256", sig));
        }
        h
    };
    // No secret set yet: nothing can be verified.
    let (st, b) = hook(
        &s,
        "github",
        "demo",
        &gh(Some(format!("sha256={}", sign(&body))), "d1", "push"),
        &body,
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b["error"].as_str().unwrap().contains("TAKT_WEBHOOK_SECRET"), "{b}");
    assert_eq!(
        put_secret(&s, &admin, "demo", "TAKT_WEBHOOK_SECRET", SECRET).await,
        StatusCode::NO_CONTENT
    );

    // Unknown project and provider: 404. Missing and wrong signatures: 401.
    let good = gh(Some(format!("sha256={}", sign(&body))), "d1", "push");
    assert_eq!(
        hook(&s, "github", "nosuch", &good, &body).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        hook(&s, "bitbucket", "demo", &good, &body).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        hook(&s, "github", "demo", &gh(None, "d1", "push"), &body).await.0,
        StatusCode::UNAUTHORIZED
    );
    let wrong = gh(Some(format!("sha256={}", sign(b"other body"))), "d1", "push");
    assert_eq!(
        hook(&s, "github", "demo", &wrong, &body).await.0,
        StatusCode::UNAUTHORIZED
    );
    let garbage = gh(Some("sha256=zz".into()), "d1", "push");
    assert_eq!(
        hook(&s, "github", "demo", &garbage, &body).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Ping: 200, no run.
    let ping = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#;
    let (st, b) = hook(
        &s,
        "github",
        "demo",
        &gh(Some(format!("sha256={}", sign(ping))), "p1", "ping"),
        ping,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["pong"], true);

    // A push: one run. The same delivery again, and the same commit from Gitea: no second run.
    let (st, b) = hook(&s, "github", "demo", &good, &body).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["run"], 1);
    let (st, b) = hook(&s, "github", "demo", &good, &body).await;
    assert_eq!((st, &b["duplicate"]), (StatusCode::OK, &json!(true)), "{b}");
    let gitea = vec![
        ("x-gitea-event", "push".to_string()),
        ("x-gitea-delivery", "g1".to_string()),
        ("x-gitea-signature", sign(&body)),
    ];
    let (st, b) = hook(&s, "gitea", "demo", &gitea, &body).await;
    assert_eq!((st, &b["run"]), (StatusCode::OK, &json!(1)), "{b}");

    // GitLab: the token itself; wrong token 401; a new commit runs.
    repo.commit(&[("a.txt", "2")], "two");
    let two = repo.rev("HEAD");
    let body2 = push("refs/heads/main", &two);
    let gl = |token: &str| {
        vec![
            ("x-gitlab-event", "Push Hook".to_string()),
            ("x-gitlab-event-uuid", "u-2".to_string()),
            ("x-gitlab-token", token.to_string()),
        ]
    };
    assert_eq!(
        hook(&s, "gitlab", "demo", &gl("nope"), &body2).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (st, b) = hook(&s, "gitlab", "demo", &gl(SECRET), &body2).await;
    assert_eq!((st, &b["run"]), (StatusCode::ACCEPTED, &json!(2)), "{b}");

    // A tag push (Gitea) gets a tag run; a malformed payload is 400 with the reason.
    repo.git(&["tag", "v1.0"]);
    let body3 = push("refs/tags/v1.0", &two);
    let gitea3 = vec![
        ("x-gitea-event", "push".to_string()),
        ("x-gitea-delivery", "g3".to_string()),
        ("x-gitea-signature", sign(&body3)),
    ];
    let (st, b) = hook(&s, "gitea", "demo", &gitea3, &body3).await;
    assert_eq!((st, &b["run"]), (StatusCode::ACCEPTED, &json!(3)), "{b}");
    let junk = b"{not json";
    let h = gh(Some(format!("sha256={}", sign(junk))), "j1", "push");
    let (st, b) = hook(&s, "github", "demo", &h, junk).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(b["error"].as_str().unwrap().contains("not JSON"), "{b}");

    for n in 1..=3 {
        let r = finished_run(&s, &read, "demo", n).await;
        assert_eq!(r["status"], "success", "{r}");
    }
    let r1 = finished_run(&s, &read, "demo", 1).await;
    assert_eq!(r1["trigger"]["webhook"]["provider"], "github");
    assert_eq!(r1["trigger"]["webhook"]["delivery"], "d1");
    let r3 = finished_run(&s, &read, "demo", 3).await;
    assert_eq!(r3["tag"], "v1.0");
    assert_eq!(r3["trigger"]["webhook"]["provider"], "gitea");
    let runs = get_json(&s, "/api/v1/runs?project=demo", &read).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 3, "{runs}");

    // Deliveries are recorded; metrics count them and the refused ones.
    let ev = get_json(&s, "/api/v1/events?kind=webhook_received", &read).await;
    let outcomes: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["ping", "queued", "duplicate", "duplicate", "queued", "queued"]
    );
    let m = get_text(&s, "/metrics", &read).await;
    for want in [
        r#"takt_webhook_deliveries_total{provider="github",outcome="queued"} 1"#,
        r#"takt_webhook_deliveries_total{provider="github",outcome="unauthorized"} 4"#,
        r#"takt_runs_finished_total{status="success"} 3"#,
        "takt_trigger_to_first_job_seconds_count 3",
        "takt_job_dispatch_seconds_count 3",
        r#"takt_http_requests_total{method="POST",route="/api/v1/hooks/{provider}/{name}",code="202"} 3"#,
    ] {
        assert!(m.contains(want), "missing `{want}` in\n{m}");
    }
}

#[tokio::test]
async fn polling_finds_new_commits_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[("TAKT_POLL_SECONDS", "1")]);
    let admin = s.printed_token.clone().unwrap();
    let repo = Repo::new(&[("takt.yml", "jobs:\n  build: {script: [true]}\n")]);
    add_project(&s, &admin, "demo", repo.path()).await;
    // What the repository had when the project was added is not news.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        get_json(&s, "/api/v1/runs", &admin).await["runs"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    repo.commit(&[("b.txt", "x")], "new");
    let head = repo.rev("HEAD");
    let r = finished_run(&s, &admin, "demo", 1).await;
    assert_eq!(
        (r["commit"].as_str().unwrap(), &r["trigger"]),
        (head.as_str(), &json!("poll")),
        "{r}"
    );
    assert_eq!(r["branch"], "main");
    repo.git(&["tag", "v2"]);
    let r = finished_run(&s, &admin, "demo", 2).await;
    assert_eq!(r["tag"], "v2", "{r}");
    // And nothing more: each commit and tag once.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        get_json(&s, "/api/v1/runs", &admin).await["runs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn an_installed_post_receive_hook_reports_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let ci = new_token(&s, &admin, Scope::Ci).await;
    let work = Repo::new(&[("takt.yml", "jobs:\n  build: {script: [true]}\n")]);
    let bare = dir.path().join("origin.git");
    let out = std::process::Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(work.path())
        .arg(&bare)
        .output()
        .unwrap();
    assert!(out.status.success());
    add_project(&s, &admin, "demo", &bare).await;

    let out = takt()
        .args(["hook", "install"])
        .arg(&bare)
        .args(["--project", "demo", "--server", &s.base, "--token", &ci])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let hook_file = bare.join("hooks/post-receive");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&hook_file).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // A foreign hook is not overwritten without --force.
    let other = dir.path().join("other.git");
    std::fs::create_dir_all(other.join("hooks")).unwrap();
    std::fs::create_dir_all(other.join("objects")).unwrap();
    std::fs::write(other.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(other.join("hooks/post-receive"), "#!/bin/sh\necho mine\n").unwrap();
    let out = takt()
        .args(["hook", "install"])
        .arg(&other)
        .args(["--project", "demo", "--server", &s.base, "--token", &ci])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"));

    work.commit(&[("c.txt", "1")], "pushed");
    work.git(&["remote", "add", "origin", &bare.display().to_string()]);
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(work.path())
        .args(["push", "-q", "origin", "main"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("takt: queued run #1 of demo"), "{}", stderr(&out));
    let r = finished_run(&s, &ci, "demo", 1).await;
    assert_eq!(r["status"], "success");
    assert_eq!(r["commit"].as_str().unwrap(), work.rev("HEAD"));
    assert_eq!(r["trigger"]["hook"]["token"], "ci-bot");
}
