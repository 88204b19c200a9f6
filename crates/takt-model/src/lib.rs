//! takt's shared vocabulary: the statuses, ids and events that every other crate speaks.
//!
//! This crate does no I/O. It is the only crate every other takt crate may depend on.
//! Everything that happens in takt becomes an [`Event`]; runs, jobs and metrics are views
//! derived from the event log.

use serde::{Deserialize, Serialize};
use std::fmt;
pub use time::OffsetDateTime;

pub mod auth;
pub mod timefmt;

/// The outcome of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Success,
    Failed,
    Cancelled,
    /// The process that drove the run died before it finished.
    Interrupted,
    /// Waiting for a person (GitLab's `manual` pipeline status, shown as blocked): a manual
    /// job with `allow_failure: false` held the jobs after it; playing it (`takt runs play`)
    /// makes a run that goes on from there.
    Manual,
}

/// The outcome of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobStatus {
    Success,
    Failed,
    /// Not run: stopped by the line, its rules, or a need that did not run.
    Skipped,
    /// `when: manual`: waits for a person; a local run does not start it.
    Manual,
    Cancelled,
    /// The server that ran it died (or was killed) before the job finished.
    Interrupted,
}

/// Why a job failed, in GitLab's words where GitLab has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    ScriptFailure,
    JobExecutionTimeout,
    /// takt could not prepare or start the job (workspace, checkout, spawn).
    RunnerSystemFailure,
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Manual => "manual",
        })
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Skipped => "skipped",
            JobStatus::Manual => "manual",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Interrupted => "interrupted",
        })
    }
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `takt run` on a developer's machine.
    Local,
    /// `takt trigger` / `POST /api/v1/projects/{name}/trigger`, by the named token.
    Api { token: String },
    /// A signed push webhook from `github`, `gitea` or `gitlab`, with its delivery id.
    Webhook { provider: String, delivery: String },
    /// The server's periodic fetch of the project's repository found the commit.
    Poll,
    /// A post-receive hook (`takt hook install`) reported the push.
    Hook { token: String },
    /// A cron schedule from the default branch's takt.yml.
    Schedule { name: String, cron: String },
    /// `takt runs retry`: a new run of the same commit.
    Retry { of: u64, token: String, failed_only: bool },
    /// `takt runs play`: the manual job `job` of run `of` played by the named token, in a new
    /// run of the same commit that takes over the jobs that passed in `of`.
    Play { of: u64, job: String, token: String },
    /// The server restarted while the run `of` was going on and queued it again.
    Restart { of: u64 },
    /// A child pipeline: the trigger job `job` of run `run` (GitLab's `trigger: include`).
    Parent { run: u64, job: String },
}

impl Trigger {
    /// GitLab's `CI_PIPELINE_SOURCE` for a run started this way: `push` for a commit reported
    /// (or run locally), `api` for `takt trigger` and retries, `schedule` for cron.
    pub fn pipeline_source(&self) -> &'static str {
        match self {
            Trigger::Local
            | Trigger::Webhook { .. }
            | Trigger::Poll
            | Trigger::Hook { .. }
            | Trigger::Restart { .. } => "push",
            Trigger::Api { .. } | Trigger::Retry { .. } | Trigger::Play { .. } => "api",
            Trigger::Schedule { .. } => "schedule",
            Trigger::Parent { .. } => "parent_pipeline",
        }
    }
}

/// The merge request (GitHub's and Gitea's pull request) a run is for: GitLab's
/// `CI_MERGE_REQUEST_*` variables. Kept with the run, so a retry or a restart of it is a
/// merge-request pipeline too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRequestRun {
    /// Its number in the repository (`CI_MERGE_REQUEST_IID`).
    pub iid: u64,
    pub title: String,
    pub source_branch: String,
    pub target_branch: String,
    /// From another repository: the run gets no secrets and runs isolated.
    #[serde(default)]
    pub fork: bool,
}

impl MergeRequestRun {
    /// GitLab's merge-request variables.
    pub fn variables(&self) -> [(&'static str, String); 5] {
        [
            ("CI_MERGE_REQUEST_IID", self.iid.to_string()),
            ("CI_MERGE_REQUEST_TITLE", self.title.clone()),
            ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", self.source_branch.clone()),
            ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", self.target_branch.clone()),
            ("CI_MERGE_REQUEST_EVENT_TYPE", "detached".to_string()),
        ]
    }
}

/// How a project's queue treats commits that arrive while earlier ones wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// Every reported commit gets its run (GitLab's default).
    #[default]
    Every,
    /// A newer commit of the same branch supersedes runs still waiting for it.
    Newest,
}

/// Project settings that `takt project set` changes; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueMode>,
    /// At most this many runs of the project at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Branches (besides the default one) whose runs get secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<Vec<String>>,
    /// Seconds between polls of the repository; 0 turns polling off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_seconds: Option<u64>,
    /// Whether `GET /badge/{project}.svg` answers without a token (for a public README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_badge: Option<bool>,
    /// The forge takt posts commit statuses to (`forge: none` stops them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<ForgeLink>,
}

