//! The monitoring service: runs the health checks of every project's default branch (one task
//! per check, at its `interval`), judges each result with the check's conditions
//! (`takt-monitor`), and records `check_state_changed` when a check crosses its
//! `failure_threshold` or `success_threshold`. Raw results are not events.
//!
//! The set of checks is reconciled when a project is added or changed and whenever a run is
//! queued (the default branch may have moved), never on a timer. A check restarts from the
//! state its last recorded change gave it, so a restart does not record a second `down`.
//!
//! Incidents: after every `check_state_changed` (and once when it starts, so a crash between
//! a change and its incident loses nothing), the service folds the project's checks and
//! incidents and records what `takt_monitor::incident::reconcile` asks: open (through the
//! host, which numbers incidents), join, resolve.
//!
//! Heartbeat checks have a task each too: a beat ([`Observe::beat`], kept as a cursor so that
//! a restart counts from it) is a passing result, and `every` + `grace` without one a failing
//! result.
//!
//! Not yet (the monitoring issue): raw results and aggregates, the status page.

pub mod results;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use takt_model::{CheckState, Event, EventKind, IncidentStatus, NewIncident, OffsetDateTime};
use takt_monitor::condition::Condition;
use takt_monitor::incident::Act;
use takt_monitor::threshold::{Outcome, Streak};
use takt_pipeline::{HealthCheck, ProbeSpec};
use takt_store::{EventFilter, Store};
use takt_views::{Checks, Incidents, Projection};

pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the monitoring service needs from the rest of takt.
pub trait Host: Send + Sync {
    /// Every project's name.
    fn projects(&self) -> Vec<String>;
    /// The checks of `project`'s default branch (re-read if the branch moved), its
    /// environments' public addresses and its maintenance windows.
    fn checks<'a>(&'a self, project: &'a str) -> HostFuture<'a, ProjectChecks>;
    /// Opens an incident in `project` and returns its id (the host numbers them, so that
    /// incidents opened elsewhere never share a number).
    fn open_incident<'a>(&'a self, project: &'a str, new: NewIncident) -> HostFuture<'a, Result<String, String>>;
    /// The instances of the version taking traffic in `project`'s environment `env`, as its
    /// supervisor and their ports say; `None`: no supervisor answers (or not that driver).
    fn instances<'a>(&'a self, project: &'a str, env: &'a str) -> HostFuture<'a, Option<Vec<Instance>>>;
    /// What the proxy in front of `project`'s environment `env` has counted since it started;
    /// `None`: no proxy there (the command and nginx drivers) or none answers.
    fn requests<'a>(&'a self, project: &'a str, env: &'a str) -> HostFuture<'a, Option<takt_model::RequestCounts>>;
}

/// Per `(project, check)`: the proxy's counters at the first failing result of the check's
/// current failing streak (when it has an environment with a proxy).
type ImpactReadings = Arc<Mutex<HashMap<(String, String), (OffsetDateTime, takt_model::RequestCounts)>>>;

/// How long after an incident's resolution its closing `incident_traffic` reading may still
/// be taken: later (the server was down), the counters say nothing about it any more.
const TRAFFIC_LATE: time::Duration = time::Duration::minutes(2);

/// One instance of a running version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Instance {
    pub port: u16,
    /// Its process runs.
    pub alive: bool,
    /// Its port takes connections.
    pub open: bool,
    pub restarts: u32,
}

/// What a `process` check sees: connected when there are instances and every one is alive
/// with its port open; `[BODY]` counts them.
pub fn process_probe(instances: Option<&[Instance]>, took: std::time::Duration) -> takt_monitor::condition::Probe {
    let list = instances.unwrap_or_default();
    let alive = list.iter().filter(|i| i.alive).count();
    let open = list.iter().filter(|i| i.open).count();
    let restarts: u32 = list.iter().map(|i| i.restarts).sum();
    takt_monitor::condition::Probe {
        connected: !list.is_empty() && alive == list.len() && open == list.len(),
        body: Some(
            serde_json::json!({"instances": list.len(), "alive": alive, "open": open, "restarts": restarts})
                .to_string(),
        ),
        response_time: took,
        ..Default::default()
    }
}

