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

/// Plans and carries out the remediation of incident `id` of `project`.
async fn remediate(cd: &Arc<Cd>, project: &str, id: &str) {
    let record = |kind: EventKind| async move {
        if let Err(err) = cd.record(Event::now(project, None, kind)).await {
            tracing::error!(error = %err, incident = id, "cannot record a remediation step");
        }
    };
    // One plan at a time (with the incidents' other changes), checked against the view as
    // it is then: the plan's first event is recorded before the lock is let go.
    let (plan, env, name) = {
        let _one = cd.incidents.lock().await;
        let Ok(i) = cd.incident(id).await else { return };
        let Ok(all) = cd.environments(project).await else {
            return;
        };
        let Some(env) = all.iter().find(|e| e.name == i.environment).cloned() else {
            return;
        };
        let view = cd.view(project, &env.name);
        let Some(plan) = takt_monitor::remedy::plan(&i, &policy(&env, &all), &view) else {
            return;
        };
        let env_name = env.name.clone();
        let name = move |n: u64| format!("{project}/{env_name}#{n}");
        let first = match &plan {
            Plan::Skip { action, deploy, why } => EventKind::IncidentRemediation {
                id: id.to_string(),
                action: *action,
                deploy: deploy.map(&name),
                outcome: RemedyOutcome::Skipped,
                detail: Some(why.clone()),
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
                detail: in_flight.then(|| "the deploy was still in flight: it is stopped and rolled back".into()),
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
        (plan, env, name)
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
        RemedyAction::Rollback => rollback(cd, project, &env, in_flight, &reason).await,
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

/// Rolls the deployment back: stops it if it is in flight, else deploys what ran healthy
/// before it. Returns once that rollback finished.
async fn rollback(
    cd: &Arc<Cd>,
    project: &str,
    env: &Environment,
    in_flight: bool,
    reason: &str,
) -> Result<Option<String>, String> {
    // Listening before acting: its end is not missed.
    let after = cd.store.head().await.map_err(|e| e.to_string())?;
    let mut log = cd.store.subscribe(after, &["deploy_finished"]);
    let waiting_for = if in_flight {
        cd.abort_in_flight(project, &env.name, reason.to_string())
            .ok_or("the deploy had finished before it could be stopped")?
    } else {
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
        match cd.begin(ask).await {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(Some("what ran before already runs".into())),
            Err(e) => return Err(format!("the rollback was refused: {e}")),
        }
    };
    let finished = tokio::time::timeout(TIMEOUT, async {
        loop {
            match log.next().await {
                Ok(Event {
                    kind:
                        EventKind::DeployFinished {
                            environment,
                            deploy: n,
                            outcome,
                            reason,
                            ..
                        },
                    project: p,
                    ..
                }) if p == project && environment == env.name && n == waiting_for => return Ok((outcome, reason)),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| {
        format!(
            "the rollback did not finish within {}",
            takt_model::timefmt::human(TIMEOUT)
        )
    })??;
    let rollback_deploy = format!("{project}/{}#{waiting_for}", env.name);
    match finished {
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

/// Restarts the running version's instances, one at a time, each healthy before the next.
async fn restart(cd: &Arc<Cd>, project: &str, env: &Environment) -> Result<Option<String>, String> {
    let view = cd.view(project, &env.name);
    let running = view.running.ok_or("nothing runs here to restart")?;
    let slot = takt_driver::slot_for(&running.digest);
    let req = takt_driver::protocol::Request::Restart {
        slot,
        health: env.health.clone(),
        ready_timeout_ms: crate::rollout::READY_TIMEOUT.as_millis() as u64,
    };
    let status = crate::supervisor(cd, project, env)
        .request(&req)
        .await
        .map_err(|e| format!("the restart failed: {e}"))?;
    let n: usize = status.slots.iter().map(|s| s.instances.len()).sum();
    Ok(Some(format!("{} restarted ({n} instances running)", running.version)))
}

/// Runs `remediate: {command}` (`sh -c`, in the environment's directory), at most 10 minutes.
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
    let mut vars = crate::rollout::base_env();
    vars.extend(env.variables.iter().cloned());
    vars.extend(cd.host.secrets(project, &env.secrets));
    let child = tokio::process::Command::new("sh")
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
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run the command: {e}"))?;
    let out = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .map_err(|_| "the command did not finish within 10 minutes".to_string())?
        .map_err(|e| format!("the command failed: {e}"))?;
    let tail = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        let s = s.trim();
        let start = s.char_indices().rev().nth(300).map_or(0, |(i, _)| i);
        s[start..].to_string()
    };
    if out.status.success() {
        Ok(Some(format!("the command succeeded{}", {
            let t = tail(&out.stdout);
            if t.is_empty() { String::new() } else { format!(": {t}") }
        })))
    } else {
        Err(format!("the command exited with {}: {}", out.status, tail(&out.stderr)))
    }
}
