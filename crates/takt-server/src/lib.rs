//! `takt serve`: the HTTP JSON API over the event log, with scoped tokens.
//!
//! Routes are listed once in [`ROUTES`] (method, path, permission); the OpenAPI document and
//! the authorization tests are derived from that table, so a route cannot be added without a
//! permission. Every route but `/healthz` and `/readyz` needs a token: none or an unknown one is
//! 401, a scope without the route's permission is 403.

pub mod auth;
pub mod config;
pub mod projects;

use auth::{Permission, Scope, TokenInfo, Tokens};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
pub use config::{Overrides, ServerConfig};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use takt_model::{Event, EventKind};
use takt_store::{EventFilter, Store};

/// Every route: method, path (axum syntax), the permission it needs (`None`: public).
pub const ROUTES: &[(&str, &str, Option<Permission>)] = &[
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/api/v1/openapi.json", Some(Permission::Read)),
    ("GET", "/api/v1/events", Some(Permission::Read)),
    ("GET", "/api/v1/tokens", Some(Permission::Admin)),
    ("POST", "/api/v1/tokens", Some(Permission::Admin)),
    ("DELETE", "/api/v1/tokens/{id}", Some(Permission::Admin)),
    ("GET", "/api/v1/projects", Some(Permission::Read)),
    ("POST", "/api/v1/projects", Some(Permission::Admin)),
    ("GET", "/api/v1/projects/{name}", Some(Permission::Read)),
    ("POST", "/api/v1/projects/{name}/trigger", Some(Permission::Ci)),
    ("GET", "/api/v1/runs", Some(Permission::Read)),
    ("GET", "/api/v1/runs/{project}/{run}", Some(Permission::Read)),
];

pub struct AppState {
    pub store: Store,
    pub tokens: RwLock<Tokens>,
    pub projects: RwLock<projects::Projects>,
    /// Executes triggered runs; `None` serves the API only.
    pub runner: Option<projects::Runner>,
    pub data_dir: std::path::PathBuf,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<takt_store::StoreError> for ApiError {
    fn from(e: takt_store::StoreError) -> ApiError {
        tracing::error!(error = %e, "store error");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the event log is unavailable: {e}"),
        )
    }
}

/// Checks the bearer token against the permission a route needs.
fn authorize(state: &AppState, headers: &HeaderMap, need: Permission) -> Result<TokenInfo, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let Some(value) = headers.get("authorization") else {
        return Err(unauthorized(
            "a token is required: send `Authorization: Bearer <token>`",
        ));
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("malformed Authorization header: use `Bearer <token>`"))?;
    let tokens = state
        .tokens
        .read()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "token table poisoned"))?;
    let Some(info) = tokens.check(secret.trim()) else {
        tracing::warn!("failed authentication");
        return Err(unauthorized("unknown or revoked token"));
    };
    if !info.scope.allows(need) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token `{}` has scope `{}`, which does not allow this ({need:?} permission needed)",
                info.name, info.scope
            ),
        ));
    }
    Ok(info.clone())
}

pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/events", get(events))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/projects", get(list_projects).post(add_project))
        .route("/api/v1/projects/{name}", get(show_project))
        .route("/api/v1/projects/{name}/trigger", post(trigger))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{project}/{run}", get(show_run))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route; see /api/v1/openapi.json") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let start = Instant::now();
    let res = next.run(req).await;
    tracing::info!(%method, route = %path, status = res.status().as_u16(), ms = start.elapsed().as_secs_f64() * 1000.0, "request");
    res
}

async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    state
        .store
        .events(&EventFilter {
            limit: Some(1),
            ..Default::default()
        })
        .await?;
    Ok(Json(json!({"status": "ready"})))
}

async fn openapi(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Permission::Read)?;
    Ok(Json(openapi_document()))
}

