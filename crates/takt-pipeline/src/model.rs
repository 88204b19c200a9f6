//! The validated pipeline: what `takt.yml` means once every key has been checked.

use crate::diag::{Diagnostics, Pos};
use crate::expr::Expr;
use crate::gitlab::Layout;
use std::time::Duration;

/// The default stages, in order (`.pre` and `.post` are always added around them, as in GitLab).
pub const DEFAULT_STAGES: [&str; 5] = ["build", "test", "package", "release", "deploy"];
/// The stages of a `.gitlab-ci.yml` that names none: GitLab's (`.pre` and `.post` are added to both).
pub const GITLAB_DEFAULT_STAGES: [&str; 3] = ["build", "test", "deploy"];
/// The default build-time budget: the coffee test.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub stages: Vec<String>,
    pub variables: Vec<(String, String)>,
    pub budget: Duration,
    /// Runnable jobs (templates starting with `.` removed, `extends` resolved, matrices expanded),
    /// in file order.
    pub jobs: Vec<Job>,
    /// Sections the file declares that takt reserves but does not act on yet.
    pub reserved: Vec<(String, Pos)>,
    /// Cron schedules (read by the server from the default branch only).
    pub schedules: Vec<CronSchedule>,
    /// Who hears about events (read by the server from the default branch only).
    pub notify: Vec<Subscriber>,
    /// Which artifacts `takt artifact gc` keeps (default branch only).
    pub retention: Option<Retention>,
    /// Where artifacts are deployed (default branch only).
    pub environments: Vec<Environment>,
    /// Health checks (default branch only).
    pub checks: Vec<HealthCheck>,
    /// Maintenance windows of the checks' services (default branch only).
    pub maintenance: Vec<takt_monitor::maintenance::Window>,
    /// Flaky tests that may fail without failing their job, until a date (`quarantine:`).
    pub quarantine: Vec<Quarantined>,
    /// How the flow metrics judge (default branch only).
    pub metrics: MetricsConfig,
    /// Recurring disaster-recovery drills (default branch only).
    pub drills: Vec<ScheduledDrill>,
    /// `workflow: rules`: whether a run is made at all (empty: always).
    pub workflow: Vec<Rule>,
    /// `flags:` (default branch only), checked; `takt serve` answers them over OFREP.
    pub flags: Option<FlagsConfig>,
    /// The layout the file was written in.
    pub layout: Layout,
    /// What works, but not as written (shown by `takt lint` and in each run's log).
    pub warnings: Diagnostics,
}

impl Pipeline {
    /// The files of the child pipelines its trigger jobs run, each once, sorted.
    pub fn child_pipelines(&self) -> Vec<&str> {
        let mut files: Vec<&str> = self
            .jobs
            .iter()
            .filter_map(|j| j.trigger.as_ref())
            .map(|t| t.file.as_str())
            .collect();
        files.sort_unstable();
        files.dedup();
        files
    }
}

/// A `drills:` entry: drill `environment` by `kill` at every `schedule` time.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledDrill {
    pub name: String,
    pub environment: String,
    pub kill: takt_model::DrillKill,
    pub count: u32,
    pub load: u32,
    /// Its cron and time zone (`branch` unused).
    pub schedule: CronSchedule,
    /// `production: true`: it may drill a production environment.
    pub production: bool,
    pub pos: Pos,
}

/// `metrics:`: the flow metrics' band thresholds (docs/metrics.md, "Bands"); what is not set
/// keeps its default.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsConfig {
    pub bands: Bands,
    /// No band below this many values.
    pub min_sample: Option<u32>,
}

/// The bounds of elite, high and medium per key (beyond medium: low).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bands {
    /// Successful deployments per day, at least.
    pub deployment_frequency: Option<[f64; 3]>,
    /// Lead time p50 in seconds, at most.
    pub lead_time_s: Option<[f64; 3]>,
    pub change_fail_rate: Option<[f64; 3]>,
    /// Recovery time p50 in seconds, at most.
    pub recovery_s: Option<[f64; 3]>,
    pub rework_rate: Option<[f64; 3]>,
}

/// A `quarantine:` entry: test case `name` (of `suite`, in `job`, when given) may fail without
/// failing its job until the end of `until` (a UTC date, `YYYY-MM-DD`); after that it counts
/// again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub name: String,
    pub suite: Option<String>,
    pub job: Option<String>,
    pub until: String,
    pub reason: Option<String>,
    pub pos: Pos,
}

