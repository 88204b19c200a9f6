//! The API, called in-process: every page reads what the JSON API answers and every button
//! posts to an API route, with the session's token as the bearer. So a page shows what that
//! token may see, a button needs the scope its route needs, and the API's limits, audit and
//! errors apply unchanged (the UI has no store access of its own).

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::ServiceExt;

/// Most a JSON answer read by a page may be.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// The API's router, with its state.
#[derive(Clone)]
pub struct Api(pub Router);

/// What an API call that did not succeed said.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let page = crate::pages::error_page(self.status, &self.message);
        (self.status, axum::response::Html(page.into_string())).into_response()
    }
}

/// One path segment, percent-encoded (names may hold spaces, `#` or `/`).
pub fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Api {
    /// Sends one request to the API and answers its response as it is (streams stay streams).
    pub async fn send(
        &self,
        secret: &str,
        method: Method,
        path_and_query: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<&Value>,
    ) -> Response {
        let mut req = Request::builder().method(method).uri(path_and_query);
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {secret}")) {
            req = req.header(header::AUTHORIZATION, v);
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let req = match req.body(body) {
            Ok(r) => r,
            Err(e) => return Failure::new(StatusCode::BAD_REQUEST, format!("bad request: {e}")).into_response(),
        };
        match self.0.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    async fn json(&self, secret: &str, method: Method, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let resp = self.send(secret, method, path, &[], body).await;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| Failure::new(StatusCode::BAD_GATEWAY, format!("reading {path}: {e}")))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<takt_api::ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Failure::new(status, message));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure::new(
                StatusCode::BAD_GATEWAY,
                format!("the answer of {path} is not JSON: {e}"),
            )
        })
    }

    /// A GET of a JSON route, read as `T`.
    pub async fn get<T: DeserializeOwned>(&self, secret: &str, path: &str) -> Result<T, Failure> {
        let v = self.json(secret, Method::GET, path, None).await?;
        serde_json::from_value(v).map_err(|e| {
            Failure::new(
                StatusCode::BAD_GATEWAY,
                format!("the answer of {path} is not what the UI reads: {e}"),
            )
        })
    }

    /// A POST to a route, with a JSON body or none.
    pub async fn post(&self, secret: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        self.json(secret, Method::POST, path, body).await
    }

    /// The position of the log's last event.
    pub async fn head(&self, secret: &str) -> Result<i64, Failure> {
        let page: takt_api::EventsPage = self
            .get(secret, &format!("/api/v1/events?after={}&limit=1", i64::MAX))
            .await?;
        Ok(page.head)
    }
}

/// The headers of an API answer worth passing on to the browser (logs: type, range, length).
pub fn pass_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for h in [
        header::CONTENT_TYPE,
        header::CONTENT_RANGE,
        header::CONTENT_LENGTH,
        header::ACCEPT_RANGES,
        header::CACHE_CONTROL,
    ] {
        if let Some(v) = from.get(&h) {
            to.insert(h, v.clone());
        }
    }
    if let Some(v) = from.get("x-takt-log") {
        to.insert(HeaderName::from_static("x-takt-log"), v.clone());
    }
}
