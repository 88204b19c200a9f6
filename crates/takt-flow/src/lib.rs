//! Flow metrics, pure: how well a team delivers and where its flow is stuck, from takt's own
//! event log. [`Flow`] folds the facts the metrics need (deployments, commit times, runs and
//! their stages, incidents) as the log goes by; [`dora::report`] computes the five DORA keys
//! and [`bottleneck::report`] the share of lead time each stage and wait takes, for a time
//! window given by the caller. No I/O, no clock: the formulas are in `docs/metrics.md`.

pub mod bottleneck;
pub mod coffee;
pub mod dora;
pub mod flaky;
pub mod path;
pub mod stats;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use takt_model::{
    ArtifactRef, DeployOutcome, DeployTrigger, Event, EventKind, OffsetDateTime, RunStatus, StepAction, StepVerdict,
};
use takt_views::{Incidents, Projection};

/// One deployment, as its events tell it.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub project: String,
    pub environment: String,
    pub deploy: u64,
    pub started_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    pub outcome: Option<DeployOutcome>,
    pub artifact: ArtifactRef,
    pub previous: Option<ArtifactRef>,
    /// The commits it shipped since the previous deployment there, newest first.
    pub commits: Vec<String>,
    pub rollback: bool,
    pub trigger: DeployTrigger,
    /// The incident it says it fixes (`--fixes`).
    pub fixes: Option<String>,
    /// Loaded by `takt import`: its id in the source.
    pub imported: Option<String>,
    /// The highest traffic weight any of its steps reached.
    pub max_weight: u8,
    /// How long it waited for a person's approval (from the approval step to the next).
    pub approval_wait: time::Duration,
    approval_since: Option<OffsetDateTime>,
}

impl Deployment {
    /// It took production traffic: it ran (and passed or was rolled back), or was cut off after
    /// some traffic reached it. A deploy that failed before traffic, or found its artifact
    /// already running, did not.
    pub fn took_traffic(&self) -> bool {
        match self.outcome {
            Some(DeployOutcome::Succeeded | DeployOutcome::RolledBack | DeployOutcome::RollbackFailed) => true,
            Some(DeployOutcome::Cancelled | DeployOutcome::Interrupted) => self.max_weight > 0,
            Some(DeployOutcome::Failed | DeployOutcome::Unchanged) | None => false,
        }
    }

    /// A change: not a rollback, and not the artifact that already ran there.
    pub fn is_change(&self) -> bool {
        !self.rollback
            && self.outcome != Some(DeployOutcome::Unchanged)
            && self.previous.as_ref().is_none_or(|p| p.digest != self.artifact.digest)
    }
}

/// One run: its commit and when it was queued, started and finished; per stage, when its first
/// job started and its last finished.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFacts {
    pub commit: String,
    pub queued_at: Option<OffsetDateTime>,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub status: Option<RunStatus>,
    /// It included uncommitted changes (`takt run --dirty`): its tests say nothing of its commit.
    pub dirty: bool,
    /// Its wall time, its pipeline's budget, and the job that pushed it over (coffee test).
    pub duration_ms: Option<u64>,
    pub budget_ms: Option<u64>,
    pub slowest_job: Option<String>,
    /// Stage → (first job start, last job finish).
    pub stages: BTreeMap<Name, (OffsetDateTime, OffsetDateTime)>,
    /// Each job: its stage, `needs`, and its last attempt's start, finish and wait.
    pub jobs: BTreeMap<Name, JobTimes>,
}

/// A job's or stage's name, shared by every run that has it (a year of runs repeats a few
/// names hundreds of thousands of times).
pub type Name = std::sync::Arc<str>;

/// One job of a run, as its events tell it (its last attempt).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobTimes {
    pub stage: Name,
    /// Its position in the queue (jobs are queued in stage order).
    pub order: usize,
    /// `needs:`; `None`: it waits for every job of the stages before its own.
    pub needs: Option<Vec<Name>>,
    pub started: Option<OffsetDateTime>,
    pub finished: Option<OffsetDateTime>,
    /// From ready to started, in milliseconds.
    pub wait_ms: u64,
}

/// The facts of the whole log that the flow metrics read.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    /// By (project, environment, deploy number).
    pub deployments: BTreeMap<(String, String, u64), Deployment>,
    /// When each commit of each project was committed (the committer date).
    pub commits: HashMap<String, HashMap<String, OffsetDateTime>>,
    pub runs: HashMap<(String, u64), RunFacts>,
    /// Which run stored each artifact (project, digest).
    pub artifacts: HashMap<String, HashMap<String, u64>>,
    pub incidents: Incidents,
    /// Every test case's outcomes by commit (flaky tests).
    pub tests: flaky::Tests,
    /// Events folded.
    pub events: u64,
    names: std::collections::HashSet<Name>,
}