impl Quarantined {
    /// It names this test case of `job` (a job's name with its matrix values, or its base name).
    pub fn covers(&self, job: &str, suite: &str, name: &str) -> bool {
        self.name == name
            && self.suite.as_deref().is_none_or(|s| s == suite)
            && self
                .job
                .as_deref()
                .is_none_or(|j| j == job || job.strip_prefix(j).is_some_and(|rest| rest.starts_with(" [")))
    }

    /// Past its date on `today` (`YYYY-MM-DD`, UTC).
    pub fn expired(&self, today: &str) -> bool {
        self.until.as_str() < today
    }
}

/// A health check (`checks:`), in Gatus's terms: a probe every `interval`, judged by its
/// `conditions` (Gatus's condition language, parsed at lint time by `takt-monitor`);
/// `failure_threshold` failures in a row take it down, `success_threshold` successes bring it
/// back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub name: String,
    /// Default: the project's name.
    pub service: Option<String>,
    pub environment: Option<String>,
    pub probe: ProbeSpec,
    pub interval: Duration,
    pub timeout: Duration,
    /// Each one parses (lint checked it), and reads only what its probe gives.
    pub conditions: Vec<String>,
    /// Conditions that, when one holds of a result that passed `conditions`, make it degraded
    /// (the service's state is then `degraded`, and no incident opens).
    pub degraded_when: Vec<String>,
    /// A passing result slower than this is degraded.
    pub degraded_latency: Option<Duration>,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    /// Shown on the public status page.
    pub public: bool,
    pub pos: Pos,
}

impl HealthCheck {
    /// A check named `name` with Gatus's defaults (probed every minute, 10 s timeout, 3 failures
    /// down, 2 successes up), probing nothing yet.
    pub fn named(name: &str, pos: Pos) -> HealthCheck {
        HealthCheck {
            name: name.to_string(),
            service: None,
            environment: None,
            probe: ProbeSpec::Command(String::new()),
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            conditions: Vec::new(),
            degraded_when: Vec::new(),
            degraded_latency: None,
            failure_threshold: 3,
            success_threshold: 2,
            public: false,
            pos,
        }
    }
}

/// What a health check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSpec {
    /// `url`, or `path` on the check's environment's public address.
    Http {
        url: Option<String>,
        path: Option<String>,
        method: String,
        headers: Vec<(String, String)>,
        body: Option<String>,
        follow_redirects: bool,
        /// Accept any certificate (self-signed, expired, another name), as Gatus's
        /// `client.insecure`: `[CERTIFICATE_EXPIRATION]` is still read.
        insecure: bool,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Dns {
        name: String,
        record: String,
        server: Option<String>,
    },
    /// A shell command: it connects when it exits 0; its output is `[BODY]`.
    Command(String),
    /// The instances of `environment` (process and nginx drivers), from its supervisor: it
    /// connects when every instance of the version taking traffic is alive and its port open;
    /// `[BODY]` is `{"instances", "alive", "open", "restarts"}`.
    Process {
        environment: String,
    },
    /// A series of a Prometheus exposition page (`url`, or `path` on the check's environment's
    /// public address; default `/metrics`): it connects when the page answers 2xx and parses;
    /// `[BODY]` is `{"value": V, "series": N}`, V the sum of the `N` series named `name` whose
    /// labels include `labels` (null when none), and `[BODY].value OP VALUE` is one of the
    /// check's conditions.
    Metric {
        url: Option<String>,
        path: Option<String>,
        name: String,
        labels: Vec<(String, String)>,
        op: takt_monitor::condition::Op,
        /// A finite number, as written.
        value: String,
    },
    /// Pushed beats (`POST /api/v1/heartbeats/...`): one missed for `every` + `grace` fails it.
    Heartbeat {
        every: Duration,
        grace: Duration,
    },
}

/// `retention`: keep the newest `keep_last` versions of each artifact, and whatever an
/// environment ran in the last `keep_deployed_days` days; what an environment runs now or may
/// roll back to is never deleted. Unset: nothing is deleted for its age or number (artifacts
/// whose `expire_in` passed still are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_deployed_days: Option<u32>,
}

/// `schedules.NAME`: run `branch` (default: the project's default branch) at each cron time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    pub name: String,
    pub cron: String,
    pub branch: Option<String>,
    /// An IANA time zone name; default UTC.
    pub timezone: Option<String>,
}

