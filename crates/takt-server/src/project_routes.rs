//! Projects and their secrets over HTTP: list, show, add (the mirror cloned without holding a
//! lock), settings, secrets (sealed at rest; values never answered).

use crate::{ApiError, AppState, ServerError, body_error, kinds_of, projects, secrets};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use takt_api::NewProject;
use takt_model::{Event, EventKind};
use takt_store::Store;
use takt_views::Projection;

/// A name held in a set until dropped.
struct Reservation<'a> {
    set: &'a parking_lot::Mutex<std::collections::HashSet<String>>,
    name: String,
}

impl<'a> Reservation<'a> {
    /// Holds `name`, unless someone else does or `taken(name)` says it is taken.
    fn take(
        set: &'a parking_lot::Mutex<std::collections::HashSet<String>>,
        name: &str,
        taken: impl Fn(&str) -> bool,
    ) -> Option<Reservation<'a>> {
        let mut held = set.lock();
        let fresh = !taken(name) && held.insert(name.to_string());
        drop(held);
        fresh.then(|| Reservation {
            set,
            name: name.to_string(),
        })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        {
            let mut s = self.set.lock();
            s.remove(&self.name);
        }
    }
}

pub(crate) async fn list_projects(State(state): State<Arc<AppState>>) -> Json<takt_api::ProjectList> {
    let list = state.projects.read().list();
    Json(takt_api::ProjectList { projects: list })
}

pub(crate) async fn show_project(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = state.projects.read().get(&name).cloned();
    let mut v = p
        .map(|p| json!(p))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no project named `{name}`")))?;
    if let Value::Object(m) = &mut v {
        m.insert("job_isolation".into(), Value::Object(state.isolation.fields()));
    }
    Ok(Json(v))
}

pub(crate) async fn add_project(
    State(state): State<Arc<AppState>>,
    body: Result<Json<NewProject>, JsonRejection>,
) -> Result<(StatusCode, Json<takt_api::ProjectCreated>), ApiError> {
    let Json(req) = body.map_err(body_error)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    projects::check_name(&req.name).map_err(bad)?;
    let branch = req.branch.unwrap_or_else(|| "main".into());
    projects::check_branch(&branch).map_err(bad)?;
    if req.repo.trim().is_empty() || req.repo.len() > 2000 || req.repo.chars().any(char::is_control) {
        return Err(bad("`repo` must be a repository URL or path".into()));
    }
    // A name is taken only if no other project has it, nor is being added: the check and the
    // reservation are one step (under the set's lock); the clone, which may take up to
    // `git_timeout`, holds no lock.
    let exists = |name: &str| state.projects.read().get(name).is_some();
    let Some(_reserved) = Reservation::take(&state.adding_projects, &req.name, exists) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("project `{}` already exists (or is being added)", req.name),
        ));
    };
    let mirror = projects::mirror_path(&state.data_dir, &req.name);
    {
        let m = mirror.clone();
        // Left by a failed add; file-system work off the runtime.
        let _ = tokio::task::spawn_blocking(move || {
            if m.exists() {
                let _ = std::fs::remove_dir_all(&m);
            }
        })
        .await;
    }
    takt_engine::git::Repo::mirror(&req.repo, &mirror)
        .await
        .map_err(|e| bad(format!("cannot mirror `{}`: {e}", req.repo)))?;
    let e = Event::now(
        &req.name,
        None,
        EventKind::ProjectAdded {
            name: req.name.clone(),
            repo: req.repo.clone(),
            branch: branch.clone(),
        },
    );
    state.record(e).await?;
    // Its schedules and subscribers count from now on, not from the next look.
    if let Ok(p) = state.project(&req.name) {
        takt_ci::schedule::refresh(&state.ci, &p).await;
    }
    if let Some(q) = &state.queue {
        q.moved.notify_waiters(); // the scheduler looks at its schedules now
    }
    Ok((
        StatusCode::CREATED,
        Json(takt_api::ProjectCreated {
            name: req.name,
            repo: req.repo,
            branch,
        }),
    ))
}

/// Loads the projects from the event log.
pub async fn load_projects(store: &Store) -> Result<projects::Projects, ServerError> {
    Ok(projects::Projects::fold(
        &store.events(&kinds_of::<projects::Projects>()).await?,
    ))
}

pub(crate) async fn project_settings(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Json<takt_model::ProjectOptions>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    state.project(&name)?;
    let Json(mut options) = body.map_err(body_error)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    if options.concurrency == Some(0) {
        return Err(bad("`concurrency` must be at least 1".into()));
    }
    for b in options.protected.iter().flatten() {
        projects::check_branch(b).map_err(bad)?;
    }
    if let Some(link) = options.forge.take() {
        options.forge = Some(takt_ci::status::check_link(link).map_err(bad)?);
    }
    state
        .record(Event::now(
            &name,
            None,
            EventKind::ProjectUpdated {
                name: name.clone(),
                options,
            },
        ))
        .await?;
    Ok(Json(json!(state.project(&name)?)))
}

pub(crate) async fn list_secrets(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<takt_api::SecretList>, ApiError> {
    let p = state.project(&name)?;
    let secrets = p
        .sealed
        .iter()
        .map(|(n, s)| takt_api::SecretInfo {
            name: n.clone(),
            set_at: s.set_at.clone(),
        })
        .collect();
    Ok(Json(takt_api::SecretList { secrets }))
}

/// `PUT /api/v1/projects/{name}/secrets/{secret}` with the value as the raw body.
pub(crate) async fn set_secret(
    State(state): State<Arc<AppState>>,
    Path((name, secret)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    state.project(&name)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    secrets::check_name(&secret).map_err(bad)?;
    // A trailing newline (from `echo value |`) is not part of the value.
    let value = body.strip_suffix(b"\n").unwrap_or(&body);
    let value = value.strip_suffix(b"\r").unwrap_or(value);
    if value.len() < secrets::MIN_SECRET_LEN || value.len() > secrets::MAX_SECRET_LEN {
        return Err(bad(format!(
            "a secret value must be {} to {} bytes (shorter values cannot be masked in logs)",
            secrets::MIN_SECRET_LEN,
            secrets::MAX_SECRET_LEN
        )));
    }
    let (nonce, ciphertext) = state
        .key
        .seal(&name, &secret, value)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    state
        .record(Event::now(
            &name,
            None,
            EventKind::SecretSet {
                name: secret,
                nonce,
                ciphertext,
            },
        ))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn remove_secret(
    State(state): State<Arc<AppState>>,
    Path((name, secret)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if !state.project(&name)?.sealed.contains_key(&secret) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("project `{name}` has no secret `{secret}`"),
        ));
    }
    state
        .record(Event::now(&name, None, EventKind::SecretRemoved { name: secret }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
