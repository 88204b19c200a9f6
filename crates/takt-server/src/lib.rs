//! `takt serve`: the HTTP JSON API over the event log, with scoped tokens.
//!
//! Routes are listed once in [`ROUTES`] (method, path, permission); the OpenAPI document and
//! the authorization tests are derived from that table, so a route cannot be added without a
//! permission. Every route but `/healthz` and `/readyz` needs a token: none or an unknown one is
//! 401, a scope without the route's permission is 403.

pub mod auth;
pub mod config;

use auth::{Permission, Scope, TokenInfo, Tokens};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
pub use config::{Overrides, ServerConfig};
use serde::Deserialize;
use serde_json::{Value, json};
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
];

pub struct AppState {
    pub store: Store,
    pub tokens: RwLock<Tokens>,
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
        if path.contains("{id}") {
            op["parameters"] = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
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
