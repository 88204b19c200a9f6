//! Triggers that arrive from outside: signed push webhooks from GitHub, Gitea and GitLab, and
//! the periodic poll of every project's repository.
//!
//! A project's webhook secret is its secret `TAKT_WEBHOOK_SECRET` (`takt secret set PROJECT
//! TAKT_WEBHOOK_SECRET`); names starting with `TAKT_` never reach jobs.
//! - GitHub: `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`, `X-GitHub-Event`,
//!   `X-GitHub-Delivery`. Gitea: `X-Gitea-Signature: <hex HMAC>`, `X-Gitea-Event`,
//!   `X-Gitea-Delivery`. GitLab: `X-Gitlab-Token: <secret>`, `X-Gitlab-Event`,
//!   `X-Gitlab-Event-UUID`.
//! - Unknown project → 404; missing or wrong signature → 401; ping → 200; a delivery id seen
//!   before → 200 `duplicate` (and one commit gets one run whatever reports it).

use crate::runs::{report, submitted_response};
use crate::{ApiError, AppState};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    crate::runs::parse_ref(git_ref).map_err(|e| format!("the push payload's `ref`: {e}"))?;
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
    let record = |git_ref: Option<String>, commit: Option<String>, outcome: &str| {
        state.metrics.webhook(provider, outcome);
        Event::now(
            &name,
            None,
            EventKind::WebhookReceived {
                provider: provider.to_string(),
                delivery: delivery.clone(),
                event: event.clone(),
                git_ref,
                commit,
                outcome: outcome.to_string(),
            },
        )
    };
    if event == "ping" {
        state.record(record(None, None, "ping")).await?;
        return Ok((StatusCode::OK, Json(json!({"pong": true}))));
    }
    let is_push = matches!(event.as_str(), "push" | "Push Hook" | "Tag Push Hook");
    if !is_push {
        state.record(record(None, None, "ignored")).await?;
        return Ok((
            StatusCode::OK,
            Json(json!({"ignored": true, "reason": format!("`{event}` events do not start runs")})),
        ));
    }
    if queue.delivery_seen(provider, &delivery) {
        state.record(record(None, None, "duplicate")).await?;
        return Ok((
            StatusCode::OK,
            Json(json!({"queued": false, "duplicate": true, "delivery": delivery})),
        ));
    }
    let push = parse_push(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let (git_ref, after) = (push.git_ref, push.after);
    if push.deleted {
        queue.remember_delivery(provider, &delivery);
        state.record(record(Some(git_ref), None, "ignored")).await?;
        return Ok((
            StatusCode::OK,
            Json(json!({"ignored": true, "reason": "a deleted ref has nothing to build"})),
        ));
    }
    let trigger = Trigger::Webhook {
        provider: provider.to_string(),
        delivery: delivery.clone(),
    };
    let (submitted, commit) = report(&state, &name, Some(&after), Some(&git_ref), trigger, false).await?;
    queue.remember_delivery(provider, &delivery);
    let outcome = match submitted {
        crate::queue::Submitted::Queued(_) => "queued",
        crate::queue::Submitted::Duplicate(_) => "duplicate",
    };
    state
        .record(record(Some(git_ref), Some(commit.clone()), outcome))
        .await?;
    let (status, Json(t)) = submitted_response(submitted, &commit);
    Ok((status, Json(json!(t))))
}

/// Polls every project's repository: each `interval` (or the project's `poll_seconds`; 0 turns
/// it off) the mirror is fetched and every branch or tag that moved or appeared is reported.
/// Each project is polled by a task of its own, so one slow remote (bounded by git's
/// timeouts) delays only its own project; a project is never polled twice at once.
pub fn start_polling(state: Arc<AppState>, interval: Duration) {
    tokio::spawn(async move {
        let polls: Arc<Mutex<HashMap<String, Poll>>> = Arc::default();
        let tick = Duration::from_millis(200).min(interval.max(Duration::from_millis(50)));
        loop {
            tokio::time::sleep(tick).await;
            if state.queue().is_err() {
                return;
            }
            let projects = state.projects.read().map(|p| p.list()).unwrap_or_default();
            for p in projects {
                let every = p.options.poll_seconds.map_or(interval, Duration::from_secs);
                if every.is_zero() {
                    continue;
                }
                let known = {
                    let Ok(mut polls) = polls.lock() else { return };
                    let entry = polls.entry(p.name.clone()).or_default();
                    let due = !entry.busy && entry.last.is_none_or(|t| t.elapsed() >= every);
                    if !due {
                        continue;
                    }
                    entry.busy = true;
                    entry.refs.take()
                };
                let (state, polls) = (state.clone(), polls.clone());
                tokio::spawn(async move {
                    // Marks the poll done however the task ends (even by a panic).
                    let mut done = PollDone {
                        polls,
                        name: p.name.clone(),
                        refs: None,
                    };
                    done.refs = poll_one(&state, &p.name, known).await;
                });
            }
        }
    });
}

/// Ends a project's poll when dropped: not busy any more, and the refs it saw (if any).
struct PollDone {
    polls: Arc<Mutex<HashMap<String, Poll>>>,
    name: String,
    refs: Option<HashMap<String, String>>,
}

impl Drop for PollDone {
    fn drop(&mut self) {
        if let Ok(mut polls) = self.polls.lock() {
            *polls.entry(self.name.clone()).or_default() = Poll {
                last: Some(Instant::now()),
                busy: false,
                refs: self.refs.take(),
            };
        }
    }
}

/// One project's polling state.
#[derive(Default)]
struct Poll {
    /// When its last poll ended.
    last: Option<Instant>,
    /// A poll is under way.
    busy: bool,
    /// The refs it had then (`None` before the first look).
    refs: Option<HashMap<String, String>>,
}

/// Fetches one project's mirror and reports what moved since `before`; returns the refs now.
async fn poll_one(
    state: &AppState,
    name: &str,
    before: Option<HashMap<String, String>>,
) -> Option<HashMap<String, String>> {
    let mirror = takt_engine::git::Repo::bare(&crate::projects::mirror_path(&state.data_dir, name));
    let before = match before {
        Some(refs) => refs,
        // First look: what the mirror has now is known; news starts after it. If git cannot
        // say, the first look waits for the next poll (an empty list would make every branch
        // look new).
        None => match mirror.refs().await {
            Ok(refs) => refs.into_iter().collect(),
            Err(e) => {
                tracing::warn!(project = %name, error = %e, "poll: cannot list the mirror's refs");
                return None;
            }
        },
    };
    let fetched = match state.queue() {
        Ok(q) => q.fetch(name).await,
        Err(_) => return Some(before),
    };
    if let Err(e) = fetched {
        tracing::warn!(project = %name, error = %e, "poll: cannot fetch");
    }
    let now: HashMap<String, String> = match mirror.refs().await {
        Ok(refs) => refs.into_iter().collect(),
        Err(e) => {
            tracing::warn!(project = %name, error = %e, "poll: cannot list the mirror's refs");
            return Some(before);
        }
    };
    for (r, id) in &now {
        if before.get(r) == Some(id) {
            continue;
        }
        match report(state, name, Some(id), Some(r), Trigger::Poll, false).await {
            Ok((s, commit)) => {
                tracing::info!(project = %name, git_ref = %r, %commit, ?s, "poll found a new commit")
            }
            Err(e) => {
                tracing::warn!(project = %name, git_ref = %r, error = %e.message, "poll: cannot queue")
            }
        }
    }
    Some(now)
}
