//! Runs and their jobs.

use crate::Projection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use takt_model::{Event, EventKind, JobStatus, OffsetDateTime, RunStatus, Trigger, timefmt};

/// Not finished yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pending {
    Queued,
    Running,
}

/// Where a run stands: waiting, running, or how it ended (serialised as one word:
/// `queued`, `running`, `success`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RunState {
    Pending(Pending),
    Done(RunStatus),
}

impl RunState {
    pub const QUEUED: RunState = RunState::Pending(Pending::Queued);
    pub const RUNNING: RunState = RunState::Pending(Pending::Running);

    pub fn is_finished(self) -> bool {
        matches!(self, RunState::Done(s) if s != RunStatus::Running)
    }

    pub fn name(self) -> &'static str {
        match self {
            RunState::Pending(Pending::Queued) => "queued",
            RunState::Pending(Pending::Running) | RunState::Done(RunStatus::Running) => "running",
            RunState::Done(RunStatus::Success) => "success",
            RunState::Done(RunStatus::Failed) => "failed",
            RunState::Done(RunStatus::Cancelled) => "cancelled",
            RunState::Done(RunStatus::Interrupted) => "interrupted",
            RunState::Done(RunStatus::Manual) => "manual",
        }
    }
}

/// Where a job stands: waiting, running, or how its last attempt ended (one word, as
/// [`RunState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JobState {
    Pending(Pending),
    Done(JobStatus),
}

impl JobState {
    /// Its one word, as serialised.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending(Pending::Queued) => "queued",
            JobState::Pending(Pending::Running) => "running",
            JobState::Done(s) => s.into(),
        }
    }
}

/// One job of a run, as its events tell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The jobs its `needs:` names (`None`: ordered by stage, or not recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "timefmt::ms::option")]
    pub started_at: Option<OffsetDateTime>,
    /// Where its log is written (relative to the data directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flaky: Option<bool>,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The coverage percentage its `coverage:` regex found in its log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// The environment it deployed to or acted on (GitLab's `environment:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<takt_model::JobEnvironmentRef>,
    /// Its `artifacts: reports:` files, stored with its artifact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<takt_model::ReportFile>,
    /// The names of the variables its `reports: dotenv` passed on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dotenv: Vec<String>,
    /// A trigger job's child run, by number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_run: Option<u64>,
    /// It failed, and `allow_failure` let the run go on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_failure: bool,
    /// Its test report's counts (its latest attempt's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<takt_model::TestCounts>,
    /// The tests that failed or erred in that report (`suite::name`, at most 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tests: Vec<String>,
    /// The artifacts it stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<StoredArtifact>,
}

/// An artifact a job stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredArtifact {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub size: u64,
}

impl JobView {
    fn new(name: &str) -> JobView {
        JobView {
            name: name.to_string(),
            stage: None,
            needs: None,
            status: None,
            attempt: None,
            started_at: None,
            log: None,
            exit_code: None,
            duration_ms: None,
            flaky: None,
            reason: None,
            coverage: None,
            environment: None,
            reports: Vec::new(),
            dotenv: Vec::new(),
            child_run: None,
            allow_failure: false,
            tests: None,
            failed_tests: Vec::new(),
            artifacts: Vec::new(),
        }
    }
}

/// One run: what it builds, what started it, where it stands, and its jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub project: String,
    pub run: u64,
    pub commit: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub trigger: Trigger,
    /// The merge request of a merge-request pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_request: Option<takt_model::MergeRequestRun>,
    pub status: RunState,
    #[serde(with = "timefmt::ms")]
    pub queued_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "timefmt::ms::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "timefmt::ms::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why it failed before any job could start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The mean of its jobs' coverage (GitLab's pipeline coverage), when any job has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// Its pipeline's `budget` in milliseconds (the coffee test), once it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<u64>,
    pub jobs: Vec<JobView>,
}

impl RunView {
    fn job_mut(&mut self, name: &str) -> &mut JobView {
        match self.jobs.iter().position(|j| j.name == name) {
            Some(i) => &mut self.jobs[i],
            None => {
                self.jobs.push(JobView::new(name));
                let last = self.jobs.len() - 1;
                &mut self.jobs[last]
            }
        }
    }

    /// The run without its jobs (what lists show).
    pub fn summary(&self) -> RunView {
        RunView {
            jobs: Vec::new(),
            ..self.clone()
        }
    }

