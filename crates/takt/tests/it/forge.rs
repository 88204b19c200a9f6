//! Working where the team works, for real: commit statuses posted to a forge on 127.0.0.1 that
//! checks every request against GitHub's published OpenAPI description (npm
//! `@octokit/openapi`, installed by test.sh) and against Gitea's and GitLab's documented shapes.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
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

pub(crate) const HOOK_SECRET: &str = "mr-hook-secret";

/// A signed webhook delivery: GitHub's headers, or GitLab's.
pub(crate) async fn deliver(
    s: &Server,
    provider: &str,
    event: &str,
    delivery: &str,
    body: &Value,
) -> (StatusCode, Value) {
    use hmac::{KeyInit, Mac};
    let body = serde_json::to_vec(body).unwrap();
    let r = client()
        .post(format!("{}/api/v1/hooks/{provider}/web", s.base))
        .header("content-type", "application/json");
    let r = if provider == "gitlab" {
        r.header("x-gitlab-event", event)
            .header("x-gitlab-event-uuid", delivery)
            .header("x-gitlab-token", HOOK_SECRET)
    } else {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
        mac.update(&body);
        r.header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header(
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
            )
    };
    let r = r.body(body).send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// GitHub's own `pull_request` example for `action` (`@octokit/webhooks-examples`), made to
/// name request `number` of branch `head_ref` at `sha` into `main`.
pub(crate) fn github_pull_request(action: &str, number: u64, head_ref: &str, sha: &str, fork: bool) -> Value {
    let text = std::fs::read(npm("@octokit/webhooks-examples/api.github.com/index.json")).unwrap();
    let all: Vec<Value> = serde_json::from_slice(&text).unwrap();
    let examples = &all.iter().find(|x| x["name"] == "pull_request").unwrap()["examples"];
    let mut ex = examples
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["action"] == action)
        .unwrap()
        .clone();
    ex["number"] = number.into();
    let pr = &mut ex["pull_request"];
    pr["number"] = number.into();
    pr["head"]["sha"] = sha.into();
    pr["head"]["ref"] = head_ref.into();
    pr["base"]["ref"] = "main".into();
    if fork {
        pr["head"]["repo"]["full_name"] = "someone/web".into();
    }
    ex
}

/// GitLab's documented `Merge Request Hook` payload (its fields that CI reads).
fn gitlab_merge_request(action: &str, iid: u64, source: &str, sha: &str) -> Value {
    json!({
        "object_kind": "merge_request", "event_type": "merge_request",
        "user": {"id": 1, "name": "Administrator", "username": "root"},
        "project": {"id": 1, "name": "web", "path_with_namespace": "team/web", "default_branch": "main"},
        "object_attributes": {
            "id": 99, "iid": iid, "title": "Slow change", "state": "opened", "action": action,
            "source_branch": source, "target_branch": "main",
            "source_project_id": 1, "target_project_id": 1,
            "last_commit": {"id": sha, "message": "slow", "title": "slow"}
        },
        "labels": [], "changes": {}
    })
}

