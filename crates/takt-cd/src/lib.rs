//! The CD service: environments and their gates, deployments (each strategy over the
//! `Driver` interface, in [`rollout`]), the controls of a deploy in flight (halt, resume,
//! approve, rollback), auto-deploy of green runs ([`auto`]) and recovery after a restart.
//!
//! It knows nothing of HTTP: the server routes requests to a [`Cd`] and maps a [`CdError`] to
//! a status. What it needs from the rest of takt (the default branch's environments, artifacts,
//! secrets, commit ranges) it asks its [`Host`] for.

pub mod auto;
pub mod drill;
pub mod incidents;
pub mod remedy;
pub mod rollout;
pub mod watchdog;

pub use rollout::{env_dir, recover, supervisor};

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
// Locks that cannot poison (as everywhere in takt): a panic elsewhere never resets an environment's halt or busy
// state to a fresh default (parking_lot).
use parking_lot::Mutex;
use std::sync::Arc;
use takt_deploy::gate;
use takt_model::{ArtifactRef, DeployStrategy, DeployTrigger, Event, EventKind, OffsetDateTime};
use takt_pipeline::Environment;
use takt_store::{EventFilter, Store, StoreError};
use takt_views::{EnvView, Projection};
use tokio::sync::watch;

/// Why the CD service did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CdError {
    /// The request is malformed (e.g. not `NAME@VERSION`).
    #[error("{0}")]
    BadRequest(String),
    /// No such environment or artifact.
    #[error("{0}")]
    NotFound(String),
    /// Refused by the environment's state (nothing to roll back to, nothing waits for
    /// approval, ...).
    #[error("{0}")]
    Conflict(String),
    /// Refused by a gate before it started (halted, frozen, requires, soak, busy with deploy
    /// #N, awaiting approval): the refusal says which, and its text what to do.
    #[error("{0}")]
    Refused(takt_deploy::gate::Refusal),
    #[error("the event log is unavailable: {0}")]
    Store(#[from] StoreError),
    /// Something on takt's side failed (a blob, the object store, ...).
    #[error("{0}")]
    Internal(String),
}

/// A boxed future, for [`Host`]'s async methods.
pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An artifact ready to deploy: present on the local disk.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub aref: ArtifactRef,
    /// An archive (`application/x-tar`): unpacked beside its copy.
    pub tar: bool,
}

/// What the CD service needs from the rest of takt, as narrow as it goes.
pub trait Host: Send + Sync {
    /// The environments `project`'s default branch defines (re-read if the branch moved).
    fn environments<'a>(&'a self, project: &'a str) -> HostFuture<'a, Result<Vec<Environment>, CdError>>;
    /// The artifact `name@version`, on the local disk (fetched from the object store if need be).
    fn artifact<'a>(&'a self, name: &'a str, version: &'a str) -> HostFuture<'a, Result<Artifact, CdError>>;
    /// Copies blob `digest` to `to`, re-hashing it as it goes (blocking: called off the runtime).
    fn copy_verified(&self, digest: &str, to: &Path) -> Result<(), String>;
    /// The project secrets among `names`, opened: (name, value).
    fn secrets(&self, project: &str, names: &[String]) -> Vec<(String, String)>;
    /// The project's default branch.
    fn default_branch(&self, project: &str) -> Option<String>;
    /// The branch run `run` of `project` ran on.
    fn run_branch(&self, project: &str, run: u64) -> Option<String>;
    /// The commits in `to` that `from` lacks (newest first, at most `MAX_DEPLOY_COMMITS`) and
    /// how many more there are; each gets its `commit_info`.
    fn commit_range<'a>(
        &'a self,
        project: &'a str,
        from: Option<&'a str>,
        to: &'a str,
    ) -> HostFuture<'a, (Vec<String>, u64)>;
}

/// Every environment's view ([`takt_views::Environments`]), kept current by a store observer.
#[derive(Default)]
pub struct EnvIndex {
    envs: Mutex<takt_views::Environments>,
}

