//! One deployment, start to end: prepare the release (a verified read-only copy of the artifact),
//! run the environment's strategy through its driver, smoke-check every step, roll back on a
//! failed check, a failed analysis or a progress deadline, and record every step as an event.
//!
//! What happens in which order, for every strategy, is decided by `takt-deploy`'s pure state
//! machine ([`takt_deploy::strategy::Deploy`]); this module is its interpreter: it does each
//! action through the [`Driver`] interface, records it, and feeds back results, time,
//! measurements and the environment's controls (halt, resume, approve, rollback).

use crate::{Ask, Cd, Control};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use takt_deploy::analysis::{AnalysisSpec, Measurement};
use takt_deploy::canary::Step;
use takt_deploy::strategy::{Action, Deploy, End, Plan, Position, Side, Spec, Target};
use takt_driver::client::SupervisorClient;
use takt_driver::protocol::Traffic;
use takt_driver::{
    CommandDriver, Driver, DriverError, NginxDriver, ProcessDriver, ProcessSettings, Release, checks, slot_for,
};
use takt_model::{
    ArtifactRef, DeployOutcome, DeployStrategy, Event, EventKind, IncidentTrigger, NewIncident, Severity, StepAction,
    StepPosition, StepVerdict,
};
use takt_pipeline::{CanaryStep, Environment, Metric, Strategy};

/// How long instances get to answer their health path.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// An environment's directory under the data directory.
pub fn env_dir(data: &Path, project: &str, env: &str) -> PathBuf {
    data.join("environments").join(project).join(env)
}

/// An environment's driver, whichever it is ([`Driver`] is not object-safe: its futures are
/// `impl Future`). Deploys run through it, and so does what runs outside a rollout — recovery
/// after a restart, blue/green's keep-old, `takt env stop` — so that each goes through the
/// driver's own `route` and `stop` (the nginx upstream file rewritten, the command driver's
/// script run), never straight to a supervisor.
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
}

/// One interface whatever the driver, so that a deploy's interpreter loop is compiled once, not
/// once per driver.
impl Driver for EnvDriver {
    async fn start(&self, r: &Release) -> Result<(), DriverError> {
        match self {
            EnvDriver::Process(d) => d.start(r).await,
            EnvDriver::Nginx(d) => d.start(r).await,
            EnvDriver::Command(d) => d.start(r).await,
        }
    }

    async fn route(&self, weights: &[(&Release, u8)]) -> Result<(), DriverError> {
        match self {
            EnvDriver::Process(d) => d.route(weights).await,
            EnvDriver::Nginx(d) => d.route(weights).await,
            EnvDriver::Command(d) => d.route(weights).await,
        }
    }

    async fn preview(&self, port: u16, r: Option<&Release>) -> Result<(), DriverError> {
        match self {
            EnvDriver::Process(d) => d.preview(port, r).await,
            EnvDriver::Nginx(d) => d.preview(port, r).await,
            EnvDriver::Command(d) => d.preview(port, r).await,
        }
    }

    async fn stop(&self, r: &Release) -> Result<(), DriverError> {
        match self {
            EnvDriver::Process(d) => d.stop(r).await,
            EnvDriver::Nginx(d) => d.stop(r).await,
            EnvDriver::Command(d) => d.stop(r).await,
        }
    }

    async fn traffic(&self, r: &Release) -> Result<Option<Traffic>, DriverError> {
        match self {
            EnvDriver::Process(d) => d.traffic(r).await,
            EnvDriver::Nginx(d) => d.traffic(r).await,
            EnvDriver::Command(d) => d.traffic(r).await,
        }
    }

    async fn direct_url(&self, r: &Release) -> Option<String> {
        match self {
            EnvDriver::Process(d) => d.direct_url(r).await,
            EnvDriver::Nginx(d) => d.direct_url(r).await,
            EnvDriver::Command(d) => d.direct_url(r).await,
        }
    }

