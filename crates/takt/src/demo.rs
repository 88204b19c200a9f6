//! `takt demo`: the whole product in one command. It starts a server in this process (as
//! `takt serve` does: 127.0.0.1, a free port, jobs isolated as `serve` chooses) on an empty
//! directory, makes the deploy example's repository (`examples/deploy`), and drives the server
//! through its HTTP API as a person would: a pipeline run, a blue/green deploy to staging, a
//! canary to production, a broken commit whose canary is caught and rolled back, and a break
//! after a rollout that a health check catches and takt remediates itself, with its incident
//! and postmortem. It follows the event log (long polls), prints each step as it happens, then
//! stops everything it started and removes what it made — on every way out, Ctrl-C included.

use crate::client::{Api, BadInput};
use anyhow::{Context, anyhow, bail};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use takt_api::{DeployAnswer, DeployBody, EnvironmentList, EnvironmentStopped, EventsPage, TriggerBody, Triggered};
use takt_model::{
    ArtifactRef, CheckState, DeployOutcome, DeployStrategy, Event, EventKind, IncidentTrigger, RemedyOutcome,
    RunStatus, StepAction, StepVerdict, timefmt,
};

/// The example's service and pipeline, as in the repository.
const APP: &str = include_str!("../../../examples/deploy/app.py");
const PIPELINE: &str = include_str!("../../../examples/deploy/takt.yml");
const PROJECT: &str = "shop";
/// What the demo's canary analysis fails on (the example's own condition).
const FAILURE_CONDITION: &str = "error_rate > 0.05";

/// The health check production gets from the second commit on (not from the first: nothing
/// runs there yet, and a check of nothing would open an incident before the story starts).
const CHECK: &str = "
# From the second commit on: production's health, probed every 200 ms (docs/monitoring.md).
checks:
  health:
    environment: production
    http: {path: /healthz}
    interval: 200ms
    failure_threshold: 2
    success_threshold: 1
";

#[derive(clap::Args)]
pub struct DemoArgs {
    /// After the story, keep the server (and staging and production) running, print its
    /// address and a login link for the web UI, and stop everything at Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// Make everything in DIR (created if missing; it must be empty) and keep it afterwards:
    /// the server's data directory DIR/data (`takt serve --data-dir DIR/data` shows it all
    /// again), the example repository DIR/shop and the postmortem draft.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

/// Where the demo makes its things: a temporary directory (removed at the end), or `--keep`'s.
enum Root {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Temp(t) => t.path(),
            Root::Kept(p) => p,
        }
    }
}

/// How the story ended.
enum End {
    Done,
    Interrupted,
    Failed(anyhow::Error),
}

pub fn demo(a: DemoArgs) -> ExitCode {
    let t0 = Instant::now();
    if let Ok(filter) = std::env::var("TAKT_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    }
    for (tool, why) in [
        ("git", "for the example's repository"),
        ("python3", "for the example's service"),
    ] {
        if takt_exec::find_on_path(tool).is_none() {
            eprintln!("error: takt demo needs {tool} on PATH ({why})");
            return ExitCode::from(1);
        }
    }
    let root = match make_root(a.keep.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(if e.downcast_ref::<BadInput>().is_some() { 2 } else { 1 });
        }
    };
    let end = run(&root, &a, t0);
    let removed = match root {
        Root::Temp(t) => {
            let path = t.path().display().to_string();
            match t.close() {
                Ok(()) => Some(Ok(path)),
                Err(e) => Some(Err(anyhow!("cannot remove {path}: {e}"))),
            }
        }
        Root::Kept(p) => {
            outln!(
                "✓ kept {}: the server's data in data/ (see it again: takt serve --data-dir {}), the repository in shop/",
                p.display(),
                p.join("data").display()
            );
            None
        }
    };
    match removed {
        Some(Ok(path)) => outln!("✓ removed {path}"),
        Some(Err(e)) => eprintln!("warning: {e:#}"),
        None => {}
    }
    match end {
        End::Done => {
            outln!("takt demo: done in {:.1}s", t0.elapsed().as_secs_f64());
            outln!();
            outln!("Try next:");
            outln!(
                "  takt demo --serve               the same, then the server stays up: its UI, a login link, the CLI"
            );
            outln!("  takt run examples/multi-stage   a pipeline on this machine, no server (takt's main job)");
            ExitCode::SUCCESS
        }
        End::Interrupted => {
            eprintln!("takt demo: interrupted after {:.1}s", t0.elapsed().as_secs_f64());
            ExitCode::from(130)
        }
        End::Failed(e) => {
            eprintln!("error: {e:#}");
            eprintln!(
                "takt demo failed after {:.1}s; `takt demo --keep DIR` keeps what it made to look at",
                t0.elapsed().as_secs_f64()
            );
            ExitCode::from(if e.downcast_ref::<BadInput>().is_some() { 2 } else { 1 })
        }
    }
}

