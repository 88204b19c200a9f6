//! Environments: what runs where (a view folded from the deploy events), and the requests that
//! change it — deploy, promote, approve, halt, resume, rollback — with their gates: one deploy
//! per environment at a time, the andon cord, freeze windows, `requires` + `soak`, manual
//! approval, idempotence. The deployment itself runs in [`crate::rollout`].
//!
//! Environments are read from the default branch's takt.yml only ([`crate::schedule`] keeps it).

use crate::auth::Permission;
use crate::{ApiError, AppState, authorize};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use takt_model::{ArtifactRef, DeployTrigger, Event, EventKind, OffsetDateTime, SkipReason};
use takt_pipeline::Environment;
use takt_store::EventFilter;
use takt_views::Projection;
use tokio::sync::Notify;

pub use takt_views::{Deployment, EnvView, InFlight};

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
                kinds: takt_views::Environments::KINDS.iter().map(|k| k.to_string()).collect(),
                ..Default::default()
            })
            .await?
        {
            index.apply(&e);
        }
        Ok(index)
    }

    pub fn get(&self, project: &str, env: &str) -> Option<EnvView> {
        self.envs.lock().ok()?.get(project, env).cloned()
    }

    pub fn all(&self) -> Vec<EnvView> {
        self.envs
            .lock()
            .map(|e| e.envs.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn apply(&self, e: &Event) {
        if takt_views::Environments::wants(e)
            && let Ok(mut envs) = self.envs.lock()
        {
            envs.apply(e);
        }
    }

    /// Versions ("name", "version") retention must keep now (see
    /// [`takt_views::Environments::protected`]).
    pub fn protected(&self, days: &HashMap<String, u32>) -> std::collections::HashSet<(String, String)> {
        self.envs
            .lock()
            .map(|e| e.protected(days, OffsetDateTime::now_utc()))
            .unwrap_or_default()
    }
}

/// The live controls of one environment: who holds it, and the signals a deploy in flight
/// listens to (halt, resume, approve, rollback).
#[derive(Default)]
pub struct Control {
    pub busy: Mutex<Option<u64>>,
    pub halted: Mutex<Option<String>>,
    /// Asked to roll back the deploy in flight (the reason).
    pub abort: Mutex<Option<String>>,
    pub resumes: AtomicU64,
    pub approvals: AtomicU64,
    pub changed: Notify,
}

impl Control {
    pub fn signal(&self) {
        self.changed.notify_waiters();
    }
    pub fn halted(&self) -> Option<String> {
        self.halted.lock().ok().and_then(|h| h.clone())
    }
    pub fn abort_reason(&self) -> Option<String> {
        self.abort.lock().ok().and_then(|a| a.clone())
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
        let Ok(mut c) = self.controls.lock() else {
            return Arc::new(Control::default());
        };
        c.entry((project.into(), env.into()))
            .or_insert_with(|| {
                let ctl = Control::default();
                if let Some(h) = self.index.get(project, env).and_then(|v| v.halted) {
                    let reason = h.reason;
                    if let Ok(mut x) = ctl.halted.lock() {
                        *x = Some(reason);
                    }
                }
                Arc::new(ctl)
            })
            .clone()
    }
}

/// The environments the project's default branch defines (re-read if the branch moved).
pub(crate) async fn configured(state: &AppState, project: &str) -> Result<Vec<Environment>, ApiError> {
    let p = state.project(project)?;
    crate::schedule::refresh(state, &p).await;
    let cfg = state
        .branch_configs
        .read()
        .ok()
        .and_then(|c| c.get(project).cloned())
        .unwrap_or_default();
    if cfg.environments.is_empty()
        && let Some(e) = cfg.error
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("the default branch's takt.yml cannot be used: {e}"),
        ));
    }
    Ok(cfg.environments)
}

pub(crate) async fn environment(state: &AppState, project: &str, env: &str) -> Result<Environment, ApiError> {
    let all = configured(state, project).await?;
    let names: Vec<String> = all.iter().map(|e| e.name.clone()).collect();
    all.into_iter().find(|e| e.name == env).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "project `{project}` has no environment `{env}` on its default branch (it has: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        )
    })
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

