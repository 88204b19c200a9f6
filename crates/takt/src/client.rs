//! The CLI as an API client: `takt login`, `takt token …`. It finds the server by `--server` /
//! `TAKT_SERVER` / the credentials file (default http://127.0.0.1:8080) and the token by
//! `--token` / `TAKT_TOKEN` / the credentials file that `takt login` writes.

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

#[derive(clap::Args, Clone)]
pub struct Remote {
    /// The server's URL [default: the credentials file's, or http://127.0.0.1:8080].
    #[arg(long, env = "TAKT_SERVER", global = true)]
    server: Option<String>,
    /// An API token [default: the credentials file's].
    #[arg(long, env = "TAKT_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Args)]
pub struct LoginArgs {
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// read, ci, deploy, flags or admin.
        #[arg(long)]
        scope: String,
        /// What the token is for.
        #[arg(long)]
        name: String,
        /// Limit it to this project (repeat, or separate with commas): routes of other
        /// projects, and routes that name none, answer 403.
        #[arg(long = "project", value_name = "PROJECT", value_delimiter = ',')]
        projects: Vec<String>,
        /// Limit it to environments of this name (repeat, or separate with commas).
        #[arg(long = "env", value_name = "ENV", value_delimiter = ',')]
        environments: Vec<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List live tokens (never their secrets) with their limits.
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a token by id.
    Revoke {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Credentials {
    server: Option<String>,
    token: Option<String>,
}

fn credentials_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config"));
    base.join("takt/credentials")
}

fn read_credentials() -> Credentials {
    std::fs::read_to_string(credentials_path())
        .ok()
        .and_then(|s| toml::from_str(&s).ok())
        .unwrap_or_default()
}

/// An error the user can fix (exit code 2) rather than a failure (1).
#[derive(Debug)]
pub(crate) struct BadInput(pub String);
impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BadInput {}

/// The operation ran and did not succeed, and the output said so already: exit code 1, no
/// further message.
#[derive(Debug)]
pub(crate) struct AlreadyReported;
impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("did not succeed")
    }
}
impl std::error::Error for AlreadyReported {}

/// A JSON document for people: one `field: value` line per value, nested fields as
/// `outer.inner`, lists of plain values joined by commas.
pub(crate) fn print_fields(v: &serde_json::Value) {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        use serde_json::Value;
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
                let items: Vec<String> = a.iter().map(plain).collect();
                out.push((prefix.to_string(), items.join(", ")));
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), x, out);
                }
            }
            Value::Null => {}
            other => out.push((prefix.to_string(), plain(other))),
        }
    }
    fn plain(v: &serde_json::Value) -> String {
        v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
    }
    let mut lines = Vec::new();
    walk("", v, &mut lines);
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, x) in lines {
        outln!("{k:<width$}  {x}");
    }
}

pub fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<AlreadyReported>().is_some() => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(if e.downcast_ref::<BadInput>().is_some() { 2 } else { 1 })
        }
    }
}