    /// Folds one event of this run (`run_queued` makes the view: see [`Runs`]).
    pub fn apply(&mut self, e: &Event) {
        match &e.kind {
            EventKind::RunStarted => {
                self.status = RunState::RUNNING;
                self.started_at = Some(e.at);
            }
            EventKind::RunFinished {
                status,
                duration_ms,
                reason,
                budget_ms,
                ..
            } => {
                self.budget_ms = *budget_ms;
                if reason.is_some() {
                    self.reason = reason.clone();
                }
                self.status = RunState::Done(*status);
                self.finished_at = Some(e.at);
                self.duration_ms = Some(*duration_ms);
            }
            EventKind::JobQueued {
                job,
                stage,
                needs,
                environment,
            } => {
                let j = self.job_mut(job);
                j.stage = Some(stage.clone());
                j.needs = needs.clone();
                j.environment.clone_from(environment);
                j.status = Some(JobState::Pending(Pending::Queued));
            }
            EventKind::JobStarted { job, attempt, log, .. } => {
                let j = self.job_mut(job);
                j.status = Some(JobState::Pending(Pending::Running));
                j.attempt = Some(*attempt);
                j.started_at = Some(e.at);
                if log.is_some() {
                    j.log = log.clone();
                }
            }
            EventKind::JobFinished {
                job,
                status,
                exit_code,
                duration_ms,
                attempt,
                flaky,
                allow_failure,
                ..
            } => {
                let j = self.job_mut(job);
                j.status = Some(JobState::Done(*status));
                j.allow_failure = *allow_failure;
                j.exit_code = *exit_code;
                j.duration_ms = Some(*duration_ms);
                j.attempt = Some(*attempt);
                j.flaky = Some(*flaky);
            }
            EventKind::JobSkipped { job, status, reason } => {
                let j = self.job_mut(job);
                j.status = Some(JobState::Done(*status));
                j.reason = Some(reason.clone());
            }
            EventKind::ArtifactStored {
                job,
                name,
                version,
                digest,
                size,
            } => {
                let a = StoredArtifact {
                    name: name.clone(),
                    version: version.clone(),
                    digest: digest.clone(),
                    size: *size,
                };
                let j = self.job_mut(job);
                if !j.artifacts.contains(&a) {
                    j.artifacts.push(a);
                }
            }
            EventKind::TestReport { job, counts, cases, .. } => {
                let j = self.job_mut(job);
                j.tests = Some(counts.clone());
                j.failed_tests = cases
                    .iter()
                    .filter(|c| {
                        matches!(
                            c.outcome,
                            takt_model::TestOutcome::Failed | takt_model::TestOutcome::Error
                        )
                    })
                    .take(50)
                    .map(|c| format!("{}::{}", c.suite, c.name))
                    .collect();
            }
            EventKind::JobOutputs {
                job,
                coverage,
                dotenv,
                reports,
                environment,
                child_run,
                ..
            } => {
                let j = self.job_mut(job);
                j.child_run = *child_run;
                j.coverage = *coverage;
                j.dotenv = dotenv.iter().map(|(k, _)| k.clone()).collect();
                j.reports.clone_from(reports);
                j.environment.clone_from(environment);
                let figures: Vec<f64> = self.jobs.iter().filter_map(|j| j.coverage).collect();
                self.coverage = (!figures.is_empty()).then(|| figures.iter().sum::<f64>() / figures.len() as f64);
            }
            _ => {}
        }
    }
}

/// Every run, by (project, run number).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Runs {
    pub runs: BTreeMap<(String, u64), RunView>,
    /// Fold jobs too (`false`: summaries only, for an index of every run).
    pub summaries_only: bool,
}

/// The kinds that make a run's summary (no jobs).
pub const SUMMARY_KINDS: &[&str] = &["run_queued", "run_started", "run_finished"];

impl Runs {
    /// A view of summaries only: it folds [`SUMMARY_KINDS`] and ignores job events.
    pub fn summaries() -> Runs {
        Runs {
            runs: BTreeMap::new(),
            summaries_only: true,
        }
    }

    pub fn get(&self, project: &str, run: u64) -> Option<&RunView> {
        self.runs.get(&(project.to_string(), run))
    }
}

