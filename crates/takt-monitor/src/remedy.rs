//! Remediation and escalation, pure: what takt does itself about an incident a check opened in
//! a production environment (roll back, restart or run a command, on the deployment that most
//! likely caused it), and when it pages the on-call subscribers. Time is passed in.
//!
//! - [`plan`]: one remediation per incident, on the newest deployment still running that
//!   finished within `remediate_window` before the incident opened (or the deploy still in
//!   flight, which is rolled back); none while the environment is halted; none for
//!   `remediate: none`, other environments than production, or incidents a person opened.
//! - [`next_page`]: the first page `escalate_after` after the opening (at once when the
//!   remediation failed), then one every `remind_every` (else `escalate_after`) until someone
//!   acknowledges or it is resolved.

use std::time::Duration;
use takt_model::{DeployOutcome, IncidentTrigger, OffsetDateTime, PageReason, RemedyAction, RemedyOutcome};
use takt_views::{EnvView, Incident};

/// An environment's remediation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `remediate:`; `None`: `none`.
    pub action: Option<RemedyAction>,
    /// `remediate_window`.
    pub window: Duration,
    /// Whether the environment is production (only production is remediated and paged).
    pub production: bool,
}

/// What to do about an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// `action` on deployment number `deploy`. `in_flight`: it is still deploying, so it is
    /// stopped and rolled back whatever `remediate:` says.
    Act {
        action: RemedyAction,
        deploy: u64,
        in_flight: bool,
    },
    /// Nothing, for this reason (recorded on the incident's timeline, once).
    Skip {
        action: RemedyAction,
        deploy: Option<u64>,
        why: String,
    },
}

/// What remediation does about incident `i` of an environment with `policy`, whose view is
/// `env`; `None`: remediation does not apply (and records nothing).
pub fn plan(i: &Incident, policy: &Policy, env: &EnvView) -> Option<Plan> {
    let action = policy.action?;
    if !policy.production || i.trigger != IncidentTrigger::Check || !i.is_open() || i.remediation.is_some() {
        return None;
    }
    let skip = |deploy: Option<u64>, why: String| Some(Plan::Skip { action, deploy, why });
    if let Some(h) = &env.halted {
        return skip(None, format!("the environment is halted ({})", h.reason));
    }
    let parse = |t: &str| takt_model::timefmt::parse_rfc3339(t);
    // A deployment is a suspect only when the impact began after it started: a check that
    // was failing before (say, before anything ran here) is not its doing.
    let before_it = |started: &str| parse(started).is_some_and(|s| i.impact_started_at < s);
    if let Some(f) = &env.deploying {
        if f.rollback {
            return skip(Some(f.deploy), "a rollback is already in flight".into());
        }
        if before_it(&f.started_at) {
            return skip(
                Some(f.deploy),
                "the impact began before the deploy in flight started: not its doing".into(),
            );
        }
        return Some(Plan::Act {
            action: RemedyAction::Rollback,
            deploy: f.deploy,
            in_flight: true,
        });
    }
    // The newest deployment that succeeded with what runs now (a later one that failed or was
    // rolled back changed nothing; a restore after a restart is no one's change).
    let running = env.running.as_ref().map(|r| r.digest.as_str());
    let last = env.history.iter().find(|d| {
        d.outcome == Some(DeployOutcome::Succeeded)
            && Some(d.artifact.digest.as_str()) == running
            && d.strategy != takt_model::DeployStrategy::Restore
    });
    let Some(last) = last else {
        return skip(None, "no deployment that succeeded runs here".into());
    };
    let window = time::Duration::try_from(policy.window).unwrap_or(time::Duration::MAX);
    let finished = last.finished_at.as_deref().and_then(parse);
    let recent = finished.is_some_and(|f| f <= i.opened_at && i.opened_at - f <= window);
    if recent && before_it(&last.started_at) {
        return skip(
            Some(last.deploy),
            "the impact began before the last deployment started: not its doing".into(),
        );
    }
    if !recent {
        return skip(
            None,
            format!(
                "no deployment still running finished within remediate_window ({}) before the incident opened",
                takt_model::timefmt::human(policy.window)
            ),
        );
    }
    if action == RemedyAction::Rollback {
        if last.rollback {
            return skip(Some(last.deploy), "the last deployment was a rollback already".into());
        }
        if !env.previous.iter().any(|p| p.digest != last.artifact.digest) {
            return skip(
                Some(last.deploy),
                "nothing ran healthy here before it: nothing to roll back to".into(),
            );
        }
    }
    Some(Plan::Act {
        action,
        deploy: last.deploy,
        in_flight: false,
    })
}