    async fn running(&self, r: &Release) -> bool {
        match self {
            EnvDriver::Process(d) => d.running(r).await,
            EnvDriver::Nginx(d) => d.running(r).await,
            EnvDriver::Command(d) => d.running(r).await,
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
        // `on_restart: continue`: where its last step says it was going forward.
        if let Some(env) = env.as_ref().filter(|e| e.continue_on_restart)
            && let Some(at) = f.position
            && cd.continue_deploy(&v.project, env.clone(), &f, v.running.clone(), at)
        {
            tracing::info!(project = %v.project, environment = %v.environment, deploy = f.deploy, "continuing a deploy after the restart");
            continue;
        }
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
    let r = Cx::new(cd, project, env, 0, ctl).prepare(&a).await?;
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
        fixes: None,
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
    let cx = Cx::new(cd, project, env, 0, ctl);
    let (old, new) = (cx.prepare(stable).await?, cx.prepare(cut).await?);
    let d = EnvDriver::of(cd, project, env);
    d.route(&[(&old, 100)]).await.map_err(|e| e.to_string())?;
    d.stop(&new).await.map_err(|e| e.to_string())
}

/// Where a deploy cut off by a restart continues (folded from its `deploy_step` events).
pub(crate) struct Resume {
    pub at: StepPosition,
    /// The new version's share of traffic at its last step.
    pub weight: u8,
    /// The number of its last step.
    pub step: u32,
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
    /// Where the deploy's state machine was when the next step is recorded.
    position: Option<StepPosition>,
}

impl Cx {
    /// The context of one deploy (`deploy` 0: work outside a deploy, which records no steps).
    fn new(cd: &Arc<Cd>, project: &str, env: &Environment, deploy: u64, ctl: Arc<Control>) -> Cx {
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
            position: None,
        }
    }
}

pub(crate) async fn run(
    cd: Arc<Cd>,
    ask: Ask,
    deploy: u64,
    stable: Option<ArtifactRef>,
    ctl: Arc<Control>,
    resume: Option<Resume>,
) {
    let mut cx = Cx::new(&cd, &ask.project, &ask.env, deploy, ctl.clone());
    let out = cx.deploy(&ask, stable, resume).await;
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
                position: self.position,
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
    /// Callers re-check their conditions after every return. The receiver was subscribed when
    /// the deploy began, so a signal sent between a caller's check and this wait is not missed.
    async fn wait(&mut self, until: Duration) {
        let left = until.saturating_sub(self.now());
        tokio::select! {
            _ = tokio::time::sleep(left) => {}
            _ = self.signals.changed() => {}
        }
        self.signals.borrow_and_update();
    }

    async fn deploy(&mut self, ask: &Ask, stable: Option<ArtifactRef>, resume: Option<Resume>) -> Outcome {
        if let Some(r) = &resume {
            self.step = r.step;
            self.weight = r.weight;
            self.position = Some(r.at);
            self.record_step(
                StepAction::Resumed,
                None,
                Some("the server restarted; the deploy continues where it was (on_restart: continue)".into()),
            )
            .await;
        }
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
        let d = EnvDriver::of(&self.cd, &self.project, &self.env);
        self.execute(&d, ask, new, old, resume).await
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

    async fn direct_or_public<D: Driver>(&self, d: &D, r: &Release) -> Option<String> {
        match d.direct_url(r).await {
            Some(u) => Some(u),
            None => self.public_url.clone(),
        }
    }

    /// Runs the deploy's state machine ([`takt_deploy::strategy::Deploy`]) to its end: asks it
    /// what to do, does that through the driver, records the step and reports back. The
    /// environment's controls are fed in before every step; every wait wakes on a control's
    /// change or its deadline.
    async fn execute<D: Driver>(
        &mut self,
        d: &D,
        ask: &Ask,
        new: Release,
        old: Option<Release>,
        resume: Option<Resume>,
    ) -> Outcome {
        let old_ref = old.as_ref().map(|o| ArtifactRef {
            name: o.name.clone(),
            version: o.version.clone(),
            digest: o.digest.clone(),
            commit: None,
        });
        let old_running = match &old {
            Some(o) => d.running(o).await,
            None => false,
        };
        // A rollback, a first deploy, or nothing of the old version left running: straight to
        // 100% (as Argo Rollouts does for a first deploy).
        // Continued after a restart, it runs the plan it ran (the old version may be stopped
        // by now because that plan stopped it).
        let plan = match &resume {
            Some(r) if r.at.plan == DeployStrategy::Recreate => Plan::Recreate,
            Some(_) => plan_of(&self.env),
            None if ask.rollback || !old_running => Plan::Recreate,
            None => plan_of(&self.env),
        };
        let kind = kind_of(&plan);
        let preview_port = match &self.env.strategy {
            Strategy::BlueGreen { preview_port, .. } => *preview_port,
            _ => None,
        };
        let analyses: Vec<CanaryStep> = match &self.env.strategy {
            Strategy::Canary { steps, .. } => steps.clone(),
            _ => Vec::new(),
        };
        let spec = Spec {
            plan,
            approval: self.env.manual_approval && !ask.rollback,
            has_old: old.is_some(),
            pause_on_failure: self.env.pause_on_failure && !ask.rollback,
            honours_halt: !ask.rollback,
        };
        let mut m = match &resume {
            None => Deploy::new(spec),
            Some(r) => {
                let at = Position {
                    op: r.at.op,
                    canary: r.at.canary,
                };
                let fits = (r.at.plan == kind).then(|| Deploy::resume_at(spec.clone(), at, r.weight));
                match fits.flatten() {
                    Some(m) => m,
                    None => {
                        // The environment's strategy changed while the server was down.
                        let mut m = Deploy::new(Spec {
                            approval: false,
                            ..spec
                        });
                        m.abort(
                            Duration::ZERO,
                            "the server restarted and the environment's strategy changed since: rolled back",
                        );
                        m
                    }
                }
            }
        };
        let resumed = resume.is_some();
        let mut seen: Option<Traffic> = None;
        // What the controls counted when a wait for them began (none: not waiting).
        let (mut approvals, mut resumes, mut halted) = (None::<u64>, None::<u64>, false);
        loop {
            let now = self.now();
            if let Some(why) = self.ctl.abort_reason() {
                m.abort(now, &why);
            }
            if let Some(h) = self.ctl.halted() {
                m.halt(now, &h);
            }
            let action = m.next(now);
            self.locate(&m, kind);
            let result = match action {
                Action::Done(end) => return self.end(end, Some(ask.artifact.clone()), old_ref).await,
                Action::AwaitApproval => {
                    let n = self.ctl.approvals.load(Ordering::SeqCst);
                    match approvals {
                        Some(before) if n > before => {
                            approvals = None;
                            m.approved(now);
                            self.locate(&m, kind);
                            self.record_step(StepAction::Approval, Some(StepVerdict::Successful), None)
                                .await;
                        }
                        Some(_) => self.wait(now + Duration::from_secs(3600)).await,
                        None => {
                            approvals = Some(n);
                            let how = format!("`takt approve {}`", self.env.name);
                            self.record_step(StepAction::Approval, Some(StepVerdict::Waiting), Some(how))
                                .await;
                        }
                    }
                    continue;
                }
                Action::Halted { reason } => {
                    if self.ctl.halted().is_none() {
                        halted = false;
                        m.resume(now);
                        self.locate(&m, kind);
                        self.record_step(StepAction::Resumed, None, None).await;
                    } else if !halted {
                        halted = true;
                        // After `takt resume` an approval is waited for again (none is taken
                        // while halted).
                        approvals = None;
                        self.record_step(StepAction::Halted, None, Some(reason)).await;
                    } else {
                        self.wait(now + Duration::from_secs(3600)).await;
                    }
                    continue;
                }
                Action::Paused { reason, on_failure } => {
                    let n = self.ctl.resumes.load(Ordering::SeqCst);
                    match resumes {
                        Some(before) if n > before => {
                            resumes = None;
                            m.resume(now);
                            self.locate(&m, kind);
                            let kept = on_failure.then(|| "the new version is kept".to_string());
                            self.record_step(StepAction::Resumed, None, kept).await;
                        }
                        Some(_) => self.wait(now + Duration::from_secs(3600)).await,
                        None => {
                            resumes = Some(n);
                            let env = &self.env.name;
                            let detail = if on_failure {
                                format!(
                                    "{reason}; paused instead of rolling back (on_failure: pause): `takt rollback {env}` goes back, `takt resume {env}` keeps the new version"
                                )
                            } else {
                                reason
                            };
                            self.record_step(StepAction::Paused, None, Some(detail)).await;
                        }
                    }
                    continue;
                }
                Action::WaitUntil(t) => {
                    self.wait(t).await;
                    continue;
                }
                Action::Measure { step } => {
                    let traffic = match &mut seen {
                        Some(t) => t,
                        None => seen.insert(d.traffic(&new).await.ok().flatten().unwrap_or_default()),
                    };
                    let (measurement, detail) = match analyses.get(step) {
                        Some(CanaryStep::Analysis(a)) => self.measure(d, &new, a, traffic).await,
                        _ => (Measurement::Error, "no analysis at this step".into()),
                    };
                    let verdict = match measurement {
                        Measurement::Successful => StepVerdict::Successful,
                        Measurement::Failed => StepVerdict::Failed,
                        Measurement::Inconclusive => StepVerdict::Inconclusive,
                        Measurement::Error => StepVerdict::Error,
                    };
                    self.record_step(StepAction::Analysis, Some(verdict), Some(detail))
                        .await;
                    m.measured(self.now(), measurement);
                    continue;
                }
                // Continued after a restart, what still runs is not started again.
                Action::Start if resumed && d.running(&new).await => Ok(()),
                Action::Start => match d.start(&new).await {
                    Ok(()) => {
                        self.record_step(StepAction::Start, Some(StepVerdict::Successful), None)
                            .await;
                        // What the proxy counted so far, before the canary takes traffic.
                        if !analyses.is_empty() {
                            seen = d.traffic(&new).await.ok().flatten();
                        }
                        Ok(())
                    }
                    Err(e) => {
                        self.record_step(StepAction::Start, Some(StepVerdict::Failed), Some(e.to_string()))
                            .await;
                        Err(e.to_string())
                    }
                },
                Action::Smoke { target, label, of } => {
                    let url = match target {
                        Target::Alone => d.direct_url(&new).await,
                        Target::Public => self.public_url.clone(),
                        Target::DirectOrPublic => self.direct_or_public(d, &new).await,
                        Target::Preview => match preview_port {
                            Some(p) => Some(format!("http://127.0.0.1:{p}")),
                            None => d.direct_url(&new).await,
                        },
                    };
                    let commands_only = self.env.smoke.iter().all(takt_pipeline::Check::is_command);
                    let release = match (of, &old) {
                        (Side::Old, Some(o)) => o,
                        _ => &new,
                    };
                    // A check of the new version alone is skipped where the driver cannot reach
                    // it alone (the command driver: its checks run after the switch).
                    let skip = match target {
                        Target::Alone => url.is_none(),
                        Target::Preview => url.is_none() && !commands_only,
                        _ => false,
                    };
                    if skip {
                        Ok(())
                    } else {
                        self.smoke(url, &label, release).await
                    }
                }
                Action::Route(w) => {
                    let mut weights = vec![(&new, w.new)];
                    if let Some(o) = &old
                        && w.old > 0
                    {
                        weights.insert(0, (o, w.old));
                    }
                    match d.route(&weights).await {
                        Ok(()) => {
                            self.weight = w.new;
                            self.record_step(StepAction::SetWeight, None, None).await;
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                Action::RouteBack { reason } => match &old {
                    Some(o) => match d.route(&[(o, 100)]).await {
                        Ok(()) => {
                            self.weight = 0;
                            self.record_step(StepAction::Rollback, Some(StepVerdict::Successful), Some(reason))
                                .await;
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    },
                    None => Err("there is no earlier version".into()),
                },
                Action::Unroute => d.route(&[]).await.map_err(|e| e.to_string()),
                Action::Preview(on) => match preview_port {
                    Some(p) => match d.preview(p, on.then_some(&new)).await {
                        Ok(()) if on => {
                            let url = format!("http://127.0.0.1:{p}");
                            self.record_step(StepAction::Preview, None, Some(url)).await;
                            Ok(())
                        }
                        Ok(()) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    },
                    None => Ok(()),
                },
                Action::StartOld => match &old {
                    Some(o) if !d.running(o).await => d.start(o).await.map_err(|e| e.to_string()),
                    _ => Ok(()),
                },
                // Where old and new are the same bytes (a restore), they are one release.
                Action::StopOld => match &old {
                    Some(o) if o.slot != new.slot => d.stop(o).await.map_err(|e| e.to_string()),
                    _ => Ok(()),
                },
                Action::StopNew => match &old {
                    Some(o) if o.slot == new.slot => Ok(()),
                    _ => d.stop(&new).await.map_err(|e| e.to_string()),
                },
                Action::KeepOld(keep) => {
                    if let Some(o) = old.clone() {
                        let detail = format!("{} stays up for {}s", o.version, keep.as_secs());
                        self.record_step(StepAction::KeepOld, None, Some(detail)).await;
                        self.keep_old(o, keep);
                    }
                    Ok(())
                }
                Action::Promote => {
                    self.record_step(StepAction::Promote, Some(StepVerdict::Successful), None)
                        .await;
                    Ok(())
                }
            };
            m.done(self.now(), result);
        }
    }

    /// Where the state machine is, for the steps recorded next.
    fn locate(&mut self, m: &Deploy, plan: DeployStrategy) {
        self.position = m.position().map(|p| StepPosition {
            plan,
            op: p.op,
            canary: p.canary,
        });
    }

    /// The outcome of a deploy that ended as `end`; a failed rollback halts the environment
    /// and opens an incident.
    async fn end(&mut self, end: End, new: Option<ArtifactRef>, old: Option<ArtifactRef>) -> Outcome {
        let (outcome, running, reason) = match end {
            End::Succeeded { reason } => (DeployOutcome::Succeeded, new, reason),
            End::Failed { reason } => (DeployOutcome::Failed, old, Some(reason)),
            End::RolledBack { reason, failed } => {
                if failed {
                    // Users of the new version were affected until the rollback: an incident,
                    // caused by this deployment, over once the old version passed its checks.
                    let mut new = NewIncident::by_takt(&self.env.name, &reason, IncidentTrigger::Analysis);
                    new.severity = Severity::Major;
                    let rolled_back = format!("rolled back: {} runs the previous version again", self.env.name);
                    self.incident(new, Some(rolled_back)).await;
                }
                (DeployOutcome::RolledBack, old, Some(reason))
            }
            End::Cancelled { reason } => (DeployOutcome::Cancelled, old, Some(reason)),
            End::RollbackFailed { reason, problem } => {
                let env = self.env.name.clone();
                let _ = self.cd.halt(&self.project, &env, &problem, "takt").await;
                let new = NewIncident::by_takt(&env, &problem, IncidentTrigger::RollbackFailed);
                self.incident(new, None).await;
                let reason = format!("{reason}; then {problem} (environment halted, incident opened)");
                (DeployOutcome::RollbackFailed, old, Some(reason))
            }
        };
        Outcome {
            outcome,
            running,
            reason,
        }
    }

    /// Opens an incident this deployment caused (marked as its cause), resolved at once with
    /// `resolved` if the rollback already ended it.
    async fn incident(&self, new: NewIncident, resolved: Option<String>) {
        let id = match self.cd.open_incident(&self.project, new).await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, project = %self.project, "cannot open an incident");
                return;
            }
        };
        let mut then = vec![EventKind::IncidentCauseMarked {
            id: id.clone(),
            deploy: Some(format!("{}/{}#{}", self.project, self.env.name, self.deploy)),
            by: "takt".into(),
        }];
        if let Some(note) = resolved {
            then.push(EventKind::IncidentResolved {
                id,
                auto: true,
                by: "takt".into(),
                note: Some(note),
            });
        }
        for kind in then {
            if let Err(e) = self.cd.record(Event::now(&self.project, None, kind)).await {
                tracing::error!(error = %e, project = %self.project, "cannot record an incident's change");
            }
        }
    }

    /// Blue/green's old colour stays up for an instant rollback, then goes (unless it is live
    /// again by then), through the environment's driver.
    fn keep_old(&self, o: Release, keep: Duration) {
        let cd = self.cd.clone();
        let (project, env) = (self.project.clone(), self.env.clone());
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
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

/// The kind of plan, as a deploy step's position records it.
fn kind_of(plan: &Plan) -> DeployStrategy {
    match plan {
        Plan::Recreate => DeployStrategy::Recreate,
        Plan::Rolling { .. } => DeployStrategy::Rolling,
        Plan::BlueGreen { .. } => DeployStrategy::BlueGreen,
        Plan::Canary { .. } => DeployStrategy::Canary,
    }
}

/// The environment's strategy as the pure state machine's plan.
fn plan_of(env: &Environment) -> Plan {
    match &env.strategy {
        Strategy::Recreate => Plan::Recreate,
        Strategy::Rolling { batch, pause } => Plan::Rolling {
            batch: *batch,
            pause: *pause,
            instances: env.instances,
        },
        Strategy::BlueGreen { preview_port, keep_old } => Plan::BlueGreen {
            preview: preview_port.is_some(),
            keep_old: *keep_old,
        },
        Strategy::Canary {
            steps,
            progress_deadline,
        } => Plan::Canary {
            steps: steps
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
                .collect(),
            progress_deadline: *progress_deadline,
        },
    }
}

fn settings(env: &Environment) -> ProcessSettings {
    ProcessSettings {
        instances: env.instances,
        start: env.start.clone(),
        health: env.health.clone(),
        ready_timeout: READY_TIMEOUT,
    }
}

pub(crate) fn base_env() -> Vec<(String, String)> {
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
