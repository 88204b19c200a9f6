//! Notifications: every event of a project goes to the webhook subscribers its default
//! branch's `notify:` names, as a CloudEvents 1.0 JSON document (structured mode) with a
//! CDEvents type where one fits; Slack subscribers get a message (text and blocks) when a run
//! finishes. Each subscriber has its own bounded queue and worker: a slow or failing receiver
//! delays nobody but itself. Deliveries that fail for a reason that may pass (no answer, 408,
//! 429, 5xx) are retried with exponential backoff for about an hour, and each outcome
//! is recorded as a `notification_sent` event (those are not sent on, nor are token and secret
//! events).

use crate::AppState;
use backon::Retryable;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use takt_model::{Event, EventKind, IncidentTrigger, RunStatus};
use tokio::sync::mpsc;

/// Attempts per delivery: the first wait between them, doubling up to the longest, so the last
/// attempt comes about an hour after the first (8 waits of 0.25 s to 32 s, then 59 of 60 s).
pub const ATTEMPTS: u32 = 68;
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub const LONGEST_BACKOFF: Duration = Duration::from_secs(60);

/// Whether a failed delivery is worth trying again: the receiver could not be reached, timed
/// out, was overloaded or failed (no answer, 408, 429, 5xx). Any other answer is the
/// receiver's refusal (401, 404, 410, 422...), which trying again does not change.
pub fn retryable(status: Option<u16>) -> bool {
    status.is_none_or(|s| s >= 500 || s == 408 || s == 429)
}
/// Deliveries one subscriber may have waiting; more are dropped (and recorded as dropped).
pub const QUEUE: usize = 10_000;

/// Kinds never sent: they are about notifying itself, or carry secrets' hashes and ciphertexts.
fn private(kind: &str) -> bool {
    matches!(
        kind,
        "notification_sent"
            | "token_created"
            | "token_revoked"
            | "secret_set"
            | "secret_removed"
            | "imported_deployment"
            | "imported_incident"
    )
}

/// The CDEvents type for an event, or takt's own type where CDEvents has none.
pub fn event_type(e: &Event) -> String {
    if let EventKind::IncidentOpened {
        trigger: IncidentTrigger::Person,
        ..
    } = e.kind
    {
        return "dev.cdevents.incident.reported.0.2.0".into();
    }
    match e.kind.name() {
        "run_queued" => "dev.cdevents.pipelinerun.queued.0.2.0".into(),
        "run_started" => "dev.cdevents.pipelinerun.started.0.2.0".into(),
        "run_finished" => "dev.cdevents.pipelinerun.finished.0.2.0".into(),
        "job_started" => "dev.cdevents.taskrun.started.0.2.0".into(),
        "job_finished" => "dev.cdevents.taskrun.finished.0.2.0".into(),
        "artifact_stored" => "dev.cdevents.artifact.published.0.2.0".into(),
        "commit_seen" => "dev.cdevents.change.merged.0.2.0".into(),
        "deploy_finished" => "dev.cdevents.service.deployed.0.2.0".into(),
        "incident_opened" => "dev.cdevents.incident.detected.0.2.0".into(),
        "incident_resolved" => "dev.cdevents.incident.resolved.0.2.0".into(),
        other => format!("dev.takt.{other}.v1"),
    }
}

/// The CloudEvents document of an event.
pub fn cloudevent(e: &Event) -> Value {
    let kind = event_type(e);
    let at = takt_model::timefmt::rfc3339(e.at);
    let id = e.seq.map(|s| s.to_string()).unwrap_or_default();
    let source = format!("/takt/projects/{}", e.project);
    let subject = match e.run {
        Some(r) => format!("{}/{r}", e.project),
        None => e.project.clone(),
    };
    let body = serde_json::to_value(e).unwrap_or(Value::Null);
    let (subject_type, outcome) = match &e.kind {
        EventKind::RunFinished { status, .. } => ("pipelineRun", Some(status.to_string())),
        EventKind::JobFinished { status, .. } => ("taskRun", Some(status.to_string())),
        EventKind::RunQueued { .. } | EventKind::RunStarted => ("pipelineRun", None),
        EventKind::JobStarted { .. } => ("taskRun", None),
        EventKind::ArtifactStored { .. } => ("artifact", None),
        EventKind::DeployFinished { outcome, .. } => ("service", Some(outcome.to_string())),
        EventKind::IncidentOpened { .. } | EventKind::IncidentResolved { .. } | EventKind::IncidentReminder { .. } => {
            ("incident", None)
        }
        EventKind::ServiceStateChanged { state, .. } => ("service", Some(<&str>::from(state).to_string())),
        _ => ("takt", None),
    };
    json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": kind,
        "time": at,
        "subject": subject,
        "datacontenttype": "application/json",
        "data": {
            "context": {"version": "0.4.1", "id": id, "source": source, "type": kind, "timestamp": at},
            "subject": {"id": subject, "source": source, "type": subject_type, "content": {"pipelineName": e.project, "outcome": outcome}},
            "takt": body,
        },
    })
}