fn conflict(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, msg)
}

/// The artifact `NAME@VERSION` as deployments name it.
pub(crate) async fn artifact_ref(state: &AppState, spec: &str) -> Result<ArtifactRef, ApiError> {
    let Some((name, version)) = spec.split_once('@') else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`{spec}` is not NAME@VERSION"),
        ));
    };
    crate::artifacts::ensure_local(state, name, version).await?;
    let m = crate::artifacts::manifest(state, name, version)?;
    Ok(ArtifactRef {
        name: m.manifest.name.clone(),
        version: m.manifest.version.clone(),
        digest: m.manifest.digest.clone(),
        commit: Some(m.manifest.provenance.commit.clone()).filter(|c| !c.is_empty()),
    })
}

/// What a deploy request asks for.
pub(crate) struct Ask {
    pub project: String,
    pub env: Environment,
    pub artifact: ArtifactRef,
    pub trigger: DeployTrigger,
    pub rollback: bool,
    /// Start again what the log says runs (its supervisor is gone): no gates, no idempotence.
    pub restore: bool,
}

/// Checks the gates and starts a deploy: `Ok(None)` when the environment already runs the
/// artifact (nothing to do), `Ok(Some(id))` when it started.
/// Why [`begin`] did not start a deploy.
#[derive(Debug)]
pub(crate) enum BeginError {
    /// One deploy per environment at a time: deploy #N is in flight.
    Busy { deploy: u64, error: ApiError },
    /// A gate refused it, or the log is unavailable.
    Refused(ApiError),
}

impl From<BeginError> for ApiError {
    fn from(e: BeginError) -> ApiError {
        match e {
            BeginError::Busy { error, .. } | BeginError::Refused(error) => error,
        }
    }
}

impl From<ApiError> for BeginError {
    fn from(e: ApiError) -> BeginError {
        BeginError::Refused(e)
    }
}

pub(crate) async fn begin(state: &Arc<AppState>, ask: Ask) -> Result<Option<u64>, BeginError> {
    let deployments = &state.deployments;
    let ctl = deployments.control(&ask.project, &ask.env.name);
    let view = deployments.index.get(&ask.project, &ask.env.name).unwrap_or_default();
    let name = &ask.env.name;
    if !ask.rollback {
        if let Some(h) = ctl.halted() {
            return Err(conflict(format!(
                "environment `{name}` is halted ({h}); `takt resume {name}` lifts the halt"
            ))
            .into());
        }
        if let Some(until) = frozen_until(&ask.env, jiff::Timestamp::now()) {
            return Err(conflict(format!(
                "environment `{name}` is frozen until {until}; deploys and promotions are refused until then (halt and rollback still work)"
            ))
            .into());
        }
        for r in &ask.env.requires {
            let there = deployments.index.get(&ask.project, r).unwrap_or_default();
            let runs_it = there.running.as_ref().is_some_and(|x| x.digest == ask.artifact.digest);
            if !runs_it || !there.healthy {
                return Err(conflict(format!(
                    "environment `{name}` requires {}@{} to run healthy in `{r}` first (it runs {} there)",
                    ask.artifact.name,
                    ask.artifact.version,
                    there
                        .running
                        .as_ref()
                        .map(|x| format!(
                            "{}@{}{}",
                            x.name,
                            x.version,
                            if there.healthy { "" } else { ", unhealthy" }
                        ))
                        .unwrap_or_else(|| "nothing".into())
                ))
                .into());
            }
            if let (Some(soak), Some(since)) = (ask.env.soak, there.since_at) {
                let ran = (OffsetDateTime::now_utc() - since).unsigned_abs();
                if ran < soak {
                    return Err(conflict(format!(
                        "environment `{name}` requires {}@{} to soak in `{r}` for {}s; it has for {}s",
                        ask.artifact.name,
                        ask.artifact.version,
                        soak.as_secs(),
                        ran.as_secs()
                    ))
                    .into());
                }
            }
        }
    }
    let id = {
        let Ok(mut busy) = ctl.busy.lock() else {
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "poisoned lock").into());
        };
        if let Some(d) = *busy {
            return Err(BeginError::Busy {
                deploy: d,
                error: conflict(format!(
                    "environment `{name}` is busy with deploy #{d}; one deploy per environment at a time (wait, or `takt halt`/`takt rollback {name}`)"
                )),
            });
        }
        if !ask.restore && view.running.as_ref().is_some_and(|r| r.digest == ask.artifact.digest) && view.healthy {
            return Ok(None);
        }
        let id = view.next_deploy();
        *busy = Some(id);
        id
    };
    if let Ok(mut a) = ctl.abort.lock() {
        *a = None;
    }
    let (commits, truncated) = commit_range(state, &ask.project, view.running.as_ref(), &ask.artifact).await;
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
                "restore".into()
            } else {
                strategy_name(&ask.env, ask.rollback)
            },
            rollback: ask.rollback,
        },
    );
    if let Err(e) = state.record(started).await {
        if let Ok(mut b) = ctl.busy.lock() {
            *b = None;
        }
        return Err(e.into());
    }
    let state2 = state.clone();
    let stable = view.running.clone();
    tokio::spawn(async move {
        crate::rollout::run(state2, ask, id, stable, ctl).await;
    });
    Ok(Some(id))
}

