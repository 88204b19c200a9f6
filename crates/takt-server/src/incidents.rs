//! Incidents over HTTP: list, show (with suspects), open, update, acknowledge, resolve, mark
//! the cause. The work is the CD service's (`takt_cd::incidents`); this module routes to it.

use crate::{ApiError, AppState, Caller};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use std::sync::Arc;
use takt_api::{
    CauseBody, IncidentAnswer, IncidentChange, IncidentDetail, IncidentList, IncidentsQuery, NewIncidentBody,
};
use takt_cd::incidents::Change;
use takt_model::{IncidentTrigger, NewIncident, Severity};

fn json<T: Default>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match b {
        Ok(Json(b)) => Ok(b),
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(T::default()),
        Err(e) => Err(crate::body_error(e)),
    }
}

fn id(project: &str, number: &str) -> Result<String, ApiError> {
    let id = format!("{project}#{number}");
    takt_cd::incidents::parse_id(&id)?;
    Ok(id)
}

fn by(who: &takt_api::TokenInfo) -> String {
    format!("token {}", who.id)
}

/// `GET /api/v1/incidents?project=P&all=true`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    q: Result<Query<IncidentsQuery>, QueryRejection>,
) -> Result<Json<IncidentList>, ApiError> {
    let q = crate::query(q)?;
    let view = state.cd.incidents(q.project.as_deref()).await?;
    let mut incidents: Vec<_> = view.incidents.into_values().filter(|i| q.all || i.is_open()).collect();
    incidents.sort_by(|a, b| b.opened_at.cmp(&a.opened_at).then(b.id.cmp(&a.id)));
    Ok(Json(IncidentList { incidents }))
}

/// `GET /api/v1/projects/{name}/incidents/{number}`.
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path((project, number)): Path<(String, String)>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let incident = state.cd.incident(&id(&project, &number)?).await?;
    let suspects = state.cd.suspects(&incident).await?;
    let flag_changes = state.cd.flag_suspects(&incident).await?;
    Ok(Json(IncidentDetail {
        incident,
        suspects,
        flag_changes,
    }))
}

/// `GET /api/v1/projects/{name}/incidents/{number}/postmortem`.
pub async fn postmortem(
    State(state): State<Arc<AppState>>,
    Path((project, number)): Path<(String, String)>,
) -> Result<Json<takt_api::PostmortemDraft>, ApiError> {
    let postmortem = state.cd.postmortem(&id(&project, &number)?).await?;
    let markdown = takt_monitor::postmortem::markdown(&postmortem);
    Ok(Json(takt_api::PostmortemDraft { postmortem, markdown }))
}

/// `POST /api/v1/projects/{name}/incidents {"environment", "reason", "severity"?, "services"?}`.
pub async fn open(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(project): Path<String>,
    b: Result<Json<NewIncidentBody>, JsonRejection>,
) -> Result<(StatusCode, Json<IncidentAnswer>), ApiError> {
    let b = b.map_err(crate::body_error)?.0;
    state.project(&project)?;
    let missing = |what: &str| ApiError::new(StatusCode::BAD_REQUEST, format!("`{what}` must not be empty"));
    if b.environment.trim().is_empty() {
        return Err(missing("environment"));
    }
    if b.reason.trim().is_empty() {
        return Err(missing("reason"));
    }
    let new = NewIncident {
        environment: b.environment,
        reason: b.reason,
        severity: b.severity.unwrap_or(Severity::Major),
        services: b.services,
        impact_started_at: None,
        trigger: IncidentTrigger::Person,
        checks: Vec::new(),
        by: Some(by(&who)),
    };
    let id = state.cd.open_incident(&project, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(IncidentAnswer {
            id,
            status: takt_model::IncidentStatus::Investigating,
        }),
    ))
}

async fn change(
    state: &AppState,
    who: &takt_api::TokenInfo,
    id: String,
    c: Change,
) -> Result<Json<IncidentAnswer>, ApiError> {
    let status = state.cd.change_incident(&id, c, &by(who)).await?;
    Ok(Json(IncidentAnswer { id, status }))
}

/// `POST .../incidents/{number}/update {"status"?, "note"?}`.
pub async fn update(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, number)): Path<(String, String)>,
    b: Result<Json<IncidentChange>, JsonRejection>,
) -> Result<Json<IncidentAnswer>, ApiError> {
    let b = json(b)?;
    let c = Change::Update {
        status: b.status,
        note: b.note,
    };
    change(&state, &who, id(&project, &number)?, c).await
}

/// `POST .../incidents/{number}/ack`.
pub async fn ack(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, number)): Path<(String, String)>,
) -> Result<Json<IncidentAnswer>, ApiError> {
    change(&state, &who, id(&project, &number)?, Change::Acknowledge).await
}

/// `POST .../incidents/{number}/resolve {"note"?}`.
pub async fn resolve(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, number)): Path<(String, String)>,
    b: Result<Json<IncidentChange>, JsonRejection>,
) -> Result<Json<IncidentAnswer>, ApiError> {
    let b = json(b)?;
    change(&state, &who, id(&project, &number)?, Change::Resolve { note: b.note }).await
}

/// `POST .../incidents/{number}/cause {"deploy": "PROJECT/ENV#N" | null}`.
pub async fn cause(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, number)): Path<(String, String)>,
    b: Result<Json<CauseBody>, JsonRejection>,
) -> Result<Json<IncidentAnswer>, ApiError> {
    let b = json(b)?;
    change(&state, &who, id(&project, &number)?, Change::Cause { deploy: b.deploy }).await
}
