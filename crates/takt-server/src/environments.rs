//! Environments over HTTP: list, show, deploy, promote, rollback, halt, resume, approve. The
//! work is the CD service's (`takt-cd`); this module routes to it, maps its errors to
//! statuses, and is its [`Host`]: the default branch's environments (kept by
//! [`crate::schedule`]), artifacts, secrets and commit ranges.

use crate::{ApiError, AppState, Caller};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use std::sync::{Arc, Weak};
use takt_api::{DeployAnswer, DeployAnswerOutcome as Outcome, DeployBody, EnvironmentStatus};
use takt_cd::{Artifact, Ask, CdError, Host, HostFuture, frozen_until, strategy_of};
use takt_model::{ArtifactRef, DeployTrigger};
use takt_pipeline::Environment;

pub use takt_cd::{Deployments, EnvIndex};
pub use takt_views::{Deployment, EnvView, InFlight};

impl From<CdError> for ApiError {
    fn from(e: CdError) -> ApiError {
        let status = match &e {
            CdError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CdError::NotFound(_) => StatusCode::NOT_FOUND,
            CdError::Conflict(_) | CdError::Refused(_) => StatusCode::CONFLICT,
            CdError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            CdError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<ApiError> for CdError {
    fn from(e: ApiError) -> CdError {
        match e.status {
            StatusCode::BAD_REQUEST => CdError::BadRequest(e.message),
            StatusCode::NOT_FOUND => CdError::NotFound(e.message),
            StatusCode::CONFLICT => CdError::Conflict(e.message),
            _ => CdError::Internal(e.message),
        }
    }
}

fn conflict(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, msg)
}

/// The CD service's view of the server.
pub struct ServerHost {
    pub state: Weak<AppState>,
}

impl ServerHost {
    fn state(&self) -> Result<Arc<AppState>, CdError> {
        self.state
            .upgrade()
            .ok_or_else(|| CdError::Internal("the server is stopping".into()))
    }
}

impl Host for ServerHost {
    fn environments<'a>(&'a self, project: &'a str) -> HostFuture<'a, Result<Vec<Environment>, CdError>> {
        Box::pin(async move {
            let state = self.state()?;
            let p = state.project(project)?;
            takt_ci::schedule::refresh(&state.ci, &p).await;
            let cfg = state.ci.branch_config(project).unwrap_or_default();
            if cfg.environments.is_empty()
                && let Some(e) = cfg.error
            {
                return Err(CdError::Conflict(format!(
                    "the default branch's takt.yml cannot be used: {e}"
                )));
            }
            Ok(cfg.environments)
        })
    }

    fn artifact<'a>(&'a self, name: &'a str, version: &'a str) -> HostFuture<'a, Result<Artifact, CdError>> {
        Box::pin(async move {
            let state = self.state()?;
            crate::artifacts::ensure_local(&state, name, version).await?;
            let m = crate::artifacts::manifest(&state, name, version)?;
            Ok(Artifact {
                aref: ArtifactRef {
                    name: m.manifest.name.clone(),
                    version: m.manifest.version.clone(),
                    digest: m.manifest.digest.clone(),
                    commit: Some(m.manifest.provenance.commit.clone()).filter(|c| !c.is_empty()),
                },
                tar: m.manifest.media_type == "application/x-tar",
            })
        })
    }

    fn copy_verified(&self, digest: &str, to: &std::path::Path) -> Result<(), String> {
        let state = self.state().map_err(|e| e.to_string())?;
        let q = state.queue().map_err(|e| e.message)?;
        q.engine
            .blobs
            .copy_verified(digest, to)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn secrets(&self, project: &str, names: &[String]) -> Vec<(String, String)> {
        let Ok(state) = self.state() else { return Vec::new() };
        let Ok(p) = state.project(project) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for name in names {
            match p.sealed.get(name) {
                Some(s) => match state.key.open(&p.name, name, &s.nonce, &s.ciphertext) {
                    Ok(v) => out.push((name.clone(), String::from_utf8_lossy(&v).into_owned())),
                    Err(e) => tracing::error!(secret = %name, error = %e, "secret not given"),
                },
                None => tracing::warn!(secret = %name, "the environment names a secret the project does not have"),
            }
        }
        out
    }

    fn default_branch(&self, project: &str) -> Option<String> {
        self.state().ok()?.project(project).ok().map(|p| p.branch)
    }

    fn run_branch(&self, project: &str, run: u64) -> Option<String> {
        self.state().ok()?.runs.get(project, run)?.branch
    }

    fn commit_range<'a>(
        &'a self,
        project: &'a str,
        from: Option<&'a str>,
        to: &'a str,
    ) -> HostFuture<'a, (Vec<String>, u64)> {
        Box::pin(async move {
            let Ok(state) = self.state() else {
                return (Vec::new(), 0);
            };
            let mirror = takt_engine::git::Repo::bare(&crate::projects::mirror_path(&state.data_dir, project));
            let max = takt_model::MAX_DEPLOY_COMMITS;
            let commits = mirror.commits_between(from, to, max).await.unwrap_or_default();
            let truncated = if commits.len() == max {
                let all = mirror.count_between(from, to).await.unwrap_or(max as u64);
                all.saturating_sub(max as u64)
            } else {
                0
            };
            // Their author, date and subject, recorded beside the deploy, off its path.
            if let Ok(q) = state.queue() {
                let (infos, project, commits) = (q.engine.commits.clone(), project.to_string(), commits.clone());
                tokio::spawn(async move {
                    if let Err(e) = infos.record(&project, None, &mirror, &commits).await {
                        tracing::warn!(%project, error = %e, "cannot record the commits of a deploy");
                    }
                });
            }
            (commits, truncated)
        })
    }
}