pub(crate) struct Api {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(r: &Remote) -> anyhow::Result<Api> {
        let creds = read_credentials();
        let base = r
            .server
            .clone()
            .or(creds.server)
            .unwrap_or_else(|| DEFAULT_SERVER.into())
            .trim_end_matches('/')
            .to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(BadInput(format!("server URL `{base}` must start with http:// or https://")).into());
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Api {
            base,
            token: r.token.clone().or(creds.token),
            http,
        })
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = self.send(req).await?;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Ok((status, json))
    }

    /// `GET path`, read as the API contract's type `T` (`takt-api`).
    pub(crate) async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.typed(self.request(reqwest::Method::GET, path), path).await
    }

    /// The event log's head now: where a wait for what comes next starts.
    pub(crate) async fn head(&self) -> anyhow::Result<i64> {
        let page: takt_api::EventsPage = self.get(&format!("/api/v1/events?after={}&limit=1", i64::MAX)).await?;
        Ok(page.head)
    }

    /// Waits (a long poll of up to 20 s, no polling) for the next event after `after` that the
    /// events query `query` selects (`project=web`, …); returns where the next wait starts.
    pub(crate) async fn next_event(&self, query: &str, after: i64) -> anyhow::Result<i64> {
        let page: takt_api::EventsPage = self
            .get(&format!("/api/v1/events?{query}&after={after}&limit=1000&wait=20"))
            .await?;
        let last = page
            .events
            .iter()
            .filter_map(|e| e.get("seq").and_then(|s| s.as_i64()))
            .max();
        Ok(last.unwrap_or(page.head).max(after))
    }

    /// `POST path` without a body, the answer read as `T`.
    pub(crate) async fn post<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.typed(self.request(reqwest::Method::POST, path), path).await
    }

    /// `METHOD path` with a JSON body of the contract's types, the answer read as `T`.
    pub(crate) async fn send_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.typed(self.request(method, path).json(body), path).await
    }

    /// Sends a prepared request; the answer read as `T` (`path` names it in errors).
    pub(crate) async fn typed<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
    ) -> anyhow::Result<T> {
        let text = self.send(req).await?.text().await.unwrap_or_default();
        serde_json::from_str(&text).with_context(|| {
            format!(
                "the server's answer to {path} is not what this takt {} expects (a different server version?)",
                env!("CARGO_PKG_VERSION")
            )
        })
    }

    /// A request with the token, to a path under the server.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// Sends; a 4xx/5xx answer becomes an error with the server's reason.
    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let res = self.reach(req).await?;
        self.check(res).await
    }

    /// Sends, whatever the server answers.
    pub(crate) async fn reach(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        req.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the server at {} (is `takt serve` running?): {e}",
                self.base
            )
        })
    }

    /// A 4xx/5xx answer as an error with the server's reason.
    pub(crate) async fn check(&self, res: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        let status = res.status().as_u16();
        if status >= 400 {
            let text = res.text().await.unwrap_or_default();
            let msg = serde_json::from_str::<takt_api::ErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or(text);
            let hint = match status {
                401 => " (log in with `takt login --token …`, or set TAKT_TOKEN)",
                403 => " (this token's scope does not allow it)",
                _ => "",
            };
            let e = anyhow!("server answered {status}: {msg}{hint}");
            // 409: the request was fine and the state refused it (a gate: frozen, halted, busy;
            // nothing to roll back to): that is a failure (1), not bad input (2).
            return Err(if status < 500 && status != 409 {
                BadInput(format!("{e}")).into()
            } else {
                e
            });
        }
        Ok(res)
    }
}

pub async fn login(a: LoginArgs) -> anyhow::Result<()> {
    let mut remote = a.remote.clone();
    if remote.token.is_none() {
        eprintln!("paste the token, then Enter:");
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the token from stdin")?;
        remote.token = Some(s.trim().to_string()).filter(|t| !t.is_empty());
    }
    let Some(token) = remote.token.clone() else {
        bail!(BadInput("no token given".into()))
    };
    let api = Api::new(&remote)?;
    // 403 still proves the token is known; 401 does not.
    let probe = api
        .reach(api.request(reqwest::Method::GET, "/api/v1/openapi.json"))
        .await?;
    if probe.status() != reqwest::StatusCode::FORBIDDEN {
        api.check(probe).await?;
    }
    let path = credentials_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let body = toml::to_string(&Credentials {
        server: Some(api.base.clone()),
        token: Some(token),
    })?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(body.as_bytes())?;
    }
    outln!("logged in to {}; credentials in {}", api.base, path.display());
    Ok(())
}

