//! More of the CLI as an API client: `takt logs`, `takt secret …`, `takt hook …`.

use crate::client::{Api, BadInput, Remote, encode};
use anyhow::{Context, bail};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The run: `PROJECT/NUMBER` (as `takt runs ls` shows).
    run: String,
    /// One job's log [default: every job's, in order].
    job: Option<String>,
    /// Follow the log live until the job (or, without JOB, the run) ends. Without JOB, every
    /// job's lines as they come, each prefixed with its job's name (`build | …`).
    #[arg(long, short = 'f')]
    follow: bool,
    /// An earlier attempt of a retried job [default: the latest].
    #[arg(long)]
    attempt: Option<u32>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Subcommand)]
pub enum SecretCommand {
    /// Set a project secret; the value is read from stdin (a trailing newline is dropped).
    /// Jobs get it as an environment variable when they list it in `secrets:` and run on the
    /// default branch or a protected one. `TAKT_WEBHOOK_SECRET` signs the project's webhooks.
    Set {
        project: String,
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List a project's secret names (values are never shown).
    Ls {
        project: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a project secret.
    Rm {
        project: String,
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(clap::Subcommand)]
pub enum HookCommand {
    /// Write a post-receive hook into a repository (bare or not) that tells the server about
    /// every push. The hook keeps the server URL and the token (use a `ci` token); mode 0700.
    Install {
        /// The repository on this machine.
        repo: PathBuf,
        /// The takt project that builds it.
        #[arg(long)]
        project: String,
        /// Replace a post-receive hook that takt did not write.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// What the installed hook runs: reads `OLD NEW REF` lines from stdin and reports each
    /// updated branch or tag. Never fails the push.
    Notify {
        project: String,
        #[command(flatten)]
        remote: Remote,
    },
}

fn split_run(run: &str) -> anyhow::Result<(String, u64)> {
    let (p, n) = run
        .rsplit_once('/')
        .or_else(|| run.rsplit_once('#'))
        .ok_or_else(|| BadInput(format!("`{run}` is not PROJECT/NUMBER")))?;
    let n = n
        .parse()
        .map_err(|_| BadInput(format!("`{n}` in `{run}` is not a run number")))?;
    Ok((p.to_string(), n))
}

pub async fn logs(a: LogsArgs) -> anyhow::Result<()> {
    let api = std::sync::Arc::new(Api::new(&a.remote)?);
    let (project, run) = split_run(&a.run)?;
    let show = format!("/api/v1/runs/{project}/{run}");
    let mut v: takt_views::RunView = api.get(&show).await?;
    // Following a run that was just triggered: wait until all its jobs are planned, which they
    // are once one has started (every `job_queued` comes before the first job starts).
    let mut after = api.head().await?;
    while a.follow && v.jobs.iter().all(not_started) && v.finished_at.is_none() {
        after = api
            .next_event(&format!("project={}&run={run}", encode(&project)), after)
            .await?;
        v = api.get(&show).await?;
    }
    let names: Vec<String> = match &a.job {
        Some(j) => {
            if !v.jobs.iter().any(|x| x.name == *j) {
                bail!(BadInput(format!("run #{run} of {project} has no job `{j}`")));
            }
            vec![j.clone()]
        }
        None => v.jobs.iter().map(|j| j.name.clone()).collect(),
    };
    let job = JobLogs {
        api: api.clone(),
        project,
        run,
        attempt: a.attempt,
    };
    let mut out = crate::output::Stdout(std::io::stdout().lock());
    if a.follow && names.len() > 1 {
        return job.follow_all(names, &mut out).await;
    }
    let many = names.len() > 1;
    for name in names {
        if !job.wait_for_log(&name, a.follow).await? {
            if a.job.is_some() {
                bail!(BadInput(format!("job `{name}` of run #{} has no log", job.run)));
            }
            continue;
        }
        if many {
            writeln!(out, "── {name} ──")?;
        }
        if a.follow {
            follow(&api, &job.path(&name), &mut Plain(&mut out)).await?;
        } else {
            let res = api.send(api.request(reqwest::Method::GET, &job.path(&name))).await?;
            let bytes = res.bytes().await.context("reading the log")?;
            out.write_all(&bytes)?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Not started yet: not even queued, or waiting for its turn.
fn not_started(j: &takt_views::JobView) -> bool {
    matches!(
        j.status,
        None | Some(takt_views::JobState::Pending(takt_views::Pending::Queued))
    )
}

/// The logs of one run's jobs.
struct JobLogs {
    api: std::sync::Arc<Api>,
    project: String,
    run: u64,
    attempt: Option<u32>,
}

impl JobLogs {
    fn path(&self, name: &str) -> String {
        format!(
            "/api/v1/runs/{}/{}/logs/{}{}",
            self.project,
            self.run,
            encode(name),
            self.attempt.map(|n| format!("?attempt={n}")).unwrap_or_default()
        )
    }

    /// Whether job `name` has a log; when following, waits until it has one or never will:
    /// each time the run records something (a long poll on its events), it looks again.
    async fn wait_for_log(&self, name: &str, follow: bool) -> anyhow::Result<bool> {
        let show = format!("/api/v1/runs/{}/{}", self.project, self.run);
        let mut after = self.api.head().await?;
        loop {
            let v: takt_views::RunView = self.api.get(&show).await?;
            let job = v.jobs.iter().find(|x| x.name == *name);
            if job.is_some_and(|j| j.log.is_some() || j.exit_code.is_some()) {
                return Ok(true);
            }
            if !follow || !job.is_none_or(not_started) || v.finished_at.is_some() {
                return Ok(false);
            }
            let events = format!("project={}&run={}", encode(&self.project), self.run);
            after = self.api.next_event(&events, after).await?;
        }
    }

    /// Follows every job's live log at once, each line as it comes, prefixed with its job's
    /// name (as `docker compose logs -f` does), until all have ended.
    async fn follow_all(self, names: Vec<String>, out: &mut impl Write) -> anyhow::Result<()> {
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, String)>(1024);
        let this = std::sync::Arc::new(self);
        let mut tasks = tokio::task::JoinSet::new();
        for name in names {
            let (this, tx) = (this.clone(), tx.clone());
            tasks.spawn(async move {
                if this.wait_for_log(&name, true).await? {
                    follow(&this.api, &this.path(&name), &mut Prefixed { name, tx }).await?;
                }
                anyhow::Ok(())
            });
        }
        drop(tx);
        while let Some((name, line)) = rx.recv().await {
            writeln!(out, "{name:<width$} | {line}")?;
            out.flush()?;
        }
        while let Some(done) = tasks.join_next().await {
            done.context("following a job's log")??;
        }
        Ok(())
    }
}

/// Where a followed log's lines go.
trait Lines {
    async fn line(&mut self, line: &str) -> anyhow::Result<()>;
}

/// Straight to the output.
struct Plain<'a, W: Write>(&'a mut W);

impl<W: Write> Lines for Plain<'_, W> {
    async fn line(&mut self, line: &str) -> anyhow::Result<()> {
        writeln!(self.0, "{line}")?;
        self.0.flush()?;
        Ok(())
    }
}

/// To the one printer of `follow_all`, with the job's name.
struct Prefixed {
    name: String,
    tx: tokio::sync::mpsc::Sender<(String, String)>,
}

impl Lines for Prefixed {
    async fn line(&mut self, line: &str) -> anyhow::Result<()> {
        self.tx
            .send((self.name.clone(), line.to_string()))
            .await
            .map_err(|_| anyhow::anyhow!("the output is closed"))
    }
}

/// Gives a log's lines to `out` as its Server-Sent Events arrive, until the `end` event.
async fn follow(api: &Api, path: &str, out: &mut impl Lines) -> anyhow::Result<()> {
    // No overall timeout: a live log lasts as long as its job.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let mut req = http
        .get(format!("{}{path}", api.base))
        .header("accept", "text/event-stream");
    if let Some(t) = &api.token {
        req = req.bearer_auth(t);
    }
    let mut res = api.send(req).await?;
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = res.chunk().await.context("reading the live log")? {
        buf.extend_from_slice(&chunk);
        while let Some(end) = find(&buf, b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let mut is_end = false;
            for line in text.lines() {
                if line == "event: end" {
                    is_end = true;
                } else if let Some(d) = line.strip_prefix("data:")
                    && !is_end
                {
                    out.line(d.strip_prefix(' ').unwrap_or(d)).await?;
                }
            }
            if is_end {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub async fn secret(c: SecretCommand) -> anyhow::Result<()> {
    match c {
        SecretCommand::Set { project, name, remote } => {
            let api = Api::new(&remote)?;
            let mut stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("value of {name} (end with Enter, then Ctrl-D):");
            }
            let mut value = Vec::new();
            stdin.read_to_end(&mut value).context("reading the value from stdin")?;
            let req = api
                .request(
                    reqwest::Method::PUT,
                    &format!("/api/v1/projects/{project}/secrets/{name}"),
                )
                .body(value);
            api.send(req).await?;
            outln!("secret {name} of {project} set");
        }
        SecretCommand::Ls { project, json, remote } => {
            let v: takt_api::SecretList = Api::new(&remote)?
                .get(&format!("/api/v1/projects/{project}/secrets"))
                .await?;
            if json {
                outln!("{}", serde_json::to_string(&v.secrets)?);
            } else {
                for x in &v.secrets {
                    outln!("{}\tset {}", x.name, x.set_at);
                }
            }
        }
        SecretCommand::Rm { project, name, remote } => {
            Api::new(&remote)?
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/projects/{project}/secrets/{name}"),
                    None,
                )
                .await?;
            outln!("secret {name} of {project} removed");
        }
    }
    Ok(())
}

const HOOK_MARK: &str = "# Installed by `takt hook install`";

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub async fn hook(c: HookCommand) -> anyhow::Result<()> {
    match c {
        HookCommand::Install {
            repo,
            project,
            force,
            remote,
        } => {
            let api = Api::new(&remote)?;
            let Some(token) = api.token.clone() else {
                bail!(BadInput(
                    "the hook needs a token: give --token (a `ci` token) or log in first".into()
                ));
            };
            let hooks = if repo.join("HEAD").is_file() && repo.join("objects").is_dir() {
                repo.join("hooks")
            } else if repo.join(".git").is_dir() {
                repo.join(".git/hooks")
            } else {
                bail!(BadInput(format!("{} is not a git repository", repo.display())));
            };
            std::fs::create_dir_all(&hooks).with_context(|| format!("creating {}", hooks.display()))?;
            let path = hooks.join("post-receive");
            if let Ok(old) = std::fs::read_to_string(&path)
                && !old.contains(HOOK_MARK)
                && !force
            {
                bail!(BadInput(format!(
                    "{} exists and was not written by takt; use --force to replace it",
                    path.display()
                )));
            }
            let exe = std::env::current_exe().context("finding the takt binary")?;
            let script = format!(
                "#!/bin/sh\n{HOOK_MARK}: tells the takt server about every push.\nTAKT_SERVER={} TAKT_TOKEN={} exec {} hook notify {}\n",
                sh_quote(&api.base),
                sh_quote(&token),
                sh_quote(&exe.display().to_string()),
                sh_quote(&project)
            );
            {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o700)
                    .open(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                f.write_all(script.as_bytes())?;
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
            outln!("installed {} (project {project}, server {})", path.display(), api.base);
        }
        HookCommand::Notify { project, remote } => {
            let api = Api::new(&remote)?;
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input)?;
            for line in input.lines() {
                let mut parts = line.split_whitespace();
                let (Some(_old), Some(new), Some(r)) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                if new.bytes().all(|b| b == b'0') {
                    continue; // a deleted ref
                }
                let body = takt_api::TriggerBody {
                    rev: Some(new.to_string()),
                    git_ref: Some(r.to_string()),
                    force: false,
                    hook: true,
                };
                let to = format!("/api/v1/projects/{project}/trigger");
                let answer: anyhow::Result<takt_api::Triggered> =
                    api.send_json(reqwest::Method::POST, &to, &body).await;
                match answer {
                    Ok(v) if v.duplicate => outln!("takt: {r} already has run #{}", v.run),
                    Ok(v) => outln!("takt: queued run #{} of {project} for {r}", v.run),
                    // The push has happened; a failed notification must not look like a failed push.
                    Err(e) => outln!("takt: could not notify the server about {r}: {e:#}"),
                }
            }
        }
    }
    Ok(())
}