/// What a project's default branch says about monitoring.
#[derive(Debug, Clone, Default)]
pub struct ProjectChecks {
    pub checks: Vec<HealthCheck>,
    /// Each environment's public address (name → URL).
    pub urls: HashMap<String, String>,
    pub maintenance: Vec<takt_monitor::maintenance::Window>,
    /// Each environment's `remind_every` (those that have one).
    pub remind: HashMap<String, std::time::Duration>,
    /// Each production environment's `escalate_after` (the others page no one).
    pub escalate: HashMap<String, std::time::Duration>,
}

/// Event kinds after which `project`'s incidents are brought in line with its checks.
/// (A check still down when an environment's first deploy finishes opens its incident then.)
pub const INCIDENTS_ON: &[&str] = &["check_state_changed", "deploy_finished", "incident_resolved"];

/// Event kinds after which the checks are looked at again.
pub const RECONCILE_ON: &[&str] = &["project_added", "project_updated", "run_queued"];

struct Running {
    check: HealthCheck,
    base: Option<String>,
    task: tokio::task::JoinHandle<()>,
    /// A heartbeat's beats, to its task.
    beats: Option<tokio::sync::watch::Sender<OffsetDateTime>>,
}

/// Why a beat was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeatError {
    #[error("project `{project}` has no heartbeat check `{check}` on its default branch")]
    NotFound { project: String, check: String },
    #[error("check `{check}` of `{project}` is probed by takt, not fed by heartbeats")]
    NotHeartbeat { project: String, check: String },
    #[error("the event log is unavailable: {0}")]
    Store(String),
}

/// The cursor that keeps a heartbeat's last beat (milliseconds since the epoch) across
/// restarts.
fn beat_cursor(project: &str, check: &str) -> String {
    format!("heartbeat:{project}/{check}")
}

pub struct Observe {
    store: Store,
    host: Arc<dyn Host>,
    prober: takt_probe::Prober,
    running: Mutex<HashMap<(String, String), Running>>,
    results: results::Recorder,
    days: results::SharedDays,
    status_cache: tokio::sync::Mutex<Option<(std::time::Instant, takt_monitor::status::StatusPage)>>,
    /// Held by each incidents pass: two never run at once (so none opens an incident twice).
    incidents_pass: tokio::sync::Mutex<()>,
    /// Signalled when a project's checks were looked at again (its windows may have changed).
    reconciled: tokio::sync::Notify,
    impact: ImpactReadings,
}