/// A Slack message of one section of `text`.
/// Whether `sub` hears of events of `kind`: those its `events` names (all when it names
/// none), and pages only when it is on call (then whatever `events` says).
pub fn wants(sub: &takt_pipeline::Subscriber, kind: &str) -> bool {
    if kind == "incident_paged" {
        return sub.on_call;
    }
    sub.events.is_empty() || sub.events.iter().any(|k| k == kind)
}

fn slack_text(text: &str) -> Value {
    json!({"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]})
}

/// The Slack message for an event, if it is one Slack hears about.
pub fn slack_message(e: &Event, commit: Option<&(String, Option<String>)>) -> Option<Value> {
    if let EventKind::IncidentOpened {
        environment,
        reason,
        trigger,
        id,
        ..
    } = &e.kind
    {
        let id = id.clone().or_else(|| takt_model::incident_id(e)).unwrap_or_default();
        let text = match trigger {
            IncidentTrigger::RollbackFailed => {
                format!(
                    ":rotating_light: {}/{environment} is halted: {reason} (incident {id})",
                    e.project
                )
            }
            _ => format!(
                ":rotating_light: incident {id} in {}/{environment}: {reason}",
                e.project
            ),
        };
        return Some(slack_text(&text));
    }
    if let EventKind::IncidentUpdated {
        id,
        status,
        note,
        by,
        checks,
    } = &e.kind
    {
        let status: &str = status.into();
        let text = match (note, checks.as_slice()) {
            (Some(n), _) => format!(":memo: incident {id} is {status}: {n} ({by})"),
            (None, []) => format!(":memo: incident {id} is {status} ({by})"),
            (None, joined) => format!(":memo: incident {id}: check `{}` failing too", joined.join("`, `")),
        };
        return Some(slack_text(&text));
    }
    if let EventKind::IncidentAcknowledged { id, by } = &e.kind {
        return Some(slack_text(&format!(":eyes: incident {id} acknowledged by {by}")));
    }
    if let EventKind::IncidentPaged { id, count, reason } = &e.kind {
        let why = match reason {
            takt_model::PageReason::Unresolved => "it is still unresolved and nobody has acknowledged it",
            takt_model::PageReason::RemediationFailed => "its automatic remediation failed",
        };
        let text =
            format!(":rotating_light: page {count} for incident {id}: {why}. `takt incident ack {id}` stops the pages");
        return Some(slack_text(&text));
    }
    if let EventKind::IncidentRemediation {
        id,
        action,
        deploy,
        outcome,
        detail,
    } = &e.kind
    {
        let what = takt_model::describe_remediation(*action, deploy.as_deref(), *outcome, detail.as_deref());
        let icon = match outcome {
            takt_model::RemedyOutcome::Succeeded => ":white_check_mark:",
            takt_model::RemedyOutcome::Failed => ":x:",
            _ => ":hammer_and_wrench:",
        };
        let text = format!("{icon} incident {id}: remediation: {what}");
        return Some(slack_text(&text));
    }
    if let EventKind::IncidentReminder { id, count } = &e.kind {
        let text = format!(
            ":bell: incident {id} is still open and nobody has acknowledged it (reminder {count}): `takt incident ack {id}`"
        );
        return Some(slack_text(&text));
    }
    if let EventKind::ServiceStateChanged {
        service, state, from, ..
    } = &e.kind
    {
        let icon = match state {
            takt_model::ServiceState::Operational => ":large_green_circle:",
            takt_model::ServiceState::UnderMaintenance => ":wrench:",
            takt_model::ServiceState::Degraded => ":large_yellow_circle:",
            takt_model::ServiceState::PartialOutage | takt_model::ServiceState::MajorOutage => ":red_circle:",
        };
        let text = format!(
            "{icon} {}/{service}: {} (was {})",
            e.project,
            state.label(),
            from.label().to_lowercase()
        );
        return Some(slack_text(&text));
    }
    if let EventKind::IncidentResolved { id, auto, note, .. } = &e.kind {
        let how = if *auto { " automatically" } else { "" };
        let note = note.as_ref().map(|n| format!(": {n}")).unwrap_or_default();
        let text = format!(":white_check_mark: incident {id} resolved{how}{note}");
        return Some(slack_text(&text));
    }
    let EventKind::RunFinished {
        status,
        duration_ms,
        reason,
        ..
    } = &e.kind
    else {
        return None;
    };
    let run = e.run?;
    let (icon, verb) = match status {
        RunStatus::Success => (":white_check_mark:", "passed"),
        RunStatus::Failed => (":x:", "failed"),
        RunStatus::Cancelled => (":no_entry_sign:", "was cancelled"),
        RunStatus::Interrupted => (":warning:", "was interrupted"),
        RunStatus::Manual => (":raised_hand:", "waits for a manual job"),
        RunStatus::Running => return None,
    };
    let text = format!(
        "{icon} run #{run} of {} {verb} in {}",
        e.project,
        takt_model::timefmt::human(Duration::from_millis(*duration_ms))
    );
    let mut context = Vec::new();
    if let Some((c, b)) = commit {
        context.push(format!("commit `{}`", &c[..c.len().min(8)]));
        if let Some(b) = b {
            context.push(format!("branch `{b}`"));
        }
    }
    if let Some(r) = reason {
        context.push(r.clone());
    }
    let mut blocks = vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})];
    if !context.is_empty() {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context.join(" · ")}]}));
    }
    Some(json!({"text": text, "blocks": blocks}))
}

