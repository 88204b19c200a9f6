//! `takt`: the binary. Command-line parsing, wiring, output — nothing else.

#[macro_use]
mod output;
mod artifact_cli;
mod check_cli;
mod client;
mod demo;
mod drill_cli;
mod env_cli;
mod flag_cli;
mod import_csv;
mod incident_cli;
mod metrics_cli;
mod ops;
mod serve;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use takt_engine::git::Repo;
use takt_engine::{DataDir, Engine, EngineError, Live, Prepared, RunRequest};
use takt_exec::{Isolation, LocalExecutor};
use takt_model::RunStatus;
use takt_store::Store;

#[derive(Parser)]
#[command(
    name = "takt",
    version,
    about = "Continuous delivery in one binary: build > test > package > release > deploy > monitor",
    long_about = "takt takes every commit through build > test > package > release > deploy > monitor, \
keeps one immutable checksummed artifact per change, and measures the flow.\n\n\
Exit codes: 0 success, 1 pipeline failed, 2 bad input or usage, 130 interrupted."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole product in one command: a server, an example service, its pipeline, a
    /// blue/green deploy to staging, a canary to production, a broken canary caught and rolled
    /// back, and a break after the rollout caught by a check and remediated, with its incident
    /// and postmortem.
    ///
    /// Everything happens in a temporary directory on 127.0.0.1 (free ports, nothing of your
    /// configuration used; it needs git and python3) and is driven through the server's real
    /// HTTP API. Each step is printed as it happens. At the end — or at Ctrl-C or an error —
    /// it stops everything it started (the server, the environments' supervisors, instances
    /// and proxies, any job) and removes the directory. It takes well under 30 s.
    ///
    /// Exit codes: 0 the story ran to its end, 1 it did not (the error says where), 2 bad
    /// input, 130 interrupted.
    Demo(demo::DemoArgs),
    /// Run a repository's pipeline once, locally, with no server.
    ///
    /// Reads takt.yml at the root of the git repository as of the commit (default HEAD) and runs
    /// every job in a fresh checkout of that commit, with an environment built from nothing.
    /// Logs, artifacts and events go to the data directory (<git dir>/takt by default).
    Run(RunArgs),
    /// Validate takt.yml without running anything; every problem is reported at once.
    Lint(LintArgs),
    /// Run the takt server: triggers (webhooks, polling, hooks, schedules), the run queue, the
    /// HTTP API with scoped tokens, secrets, metrics and notifications (docs/server.md).
    ///
    /// Settings come from flags, then TAKT_* environment variables, then the TOML config file.
    /// On an empty data directory the first admin token is created, printed once and written
    /// to <data-dir>/admin-token (mode 0600); TAKT_ADMIN_TOKEN sets it instead.
    Serve(serve::ServeArgs),
    /// Check a token against a server and remember both in ~/.config/takt/credentials (0600).
    Login(client::LoginArgs),
    /// Create, list and revoke API tokens (admin scope).
    #[command(subcommand)]
    Token(client::TokenCommand),
    /// Add, list, show and set (queue mode, concurrency, protected branches) a server's projects.
    #[command(subcommand)]
    Project(client::ProjectCommand),
    /// Ask the server to run a project's pipeline (once per commit unless --force).
    Trigger(client::TriggerArgs),
    /// List, show, cancel, retry runs on the server, and play their manual jobs.
    #[command(subcommand)]
    Runs(client::RunsCommand),
    /// Print a job's log (or every job's), or follow it live with -f.
    Logs(ops::LogsArgs),
    /// Project secrets: set (value from stdin), ls (names only), rm.
    #[command(subcommand)]
    Secret(ops::SecretCommand),
    /// Git hooks that report pushes to the server.
    #[command(subcommand)]
    Hook(ops::HookCommand),
    /// The artifact repository: push, pull (verified), ls, show, verify, fsck, gc.
    #[command(subcommand)]
    Artifact(artifact_cli::ArtifactCommand),
    /// Deploy an artifact to an environment (its strategy, smoke checks and gates apply) and
    /// follow the deploy to its end (exit 1 if it did not succeed; --detach returns at once).
    Deploy(env_cli::DeployArgs),
    /// Deploy to ENV what runs healthy in the environment it `requires`.
    Promote(env_cli::PromoteArgs),
    /// Let a deploy to an environment with `approval: manual` go on.
    Approve(env_cli::EnvArgs),
    /// The andon cord: stop an environment's deploy at its next safe point; block new ones.
    Halt(env_cli::HaltArgs),
    /// Lift a halt, or continue a paused rollout.
    Resume(env_cli::EnvArgs),
    /// Restore the previous good artifact (or the one named), skipping analysis; a deploy in
    /// flight goes back to what ran before it.
    Rollback(env_cli::RollbackArgs),
    /// Environments: what runs where, since when, and any deploy in progress.
    #[command(subcommand)]
    Env(env_cli::EnvCommand),
    /// Incidents: opened by failing checks, rolled-back deploys or people; their timelines,
    /// suspects and causes.
    #[command(subcommand)]
    Incident(incident_cli::IncidentCommand),
    /// Disaster-recovery drills: turn down instances or a supervisor under load, and measure
    /// time to detect, time to recover and requests failed.
    #[command(subcommand)]
    Drill(drill_cli::DrillCommand),
    /// A blameless postmortem draft of an incident: summary, impact, a UTC timeline from the
    /// event log, suspects, five whys, detection and resolution times, action items
    Postmortem(incident_cli::PostmortemArgs),
    /// Health checks: their states, and heartbeat checks' URLs and tokens.
    #[command(subcommand)]
    Check(check_cli::CheckCommand),
    /// Feature flags: a project's flags (flagd's schema, `flags:` of its default branch), their
    /// state and targeting, and what each environment changes (docs/flags.md).
    #[command(subcommand)]
    Flag(flag_cli::FlagCommand),
    /// Flow metrics: the five DORA keys of the production environments, with their bands and
    /// trends, and the bottleneck stage (docs/metrics.md).
    Metrics(metrics_cli::MetricsArgs),
    /// Flaky tests: JUnit test cases that both failed and passed on one commit (in a run's
    /// retries or across its runs), with counts, first and last seen, and the runs.
    Flaky(metrics_cli::FlakyArgs),
    /// Load a project's deployments and incidents from before takt (a JSON file), so its flow
    /// metrics start with its history; nothing else acts on them.
    Import(metrics_cli::ImportArgs),
    /// The process driver's supervisor for one environment (started by `takt serve`).
    #[command(hide = true)]
    Supervise(env_cli::SuperviseArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// A directory inside the git repository.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// The commit to run: a commit id, branch or tag.
    #[arg(long, default_value = "HEAD")]
    rev: String,
    /// Run only this job and the jobs it needs (repeatable).
    #[arg(long = "job", value_name = "NAME")]
    jobs_only: Vec<String>,
    /// How many jobs may run at once [default: number of cores].
    #[arg(long = "jobs", short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    parallel: Option<u16>,
    /// Where logs, artifacts and the event log go [default: <git common dir>/takt].
    #[arg(long, value_name = "DIR", env = "TAKT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Include uncommitted changes (tracked and untracked files) in the checkout.
    #[arg(long)]
    dirty: bool,
    /// Cap on each job's log, e.g. 64MiB, 1GiB, 500k.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    log_limit: u64,
    /// Project name in the event log [default: the repository's directory name].
    #[arg(long)]
    project: Option<String>,
    /// Print the summary as one JSON document on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Run each job under bubblewrap, as `takt serve` does: the host read-only, the data
    /// directory and takt's credentials hidden, only the workspace and a private /tmp writable.
    #[arg(long)]
    isolate: bool,
}

