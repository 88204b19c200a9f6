//! Smoke checks (an HTTP request with conditions, or a command that must exit 0) and analysis
//! measurements (takt's proxy, a Prometheus query, an HTTP check, a command), judged by
//! `takt-deploy`'s conditions.

use crate::DriverError;
use crate::protocol::Traffic;
use std::path::Path;
use std::time::{Duration, Instant};
use takt_deploy::analysis::Measurement;
use takt_deploy::condition;
use takt_pipeline::Check;
use tokio::io::AsyncReadExt;

/// What a command did.
pub struct Output {
    pub success: bool,
    /// `exit code 3`, `killed by a signal`, `timed out after 30s`.
    pub code_text: String,
    /// The last 2 KiB of its stdout and stderr.
    pub output: String,
}

/// Runs `sh -c script` with exactly `env` (plus PATH, HOME, LANG if not given), bounded by
/// `timeout` (the process group is killed then).
pub async fn shell(
    script: &str,
    env: &[(String, String)],
    dir: Option<&Path>,
    timeout: Duration,
) -> Result<Output, DriverError> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(script).env_clear();
    for (k, v) in [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/tmp"),
        ("LANG", "C.UTF-8"),
    ] {
        if !env.iter().any(|(n, _)| n == k) {
            cmd.env(k, v);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| DriverError::Io(format!("cannot run `{script}`: {e}")))?;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let read = async {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut a).await;
        }
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut b).await;
        }
        a.extend_from_slice(&b);
        a
    };
    let waited = tokio::time::timeout(timeout, async {
        let text = read.await;
        (child.wait().await, text)
    })
    .await;
    let (status, text) = match waited {
        Ok((status, text)) => (status, text),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait().await;
            return Ok(Output {
                success: false,
                code_text: format!("timed out after {}s", timeout.as_secs()),
                output: String::new(),
            });
        }
    };
    let status = status.map_err(|e| DriverError::Io(e.to_string()))?;
    let text = String::from_utf8_lossy(&text);
    let tail = text.len().saturating_sub(2048);
    let tail = (tail..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    Ok(Output {
        success: status.success(),
        code_text: match status.code() {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".into(),
        },
        output: text[tail..].trim().to_string(),
    })
}

fn client() -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default(); // TLS on ring: see Cargo.toml
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())
}

/// Runs one smoke check against `base` (e.g. `http://127.0.0.1:8080`). `Err` says what failed.
pub async fn smoke(check: &Check, base: Option<&str>, env: &[(String, String)], dir: &Path) -> Result<String, String> {
    match check {
        Check::Http {
            path,
            status,
            body_contains,
            max_latency,
        } => {
            let Some(base) = base else {
                return Err("an http check needs the environment's `url`".into());
            };
            let url = format!("{base}{path}");
            let started = Instant::now();
            let resp = client()?
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let code = resp.status().as_u16();
            let body = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
            let took = started.elapsed();
            if code != *status {
                return Err(format!("GET {url} answered {code}, expected {status}"));
            }
            if let Some(want) = body_contains
                && !body.contains(want.as_str())
            {
                return Err(format!("GET {url}: the body does not contain `{want}`"));
            }
            if let Some(max) = max_latency
                && took > *max
            {
                return Err(format!(
                    "GET {url} took {} ms, more than {} ms",
                    took.as_millis(),
                    max.as_millis()
                ));
            }
            Ok(format!("GET {url} → {code} in {} ms", took.as_millis()))
        }
        Check::Health(c) => health(c, base).await,
        Check::Command(script) => {
            let out = shell(script, env, Some(dir), Duration::from_secs(60))
                .await
                .map_err(|e| e.to_string())?;
            if out.success {
                Ok(format!("`{script}` passed"))
            } else {
                Err(format!("`{script}` failed ({}): {}", out.code_text, out.output))
            }
        }
    }
}

