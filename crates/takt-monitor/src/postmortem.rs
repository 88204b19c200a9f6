//! Postmortem drafts, pure: an incident, the project's events around it and its suspects in;
//! a blameless draft out — summary, impact, a UTC timeline from the log, suspects and the
//! marked cause, root cause with five-whys prompts, detection and resolution times, action
//! items and lessons learned — as a typed [`Postmortem`] (the API's JSON) and as Markdown.

use crate::suspect::{FlagSuspect, Suspect};
use serde::{Deserialize, Serialize};
use takt_model::{CheckState, Event, EventKind, OffsetDateTime, timefmt};
use takt_views::Incident;

/// Events of these kinds make the timeline.
pub const KINDS: &[&str] = &[
    "commit_info",
    "run_queued",
    "run_finished",
    "deploy_started",
    "deploy_step",
    "deploy_finished",
    "check_state_changed",
    "incident_opened",
    "incident_updated",
    "incident_acknowledged",
    "incident_resolved",
    "incident_cause_marked",
    "incident_remediation",
    "incident_paged",
    "incident_reminder",
    "environment_halted",
    "environment_resumed",
    "flag_changed",
];

/// How long before the impact the timeline starts.
pub const LEAD_IN: time::Duration = time::Duration::hours(2);

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(with = "timefmt::ms")]
    pub at: OffsetDateTime,
    /// The event kind it comes from.
    pub kind: String,
    pub text: String,
}

/// A blameless draft, for people to finish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Postmortem {
    pub incident: String,
    pub title: String,
    pub environment: String,
    pub severity: String,
    pub services: Vec<String>,
    pub checks: Vec<String>,
    pub status: String,
    #[serde(with = "timefmt::ms")]
    pub impact_started_at: OffsetDateTime,
    #[serde(with = "timefmt::ms")]
    pub opened_at: OffsetDateTime,
    #[serde(default, with = "timefmt::ms::option")]
    pub acknowledged_at: Option<OffsetDateTime>,
    #[serde(default, with = "timefmt::ms::option")]
    pub resolved_at: Option<OffsetDateTime>,
    /// Impact start → detection (the incident's opening), seconds.
    pub time_to_detect_s: i64,
    /// Opening → acknowledgement, seconds.
    pub time_to_acknowledge_s: Option<i64>,
    /// Impact start → resolution, seconds (the impact's duration).
    pub time_to_restore_s: Option<i64>,
    /// The deployment marked as the cause.
    pub cause: Option<String>,
    pub suspects: Vec<Suspect>,
    /// Flag changes in the environment before the impact (suspects too, never flipped back).
    #[serde(default)]
    pub flag_changes: Vec<FlagSuspect>,
    /// What remediation did, in a sentence, and how it ended.
    pub remediation: Option<String>,
    pub remediation_outcome: Option<takt_model::RemedyOutcome>,
    pub pages: u32,
    /// The requests that failed, as the environment's proxy counted them.
    #[serde(default)]
    pub requests: Requests,
    pub timeline: Vec<Entry>,
}

/// What the proxy in front of the environment counted of an incident (`incident_traffic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Requests {
    /// From the first failing result of the checks that opened it to its resolution.
    Counted { failed: u64, total: u64 },
    /// Counted from the first failing result; the incident is still open.
    StillOpen,
    /// The proxy started again meanwhile (its counters went back): not known.
    ProxyRestarted,
    /// No proxy of takt's in front of the environment (the command and nginx drivers, or a
    /// check without an environment).
    #[default]
    NotMeasured,
}

impl Requests {
    fn of(i: &Incident) -> Requests {
        match (i.traffic_at_impact, i.traffic_at_end) {
            (None, _) => Requests::NotMeasured,
            (Some(_), None) if i.resolved_at.is_none() => Requests::StillOpen,
            (Some(_), None) => Requests::NotMeasured,
            (Some(a), Some(b)) if b.requests < a.requests || b.errors < a.errors => Requests::ProxyRestarted,
            (Some(a), Some(b)) => Requests::Counted {
                failed: b.errors - a.errors,
                total: b.requests - a.requests,
            },
        }
    }
}

