//! `takt serve`: the HTTP JSON API over the event log, with scoped tokens.
//!
//! Routes are listed once, in the API contract's route table ([`takt_api::ROUTES`]: method,
//! path, permission, types); the router, its permission layers, the OpenAPI document and the
//! authorization tests are derived from it, so a route cannot be added without a permission.
//! Every route the table marks public aside, a request needs a token: none or an unknown one is
//! 401, a scope without the route's permission is 403.

pub mod artifacts;
pub mod auth;
pub mod config;
pub mod environments;
pub mod hooks;
pub mod isolation;
pub mod metrics;
pub mod notify;
pub use takt_ci::projects;
pub use takt_ci::queue;
pub mod runs;
pub use takt_ci::schedule;
pub use takt_ci::secrets;

use auth::{Permission, Scope, TokenInfo, Tokens};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
pub use config::{Overrides, ServerConfig};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use takt_api::{EventsQuery, Method, NewProject, NewToken, Op};
use takt_model::{Event, EventKind};
use takt_store::{EventFilter, Store};
use takt_views::Projection;

pub struct AppState {
    pub store: Store,
    pub tokens: RwLock<Tokens>,
    pub projects: Arc<RwLock<projects::Projects>>,
    /// Queues and executes runs; `None` serves the API only.
    pub queue: Option<Arc<queue::Queue>>,
    pub key: Arc<secrets::SecretKey>,
    /// The artifact repository (blobs, manifests, signing key).
    pub artifacts: Arc<artifacts::Repository>,
    pub metrics: Arc<metrics::Metrics>,
    /// Every run's summary, current with the log.
    pub runs: Arc<runs::RunIndex>,
    /// Largest artifact accepted by a push.
    pub max_artifact_bytes: u64,
    /// When each token's use was last recorded.
    pub token_uses: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// The CI service: the queue, the trigger path, each default branch's settings.
    pub ci: Arc<takt_ci::Ci>,
    pub data_dir: std::path::PathBuf,
    /// Environments: what runs where, and their controls.
    /// The CD service: environments, deployments, their controls.
    pub cd: Arc<takt_cd::Cd>,
    /// The object store that keeps a copy of every artifact, if one is configured.
    pub mirror: Option<Arc<takt_blob::objects::ObjectMirror>>,
    /// How jobs are kept away from the server (said in /readyz and the project view).
    pub isolation: isolation::JobIsolation,
    /// Held across the check and the append of the last-admin-token rule, so two revocations
    /// cannot both pass the check. (A project's name is reserved in `adding_projects`.)
    pub exclusive: tokio::sync::Mutex<()>,
    /// Names of projects being added (their clone under way).
    pub adding_projects: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// A name held in a set until dropped.
struct Reservation<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    name: String,
}

impl<'a> Reservation<'a> {
    /// Holds `name`, unless someone else does or `taken(name)` says it is taken.
    fn take(
        set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
        name: &str,
        taken: impl Fn(&str) -> bool,
    ) -> Option<Reservation<'a>> {
        let mut held = set.lock().ok()?;
        let fresh = !taken(name) && held.insert(name.to_string());
        drop(held);
        fresh.then(|| Reservation {
            set,
            name: name.to_string(),
        })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.name);
        }
    }
}

impl AppState {
    pub(crate) fn project(&self, name: &str) -> Result<projects::Project, ApiError> {
        self.projects
            .read()
            .ok()
            .and_then(|p| p.get(name).cloned())
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no project named `{name}`")))
    }

    pub(crate) fn queue(&self) -> Result<&Arc<queue::Queue>, ApiError> {
        self.queue
            .as_ref()
            .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "this server does not run pipelines"))
    }

    /// Appends an event and applies it to the projections it changes.
    pub(crate) async fn record(&self, e: Event) -> Result<(), ApiError> {
        self.store.append(&e).await?;
        if let Ok(mut p) = self.projects.write() {
            p.apply(&e);
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
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

impl From<takt_ci::trigger::TriggerError> for ApiError {
    fn from(e: takt_ci::trigger::TriggerError) -> ApiError {
        use takt_ci::trigger::TriggerError as T;
        match e {
            T::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            T::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            T::Queue(q) => runs::queue_error(q),
        }
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
pub(crate) fn authorize(state: &AppState, headers: &HeaderMap, need: Permission) -> Result<TokenInfo, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let unauthorized = |m: &str| {
        state.metrics.failed_auth("token");
        unauthorized(m)
    };
    let Some(value) = headers.get("authorization") else {
        return Err(unauthorized(
            "a token is required: send `Authorization: Bearer <token>`",
        ));
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(bearer)
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
    let info = info.clone();
    drop(tokens);
    note_use(state, &info.id);
    Ok(info)
}

/// The credentials of a `Bearer` Authorization value; the scheme is case-insensitive
/// (RFC 7235, section 2.1) and may be followed by any run of spaces.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

/// Records that a token was used, at most once a minute per token (off the request's path).
fn note_use(state: &AppState, id: &str) {
    let due = state.token_uses.lock().is_ok_and(|mut m| {
        let now = Instant::now();
        match m.get(id) {
            Some(t) if now.duration_since(*t) < std::time::Duration::from_secs(60) => false,
            _ => {
                m.insert(id.to_string(), now);
                true
            }
        }
    });
    if due {
        let e = Event::now("", None, EventKind::TokenUsed { id: id.to_string() });
        if let Ok(mut t) = state.tokens.write() {
            t.apply(&e);
        }
        let store = state.store.clone();
        tokio::spawn(async move {
            if let Err(err) = store.append(&e).await {
                tracing::warn!(error = %err, "cannot record a token's use");
            }
        });
    }
}

/// The token a request was authorized with, put there by the route's permission layer.
#[derive(Debug, Clone)]
pub struct Caller(pub TokenInfo);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this route names no permission in the route table (takt-api)",
            )
        })
    }
}

