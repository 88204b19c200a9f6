//! Authorization: the route table's permission layer (`require`), the [`Caller`] extractor
//! handlers take, the bearer-token check; new secrets and ids. The token view is
//! `takt_views::token` (folded from the log); scopes and permissions are the model's.

pub use takt_api::{Limits, Permission, Scope};
pub use takt_views::token::{TokenInfo, Tokens, hash_secret};

use crate::{ApiError, AppState};
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;
use takt_model::auth::Outside;
use takt_model::{Event, EventKind};

/// A new random secret: `takt_` and 40 hex digits.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 20];
    getrandom::fill(&mut b)?;
    Ok(format!("takt_{}", hex::encode(b)))
}

pub fn new_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b)?;
    Ok(hex::encode(b))
}

/// Checks the bearer token against the permission a route needs.
pub(crate) fn authorize(state: &AppState, headers: &HeaderMap, need: Permission) -> Result<TokenInfo, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let unauthorized = |m: &str| {
        state.metrics.failed_auth("token");
        unauthorized(m)
    };
    // OFREP clients may send the token as `X-API-Key` instead.
    let secret = match (headers.get("authorization"), headers.get("x-api-key")) {
        (Some(value), _) => value
            .to_str()
            .ok()
            .and_then(bearer)
            .ok_or_else(|| unauthorized("malformed Authorization header: use `Bearer <token>`"))?,
        (None, Some(key)) => key.to_str().map_err(|_| unauthorized("malformed X-API-Key header"))?,
        (None, None) => {
            return Err(unauthorized(
                "a token is required: send `Authorization: Bearer <token>`",
            ));
        }
    };
    let tokens = state.tokens.read();
    let Some(info) = tokens.check(secret.trim()) else {
        tracing::warn!("failed authentication");
        return Err(unauthorized("unknown or revoked token"));
    };
    if !info.scope.allows(need) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token `{}` has scope `{}`, which does not allow this ({need:?} permission needed)",
                info.name, info.scope
            ),
        ));
    }
    let info = info.clone();
    drop(tokens);
    note_use(state, &info.id);
    Ok(info)
}

/// The credentials of a `Bearer` Authorization value; the scheme is case-insensitive
/// (RFC 7235, section 2.1) and may be followed by any run of spaces.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

/// Records that a token was used, at most once a minute per token (off the request's path).
pub(crate) fn note_use(state: &AppState, id: &str) {
    let due = {
        let mut m = state.token_uses.lock();
        let now = Instant::now();
        match m.get(id) {
            Some(t) if now.duration_since(*t) < std::time::Duration::from_secs(60) => false,
            _ => {
                m.insert(id.to_string(), now);
                true
            }
        }
    };
    if due {
        let e = Event::now("", None, EventKind::TokenUsed { id: id.to_string() });
        {
            let mut t = state.tokens.write();
            t.apply(&e);
        }
        let store = state.store.clone();
        tokio::spawn(async move {
            if let Err(err) = store.append(&e).await {
                tracing::warn!(error = %err, "cannot record a token's use");
            }
        });
    }
}

/// The token a request was authorized with, put there by the route's permission layer.
#[derive(Debug, Clone)]
pub struct Caller(pub TokenInfo);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this route names no permission in the route table (takt-api)",
            )
        })
    }
}

/// The permission layer of a route: 401 without a known token, 403 when its scope lacks the
/// route's permission or the route names a project or environment outside the token's
/// limits; otherwise the handler runs with the [`Caller`].
pub(crate) async fn require(
    State((state, need, path)): State<(Arc<AppState>, Permission, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    // OFREP routes: no body on 401/403, and the token's own project and environment say which
    // flags it evaluates (the route names none).
    let ofrep = need == Permission::Flags;
    let stream_key = (path == crate::ofrep::EVENTS_PATH)
        .then(|| {
            url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "key")
                .map(|(_, v)| v.into_owned())
        })
        .flatten();
    let authorized = match stream_key {
        Some(k) if !parts.headers.contains_key("authorization") && !parts.headers.contains_key("x-api-key") => {
            crate::ofrep::authorize_stream(&state, &k, need)
        }
        _ => authorize(&state, &parts.headers, need),
    };
    let who = match authorized {
        Ok(who) => who,
        Err(e) if ofrep => return crate::ofrep::bare(e),
        Err(e) => return e.into_response(),
    };
    if ofrep
        && let Some(limit) = &state.ofrep_limit
        && let Err(wait) = limit.check(&who.id)
    {
        return crate::ofrep::too_many(wait);
    }
    if !who.limits.is_empty() && !ofrep {
        let params = RawPathParams::from_request_parts(&mut parts, &()).await.ok();
        let named = |key: &str| {
            params
                .iter()
                .flat_map(|p| p.iter())
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        };
        let project = named("project")
            .or_else(|| path.starts_with("/api/v1/projects/").then(|| named("name")).flatten())
            .or_else(|| {
                url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                    .find(|(k, _)| k == "project")
                    .map(|(_, v)| v.into_owned())
            });
        if let Err(o) = who.limits.admits(project.as_deref(), named("env").as_deref()) {
            return outside(&who, &o).into_response();
        }
    }
    parts.extensions.insert(Caller(who));
    next.run(Request::from_parts(parts, body)).await
}

/// The 403 for a request outside a token's limits, naming what the token may reach.
fn outside(who: &TokenInfo, o: &Outside) -> ApiError {
    let (name, limits) = (&who.name, &who.limits);
    let message = match o {
        Outside::NoProject => format!(
            "token `{name}` is limited to projects {}: this route names no project (routes that list take `?project=`)",
            limits.projects.join(", ")
        ),
        Outside::Project(p) => format!(
            "token `{name}` is limited to projects {}, not `{p}`",
            limits.projects.join(", ")
        ),
        Outside::Environment(e) => format!(
            "token `{name}` is limited to environments {}, not `{e}`",
            limits.environments.join(", ")
        ),
    };
    ApiError::new(StatusCode::FORBIDDEN, message)
}