pub async fn token(c: TokenCommand) -> anyhow::Result<()> {
    match c {
        TokenCommand::Create {
            scope,
            name,
            projects,
            environments,
            json,
            remote,
        } => {
            let api = Api::new(&remote)?;
            let scope: takt_api::Scope = scope
                .parse()
                .map_err(|e: takt_api::auth::UnknownScope| BadInput(e.to_string()))?;
            let v: takt_api::TokenCreated = api
                .send_json(
                    reqwest::Method::POST,
                    "/api/v1/tokens",
                    &takt_api::NewToken {
                        name,
                        scope,
                        projects: projects.clone(),
                        environments: environments.clone(),
                    },
                )
                .await?;
            if json {
                outln!("{}", serde_json::to_string(&v)?);
            } else {
                let limits = takt_api::Limits { projects, environments }.describe();
                let limits = if limits.is_empty() {
                    String::new()
                } else {
                    format!(", {limits}")
                };
                outln!(
                    "token {} ({} scope{limits}) created; its secret is shown only now:",
                    v.id,
                    v.scope
                );
                outln!("{}", v.token);
            }
        }
        TokenCommand::Ls { json, remote } => {
            let api = Api::new(&remote)?;
            let v: takt_api::TokenList = api.get("/api/v1/tokens").await?;
            if json {
                outln!("{}", serde_json::to_string(&v.tokens)?);
            } else {
                let rows = v
                    .tokens
                    .into_iter()
                    .map(|x| {
                        let limits = x.limits.describe();
                        vec![
                            x.id,
                            x.name,
                            x.scope.to_string(),
                            if limits.is_empty() { "-".into() } else { limits },
                            x.created_at,
                            x.last_used_at.unwrap_or_else(|| "never".into()),
                        ]
                    })
                    .collect();
                outln!(
                    "{}",
                    table(
                        &["id", "name", "scope", "limited to", "created (UTC)", "last used (UTC)"],
                        rows
                    )
                );
            }
        }
        TokenCommand::Revoke { id, remote } => {
            let api = Api::new(&remote)?;
            api.call(reqwest::Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
                .await?;
            outln!("token {id} revoked");
        }
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum ProjectCommand {
    /// Add a project: the server keeps a bare mirror of the repository (admin scope). Runs
    /// nothing: the next push does, or `takt trigger PROJECT` at once.
    Add {
        name: String,
        /// A repository URL or a path on the server's machine.
        #[arg(long)]
        repo: String,
        /// The default branch.
        #[arg(long, default_value = "main")]
        branch: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List projects.
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one project: its repository, settings and how its jobs are isolated.
    Show {
        name: String,
        /// Print the server's JSON instead of one `field: value` line each.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Change a project's settings (admin scope); unnamed settings stay as they are.
    Set {
        name: String,
        /// `every`: every reported commit gets its run; `newest`: a newer commit of a branch
        /// cancels that branch's runs still waiting.
        #[arg(long, value_parser = ["every", "newest"])]
        queue: Option<String>,
        /// At most this many runs of the project at once.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: Option<u32>,
        /// A branch whose runs get secrets, like the default branch (repeatable; replaces the list).
        #[arg(long = "protected", value_name = "BRANCH")]
        protected: Vec<String>,
        /// Seconds between polls of the repository (0: off).
        #[arg(long)]
        poll_seconds: Option<u64>,
        /// Whether the status badge (`/badge/PROJECT.svg`) answers without a token.
        #[arg(long, value_name = "true|false")]
        public_badge: Option<bool>,
        /// Post a commit status for every run to this forge (`none`: stop), authenticated
        /// with the project secret TAKT_FORGE_TOKEN.
        #[arg(long, value_parser = ["github", "gitea", "gitlab", "none"])]
        forge: Option<String>,
        /// The forge's API address [default: https://api.github.com, https://gitlab.com/api/v4;
        /// Gitea: https://HOST/api/v1].
        #[arg(long, requires = "forge", value_name = "URL")]
        forge_api: Option<String>,
        /// The repository on the forge: OWNER/NAME, or GitLab's project id or path.
        #[arg(long, requires = "forge", value_name = "REPO")]
        forge_repo: Option<String>,
        /// Also post one status per stage (`takt/PROJECT/STAGE`).
        #[arg(long, requires = "forge")]
        forge_stages: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(clap::Args)]
pub struct TriggerArgs {
    project: String,
    /// A branch, tag or commit [default: the project's branch].
    #[arg(long)]
    rev: Option<String>,
    /// The branch (or `refs/tags/T`) the run belongs to; the commit must be on it. Without it,
    /// a commit that is a branch's head runs as that branch (the default branch first).
    #[arg(long = "ref", value_name = "BRANCH")]
    git_ref: Option<String>,
    /// Run even if this commit already has a run.
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Subcommand)]
pub enum RunsCommand {
    /// List runs (of one project with --project).
    Ls {
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one run and its jobs.
    Show {
        project: String,
        run: u64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cancel a waiting or running run; its job processes are killed (ci scope).
    Cancel {
        project: String,
        run: u64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run a finished run again on the same commit (ci scope).
    Retry {
        project: String,
        run: u64,
        /// Only the jobs that did not pass; passed ones are taken over with their artifacts.
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Play a manual job (`when: manual`) of a finished run: a new run of the same commit
    /// takes over the jobs that passed and runs that job and what waited for it (ci scope).
    Play {
        project: String,
        run: u64,
        /// The manual job, as `takt runs show` names it.
        job: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> comfy_table::Table {
    let mut t = crate::output::new_table();
    t.set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    t
}

pub async fn project(c: ProjectCommand) -> anyhow::Result<()> {
    match c {
        ProjectCommand::Add {
            name,
            repo,
            branch,
            remote,
        } => {
            let api = Api::new(&remote)?;
            let body = takt_api::NewProject {
                name,
                repo,
                branch: Some(branch),
            };
            let added: takt_api::ProjectCreated =
                api.send_json(reqwest::Method::POST, "/api/v1/projects", &body).await?;
            outln!("project {} added (branch {})", added.name, added.branch);
        }
        ProjectCommand::Ls { json, remote } => {
            let v: takt_api::ProjectList = Api::new(&remote)?.get("/api/v1/projects").await?;
            if json {
                outln!("{}", serde_json::to_string(&v.projects)?);
            } else {
                let rows = v
                    .projects
                    .iter()
                    .map(|p| vec![p.name.clone(), p.branch.clone(), p.repo.clone()])
                    .collect();
                outln!("{}", table(&["name", "branch", "repository"], rows));
            }
        }
        ProjectCommand::Show { name, json, remote } => {
            let (_, v) = Api::new(&remote)?
                .call(reqwest::Method::GET, &format!("/api/v1/projects/{name}"), None)
                .await?;
            // Said where a person sees it; with --json stdout stays one JSON document.
            if let Some(w) = v["job_isolation"]["warning"].as_str() {
                eprintln!("WARNING: {w}");
            }
            if json {
                outln!("{v}");
            } else {
                print_fields(&v);
            }
        }
        ProjectCommand::Set {
            name,
            queue,
            concurrency,
            protected,
            poll_seconds,
            public_badge,
            forge,
            forge_api,
            forge_repo,
            forge_stages,
            remote,
        } => {
            let forge = forge.map(|f| {
                let kind = match f.as_str() {
                    "github" => takt_model::ForgeKind::Github,
                    "gitea" => takt_model::ForgeKind::Gitea,
                    "gitlab" => takt_model::ForgeKind::Gitlab,
                    _ => takt_model::ForgeKind::None,
                };
                takt_model::ForgeLink {
                    forge: kind,
                    api: forge_api.unwrap_or_default(),
                    repo: forge_repo.unwrap_or_default(),
                    stages: forge_stages,
                }
            });
            let body = takt_model::ProjectOptions {
                queue: queue.map(|q| {
                    if q == "newest" {
                        takt_model::QueueMode::Newest
                    } else {
                        takt_model::QueueMode::Every
                    }
                }),
                concurrency,
                protected: (!protected.is_empty()).then_some(protected),
                poll_seconds,
                public_badge,
                forge,
            };
            if body == takt_model::ProjectOptions::default() {
                bail!(BadInput(
                    "nothing to set: give --queue, --concurrency, --protected, --poll-seconds, --public-badge or --forge".into()
                ));
            }
            let v: takt_views::Project = Api::new(&remote)?
                .send_json(
                    reqwest::Method::POST,
                    &format!("/api/v1/projects/{name}/settings"),
                    &body,
                )
                .await?;
            outln!("{}", serde_json::to_string(&v.options)?);
        }
    }
    Ok(())
}

pub async fn trigger(a: TriggerArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let git_ref = a.git_ref.map(|r| {
        if r.starts_with("refs/") {
            r
        } else {
            format!("refs/heads/{r}")
        }
    });
    let body = takt_api::TriggerBody {
        rev: a.rev,
        git_ref,
        force: a.force,
        hook: false,
    };
    let v: takt_api::Triggered = api
        .send_json(
            reqwest::Method::POST,
            &format!("/api/v1/projects/{}/trigger", a.project),
            &body,
        )
        .await?;
    if a.json {
        outln!("{}", serde_json::to_string(&v)?);
    } else if v.duplicate {
        outln!(
            "commit {} already has a run (#{}); use --force for another",
            v.commit,
            v.run
        );
    } else {
        outln!(
            "queued run #{} of {} at {} (follow it: takt logs {}/{} -f)",
            v.run,
            a.project,
            v.commit,
            a.project,
            v.run
        );
    }
    Ok(())
}

pub async fn runs(c: RunsCommand) -> anyhow::Result<()> {
    match c {
        RunsCommand::Ls { project, json, remote } => {
            let path = match &project {
                Some(p) => format!("/api/v1/runs?project={p}"),
                None => "/api/v1/runs".into(),
            };
            let v: takt_api::RunList = Api::new(&remote)?.get(&path).await?;
            if json {
                outln!("{}", serde_json::to_string(&v.runs)?);
            } else {
                let rows = v
                    .runs
                    .iter()
                    .map(|r| {
                        vec![
                            r.project.clone(),
                            r.run.to_string(),
                            r.status.name().to_string(),
                            r.branch.clone().unwrap_or_default(),
                            r.commit.chars().take(8).collect(),
                            takt_model::timefmt::rfc3339(r.queued_at),
                        ]
                    })
                    .collect();
                outln!(
                    "{}",
                    table(&["project", "run", "status", "branch", "commit", "queued (UTC)"], rows)
                );
            }
        }
        RunsCommand::Show {
            project,
            run,
            json,
            remote,
        } => {
            let api = Api::new(&remote)?;
            let path = format!("/api/v1/runs/{project}/{run}");
            if json {
                let v: serde_json::Value = api.get(&path).await?;
                outln!("{v}");
            } else {
                let raw: serde_json::Value = api.get(&path).await?;
                let critical: Option<takt_flow::path::RunCriticalPath> = raw
                    .get("critical_path")
                    .and_then(|c| serde_json::from_value(c.clone()).ok());
                let v: takt_views::RunView = serde_json::from_value(raw)?;
                outln!("run #{run} of {project}: {} at {}", v.status.name(), v.commit);
                // Why it ended before any job ran: superseded, an invalid takt.yml, ...
                if let Some(reason) = &v.reason {
                    outln!("reason: {reason}");
                }
                let rows = v
                    .jobs
                    .iter()
                    .map(|j| {
                        vec![
                            j.name.clone(),
                            j.status.map(|s| s.name()).unwrap_or_default().to_string(),
                            j.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                            j.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                outln!("{}", table(&["job", "status", "exit", "reason"], rows));
                if let Some(c) = critical {
                    let work = |s: f64| takt_model::timefmt::human(std::time::Duration::from_secs_f64(s.max(0.0)));
                    let path: Vec<String> = c
                        .steps
                        .iter()
                        .map(|s| format!("{} ({})", s.job, work(s.work)))
                        .collect();
                    outln!(
                        "critical path: {}; `{}` would shorten the run most; flow efficiency {:.0}%",
                        path.join(" → "),
                        c.shorten,
                        c.efficiency * 100.0
                    );
                }
            }
        }
        RunsCommand::Cancel { project, run, remote } => {
            let v: takt_api::Cancelled = Api::new(&remote)?
                .post(&format!("/api/v1/runs/{project}/{run}/cancel"))
                .await?;
            outln!("run #{run} of {project}: {}", v.status);
        }
        RunsCommand::Retry {
            project,
            run,
            failed,
            json,
            remote,
        } => {
            let v: takt_api::Triggered = Api::new(&remote)?
                .send_json(
                    reqwest::Method::POST,
                    &format!("/api/v1/runs/{project}/{run}/retry"),
                    &takt_api::RetryBody { failed },
                )
                .await?;
            if json {
                outln!("{}", serde_json::to_string(&v)?);
            } else {
                outln!(
                    "queued run #{} of {project}: {} of run #{run}",
                    v.run,
                    if failed { "the failed jobs" } else { "every job" }
                );
            }
        }
        RunsCommand::Play {
            project,
            run,
            job,
            json,
            remote,
        } => {
            let v: takt_api::Triggered = Api::new(&remote)?
                .post(&format!("/api/v1/runs/{project}/{run}/jobs/{}/play", encode(&job)))
                .await?;
            if json {
                outln!("{}", serde_json::to_string(&v)?);
            } else {
                outln!("queued run #{} of {project}: `{job}` of run #{run}, played", v.run);
            }
        }
    }
    Ok(())
}

/// Percent-encodes a name for a URL path segment or query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
