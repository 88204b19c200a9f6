//! Remediation: when a check opens an incident in a production environment soon after a
//! deployment there finished, takt acts on that deployment itself, as its environment's
//! `remediate:` says — rolls it back (as `takt rollback` does, smoke checks included),
//! restarts its instances, or runs a command — before anyone is paged. What to do is
//! `takt_monitor::remedy::plan`; this module does it and records each step on the incident
//! (`incident_remediation`), and marks the deployment as the incident's suspected cause.
//!
//! It follows the log's `incident_opened` events from a durable cursor, so an incident opened
//! while the server was down is remediated when it is back. One remediation per incident: the
//! first `incident_remediation` event (started or skipped) is recorded before anything is
//! done, and the plan is never made again once there is one.

use crate::{Ask, Cd};
use std::sync::Arc;
use std::time::Duration;
use takt_model::{DeployOutcome, DeployTrigger, Event, EventKind, RemedyAction, RemedyOutcome};
use takt_monitor::remedy::{Plan, Policy};
use takt_pipeline::{Environment, Remedy};

/// Remediation's durable cursor (table `cursors`).
pub const CURSOR: &str = "remediate";

/// How long a remediation waits for its rollback or restart to finish.
const TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The settings `plan` judges by.
pub fn policy(env: &Environment, all: &[Environment]) -> Policy {
    Policy {
        action: match env.remediate {
            Remedy::None => None,
            Remedy::Rollback => Some(RemedyAction::Rollback),
            Remedy::Restart => Some(RemedyAction::Restart),
            Remedy::Command(_) => Some(RemedyAction::Command),
        },
        window: env.remediate_window,
        production: takt_pipeline::is_production(all, &env.name),
    }
}

pub fn start(cd: Arc<Cd>) {
    tokio::spawn(async move {
        let (cursor, after) = match takt_store::Cursor::open(&cd.store, CURSOR).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "remediation is off: cannot read its cursor");
                return;
            }
        };
        interrupted(&cd).await;
        let mut log = cd.store.subscribe(after, &["incident_opened"]);
        loop {
            let e = match log.next().await {
                Ok(e) => e,
                Err(err) => {
                    tracing::warn!(error = %err, "remediation cannot read the log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let seq = e.seq.unwrap_or(0);
            let Some(id) = takt_model::incident_id(&e) else {
                cursor.passed(log.position());
                continue;
            };
            cursor.read(log.position(), seq, 1);
            let (cd, cursor) = (cd.clone(), cursor.clone());
            // Each on its own: a rollback of one environment does not hold up another's.
            tokio::spawn(async move {
                remediate(&cd, &e.project, &id).await;
                cursor.done(seq);
            });
        }
    });
}

/// Remediations the last server left `started` (it stopped meanwhile) end as failed, so
/// that their incidents page at once: nothing carries them on.
async fn interrupted(cd: &Arc<Cd>) {
    let Ok(incidents) = cd.incidents(None).await else {
        return;
    };
    for i in incidents.incidents.values().filter(|i| i.is_open()) {
        let Some(r) = i.remediation.as_ref().filter(|r| r.outcome == RemedyOutcome::Started) else {
            continue;
        };
        let kind = EventKind::IncidentRemediation {
            id: i.id.clone(),
            action: r.action,
            deploy: r.deploy.clone(),
            outcome: RemedyOutcome::Failed,
            detail: Some(
                "interrupted: the server stopped while it ran (what it started is recovered as every deploy is)".into(),
            ),
        };
        if let Err(e) = cd.record(Event::now(&i.project, None, kind)).await {
            tracing::error!(error = %e, incident = %i.id, "cannot record an interrupted remediation");
        }
    }
}