/// The OpenAPI 3.1 document, derived from [`ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, perm) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        let mut op = json!({
            "responses": {"200": {"description": "OK"}, "400": {"description": "bad request"}, "401": {"description": "no or unknown token"}, "403": {"description": "the token's scope lacks the permission"}},
            "x-takt-permission": perm.map(|p| format!("{p:?}").to_lowercase()),
        });
        if perm.is_some() {
            op["security"] = json!([{"bearer": []}]);
        }
        let params: Vec<Value> = ["id", "name", "project", "run"]
            .iter()
            .filter(|p| path.contains(&format!("{{{p}}}")))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": if *p == "run" {"integer"} else {"string"}}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = json!(params);
        }
        if *path == "/api/v1/events" {
            op["parameters"] = json!(["kind", "project", "run", "after", "limit"].iter().map(|n| json!({"name": n, "in": "query", "required": false, "schema": {"type": if ["run", "after", "limit"].contains(n) {"integer"} else {"string"}}})).collect::<Vec<_>>());
        }
        entry[method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "takt API", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    kind: Option<String>,
    project: Option<String>,
    run: Option<u64>,
    after: Option<i64>,
    limit: Option<u32>,
}

async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Permission::Read)?;
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "`limit` must be from 1 to 1000"));
    }
    let filter = EventFilter {
        project: q.project,
        run: q.run,
        kind: q.kind,
        after: q.after,
        limit: Some(limit),
    };
    let list = state.store.events(&filter).await?;
    let next = if list.len() == limit as usize {
        list.last().and_then(|e| e.seq)
    } else {
        None
    };
    // Token hashes stay inside the server.
    let list: Vec<Value> = list
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.remove("hash");
            }
            v
        })
        .collect();
    Ok(Json(json!({"events": list, "next_after": next})))
}

async fn list_tokens(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Permission::Admin)?;
    let list = state.tokens.read().map(|t| t.list()).unwrap_or_default();
    Ok(Json(json!({"tokens": list})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    scope: String,
}

async fn create_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&state, &headers, Permission::Admin)?;
    let Json(req) = body.map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            e.status()
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, format!("bad request body: {}", e.body_text()))
    })?;
    let Some(scope) = Scope::parse(&req.scope) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown scope `{}`; use read, ci, deploy, flags or admin", req.scope),
        ));
    };
    if req.name.trim().is_empty() || req.name.len() > 100 || req.name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "`name` must be 1 to 100 printable characters",
        ));
    }
    let (id, secret) = issue_token(&state, &req.name, scope).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "name": req.name, "scope": scope, "token": secret})),
    ))
}

async fn issue_token(state: &AppState, name: &str, scope: Scope) -> Result<(String, String), ApiError> {
    let rnd = |e: getrandom::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("no randomness: {e}"));
    let secret = auth::new_secret().map_err(rnd)?;
    let id = auth::new_id().map_err(rnd)?;
    let e = Event::now(
        "",
        None,
        EventKind::TokenCreated {
            id: id.clone(),
            name: name.to_string(),
            scope: scope.to_string(),
            hash: auth::hash_secret(&secret),
        },
    );
    state.store.append(&e).await?;
    if let Ok(mut t) = state.tokens.write() {
        t.apply(&e);
    }
    Ok((id, secret))
}

async fn revoke_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let me = authorize(&state, &headers, Permission::Admin)?;
    let known = state.tokens.read().map(|t| t.contains_id(&id)).unwrap_or(false);
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no live token with id `{id}`"),
        ));
    }
    if me.id == id
        && state
            .tokens
            .read()
            .map(|t| t.list().iter().filter(|x| x.scope == Scope::Admin).count())
            .unwrap_or(0)
            == 1
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "refusing to revoke the last admin token",
        ));
    }
    let e = Event::now("", None, EventKind::TokenRevoked { id });
    state.store.append(&e).await?;
    if let Ok(mut t) = state.tokens.write() {
        t.apply(&e);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] takt_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{doing} {path}: {source}")]
    Io {
        doing: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("no randomness for a token: {0}")]
    Random(String),
}

