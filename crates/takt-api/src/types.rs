//! Request and response bodies of the API. The server answers with these types and the CLI
//! reads them back, so a field renamed on one side breaks the build, not a user.
//!
//! Views folded from the event log (a run, an environment, a project) travel as JSON objects
//! and are documented as such; everything a command sends or gets back is a type here.

use crate::auth::Scope;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Every 4xx and 5xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do; names the field, file or id concerned.
    pub error: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

// ---- tokens ----

pub use takt_views::TokenInfo;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// id, name, scope, created_at, last_used_at (never a secret or its hash).
    #[schema(value_type = Vec<Object>)]
    pub tokens: Vec<TokenInfo>,
}

/// `GET /api/v1/whoami`: the token the request carries (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    /// id, name, scope, projects, environments, created_at, last_used_at.
    #[schema(value_type = Object)]
    pub token: TokenInfo,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// 1 to 100 printable characters.
    pub name: String,
    #[schema(schema_with = crate::auth::scope_schema)]
    pub scope: Scope,
    /// Limit it to these projects (they must exist): routes of other projects, and routes
    /// that name no project, answer 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// Limit it to environments of these names: routes of other environments answer 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
}

/// A new token: its secret is in this answer only.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub id: String,
    pub name: String,
    #[schema(schema_with = crate::auth::scope_schema)]
    pub scope: Scope,
    /// The secret: `takt_` and 40 hex digits.
    pub token: String,
}

// ---- projects and secrets ----

/// `POST /api/v1/projects`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    pub name: String,
    /// A repository URL or a path on the server's machine.
    pub repo: String,
    /// The default branch (default `main`).
    #[serde(default)]
    pub branch: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectCreated {
    pub name: String,
    pub repo: String,
    pub branch: String,
}

/// `GET /api/v1/projects`: each project's view (name, repo, branch, added_at, options, secrets).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectList {
    #[schema(value_type = Vec<Object>)]
    pub projects: Vec<takt_views::Project>,
}

/// A secret's name and when it was set (its value never leaves the server).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretInfo {
    pub name: String,
    pub set_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

// ---- events ----

/// `GET /api/v1/events`: a page of the event log, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// One event kind, such as `run_finished`.
    pub kind: Option<String>,
    pub project: Option<String>,
    pub run: Option<u64>,
    /// Events after this sequence number (the previous page's `next_after`).
    pub after: Option<i64>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
    /// RFC 3339: events at or after this time.
    pub since: Option<String>,
    /// RFC 3339: events before this time.
    pub until: Option<String>,
    /// A long poll: when no event matches yet, wait up to this many seconds (at most 25) for
    /// the first one appended, instead of answering at once with none.
    pub wait: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventsPage {
    /// Events as stored (without token hashes or sealed secrets).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
    /// Where the next page starts, if this one was full.
    pub next_after: Option<i64>,
    /// The sequence number of the last event in the log when this page was read: `after` for
    /// a long poll that waits for what comes next.
    #[serde(default)]
    pub head: i64,
}

// ---- runs ----

/// `GET /api/v1/runs`: newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    pub project: Option<String>,
    /// A run status: queued, running, passed, failed, cancelled.
    pub status: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
    /// Runs numbered below this (paging backwards, newest first).
    pub before: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    /// Run summaries (the view `takt runs show` prints, without its jobs).
    #[schema(value_type = Vec<Object>)]
    pub runs: Vec<takt_views::RunView>,
    /// What the listed runs' commits say about themselves (author, time, subject), by sha,
    /// where the log has it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub commits: std::collections::BTreeMap<String, takt_views::CommitView>,
}

/// `POST /api/v1/projects/{name}/trigger` (an empty body runs the default branch's head).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// A commit, branch or tag (default: the project's default branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    /// The full ref the commit was pushed to (`refs/heads/X`, `refs/tags/T`), as hooks report.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Run even if this commit already has a run.
    #[serde(default)]
    pub force: bool,
    /// Sent by `takt hook notify`: a push reported by a git hook.
    #[serde(default)]
    pub hook: bool,
}

/// A run asked for: queued (202) or already there (200, `duplicate`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Triggered {
    pub queued: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    pub run: u64,
    pub commit: String,
}

/// `POST /api/v1/runs/{project}/{run}/retry`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Only the jobs that did not pass; the passed ones are taken over with their artifacts.
    #[serde(default)]
    pub failed: bool,
}

/// What a cancel did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Cancelled {
    pub run: u64,
    /// `cancelled`, or the status the run had already ended with.
    pub status: String,
}

// ---- artifacts ----

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PublicKey {
    /// `ed25519`.
    pub algorithm: String,
    /// Hex.
    pub public_key: String,
}