/// Plans and carries out the remediation of incident `id` of `project`.
async fn remediate(cd: &Arc<Cd>, project: &str, id: &str) {
    let record = |kind: EventKind| async move {
        if let Err(err) = cd.record(Event::now(project, None, kind)).await {
            tracing::error!(error = %err, incident = id, "cannot record a remediation step");
        }
    };
    // The settings first (a git read), outside the incidents' lock.
    let Ok(i) = cd.incident(id).await else {
        tracing::warn!(incident = id, "remediation cannot read the incident");
        return;
    };
    let all = match cd.environments(project).await {
        Ok(all) => all,
        Err(err) => {
            let why = format!("the default branch's environments cannot be read: {err}");
            tracing::warn!(incident = id, error = %why, "no remediation");
            return;
        }
    };
    let Some(env) = all.iter().find(|e| e.name == i.environment).cloned() else {
        return;
    };
    // Flag changes before the impact are suspects too: said on the timeline, never flipped back.
    let flags = cd.flag_suspects(&i).await.ok().filter(|f| !f.is_empty()).map(|f| {
        let each: Vec<String> = f.iter().map(|f| f.describe()).collect();
        format!(
            "flag changes among the suspects (reported, not flipped back): {}",
            each.join("; ")
        )
    });
    let with_flags = |detail: Option<String>| match (detail, &flags) {
        (Some(d), Some(f)) => Some(format!("{d}; {f}")),
        (d, f) => d.or_else(|| f.clone()),
    };
    // One remediation at a time per environment, from its plan to its end: two incidents
    // never act on one environment at once.
    let guard = env_lock(project, &env.name);
    let _acting = guard.lock().await;
    // One plan at a time (with the incidents' other changes), checked against the view as it
    // is then: the plan's first event is recorded before the lock is let go. Where the log
    // stands is read before the view, so the end of a deploy seen in flight is not missed.
    let (plan, name, after) = {
        let _one = cd.incidents.lock().await;
        let Ok(after) = cd.store.head().await else { return };
        let Ok(i) = cd.incident(id).await else { return };
        let view = cd.view(project, &env.name);
        let Some(mut plan) = takt_monitor::remedy::plan(&i, &policy(&env, &all), &view) else {
            return;
        };
        let env_name = env.name.clone();
        let name = move |n: u64| format!("{project}/{env_name}#{n}");
        // A deployment is remediated once, whichever of its incidents came first (a check
        // that flaps would otherwise restart a service, or run a command, again and again).
        if let Plan::Act { action, deploy, .. } = &plan
            && let Ok(others) = cd.incidents(Some(project)).await
            && let Some(other) = others.incidents.values().find(|o| {
                o.id != id
                    && o.remediation.as_ref().is_some_and(|r| {
                        r.outcome != RemedyOutcome::Skipped && r.deploy.as_deref() == Some(&name(*deploy))
                    })
            })
        {
            plan = Plan::Skip {
                action: *action,
                deploy: Some(*deploy),
                why: format!("{} was remediated already, for incident {}", name(*deploy), other.id),
            };
        }
        let first = match &plan {
            Plan::Skip { action, deploy, why } => EventKind::IncidentRemediation {
                id: id.to_string(),
                action: *action,
                deploy: deploy.map(&name),
                outcome: RemedyOutcome::Skipped,
                detail: with_flags(Some(why.clone())),
            },
            Plan::Act {
                action,
                deploy,
                in_flight,
            } => EventKind::IncidentRemediation {
                id: id.to_string(),
                action: *action,
                deploy: Some(name(*deploy)),
                outcome: RemedyOutcome::Started,
                detail: with_flags(
                    in_flight.then(|| "the deploy was still in flight: it is stopped and rolled back".into()),
                ),
            },
        };
        if let Err(err) = cd.record(Event::now(project, None, first)).await {
            tracing::error!(error = %err, incident = id, "cannot record a remediation; doing nothing");
            return;
        }
        if let Plan::Act { deploy, .. } = &plan
            && i.cause.is_none()
        {
            // The suspected cause; a person can change the mark.
            let mark = EventKind::IncidentCauseMarked {
                id: id.to_string(),
                deploy: Some(name(*deploy)),
                by: "takt".into(),
            };
            if let Err(err) = cd.record(Event::now(project, None, mark)).await {
                tracing::error!(error = %err, incident = id, "cannot mark the incident's cause");
            }
        }
        (plan, name, after)
    };
    let Plan::Act {
        action,
        deploy,
        in_flight,
    } = plan
    else {
        return;
    };
    let reason = format!("remediation of incident {id}");
    let done = match action {
        RemedyAction::Rollback => rollback(cd, project, &env, (in_flight, deploy), after, &reason).await,
        RemedyAction::Restart => restart(cd, project, &env).await,
        RemedyAction::Command => command(cd, project, &env, id, &name(deploy)).await,
    };
    let (outcome, detail) = match done {
        Ok(detail) => (RemedyOutcome::Succeeded, detail),
        Err(why) => (RemedyOutcome::Failed, Some(why)),
    };
    record(EventKind::IncidentRemediation {
        id: id.to_string(),
        action,
        deploy: Some(name(deploy)),
        outcome,
        detail,
    })
    .await;
}

