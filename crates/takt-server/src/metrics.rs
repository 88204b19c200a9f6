//! `/metrics` in the Prometheus text format. Run and job figures are derived from the event
//! log as it is appended (one follower task); HTTP, authentication and webhook counters are
//! counted where they happen.

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::time::Instant;
use takt_model::{Event, EventKind, OffsetDateTime};
use takt_store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectLabel {
    project: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The flow metrics of each project's production environments over the last 30 days, set at
/// each scrape from the flow view (`crate::flow::gauges`).
#[derive(Default)]
pub struct FlowGauges {
    deploys_per_day: Family<ProjectLabel, FloatGauge>,
    lead_time: Family<ProjectLabel, FloatGauge>,
    change_fail_rate: Family<ProjectLabel, FloatGauge>,
    recovery: Family<ProjectLabel, FloatGauge>,
    rework_rate: Family<ProjectLabel, FloatGauge>,
    coffee: Family<ProjectLabel, FloatGauge>,
}

impl FlowGauges {
    /// Sets `project`'s gauges; a figure without a value (no deployment, no failure) has no
    /// sample.
    pub fn set(&self, project: &str, d: &takt_flow::dora::Dora, coffee: &takt_flow::coffee::Coffee) {
        let l = ProjectLabel {
            project: project.to_string(),
        };
        self.deploys_per_day
            .get_or_create(&l)
            .set(d.deployment_frequency.per_day);
        let put = |f: &Family<ProjectLabel, FloatGauge>, v: Option<f64>| match v {
            Some(v) => {
                f.get_or_create(&l).set(v);
            }
            None => {
                f.remove(&l);
            }
        };
        put(&self.lead_time, d.change_lead_time.total.map(|s| s.p50));
        put(&self.change_fail_rate, d.change_fail_rate.rate);
        put(&self.recovery, d.recovery_time.time.map(|s| s.p50));
        put(&self.rework_rate, d.rework_rate.rate);
        put(&self.coffee, coffee.share);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    provider: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    project: String,
    check: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabel {
    trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    via: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlagLabels {
    project: String,
    environment: String,
    flag: String,
    variant: String,
    reason: String,
}

pub struct Metrics {
    registry: Registry,
    pub flow: FlowGauges,
    runs: Family<StatusLabel, Counter>,
    jobs: Family<StatusLabel, Counter>,
    job_duration: Histogram,
    job_wait: Histogram,
    run_wait: Histogram,
    trigger_latency: Histogram,
    dispatch: Histogram,
    webhooks: Family<WebhookLabels, Counter>,
    http: Family<HttpLabels, Counter>,
    failed_auth: Family<AuthLabels, Counter>,
    checks_up: Family<CheckLabels, Gauge>,
    incidents_opened: Family<TriggerLabel, Counter>,
    incidents_resolved: Counter,
    flag_evaluations: Family<FlagLabels, Counter>,
    pub waiting: Gauge,
    pub running: Gauge,
    /// The event log's size (database, and SQLite's write-ahead log), set when scraped.
    pub store_bytes: Gauge,
    pub store_wal_bytes: Gauge,
    /// (project, run) → when its trigger arrived; (project, run, job, attempt) → job start.
    pending: Mutex<Pending>,
    /// Refused requests since the last security summary.
    pub security: Security,
}

/// Refused requests counted for the next `security_summary` event.
#[derive(Default)]
pub struct Security {
    failed_logins: std::sync::atomic::AtomicU64,
    bad_signatures: std::sync::atomic::AtomicU64,
    unauthorized: std::sync::atomic::AtomicU64,
    forbidden: std::sync::atomic::AtomicU64,
    /// Signalled at each refused request (a permit is kept when nobody waits).
    seen: tokio::sync::Notify,
}

impl Security {
    /// Waits for a refused request, then `period`, and returns what was counted meanwhile (the
    /// counts start again from zero) with when the period began.
    pub async fn next_summary(&self, period: std::time::Duration) -> takt_model::EventKind {
        use std::sync::atomic::Ordering::Relaxed;
        self.seen.notified().await;
        let from = OffsetDateTime::now_utc();
        tokio::time::sleep(period).await;
        takt_model::EventKind::SecuritySummary {
            from,
            failed_logins: self.failed_logins.swap(0, Relaxed),
            bad_signatures: self.bad_signatures.swap(0, Relaxed),
            unauthorized: self.unauthorized.swap(0, Relaxed),
            forbidden: self.forbidden.swap(0, Relaxed),
        }
    }
}

#[derive(Default)]
struct Pending {
    triggered: HashMap<(String, u64), Instant>,
    queued: HashMap<(String, u64), OffsetDateTime>,
    job_started: HashMap<(String, u64, String, u32), OffsetDateTime>,
}

fn secs(d: time::Duration) -> f64 {
    d.as_seconds_f64().max(0.0)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("takt");
        let fast = || Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let slow = || Histogram::new(exponential_buckets(0.05, 2.0, 18));
        let m = Metrics {
            runs: Family::default(),
            jobs: Family::default(),
            job_duration: slow(),
            job_wait: fast(),
            run_wait: fast(),
            trigger_latency: fast(),
            dispatch: fast(),
            webhooks: Family::default(),
            http: Family::default(),
            failed_auth: Family::default(),
            checks_up: Family::default(),
            incidents_opened: Family::default(),
            incidents_resolved: Counter::default(),
            flag_evaluations: Family::default(),
            waiting: Gauge::default(),
            running: Gauge::default(),
            store_bytes: Gauge::default(),
            store_wal_bytes: Gauge::default(),
            pending: Mutex::new(Pending::default()),
            security: Security::default(),
            registry: Registry::default(),
            flow: FlowGauges::default(),
        };
        registry.register("store_bytes", "Size of the event log's database", m.store_bytes.clone());
        registry.register(
            "store_wal_bytes",
            "Size of SQLite's write-ahead log (0 on PostgreSQL)",
            m.store_wal_bytes.clone(),
        );
        registry.register("runs_finished", "Runs finished, by status", m.runs.clone());
        registry.register("jobs_finished", "Job attempts finished, by status", m.jobs.clone());
        registry.register(
            "job_duration_seconds",
            "Duration of job attempts",
            m.job_duration.clone(),
        );
        registry.register(
            "job_queue_wait_seconds",
            "Time from a job being ready to its start",
            m.job_wait.clone(),
        );
        registry.register(
            "run_queue_wait_seconds",
            "Time from a run being queued to its start",
            m.run_wait.clone(),
        );
        registry.register(
            "trigger_to_first_job_seconds",
            "Time from a trigger (webhook, poll, hook, API) arriving to the first job process of its run",
            m.trigger_latency.clone(),
        );
        registry.register(
            "job_dispatch_seconds",
            "Per-job dispatch overhead: from a job's start to its process running (workspace, checkout, spawn)",
            m.dispatch.clone(),
        );
        registry.register(
            "flag_evaluations",
            "Flag evaluations over OFREP, by project, environment, flag, variant and reason (a flag the project does not define counts as `(unknown)`)",
            m.flag_evaluations.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by provider and outcome",
            m.webhooks.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status code",
            m.http.clone(),
        );
        registry.register(
            "failed_authentications",
            "Requests refused for a missing or wrong token or signature",
            m.failed_auth.clone(),
        );
        registry.register(
            "check_up",
            "Whether a health check passes (1) or is down (0), as its last state change since the server started said",
            m.checks_up.clone(),
        );
        registry.register(
            "incidents_opened",
            "Incidents opened, by what opened them",
            m.incidents_opened.clone(),
        );
        registry.register("incidents_resolved", "Incidents resolved", m.incidents_resolved.clone());
        let flow = [
            (
                "flow_deployments_per_day",
                "Successful production deployments of a change per day, the last 30 days (docs/metrics.md)",
                &m.flow.deploys_per_day,
            ),
            (
                "flow_lead_time_p50_seconds",
                "Change lead time to production, p50, the last 30 days",
                &m.flow.lead_time,
            ),
            (
                "flow_change_fail_rate",
                "Failed production deployments over those that took traffic, the last 30 days",
                &m.flow.change_fail_rate,
            ),
            (
                "flow_recovery_time_p50_seconds",
                "Failed deployment recovery time, p50, the last 30 days",
                &m.flow.recovery,
            ),
            (
                "flow_rework_rate",
                "Fix deployments over production deployments that took traffic, the last 30 days",
                &m.flow.rework_rate,
            ),
            (
                "flow_runs_within_budget_ratio",
                "Runs within their pipeline's budget (the coffee test), the last 30 days",
                &m.flow.coffee,
            ),
        ];
        for (name, help, family) in flow {
            registry.register(name, help, family.clone());
        }
        registry.register("runs_waiting", "Runs waiting in the queue", m.waiting.clone());
        registry.register("runs_running", "Runs running now", m.running.clone());
        Metrics { registry, ..m }
    }

    /// The Prometheus text format (0.0.4). prometheus-client writes OpenMetrics, where a
    /// counter family `x` has samples `x_total`; in 0.0.4 its HELP and TYPE name `x_total` too
    /// (promtool says "no help text" otherwise), and there is no `# EOF`.
    pub fn render(&self) -> String {
        let mut open = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut open, &self.registry);
        let counters: std::collections::HashSet<&str> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len() + 256);
        for line in open.lines() {
            if line == "# EOF" {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                let rest = line.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
        out
    }

    /// Counts a request. `route` must be a route template (or `unmatched`); methods other than
    /// the standard ones share the label `other`, so no request can create new series at will.
    pub fn http(&self, method: &str, route: &str, code: u16) {
        const KNOWN: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
        ];
        let method = if KNOWN.contains(&method) { method } else { "other" };
        let refused = match code {
            401 => Some(&self.security.unauthorized),
            403 => Some(&self.security.forbidden),
            _ => None,
        };
        if let Some(count) = refused {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.security.seen.notify_one();
        }
        self.http
            .get_or_create(&HttpLabels {
                method: method.into(),
                route: route.into(),
                code: code.to_string(),
            })
            .inc();
    }

    pub fn failed_auth(&self, via: &str) {
        self.failed_auth.get_or_create(&AuthLabels { via: via.into() }).inc();
        let count = if via.starts_with("webhook_") {
            &self.security.bad_signatures
        } else {
            &self.security.failed_logins
        };
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.security.seen.notify_one();
    }

    /// One flag evaluation answered. `flag` is `None` for a key the project does not define (a
    /// client's key is not a label: it would make series without bound).
    pub fn flag_evaluated(
        &self,
        project: &str,
        environment: &str,
        flag: Option<&str>,
        variant: Option<&str>,
        reason: &str,
    ) {
        self.flag_evaluations
            .get_or_create(&FlagLabels {
                project: project.into(),
                environment: environment.into(),
                flag: flag.unwrap_or("(unknown)").into(),
                variant: variant.unwrap_or("").into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn webhook(&self, provider: &str, outcome: &str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                provider: provider.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// A trigger for `run` arrived at `at` (before fetching and queueing).
    pub fn triggered(&self, project: &str, run: u64, at: Instant) {
        {
            let mut p = self.pending.lock();
            p.triggered.insert((project.to_string(), run), at);
        }
    }

    /// Folds one appended event into the figures.
    pub fn observe(&self, e: &Event) {
        match &e.kind {
            EventKind::CheckStateChanged {
                check, service, state, ..
            } => {
                let labels = CheckLabels {
                    project: e.project.clone(),
                    check: check.clone(),
                    service: service.clone(),
                };
                self.checks_up
                    .get_or_create(&labels)
                    .set(i64::from(*state != takt_model::CheckState::Down));
                return;
            }
            EventKind::IncidentOpened { trigger, .. } => {
                let trigger: &str = trigger.into();
                self.incidents_opened
                    .get_or_create(&TriggerLabel {
                        trigger: trigger.to_string(),
                    })
                    .inc();
                return;
            }
            EventKind::IncidentResolved { .. } => {
                self.incidents_resolved.inc();
                return;
            }
            _ => {}
        }
        let Some(run) = e.run else { return };
        let key = (e.project.clone(), run);
        let mut p = self.pending.lock();
        match &e.kind {
            EventKind::RunQueued { .. } => {
                p.queued.insert(key, e.at);
            }
            EventKind::RunStarted => {
                if let Some(q) = p.queued.remove(&key) {
                    self.run_wait.observe(secs(e.at - q));
                }
            }
            EventKind::RunFinished { status, .. } => {
                self.runs
                    .get_or_create(&StatusLabel {
                        status: status.to_string(),
                    })
                    .inc();
                p.queued.remove(&key);
                p.triggered.remove(&key);
                p.job_started.retain(|k, _| !(k.0 == key.0 && k.1 == run));
            }
            EventKind::JobStarted {
                job, attempt, wait_ms, ..
            } => {
                self.job_wait.observe(*wait_ms as f64 / 1000.0);
                p.job_started
                    .insert((e.project.clone(), run, job.clone(), *attempt), e.at);
            }
            EventKind::JobProcess { job, attempt, .. } => {
                if let Some(s) = p.job_started.remove(&(e.project.clone(), run, job.clone(), *attempt)) {
                    self.dispatch.observe(secs(e.at - s));
                }
                if let Some(t) = p.triggered.remove(&key) {
                    self.trigger_latency.observe(t.elapsed().as_secs_f64());
                }
            }
            EventKind::JobFinished {
                status, duration_ms, ..
            } => {
                self.jobs
                    .get_or_create(&StatusLabel {
                        status: status.to_string(),
                    })
                    .inc();
                self.job_duration.observe(*duration_ms as f64 / 1000.0);
            }
            _ => {}
        }
    }
}

/// Folds every appended event into the metrics, before its append returns (an observer, not a
/// follower: it cannot fall behind, so the counts equal the events appended since the start).
pub fn start(metrics: std::sync::Arc<Metrics>, store: &Store) {
    store.observe(takt_store::Observer(std::sync::Arc::new(move |e| metrics.observe(e))));
}

/// Records a `security_summary` event a period (`TAKT_SECURITY_SUMMARY_SECONDS`, default 60)
/// after each first refused request, with what was refused in that period: one event a
/// minute at most, none in a quiet minute.
pub fn start_security_summaries(state: std::sync::Arc<crate::AppState>) {
    let period = std::env::var("TAKT_SECURITY_SUMMARY_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(std::time::Duration::from_secs(60), std::time::Duration::from_secs);
    tokio::spawn(async move {
        loop {
            let kind = state.metrics.security.next_summary(period).await;
            let quiet = matches!(
                kind,
                takt_model::EventKind::SecuritySummary {
                    failed_logins: 0,
                    bad_signatures: 0,
                    unauthorized: 0,
                    forbidden: 0,
                    ..
                }
            );
            if quiet {
                continue;
            }
            if let Err(e) = state.store.append(&Event::now("", None, kind)).await {
                tracing::warn!(error = %e, "cannot record a security summary");
            }
        }
    });
}
