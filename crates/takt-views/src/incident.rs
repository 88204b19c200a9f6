//! Incidents: opened by a failed rollback (and, with monitoring, by checks), moved on by people
//! or takt, resolved, and marked with the deployment that caused them.

use crate::Projection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use takt_model::{
    Event, EventKind, IncidentStatus, IncidentTrigger, OffsetDateTime, PageReason, RemedyAction, RemedyOutcome,
    Severity, incident_id, timefmt,
};

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentEntry {
    #[serde(with = "timefmt::ms")]
    pub at: OffsetDateTime,
    /// The event kind that made it (`incident_opened`, `incident_updated`, ...).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<IncidentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// One incident as its events tell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub project: String,
    pub environment: String,
    pub reason: String,
    pub severity: Severity,
    pub services: Vec<String>,
    pub status: IncidentStatus,
    #[serde(with = "timefmt::ms")]
    pub opened_at: OffsetDateTime,
    /// When users began to be affected: the opening, unless it says earlier.
    #[serde(with = "timefmt::ms")]
    pub impact_started_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "timefmt::ms::option")]
    pub resolved_at: Option<OffsetDateTime>,
    /// Resolved by takt (its checks passed again), not by a person.
    pub auto_resolved: bool,
    /// The deployment marked as its cause (`PROJECT/ENV#N`); the last mark wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub trigger: IncidentTrigger,
    /// The checks whose failure it is about (those that opened it, then those that joined).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// When each of its checks joined it (the opening, for those that opened it).
    #[serde(skip)]
    pub joined: BTreeMap<String, OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledged>,
    /// Reminders sent while it was open and unacknowledged (`remind_every`), and the last.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reminders: u32,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "timefmt::ms::option")]
    pub reminded_at: Option<OffsetDateTime>,
    /// What remediation did about it (`remediate:`), as it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<Remediation>,
    /// Pages to the on-call subscribers, and the last.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pages: u32,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "timefmt::ms::option")]
    pub paged_at: Option<OffsetDateTime>,
    pub timeline: Vec<IncidentEntry>,
    /// The environment's proxy's counters at the impact and at the resolution
    /// (`incident_traffic`): the postmortem's "requests failed".
    #[serde(skip)]
    pub traffic_at_impact: Option<takt_model::RequestCounts>,
    #[serde(skip)]
    pub traffic_at_end: Option<takt_model::RequestCounts>,
}

/// An incident's remediation: what takt did, on which deployment, and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remediation {
    pub action: RemedyAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<String>,
    pub outcome: RemedyOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(with = "timefmt::ms")]
    pub at: OffsetDateTime,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Who took an incident on, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledged {
    pub by: String,
    #[serde(with = "timefmt::ms")]
    pub at: OffsetDateTime,
}

impl Incident {
    pub fn is_open(&self) -> bool {
        self.status != IncidentStatus::Resolved
    }
}

/// Every incident, by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Incidents {
    pub incidents: BTreeMap<String, Incident>,
}

impl Incidents {
    pub fn get(&self, id: &str) -> Option<&Incident> {
        self.incidents.get(id)
    }

    /// The id the next incident of `project` gets: `PROJECT#N`, one more than the largest
    /// number any of its incidents has (those before 0.2 are numbered by their `seq`).
    pub fn next_id(&self, project: &str) -> String {
        let prefix = format!("{project}#");
        let last = self
            .incidents
            .keys()
            .filter_map(|id| id.strip_prefix(&prefix)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        format!("{prefix}{}", last + 1)
    }
}

impl Projection for Incidents {
    const KINDS: &'static [&'static str] = &[
        "incident_opened",
        "incident_updated",
        "incident_acknowledged",
        "incident_resolved",
        "incident_cause_marked",
        "incident_reminder",
        "incident_remediation",
        "incident_paged",
        "incident_traffic",
    ];