/// How long a built status page is served as it is.
pub const STATUS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Observe {
    pub fn new(store: Store, host: Arc<dyn Host>) -> Result<Observe, String> {
        let days = results::SharedDays::default();
        Ok(Observe {
            store: store.clone(),
            host,
            prober: takt_probe::Prober::new().map_err(|e| e.to_string())?,
            running: Mutex::default(),
            results: results::Recorder::start(store.clone(), days.clone()),
            days,
            status_cache: tokio::sync::Mutex::new(None),
            incidents_pass: tokio::sync::Mutex::new(()),
            reconciled: tokio::sync::Notify::new(),
            impact: ImpactReadings::default(),
        })
    }

    /// Starts the service: every project's checks and incidents now, then the checks again
    /// after each event that may change them, and the incidents after each check's change.
    pub fn start(self: Arc<Self>) {
        follow(self.clone(), RECONCILE_ON, |me, project| async move {
            me.reconcile(&project).await
        });
        follow(self.clone(), INCIDENTS_ON, |me, project| async move {
            me.incidents(&project).await
        });
        tokio::spawn(self.clone().windows());
        tokio::spawn(self.reminders());
    }

    /// Reminds of each open, unacknowledged incident of an environment with `remind_every`
    /// (an `incident_reminder` event, which the notifier sends on), a period after it opened
    /// or after the last reminder. The reminders are events, so a restart neither repeats nor
    /// forgets one. Sleeps until the next is due, an incident changes, or checks change.
    async fn reminders(self: Arc<Self>) {
        let mut pause = std::time::Duration::from_secs(1);
        let mut after = loop {
            match self.store.head().await {
                Ok(h) => break h,
                Err(err) => {
                    tracing::warn!(error = %err, "reminders wait for the event log");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(30));
                }
            }
        };
        let mut events = self.store.subscribe(after, Incidents::KINDS);
        loop {
            let changed = self.reconciled.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let next = self.remind().await;
            let wait = next.map(|at| {
                (at - OffsetDateTime::now_utc())
                    .try_into()
                    .unwrap_or(std::time::Duration::ZERO)
            });
            let sleep = tokio::time::sleep(wait.unwrap_or(std::time::Duration::MAX / 4));
            tokio::select! {
                e = events.next() => match e {
                    Ok(e) => after = e.seq.unwrap_or(after),
                    Err(err) => {
                        tracing::warn!(error = %err, "reminders cannot follow the log; trying again in 1s");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        events = self.store.subscribe(after, Incidents::KINDS);
                    }
                },
                () = changed => {}
                () = sleep => {}
            }
        }
    }

    /// Sends the reminders and pages due now; returns when the next one is due.
    async fn remind(&self) -> Option<OffsetDateTime> {
        let filter = EventFilter {
            kinds: Incidents::KINDS.to_vec(),
            ..Default::default()
        };
        let incidents = match self.store.events(&filter).await {
            Ok(events) => Incidents::fold(&events),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the incidents to remind of");
                return Some(OffsetDateTime::now_utc() + time::Duration::seconds(5));
            }
        };
        let mut settings: HashMap<String, ProjectChecks> = HashMap::new();
        let mut next: Option<OffsetDateTime> = None;
        for i in incidents
            .incidents
            .values()
            .filter(|i| i.is_open() && i.acknowledged.is_none())
        {
            if !settings.contains_key(&i.project) {
                let c = self.host.checks(&i.project).await;
                settings.insert(i.project.clone(), c);
            }
            let Some(c) = settings.get(&i.project) else { continue };
            let every = c.remind.get(&i.environment).copied();
            // Escalation: the on-call subscribers, paged until someone acknowledges.
            if let Some(after) = c.escalate.get(&i.environment).copied()
                && let Some((mut due, reason)) = takt_monitor::remedy::next_page(i, true, after, every)
            {
                let now = OffsetDateTime::now_utc();
                if due <= now {
                    let kind = EventKind::IncidentPaged {
                        id: i.id.clone(),
                        count: i.pages + 1,
                        reason,
                    };
                    if let Err(err) = self.store.append(&Event::now(&i.project, None, kind)).await {
                        tracing::error!(error = %err, incident = %i.id, "cannot record a page");
                    }
                    due = now + every.unwrap_or(after);
                }
                next = Some(next.map_or(due, |n| n.min(due)));
            }
            let Some(every) = every else {
                continue;
            };
            let Some(mut due) = takt_monitor::incident::next_reminder(i, every) else {
                continue;
            };
            let now = OffsetDateTime::now_utc();
            if due <= now {
                let kind = EventKind::IncidentReminder {
                    id: i.id.clone(),
                    count: i.reminders + 1,
                };
                if let Err(err) = self.store.append(&Event::now(&i.project, None, kind)).await {
                    tracing::error!(error = %err, incident = %i.id, "cannot record a reminder");
                }
                due = now + every;
            }
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        next
    }

    /// At each maintenance window's start and end, every project's services and incidents
    /// again (a window changes a service's state, and a check still down when it ends opens
    /// its incident then). Sleeps until the next such time, or until checks change.
    async fn windows(self: Arc<Self>) {
        loop {
            // Listening before the windows are read: a change meanwhile is not missed.
            let changed = self.reconciled.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let mut next: Option<i64> = None;
            for p in self.host.projects() {
                for w in self.host.checks(&p).await.maintenance {
                    if let Some((start, end)) = w.around(now) {
                        let at = if start > now { start } else { end };
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                }
            }
            match next {
                Some(at) => {
                    let wait = std::time::Duration::from_secs(u64::try_from(at - now).unwrap_or(0));
                    tokio::select! {
                        () = changed => continue,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                None => {
                    changed.await;
                    continue;
                }
            }
            // Just past the boundary (windows end at `start + duration`, exclusive).
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            for p in self.host.projects() {
                self.incidents(&p).await;
            }
        }
    }

    /// Opens, joins and resolves `project`'s check incidents to match its checks' states. Runs
    /// on one task only, so two passes never open the same incident.
    async fn incidents(&self, project: &str) {
        let _pass = self.incidents_pass.lock().await;
        let filter = EventFilter {
            project: Some(project.to_string()),
            kinds: Checks::KINDS
                .iter()
                .chain(Incidents::KINDS)
                .chain(&[
                    "service_state_changed",
                    "deploy_started",
                    "deploy_finished",
                    "environment_stopped",
                ])
                .copied()
                .collect(),
            ..Default::default()
        };
        let events = match self.store.events(&filter).await {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!(error = %err, project, "cannot read the checks and incidents");
                return;
            }
        };
        let mut checks = Checks::fold(&events);
        let incidents = Incidents::fold(&events);
        let config = self.host.checks(project).await;
        // Only the checks the default branch has: one removed no longer holds its incident
        // open; one that never changed state is up (it counts when all of a group is down).
        checks
            .checks
            .retain(|(p, c), _| p != project || config.checks.iter().any(|k| k.name == *c));
        for c in &config.checks {
            let key = (project.to_string(), c.name.clone());
            checks.checks.entry(key).or_insert_with(|| takt_views::CheckView {
                project: project.to_string(),
                check: c.name.clone(),
                service: c.service.clone().unwrap_or_else(|| project.to_string()),
                environment: c.environment.clone(),
                state: CheckState::Up,
                since: OffsetDateTime::UNIX_EPOCH,
                changed_at: OffsetDateTime::UNIX_EPOCH,
                reason: String::new(),
            });
        }
        let windows = config.maintenance;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        // Services first: their subscribers hear of the outage before its incident.
        let mut last = std::collections::BTreeMap::new();
        for e in &events {
            if let EventKind::ServiceStateChanged { service, state, .. } = &e.kind {
                last.insert(service.clone(), *state);
            }
        }
        let public = |c: &takt_views::CheckView| config.checks.iter().any(|k| k.name == c.check && k.public);
        let ours = checks.checks.values().filter(|c| c.project == project);
        for kind in takt_monitor::status::service_changes(ours.map(|c| (c, public(c))), &last, &windows, now) {
            if let Err(err) = self.store.append(&Event::now(project, None, kind)).await {
                tracing::error!(error = %err, project, "cannot record a service's change");
            }
        }
        // An environment whose first version (or first since `takt env stop`) is still being
        // deployed has nothing taking traffic yet: its checks fail because nothing is there, the
        // deploy's own smoke checks judge it, and an incident (with its remediation, which would
        // stop that deploy) waits until it has finished.
        let mut envs = takt_views::Environments::default();
        for e in &events {
            envs.apply(e);
        }
        let coming_up = |env: &str| {
            envs.get(project, env)
                .is_some_and(|v| v.running.is_none() && v.deploying.is_some())
        };
        let quiet = |c: &takt_views::CheckView| {
            takt_monitor::maintenance::under_maintenance(&windows, &c.service, now)
                || c.environment.as_deref().is_some_and(coming_up)
        };
        let acts =
            takt_monitor::incident::reconcile(project, checks.checks.values(), incidents.incidents.values(), quiet);
        for act in acts {
            if let Act::Open(new) = act {
                let first = {
                    let readings = self.impact.lock();
                    new.checks
                        .iter()
                        .filter_map(|c| readings.get(&(project.to_string(), c.clone())).copied())
                        .min_by_key(|(at, _)| *at)
                };
                match self.host.open_incident(project, new).await {
                    Err(err) => tracing::error!(error = %err, project, "cannot open an incident"),
                    Ok(id) => {
                        if let Some((_, counts)) = first {
                            self.traffic(project, id, takt_model::TrafficMark::Impact, counts).await;
                        }
                    }
                }
                continue;
            }
            let status = match &act {
                Act::Join { id, .. } => incidents.get(id).map_or(IncidentStatus::Investigating, |i| i.status),
                _ => IncidentStatus::Resolved,
            };
            let Some(kind) = act.change(status) else { continue };
            if let Err(err) = self.store.append(&Event::now(project, None, kind)).await {
                tracing::error!(error = %err, project, "cannot record an incident's change");
            }
        }
        // Each incident resolved (by takt or a person) whose impact was counted gets its
        // closing reading, once; the resolution itself starts the pass that takes it.
        let late = OffsetDateTime::now_utc() - TRAFFIC_LATE;
        for i in incidents.incidents.values() {
            if i.project != project || i.traffic_at_impact.is_none() || i.traffic_at_end.is_some() {
                continue;
            }
            if i.resolved_at.is_some_and(|r| r > late)
                && let Ok(Some(counts)) = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    self.host.requests(project, &i.environment),
                )
                .await
            {
                self.traffic(project, i.id.clone(), takt_model::TrafficMark::Resolved, counts)
                    .await;
            }
        }
    }

    async fn traffic(&self, project: &str, id: String, mark: takt_model::TrafficMark, c: takt_model::RequestCounts) {
        let kind = EventKind::IncidentTraffic {
            id,
            mark,
            requests: c.requests,
            errors: c.errors,
        };
        if let Err(err) = self.store.append(&Event::now(project, None, kind)).await {
            tracing::error!(error = %err, project, "cannot record an incident's traffic");
        }
    }

    /// The checks running for `project`, per name.
    pub fn running(&self, project: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .running
            .lock()
            .keys()
            .filter(|(p, _)| p == project)
            .map(|(_, c)| c.clone())
            .collect();
        v.sort();
        v
    }

    /// Starts, restarts or stops `project`'s check tasks to match its default branch. Runs on
    /// the service's one follower task only, so nothing else changes `running` meanwhile.
    async fn reconcile(&self, project: &str) {
        self.reconciled.notify_waiters();
        let ProjectChecks { checks, urls, .. } = self.host.checks(project).await;
        let wanted: Vec<(HealthCheck, Option<String>)> = checks
            .into_iter()
            .map(|c| {
                let base = c.environment.as_ref().and_then(|e| urls.get(e).cloned());
                (c, base)
            })
            .collect();
        // The checks that are new or changed; those already running as they are stay.
        let changed: Vec<(HealthCheck, Option<String>)> = {
            let mut running = self.running.lock();
            running.retain(|(p, name), r| {
                let keep = p != project || wanted.iter().any(|(c, _)| c.name == *name);
                if !keep {
                    r.task.abort();
                }
                keep
            });
            wanted
                .into_iter()
                .filter(|(c, base)| {
                    let key = (project.to_string(), c.name.clone());
                    !running.get(&key).is_some_and(|r| r.check == *c && r.base == *base)
                })
                .collect()
        };
        if changed.is_empty() {
            return;
        }
        let last = self.last_states(project).await;
        // Each heartbeat's last beat (none yet: its time counts from now).
        let mut beats = HashMap::new();
        for (c, _) in &changed {
            if matches!(c.probe, ProbeSpec::Heartbeat { .. }) {
                let at = match self.store.cursor(&beat_cursor(project, &c.name)).await {
                    Ok(ms) => {
                        ms.and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, check = %c.name, "cannot read a heartbeat's last beat");
                        None
                    }
                };
                beats.insert(c.name.clone(), at.unwrap_or_else(OffsetDateTime::now_utc));
            }
        }
        let mut running = self.running.lock();
        for (c, base) in changed {
            let key = (project.to_string(), c.name.clone());
            if let Some(old) = running.remove(&key) {
                old.task.abort();
            }
            let health = last.get(&c.name).copied().unwrap_or(CheckState::Up);
            let (task, beats) = match (&c.probe, beats.get(&c.name)) {
                (ProbeSpec::Heartbeat { every, grace }, Some(at)) => {
                    let (tx, rx) = tokio::sync::watch::channel(*at);
                    let task = tokio::spawn(heartbeat(
                        self.store.clone(),
                        self.results.clone(),
                        project.to_string(),
                        c.clone(),
                        *every + *grace,
                        health,
                        rx,
                    ));
                    (task, Some(tx))
                }
                _ => {
                    let probing = Probing {
                        host: self.host.clone(),
                        store: self.store.clone(),
                        results: self.results.clone(),
                        prober: self.prober.clone(),
                        impact: self.impact.clone(),
                    };
                    let task = tokio::spawn(watch(probing, project.to_string(), c.clone(), base.clone(), health));
                    (task, None)
                }
            };
            running.insert(
                key,
                Running {
                    check: c,
                    base,
                    task,
                    beats,
                },
            );
        }
    }

    /// A beat of heartbeat check `check` of `project`, now: kept (so that a restart counts
    /// from it), then passed to the check's task.
    pub async fn beat(&self, project: &str, check: &str) -> Result<(), BeatError> {
        let key = (project.to_string(), check.to_string());
        let is_heartbeat = self.running.lock().get(&key).map(|r| r.beats.is_some());
        match is_heartbeat {
            None => {
                return Err(BeatError::NotFound {
                    project: project.into(),
                    check: check.into(),
                });
            }
            Some(false) => {
                return Err(BeatError::NotHeartbeat {
                    project: project.into(),
                    check: check.into(),
                });
            }
            Some(true) => {}
        }
        let now = OffsetDateTime::now_utc();
        let ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        self.store
            .save_cursor(&beat_cursor(project, check), ms)
            .await
            .map_err(|e| BeatError::Store(e.to_string()))?;
        if let Some(tx) = self.running.lock().get(&key).and_then(|r| r.beats.as_ref()) {
            tx.send_replace(now);
        }
        Ok(())
    }

    /// Each check's state as its last recorded change left it.
    async fn last_states(&self, project: &str) -> HashMap<String, CheckState> {
        let filter = EventFilter {
            project: Some(project.to_string()),
            kinds: Checks::KINDS.to_vec(),
            ..Default::default()
        };
        match self.store.events(&filter).await {
            Ok(events) => Checks::fold(&events)
                .checks
                .into_values()
                .map(|c| (c.check, c.state))
                .collect(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the checks' last states");
                HashMap::new()
            }
        }
    }
}