/// A forge that takes commit statuses (`none`: post none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ForgeKind {
    Github,
    Gitea,
    Gitlab,
    None,
}

/// Where a project's commit statuses go: GitHub's or Gitea's
/// `POST {api}/repos/{repo}/statuses/{sha}`, GitLab's `POST {api}/projects/{repo}/statuses/{sha}`,
/// authenticated with the project secret `TAKT_FORGE_TOKEN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgeLink {
    pub forge: ForgeKind,
    /// The API's base URL (`https://api.github.com`, `https://gitea.example.com/api/v1`,
    /// `https://gitlab.com/api/v4`).
    #[serde(default)]
    pub api: String,
    /// `OWNER/NAME` (GitHub, Gitea), or GitLab's project id or path (`group/name`).
    #[serde(default)]
    pub repo: String,
    /// Also one status per stage (`takt/<project>/<stage>`).
    #[serde(default)]
    pub stages: bool,
}

/// One test case from a JUnit report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCase {
    pub suite: String,
    pub name: String,
    pub outcome: TestOutcome,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestOutcome {
    Passed,
    Failed,
    Error,
    Skipped,
}

/// Counts of a JUnit report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCounts {
    pub tests: u64,
    pub failures: u64,
    pub errors: u64,
    pub skipped: u64,
}

/// One fact in the append-only event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log; `None` until the store assigns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. The `kind` tag is the event's stable name in the log and the API.
/// One `artifacts: reports:` file of a job: GitLab's report type (`junit`, `codequality`,
/// `coverage_report`, `dotenv`, `sast`, ...) and its path in the job's workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportFile {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
}