/// Merge-request pipelines from GitHub's real `pull_request` payloads and GitLab's documented
/// `Merge Request Hook`: the request's head runs with GitLab's variables and `rules` on
/// `merge_request_event`; a fork's request gets no secrets; a head that is not on the request's
/// ref is refused; a closed request cancels its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_requests_run_their_head_with_gitlab_variables() {
    // Forks' requests run only where jobs are isolated from the server; jobs under bubblewrap
    // get a /tmp of their own, so the data directory lives elsewhere.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let s = start(dir.path(), &[("TAKT_ISOLATION", "bwrap")]);
    let admin = s.printed_token.clone().unwrap();
    let yml = r#"jobs:
  facts:
    script:
      - echo "source=$CI_PIPELINE_SOURCE iid=$CI_MERGE_REQUEST_IID from=$CI_MERGE_REQUEST_SOURCE_BRANCH_NAME into=$CI_MERGE_REQUEST_TARGET_BRANCH_NAME title=[$CI_MERGE_REQUEST_TITLE] branch=${CI_COMMIT_BRANCH:-none} ref=$CI_COMMIT_REF_NAME"
  secret:
    secrets: [API_TOKEN]
    script: ['test -n "$API_TOKEN"']
  mr-only:
    rules: [{if: '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    script: [true]
  push-only:
    rules: [{if: $CI_COMMIT_BRANCH}]
    script: [true]
"#;
    let repo = Repo::new(&[("takt.yml", yml)]);
    repo.git(&["checkout", "-q", "-b", "changes"]);
    repo.commit(&[("a", "1")], "a change");
    let sha = repo.rev("HEAD");
    repo.git(&["checkout", "-q", "-b", "slow", "main"]);
    repo.commit(&[("takt.yml", "jobs:\n  wait: {script: [sleep 30]}\n")], "slow");
    let slow = repo.rev("HEAD");
    repo.git(&["checkout", "-q", "main"]);
    // Where the forges keep requests' heads.
    repo.git(&["update-ref", "refs/pull/7/head", &sha]);
    repo.git(&["update-ref", "refs/pull/8/head", &sha]);
    repo.git(&["update-ref", "refs/merge-requests/3/head", &slow]);
    add_project(&s, &admin, "web", repo.path()).await;
    for (name, value) in [("TAKT_WEBHOOK_SECRET", HOOK_SECRET), ("API_TOKEN", "s3cret-value")] {
        assert_eq!(put_secret(&s, &admin, "web", name, value).await, StatusCode::NO_CONTENT);
    }
    let (st, _) = post_json(
        &s,
        "/api/v1/projects/web/settings",
        &admin,
        json!({"protected": ["changes"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    // Opened on GitHub: a merge-request pipeline of the head, with the source branch's secrets.
    let opened = github_pull_request("opened", 7, "changes", &sha, false);
    let (st, b) = deliver(&s, "github", "pull_request", "d-1", &opened).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["run"], 1, "{b}");
    let r = finished_run(&s, &admin, "web", 1).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["merge_request"]["iid"], 7, "{r}");
    let jobs: Vec<&str> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert!(jobs.contains(&"mr-only") && !jobs.contains(&"push-only"), "{jobs:?}");
    let log = get_text(&s, "/api/v1/runs/web/1/logs/facts", &admin).await;
    let title = opened["pull_request"]["title"].as_str().unwrap();
    assert!(
        log.contains(&format!(
            "source=merge_request_event iid=7 from=changes into=main title=[{title}] branch=none ref=changes"
        )),
        "{log}"
    );
    // The same delivery again, and the same head reported again: one run.
    let (st, b) = deliver(&s, "github", "pull_request", "d-1", &opened).await;
    assert_eq!((st, &b["duplicate"]), (StatusCode::OK, &json!(true)), "{b}");
    let again = github_pull_request("synchronize", 7, "changes", &sha, false);
    let (_, b) = deliver(&s, "github", "pull_request", "d-2", &again).await;
    assert_eq!((&b["run"], &b["duplicate"]), (&json!(1), &json!(true)), "{b}");
    // A push of that commit to its branch is a run of its own (as on GitLab).
    let (st, b) = post_json(
        &s,
        "/api/v1/projects/web/trigger",
        &admin,
        json!({"rev": sha, "ref": "refs/heads/changes"}),
    )
    .await;
    assert_eq!((st, &b["run"]), (StatusCode::ACCEPTED, &json!(2)), "{b}");
    let r = finished_run(&s, &admin, "web", 2).await;
    let jobs: Vec<&str> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert!(!jobs.contains(&"mr-only") && jobs.contains(&"push-only"), "{jobs:?}");
    // Labels and reviews start nothing.
    let labeled = github_pull_request("labeled", 7, "changes", &sha, false);
    let (st, b) = deliver(&s, "github", "pull_request", "d-3", &labeled).await;
    assert_eq!((st, &b["ignored"]), (StatusCode::OK, &json!(true)), "{b}");

    // From a fork: it runs (isolated: bubblewrap is on this machine) without secrets.
    let fork = github_pull_request("opened", 8, "changes", &sha, true);
    let (st, b) = deliver(&s, "github", "pull_request", "d-4", &fork).await;
    assert_eq!((st, &b["run"]), (StatusCode::ACCEPTED, &json!(3)), "{b}");
    let r = finished_run(&s, &admin, "web", 3).await;
    assert_eq!(job_of(&r, "facts")["status"], "success", "{r}");
    assert_eq!(job_of(&r, "secret")["status"], "failed", "{r}");
    let log = get_text(&s, "/api/v1/runs/web/3/logs/secret", &admin).await;
    assert!(log.contains("secrets API_TOKEN are not given to this run"), "{log}");
    assert_eq!(r["branch"], Value::Null, "{r}");

    // A head that the request's ref does not have is refused, saying which ref.
    let wrong = github_pull_request("opened", 9, "changes", &sha, false);
    let (st, b) = deliver(&s, "github", "pull_request", "d-5", &wrong).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["error"].as_str().unwrap().contains("refs/pull/9/head"), "{b}");
    let not_its = github_pull_request("opened", 7, "changes", &slow, false);
    let (st, b) = deliver(&s, "github", "pull_request", "d-6", &not_its).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("is not on refs/pull/7/head"),
        "{b}"
    );

    // GitLab: opened, then closed while it runs: its run is cancelled.
    let mr3 = |action| gitlab_merge_request(action, 3, "slow", &slow);
    let (st, b) = deliver(&s, "gitlab", "Merge Request Hook", "g-1", &mr3("open")).await;
    assert_eq!((st, &b["run"]), (StatusCode::ACCEPTED, &json!(4)), "{b}");
    let (st, b) = deliver(&s, "gitlab", "Merge Request Hook", "g-2", &mr3("close")).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["cancelled"], json!([4]), "{b}");
    let r = finished_run(&s, &admin, "web", 4).await;
    assert_eq!(r["status"], "cancelled", "{r}");
    assert_eq!(r["merge_request"]["source_branch"], "slow", "{r}");
}

