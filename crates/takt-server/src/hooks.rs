//! Push webhooks over HTTP: the route, its answers and its events. What each forge sends
//! (signatures, event names, delivery ids, the push payload) is the CI service's
//! (`takt_ci::forge`); polling is too (`takt_ci::poll`).
//!
//! Unknown project → 404; missing or wrong signature → 401; ping → 200; a delivery id seen
//! before → 200 `duplicate` (and one commit gets one run whatever reports it).

use crate::runs::submitted_response;
use crate::{ApiError, AppState};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use takt_ci::forge::{Forge, Kind, MAX_DELIVERY, Signature, WEBHOOK_SECRET};
pub use takt_ci::forge::{Push, parse_push};
use takt_ci::trigger::report;
use takt_model::WebhookOutcome;
use takt_model::{Event, EventKind, Trigger};

pub async fn webhook(
    State(state): State<Arc<AppState>>,
    Path((provider, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(forge) = Forge::parse(&provider) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown webhook provider `{provider}`; use github, gitea or gitlab"),
        ));
    };
    let provider = forge.name();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let project = state.project(&name)?;
    let unauthorized = |m: String| {
        state.metrics.failed_auth(&format!("webhook_{provider}"));
        state.metrics.webhook(provider, "unauthorized");
        ApiError::new(StatusCode::UNAUTHORIZED, m)
    };
    let Some(secret) = state.open_secret(&project.name, WEBHOOK_SECRET) else {
        return Err(unauthorized(format!(
            "project `{name}` has no webhook secret: set one with `takt secret set {name} {WEBHOOK_SECRET}`"
        )));
    };
    match forge.verify(header, &secret, &body) {
        Signature::Missing => return Err(unauthorized(format!("the {provider} webhook carries no signature"))),
        Signature::Mismatch => {
            return Err(unauthorized(format!(
                "the {provider} webhook's signature does not match the project's {WEBHOOK_SECRET}"
            )));
        }
        Signature::Valid => {}
    }
    let event = forge.event(header).to_string();
    let delivery = forge.delivery(header, &body);
    if delivery.len() > MAX_DELIVERY {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("delivery id over {MAX_DELIVERY} bytes"),
        ));
    }
    let queue = state.queue()?;
    let record = |git_ref: Option<String>, commit: Option<String>, outcome: WebhookOutcome| {
        state.metrics.webhook(provider, outcome.into());
        Event::now(
            &name,
            None,
            EventKind::WebhookReceived {
                provider: provider.to_string(),
                delivery: delivery.clone(),
                event: event.clone(),
                git_ref,
                commit,
                outcome,
            },
        )
    };
    let kind = forge.kind(&event);
    if kind == Kind::Ping {
        state.record(record(None, None, WebhookOutcome::Ping)).await?;
        return Ok((StatusCode::OK, Json(json!({"pong": true}))));
    }
    if kind != Kind::Push {
        state.record(record(None, None, WebhookOutcome::Ignored)).await?;
        return Ok((
            StatusCode::OK,
            Json(json!({"ignored": true, "reason": format!("`{event}` events do not start runs")})),
        ));
    }
    if queue.delivery_seen(provider, &delivery) {
        state.record(record(None, None, WebhookOutcome::Duplicate)).await?;
        return Ok((
            StatusCode::OK,
            Json(json!({"queued": false, "duplicate": true, "delivery": delivery})),
        ));
    }
    let push = parse_push(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let (git_ref, after) = (push.git_ref, push.after);
    if push.deleted {
        queue.remember_delivery(provider, &delivery);
        state
            .record(record(Some(git_ref), None, WebhookOutcome::Ignored))
            .await?;
        return Ok((
            StatusCode::OK,
            Json(json!({"ignored": true, "reason": "a deleted ref has nothing to build"})),
        ));
    }
    let trigger = Trigger::Webhook {
        provider: provider.to_string(),
        delivery: delivery.clone(),
    };
    let (submitted, commit) = report(&state.ci, &name, Some(&after), Some(&git_ref), trigger, false).await?;
    queue.remember_delivery(provider, &delivery);
    let outcome = match submitted {
        crate::queue::Submitted::Queued(_) => WebhookOutcome::Queued,
        crate::queue::Submitted::Duplicate(_) => WebhookOutcome::Duplicate,
    };
    state
        .record(record(Some(git_ref), Some(commit.clone()), outcome))
        .await?;
    let (status, Json(t)) = submitted_response(submitted, &commit);
    Ok((status, Json(json!(t))))
}
