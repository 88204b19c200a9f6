//! Auto-deploy: every green run of a default branch goes to its project's `auto: true`
//! environments, deployed once or recorded as skipped.

use crate::{Ask, Cd, CdError, Control};
use backon::Retryable;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use takt_model::{ArtifactRef, DeployTrigger, Event, EventKind, SkipReason};
use takt_pipeline::Environment;
use takt_store::EventFilter;
use tokio::sync::Notify;

/// Auto-deploy's durable cursor (table `cursors`).
pub const AUTO_DEPLOY_CURSOR: &str = "auto_deploy";

/// Deploys each green run of a default branch to its project's `auto: true` environments.
///
/// Follows the log's `run_finished` events from a durable cursor. Each `auto: true`
/// environment has a slot holding the newest green run waiting for it, and a worker that
/// deploys what the slot holds once the environment is free. A run replaced in the slot before
/// its deploy could start is recorded as `deploy_skipped` (`superseded`), so every green run
/// ends in a `deploy_started` or a `deploy_skipped` for each environment; the cursor passes a
/// run only then. After a crash or a restart the follower resumes from the cursor, and a run
/// whose outcome is already in the log is not deployed again.
pub fn start(cd: Arc<Cd>) {
    tokio::spawn(async move {
        let (cursor, after) = match takt_store::Cursor::open(&cd.store, AUTO_DEPLOY_CURSOR).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "auto-deploy is off: cannot read its cursor");
                return;
            }
        };
        let mut log = cd.store.subscribe(after, &["run_finished"]);
        let mut slots: HashMap<(String, String), Arc<Slot>> = HashMap::new();
        loop {
            let e = match log.next().await {
                Ok(e) => e,
                Err(err) => {
                    tracing::warn!(error = %err, "auto-deploy cannot read the log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let seq = e.seq.unwrap_or(0);
            let envs = match (&e.kind, e.run) {
                (EventKind::RunFinished { status, .. }, Some(run)) if *status == takt_model::RunStatus::Success => {
                    auto_environments(&cd, &e.project, run).await
                }
                _ => Vec::new(),
            };
            cursor.read(log.position(), seq, envs.len());
            let Some(run) = e.run else { continue };
            for env in envs {
                if already_settled(&cd, &e.project, &env.name, run).await {
                    cursor.done(seq);
                    continue;
                }
                let slot = slots
                    .entry((e.project.clone(), env.name.clone()))
                    .or_insert_with(|| Slot::start(cd.clone(), e.project.clone(), env.name.clone(), cursor.clone()))
                    .clone();
                let wanted = Wanted { run, seq, env };
                if let Some(older) = slot.put(wanted) {
                    skip(&cd, &e.project, &older, SkipReason::Superseded, Some(run), None).await;
                    cursor.done(older.seq);
                }
            }
        }
    });
}

/// A green run waiting to be deployed to one environment.
struct Wanted {
    run: u64,
    /// Its `run_finished` event.
    seq: i64,
    env: Environment,
}

/// One `auto: true` environment's newest waiting run, and the signal that it changed.
struct Slot {
    wanted: Mutex<Option<Wanted>>,
    changed: Notify,
}

impl Slot {
    fn start(cd: Arc<Cd>, project: String, env: String, cursor: Arc<takt_store::Cursor>) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            wanted: Mutex::new(None),
            changed: Notify::new(),
        });
        tokio::spawn(deploy_worker(cd, project, env, slot.clone(), cursor));
        slot
    }

    /// Puts the newest run in; returns the one it replaces (which never started).
    fn put(&self, w: Wanted) -> Option<Wanted> {
        let old = self.wanted.lock().replace(w);
        self.changed.notify_one();
        old
    }

    fn take(&self) -> Option<Wanted> {
        self.wanted.lock().take()
    }

    fn has_newer(&self) -> bool {
        self.wanted.lock().is_some()
    }
}

/// The `auto: true` environments a green run of `project` goes to: none unless it ran on the
/// default branch.
async fn auto_environments(cd: &Cd, project: &str, run: u64) -> Vec<Environment> {
    let Some(default) = cd.host.default_branch(project) else {
        return Vec::new();
    };
    if cd.host.run_branch(project, run).as_deref() != Some(default.as_str()) {
        return Vec::new();
    }
    match cd.environments(project).await {
        Ok(envs) => envs.into_iter().filter(|e| e.auto).collect(),
        Err(e) => {
            tracing::warn!(%project, run, error = %e, "auto-deploy cannot read the environments");
            Vec::new()
        }
    }
}