fn hms(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{} {:02}:{:02}:{:02}",
        timefmt::ymd(t.date()),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn span(s: i64) -> String {
    timefmt::human(std::time::Duration::from_secs(s.max(0).unsigned_abs()))
}

/// The timeline's line for `e`, if it has one.
fn line(e: &Event, i: &Incident) -> Option<String> {
    let mine = |id: &str| id == i.id;
    Some(match &e.kind {
        EventKind::CommitInfo {
            commit,
            author,
            subject,
            ..
        } => {
            format!("commit {} by {author}: {subject}", commit.get(..8).unwrap_or(commit))
        }
        EventKind::RunQueued { commit, .. } => {
            format!("run #{} queued for {}", e.run?, commit.get(..8).unwrap_or(commit))
        }
        EventKind::RunFinished { status, .. } => {
            format!("run #{} {}", e.run?, serde_json::to_value(status).ok()?.as_str()?)
        }
        EventKind::DeployStarted {
            environment,
            deploy,
            artifact,
            rollback,
            ..
        } => format!(
            "{} {}/{environment}#{deploy} started: {}@{}",
            if *rollback { "rollback" } else { "deploy" },
            e.project,
            artifact.name,
            artifact.version
        ),
        EventKind::DeployStep {
            environment,
            deploy,
            action,
            weight,
            verdict,
            detail,
            ..
        } => {
            let verdict = verdict.map(|v| format!(" {}", <&str>::from(v))).unwrap_or_default();
            let detail = detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
            format!(
                "{}/{environment}#{deploy}: {} at {weight}%{verdict}{detail}",
                e.project,
                action.name()
            )
        }
        EventKind::DeployFinished {
            environment,
            deploy,
            outcome,
            reason,
            ..
        } => {
            let reason = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            format!("{}/{environment}#{deploy} {}{reason}", e.project, outcome.name())
        }
        EventKind::CheckStateChanged {
            check, state, reason, ..
        } => {
            let word = match state {
                CheckState::Up => "passes again",
                CheckState::Degraded => "is degraded",
                CheckState::Down => "fails",
            };
            format!("check `{check}` {word}: {reason}")
        }
        EventKind::IncidentOpened { reason, .. } if takt_model::incident_id(e).as_deref() == Some(&i.id) => {
            format!("incident {} opened: {reason}", i.id)
        }
        EventKind::IncidentUpdated {
            id, status, note, by, ..
        } if mine(id) => {
            let note = note.as_deref().map(|n| format!(": {n}")).unwrap_or_default();
            format!("{} ({by}){note}", <&str>::from(*status))
        }
        EventKind::IncidentAcknowledged { id, by } if mine(id) => format!("acknowledged by {by}"),
        EventKind::IncidentResolved { id, auto, by, note } if mine(id) => {
            let how = if *auto {
                "resolved by takt: its checks pass".to_string()
            } else {
                format!("resolved by {by}")
            };
            let note = note.as_deref().map(|n| format!(": {n}")).unwrap_or_default();
            format!("{how}{note}")
        }
        EventKind::IncidentCauseMarked { id, deploy, by } if mine(id) => match deploy {
            Some(d) => format!("{d} marked as the cause ({by})"),
            None => format!("cause mark taken back ({by})"),
        },
        EventKind::IncidentRemediation {
            id,
            action,
            deploy,
            outcome,
            detail,
        } if mine(id) => {
            let what = takt_model::describe_remediation(*action, deploy.as_deref(), *outcome, detail.as_deref());
            format!("remediation: {what}")
        }
        EventKind::IncidentPaged { id, count, reason } if mine(id) => {
            format!("on call paged (page {count}, {})", <&str>::from(*reason))
        }
        EventKind::IncidentReminder { id, count } if mine(id) => format!("reminder {count} sent"),
        EventKind::EnvironmentHalted {
            environment,
            reason,
            by,
        } => format!("{}/{environment} halted by {by}: {reason}", e.project),
        EventKind::EnvironmentResumed { environment, by } => format!("{}/{environment} resumed by {by}", e.project),
        // A flag first seen changed nothing that ran.
        EventKind::FlagChanged { before: Some(_), .. } => FlagSuspect::of(e, e.at, true)?.describe(),
        _ => return None,
    })
}

/// The draft for incident `i`, from the project's `events` (any order; those outside the
/// incident's time are left out) and its `suspects`; `now` ends an incident still open.
pub fn draft(i: &Incident, events: &[Event], suspects: &[Suspect], now: OffsetDateTime) -> Postmortem {
    let from = i.impact_started_at - LEAD_IN;
    let to = i.resolved_at.unwrap_or(now);
    // Commits are listed only when a suspect shipped them.
    let shipped: std::collections::HashSet<&str> = suspects
        .iter()
        .flat_map(|s| s.commits.iter().map(|c| c.commit.as_str()))
        .collect();
    fn env_of(e: &Event) -> Option<&str> {
        match &e.kind {
            EventKind::DeployStarted { environment, .. }
            | EventKind::DeployStep { environment, .. }
            | EventKind::DeployFinished { environment, .. }
            | EventKind::EnvironmentHalted { environment, .. }
            | EventKind::EnvironmentResumed { environment, .. }
            | EventKind::FlagChanged { environment, .. } => Some(environment.as_str()),
            _ => None,
        }
    }
    let mut timeline: Vec<Entry> = events
        .iter()
        .filter(|e| e.project == i.project && e.at >= from && e.at <= to)
        .filter(|e| env_of(e).is_none_or(|env| env == i.environment))
        .filter(|e| match &e.kind {
            EventKind::CommitInfo { commit, .. } => shipped.contains(commit.as_str()),
            EventKind::CheckStateChanged { check, .. } => i.checks.contains(check),
            _ => true,
        })
        .filter_map(|e| {
            Some(Entry {
                at: e.at,
                kind: e.kind.name().to_string(),
                text: line(e, i)?,
            })
        })
        .collect();
    timeline.sort_by_key(|e| e.at);
    let secs = |a: OffsetDateTime, b: OffsetDateTime| (b - a).whole_seconds();
    Postmortem {
        incident: i.id.clone(),
        title: i.reason.clone(),
        environment: i.environment.clone(),
        severity: <&str>::from(i.severity).to_string(),
        services: i.services.clone(),
        checks: i.checks.clone(),
        status: <&str>::from(i.status).to_string(),
        impact_started_at: i.impact_started_at,
        opened_at: i.opened_at,
        acknowledged_at: i.acknowledged.as_ref().map(|a| a.at),
        resolved_at: i.resolved_at,
        time_to_detect_s: secs(i.impact_started_at, i.opened_at),
        time_to_acknowledge_s: i.acknowledged.as_ref().map(|a| secs(i.opened_at, a.at)),
        time_to_restore_s: i.resolved_at.map(|r| secs(i.impact_started_at, r)),
        cause: i.cause.clone(),
        suspects: suspects.to_vec(),
        flag_changes: crate::suspect::flag_suspects(i, events, LEAD_IN),
        remediation: i
            .remediation
            .as_ref()
            .map(|r| takt_model::describe_remediation(r.action, r.deploy.as_deref(), r.outcome, r.detail.as_deref())),
        remediation_outcome: i.remediation.as_ref().map(|r| r.outcome),
        pages: i.pages,
        requests: Requests::of(i),
        timeline,
    }
}

/// The draft as Markdown.
pub fn markdown(p: &Postmortem) -> String {
    use std::fmt::Write;
    let mut m = String::new();
    let _ = writeln!(m, "# Postmortem: {} ({})\n", p.title, p.incident);
    let _ = writeln!(
        m,
        "_A blameless draft written by takt from its event log. It describes what happened and how the \
         system let it happen, not who. Fill in what takt cannot know, then share it._\n"
    );
    let _ = writeln!(m, "## Summary\n");
    let _ = writeln!(m, "- Environment: {}", p.environment);
    let _ = writeln!(m, "- Severity: {}", p.severity);
    let _ = writeln!(m, "- Status: {}", p.status);
    let _ = writeln!(m, "- Opened: {} UTC", hms(p.opened_at));
    match p.resolved_at {
        Some(r) => {
            let _ = writeln!(m, "- Resolved: {} UTC", hms(r));
        }
        None => {
            let _ = writeln!(m, "- Resolved: not yet");
        }
    }
    let _ = writeln!(
        m,
        "- Cause (marked): {}",
        p.cause.as_deref().unwrap_or("not marked yet")
    );
    let _ = writeln!(m, "- Remediation: {}", p.remediation.as_deref().unwrap_or("none"));
    let _ = writeln!(m, "\n## Impact\n");
    let _ = writeln!(m, "- Started: {} UTC", hms(p.impact_started_at));
    match p.time_to_restore_s {
        Some(s) => {
            let _ = writeln!(m, "- Duration: {}", span(s));
        }
        None => {
            let _ = writeln!(m, "- Duration: still going");
        }
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "none recorded".to_string()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(m, "- Services: {}", list(&p.services));
    let _ = writeln!(m, "- Checks failed: {}", list(&p.checks));
    let env = &p.environment;
    let _ = match p.requests {
        Requests::Counted { failed, total } => writeln!(
            m,
            "- Requests failed: {failed} of {total} through the proxy of {env} (from the first failing check to the resolution)"
        ),
        Requests::StillOpen => writeln!(m, "- Requests failed: still counting (the incident is open)"),
        Requests::ProxyRestarted => writeln!(
            m,
            "- Requests failed: not known (the proxy of {env} restarted meanwhile); _from the service's own figures_"
        ),
        Requests::NotMeasured => writeln!(
            m,
            "- Requests failed: _(no proxy of takt's in front of {env}: from the load balancer's or the service's own figures)_"
        ),
    };
    let _ = writeln!(m, "\n## Timeline (UTC)\n");
    for e in &p.timeline {
        let _ = writeln!(m, "- {} — {}", hms(e.at), e.text);
    }
    let _ = writeln!(m, "\n## Suspects\n");
    if p.suspects.is_empty() {
        let _ = writeln!(m, "No deployment in the hours before the impact.");
    }
    for s in &p.suspects {
        let mark = if p.cause.as_deref() == Some(s.deployment.as_str()) {
            " **(marked as the cause)**"
        } else {
            ""
        };
        let _ = writeln!(
            m,
            "- {}: {}@{}, started {} before the impact{mark}",
            s.deployment,
            s.artifact.name,
            s.artifact.version,
            span(s.before_impact_s)
        );
        for c in &s.commits {
            let _ = writeln!(
                m,
                "  - {} {} ({})",
                c.commit.get(..8).unwrap_or(&c.commit),
                c.subject.as_deref().unwrap_or(""),
                c.author.as_deref().unwrap_or("unknown")
            );
        }
    }
    if !p.flag_changes.is_empty() {
        let _ = writeln!(
            m,
            "\nFlag changes before the impact (takt reports them and never flips them back):\n"
        );
        for f in &p.flag_changes {
            let _ = writeln!(m, "- {}, {} before the impact", f.describe(), span(f.before_impact_s));
        }
    }
    let _ = writeln!(m, "\n## Root cause\n");
    let _ = writeln!(
        m,
        "_Ask why until the answer is a condition of the system, not a person:_\n"
    );
    for n in 1..=5 {
        let _ = writeln!(m, "{n}. Why? ");
    }
    let _ = writeln!(m, "\n## Detection\n");
    let _ = writeln!(
        m,
        "- Time to detect: {} (impact start to the incident)",
        span(p.time_to_detect_s)
    );
    match p.time_to_acknowledge_s {
        Some(s) => {
            let _ = writeln!(m, "- Time to acknowledge: {}", span(s));
        }
        None => {
            let _ = writeln!(m, "- Time to acknowledge: not acknowledged");
        }
    }
    let _ = writeln!(m, "- Pages to on call: {}", p.pages);
    let _ = writeln!(m, "\n## Resolution\n");
    match p.time_to_restore_s {
        Some(s) => {
            let _ = writeln!(m, "- Time to restore: {} (impact start to resolution)", span(s));
        }
        None => {
            let _ = writeln!(m, "- Time to restore: not restored yet");
        }
    }
    let _ = writeln!(m, "- How: {}", p.remediation.as_deref().unwrap_or("_(what was done)_"));
    let _ = writeln!(m, "\n## Action items\n");
    let _ = writeln!(
        m,
        "| action | owner | due |\n|---|---|---|\n| _(prevent)_ | | |\n| _(detect sooner)_ | | |\n| _(recover faster)_ | | |"
    );
    let _ = writeln!(m, "\n## Lessons learned\n");
    // What the log shows, as a start; people add the rest.
    let (mut well, mut wrong) = (Vec::new(), Vec::new());
    match p.remediation_outcome {
        Some(takt_model::RemedyOutcome::Succeeded) => well.push(format!(
            "takt's remediation restored service without anyone's help ({})",
            p.remediation.as_deref().unwrap_or_default()
        )),
        Some(takt_model::RemedyOutcome::Failed) => {
            wrong.push("takt's remediation failed; people had to step in".to_string())
        }
        _ => {}
    }
    if p.cause.is_some() {
        well.push("the deployment that caused it was identified".to_string());
    }
    if p.pages > 1 {
        wrong.push(format!(
            "{} pages went out before anyone acknowledged the incident",
            p.pages
        ));
    }
    let items = |v: &[String]| -> String {
        if v.is_empty() {
            "- \n".to_string()
        } else {
            v.iter().map(|x| format!("- {x}\n")).collect()
        }
    };
    let _ = write!(
        m,
        "### What went well\n\n{}\n### What went wrong\n\n{}\n### Where we got lucky\n\n- \n",
        items(&well),
        items(&wrong)
    );
    m
}
