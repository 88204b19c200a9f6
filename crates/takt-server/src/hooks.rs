//! Push and merge-request webhooks over HTTP: the route, its answers and its events. What each forge sends
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
use takt_ci::forge::{Forge, Kind, MAX_DELIVERY, MrAction, Signature, WEBHOOK_SECRET, parse_merge_request};
pub use takt_ci::forge::{Push, parse_push};
use takt_ci::trigger::report;
use takt_model::WebhookOutcome;
use takt_model::{Event, EventKind, Trigger};

/// One authenticated delivery: what its `webhook_received` event says.
#[derive(Clone, Copy)]
struct Received<'a> {
    project: &'a str,
    forge: Forge,
    delivery: &'a str,
    event: &'a str,
}

impl Received<'_> {
    /// Its `webhook_received` event (and the webhook metric).
    fn event(
        &self,
        state: &AppState,
        git_ref: Option<String>,
        commit: Option<String>,
        outcome: WebhookOutcome,
    ) -> Event {
        let provider = self.forge.name();
        state.metrics.webhook(provider, outcome.into());
        Event::now(
            self.project,
            None,
            EventKind::WebhookReceived {
                provider: provider.to_string(),
                delivery: self.delivery.to_string(),
                event: self.event.to_string(),
                git_ref,
                commit,
                outcome,
            },
        )
    }
}

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
    let received = Received {
        project: &name,
        forge,
        delivery: &delivery,
        event: &event,
    };
    let record = |git_ref, commit, outcome| received.event(&state, git_ref, commit, outcome);
    let kind = forge.kind(&event);
    if kind == Kind::Ping {
        state.record(record(None, None, WebhookOutcome::Ping)).await?;
        return Ok((StatusCode::OK, Json(json!({"pong": true}))));
    }
    if kind == Kind::MergeRequest {
        return merge_request(&state, &received, &body).await;
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

/// A pull request (GitHub, Gitea) or merge request (GitLab) event: opened, reopened or new
/// commits start a merge-request pipeline of its head; closed or merged cancels its runs;
/// anything else is ignored. A fork's request runs only where jobs are isolated.
async fn merge_request(
    state: &Arc<AppState>,
    r: &Received<'_>,
    body: &[u8],
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Received {
        project: name,
        forge,
        delivery,
        ..
    } = *r;
    let provider = forge.name();
    let queue = state.queue()?;
    let record = |git_ref, commit, outcome| r.event(state, git_ref, commit, outcome);
    if queue.delivery_seen(provider, delivery) {
        state.record(record(None, None, WebhookOutcome::Duplicate)).await?;
        return Ok((
            StatusCode::OK,
            Json(json!({"queued": false, "duplicate": true, "delivery": delivery})),
        ));
    }
    let mr = parse_merge_request(forge, body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let mr_ref = Some(takt_ci::trigger::merge_request_ref(forge, mr.iid));
    let ignored = |reason: String| (StatusCode::OK, Json(json!({"ignored": true, "reason": reason})));
    match mr.action {
        MrAction::Ignore => {
            queue.remember_delivery(provider, delivery);
            state.record(record(mr_ref, None, WebhookOutcome::Ignored)).await?;
            Ok(ignored(format!(
                "this change to merge request !{} brings no new commits",
                mr.iid
            )))
        }
        MrAction::Close => {
            let why = format!("merge request !{} (closed or merged on {provider})", mr.iid);
            let cancelled = queue
                .cancel_merge_request(name, mr.iid, &why)
                .await
                .map_err(crate::runs::queue_error)?;
            queue.remember_delivery(provider, delivery);
            state.record(record(mr_ref, None, WebhookOutcome::Closed)).await?;
            Ok((StatusCode::OK, Json(json!({"closed": mr.iid, "cancelled": cancelled}))))
        }
        MrAction::Run if mr.fork && state.isolation.warning().is_some() => {
            queue.remember_delivery(provider, delivery);
            state
                .record(record(mr_ref, Some(mr.head.clone()), WebhookOutcome::Ignored))
                .await?;
            Ok(ignored(format!(
                "merge request !{} comes from a fork, and this server runs jobs unisolated: install bubblewrap or set job_user to run forks' requests",
                mr.iid
            )))
        }
        MrAction::Run => {
            let trigger = Trigger::Webhook {
                provider: provider.to_string(),
                delivery: delivery.to_string(),
            };
            let (submitted, commit) =
                takt_ci::trigger::report_merge_request(&state.ci, name, forge, &mr, trigger).await?;
            queue.remember_delivery(provider, delivery);
            let outcome = match submitted {
                crate::queue::Submitted::Queued(_) => WebhookOutcome::Queued,
                crate::queue::Submitted::Duplicate(_) => WebhookOutcome::Duplicate,
            };
            state.record(record(mr_ref, Some(commit.clone()), outcome)).await?;
            let (status, Json(t)) = submitted_response(submitted, &commit);
            Ok((status, Json(json!(t))))
        }
    }
}
