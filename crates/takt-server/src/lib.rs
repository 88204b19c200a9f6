//! `takt serve`: the HTTP JSON API over the event log, with scoped tokens.
//!
//! Routes are listed once, in the API contract's route table ([`takt_api::ROUTES`]: method,
//! path, permission, types); the router, its permission layers, the OpenAPI document and the
//! authorization tests are derived from it, so a route cannot be added without a permission.
//! Every route the table marks public aside, a request needs a token: none or an unknown one is
//! 401, a scope without the route's permission is 403.

pub mod artifacts;
pub mod auth;
pub mod checks;
pub mod config;
pub mod drill_schedule;
pub mod environments;
pub mod flags;
pub mod flow;
pub mod hooks;
pub mod incidents;
pub mod isolation;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod ofrep;
pub mod project_routes;
pub mod system;
pub mod system_metrics;
pub mod tokens;
pub use takt_ci::projects;
pub use takt_ci::queue;
pub mod runs;
pub use takt_ci::schedule;
pub use takt_ci::secrets;

use auth::Tokens;
pub use auth::{Caller, bearer};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
pub use config::{Overrides, ServerConfig};
use parking_lot::RwLock;
pub use project_routes::load_projects;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use takt_api::{Method, Op};
use takt_model::Event;
use takt_store::{EventFilter, Store};
use takt_views::Projection;
pub use tokens::load_tokens;

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
    /// The flow metrics' view, current with the log.
    pub flow: Arc<flow::FlowIndex>,
    /// Largest artifact accepted by a push.
    pub max_artifact_bytes: u64,
    /// Where people and forges reach the server (links in commit statuses).
    pub public_url: String,
    /// When each token's use was last recorded.
    pub token_uses: parking_lot::Mutex<std::collections::HashMap<String, Instant>>,
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
    pub adding_projects: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// The monitoring service, once started (it takes heartbeats).
    pub observe: std::sync::OnceLock<Arc<takt_observe::Observe>>,
    /// OFREP's per-token rate limit, when one is configured.
    pub ofrep_limit: Option<ofrep::RateLimit>,
    /// The id of each token revoked (OFREP's open event streams end on their token's).
    pub revoked: tokio::sync::broadcast::Sender<String>,
}

impl AppState {
    pub(crate) fn project(&self, name: &str) -> Result<projects::Project, ApiError> {
        self.projects
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no project named `{name}`")))
    }

    /// A project secret's value, decrypted (`None`: no such project or secret).
    pub(crate) fn open_secret(&self, project: &str, name: &str) -> Option<Vec<u8>> {
        let sealed = self.projects.read().get(project)?.sealed.get(name)?.clone();
        self.key.open(project, name, &sealed.nonce, &sealed.ciphertext).ok()
    }