/// The environment a job's `environment:` names (GitLab's keyword), as the job ran: name with
/// its variables expanded, and the action (`start`, `prepare`, `stop`, `verify`, `access`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEnvironmentRef {
    pub name: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum EventKind {
    CommitSeen {
        commit: String,
        #[serde(default)]
        branch: Option<String>,
        #[serde(default)]
        tag: Option<String>,
    },
    /// What a commit says about itself: recorded once per commit that a run or a deploy's
    /// range names (the event's `run`, if any, is the first run that named it).
    CommitInfo {
        commit: String,
        /// The author's name and e-mail address.
        author: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        /// When it was committed (the committer date).
        #[serde(with = "time::serde::rfc3339")]
        committed_at: OffsetDateTime,
        /// The first line of its message.
        subject: String,
    },
    RunQueued {
        commit: String,
        #[serde(default)]
        branch: Option<String>,
        #[serde(default)]
        tag: Option<String>,
        trigger: Trigger,
        /// The working tree's uncommitted changes were included (`takt run --dirty`).
        #[serde(default)]
        dirty: bool,
        /// A merge-request pipeline's request (`CI_PIPELINE_SOURCE=merge_request_event`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        merge_request: Option<MergeRequestRun>,
    },
    /// The server began reading and planning the run's takt.yml. A run with this event but no
    /// `run_started` or `run_finished` was being planned when the server stopped: after a crash
    /// there it is failed, not planned again (its file might crash the server again).
    RunPlanning,
    RunStarted,
    RunFinished {
        status: RunStatus,
        duration_ms: u64,
        /// Why a run failed before any job could start (e.g. an invalid takt.yml).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Its pipeline's `budget` (the coffee test), when it ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget_ms: Option<u64>,
        /// Over budget: the slowest job on its critical path (what pushed it over).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slowest_job: Option<String>,
    },
    JobQueued {
        job: String,
        stage: String,
        /// The jobs its `needs:` names (it starts when they are done). `None`: it is ordered by
        /// stage and waits for every job of the stages before its own (jobs are queued in
        /// stage order). Absent in events written before 0.2.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        needs: Option<Vec<String>>,
        /// Its `environment:` as written (variables not yet expanded), so that a job that
        /// never started (a manual one) still says where it would deploy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment: Option<JobEnvironmentRef>,
    },
    JobStarted {
        job: String,
        attempt: u32,
        /// Time between the job becoming ready (all its needs done) and its start.
        wait_ms: u64,
        /// Where its log is being written (relative to the data directory).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log: Option<String>,
        /// GitLab's `interruptible: true`: a newer commit of the branch may cancel its run.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        interruptible: bool,
    },
    /// A step's process was started: its shim's pid, also its process group.
    JobProcess {
        job: String,
        attempt: u32,
        pid: u32,
    },
    JobFinished {
        job: String,
        attempt: u32,
        status: JobStatus,
        #[serde(default)]
        exit_code: Option<i32>,
        #[serde(default)]
        failure_reason: Option<FailureReason>,
        #[serde(default)]
        allow_failure: bool,
        duration_ms: u64,
        wait_ms: u64,
        /// Failed at least once and then passed on retry.
        #[serde(default)]
        flaky: bool,
    },
    JobSkipped {
        job: String,
        status: JobStatus,
        reason: String,
    },
    LogStored {
        job: String,
        attempt: u32,
        /// Path relative to the data directory.
        location: String,
        bytes: u64,
        truncated: bool,
    },
    ArtifactStored {
        job: String,
        name: String,
        version: String,
        digest: String,
        size: u64,
    },
    TestReport {
        job: String,
        /// The job's attempt the report belongs to (events written before 0.2 have none: read
        /// as 1).
        #[serde(default = "first_attempt")]
        attempt: u32,
        counts: TestCounts,
        cases: Vec<TestCase>,
    },
    /// What a job left for the run besides its artifact, from GitLab's keywords: the coverage
    /// its `coverage:` regex found in the log, the variables of its `reports: dotenv` (passed
    /// to the jobs after it), its other `reports:` files (stored with its artifact), and the
    /// `environment:` it acted on. Written once per attempt, when any of it is there.
    JobOutputs {
        job: String,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        coverage: Option<f64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dotenv: Vec<(String, String)>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reports: Vec<ReportFile>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment: Option<JobEnvironmentRef>,
        /// A trigger job's child run (its number in the same project).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        child_run: Option<u64>,
    },
    CacheUsed {
        job: String,
        key: String,
        hit: bool,
        #[serde(default)]
        saved: bool,
    },
    /// An API token was created; only the SHA-256 of its secret is kept.
    TokenCreated {
        id: String,
        name: String,
        scope: String,
        hash: String,
        /// The projects and environments it is limited to (none: all).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        projects: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        environments: Vec<String>,
    },
    TokenRevoked {
        id: String,
    },
    /// An artifact was downloaded over the API (`range`: the `Range` asked for, if any).
    ArtifactDownloaded {
        name: String,
        version: String,
        digest: String,
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<String>,
    },
    /// Artifacts were listed (`name`/`version` absent) or a manifest shown, by the named token.
    ArtifactRead {
        action: ReadAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        token: String,
    },
    /// An artifact was copied to the configured object store (`ok: false`: given up, `error`).
    ArtifactReplicated {
        name: String,
        version: String,
        digest: String,
        target: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Retention (`takt artifact gc --apply`) removed an artifact version.
    ArtifactDeleted {
        name: String,
        version: String,
        digest: String,
        reason: String,
    },
    /// A token was used (recorded at most once a minute per token).
    TokenUsed {
        id: String,
    },
    /// A project the server builds: a repository (URL or path) and its default branch.
    ProjectAdded {
        name: String,
        repo: String,
        branch: String,
    },
    ProjectUpdated {
        name: String,
        options: ProjectOptions,
    },
    /// A project secret, encrypted (XChaCha20-Poly1305); the value never appears in clear.
    SecretSet {
        name: String,
        nonce: String,
        ciphertext: String,
    },
    SecretRemoved {
        name: String,
    },
    /// A webhook or hook reached the server (`outcome`: queued, duplicate, ignored, ...).
    WebhookReceived {
        provider: String,
        delivery: String,
        event: String,
        #[serde(default)]
        git_ref: Option<String>,
        #[serde(default)]
        commit: Option<String>,
        outcome: WebhookOutcome,
    },
    /// One notification delivered (or given up on) to a subscriber.
    NotificationSent {
        target: String,
        event_seq: i64,
        attempts: u32,
        #[serde(default)]
        status: Option<u16>,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The project's forge refused a commit status (401, 403, 404, 422): recorded at most once
    /// an hour, with how many refusals since the last report went unreported.
    ForgeRefused {
        forge: ForgeKind,
        status: u16,
        error: String,
        #[serde(default)]
        unreported: u32,
    },
    /// A deployment to an environment began (`rollback`: it restores an earlier artifact).
    DeployStarted {
        environment: String,
        deploy: u64,
        artifact: ArtifactRef,
        /// What ran there before, if anything.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<ArtifactRef>,
        /// The commits this deploy ships since the previous one there, newest first: all of
        /// them up to [`MAX_DEPLOY_COMMITS`], then `truncated` says how many more.
        #[serde(default)]
        commits: Vec<String>,
        #[serde(default, skip_serializing_if = "is_zero")]
        truncated: u64,
        trigger: DeployTrigger,
        strategy: DeployStrategy,
        #[serde(default)]
        rollback: bool,
        /// The incident (`PROJECT#N`) it fixes, as `takt deploy|promote --fixes` said: a fix
        /// deployment for the flow metrics.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fixes: Option<String>,
    },
    /// One step of a deployment: what was done, the canary's weight after it, and its verdict.
    DeployStep {
        environment: String,
        deploy: u64,
        step: u32,
        action: StepAction,
        weight: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verdict: Option<StepVerdict>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Where the deploy was going forward when this step was recorded; a restarted server
        /// with `on_restart: continue` continues from the last one (absent: rolling back, or
        /// paused after a failure; or recorded before takt 0.2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<StepPosition>,
    },
    /// How a deployment ended: `succeeded`, `rolled_back`, `rollback_failed` (its smoke checks
    /// failed: the environment is halted), `failed` (it never took traffic) or `cancelled`.
    DeployFinished {
        environment: String,
        deploy: u64,
        outcome: DeployOutcome,
        /// The artifact the environment runs afterwards.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        running: Option<ArtifactRef>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The andon cord: deploys stop at their next safe point and none start until resumed.
    EnvironmentHalted {
        environment: String,
        reason: String,
        by: String,
    },
    EnvironmentResumed {
        environment: String,
        by: String,
    },
    /// An environment was retired: what ran there was stopped (`takt env stop`). The next
    /// deploy starts it again.
    EnvironmentStopped {
        environment: String,
        by: String,
        /// What was stopped, as the driver says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A person approved the next deploy to an environment with `approval: manual`.
    DeployApproved {
        environment: String,
        by: String,
    },
    /// A green run's automatic deploy (`auto: true`) that did not happen, and why; the event's
    /// `run` is that run. Every green default-branch run gets a `deploy_started` or this for
    /// each `auto: true` environment.
    DeploySkipped {
        environment: String,
        reason: SkipReason,
        /// `superseded`: the newer green run deployed instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by_run: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Something needs a person: e.g. a rollback whose smoke checks failed.
    ///
    /// Events written before 0.2 carry only `environment` and `reason`: such an incident's id
    /// is its event's `seq` (see [`incident_id`]), its severity `critical`, its impact started
    /// when it was opened.
    IncidentOpened {
        environment: String,
        reason: String,
        /// `PROJECT#N`, numbered per project from 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default)]
        severity: Severity,
        /// The services affected (checks' `service:`; empty: the project's own).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        services: Vec<String>,
        /// When users began to be affected (the first failing check), if before the opening.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "time::serde::rfc3339::option"
        )]
        impact_started_at: Option<OffsetDateTime>,
        /// What opened it (absent before 0.2: a rollback whose smoke checks failed).
        #[serde(default)]
        trigger: IncidentTrigger,
        /// The checks whose failure opened it (`trigger: check`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checks: Vec<String>,
        /// Who opened it (`trigger: person`: the token's name).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A person or takt moved an incident on (a status, a note on its timeline).
    IncidentUpdated {
        id: String,
        status: IncidentStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        by: String,
        /// Checks that failed after it opened and joined it (it resolves when all of its
        /// checks pass again).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checks: Vec<String>,
    },
    /// A person took the incident on: reminders stop.
    IncidentAcknowledged {
        id: String,
        by: String,
    },
    /// The incident is over; `auto`: takt saw its checks pass again (else a person said so).
    IncidentResolved {
        id: String,
        #[serde(default)]
        auto: bool,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// A health check crossed a threshold: `down` after `failure_threshold` failing results in
    /// a row (`since`: the first of them), `up` after `success_threshold` passing ones. Only
    /// these changes are events; raw results are not.
    CheckStateChanged {
        check: String,
        /// The check's `service:` (default: the project's name).
        service: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment: Option<String>,
        state: CheckState,
        /// The results in a row that made the change.
        streak: u32,
        /// The last result, explained (`[STATUS] (503) == 200`).
        reason: String,
        #[serde(with = "time::serde::rfc3339")]
        since: OffsetDateTime,
    },
    /// A service's state, as its checks (and maintenance windows) make it, changed. Recorded by
    /// the monitoring service; what status-page subscribers hear about.
    ServiceStateChanged {
        service: String,
        state: ServiceState,
        from: ServiceState,
        /// It has a check marked `public: true` (it is on the status page).
        #[serde(default)]
        public: bool,
        /// Its checks that are not up, at the change.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        checks: Vec<String>,
    },
    /// What takt did about incident `id` by its environment's `remediate:`: began `action` on
    /// deployment `deploy` (`PROJECT/ENV#N`), how it ended, or why it did nothing. One
    /// remediation per incident.
    IncidentRemediation {
        id: String,
        action: RemedyAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deploy: Option<String>,
        outcome: RemedyOutcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Incident `id` escalated: page number `count` to the on-call subscribers (`on_call:
    /// true`), repeated until someone acknowledges it.
    IncidentPaged {
        id: String,
        count: u32,
        reason: PageReason,
    },
    /// Incident `id` is still open and nobody has acknowledged it: reminder number `count`
    /// (the environment's `remind_every`).
    IncidentReminder {
        id: String,
        count: u32,
    },
    /// What the proxy in front of incident `id`'s environment had counted since it started
    /// (`requests`; `errors`: 5xx answers, unreachable instances and requests with no instance
    /// to go to), read by the monitoring service at the first failing result of the checks
    /// that opened it (`mark: impact`) and when it was resolved (`mark: resolved`). The
    /// postmortem's "requests failed" is the difference.
    IncidentTraffic {
        id: String,
        mark: TrafficMark,
        requests: u64,
        errors: u64,
    },
    /// A deployment from before takt, loaded by `takt import`: only the flow metrics read it.
    ImportedDeployment {
        deployment: ImportedDeployment,
    },
    /// An incident from before takt, loaded by `takt import`: only the flow metrics read it.
    ImportedIncident {
        incident: ImportedIncident,
    },
    /// Disaster-recovery drill number `drill` of the project began in `environment`: takt
    /// sends `load_rps` requests a second to its public address and turns down `kill`
    /// (`count` of them, for instances).
    DrillStarted {
        drill: u64,
        environment: String,
        kill: DrillKill,
        count: u32,
        load_rps: u32,
        by: String,
    },
    /// The drill ended: what it measured (docs/monitoring.md, "Drills"), or why it could not.
    DrillFinished {
        drill: u64,
        environment: String,
        outcome: DrillOutcome,
        #[serde(default)]
        requests: u64,
        #[serde(default)]
        failed: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detect_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detected_by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recover_ms: Option<u64>,
        /// Processes it turned down.
        #[serde(default)]
        killed: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A feature flag changed in one environment (docs/flags.md): `source: file` when the
    /// default branch moved to a commit whose `flags:` define it differently there (`after`
    /// absent: the file no longer defines it), `source: api` when someone changed it at run time
    /// (`takt flag set|kill`), which then wins over the file until the file changes that flag.
    FlagChanged {
        environment: String,
        flag: String,
        source: FlagSource,
        /// The token's name, for a change made at run time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// The default branch's commit, for a change from the file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        /// What was in force before (absent: the flag was not defined there).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<FlagSetting>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<FlagSetting>,
    },
    /// Requests the server refused in the minute from `from`, counted (one event a minute at
    /// most, and only when there were any; never one per request): failed logins (a missing
    /// or wrong token), bad webhook signatures, and every 401 and 403 answer. Project `""`.
    SecuritySummary {
        #[serde(with = "time::serde::rfc3339")]
        from: OffsetDateTime,
        failed_logins: u64,
        bad_signatures: u64,
        unauthorized: u64,
        forbidden: u64,
    },
    /// The deployment (`PROJECT/ENV#N`) marked as the incident's cause, or none (`deploy`
    /// absent: the mark is taken back). The last mark wins.
    IncidentCauseMarked {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deploy: Option<String>,
        by: String,
    },
}

/// Whether a health check passes, as its thresholds decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CheckState {
    Up,
    /// Passing, but slow or reporting trouble (`degraded_latency`, `degraded_when`).
    Degraded,
    Down,
}

/// A service's state, as Statuspage and Gatus name them, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ServiceState {
    #[default]
    Operational,
    UnderMaintenance,
    Degraded,
    PartialOutage,
    MajorOutage,
}

impl ServiceState {
    /// For people: `Partial outage`.
    pub fn label(self) -> &'static str {
        match self {
            ServiceState::Operational => "Operational",
            ServiceState::UnderMaintenance => "Under maintenance",
            ServiceState::Degraded => "Degraded performance",
            ServiceState::PartialOutage => "Partial outage",
            ServiceState::MajorOutage => "Major outage",
        }
    }
}

/// A deployment of a project's history before takt (`takt import`, docs/metrics.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedDeployment {
    /// The source's own id: importing it again replaces it.
    pub id: String,
    pub environment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub outcome: DeployOutcome,
    /// What was deployed (a digest, a version): the same as the one before it is no change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default)]
    pub rollback: bool,
    /// The incident (an imported incident's id) it fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixes: Option<String>,
    /// The commits it shipped, with their times.
    #[serde(default)]
    pub commits: Vec<ImportedCommit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedCommit {
    pub sha: String,
    #[serde(with = "time::serde::rfc3339")]
    pub committed_at: OffsetDateTime,
}

/// An incident of a project's history before takt (`takt import`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedIncident {
    pub id: String,
    pub environment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    /// When users began to be affected (default: the opening).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub impact_started_at: Option<OffsetDateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub resolved_at: Option<OffsetDateTime>,
    /// The imported deployment (its `id`) that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// A feature flag's `state`, as flagd writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum FlagState {
    Enabled,
    /// Evaluates to nothing (reason `DISABLED`): clients use their code default.
    Disabled,
}

impl FlagState {
    /// `ENABLED` or `DISABLED`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What decides a flag's answer in one environment: its state, default variant, targeting
/// rule (`$ref`s replaced) and variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagSetting {
    pub state: FlagState,
    /// flagd allows none: then the client's code default applies.
    #[serde(rename = "defaultVariant", default)]
    pub default_variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targeting: Option<serde_json::Value>,
    #[serde(default)]
    pub variants: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Where a flag's setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum FlagSource {
    /// The default branch's takt.yml.
    File,
    /// A change at run time (`takt flag set|kill`, the API).
    Api,
}

/// What a drill turns down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DrillKill {
    /// `count` instances of the running version (SIGKILL); the supervisor starts them again.
    Instance,
    /// Every instance at once.
    AllInstances,
    /// The environment's supervisor (its proxy with it); the server's watchdog restores it.
    Supervisor,
}

/// How a drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DrillOutcome {
    /// Service came back (`recover_ms`).
    Recovered,
    /// It had not recovered when the drill gave up (60 s after the kill).
    NotRecovered,
    /// The drill could not turn anything down (`detail` says why).
    Failed,
}

/// What remediation does (an environment's `remediate:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RemedyAction {
    Rollback,
    Restart,
    Command,
}