impl EnvIndex {
    pub async fn load(store: &takt_store::Store) -> Result<EnvIndex, takt_store::StoreError> {
        let index = EnvIndex::default();
        for e in store
            .events(&EventFilter {
                kinds: takt_views::Environments::KINDS.to_vec(),
                ..Default::default()
            })
            .await?
        {
            index.apply(&e);
        }
        Ok(index)
    }

    pub fn get(&self, project: &str, env: &str) -> Option<EnvView> {
        self.envs.lock().get(project, env).cloned()
    }

    pub fn all(&self) -> Vec<EnvView> {
        self.envs.lock().envs.values().cloned().collect()
    }

    /// `f` of every environment's view, without copying them.
    pub fn with<R>(&self, f: impl FnOnce(&takt_views::Environments) -> R) -> R {
        f(&self.envs.lock())
    }

    pub fn apply(&self, e: &Event) {
        if takt_views::Environments::wants(e) {
            self.envs.lock().apply(e);
        }
    }

    /// Versions ("name", "version") retention must keep now (see
    /// [`takt_views::Environments::protected`]).
    pub fn protected(&self, days: &HashMap<String, u32>) -> std::collections::HashSet<(String, String)> {
        self.envs.lock().protected(days, OffsetDateTime::now_utc())
    }
}

/// The live controls of one environment: who holds it, and the signals a deploy in flight
/// listens to (halt, resume, approve, rollback, the environment freed).
pub struct Control {
    pub busy: Mutex<Option<u64>>,
    pub halted: Mutex<Option<String>>,
    /// Asked to roll back the deploy in flight (the reason).
    pub abort: Mutex<Option<String>>,
    pub resumes: AtomicU64,
    pub approvals: AtomicU64,
    /// Bumped on every change: a waiter that subscribed before it checked the state wakes on
    /// any change after that, however soon (no missed wake-up, so no re-check timer).
    changed: watch::Sender<u64>,
}

impl Default for Control {
    fn default() -> Control {
        Control {
            busy: Mutex::new(None),
            halted: Mutex::new(None),
            abort: Mutex::new(None),
            resumes: AtomicU64::new(0),
            approvals: AtomicU64::new(0),
            changed: watch::Sender::new(0),
        }
    }
}

impl Control {
    pub fn signal(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
    /// Changes from now on: `changed().await` returns at the next [`Control::signal`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
    pub fn halted(&self) -> Option<String> {
        self.halted.lock().clone()
    }
    /// No deploy in flight any more: frees the environment and wakes whoever waits for it.
    pub fn release(&self) {
        *self.busy.lock() = None;
        self.signal();
    }
    pub fn abort_reason(&self) -> Option<String> {
        self.abort.lock().clone()
    }
}

/// Environments' views and controls.
pub struct Deployments {
    pub index: Arc<EnvIndex>,
    controls: Mutex<HashMap<(String, String), Arc<Control>>>,
    /// The program started as `PROGRAM supervise` (the takt binary).
    pub supervisor_program: std::path::PathBuf,
}

impl Deployments {
    pub fn new(index: Arc<EnvIndex>, supervisor_program: std::path::PathBuf) -> Deployments {
        Deployments {
            index,
            controls: Mutex::default(),
            supervisor_program,
        }
    }