impl CronSchedule {
    /// Parses a cron expression: five fields, or six with seconds first.
    pub fn parse(cron: &str) -> Result<croner::Cron, String> {
        // croner also takes a seventh field (years); takt documents five or six.
        let fields = cron.split_whitespace().count();
        if !cron.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "it has {fields} fields; write five (minute hour day month weekday) or six (seconds first)"
            ));
        }
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(cron)
            .map_err(|e| e.to_string())
    }

    pub fn check(cron: &str) -> Result<(), String> {
        Self::parse(cron).map(|_| ())
    }
}

/// A `notify` entry: CloudEvents to a webhook, or Slack messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub slack: bool,
    pub url: String,
    /// Event kinds to send (empty: all; Slack: runs, deploys and incidents).
    pub events: Vec<String>,
    /// `on_call: true`: it is paged when an incident escalates (`incident_paged`, which only
    /// on-call subscribers get).
    pub on_call: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    OnSuccess,
    OnFailure,
    Always,
    Manual,
    Never,
}

impl When {
    pub fn parse(s: &str) -> Option<When> {
        Some(match s {
            "on_success" => When::OnSuccess,
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            "manual" => When::Manual,
            "never" => When::Never,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Need {
    pub job: String,
    pub artifacts: bool,
    pub optional: bool,
    pub pos: Pos,
    /// `parallel: matrix` of the entry: only the instances of the matrix job `job` with these
    /// variables (empty: every instance). Resolved to instance names once jobs are expanded.
    pub matrix: Vec<Vec<(String, String)>>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub pos: Pos,
    pub condition: Option<Expr>,
    pub changes: Option<Vec<String>>,
    pub exists: Option<Vec<String>>,
    pub when: Option<When>,
    pub allow_failure: Option<bool>,
    pub variables: Vec<(String, String)>,
}

impl Rule {
    /// A rule that always matches (the last rule of a list), with its `when`.
    pub fn otherwise(pos: Pos, when: Option<When>) -> Rule {
        Rule {
            pos,
            condition: None,
            changes: None,
            exists: None,
            when,
            allow_failure: None,
            variables: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryWhen {
    Always,
    ScriptFailure,
    JobExecutionTimeout,
    RunnerSystemFailure,
}

#[derive(Debug, Clone, Default)]
pub struct Retry {
    pub max: u32,
    /// Empty means `always`.
    pub when: Vec<RetryWhen>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactWhen {
    OnSuccess,
    OnFailure,
    Always,
}

#[derive(Debug, Clone)]
pub struct Artifacts {
    pub name: Option<String>,
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub when: ArtifactWhen,
    pub expire_in: Option<Duration>,
    pub junit: Vec<String>,
    /// Every `reports:` entry but `junit` (GitLab's report type → its paths): stored with the
    /// run and listed; their paths are collected with the artifacts.
    pub reports: Vec<(String, Vec<String>)>,
    /// `expose_as`: the name the run page shows the artifacts under.
    pub expose_as: Option<String>,
    /// `public: false`: only tokens that may read the project's secrets download them.
    pub public: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheKey {
    Literal(String),
    Files { files: Vec<String>, prefix: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    PullPush,
    Pull,
    Push,
}

#[derive(Debug, Clone)]
pub struct Cache {
    pub key: CacheKey,
    pub paths: Vec<String>,
    pub policy: CachePolicy,
}

#[derive(Debug, Clone)]
pub struct Job {
    /// The full name (matrix jobs: `test [OS=linux, ARCH=amd64]`).
    pub name: String,
    /// The name in the file, before matrix expansion.
    pub base: String,
    pub pos: Pos,
    pub stage: String,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    /// Job variables, matrix variables last (they win).
    pub variables: Vec<(String, String)>,
    /// `None`: ordered by stage. `Some`: a DAG edge list (possibly empty: start at once).
    pub needs: Option<Vec<Need>>,
    /// GitLab's `dependencies`: whose artifacts to fetch (`None`: all available).
    pub dependencies: Option<Vec<String>>,
    pub rules: Vec<Rule>,
    pub when: When,
    /// `None` when the file does not say: GitLab's default, `true` for a manual job outside
    /// `rules`, else `false` ([`crate::plan`]).
    pub allow_failure: Option<bool>,
    pub allow_exit_codes: Vec<i32>,
    pub timeout: Option<Duration>,
    pub retry: Retry,
    pub artifacts: Option<Artifacts>,
    /// Its caches (GitLab: at most four, each with its own key), restored before the script
    /// and saved after it.
    pub caches: Vec<Cache>,
    pub secrets: Vec<String>,
    /// `network: false`: the job runs without a network (where the executor isolates jobs).
    pub network: bool,
    /// GitLab's `tags`: which agents may take the job (none yet: every job runs here).
    pub tags: Vec<String>,
    /// GitLab's `interruptible`: a newer run of the branch may cancel it.
    pub interruptible: bool,
    /// GitLab's `environment`: what the job deploys to (recorded on the run).
    pub environment: Option<JobEnvironment>,
    /// GitLab's `coverage`: a regex whose first match in the log is the coverage percentage.
    pub coverage: Option<String>,
    /// GitLab's `resource_group`: at most one job of the group runs at a time.
    pub resource_group: Option<String>,
    /// `image`: the container image the job asks for (the local executor does not use it).
    pub image: Option<String>,
    /// `when: delayed` with `start_in`: how long it waits once it may start.
    pub start_in: Option<Duration>,
    /// `inherit: variables`: the top-level variables it sees (`None`: all of them).
    pub inherit_variables: Option<Vec<String>>,
    /// `trigger:`: the job runs a child pipeline instead of a script.
    pub trigger: Option<ChildPipeline>,
}

/// A trigger job's child pipeline (GitLab's `trigger: include`): a file of the same commit, run
/// as a run of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildPipeline {
    /// Path from the repository root.
    pub file: String,
    /// `strategy: depend`: the trigger job takes the child run's status (otherwise it passes
    /// once the child run has been made, as in GitLab).
    pub depend: bool,
    /// `forward: yaml_variables` (default true): the trigger job's variables reach the child.
    pub forward_variables: bool,
    pub pos: Pos,
}

/// A job's `environment:` (GitLab's keyword): its name and what the job does to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnvironment {
    pub name: String,
    /// `start` (the default), `prepare`, `stop`, `verify` or `access`.
    pub action: String,
    pub url: Option<String>,
}

/// `environments.NAME`: where an artifact is deployed, how, and when (default branch only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub name: String,
    pub driver: Driver,
    pub strategy: Strategy,
    /// Every green run of the default branch deploys here (continuous deployment).
    pub auto: bool,
    /// The artifact must have run healthy in these environments first…
    pub requires: Vec<String>,
    /// …for at least this long.
    pub soak: Option<Duration>,
    /// `approval: manual`: a person runs `takt approve ENV`.
    pub manual_approval: bool,
    pub freeze: Vec<Freeze>,
    pub smoke: Vec<Check>,
    pub variables: Vec<(String, String)>,
    pub secrets: Vec<String>,
    /// The environment's public port (process driver: takt's proxy listens there).
    pub port: Option<u16>,
    /// Instances to run (process driver).
    pub instances: u32,
    /// How to start an archive artifact (process driver); an executable artifact starts itself.
    pub start: Option<String>,
    /// The instances' health path.
    pub health: String,
    /// The script that deploys (command driver).
    pub deploy: Option<String>,
    /// Which artifact of a run is deployed (default: the run's only artifact).
    pub artifact: Option<String>,
    /// Where the environment answers, for smoke checks (default `http://127.0.0.1:PORT`).
    pub url: Option<String>,
    /// nginx driver: the upstream file takt writes…
    pub upstream: Option<String>,
    /// …and the command that makes nginx read it.
    pub reload: Option<String>,
    /// `on_failure: pause`: a failed check or analysis pauses the deploy where it is (a person
    /// then rolls back, or resumes to take the new version) instead of rolling back at once.
    pub pause_on_failure: bool,
    /// `on_restart: continue`: a deploy cut off by a server restart continues where it was
    /// (default `rollback`: its traffic goes back to what ran before).
    pub continue_on_restart: bool,
    /// `production: true|false`; unset: production when no other environment `requires` it.
    pub production: Option<bool>,
    /// While one of its incidents is open and unacknowledged, a reminder this often.
    pub remind_every: Option<Duration>,
    /// What takt does itself when a check opens an incident here soon after a deployment
    /// (`remediate:`, production environments only; default none).
    pub remediate: Remedy,
    /// How soon after a deployment finished an incident counts as its doing (default 30 min).
    pub remediate_window: Duration,
    /// An incident still open and unacknowledged this long pages the on-call subscribers
    /// (default 10 min; production environments only).
    pub escalate_after: Duration,
    /// `protected: [token names]`: only these tokens may deploy, promote, approve, roll back
    /// or stop here (and play manual jobs that name it); anyone may halt. Empty: any deploy
    /// token.
    pub protected: Vec<String>,
    pub pos: Pos,
}

/// `remediate:`: what takt does when a check opens an incident in a production environment
/// within `remediate_window` after a deployment there finished.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Remedy {
    #[default]
    None,
    /// Roll that deployment back (as `takt rollback` does, smoke checks included).
    Rollback,
    /// Restart its instances, one at a time (process and nginx drivers).
    Restart,
    /// Run this command (`sh -c`, in the server's data directory, with `TAKT_INCIDENT`,
    /// `TAKT_ENVIRONMENT`, `TAKT_DEPLOY` and the environment's variables).
    Command(String),
}

/// The default `remediate_window`.
pub const DEFAULT_REMEDIATE_WINDOW: Duration = Duration::from_secs(30 * 60);
/// The default `escalate_after`.
pub const DEFAULT_ESCALATE_AFTER: Duration = Duration::from_secs(10 * 60);

/// Whether environment `name` is production: it says `production: true`, or it says nothing
/// and no other environment `requires` it (the end of the promotion path).
pub fn is_production(environments: &[Environment], name: &str) -> bool {
    let Some(e) = environments.iter().find(|e| e.name == name) else {
        return false;
    };
    e.production
        .unwrap_or_else(|| !environments.iter().any(|o| o.requires.iter().any(|r| r == name)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Command,
    Process,
    Nginx,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    Recreate,
    /// Traffic moves `batch` instances' share at a time, `pause` between batches.
    Rolling {
        batch: u32,
        pause: Option<Duration>,
    },
    Canary {
        steps: Vec<CanaryStep>,
        progress_deadline: Option<Duration>,
    },
    BlueGreen {
        preview_port: Option<u16>,
        keep_old: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryStep {
    SetWeight(u8),
    /// `None`: until `takt resume`.
    Pause(Option<Duration>),
    Analysis(AnalysisStep),
}

/// A canary `analysis` step (Argo Rollouts' names and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisStep {
    pub interval: Duration,
    pub count: u32,
    pub initial_delay: Duration,
    pub failure_limit: u32,
    pub inconclusive_limit: u32,
    pub consecutive_error_limit: u32,
    /// What is measured: `proxy` (error rate and latency seen by takt's proxy), a Prometheus
    /// query, an HTTP check or a command.
    pub metric: Metric,
    pub success_condition: Option<String>,
    pub failure_condition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    Proxy,
    Prometheus { url: String, query: String },
    Http(Check),
    Command(String),
}

/// A smoke check or an analysis measurement: an HTTP request with conditions, a command that
/// must exit 0, or one of the project's health checks (`check: NAME`), judged by its own
/// conditions against the deploy's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Http {
        path: String,
        status: u16,
        body_contains: Option<String>,
        max_latency: Option<Duration>,
    },
    Command(String),
    /// A check of `checks:`, as defined there; an HTTP `path` goes to the deploy's target (the
    /// new instance, the preview port, the canary's backend) instead of the public address.
    Health(Box<HealthCheck>),
}

impl Check {
    /// It runs a command (needs no address to check).
    pub fn is_command(&self) -> bool {
        match self {
            Check::Command(_) => true,
            Check::Health(c) => matches!(c.probe, ProbeSpec::Command(_)),
            Check::Http { .. } => false,
        }
    }
}

impl Environment {
    /// Its smoke checks and the checks its analyses measure, to resolve `check: NAME`.
    pub fn checks_mut(&mut self) -> impl Iterator<Item = &mut Check> {
        let steps: &mut [CanaryStep] = match &mut self.strategy {
            Strategy::Canary { steps, .. } => steps,
            _ => &mut [],
        };
        let metrics = steps.iter_mut().filter_map(|s| match s {
            CanaryStep::Analysis(AnalysisStep {
                metric: Metric::Http(c),
                ..
            }) => Some(c),
            _ => None,
        });
        self.smoke.iter_mut().chain(metrics)
    }
}

/// A freeze window: from each `cron` time, for `duration`, in `timezone` (default UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    pub cron: String,
    pub duration: Duration,
    pub timezone: Option<String>,
}

/// `flags:`: the feature flags as a flagd document (docs/flags.md), and each environment's
/// document where a flag's `environments:` changes its state, targeting or default there.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagsConfig {
    pub document: serde_json::Value,
    pub environments: std::collections::BTreeMap<String, serde_json::Value>,
    pub pos: Pos,
}