/// `GET /api/v1/keys`: the keys that verify manifests (public).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Keys {
    pub keys: Vec<PublicKey>,
}

/// `GET /api/v1/artifacts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ArtifactsQuery {
    pub project: Option<String>,
    pub name: Option<String>,
    /// Only those the run of this number stored (with `project`).
    pub run: Option<u64>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ArtifactList {
    /// name, version, digest, size, project, run, job, stored_at per version, newest first.
    #[schema(value_type = Vec<Object>)]
    pub artifacts: Vec<takt_views::ArtifactView>,
}

/// `PUT /api/v1/artifacts/{name}/{version}`: the provenance of a pushed artifact.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PushQuery {
    pub project: Option<String>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub run: Option<u64>,
    pub job: Option<String>,
    /// The file name the artifact had, for downloads.
    pub file: Option<String>,
}

/// A pushed artifact: 201, or 200 with `unchanged` when the same bytes were there already.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Pushed {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// A blob stored by its content.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BlobStored {
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CorruptBlob {
    pub digest: String,
    /// What its bytes hash to now.
    pub actual: String,
}

/// A version whose blob cannot be served.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MissingBlob {
    /// `NAME@VERSION`.
    pub artifact: String,
    pub digest: String,
}

/// `POST /api/v1/artifacts/fsck`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FsckReport {
    pub checked: u64,
    pub bytes: u64,
    /// Blobs whose bytes no longer match their digest (moved to quarantine).
    pub corrupt: Vec<CorruptBlob>,
    /// Versions whose blob is in quarantine (corrupt): they cannot be served until pushed
    /// again. A blob found corrupt now is in `corrupt` and its versions here, not in `missing`.
    pub quarantined: Vec<MissingBlob>,
    /// Versions whose blob is nowhere, not even in quarantine.
    pub missing: Vec<MissingBlob>,
    pub ok: bool,
}

/// `POST /api/v1/artifacts/gc`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcBody {
    /// Delete (otherwise only say what would go).
    #[serde(default)]
    pub apply: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GcArtifact {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    pub applied: bool,
    pub artifacts: Vec<GcArtifact>,
    pub blobs: Vec<String>,
    pub freed_bytes: u64,
}

// ---- environments ----

/// `POST .../deploy`, `.../rollback`, `.../halt`: what to deploy and why.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    /// `NAME@VERSION` (deploy: required; rollback: default the previous good one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// Why (halt: required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// deploy, promote: the incident (`PROJECT#N`) this deploy fixes (a fix deployment for the
    /// flow metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixes: Option<String>,
}

/// What a deploy request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployAnswerOutcome {
    /// A deploy started (202): follow it by its number.
    Started,
    /// The environment already runs it (200): nothing to do.
    Unchanged,
    /// The deploy in flight goes back to what ran before it (202).
    RollingBack,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeployAnswer {
    pub project: String,
    pub environment: String,
    /// The deploy's number in the environment (`PROJECT/ENV#N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub artifact: Option<takt_model::ArtifactRef>,
    pub outcome: DeployAnswerOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Halted {
    pub project: String,
    pub environment: String,
    /// The reason given.
    pub halted: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Resumed {
    pub project: String,
    pub environment: String,
    pub resumed: bool,
    pub was_halted: bool,
}

/// What `takt env stop` did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentStopped {
    pub project: String,
    pub environment: String,
    /// What was stopped, as the driver says.
    pub stopped: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Approved {
    pub project: String,
    pub environment: String,
    pub deploy: u64,
    pub approved: bool,
}

/// Whether deploys to an environment wait for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    Manual,
    None,
}

/// One environment: its view folded from the log (project, environment, running, since,
/// healthy, deploying, halted, previous, last_deploy) and what its default-branch config says.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentStatus {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub view: takt_views::EnvView,
    /// `process`, `nginx` or `command`.
    pub driver: String,
    pub strategy: String,
    pub auto: bool,
    pub requires: Vec<String>,
    pub approval: Approval,
    /// RFC 3339: deploys are frozen until then.
    pub frozen_until: Option<String>,
    /// Where it answers (its public port), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The deploy holding it now, if any.
    pub busy: Option<u64>,
    /// The recent deployments with their steps, newest first (one environment's page only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub history: Vec<takt_views::Deployment>,
    /// What the supervisor runs now (process driver; one environment's page only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub supervisor: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentList {
    pub environments: Vec<EnvironmentStatus>,
}

// ---- incidents ----

