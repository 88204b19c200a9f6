//! One deployment, start to end: prepare the release (a verified read-only copy of the artifact),
//! run the environment's strategy through its driver, smoke-check every step, roll back on a
//! failed check, a failed analysis or a progress deadline, and record every step as an event.
//!
//! Strategies see only the [`Driver`] interface; the canary's order of things comes from
//! `takt-deploy`'s pure state machine, which this module feeds with time, measurements, halts
//! and resumes.

use crate::{Ask, Cd, Control};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use takt_deploy::analysis::{AnalysisSpec, Measurement};
use takt_deploy::canary::{Action, Rollout, Step};
use takt_driver::client::SupervisorClient;
use takt_driver::protocol::Traffic;
use takt_driver::{CommandDriver, Driver, NginxDriver, ProcessDriver, ProcessSettings, Release, checks, slot_for};
use takt_model::{ArtifactRef, DeployOutcome, Event, EventKind, StepAction, StepVerdict};
use takt_pipeline::{CanaryStep, Environment, Metric, Strategy};

/// How long instances get to answer their health path.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// An environment's directory under the data directory.
pub fn env_dir(data: &Path, project: &str, env: &str) -> PathBuf {
    data.join("environments").join(project).join(env)
}

/// An environment's driver, whichever it is ([`Driver`] is not object-safe: its futures are
/// `impl Future`), for what runs outside a rollout — recovery after a restart, blue/green's
/// keep-old, `takt env stop` — so that each goes through the driver's own `route` and `stop`
/// (the nginx upstream file rewritten, the command driver's script run), never straight to a
/// supervisor.
pub(crate) enum EnvDriver {
    Process(ProcessDriver),
    Nginx(NginxDriver),
    Command(CommandDriver),
}

impl EnvDriver {
    pub(crate) fn of(cd: &Cd, project: &str, env: &Environment) -> EnvDriver {
        let instances = || ProcessDriver {
            supervisor: supervisor(cd, project, env),
            settings: settings(env),
        };
        match env.driver {
            takt_pipeline::Driver::Process => EnvDriver::Process(instances()),
            takt_pipeline::Driver::Nginx => EnvDriver::Nginx(NginxDriver {
                instances: instances(),
                upstream_name: format!("takt_{}", env.name.replace(['-', '.'], "_")),
                upstream_file: PathBuf::from(env.upstream.clone().unwrap_or_default()),
                reload: env.reload.clone().unwrap_or_default(),
                env: base_env(),
            }),
            takt_pipeline::Driver::Command => EnvDriver::Command(CommandDriver {
                script: env.deploy.clone().unwrap_or_default(),
                dir: env_dir(&cd.data_dir, project, &env.name),
                timeout: Duration::from_secs(600),
            }),
        }
    }

    pub(crate) async fn route(&self, weights: &[(&Release, u8)]) -> Result<(), takt_driver::DriverError> {
        match self {
            EnvDriver::Process(d) => d.route(weights).await,
            EnvDriver::Nginx(d) => d.route(weights).await,
            EnvDriver::Command(d) => d.route(weights).await,
        }
    }

    pub(crate) async fn stop(&self, r: &Release) -> Result<(), takt_driver::DriverError> {
        match self {
            EnvDriver::Process(d) => d.stop(r).await,
            EnvDriver::Nginx(d) => d.stop(r).await,
            EnvDriver::Command(d) => d.stop(r).await,
        }
    }
}

/// The supervisor of a process/nginx environment.
pub fn supervisor(cd: &Cd, project: &str, env: &Environment) -> SupervisorClient {
    SupervisorClient {
        dir: env_dir(&cd.data_dir, project, &env.name).join("supervisor"),
        program: cd.deployments.supervisor_program.clone(),
        port: match env.driver {
            takt_pipeline::Driver::Process => env.port,
            _ => None,
        },
    }
}

