//! Incidents from health checks, pure: what to open, join, or resolve given every check's
//! state and the incidents so far. Running it again on the same views asks for nothing more,
//! so the monitoring service can run it after every change and once when it starts (a crash
//! between a check's change and its incident loses nothing).
//!
//! The rules (docs/monitoring.md, "Incidents"):
//! - Checks are grouped by environment (checks without one form their own group).
//! - A check that is down and not yet in an incident opened or joined since it went down
//!   joins the group's open check incident, or opens one (impact: the earliest `since`).
//! - An open check incident all of whose checks are up again is resolved, automatically.
//! - Severity: `critical` when every check of the group is down, else `major`.
//! - A check the caller calls `quiet` (its service is under maintenance) opens nothing and
//!   joins nothing; once its window is over it does, at the next pass.

use std::collections::BTreeMap;
use takt_model::{CheckState, EventKind, IncidentStatus, IncidentTrigger, NewIncident, Severity};
use takt_views::{CheckView, Incident};

/// What the monitoring service should record.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// A new incident (`trigger: check`), numbered when it is recorded.
    Open(NewIncident),
    /// Checks that failed while the incident was open join it.
    Join {
        id: String,
        checks: Vec<String>,
        note: String,
    },
    Resolve {
        id: String,
        note: String,
    },
}

impl Act {
    /// The event that records a join or a resolution (`status`: the incident's status now,
    /// which a join keeps); `Open` goes through the numbering instead, so it has none.
    pub fn change(self, status: IncidentStatus) -> Option<EventKind> {
        match self {
            Act::Open(_) => None,
            Act::Join { id, checks, note } => Some(EventKind::IncidentUpdated {
                id,
                status,
                note: Some(note),
                by: "takt".into(),
                checks,
            }),
            Act::Resolve { id, note } => Some(EventKind::IncidentResolved {
                id,
                auto: true,
                by: "takt".into(),
                note: Some(note),
            }),
        }
    }
}

/// The acts that bring `project`'s incidents in line with its checks. `checks` and
/// `incidents` may hold other projects' too; they are ignored.
pub fn reconcile<'a>(
    project: &str,
    checks: impl IntoIterator<Item = &'a CheckView>,
    incidents: impl IntoIterator<Item = &'a Incident>,
    quiet: impl Fn(&CheckView) -> bool,
) -> Vec<Act> {
    let checks: Vec<&CheckView> = checks.into_iter().filter(|c| c.project == project).collect();
    let ours: Vec<&Incident> = incidents
        .into_iter()
        .filter(|i| i.project == project && i.trigger == IncidentTrigger::Check)
        .collect();
    let state = |name: &str| checks.iter().find(|c| c.check == name).map(|c| c.state);
    let mut acts = Vec::new();

    // Resolve first: an incident whose checks all pass again (or are no longer checked).
    let mut resolved = Vec::new();
    for i in ours.iter().filter(|i| i.is_open()) {
        if i.checks.iter().all(|c| state(c) != Some(CheckState::Down)) {
            resolved.push(i.id.clone());
            acts.push(Act::Resolve {
                id: i.id.clone(),
                note: format!("{} passing again", list(&i.checks)),
            });
        }
    }

    let mut groups: BTreeMap<String, Vec<&CheckView>> = BTreeMap::new();
    for c in &checks {
        groups
            .entry(c.environment.clone().unwrap_or_default())
            .or_default()
            .push(c);
    }
    for (env, group) in groups {
        // Down checks not covered by an incident since they went down.
        let uncovered: Vec<&CheckView> = group
            .iter()
            .copied()
            .filter(|c| c.state == CheckState::Down && !quiet(c))
            .filter(|c| {
                !ours
                    .iter()
                    .any(|i| i.joined.get(&c.check).is_some_and(|at| *at >= c.changed_at))
            })
            .collect();
        if uncovered.is_empty() {
            continue;
        }
        let names: Vec<String> = uncovered.iter().map(|c| c.check.clone()).collect();
        let open = ours
            .iter()
            .filter(|i| i.is_open() && i.environment == env && !resolved.contains(&i.id))
            .max_by_key(|i| i.opened_at);
        match open {
            Some(i) => acts.push(Act::Join {
                id: i.id.clone(),
                note: format!("{} failing too: {}", list(&names), uncovered[0].reason),
                checks: names,
            }),
            None => {
                let mut services: Vec<String> = uncovered.iter().map(|c| c.service.clone()).collect();
                services.sort();
                services.dedup();
                let all_down = group.iter().all(|c| c.state == CheckState::Down);
                acts.push(Act::Open(NewIncident {
                    environment: env,
                    services,
                    reason: format!("{} failing: {}", list(&names), uncovered[0].reason),
                    checks: names,
                    severity: if all_down { Severity::Critical } else { Severity::Major },
                    impact_started_at: uncovered.iter().map(|c| c.since).min(),
                    trigger: IncidentTrigger::Check,
                    by: None,
                }));
            }
        }
    }
    acts
}