pub(crate) fn strategy_name(env: &Environment, rollback: bool) -> String {
    if rollback {
        return "rollback".into();
    }
    match env.strategy {
        takt_pipeline::Strategy::Recreate => "recreate",
        takt_pipeline::Strategy::Rolling { .. } => "rolling",
        takt_pipeline::Strategy::Canary { .. } => "canary",
        takt_pipeline::Strategy::BlueGreen { .. } => "blue_green",
    }
    .into()
}

/// The commits a deploy ships (newest first, at most `MAX_DEPLOY_COMMITS`) and how many more
/// there are; each gets its `commit_info`.
async fn commit_range(
    state: &AppState,
    project: &str,
    from: Option<&ArtifactRef>,
    to: &ArtifactRef,
) -> (Vec<String>, u64) {
    let Some(to) = &to.commit else {
        return (Vec::new(), 0);
    };
    let mirror = takt_engine::git::Repo::bare(&crate::projects::mirror_path(&state.data_dir, project));
    let from = from.and_then(|f| f.commit.as_deref());
    let max = takt_model::MAX_DEPLOY_COMMITS;
    let commits = mirror.commits_between(from, to, max).await.unwrap_or_default();
    let truncated = if commits.len() == max {
        let all = mirror.count_between(from, to).await.unwrap_or(max as u64);
        all.saturating_sub(max as u64)
    } else {
        0
    };
    if let Ok(q) = state.queue()
        && let Err(e) = q.engine.commits.record(project, None, &mirror, &commits).await
    {
        tracing::warn!(%project, error = %e, "cannot record the commits of a deploy");
    }
    (commits, truncated)
}

// ---- HTTP ----

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    artifact: Option<String>,
    reason: Option<String>,
}

fn body(b: Result<Json<DeployBody>, JsonRejection>) -> Result<DeployBody, ApiError> {
    match b {
        Ok(Json(b)) => Ok(b),
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(DeployBody::default()),
        Err(e) => Err(crate::body_error(e)),
    }
}

fn view_json(state: &AppState, project: &str, env: &Environment, view: Option<EnvView>) -> Value {
    let v = view.unwrap_or_else(|| EnvView {
        project: project.into(),
        environment: env.name.clone(),
        ..Default::default()
    });
    let mut j = serde_json::to_value(&v).unwrap_or_default();
    j["driver"] = json!(format!("{:?}", env.driver).to_lowercase());
    j["strategy"] = json!(strategy_name(env, false));
    j["auto"] = json!(env.auto);
    j["requires"] = json!(env.requires);
    j["approval"] = json!(if env.manual_approval { "manual" } else { "none" });
    j["frozen_until"] = json!(frozen_until(env, jiff::Timestamp::now()).map(|t| t.to_string()));
    if let Some(p) = env.port {
        j["url"] = json!(env.url.clone().unwrap_or_else(|| format!("http://127.0.0.1:{p}")));
    }
    let ctl = state.deployments.control(project, &env.name);
    if let Some(f) = &v.deploying {
        j["deploying"]["waiting_for_approval"] =
            json!(f.action == "approval" && f.verdict.as_deref() == Some("waiting"));
    }
    j["busy"] = json!(ctl.busy.lock().ok().and_then(|b| *b));
    j
}

