//! The overlay: for an incident, the deployments that most likely caused it — those to an
//! environment of the same name that started in a window before the impact began (default
//! 2 h), ranked. Pure: the views in, a list out.
//!
//! Ranking (docs/monitoring.md, "Suspects"): a deployment of one of the incident's services
//! (its project is the incident's, or is named in its services) comes before one that is not;
//! then the closer its start is to the impact, the earlier. Deployments that never took
//! traffic (`failed`) or changed nothing (`unchanged`) are not suspects.

use serde::{Deserialize, Serialize};
use takt_model::{ArtifactRef, DeployOutcome, Event, EventKind, FlagSetting, FlagSource, OffsetDateTime, timefmt};
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

/// A feature flag's change that may have caused an incident: flipping a flag changes what
/// runs as surely as a deployment does. Reported, never flipped back by takt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagSuspect {
    pub project: String,
    pub environment: String,
    pub flag: String,
    pub source: FlagSource,
    /// Who changed it at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The default branch's commit, for a change from the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(with = "timefmt::ms")]
    pub at: OffsetDateTime,
    /// Seconds from the change to the impact.
    pub before_impact_s: i64,
    pub same_service: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<FlagSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<FlagSetting>,
}

impl FlagSuspect {
    /// `new-checkout in production: ENABLED → DISABLED (by ops)` in a few words.
    pub fn describe(&self) -> String {
        let word = |s: &Option<FlagSetting>| match s {
            None => "undefined".to_string(),
            Some(s) => {
                let mut w = format!(
                    "{} default {}",
                    s.state.as_str(),
                    s.default_variant.as_deref().unwrap_or("(code default)")
                );
                if let Some(t) = &s.targeting {
                    w.push_str(&format!(" targeting {t}"));
                }
                w
            }
        };
        let who = match (self.source, &self.by, &self.commit) {
            (FlagSource::Api, Some(by), _) => format!("set by {by}"),
            (FlagSource::File, _, Some(c)) => format!("from the file at {}", c.get(..8).unwrap_or(c)),
            (FlagSource::Api, None, _) => "set at run time".to_string(),
            (FlagSource::File, _, None) => "from the file".to_string(),
        };
        format!(
            "flag `{}` in {}/{}: {} → {} ({who})",
            self.flag,
            self.project,
            self.environment,
            word(&self.before),
            word(&self.after)
        )
    }
}

impl FlagSuspect {
    /// The change `e` records (a `flag_changed` event), as seen from an impact at `impact`.
    pub fn of(e: &Event, impact: OffsetDateTime, same_service: bool) -> Option<FlagSuspect> {
        let EventKind::FlagChanged {
            environment,
            flag,
            source,
            by,
            commit,
            before,
            after,
        } = &e.kind
        else {
            return None;
        };
        Some(FlagSuspect {
            project: e.project.clone(),
            environment: environment.clone(),
            flag: flag.clone(),
            source: *source,
            by: by.clone(),
            commit: commit.clone(),
            at: e.at,
            before_impact_s: (impact - e.at).whole_seconds(),
            same_service,
            before: before.clone(),
            after: after.clone(),
        })
    }
}

/// The flag changes among `events` (any kinds, any order) in the incident's environment in
/// `window` before its impact, most likely first (its services' first, then the closest). A
/// flag seen for the first time (`before` absent: the file defined it when takt first read it)
/// changed nothing that ran, and is left out.
pub fn flag_suspects(incident: &Incident, events: &[Event], window: Duration) -> Vec<FlagSuspect> {
    let impact = incident.impact_started_at;
    let mut out: Vec<FlagSuspect> = events
        .iter()
        .filter(|e| (Duration::ZERO..=window).contains(&(impact - e.at)))
        .filter_map(|e| {
            let same = e.project == incident.project || incident.services.contains(&e.project);
            FlagSuspect::of(e, impact, same)
        })
        .filter(|f| f.environment == incident.environment && f.before.is_some())
        .collect();
    out.sort_by(|a, b| {
        b.same_service
            .cmp(&a.same_service)
            .then(a.before_impact_s.cmp(&b.before_impact_s))
            .then(a.flag.cmp(&b.flag))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use takt_model::{DeployStrategy, DeployTrigger, FlagState, IncidentTrigger, Severity};
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

    fn flag(project: &str, env: &str, min: i64, before: Option<FlagState>, by: Option<&str>) -> Event {
        let setting = |state| FlagSetting {
            state,
            default_variant: Some("off".into()),
            targeting: None,
            variants: Default::default(),
        };
        at(
            Event::now(
                project,
                None,
                EventKind::FlagChanged {
                    environment: env.into(),
                    flag: "new-checkout".into(),
                    source: if by.is_some() {
                        FlagSource::Api
                    } else {
                        FlagSource::File
                    },
                    by: by.map(String::from),
                    commit: by.is_none().then(|| "0123456789abcdef".into()),
                    before: before.map(setting),
                    after: Some(setting(FlagState::Disabled)),
                },
            ),
            min,
        )
    }

    #[test]
    fn flag_changes_before_the_impact_are_suspects_too() {
        let opened = at(
            Event::now(
                "shop",
                None,
                EventKind::IncidentOpened {
                    environment: "production".into(),
                    reason: "down".into(),
                    id: Some("shop#1".into()),
                    severity: Severity::Major,
                    services: vec![],
                    impact_started_at: Some(T0 + Duration::minutes(180)),
                    trigger: IncidentTrigger::Check,
                    checks: vec![],
                    by: None,
                },
            ),
            182,
        );
        let incident = Incidents::fold([&opened]).get("shop#1").cloned().unwrap();
        let log = [
            flag("shop", "production", 100, Some(FlagState::Enabled), Some("ops")),
            flag("shop", "production", 170, Some(FlagState::Enabled), None),
            // First seen: no change of what ran.
            flag("shop", "production", 175, None, None),
            // Another environment; after the impact; too long before.
            flag("shop", "staging", 170, Some(FlagState::Enabled), Some("ops")),
            flag("shop", "production", 181, Some(FlagState::Enabled), Some("ops")),
            flag("shop", "production", 10, Some(FlagState::Enabled), Some("ops")),
            // Another project's flag, closer but another service.
            flag("auth", "production", 178, Some(FlagState::Enabled), Some("ops")),
        ];
        let found = flag_suspects(&incident, &log, DEFAULT_WINDOW);
        let seen: Vec<(&str, i64)> = found
            .iter()
            .map(|f| (f.project.as_str(), f.before_impact_s / 60))
            .collect();
        assert_eq!(seen, [("shop", 10), ("shop", 80), ("auth", 2)]);
        assert_eq!(
            found[1].describe(),
            "flag `new-checkout` in shop/production: ENABLED default off → DISABLED default off (set by ops)"
        );
        assert!(
            found[0].describe().ends_with("(from the file at 01234567)"),
            "{}",
            found[0].describe()
        );
    }
}