/// `check `a``, or `checks `a`, `b``.
fn list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.len() {
        1 => format!("check {}", quoted[0]),
        _ => format!("checks {}", quoted.join(", ")),
    }
}

/// When incident `i` is next reminded of, reminding `every` so often: a period after it opened
/// or after the last reminder (after a long pause, one reminder, not one per period missed).
/// None once it is resolved or acknowledged, or when a person opened it (they know).
pub fn next_reminder(i: &Incident, every: std::time::Duration) -> Option<takt_model::OffsetDateTime> {
    if !i.is_open() || i.acknowledged.is_some() || i.trigger == IncidentTrigger::Person {
        return None;
    }
    i.reminded_at.unwrap_or(i.opened_at).checked_add(every.try_into().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use takt_model::{Event, OffsetDateTime};
    use takt_views::{Checks, Incidents, Projection};
    use time::Duration;

    const T0: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    fn at(mut e: Event, secs: i64) -> Event {
        e.at = T0 + Duration::seconds(secs);
        e
    }

    fn change(check: &str, env: &str, state: CheckState, since: i64, now: i64) -> Event {
        at(
            Event::now(
                "p",
                None,
                EventKind::CheckStateChanged {
                    check: check.into(),
                    service: "shop".into(),
                    environment: Some(env.into()),
                    state,
                    streak: 3,
                    reason: "[STATUS] (503) == 200".into(),
                    since: T0 + Duration::seconds(since),
                },
            ),
            now,
        )
    }

    /// Applies the acts as the service does, numbering incidents `p#1`, `p#2`, ...
    fn record(log: &mut Vec<Event>, acts: &[Act], now: i64) {
        for a in acts {
            let view = Incidents::fold(log.iter());
            let kind = match a.clone() {
                Act::Open(new) => new.opened(&view.next_id("p")),
                other => other.change(IncidentStatus::Investigating).unwrap(),
            };
            log.push(at(Event::now("p", None, kind), now));
        }
    }

    #[test]
    fn reminders_come_a_period_after_the_last_until_acknowledged() {
        let every = std::time::Duration::from_secs(60);
        let mut log = vec![change("home", "production", CheckState::Down, 0, 10)];
        step(&mut log, 10);
        let view = |log: &Vec<Event>| Incidents::fold(log.iter()).get("p#1").cloned().unwrap();
        assert_eq!(next_reminder(&view(&log), every), Some(T0 + Duration::seconds(70)));
        // Sent late (the server was down): the next is a period after it, not after the first.
        let reminded = EventKind::IncidentReminder {
            id: "p#1".into(),
            count: 1,
        };
        log.push(at(Event::now("p", None, reminded), 500));
        assert_eq!(view(&log).reminders, 1);
        assert_eq!(next_reminder(&view(&log), every), Some(T0 + Duration::seconds(560)));
        let ack = EventKind::IncidentAcknowledged {
            id: "p#1".into(),
            by: "ana".into(),
        };
        log.push(at(Event::now("p", None, ack), 510));
        assert_eq!(next_reminder(&view(&log), every), None, "acknowledged");
        // A person's incident: they know.
        let mut new = NewIncident::by_takt("production", "slow checkout", IncidentTrigger::Person);
        new.by = Some("ana".into());
        log.push(at(Event::now("p", None, new.opened("p#2")), 600));
        let i = Incidents::fold(log.iter()).get("p#2").cloned().unwrap();
        assert_eq!(next_reminder(&i, every), None);
    }

    fn step(log: &mut Vec<Event>, now: i64) -> Vec<Act> {
        let checks = Checks::fold(log.iter());
        let incidents = Incidents::fold(log.iter());
        let acts = reconcile("p", checks.checks.values(), incidents.incidents.values(), |_| false);
        record(log, &acts, now);
        acts
    }

    #[test]
    fn a_failing_check_opens_one_incident_that_others_join_and_recovery_resolves() {
        let mut log = vec![change("api", "production", CheckState::Up, 0, 0)];
        assert_eq!(step(&mut log, 1), []);

        log.push(change("home", "production", CheckState::Down, 10, 40));
        let acts = step(&mut log, 41);
        let [Act::Open(new)] = &acts[..] else {
            panic!("{acts:?}")
        };
        assert_eq!(
            (new.environment.as_str(), &new.checks[..]),
            ("production", &["home".to_string()][..])
        );
        assert_eq!(new.severity, Severity::Major, "`api` still passes");
        assert_eq!(
            new.impact_started_at,
            Some(T0 + Duration::seconds(10)),
            "the first failing result"
        );
        assert_eq!(
            step(&mut log, 42),
            [],
            "once only: a second pass (a restart) adds nothing"
        );

        log.push(change("api", "production", CheckState::Down, 50, 60));
        let acts = step(&mut log, 61);
        assert!(
            matches!(&acts[..], [Act::Join { id, checks, .. }] if id == "p#1" && checks == &["api"]),
            "{acts:?}"
        );
        assert_eq!(step(&mut log, 62), []);

        log.push(change("home", "production", CheckState::Up, 70, 80));
        assert_eq!(step(&mut log, 81), [], "`api` is still down");
        log.push(change("api", "production", CheckState::Up, 90, 100));
        let acts = step(&mut log, 101);
        assert!(
            matches!(&acts[..], [Act::Resolve { id, .. }] if id == "p#1"),
            "{acts:?}"
        );
        let view = Incidents::fold(log.iter());
        assert!(view.get("p#1").unwrap().auto_resolved);
        assert_eq!(step(&mut log, 102), []);

        // A new failure later is a new incident.
        log.push(change("home", "production", CheckState::Down, 200, 230));
        let acts = step(&mut log, 231);
        assert!(matches!(&acts[..], [Act::Open(_)]), "{acts:?}");
        assert_eq!(Incidents::fold(log.iter()).next_id("p"), "p#3");
    }

    #[test]
    fn a_person_resolving_while_checks_still_fail_does_not_reopen_until_they_fail_again() {
        let mut log = vec![change("home", "staging", CheckState::Down, 0, 30)];
        let acts = step(&mut log, 31);
        assert!(
            matches!(
                &acts[..],
                [Act::Open(NewIncident {
                    severity: Severity::Critical,
                    ..
                })]
            ),
            "every check of staging is down: {acts:?}"
        );
        log.push(at(
            Event::now(
                "p",
                None,
                EventKind::IncidentResolved {
                    id: "p#1".into(),
                    auto: false,
                    by: "ann".into(),
                    note: None,
                },
            ),
            40,
        ));
        assert_eq!(step(&mut log, 41), [], "still the same failure");
        log.push(change("home", "staging", CheckState::Up, 50, 60));
        assert_eq!(step(&mut log, 61), []);
        log.push(change("home", "staging", CheckState::Down, 70, 90));
        assert!(matches!(&step(&mut log, 91)[..], [Act::Open(_)]));
    }

    #[test]
    fn environments_are_separate_and_other_incidents_are_left_alone() {
        let mut log = vec![
            at(
                Event::now(
                    "p",
                    None,
                    EventKind::IncidentOpened {
                        environment: "production".into(),
                        reason: "rollback failed".into(),
                        id: Some("p#1".into()),
                        severity: Severity::Critical,
                        services: vec![],
                        impact_started_at: None,
                        trigger: IncidentTrigger::RollbackFailed,
                        checks: vec![],
                        by: None,
                    },
                ),
                0,
            ),
            change("home", "production", CheckState::Down, 5, 10),
            change("home-stg", "staging", CheckState::Down, 5, 10),
        ];
        let acts = step(&mut log, 11);
        assert_eq!(acts.len(), 2, "{acts:?}");
        assert!(
            acts.iter().all(|a| matches!(a, Act::Open(_))),
            "a rollback's incident is not joined"
        );
        log.push(change("home", "production", CheckState::Up, 20, 30));
        let acts = step(&mut log, 31);
        assert!(
            matches!(&acts[..], [Act::Resolve { id, .. }] if id == "p#2"),
            "{acts:?}"
        );
        assert!(Incidents::fold(log.iter()).get("p#1").unwrap().is_open());
    }
}