/// How a remediation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RemedyOutcome {
    Started,
    Succeeded,
    Failed,
    /// Nothing was done (`detail` says why: the environment is halted, no deployment
    /// finished within `remediate_window` before the incident, nothing to roll back to).
    Skipped,
}

/// When an `incident_traffic` reading was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum TrafficMark {
    /// At the first failing result of the checks that opened the incident.
    Impact,
    /// Once the incident was resolved.
    Resolved,
}

/// A proxy's counters: requests, and those that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RequestCounts {
    pub requests: u64,
    pub errors: u64,
}

/// Why an incident paged its on-call subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PageReason {
    /// Open and unacknowledged `escalate_after` after it opened (or since the last page).
    Unresolved,
    /// Its remediation failed.
    RemediationFailed,
}

/// What opened an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum IncidentTrigger {
    /// Health checks crossed their failure threshold; resolved by takt when they pass again.
    Check,
    /// A deploy's analysis (or smoke checks) failed and it was rolled back.
    Analysis,
    /// A rollback's own smoke checks failed: the environment is halted.
    #[default]
    RollbackFailed,
    /// A person opened it (`takt incident open`).
    Person,
}

/// An incident to open; its id is given when it is recorded (numbered per project).
#[derive(Debug, Clone, PartialEq)]
pub struct NewIncident {
    pub environment: String,
    pub reason: String,
    pub severity: Severity,
    pub services: Vec<String>,
    pub impact_started_at: Option<OffsetDateTime>,
    pub trigger: IncidentTrigger,
    pub checks: Vec<String>,
    pub by: Option<String>,
}

