//! Health checks over HTTP: a project's checks and their states, a heartbeat check's token,
//! and the beats themselves. The work is the monitoring service's (`takt-observe`).

use crate::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use std::sync::Arc;
use takt_api::{BeatTaken, CheckList, CheckStatus, HeartbeatToken};
use takt_observe::BeatError;
use takt_pipeline::ProbeSpec;
use takt_store::EventFilter;
use takt_views::{Checks, Projection};

/// The host the request was sent to (its `Host` header), for the URLs the answer gives.
fn request_host(headers: &HeaderMap) -> &str {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:8080")
}

/// What a heartbeat token is the tag of (with the project and the check).
const HEARTBEAT: &str = "heartbeat";

impl From<BeatError> for ApiError {
    fn from(e: BeatError) -> ApiError {
        let status = match &e {
            BeatError::NotFound { .. } => StatusCode::NOT_FOUND,
            BeatError::NotHeartbeat { .. } => StatusCode::CONFLICT,
            BeatError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

fn probe_name(p: &ProbeSpec) -> &'static str {
    match p {
        ProbeSpec::Http { .. } => "http",
        ProbeSpec::Tcp { .. } => "tcp",
        ProbeSpec::Dns { .. } => "dns",
        ProbeSpec::Command(_) => "command",
        ProbeSpec::Process { .. } => "process",
        ProbeSpec::Metric { .. } => "metric",
        ProbeSpec::Heartbeat { .. } => "heartbeat",
    }
}

async fn default_branch_checks(state: &AppState, project: &str) -> Result<Vec<takt_pipeline::HealthCheck>, ApiError> {
    let p = state.project(project)?;
    takt_ci::schedule::refresh(&state.ci, &p).await;
    Ok(state.ci.branch_config(project).unwrap_or_default().checks)
}

/// `GET /api/v1/projects/{name}/checks`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
) -> Result<Json<CheckList>, ApiError> {
    let checks = default_branch_checks(&state, &project).await?;
    let events = state
        .store
        .events(&EventFilter {
            project: Some(project.clone()),
            kinds: Checks::KINDS.to_vec(),
            ..Default::default()
        })
        .await?;
    let states = Checks::fold(&events);
    let checks = checks
        .into_iter()
        .map(|c| {
            let now = states.get(&project, &c.name);
            CheckStatus {
                probe: probe_name(&c.probe).to_string(),
                service: c.service.clone().unwrap_or_else(|| project.clone()),
                environment: c.environment.clone(),
                state: now.map(|v| v.state),
                since: now.map(|v| takt_model::timefmt::rfc3339(v.since)),
                reason: now.map(|v| v.reason.clone()),
                public: c.public,
                name: c.name,
            }
        })
        .collect();
    Ok(Json(CheckList { project, checks }))
}

/// `GET /api/v1/projects/{name}/checks/{check}/heartbeat` (admin): where to send beats, and
/// the check's own token.
pub async fn token(
    State(state): State<Arc<AppState>>,
    Path((project, check)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<HeartbeatToken>, ApiError> {
    let checks = default_branch_checks(&state, &project).await?;
    let Some(c) = checks.iter().find(|c| c.name == check) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("project `{project}` has no check `{check}` on its default branch"),
        ));
    };
    if !matches!(c.probe, ProbeSpec::Heartbeat { .. }) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("check `{check}` is probed by takt; only `heartbeat:` checks take beats"),
        ));
    }
    let host = request_host(&headers);
    Ok(Json(HeartbeatToken {
        url: format!("http://{host}/api/v1/heartbeats/{project}/{check}"),
        token: state.key.tag(HEARTBEAT, &[&project, &check]),
    }))
}

/// `POST /api/v1/heartbeats/{project}/{check}` with `Authorization: Bearer TOKEN`: public, the
/// check's own token is the proof. A wrong token is refused before anything else is said, so
/// the answer never tells which checks exist.
pub async fn beat(
    State(state): State<Arc<AppState>>,
    Path((project, check)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<BeatTaken>, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bearer "))
                .map(|_| &h[7..])
        });
    let Some(token) = token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "send the check's token as `Authorization: Bearer TOKEN` (takt check heartbeat PROJECT CHECK shows it)",
        ));
    };
    if !state.key.verify_tag(HEARTBEAT, &[&project, &check], token) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("that is not the token of heartbeat check `{check}` of `{project}`"),
        ));
    }
    observe(&state)?.beat(&project, &check).await?;
    Ok(Json(BeatTaken { project, check }))
}

/// The monitoring service, or 503.
fn observe(state: &AppState) -> Result<Arc<takt_observe::Observe>, ApiError> {
    state
        .observe
        .get()
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the monitoring service is not running"))
}

/// The page's title.
const TITLE: &str = "Service status";

/// `GET /status`: public, plain HTML.
pub async fn status_page(State(state): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let page = observe(&state)?.status().await?;
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        takt_monitor::render::html(&page, TITLE),
    ))
}

/// `GET /status.json`.
pub async fn status_json(
    State(state): State<Arc<AppState>>,
) -> Result<Json<takt_monitor::status::StatusPage>, ApiError> {
    Ok(Json(observe(&state)?.status().await?))
}

/// `GET /status/feed.xml`: the incidents as Atom.
pub async fn status_feed(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let page = observe(&state)?.status().await?;
    let host = request_host(&headers);
    Ok((
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        takt_monitor::render::atom(&page, TITLE, &format!("http://{host}")),
    ))
}