async fn skip(cd: &Cd, project: &str, w: &Wanted, reason: SkipReason, by_run: Option<u64>, detail: Option<String>) {
    let e = Event::now(
        project,
        Some(w.run),
        EventKind::DeploySkipped {
            environment: w.env.name.clone(),
            reason,
            by_run,
            detail,
        },
    );
    // The run's outcome must reach the log before the cursor passes it: tried until the
    // store takes it (waits of 0.1 s doubling up to 5 s).
    let record = || cd.record(e.clone());
    let policy = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times();
    let _ = record
        .retry(policy)
        .notify(|err: &CdError, wait| {
            tracing::warn!(%project, run = w.run, error = %err, ?wait, "cannot record a skipped auto-deploy yet; trying again")
        })
        .await;
}

/// Whether the log already says how `run`'s auto-deploy to `env` went (after a restart the
/// follower sees runs again whose deploy it started before).
async fn already_settled(cd: &Cd, project: &str, env: &str, run: u64) -> bool {
    let facts = cd
        .store
        .events(&EventFilter {
            project: Some(project.to_string()),
            run: Some(run),
            kinds: vec!["deploy_started", "deploy_skipped"],
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    facts.iter().any(|e| match &e.kind {
        EventKind::DeployStarted {
            environment,
            trigger: DeployTrigger::Pipeline { .. },
            ..
        }
        | EventKind::DeploySkipped { environment, .. } => environment == env,
        _ => false,
    })
}

/// Deploys what one environment's slot holds, one at a time, waiting (on the environment's
/// signal, not a timer) while another deploy is in flight there.
async fn deploy_worker(cd: Arc<Cd>, project: String, env: String, slot: Arc<Slot>, cursor: Arc<takt_store::Cursor>) {
    let ctl = cd.deployments.control(&project, &env);
    loop {
        let changed = slot.changed.notified();
        let Some(w) = slot.take() else {
            changed.await;
            continue;
        };
        let seq = w.seq;
        settle(&cd, &project, &ctl, &slot, w).await;
        cursor.done(seq);
    }
}

/// Deploys one waiting run, or records why it was not.
async fn settle(cd: &Arc<Cd>, project: &str, ctl: &Control, slot: &Slot, w: Wanted) {
    if already_settled(cd, project, &w.env.name, w.run).await {
        return;
    }
    let Some(artifact) = run_artifact(cd, project, w.run, &w.env).await else {
        tracing::warn!(%project, environment = %w.env.name, run = w.run, "auto-deploy: the run has no artifact to deploy (set `artifact:` on the environment)");
        skip(cd, project, &w, SkipReason::NoArtifact, None, None).await;
        return;
    };
    loop {
        // Registered before trying, so the end of the deploy in flight cannot slip by.
        let mut idle = ctl.subscribe();
        let newer = slot.changed.notified();
        let ask = Ask {
            project: project.to_string(),
            env: w.env.clone(),
            artifact: artifact.clone(),
            trigger: DeployTrigger::Pipeline { run: w.run },
            rollback: false,
            restore: false,
            fixes: None,
        };
        match cd.begin(ask).await {
            Ok(Some(_)) => return,
            Ok(None) => {
                skip(cd, project, &w, SkipReason::AlreadyRunning, None, None).await;
                return;
            }
            Err(CdError::Refused(r)) if r.held() => {
                let deploy = r.deploy();
                tracing::debug!(%project, environment = %w.env.name, run = w.run, ?deploy, "auto-deploy waits for the deploy in flight");
                tokio::select! {
                    _ = idle.changed() => {}
                    _ = newer => {}
                }
                if slot.has_newer() {
                    let by = slot.wanted.lock().as_ref().map(|n| n.run);
                    skip(cd, project, &w, SkipReason::Superseded, by, None).await;
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(%project, environment = %w.env.name, run = w.run, error = %e, "auto-deploy refused");
                skip(cd, project, &w, SkipReason::Refused, None, Some(e.to_string())).await;
                return;
            }
        }
    }
}
/// The artifact a green run deploys to `env`: the one `artifact:` names, or the run's only one.
async fn run_artifact(cd: &Cd, project: &str, run: u64, env: &Environment) -> Option<ArtifactRef> {
    let stored = cd
        .store
        .events(&EventFilter {
            kind: Some("artifact_stored".into()),
            project: Some(project.to_string()),
            run: Some(run),
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let artifacts: Vec<(String, String)> = stored
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ArtifactStored { name, version, .. } => Some((name.clone(), version.clone())),
            _ => None,
        })
        .collect();
    let pick = match &env.artifact {
        Some(n) => artifacts.iter().find(|(a, _)| a == n),
        None if artifacts.len() == 1 => artifacts.first(),
        None => None,
    }?;
    cd.artifact(&format!("{}@{}", pick.0, pick.1)).await.ok()
}