/// After a restart: deploys the log shows in flight were cut off with the old server. Their
/// traffic goes back to what ran before, through the environment's driver (the supervisor of a
/// process/nginx environment kept running all along; the nginx upstream file is rewritten; the
/// command driver's script is asked to route and stop), the new version is stopped, and each is
/// recorded as `interrupted`.
pub async fn recover(cd: &Arc<Cd>) {
    for v in cd.deployments.index.all() {
        let Some(f) = v.deploying.clone() else {
            continue;
        };
        let env = cd.environment(&v.project, &v.environment).await.ok();
        let mut reason = "the server stopped during this deploy".to_string();
        if let (Some(env), Some(stable)) = (env, &v.running)
            && stable.digest != f.artifact.digest
        {
            let ctl = cd.deployments.control(&v.project, &v.environment);
            reason.push_str(
                &match back_to_stable(cd, &v.project, &env, stable, &f.artifact, ctl).await {
                    Ok(()) => "; traffic went back to the version that ran before it".to_string(),
                    Err(e) => format!("; traffic is as it was left: {e}"),
                },
            );
        }
        let e = Event::now(
            &v.project,
            None,
            EventKind::DeployFinished {
                environment: v.environment.clone(),
                deploy: f.deploy,
                outcome: DeployOutcome::Interrupted,
                running: v.running.clone(),
                reason: Some(reason),
            },
        );
        if let Err(e) = cd.record(e).await {
            tracing::error!(error = %e, "cannot record an interrupted deploy");
        }
    }
    // A process/nginx environment whose supervisor is gone (the machine restarted): start
    // what the log says runs there again, recorded as a `restore` deploy.
    for v in cd.deployments.index.all() {
        let (Some(running), None) = (v.running.clone(), v.deploying.as_ref()) else {
            continue;
        };
        let Ok(env) = cd.environment(&v.project, &v.environment).await else {
            continue;
        };
        if env.driver == takt_pipeline::Driver::Command {
            continue;
        }
        let slot = slot_for(&running.digest);
        let status = supervisor(cd, &v.project, &env).status().await;
        if status.is_some_and(|s| s.slots.iter().any(|x| x.slot == slot)) {
            continue;
        }
        if let Err(e) = restore(
            cd,
            &v.project,
            env,
            running,
            "its supervisor was gone when the server started",
        )
        .await
        {
            tracing::error!(project = %v.project, environment = %v.environment, error = %e, "cannot restore an environment");
        }
    }
}

/// Retires an environment: stops what runs there — the supervisor with its instances and proxy
/// (process, nginx), or, for the `command` driver, the deploy script's `stop` of the running
/// version. Returns what was stopped, in words.
pub(crate) async fn stop_environment(
    cd: &Arc<Cd>,
    project: &str,
    env: &Environment,
    running: Option<ArtifactRef>,
    ctl: Arc<Control>,
) -> Result<String, String> {
    if env.driver != takt_pipeline::Driver::Command {
        let sup = supervisor(cd, project, env);
        if sup.status().await.is_none() {
            return Ok("no supervisor was running".into());
        }
        sup.shutdown().await;
        return Ok("its supervisor, instances and proxy stopped".into());
    }
    let Some(a) = running else {
        return Ok("nothing ran there".into());
    };
    let r = Cx::new(cd, project, env, 0, ctl, false).prepare(&a).await?;
    EnvDriver::of(cd, project, env)
        .stop(&r)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("the deploy script stopped {}@{}", a.name, a.version))
}

/// Starts `running` again where its supervisor is gone: a `restore` deploy (no gates but one at
/// a time) whose `automatic` trigger gives the reason.
pub(crate) async fn restore(
    cd: &Arc<Cd>,
    project: &str,
    env: Environment,
    running: ArtifactRef,
    reason: &str,
) -> Result<Option<u64>, crate::CdError> {
    cd.begin(Ask {
        project: project.to_string(),
        env,
        artifact: running,
        trigger: takt_model::DeployTrigger::Automatic { reason: reason.into() },
        rollback: true,
        restore: true,
    })
    .await
}

/// Sends all of an environment's traffic back to `stable` and stops `cut`, through its driver.
async fn back_to_stable(
    cd: &Arc<Cd>,
    project: &str,
    env: &Environment,
    stable: &ArtifactRef,
    cut: &ArtifactRef,
    ctl: Arc<Control>,
) -> Result<(), String> {
    let cx = Cx::new(cd, project, env, 0, ctl, true);
    let (old, new) = (cx.prepare(stable).await?, cx.prepare(cut).await?);
    let d = EnvDriver::of(cd, project, env);
    d.route(&[(&old, 100)]).await.map_err(|e| e.to_string())?;
    d.stop(&new).await.map_err(|e| e.to_string())
}

struct Outcome {
    outcome: DeployOutcome,
    running: Option<ArtifactRef>,
    reason: Option<String>,
}