/// `GET /api/v1/environments`: every environment of every project, with what runs there.
pub async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Permission::Read)?;
    let projects = state.projects.read().map(|p| p.list()).unwrap_or_default();
    let mut out = Vec::new();
    for p in projects {
        let envs = configured(&state, &p.name).await.unwrap_or_default();
        for e in &envs {
            out.push(view_json(
                &state,
                &p.name,
                e,
                state.deployments.index.get(&p.name, &e.name),
            ));
        }
    }
    Ok(Json(json!({ "environments": out })))
}

/// `GET /api/v1/environments/{project}/{env}`: what runs, since when, the deploy in flight and
/// the recent deployments with their steps.
pub async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, env)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Permission::Read)?;
    let e = environment(&state, &project, &env).await?;
    let view = state.deployments.index.get(&project, &env);
    let history: Vec<Deployment> = view
        .as_ref()
        .map(|v| v.history.iter().cloned().collect())
        .unwrap_or_default();
    let mut j = view_json(&state, &project, &e, view);
    j["history"] = json!(history);
    if e.driver != takt_pipeline::Driver::Command {
        // What the supervisor runs now: per version its weight, instances and traffic.
        let status = crate::rollout::supervisor(&state, &project, &e).status().await;
        j["supervisor"] = json!(status);
    }
    Ok(Json(j))
}

/// A deploy asked for by a token (`command`: deploy, promote or rollback), answered as the API
/// does: 202 with the deploy's number, or 200 when nothing needs doing.
async fn by_token(
    state: &Arc<AppState>,
    project: &str,
    env: Environment,
    artifact: ArtifactRef,
    token: &str,
    command: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = env.name.clone();
    let ask = Ask {
        project: project.to_string(),
        env,
        artifact: artifact.clone(),
        trigger: DeployTrigger::Token {
            token: token.to_string(),
            command: command.to_string(),
        },
        rollback: command == "rollback",
        restore: false,
    };
    let id = begin(state, ask).await?;
    Ok(accepted(project, &name, id, &artifact))
}

fn accepted(project: &str, env: &str, id: Option<u64>, artifact: &ArtifactRef) -> (StatusCode, Json<Value>) {
    match id {
        Some(id) => (
            StatusCode::ACCEPTED,
            Json(
                json!({"project": project, "environment": env, "deploy": id, "artifact": artifact, "outcome": "started"}),
            ),
        ),
        None => (
            StatusCode::OK,
            Json(
                json!({"project": project, "environment": env, "artifact": artifact, "outcome": "unchanged",
                "message": format!("`{env}` already runs {}@{} ({}); nothing to do", artifact.name, artifact.version, artifact.digest)}),
            ),
        ),
    }
}

/// `POST .../deploy {"artifact": "NAME@VERSION"}`.
pub async fn deploy(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, env)): Path<(String, String)>,
    b: Result<Json<DeployBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = authorize(&state, &headers, Permission::Deploy)?;
    let b = body(b)?;
    let e = environment(&state, &project, &env).await?;
    let spec = b.artifact.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "give the artifact: {\"artifact\": \"NAME@VERSION\"}",
        )
    })?;
    let artifact = artifact_ref(&state, &spec).await?;
    by_token(&state, &project, e, artifact, &who.id, "deploy").await
}