/// GitLab's auto-cancel of redundant pipelines: a newer commit of the branch cancels an older
/// run whose started jobs are all `interruptible: true`, and leaves alone one that started a
/// job without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_commit_cancels_the_branchs_interruptible_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[("TAKT_CONCURRENCY", "4")]);
    let admin = s.printed_token.clone().unwrap();
    let interruptible = "jobs:\n  test: {interruptible: true, script: [sleep 30]}\n";
    let repo = Repo::new(&[("takt.yml", interruptible)]);
    add_project(&s, &admin, "web", repo.path()).await;
    let push = |rev: String| {
        let (s, admin) = (&s, &admin);
        async move {
            let (st, b) = post_json(
                s,
                "/api/v1/projects/web/trigger",
                admin,
                json!({"rev": rev, "ref": "refs/heads/main"}),
            )
            .await;
            assert_eq!(st, StatusCode::ACCEPTED, "{b}");
            b["run"].as_u64().unwrap()
        }
    };
    let started = |run: u64| {
        let (s, admin) = (&s, &admin);
        async move {
            until(&format!("run #{run} started its job"), || async {
                let r = get_json(s, &format!("/api/v1/runs/web/{run}"), admin).await;
                r["jobs"]
                    .as_array()
                    .is_some_and(|j| j.iter().any(|j| j["status"] == "running"))
            })
            .await;
        }
    };

    let one = push(repo.rev("HEAD")).await;
    started(one).await;
    repo.commit(&[("a", "1")], "second");
    let two = push(repo.rev("HEAD")).await;
    let r = finished_run(&s, &admin, "web", one).await;
    assert_eq!(r["status"], "cancelled", "{r}");
    started(two).await;

    // A run whose started job is not interruptible (a deploy, say) runs to its end.
    repo.commit(&[("takt.yml", "jobs:\n  deploy: {script: [sleep 30]}\n")], "third");
    let three = push(repo.rev("HEAD")).await;
    assert_eq!(finished_run(&s, &admin, "web", two).await["status"], "cancelled");
    started(three).await;
    repo.commit(&[("a", "2")], "fourth");
    let four = push(repo.rev("HEAD")).await;
    started(four).await;
    let r = get_json(&s, &format!("/api/v1/runs/web/{three}"), &admin).await;
    assert!(r.get("finished_at").is_none(), "{r}");
    assert_eq!(job_of(&r, "deploy")["status"], "running", "{r}");
    for run in [three, four] {
        let (st, b) = post_json(&s, &format!("/api/v1/runs/web/{run}/cancel"), &admin, json!({})).await;
        assert!(st.is_success(), "{b}");
    }
}