impl NewIncident {
    /// What takt opens itself: critical, impact from now, no checks.
    pub fn by_takt(environment: &str, reason: &str, trigger: IncidentTrigger) -> NewIncident {
        NewIncident {
            environment: environment.to_string(),
            reason: reason.to_string(),
            severity: Severity::Critical,
            services: Vec::new(),
            impact_started_at: None,
            trigger,
            checks: Vec::new(),
            by: None,
        }
    }

    /// Its `incident_opened` event, as `id`.
    pub fn opened(self, id: &str) -> EventKind {
        EventKind::IncidentOpened {
            environment: self.environment,
            reason: self.reason,
            id: Some(id.to_string()),
            severity: self.severity,
            services: self.services,
            impact_started_at: self.impact_started_at,
            trigger: self.trigger,
            checks: self.checks,
            by: self.by,
        }
    }
}

/// How bad an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Severity {
    Minor,
    Major,
    /// Users cannot use the service (what takt's own incidents were before 0.2).
    #[default]
    Critical,
}

/// Where an incident stands (the statuses of Statuspage and Gatus's announcements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum IncidentStatus {
    Investigating,
    Identified,
    Monitoring,
    Resolved,
}

/// The id of the incident an `incident_opened` event opened: its own, or (events before 0.2)
/// `PROJECT#<seq>`.
pub fn incident_id(e: &Event) -> Option<String> {
    match &e.kind {
        EventKind::IncidentOpened { id: Some(id), .. } => Some(id.clone()),
        EventKind::IncidentOpened { id: None, .. } => e.seq.map(|s| format!("{}#{s}", e.project)),
        _ => None,
    }
}