/// `POST .../promote`: deploys what runs healthy in the environment this one requires.
pub async fn promote(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, env)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = authorize(&state, &headers, Permission::Deploy)?;
    let e = environment(&state, &project, &env).await?;
    let Some(from) = e.requires.first().cloned() else {
        return Err(conflict(format!(
            "environment `{env}` requires no other environment, so there is nothing to promote from; use `takt deploy {env} NAME@VERSION`"
        )));
    };
    let there = state.deployments.index.get(&project, &from).unwrap_or_default();
    let Some(artifact) = there.running.clone().filter(|_| there.healthy) else {
        return Err(conflict(format!("nothing runs healthy in `{from}` to promote")));
    };
    by_token(&state, &project, e, artifact, &who.id, "promote").await
}

/// `POST .../rollback {"artifact"?}`: a deploy in flight goes back to what ran before it; an
/// idle environment goes back to the previous good artifact (or the one named). Skips analysis.
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, env)): Path<(String, String)>,
    b: Result<Json<DeployBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = authorize(&state, &headers, Permission::Deploy)?;
    let b = body(b)?;
    let e = environment(&state, &project, &env).await?;
    let ctl = state.deployments.control(&project, &env);
    let in_flight = ctl.busy.lock().ok().and_then(|b| *b);
    if let Some(d) = in_flight
        && b.artifact.is_none()
    {
        if let Ok(mut a) = ctl.abort.lock() {
            *a = Some(b.reason.unwrap_or_else(|| format!("rolled back by token {}", who.id)));
        }
        ctl.signal();
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"project": project, "environment": env, "deploy": d, "outcome": "rolling_back"})),
        ));
    }
    let view = state.deployments.index.get(&project, &env).unwrap_or_default();
    let artifact = match &b.artifact {
        Some(spec) => artifact_ref(&state, spec).await?,
        None => view
            .previous
            .first()
            .cloned()
            .ok_or_else(|| conflict(format!("environment `{env}` has nothing earlier to roll back to")))?,
    };
    by_token(&state, &project, e, artifact, &who.id, "rollback").await
}

/// `POST .../halt {"reason"}`: the andon cord.
pub async fn halt(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, env)): Path<(String, String)>,
    b: Result<Json<DeployBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = authorize(&state, &headers, Permission::Deploy)?;
    let b = body(b)?;
    environment(&state, &project, &env).await?;
    let reason = b.reason.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "say why: {\"reason\": \"...\"} (takt halt ENV --reason TEXT)",
        )
    })?;
    halt_env(&state, &project, &env, &reason, &format!("token {}", who.id)).await?;
    Ok(Json(json!({"project": project, "environment": env, "halted": reason})))
}

pub(crate) async fn halt_env(
    state: &AppState,
    project: &str,
    env: &str,
    reason: &str,
    by: &str,
) -> Result<(), ApiError> {
    let ctl = state.deployments.control(project, env);
    state
        .record(Event::now(
            project,
            None,
            EventKind::EnvironmentHalted {
                environment: env.into(),
                reason: reason.into(),
                by: by.into(),
            },
        ))
        .await?;
    if let Ok(mut h) = ctl.halted.lock() {
        *h = Some(reason.into());
    }
    ctl.signal();
    Ok(())
}

/// `POST .../resume`: lifts a halt, or continues a paused rollout.
pub async fn resume(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, env)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let who = authorize(&state, &headers, Permission::Deploy)?;
    environment(&state, &project, &env).await?;
    let ctl = state.deployments.control(&project, &env);
    let was_halted = ctl.halted().is_some();
    if was_halted {
        state
            .record(Event::now(
                &project,
                None,
                EventKind::EnvironmentResumed {
                    environment: env.clone(),
                    by: format!("token {}", who.id),
                },
            ))
            .await?;
        if let Ok(mut h) = ctl.halted.lock() {
            *h = None;
        }
    }
    ctl.resumes.fetch_add(1, Ordering::SeqCst);
    ctl.signal();
    Ok(Json(
        json!({"project": project, "environment": env, "resumed": true, "was_halted": was_halted}),
    ))
}