pub(crate) async fn environment(state: &AppState, project: &str, env: &str) -> Result<Environment, ApiError> {
    Ok(state.cd.environment(project, env).await?)
}

/// Refuses a token that the environment's `protected:` list does not name (403, naming who
/// may); an unprotected environment is open to every token the route lets in.
pub(crate) fn guard(e: &Environment, who: &crate::auth::TokenInfo, what: &str) -> Result<(), ApiError> {
    if e.protected.is_empty() || e.protected.contains(&who.name) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "environment `{}` is protected: only tokens named {} may {what} there, not token `{}` (`protected:` in takt.yml)",
            e.name,
            e.protected.join(", "),
            who.name
        ),
    ))
}

/// [`environment`], then [`guard`].
async fn protected_environment(
    state: &AppState,
    project: &str,
    env: &str,
    who: &crate::auth::TokenInfo,
    what: &str,
) -> Result<Environment, ApiError> {
    let e = environment(state, project, env).await?;
    guard(&e, who, what)?;
    Ok(e)
}

pub(crate) async fn artifact_ref(state: &AppState, spec: &str) -> Result<ArtifactRef, ApiError> {
    Ok(state.cd.artifact(spec).await?)
}

fn body(b: Result<Json<DeployBody>, JsonRejection>) -> Result<DeployBody, ApiError> {
    match b {
        Ok(Json(b)) => Ok(b),
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(DeployBody::default()),
        Err(e) => Err(crate::body_error(e)),
    }
}

fn status(state: &AppState, project: &str, env: &Environment, view: Option<EnvView>) -> EnvironmentStatus {
    let view = view.unwrap_or_else(|| EnvView {
        project: project.into(),
        environment: env.name.clone(),
        ..Default::default()
    });
    let ctl = state.cd.deployments.control(project, &env.name);
    EnvironmentStatus {
        view,
        driver: format!("{:?}", env.driver).to_lowercase(),
        strategy: strategy_of(env, false).to_string(),
        auto: env.auto,
        requires: env.requires.clone(),
        approval: if env.manual_approval {
            takt_api::Approval::Manual
        } else {
            takt_api::Approval::None
        },
        frozen_until: frozen_until(env, jiff::Timestamp::now()).map(|t| t.to_string()),
        url: env
            .port
            .map(|p| env.url.clone().unwrap_or_else(|| format!("http://127.0.0.1:{p}"))),
        busy: *ctl.busy.lock(),
        history: Vec::new(),
        supervisor: None,
    }
}

/// `GET /api/v1/environments`: every environment of every project, with what runs there.
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Json<takt_api::EnvironmentList>, ApiError> {
    let projects = state.projects.read().list();
    let mut out = Vec::new();
    for p in projects {
        let envs = state.cd.environments(&p.name).await.unwrap_or_default();
        for e in &envs {
            out.push(status(
                &state,
                &p.name,
                e,
                state.cd.deployments.index.get(&p.name, &e.name),
            ));
        }
    }
    Ok(Json(takt_api::EnvironmentList { environments: out }))
}