/// The permission layer of a route: 401 without a known token, 403 when its scope lacks the
/// route's permission; otherwise the handler runs with the [`Caller`].
async fn require(State((state, need)): State<(Arc<AppState>, Permission)>, mut req: Request, next: Next) -> Response {
    match authorize(&state, req.headers(), need) {
        Ok(who) => {
            req.extensions_mut().insert(Caller(who));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The handler of each operation of the route table.
fn handler(op: Op, m: MethodFilter) -> MethodRouter<Arc<AppState>> {
    match op {
        Op::Healthz => on(m, || async { Json(takt_api::Health { status: "ok".into() }) }),
        Op::Readyz => on(m, readyz),
        Op::Metrics => on(m, metrics_text),
        Op::Openapi => on(m, openapi),
        Op::Events => on(m, events),
        Op::ListTokens => on(m, list_tokens),
        Op::CreateToken => on(m, create_token),
        Op::RevokeToken => on(m, revoke_token),
        Op::ListProjects => on(m, list_projects),
        Op::AddProject => on(m, add_project),
        Op::ShowProject => on(m, show_project),
        Op::ProjectSettings => on(m, project_settings),
        Op::Trigger => on(m, runs::trigger),
        Op::ListSecrets => on(m, list_secrets),
        Op::SetSecret => on(m, set_secret),
        Op::RemoveSecret => on(m, remove_secret),
        Op::ListRuns => on(m, runs::list_runs),
        Op::ShowRun => on(m, runs::show_run),
        Op::CancelRun => on(m, runs::cancel),
        Op::RetryRun => on(m, runs::retry),
        Op::JobLog => on(m, runs::logs),
        Op::Webhook => on(m, hooks::webhook),
        Op::Keys => on(m, artifacts::keys),
        Op::ListArtifacts => on(m, artifacts::list),
        Op::ShowArtifact => on(m, artifacts::show),
        Op::PushArtifact => on(m, artifacts::push),
        Op::PushBlob => on(m, artifacts::push_blob),
        Op::Fsck => on(m, artifacts::fsck),
        Op::Gc => on(m, artifacts::gc),
        Op::DownloadArtifact => on(m, artifacts::download),
        Op::ListEnvironments => on(m, environments::list),
        Op::ShowEnvironment => on(m, environments::show),
        Op::Deploy => on(m, environments::deploy),
        Op::Promote => on(m, environments::promote),
        Op::Rollback => on(m, environments::rollback),
        Op::Halt => on(m, environments::halt),
        Op::Resume => on(m, environments::resume),
        Op::Approve => on(m, environments::approve),
    }
}

/// The router, built from the route table ([`takt_api::ROUTES`]): each route gets its handler
/// and, unless public, the permission layer the table names.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let mut router = Router::new();
    for r in takt_api::ROUTES {
        let filter = match r.method {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Put => MethodFilter::PUT,
            Method::Delete => MethodFilter::DELETE,
        };
        let mut route = handler(r.op, filter);
        if let Some(need) = r.permission {
            route = route.route_layer(axum::middleware::from_fn_with_state((state.clone(), need), require));
        }
        router = router.route(r.path, route);
    }
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route; see /api/v1/openapi.json") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state)
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    if let Some(q) = &state.queue {
        let (waiting, running) = q.snapshot();
        state.metrics.waiting.set(waiting as i64);
        state.metrics.running.set(running as i64);
    }
    if let Ok(size) = state.store.size().await {
        state.metrics.store_bytes.set(size.bytes.min(i64::MAX as u64) as i64);
        state
            .metrics
            .store_wal_bytes
            .set(size.wal_bytes.unwrap_or(0).min(i64::MAX as u64) as i64);
    }
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

async fn log_request(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        // Label by route template only: paths no route matches share one series, so
        // unauthenticated requests cannot grow /metrics.
        .unwrap_or_else(|| "unmatched".to_string());
    let start = Instant::now();
    let res = next.run(req).await;
    state.metrics.http(method.as_str(), &path, res.status().as_u16());
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
    let mut ready = state.isolation.fields();
    ready.insert("status".into(), json!("ready"));
    Ok(Json(Value::Object(ready)))
}

async fn openapi() -> Json<takt_api::openapi::OpenApi> {
    Json(takt_api::openapi::document(env!("CARGO_PKG_VERSION")))
}

async fn events(
    State(state): State<Arc<AppState>>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<takt_api::EventsPage>, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let time = |name: &str, v: &Option<String>| -> Result<Option<takt_model::OffsetDateTime>, ApiError> {
        v.as_deref()
            .map(|t| {
                takt_model::timefmt::parse_rfc3339(t).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("`{name}` must be an RFC 3339 time such as 2026-11-23T10:00:00Z, not `{t}`"),
                    )
                })
            })
            .transpose()
    };
    let filter = EventFilter {
        project: q.project,
        run: q.run,
        kind: q.kind,
        after: q.after,
        limit: Some(limit),
        since: time("since", &q.since)?,
        until: time("until", &q.until)?,
        ..Default::default()
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
                o.remove("ciphertext");
                o.remove("nonce");
            }
            v
        })
        .collect();
    Ok(Json(takt_api::EventsPage {
        events: list,
        next_after: next,
    }))
}

