//! Working where the team works, for real: commit statuses posted to a forge on 127.0.0.1 that
//! checks every request against GitHub's published OpenAPI description (npm
//! `@octokit/openapi`, installed by test.sh) and against Gitea's and GitLab's documented shapes.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

mod common;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use common::server::*;
use common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, OnceLock};

/// Where test.sh installs the published descriptions.
fn npm(path: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/npm/node_modules")
        .join(path);
    assert!(
        p.exists(),
        "{} is missing: run ./test.sh, or `npm ci --prefix crates/takt/tests/npm`",
        p.display()
    );
    p
}

/// GitHub's REST API description (`@octokit/openapi`, pinned in tests/npm/package-lock.json).
fn github_openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let text = std::fs::read(npm("@octokit/openapi/generated/api.github.com.json")).unwrap();
        serde_json::from_slice(&text).unwrap()
    })
}

/// One request the forge got.
#[derive(Debug, Clone)]
struct Got {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct Forge {
    got: Vec<Got>,
    /// Answer 401 to everything.
    refuse: bool,
}

type Shared = Arc<Mutex<Forge>>;

/// A forge's API on 127.0.0.1 that records every request and answers 201 (or 401).
async fn forge() -> (String, Shared) {
    let shared: Shared = Arc::default();
    let app = axum::Router::new()
        .fallback(
            |State(s): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: String| async move {
                let mut f = s.lock().unwrap();
                let body = serde_json::from_str(&body).unwrap_or(Value::Null);
                f.got.push(Got {
                    method,
                    path: uri.path().to_string(),
                    headers,
                    body,
                });
                if f.refuse {
                    (StatusCode::UNAUTHORIZED, r#"{"message":"Bad credentials"}"#)
                } else {
                    (StatusCode::CREATED, "{}")
                }
            },
        )
        .with_state(shared.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), shared)
}

/// Whether `path` fits an OpenAPI path template (`/repos/{owner}/{repo}/statuses/{sha}`).
fn fits(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// Checks a value against the subset of JSON Schema GitHub's description uses for request
/// bodies: type, nullable, enum, properties, required, and no unknown properties.
fn check_schema(schema: &Value, v: &Value, at: &str) {
    if v.is_null() {
        assert!(
            schema["nullable"] == true,
            "{at}: null where the schema does not allow it"
        );
        return;
    }
    match schema["type"].as_str() {
        Some("object") => {
            let props = schema["properties"].as_object().unwrap();
            let obj = v.as_object().unwrap_or_else(|| panic!("{at}: not an object: {v}"));
            for r in schema["required"].as_array().into_iter().flatten() {
                assert!(obj.contains_key(r.as_str().unwrap()), "{at}: required `{r}` missing");
            }
            for (k, x) in obj {
                let s = props
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}: `{k}` is not a field of the operation"));
                check_schema(s, x, &format!("{at}.{k}"));
            }
        }
        Some("string") => assert!(v.is_string(), "{at}: not a string: {v}"),
        Some(other) => panic!("{at}: schema type {other} not covered by this check"),
        None => {}
    }
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(allowed.contains(v), "{at}: {v} is not one of {allowed:?}");
    }
}

/// Checks one request against GitHub's description: exactly one operation has its path and
/// method, it is "Create a commit status", and the body is what its schema says.
fn check_github(g: &Got) -> &str {
    let doc = github_openapi();
    let ops: Vec<(&String, &Value)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(t, _)| fits(t, &g.path))
        .filter_map(|(t, item)| item.get(g.method.as_str().to_lowercase()).map(|op| (t, op)))
        .collect();
    assert_eq!(
        ops.len(),
        1,
        "{} {} is not one GitHub operation: {ops:?}",
        g.method,
        g.path
    );
    let (_, op) = ops[0];
    assert_eq!(
        op["operationId"], "repos/create-commit-status",
        "{} {}",
        g.method, g.path
    );
    let schema = &op["requestBody"]["content"]["application/json"]["schema"];
    check_schema(schema, &g.body, "body");
    assert_eq!(g.headers["content-type"], "application/json");
    // GitHub refuses requests without a User-Agent.
    assert!(g.headers["user-agent"].to_str().unwrap().starts_with("takt/"));
    g.body["state"].as_str().unwrap()
}

