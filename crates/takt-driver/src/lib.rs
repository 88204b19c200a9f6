//! How an artifact runs in an environment. A [`Driver`] starts a release beside what runs,
//! shares traffic between releases, stops one, and (where it can) reports the traffic each
//! received. Strategies (recreate, rolling, canary, blue/green: `takt-server`'s deploy module,
//! over `takt-deploy`'s state machine) only ever call this interface, so a Kubernetes driver
//! can be added without touching them.
//!
//! - [`ProcessDriver`]: N supervised local instances behind takt's own weighted proxy, run by a
//!   long-lived [`supervisor`] per environment (`takt supervise`).
//! - [`NginxDriver`]: the same instances, with traffic shared by a real nginx: takt writes an
//!   upstream file with weights and runs the reload command.
//! - [`CommandDriver`]: the user's deploy script, told what to do in `TAKT_*` variables.
//! - [`checks`]: smoke checks and analysis measurements.

pub mod checks;
pub mod client;
pub mod protocol;
pub mod supervisor;

use client::SupervisorClient;
use protocol::{Request, Status, Traffic};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Io(String),
}

/// One artifact prepared for an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Names it in the driver (the digest's first 12 hex digits).
    pub slot: String,
    pub name: String,
    pub version: String,
    pub digest: String,
    /// The verified read-only copy of the artifact (`TAKT_ARTIFACT_PATH`).
    pub artifact_path: PathBuf,
    /// Its directory (an archive is unpacked here): the instances' working directory.
    pub dir: PathBuf,
    /// Variables for the service: the environment's `variables` and `secrets`, `TAKT_*`.
    pub env: Vec<(String, String)>,
}

/// What the strategies need of a driver.
pub trait Driver: Send + Sync {
    /// Starts `r` beside what runs; it receives no traffic yet.
    fn start(&self, r: &Release) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Shares the environment's traffic: percent per release; releases not named get none.
    fn route(&self, weights: &[(&Release, u8)]) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Sends a preview port's traffic to `r` (blue/green), or to nothing.
    fn preview(&self, port: u16, r: Option<&Release>) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Stops `r`.
    fn stop(&self, r: &Release) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// The traffic `r` has received so far (counters), if this driver can see it.
    fn traffic(&self, r: &Release) -> impl Future<Output = Result<Option<Traffic>, DriverError>> + Send;
    /// Where smoke checks reach `r` alone (an instance), if the driver can say.
    fn direct_url(&self, r: &Release) -> impl Future<Output = Option<String>> + Send;
    /// Whether `r` is running.
    fn running(&self, r: &Release) -> impl Future<Output = bool> + Send;
}

/// Settings of the process and nginx drivers.
#[derive(Debug, Clone)]
pub struct ProcessSettings {
    pub instances: u32,
    /// `sh -c` command; `None`: the artifact is executable and starts itself.
    pub start: Option<String>,
    pub health: String,
    pub ready_timeout: Duration,
}

fn start_request(s: &ProcessSettings, r: &Release) -> Request {
    let command = match &s.start {
        Some(c) => c.clone(),
        None => "exec \"$TAKT_ARTIFACT_PATH\"".to_string(),
    };
    Request::Start {
        slot: r.slot.clone(),
        dir: r.dir.clone(),
        command,
        instances: s.instances,
        env: r.env.clone(),
        health: s.health.clone(),
        ready_timeout_ms: s.ready_timeout.as_millis() as u64,
    }
}

/// A port free on 127.0.0.1 now, for an instance to listen on: from below the kernel's range
/// of ephemeral ports (`/proc/sys/net/ipv4/ip_local_port_range`, 32768 up by default), so that
/// no outgoing connection can take it between now and the instance's bind, starting at a place
/// that differs per process and call; the kernel's own choice if that range is too small.
pub fn free_port() -> Option<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const FROM: u32 = 10_000;
    if low > FROM + 1000 {
        let span = low - FROM;
        let seed = std::process::id().wrapping_mul(2_654_435_761) ^ NEXT.fetch_add(7919, Ordering::Relaxed);
        for i in 0..200 {
            let port = FROM + (seed.wrapping_add(i * 104_729)) % span;
            let Ok(port) = u16::try_from(port) else { continue };
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Some(port);
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .ok()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port())
}

/// The name a release has in a driver: its digest's first 12 hex digits.
pub fn slot_for(digest: &str) -> String {
    digest.trim_start_matches("sha256:").chars().take(12).collect()
}

fn slot_of<'a>(status: &'a Status, r: &Release) -> Option<&'a protocol::SlotStatus> {
    status.slots.iter().find(|s| s.slot == r.slot)
}

/// The `process` driver: supervised instances behind takt's proxy on the public port.
pub struct ProcessDriver {
    pub supervisor: SupervisorClient,
    pub settings: ProcessSettings,
}

impl Driver for ProcessDriver {
    async fn start(&self, r: &Release) -> Result<(), DriverError> {
        self.supervisor
            .request(&start_request(&self.settings, r))
            .await
            .map(|_| ())
    }
    async fn route(&self, weights: &[(&Release, u8)]) -> Result<(), DriverError> {
        let weights = weights.iter().map(|(r, w)| (r.slot.clone(), u32::from(*w))).collect();
        self.supervisor.request(&Request::Route { weights }).await.map(|_| ())
    }
    async fn preview(&self, port: u16, r: Option<&Release>) -> Result<(), DriverError> {
        let slot = r.map(|r| r.slot.clone());
        self.supervisor
            .request(&Request::Preview { port, slot })
            .await
            .map(|_| ())
    }
    async fn stop(&self, r: &Release) -> Result<(), DriverError> {
        let slot = r.slot.clone();
        self.supervisor.request(&Request::Stop { slot }).await.map(|_| ())
    }
    async fn traffic(&self, r: &Release) -> Result<Option<Traffic>, DriverError> {
        let status = self.supervisor.request(&Request::Status).await?;
        Ok(slot_of(&status, r).map(|s| s.traffic))
    }
    async fn direct_url(&self, r: &Release) -> Option<String> {
        let status = self.supervisor.status().await?;
        let port = slot_of(&status, r)?.instances.first()?.port;
        Some(format!("http://127.0.0.1:{port}"))
    }
    async fn running(&self, r: &Release) -> bool {
        let status = self.supervisor.status().await;
        status.is_some_and(|s| slot_of(&s, r).is_some())
    }
}