/// What a check's task probes with and records to.
struct Probing {
    host: Arc<dyn Host>,
    store: Store,
    results: results::Recorder,
    prober: takt_probe::Prober,
    impact: ImpactReadings,
}

/// One check, forever: probe at its interval, judge, record a crossed threshold.
async fn watch(p: Probing, project: String, c: HealthCheck, base: Option<String>, health: CheckState) {
    let Probing {
        host,
        store,
        results,
        prober,
        impact,
    } = p;
    let parse = |list: &[String]| -> Vec<Condition> { list.iter().filter_map(|t| Condition::parse(t).ok()).collect() };
    let conditions = parse(&c.conditions);
    let degraded_when = parse(&c.degraded_when);
    let mut streak = Streak::new(c.failure_threshold, c.success_threshold).starting(health);
    // Checks start spread over their interval (by their name, as Prometheus spreads its
    // targets), so that 500 checks of one interval are not 500 requests at once.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + spread(&project, &c.name, c.interval),
        c.interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the current run of equal results began.
    let mut run_began: Option<(Outcome, OffsetDateTime)> = None;
    loop {
        tick.tick().await;
        let at = OffsetDateTime::now_utc();
        let probe = match &c.probe {
            ProbeSpec::Process { environment } => {
                let started = std::time::Instant::now();
                let seen = tokio::time::timeout(c.timeout, host.instances(&project, environment))
                    .await
                    .ok()
                    .flatten();
                process_probe(seen.as_deref(), started.elapsed())
            }
            _ => prober.probe(&c.probe, base.as_deref(), c.timeout).await,
        };
        let (outcome, reason) = takt_monitor::threshold::judge(&probe, &conditions, &degraded_when, c.degraded_latency);
        results.record(results::Sample {
            project: project.clone(),
            check: c.name.clone(),
            at,
            success: outcome.success(),
            latency_ms: u64::try_from(probe.response_time.as_millis()).unwrap_or(u64::MAX),
        });
        let since = match run_began {
            Some((o, t)) if o == outcome => t,
            _ => {
                run_began = Some((outcome, at));
                at
            }
        };
        let key = (project.clone(), c.name.clone());
        if outcome.success() {
            impact.lock().remove(&key);
        } else if let Some(env) = &c.environment
            && !impact.lock().contains_key(&key)
        {
            // The first failing result: what the proxy had counted until then, for the
            // requests an incident's postmortem says failed.
            let read = tokio::time::timeout(std::time::Duration::from_secs(1), host.requests(&project, env));
            if let Ok(Some(counts)) = read.await {
                impact.lock().insert(key, (at, counts));
            }
        }
        let Some(change) = streak.record(outcome) else {
            continue;
        };
        record_change(&store, &project, &c, change, reason, since).await;
    }
}