/// `POST .../approve`: lets the deploy waiting for approval go on.
pub async fn approve(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, env)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let who = authorize(&state, &headers, Permission::Deploy)?;
    environment(&state, &project, &env).await?;
    let view = state.deployments.index.get(&project, &env).unwrap_or_default();
    let waiting = view
        .deploying
        .as_ref()
        .filter(|f| f.action == "approval" && f.verdict.as_deref() == Some("waiting"));
    let Some(f) = waiting else {
        return Err(conflict(format!("no deploy to `{env}` waits for approval")));
    };
    let deploy = f.deploy;
    state
        .record(Event::now(
            &project,
            None,
            EventKind::DeployApproved {
                environment: env.clone(),
                by: format!("token {}", who.id),
            },
        ))
        .await?;
    let ctl = state.deployments.control(&project, &env);
    ctl.approvals.fetch_add(1, Ordering::SeqCst);
    ctl.signal();
    Ok(Json(
        json!({"project": project, "environment": env, "deploy": deploy, "approved": true}),
    ))
}

/// Opens an incident in `project` (id `PROJECT#N`, the next number), e.g. for a rollback whose
/// smoke checks failed.
pub(crate) async fn open_incident(
    state: &AppState,
    project: &str,
    env: &str,
    reason: &str,
) -> Result<String, ApiError> {
    // One at a time, so that two incidents never get the same number.
    let _one = state.exclusive.lock().await;
    let opened = state
        .store
        .events(&EventFilter {
            project: Some(project.to_string()),
            kind: Some("incident_opened".into()),
            ..Default::default()
        })
        .await?;
    let id = takt_views::Incidents::fold(&opened).next_id(project);
    state
        .record(Event::now(
            project,
            None,
            EventKind::IncidentOpened {
                environment: env.to_string(),
                reason: reason.to_string(),
                id: Some(id.clone()),
                severity: takt_model::Severity::Critical,
                services: Vec::new(),
                impact_started_at: None,
            },
        ))
        .await?;
    Ok(id)
}

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
pub fn start_auto_deploy(state: Arc<AppState>) {
    tokio::spawn(async move {
        let (cursor, after) = match takt_store::Cursor::open(&state.store, AUTO_DEPLOY_CURSOR).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "auto-deploy is off: cannot read its cursor");
                return;
            }
        };
        let mut log = state.store.subscribe(after, &["run_finished"]);
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
                    auto_environments(&state, &e.project, run).await
                }
                _ => Vec::new(),
            };
            cursor.read(log.position(), seq, envs.len());
            let Some(run) = e.run else { continue };
            for env in envs {
                if already_settled(&state, &e.project, &env.name, run).await {
                    cursor.done(seq);
                    continue;
                }
                let slot = slots
                    .entry((e.project.clone(), env.name.clone()))
                    .or_insert_with(|| Slot::start(state.clone(), e.project.clone(), env.name.clone(), cursor.clone()))
                    .clone();
                let wanted = Wanted { run, seq, env };
                if let Some(older) = slot.put(wanted) {
                    skip(&state, &e.project, &older, SkipReason::Superseded, Some(run), None).await;
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
    fn start(state: Arc<AppState>, project: String, env: String, cursor: Arc<takt_store::Cursor>) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            wanted: Mutex::new(None),
            changed: Notify::new(),
        });
        tokio::spawn(deploy_worker(state, project, env, slot.clone(), cursor));
        slot
    }

    /// Puts the newest run in; returns the one it replaces (which never started).
    fn put(&self, w: Wanted) -> Option<Wanted> {
        let old = self.wanted.lock().ok().and_then(|mut s| s.replace(w));
        self.changed.notify_one();
        old
    }

    fn take(&self) -> Option<Wanted> {
        self.wanted.lock().ok().and_then(|mut s| s.take())
    }

    fn has_newer(&self) -> bool {
        self.wanted.lock().is_ok_and(|s| s.is_some())
    }
}

