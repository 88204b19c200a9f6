//! What a project's default branch configures (`schedules`, `notify`; docs/server.md: a branch
//! cannot redefine them), kept current as the default branch moves, and the cron scheduler
//! that starts scheduled runs.

use crate::trigger::report;
use crate::{Ci, projects};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use takt_engine::git::Repo;
use takt_model::Trigger;
use takt_pipeline::{CronSchedule, Subscriber};

/// The default branch's settings of one project.
#[derive(Debug, Clone, Default)]
pub struct BranchConfig {
    /// The default branch's commit they were read from.
    pub commit: String,
    /// The mirror's generation ([`crate::queue::Queue::generation`]) they were read at.
    pub generation: u64,
    pub schedules: Vec<CronSchedule>,
    pub notify: Vec<Subscriber>,
    pub retention: Option<takt_pipeline::Retention>,
    pub environments: Vec<takt_pipeline::Environment>,
    /// Health checks (`checks:`).
    pub checks: Vec<takt_pipeline::HealthCheck>,
    /// Their services' maintenance windows (`maintenance:`).
    pub maintenance: Vec<takt_monitor::maintenance::Window>,
    /// The flow metrics' band thresholds (`metrics:`).
    pub metrics: takt_pipeline::MetricsConfig,
    /// Recurring drills (`drills:`).
    pub drills: Vec<takt_pipeline::ScheduledDrill>,
    /// Feature flags (`flags:`), compiled.
    pub flags: Option<Arc<ProjectFlags>>,
    /// Why the file could not be read, if it could not (the previous settings stay).
    pub error: Option<String>,
}

pub use crate::flags::ProjectFlags;

/// The longest the scheduler sleeps without looking again (a schedule's next time is
/// recomputed when a mirror moves, so this only bounds clock drift).
pub const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// Whether the default branch's settings were read at the mirror's current generation (then
/// [`refresh`] has nothing to do). Hot paths (OFREP) ask this first: `refresh`'s future is
/// large, and only worth making when there is something to read.
pub fn is_current(ci: &Ci, project: &str) -> bool {
    let generation = ci.queue.generation(project);
    ci.branch_configs
        .read()
        .get(project)
        .is_some_and(|x| x.generation == generation && !x.commit.is_empty())
}

/// Re-reads a project's default-branch takt.yml when the branch moved. Costs nothing (no git)
/// while the mirror has not been fetched since the last read.
pub async fn refresh(ci: &Ci, p: &projects::Project) {
    if is_current(ci, &p.name) {
        return;
    }
    // One re-read of a project at a time (an older one finishing last would put its commit's
    // settings back); whoever waited finds the work done.
    let lock = ci.refreshing.lock().entry(p.name.clone()).or_default().clone();
    let _one = lock.lock().await;
    if is_current(ci, &p.name) {
        return;
    }
    let generation = ci.queue.generation(&p.name);
    let mirror = Repo::bare(&projects::mirror_path(&ci.data_dir, &p.name));
    let Ok(commit) = mirror.resolve(&format!("refs/heads/{}", p.branch)).await else {
        return;
    };
    let known = ci.branch_configs.read().get(&p.name).map(|x| x.commit.clone());
    if known.as_deref() == Some(commit.as_str()) {
        let mut c = ci.branch_configs.write();
        if let Some(x) = c.get_mut(&p.name) {
            x.generation = generation;
        }
        return;
    }
    let mut cfg = ci.branch_config(&p.name).unwrap_or_default();
    cfg.commit = commit.clone();
    cfg.generation = generation;
    // Held (when the file is valid) until `cfg` is in place: see `flags::reconcile`.
    let mut reconciled = None;
    let mut valid = false;
    match mirror.file_at(&commit, "takt.yml").await {
        None => {
            cfg.error = Some(format!(
                "no takt.yml on {} at {}",
                p.branch,
                &commit[..8.min(commit.len())]
            ))
        }
        // The files it includes (`include: local`, the flagd files of `flags: $include`), read
        // from the same commit; then parsing, CPU work over pushed input: off the async runtime.
        Some(bytes) => match {
            let mut walk = takt_pipeline::gitlab::IncludeWalk::new(&bytes, &[]);
            while let Some(path) = walk.wanted() {
                let content = mirror.file_at(&commit, &path).await;
                walk.give(path, content);
            }
            let includes = walk.finish();
            tokio::task::spawn_blocking(move || {
                takt_pipeline::parse_with("takt.yml", &bytes, &Default::default(), &includes)
            })
        }
        .await
        .unwrap_or_else(|e| {
            Err(takt_pipeline::Diagnostics {
                file: "takt.yml".into(),
                items: vec![takt_pipeline::Diagnostic::new(
                    takt_pipeline::Pos { line: 1, col: 1 },
                    format!("the parser stopped: {e}"),
                )],
                includes: Vec::new(),
            })
        }) {
            Ok(pipe) => {
                cfg.schedules = pipe.schedules;
                cfg.notify = pipe.notify;
                cfg.retention = pipe.retention;
                cfg.environments = pipe.environments;
                cfg.checks = pipe.checks;
                cfg.maintenance = pipe.maintenance;
                cfg.metrics = pipe.metrics;
                cfg.drills = pipe.drills;
                cfg.error = None;
                valid = true;
                reconciled = crate::flags::reconcile(ci, &p.name, &commit, &mut cfg, pipe.flags.as_ref()).await;
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(project = %p.name, error = %msg, "the default branch's takt.yml is invalid; its schedules and notify stay as they were");
                cfg.error = Some(msg);
            }
        },
    }
    if valid && reconciled.is_none() {
        // The flags' changes could not be recorded: this commit is read again next time.
        return;
    }
    {
        let mut c = ci.branch_configs.write();
        if reconciled.is_none() {
            // An invalid file changes no flag; a run-time change made meanwhile stays.
            cfg.flags = c.get(&p.name).and_then(|x| x.flags.clone());
        }
        c.insert(p.name.clone(), cfg);
    }
    drop(reconciled);
}