/// Where in `interval` check `check` of `project` is probed: the same place every time (an
/// FNV-1a hash of the names), different for different checks.
fn spread(project: &str, check: &str, interval: std::time::Duration) -> std::time::Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in project.bytes().chain([0]).chain(check.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
    std::time::Duration::from_millis(h % ms)
}

/// A heartbeat check, forever: each beat (from `beats`) is a passing result; each `due` (its
/// `every` plus `grace`) without one is a failing result, after which the next is due one
/// `due` later.
async fn heartbeat(
    store: Store,
    results: results::Recorder,
    project: String,
    c: HealthCheck,
    due: std::time::Duration,
    health: CheckState,
    mut beats: tokio::sync::watch::Receiver<OffsetDateTime>,
) {
    let mut streak = Streak::new(c.failure_threshold, c.success_threshold).starting(health);
    let mut last = *beats.borrow_and_update();
    let human = takt_model::timefmt::human(due);
    loop {
        let deadline = last
            .checked_add(due.try_into().unwrap_or(time::Duration::MAX))
            .unwrap_or(OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT));
        let wait = (deadline - OffsetDateTime::now_utc()).try_into().unwrap_or_default();
        let (success, reason, since) = tokio::select! {
            changed = beats.changed() => {
                if changed.is_err() {
                    return; // the check was stopped
                }
                last = *beats.borrow_and_update();
                (true, "a beat arrived".to_string(), last)
            }
            () = tokio::time::sleep(wait) => {
                let reason = format!("no beat within {human} (the last at {})", takt_model::timefmt::rfc3339(last));
                // The next result is due a period from now: after a long silence (or a restart
                // with an old last beat) that is one failure, not one per period missed.
                last = deadline.max(OffsetDateTime::now_utc());
                (false, reason, deadline)
            }
        };
        results.record(results::Sample {
            project: project.clone(),
            check: c.name.clone(),
            at: OffsetDateTime::now_utc(),
            success,
            latency_ms: 0,
        });
        if let Some(change) = streak.record(if success { Outcome::Pass } else { Outcome::Fail }) {
            record_change(&store, &project, &c, change, reason, since).await;
        }
    }
}

