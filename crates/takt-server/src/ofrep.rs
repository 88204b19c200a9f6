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
    if !takt_ci::schedule::is_current(&state.ci, project) {
        let p = state.project(project).map_err(|e| {
            (
                e.status,
                Json(json!({"errorCode": "GENERAL", "errorDetails": e.message})),
            )
        })?;
        // Boxed: the re-read's future is large, and an evaluation's should not carry it.
        Box::pin(takt_ci::schedule::refresh(&state.ci, &p)).await;
    }
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
    // Web clients listen for changes instead of polling (OFREP's `eventStreams`); the URL is
    // relative to the client's OFREP base, and carries a stream key, not the token.
    let streams = json!([{
        "type": "sse",
        "endpoint": {"requestUri": format!("{EVENTS_PATH}?key={}", stream_key(&state, &who.id))},
        "inactivityDelaySec": INACTIVITY_SECS,
    }]);
    let text = json!({"flags": list, "eventStreams": streams}).to_string();
    tagged(&headers, text)
}

/// `text` as JSON with an `ETag` over it; 304 when `If-None-Match` names that tag already.
fn tagged(headers: &HeaderMap, text: String) -> Response {
    use sha2::Digest;
    let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(text.as_bytes())[..16]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// `GET /api/v1/flags/document`: the flagd document the token's environment sees (run-time
/// changes written in), for in-process clients; `{"flags": {}}` while the project defines none.
pub async fn document(State(state): State<Arc<AppState>>, Caller(who): Caller, headers: HeaderMap) -> Response {
    let (flags, env) = match flags_of(&state, &who).await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let text = match &flags {
        Some(f) => f.document(&env).to_string(),
        None => json!({"flags": {}}).to_string(),
    };
    tagged(&headers, text)
}

/// OFREP evaluations a second per token (governor's GCRA, keyed by token id).
pub struct RateLimit(
    governor::RateLimiter<String, governor::state::keyed::HashMapStateStore<String>, governor::clock::DefaultClock>,
);

impl RateLimit {
    /// `per_second` evaluations a second per token, in bursts of as many; `None` for 0 (off).
    pub fn new(per_second: u32) -> Option<RateLimit> {
        let n = std::num::NonZeroU32::new(per_second)?;
        Some(RateLimit(governor::RateLimiter::hashmap(governor::Quota::per_second(
            n,
        ))))
    }

    /// `Err(seconds)` to wait when token `id` is over its rate (OFREP's `Retry-After`).
    pub(crate) fn check(&self, id: &str) -> Result<(), u64> {
        use governor::clock::Clock;
        self.0.check_key(&id.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// 429 with `Retry-After` (seconds, at least 1) and no body.
pub(crate) fn too_many(wait_secs: u64) -> Response {
    let mut r = StatusCode::TOO_MANY_REQUESTS.into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait_secs.max(1)));
    r
}

/// Where OFREP's event stream is served.
pub const EVENTS_PATH: &str = "/ofrep/v1/events";

/// Seconds a client in the background keeps its event stream open (OFREP's default).
const INACTIVITY_SECS: u64 = 120;

/// The key in an event-stream URL: the token's id and a tag only the server can make, so the
/// URL (which EventSource cannot keep out of proxies' logs) never carries the token itself,
/// and opens the stream only, for as long as the token lives.
fn stream_key(state: &AppState, token_id: &str) -> String {
    format!("{token_id}.{}", state.key.tag("ofrep-events", &[token_id]))
}

/// The token a stream key was made for: 401 (no body) for a key the server did not make or
/// whose token was revoked.
pub(crate) fn authorize_stream(
    state: &AppState,
    key: &str,
    need: takt_api::auth::Permission,
) -> Result<crate::auth::TokenInfo, ApiError> {
    let unknown = || {
        state.metrics.failed_auth("token");
        ApiError::new(StatusCode::UNAUTHORIZED, "unknown stream key")
    };
    let (id, tag) = key.split_once('.').ok_or_else(unknown)?;
    if !state.key.verify_tag("ofrep-events", &[id], tag) {
        return Err(unknown());
    }
    let info = state.tokens.read().by_id(id).cloned().ok_or_else(unknown)?;
    if !info.scope.allows(need) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this token cannot evaluate flags"));
    }
    crate::auth::note_use(state, &info.id);
    Ok(info)
}

/// `GET /ofrep/v1/events?key=…`: Server-Sent Events, one `refetchEvaluation` each time the
/// token's project's flags change (from the file or at run time); a listener that fell behind
/// is told to re-fetch too. It ends when the token is revoked. Woken by the flags service, never by a clock (a comment every 15 s
/// keeps proxies from closing it).
pub async fn events(State(state): State<Arc<AppState>>, Caller(who): Caller) -> Response {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    if let Err(r) = flags_of(&state, &who).await {
        return r.into_response();
    }
    let project = who.limits.projects.first().cloned().unwrap_or_default();
    let rx = state.ci.flags_live.moved.subscribe();
    // The stream ends when its token is revoked (it was checked only when it opened).
    let revoked = state.revoked.subscribe();
    let token = who.id.clone();
    let init = (rx, project, revoked, token);
    let stream = futures_util::stream::unfold(init, |(mut rx, project, mut revoked, token)| async move {
        loop {
            tokio::select! {
                r = revoked.recv() => match r {
                    Ok(id) if id != token => continue,
                    // Its token, or revocations missed (a listener that fell behind): ended, and
                    // a client with a live token reconnects.
                    _ => return None,
                },
                p = rx.recv() => match p {
                    Ok(p) if p != project => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        let at = jiff::Timestamp::now();
                        let data = json!({"type": "refetchEvaluation", "lastModified": at.as_second()});
                        let ev = SseEvent::default()
                            .id(at.as_millisecond().to_string())
                            .data(data.to_string());
                        return Some((Ok::<_, std::convert::Infallible>(ev), (rx, project, revoked, token)));
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response();
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// OFREP's 401 and 403 carry no body.
pub(crate) fn bare(e: ApiError) -> Response {
    e.status.into_response()
}