fn make_root(keep: Option<&Path>) -> anyhow::Result<Root> {
    let Some(dir) = keep else {
        let t = tempfile::Builder::new()
            .prefix("takt-demo-")
            .tempdir()
            .context("making a temporary directory")?;
        return Ok(Root::Temp(t));
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    if entries.next().is_some() {
        bail!(BadInput(format!(
            "--keep {}: the directory is not empty (the demo starts from nothing; name a new one)",
            dir.display()
        )));
    }
    // Absolute: the server, the supervisors and git all see the same paths.
    let dir = std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    Ok(Root::Kept(dir))
}

/// The server in this process, the story against it, then the stopping of everything.
fn run(root: &Root, a: &DemoArgs, t0: Instant) -> End {
    let runtime = |threads: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("takt-demo")
            .enable_all()
            .build()
    };
    // The server has a runtime of its own: shutting it down ends every task it started
    // (followers, watchdog, monitoring), so nothing restores an environment the demo stops.
    let (server_rt, client_rt) = match (runtime(2), runtime(1)) {
        (Ok(s), Ok(c)) => (s, c),
        (Err(e), _) | (_, Err(e)) => return End::Failed(anyhow!("cannot start the async runtime: {e}")),
    };
    let data = root.path().join("data");
    let envs_dir = data.join("environments");
    let config = match server_config(&data) {
        Ok(c) => c,
        Err(e) => return End::Failed(e),
    };
    let started = match server_rt.block_on(crate::serve::start(config, true)) {
        Ok(s) => s,
        Err((2, e)) => return End::Failed(anyhow!(BadInput(format!("starting the server: {e:#}")))),
        Err((_, e)) => return End::Failed(e.context("starting the server")),
    };
    let addr = started.addr;
    let admin = started.admin_token.clone();
    let isolation = (started.isolation, started.isolation_note.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = server_rt.spawn(started.serve(async {
        let _ = stop_rx.await;
    }));

    let end = client_rt.block_on(async {
        let Some(admin) = admin else {
            return End::Failed(anyhow!("the server made no admin token on its empty data directory"));
        };
        let mut story = match Story::new(root.path(), addr, &admin, a.serve) {
            Ok(s) => s,
            Err(e) => return End::Failed(e),
        };
        story.intro((isolation.0, isolation.1.as_deref()));
        let end = tokio::select! {
            r = story.tell() => match r {
                Ok(()) => End::Done,
                Err(e) => End::Failed(e),
            },
            _ = interrupted() => End::Interrupted,
        };
        story.load = None;
        let end = match end {
            End::Done if a.serve => {
                outln!("takt demo: the story took {:.1}s", t0.elapsed().as_secs_f64());
                story.serve_until_interrupted(&admin).await;
                End::Done
            }
            End::Interrupted => {
                eprintln!("\ninterrupted: stopping everything takt demo started…");
                End::Interrupted
            }
            other => other,
        };
        // Bounded: a supervisor gives its instances at most 5 s.
        let stopped = tokio::time::timeout(Duration::from_secs(15), story.stop_environments())
            .await
            .unwrap_or_default();
        if !stopped.is_empty() {
            outln!("✓ stopped {} (supervisors, instances, proxies)", stopped.join(" and "));
        }
        end
    });

    // The server: answer what is in flight, close the event log, then end its tasks.
    let _ = stop_tx.send(());
    let served = server_rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), server).await });
    server_rt.shutdown_timeout(Duration::from_secs(2));
    drop(client_rt);
    let ended = end_leftovers(&envs_dir);
    match served {
        Ok(Ok(Ok(()))) => outln!("✓ stopped the server at http://{addr}"),
        Ok(Ok(Err(e))) => eprintln!("warning: the server stopped with an error: {e:#}"),
        Ok(Err(e)) => eprintln!("warning: the server's task failed: {e}"),
        Err(_) => eprintln!("warning: the server did not stop within 5 s; its tasks were ended"),
    }
    if !ended.is_empty() {
        outln!("✓ ended what else it had started: {}", ended.join(", "));
    }
    end
}