    pub(crate) fn queue(&self) -> Result<&Arc<queue::Queue>, ApiError> {
        self.queue
            .as_ref()
            .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "this server does not run pipelines"))
    }

    /// Appends an event (the projects view is a store observer: it sees it inside the append).
    pub(crate) async fn record(&self, e: Event) -> Result<(), ApiError> {
        self.store.append(&e).await?;
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
        (self.status, Json(takt_api::ErrorBody { error: self.message })).into_response()
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

/// The handler of each operation of the route table.
fn handler(op: Op, m: MethodFilter) -> MethodRouter<Arc<AppState>> {
    match op {
        Op::Healthz => on(m, || async { Json(takt_api::Health { status: "ok".into() }) }),
        Op::Readyz => on(m, system::readyz),
        Op::Metrics => on(m, system::metrics_text),
        Op::Openapi => on(m, system::openapi),
        Op::Events => on(m, system::events),
        Op::Whoami => on(m, tokens::whoami),
        Op::ListTokens => on(m, tokens::list_tokens),
        Op::CreateToken => on(m, tokens::create_token),
        Op::RevokeToken => on(m, tokens::revoke_token),
        Op::ListProjects => on(m, project_routes::list_projects),
        Op::AddProject => on(m, project_routes::add_project),
        Op::ShowProject => on(m, project_routes::show_project),
        Op::ProjectSettings => on(m, project_routes::project_settings),
        Op::Trigger => on(m, runs::trigger),
        Op::ListSecrets => on(m, project_routes::list_secrets),
        Op::SetSecret => on(m, project_routes::set_secret),
        Op::RemoveSecret => on(m, project_routes::remove_secret),
        Op::ListRuns => on(m, runs::list_runs),
        Op::ShowRun => on(m, runs::show_run),
        Op::CancelRun => on(m, runs::cancel),
        Op::RetryRun => on(m, runs::retry),
        Op::PlayJob => on(m, runs::play),
        Op::OfrepEvaluate => on(m, ofrep::evaluate),
        Op::OfrepBulk => on(m, ofrep::bulk),
        Op::OfrepEvents => on(m, ofrep::events),
        Op::FlagDocument => on(m, ofrep::document),
        Op::ListFlags => on(m, flags::list),
        Op::ChangeFlag => on(m, flags::change),
        Op::FlagHistory => on(m, flags::history),
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
        Op::StartDrill => on(m, environments::drill),
        Op::ListDrills => on(m, environments::drills),
        Op::ShowDrill => on(m, environments::show_drill),
        Op::Resume => on(m, environments::resume),
        Op::Approve => on(m, environments::approve),
        Op::StopEnvironment => on(m, environments::stop),
        Op::ListIncidents => on(m, incidents::list),
        Op::OpenIncident => on(m, incidents::open),
        Op::ShowIncident => on(m, incidents::show),
        Op::Postmortem => on(m, incidents::postmortem),
        Op::UpdateIncident => on(m, incidents::update),
        Op::AckIncident => on(m, incidents::ack),
        Op::ResolveIncident => on(m, incidents::resolve),
        Op::MarkCause => on(m, incidents::cause),
        Op::ListChecks => on(m, checks::list),
        Op::FlowMetrics => on(m, flow::report),
        Op::FlakyTests => on(m, flow::flaky),
        Op::ImportHistory => on(m, flow::import),
        Op::HeartbeatToken => on(m, checks::token),
        Op::Heartbeat => on(m, checks::beat),
        Op::StatusPage => on(m, checks::status_page),
        Op::Badge => on(m, runs::badge),
        Op::StatusJson => on(m, checks::status_json),
        Op::StatusFeed => on(m, checks::status_feed),
    }
}

/// The router, built from the route table ([`takt_api::ROUTES`]): each route gets its handler
/// and, unless public, the permission layer the table names.
/// Answers `app`'s requests on `listener` until `shutdown` completes. Here rather than in the
/// binary: the HTTP connection code is compiled where it is called, and this crate is
/// optimised more than the binary's (Cargo.toml).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Answers go out at once, not held back for the next one (Nagle's algorithm).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

pub fn router(state: Arc<AppState>, max_body_bytes: usize, cors_origins: &[String]) -> Router {
    let mut router = Router::new();
    // Browser clients of OFREP, from the configured origins only (preflights answered here).
    let origins: Vec<axum::http::HeaderValue> = cors_origins.iter().filter_map(|o| o.parse().ok()).collect();
    let cors = (!origins.is_empty()).then(|| {
        use axum::http::{HeaderName, Method as M, header};
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([M::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                HeaderName::from_static("x-api-key"),
            ])
            .expose_headers([header::ETAG])
    });
    for r in takt_api::ROUTES {
        let filter = match r.method {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Put => MethodFilter::PUT,
            Method::Delete => MethodFilter::DELETE,
        };
        let mut route = handler(r.op, filter);
        if let Some(need) = r.permission {
            route = route.route_layer(axum::middleware::from_fn_with_state(
                (state.clone(), need, r.path),
                auth::require,
            ));
        }
        if let Some(c) = cors
            .as_ref()
            .filter(|_| r.permission == Some(takt_api::Permission::Flags))
        {
            route = route.layer(c.clone());
        }
        router = router.route(r.path, route);
    }
    let secure = state.public_url.starts_with("https://");
    let api = router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route; see /api/v1/openapi.json") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), system::log_request))
        .with_state(state);
    // The web UI (takt-web) calls the API in-process, through this same router.
    takt_web::router(api.clone(), secure).merge(api)
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

/// Every event a view folds.
pub(crate) fn kinds_of<P: Projection>() -> EventFilter {
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