/// An incident id, `PROJECT#N`, split at its last `#` (`N` a number, `PROJECT` not empty);
/// none if it is not one.
pub fn parse_incident_id(id: &str) -> Option<(&str, u64)> {
    let (project, n) = id.rsplit_once('#')?;
    let n = n.parse().ok()?;
    (!project.is_empty()).then_some((project, n))
}

/// What a malformed incident id is told.
pub fn bad_incident_id(id: &str) -> String {
    format!("`{id}` is not an incident id: give PROJECT#N (e.g. shop#3)")
}

/// The most commits one `deploy_started` lists (a first deploy of a long history would
/// otherwise list all of it); the rest are counted in its `truncated`.
pub const MAX_DEPLOY_COMMITS: usize = 10_000;

fn first_attempt() -> u32 {
    1
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An artifact as deployments name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub name: String,
    pub version: String,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// What a forge's webhook delivery led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum WebhookOutcome {
    /// A run was queued for its commit.
    Queued,
    /// Its commit (or this delivery) had a run already.
    Duplicate,
    /// Nothing to build: another event, or a deleted ref.
    Ignored,
    /// The forge's test delivery.
    Ping,
    /// A merge request was closed or merged: its waiting and running runs were cancelled.
    Closed,
}

/// How an artifact was read without downloading it (`artifact_read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ReadAction {
    /// The list of artifacts.
    List,
    /// One version's manifest.
    Show,
}