    fn apply(&mut self, e: &Event) {
        let entry = |status, note: Option<&String>, by: Option<&String>| IncidentEntry {
            at: e.at,
            kind: e.kind.name().to_string(),
            status,
            note: note.cloned(),
            by: by.cloned(),
        };
        match &e.kind {
            EventKind::IncidentOpened {
                environment,
                reason,
                severity,
                services,
                impact_started_at,
                trigger,
                checks,
                by,
                ..
            } => {
                let Some(id) = incident_id(e) else { return };
                let incident = Incident {
                    id: id.clone(),
                    project: e.project.clone(),
                    environment: environment.clone(),
                    reason: reason.clone(),
                    severity: *severity,
                    services: services.clone(),
                    status: IncidentStatus::Investigating,
                    opened_at: e.at,
                    impact_started_at: impact_started_at.filter(|t| *t < e.at).unwrap_or(e.at),
                    resolved_at: None,
                    auto_resolved: false,
                    cause: None,
                    trigger: *trigger,
                    checks: checks.clone(),
                    joined: checks.iter().map(|c| (c.clone(), e.at)).collect(),
                    acknowledged: None,
                    reminders: 0,
                    reminded_at: None,
                    remediation: None,
                    pages: 0,
                    paged_at: None,
                    traffic_at_impact: None,
                    traffic_at_end: None,
                    timeline: vec![entry(Some(IncidentStatus::Investigating), Some(reason), by.as_ref())],
                };
                self.incidents.insert(id, incident);
            }
            EventKind::IncidentUpdated {
                id,
                status,
                note,
                by,
                checks,
            } => {
                if let Some(i) = self.incidents.get_mut(id) {
                    for c in checks {
                        if !i.joined.contains_key(c) {
                            i.checks.push(c.clone());
                        }
                        i.joined.insert(c.clone(), e.at);
                    }
                    i.status = *status;
                    if *status == IncidentStatus::Resolved && i.resolved_at.is_none() {
                        i.resolved_at = Some(e.at);
                    }
                    i.timeline.push(entry(Some(*status), note.as_ref(), Some(by)));
                }
            }
            EventKind::IncidentAcknowledged { id, by } => {
                if let Some(i) = self.incidents.get_mut(id) {
                    i.acknowledged = Some(Acknowledged {
                        by: by.clone(),
                        at: e.at,
                    });
                    i.timeline.push(IncidentEntry {
                        at: e.at,
                        kind: e.kind.name().to_string(),
                        status: None,
                        note: Some("acknowledged".into()),
                        by: Some(by.clone()),
                    });
                }
            }
            EventKind::IncidentTraffic {
                id,
                mark,
                requests,
                errors,
            } => {
                if let Some(i) = self.incidents.get_mut(id) {
                    let counts = Some(takt_model::RequestCounts {
                        requests: *requests,
                        errors: *errors,
                    });
                    match mark {
                        takt_model::TrafficMark::Impact => i.traffic_at_impact = counts,
                        takt_model::TrafficMark::Resolved => i.traffic_at_end = counts,
                    }
                }
            }
            EventKind::IncidentReminder { id, count } => {
                if let Some(i) = self.incidents.get_mut(id) {
                    i.reminders = i.reminders.max(*count);
                    i.reminded_at = Some(e.at);
                }
            }
            EventKind::IncidentResolved { id, auto, by, note } => {
                if let Some(i) = self.incidents.get_mut(id) {
                    i.status = IncidentStatus::Resolved;
                    i.resolved_at = Some(e.at);
                    i.auto_resolved = *auto;
                    i.timeline
                        .push(entry(Some(IncidentStatus::Resolved), note.as_ref(), Some(by)));
                }
            }
            EventKind::IncidentRemediation {
                id,
                action,
                deploy,
                outcome,
                detail,
            } => {
                if let Some(i) = self.incidents.get_mut(id) {
                    let what =
                        takt_model::describe_remediation(*action, deploy.as_deref(), *outcome, detail.as_deref());
                    let note = format!("remediation: {what}");
                    i.timeline.push(entry(None, Some(&note), Some(&"takt".to_string())));
                    i.remediation = Some(Remediation {
                        action: *action,
                        deploy: deploy.clone(),
                        outcome: *outcome,
                        detail: detail.clone(),
                        at: e.at,
                    });
                }
            }
            EventKind::IncidentPaged { id, count, reason } => {
                if let Some(i) = self.incidents.get_mut(id) {
                    i.pages = i.pages.max(*count);
                    i.paged_at = Some(e.at);
                    let why = match reason {
                        PageReason::Unresolved => "still unresolved",
                        PageReason::RemediationFailed => "remediation failed",
                    };
                    let note = format!("paged on call (page {count}: {why})");
                    i.timeline.push(entry(None, Some(&note), Some(&"takt".to_string())));
                }
            }
            EventKind::IncidentCauseMarked { id, deploy, by } => {
                if let Some(i) = self.incidents.get_mut(id) {
                    i.cause = deploy.clone();
                    let note = match deploy {
                        Some(d) => format!("cause: {d}"),
                        None => "cause: none".to_string(),
                    };
                    i.timeline.push(entry(None, Some(&note), Some(by)));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incident_folds_from_open_to_resolved_and_the_last_cause_mark_wins() {
        let mut legacy = Event::now(
            "p",
            None,
            EventKind::IncidentOpened {
                environment: "prod".into(),
                reason: "rollback's smoke checks failed".into(),
                id: None,
                severity: Severity::default(),
                services: vec![],
                impact_started_at: None,
                trigger: IncidentTrigger::default(),
                checks: vec![],
                by: None,
            },
        );
        legacy.seq = Some(41);
        let opened = Event::now(
            "p",
            None,
            EventKind::IncidentOpened {
                environment: "prod".into(),
                reason: "check `home` failing".into(),
                id: Some("p#42".into()),
                severity: Severity::Major,
                services: vec!["web".into()],
                impact_started_at: Some(legacy.at - time::Duration::minutes(3)),
                trigger: IncidentTrigger::Check,
                checks: vec!["home".into()],
                by: None,
            },
        );
        let later = |kind| Event::now("p", None, kind);
        let events = [
            legacy.clone(),
            opened.clone(),
            later(EventKind::IncidentUpdated {
                id: "p#42".into(),
                status: IncidentStatus::Identified,
                note: Some("bad config".into()),
                by: "token 1".into(),
                checks: vec!["api".into(), "home".into()],
            }),
            later(EventKind::IncidentAcknowledged {
                id: "p#42".into(),
                by: "ann".into(),
            }),
            later(EventKind::IncidentCauseMarked {
                id: "p#42".into(),
                deploy: Some("p/prod#7".into()),
                by: "takt".into(),
            }),
            later(EventKind::IncidentCauseMarked {
                id: "p#42".into(),
                deploy: None,
                by: "token 1".into(),
            }),
            later(EventKind::IncidentResolved {
                id: "p#42".into(),
                auto: true,
                by: "takt".into(),
                note: None,
            }),
            // Unknown ids change nothing.
            later(EventKind::IncidentResolved {
                id: "p#99".into(),
                auto: false,
                by: "x".into(),
                note: None,
            }),
        ];
        let view = Incidents::fold(&events);
        assert_eq!(view.incidents.len(), 2);
        let old = view.get("p#41").unwrap();
        assert_eq!(
            (old.severity, old.status),
            (Severity::Critical, IncidentStatus::Investigating)
        );
        assert_eq!(old.impact_started_at, old.opened_at);
        let i = view.get("p#42").unwrap();
        assert_eq!(i.status, IncidentStatus::Resolved);
        assert!(i.auto_resolved);
        assert_eq!(i.cause, None, "the last mark wins");
        assert_eq!(i.timeline.len(), 6);
        assert_eq!(i.checks, ["home", "api"], "a check joins once, in order");
        assert_eq!(i.acknowledged.as_ref().map(|a| a.by.as_str()), Some("ann"));
        assert!(old.is_open() && !i.is_open());
        assert!(i.impact_started_at < i.opened_at);
        assert_eq!(view.next_id("p"), "p#43");
        assert_eq!(view.next_id("q"), "q#1");
    }
}