async fn list_tokens(State(state): State<Arc<AppState>>) -> Json<takt_api::TokenList> {
    let tokens = state.tokens.read().map(|t| t.list()).unwrap_or_default();
    Json(takt_api::TokenList { tokens })
}

async fn create_token(
    State(state): State<Arc<AppState>>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Result<(StatusCode, Json<takt_api::TokenCreated>), ApiError> {
    let Json(req) = body.map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            e.status()
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, format!("bad request body: {}", e.body_text()))
    })?;
    let scope = req.scope;
    if req.name.trim().is_empty() || req.name.len() > 100 || req.name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "`name` must be 1 to 100 printable characters",
        ));
    }
    let (id, token) = issue_token(&state, &req.name, scope).await?;
    Ok((
        StatusCode::CREATED,
        Json(takt_api::TokenCreated {
            id,
            name: req.name,
            scope,
            token,
        }),
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
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // The check and the append are one step: concurrent revocations of the last two admin
    // tokens cannot both pass it.
    let _one_at_a_time = state.exclusive.lock().await;
    let (live_me, target, admins) = state
        .tokens
        .read()
        .map(|t| {
            let list = t.list();
            let scope_of = |id: &str| list.iter().find(|x| x.id == id).map(|x| x.scope);
            (
                scope_of(&me.id).is_some(),
                scope_of(&id),
                list.iter().filter(|x| x.scope == Scope::Admin).count(),
            )
        })
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "token table poisoned"))?;
    if !live_me {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unknown or revoked token (it was revoked while this request waited)",
        ));
    }
    let Some(scope) = target else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no live token with id `{id}`"),
        ));
    };
    if scope == Scope::Admin && admins <= 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("refusing to revoke `{id}`: it is the last admin token (create another admin token first)"),
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
    let mut tokens = Tokens::fold(&store.events(&kinds_of::<Tokens>()).await?);
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
        takt_ci::write_private(&path, &secret).map_err(|source| ServerError::Io {
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

/// Every event a view folds.
fn kinds_of<P: Projection>() -> EventFilter {
    EventFilter {
        kinds: P::KINDS.to_vec(),
        ..Default::default()
    }
}

/// A query string, or 400 with the parser's reason.
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad query: {}", e.body_text())))
}

/// A page size: 1 to 1000, default 100.
pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "`limit` must be from 1 to 1000"));
    }
    Ok(limit)
}

pub(crate) fn body_error(e: JsonRejection) -> ApiError {
    let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        e.status()
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::new(status, format!("bad request body: {}", e.body_text()))
}

async fn list_projects(State(state): State<Arc<AppState>>) -> Json<takt_api::ProjectList> {
    let list = state.projects.read().map(|p| p.list()).unwrap_or_default();
    Json(takt_api::ProjectList {
        projects: list.iter().filter_map(|p| serde_json::to_value(p).ok()).collect(),
    })
}