/// Records that check `c` crossed a threshold.
async fn record_change(
    store: &Store,
    project: &str,
    c: &HealthCheck,
    change: takt_monitor::threshold::Change,
    reason: String,
    since: OffsetDateTime,
) {
    let e = Event::now(
        project,
        None,
        EventKind::CheckStateChanged {
            check: c.name.clone(),
            service: c.service.clone().unwrap_or_else(|| project.to_string()),
            environment: c.environment.clone(),
            state: change.to,
            streak: change.streak,
            reason,
            since,
        },
    );
    if let Err(err) = store.append(&e).await {
        tracing::error!(error = %err, check = %c.name, "cannot record a check's change");
    }
}

/// Runs `f` for every project now, then for the project of each event of `kinds` after that
/// (the head is read first: nothing appended meanwhile is missed).
fn follow<F, Fut>(me: Arc<Observe>, kinds: &'static [&'static str], f: F)
where
    F: Fn(Arc<Observe>, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        // A store that does not answer is waited for (1 s, doubling to 30 s), never given up on.
        let mut pause = std::time::Duration::from_secs(1);
        let mut wait = |what: &str, err: &dyn std::fmt::Display| {
            tracing::warn!(error = %err, "the monitoring service cannot {what}; trying again in {pause:?}");
            let p = pause;
            pause = (pause * 2).min(std::time::Duration::from_secs(30));
            tokio::time::sleep(p)
        };
        let head = loop {
            match me.store.head().await {
                Ok(h) => break h,
                Err(err) => wait("read the log's head", &err).await,
            }
        };
        for p in me.host.projects() {
            f(me.clone(), p).await;
        }
        let mut last = head;
        let mut events = me.store.subscribe(last, kinds);
        loop {
            match events.next().await {
                Ok(e) => {
                    last = e.seq.unwrap_or(last);
                    f(me.clone(), e.project).await;
                }
                Err(err) => {
                    wait("follow the log", &err).await;
                    events = me.store.subscribe(last, kinds);
                }
            }
        }
    });
}