#[derive(clap::Args)]
struct LintArgs {
    /// A pipeline file (takt.yml, or .gitlab-ci.yml in GitLab's layout), or a directory holding
    /// one (takt.yml first). `include: local` paths are read from the directory.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Make what the local executor cannot honour (`image`, `services`) an error.
    #[arg(long)]
    strict: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split]
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. 64MiB"))?;
    let mult: u64 = match t[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}`; use k, MiB or GiB")),
    };
    n.checked_mul(mult)
        .filter(|v| *v >= 1024)
        .ok_or_else(|| format!("`{s}` is out of range (at least 1k)"))
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // The per-step shim is this same binary; keep its start-up minimal (no clap, no runtime).
    if args.get(1).is_some_and(|a| a == takt_exec::shim::ARG) {
        return ExitCode::from(takt_exec::shim::entry(&args[1..]).clamp(0, 255) as u8);
    }
    let cli = Cli::parse();
    // Every HTTP client (the API client, notifications, S3) speaks TLS through rustls on ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if matches!(cli.command, Command::Run(_) | Command::Serve(_) | Command::Demo(_)) {
        output::keep_going_when_stdout_closes();
    }
    match cli.command {
        Command::Lint(a) => lint(a),
        Command::Demo(a) => demo::demo(a),
        Command::Serve(a) => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt.block_on(serve::serve(a)),
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                ExitCode::from(1)
            }
        },
        Command::Login(a) => client::block_on(client::login(a)),
        Command::Token(c) => client::block_on(client::token(c)),
        Command::Project(c) => client::block_on(client::project(c)),
        Command::Trigger(a) => client::block_on(client::trigger(a)),
        Command::Runs(c) => client::block_on(client::runs(c)),
        Command::Logs(a) => client::block_on(ops::logs(a)),
        Command::Secret(c) => client::block_on(ops::secret(c)),
        Command::Hook(c) => client::block_on(ops::hook(c)),
        Command::Artifact(c) => client::block_on(artifact_cli::artifact(c)),
        Command::Deploy(a) => client::block_on(env_cli::deploy(a)),
        Command::Promote(a) => client::block_on(env_cli::promote(a)),
        Command::Approve(a) => client::block_on(env_cli::simple("approve", a)),
        Command::Resume(a) => client::block_on(env_cli::simple("resume", a)),
        Command::Halt(a) => client::block_on(env_cli::halt(a)),
        Command::Rollback(a) => client::block_on(env_cli::rollback(a)),
        Command::Env(c) => client::block_on(env_cli::env(c)),
        Command::Incident(c) => client::block_on(incident_cli::incident(c)),
        Command::Postmortem(a) => client::block_on(incident_cli::postmortem(a)),
        Command::Drill(c) => client::block_on(drill_cli::drill(c)),
        Command::Check(c) => client::block_on(check_cli::check(c)),
        Command::Flag(c) => client::block_on(flag_cli::flag(c)),
        Command::Metrics(a) => client::block_on(metrics_cli::metrics(a)),
        Command::Flaky(a) => client::block_on(metrics_cli::flaky(a)),
        Command::Import(a) => client::block_on(metrics_cli::import(a)),
        Command::Supervise(a) => env_cli::supervise(a),
        Command::Run(a) => {
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(run(a))
        }
    }
}

/// Each diagnostic as JSON, in the file it is in.
fn diagnostics_json(d: &takt_pipeline::Diagnostics) -> Vec<serde_json::Value> {
    d.items
        .iter()
        .map(|i| {
            let (file, pos) = d.locate(i.pos);
            serde_json::json!({"file": file, "line": pos.line, "column": pos.col, "message": i.message, "help": i.help})
        })
        .collect()
}

/// Lints the child pipelines the trigger jobs of `p` run (files under `root`, read in `p`'s
/// layout), printing what is wrong; whether all are valid.
fn child_pipelines_lint(root: &std::path::Path, p: &takt_pipeline::Pipeline, strict: bool) -> bool {
    let mut ok = true;
    for file in p.child_pipelines() {
        let path = root.join(file);
        let shown = path.display().to_string();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read the child pipeline {shown}: {e}");
                ok = false;
                continue;
            }
        };
        let opts = takt_pipeline::ParseOptions {
            layout: Some(p.layout),
            strict,
        };
        match takt_pipeline::parse_with(&shown, &bytes, &opts, &local_includes(root, &bytes)) {
            Ok(c) if c.warnings.items.is_empty() => {}
            Ok(c) => eprintln!("{}", c.warnings),
            Err(d) => {
                eprintln!("{d}");
                eprintln!(
                    "{} error{} in the child pipeline {shown}",
                    d.items.len(),
                    if d.items.len() == 1 { "" } else { "s" }
                );
                ok = false;
            }
        }
    }
    ok
}

/// The files `include: local` reaches from `bytes`, read under `root` (at most GitLab's 150).
fn local_includes(root: &std::path::Path, bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    // Globs match the directory's files; most files include nothing, and walking a large
    // directory for them would be wasted.
    let has_includes = bytes.windows(8).any(|w| w == b"include:");
    let files = if has_includes { walk_files(root) } else { Vec::new() };
    takt_pipeline::gitlab::IncludeWalk::read_all(bytes, &files, |p| std::fs::read(root.join(p)).ok())
}

/// Every file under `root` (relative paths, `.git` left out), for include globs.
fn walk_files(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name() == ".git" {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(p),
                Ok(t) if t.is_file() => {
                    if let Ok(rel) = p.strip_prefix(root) {
                        out.push(rel.to_string_lossy().into_owned());
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn lint(a: LintArgs) -> ExitCode {
    let file = if a.path.is_dir() {
        takt_engine::PIPELINE_FILES
            .iter()
            .map(|f| a.path.join(f))
            .find(|f| f.is_file())
            .unwrap_or_else(|| a.path.join("takt.yml"))
    } else {
        a.path.clone()
    };
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let name = file.display().to_string();
    let root = file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let includes = local_includes(
        if root.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            &root
        },
        &bytes,
    );
    let opts = takt_pipeline::ParseOptions {
        layout: None,
        strict: a.strict,
    };
    match takt_pipeline::parse_with(&name, &bytes, &opts, &includes) {
        Ok(p) if !child_pipelines_lint(&root, &p, a.strict) => ExitCode::from(2),
        Ok(p) => {
            if a.json {
                outln!(
                    "{}",
                    serde_json::json!({"ok": true, "file": name, "layout": match p.layout { takt_pipeline::Layout::Takt => "takt", takt_pipeline::Layout::Gitlab => "gitlab" }, "jobs": p.jobs.iter().map(|j| &j.name).collect::<Vec<_>>(), "stages": p.stages, "warnings": diagnostics_json(&p.warnings), "not_supported_yet": p.reserved.iter().map(|r| &r.0).collect::<Vec<_>>()})
                );
            } else {
                if !p.warnings.items.is_empty() {
                    eprintln!("{}", p.warnings);
                }
                for (section, pos) in &p.reserved {
                    eprintln!(
                        "{name}:{}:{}: note: `{section}` is accepted but not supported yet; it has no effect",
                        pos.line, pos.col
                    );
                }
                for q in expired_quarantine(&p) {
                    eprintln!(
                        "{name}:{}:{}: warning: the quarantine of test `{}` ended on {}; it fails its job again (remove it, or fix the test)",
                        q.pos.line, q.pos.col, q.name, q.until
                    );
                }
                outln!("{name}: ok ({} jobs in {} stages)", p.jobs.len(), p.stages.len());
            }
            ExitCode::SUCCESS
        }
        Err(d) => {
            if a.json {
                outln!(
                    "{}",
                    serde_json::json!({"ok": false, "file": name, "errors": diagnostics_json(&d)})
                );
            } else {
                eprintln!("{d}");
                eprintln!(
                    "{} error{} in {name}",
                    d.items.len(),
                    if d.items.len() == 1 { "" } else { "s" }
                );
            }
            ExitCode::from(2)
        }
    }
}

async fn run(a: RunArgs) -> ExitCode {
    match run_inner(a).await {
        Ok(code) => code,
        Err(e) => {
            let bad_input = e.downcast_ref::<EngineError>().is_some_and(EngineError::is_bad_input);
            match e.downcast_ref::<EngineError>() {
                Some(EngineError::InvalidPipeline(d)) => {
                    eprintln!("{d}");
                    eprintln!("{} is invalid: nothing was run", d.file);
                }
                _ => eprintln!("error: {e:#}"),
            }
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

/// The entries of `quarantine:` whose date has passed (today, UTC).
fn expired_quarantine(p: &takt_pipeline::Pipeline) -> Vec<&takt_pipeline::Quarantined> {
    let d = takt_model::OffsetDateTime::now_utc().date();
    let today = takt_model::timefmt::ymd(d);
    p.quarantine.iter().filter(|q| q.expired(&today)).collect()
}

async fn run_inner(a: RunArgs) -> anyhow::Result<ExitCode> {
    let repo = Repo::open(&a.path).await?;
    let data_root = a.data_dir.clone().unwrap_or_else(|| repo.common_dir.join("takt"));
    let data = DataDir::open(&data_root)?;
    let req = RunRequest {
        path: a.path.clone(),
        rev: a.rev.clone(),
        dirty: a.dirty,
        only_jobs: a.jobs_only.clone(),
        parallel: a
            .parallel
            .map(usize::from)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        log_limit: a.log_limit,
        project: a.project.clone(),
        trigger: takt_model::Trigger::Local,
        branch: None,
        tag: None,
        default_branch: None,
        queued: None,
        carry: None,
        secrets: Vec::new(),
        quarantine: None,
        child: None,
        merge_request: None,
    };
    let prep = Prepared::new(&req, repo, &data.root.join("tmp")).await?;
    if !prep.pipeline.warnings.items.is_empty() {
        eprintln!("{}", prep.pipeline.warnings);
    }
    for (section, pos) in &prep.pipeline.reserved {
        eprintln!(
            "takt.yml:{}:{}: note: `{section}` is accepted but not supported yet; it has no effect",
            pos.line, pos.col
        );
    }
    for q in expired_quarantine(&prep.pipeline) {
        eprintln!(
            "takt.yml:{}:{}: warning: the quarantine of test `{}` ended on {}; it fails its job again",
            q.pos.line, q.pos.col, q.name, q.until
        );
    }
    for j in prep.plan.jobs.iter().filter(|j| !j.job.secrets.is_empty()) {
        eprintln!(
            "note: job `{}` declares secrets ({}); `takt run` gives none: secrets come from `takt serve`",
            j.job.name,
            j.job.secrets.join(", ")
        );
    }
    if a.dirty {
        eprintln!(
            "WARNING: --dirty: this run includes UNCOMMITTED changes; its artifacts are marked dirty and do not match any commit"
        );
    }
    let store = Store::open_sqlite(&data.db_path())
        .await
        .context("opening the event log")?;
    let takt = std::env::current_exe().context("finding takt's own executable for the job shim")?;
    let shim = takt_exec::shim::beside(&takt);
    let isolation = if a.isolate {
        isolated(&data).await?
    } else {
        Isolation::None
    };
    let executor = LocalExecutor {
        shim,
        shim_args: vec![takt_exec::shim::ARG.into()],
        isolation,
    };
    let engine = Engine::new(executor, store.clone(), &data)?;

    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
            eprintln!("\ninterrupted: stopping every job…");
            let _ = cancel_tx.send(true);
        });
    }
    let live = Arc::new(Live::default());
    let (ptx, prx) = tokio::sync::mpsc::channel(256);
    let ui = output::Ui::start(a.json, live.clone(), prx);
    let report = engine.run(prep, &req, live, ptx, cancel_rx).await;
    ui.stop().await;
    store.close().await;
    let report = report?;
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        );
    } else {
        output::summary(&report);
    }
    Ok(match report.status {
        // Held by a manual job that may not fail: nothing failed (GitLab's blocked pipeline).
        RunStatus::Success | RunStatus::Manual => ExitCode::SUCCESS,
        RunStatus::Cancelled if interrupted.load(std::sync::atomic::Ordering::SeqCst) => ExitCode::from(130),
        _ => ExitCode::from(1),
    })
}

/// `takt run --isolate`: bubblewrap, hiding the data directory, the workspace folder and the
/// CLI's credentials; an error if bubblewrap is missing or does not work.
async fn isolated(data: &takt_engine::DataDir) -> anyhow::Result<Isolation> {
    let program = tokio::task::spawn_blocking(|| takt_exec::find_on_path("bwrap"))
        .await?
        .ok_or_else(|| anyhow::anyhow!("--isolate needs bwrap on PATH: install the bubblewrap package"))?;
    takt_exec::probe_bwrap(&program).await.context("--isolate")?;
    let mut hide = vec![data.root.clone(), data.work_dir()];
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        hide.push(std::path::PathBuf::from(x).join("takt"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        hide.push(std::path::PathBuf::from(h).join(".config/takt"));
    }
    let b = tokio::task::spawn_blocking(move || takt_exec::Bwrap::new(program, &hide)).await?;
    Ok(Isolation::Bwrap(b))
}