/// `takt serve`'s settings for the demo: its data directory, a free port on 127.0.0.1, no
/// polling (the demo says when to run), and of the environment only how jobs are isolated
/// (`TAKT_ISOLATION`, `TAKT_JOB_USER`): nothing else of a real server's configuration
/// reaches it.
fn server_config(data: &Path) -> anyhow::Result<takt_server::ServerConfig> {
    let flags = takt_server::Overrides {
        data_dir: Some(data.to_path_buf()),
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let env = |k: &str| match k {
        "TAKT_ISOLATION" | "TAKT_JOB_USER" => std::env::var(k).ok(),
        "TAKT_POLL_SECONDS" => Some("0".into()),
        // A throwaway log: safe against a crash of this process, not of the machine.
        "TAKT_SQLITE_SYNCHRONOUS" => Some("normal".into()),
        _ => None,
    };
    takt_server::ServerConfig::resolve(None, flags, &env).context("the demo's server settings")
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// The event log of the demo's project, read in order (long polls of the real API).
struct Log {
    api: Api,
    after: i64,
    pending: VecDeque<Event>,
}

impl Log {
    /// The next event, waiting for it until `deadline`; `None` once that passed.
    async fn next(&mut self, deadline: Instant) -> anyhow::Result<Option<Event>> {
        while self.pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let wait = left.as_secs().clamp(1, 10);
            let page: EventsPage = self
                .api
                .get(&format!(
                    "/api/v1/events?project={PROJECT}&after={}&limit=1000&wait={wait}",
                    self.after
                ))
                .await?;
            for v in page.events {
                if let Some(seq) = v.get("seq").and_then(serde_json::Value::as_i64) {
                    self.after = self.after.max(seq);
                }
                // A kind this build does not know is nothing the demo waits for.
                if let Ok(e) = serde_json::from_value::<Event>(v) {
                    self.pending.push_back(e);
                }
            }
        }
        Ok(self.pending.pop_front())
    }

    /// Reads events until `f` picks one (or fails), within `within`: an error naming `what`
    /// if that time passes first.
    async fn until<T>(
        &mut self,
        within: Duration,
        what: &str,
        mut f: impl FnMut(&Event) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + within;
        while let Some(e) = self.next(deadline).await? {
            if let Some(t) = f(&e)? {
                return Ok(t);
            }
        }
        bail!("timed out after {}s waiting for {what}", within.as_secs())
    }
}

/// One deploy, as the log told it.
struct Deploy {
    env: String,
    deploy: u64,
    artifact: Option<ArtifactRef>,
    strategy: Option<DeployStrategy>,
    started: Option<time::OffsetDateTime>,
    finished: time::OffsetDateTime,
    outcome: DeployOutcome,
    reason: Option<String>,
    running: Option<ArtifactRef>,
    steps: Vec<Step>,
    /// Incidents opened while it ran: id, what opened it.
    incidents: Vec<(String, IncidentTrigger)>,
    resolved: Vec<String>,
}

struct Step {
    action: StepAction,
    weight: u8,
    verdict: Option<StepVerdict>,
    detail: Option<String>,
    at: time::OffsetDateTime,
}

impl Deploy {
    fn took(&self) -> String {
        match self.started {
            Some(s) => secs(self.finished - s),
            None => "?".into(),
        }
    }

    fn what(&self) -> String {
        self.artifact.as_ref().map(label).unwrap_or_else(|| "?".into())
    }
}

/// `app@1-ab12cd34`.
fn label(a: &ArtifactRef) -> String {
    format!("{}@{}", a.name, a.version)
}

fn secs(d: time::Duration) -> String {
    let s = d.as_seconds_f64().max(0.0);
    if s < 1.0 {
        format!("{}ms", (s * 1000.0).round())
    } else {
        format!("{s:.1}s")
    }
}

/// The values of an analysis step's detail (`error_rate=0.0000 latency_ms=1.2 requests=5`).
fn values(detail: &str) -> BTreeMap<&str, f64> {
    detail
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect()
}

/// A canary's steps in one line: `20% → analysis ✓ ×2 (…) → 50% → 100%`.
fn canary_steps(steps: &[Step]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut weight = None;
    let mut i = 0;
    while i < steps.len() {
        let s = &steps[i];
        match &s.action {
            StepAction::SetWeight | StepAction::Promote if weight != Some(s.weight) => {
                weight = Some(s.weight);
                out.push(format!("{}%", s.weight));
            }
            StepAction::Analysis => {
                // Measurements in a row with one verdict: one entry, their requests summed.
                let run: Vec<&Step> = steps[i..]
                    .iter()
                    .take_while(|x| x.action == StepAction::Analysis && x.verdict == s.verdict)
                    .collect();
                i += run.len() - 1;
                let mark = match s.verdict {
                    Some(StepVerdict::Successful) => "✓",
                    Some(StepVerdict::Failed) => "✗",
                    _ => "?",
                };
                let times = if run.len() > 1 {
                    format!(" ×{}", run.len())
                } else {
                    String::new()
                };
                let (mut requests, mut errors) = (0.0, 0.0);
                for x in &run {
                    let v = values(x.detail.as_deref().unwrap_or_default());
                    let n = v.get("requests").copied().unwrap_or(0.0);
                    requests += n;
                    errors += n * v.get("error_rate").copied().unwrap_or(0.0);
                }
                let rate = if requests > 0.0 { errors / requests } else { 0.0 };
                out.push(format!(
                    "analysis {mark}{times} (error_rate {rate:.2} over {requests} requests)"
                ));
            }
            StepAction::Rollback => {
                weight = Some(0);
                out.push("all traffic back".into());
            }
            _ => {}
        }
        i += 1;
    }
    out.join(" → ")
}

/// Production's traffic, sent by the demo the whole time production runs: one request every
/// 20 ms, as a steady trickle of users would (a canary's analysis judges real requests).
#[derive(Default)]
struct Traffic {
    requests: u64,
    /// Failed requests by the version that answered them (`?` when none said).
    failed: BTreeMap<String, u64>,
}

struct Load {
    traffic: Arc<parking_lot::Mutex<Traffic>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Load {
    fn start(url: String) -> anyhow::Result<Load> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let traffic = Arc::new(parking_lot::Mutex::new(Traffic::default()));
        let t = traffic.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let answer = match http.get(&url).send().await {
                    Ok(r) => {
                        let ok = r.status().is_success();
                        let body = r.text().await.unwrap_or_default();
                        (ok, body)
                    }
                    Err(_) => (false, String::new()),
                };
                let mut t = t.lock();
                t.requests += 1;
                if !answer.0 {
                    // The example answers `broken VERSION` when it fails.
                    let version = answer.1.split_whitespace().last().unwrap_or("?").to_string();
                    *t.failed.entry(version).or_default() += 1;
                }
            }
        });
        Ok(Load { traffic, task })
    }

    fn failed(&self, version: &str) -> u64 {
        self.traffic.lock().failed.get(version).copied().unwrap_or(0)
    }

    fn totals(&self) -> (u64, u64) {
        let t = self.traffic.lock();
        (t.requests, t.failed.values().sum())
    }
}

struct Story {
    api: Api,
    log: Log,
    repo: PathBuf,
    root: PathBuf,
    switch: PathBuf,
    staging: u16,
    production: u16,
    addr: std::net::SocketAddr,
    /// `--serve`: the server stays up after the story.
    serve: bool,
    load: Option<Load>,
}