/// Gitea's documented `CreateStatusOption` (POST /repos/{owner}/{repo}/statuses/{sha}).
fn check_gitea(g: &Got) -> &str {
    assert_eq!(g.method, Method::POST);
    assert!(
        fits("/api/v1/repos/{owner}/{repo}/statuses/{sha}", &g.path),
        "{}",
        g.path
    );
    let schema = json!({"type": "object", "properties": {
        "context": {"type": "string"}, "description": {"type": "string"},
        "state": {"type": "string", "enum": ["pending", "success", "error", "failure", "warning"]},
        "target_url": {"type": "string"}}, "required": ["state"]});
    check_schema(&schema, &g.body, "body");
    g.body["state"].as_str().unwrap()
}

/// GitLab's documented commit status (POST /projects/:id/statuses/:sha).
fn check_gitlab(g: &Got) -> &str {
    assert_eq!(g.method, Method::POST);
    assert!(fits("/api/v4/projects/{id}/statuses/{sha}", &g.path), "{}", g.path);
    let schema = json!({"type": "object", "properties": {
        "state": {"type": "string", "enum": ["pending", "running", "success", "failed", "canceled", "skipped"]},
        "name": {"type": "string"}, "context": {"type": "string"}, "ref": {"type": "string"},
        "target_url": {"type": "string"}, "description": {"type": "string"},
        "coverage": {"type": "number"}, "pipeline_id": {"type": "integer"}}, "required": ["state"]});
    check_schema(&schema, &g.body, "body");
    g.body["state"].as_str().unwrap()
}

/// The statuses posted for one context, in order.
fn states<'a>(got: &'a [Got], context_field: &str, context: &str, check: fn(&'a Got) -> &'a str) -> Vec<&'a str> {
    got.iter()
        .filter(|g| g.body[context_field] == context)
        .map(check)
        .collect()
}