/// One request to send: a subscriber's document or a forge's commit status.
struct Delivery {
    seq: i64,
    project: String,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Value,
    /// A commit status for this forge (its refusals are reported once an hour).
    forge: Option<takt_model::ForgeKind>,
}

/// How often a forge's refusal of commit statuses (401, 403, 404, 422) is reported.
pub const REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(3600);

/// The commit statuses an event means for its project's forge, if it has one.
async fn forge_deliveries(state: &AppState, e: &Event) -> Vec<Delivery> {
    let Some(run) = e.run else { return Vec::new() };
    // Most projects have no forge: nothing is cloned or read for their events.
    let Some(link) = state
        .projects
        .read()
        .get(&e.project)
        .and_then(|p| p.options.forge.clone())
    else {
        return Vec::new();
    };
    let job_event = matches!(
        e.kind,
        EventKind::JobStarted { .. } | EventKind::JobFinished { .. } | EventKind::JobSkipped { .. }
    );
    let view = if job_event && link.stages {
        // The run as it stood at this event: its jobs' stages and states.
        let events = state
            .store
            .events(&takt_store::EventFilter {
                project: Some(e.project.clone()),
                run: Some(run),
                until_seq: e.seq,
                ..Default::default()
            })
            .await
            .unwrap_or_default();
        <takt_views::Runs as takt_views::Projection>::fold(&events)
            .runs
            .into_values()
            .next()
    } else if job_event {
        None
    } else {
        state.runs.get(&e.project, run)
    };
    let Some(view) = view else { return Vec::new() };
    let token = state
        .open_secret(&e.project, takt_ci::status::FORGE_TOKEN)
        .and_then(|t| String::from_utf8(t).ok());
    takt_ci::status::updates(e, &view, &link, &state.public_url)
        .iter()
        .filter_map(|u| takt_ci::status::request(&link, token.as_deref(), u))
        .map(|r| Delivery {
            seq: e.seq.unwrap_or(0),
            project: e.project.clone(),
            url: r.url,
            headers: r.headers,
            body: r.body,
            forge: Some(link.forge),
        })
        .collect()
}

/// The notifier's durable cursor (table `cursors`).
pub const CURSOR: &str = "notify";