/// When incident `i` next pages the on-call subscribers, and why; `None`: it does not (it is
/// resolved, acknowledged, a person opened it, or its environment is not production).
pub fn next_page(
    i: &Incident,
    production: bool,
    escalate_after: Duration,
    repeat: Option<Duration>,
) -> Option<(OffsetDateTime, PageReason)> {
    if !production || !i.is_open() || i.acknowledged.is_some() || i.trigger == IncidentTrigger::Person {
        return None;
    }
    let after = |t: OffsetDateTime, d: Duration| t.checked_add(time::Duration::try_from(d).ok()?);
    if i.pages == 0 {
        let unresolved = after(i.opened_at, escalate_after)?;
        return match &i.remediation {
            Some(r) if r.outcome == RemedyOutcome::Failed && r.at < unresolved => {
                Some((r.at, PageReason::RemediationFailed))
            }
            _ => Some((unresolved, PageReason::Unresolved)),
        };
    }
    let last = i.paged_at.unwrap_or(i.opened_at);
    // A remediation that failed after the last page pages at once.
    if let Some(r) = &i.remediation
        && r.outcome == RemedyOutcome::Failed
        && r.at > last
    {
        return Some((r.at, PageReason::RemediationFailed));
    }
    Some((after(last, repeat.unwrap_or(escalate_after))?, PageReason::Unresolved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use takt_model::*;
    use takt_views::{Environments, Incidents, Projection};

    const T0: OffsetDateTime = time::macros::datetime!(2026-11-01 12:00 UTC);
    const POLICY: Policy = Policy {
        action: Some(RemedyAction::Rollback),
        window: Duration::from_secs(30 * 60),
        production: true,
    };

    fn at(kind: EventKind, min: i64) -> Event {
        let mut e = Event::now("shop", None, kind);
        e.at = T0 + time::Duration::minutes(min);
        e
    }

    fn art(v: &str) -> ArtifactRef {
        ArtifactRef {
            name: "app".into(),
            version: v.into(),
            digest: format!("sha256:{v}"),
            commit: None,
        }
    }

    /// Deployment `n` of `v` to production, started at minute `min`, finished a minute later
    /// (`None`: still in flight).
    fn deploy(n: u64, v: &str, min: i64, outcome: Option<DeployOutcome>) -> Vec<Event> {
        let mut out = vec![at(
            EventKind::DeployStarted {
                environment: "production".into(),
                deploy: n,
                artifact: art(v),
                previous: None,
                commits: vec![],
                truncated: 0,
                trigger: DeployTrigger::Pipeline { run: n },
                strategy: DeployStrategy::Canary,
                rollback: false,
                fixes: None,
            },
            min,
        )];
        if let Some(outcome) = outcome {
            out.push(at(
                EventKind::DeployFinished {
                    environment: "production".into(),
                    deploy: n,
                    outcome,
                    // What runs afterwards: it, unless it was rolled back to v1.
                    running: Some(art(if outcome == DeployOutcome::Succeeded { v } else { "v1" })),
                    reason: None,
                },
                min + 1,
            ));
        }
        out
    }

    fn env(events: &[Event]) -> EnvView {
        Environments::fold(events)
            .get("shop", "production")
            .cloned()
            .unwrap_or_default()
    }

    fn incident(min: i64, trigger: IncidentTrigger, more: &[Event]) -> Incident {
        let mut new = NewIncident::by_takt("production", "check `home` failing", trigger);
        new.checks = vec!["home".into()];
        let mut events = vec![at(new.opened("shop#1"), min)];
        events.extend_from_slice(more);
        Incidents::fold(&events).get("shop#1").cloned().unwrap()
    }

    #[test]
    fn a_check_incident_soon_after_a_deploy_rolls_that_deploy_back() {
        let log = [
            deploy(1, "v1", 0, Some(DeployOutcome::Succeeded)),
            deploy(2, "v2", 60, Some(DeployOutcome::Succeeded)),
        ]
        .concat();
        let i = incident(61 + 10, IncidentTrigger::Check, &[]);
        assert_eq!(
            plan(&i, &POLICY, &env(&log)),
            Some(Plan::Act {
                action: RemedyAction::Rollback,
                deploy: 2,
                in_flight: false
            })
        );
        // Restart and command act on it the same way.
        let restart = Policy {
            action: Some(RemedyAction::Restart),
            ..POLICY
        };
        assert!(matches!(
            plan(&i, &restart, &env(&log)),
            Some(Plan::Act {
                action: RemedyAction::Restart,
                deploy: 2,
                ..
            })
        ));
    }

    #[test]
    fn outside_the_window_or_without_anything_earlier_it_is_skipped_with_the_reason() {
        let log = [
            deploy(1, "v1", 0, Some(DeployOutcome::Succeeded)),
            deploy(2, "v2", 60, Some(DeployOutcome::Succeeded)),
        ]
        .concat();
        // 31 minutes after deploy 2 finished.
        let late = incident(61 + 31, IncidentTrigger::Check, &[]);
        let Some(Plan::Skip { why, deploy: None, .. }) = plan(&late, &POLICY, &env(&log)) else {
            panic!("skipped");
        };
        assert!(why.contains("within remediate_window (30m 00s)"), "{why}");
        // The first deployment ever: nothing to go back to.
        let first = deploy(1, "v1", 0, Some(DeployOutcome::Succeeded));
        let i = incident(5, IncidentTrigger::Check, &[]);
        let Some(Plan::Skip {
            why, deploy: Some(1), ..
        }) = plan(&i, &POLICY, &env(&first))
        else {
            panic!("skipped");
        };
        assert!(why.contains("nothing to roll back to"), "{why}");
        // A deployment that was rolled back does not run: not its doing.
        let back = [
            deploy(1, "v1", 0, Some(DeployOutcome::Succeeded)),
            deploy(2, "v2", 60, Some(DeployOutcome::RolledBack)),
        ]
        .concat();
        assert!(matches!(
            plan(&incident(65, IncidentTrigger::Check, &[]), &POLICY, &env(&back)),
            Some(Plan::Skip { .. })
        ));
    }

    #[test]
    fn an_impact_that_began_before_the_deploy_is_not_its_doing() {
        let log = [
            deploy(1, "v1", 0, Some(DeployOutcome::Succeeded)),
            deploy(2, "v2", 60, None),
        ]
        .concat();
        let mut new = NewIncident::by_takt("production", "check `home` failing", IncidentTrigger::Check);
        new.impact_started_at = Some(T0 + time::Duration::minutes(59));
        let i = Incidents::fold(&[at(new.opened("shop#1"), 62)])
            .get("shop#1")
            .cloned()
            .unwrap();
        let Some(Plan::Skip {
            why, deploy: Some(2), ..
        }) = plan(&i, &POLICY, &env(&log))
        else {
            panic!("skipped");
        };
        assert!(why.contains("before the deploy in flight started"), "{why}");
    }

    #[test]
    fn a_deploy_in_flight_is_rolled_back_whatever_remediate_says() {
        let log = [
            deploy(1, "v1", 0, Some(DeployOutcome::Succeeded)),
            deploy(2, "v2", 60, None),
        ]
        .concat();
        let command = Policy {
            action: Some(RemedyAction::Command),
            ..POLICY
        };
        assert_eq!(
            plan(&incident(62, IncidentTrigger::Check, &[]), &command, &env(&log)),
            Some(Plan::Act {
                action: RemedyAction::Rollback,
                deploy: 2,
                in_flight: true
            })
        );
    }

    #[test]
    fn it_never_loops_and_stays_out_of_what_is_not_its_business() {
        let mut log = [
            deploy(1, "v1", 0, Some(DeployOutcome::Succeeded)),
            deploy(2, "v2", 60, Some(DeployOutcome::Succeeded)),
        ]
        .concat();
        let done = at(
            EventKind::IncidentRemediation {
                id: "shop#1".into(),
                action: RemedyAction::Rollback,
                deploy: Some("shop/production#2".into()),
                outcome: RemedyOutcome::Started,
                detail: None,
            },
            71,
        );
        // Once per incident.
        assert_eq!(
            plan(&incident(70, IncidentTrigger::Check, &[done]), &POLICY, &env(&log)),
            None
        );
        // Not for incidents a person opened, not outside production, not with `remediate: none`.
        assert_eq!(
            plan(&incident(70, IncidentTrigger::Person, &[]), &POLICY, &env(&log)),
            None
        );
        let staging = Policy {
            production: false,
            ..POLICY
        };
        assert_eq!(
            plan(&incident(70, IncidentTrigger::Check, &[]), &staging, &env(&log)),
            None
        );
        let none = Policy { action: None, ..POLICY };
        assert_eq!(
            plan(&incident(70, IncidentTrigger::Check, &[]), &none, &env(&log)),
            None
        );
        // Not while halted.
        log.push(at(
            EventKind::EnvironmentHalted {
                environment: "production".into(),
                reason: "by hand".into(),
                by: "ana".into(),
            },
            65,
        ));
        let Some(Plan::Skip { why, .. }) = plan(&incident(70, IncidentTrigger::Check, &[]), &POLICY, &env(&log)) else {
            panic!("skipped");
        };
        assert!(why.contains("halted (by hand)"), "{why}");
    }

    #[test]
    fn pages_start_after_escalate_after_or_at_a_failed_remediation_and_stop_at_an_ack() {
        let ten = Duration::from_secs(600);
        let five = Some(Duration::from_secs(300));
        let i = incident(0, IncidentTrigger::Check, &[]);
        assert_eq!(
            next_page(&i, true, ten, five),
            Some((T0 + time::Duration::minutes(10), PageReason::Unresolved))
        );
        assert_eq!(next_page(&i, false, ten, five), None, "production only");
        let failed = at(
            EventKind::IncidentRemediation {
                id: "shop#1".into(),
                action: RemedyAction::Rollback,
                deploy: None,
                outcome: RemedyOutcome::Failed,
                detail: Some("smoke checks failed".into()),
            },
            2,
        );
        let i = incident(0, IncidentTrigger::Check, &[failed]);
        assert_eq!(
            next_page(&i, true, ten, five),
            Some((T0 + time::Duration::minutes(2), PageReason::RemediationFailed))
        );
        let paged = at(
            EventKind::IncidentPaged {
                id: "shop#1".into(),
                count: 1,
                reason: PageReason::RemediationFailed,
            },
            2,
        );
        let i = incident(0, IncidentTrigger::Check, std::slice::from_ref(&paged));
        assert_eq!(
            next_page(&i, true, ten, five),
            Some((T0 + time::Duration::minutes(7), PageReason::Unresolved)),
            "then every remind_every"
        );
        assert_eq!(
            next_page(&i, true, ten, None).map(|p| p.0),
            Some(T0 + time::Duration::minutes(12)),
            "or every escalate_after"
        );
        let ack = at(
            EventKind::IncidentAcknowledged {
                id: "shop#1".into(),
                by: "ana".into(),
            },
            3,
        );
        assert_eq!(
            next_page(&incident(0, IncidentTrigger::Check, &[paged, ack]), true, ten, five),
            None
        );
    }
}
