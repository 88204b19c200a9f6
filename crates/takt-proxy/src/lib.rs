//! The `process` driver's reverse proxy: every request on the environment's public port goes to
//! one backend (an instance of the stable or the canary version), chosen by deterministic
//! weighted round-robin ([`takt_deploy::split`]), so that a canary at 10% gets exactly one
//! request in ten. It counts, per backend, requests, errors (5xx answers and unreachable
//! backends) and latency — what a canary analysis with `metric: proxy` measures. Weights change
//! at once, without dropping connections.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use takt_deploy::split::WeightedRoundRobin;
use tokio::net::TcpListener;

type Body = http_body_util::combinators::BoxBody<hyper::body::Bytes, hyper::Error>;

/// What the proxy saw of one backend since its weights were last set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub requests: u64,
    /// 5xx answers and failures to reach the backend.
    pub errors: u64,
    /// Sum of the time to the response's headers, in microseconds.
    pub latency_us_sum: u64,
}

impl Stats {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
    pub fn mean_latency_ms(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.latency_us_sum as f64 / self.requests as f64 / 1000.0
        }
    }
}

struct Backends {
    addrs: Vec<SocketAddr>,
    split: Option<WeightedRoundRobin>,
    stats: Vec<Stats>,
}

/// A weighted reverse proxy.
pub struct Proxy {
    backends: Mutex<Backends>,
    /// Requests answered 503 because no backend had weight, ever.
    refused: std::sync::atomic::AtomicU64,
    client: Client<HttpConnector, Incoming>,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy::new()
    }
}

impl Proxy {
    pub fn new() -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Proxy {
            backends: Mutex::new(Backends {
                addrs: Vec::new(),
                split: None,
                stats: Vec::new(),
            }),
            refused: std::sync::atomic::AtomicU64::new(0),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Sets the backends and their weights; statistics start again from zero. All weights zero
    /// (or none): every request gets 503.
    pub fn set(&self, backends: &[(SocketAddr, u32)]) {
        let weights: Vec<u32> = backends.iter().map(|(_, w)| *w).collect();
        {
            let mut b = self.backends.lock();
            b.addrs = backends.iter().map(|(a, _)| *a).collect();
            b.split = WeightedRoundRobin::new(&weights);
            b.stats = vec![Stats::default(); backends.len()];
        }
    }

    /// Requests answered 503 because no backend had weight, since the proxy started.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Per-backend statistics, in the order given to [`Proxy::set`].
    pub fn stats(&self) -> Vec<Stats> {
        self.backends.lock().stats.clone()
    }

    fn pick(&self) -> Option<(usize, SocketAddr)> {
        let mut b = self.backends.lock();
        let i = b.split.as_mut()?.pick();
        Some((i, b.addrs[i]))
    }

    fn record(&self, i: usize, error: bool, started: Instant) {
        let mut b = self.backends.lock();
        if let Some(s) = b.stats.get_mut(i) {
            s.requests += 1;
            s.errors += u64::from(error);
            s.latency_us_sum += started.elapsed().as_micros() as u64;
        }
    }

    async fn forward(&self, mut req: Request<Incoming>) -> Response<Body> {
        let Some((i, addr)) = self.pick() else {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return plain(StatusCode::SERVICE_UNAVAILABLE, "no backend has weight");
        };
        let started = Instant::now();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let uri = match format!("http://{addr}{path}").parse() {
            Ok(u) => u,
            Err(_) => return plain(StatusCode::BAD_REQUEST, "bad request target"),
        };
        *req.uri_mut() = uri;
        match self.client.request(req).await {
            Ok(res) => {
                self.record(i, res.status().is_server_error(), started);
                res.map(|b| b.boxed())
            }
            Err(e) => {
                self.record(i, true, started);
                tracing::warn!(backend = %addr, error = %e, "backend unreachable");
                plain(StatusCode::BAD_GATEWAY, "the backend could not be reached")
            }
        }
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy.forward(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let body = http_body_util::Full::new(hyper::body::Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}
