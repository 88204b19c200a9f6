//! The supervisor watchdog: every process/nginx environment that runs something has one idle
//! connection to its supervisor; when that connection closes and the environment should still
//! run (not stopped, no deploy in flight that replaces the supervisor), what the log says runs
//! there is started again at once — a `restore` deploy whose trigger says why, so the log
//! records it.

use crate::{Cd, supervisor};
use std::collections::HashSet;
use std::sync::Arc;

/// Why a restore after a supervisor's death says it happened.
pub const REASON: &str = "its supervisor stopped unexpectedly";

/// Watches every environment that runs something now, and each one a deploy finishes later.
pub fn start(cd: Arc<Cd>) {
    tokio::spawn(async move {
        let after = cd.store.head().await.unwrap_or(0);
        let mut log = cd.store.subscribe(after, &["deploy_finished"]);
        let mut watched: HashSet<(String, String)> = HashSet::new();
        for v in cd.deployments.index.all() {
            watch(&cd, &mut watched, v.project, v.environment);
        }
        loop {
            match log.next().await {
                Ok(e) => {
                    if let takt_model::EventKind::DeployFinished { environment, .. } = e.kind {
                        watch(&cd, &mut watched, e.project, environment);
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the supervisor watchdog cannot read the log; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    });
}

fn watch(cd: &Arc<Cd>, watched: &mut HashSet<(String, String)>, project: String, env: String) {
    if watched.insert((project.clone(), env.clone())) {
        tokio::spawn(watch_one(cd.clone(), project, env));
    }
}

/// One environment: waits on its controls while nothing should be watched, else on its
/// supervisor's connection; restores it when that closes unexpectedly.
async fn watch_one(cd: Arc<Cd>, project: String, env: String) {
    let ctl = cd.deployments.control(&project, &env);
    let mut changed = ctl.subscribe();
    loop {
        let Ok(e) = cd.environment(&project, &env).await else {
            // Not configured (any more): look again when something changes.
            if changed.changed().await.is_err() {
                return;
            }
            continue;
        };
        let view = cd.view(&project, &env);
        let should_run = e.driver != takt_pipeline::Driver::Command
            && view.running.is_some()
            && view.stopped.is_none()
            && ctl.busy.lock().is_none();
        if !should_run {
            if changed.changed().await.is_err() {
                return;
            }
            continue;
        }
        let sup = supervisor(&cd, &project, &e);
        if sup.status().await.is_some() {
            tokio::select! {
                _ = sup.gone() => {}
                // A deploy, a stop, a halt: look again (the supervisor may be the same).
                _ = changed.changed() => continue,
            }
        }
        // Gone, or none answered: still meant to run, and nobody is deploying there?
        let view = cd.view(&project, &env);
        let (Some(running), None, None) = (view.running.clone(), view.stopped.as_ref(), *ctl.busy.lock()) else {
            continue;
        };
        tracing::warn!(%project, environment = %env, "the supervisor is gone; restoring what ran there");
        if let Err(err) = crate::rollout::restore(&cd, &project, e, running, REASON).await {
            tracing::error!(%project, environment = %env, error = %err, "cannot restore an environment");
        }
        // The restore's end (or any other change) brings the next look.
        if changed.changed().await.is_err() {
            return;
        }
    }
}
