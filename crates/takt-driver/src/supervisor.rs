//! The `process` driver's supervisor: one long-lived process per environment (`takt
//! supervise`), separate from `takt serve`, that runs the environment's instances (each with its
//! own `PORT`; a crashed one is started again) and its weighted reverse proxy on the public port.
//! The server tells it what to do over a Unix socket ([`crate::protocol`]); restarting or
//! upgrading the server leaves it, and the traffic it carries, alone.
//!
//! It stops when asked (`shutdown`), on SIGTERM, or when its socket file disappears (its
//! directory was removed), stopping its instances first.

use crate::protocol::{InstanceStatus, Request, Response, SlotStatus, Status, Traffic};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use takt_proxy::Proxy;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::watch;

/// How long a stopped slot's instances keep running after they left the proxy's rotation.
const DRAIN: Duration = Duration::from_millis(500);

/// How the supervisor is started.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Its directory: the socket (`supervisor.sock`) and the instances' logs live here.
    pub dir: PathBuf,
    /// The public port its proxy listens on; `None`: no proxy (the nginx driver routes).
    pub port: Option<u16>,
}

/// The socket's path in a supervisor's directory.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("supervisor.sock")
}

struct Instance {
    port: u16,
    pid: AtomicU32,
    restarts: AtomicU32,
    stop: watch::Sender<bool>,
    /// How many processes it has started (a restart waits for the next).
    spawned: watch::Sender<u64>,
}

struct Slot {
    instances: Vec<Arc<Instance>>,
    weight: u32,
    /// Traffic counted before the proxy's backends were last set.
    earlier: Traffic,
}

struct Supervisor {
    dir: PathBuf,
    port: u16,
    proxy: Option<Arc<Proxy>>,
    slots: Mutex<HashMap<String, Slot>>,
    /// The slot each proxy backend belongs to, in the order given to the proxy.
    backends: Mutex<Vec<String>>,
    /// What the proxy counted for slots since stopped.
    retired: Mutex<Traffic>,
    previews: tokio::sync::Mutex<HashMap<u16, Arc<Proxy>>>,
}

/// Runs a supervisor until it is told to stop. Errors only if it cannot start (socket or port).
pub async fn run(config: SupervisorConfig) -> std::io::Result<()> {
    std::fs::create_dir_all(&config.dir)?;
    let sock = socket_path(&config.dir);
    if UnixStream::connect(&sock).await.is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("a supervisor already answers on {}", sock.display()),
        ));
    }
    let _ = std::fs::remove_file(&sock);
    let (proxy, port) = match config.port {
        Some(port) => {
            let listener = TcpListener::bind(("127.0.0.1", port))
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on the public port {port}: {e}")))?;
            let proxy = Arc::new(Proxy::new());
            tokio::spawn(proxy.clone().serve(listener));
            (Some(proxy), port)
        }
        None => (None, 0),
    };
    let listener = UnixListener::bind(&sock)?;
    let sup = Arc::new(Supervisor {
        dir: config.dir.clone(),
        port,
        proxy,
        slots: Mutex::new(HashMap::new()),
        backends: Mutex::new(Vec::new()),
        retired: Mutex::new(Traffic::default()),
        previews: tokio::sync::Mutex::new(HashMap::new()),
    });
    let (quit_tx, mut quit) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tracing::info!(socket = %sock.display(), port, "supervisor ready");
    loop {
        tokio::select! {
            conn = listener.accept() => {
                if let Ok((stream, _)) = conn {
                    let sup = sup.clone();
                    let quit_tx = quit_tx.clone();
                    tokio::spawn(async move { sup.serve(stream, quit_tx).await });
                }
            }
            _ = quit.changed() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                if !sock.exists() {
                    tracing::info!("the supervisor's socket is gone; stopping");
                    break;
                }
            }
        }
    }
    sup.stop_all().await;
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

