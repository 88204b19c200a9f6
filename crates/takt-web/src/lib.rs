//! takt's web UI, served by `takt serve` at `/`: server-rendered HTML (maud), one stylesheet
//! and a little JavaScript for what must move live (logs, a deploy's weight), all compiled
//! into the binary.
//!
//! The UI is a client of the API in the same process ([`api::Api`]): pages read the typed
//! answers of the JSON routes and every button posts to a route of the route table, with the
//! session's token. It holds no state but its sessions and never touches the store.

pub mod api;
pub mod pages;
pub mod session;

use api::{Api, Failure};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use session::{Session, Sessions};
use std::sync::Arc;

/// What the UI's handlers share.
pub struct Web {
    pub api: Api,
    pub sessions: Sessions,
    /// Cookies get `Secure` (the server is reached over TLS).
    pub secure: bool,
}

/// Largest form the UI accepts.
const MAX_FORM: usize = 64 * 1024;

/// The UI's routes; `api` is the API's router (with its state), which the UI calls in-process.
pub fn router(api: Router, secure: bool) -> Router {
    let web = Arc::new(Web {
        api: Api(api),
        sessions: Sessions::default(),
        secure,
    });
    Router::new()
        .route("/", get(pages::projects))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/projects/{project}", get(pages::runs))
        .route("/projects/{project}/runs/{run}", get(pages::run))
        .route("/artifacts", get(pages::artifacts))
        .route("/artifacts/{name}/{version}", get(pages::artifact))
        .route("/environments", get(pages::environments))
        .route("/flags", get(pages::flags))
        .route("/incidents", get(pages::incidents))
        .route("/incidents/{project}/{number}", get(pages::incident))
        .route("/flow", get(pages::flow))
        .route("/ui/do", post(act))
        .route("/ui/log/{project}/{run}/{job}", get(log))
        .route("/ui/live", get(live))
        .route("/ui/app.css", get(css))
        .route("/ui/app.js", get(js))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .with_state(web)
}

/// A page's request with a live session; without one, the browser goes to the login page
/// (and comes back after it).
pub struct Authed(pub Arc<Session>);

impl FromRequestParts<Arc<Web>> for Authed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Authed, Response> {
        match web.sessions.get(&parts.headers) {
            Some(s) => Ok(Authed(s)),
            None if parts.uri.path().starts_with("/ui/") => {
                Err(Failure::new(StatusCode::UNAUTHORIZED, "log in first: /login").into_response())
            }
            None => {
                let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let to = format!("/login?next={}", api::seg(next));
                Err(Redirect::to(&to).into_response())
            }
        }
    }
}

/// A local path to go back to (never another site).
fn local(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
    /// A login link (`takt demo --serve` prints one): the token itself.
    token: Option<String>,
}

async fn login_form(State(web): State<Arc<Web>>, Query(q): Query<LoginQuery>) -> Response {
    if let Some(t) = q.token {
        return start_session(&web, t.trim(), &local(q.next.as_deref())).await;
    }
    let Some(csrf) = session::random_id() else {
        return Failure::new(StatusCode::SERVICE_UNAVAILABLE, "no randomness for a session").into_response();
    };
    let page = pages::login_page(&csrf, &local(q.next.as_deref()), None);
    login_answer(&web, &csrf, StatusCode::OK, page)
}

