//! Deployment commands: `takt deploy|promote|approve|halt|resume|rollback` and `takt env
//! ls|show`, as API calls; and `takt supervise`, the process driver's supervisor.

use crate::client::{AlreadyReported, Api, BadInput, Remote, encode, table};
use anyhow::bail;
use reqwest::Method;
use serde_json::Value;
use takt_api::{DeployAnswer, DeployAnswerOutcome, DeployBody, EnvironmentList, EnvironmentStatus};
use takt_model::StepAction;

/// Where an environment is: `ENV` or `PROJECT/ENV`.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The environment: `ENV`, or `PROJECT/ENV` when several projects define it.
    env: String,
    /// The project [default: the only project that defines ENV].
    #[arg(long)]
    project: Option<String>,
}

#[derive(clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    target: Target,
    /// The artifact: NAME@VERSION (`takt artifact ls`).
    artifact: String,
    /// The incident (PROJECT#N) this deploy fixes: it counts as a fix deployment in the flow
    /// metrics (docs/metrics.md).
    #[arg(long, value_name = "INCIDENT")]
    fixes: Option<String>,
    #[command(flatten)]
    wait: Wait,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Args, Clone, Copy)]
pub struct Wait {
    /// Return once the deploy started instead of following it to its end.
    #[arg(long)]
    detach: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    target: Target,
    /// The incident (PROJECT#N) this deploy fixes: it counts as a fix deployment in the flow
    /// metrics (docs/metrics.md).
    #[arg(long, value_name = "INCIDENT")]
    fixes: Option<String>,
    #[command(flatten)]
    wait: Wait,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Args)]
pub struct EnvArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    wait: Wait,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Args)]
pub struct HaltArgs {
    #[command(flatten)]
    target: Target,
    /// Why (recorded, shown by `takt env show`).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    target: Target,
    /// Go back to this artifact [default: the previous good one].
    artifact: Option<String>,
    #[command(flatten)]
    wait: Wait,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Subcommand)]