impl Story {
    fn new(root: &Path, addr: std::net::SocketAddr, admin: &str, serve: bool) -> anyhow::Result<Story> {
        let staging = takt_driver::free_port().ok_or_else(|| anyhow!("no free port for staging"))?;
        let production = loop_free_port(staging)?;
        let api = || -> anyhow::Result<Api> {
            Ok(Api {
                base: format!("http://{addr}"),
                token: Some(admin.to_string()),
                http: reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(30))
                    .build()?,
            })
        };
        Ok(Story {
            api: api()?,
            log: Log {
                api: api()?,
                after: 0,
                pending: VecDeque::new(),
            },
            repo: root.join(PROJECT),
            root: root.to_path_buf(),
            switch: root.join("break-v4"),
            staging,
            production,
            addr,
            serve,
            load: None,
        })
    }

    fn intro(&self, isolation: (&str, Option<&str>)) {
        outln!(
            "takt demo: takt's whole loop on the deploy example, in {}",
            self.root.display()
        );
        outln!(
            "  server      http://{}  (its data in {})",
            self.addr,
            self.root.join("data").display()
        );
        match isolation {
            ("none", note) => outln!(
                "  jobs        not isolated from the server: {} (fine for a demo, not for a real server)",
                note.unwrap_or("isolation = none")
            ),
            (name, _) => outln!("  jobs        isolated from the server ({name})"),
        }
        outln!(
            "  repository  {}  (examples/deploy: app.py, takt.yml)",
            self.repo.display()
        );
        outln!(
            "  staging     http://127.0.0.1:{}  2 instances, blue/green, auto-deployed",
            self.staging
        );
        outln!(
            "  production  http://127.0.0.1:{}  2 instances, canary with analysis, remediate: rollback",
            self.production
        );
    }

    /// The story, step by step.
    async fn tell(&mut self) -> anyhow::Result<()> {
        let v1 = APP.to_string();
        let v2 = edit(APP, "f\"hello from {VERSION}\\n\"", "f\"hello from {VERSION}!\\n\"")?;
        let v3 = edit(
            &v2,
            "BROKEN = False",
            "BROKEN = True  # v3: / answers 500, /healthz still 200",
        )?;
        let v4 = edit(
            &edit(
                &v2,
                "        if self.path == \"/healthz\":",
                "        if os.path.exists(BREAK_FILE):  # v4: every request fails once it appears\n            self.reply(500, f\"broken {VERSION}\\n\")\n        elif self.path == \"/healthz\":",
            )?,
            "BROKEN = False",
            &format!("BROKEN = False\nBREAK_FILE = {:?}", self.switch.display().to_string()),
        )?;
        let plain = pipeline(self.staging, self.production, false)?;
        let checked = pipeline(self.staging, self.production, true)?;

        self.log.after = self.api.head().await?;
        std::fs::create_dir_all(&self.repo).with_context(|| format!("creating {}", self.repo.display()))?;
        git(&self.repo, &["init", "-q"]).await?;
        git(&self.repo, &["symbolic-ref", "HEAD", "refs/heads/main"]).await?;

        outln!();
        outln!("1. A first commit, all the way to production");
        let sha = self
            .commit(&[("app.py", &v1), ("takt.yml", &plain)], "shop: a small web service")
            .await?;
        let _: takt_api::ProjectCreated = self
            .api
            .send_json(
                reqwest::Method::POST,
                "/api/v1/projects",
                &takt_api::NewProject {
                    name: PROJECT.into(),
                    repo: self.repo.display().to_string(),
                    branch: Some("main".into()),
                },
            )
            .await?;
        outln!("✓ project {PROJECT} added (its repository: {})", self.repo.display());
        self.pipeline(&sha, "shop: a small web service").await?;
        let s = self.staging_deploy().await?;
        outln!(
            "✓ staging: {} deployed in {} (a first deploy takes all traffic at once)",
            s.what(),
            s.took()
        );
        let p = self.promote().await?;
        outln!(
            "✓ production: promoted {} in {} (it ran healthy in staging; a first deploy takes all traffic at once)",
            p.what(),
            p.took()
        );
        self.load = Some(Load::start(format!("http://127.0.0.1:{}/", self.production))?);
        outln!("  (from now on the demo sends production a request every 20 ms, as its users would)");

        outln!();
        outln!("2. A change: blue/green in staging, a canary in production");
        let msg = "v2: a friendlier greeting, and a health check on production";
        let sha = self.commit(&[("app.py", &v2), ("takt.yml", &checked)], msg).await?;
        self.pipeline(&sha, msg).await?;
        let s = self.staging_deploy().await?;
        self.print_blue_green(&s)?;
        let p = self.promote().await?;
        let v2_label = p.what();
        self.print_canary(&p)?;

        outln!();
        outln!("3. A broken commit: its canary is caught and rolled back");
        let msg = "v3: a bug only real traffic finds";
        let sha = self.commit(&[("app.py", &v3)], msg).await?;
        self.pipeline(&sha, msg).await?;
        let s = self.staging_deploy().await?;
        self.print_blue_green(&s)?;
        outln!("  (staging's smoke check asks /healthz, which v3 still answers: the bug gets through)");
        let p = self.promote().await?;
        self.print_caught(&p)?;
        if let (Some(load), Some(a)) = (&self.load, &p.artifact) {
            let (requests, failed) = load.totals();
            let by_canary = load.failed(&a.version);
            outln!(
                "  production's traffic so far: {requests} requests, {failed} failed: {} answered by {} while its canary had 20%",
                if by_canary == failed {
                    "all".to_string()
                } else {
                    by_canary.to_string()
                },
                label(a)
            );
        }

        outln!();
        outln!("4. A break after the rollout: a check catches it, takt rolls back itself");
        let msg = "v4: a bug that waits";
        let sha = self.commit(&[("app.py", &v4)], msg).await?;
        self.pipeline(&sha, msg).await?;
        let s = self.staging_deploy().await?;
        self.print_blue_green(&s)?;
        let p = self.promote().await?;
        self.print_canary(&p)?;
        let broken = p.artifact.clone();
        self.break_and_remediate(&v2_label, broken.as_ref()).await?;
        Ok(())
    }

    /// Commits `files` to the example repository; its id.
    async fn commit(&self, files: &[(&str, &str)], message: &str) -> anyhow::Result<String> {
        for (name, text) in files {
            let path = self.repo.join(name);
            tokio::fs::write(&path, text)
                .await
                .with_context(|| format!("writing {}", path.display()))?;
        }
        git(&self.repo, &["add", "-A"]).await?;
        git(&self.repo, &["commit", "-q", "-m", message]).await?;
        Ok(git(&self.repo, &["rev-parse", "HEAD"]).await?.trim().to_string())
    }

    /// Triggers the project's run of `sha` and waits for it to pass.
    async fn pipeline(&mut self, sha: &str, message: &str) -> anyhow::Result<u64> {
        let t: Triggered = self
            .api
            .send_json(
                reqwest::Method::POST,
                &format!("/api/v1/projects/{PROJECT}/trigger"),
                &TriggerBody {
                    rev: Some("main".into()),
                    ..TriggerBody::default()
                },
            )
            .await?;
        let run = t.run;
        let short: String = sha.chars().take(7).collect();
        outln!("▶ commit {short} \"{message}\" → run #{run}");
        let mut jobs: Vec<String> = Vec::new();
        let mut failed: Vec<(String, u32, Option<i32>)> = Vec::new();
        let mut artifacts: Vec<String> = Vec::new();
        let (status, took, reason) = self
            .log
            .until(Duration::from_secs(60), &format!("run #{run} to finish"), |e| {
                if e.run != Some(run) {
                    return Ok(None);
                }
                match &e.kind {
                    EventKind::JobFinished {
                        job,
                        attempt,
                        status,
                        exit_code,
                        ..
                    } => {
                        if !jobs.contains(job) {
                            jobs.push(job.clone());
                        }
                        if *status == takt_model::JobStatus::Failed {
                            failed.push((job.clone(), *attempt, *exit_code));
                        }
                    }
                    EventKind::ArtifactStored { name, version, .. } => artifacts.push(format!("{name}@{version}")),
                    EventKind::RunFinished {
                        status,
                        duration_ms,
                        reason,
                        ..
                    } => return Ok(Some((*status, *duration_ms, reason.clone()))),
                    _ => {}
                }
                Ok(None)
            })
            .await?;
        if status != RunStatus::Success {
            let mut why = vec![format!(
                "run #{run} did not pass ({}){}",
                serde_name(&status),
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            )];
            for (job, attempt, code) in failed {
                let code = code.map(|c| format!(" with exit code {c}")).unwrap_or_default();
                why.push(format!("job `{job}` failed{code}; the end of its log:"));
                let path = format!(
                    "/api/v1/runs/{PROJECT}/{run}/logs/{}?attempt={attempt}",
                    crate::client::encode(&job)
                );
                let text = match self.api.send(self.api.request(reqwest::Method::GET, &path)).await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => format!("(cannot read it: {e})"),
                };
                let lines: Vec<&str> = text.lines().collect();
                why.extend(
                    lines[lines.len().saturating_sub(5)..]
                        .iter()
                        .map(|l| format!("    {l}")),
                );
            }
            bail!(why.join("\n"));
        }
        outln!(
            "✓ run #{run} passed in {} ({}{})",
            timefmt::human(Duration::from_millis(took)),
            jobs.join(", "),
            if artifacts.is_empty() {
                String::new()
            } else {
                format!(" → artifact {}, checksummed and signed", artifacts.join(", "))
            }
        );
        Ok(run)
    }

    /// Waits for the automatic deploy to staging that a green run starts, and follows it.
    async fn staging_deploy(&mut self) -> anyhow::Result<Deploy> {
        let n = self
            .log
            .until(
                Duration::from_secs(30),
                "the automatic deploy to staging",
                |e| match &e.kind {
                    EventKind::DeployStarted {
                        environment, deploy, ..
                    } if environment == "staging" => Ok(Some(*deploy)),
                    EventKind::DeploySkipped {
                        environment,
                        reason,
                        detail,
                        ..
                    } if environment == "staging" => bail!(
                        "the automatic deploy to staging was skipped ({}{})",
                        serde_name(reason),
                        detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
                    ),
                    _ => Ok(None),
                },
            )
            .await?;
        self.follow("staging", n).await
    }

    /// `takt promote production`, followed to its end.
    async fn promote(&mut self) -> anyhow::Result<Deploy> {
        let v: DeployAnswer = self
            .api
            .send_json(
                reqwest::Method::POST,
                &format!("/api/v1/environments/{PROJECT}/production/promote"),
                &DeployBody::default(),
            )
            .await?;
        let Some(n) = v.deploy else {
            bail!(
                "promoting to production started no deploy: {}",
                v.message.as_deref().unwrap_or("nothing to do")
            );
        };
        self.follow("production", n).await
    }

    /// Reads the log until deploy `n` of `env` finishes: its steps, and the incidents opened
    /// and resolved meanwhile.
    async fn follow(&mut self, env: &str, n: u64) -> anyhow::Result<Deploy> {
        let mut d = Deploy {
            env: env.to_string(),
            deploy: n,
            artifact: None,
            strategy: None,
            started: None,
            finished: time::OffsetDateTime::UNIX_EPOCH,
            outcome: DeployOutcome::Failed,
            reason: None,
            running: None,
            steps: Vec::new(),
            incidents: Vec::new(),
            resolved: Vec::new(),
        };
        // The follower may already be past `deploy_started` (the automatic deploy's wait read it).
        let envs = self.env_status(env).await?;
        if let Some(h) = envs.iter().find(|h| h.deploy == n) {
            d.artifact = Some(h.artifact.clone());
            d.strategy = Some(h.strategy);
            d.started = timefmt::parse_rfc3339(&h.started_at);
        }
        let what = format!("deploy #{n} to {env} to finish");
        self.log
            .until(Duration::from_secs(60), &what, |e| {
                match &e.kind {
                    EventKind::DeployStarted {
                        environment,
                        deploy,
                        artifact,
                        strategy,
                        ..
                    } if environment == env && *deploy == n => {
                        d.artifact = Some(artifact.clone());
                        d.strategy = Some(*strategy);
                        d.started = Some(e.at);
                    }
                    EventKind::DeployStep {
                        environment,
                        deploy,
                        action,
                        weight,
                        verdict,
                        detail,
                        ..
                    } if environment == env && *deploy == n => d.steps.push(Step {
                        action: action.clone(),
                        weight: *weight,
                        verdict: *verdict,
                        detail: detail.clone(),
                        at: e.at,
                    }),
                    EventKind::IncidentOpened {
                        id: Some(id), trigger, ..
                    } => d.incidents.push((id.clone(), *trigger)),
                    EventKind::IncidentResolved { id, .. } => d.resolved.push(id.clone()),
                    EventKind::DeployFinished {
                        environment,
                        deploy,
                        outcome,
                        running,
                        reason,
                    } if environment == env && *deploy == n => {
                        d.outcome = *outcome;
                        d.running = running.clone();
                        d.reason = reason.clone();
                        d.finished = e.at;
                        return Ok(Some(()));
                    }
                    _ => {}
                }
                Ok(None)
            })
            .await?;
        Ok(d)
    }

    /// The environment's recent deployments (newest first).
    async fn env_status(&self, env: &str) -> anyhow::Result<Vec<takt_views::Deployment>> {
        let v: takt_api::EnvironmentStatus = self.api.get(&format!("/api/v1/environments/{PROJECT}/{env}")).await?;
        Ok(v.history)
    }

    fn print_blue_green(&self, d: &Deploy) -> anyhow::Result<()> {
        if d.outcome != DeployOutcome::Succeeded {
            bail!(
                "staging: deploy #{} of {} {}: {}",
                d.deploy,
                d.what(),
                <&str>::from(d.outcome),
                d.reason.as_deref().unwrap_or("no reason given")
            );
        }
        // "VERSION stays up for 5s"
        let kept = d
            .steps
            .iter()
            .find(|s| s.action == StepAction::KeepOld)
            .and_then(|s| s.detail.as_deref()?.split_once(" stays up for "))
            .map(|(version, long)| format!("; the old colour ({version}) stays up {long} for an instant rollback"));
        outln!(
            "✓ {}: blue/green deploy of {} done in {} (the idle colour started and smoke-checked, then all traffic switched at once{})",
            d.env,
            d.what(),
            d.took(),
            kept.unwrap_or_default()
        );
        Ok(())
    }

    fn print_canary(&self, d: &Deploy) -> anyhow::Result<()> {
        if d.outcome != DeployOutcome::Succeeded {
            bail!(
                "production: the canary of {} {}: {}",
                d.what(),
                <&str>::from(d.outcome),
                d.reason.as_deref().unwrap_or("no reason given")
            );
        }
        outln!("✓ production: canary of {} promoted in {}", d.what(), d.took());
        outln!("    {}", canary_steps(&d.steps));
        Ok(())
    }

    /// The broken canary: failed analysis, rolled back, its incident.
    fn print_caught(&self, d: &Deploy) -> anyhow::Result<()> {
        if d.outcome != DeployOutcome::RolledBack {
            bail!(
                "production: the broken canary of {} was not caught: it {} ({})",
                d.what(),
                <&str>::from(d.outcome),
                d.reason.as_deref().unwrap_or("no reason given")
            );
        }
        let failed = d
            .steps
            .iter()
            .find(|s| s.action == StepAction::Analysis && s.verdict == Some(StepVerdict::Failed));
        let why = match failed {
            Some(s) => {
                let v = values(s.detail.as_deref().unwrap_or_default());
                match (v.get("error_rate"), v.get("requests")) {
                    (Some(r), Some(n)) => format!("error_rate {r:.2} > 0.05 over {n} requests"),
                    _ => FAILURE_CONDITION.to_string(),
                }
            }
            None => d.reason.clone().unwrap_or_default(),
        };
        let back = d
            .running
            .as_ref()
            .map(label)
            .unwrap_or_else(|| "the previous version".into());
        let moved = d.steps.iter().find(|s| s.action == StepAction::Rollback);
        let took = match (failed, moved) {
            (Some(f), Some(m)) => format!(", all traffic back {} later", secs(m.at - f.at)),
            _ => String::new(),
        };
        outln!(
            "✗ production: canary of {} failed its analysis ({why}) → rolled back to {back}{took}",
            d.what()
        );
        outln!("    {}", canary_steps(&d.steps));
        for (id, trigger) in &d.incidents {
            let how = if d.resolved.contains(id) {
                ", resolved at once by the rollback"
            } else {
                ""
            };
            let by = match trigger {
                IncidentTrigger::Analysis => "the failed analysis",
                IncidentTrigger::Check => "a check",
                IncidentTrigger::RollbackFailed => "a failed rollback",
                IncidentTrigger::Person => "a person",
            };
            outln!(
                "! incident {id} opened by {by}{how} (cause: {PROJECT}/production#{})",
                d.deploy
            );
        }
        Ok(())
    }

    /// Sets off v4's bug, then follows the check, the incident, the remediation and the
    /// resolution; prints the postmortem draft's gist.
    async fn break_and_remediate(&mut self, good: &str, broken: Option<&ArtifactRef>) -> anyhow::Result<()> {
        tokio::fs::write(&self.switch, b"")
            .await
            .with_context(|| format!("writing {}", self.switch.display()))?;
        let flipped = time::OffsetDateTime::now_utc();
        outln!(
            "! production breaks after its rollout: the demo sets off v4's bug (it creates {})",
            self.switch.display()
        );
        let mut incident: Option<String> = None;
        let mut remedied = false;
        let mut resolved_at = None;
        let mut detected_at = None;
        self.log
            .until(
                Duration::from_secs(60),
                "the incident to be remediated and resolved",
                |e| {
                    match &e.kind {
                        EventKind::CheckStateChanged {
                            check, state, reason, ..
                        } if *state == CheckState::Down => {
                            outln!("! check {check} is down: {reason}");
                        }
                        EventKind::IncidentOpened {
                            id: Some(id),
                            trigger: IncidentTrigger::Check,
                            checks,
                            ..
                        } if incident.is_none() => {
                            detected_at = Some(e.at);
                            outln!(
                                "! incident {id} opened by check {} ({} after the break)",
                                checks.join(", "),
                                secs(e.at - flipped)
                            );
                            incident = Some(id.clone());
                        }
                        EventKind::IncidentRemediation {
                            id,
                            action,
                            deploy,
                            outcome,
                            detail,
                        } if incident.as_deref() == Some(id) => {
                            let action: &str = action.into();
                            let on = deploy.clone().unwrap_or_default();
                            match outcome {
                                RemedyOutcome::Started => {
                                    outln!("↺ remediation: takt rolls back {on} itself (remediate: {action})")
                                }
                                RemedyOutcome::Succeeded => {
                                    remedied = true;
                                    outln!(
                                        "✓ remediation rolled back {on}: production runs {good} again ({})",
                                        detail.as_deref().unwrap_or("done")
                                    );
                                }
                                RemedyOutcome::Failed | RemedyOutcome::Skipped => bail!(
                                    "the remediation of {id} {}: {}",
                                    <&str>::from(*outcome),
                                    detail.as_deref().unwrap_or("no detail")
                                ),
                            }
                        }
                        EventKind::IncidentResolved { id, .. } if incident.as_deref() == Some(id) => {
                            resolved_at = Some(e.at);
                            outln!("✓ incident {id} resolved: its check passes again");
                        }
                        _ => {}
                    }
                    Ok((remedied && resolved_at.is_some()).then_some(()))
                },
            )
            .await?;
        // The bug stays in v4, which still runs in staging; the file goes.
        let _ = tokio::fs::remove_file(&self.switch).await;
        let id = incident.ok_or_else(|| anyhow!("no incident opened"))?;
        if let (Some(d), Some(r)) = (detected_at, resolved_at) {
            outln!(
                "  production was broken for {}: detected in {}, back on {good} {} later",
                secs(r - flipped),
                secs(d - flipped),
                secs(r - d)
            );
        }
        if let (Some(load), Some(a)) = (&self.load, broken) {
            outln!(
                "  {} of production's requests failed meanwhile (answered by {})",
                load.failed(&a.version),
                label(a)
            );
        }
        self.postmortem(&id).await
    }

    /// The postmortem draft of incident `id`: written beside the data, its gist printed.
    async fn postmortem(&self, id: &str) -> anyhow::Result<()> {
        let n = id.rsplit('#').next().unwrap_or_default();
        let v: takt_api::PostmortemDraft = self
            .api
            .get(&format!("/api/v1/projects/{PROJECT}/incidents/{n}/postmortem"))
            .await?;
        let file = self.root.join(format!("postmortem-{}.md", id.replace('#', "-")));
        tokio::fs::write(&file, &v.markdown)
            .await
            .with_context(|| format!("writing {}", file.display()))?;
        let timeline = v
            .markdown
            .split("## Timeline")
            .nth(1)
            .map(|t| t.lines().filter(|l| l.starts_with("- ")).count())
            .unwrap_or(0);
        outln!(
            "✓ postmortem draft of {id} ({timeline} entries on its UTC timeline, from the first commit to the resolution):"
        );
        // (Its times are whole seconds: the demo's own figures above are finer.)
        for prefix in ["# Postmortem", "- Cause (marked):", "- Remediation:"] {
            if let Some(line) = v.markdown.lines().find(|l| l.starts_with(prefix)) {
                outln!("    {}", line.trim_start_matches("# ").trim_start_matches("- "));
            }
        }
        if self.serve {
            outln!(
                "  all of it: {} or `takt postmortem {id}` (the CLI line below)",
                file.display()
            );
        } else {
            outln!(
                "  all of it: {} (kept with --keep DIR), or `takt postmortem {id}` against `takt demo --serve`",
                file.display()
            );
        }
        Ok(())
    }

    /// `--serve`: the server stays up, with what to open, until Ctrl-C.
    async fn serve_until_interrupted(&self, admin: &str) {
        let base = format!("http://{}", self.addr);
        outln!();
        outln!("takt demo --serve: the server stays up until Ctrl-C");
        outln!("  web UI      {base}");
        outln!("  log in      {base}/login?token={admin}");
        outln!("  CLI         TAKT_SERVER={base} TAKT_TOKEN={admin} takt env ls");
        outln!(
            "  staging     http://127.0.0.1:{}/   production  http://127.0.0.1:{}/",
            self.staging,
            self.production
        );
        interrupted().await;
        outln!();
    }

    /// `takt env stop` for every environment that runs something: supervisors, instances and
    /// proxies stop. What it stopped.
    async fn stop_environments(&self) -> Vec<String> {
        let mut stopped = Vec::new();
        let Ok(list) = self.api.get::<EnvironmentList>("/api/v1/environments").await else {
            return stopped;
        };
        for e in list.environments {
            let v = &e.view;
            if v.project != PROJECT || (v.running.is_none() && v.deploying.is_none()) || v.stopped.is_some() {
                continue;
            }
            let path = format!("/api/v1/environments/{PROJECT}/{}/stop", v.environment);
            match self.api.post::<EnvironmentStopped>(&path).await {
                Ok(_) => stopped.push(v.environment.clone()),
                // Busy with a deploy (an interrupted story): its supervisor is ended below.
                Err(e) => tracing::info!(environment = %v.environment, error = %e, "cannot stop"),
            }
        }
        stopped
    }
}