/// GitLab's manual jobs on the server: a blocking one (`allow_failure: false`) holds the
/// stages after it and the run ends `manual`, waiting for a person; `takt runs play` starts
/// it in a new run that takes over what passed (artifacts too) and runs what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_job_waits_for_a_person_and_is_played() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let admin = s.printed_token.clone().unwrap();
    let yml = "jobs:
  build: {stage: build, script: ['echo built-$CI_PIPELINE_ID > out.txt'], artifacts: {paths: [out.txt]}}
  review: {stage: build, script: [echo reviewed], when: manual}
  approve: {stage: test, script: [echo approved], when: manual, allow_failure: false}
  ship: {stage: package, script: [cat out.txt]}
  release: {stage: build, script: [echo released], when: manual, environment: prod}
environments:
  prod: {driver: command, deploy: 'true', protected: [deploy-bot]}
";
    let repo = Repo::new(&[("takt.yml", yml)]);
    add_project(&s, &admin, "web", repo.path()).await;
    let ci = new_token(&s, &admin, takt_server::auth::Scope::Ci).await;
    let read = new_token(&s, &admin, takt_server::auth::Scope::Read).await;
    let (st, b) = post_json(&s, "/api/v1/projects/web/trigger", &ci, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let r = finished_run(&s, &ci, "web", 1).await;
    assert_eq!(r["status"], "manual", "{r}");
    assert_eq!(job_of(&r, "build")["status"], "success", "{r}");
    assert_eq!(job_of(&r, "review")["status"], "manual", "{r}");
    assert_eq!(job_of(&r, "approve")["status"], "manual", "{r}");
    assert_eq!(job_of(&r, "ship")["status"], "skipped", "{r}");

    // Who may play what.
    let play = |token: &str, job: &str| {
        let (s, token, path) = (&s, token.to_string(), format!("/api/v1/runs/web/1/jobs/{job}/play"));
        async move { post_json(s, &path, &token, json!({})).await }
    };
    let (st, _) = play(&read, "approve").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, b) = play(&ci, "build").await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert!(b["error"].as_str().unwrap().contains("is not a manual job"), "{b}");
    let (st, b) = play(&ci, "nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("build, review, approve, ship"),
        "{b}"
    );
    // A job for a protected environment is played by a deploy token the environment names.
    let deployer = new_token(&s, &admin, takt_server::auth::Scope::Deploy).await;
    let (st, b) = play(&ci, "release").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("deploys to the protected environment `prod`"),
        "{b}"
    );
    let (st, b) = play(&deployer, "approve").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b}");
    assert!(b["error"].as_str().unwrap().contains("needs a ci token"), "{b}");

    let (code, out, err) = cli(&s, &ci, &["runs", "play", "web", "1", "approve"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("queued run #2 of web: `approve` of run #1, played"),
        "{out}"
    );
    let r = finished_run(&s, &ci, "web", 2).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["trigger"]["play"]["of"], 1, "{r}");
    assert_eq!(r["trigger"]["play"]["job"], "approve", "{r}");
    assert_eq!(job_of(&r, "build")["status"], "success", "{r}");
    assert!(
        job_of(&r, "build")["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("passed in run #1"),
        "{r}"
    );
    assert_eq!(job_of(&r, "approve")["status"], "success", "{r}");
    assert_eq!(job_of(&r, "review")["status"], "manual", "{r}");
    // The build's artifact of run #1 reached the held job.
    let log = get_text(&s, "/api/v1/runs/web/2/logs/ship", &ci).await;
    assert!(log.contains("built-1"), "{log}");
    let (st, b) = play(&deployer, "release").await;
    assert_eq!((st, &b["run"]), (StatusCode::ACCEPTED, &json!(3)), "{b}");
    let r = finished_run(&s, &ci, "web", 3).await;
    assert_eq!(job_of(&r, "release")["status"], "success", "{r}");
}