pub enum EnvCommand {
    /// Every environment: what runs there, since when, any deploy in progress.
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// One environment, with its recent deployments and their steps.
    Show {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Retire an environment: stop its instances, proxy and supervisor (or run the command
    /// driver's `stop`); it shows as `stopped`, is not restored when the server starts and does
    /// not satisfy `requires`. The next deploy starts it again (deploy scope).
    Stop {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(clap::Args)]
pub struct SuperviseArgs {
    /// The supervisor's directory (its socket, log and the instances' logs).
    #[arg(long)]
    dir: std::path::PathBuf,
    /// The environment's public port (the proxy); none for the nginx driver.
    #[arg(long)]
    port: Option<u16>,
}

pub(crate) async fn resolve(api: &Api, t: &Target) -> anyhow::Result<(String, String)> {
    if let Some((p, e)) = t.env.split_once('/') {
        return Ok((p.to_string(), e.to_string()));
    }
    if let Some(p) = &t.project {
        return Ok((p.clone(), t.env.clone()));
    }
    let v: EnvironmentList = api.get("/api/v1/environments").await?;
    let projects: Vec<String> = v
        .environments
        .into_iter()
        .filter(|e| e.view.environment == t.env)
        .map(|e| e.view.project)
        .collect();
    match projects.as_slice() {
        [one] => Ok((one.clone(), t.env.clone())),
        [] => Err(BadInput(format!("no project defines an environment `{}`", t.env)).into()),
        many => Err(BadInput(format!(
            "several projects define `{}` ({}); say which with PROJECT/{} or --project",
            t.env,
            many.join(", "),
            t.env
        ))
        .into()),
    }
}

fn path(p: &str, e: &str, what: &str) -> String {
    format!("/api/v1/environments/{p}/{e}/{what}")
}

/// Prints what the server said about a deploy request, then follows the deploy to its end
/// unless detached. Exit status 1 if it did not succeed.
async fn follow(api: &Api, p: &str, e: &str, v: DeployAnswer, wait: Wait) -> anyhow::Result<()> {
    let Some(id) = v.deploy else {
        if wait.json {
            outln!("{}", serde_json::to_string(&v)?);
        } else {
            outln!("{}", v.message.as_deref().unwrap_or("nothing to do"));
        }
        return Ok(());
    };
    if !wait.json {
        let (name, version) = v
            .artifact
            .as_ref()
            .map(|a| (a.name.as_str(), a.version.as_str()))
            .unwrap_or_default();
        outln!("deploy #{id} of {name}@{version} to {p}/{e} started");
    }
    if wait.detach {
        if wait.json {
            outln!("{}", serde_json::to_string(&v)?);
        }
        return Ok(());
    }
    watch(api, p, e, id, wait, false).await
}

/// Follows deploy `id` to its end (or to a wait for a person), printing each step. Just
/// `approved`: only the steps from now on, and the approval it still waits on is the one just
/// given (it goes on once the deploy takes it).
async fn watch(api: &Api, p: &str, e: &str, id: u64, wait: Wait, approved: bool) -> anyhow::Result<()> {
    let mut printed = 0usize;
    let mut at_approval = None;
    // Read before the first look: whatever the deploy records after it wakes the wait below.
    let mut after = api.head().await?;
    loop {
        let env: EnvironmentStatus = api.get(&format!("/api/v1/environments/{p}/{e}")).await?;
        let Some(d) = env.history.iter().find(|d| d.deploy == id) else {
            bail!("deploy #{id} is not in {p}/{e}'s history");
        };
        let steps = &d.steps;
        if approved && at_approval.is_none() {
            at_approval = Some(steps.len());
            printed = steps.len();
        }
        if !wait.json {
            for st in steps.iter().skip(printed) {
                outln!(
                    "  {:>3}. {:<22} weight {:>3}%  {}{}",
                    st.step,
                    st.action,
                    st.weight,
                    st.verdict.map(|v| v.to_string()).unwrap_or_default(),
                    st.detail.as_deref().map(|x| format!("  {x}")).unwrap_or_default()
                );
            }
        }
        printed = steps.len();
        if let Some(outcome) = d.outcome {
            if wait.json {
                outln!("{}", serde_json::to_string(d)?);
            } else {
                let name: &str = outcome.into();
                outln!(
                    "deploy #{id}: {name}{}",
                    d.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                );
            }
            if outcome != takt_model::DeployOutcome::Succeeded {
                return Err(AlreadyReported.into());
            }
            return Ok(());
        }
        let waiting = env.view.deploying.as_ref().is_some_and(|f| f.waiting_for_approval);
        let paused = steps
            .last()
            .is_some_and(|st| matches!(st.action, StepAction::Paused | StepAction::Halted));
        let approval_not_taken_yet = approved && waiting && steps.len() <= at_approval.unwrap_or(0);
        if (waiting || paused) && !approval_not_taken_yet {
            if !wait.json {
                outln!(
                    "deploy #{id} is {}; it goes on after `takt {} {p}/{e}`",
                    if waiting { "waiting for approval" } else { "paused" },
                    if waiting { "approve" } else { "resume" }
                );
            } else {
                outln!("{}", serde_json::to_string(d)?);
            }
            return Ok(());
        }
        after = api.next_event(&format!("project={}", encode(p)), after).await?;
    }
}

pub async fn deploy(a: DeployArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let (p, e) = resolve(&api, &a.target).await?;
    let body = DeployBody {
        artifact: Some(a.artifact),
        reason: None,
        fixes: a.fixes,
    };
    let v = api.send_json(Method::POST, &path(&p, &e, "deploy"), &body).await?;
    follow(&api, &p, &e, v, a.wait).await
}

pub async fn promote(a: PromoteArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let (p, e) = resolve(&api, &a.target).await?;
    let body = DeployBody {
        fixes: a.fixes,
        ..DeployBody::default()
    };
    let v = api.send_json(Method::POST, &path(&p, &e, "promote"), &body).await?;
    follow(&api, &p, &e, v, a.wait).await
}

pub async fn rollback(a: RollbackArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let (p, e) = resolve(&api, &a.target).await?;
    let body = DeployBody {
        artifact: a.artifact,
        reason: None,
        fixes: None,
    };
    let v: DeployAnswer = api.send_json(Method::POST, &path(&p, &e, "rollback"), &body).await?;
    if v.outcome == DeployAnswerOutcome::RollingBack {
        outln!("deploy #{} to {p}/{e} is rolling back", v.deploy.unwrap_or(0));
        return Ok(());
    }
    follow(&api, &p, &e, v, a.wait).await
}

pub async fn simple(what: &str, a: EnvArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let (p, e) = resolve(&api, &a.target).await?;
    let to = path(&p, &e, what);
    if what == "approve" {
        let v: takt_api::Approved = api.post(&to).await?;
        if a.wait.json && a.wait.detach {
            outln!("{}", serde_json::to_string(&v)?);
        } else if !a.wait.json {
            outln!("{p}/{e}: deploy #{} approved", v.deploy);
        }
        if !a.wait.detach {
            return watch(&api, &p, &e, v.deploy, a.wait, true).await;
        }
        return Ok(());
    }
    let v: takt_api::Resumed = api.post(&to).await?;
    if a.wait.json {
        outln!("{}", serde_json::to_string(&v)?);
    } else {
        outln!(
            "{p}/{e}: resumed{}",
            if v.was_halted { " (the halt is lifted)" } else { "" }
        );
    }
    Ok(())
}

pub async fn halt(a: HaltArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let (p, e) = resolve(&api, &a.target).await?;
    let body = DeployBody {
        artifact: None,
        reason: Some(a.reason),
        fixes: None,
    };
    let _: takt_api::Halted = api.send_json(Method::POST, &path(&p, &e, "halt"), &body).await?;
    outln!("{p}/{e}: halted; deploys stop at their next safe point until `takt resume {p}/{e}`");
    Ok(())
}

fn running(v: &EnvironmentStatus) -> String {
    match &v.view.running {
        Some(r) => format!("{}@{}", r.name, r.version),
        None => "-".into(),
    }
}

/// An environment's state in one phrase: halted, awaiting approval, deploying, frozen,
/// healthy, unhealthy or empty.
fn state_of(v: &EnvironmentStatus) -> String {
    if v.view.stopped.is_some() && v.view.deploying.is_none() {
        return "stopped".into();
    }
    if let Some(h) = &v.view.halted {
        return format!("halted: {}", h.reason);
    }
    if let Some(d) = &v.view.deploying {
        let what = format!("#{} {}@{}", d.deploy, d.artifact.name, d.artifact.version);
        return if d.waiting_for_approval {
            format!("awaiting approval: deploy {what}")
        } else {
            format!("deploying {what} ({} {}%)", d.action, d.weight)
        };
    }
    let runs = if v.view.running.is_none() {
        "empty"
    } else if v.view.healthy {
        "healthy"
    } else {
        "unhealthy"
    };
    match &v.frozen_until {
        Some(t) => format!("frozen until {t} ({runs})"),
        None => runs.into(),
    }
}

pub async fn env(c: EnvCommand) -> anyhow::Result<()> {
    match c {
        EnvCommand::Ls { json, remote } => {
            let v: EnvironmentList = Api::new(&remote)?.get("/api/v1/environments").await?;
            if json {
                outln!("{}", serde_json::to_string(&v.environments)?);
                return Ok(());
            }
            let rows = v
                .environments
                .iter()
                .map(|e| {
                    vec![
                        e.view.project.clone(),
                        e.view.environment.clone(),
                        running(e),
                        e.view.since.clone().unwrap_or_default(),
                        state_of(e),
                        e.strategy.clone(),
                    ]
                })
                .collect();
            outln!(
                "{}",
                table(
                    &["project", "environment", "running", "since (UTC)", "state", "strategy"],
                    rows
                )
            );
        }
        EnvCommand::Stop { target, json, remote } => {
            let api = Api::new(&remote)?;
            let (p, e) = resolve(&api, &target).await?;
            let v: takt_api::EnvironmentStopped = api.post(&path(&p, &e, "stop")).await?;
            if json {
                outln!("{}", serde_json::to_string(&v)?);
            } else {
                outln!("{p}/{e}: stopped ({})", v.stopped);
            }
        }
        EnvCommand::Show { target, json, remote } => {
            let api = Api::new(&remote)?;
            let (p, e) = resolve(&api, &target).await?;
            let path = format!("/api/v1/environments/{p}/{e}");
            if json {
                let v: Value = api.get(&path).await?;
                outln!("{v}");
                return Ok(());
            }
            let v: EnvironmentStatus = api.get(&path).await?;
            outln!("{p}/{e}: {} — {}", running(&v), state_of(&v));
            if let Some(since) = &v.view.since {
                outln!("since {since}; driver {}, strategy {}", v.driver, v.strategy);
            }
            let rows = v
                .history
                .iter()
                .map(|d| {
                    vec![
                        d.deploy.to_string(),
                        format!("{}@{}", d.artifact.name, d.artifact.version),
                        d.strategy.to_string(),
                        d.outcome.map_or("in progress", |o| o.into()).to_string(),
                        d.started_at.clone(),
                        d.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            outln!(
                "{}",
                table(
                    &["deploy", "artifact", "strategy", "outcome", "started (UTC)", "reason"],
                    rows
                )
            );
        }
    }
    Ok(())
}

/// `takt supervise`: runs until told to stop (or its directory goes away).
pub fn supervise(a: SuperviseArgs) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let config = takt_driver::supervisor::SupervisorConfig {
        dir: a.dir,
        port: a.port,
    };
    match rt.block_on(takt_driver::supervisor::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
