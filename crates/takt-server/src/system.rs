//! The server's own routes: health, readiness, Prometheus metrics, this API's OpenAPI
//! document, the event log's pages, and the request log every route goes through.

use crate::{ApiError, AppState, page_limit, query};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;
use takt_api::EventsQuery;
use takt_store::EventFilter;

pub(crate) async fn metrics_text(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
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
    crate::flow::gauges(&state);
    let mut text = state.metrics.render();
    text.push_str(&crate::system_metrics::render(&state.data_dir));
    text.push_str(&components(&state).await);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

/// The components of every process/nginx environment that runs something: its instances
/// alive and with their ports open, and their restarts, from its supervisor.
async fn components(state: &AppState) -> String {
    use std::fmt::Write;
    let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let mut rows = Vec::new();
    let projects: Vec<String> = state.projects.read().list().iter().map(|p| p.name.clone()).collect();
    for p in projects {
        let envs = state.ci.branch_config(&p).unwrap_or_default().environments;
        for e in envs.iter().filter(|e| e.driver != takt_pipeline::Driver::Command) {
            if state.cd.view(&p, &e.name).running.is_none() {
                continue;
            }
            if let Some(list) = crate::observe::instances(state, &p, &e.name).await {
                rows.push((
                    format!("project=\"{}\",environment=\"{}\"", esc(&p), esc(&e.name)),
                    list,
                ));
            }
        }
    }
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    out.push_str("# HELP takt_instances Instances of the version taking traffic, by state (from the supervisor)\n# TYPE takt_instances gauge\n");
    for (labels, list) in &rows {
        let count = |f: fn(&takt_observe::Instance) -> bool| list.iter().filter(|i| f(i)).count();
        let _ = writeln!(out, "takt_instances{{{labels},state=\"running\"}} {}", list.len());
        let _ = writeln!(out, "takt_instances{{{labels},state=\"alive\"}} {}", count(|i| i.alive));
        let _ = writeln!(
            out,
            "takt_instances{{{labels},state=\"port_open\"}} {}",
            count(|i| i.open)
        );
    }
    out.push_str("# HELP takt_instance_restarts Restarts of those instances since their supervisor started them\n# TYPE takt_instance_restarts gauge\n");
    for (labels, list) in &rows {
        let _ = writeln!(
            out,
            "takt_instance_restarts{{{labels}}} {}",
            list.iter().map(|i| i.restarts).sum::<u32>()
        );
    }
    out
}

pub(crate) async fn log_request(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
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
    // Every request is counted in /metrics; its log line is a write, which costs as much as the
    // rest of a small request: logged at debug (`TAKT_LOG=debug`), server errors at warn.
    let (status, ms) = (res.status().as_u16(), start.elapsed().as_secs_f64() * 1000.0);
    if res.status().is_server_error() {
        tracing::warn!(%method, route = %path, status, ms, "request");
    } else {
        tracing::debug!(%method, route = %path, status, ms, "request");
    }
    res
}

pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
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

pub(crate) async fn openapi() -> Json<takt_api::openapi::OpenApi> {
    Json(takt_api::openapi::document(env!("CARGO_PKG_VERSION")))
}

pub(crate) async fn events(
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
    if q.wait.is_some_and(|w| w > MAX_WAIT_SECS) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`wait` is at most {MAX_WAIT_SECS} seconds"),
        ));
    }
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
    // Listening before the first read: an event appended between the read and the wait wakes it.
    let mut live = state.store.follow();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(u64::from(q.wait.unwrap_or(0)));
    let (list, head) = loop {
        let head = state.store.head().await?;
        let list = state.store.events(&filter).await?;
        if !list.is_empty() || tokio::time::Instant::now() >= deadline {
            break (list, head);
        }
        // Wakes on the next event this query would return (or a lag: then it reads again).
        loop {
            match tokio::time::timeout_at(deadline, live.recv()).await {
                Err(_) => break,
                Ok(Ok(e)) if !wanted(&filter, &e) => continue,
                Ok(Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => break,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    tokio::time::sleep_until(deadline).await;
                    break;
                }
            }
        }
    };
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
        head,
    }))
}

/// The longest long poll on `/api/v1/events` (below the CLI's 30 s request timeout).
const MAX_WAIT_SECS: u32 = 25;

/// Whether a query for `f` could return `e` (its time bounds aside: the read decides).
fn wanted(f: &EventFilter, e: &takt_model::Event) -> bool {
    f.project.as_ref().is_none_or(|p| *p == e.project)
        && f.run.is_none_or(|r| e.run == Some(r))
        && f.kind.as_ref().is_none_or(|k| k == e.kind.name())
}