/// How a deployment moves traffic (`deploy_started.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DeployStrategy {
    Recreate,
    Rolling,
    Canary,
    BlueGreen,
    /// Back to an earlier artifact, checks only (no analysis).
    Rollback,
    /// What ran before a restart, started again.
    Restore,
}

impl std::fmt::Display for DeployStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.into())
    }
}

/// What one step of a deployment did (`deploy_step.action`). Stored as its name: `set_weight`,
/// `approval`, ... and `smoke <what>` (`smoke new version`, `smoke batch 1/2`, `smoke at 20%`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum StepAction {
    /// The deploy began (the view's first state; not a stored step).
    Started,
    /// The verified, read-only copy of the release.
    Prepare,
    /// The new version's instances started.
    Start,
    SetWeight,
    /// Waits for `takt approve`.
    Approval,
    Paused,
    Resumed,
    Halted,
    Rollback,
    Promote,
    /// Blue/green's preview of the new colour.
    Preview,
    /// Blue/green keeps the old colour up for a while.
    KeepOld,
    Analysis,
    /// Smoke checks, and what they checked.
    Smoke(String),
    /// A name this release does not know (written by a later one): kept as it is.
    Other(String),
}

impl StepAction {
    /// The unit actions and their names (`Smoke` and `Other` carry theirs).
    const NAMES: [(StepAction, &'static str); 13] = [
        (StepAction::Started, "started"),
        (StepAction::Prepare, "prepare"),
        (StepAction::Start, "start"),
        (StepAction::SetWeight, "set_weight"),
        (StepAction::Approval, "approval"),
        (StepAction::Paused, "paused"),
        (StepAction::Resumed, "resumed"),
        (StepAction::Halted, "halted"),
        (StepAction::Rollback, "rollback"),
        (StepAction::Promote, "promote"),
        (StepAction::Preview, "preview"),
        (StepAction::KeepOld, "keep_old"),
        (StepAction::Analysis, "analysis"),
    ];

    /// Its stored name.
    pub fn name(&self) -> std::borrow::Cow<'_, str> {
        match self {
            StepAction::Smoke(what) => format!("smoke {what}").into(),
            StepAction::Other(name) => name.as_str().into(),
            unit => StepAction::NAMES
                .iter()
                .find(|(a, _)| a == unit)
                .map_or("", |(_, n)| n)
                .into(),
        }
    }
}

impl From<String> for StepAction {
    fn from(s: String) -> StepAction {
        if let Some(what) = s.strip_prefix("smoke ") {
            return StepAction::Smoke(what.to_string());
        }
        StepAction::NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map_or(StepAction::Other(s), |(a, _)| a.clone())
    }
}

impl From<StepAction> for String {
    fn from(a: StepAction) -> String {
        a.name().into_owned()
    }
}

impl std::fmt::Display for StepAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Where a deploy going forward was (`deploy_step.position`): the plan it ran (a first deploy
/// or a rollback runs as `recreate`), the operation of that plan (from 0) and, in a canary, the
/// canary step (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepPosition {
    pub plan: DeployStrategy,
    pub op: u32,
    #[serde(default)]
    pub canary: u32,
}

/// How a deployment's step went (`deploy_step.verdict`): a check's or an analysis's verdict,
/// or `waiting` (for a person).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum StepVerdict {
    Successful,
    Failed,
    Inconclusive,
    /// The measurement itself failed (analysis).
    Error,
    Waiting,
}

impl std::fmt::Display for StepVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.into())
    }
}

/// How a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DeployOutcome {
    /// The new artifact runs and passed its checks.
    Succeeded,
    /// It failed and the environment went back to what ran before (checks passed).
    RolledBack,
    /// It failed and so did going back: the environment is halted, an incident opened.
    RollbackFailed,
    /// It never took traffic.
    Failed,
    Cancelled,
    /// The server stopped while it was in flight.
    Interrupted,
    /// Nothing to do: the environment already ran it.
    Unchanged,
}