/// Probes health check `c` once, an HTTP `path` sent to `base`, and judges it by its own
/// conditions: a degraded result passes (it says so), a failing one fails with the condition
/// that failed.
async fn health(c: &takt_pipeline::HealthCheck, base: Option<&str>) -> Result<String, String> {
    use takt_monitor::condition::Condition;
    use takt_monitor::threshold::{Outcome, judge};
    static PROBER: std::sync::OnceLock<Result<takt_probe::Prober, String>> = std::sync::OnceLock::new();
    let prober = PROBER
        .get_or_init(|| takt_probe::Prober::new().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| format!("cannot probe check `{}`: {e}", c.name))?;
    if let takt_pipeline::ProbeSpec::Http { path: Some(_), .. } | takt_pipeline::ProbeSpec::Metric { path: Some(_), .. } =
        &c.probe
        && base.is_none()
    {
        return Err(format!(
            "check `{}` probes a path, and this deploy has no address to send it to",
            c.name
        ));
    }
    let probe = prober.probe(&c.probe, base, c.timeout).await;
    let parse = |list: &[String]| -> Vec<Condition> { list.iter().filter_map(|t| Condition::parse(t).ok()).collect() };
    let (outcome, why) = judge(
        &probe,
        &parse(&c.conditions),
        &parse(&c.degraded_when),
        c.degraded_latency,
    );
    let took = probe.response_time.as_millis();
    let at = match &c.probe {
        takt_pipeline::ProbeSpec::Http { url: Some(u), .. } | takt_pipeline::ProbeSpec::Metric { url: Some(u), .. } => {
            format!(" at {u}")
        }
        takt_pipeline::ProbeSpec::Http { path: Some(p), .. }
        | takt_pipeline::ProbeSpec::Metric { path: Some(p), .. } => {
            format!(" at {}{p}", base.unwrap_or_default())
        }
        _ => String::new(),
    };
    let said = format!("check `{}`{at}: {why} (in {took} ms)", c.name);
    match outcome {
        Outcome::Fail => Err(said),
        Outcome::Degraded | Outcome::Pass => Ok(said),
    }
}

/// Judges values by the conditions as Argo Rollouts does: the success condition holding is a
/// success, the failure condition holding a failure; with only a success condition, its not
/// holding is a failure; with only a failure condition, its not holding is a success; with both
/// and neither holding, inconclusive.
pub fn judge(success: Option<&str>, failure: Option<&str>, vars: &[(&str, f64)]) -> (Measurement, String) {
    let values = vars
        .iter()
        .map(|(k, v)| format!("{k}={v:.4}"))
        .collect::<Vec<_>>()
        .join(" ");
    let eval = |c: &str| condition::eval(c, vars);
    let verdict = match (success, failure) {
        (Some(s), f) => match eval(s) {
            Err(e) => return (Measurement::Error, e),
            Ok(true) => Measurement::Successful,
            Ok(false) => match f.map(eval) {
                None => Measurement::Failed,
                Some(Err(e)) => return (Measurement::Error, e),
                Some(Ok(true)) => Measurement::Failed,
                Some(Ok(false)) => Measurement::Inconclusive,
            },
        },
        (None, Some(f)) => match eval(f) {
            Err(e) => return (Measurement::Error, e),
            Ok(true) => Measurement::Failed,
            Ok(false) => Measurement::Successful,
        },
        (None, None) => Measurement::Successful,
    };
    (verdict, values)
}

/// The values a proxy measurement offers to conditions.
pub fn proxy_values(t: &Traffic) -> [(&'static str, f64); 3] {
    [
        ("error_rate", t.error_rate()),
        ("latency_ms", t.mean_latency_ms()),
        ("requests", t.requests as f64),
    ]
}

/// A Prometheus instant query's first value (`result`).
pub async fn prometheus(url: &str, query: &str) -> Result<f64, String> {
    let endpoint = format!("{}/api/v1/query", url.trim_end_matches('/'));
    let v: serde_json::Value = client()?
        .get(&endpoint)
        .query(&[("query", query)])
        .send()
        .await
        .map_err(|e| format!("{endpoint}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{endpoint}: {e}"))?;
    let value = v["data"]["result"][0]["value"][1]
        .as_str()
        .or_else(|| v["data"]["result"][1].as_str())
        .ok_or_else(|| format!("`{query}` returned no value"))?;
    value
        .parse::<f64>()
        .map_err(|_| format!("`{query}` returned `{value}`, not a number"))
}
