//! Tokens over HTTP: list, create (the secret shown once), revoke (never the last admin
//! token), and the token table loaded at start (creating the first admin token).

use crate::auth::{self, Caller, Scope, Tokens};
use crate::{ApiError, AppState, ServerConfig, ServerError, kinds_of};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use std::sync::Arc;
use takt_api::NewToken;
use takt_model::{Event, EventKind};
use takt_store::Store;
use takt_views::Projection;

pub(crate) async fn whoami(Caller(who): Caller) -> Json<takt_api::Whoami> {
    Json(takt_api::Whoami { token: who })
}

pub(crate) async fn list_tokens(State(state): State<Arc<AppState>>) -> Json<takt_api::TokenList> {
    let tokens = state.tokens.read().list();
    Json(takt_api::TokenList { tokens })
}

pub(crate) async fn create_token(
    State(state): State<Arc<AppState>>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Result<(StatusCode, Json<takt_api::TokenCreated>), ApiError> {
    let Json(req) = body.map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            e.status()
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, format!("bad request body: {}", e.body_text()))
    })?;
    let scope = req.scope;
    if req.name.trim().is_empty() || req.name.len() > 100 || req.name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "`name` must be 1 to 100 printable characters",
        ));
    }
    let limits = auth::Limits {
        projects: req.projects,
        environments: req.environments,
    };
    if scope == Scope::Admin && !limits.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "an admin token cannot be limited to projects or environments (it may change both); give another scope",
        ));
    }
    for p in &limits.projects {
        state.project(p)?;
    }
    if let Some(e) = limits
        .environments
        .iter()
        .find(|e| e.is_empty() || e.len() > 100 || e.chars().any(|c| c.is_control() || c == '/'))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`environments`: `{e}` is not an environment name (1 to 100 characters, no `/`)"),
        ));
    }
    let (id, token) = issue_token(&state, &req.name, scope, &limits).await?;
    Ok((
        StatusCode::CREATED,
        Json(takt_api::TokenCreated {
            id,
            name: req.name,
            scope,
            token,
        }),
    ))
}

pub(crate) async fn issue_token(
    state: &AppState,
    name: &str,
    scope: Scope,
    limits: &auth::Limits,
) -> Result<(String, String), ApiError> {
    let rnd = |e: getrandom::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("no randomness: {e}"));
    let secret = auth::new_secret().map_err(rnd)?;
    let id = auth::new_id().map_err(rnd)?;
    let e = Event::now(
        "",
        None,
        EventKind::TokenCreated {
            id: id.clone(),
            name: name.to_string(),
            scope: scope.to_string(),
            hash: auth::hash_secret(&secret),
            projects: limits.projects.clone(),
            environments: limits.environments.clone(),
        },
    );
    state.store.append(&e).await?;
    {
        let mut t = state.tokens.write();
        t.apply(&e);
    }
    Ok((id, secret))
}

pub(crate) async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Caller(me): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // The check and the append are one step: concurrent revocations of the last two admin
    // tokens cannot both pass it.
    let _one_at_a_time = state.exclusive.lock().await;
    let (live_me, target, admins) = {
        let list = state.tokens.read().list();
        let scope_of = |id: &str| list.iter().find(|x| x.id == id).map(|x| x.scope);
        (
            scope_of(&me.id).is_some(),
            scope_of(&id),
            list.iter().filter(|x| x.scope == Scope::Admin).count(),
        )
    };
    if !live_me {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unknown or revoked token (it was revoked while this request waited)",
        ));
    }
    let Some(scope) = target else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no live token with id `{id}`"),
        ));
    };
    if scope == Scope::Admin && admins <= 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("refusing to revoke `{id}`: it is the last admin token (create another admin token first)"),
        ));
    }
    let e = Event::now("", None, EventKind::TokenRevoked { id: id.clone() });
    state.store.append(&e).await?;
    {
        let mut t = state.tokens.write();
        t.apply(&e);
    }
    let _ = state.revoked.send(id);
    Ok(StatusCode::NO_CONTENT)
}

/// Loads the token table from the event log; on an empty one, creates the first admin token
/// (`TAKT_ADMIN_TOKEN`, or a new random one written to `<data-dir>/admin-token`, mode 0600,
/// and returned so the caller can print it once).
pub async fn load_tokens(store: &Store, config: &ServerConfig) -> Result<(Tokens, Option<String>), ServerError> {
    let mut tokens = Tokens::fold(&store.events(&kinds_of::<Tokens>()).await?);
    let mut printed = None;
    let create = |secret: &str, name: &str| {
        let id = auth::new_id().map_err(|e| ServerError::Random(e.to_string()))?;
        Ok::<Event, ServerError>(Event::now(
            "",
            None,
            EventKind::TokenCreated {
                id,
                name: name.into(),
                scope: "admin".into(),
                hash: auth::hash_secret(secret),
                projects: Vec::new(),
                environments: Vec::new(),
            },
        ))
    };
    if let Some(secret) = &config.admin_token {
        if !tokens.has_hash(&auth::hash_secret(secret)) {
            let e = create(secret, "admin (TAKT_ADMIN_TOKEN)")?;
            store.append(&e).await?;
            tokens.apply(&e);
        }
    } else if tokens.is_empty() {
        let secret = auth::new_secret().map_err(|e| ServerError::Random(e.to_string()))?;
        let path = config.data_dir.join("admin-token");
        takt_ci::write_private(&path, &secret).map_err(|source| ServerError::Io {
            doing: "writing",
            path: path.clone(),
            source,
        })?;
        let e = create(&secret, "admin")?;
        store.append(&e).await?;
        tokens.apply(&e);
        printed = Some(secret);
    }
    Ok((tokens, printed))
}