    pub fn control(&self, project: &str, env: &str) -> Arc<Control> {
        self.controls
            .lock()
            .entry((project.into(), env.into()))
            .or_insert_with(|| {
                let ctl = Control::default();
                if let Some(h) = self.index.get(project, env).and_then(|v| v.halted) {
                    *ctl.halted.lock() = Some(h.reason);
                }
                Arc::new(ctl)
            })
            .clone()
    }
}

/// The CD service.
pub struct Cd {
    pub host: Arc<dyn Host>,
    pub store: Store,
    pub data_dir: PathBuf,
    pub deployments: Deployments,
    /// Held while an incident is numbered and recorded.
    incidents: tokio::sync::Mutex<()>,
    /// Held while a drill is numbered and recorded.
    drills_lock: tokio::sync::Mutex<()>,
}

/// What a deploy request asks for.
pub struct Ask {
    pub project: String,
    pub env: Environment,
    pub artifact: ArtifactRef,
    pub trigger: DeployTrigger,
    pub rollback: bool,
    /// Start again what the log says runs (its supervisor is gone): no gates, no idempotence.
    pub restore: bool,
    /// The incident it fixes (`takt deploy|promote --fixes`).
    pub fixes: Option<String>,
}

fn conflict(msg: impl Into<String>) -> CdError {
    CdError::Conflict(msg.into())
}

/// When a freeze window that covers `now` ends, if one does.
pub fn frozen_until(env: &Environment, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    for f in &env.freeze {
        let Ok(cron) = takt_pipeline::CronSchedule::parse(&f.cron) else {
            continue;
        };
        let tz = match &f.timezone {
            Some(name) => match jiff::tz::TimeZone::get(name) {
                Ok(t) => t,
                Err(_) => continue,
            },
            None => jiff::tz::TimeZone::UTC,
        };
        let zoned = now.to_zoned(tz);
        if let Ok(start) = cron.find_previous_occurrence(&zoned, true) {
            let Ok(len) = jiff::SignedDuration::try_from(f.duration) else {
                continue;
            };
            if let Ok(end) = start.timestamp().checked_add(len)
                && now < end
            {
                return Some(end);
            }
        }
    }
    None
}

pub fn strategy_of(env: &Environment, rollback: bool) -> DeployStrategy {
    if rollback {
        return DeployStrategy::Rollback;
    }
    match env.strategy {
        takt_pipeline::Strategy::Recreate => DeployStrategy::Recreate,
        takt_pipeline::Strategy::Rolling { .. } => DeployStrategy::Rolling,
        takt_pipeline::Strategy::Canary { .. } => DeployStrategy::Canary,
        takt_pipeline::Strategy::BlueGreen { .. } => DeployStrategy::BlueGreen,
    }
}

impl Cd {
    pub fn new(host: Arc<dyn Host>, store: Store, data_dir: PathBuf, deployments: Deployments) -> Cd {
        Cd {
            host,
            store,
            data_dir,
            deployments,
            incidents: tokio::sync::Mutex::new(()),
            drills_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn record(&self, e: Event) -> Result<(), CdError> {
        self.store.append(&e).await?;
        Ok(())
    }

    /// The environments the project's default branch defines.
    pub async fn environments(&self, project: &str) -> Result<Vec<Environment>, CdError> {
        self.host.environments(project).await
    }

    /// One environment of the project's default branch.
    pub async fn environment(&self, project: &str, env: &str) -> Result<Environment, CdError> {
        let all = self.environments(project).await?;
        let names: Vec<String> = all.iter().map(|e| e.name.clone()).collect();
        all.into_iter().find(|e| e.name == env).ok_or_else(|| {
            CdError::NotFound(format!(
                "project `{project}` has no environment `{env}` on its default branch (it has: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
    }

    /// The view of one environment (empty if nothing was ever deployed there).
    pub fn view(&self, project: &str, env: &str) -> EnvView {
        self.deployments.index.get(project, env).unwrap_or_else(|| EnvView {
            project: project.into(),
            environment: env.into(),
            ..Default::default()
        })
    }

    /// The artifact `NAME@VERSION` as deployments name it.
    pub async fn artifact(&self, spec: &str) -> Result<ArtifactRef, CdError> {
        let Some((name, version)) = spec.split_once('@') else {
            return Err(CdError::BadRequest(format!("`{spec}` is not NAME@VERSION")));
        };
        Ok(self.host.artifact(name, version).await?.aref)
    }

    /// Checks the gates and starts a deploy: `Ok(None)` when the environment already runs the
    /// artifact (nothing to do), `Ok(Some(id))` when it started.
    pub async fn begin(self: &Arc<Self>, ask: Ask) -> Result<Option<u64>, CdError> {
        let deployments = &self.deployments;
        let ctl = deployments.control(&ask.project, &ask.env.name);
        let view = deployments.index.get(&ask.project, &ask.env.name).unwrap_or_default();
        let name = &ask.env.name;
        let halted = ctl.halted();
        let frozen = frozen_until(&ask.env, jiff::Timestamp::now()).map(|t| t.to_string());
        let now = OffsetDateTime::now_utc();
        let upstream: Vec<EnvView> = ask
            .env
            .requires
            .iter()
            .map(|r| deployments.index.get(&ask.project, r).unwrap_or_default())
            .collect();
        fn art(a: &ArtifactRef) -> gate::Wanted<'_> {
            gate::Wanted {
                name: &a.name,
                version: &a.version,
                digest: &a.digest,
            }
        }
        let waiting = view.deploying.as_ref().is_some_and(|f| f.waiting_for_approval);
        // The check of the gates and the taking of the environment are one step (under `busy`).
        let id = {
            let mut busy = ctl.busy.lock();
            let gates = gate::Gates {
                environment: name,
                wanted: art(&ask.artifact),
                rollback: ask.rollback,
                restore: ask.restore,
                halted: halted.as_deref(),
                frozen_until: frozen.as_deref(),
                requires: ask
                    .env
                    .requires
                    .iter()
                    .zip(&upstream)
                    .map(|(r, there)| gate::Upstream {
                        environment: r,
                        running: there.running.as_ref().map(art),
                        healthy: there.healthy,
                        ran_for: there.since_at.map(|since| (now - since).unsigned_abs()),
                    })
                    .collect(),
                soak: ask.env.soak,
                busy: busy.map(|d| (d, waiting)),
                running_digest: view.running.as_ref().map(|r| r.digest.as_str()),
                healthy: view.healthy,
            };
            match gate::check(&gates) {
                gate::Verdict::Refused(r) => return Err(CdError::Refused(r)),
                gate::Verdict::AlreadyRuns => return Ok(None),
                gate::Verdict::Admit => {}
            }
            let id = view.next_deploy();
            *busy = Some(id);
            id
        };
        *ctl.abort.lock() = None;
        let (commits, truncated) = match &ask.artifact.commit {
            Some(to) => {
                let from = view.running.as_ref().and_then(|f| f.commit.as_deref());
                self.host.commit_range(&ask.project, from, to).await
            }
            None => (Vec::new(), 0),
        };
        let started = Event::now(
            &ask.project,
            match ask.trigger {
                DeployTrigger::Pipeline { run } => Some(run),
                _ => None,
            },
            EventKind::DeployStarted {
                environment: name.clone(),
                deploy: id,
                artifact: ask.artifact.clone(),
                previous: view.running.clone(),
                commits,
                truncated,
                trigger: ask.trigger.clone(),
                strategy: if ask.restore {
                    DeployStrategy::Restore
                } else {
                    strategy_of(&ask.env, ask.rollback)
                },
                rollback: ask.rollback,
                fixes: ask.fixes.clone(),
            },
        );
        if let Err(e) = self.record(started).await {
            ctl.release();
            return Err(e);
        }
        self.spawn_rollout(ask, id, view.running.clone(), ctl, None);
        Ok(Some(id))
    }

    /// Runs deploy `id` in the background (continued from `resume` after a restart).
    fn spawn_rollout(
        self: &Arc<Self>,
        ask: Ask,
        id: u64,
        stable: Option<ArtifactRef>,
        ctl: Arc<Control>,
        resume: Option<crate::rollout::Resume>,
    ) {
        let cd = self.clone();
        tokio::spawn(async move {
            let rollout = tokio::spawn(crate::rollout::run(cd, ask, id, stable, ctl.clone(), resume));
            // A rollout that panicked still frees the environment (and wakes who waits on it).
            if rollout.await.is_err() {
                tracing::error!(
                    deploy = id,
                    "a rollout stopped unexpectedly; the environment is free again"
                );
                ctl.release();
            }
        });
    }

    /// After a restart: continues deploy `f` of `env` where its steps say it was (the
    /// environment is taken for it again). `false`: it cannot be (another deploy holds it).
    pub(crate) fn continue_deploy(
        self: &Arc<Self>,
        project: &str,
        env: Environment,
        f: &takt_views::InFlight,
        stable: Option<ArtifactRef>,
        at: takt_model::StepPosition,
    ) -> bool {
        let ctl = self.deployments.control(project, &env.name);
        {
            let mut busy = ctl.busy.lock();
            if busy.is_some() {
                return false;
            }
            *busy = Some(f.deploy);
        }
        let ask = Ask {
            project: project.to_string(),
            env,
            artifact: f.artifact.clone(),
            trigger: DeployTrigger::Automatic {
                reason: "continued after a restart".into(),
            },
            rollback: f.rollback,
            restore: false,
            fixes: None,
        };
        let resume = crate::rollout::Resume {
            at,
            weight: f.weight,
            step: f.step,
        };
        self.spawn_rollout(ask, f.deploy, stable, ctl, Some(resume));
        true
    }

    /// Pulls the andon cord: deploys stop at their next safe point, none start until resumed.
    pub async fn halt(&self, project: &str, env: &str, reason: &str, by: &str) -> Result<(), CdError> {
        let ctl = self.deployments.control(project, env);
        self.record(Event::now(
            project,
            None,
            EventKind::EnvironmentHalted {
                environment: env.into(),
                reason: reason.into(),
                by: by.into(),
            },
        ))
        .await?;
        *ctl.halted.lock() = Some(reason.into());
        ctl.signal();
        Ok(())
    }

    /// Lifts a halt, or continues a paused rollout; returns whether it was halted.
    pub async fn resume(&self, project: &str, env: &str, by: &str) -> Result<bool, CdError> {
        let ctl = self.deployments.control(project, env);
        let was_halted = ctl.halted().is_some();
        if was_halted {
            self.record(Event::now(
                project,
                None,
                EventKind::EnvironmentResumed {
                    environment: env.into(),
                    by: by.into(),
                },
            ))
            .await?;
            *ctl.halted.lock() = None;
        }
        ctl.resumes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ctl.signal();
        Ok(was_halted)
    }

    /// Retires an environment (`takt env stop`): stops what runs there and records
    /// `environment_stopped`. Refused while a deploy is in flight. Returns what was stopped.
    pub async fn stop(self: &Arc<Self>, project: &str, env: &str, by: &str) -> Result<String, CdError> {
        let e = self.environment(project, env).await?;
        let ctl = self.deployments.control(project, env);
        {
            // Held while it stops: no deploy starts, and the watchdog does not restore it.
            let mut busy = ctl.busy.lock();
            if let Some(deploy) = *busy {
                return Err(CdError::Refused(gate::held_by(env, deploy, false)));
            }
            *busy = Some(gate::STOPPING);
        }
        let running = self.view(project, env).running;
        let stopped = crate::rollout::stop_environment(self, project, &e, running, ctl.clone()).await;
        let recorded = match &stopped {
            Ok(detail) => {
                self.record(Event::now(
                    project,
                    None,
                    EventKind::EnvironmentStopped {
                        environment: env.into(),
                        by: by.into(),
                        detail: Some(detail.clone()),
                    },
                ))
                .await
            }
            Err(_) => Ok(()),
        };
        ctl.release();
        recorded?;
        stopped.map_err(|m| CdError::Internal(format!("cannot stop `{env}`: {m}")))
    }

    /// Lets the deploy waiting for approval go on; returns its number.
    pub async fn approve(&self, project: &str, env: &str, by: &str) -> Result<u64, CdError> {
        if let Some(reason) = self.deployments.control(project, env).halted() {
            return Err(CdError::Refused(gate::Refusal::Halted {
                environment: env.to_string(),
                reason,
            }));
        }
        let view = self.view(project, env);
        let waiting = view.deploying.as_ref().filter(|f| f.waiting_for_approval);
        let Some(f) = waiting else {
            return Err(conflict(format!("no deploy to `{env}` waits for approval")));
        };
        let deploy = f.deploy;
        self.record(Event::now(
            project,
            None,
            EventKind::DeployApproved {
                environment: env.into(),
                by: by.into(),
            },
        ))
        .await?;
        let ctl = self.deployments.control(project, env);
        ctl.approvals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ctl.signal();
        Ok(deploy)
    }

    /// Asks the deploy in flight, if any, to roll back; returns its number.
    pub fn abort_in_flight(&self, project: &str, env: &str, reason: String) -> Option<u64> {
        let ctl = self.deployments.control(project, env);
        let in_flight = (*ctl.busy.lock())?;
        *ctl.abort.lock() = Some(reason);
        ctl.signal();
        Some(in_flight)
    }
}