/// The `nginx` driver: supervised instances (no proxy of ours); a real nginx shares the traffic
/// from an upstream file that takt writes (`upstream NAME { server 127.0.0.1:P weight=W; }`) and
/// reloads with the environment's `reload` command.
pub struct NginxDriver {
    /// The instances, run as the process driver runs them (its supervisor has no proxy).
    pub instances: ProcessDriver,
    /// The upstream block's name (`takt_<environment>`).
    pub upstream_name: String,
    pub upstream_file: PathBuf,
    pub reload: String,
    pub env: Vec<(String, String)>,
}

impl Driver for NginxDriver {
    async fn start(&self, r: &Release) -> Result<(), DriverError> {
        self.instances.start(r).await
    }
    async fn route(&self, weights: &[(&Release, u8)]) -> Result<(), DriverError> {
        let status = self.instances.supervisor.request(&Request::Status).await?;
        let mut body = format!("# written by takt; do not edit\nupstream {} {{\n", self.upstream_name);
        let mut any = false;
        for (r, w) in weights.iter().filter(|(_, w)| *w > 0) {
            let Some(slot) = slot_of(&status, r) else {
                return Err(DriverError::Failed(format!("{} is not running", r.slot)));
            };
            for i in &slot.instances {
                body.push_str(&format!("    server 127.0.0.1:{} weight={w};\n", i.port));
                any = true;
            }
        }
        if !any {
            // nginx refuses an empty upstream: a server that is always down keeps the config valid.
            body.push_str("    server 127.0.0.1:9 down;\n");
        }
        body.push_str("}\n");
        let tmp = self.upstream_file.with_extension("takt-tmp");
        std::fs::write(&tmp, body)
            .and_then(|_| std::fs::rename(&tmp, &self.upstream_file))
            .map_err(|e| DriverError::Io(format!("{}: {e}", self.upstream_file.display())))?;
        let out = checks::shell(&self.reload, &self.env, None, Duration::from_secs(30)).await?;
        if !out.success {
            return Err(DriverError::Failed(format!(
                "`{}` failed ({}): {}",
                self.reload, out.code_text, out.output
            )));
        }
        Ok(())
    }
    async fn preview(&self, port: u16, r: Option<&Release>) -> Result<(), DriverError> {
        self.instances.preview(port, r).await
    }
    async fn stop(&self, r: &Release) -> Result<(), DriverError> {
        self.instances.stop(r).await
    }
    /// nginx counts the traffic, not takt: analyses use another metric.
    async fn traffic(&self, _r: &Release) -> Result<Option<Traffic>, DriverError> {
        Ok(None)
    }
    async fn direct_url(&self, r: &Release) -> Option<String> {
        self.instances.direct_url(r).await
    }
    async fn running(&self, r: &Release) -> bool {
        self.instances.running(r).await
    }
}

/// The `command` driver: the environment's `deploy` script, run once per thing to do with
/// `TAKT_DEPLOY_STEP` = `start`, `route` (with `TAKT_TRAFFIC_WEIGHT`), `preview` or `stop`, and
/// the release's `TAKT_ARTIFACT_PATH`, `TAKT_ARTIFACT_DIGEST`, `TAKT_ARTIFACT_NAME`,
/// `TAKT_ARTIFACT_VERSION` and the environment's variables.
pub struct CommandDriver {
    pub script: String,
    /// Where the script runs (the environment's directory).
    pub dir: PathBuf,
    pub timeout: Duration,
}

impl CommandDriver {
    async fn call(&self, r: &Release, step: &str, weight: u8) -> Result<(), DriverError> {
        let mut env = r.env.clone();
        env.push(("TAKT_DEPLOY_STEP".into(), step.into()));
        env.push(("TAKT_TRAFFIC_WEIGHT".into(), weight.to_string()));
        let out = checks::shell(&self.script, &env, Some(&self.dir), self.timeout).await?;
        if out.success {
            Ok(())
        } else {
            Err(DriverError::Failed(format!(
                "the deploy script failed at step {step} ({}): {}",
                out.code_text, out.output
            )))
        }
    }
}

impl Driver for CommandDriver {
    async fn start(&self, r: &Release) -> Result<(), DriverError> {
        self.call(r, "start", 0).await
    }
    async fn route(&self, weights: &[(&Release, u8)]) -> Result<(), DriverError> {
        for (r, w) in weights {
            self.call(r, "route", *w).await?;
        }
        Ok(())
    }
    async fn preview(&self, _port: u16, r: Option<&Release>) -> Result<(), DriverError> {
        match r {
            Some(r) => self.call(r, "preview", 0).await,
            None => Ok(()),
        }
    }
    async fn stop(&self, r: &Release) -> Result<(), DriverError> {
        self.call(r, "stop", 0).await
    }
    async fn traffic(&self, _r: &Release) -> Result<Option<Traffic>, DriverError> {
        Ok(None)
    }
    async fn direct_url(&self, _r: &Release) -> Option<String> {
        None
    }
    /// The script manages what runs; takt takes what it deployed last to be running.
    async fn running(&self, _r: &Release) -> bool {
        true
    }
}