/// Starts the notifier: follows the event log from its durable cursor and hands each event to
/// its subscribers' queues. The cursor moves past an event once every delivery of it is
/// recorded, so after a crash or a restart the notifier resumes where it stopped: each event is
/// delivered at least once, with its `seq` as the CloudEvent `id` receivers deduplicate on.
pub fn start(state: Arc<AppState>) {
    tokio::spawn(async move {
        let (cursor, after) = match takt_store::Cursor::open(&state.store, CURSOR).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "notifications are off: cannot read their cursor");
                return;
            }
        };
        let mut log = state.store.subscribe(after, &[]);
        let mut workers: HashMap<String, mpsc::Sender<Delivery>> = HashMap::new();
        loop {
            let e = match log.next().await {
                Ok(e) => e,
                Err(err) => {
                    tracing::warn!(error = %err, "the notifier cannot read the log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let seq = e.seq.unwrap_or(0);
            let kind = e.kind.name();
            if private(kind) || e.project.is_empty() {
                cursor.passed(log.position());
                continue;
            }
            let subs: Vec<_> = state
                .ci
                .branch_configs
                .read()
                .get(&e.project)
                .map(|x| x.notify.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|sub| wants(sub, kind))
                .collect();
            let commit = e
                .run
                .and_then(|r| state.runs.get(&e.project, r))
                .map(|r| (r.commit, r.branch));
            let mut deliveries: Vec<_> = subs
                .into_iter()
                .filter_map(|sub| {
                    let (body, content_type) = if sub.slack {
                        (slack_message(&e, commit.as_ref())?, "application/json")
                    } else {
                        (cloudevent(&e), "application/cloudevents+json")
                    };
                    let d = Delivery {
                        seq,
                        project: e.project.clone(),
                        url: sub.url.clone(),
                        headers: vec![("content-type", content_type.to_string())],
                        body,
                        forge: None,
                    };
                    Some((format!("{}:{}", sub.slack, sub.url), d))
                })
                .collect();
            // One queue per project's forge: its statuses are posted in order.
            for d in forge_deliveries(&state, &e).await {
                deliveries.push((format!("forge:{}", e.project), d));
            }
            cursor.read(log.position(), seq, deliveries.len());
            for (key, d) in deliveries {
                let tx = workers
                    .entry(key)
                    .or_insert_with(|| worker(state.clone(), cursor.clone()));
                let url = d.url.clone();
                if tx.try_send(d).is_err() {
                    let st = state.clone();
                    let project = e.project.clone();
                    let cursor = cursor.clone();
                    tokio::spawn(async move {
                        record(
                            &st,
                            &project,
                            &url,
                            seq,
                            0,
                            None,
                            Some(format!("dropped: over {QUEUE} deliveries waiting")),
                        )
                        .await;
                        cursor.done(seq);
                    });
                }
            }
        }
    });
}

fn worker(state: Arc<AppState>, cursor: Arc<takt_store::Cursor>) -> mpsc::Sender<Delivery> {
    let (tx, mut rx) = mpsc::channel::<Delivery>(QUEUE);
    tokio::spawn(async move {
        let http = reqwest_client();
        // When this forge's last refusal was reported, and how many since went unreported.
        let mut reported: Option<(tokio::time::Instant, u32)> = None;
        while let Some(d) = rx.recv().await {
            let attempts = std::sync::atomic::AtomicU32::new(0);
            let deliver = || async {
                attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut req = http.post(&d.url);
                if !d.headers.iter().any(|(h, _)| *h == "content-type") {
                    req = req.header("content-type", "application/json");
                }
                for (h, v) in &d.headers {
                    req = req.header(*h, v);
                }
                match req.body(d.body.to_string()).send().await {
                    Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
                    Ok(r) => Err((Some(r.status().as_u16()), format!("answered {}", r.status()))),
                    Err(e) => Err((None, e.to_string())),
                }
            };
            let (status, error) = match deliver
                .retry(backoff())
                .when(|(status, _): &(Option<u16>, String)| retryable(*status))
                .await
            {
                Ok(status) => (Some(status), None),
                Err((status, error)) => (status, Some(error)),
            };
            let attempts = attempts.load(std::sync::atomic::Ordering::Relaxed);
            record(&state, &d.project, &d.url, d.seq, attempts, status, error.clone()).await;
            if let (Some(forge), Some(code @ (401 | 403 | 404 | 422)), Some(error)) = (d.forge, status, error) {
                let now = tokio::time::Instant::now();
                match &mut reported {
                    Some((at, unreported)) if now.duration_since(*at) < REFUSAL_REPORT_EVERY => *unreported += 1,
                    _ => {
                        let since = reported.map_or(0, |(_, n)| n);
                        reported = Some((now, 0));
                        refused(&state, &d.project, forge, code, &error, since).await;
                    }
                }
            }
            cursor.done(d.seq);
        }
    });
    tx
}