/// `GET /api/v1/environments/{project}/{env}`: what runs, since when, the deploy in flight and
/// the recent deployments with their steps.
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path((project, env)): Path<(String, String)>,
) -> Result<Json<EnvironmentStatus>, ApiError> {
    let e = environment(&state, &project, &env).await?;
    let view = state.cd.deployments.index.get(&project, &env);
    let history: Vec<Deployment> = view
        .as_ref()
        .map(|v| v.history.iter().cloned().collect())
        .unwrap_or_default();
    let mut j = status(&state, &project, &e, view);
    j.history = history;
    if e.driver != takt_pipeline::Driver::Command {
        // What the supervisor runs now: per version its weight, instances and traffic.
        let now = takt_cd::supervisor(&state.cd, &project, &e).status().await;
        j.supervisor = serde_json::to_value(now).ok();
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
    fixes: Option<String>,
) -> Result<(StatusCode, Json<DeployAnswer>), ApiError> {
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
        fixes,
    };
    let id = state.cd.begin(ask).await?;
    Ok(accepted(project, &name, id, &artifact))
}

fn accepted(project: &str, env: &str, id: Option<u64>, artifact: &ArtifactRef) -> (StatusCode, Json<DeployAnswer>) {
    let answer = |outcome, message| DeployAnswer {
        project: project.to_string(),
        environment: env.to_string(),
        deploy: id,
        artifact: Some(artifact.clone()),
        outcome,
        message,
    };
    match id {
        Some(_) => (StatusCode::ACCEPTED, Json(answer(Outcome::Started, None))),
        None => (
            StatusCode::OK,
            Json(answer(
                Outcome::Unchanged,
                Some(format!(
                    "`{env}` already runs {}@{} ({}); nothing to do",
                    artifact.name, artifact.version, artifact.digest
                )),
            )),
        ),
    }
}

/// `POST .../deploy {"artifact": "NAME@VERSION"}`.
pub async fn deploy(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, env)): Path<(String, String)>,
    b: Result<Json<DeployBody>, JsonRejection>,
) -> Result<(StatusCode, Json<DeployAnswer>), ApiError> {
    let b = body(b)?;
    let e = protected_environment(&state, &project, &env, &who, "deploy").await?;
    let spec = b.artifact.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "give the artifact: {\"artifact\": \"NAME@VERSION\"}",
        )
    })?;
    let artifact = artifact_ref(&state, &spec).await?;
    let fixes = fixes(&state, &project, b.fixes).await?;
    by_token(&state, &project, e, artifact, &who.id, "deploy", fixes).await
}

/// The incident a deploy says it fixes: `PROJECT#N` of this project, one that exists.
async fn fixes(state: &AppState, project: &str, fixes: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(id) = fixes else { return Ok(None) };
    let Some((p, _)) = takt_model::parse_incident_id(&id) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`fixes` is an incident id such as {project}#3, not `{id}`"),
        ));
    };
    if p != project {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("incident {id} is not one of `{project}`'s"),
        ));
    }
    state.cd.incident(&id).await?;
    Ok(Some(id))
}

/// `POST .../promote {"fixes"?}`: deploys what runs healthy in the environment this one requires.
pub async fn promote(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, env)): Path<(String, String)>,
    b: Result<Option<Json<DeployBody>>, JsonRejection>,
) -> Result<(StatusCode, Json<DeployAnswer>), ApiError> {
    let b = b.map_err(crate::body_error)?.map(|j| j.0).unwrap_or_default();
    let e = protected_environment(&state, &project, &env, &who, "promote to").await?;
    let fixes = fixes(&state, &project, b.fixes).await?;
    let Some(from) = e.requires.first().cloned() else {
        return Err(conflict(format!(
            "environment `{env}` requires no other environment, so there is nothing to promote from; use `takt deploy {env} NAME@VERSION`"
        )));
    };
    let there = state.cd.deployments.index.get(&project, &from).unwrap_or_default();
    let Some(artifact) = there.running.clone().filter(|_| there.healthy) else {
        return Err(conflict(format!("nothing runs healthy in `{from}` to promote")));
    };
    by_token(&state, &project, e, artifact, &who.id, "promote", fixes).await
}

/// `POST .../rollback {"artifact"?}`: a deploy in flight goes back to what ran before it; an
/// idle environment goes back to the previous good artifact (or the one named). Skips analysis.
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, env)): Path<(String, String)>,
    b: Result<Json<DeployBody>, JsonRejection>,
) -> Result<(StatusCode, Json<DeployAnswer>), ApiError> {
    let b = body(b)?;
    let e = protected_environment(&state, &project, &env, &who, "roll back").await?;
    let reason = b
        .reason
        .clone()
        .unwrap_or_else(|| format!("rolled back by token {}", who.id));
    if b.artifact.is_none()
        && let Some(d) = state.cd.abort_in_flight(&project, &env, reason)
    {
        return Ok((
            StatusCode::ACCEPTED,
            Json(DeployAnswer {
                project,
                environment: env,
                deploy: Some(d),
                artifact: None,
                outcome: Outcome::RollingBack,
                message: None,
            }),
        ));
    }
    let view = state.cd.deployments.index.get(&project, &env).unwrap_or_default();
    let artifact = match &b.artifact {
        Some(spec) => artifact_ref(&state, spec).await?,
        None => view
            .previous
            .first()
            .cloned()
            .ok_or_else(|| conflict(format!("environment `{env}` has nothing earlier to roll back to")))?,
    };
    by_token(&state, &project, e, artifact, &who.id, "rollback", None).await
}

