//! `takt serve`: settings, logging, the data directory, the listener. The API itself is
//! `takt-server`.

use parking_lot::RwLock;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use takt_server::{AppState, Overrides, ServerConfig};
use takt_store::Store;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Where the server keeps its state [default: $XDG_DATA_HOME/takt or ~/.local/share/takt].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080; env TAKT_LISTEN]. Port 0 picks a free one.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// A TOML config file (keys: data_dir, listen, database_url, max_body_bytes, log_format,
    /// concurrency, jobs_per_run, max_waiting, on_restart, poll_seconds, isolation, job_user;
    /// see docs/server.md).
    #[arg(long, value_name = "FILE", env = "TAKT_CONFIG")]
    config: Option<PathBuf>,
    /// postgres://… to keep the event log in PostgreSQL [default: SQLite in the data directory;
    /// env TAKT_DATABASE_URL].
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// `human` or `json` [env TAKT_LOG_FORMAT].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// How jobs are kept away from the server: `auto` (bubblewrap if it works, else
    /// `user` if a job user is set, else none), `bwrap`, `user` or `none` [env TAKT_ISOLATION].
    #[arg(long, value_name = "MODE")]
    isolation: Option<String>,
    /// The unprivileged user (NAME, UID or UID:GID) jobs run as without bubblewrap
    /// [env TAKT_JOB_USER].
    #[arg(long, value_name = "USER")]
    job_user: Option<String>,
}