/// Rolls the deployment back: stops it if it is in flight (`(true, its number)`), else
/// deploys what ran healthy before it. Returns once that rollback finished; `after` is where
/// the log stood before the plan looked at the environment.
async fn rollback(
    cd: &Arc<Cd>,
    project: &str,
    env: &Environment,
    (in_flight, deploy): (bool, u64),
    after: i64,
    reason: &str,
) -> Result<Option<String>, String> {
    let mut log = cd.store.subscribe(after, &["deploy_finished"]);
    if in_flight {
        match cd.abort_in_flight(project, &env.name, reason.to_string()) {
            Some(n) if n == deploy => {
                // Stopped: it goes back to what ran before (or never took traffic).
                match finished(&mut log, project, &env.name, n).await? {
                    (DeployOutcome::RolledBack | DeployOutcome::Cancelled | DeployOutcome::Failed, _) => {
                        return Ok(Some(format!("{project}/{}#{n} was stopped and rolled back", env.name)));
                    }
                    (DeployOutcome::Succeeded, _) => {} // it finished first: roll it back below
                    (outcome, reason) => {
                        return Err(format!(
                            "stopping {project}/{}#{n} ended {}{}",
                            env.name,
                            outcome.name(),
                            reason.map(|r| format!(": {r}")).unwrap_or_default()
                        ));
                    }
                }
            }
            Some(other) => {
                return Err(format!(
                    "{project}/{}#{other} is in flight now, not #{deploy}: left alone",
                    env.name
                ));
            }
            None => {
                // It ended before it could be stopped: as it ended, it runs or not.
                let view = cd.view(project, &env.name);
                let ended = view.history.iter().find(|d| d.deploy == deploy).and_then(|d| d.outcome);
                if ended != Some(DeployOutcome::Succeeded) {
                    return Ok(Some(format!(
                        "{project}/{}#{deploy} had ended by itself ({})",
                        env.name,
                        ended.map_or("unknown", |o| o.name())
                    )));
                }
            }
        }
    }
    let view = cd.view(project, &env.name);
    let running = view.running.as_ref().map(|r| r.digest.clone());
    let artifact = view
        .previous
        .iter()
        .find(|p| Some(&p.digest) != running.as_ref())
        .cloned()
        .ok_or("nothing ran healthy here before: nothing to roll back to")?;
    let ask = Ask {
        project: project.to_string(),
        env: env.clone(),
        artifact,
        trigger: DeployTrigger::Automatic {
            reason: reason.to_string(),
        },
        rollback: true,
        restore: false,
        fixes: None,
    };
    let n = match cd.begin(ask).await {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(Some("what ran before already runs".into())),
        Err(e) => return Err(format!("the rollback was refused: {e}")),
    };
    let rollback_deploy = format!("{project}/{}#{n}", env.name);
    match finished(&mut log, project, &env.name, n).await? {
        (DeployOutcome::Succeeded | DeployOutcome::RolledBack, _) => {
            Ok(Some(format!("rolled back by {rollback_deploy}")))
        }
        (outcome, reason) => Err(format!(
            "the rollback {rollback_deploy} ended {}{}",
            outcome.name(),
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        )),
    }
}

