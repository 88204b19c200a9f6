//! Signed push webhooks from GitHub, Gitea and GitLab (polling is the CI service's:
//! `takt_ci::poll`).
//!
//! A project's webhook secret is its secret `TAKT_WEBHOOK_SECRET` (`takt secret set PROJECT
//! TAKT_WEBHOOK_SECRET`); names starting with `TAKT_` never reach jobs.
//! - GitHub: `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`, `X-GitHub-Event`,
//!   `X-GitHub-Delivery`. Gitea: `X-Gitea-Signature: <hex HMAC>`, `X-Gitea-Event`,
//!   `X-Gitea-Delivery`. GitLab: `X-Gitlab-Token: <secret>`, `X-Gitlab-Event`,
//!   `X-Gitlab-Event-UUID`.
//! - Unknown project → 404; missing or wrong signature → 401; ping → 200; a delivery id seen
//!   before → 200 `duplicate` (and one commit gets one run whatever reports it).

use crate::runs::submitted_response;
use crate::{ApiError, AppState};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use takt_ci::trigger::report;
use takt_model::WebhookOutcome;
use takt_model::{Event, EventKind, Trigger};

/// The project secret that signs its webhooks.
pub const WEBHOOK_SECRET: &str = "TAKT_WEBHOOK_SECRET";

type HmacSha256 = hmac::Hmac<Sha256>;

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn hmac_ok(secret: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Constant-time equality (GitLab sends the secret itself).
/// Compared in constant time (hashed first, so the length does not show either).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// The webhook secret of a project, decrypted.
fn webhook_secret(state: &AppState, project: &crate::projects::Project) -> Option<Vec<u8>> {
    let s = project.sealed.get(WEBHOOK_SECRET)?;
    state
        .key
        .open(&project.name, WEBHOOK_SECRET, &s.nonce, &s.ciphertext)
        .ok()
}

/// What a push payload (GitHub, Gitea and GitLab share these fields) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// `refs/heads/…` or `refs/tags/…`, valid by git's rules.
    pub git_ref: String,
    /// The pushed commit: 40 or 64 hex digits.
    pub after: String,
    /// The ref was deleted (nothing to build).
    pub deleted: bool,
}

/// Reads a push payload: its `ref` (a branch or tag, by git's ref rules) and `after` (an object
/// id). Anything else is an error that says what is wrong, never a panic.
pub fn parse_push(body: &[u8]) -> Result<Push, String> {
    let payload: Value = serde_json::from_slice(body).map_err(|e| format!("the push payload is not JSON: {e}"))?;
    let (Some(git_ref), Some(after)) = (payload["ref"].as_str(), payload["after"].as_str()) else {
        return Err("the push payload has no `ref` and `after` strings".into());
    };
    takt_ci::trigger::parse_ref(git_ref).map_err(|e| format!("the push payload's `ref`: {e}"))?;
    if !takt_engine::git::is_object_id(after) {
        return Err("the push payload's `after` is not a commit id (40 or 64 hex digits)".into());
    }
    let deleted = payload["deleted"].as_bool() == Some(true) || after.bytes().all(|b| b == b'0');
    Ok(Push {
        git_ref: git_ref.to_string(),
        after: after.to_string(),
        deleted,
    })
}

pub async fn webhook(
    State(state): State<Arc<AppState>>,
    Path((provider, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let provider = provider.as_str();
    if !["github", "gitea", "gitlab"].contains(&provider) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown webhook provider `{provider}`; use github, gitea or gitlab"),
        ));
    }
    let project = state.project(&name)?;
    let unauthorized = |m: String| {
        state.metrics.failed_auth(&format!("webhook_{provider}"));
        state.metrics.webhook(provider, "unauthorized");
        ApiError::new(StatusCode::UNAUTHORIZED, m)
    };
    let Some(secret) = webhook_secret(&state, &project) else {
        return Err(unauthorized(format!(
            "project `{name}` has no webhook secret: set one with `takt secret set {name} {WEBHOOK_SECRET}`"
        )));
    };
    let signed = match provider {
        "github" => header(&headers, "x-hub-signature-256")
            .and_then(|s| s.strip_prefix("sha256="))
            .map(|s| hmac_ok(&secret, &body, s)),
        "gitea" => header(&headers, "x-gitea-signature")
            .or_else(|| header(&headers, "x-hub-signature-256").and_then(|s| s.strip_prefix("sha256=")))
            .map(|s| hmac_ok(&secret, &body, s)),
        _ => header(&headers, "x-gitlab-token").map(|t| same_secret(t.as_bytes(), &secret)),
    };
    match signed {
        None => return Err(unauthorized(format!("the {provider} webhook carries no signature"))),
        Some(false) => {
            return Err(unauthorized(format!(
                "the {provider} webhook's signature does not match the project's {WEBHOOK_SECRET}"
            )));
        }
        Some(true) => {}
    }
    let event = match provider {
        "github" => header(&headers, "x-github-event"),
        "gitea" => header(&headers, "x-gitea-event"),
        _ => header(&headers, "x-gitlab-event"),
    }
    .unwrap_or("")
    .to_string();
    let delivery = match provider {
        "github" => header(&headers, "x-github-delivery"),
        "gitea" => header(&headers, "x-gitea-delivery"),
        _ => header(&headers, "x-gitlab-event-uuid").or_else(|| header(&headers, "idempotency-key")),
    }
    .map(str::to_string)
    // Without an id, identical bodies are the same delivery.
    .unwrap_or_else(|| hex::encode(Sha256::digest(&body)));
    if delivery.len() > 200 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "delivery id over 200 bytes"));
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
    if event == "ping" {
        state.record(record(None, None, WebhookOutcome::Ping)).await?;
        return Ok((StatusCode::OK, Json(json!({"pong": true}))));
    }
    let is_push = matches!(event.as_str(), "push" | "Push Hook" | "Tag Push Hook");
    if !is_push {
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