/// The name serde gives a plain enum's value (`already_running`).
fn serde_name(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

/// A free port other than `other`.
fn loop_free_port(other: u16) -> anyhow::Result<u16> {
    for _ in 0..20 {
        match takt_driver::free_port() {
            Some(p) if p != other => return Ok(p),
            _ => {}
        }
    }
    bail!("no second free port")
}

/// `text` with `from` replaced by `to`; an error if `from` is not there (the example changed
/// under the demo).
fn edit(text: &str, from: &str, to: &str) -> anyhow::Result<String> {
    if !text.contains(from) {
        bail!("examples/deploy changed: the demo edits `{from}`, which it no longer has");
    }
    Ok(text.replacen(from, to, 1))
}

/// The example's takt.yml with the demo's ports, a shorter analysis interval, and the health
/// check when `with_check`.
fn pipeline(staging: u16, production: u16, with_check: bool) -> anyhow::Result<String> {
    let y = edit(PIPELINE, "port: 18081", &format!("port: {staging}"))?;
    let y = edit(&y, "port: 18082", &format!("port: {production}"))?;
    let y = edit(&y, "interval: 1s\n", "interval: 500ms\n")?;
    edit(&y, FAILURE_CONDITION, FAILURE_CONDITION)?;
    Ok(if with_check { format!("{y}{CHECK}") } else { y })
}

/// `git ARGS` in `dir`, with a fixed identity and none of the user's configuration; its output.
async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=takt demo",
            "-c",
            "user.email=demo@takt.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running git (the demo needs git on PATH)")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A process on this machine, from `/proc`.
