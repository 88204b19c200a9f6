//! takt's feature flags in a Rust service, evaluated in-process: [`FlagsClient`] keeps a copy
//! of the flags one `flags` token sees (its project and environment, run-time changes
//! included), evaluates them with the same code as the server (`takt-flags`, flagd's
//! semantics), and keeps the copy current by listening to the server's event stream — no
//! request per evaluation, no polling (docs/flags.md, "In a Rust service").
//!
//! ```no_run
//! # async fn run() -> Result<(), takt_flags_client::ClientError> {
//! let flags = takt_flags_client::FlagsClient::connect("http://takt:8080", "takt_…").await?;
//! let ctx = serde_json::json!({"targetingKey": "user-42", "plan": "pro"});
//! if flags.boolean("new-checkout", ctx.as_object().unwrap(), false) {
//!     // the new checkout
//! }
//! # Ok(()) }
//! ```
//!
//! For `https://` it installs rustls's ring crypto provider unless the process installed one.

use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
pub use takt_flags::{ErrorCode, FlagSet, Reason, Resolution};
use tokio::sync::watch;

/// Why the first copy could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the takt server at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the takt server answered {status} for {url}: {body}")]
    Refused { url: String, status: u16, body: String },
    #[error("the flag document from {url} does not parse: {0}", url = .1)]
    BadDocument(String, String),
}

struct Inner {
    base: String,
    token: String,
    http: reqwest::Client,
    set: RwLock<Arc<FlagSet>>,
    etag: Mutex<Option<String>>,
    /// Bumped each time a new copy is in place.
    version: watch::Sender<u64>,
}

/// A synced copy of one environment's flags. Cheap to clone; the sync stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct FlagsClient {
    inner: Arc<Inner>,
    _sync: Arc<Sync>,
}

/// Ends the sync task when dropped.
struct Sync(tokio::task::JoinHandle<()>);

impl Drop for Sync {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl FlagsClient {
    /// Fetches the flags `token` (a `flags` token, made for one project and environment) sees
    /// from the takt server at `base_url`, then keeps them current in the background.
    pub async fn connect(base_url: &str, token: &str) -> Result<FlagsClient, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        // reqwest needs a crypto provider for https: ring, unless the service chose one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A connection that goes silent (a dropped load balancer's) is given up.
            .read_timeout(SILENCE)
            .build()
            .map_err(|source| ClientError::Unreachable {
                url: base.clone(),
                source,
            })?;
        let Fetched::New(set, etag) = fetch(&http, &base, token, None).await? else {
            let why = "304 Not Modified to a request that named no ETag".to_string();
            return Err(ClientError::BadDocument(why, format!("{base}/api/v1/flags/document")));
        };
        let inner = Arc::new(Inner {
            base,
            token: token.to_string(),
            http,
            set: RwLock::new(Arc::new(set)),
            etag: Mutex::new(etag),
            version: watch::channel(1).0,
        });
        let task = tokio::spawn(sync(inner.clone()));
        Ok(FlagsClient {
            inner,
            _sync: Arc::new(Sync(task)),
        })
    }

    /// The flags as they are now (evaluate many against one copy).
    pub fn snapshot(&self) -> Arc<FlagSet> {
        self.inner.set.read().clone()
    }

    /// Told each time a new copy is in place (the value counts the copies).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    /// Evaluates `key` for `context` as flagd and takt's OFREP do (`$flagd.timestamp` is now).
    pub fn evaluate(&self, key: &str, context: &Map<String, Value>) -> Resolution {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.snapshot().evaluate(key, context, now)
    }

    /// A boolean flag's value, or `default` (disabled, unknown, another type, no default).
    pub fn boolean(&self, key: &str, context: &Map<String, Value>, default: bool) -> bool {
        self.evaluate(key, context)
            .value
            .and_then(|v| v.as_bool())
            .unwrap_or(default)
    }

    /// A string flag's value, or `default`.
    pub fn string(&self, key: &str, context: &Map<String, Value>, default: &str) -> String {
        match self.evaluate(key, context).value {
            Some(Value::String(s)) => s,
            _ => default.to_string(),
        }
    }

