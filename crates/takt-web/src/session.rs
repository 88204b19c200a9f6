//! Sessions: an API token (of scope read, ci, deploy or admin) logs in once; the browser then
//! holds a random session id in an HttpOnly, SameSite=Strict cookie (Secure under TLS), and
//! every form carries the session's CSRF token. The token's secret stays on the server, in
//! memory: a restart logs everyone out, and a revoked token ends its sessions at their next
//! request (the API answers 401).

use axum::http::HeaderMap;
use axum::http::header;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use takt_api::Scope;

/// The session cookie's name.
pub const COOKIE: &str = "takt_session";
/// The login form's own CSRF cookie (double submit: there is no session yet).
pub const LOGIN_COOKIE: &str = "takt_login";
/// How long a session lasts without use.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once (the oldest goes first).
const MAX_SESSIONS: usize = 10_000;

/// One logged-in browser.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    /// The API token it acts with.
    pub secret: String,
    /// The token's name and scope (what the header shows).
    pub name: String,
    pub scope: Scope,
    /// Every form of this session carries it.
    pub csrf: String,
    last_used: Mutex<Instant>,
}

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Arc<Session>>>,
}

/// 32 random bytes, hex.
pub fn random_id() -> Option<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).ok()?;
    Some(hex::encode(b))
}

/// The scopes that may open a session: flags tokens (for SDKs) may not.
pub fn may_log_in(scope: Scope) -> bool {
    matches!(scope, Scope::Read | Scope::Ci | Scope::Deploy | Scope::Admin)
}

impl Sessions {
    pub fn open(&self, secret: String, name: String, scope: Scope) -> Option<Arc<Session>> {
        let s = Arc::new(Session {
            id: random_id()?,
            secret,
            name,
            scope,
            csrf: random_id()?,
            last_used: Mutex::new(Instant::now()),
        });
        let mut all = self.by_id.lock();
        all.retain(|_, s| s.last_used.lock().elapsed() < IDLE);
        if all.len() >= MAX_SESSIONS
            && let Some(oldest) = all.values().min_by_key(|s| *s.last_used.lock()).map(|s| s.id.clone())
        {
            all.remove(&oldest);
        }
        all.insert(s.id.clone(), s.clone());
        Some(s)
    }

    /// The live session a request's cookie names.
    pub fn get(&self, headers: &HeaderMap) -> Option<Arc<Session>> {
        let id = cookie(headers, COOKIE)?;
        let mut all = self.by_id.lock();
        let s = all.get(&id)?.clone();
        let mut last = s.last_used.lock();
        if last.elapsed() >= IDLE {
            drop(last);
            all.remove(&id);
            return None;
        }
        *last = Instant::now();
        drop(last);
        Some(s)
    }

    pub fn close(&self, id: &str) {
        self.by_id.lock().remove(id);
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, whole site; Secure when served over TLS.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// Whether a form's CSRF token is the expected one (constant time).
pub fn csrf_ok(expected: &str, got: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    got.is_some_and(|g| g.len() == expected.len() && bool::from(g.as_bytes().ct_eq(expected.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "a=1; takt_session=abc".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn csrf_needs_the_same_token() {
        assert!(csrf_ok("abcd", Some("abcd")));
        assert!(!csrf_ok("abcd", Some("abce")));
        assert!(!csrf_ok("abcd", Some("abc")));
        assert!(!csrf_ok("abcd", None));
    }

    #[test]
    fn flags_tokens_cannot_log_in() {
        assert!(!may_log_in(Scope::Flags));
        assert!(may_log_in(Scope::Read));
    }

    #[test]
    fn a_closed_session_is_gone() {
        let s = Sessions::default();
        let one = s
            .open("takt_x".into(), "me".into(), Scope::Read)
            .unwrap_or_else(|| unreachable!());
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("{COOKIE}={}", one.id)
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert!(s.get(&h).is_some());
        s.close(&one.id);
        assert!(s.get(&h).is_none());
    }
}