impl Flow {
    /// The shared copy of `s`.
    fn intern(&mut self, s: &str) -> Name {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n: Name = s.into();
        self.names.insert(n.clone());
        n
    }
}

impl Projection for Flow {
    const KINDS: &'static [&'static str] = &[
        "commit_info",
        "run_queued",
        "run_started",
        "run_finished",
        "job_queued",
        "job_started",
        "job_finished",
        "artifact_stored",
        "test_report",
        "deploy_started",
        "deploy_step",
        "deploy_finished",
        "incident_opened",
        "incident_updated",
        "incident_acknowledged",
        "incident_resolved",
        "incident_cause_marked",
        "imported_deployment",
        "imported_incident",
    ];

    fn apply(&mut self, e: &Event) {
        self.events += 1;
        fn run<'a>(flow: &'a mut Flow, e: &Event) -> Option<&'a mut RunFacts> {
            e.run.map(|r| flow.runs.entry((e.project.clone(), r)).or_default())
        }
        match &e.kind {
            EventKind::CommitInfo {
                commit, committed_at, ..
            } => {
                self.commits
                    .entry(e.project.clone())
                    .or_default()
                    .entry(commit.clone())
                    .or_insert(*committed_at);
            }
            EventKind::RunQueued { commit, dirty, .. } => {
                if let Some(r) = run(self, e) {
                    r.commit = commit.clone();
                    r.dirty = *dirty;
                    r.queued_at = Some(e.at);
                }
            }
            EventKind::RunStarted => {
                if let Some(r) = run(self, e) {
                    r.started_at.get_or_insert(e.at);
                }
            }
            EventKind::RunFinished {
                status,
                duration_ms,
                budget_ms,
                slowest_job,
                ..
            } => {
                if let Some(r) = run(self, e) {
                    r.finished_at = Some(e.at);
                    r.status = Some(*status);
                    r.duration_ms = Some(*duration_ms);
                    r.budget_ms = *budget_ms;
                    r.slowest_job = slowest_job.clone();
                }
            }
            EventKind::JobQueued { job, stage, needs, .. } => {
                let (job, stage) = (self.intern(job), self.intern(stage));
                let needs = needs.as_ref().map(|n| n.iter().map(|x| self.intern(x)).collect());
                if let Some(r) = run(self, e) {
                    let order = r.jobs.len();
                    r.jobs.insert(
                        job,
                        JobTimes {
                            stage,
                            order,
                            needs,
                            ..JobTimes::default()
                        },
                    );
                }
            }
            EventKind::JobStarted { job, wait_ms, .. } | EventKind::JobFinished { job, wait_ms, .. } => {
                if let Some(r) = run(self, e)
                    && let Some(j) = r.jobs.get_mut(job.as_str())
                {
                    if matches!(e.kind, EventKind::JobStarted { .. }) {
                        j.started = Some(e.at);
                        j.finished = None;
                        j.wait_ms = *wait_ms;
                    } else {
                        j.finished = Some(e.at);
                    }
                    let span = r.stages.entry(j.stage.clone()).or_insert((e.at, e.at));
                    span.0 = span.0.min(e.at);
                    span.1 = span.1.max(e.at);
                }
            }
            EventKind::TestReport { job, cases, .. } => {
                let Some(r) = e.run else { return };
                let Some(commit) = self
                    .runs
                    .get(&(e.project.clone(), r))
                    .filter(|f| !f.dirty)
                    .map(|f| f.commit.clone())
                else {
                    return;
                };
                for c in cases {
                    let id = flaky::TestId {
                        project: e.project.clone(),
                        job: job.clone(),
                        suite: c.suite.clone(),
                        name: c.name.clone(),
                    };
                    self.tests.record(id, &commit, r, c.outcome, e.at);
                }
            }
            EventKind::ArtifactStored { digest, .. } => {
                if let Some(r) = e.run {
                    self.artifacts
                        .entry(e.project.clone())
                        .or_default()
                        .entry(digest.clone())
                        .or_insert(r);
                }
            }
            EventKind::DeployStarted {
                environment,
                deploy,
                artifact,
                previous,
                commits,
                trigger,
                rollback,
                fixes,
                ..
            } => {
                self.deployments.insert(
                    (e.project.clone(), environment.clone(), *deploy),
                    Deployment {
                        project: e.project.clone(),
                        environment: environment.clone(),
                        deploy: *deploy,
                        started_at: e.at,
                        finished_at: None,
                        outcome: None,
                        artifact: artifact.clone(),
                        previous: previous.clone(),
                        commits: commits.clone(),
                        rollback: *rollback,
                        trigger: trigger.clone(),
                        fixes: fixes.clone(),
                        imported: None,
                        max_weight: 0,
                        approval_wait: time::Duration::ZERO,
                        approval_since: None,
                    },
                );
            }
            EventKind::DeployStep {
                environment,
                deploy,
                action,
                weight,
                verdict,
                ..
            } => {
                if let Some(d) = self
                    .deployments
                    .get_mut(&(e.project.clone(), environment.clone(), *deploy))
                {
                    d.max_weight = d.max_weight.max(*weight);
                    if let Some(since) = d.approval_since.take() {
                        d.approval_wait += e.at - since;
                    }
                    if *action == StepAction::Approval && *verdict == Some(StepVerdict::Waiting) {
                        d.approval_since = Some(e.at);
                    }
                }
            }
            EventKind::DeployFinished {
                environment,
                deploy,
                outcome,
                ..
            } => {
                if let Some(d) = self
                    .deployments
                    .get_mut(&(e.project.clone(), environment.clone(), *deploy))
                {
                    d.finished_at = Some(e.at);
                    d.outcome = Some(*outcome);
                    if let Some(since) = d.approval_since.take() {
                        d.approval_wait += e.at - since;
                    }
                }
            }
            EventKind::ImportedDeployment { deployment } => self.import_deployment(&e.project, deployment),
            EventKind::ImportedIncident { incident } => self.import_incident(&e.project, incident, e.at),
            _ if Incidents::wants(e) => self.incidents.apply(e),
            _ => {}
        }
    }
}