/// Loads the token table from the event log; on an empty one, creates the first admin token
/// (`TAKT_ADMIN_TOKEN`, or a new random one written to `<data-dir>/admin-token`, mode 0600,
/// and returned so the caller can print it once).
pub async fn load_tokens(store: &Store, config: &ServerConfig) -> Result<(Tokens, Option<String>), ServerError> {
    let mut tokens = Tokens::default();
    let mut all = Vec::new();
    for kind in ["token_created", "token_revoked"] {
        all.extend(
            store
                .events(&EventFilter {
                    kind: Some(kind.into()),
                    ..Default::default()
                })
                .await?,
        );
    }
    all.sort_by_key(|e| e.seq);
    for e in &all {
        tokens.apply(e);
    }
    let mut printed = None;
    let create = |secret: &str, name: &str| {
        let id = auth::new_id().map_err(|e| ServerError::Random(e.to_string()))?;
        Ok::<Event, ServerError>(Event::now(
            "",
            None,
            EventKind::TokenCreated {
                id,
                name: name.into(),
                scope: "admin".into(),
                hash: auth::hash_secret(secret),
            },
        ))
    };
    if let Some(secret) = &config.admin_token {
        if !tokens.has_hash(&auth::hash_secret(secret)) {
            let e = create(secret, "admin (TAKT_ADMIN_TOKEN)")?;
            store.append(&e).await?;
            tokens.apply(&e);
        }
    } else if tokens.is_empty() {
        let secret = auth::new_secret().map_err(|e| ServerError::Random(e.to_string()))?;
        let path = config.data_dir.join("admin-token");
        write_private(&path, &secret).map_err(|source| ServerError::Io {
            doing: "writing",
            path: path.clone(),
            source,
        })?;
        let e = create(&secret, "admin")?;
        store.append(&e).await?;
        tokens.apply(&e);
        printed = Some(secret);
    }
    Ok((tokens, printed))
}

fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{secret}")?;
    f.sync_all()
}

fn body_error(e: JsonRejection) -> ApiError {
    let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        e.status()
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::new(status, format!("bad request body: {}", e.body_text()))
}

async fn list_projects(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Permission::Read)?;
    let list = state.projects.read().map(|p| p.list()).unwrap_or_default();
    Ok(Json(json!({"projects": list})))
}

async fn show_project(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Permission::Read)?;
    let p = state.projects.read().ok().and_then(|p| p.get(&name).cloned());
    p.map(|p| Json(json!(p)))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no project named `{name}`")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    name: String,
    repo: String,
    #[serde(default)]
    branch: Option<String>,
}

async fn add_project(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<NewProject>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&state, &headers, Permission::Admin)?;
    let Json(req) = body.map_err(body_error)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    projects::check_name(&req.name).map_err(bad)?;
    let branch = req.branch.unwrap_or_else(|| "main".into());
    projects::check_branch(&branch).map_err(bad)?;
    if req.repo.trim().is_empty() || req.repo.len() > 2000 || req.repo.chars().any(char::is_control) {
        return Err(bad("`repo` must be a repository URL or path".into()));
    }
    if state
        .projects
        .read()
        .map(|p| p.get(&req.name).is_some())
        .unwrap_or(false)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("project `{}` already exists", req.name),
        ));
    }
    let mirror = projects::mirror_path(&state.data_dir, &req.name);
    if mirror.exists() {
        let _ = std::fs::remove_dir_all(&mirror); // left by a failed add
    }
    takt_engine::git::Repo::mirror(&req.repo, &mirror)
        .await
        .map_err(|e| bad(format!("cannot mirror `{}`: {e}", req.repo)))?;
    let e = Event::now(
        &req.name,
        None,
        EventKind::ProjectAdded {
            name: req.name.clone(),
            repo: req.repo.clone(),
            branch: branch.clone(),
        },
    );
    state.store.append(&e).await?;
    if let Ok(mut p) = state.projects.write() {
        p.apply(&e);
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": req.name, "repo": req.repo, "branch": branch})),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    rev: Option<String>,
    #[serde(default)]
    force: bool,
}

async fn trigger(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<TriggerBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = authorize(&state, &headers, Permission::Ci)?;
    let req = match body {
        Ok(Json(b)) => b,
        Err(JsonRejection::MissingJsonContentType(_)) => TriggerBody::default(),
        Err(e) => return Err(body_error(e)),
    };
    let project = state
        .projects
        .read()
        .ok()
        .and_then(|p| p.get(&name).cloned())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no project named `{name}`")))?;
    let Some(runner) = &state.runner else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server does not run pipelines",
        ));
    };
    let rev = req.rev.clone().unwrap_or_else(|| project.branch.clone());
    let mirror = takt_engine::git::Repo::bare(&projects::mirror_path(&state.data_dir, &project.name));
    let bad = |e: takt_engine::EngineError| ApiError::new(StatusCode::BAD_REQUEST, e.to_string());
    mirror
        .fetch()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("cannot fetch: {e}")))?;
    let commit = mirror.resolve(&rev).await.map_err(bad)?;
    // The branch the run is for: the one named, or the default one when no rev was given.
    let branch = match &req.rev {
        None => Some(project.branch.clone()),
        Some(r) => mirror.ref_of(r).await.0,
    };
    if !req.force {
        let seen = state
            .store
            .events(&EventFilter {
                project: Some(project.name.clone()),
                kind: Some("run_queued".into()),
                ..Default::default()
            })
            .await?;
        let earlier = seen.iter().find(
            |e| matches!(&e.kind, EventKind::RunQueued { commit: c, branch: b, .. } if *c == commit && *b == branch),
        );
        if let Some(e) = earlier {
            return Ok((
                StatusCode::OK,
                Json(json!({"queued": false, "duplicate": true, "run": e.run, "commit": commit})),
            ));
        }
    }
    let q = projects::QueuedRun {
        project,
        commit: commit.clone(),
        branch,
        token: who.name.clone(),
    };
    match runner.enqueue(q, req.force) {
        Ok(true) => Ok((StatusCode::ACCEPTED, Json(json!({"queued": true, "commit": commit})))),
        Ok(false) => Ok((
            StatusCode::OK,
            Json(json!({"queued": false, "duplicate": true, "commit": commit})),
        )),
        Err(m) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m)),
    }
}