/// The `auto: true` environments a green run of `project` goes to: none unless it ran on the
/// default branch.
async fn auto_environments(state: &AppState, project: &str, run: u64) -> Vec<Environment> {
    let Ok(p) = state.project(project) else {
        return Vec::new();
    };
    let branch = state.runs.get(project, run).and_then(|r| r.branch);
    if branch.as_deref() != Some(p.branch.as_str()) {
        return Vec::new();
    }
    match configured(state, project).await {
        Ok(envs) => envs.into_iter().filter(|e| e.auto).collect(),
        Err(e) => {
            tracing::warn!(%project, run, error = %e.message, "auto-deploy cannot read the environments");
            Vec::new()
        }
    }
}

async fn skip(
    state: &AppState,
    project: &str,
    w: &Wanted,
    reason: SkipReason,
    by_run: Option<u64>,
    detail: Option<String>,
) {
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
    if let Err(err) = state.record(e).await {
        tracing::warn!(%project, run = w.run, error = %err.message, "cannot record a skipped auto-deploy");
    }
}

/// Whether the log already says how `run`'s auto-deploy to `env` went (after a restart the
/// follower sees runs again whose deploy it started before).
async fn already_settled(state: &AppState, project: &str, env: &str, run: u64) -> bool {
    let facts = state
        .store
        .events(&EventFilter {
            project: Some(project.to_string()),
            run: Some(run),
            kinds: vec!["deploy_started".into(), "deploy_skipped".into()],
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
async fn deploy_worker(
    state: Arc<AppState>,
    project: String,
    env: String,
    slot: Arc<Slot>,
    cursor: Arc<takt_store::Cursor>,
) {
    let ctl = state.deployments.control(&project, &env);
    loop {
        let changed = slot.changed.notified();
        let Some(w) = slot.take() else {
            changed.await;
            continue;
        };
        let seq = w.seq;
        settle(&state, &project, &ctl, &slot, w).await;
        cursor.done(seq);
    }
}

/// Deploys one waiting run, or records why it was not.
async fn settle(state: &Arc<AppState>, project: &str, ctl: &Control, slot: &Slot, w: Wanted) {
    if already_settled(state, project, &w.env.name, w.run).await {
        return;
    }
    let Some(artifact) = run_artifact(state, project, w.run, &w.env).await else {
        tracing::warn!(%project, environment = %w.env.name, run = w.run, "auto-deploy: the run has no artifact to deploy (set `artifact:` on the environment)");
        skip(state, project, &w, SkipReason::NoArtifact, None, None).await;
        return;
    };
    loop {
        // Registered before trying, so the end of the deploy in flight cannot slip by.
        let idle = ctl.changed.notified();
        let newer = slot.changed.notified();
        let ask = Ask {
            project: project.to_string(),
            env: w.env.clone(),
            artifact: artifact.clone(),
            trigger: DeployTrigger::Pipeline { run: w.run },
            rollback: false,
            restore: false,
        };
        match begin(state, ask).await {
            Ok(Some(_)) => return,
            Ok(None) => {
                skip(state, project, &w, SkipReason::AlreadyRunning, None, None).await;
                return;
            }
            Err(BeginError::Busy { deploy, .. }) => {
                tracing::debug!(%project, environment = %w.env.name, run = w.run, deploy, "auto-deploy waits for the deploy in flight");
                tokio::select! {
                    _ = idle => {}
                    _ = newer => {}
                }
                if slot.has_newer() {
                    let by = slot.wanted.lock().ok().and_then(|s| s.as_ref().map(|n| n.run));
                    skip(state, project, &w, SkipReason::Superseded, by, None).await;
                    return;
                }
            }
            Err(BeginError::Refused(e)) => {
                tracing::warn!(%project, environment = %w.env.name, run = w.run, error = %e.message, "auto-deploy refused");
                skip(state, project, &w, SkipReason::Refused, None, Some(e.message)).await;
                return;
            }
        }
    }
}

/// The artifact a green run deploys to `env`: the one `artifact:` names, or the run's only one.
async fn run_artifact(state: &AppState, project: &str, run: u64, env: &Environment) -> Option<ArtifactRef> {
    let stored = state
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
    artifact_ref(state, &format!("{}@{}", pick.0, pick.1)).await.ok()
}