async fn set_forge(s: &Server, admin: &str, args: &[&str]) {
    let mut all = vec!["project", "set", "web"];
    all.extend_from_slice(args);
    let (code, out, err) = cli(s, admin, &all);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_and_stage_gets_a_commit_status_on_github_gitea_and_gitlab() {
    let (base, got) = forge().await;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[("TAKT_PUBLIC_URL", "https://ci.example.com/")]);
    let admin = s.printed_token.clone().unwrap();
    let yml = "stages: [build, test]\njobs:\n  compile: {stage: build, script: [true]}\n  unit: {stage: test, script: [true]}\n  lint: {stage: test, script: [true]}\n";
    let repo = Repo::new(&[("takt.yml", yml)]);
    let sha = repo.rev("HEAD");
    add_project(&s, &admin, "web", repo.path()).await;
    assert_eq!(
        put_secret(&s, &admin, "web", "TAKT_FORGE_TOKEN", "ghp_forgetoken123").await,
        StatusCode::NO_CONTENT
    );
    // Bad settings are refused, naming the flag.
    let (code, _, err) = cli(
        &s,
        &admin,
        &["project", "set", "web", "--forge", "github", "--forge-repo", "a/b/c"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--forge-repo `a/b/c` must be OWNER/NAME"), "{err}");
    let (code, _, err) = cli(
        &s,
        &admin,
        &["project", "set", "web", "--forge", "gitea", "--forge-repo", "a/b"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--forge-api"), "{err}");

    set_forge(
        &s,
        &admin,
        &[
            "--forge",
            "github",
            "--forge-api",
            &base,
            "--forge-repo",
            "octo/web",
            "--forge-stages",
        ],
    )
    .await;
    let (st, b) = post_json(&s, "/api/v1/projects/web/trigger", &admin, json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!(finished_run(&s, &admin, "web", 1).await["status"], "success");
    let done = |n: usize| {
        let got = got.clone();
        move || {
            let got = got.clone();
            async move {
                let g = got.lock().unwrap();
                g.got
                    .iter()
                    .filter(|g| g.body["state"] == "success" || g.body["state"] == "failed")
                    .count()
                    >= n
            }
        }
    };
    until("the run's and both stages' final statuses", done(3)).await;
    {
        let g = got.lock().unwrap().got.clone();
        for r in &g {
            assert_eq!(r.path, format!("/repos/octo/web/statuses/{sha}"));
            assert_eq!(r.headers["authorization"], "Bearer ghp_forgetoken123");
            assert_eq!(
                r.body["target_url"],
                "https://ci.example.com/api/v1/projects/web/runs/1"
            );
        }
        // Queued and running are both `pending` on GitHub (it has no running state).
        assert_eq!(
            states(&g, "context", "takt/web", check_github),
            ["pending", "pending", "success"]
        );
        let build = states(&g, "context", "takt/web/build", check_github);
        assert_eq!(build.last(), Some(&"success"), "{build:?}");
        let test = states(&g, "context", "takt/web/test", check_github);
        assert_eq!(test.first(), Some(&"pending"));
        assert_eq!(test.last(), Some(&"success"), "{test:?}");
        let descriptions: Vec<_> = g
            .iter()
            .filter(|g| g.body["context"] == "takt/web")
            .map(|g| g.body["description"].clone())
            .collect();
        assert_eq!(
            descriptions,
            [
                json!("run #1 is waiting"),
                json!("run #1 is running"),
                json!("run #1 passed")
            ]
        );
        got.lock().unwrap().got.clear();
    }

    // Gitea: the same shape under /api/v1, its own token header; a failing run is `failure`.
    repo.commit(&[("takt.yml", "jobs:\n  unit: {script: [false]}\n")], "break it");
    set_forge(
        &s,
        &admin,
        &[
            "--forge",
            "gitea",
            "--forge-api",
            &format!("{base}/api/v1"),
            "--forge-repo",
            "octo/web",
        ],
    )
    .await;
    let (st, _) = post_json(&s, "/api/v1/projects/web/trigger", &admin, json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(finished_run(&s, &admin, "web", 2).await["status"], "failed");
    until("gitea's final status", || {
        let got = got.clone();
        async move { got.lock().unwrap().got.iter().any(|g| g.body["state"] == "failure") }
    })
    .await;
    {
        let g = got.lock().unwrap().got.clone();
        assert_eq!(
            states(&g, "context", "takt/web", check_gitea),
            ["pending", "pending", "failure"]
        );
        assert!(
            g.iter()
                .all(|r| r.headers["authorization"] == "token ghp_forgetoken123")
        );
        // Without --forge-stages, no stage statuses.
        assert!(g.iter().all(|r| r.body["context"] == "takt/web"), "{g:?}");
        got.lock().unwrap().got.clear();
    }

    // GitLab: by project path, URL-encoded; its own states, running included.
    repo.commit(&[("takt.yml", "jobs:\n  unit: {script: [true]}\n")], "fix it");
    set_forge(
        &s,
        &admin,
        &[
            "--forge",
            "gitlab",
            "--forge-api",
            &format!("{base}/api/v4"),
            "--forge-repo",
            "group/web",
        ],
    )
    .await;
    let (st, _) = post_json(&s, "/api/v1/projects/web/trigger", &admin, json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(finished_run(&s, &admin, "web", 3).await["status"], "success");
    until("gitlab's final status", done(1)).await;
    {
        let g = got.lock().unwrap().got.clone();
        let head = repo.rev("HEAD");
        assert!(
            g.iter()
                .all(|r| r.path == format!("/api/v4/projects/group%2Fweb/statuses/{head}")),
            "{g:?}"
        );
        assert_eq!(
            states(&g, "name", "takt/web", check_gitlab),
            ["pending", "running", "success"]
        );
        assert!(g.iter().all(|r| r.headers["private-token"] == "ghp_forgetoken123"));
    }

    // A forge that refuses (401) is reported once an hour, not per run; each delivery is still
    // an event, and runs go on.
    got.lock().unwrap().refuse = true;
    for n in 4..=5 {
        repo.commit(
            &[("takt.yml", &format!("jobs:\n  unit: {{script: [false, '{n}']}}\n"))],
            "break it again",
        );
        let (st, _) = post_json(&s, "/api/v1/projects/web/trigger", &admin, json!({})).await;
        assert_eq!(st, StatusCode::ACCEPTED);
        assert_eq!(finished_run(&s, &admin, "web", n).await["status"], "failed");
    }
    until("six refused deliveries recorded", || {
        let (s, admin) = (&s, &admin);
        async move {
            let ev = get_json(s, "/api/v1/events?kind=notification_sent&limit=1000", admin).await;
            ev["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["status"] == 401)
                .count()
                >= 6
        }
    })
    .await;
    let ev = get_json(&s, "/api/v1/events?kind=forge_refused", &admin).await;
    let refused = ev["events"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{ev:#}");
    assert_eq!(refused[0]["status"], 401);
    assert_eq!(refused[0]["forge"], "gitlab");
    assert!(
        refused[0]["error"].as_str().unwrap().contains("TAKT_FORGE_TOKEN"),
        "{ev}"
    );

    // `--forge none` stops them.
    set_forge(&s, &admin, &["--forge", "none"]).await;
    let p = get_json(&s, "/api/v1/projects/web", &admin).await;
    assert!(p["options"].get("forge").is_none(), "{p}");
}