/// `POST /api/v1/projects/{name}/incidents`: a person opens an incident.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIncidentBody {
    pub environment: String,
    /// What is wrong, as users see it.
    pub reason: String,
    /// `minor`, `major` or `critical` (default `major`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub severity: Option<takt_model::Severity>,
    /// The services affected (default: the project's own).
    #[serde(default)]
    pub services: Vec<String>,
}

/// `POST .../incidents/{n}/update`: a status, a note, or both.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentChange {
    /// `investigating`, `identified`, `monitoring` or `resolved`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub status: Option<takt_model::IncidentStatus>,
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST .../incidents/{n}/cause`: the deployment that caused it (`PROJECT/ENV#N`), or none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CauseBody {
    #[serde(default)]
    pub deploy: Option<String>,
}

/// Query of `GET /api/v1/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlowQuery {
    /// Only this project's (default: every project).
    pub project: Option<String>,
    /// Only this environment (default: the production ones: `production: true`, or what no
    /// other environment requires).
    pub env: Option<String>,
    /// The window: this long before now (`30d`, `12w`, `36h`; default 30d).
    pub since: Option<String>,
}

/// The five keys over one week (`FlowReport::weeks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WeekKeys {
    /// The week's first day (RFC 3339); it ends 7 days later.
    pub from: String,
    pub deployments_per_day: f64,
    /// Change lead time p50, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_time_p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_fail_rate: Option<f64>,
    /// Failed deployment recovery time p50, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rework_rate: Option<f64>,
}

/// The flow metrics of a window, and those of the window before it (for the trend).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlowReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The environments counted as production (`PROJECT/ENV`).
    pub environments: Vec<String>,
    /// The window, RFC 3339, `[from, to)`.
    pub from: String,
    pub to: String,
    #[schema(value_type = Object)]
    pub dora: takt_flow::dora::Dora,
    /// The keys week by week: the last eight 7-day windows ending at `to`, oldest first (the
    /// web UI's trend charts).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub weeks: Vec<WeekKeys>,
    /// The same keys over the window of the same length before.
    #[schema(value_type = Object)]
    pub previous: takt_flow::dora::Dora,
    #[schema(value_type = Object)]
    pub bottleneck: takt_flow::bottleneck::Bottleneck,
    /// Runs within their pipeline's `budget`, and the jobs that pushed runs over it.
    #[schema(value_type = Object)]
    pub coffee: takt_flow::coffee::Coffee,
    /// Runs along their critical paths: flow efficiency, each job's work and wait there, the
    /// job that would shorten runs most.
    #[schema(value_type = Object)]
    pub paths: takt_flow::path::Paths,
    /// The band thresholds the keys were judged by (`metrics:` in takt.yml, or the defaults).
    #[schema(value_type = Object)]
    pub thresholds: takt_flow::dora::Thresholds,
}

/// `POST /api/v1/environments/{project}/{env}/drill`: a disaster-recovery drill.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrillBody {
    /// `instance`, `all_instances` or `supervisor`.
    #[schema(value_type = String)]
    pub kill: takt_model::DrillKill,
    /// Instances to turn down (`instance`; default 1).
    #[serde(default)]
    pub count: Option<u32>,
    /// Requests a second sent to the public address meanwhile (default 20).
    #[serde(default)]
    pub load: Option<u32>,
    /// Run it in a production environment too.
    #[serde(default)]
    pub yes: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DrillAnswer {
    pub project: String,
    pub environment: String,
    pub drill: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DrillList {
    #[schema(value_type = Vec<Object>)]
    pub drills: Vec<takt_views::DrillView>,
}

/// `GET /api/v1/projects/{name}/incidents/{number}/postmortem`: the draft, typed and as
/// Markdown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PostmortemDraft {
    #[schema(value_type = Object)]
    pub postmortem: takt_monitor::postmortem::Postmortem,
    pub markdown: String,
}

/// `POST /api/v1/projects/{name}/import`: history from before takt (docs/metrics.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub deployments: Vec<takt_model::ImportedDeployment>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub incidents: Vec<takt_model::ImportedIncident>,
}

/// What an import recorded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImportAnswer {
    pub project: String,
    pub deployments: usize,
    pub incidents: usize,
}

/// Query of `GET /api/v1/flaky`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlakyQuery {
    /// Only this project's (default: every project).
    pub project: Option<String>,
}

/// The flaky tests, most often flaky first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlakyList {
    #[schema(value_type = Vec<Object>)]
    pub tests: Vec<takt_flow::flaky::Flaky>,
}

/// Query of `GET /api/v1/incidents`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IncidentsQuery {
    /// Only this project's.
    pub project: Option<String>,
    /// Resolved ones too (default: open ones only).
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentList {
    /// Newest first.
    #[schema(value_type = Vec<Object>)]
    pub incidents: Vec<takt_views::Incident>,
}