/// `POST .../drill {"kill", "count"?, "load"?, "yes"?}`: 202 with the drill's number; it
/// runs in the background (`drill_finished` ends it).
pub async fn drill(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, env)): Path<(String, String)>,
    b: Result<Json<takt_api::DrillBody>, JsonRejection>,
) -> Result<(StatusCode, Json<takt_api::DrillAnswer>), ApiError> {
    let b = b.map_err(crate::body_error)?.0;
    state.project(&project)?;
    let ask = takt_cd::drill::DrillAsk {
        project: project.clone(),
        environment: env.clone(),
        kill: b.kill,
        count: b.count.unwrap_or(1),
        load_rps: b.load.unwrap_or(20),
        production_ok: b.yes,
        by: format!("token {}", who.id),
    };
    let drill = state.cd.drill(ask).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(takt_api::DrillAnswer {
            project,
            environment: env,
            drill,
        }),
    ))
}

/// `GET /api/v1/projects/{name}/drills`: newest first.
pub async fn drills(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
) -> Result<Json<takt_api::DrillList>, ApiError> {
    state.project(&project)?;
    let mut drills: Vec<_> = state.cd.drills(Some(&project)).await?.drills.into_values().collect();
    drills.reverse();
    Ok(Json(takt_api::DrillList { drills }))
}

/// `GET /api/v1/projects/{name}/drills/{number}`.
pub async fn show_drill(
    State(state): State<Arc<AppState>>,
    Path((project, number)): Path<(String, String)>,
) -> Result<Json<takt_api::DrillList>, ApiError> {
    state.project(&project)?;
    let n: u64 = number
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("drill `{number}` is not a number")))?;
    let d = state
        .cd
        .drills(Some(&project))
        .await?
        .drills
        .remove(&(project.clone(), n))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no drill {n} of `{project}`; `takt drill ls` lists them"),
            )
        })?;
    Ok(Json(takt_api::DrillList { drills: vec![d] }))
}

/// `POST .../halt {"reason"}`: the andon cord.
pub async fn halt(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, env)): Path<(String, String)>,
    b: Result<Json<DeployBody>, JsonRejection>,
) -> Result<Json<takt_api::Halted>, ApiError> {
    let b = body(b)?;
    environment(&state, &project, &env).await?;
    let reason = b.reason.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "say why: {\"reason\": \"...\"} (takt halt ENV --reason TEXT)",
        )
    })?;
    state
        .cd
        .halt(&project, &env, &reason, &format!("token {}", who.id))
        .await?;
    Ok(Json(takt_api::Halted {
        project,
        environment: env,
        halted: reason,
    }))
}

/// `POST .../resume`: lifts a halt, or continues a paused rollout.
pub async fn resume(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, env)): Path<(String, String)>,
) -> Result<Json<takt_api::Resumed>, ApiError> {
    protected_environment(&state, &project, &env, &who, "resume deploys").await?;
    let was_halted = state.cd.resume(&project, &env, &format!("token {}", who.id)).await?;
    Ok(Json(takt_api::Resumed {
        project,
        environment: env,
        resumed: true,
        was_halted,
    }))
}

/// `POST .../approve`: lets the deploy waiting for approval go on.
pub async fn approve(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, env)): Path<(String, String)>,
) -> Result<Json<takt_api::Approved>, ApiError> {
    protected_environment(&state, &project, &env, &who, "approve deploys").await?;
    let deploy = state.cd.approve(&project, &env, &format!("token {}", who.id)).await?;
    Ok(Json(takt_api::Approved {
        project,
        environment: env,
        deploy,
        approved: true,
    }))
}

/// `POST .../stop`: retires the environment (refused while a deploy is in flight).
pub async fn stop(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Path((project, env)): Path<(String, String)>,
) -> Result<Json<takt_api::EnvironmentStopped>, ApiError> {
    protected_environment(&state, &project, &env, &who, "stop what runs").await?;
    let stopped = state.cd.stop(&project, &env, &format!("token {}", who.id)).await?;
    Ok(Json(takt_api::EnvironmentStopped {
        project,
        environment: env,
        stopped,
    }))
}