impl Supervisor {
    async fn serve(self: Arc<Self>, stream: UnixStream, quit: watch::Sender<bool>) {
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let (resp, stop) = match serde_json::from_str::<Request>(&line) {
                Ok(Request::Shutdown) => (ok(None), true),
                Ok(req) => (self.handle(req).await, false),
                Err(e) => (fail(format!("bad request: {e}")), false),
            };
            let mut out = serde_json::to_vec(&resp).unwrap_or_default();
            out.push(b'\n');
            if w.write_all(&out).await.is_err() {
                return;
            }
            if stop {
                let _ = quit.send(true);
                return;
            }
        }
    }

    async fn handle(&self, req: Request) -> Response {
        match req {
            Request::Start {
                slot,
                dir,
                command,
                instances,
                env,
                health,
                ready_timeout_ms,
            } => {
                if self.slots.lock().contains_key(&slot) {
                    return ok(Some(self.status()));
                }
                let spec = Arc::new(Spec {
                    dir,
                    command,
                    env,
                    log: self.dir.join(format!("{slot}.log")),
                });
                let mut started = Vec::new();
                for _ in 0..instances.max(1) {
                    let Some(port) = crate::free_port() else {
                        self.drop_instances(&started).await;
                        return fail("no free port for an instance".into());
                    };
                    let (stop, stop_rx) = watch::channel(false);
                    let inst = Arc::new(Instance {
                        port,
                        pid: AtomicU32::new(0),
                        restarts: AtomicU32::new(0),
                        stop,
                        spawned: watch::Sender::new(0),
                    });
                    tokio::spawn(keep_running(inst.clone(), spec.clone(), stop_rx));
                    started.push(inst);
                }
                let deadline = Instant::now() + Duration::from_millis(ready_timeout_ms);
                for inst in &started {
                    if let Err(e) = wait_healthy(inst.port, &health, deadline).await {
                        self.drop_instances(&started).await;
                        return fail(format!(
                            "an instance of {slot} did not become healthy within {} ms: {e} (its log: {})",
                            ready_timeout_ms,
                            spec.log.display()
                        ));
                    }
                }
                {
                    let mut s = self.slots.lock();
                    s.insert(
                        slot,
                        Slot {
                            instances: started,
                            weight: 0,
                            earlier: Traffic::default(),
                        },
                    );
                }
                ok(Some(self.status()))
            }
            Request::Route { weights } => {
                for (slot, _) in &weights {
                    if !self.slots.lock().contains_key(slot) {
                        return fail(format!("no slot `{slot}` runs here"));
                    }
                }
                self.route(&weights);
                ok(Some(self.status()))
            }
            Request::Preview { port, slot } => {
                let backends = match &slot {
                    Some(slot) => match self.addrs(slot) {
                        Some(a) => a.into_iter().map(|a| (a, 1)).collect(),
                        None => return fail(format!("no slot `{slot}` runs here")),
                    },
                    None => Vec::new(),
                };
                let mut previews = self.previews.lock().await;
                if let std::collections::hash_map::Entry::Vacant(slot) = previews.entry(port) {
                    match TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => {
                            let p = Arc::new(Proxy::new());
                            tokio::spawn(p.clone().serve(l));
                            slot.insert(p);
                        }
                        Err(e) => return fail(format!("cannot listen on the preview port {port}: {e}")),
                    }
                }
                if let Some(p) = previews.get(&port) {
                    p.set(&backends);
                }
                ok(Some(self.status()))
            }
            Request::Stop { slot } => {
                if self.slots.lock().contains_key(&slot) {
                    // Routed away first, so that what the proxy counted for it is folded into
                    // its totals, which then join the stopped slots'.
                    let weights: Vec<(String, u32)> = self
                        .slots
                        .lock()
                        .iter()
                        .filter(|(k, _)| **k != slot)
                        .map(|(k, v)| (k.clone(), v.weight))
                        .collect();
                    self.route(&weights);
                }
                let removed = self.slots.lock().remove(&slot);
                if let Some(s) = removed {
                    {
                        let mut retired = self.retired.lock();
                        retired.requests += s.earlier.requests;
                        retired.errors += s.earlier.errors;
                        retired.latency_us += s.earlier.latency_us;
                    }
                    // Requests already on their way to these instances get time to finish (a
                    // load balancer's deregistration delay) before the instances are stopped.
                    tokio::time::sleep(DRAIN).await;
                    self.drop_instances(&s.instances).await;
                }
                ok(Some(self.status()))
            }
            Request::Restart {
                slot,
                health,
                ready_timeout_ms,
            } => {
                let Some(instances) = self.slots.lock().get(&slot).map(|s| s.instances.clone()) else {
                    return fail(format!("no slot `{slot}` runs here"));
                };
                for inst in &instances {
                    // Each its own time to come back.
                    let deadline = Instant::now() + Duration::from_millis(ready_timeout_ms);
                    if let Err(e) = restart(inst, &health, deadline).await {
                        return fail(format!(
                            "an instance of {slot} on port {} did not come back: {e} (its log: {})",
                            inst.port,
                            self.dir.join(format!("{slot}.log")).display()
                        ));
                    }
                }
                ok(Some(self.status()))
            }
            Request::Status => ok(Some(self.status())),
            Request::Shutdown => ok(None),
        }
    }

    fn addrs(&self, slot: &str) -> Option<Vec<SocketAddr>> {
        let s = self.slots.lock();
        let slot = s.get(slot)?;
        Some(
            slot.instances
                .iter()
                .map(|i| SocketAddr::from(([127, 0, 0, 1], i.port)))
                .collect(),
        )
    }

    /// Folds what the proxy counted into each slot's totals, then gives it new backends.
    fn route(&self, weights: &[(String, u32)]) {
        let (mut slots, mut backends) = (self.slots.lock(), self.backends.lock());
        if let Some(proxy) = &self.proxy {
            for (i, st) in proxy.stats().into_iter().enumerate() {
                if let Some(slot) = backends.get(i).and_then(|name| slots.get_mut(name)) {
                    slot.earlier.requests += st.requests;
                    slot.earlier.errors += st.errors;
                    slot.earlier.latency_us += st.latency_us_sum;
                }
            }
        }
        for s in slots.values_mut() {
            s.weight = 0;
        }
        // Each instance's weight is its slot's share divided among the slot's instances:
        // slot weight × (lcm of instance counts / the slot's count), so shares stay exact.
        let lcm = weights
            .iter()
            .filter_map(|(name, _)| slots.get(name).map(|s| s.instances.len().max(1) as u64))
            .fold(1u64, |a, b| a / gcd(a, b) * b);
        let mut list = Vec::new();
        backends.clear();
        for (name, w) in weights {
            if let Some(slot) = slots.get_mut(name) {
                slot.weight = *w;
                let per = u64::from(*w) * (lcm / slot.instances.len().max(1) as u64);
                for i in &slot.instances {
                    list.push((
                        SocketAddr::from(([127, 0, 0, 1], i.port)),
                        per.min(u64::from(u32::MAX)) as u32,
                    ));
                    backends.push(name.clone());
                }
            }
        }
        if let Some(proxy) = &self.proxy {
            proxy.set(&list);
        }
    }

    fn status(&self) -> Status {
        let current = self.proxy.as_ref().map(|p| p.stats()).unwrap_or_default();
        let backends = self.backends.lock().clone();
        let mut slots: Vec<SlotStatus> = {
            let s = self.slots.lock();
            s.iter()
                .map(|(name, slot)| {
                    let mut traffic = slot.earlier;
                    for (i, st) in current.iter().enumerate() {
                        if backends.get(i) == Some(name) {
                            traffic.requests += st.requests;
                            traffic.errors += st.errors;
                            traffic.latency_us += st.latency_us_sum;
                        }
                    }
                    SlotStatus {
                        slot: name.clone(),
                        weight: slot.weight,
                        traffic,
                        instances: slot
                            .instances
                            .iter()
                            .map(|i| InstanceStatus {
                                port: i.port,
                                pid: Some(i.pid.load(Ordering::Relaxed)).filter(|p| *p != 0),
                                restarts: i.restarts.load(Ordering::Relaxed),
                            })
                            .collect(),
                    }
                })
                .collect()
        };
        slots.sort_by(|a, b| a.slot.cmp(&b.slot));
        let mut total = *self.retired.lock();
        for s in &slots {
            total.requests += s.traffic.requests;
            total.errors += s.traffic.errors;
            total.latency_us += s.traffic.latency_us;
        }
        let refused = self.proxy.as_ref().map_or(0, |p| p.refused());
        total.requests += refused;
        total.errors += refused;
        Status {
            pid: std::process::id(),
            port: self.port,
            slots,
            total,
        }
    }

    async fn drop_instances(&self, instances: &[Arc<Instance>]) {
        for i in instances {
            let _ = i.stop.send(true);
        }
        // Wait (bounded) until each is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        for i in instances {
            while i.pid.load(Ordering::Relaxed) != 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn stop_all(&self) {
        let all: Vec<Arc<Instance>> = self.slots.lock().drain().flat_map(|(_, v)| v.instances).collect();
        self.drop_instances(&all).await;
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

fn ok(status: Option<Status>) -> Response {
    Response {
        ok: true,
        error: None,
        status,
    }
}

fn fail(error: String) -> Response {
    Response {
        ok: false,
        error: Some(error),
        status: None,
    }
}

struct Spec {
    dir: PathBuf,
    command: String,
    env: Vec<(String, String)>,
    log: PathBuf,
}

/// Keeps one instance running until told to stop: a process that exits is started again
/// (after 100 ms, doubling up to 5 s while it keeps crashing).
async fn keep_running(inst: Arc<Instance>, spec: Arc<Spec>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&spec.log);
        let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((a, b)) => (std::process::Stdio::from(a), std::process::Stdio::from(b)),
            Err(_) => (std::process::Stdio::null(), std::process::Stdio::null()),
        };
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&spec.command)
            .current_dir(&spec.dir)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("PORT", inst.port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start an instance");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        inst.pid.store(pid, Ordering::Relaxed);
        inst.spawned.send_modify(|n| *n += 1);
        let started = Instant::now();
        tokio::select! {
            status = child.wait() => {
                inst.pid.store(0, Ordering::Relaxed);
                inst.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(port = inst.port, ?status, "an instance exited; starting it again");
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(100);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            _ = stop.changed() => {
                terminate(pid, &mut child).await;
                inst.pid.store(0, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Ends an instance's process (SIGTERM to its group) so that [`keep_running`] starts it
/// again, then waits for the new process to answer its health path.
async fn restart(inst: &Instance, health: &str, deadline: Instant) -> Result<(), String> {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let mut spawned = inst.spawned.subscribe();
    let before = *spawned.borrow_and_update();
    let old = inst.pid.load(Ordering::Relaxed);
    let group = i32::try_from(old).ok().filter(|p| *p > 0).map(Pid::from_raw);
    if let Some(g) = group {
        let _ = killpg(g, Signal::SIGTERM);
    }
    // Until keep_running has seen it exit and started another; SIGKILL after 5 s.
    let term = (Instant::now() + Duration::from_secs(5)).min(deadline);
    let mut again = tokio::time::timeout_at(tokio::time::Instant::from_std(term), spawned.wait_for(|n| *n > before))
        .await
        .is_ok_and(|r| r.is_ok());
    if !again && let Some(g) = group {
        let _ = killpg(g, Signal::SIGKILL);
        again = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            spawned.wait_for(|n| *n > before),
        )
        .await
        .is_ok_and(|r| r.is_ok());
    }
    if !again {
        return Err("it did not exit and start again in time".into());
    }
    if inst.pid.load(Ordering::Relaxed) == old {
        return Err("the same process still runs".into());
    }
    wait_healthy(inst.port, health, deadline).await
}

/// SIGTERM to the instance's process group; SIGKILL if it is still there after 5 s.
async fn terminate(pid: u32, child: &mut tokio::process::Child) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if raw <= 0 {
        return;
    }
    let _ = killpg(Pid::from_raw(raw), Signal::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

async fn wait_healthy(port: u16, health: &str, deadline: Instant) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default(); // TLS on ring: see Cargo.toml
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://127.0.0.1:{port}{health}");
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{url} answered {}", r.status()),
            Err(e) => last = format!("{url}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(last)
}