impl Observe {
    /// The public status page now: every project's checks marked `public: true`, their states,
    /// 90 days of their results, and the incidents that concern their services.
    pub async fn status(&self) -> Result<takt_monitor::status::StatusPage, takt_store::StoreError> {
        // Built at most once a second: the page is public, and building it reads the log.
        let mut cache = self.status_cache.lock().await;
        if let Some((at, page)) = cache.as_ref()
            && at.elapsed() < STATUS_FRESH
        {
            return Ok(page.clone());
        }
        let page = self.build_status().await?;
        *cache = Some((std::time::Instant::now(), page.clone()));
        Ok(page)
    }

    async fn build_status(&self) -> Result<takt_monitor::status::StatusPage, takt_store::StoreError> {
        use takt_monitor::aggregate::DAY;
        let now = OffsetDateTime::now_utc();
        let mut public = Vec::new();
        let mut windows = Vec::new();
        for p in self.host.projects() {
            let ProjectChecks {
                checks, maintenance, ..
            } = self.host.checks(&p).await;
            let services: Vec<String> = checks
                .iter()
                .filter(|c| c.public)
                .map(|c| c.service.clone().unwrap_or_else(|| p.clone()))
                .collect();
            for w in maintenance {
                // A window of all the project's services covers its public ones, by name.
                let mut w = w;
                if w.services.is_empty() {
                    w.services = services.clone();
                }
                windows.push(w);
            }
            for c in checks.into_iter().filter(|c| c.public) {
                public.push(takt_monitor::status::PublicCheck {
                    service: c.service.clone().unwrap_or_else(|| p.clone()),
                    project: p.clone(),
                    check: c.name,
                });
            }
        }
        let events = self
            .store
            .events(&EventFilter {
                kinds: Checks::KINDS.iter().chain(Incidents::KINDS).copied().collect(),
                ..Default::default()
            })
            .await?;
        let checks = Checks::fold(&events);
        let incidents = Incidents::fold(&events);
        let t = now.unix_timestamp();
        let today = t - t.rem_euclid(DAY);
        let from = today - takt_monitor::status::DAYS * DAY;
        // Per-day counts: read once, then kept by the results writer.
        if !self.days.lock().loaded {
            let rows = self.store.daily_counts(from).await?;
            let mut d = self.days.lock();
            if !d.loaded {
                for (project, check, day, count, successes) in rows {
                    let u = |n: i64| u64::try_from(n).unwrap_or(0);
                    d.add(&project, &check, day, u(count), u(successes));
                }
                d.loaded = true;
            }
        }
        let mut buckets: std::collections::BTreeMap<(String, String), Vec<takt_monitor::aggregate::Bucket>> =
            Default::default();
        {
            let d = self.days.lock();
            for c in &public {
                let key = (c.project.clone(), c.check.clone());
                let Some(days) = d.days.get(&key) else { continue };
                let list = days
                    .range(from..)
                    .map(|(day, (count, successes))| {
                        let mut b = takt_monitor::aggregate::Bucket::new(*day, DAY);
                        b.count = *count;
                        b.successes = *successes;
                        b
                    })
                    .collect();
                buckets.insert(key, list);
            }
        }
        Ok(takt_monitor::status::page(
            &public,
            &checks,
            &buckets,
            incidents.incidents.values(),
            &windows,
            now,
        ))
    }
}

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn a_process_check_connects_when_every_instance_is_alive_and_open() {
        let i = |alive, open| Instance {
            port: 1,
            alive,
            open,
            restarts: 1,
        };
        let d = std::time::Duration::ZERO;
        assert!(process_probe(Some(&[i(true, true), i(true, true)]), d).connected);
        assert!(!process_probe(Some(&[i(true, true), i(true, false)]), d).connected);
        assert!(!process_probe(Some(&[i(false, false)]), d).connected);
        assert!(!process_probe(Some(&[]), d).connected, "nothing runs");
        assert!(!process_probe(None, d).connected, "no supervisor");
        let body = process_probe(Some(&[i(true, true), i(false, true)]), d).body.unwrap();
        assert_eq!(body, r#"{"alive":1,"instances":2,"open":2,"restarts":2}"#);
    }
}