/// Waits (at most [`TIMEOUT`]) for deploy `n` of `env` to finish: its outcome and reason.
async fn finished(
    log: &mut takt_store::Subscription,
    project: &str,
    env: &str,
    n: u64,
) -> Result<(DeployOutcome, Option<String>), String> {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match log.next().await {
                Ok(Event {
                    kind:
                        EventKind::DeployFinished {
                            environment,
                            deploy,
                            outcome,
                            reason,
                            ..
                        },
                    project: p,
                    ..
                }) if p == project && environment == env && deploy == n => return Ok((outcome, reason)),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| {
        format!(
            "{project}/{env}#{n} did not finish within {}",
            takt_model::timefmt::human(TIMEOUT)
        )
    })?
}

/// An environment's lock, by (project, environment).
type Locks = parking_lot::Mutex<std::collections::HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>>;

/// Each environment's remediation lock.
fn env_lock(project: &str, env: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::OnceLock<Locks> = std::sync::OnceLock::new();
    LOCKS
        .get_or_init(Default::default)
        .lock()
        .entry((project.to_string(), env.to_string()))
        .or_default()
        .clone()
}

/// Restarts the running version's instances, one at a time, each healthy before the next.
async fn restart(cd: &Arc<Cd>, project: &str, env: &Environment) -> Result<Option<String>, String> {
    let view = cd.view(project, &env.name);
    let running = view.running.ok_or("nothing runs here to restart")?;
    let slot = takt_driver::slot_for(&running.digest);
    let supervisor = crate::supervisor(cd, project, env);
    // Only a supervisor that runs: a request to one that does not would start an empty one.
    let status = supervisor
        .status()
        .await
        .ok_or("the environment's supervisor is not running")?;
    let instances = status
        .slots
        .iter()
        .find(|s| s.slot == slot)
        .map_or(0, |s| s.instances.len());
    if instances == 0 {
        return Err(format!("{} does not run under the supervisor", running.version));
    }
    let req = takt_driver::protocol::Request::Restart {
        slot: slot.clone(),
        health: env.health.clone(),
        ready_timeout_ms: crate::rollout::READY_TIMEOUT.as_millis() as u64,
    };
    let each = crate::rollout::READY_TIMEOUT + Duration::from_secs(10);
    let status = tokio::time::timeout(each * instances as u32, supervisor.request(&req))
        .await
        .map_err(|_| "the supervisor did not answer the restart in time".to_string())?
        .map_err(|e| format!("the restart failed: {e}"))?;
    let n = status
        .slots
        .iter()
        .find(|s| s.slot == slot)
        .map_or(0, |s| s.instances.len());
    Ok(Some(format!("{} restarted ({n} instances)", running.version)))
}

/// Runs `remediate: {command}` (`sh -c`, in the environment's directory, its own process
/// group), at most 10 minutes; its output goes to `remediate-<incident>.log` there (not into
/// the log or Slack: it may print the secrets it was given).
async fn command(
    cd: &Arc<Cd>,
    project: &str,
    env: &Environment,
    id: &str,
    deploy: &str,
) -> Result<Option<String>, String> {
    let Remedy::Command(script) = &env.remediate else {
        return Err("no command to run".into());
    };
    let dir = crate::env_dir(&cd.data_dir, project, &env.name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let log_path = dir.join(format!("remediate-{}.log", id.replace(['#', '/'], "-")));
    let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut vars = crate::rollout::base_env();
    vars.extend(env.variables.iter().cloned());
    vars.extend(cd.host.secrets(project, &env.secrets));
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(&dir)
        .env_clear()
        .envs(vars)
        .env("TAKT_PROJECT", project)
        .env("TAKT_ENVIRONMENT", &env.name)
        .env("TAKT_INCIDENT", id)
        .env("TAKT_DEPLOY", deploy)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run the command: {e}"))?;
    let pgid = child.id();
    let status = match tokio::time::timeout(Duration::from_secs(600), child.wait()).await {
        Ok(s) => s.map_err(|e| format!("the command failed: {e}"))?,
        Err(_) => {
            if let Some(raw) = pgid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGKILL);
            }
            return Err(format!(
                "the command did not finish within 10 minutes (its output: {})",
                log_path.display()
            ));
        }
    };
    if status.success() {
        Ok(Some(format!(
            "the command succeeded (its output: {})",
            log_path.display()
        )))
    } else {
        Err(format!(
            "the command exited with {status} (its output: {})",
            log_path.display()
        ))
    }
}