    /// An integer flag's value, or `default`.
    pub fn integer(&self, key: &str, context: &Map<String, Value>, default: i64) -> i64 {
        self.evaluate(key, context)
            .value
            .and_then(|v| v.as_i64())
            .unwrap_or(default)
    }

    /// A float (or integer) flag's value, or `default`.
    pub fn float(&self, key: &str, context: &Map<String, Value>, default: f64) -> f64 {
        self.evaluate(key, context)
            .value
            .and_then(|v| v.as_f64())
            .unwrap_or(default)
    }

    /// An object flag's value, or `default`.
    pub fn object(&self, key: &str, context: &Map<String, Value>, default: Value) -> Value {
        match self.evaluate(key, context).value {
            Some(v @ Value::Object(_)) => v,
            _ => default,
        }
    }
}

/// What a fetch of the document brought.
enum Fetched {
    Unchanged,
    New(FlagSet, Option<String>),
}

/// Fetches the flagd document `token` sees, unless it still has ETag `etag` (304).
async fn fetch(http: &reqwest::Client, base: &str, token: &str, etag: Option<String>) -> Result<Fetched, ClientError> {
    let url = format!("{base}/api/v1/flags/document");
    let mut req = http.get(&url).bearer_auth(token).timeout(FETCH_TIMEOUT);
    if let Some(tag) = etag {
        req = req.header(reqwest::header::IF_NONE_MATCH, tag);
    }
    let unreachable = |source| ClientError::Unreachable {
        url: url.clone(),
        source,
    };
    let res = req.send().await.map_err(unreachable)?;
    let status = res.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::Unchanged);
    }
    let etag = res
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = res.text().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(ClientError::Refused {
            url,
            status: status.as_u16(),
            body,
        });
    }
    let doc: Value = serde_json::from_str(&body).map_err(|e| ClientError::BadDocument(e.to_string(), url.clone()))?;
    let set = takt_flags::parse(&doc).map_err(|p| {
        let p: Vec<String> = p.iter().map(ToString::to_string).collect();
        ClientError::BadDocument(p.join("; "), url.clone())
    })?;
    Ok(Fetched::New(set, etag))
}

/// Re-fetches the document and puts a new one in place (a failure keeps the copy there is).
async fn refetch(inner: &Inner) {
    let etag = inner.etag.lock().clone();
    if let Ok(Fetched::New(set, etag)) = fetch(&inner.http, &inner.base, &inner.token, etag).await {
        *inner.set.write() = Arc::new(set);
        *inner.etag.lock() = etag;
        inner.version.send_modify(|v| *v += 1);
    }
}

/// The server comments on the stream every 15 s: this long without a byte, it is gone.
const SILENCE: Duration = Duration::from_secs(45);

/// The longest a re-fetch of the document may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Listens to the server's event stream and re-fetches on each `refetchEvaluation` (and after
/// each reconnection, for what it missed); reconnects with exponential backoff, up to 30 s.
async fn sync(inner: Arc<Inner>) {
    use backon::BackoffBuilder;
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times();
    let mut delays = builder.build();
    loop {
        let url = format!("{}/ofrep/v1/events", inner.base);
        let res = inner.http.get(&url).bearer_auth(&inner.token).send().await;
        if let Ok(res) = res.and_then(|r| r.error_for_status()) {
            refetch(&inner).await;
            let mut stream = res.bytes_stream();
            let mut pending: Vec<u8> = Vec::new();
            // Silence longer than the server's comments ends the connection (and reconnects).
            while let Ok(Some(Ok(chunk))) = tokio::time::timeout(SILENCE, stream.next()).await {
                // The stream works: the next failure starts the backoff from its shortest
                // (a proxy that accepts and hangs up at once keeps growing it instead).
                delays = builder.build();
                pending.extend_from_slice(&chunk);
                if pending.len() > 64 * 1024 && !pending.contains(&b'\n') {
                    pending.clear(); // no line is this long: not an event stream
                }
                // SSE: events are lines; only a `data:` line asking to re-fetch matters.
                while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    if line.starts_with(b"data:") && line.windows(17).any(|w| w == b"refetchEvaluation") {
                        refetch(&inner).await;
                    }
                }
            }
        }
        let wait = delays.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(wait).await;
    }
}
