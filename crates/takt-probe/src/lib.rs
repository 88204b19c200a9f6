//! The probes of health checks: HTTP, TCP, DNS and command, each filling a
//! [`takt_monitor::condition::Probe`] that the check's conditions then judge. A probe never
//! fails as such: what it could not do shows in what it saw (not connected, no status).
//!
//! The CD service uses the same probes for smoke checks and analyses that name a
//! check (`crates/takt-driver/src/checks.rs`).

mod dns;
pub mod metric;

use std::time::{Duration, Instant};
use takt_monitor::condition::Probe;
use takt_pipeline::ProbeSpec;

/// The most of a body or a command's output a condition sees.
pub const MAX_BODY: usize = 1 << 20;

/// The largest Prometheus page a `metric` check reads.
pub const METRICS_PAGE: usize = 16 << 20;

/// Probes with shared HTTP clients (one that follows redirects, one that does not).
#[derive(Clone)]
pub struct Prober {
    follow: reqwest::Client,
    stay: reqwest::Client,
    /// The same, accepting any certificate (`insecure: true`).
    follow_insecure: reqwest::Client,
    stay_insecure: reqwest::Client,
}

impl Prober {
    pub fn new() -> Result<Prober, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default(); // TLS on ring: see Cargo.toml
        let client = |follow: bool, insecure: bool| {
            let redirects = if follow {
                reqwest::redirect::Policy::limited(10)
            } else {
                reqwest::redirect::Policy::none()
            };
            reqwest::Client::builder()
                .no_proxy()
                .redirect(redirects)
                .tls_info(true)
                .tls_danger_accept_invalid_certs(insecure)
                .user_agent(concat!("takt-check/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        Ok(Prober {
            follow: client(true, false)?,
            stay: client(false, false)?,
            follow_insecure: client(true, true)?,
            stay_insecure: client(false, true)?,
        })
    }

    /// Probes `spec` within `timeout`; an HTTP `path` goes to `base` (the environment's public
    /// address). A heartbeat is not probed: it is pushed.
    pub async fn probe(&self, spec: &ProbeSpec, base: Option<&str>, timeout: Duration) -> Probe {
        let started = Instant::now();
        // Out of time: nothing seen.
        let mut p: Probe = tokio::time::timeout(timeout, self.run(spec, base))
            .await
            .unwrap_or_default();
        p.response_time = started.elapsed();
        p
    }

    async fn run(&self, spec: &ProbeSpec, base: Option<&str>) -> Probe {
        match spec {
            ProbeSpec::Http {
                url,
                path,
                method,
                headers,
                body,
                follow_redirects,
                insecure,
            } => {
                let Some(target) = target(url, path, base) else {
                    return Probe::default();
                };
                let client = match (*follow_redirects, *insecure) {
                    (true, false) => &self.follow,
                    (false, false) => &self.stay,
                    (true, true) => &self.follow_insecure,
                    (false, true) => &self.stay_insecure,
                };
                let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
                let mut req = client.request(method, &target);
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                if let Some(b) = body {
                    req = req.body(b.clone());
                }
                let Ok(mut res) = req.send().await else {
                    return Probe::default();
                };
                let certificate_expiration = res
                    .extensions()
                    .get::<reqwest::tls::TlsInfo>()
                    .and_then(|t| t.peer_certificate())
                    .and_then(expires_in);
                let mut p = Probe {
                    status: Some(res.status().as_u16()),
                    connected: true,
                    ip: res.remote_addr().map(|a| a.ip().to_string()),
                    certificate_expiration,
                    ..Probe::default()
                };
                let (bytes, _) = body_up_to(&mut res, MAX_BODY).await;
                p.body = Some(String::from_utf8_lossy(&bytes).into_owned());
                p
            }
            ProbeSpec::Tcp { host, port } => match tokio::net::TcpStream::connect((host.as_str(), *port)).await {
                Ok(s) => Probe {
                    connected: true,
                    ip: s.peer_addr().ok().map(|a| a.ip().to_string()),
                    ..Probe::default()
                },
                Err(_) => Probe::default(),
            },
            ProbeSpec::Dns { name, record, server } => dns::probe(name, record, server.as_deref()).await,
            ProbeSpec::Command(script) => {
                let out = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(script)
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .output()
                    .await;
                match out {
                    Ok(o) => {
                        let mut stdout = o.stdout;
                        stdout.truncate(MAX_BODY);
                        Probe {
                            connected: o.status.success(),
                            body: Some(String::from_utf8_lossy(&stdout).into_owned()),
                            ..Probe::default()
                        }
                    }
                    Err(_) => Probe::default(),
                }
            }
            ProbeSpec::Metric {
                url,
                path,
                name,
                labels,
                ..
            } => {
                let Some(target) = target(url, path, base) else {
                    return Probe::default();
                };
                // The text format: what every Prometheus client serves by default.
                let req = self.stay.get(&target).header("accept", "text/plain;version=0.0.4");
                let Ok(mut res) = req.send().await else {
                    return Probe::default();
                };
                let status = res.status();
                let (bytes, more) = body_up_to(&mut res, METRICS_PAGE).await;
                if more {
                    // Cut pages would lose series: a page this large is an error.
                    return Probe {
                        status: Some(status.as_u16()),
                        body: Some(format!("the page is larger than {} MiB", METRICS_PAGE >> 20)),
                        ..Probe::default()
                    };
                }
                let text = String::from_utf8_lossy(&bytes);
                let series = metric::select(&text, name, labels);
                Probe {
                    status: Some(status.as_u16()),
                    connected: status.is_success() && series.is_ok(),
                    ip: res.remote_addr().map(|a| a.ip().to_string()),
                    body: Some(match series {
                        Ok(s) => s.body(),
                        Err(e) => e,
                    }),
                    ..Probe::default()
                }
            }
            // Heartbeats are pushed; instances are asked of their supervisor (takt-observe's host).
            ProbeSpec::Heartbeat { .. } | ProbeSpec::Process { .. } => Probe::default(),
        }
    }
}

/// The body of `res`, at most `limit` bytes, and whether it had more.
async fn body_up_to(res: &mut reqwest::Response, limit: usize) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > limit {
            bytes.truncate(limit);
            return (bytes, true);
        }
    }
    (bytes, false)
}

/// Where an HTTP probe goes: its `url`, or its `path` on `base` (the environment's address).
fn target(url: &Option<String>, path: &Option<String>, base: Option<&str>) -> Option<String> {
    match (url, path, base) {
        (Some(u), _, _) => Some(u.clone()),
        (None, Some(p), Some(b)) => Some(format!("{}{p}", b.trim_end_matches('/'))),
        _ => None,
    }
}

/// How long until the DER certificate `der` expires (zero once it has); none if it does not
/// parse.
fn expires_in(der: &[u8]) -> Option<Duration> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let not_after = cert.tbs_certificate().validity().not_after.to_unix_duration();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(not_after.saturating_sub(now))
}
