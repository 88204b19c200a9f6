//! The OpenFeature Remote Evaluation Protocol (OFREP 0.3.0): any OpenFeature SDK's OFREP
//! provider evaluates the flags of the project and environment its `flags` token was made for
//! (docs/flags.md). Evaluation is takt-flags'; this module only routes.

use crate::{ApiError, AppState, Caller};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use takt_flags::{ErrorCode, FlagSet, Resolution};

/// An OFREP error answer: its status and `{errorCode, errorDetails}`.
type Refused = (StatusCode, Json<Value>);

/// The flags a token was made for: its one project and one environment.
async fn flags_of(
    state: &AppState,
    who: &crate::auth::TokenInfo,
) -> Result<(Option<Arc<takt_ci::schedule::ProjectFlags>>, String), Refused> {
    let (projects, envs) = (&who.limits.projects, &who.limits.environments);
    let ([project], [env]) = (projects.as_slice(), envs.as_slice()) else {
        let details = format!(
            "token `{}` is not made for one project and one environment, so it names no flags: create one with `takt token create --scope flags --project P --env E`",
            who.name
        );
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({"errorCode": "GENERAL", "errorDetails": details})),
        ));
    };
    let p = state.project(project).map_err(|e| {
        (
            e.status,
            Json(json!({"errorCode": "GENERAL", "errorDetails": e.message})),
        )
    })?;
    takt_ci::schedule::refresh(&state.ci, &p).await;
    Ok((state.ci.flags(project), env.clone()))
}

/// The request's context; 400 `INVALID_CONTEXT` / `PARSE_ERROR` as OFREP says.
fn context(key: Option<&str>, body: &Bytes) -> Result<Map<String, Value>, Refused> {
    let bad = |code: &str, details: String| {
        let mut b = json!({"errorCode": code, "errorDetails": details});
        if let Some(k) = key {
            b["key"] = json!(k);
        }
        (StatusCode::BAD_REQUEST, Json(b))
    };
    if body.is_empty() {
        return Ok(Map::new());
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad("PARSE_ERROR", format!("the body is not JSON: {e}")))?;
    match v.get("context") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(c)) => {
            if c.get("targetingKey").is_some_and(|k| !k.is_string()) {
                return Err(bad("INVALID_CONTEXT", "`targetingKey` must be a string".into()));
            }
            Ok(c.clone())
        }
        Some(_) => Err(bad("INVALID_CONTEXT", "`context` must be an object".into())),
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Counts an evaluation in `/metrics` (`takt_flag_evaluations_total`).
fn count(state: &AppState, who: &crate::auth::TokenInfo, env: &str, set: &FlagSet, r: &Resolution) {
    let project = who.limits.projects.first().map_or("", String::as_str);
    let flag = set.get(&r.key).map(|f| f.key.as_str());
    state
        .metrics
        .flag_evaluated(project, env, flag, r.variant.as_deref(), r.reason.as_str());
}

/// One evaluation as OFREP answers it: the success object, or the error object.
fn answer(set: &FlagSet, r: &Resolution) -> Value {
    match r.error {
        Some(code) => json!({"key": r.key, "errorCode": code, "errorDetails": r.message}),
        None => {
            let mut b = json!({"key": r.key, "reason": r.reason});
            if let Some(v) = &r.variant {
                b["variant"] = json!(v);
            }
            if let Some(v) = &r.value {
                b["value"] = v.clone();
            }
            b["metadata"] = set.get(&r.key).map_or(json!({}), |f| Value::Object(f.metadata.clone()));
            b
        }
    }
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub async fn evaluate(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let (flags, env) = match flags_of(&state, &who).await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let ctx = match context(Some(&key), &body) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let Some(flags) = flags else {
        let b = json!({"key": key, "errorCode": ErrorCode::FlagNotFound, "errorDetails": "the project's default branch defines no flags"});
        return (StatusCode::NOT_FOUND, Json(b)).into_response();
    };
    let set = flags.of(&env);
    let r = set.evaluate(&key, &ctx, now());
    count(&state, &who, &env, set, &r);
    let status = match r.error {
        None => StatusCode::OK,
        Some(ErrorCode::FlagNotFound) => StatusCode::NOT_FOUND,
        Some(_) => StatusCode::BAD_REQUEST,
    };
    (status, Json(answer(set, &r))).into_response()
}

/// `POST /ofrep/v1/evaluate/flags`: every flag; `ETag` over the answer, `If-None-Match` → 304.
pub async fn bulk(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (flags, env) = match flags_of(&state, &who).await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let ctx = match context(None, &body) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let ts = now();
    let list: Vec<Value> = match &flags {
        Some(f) => {
            let set = f.of(&env);
            set.flags()
                .map(|fl| {
                    let r = set.evaluate(&fl.key, &ctx, ts);
                    count(&state, &who, &env, set, &r);
                    answer(set, &r)
                })
                .collect()
        }
        None => Vec::new(),
    };
    let text = json!({"flags": list}).to_string();
    use sha2::Digest;
    let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(text.as_bytes())[..16]));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return r;
    }
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// OFREP's 401 and 403 carry no body.
pub(crate) fn bare(e: ApiError) -> Response {
    e.status.into_response()
}