async fn show_project(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let p = state.projects.read().ok().and_then(|p| p.get(&name).cloned());
    let mut v = p
        .map(|p| json!(p))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no project named `{name}`")))?;
    if let Value::Object(m) = &mut v {
        m.insert("job_isolation".into(), Value::Object(state.isolation.fields()));
    }
    Ok(Json(v))
}

async fn add_project(
    State(state): State<Arc<AppState>>,
    body: Result<Json<NewProject>, JsonRejection>,
) -> Result<(StatusCode, Json<takt_api::ProjectCreated>), ApiError> {
    let Json(req) = body.map_err(body_error)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    projects::check_name(&req.name).map_err(bad)?;
    let branch = req.branch.unwrap_or_else(|| "main".into());
    projects::check_branch(&branch).map_err(bad)?;
    if req.repo.trim().is_empty() || req.repo.len() > 2000 || req.repo.chars().any(char::is_control) {
        return Err(bad("`repo` must be a repository URL or path".into()));
    }
    // A name is taken only if no other project has it, nor is being added: the check and the
    // reservation are one step (under the set's lock); the clone, which may take up to
    // `git_timeout`, holds no lock.
    let exists = |name: &str| state.projects.read().map(|p| p.get(name).is_some()).unwrap_or(true);
    let Some(_reserved) = Reservation::take(&state.adding_projects, &req.name, exists) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("project `{}` already exists (or is being added)", req.name),
        ));
    };
    let mirror = projects::mirror_path(&state.data_dir, &req.name);
    {
        let m = mirror.clone();
        // Left by a failed add; file-system work off the runtime.
        let _ = tokio::task::spawn_blocking(move || {
            if m.exists() {
                let _ = std::fs::remove_dir_all(&m);
            }
        })
        .await;
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
    state.record(e).await?;
    // Its schedules and subscribers count from now on, not from the next look.
    if let Ok(p) = state.project(&req.name) {
        takt_ci::schedule::refresh(&state.ci, &p).await;
    }
    if let Some(q) = &state.queue {
        q.moved.notify_waiters(); // the scheduler looks at its schedules now
    }
    Ok((
        StatusCode::CREATED,
        Json(takt_api::ProjectCreated {
            name: req.name,
            repo: req.repo,
            branch,
        }),
    ))
}

/// Loads the projects from the event log.
pub async fn load_projects(store: &Store) -> Result<projects::Projects, ServerError> {
    Ok(projects::Projects::fold(
        &store.events(&kinds_of::<projects::Projects>()).await?,
    ))
}

async fn project_settings(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Json<takt_model::ProjectOptions>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    state.project(&name)?;
    let Json(options) = body.map_err(body_error)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    if options.concurrency == Some(0) {
        return Err(bad("`concurrency` must be at least 1".into()));
    }
    for b in options.protected.iter().flatten() {
        projects::check_branch(b).map_err(bad)?;
    }
    state
        .record(Event::now(
            &name,
            None,
            EventKind::ProjectUpdated {
                name: name.clone(),
                options,
            },
        ))
        .await?;
    Ok(Json(json!(state.project(&name)?)))
}

async fn list_secrets(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<takt_api::SecretList>, ApiError> {
    let p = state.project(&name)?;
    let secrets = p
        .sealed
        .iter()
        .map(|(n, s)| takt_api::SecretInfo {
            name: n.clone(),
            set_at: s.set_at.clone(),
        })
        .collect();
    Ok(Json(takt_api::SecretList { secrets }))
}

/// `PUT /api/v1/projects/{name}/secrets/{secret}` with the value as the raw body.
async fn set_secret(
    State(state): State<Arc<AppState>>,
    Path((name, secret)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    state.project(&name)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    secrets::check_name(&secret).map_err(bad)?;
    // A trailing newline (from `echo value |`) is not part of the value.
    let value = body.strip_suffix(b"\n").unwrap_or(&body);
    let value = value.strip_suffix(b"\r").unwrap_or(value);
    if value.len() < secrets::MIN_SECRET_LEN || value.len() > secrets::MAX_SECRET_LEN {
        return Err(bad(format!(
            "a secret value must be {} to {} bytes (shorter values cannot be masked in logs)",
            secrets::MIN_SECRET_LEN,
            secrets::MAX_SECRET_LEN
        )));
    }
    let (nonce, ciphertext) = state
        .key
        .seal(&name, &secret, value)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    state
        .record(Event::now(
            &name,
            None,
            EventKind::SecretSet {
                name: secret,
                nonce,
                ciphertext,
            },
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_secret(
    State(state): State<Arc<AppState>>,
    Path((name, secret)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if !state.project(&name)?.sealed.contains_key(&secret) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("project `{name}` has no secret `{secret}`"),
        ));
    }
    state
        .record(Event::now(&name, None, EventKind::SecretRemoved { name: secret }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