fn login_answer(web: &Web, csrf: &str, status: StatusCode, page: maud::Markup) -> Response {
    let mut r = (status, Html(page.into_string())).into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        session::LOGIN_COOKIE,
        csrf,
        Some(3600),
        web.secure,
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// A form's fields.
fn form(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn login(State(web): State<Arc<Web>>, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let next = local(field(&f, "next"));
    let expected = session::cookie(&headers, session::LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::csrf_ok(&expected, field(&f, "_csrf")) {
        return Failure::new(
            StatusCode::FORBIDDEN,
            "this form's CSRF token is missing or stale: open /login again",
        )
        .into_response();
    }
    start_session(&web, field(&f, "token").unwrap_or("").trim(), &next).await
}

/// Checks a token with the API and opens a session for it.
async fn start_session(web: &Web, token: &str, next: &str) -> Response {
    let refused = |status: StatusCode, why: String| {
        let Some(csrf) = session::random_id() else {
            return Failure::new(StatusCode::SERVICE_UNAVAILABLE, "no randomness for a session").into_response();
        };
        login_answer(web, &csrf, status, pages::login_page(&csrf, next, Some(&why)))
    };
    if token.is_empty() {
        return refused(
            StatusCode::BAD_REQUEST,
            "paste an API token (`takt token create NAME --scope read`)".into(),
        );
    }
    let who: takt_api::Whoami = match web.api.get(token, "/api/v1/whoami").await {
        Ok(w) => w,
        Err(f) if f.status == StatusCode::FORBIDDEN => {
            return refused(
                StatusCode::FORBIDDEN,
                "this token cannot open a session: only tokens of scope read, ci, deploy or admin can (flags tokens are for SDKs)".into(),
            );
        }
        Err(f) => return refused(f.status, f.message),
    };
    if !session::may_log_in(who.token.scope) {
        return refused(
            StatusCode::FORBIDDEN,
            format!("a token of scope {} cannot open a session", who.token.scope),
        );
    }
    let Some(s) = web.sessions.open(token.to_string(), who.token.name, who.token.scope) else {
        return Failure::new(StatusCode::SERVICE_UNAVAILABLE, "no randomness for a session").into_response();
    };
    let mut r = Redirect::to(next).into_response();
    let cookies = [
        session::set_cookie(session::COOKIE, &s.id, None, web.secure),
        session::set_cookie(session::LOGIN_COOKIE, "", Some(0), web.secure),
    ];
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

async fn logout(State(web): State<Arc<Web>>, Authed(s): Authed, body: Bytes) -> Response {
    let f = form(&body);
    if !session::csrf_ok(&s.csrf, field(&f, "_csrf")) {
        return csrf_refused();
    }
    web.sessions.close(&s.id);
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(session::COOKIE, "", Some(0), web.secure)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn csrf_refused() -> Response {
    Failure::new(
        StatusCode::FORBIDDEN,
        "this form's CSRF token is missing or wrong: reload the page and try again",
    )
    .into_response()
}

/// Whether `path` is a POST route of the API's route table (the only thing a button may do).
fn is_post_route(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.split('/').collect();
    takt_api::ROUTES.iter().any(|r| {
        r.method == takt_api::Method::Post && r.permission.is_some() && {
            let want: Vec<&str> = r.path.split('/').collect();
            want.len() == segs.len()
                && want
                    .iter()
                    .zip(&segs)
                    .all(|(w, s)| (w.starts_with('{') && !s.is_empty()) || w == s)
        }
    })
}

/// A button: `_csrf`, `_api` (a POST route of the API), `_back` (where to go after), and the
/// body's fields (`_body`, a JSON object, plus any named field, e.g. `reason`, as a string).
async fn act(State(web): State<Arc<Web>>, Authed(s): Authed, body: Bytes) -> Response {
    let f = form(&body);
    if !session::csrf_ok(&s.csrf, field(&f, "_csrf")) {
        return csrf_refused();
    }
    let back = local(field(&f, "_back"));
    let Some(path) = field(&f, "_api").filter(|p| is_post_route(p)) else {
        return Failure::new(StatusCode::BAD_REQUEST, "this button names no action of the API").into_response();
    };
    let mut json = match field(&f, "_body").map(serde_json::from_str::<Value>) {
        None => serde_json::Map::new(),
        Some(Ok(Value::Object(m))) => m,
        Some(_) => return Failure::new(StatusCode::BAD_REQUEST, "`_body` must be a JSON object").into_response(),
    };
    for (k, v) in &f {
        if !k.starts_with('_') && !v.is_empty() {
            json.insert(k.clone(), Value::String(v.clone()));
        }
    }
    let body = (!json.is_empty()).then_some(Value::Object(json));
    let message = match web.api.post(&s.secret, path, body.as_ref()).await {
        Ok(v) => pages::done_message(path, &v),
        Err(f) if f.status == StatusCode::UNAUTHORIZED => {
            web.sessions.close(&s.id);
            return Redirect::to("/login").into_response();
        }
        Err(f) => format!("refused ({}): {}", f.status.as_u16(), f.message),
    };
    let mut r = Redirect::to(&back).into_response();
    let flash = api::seg(&message);
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(pages::FLASH, &flash, Some(30), web.secure)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct LogQuery {
    /// Follow from this byte offset (Server-Sent Events, ids are offsets).
    from: Option<u64>,
}

/// A job's log for the page's script: a byte range (the browser's `Range` header) or, with
/// `from`, followed live.
async fn log(
    State(web): State<Arc<Web>>,
    Authed(s): Authed,
    Path((project, run, job)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    let mut path = format!(
        "/api/v1/runs/{}/{}/logs/{}",
        api::seg(&project),
        api::seg(&run),
        api::seg(&job)
    );
    let mut pass: Vec<(HeaderName, HeaderValue)> = Vec::new();
    if let Some(from) = q.from {
        path.push_str("?follow=true");
        if let Ok(v) = HeaderValue::from_str(&from.to_string()) {
            pass.push((HeaderName::from_static("last-event-id"), v));
        }
    } else if let Some(r) = headers.get(header::RANGE) {
        pass.push((header::RANGE, r.clone()));
    }
    let resp = web.api.send(&s.secret, Method::GET, &path, &pass, None).await;
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    api::pass_headers(&parts.headers, out.headers_mut());
    out
}

#[derive(Deserialize)]
struct LiveQuery {
    /// The log position the page was drawn at.
    after: i64,
}

/// What is recorded about reading (audit), not a change a page shows: a page that reads the
/// artifacts records `artifact_read`, and must not redraw itself for that.
const QUIET_KINDS: &[&str] = &["artifact_read", "artifact_downloaded", "token_used", "security_summary"];

/// Tells a page when the log moved past what it shows (`changed`, with the new head), so its
/// script redraws the live parts: a long poll of the API's event log, as Server-Sent Events.
async fn live(State(web): State<Arc<Web>>, Authed(s): Authed, Query(q): Query<LiveQuery>) -> Response {
    let stream = futures_util::stream::unfold((web, s, q.after), |(web, s, after)| async move {
        let path = format!("/api/v1/events?after={after}&limit=1000&wait=25");
        match web.api.get::<takt_api::EventsPage>(&s.secret, &path).await {
            Ok(page) => {
                let head = page.head.max(after);
                let moved = page.events.iter().any(|e| {
                    e.get("kind")
                        .and_then(Value::as_str)
                        .is_none_or(|k| !QUIET_KINDS.contains(&k))
                });
                let ev = if moved {
                    SseEvent::default().event("changed").data(head.to_string())
                } else {
                    SseEvent::default().comment("idle")
                };
                Some((Ok::<_, std::convert::Infallible>(ev), (web, s, head)))
            }
            Err(_) => None,
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("../assets/app.css"))
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../assets/app.js"))
}

fn asset(media: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, media),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_reach_post_routes_only() {
        assert!(is_post_route("/api/v1/runs/shop/3/retry"));
        assert!(is_post_route("/api/v1/environments/shop/production/halt"));
        assert!(!is_post_route("/api/v1/runs/shop/3"));
        assert!(!is_post_route("/api/v1/runs//retry"));
        assert!(
            !is_post_route("/api/v1/hooks/github/shop"),
            "public routes are not buttons"
        );
        assert!(!is_post_route("/elsewhere"));
    }

    #[test]
    fn going_back_stays_on_this_site() {
        assert_eq!(local(Some("/projects/shop")), "/projects/shop");
        assert_eq!(local(Some("//evil.example/")), "/");
        assert_eq!(local(Some("https://evil.example/")), "/");
        assert_eq!(local(None), "/");
    }
}