/// Reports that a forge refuses the project's commit statuses (once an hour, not per run).
async fn refused(state: &AppState, project: &str, forge: takt_model::ForgeKind, status: u16, error: &str, since: u32) {
    let hint = match status {
        401 | 403 => format!(
            "check the project secret {} (`takt secret set {project} {}`) and its permissions",
            takt_ci::status::FORGE_TOKEN,
            takt_ci::status::FORGE_TOKEN
        ),
        404 => "check --forge-api and --forge-repo (`takt project set`)".to_string(),
        _ => "the forge refused the status's fields".to_string(),
    };
    tracing::warn!(
        project,
        forge = <&str>::from(forge),
        status,
        "the forge refuses commit statuses: {hint}"
    );
    let e = Event::now(
        project,
        None,
        EventKind::ForgeRefused {
            forge,
            status,
            error: format!("{error}: {hint}"),
            unreported: since,
        },
    );
    if let Err(err) = state.store.append(&e).await {
        tracing::warn!(error = %err, "cannot record a forge's refusal");
    }
}

/// [`ATTEMPTS`] attempts, the first wait [`FIRST_BACKOFF`], doubling up to
/// [`LONGEST_BACKOFF`], no jitter.
fn backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(FIRST_BACKOFF)
        .with_max_delay(LONGEST_BACKOFF)
        .with_factor(2.0)
        .with_max_times(ATTEMPTS as usize - 1)
}

fn reqwest_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default(); // TLS on ring: see Cargo.toml
    reqwest::Client::builder()
        .user_agent(concat!("takt/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

async fn record(
    state: &AppState,
    project: &str,
    url: &str,
    seq: i64,
    attempts: u32,
    status: Option<u16>,
    error: Option<String>,
) {
    let e = Event::now(
        project,
        None,
        EventKind::NotificationSent {
            target: url.to_string(),
            event_seq: seq,
            attempts,
            status,
            ok: error.is_none(),
            error,
        },
    );
    if let Err(err) = state.store.append(&e).await {
        tracing::warn!(error = %err, "cannot record a notification");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;

    #[test]
    fn slack_hears_of_every_change_of_an_incident_and_of_services() {
        let text = |kind: EventKind| {
            let m = slack_message(&Event::now("shop", None, kind), None).unwrap();
            m["text"].as_str().unwrap().to_string()
        };
        assert_eq!(
            text(EventKind::IncidentUpdated {
                id: "shop#3".into(),
                status: takt_model::IncidentStatus::Identified,
                note: Some("disk full".into()),
                by: "token ab12".into(),
                checks: vec![],
            }),
            ":memo: incident shop#3 is identified: disk full (token ab12)"
        );
        assert_eq!(
            text(EventKind::IncidentUpdated {
                id: "shop#3".into(),
                status: takt_model::IncidentStatus::Investigating,
                note: None,
                by: "takt".into(),
                checks: vec!["api".into()],
            }),
            ":memo: incident shop#3: check `api` failing too"
        );
        assert_eq!(
            text(EventKind::IncidentAcknowledged {
                id: "shop#3".into(),
                by: "token ab12".into(),
            }),
            ":eyes: incident shop#3 acknowledged by token ab12"
        );
        assert!(
            text(EventKind::IncidentReminder {
                id: "shop#3".into(),
                count: 2
            })
            .contains("reminder 2")
        );
        assert_eq!(
            text(EventKind::ServiceStateChanged {
                service: "web".into(),
                state: takt_model::ServiceState::PartialOutage,
                from: takt_model::ServiceState::Operational,
                public: true,
                checks: vec!["home".into()],
            }),
            ":red_circle: shop/web: Partial outage (was operational)"
        );
    }

    #[test]
    fn only_failures_that_may_pass_are_retried_for_about_an_hour() {
        assert!(retryable(None) && retryable(Some(500)) && retryable(Some(503)));
        assert!(retryable(Some(429)) && retryable(Some(408)));
        assert!(!retryable(Some(404)) && !retryable(Some(401)) && !retryable(Some(422)));
        // The waits between the attempts add up to about an hour.
        let total: Duration = backoff().build().sum();
        assert_eq!(backoff().build().count(), ATTEMPTS as usize - 1);
        assert!(
            total > Duration::from_secs(3500) && total < Duration::from_secs(3700),
            "{total:?}"
        );
    }
}