struct Cx {
    cd: Arc<Cd>,
    project: String,
    env: Environment,
    deploy: u64,
    ctl: Arc<Control>,
    step: u32,
    weight: u8,
    started: Instant,
    /// The environment's controls changed (subscribed when the deploy began: no signal is
    /// missed between a check and the wait that follows it).
    signals: tokio::sync::watch::Receiver<u64>,
    /// Where the environment answers (its public port, or `url`).
    public_url: Option<String>,
    /// A rollback: the andon cord does not stop it.
    rollback: bool,
}

impl Cx {
    /// The context of one deploy (`deploy` 0: work outside a deploy, which records no steps).
    fn new(cd: &Arc<Cd>, project: &str, env: &Environment, deploy: u64, ctl: Arc<Control>, rollback: bool) -> Cx {
        Cx {
            cd: cd.clone(),
            project: project.to_string(),
            env: env.clone(),
            deploy,
            signals: ctl.subscribe(),
            ctl,
            step: 0,
            weight: 0,
            started: Instant::now(),
            public_url: env
                .url
                .clone()
                .or_else(|| env.port.map(|p| format!("http://127.0.0.1:{p}"))),
            rollback,
        }
    }
}

pub(crate) async fn run(cd: Arc<Cd>, ask: Ask, deploy: u64, stable: Option<ArtifactRef>, ctl: Arc<Control>) {
    let mut cx = Cx::new(&cd, &ask.project, &ask.env, deploy, ctl.clone(), ask.rollback);
    let out = cx.deploy(&ask, stable).await;
    let finished = Event::now(
        &ask.project,
        None,
        EventKind::DeployFinished {
            environment: ask.env.name.clone(),
            deploy,
            outcome: out.outcome,
            running: out.running,
            reason: out.reason,
        },
    );
    if let Err(e) = cd.record(finished).await {
        tracing::error!(error = %e, "cannot record the end of a deploy");
    }
    ctl.release();
}