/// One run, folded from its events.
fn fold_runs(events: &[Event]) -> Vec<Value> {
    let mut runs: BTreeMap<(String, u64), Value> = BTreeMap::new();
    for e in events {
        let Some(n) = e.run else { continue };
        let key = (e.project.clone(), n);
        let at = takt_model::timefmt::rfc3339(e.at);
        match &e.kind {
            EventKind::RunQueued {
                commit,
                branch,
                tag,
                trigger,
                ..
            } => {
                runs.insert(key, json!({"project": e.project, "run": n, "commit": commit, "branch": branch, "tag": tag, "trigger": trigger, "status": "running", "queued_at": at, "jobs": []}));
            }
            EventKind::RunFinished {
                status,
                duration_ms,
                reason,
            } => {
                if let Some(r) = runs.get_mut(&key) {
                    if reason.is_some() {
                        r["reason"] = json!(reason);
                    }
                    r["status"] = json!(status);
                    r["finished_at"] = json!(at);
                    r["duration_ms"] = json!(duration_ms);
                }
            }
            EventKind::JobFinished {
                job,
                status,
                exit_code,
                duration_ms,
                attempt,
                flaky,
                ..
            } => {
                if let Some(r) = runs.get_mut(&key).and_then(|r| r["jobs"].as_array_mut()) {
                    r.retain(|j| j["name"] != json!(job));
                    r.push(json!({"name": job, "status": status, "exit_code": exit_code, "duration_ms": duration_ms, "attempt": attempt, "flaky": flaky}));
                }
            }
            EventKind::JobSkipped { job, status, reason } => {
                if let Some(r) = runs.get_mut(&key).and_then(|r| r["jobs"].as_array_mut()) {
                    r.push(json!({"name": job, "status": status, "reason": reason}));
                }
            }
            _ => {}
        }
    }
    runs.into_values().collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    project: Option<String>,
}

async fn list_runs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Permission::Read)?;
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad query: {}", e.body_text())))?;
    let mut events = Vec::new();
    for kind in ["run_queued", "run_finished"] {
        events.extend(
            state
                .store
                .events(&EventFilter {
                    project: q.project.clone(),
                    kind: Some(kind.into()),
                    ..Default::default()
                })
                .await?,
        );
    }
    events.sort_by_key(|e| e.seq);
    let mut runs = fold_runs(&events);
    for r in &mut runs {
        if let Some(o) = r.as_object_mut() {
            o.remove("jobs");
        }
    }
    Ok(Json(json!({"runs": runs})))
}

async fn show_run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, run)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    // Authorization first: a typed path parameter would answer 400 before it.
    authorize(&state, &headers, Permission::Read)?;
    let run: u64 = run
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("run `{run}` is not a run number")))?;
    let events = state
        .store
        .events(&EventFilter {
            project: Some(project.clone()),
            run: Some(run),
            ..Default::default()
        })
        .await?;
    fold_runs(&events)
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run #{run} of project `{project}`")))
}

/// Loads the projects from the event log.
pub async fn load_projects(store: &Store) -> Result<projects::Projects, ServerError> {
    let mut p = projects::Projects::default();
    for e in store
        .events(&EventFilter {
            kind: Some("project_added".into()),
            ..Default::default()
        })
        .await?
    {
        p.apply(&e);
    }
    Ok(p)
}
