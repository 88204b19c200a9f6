//! The overlay: for an incident, the deployments that most likely caused it — those to an
//! environment of the same name that started in a window before the impact began (default
//! 2 h), ranked. Pure: the views in, a list out.
//!
//! Ranking (docs/monitoring.md, "Suspects"): a deployment of one of the incident's services
//! (its project is the incident's, or is named in its services) comes before one that is not;
//! then the closer its start is to the impact, the earlier. Deployments that never took
//! traffic (`failed`) or changed nothing (`unchanged`) are not suspects.

use serde::{Deserialize, Serialize};
use takt_model::{ArtifactRef, DeployOutcome, OffsetDateTime, timefmt};
use takt_views::{Commits, Environments, Incident};
use time::Duration;

/// How far before an incident's impact deployments are suspects unless told otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::hours(2);

/// One commit a suspect shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuspectCommit {
    pub commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// One deployment that may have caused an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspect {
    /// `PROJECT/ENV#N`, as `takt incident cause` takes it.
    pub deployment: String,
    pub project: String,
    pub environment: String,
    pub deploy: u64,
    pub artifact: ArtifactRef,
    pub rollback: bool,
    #[serde(with = "timefmt::ms")]
    pub started_at: OffsetDateTime,
    /// Seconds from its start to the impact's.
    pub before_impact_s: i64,
    /// It deployed one of the incident's services.
    pub same_service: bool,
    /// The commits it shipped, newest first.
    pub commits: Vec<SuspectCommit>,
}

/// The suspects of `incident`, most likely first.
pub fn suspects(incident: &Incident, envs: &Environments, commits: &Commits, window: Duration) -> Vec<Suspect> {
    let impact = incident.impact_started_at;
    let mut out = Vec::new();
    for ((project, env), view) in &envs.envs {
        if *env != incident.environment {
            continue;
        }
        let same_service = *project == incident.project || incident.services.iter().any(|s| s == project);
        for d in &view.history {
            let Some(started) = timefmt::parse_rfc3339(&d.started_at) else {
                continue;
            };
            let before = impact - started;
            if before < Duration::ZERO || before > window {
                continue;
            }
            if matches!(d.outcome, Some(DeployOutcome::Failed | DeployOutcome::Unchanged)) {
                continue;
            }
            out.push(Suspect {
                deployment: format!("{project}/{env}#{}", d.deploy),
                project: project.clone(),
                environment: env.clone(),
                deploy: d.deploy,
                artifact: d.artifact.clone(),
                rollback: d.rollback,
                started_at: started,
                before_impact_s: before.whole_seconds(),
                same_service,
                commits: d
                    .commits
                    .iter()
                    .map(|sha| {
                        let c = commits.get(sha);
                        SuspectCommit {
                            commit: sha.clone(),
                            author: c.map(|c| c.author.clone()),
                            subject: c.map(|c| c.subject.clone()),
                        }
                    })
                    .collect(),
            });
        }
    }
    out.sort_by(|a, b| {
        b.same_service
            .cmp(&a.same_service)
            .then(a.before_impact_s.cmp(&b.before_impact_s))
            .then(a.deployment.cmp(&b.deployment))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use takt_model::{DeployStrategy, DeployTrigger, Event, EventKind, IncidentTrigger, Severity};
    use takt_views::{Incidents, Projection};

    const T0: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    fn at(mut e: Event, min: i64) -> Event {
        e.at = T0 + Duration::minutes(min);
        e
    }

    fn deployed(project: &str, env: &str, deploy: u64, min: i64, outcome: DeployOutcome) -> [Event; 2] {
        let started = EventKind::DeployStarted {
            environment: env.into(),
            deploy,
            artifact: ArtifactRef {
                name: project.into(),
                version: format!("{deploy}"),
                digest: "sha256:00".into(),
                commit: None,
            },
            previous: None,
            commits: vec![format!("c{deploy}")],
            truncated: 0,
            trigger: DeployTrigger::Pipeline { run: deploy },
            strategy: DeployStrategy::Canary,
            rollback: false,
            fixes: None,
        };
        let finished = EventKind::DeployFinished {
            environment: env.into(),
            deploy,
            outcome,
            running: None,
            reason: None,
        };
        [
            at(Event::now(project, None, started), min),
            at(Event::now(project, None, finished), min + 1),
        ]
    }

    #[test]
    fn deployments_in_the_window_rank_by_service_then_closeness() {
        let mut log = vec![at(
            Event::now(
                "shop",
                None,
                EventKind::CommitInfo {
                    commit: "c2".into(),
                    author: "Ann <ann@example.com>".into(),
                    email: None,
                    committed_at: T0,
                    subject: "Cache the cart".into(),
                },
            ),
            0,
        )];
        // shop/production#1 is 3 h before the impact: outside the window.
        log.extend(deployed("shop", "production", 1, 0, DeployOutcome::Succeeded));
        log.extend(deployed("shop", "production", 2, 100, DeployOutcome::Succeeded));
        // A failed deploy never took traffic; staging is another environment.
        log.extend(deployed("shop", "production", 3, 150, DeployOutcome::Failed));
        log.extend(deployed("shop", "staging", 1, 170, DeployOutcome::Succeeded));
        // Another project's deploy, closer in time but to another service.
        log.extend(deployed("auth", "production", 1, 175, DeployOutcome::Succeeded));
        // After the impact began: not a cause.
        log.extend(deployed("shop", "production", 4, 181, DeployOutcome::Succeeded));
        log.push(at(
            Event::now(
                "shop",
                None,
                EventKind::IncidentOpened {
                    environment: "production".into(),
                    reason: "check `home` failing".into(),
                    id: Some("shop#1".into()),
                    severity: Severity::Major,
                    services: vec!["shop".into()],
                    impact_started_at: Some(T0 + Duration::minutes(180)),
                    trigger: IncidentTrigger::Check,
                    checks: vec!["home".into()],
                    by: None,
                },
            ),
            182,
        ));
        let envs = Environments::fold(log.iter());
        let incident = Incidents::fold(log.iter()).get("shop#1").cloned().unwrap();
        let found = suspects(&incident, &envs, &Commits::fold(log.iter()), DEFAULT_WINDOW);
        let names: Vec<&str> = found.iter().map(|s| s.deployment.as_str()).collect();
        assert_eq!(names, ["shop/production#2", "auth/production#1"]);
        assert_eq!(found[0].before_impact_s, 80 * 60);
        assert_eq!(found[0].commits[0].subject.as_deref(), Some("Cache the cart"));
        assert_eq!(found[1].commits[0].author, None, "no commit_info: only the sha");

        // With auth among the incident's services, the closer deploy ranks first.
        let mut both = incident.clone();
        both.services.push("auth".into());
        let found = suspects(&both, &envs, &Commits::default(), DEFAULT_WINDOW);
        assert_eq!(found[0].deployment, "auth/production#1");
    }
}