impl Cx {
    async fn record_step(&mut self, action: StepAction, verdict: Option<StepVerdict>, detail: Option<String>) {
        self.step += 1;
        let e = Event::now(
            &self.project,
            None,
            EventKind::DeployStep {
                environment: self.env.name.clone(),
                deploy: self.deploy,
                step: self.step,
                action,
                weight: self.weight,
                verdict,
                detail,
            },
        );
        if let Err(e) = self.cd.record(e).await {
            tracing::error!(error = %e, "cannot record a deploy step");
        }
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Sleeps until `until` (since the deploy started) or until a control changes.
    ///
    /// Callers re-check their conditions after every return. A signal sent between a caller's
    /// check and this wait would find no waiter, so no wait lasts longer than 250 ms.
    async fn wait(&mut self, until: Duration) {
        let left = until.saturating_sub(self.now());
        tokio::select! {
            _ = tokio::time::sleep(left) => {}
            _ = self.signals.changed() => {}
        }
        self.signals.borrow_and_update();
    }

    async fn deploy(&mut self, ask: &Ask, stable: Option<ArtifactRef>) -> Outcome {
        let new = match self.prepare(&ask.artifact).await {
            Ok(r) => r,
            Err(e) => {
                self.record_step(StepAction::Prepare, Some(StepVerdict::Failed), Some(e.clone()))
                    .await;
                return Outcome {
                    outcome: DeployOutcome::Failed,
                    running: stable,
                    reason: Some(e),
                };
            }
        };
        let old = match &stable {
            Some(s) => match self.prepare(s).await {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "the running artifact cannot be prepared again; no rollback target");
                    None
                }
            },
            None => None,
        };
        self.record_step(
            StepAction::Prepare,
            Some(StepVerdict::Successful),
            Some(format!("verified copy at {}", new.artifact_path.display())),
        )
        .await;
        match EnvDriver::of(&self.cd, &self.project, &self.env) {
            EnvDriver::Process(d) => self.execute(&d, ask, new, old).await,
            EnvDriver::Nginx(d) => self.execute(&d, ask, new, old).await,
            EnvDriver::Command(d) => self.execute(&d, ask, new, old).await,
        }
    }

    /// A verified read-only copy of the artifact (an archive unpacked beside it).
    async fn prepare(&self, a: &ArtifactRef) -> Result<Release, String> {
        let found = self
            .cd
            .host
            .artifact(&a.name, &a.version)
            .await
            .map_err(|e| e.to_string())?;
        let host = self.cd.host.clone();
        let slot = slot_for(&a.digest);
        let dir = env_dir(&self.cd.data_dir, &self.project, &self.env.name)
            .join("releases")
            .join(&slot);
        let file = dir.join(&a.name);
        let digest = a.digest.clone();
        let tar = found.tar;
        let (dir2, file2) = (dir.clone(), file.clone());
        let unpacked = tokio::task::spawn_blocking(move || -> Result<PathBuf, String> {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&dir2).map_err(|e| format!("{}: {e}", dir2.display()))?;
            if file2.exists() {
                let _ = std::fs::set_permissions(&file2, std::fs::Permissions::from_mode(0o644));
                let _ = std::fs::remove_file(&file2);
            }
            host.copy_verified(&digest, &file2)
                .map_err(|e| format!("the artifact's bytes could not be verified: {e}"))?;
            std::fs::set_permissions(&file2, std::fs::Permissions::from_mode(0o555))
                .map_err(|e| format!("{}: {e}", file2.display()))?;
            if !tar {
                return Ok(dir2);
            }
            let files = dir2.join("files");
            if files.exists() {
                make_writable(&files);
                let _ = std::fs::remove_dir_all(&files);
            }
            let f = std::fs::File::open(&file2).map_err(|e| format!("{}: {e}", file2.display()))?;
            tar::Archive::new(f)
                .unpack(&files)
                .map_err(|e| format!("cannot unpack {}: {e}", file2.display()))?;
            make_read_only(&files);
            Ok(files)
        })
        .await
        .map_err(|e| e.to_string())??;
        let mut env = base_env();
        env.extend(self.env.variables.iter().cloned());
        if !self.env.secrets.is_empty() {
            env.extend(self.cd.host.secrets(&self.project, &self.env.secrets));
        }
        for (k, v) in [
            ("TAKT_ARTIFACT_PATH", file.display().to_string()),
            ("TAKT_ARTIFACT_DIGEST", a.digest.clone()),
            ("TAKT_ARTIFACT_NAME", a.name.clone()),
            ("TAKT_ARTIFACT_VERSION", a.version.clone()),
            ("TAKT_ENVIRONMENT", self.env.name.clone()),
            ("TAKT_PROJECT", self.project.clone()),
        ] {
            env.push((k.into(), v));
        }
        Ok(Release {
            slot,
            name: a.name.clone(),
            version: a.version.clone(),
            digest: a.digest.clone(),
            artifact_path: file,
            dir: unpacked,
            env,
        })
    }

    /// The smoke checks against `url` (the release alone where the driver can say, else the
    /// environment's public address). `Err`: the first failure.
    async fn smoke(&mut self, url: Option<String>, what: &str, r: &Release) -> Result<(), String> {
        for check in self.env.smoke.clone() {
            let res = checks::smoke(&check, url.as_deref(), &r.env, &r.dir).await;
            match res {
                Ok(detail) => {
                    self.record_step(
                        StepAction::Smoke(what.to_string()),
                        Some(StepVerdict::Successful),
                        Some(detail),
                    )
                    .await
                }
                Err(e) => {
                    self.record_step(
                        StepAction::Smoke(what.to_string()),
                        Some(StepVerdict::Failed),
                        Some(e.clone()),
                    )
                    .await;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Smoke checks against the new version alone, before it takes traffic — where the driver
    /// can reach it alone (the command driver cannot: its checks run after the switch).
    async fn smoke_alone<D: Driver>(&mut self, d: &D, new: &Release) -> Result<(), Failure> {
        match d.direct_url(new).await {
            Some(url) => self.smoke(Some(url), "new version", new).await.map_err(Failure::Start),
            None => Ok(()),
        }
    }

    async fn direct_or_public<D: Driver>(&self, d: &D, r: &Release) -> Option<String> {
        match d.direct_url(r).await {
            Some(u) => Some(u),
            None => self.public_url.clone(),
        }
    }

    /// Honours the andon cord and manual rollbacks at a safe point: `Err(reason)` when asked to
    /// roll back; waits while halted. The deploy's clock stops while it is halted: a halt never
    /// counts toward `progress_deadline`, a pause or an analysis interval (`Ok(true)`: it was).
    async fn checkpoint(&mut self) -> Result<bool, String> {
        if let Some(reason) = self.ctl.abort_reason() {
            return Err(reason);
        }
        let Some(h) = self.ctl.halted().filter(|_| !self.rollback) else {
            return Ok(false);
        };
        self.record_step(StepAction::Halted, None, Some(h)).await;
        let halted_at = Instant::now();
        let out = loop {
            if let Some(reason) = self.ctl.abort_reason() {
                break Err(reason);
            }
            if self.ctl.halted().is_none() {
                break Ok(true);
            }
            self.wait(self.now() + Duration::from_secs(3600)).await;
        };
        self.started += halted_at.elapsed();
        if out.is_ok() {
            self.record_step(StepAction::Resumed, None, None).await;
        }
        out
    }

    async fn execute<D: Driver>(&mut self, d: &D, ask: &Ask, new: Release, old: Option<Release>) -> Outcome {
        let new_ref = ask.artifact.clone();
        let old_ref = old.as_ref().map(|o| ArtifactRef {
            name: o.name.clone(),
            version: o.version.clone(),
            digest: o.digest.clone(),
            commit: None,
        });
        if self.env.manual_approval && !ask.rollback {
            'approval: loop {
                let before = self.ctl.approvals.load(Ordering::SeqCst);
                self.record_step(
                    StepAction::Approval,
                    Some(StepVerdict::Waiting),
                    Some(format!("`takt approve {}`", self.env.name)),
                )
                .await;
                loop {
                    // A halt stops the wait at once; after `takt resume` it waits for an
                    // approval again (none is taken while halted).
                    let halted = match self.checkpoint().await {
                        Ok(halted) => halted,
                        Err(reason) => {
                            return Outcome {
                                outcome: DeployOutcome::Cancelled,
                                running: old_ref,
                                reason: Some(reason),
                            };
                        }
                    };
                    if halted {
                        continue 'approval;
                    }
                    if self.ctl.approvals.load(Ordering::SeqCst) > before {
                        break 'approval;
                    }
                    self.wait(self.now() + Duration::from_secs(3600)).await;
                }
            }
            self.record_step(StepAction::Approval, Some(StepVerdict::Successful), None)
                .await;
        }
        let old_running = match &old {
            Some(o) => d.running(o).await,
            None => false,
        };
        let strategy = if ask.rollback || old.is_none() || !old_running {
            // A rollback, a first deploy, or nothing of the old version left running: straight
            // to 100% (as Argo Rollouts does for a first deploy).
            Strategy::Recreate
        } else {
            self.env.strategy.clone()
        };
        let result = match strategy {
            Strategy::Recreate => self.recreate(d, &new, old.as_ref()).await,
            Strategy::Rolling { batch } => self.rolling(d, &new, old.as_ref(), batch).await,
            Strategy::Canary {
                steps,
                progress_deadline,
            } => self.canary(d, &new, old.as_ref(), &steps, progress_deadline).await,
            Strategy::BlueGreen { preview_port, keep_old } => {
                self.blue_green(d, &new, old.as_ref(), preview_port, keep_old).await
            }
        };
        match result {
            Ok(()) => Outcome {
                outcome: DeployOutcome::Succeeded,
                running: Some(new_ref),
                reason: None,
            },
            Err(Failure::Start(reason)) => {
                // Nothing was routed to it; whatever ran keeps running.
                let _ = d.stop(&new).await;
                Outcome {
                    outcome: DeployOutcome::Failed,
                    running: old_ref,
                    reason: Some(reason),
                }
            }
            Err(Failure::Rollback(reason)) if self.env.pause_on_failure && !ask.rollback => {
                self.record_step(
                    StepAction::Paused,
                    None,
                    Some(format!(
                        "{reason}; paused instead of rolling back (on_failure: pause): `takt rollback {}` goes back, `takt resume {}` keeps the new version",
                        self.env.name, self.env.name
                    )),
                )
                .await;
                let before = self.ctl.resumes.load(Ordering::SeqCst);
                loop {
                    if let Some(why) = self.ctl.abort_reason() {
                        return match old {
                            Some(o) => {
                                self.roll_back(d, &new, &o, format!("{reason}; then {why}"), old_ref)
                                    .await
                            }
                            None => Outcome {
                                outcome: DeployOutcome::Failed,
                                running: None,
                                reason: Some(reason),
                            },
                        };
                    }
                    if self.ctl.resumes.load(Ordering::SeqCst) > before {
                        break;
                    }
                    self.wait(self.now() + Duration::from_secs(3600)).await;
                }
                self.record_step(StepAction::Resumed, None, Some("the new version is kept".into()))
                    .await;
                match self.shift(d, &new, None, 100).await {
                    Ok(()) => {
                        if let Some(o) = &old
                            && o.slot != new.slot
                        {
                            let _ = d.stop(o).await;
                        }
                        Outcome {
                            outcome: DeployOutcome::Succeeded,
                            running: Some(new_ref),
                            reason: Some(format!("kept by a person after: {reason}")),
                        }
                    }
                    Err(_) => Outcome {
                        outcome: DeployOutcome::Failed,
                        running: old_ref,
                        reason: Some(reason),
                    },
                }
            }
            Err(Failure::Rollback(reason)) => match old {
                Some(o) => self.roll_back(d, &new, &o, reason, old_ref).await,
                None => {
                    let _ = d.route(&[]).await;
                    let _ = d.stop(&new).await;
                    Outcome {
                        outcome: DeployOutcome::Failed,
                        running: None,
                        reason: Some(format!("{reason}; nothing earlier to roll back to")),
                    }
                }
            },
        }
    }

    /// All traffic back to `old`, `new` stopped, `old` smoke-checked. If those checks fail, the
    /// environment is halted and an incident opened: takt takes no further automatic action.
    async fn roll_back<D: Driver>(
        &mut self,
        d: &D,
        new: &Release,
        old: &Release,
        reason: String,
        old_ref: Option<ArtifactRef>,
    ) -> Outcome {
        let mut problem = None;
        if !d.running(old).await
            && let Err(e) = d.start(old).await
        {
            problem = Some(format!("the previous version could not be started: {e}"));
        }
        if problem.is_none() {
            if let Err(e) = d.route(&[(old, 100)]).await {
                problem = Some(format!("traffic could not be moved back: {e}"));
            } else {
                self.weight = 0;
                self.record_step(
                    StepAction::Rollback,
                    Some(StepVerdict::Successful),
                    Some(reason.clone()),
                )
                .await;
            }
        }
        let _ = d.stop(new).await;
        if problem.is_none() {
            let url = self.public_url.clone();
            if let Err(e) = self.smoke(url, "after rollback", old).await {
                problem = Some(format!("the smoke checks failed after the rollback: {e}"));
            }
        }
        if let Some(p) = &problem {
            let env = self.env.name.clone();
            let _ = self.cd.halt(&self.project, &env, p, "takt").await;
            let _ = self.cd.open_incident(&self.project, &env, p).await;
        }
        Outcome {
            outcome: if problem.is_some() {
                DeployOutcome::RollbackFailed
            } else {
                DeployOutcome::RolledBack
            },
            running: old_ref,
            reason: Some(match problem {
                Some(p) => format!("{reason}; then {p} (environment halted, incident opened)"),
                None => reason,
            }),
        }
    }

    async fn start_new<D: Driver>(&mut self, d: &D, new: &Release) -> Result<(), Failure> {
        if let Err(e) = d.start(new).await {
            self.record_step(StepAction::Start, Some(StepVerdict::Failed), Some(e.to_string()))
                .await;
            return Err(Failure::Start(e.to_string()));
        }
        self.record_step(StepAction::Start, Some(StepVerdict::Successful), None)
            .await;
        Ok(())
    }

    async fn shift<D: Driver>(&mut self, d: &D, new: &Release, old: Option<&Release>, w: u8) -> Result<(), Failure> {
        let mut weights = vec![(new, w)];
        if let Some(o) = old
            && w < 100
        {
            weights.insert(0, (o, 100 - w));
        }
        d.route(&weights)
            .await
            .map_err(|e| Failure::Rollback(format!("traffic could not be shifted: {e}")))?;
        self.weight = w;
        self.record_step(StepAction::SetWeight, None, None).await;
        Ok(())
    }

    async fn recreate<D: Driver>(&mut self, d: &D, new: &Release, old: Option<&Release>) -> Result<(), Failure> {
        self.checkpoint().await.map_err(Failure::Rollback)?;
        self.start_new(d, new).await?;
        self.smoke_alone(d, new).await?;
        self.shift(d, new, None, 100).await?;
        if let Some(o) = old
            && o.slot != new.slot
        {
            let _ = d.stop(o).await;
        }
        let url = self.public_url.clone();
        self.smoke(url, "after switch", new)
            .await
            .map_err(|e| Failure::Rollback(format!("smoke check failed: {e}")))
    }

    async fn rolling<D: Driver>(
        &mut self,
        d: &D,
        new: &Release,
        old: Option<&Release>,
        batch: u32,
    ) -> Result<(), Failure> {
        self.start_new(d, new).await?;
        let n = self.env.instances.max(1);
        let mut moved = 0;
        while moved < n {
            self.checkpoint().await.map_err(Failure::Rollback)?;
            moved = (moved + batch.max(1)).min(n);
            let w = (u64::from(moved) * 100 / u64::from(n)) as u8;
            self.shift(d, new, old, w).await?;
            let url = self.direct_or_public(d, new).await;
            self.smoke(url, &format!("batch {moved}/{n}"), new)
                .await
                .map_err(|e| Failure::Rollback(format!("smoke check failed: {e}")))?;
        }
        if let Some(o) = old {
            let _ = d.stop(o).await;
        }
        Ok(())
    }

    async fn blue_green<D: Driver>(
        &mut self,
        d: &D,
        new: &Release,
        old: Option<&Release>,
        preview_port: Option<u16>,
        keep_old: Duration,
    ) -> Result<(), Failure> {
        self.start_new(d, new).await?;
        let url = match preview_port {
            Some(p) => {
                d.preview(p, Some(new))
                    .await
                    .map_err(|e| Failure::Start(format!("the preview port could not be set: {e}")))?;
                self.record_step(StepAction::Preview, None, Some(format!("http://127.0.0.1:{p}")))
                    .await;
                Some(format!("http://127.0.0.1:{p}"))
            }
            None => d.direct_url(new).await,
        };
        if url.is_some()
            || self
                .env
                .smoke
                .iter()
                .all(|c| matches!(c, takt_pipeline::Check::Command(_)))
        {
            self.smoke(url, "preview", new).await.map_err(Failure::Start)?;
        }
        self.checkpoint().await.map_err(Failure::Rollback)?;
        self.shift(d, new, None, 100).await?;
        if let Some(p) = preview_port {
            let _ = d.preview(p, None).await;
        }
        let url = self.public_url.clone();
        self.smoke(url, "after switch", new)
            .await
            .map_err(|e| Failure::Rollback(format!("smoke check failed: {e}")))?;
        if let Some(o) = old.cloned() {
            // The old colour stays up for an instant rollback, then goes (unless it is live again).
            let cd = self.cd.clone();
            let (project, env) = (self.project.clone(), self.env.clone());
            self.record_step(
                StepAction::KeepOld,
                None,
                Some(format!("{} stays up for {}s", o.version, keep_old.as_secs())),
            )
            .await;
            tokio::spawn(async move {
                tokio::time::sleep(keep_old).await;
                // Not while a deploy is in flight (it may be rolling back to the old colour).
                let ctl = cd.deployments.control(&project, &env.name);
                // Subscribed before the check, so the end of that deploy cannot slip by.
                let mut changed = ctl.subscribe();
                while ctl.busy.lock().is_some() {
                    if changed.changed().await.is_err() {
                        break;
                    }
                }
                let live = cd
                    .deployments
                    .index
                    .get(&project, &env.name)
                    .and_then(|v| v.running)
                    .is_some_and(|r| r.digest == o.digest);
                if !live {
                    let _ = EnvDriver::of(&cd, &project, &env).stop(&o).await;
                }
            });
        }
        Ok(())
    }

    async fn canary<D: Driver>(
        &mut self,
        d: &D,
        new: &Release,
        old: Option<&Release>,
        steps: &[CanaryStep],
        deadline: Option<Duration>,
    ) -> Result<(), Failure> {
        self.start_new(d, new).await?;
        self.smoke_alone(d, new).await?;
        let pure: Vec<Step> = steps
            .iter()
            .map(|s| match s {
                CanaryStep::SetWeight(w) => Step::SetWeight(*w),
                CanaryStep::Pause(p) => Step::Pause(*p),
                CanaryStep::Analysis(a) => Step::Analysis(AnalysisSpec {
                    interval: a.interval,
                    count: a.count,
                    initial_delay: a.initial_delay,
                    failure_limit: a.failure_limit,
                    inconclusive_limit: a.inconclusive_limit,
                    consecutive_error_limit: a.consecutive_error_limit,
                }),
            })
            .collect();
        let mut rollout = Rollout::new(pure, deadline);
        let mut seen: Traffic = d.traffic(new).await.ok().flatten().unwrap_or_default();
        let mut action = rollout.advance(self.now());
        loop {
            if let Err(reason) = self.checkpoint().await {
                return Err(Failure::Rollback(reason));
            }
            action = match action {
                Action::SetWeight(w) => {
                    self.shift(d, new, old, w).await?;
                    let url = self.direct_or_public(d, new).await;
                    match self.smoke(url, &format!("at {w}%"), new).await {
                        Ok(()) => rollout.advance(self.now()),
                        Err(e) => rollout.smoke_failed(&e),
                    }
                }
                Action::WaitUntil(t) => {
                    self.wait(t).await;
                    rollout.advance(self.now())
                }
                Action::Measure => {
                    let step = rollout.step().and_then(|i| steps.get(i)).cloned();
                    let (m, detail) = match step {
                        Some(CanaryStep::Analysis(a)) => self.measure(d, new, &a, &mut seen).await,
                        _ => (Measurement::Error, "no analysis at this step".into()),
                    };
                    let verdict = match m {
                        Measurement::Successful => StepVerdict::Successful,
                        Measurement::Failed => StepVerdict::Failed,
                        Measurement::Inconclusive => StepVerdict::Inconclusive,
                        Measurement::Error => StepVerdict::Error,
                    };
                    self.record_step(StepAction::Analysis, Some(verdict), Some(detail))
                        .await;
                    rollout.measured(self.now(), m)
                }
                Action::Paused { reason } => {
                    self.record_step(StepAction::Paused, None, Some(reason)).await;
                    let before = self.ctl.resumes.load(Ordering::SeqCst);
                    loop {
                        if self.ctl.abort_reason().is_some() || self.ctl.resumes.load(Ordering::SeqCst) > before {
                            break;
                        }
                        self.wait(self.now() + Duration::from_secs(3600)).await;
                    }
                    if let Some(reason) = self.ctl.abort_reason() {
                        return Err(Failure::Rollback(reason));
                    }
                    self.record_step(StepAction::Resumed, None, None).await;
                    rollout.resume(self.now())
                }
                Action::Halted { .. } => rollout.resume(self.now()),
                Action::Promote => {
                    self.shift(d, new, None, 100).await?;
                    if let Some(o) = old {
                        let _ = d.stop(o).await;
                    }
                    self.record_step(StepAction::Promote, Some(StepVerdict::Successful), None)
                        .await;
                    return Ok(());
                }
                Action::Rollback { reason } => return Err(Failure::Rollback(reason)),
            };
        }
    }

    async fn measure<D: Driver>(
        &mut self,
        d: &D,
        new: &Release,
        a: &takt_pipeline::AnalysisStep,
        seen: &mut Traffic,
    ) -> (Measurement, String) {
        let (s, f) = (a.success_condition.as_deref(), a.failure_condition.as_deref());
        match &a.metric {
            Metric::Proxy => match d.traffic(new).await {
                Ok(Some(now)) => {
                    let window = now.since(seen);
                    *seen = now;
                    checks::judge(s, f, &checks::proxy_values(&window))
                }
                Ok(None) => (
                    Measurement::Error,
                    "this driver cannot see traffic; use another metric".into(),
                ),
                Err(e) => (Measurement::Error, e.to_string()),
            },
            Metric::Prometheus { url, query } => match checks::prometheus(url, query).await {
                Ok(v) => checks::judge(s, f, &[("result", v)]),
                Err(e) => (Measurement::Error, e),
            },
            Metric::Http(check) => {
                let url = self.direct_or_public(d, new).await;
                match checks::smoke(check, url.as_deref(), &new.env, &new.dir).await {
                    Ok(x) => (Measurement::Successful, x),
                    Err(e) => (Measurement::Failed, e),
                }
            }
            Metric::Command(script) => {
                let check = takt_pipeline::Check::Command(script.clone());
                match checks::smoke(&check, None, &new.env, &new.dir).await {
                    Ok(x) => (Measurement::Successful, x),
                    Err(e) => (Measurement::Failed, e),
                }
            }
        }
    }
}

enum Failure {
    /// The new version never took traffic: stop it, nothing else changes.
    Start(String),
    /// It took traffic and must give it back.
    Rollback(String),
}

fn settings(env: &Environment) -> ProcessSettings {
    ProcessSettings {
        instances: env.instances,
        start: env.start.clone(),
        health: env.health.clone(),
        ready_timeout: READY_TIMEOUT,
    }
}

fn base_env() -> Vec<(String, String)> {
    vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME".into(), std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())),
        ("LANG".into(), "C.UTF-8".into()),
    ]
}

fn walk(dir: &Path, f: &dyn Fn(&Path, bool)) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                walk(&p, f);
            }
            f(&p, is_dir);
        }
    }
}

fn make_read_only(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    walk(dir, &|p, is_dir| {
        if let Ok(m) = std::fs::metadata(p) {
            let mode = m.permissions().mode();
            let ro = if is_dir { 0o555 } else { mode & 0o555 };
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(ro));
        }
    });
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    walk(dir, &|p, is_dir| {
        let mode = if is_dir { 0o755 } else { 0o644 };
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    });
}
