//! Feature flags over the API (docs/flags.md): list them with what is in force where, change
//! them at run time, read their history. The flags service is takt-ci's; this module routes.

use crate::{ApiError, AppState, Caller};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use std::collections::BTreeMap;
use std::sync::Arc;
use takt_api::{FlagChangeAnswer, FlagChangeEntry, FlagChangeRequest, FlagHistory, FlagInForce, FlagInfo, FlagList};
use takt_ci::flags::FlagError;
use takt_flags::Change;
use takt_model::{EventKind, timefmt};

/// Days a flag stays at one variant for everyone, unchanged, before it is stale.
pub const STALE_DAYS: u32 = 30;

impl From<FlagError> for ApiError {
    fn from(e: FlagError) -> ApiError {
        match e {
            FlagError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            FlagError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            FlagError::Store(s) => s.into(),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Days after which a flag at one variant for everyone is stale.
    #[serde(default)]
    stale_days: Option<u32>,
}

/// `GET /api/v1/projects/{name}/flags` (read scope; a token limited to environments sees only
/// theirs).
pub async fn list(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(project): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<FlagList>, ApiError> {
    let q = crate::query(q)?;
    let p = state.project(&project)?;
    takt_ci::schedule::refresh(&state.ci, &p).await;
    let stale_days = q.stale_days.unwrap_or(STALE_DAYS);
    let cfg = state.ci.branch_config(&project).unwrap_or_default();
    let Some(flags) = cfg.flags else {
        return Ok(Json(FlagList {
            commit: cfg.commit,
            stale_days,
            flags: Vec::new(),
        }));
    };
    // A token limited to environments sees only theirs.
    let limits = &who.limits.environments;
    let mut views = takt_ci::flags::views(&state.ci, &project).await?;
    views.retain(|((env, _), _)| limits.is_empty() || limits.contains(env));
    let now = takt_model::OffsetDateTime::now_utc();
    let list = flags
        .base
        .flags()
        .map(|f| {
            let mut environments = BTreeMap::new();
            let mut uniform = true;
            let mut last = None;
            for ((env, key), v) in &views {
                if key != &f.key {
                    continue;
                }
                let Some((setting, source)) = v.in_force() else {
                    continue;
                };
                uniform &= takt_flags::uniform(setting);
                last = last.max(Some(v.changed_at));
                environments.insert(
                    env.clone(),
                    FlagInForce {
                        setting: setting.clone(),
                        source,
                        by: v.runtime.as_ref().map(|r| r.by.clone()),
                        changed_at: timefmt::rfc3339(v.changed_at),
                    },
                );
            }
            let stale = uniform && last.is_some_and(|t| now - t >= time::Duration::days(i64::from(stale_days)));
            FlagInfo {
                key: f.key.clone(),
                kind: f.kind.as_str().to_string(),
                variants: f.variants.keys().cloned().collect(),
                file: f.setting(),
                environments,
                stale,
            }
        })
        .collect();
    Ok(Json(FlagList {
        commit: cfg.commit,
        stale_days,
        flags: list,
    }))
}

/// `POST /api/v1/environments/{project}/{env}/flags/{key}` (deploy scope).
pub async fn change(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, env, key)): Path<(String, String, String)>,
    body: Result<Json<FlagChangeRequest>, JsonRejection>,
) -> Result<Json<FlagChangeAnswer>, ApiError> {
    let Json(b) = body.map_err(crate::body_error)?;
    let ask = match (b.variant, b.rollout, b.state) {
        (Some(v), None, None) => Change::Variant(v),
        (None, Some(n), None) => Change::Rollout(n),
        (None, None, Some(s)) => Change::State(s),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "give exactly one of `variant`, `rollout` and `state`",
            ));
        }
    };
    // The default branch as it is now: its `protected:` list decides who may change flags.
    let p = state.project(&project)?;
    takt_ci::schedule::refresh(&state.ci, &p).await;
    let Some(cfg) = state.ci.branch_config(&project) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("`{project}`'s default branch has not been read yet (no takt.yml?)"),
        ));
    };
    if let Some(e) = cfg.environments.iter().find(|e| e.name == env) {
        crate::environments::guard(e, &who, "change flags")?;
    }
    let c = takt_ci::flags::change(&state.ci, &project, &env, &key, &ask, b.replace_targeting, &who.name).await?;
    Ok(Json(FlagChangeAnswer {
        changed: c.seq.is_some(),
        seq: c.seq,
        before: c.before,
        after: c.after,
    }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    flag: Option<String>,
}

/// `GET /api/v1/projects/{name}/flags/history` (read scope). A token limited to environments
/// sees their changes only.
pub async fn history(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(project): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<FlagHistory>, ApiError> {
    let q = crate::query(q)?;
    state.project(&project)?;
    let events = state
        .store
        .events(&takt_store::EventFilter {
            project: Some(project),
            kinds: vec!["flag_changed"],
            ..Default::default()
        })
        .await?;
    let envs = &who.limits.environments;
    let changes = events
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::FlagChanged {
                environment,
                flag,
                source,
                by,
                commit,
                before,
                after,
            } => Some(FlagChangeEntry {
                seq: e.seq.unwrap_or_default(),
                at: timefmt::rfc3339(e.at),
                environment,
                flag,
                source,
                by,
                commit,
                before,
                after,
            }),
            _ => None,
        })
        .filter(|c| envs.is_empty() || envs.contains(&c.environment))
        .filter(|c| q.env.as_ref().is_none_or(|e| *e == c.environment))
        .filter(|c| q.flag.as_ref().is_none_or(|f| *f == c.flag))
        .collect();
    Ok(Json(FlagHistory { changes }))
}