/// One incident, with its suspects: the deployments and flag changes that most likely caused it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub incident: takt_views::Incident,
    #[schema(value_type = Vec<Object>)]
    pub suspects: Vec<takt_monitor::suspect::Suspect>,
    /// Feature flag changes in that environment in the 2 h before the impact, most likely
    /// first: suspects too (takt reports them, never flips them back).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub flag_changes: Vec<takt_monitor::suspect::FlagSuspect>,
}

/// The answer to every change of an incident: its id and where it stands now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentAnswer {
    /// `PROJECT#N`.
    pub id: String,
    #[schema(value_type = String)]
    pub status: takt_model::IncidentStatus,
}

// ---- checks ----

/// One health check of a project's default branch, and its state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckStatus {
    pub name: String,
    /// `http`, `tcp`, `dns`, `command`, `process`, `metric` or `heartbeat`.
    pub probe: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// `up` or `down` as its last change left it; none: it never crossed a threshold (up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub state: Option<takt_model::CheckState>,
    /// RFC 3339: the first result of the streak that made the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub public: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckList {
    pub project: String,
    pub checks: Vec<CheckStatus>,
}

/// Where and how a heartbeat check gets its beats.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatToken {
    /// `POST` here, with `Authorization: Bearer TOKEN`.
    pub url: String,
    /// This check's own token: it can send this check's beats, and nothing else.
    pub token: String,
}

/// `POST /api/v1/heartbeats/{project}/{check}`: the beat was taken.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BeatTaken {
    pub project: String,
    pub check: String,
}

/// An OFREP evaluation request (OpenFeature Remote Evaluation Protocol): the evaluation
/// context, `targetingKey` and any attributes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct OfrepRequest {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `GET /api/v1/projects/{name}/flags`: the default branch's flags (`flags:` of its takt.yml)
/// and what is in force in each environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct FlagList {
    /// The default branch's commit they were read from.
    pub commit: String,
    /// Days unchanged at one variant for everyone after which a flag is stale.
    pub stale_days: u32,
    pub flags: Vec<FlagInfo>,
}

/// One flag: as the file defines it, and what is in force in each environment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlagInfo {
    pub key: String,
    /// `boolean`, `string`, `integer`, `float` or `object`.
    pub kind: String,
    pub variants: Vec<String>,
    /// The file's own setting (environments without settings of their own see it).
    #[schema(value_type = Object)]
    pub file: FlagSetting,
    /// Each environment takt keeps the flag for: the setting in force there and its source.
    #[serde(default)]
    pub environments: std::collections::BTreeMap<String, FlagInForce>,
    /// One variant for everyone and unchanged for `stale_days` in every environment: a
    /// candidate for removal.
    #[serde(default)]
    pub stale: bool,
}

/// What decides a flag's answer in one place (state, default variant, targeting, variants).
pub use takt_model::FlagSetting;

/// The setting in force in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlagInForce {
    #[schema(value_type = Object)]
    pub setting: FlagSetting,
    /// `file` (the default branch's takt.yml) or `api` (a change at run time, which wins
    /// until the file changes this flag).
    #[schema(value_type = String)]
    pub source: takt_model::FlagSource,
    /// Who made the run-time change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When it last changed (RFC 3339, UTC).
    pub changed_at: String,
}

/// `POST /api/v1/environments/{project}/{env}/flags/{key}`: one of `variant`, `rollout`, `state`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagChangeRequest {
    /// Serve this variant to everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// A boolean flag on for this percentage of targeting keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<u8>,
    /// `ENABLED` or `DISABLED` (`takt flag kill` sends `DISABLED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub state: Option<takt_model::FlagState>,
    /// Let `variant` or `rollout` replace a targeting rule of the flag's own.
    #[serde(default)]
    pub replace_targeting: bool,
}

/// What a flag change did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlagChangeAnswer {
    /// `false`: the flag was already so; nothing was recorded.
    pub changed: bool,
    /// The `flag_changed` event's position in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[schema(value_type = Object)]
    pub before: FlagSetting,
    #[schema(value_type = Object)]
    pub after: FlagSetting,
}

/// `GET /api/v1/projects/{name}/flags/history`: changes, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct FlagHistory {
    pub changes: Vec<FlagChangeEntry>,
}

/// One `flag_changed` event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlagChangeEntry {
    pub seq: i64,
    /// RFC 3339, UTC.
    pub at: String,
    pub environment: String,
    pub flag: String,
    #[schema(value_type = String)]
    pub source: takt_model::FlagSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub before: Option<FlagSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub after: Option<FlagSetting>,
}
