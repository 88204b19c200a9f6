//! Incidents: opened by takt (a failed rollback, a deploy its analysis rolled back, failing
//! checks through the monitoring service) or by a person, then noted, moved through
//! `investigating`, `identified`, `monitoring`, `resolved`, acknowledged, and marked with the
//! deployment that caused them. Every change is an event; the view is folded from them.

use crate::{Cd, CdError};
use takt_model::{Event, EventKind, IncidentStatus, NewIncident};
use takt_monitor::suspect::{DEFAULT_WINDOW, Suspect, suspects};
use takt_store::EventFilter;
use takt_views::{Commits, Incident, Incidents, Projection};

/// An incident id, `PROJECT#N`, split (`N` must be a number).
pub fn parse_id(id: &str) -> Result<(String, u64), CdError> {
    takt_model::parse_incident_id(id)
        .map(|(p, n)| (p.to_string(), n))
        .ok_or_else(|| CdError::BadRequest(takt_model::bad_incident_id(id)))
}

/// A change a person or takt makes to an open incident.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A status, a note, or both.
    Update {
        status: Option<IncidentStatus>,
        note: Option<String>,
    },
    Acknowledge,
    Resolve {
        note: Option<String>,
    },
    /// The deployment (`PROJECT/ENV#N`) that caused it, or none.
    Cause {
        deploy: Option<String>,
    },
}

impl Cd {
    /// `project`'s incidents, folded from the log.
    pub async fn incidents(&self, project: Option<&str>) -> Result<Incidents, CdError> {
        let events = self
            .store
            .events(&EventFilter {
                project: project.map(str::to_string),
                kinds: Incidents::KINDS.to_vec(),
                ..Default::default()
            })
            .await?;
        Ok(Incidents::fold(&events))
    }

    /// One incident (`PROJECT#N`).
    pub async fn incident(&self, id: &str) -> Result<Incident, CdError> {
        let (project, _) = parse_id(id)?;
        self.incidents(Some(&project))
            .await?
            .get(id)
            .cloned()
            .ok_or_else(|| CdError::NotFound(format!("no incident {id}; `takt incident ls --all` lists them")))
    }

    /// The deployments that most likely caused `incident`, most likely first.
    pub async fn suspects(&self, incident: &Incident) -> Result<Vec<Suspect>, CdError> {
        let events = self
            .store
            .events(&EventFilter {
                kinds: Commits::KINDS.to_vec(),
                ..Default::default()
            })
            .await?;
        let commits = Commits::fold(&events);
        Ok(self
            .deployments
            .index
            .with(|envs| suspects(incident, envs, &commits, DEFAULT_WINDOW)))
    }

    /// The flag changes that may have caused `incident` (any project's, in its environment,
    /// in the 2 h before its impact).
    pub async fn flag_suspects(&self, incident: &Incident) -> Result<Vec<takt_monitor::suspect::FlagSuspect>, CdError> {
        let events = self
            .store
            .events(&EventFilter {
                kinds: vec!["flag_changed"],
                since: Some(incident.impact_started_at - DEFAULT_WINDOW),
                until: Some(incident.impact_started_at + time::Duration::seconds(1)),
                ..Default::default()
            })
            .await?;
        Ok(takt_monitor::suspect::flag_suspects(incident, &events, DEFAULT_WINDOW))
    }

    /// A blameless postmortem draft of incident `id`, from the log around it.
    pub async fn postmortem(&self, id: &str) -> Result<takt_monitor::postmortem::Postmortem, CdError> {
        let incident = self.incident(id).await?;
        let suspects = self.suspects(&incident).await?;
        let events = self
            .store
            .events(&EventFilter {
                project: Some(incident.project.clone()),
                kinds: takt_monitor::postmortem::KINDS.to_vec(),
                since: Some(incident.impact_started_at - takt_monitor::postmortem::LEAD_IN),
                until: incident.resolved_at.map(|r| r + time::Duration::seconds(1)),
                ..Default::default()
            })
            .await?;
        Ok(takt_monitor::postmortem::draft(
            &incident,
            &events,
            &suspects,
            takt_model::OffsetDateTime::now_utc(),
        ))
    }