struct Proc {
    pid: i32,
    ppid: i32,
    zombie: bool,
    cmdline: Vec<String>,
}

fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut f = rest.split_whitespace();
            let state = f.next()?;
            let ppid = f.next()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline"))
                .map(|b| {
                    b.split(|c| *c == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            Some(Proc {
                pid,
                ppid,
                zombie: state == "Z" || state == "X",
                cmdline,
            })
        })
        .collect()
}

/// What the demo started that still runs: this process's descendants (supervisors, their
/// instances, jobs), and any process whose command line is under the environments' directory
/// (an instance whose supervisor went away).
fn leftovers(envs_dir: &str) -> Vec<Proc> {
    let me = std::process::id() as i32;
    let all = processes();
    let mut ours = vec![me];
    let mut i = 0;
    while i < ours.len() {
        let parent = ours[i];
        ours.extend(all.iter().filter(|p| p.ppid == parent && p.pid != me).map(|p| p.pid));
        i += 1;
    }
    all.into_iter()
        .filter(|p| p.pid != me)
        .filter(|p| ours.contains(&p.pid) || p.cmdline.iter().any(|a| a.starts_with(envs_dir)))
        .collect()
}

/// Ends whatever the demo started that is still there (after an interrupted story or an
/// environment that could not be stopped): supervisors get SIGTERM (they stop their
/// instances), then everything left SIGTERM, then SIGKILL, each wait bounded. What it had to
/// end.
fn end_leftovers(envs_dir: &Path) -> Vec<String> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let envs_dir = envs_dir.display().to_string();
    let live = |envs_dir: &str| -> Vec<Proc> {
        let me = std::process::id() as i32;
        let procs = leftovers(envs_dir);
        // A child of this process that exited waits to be reaped: reap it.
        for p in procs.iter().filter(|p| p.zombie && p.ppid == me) {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(p.pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
        procs.into_iter().filter(|p| !p.zombie).collect()
    };
    let wait_gone = |within: Duration| {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if live(&envs_dir).is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    // A supervisor told to stop answers first, then stops its instances: give what is on its
    // way out a moment to go by itself.
    if wait_gone(Duration::from_millis(1500)) {
        return Vec::new();
    }
    let first = live(&envs_dir);
    let supervisor = |p: &Proc| p.cmdline.get(1).is_some_and(|a| a == "supervise");
    for p in first.iter().filter(|p| supervisor(p)) {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
    }
    // A supervisor gives its instances 5 s after SIGTERM before it kills them.
    if !wait_gone(Duration::from_secs(6)) {
        for p in live(&envs_dir) {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
        }
        if !wait_gone(Duration::from_secs(1)) {
            for p in live(&envs_dir) {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            }
            wait_gone(Duration::from_secs(1));
        }
    }
    // `takt supervise`, `4 × python3 app`: each program's name and first argument, counted.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for p in &first {
        let name = |a: &String| a.rsplit('/').next().unwrap_or(a).to_string();
        *seen
            .entry(p.cmdline.iter().take(2).map(name).collect::<Vec<_>>().join(" "))
            .or_default() += 1;
    }
    seen.into_iter()
        .map(|(what, n)| if n == 1 { what } else { format!("{n} × {what}") })
        .collect()
}