/// Imported deployments are numbered from here (their own ids name them).
const IMPORTED: u64 = 1 << 48;

impl Flow {
    fn import_deployment(&mut self, project: &str, d: &takt_model::ImportedDeployment) {
        let art = |a: Option<&String>| ArtifactRef {
            name: "imported".into(),
            version: a.cloned().unwrap_or_default(),
            digest: a.cloned().unwrap_or_else(|| format!("imported:{}", d.id)),
            commit: None,
        };
        // Imported again: replaced.
        let same = |x: &Deployment| x.project == project && x.imported.as_deref() == Some(d.id.as_str());
        let n = match self.deployments.values().find(|x| same(x)) {
            Some(x) => x.deploy,
            None => IMPORTED + self.deployments.values().filter(|x| x.imported.is_some()).count() as u64,
        };
        // What ran there before: the imported deployment that finished last before it started.
        let previous = self
            .deployments
            .values()
            .filter(|x| x.project == project && x.environment == d.environment && x.imported.is_some() && !same(x))
            .filter(|x| x.finished_at.is_some_and(|f| f <= d.started_at))
            .filter(|x| x.outcome == Some(DeployOutcome::Succeeded))
            .max_by_key(|x| x.finished_at)
            .map(|x| x.artifact.clone());
        for c in &d.commits {
            self.commits
                .entry(project.to_string())
                .or_default()
                .entry(c.sha.clone())
                .or_insert(c.committed_at);
        }
        let deployment = Deployment {
            project: project.to_string(),
            environment: d.environment.clone(),
            deploy: n,
            started_at: d.started_at,
            finished_at: Some(d.finished_at),
            outcome: Some(d.outcome),
            artifact: art(d.artifact.as_ref()),
            previous,
            commits: d.commits.iter().map(|c| c.sha.clone()).collect(),
            rollback: d.rollback,
            trigger: DeployTrigger::Token {
                token: "import".into(),
                command: "import".into(),
            },
            fixes: d.fixes.clone(),
            imported: Some(d.id.clone()),
            max_weight: 100,
            approval_wait: time::Duration::ZERO,
            approval_since: None,
        };
        self.deployments
            .insert((project.to_string(), d.environment.clone(), n), deployment);
    }