/// Chooses how jobs run (bubblewrap hides the data directory, the config file, the CLI's
/// credentials and the workspace folder) and says loudly when they are not isolated.
async fn job_isolation(
    config: &ServerConfig,
    data: &takt_engine::DataDir,
    quiet: bool,
) -> Result<takt_server::isolation::JobIsolation, takt_server::isolation::IsolationError> {
    let mut hide = vec![data.root.clone(), data.work_dir()];
    hide.extend(config.config_file.clone());
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        hide.push(PathBuf::from(x).join("takt"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        let home = PathBuf::from(h);
        // The CLI's credentials, and what the server's own git, ssh and object-store clients
        // log in with.
        for p in [
            ".config/takt",
            ".ssh",
            ".git-credentials",
            ".config/git/credentials",
            ".netrc",
            ".aws",
            ".pgpass",
            ".docker",
            ".kube",
            ".config/gcloud",
        ] {
            hide.push(home.join(p));
        }
    }
    // The event log and the artifact copies when they live outside the data directory.
    if let Some(path) = config
        .database_url
        .as_deref()
        .and_then(|u| u.strip_prefix("sqlite://"))
        .map(|p| p.split('?').next().unwrap_or(p))
    {
        for suffix in ["", "-wal", "-shm"] {
            hide.push(PathBuf::from(format!("{path}{suffix}")));
        }
    }
    if let Some(path) = config.artifact_store.as_deref().and_then(|u| u.strip_prefix("file://")) {
        hide.push(PathBuf::from(path));
    }
    let j = takt_server::isolation::choose(config.isolation, config.job_user.as_deref(), &data.root, hide).await?;
    match (&j.isolation, j.warning()) {
        (_, Some(w)) => {
            let why = j.note.as_deref().unwrap_or("isolation = \"none\"");
            if !quiet {
                eprintln!("WARNING: {w} ({why})");
            }
            tracing::warn!(isolation = j.name(), reason = why, "{w}");
        }
        (takt_exec::Isolation::Bwrap(b), None) => {
            let hidden: Vec<String> = b.hidden().map(|p| p.display().to_string()).collect();
            tracing::info!(isolation = "bwrap", hidden = %hidden.join(", "), "jobs run under bubblewrap");
        }
        (takt_exec::Isolation::User { uid, gid }, None) => {
            tracing::info!(
                isolation = "user",
                uid,
                gid,
                reason = j.note.as_deref().unwrap_or(""),
                "jobs run as another user"
            );
        }
        (takt_exec::Isolation::None, None) => {}
    }
    Ok(j)
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAKT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = if format == "json" {
        b.json().try_init()
    } else {
        b.with_ansi(false).try_init()
    };
}

pub async fn serve(a: ServeArgs) -> ExitCode {
    let flags = Overrides {
        data_dir: a.data_dir,
        listen: a.listen,
        database_url: a.database,
        log_format: a.log_format,
        isolation: a.isolation,
        job_user: a.job_user,
    };
    let env = |k: &str| std::env::var(k).ok();
    let config = match ServerConfig::resolve(a.config.as_deref(), flags, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(config: ServerConfig) -> Result<(), (u8, anyhow::Error)> {
    let s = start(config, false).await?;
    outln!(
        "takt serve: listening on http://{} (data in {}, ready in {:.1} ms)",
        s.addr,
        s.data_root.display(),
        s.started.elapsed().as_secs_f64() * 1000.0
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
    };
    s.serve(shutdown).await.map_err(|e| (1, e))
}

/// A server started in this process: listening, every service running, not yet answering
/// requests ([`Started::serve`] does that). `takt serve` and `takt demo` start theirs so.
pub struct Started {
    pub addr: std::net::SocketAddr,
    /// The admin token made for an empty data directory (none when TAKT_ADMIN_TOKEN gave one
    /// or the log already had tokens).
    pub admin_token: Option<String>,
    pub data_root: PathBuf,
    /// How jobs are kept from the server: `bwrap`, `user` or `none`, and why (when not the best).
    pub isolation: &'static str,
    pub isolation_note: Option<String>,
    started: std::time::Instant,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    store: Store,
    data: takt_engine::DataDir,
}

impl Started {
    /// Answers requests until `shutdown` completes, then closes the event log and lets go of
    /// the data directory.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        takt_server::serve(self.listener, self.app, shutdown).await?;
        self.store.close().await;
        drop(self.data);
        Ok(())
    }
}

/// Opens the data directory and the event log, starts every service and binds the listener.
/// `quiet`: print nothing (a new admin token and the isolation warning are in the answer);
/// otherwise print them as `takt serve` does. Errors carry the exit code.
pub async fn start(mut config: ServerConfig, quiet: bool) -> Result<Started, (u8, anyhow::Error)> {
    let started = std::time::Instant::now();
    takt_engine::git::set_timeouts(
        std::time::Duration::from_secs(config.git_timeout),
        std::time::Duration::from_secs(config.git_timeout.min(30)),
    );
    let data =
        takt_engine::DataDir::open(&config.data_dir).map_err(|e| (if e.is_bad_input() { 2 } else { 1 }, e.into()))?;
    let options = takt_store::StoreOptions {
        durability: config.durability,
        follow_capacity: config.follow_capacity,
    };
    let store = match &config.database_url {
        Some(url) => Store::connect_with(url, options).await,
        None => Store::open_sqlite_with(&data.db_path(), options).await,
    }
    .map_err(|e| (1, e.into()))?;
    let (tokens, new_admin) = takt_server::load_tokens(&store, &config)
        .await
        .map_err(|e| (1, e.into()))?;
    if let Some(secret) = new_admin.as_deref().filter(|_| !quiet) {
        outln!(
            "admin token (shown once; also in {}): {secret}",
            config.data_dir.join("admin-token").display()
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| (2, anyhow::anyhow!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener.local_addr().map_err(|e| (1, e.into()))?;
    // Port 0 picked a port: links the server gives out name the one it has.
    if config.listen.port() == 0 && config.public_url == format!("http://{}", config.listen) {
        config.public_url = format!("http://{addr}");
    }
    let projects = takt_server::load_projects(&store).await.map_err(|e| (1, e.into()))?;
    let takt_exe = std::env::current_exe().map_err(|e| (1, e.into()))?;
    let shim = takt_exec::shim::beside(&takt_exe);
    let isolation = job_isolation(&config, &data, quiet).await.map_err(|e| (2, e.into()))?;
    let (isolation_name, isolation_note) = (isolation.name(), isolation.note.clone());
    let executor = takt_exec::LocalExecutor {
        shim,
        shim_args: vec![takt_exec::shim::ARG.into()],
        isolation: isolation.isolation.clone(),
    };
    let mut engine = takt_engine::Engine::new(executor, store.clone(), &data).map_err(|e| (1, e.into()))?;
    engine.record_pids = true;
    engine.max_artifact_bytes = Some(config.max_artifact_bytes);
    let mirror = match &config.artifact_store {
        Some(url) => Some(Arc::new(
            takt_blob::objects::ObjectMirror::from_url(url).map_err(|e| (2, e.into()))?,
        )),
        None => None,
    };
    let key =
        takt_server::secrets::SecretKey::load(&data.root, config.secret_key.as_deref()).map_err(|e| (2, e.into()))?;
    let key = Arc::new(key);
    let projects = Arc::new(RwLock::new(projects));
    // Applied inside each append, before it returns: whoever follows the log finds a project
    // the moment its `project_added` is there (the monitoring service does).
    store.observe(takt_store::Observer(Arc::new({
        let projects = projects.clone();
        move |e| {
            if <takt_views::Projects as takt_views::Projection>::wants(e) {
                projects.write().apply(e);
            }
        }
    })));
    let runs = Arc::new(
        takt_server::runs::RunIndex::load(&store)
            .await
            .map_err(|e| (1, e.into()))?,
    );
    store.observe(takt_store::Observer(Arc::new({
        let runs = runs.clone();
        move |e| runs.apply(e)
    })));
    let flow = Arc::new(
        takt_server::flow::FlowIndex::load(&store)
            .await
            .map_err(|e| (1, e.into()))?,
    );
    store.observe(takt_store::Observer(Arc::new({
        let flow = flow.clone();
        move |e| flow.apply(e)
    })));
    let envs = Arc::new(takt_cd::EnvIndex::load(&store).await.map_err(|e| (1, e.into()))?);
    store.observe(takt_store::Observer(Arc::new({
        let envs = envs.clone();
        move |e| envs.apply(e)
    })));
    let metrics = Arc::new(takt_server::metrics::Metrics::new());
    takt_server::metrics::start(metrics.clone(), &store);
    let settings = takt_server::queue::QueueSettings {
        concurrency: config.concurrency,
        jobs_per_run: config.jobs_per_run,
        max_waiting: config.max_waiting,
        on_restart: config.on_restart,
    };
    let artifacts = Arc::new(takt_server::artifacts::Repository {
        blobs: engine.blobs.clone(),
        manifests: engine.manifests.clone(),
        keys: engine.keys.clone(),
    });
    let queue = takt_server::queue::Queue::start(engine, data.root.clone(), settings, projects.clone(), key.clone())
        .await
        .map_err(|e| (1, e.into()))?;
    let ci = Arc::new(takt_ci::Ci::new(
        queue.clone(),
        projects.clone(),
        data.root.clone(),
        Box::new({
            let metrics = metrics.clone();
            move |project, run, arrived| metrics.triggered(project, run, arrived)
        }),
    ));
    let state = Arc::new_cyclic(|weak| AppState {
        store: store.clone(),
        tokens: RwLock::new(tokens),
        projects,
        queue: Some(queue),
        artifacts,
        key,
        metrics,
        ci: ci.clone(),
        max_artifact_bytes: config.max_artifact_bytes,
        public_url: config.public_url.clone(),
        runs,
        flow,
        token_uses: Default::default(),
        data_dir: data.root.clone(),
        cd: Arc::new(takt_cd::Cd::new(
            Arc::new(takt_server::environments::ServerHost { state: weak.clone() }),
            store.clone(),
            data.root.clone(),
            takt_cd::Deployments::new(envs, takt_exe.clone()),
        )),
        mirror,
        exclusive: Default::default(),
        adding_projects: Default::default(),
        observe: Default::default(),
        ofrep_limit: takt_server::ofrep::RateLimit::new(config.ofrep_rate_limit),
        revoked: tokio::sync::broadcast::channel(64).0,
        isolation,
    });
    {
        // SQLite's WAL is checkpointed into the main file and truncated once a minute, off the
        // request path (appends also start one every 1,000 appends).
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                if let Err(e) = store.checkpoint().await {
                    tracing::warn!(error = %e, "cannot checkpoint the event log");
                }
            }
        });
    }
    takt_server::schedule::start(ci.clone());
    takt_server::notify::start(state.clone());
    takt_cd::auto::start(state.cd.clone());
    takt_cd::remedy::start(state.cd.clone());
    takt_server::metrics::start_security_summaries(state.clone());
    takt_server::drill_schedule::start(state.clone());
    takt_server::observe::start(&state);
    takt_server::artifacts::start_replication(state.clone());
    {
        let cd = state.cd.clone();
        tokio::spawn(async move {
            takt_cd::recover(&cd).await;
            // After recovery: it may have restored supervisors itself.
            takt_cd::watchdog::start(cd);
        });
    }
    if config.poll_seconds > 0 {
        takt_ci::poll::start(ci.clone(), std::time::Duration::from_secs(config.poll_seconds));
    }
    let app = takt_server::router(state, config.max_body_bytes, &config.cors_origins);
    tracing::info!(%addr, "listening");
    Ok(Started {
        addr,
        admin_token: new_admin,
        data_root: data.root.clone(),
        isolation: isolation_name,
        isolation_note,
        started,
        listener,
        app,
        store,
        data,
    })
}