/// The next time a schedule fires after `after` (UTC).
pub fn next_fire(s: &CronSchedule, after: jiff::Timestamp) -> Option<jiff::Timestamp> {
    let cron = CronSchedule::parse(&s.cron).ok()?;
    let tz = match &s.timezone {
        Some(name) => jiff::tz::TimeZone::get(name).ok()?,
        None => jiff::tz::TimeZone::UTC,
    };
    let zoned = after.to_zoned(tz);
    cron.find_next_occurrence(&zoned, false).ok().map(|z| z.timestamp())
}

/// Keeps branch configs current and starts scheduled runs (forced: a schedule runs the branch
/// head even when that commit already has a run, as GitLab's scheduled pipelines do).
/// Times missed while the server was down are not made up.
pub fn start(ci: Arc<Ci>) {
    tokio::spawn(async move {
        let mut last = jiff::Timestamp::now();
        let mut warned: HashMap<(String, String), ()> = HashMap::new();
        loop {
            // Registered first: a mirror that moves while this pass runs wakes the next sleep.
            let moved = ci.queue.moved.notified();
            let now = jiff::Timestamp::now();
            let mut next_wake = now + jiff::SignedDuration::try_from(LONGEST_SLEEP).unwrap_or_default();
            let projects = ci.projects.read().list();
            for p in projects {
                refresh(&ci, &p).await;
                let schedules = ci
                    .branch_configs
                    .read()
                    .get(&p.name)
                    .map(|x| x.schedules.clone())
                    .unwrap_or_default();
                for s in schedules {
                    let Some(next) = next_fire(&s, last) else {
                        if warned.insert((p.name.clone(), s.name.clone()), ()).is_none() {
                            tracing::warn!(project = %p.name, schedule = %s.name, timezone = ?s.timezone, "schedule cannot be evaluated (unknown time zone?)");
                        }
                        continue;
                    };
                    if next > now {
                        next_wake = next_wake.min(next);
                        continue;
                    }
                    if let Some(after) = next_fire(&s, now) {
                        next_wake = next_wake.min(after);
                    }
                    let branch = s.branch.clone().unwrap_or_else(|| p.branch.clone());
                    let trigger = Trigger::Schedule {
                        name: s.name.clone(),
                        cron: s.cron.clone(),
                    };
                    let git_ref = format!("refs/heads/{branch}");
                    match report(&ci, &p.name, None, Some(&git_ref), trigger, true).await {
                        Ok((sub, commit)) => {
                            tracing::info!(project = %p.name, schedule = %s.name, %commit, ?sub, "scheduled run")
                        }
                        Err(e) => {
                            tracing::warn!(project = %p.name, schedule = %s.name, error = %e, "scheduled run not queued")
                        }
                    }
                }
            }
            last = now;
            // Until the next schedule is due, or a mirror moved (a takt.yml may have changed).
            let wait = Duration::try_from(next_wake.duration_since(jiff::Timestamp::now()))
                .unwrap_or_default()
                .min(LONGEST_SLEEP)
                .max(Duration::from_millis(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = moved => {}
            }
        }
    });
}