impl DeployOutcome {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

impl RemedyAction {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

impl RemedyOutcome {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// A remediation step in words: `rollback of shop/production#2 failed: smoke checks failed`.
pub fn describe_remediation(
    action: RemedyAction,
    deploy: Option<&str>,
    outcome: RemedyOutcome,
    detail: Option<&str>,
) -> String {
    let on = deploy.map(|d| format!(" of {d}")).unwrap_or_default();
    let detail = detail.map(|d| format!(": {d}")).unwrap_or_default();
    format!("{}{on} {}{detail}", action.name(), outcome.name())
}

impl std::fmt::Display for DeployOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a green run's automatic deploy did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A newer green run of the branch came before this one could start (the environment was
    /// busy): only the newest is deployed.
    Superseded,
    /// The run stored no artifact the environment can deploy (see its `artifact:`).
    NoArtifact,
    /// The environment runs that artifact, healthy, already.
    AlreadyRunning,
    /// A gate refused it (halted, frozen, requires): `detail` says which.
    Refused,
}

/// What asked for a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployTrigger {
    /// `auto: true`: a green run of the default branch.
    Pipeline { run: u64 },
    /// A person or a script, by token id (`takt deploy`, `promote`, `rollback`).
    Token { token: String, command: String },
    /// takt itself: an automatic rollback.
    Automatic { reason: String },
}

impl EventKind {
    /// The stable name of this kind of event (the `kind` field).
    pub fn name(&self) -> &'static str {
        self.into()
    }
}

impl Event {
    /// A new event stamped with the current UTC time.
    pub fn now(project: &str, run: Option<u64>, kind: EventKind) -> Event {
        Event {
            seq: None,
            at: OffsetDateTime::now_utc(),
            project: project.to_string(),
            run,
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json_with_a_stable_kind_tag() {
        let e = Event::now(
            "demo",
            Some(3),
            EventKind::JobFinished {
                job: "test [A=1]".into(),
                attempt: 2,
                status: JobStatus::Success,
                exit_code: Some(0),
                failure_reason: None,
                allow_failure: false,
                duration_ms: 12,
                wait_ms: 1,
                flaky: true,
            },
        );
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"kind\":\"job_finished\""), "{json}");
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back.kind, e.kind);
        assert_eq!(back.kind.name(), "job_finished");
    }

    /// `name()` is the serde tag for the kinds added since 0.1 too (the 0.1 kinds are checked
    /// against a log 0.1 wrote: crates/takt-store/tests/old_log.rs).
    #[test]
    fn every_new_kind_is_named_as_it_is_stored() {
        let kinds = [
            EventKind::CommitInfo {
                commit: "c".into(),
                author: "a".into(),
                email: None,
                committed_at: OffsetDateTime::UNIX_EPOCH,
                subject: "s".into(),
            },
            EventKind::DeploySkipped {
                environment: "e".into(),
                reason: SkipReason::Superseded,
                by_run: Some(2),
                detail: None,
            },
            EventKind::IncidentUpdated {
                id: "p#1".into(),
                status: IncidentStatus::Identified,
                note: None,
                by: "x".into(),
                checks: vec![],
            },
            EventKind::IncidentAcknowledged {
                id: "p#1".into(),
                by: "x".into(),
            },
            EventKind::IncidentResolved {
                id: "p#1".into(),
                auto: true,
                by: "takt".into(),
                note: None,
            },
            EventKind::IncidentCauseMarked {
                id: "p#1".into(),
                deploy: None,
                by: "x".into(),
            },
            EventKind::CheckStateChanged {
                check: "api".into(),
                service: "shop".into(),
                environment: Some("production".into()),
                state: CheckState::Down,
                streak: 3,
                reason: "[STATUS] (503) == 200".into(),
                since: OffsetDateTime::UNIX_EPOCH,
            },
        ];
        for k in kinds {
            let json = serde_json::to_value(Event::now("p", None, k.clone())).unwrap();
            assert_eq!(json["kind"], k.name());
            let back: Event = serde_json::from_value(json).unwrap();
            assert_eq!(back.kind, k);
        }
        assert_eq!(DeployOutcome::RollbackFailed.name(), "rollback_failed");
        assert_eq!(
            serde_json::to_value(DeployOutcome::RolledBack).unwrap(),
            DeployOutcome::RolledBack.name()
        );
    }
}

#[cfg(test)]
mod step_tests {
    use super::*;

    #[test]
    fn step_actions_read_and_write_the_names_earlier_releases_stored() {
        for name in [
            "set_weight",
            "approval",
            "keep_old",
            "smoke batch 1/2",
            "smoke at 20%",
            "from_the_future",
        ] {
            let a: StepAction = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(serde_json::to_value(&a).unwrap(), serde_json::json!(name));
        }
        assert_eq!(
            StepAction::from("smoke preview".to_string()),
            StepAction::Smoke("preview".into())
        );
        assert_eq!(StepAction::from("paused".to_string()), StepAction::Paused);
        assert_eq!(StepAction::from("x".to_string()), StepAction::Other("x".into()));
        let v: StepVerdict = serde_json::from_str("\"inconclusive\"").unwrap();
        assert_eq!(v, StepVerdict::Inconclusive);
        let s: DeployStrategy = serde_json::from_str("\"blue_green\"").unwrap();
        assert_eq!(s.to_string(), "blue_green");
    }
}