    /// Opens an incident in `project` (id `PROJECT#N`, the next number).
    pub async fn open_incident(&self, project: &str, new: NewIncident) -> Result<String, CdError> {
        // One at a time, so that two incidents never get the same number.
        let _one = self.incidents.lock().await;
        let id = self.incidents(Some(project)).await?.next_id(project);
        self.record(Event::now(project, None, new.opened(&id))).await?;
        Ok(id)
    }

    /// Makes `change` to incident `id` as `by`; returns its status afterwards. A resolved
    /// incident takes notes and cause marks only.
    pub async fn change_incident(&self, id: &str, change: Change, by: &str) -> Result<IncidentStatus, CdError> {
        // One change at a time, checked against the view as it is then.
        let _one = self.incidents.lock().await;
        let i = self.incident(id).await?;
        let closed = |what: &str| {
            CdError::Conflict(format!(
                "incident {id} is resolved; it cannot be {what} (open a new one with `takt incident open`)"
            ))
        };
        let by = by.to_string();
        let id = id.to_string();
        let (kind, status) = match change {
            Change::Update {
                status: None,
                note: None,
            } => {
                return Err(CdError::BadRequest("give a status, a note, or both".into()));
            }
            Change::Update { status, note } => {
                if !i.is_open() && status.is_some() {
                    return Err(closed("moved on"));
                }
                if status == Some(IncidentStatus::Resolved) && i.is_open() {
                    let kind = EventKind::IncidentResolved {
                        id,
                        auto: false,
                        by,
                        note,
                    };
                    (kind, IncidentStatus::Resolved)
                } else {
                    let status = status.unwrap_or(i.status);
                    let kind = EventKind::IncidentUpdated {
                        id,
                        status,
                        note,
                        by,
                        checks: Vec::new(),
                    };
                    (kind, status)
                }
            }
            Change::Acknowledge if !i.is_open() => return Err(closed("acknowledged")),
            Change::Acknowledge => (EventKind::IncidentAcknowledged { id, by }, i.status),
            Change::Resolve { .. } if !i.is_open() => return Err(closed("resolved again")),
            Change::Resolve { note } => (
                EventKind::IncidentResolved {
                    id,
                    auto: false,
                    by,
                    note,
                },
                IncidentStatus::Resolved,
            ),
            Change::Cause { deploy } => {
                if let Some(d) = &deploy {
                    self.known_deployment(d)?;
                }
                (EventKind::IncidentCauseMarked { id, deploy, by }, i.status)
            }
        };
        self.record(Event::now(&i.project, None, kind)).await?;
        Ok(status)
    }

    /// Checks that `PROJECT/ENV#N` names a deployment takt made.
    fn known_deployment(&self, d: &str) -> Result<(), CdError> {
        let bad = || {
            CdError::BadRequest(format!(
                "`{d}` is not a deployment: give PROJECT/ENV#N (e.g. shop/production#7)"
            ))
        };
        let (env, n) = d.rsplit_once('#').ok_or_else(bad)?;
        let (project, env) = env.split_once('/').ok_or_else(bad)?;
        let n: u64 = n.parse().map_err(|_| bad())?;
        let known = self
            .deployments
            .index
            .get(project, env)
            .is_some_and(|v| n >= 1 && n < v.next_deploy());
        if !known {
            return Err(CdError::NotFound(format!(
                "no deployment {d}; `takt env show {env} --project {project}` lists them"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_at_the_last_hash() {
        assert_eq!(parse_id("shop#3").unwrap(), ("shop".to_string(), 3));
        assert_eq!(parse_id("a#b#12").unwrap(), ("a#b".to_string(), 12));
        for bad in ["shop", "shop#", "#3", "shop#x", "shop#-1"] {
            assert!(matches!(parse_id(bad), Err(CdError::BadRequest(_))), "{bad}");
        }
    }
}
