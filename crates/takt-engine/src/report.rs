//! What a run returns: the summary printed as a table or as JSON (`--json`).

use serde::Serialize;
use takt_model::{FailureReason, JobStatus, RunStatus, TestCounts};

#[derive(Debug, Clone, Serialize)]
pub struct ArtifactReport {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheReport {
    pub key: String,
    pub hit: bool,
    pub saved: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<FailureReason>,
    pub allow_failure: bool,
    pub attempts: u32,
    pub flaky: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: u64,
    pub wait_ms: u64,
    /// Log of the last attempt, relative to the data directory.
    pub log: Option<String>,
    pub log_truncated: bool,
    pub artifact: Option<ArtifactReport>,
    pub tests: Option<TestCounts>,
    /// Its (first) cache.
    pub cache: Option<CacheReport>,
    /// Every cache, when it has more than one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<CacheReport>,
    /// Why the job did not run (skipped, manual, cancelled) or why it could not start.
    pub reason: Option<String>,
    /// Failed test cases that quarantine let pass (`suite name`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<String>,
    /// What its `coverage:` regex found in its log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// The environment its `environment:` names (expanded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<takt_model::JobEnvironmentRef>,
    /// A trigger job's child run, by number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_run: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BudgetWarning {
    pub budget_ms: u64,
    pub wall_ms: u64,
    pub critical_path: Vec<String>,
    pub slowest_job: String,
    pub slowest_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub project: String,
    pub run: u64,
    pub status: RunStatus,
    pub commit: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub dirty: bool,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub budget_ms: u64,
    pub over_budget: Option<BudgetWarning>,
    pub data_dir: String,
    pub jobs: Vec<JobReport>,
    /// Jobs the rules left out of this run, with why.
    pub excluded: Vec<(String, String)>,
    /// Sections of takt.yml that are reserved but not acted on yet.
    pub not_supported_yet: Vec<String>,
    /// The mean of the jobs' coverage (GitLab's pipeline coverage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
}