impl Projection for Runs {
    const KINDS: &'static [&'static str] = &[
        "run_queued",
        "run_started",
        "run_finished",
        "job_queued",
        "job_started",
        "job_finished",
        "job_skipped",
        "job_outputs",
        "test_report",
        "artifact_stored",
    ];

    fn apply(&mut self, e: &Event) {
        let Some(n) = e.run else { return };
        if self.summaries_only && !SUMMARY_KINDS.contains(&e.kind.name()) {
            return;
        }
        let key = (e.project.clone(), n);
        if let EventKind::RunQueued {
            commit,
            branch,
            tag,
            trigger,
            merge_request,
            ..
        } = &e.kind
        {
            let view = RunView {
                project: e.project.clone(),
                run: n,
                commit: commit.clone(),
                branch: branch.clone(),
                tag: tag.clone(),
                trigger: trigger.clone(),
                merge_request: merge_request.clone(),
                status: RunState::QUEUED,
                queued_at: e.at,
                started_at: None,
                finished_at: None,
                duration_ms: None,
                reason: None,
                coverage: None,
                budget_ms: None,
                jobs: Vec::new(),
            };
            self.runs.insert(key, view);
            return;
        }
        if let Some(r) = self.runs.get_mut(&key) {
            r.apply(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(run: u64, kind: EventKind) -> Event {
        Event::now("p", Some(run), kind)
    }

    /// Run `run` of `main`, found by polling.
    fn queued(run: u64) -> Event {
        ev(
            run,
            EventKind::RunQueued {
                commit: "c".repeat(40),
                branch: Some("main".into()),
                tag: None,
                trigger: Trigger::Poll,
                dirty: false,
                merge_request: None,
            },
        )
    }

    #[test]
    fn job_outputs_give_the_jobs_coverage_and_the_run_their_mean() {
        let outputs = |job: &str, coverage: Option<f64>, child_run: Option<u64>| {
            ev(
                1,
                EventKind::JobOutputs {
                    job: job.into(),
                    attempt: 1,
                    coverage,
                    dotenv: vec![("VERSION".into(), "1.2".into())],
                    reports: vec![takt_model::ReportFile {
                        kind: "dotenv".into(),
                        path: "build.env".into(),
                    }],
                    environment: Some(takt_model::JobEnvironmentRef {
                        name: "review/main".into(),
                        action: "start".into(),
                        url: None,
                    }),
                    child_run,
                },
            )
        };
        let events = [
            queued(1),
            outputs("unit", Some(80.0), None),
            outputs("lint", Some(70.0), None),
            outputs("docs", None, Some(2)),
        ];
        let runs = Runs::fold(&events);
        let r = runs.get("p", 1).unwrap();
        assert_eq!(r.coverage, Some(75.0));
        assert_eq!(r.jobs[0].coverage, Some(80.0));
        assert_eq!(r.jobs[0].dotenv, ["VERSION"], "names only: values stay in the log");
        assert_eq!(r.jobs[0].reports[0].kind, "dotenv");
        assert_eq!(
            r.jobs[0].environment.as_ref().map(|e| e.name.as_str()),
            Some("review/main")
        );
        assert_eq!(r.jobs[2].child_run, Some(2));
        // The view round-trips as JSON with the new fields (times are kept to the millisecond).
        let back: RunView = serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap();
        assert_eq!((&back.jobs, back.coverage), (&r.jobs, r.coverage));
    }

    #[test]
    fn a_run_and_its_jobs_fold_from_their_events() {
        let events = [
            queued(1),
            ev(1, EventKind::RunStarted),
            ev(
                1,
                EventKind::JobQueued {
                    job: "build".into(),
                    stage: "build".into(),
                    needs: Some(vec![]),
                    environment: None,
                },
            ),
            ev(
                1,
                EventKind::JobStarted {
                    job: "build".into(),
                    attempt: 1,
                    wait_ms: 0,
                    log: Some("logs/p/1/build.log".into()),
                    interruptible: false,
                },
            ),
            ev(
                1,
                EventKind::JobFinished {
                    job: "build".into(),
                    attempt: 1,
                    status: JobStatus::Failed,
                    exit_code: Some(3),
                    failure_reason: None,
                    allow_failure: false,
                    duration_ms: 12,
                    wait_ms: 0,
                    flaky: false,
                },
            ),
            ev(
                1,
                EventKind::JobSkipped {
                    job: "deploy".into(),
                    status: JobStatus::Skipped,
                    reason: "a need failed".into(),
                },
            ),
            ev(
                1,
                EventKind::RunFinished {
                    status: RunStatus::Failed,
                    duration_ms: 20,
                    reason: None,
                    budget_ms: None,
                    slowest_job: None,
                },
            ),
            // Another run's events and events without a run change nothing here.
            ev(2, EventKind::RunStarted),
        ];
        let runs = Runs::fold(&events);
        let r = runs.get("p", 1).unwrap();
        assert_eq!(r.status, RunState::Done(RunStatus::Failed));
        assert!(r.status.is_finished());
        assert_eq!(r.jobs.len(), 2);
        assert_eq!(r.jobs[0].status, Some(JobState::Done(JobStatus::Failed)));
        assert_eq!(r.jobs[0].exit_code, Some(3));
        assert_eq!(r.jobs[1].reason.as_deref(), Some("a need failed"));
        assert!(runs.get("p", 2).is_none());
        let mut index = Runs::summaries();
        for e in &events {
            index.apply(e);
        }
        let s = index.get("p", 1).unwrap();
        assert!(s.jobs.is_empty());
        assert_eq!(s.status, RunState::Done(RunStatus::Failed));
        let back: RunState = serde_json::from_str("\"queued\"").unwrap();
        assert_eq!(back, RunState::QUEUED);
        assert_eq!(*s, r.summary());
        // What the API shows: times in UTC with milliseconds, absent fields left out.
        let json = serde_json_value(s);
        assert_eq!(json["status"], "failed");
        assert!(json.get("reason").is_none());
        assert!(json["queued_at"].as_str().unwrap().ends_with('Z'));
    }

    fn serde_json_value(r: &RunView) -> serde_json::Value {
        serde_json::to_value(r).unwrap()
    }
}