    fn import_incident(&mut self, project: &str, i: &takt_model::ImportedIncident, at: OffsetDateTime) {
        let id = format!("{project}#import:{}", i.id);
        let incident = takt_views::Incident {
            id: id.clone(),
            project: project.to_string(),
            environment: i.environment.clone(),
            reason: "imported".into(),
            severity: takt_model::Severity::Major,
            services: Vec::new(),
            status: if i.resolved_at.is_some() {
                takt_model::IncidentStatus::Resolved
            } else {
                takt_model::IncidentStatus::Investigating
            },
            opened_at: i.opened_at,
            impact_started_at: i.impact_started_at.filter(|t| *t < i.opened_at).unwrap_or(i.opened_at),
            resolved_at: i.resolved_at,
            auto_resolved: false,
            cause: i
                .cause
                .as_ref()
                .map(|c| format!("{project}/{}#import:{c}", i.environment)),
            trigger: takt_model::IncidentTrigger::Person,
            checks: Vec::new(),
            joined: Default::default(),
            acknowledged: None,
            remediation: None,
            pages: 0,
            paged_at: None,
            traffic_at_impact: None,
            traffic_at_end: None,
            reminders: 0,
            reminded_at: None,
            timeline: vec![takt_views::IncidentEntry {
                at,
                kind: "imported_incident".into(),
                status: None,
                note: None,
                by: None,
            }],
        };
        self.incidents.incidents.insert(id, incident);
    }
}

/// What a report covers: a project (or all), the environments that count as production, and a
/// window `[from, to)`.
pub struct Scope<'a> {
    pub project: Option<&'a str>,
    /// Whether (project, environment) is production (see `takt_pipeline::is_production`).
    pub production: &'a dyn Fn(&str, &str) -> bool,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
}

impl Scope<'_> {
    pub fn covers(&self, project: &str, environment: &str) -> bool {
        self.project.is_none_or(|p| p == project) && (self.production)(project, environment)
    }

    pub fn within(&self, t: OffsetDateTime) -> bool {
        self.from <= t && t < self.to
    }
}

/// A commit a production deployment shipped.
pub struct ShippedCommit<'a> {
    pub deployment: &'a Deployment,
    pub commit: &'a str,
    pub committed_at: OffsetDateTime,
    /// When the deployment finished.
    pub done: OffsetDateTime,
    /// The run that built the deployed artifact.
    pub run: Option<&'a RunFacts>,
}

impl ShippedCommit<'_> {
    pub fn lead(&self) -> time::Duration {
        self.done - self.committed_at
    }
}

/// The commits shipped to production in the window, and those left out.
pub struct Shipped<'a> {
    pub commits: Vec<ShippedCommit<'a>>,
    /// A lead time of zero or less (a commit clock ahead of takt's).
    pub non_positive: usize,
    /// No `commit_info` for it.
    pub unknown_commit: usize,
    /// Successful deployments in the window that shipped no commit range.
    pub without_commits: usize,
}

/// Each commit at the first successful production deployment of a change that shipped it, if
/// that deployment finished in the window.
pub fn shipped<'a>(flow: &'a Flow, scope: &Scope) -> Shipped<'a> {
    let mut done: Vec<(&Deployment, OffsetDateTime)> = flow
        .deployments
        .values()
        .filter(|d| scope.covers(&d.project, &d.environment))
        .filter(|d| d.is_change() && d.outcome == Some(DeployOutcome::Succeeded))
        .filter_map(|d| Some((d, d.finished_at?)))
        .collect();
    done.sort_by_key(|(d, f)| (*f, d.deploy));
    let mut seen: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    let mut out = Shipped {
        commits: Vec::new(),
        non_positive: 0,
        unknown_commit: 0,
        without_commits: 0,
    };
    for (d, finished) in done {
        let within = scope.within(finished);
        if within && d.commits.is_empty() {
            out.without_commits += 1;
        }
        let run = flow
            .artifacts
            .get(&d.project)
            .and_then(|a| a.get(&d.artifact.digest))
            .and_then(|r| flow.runs.get(&(d.project.clone(), *r)));
        let times = flow.commits.get(&d.project);
        for c in &d.commits {
            if !seen.insert((d.project.as_str(), c.as_str())) || !within {
                continue;
            }
            let Some(at) = times.and_then(|t| t.get(c)) else {
                out.unknown_commit += 1;
                continue;
            };
            if finished <= *at {
                out.non_positive += 1;
                continue;
            }
            out.commits.push(ShippedCommit {
                deployment: d,
                commit: c,
                committed_at: *at,
                done: finished,
                run,
            });
        }
    }
    out
}

/// A figure with how many values it rests on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Seconds.
    pub p50: f64,
    pub p90: f64,
    pub sample: usize,
}
