//! Deployment commands: `takt deploy|promote|approve|halt|resume|rollback` and `takt env
//! ls|show`, as API calls; and `takt supervise`, the process driver's supervisor.

use crate::client::{AlreadyReported, Api, BadInput, Remote, s, table};
use anyhow::bail;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use takt_api::{DeployAnswer, DeployAnswerOutcome, DeployBody};

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

async fn resolve(api: &Api, t: &Target) -> anyhow::Result<(String, String)> {
    if let Some((p, e)) = t.env.split_once('/') {
        return Ok((p.to_string(), e.to_string()));
    }
    if let Some(p) = &t.project {
        return Ok((p.clone(), t.env.clone()));
    }
    let (_, v) = api.call(Method::GET, "/api/v1/environments", None).await?;
    let projects: Vec<String> = v["environments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["environment"] == json!(t.env))
        .map(|e| s(&e["project"]))
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
    loop {
        let (_, env) = api
            .call(Method::GET, &format!("/api/v1/environments/{p}/{e}"), None)
            .await?;
        let Some(d) = env["history"]
            .as_array()
            .and_then(|h| h.iter().find(|d| d["deploy"] == json!(id)))
            .cloned()
        else {
            bail!("deploy #{id} is not in {p}/{e}'s history");
        };
        let steps = d["steps"].as_array().cloned().unwrap_or_default();
        if approved && at_approval.is_none() {
            at_approval = Some(steps.len());
            printed = steps.len();
        }
        if !wait.json {
            for st in steps.iter().skip(printed) {
                outln!(
                    "  {:>3}. {:<22} weight {:>3}%  {}{}",
                    s(&st["step"]),
                    s(&st["action"]),
                    s(&st["weight"]),
                    st["verdict"].as_str().unwrap_or(""),
                    st["detail"].as_str().map(|x| format!("  {x}")).unwrap_or_default()
                );
            }
        }
        printed = steps.len();
        if let Some(outcome) = d["outcome"].as_str() {
            if wait.json {
                outln!("{d}");
            } else {
                outln!(
                    "deploy #{id}: {outcome}{}",
                    d["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default()
                );
            }
            if outcome != "succeeded" {
                return Err(AlreadyReported.into());
            }
            return Ok(());
        }
        let waiting = env["deploying"]["waiting_for_approval"] == json!(true);
        let paused = steps
            .last()
            .is_some_and(|st| st["action"] == json!("paused") || st["action"] == json!("halted"));
        let approval_not_taken_yet = approved && waiting && steps.len() <= at_approval.unwrap_or(0);
        if (waiting || paused) && !approval_not_taken_yet {
            if !wait.json {
                outln!(
                    "deploy #{id} is {}; it goes on after `takt {} {p}/{e}`",
                    if waiting { "waiting for approval" } else { "paused" },
                    if waiting { "approve" } else { "resume" }
                );
            } else {
                outln!("{d}");
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn deploy(a: DeployArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let (p, e) = resolve(&api, &a.target).await?;
    let body = DeployBody {
        artifact: Some(a.artifact),
        reason: None,
    };
    let v = api.send_json(Method::POST, &path(&p, &e, "deploy"), &body).await?;
    follow(&api, &p, &e, v, a.wait).await
}

pub async fn promote(a: EnvArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let (p, e) = resolve(&api, &a.target).await?;
    let v = api.post(&path(&p, &e, "promote")).await?;
    follow(&api, &p, &e, v, a.wait).await
}

pub async fn rollback(a: RollbackArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.remote)?;
    let (p, e) = resolve(&api, &a.target).await?;
    let body = DeployBody {
        artifact: a.artifact,
        reason: None,
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
    };
    let _: takt_api::Halted = api.send_json(Method::POST, &path(&p, &e, "halt"), &body).await?;
    outln!("{p}/{e}: halted; deploys stop at their next safe point until `takt resume {p}/{e}`");
    Ok(())
}

fn running(v: &Value) -> String {
    match v["running"].as_object() {
        Some(r) => format!("{}@{}", s(&r["name"].clone()), s(&r["version"].clone())),
        None => "-".into(),
    }
}

/// An environment's state in one phrase: halted, awaiting approval, deploying, frozen,
/// healthy, unhealthy or empty.
fn state_of(v: &Value) -> String {
    if let Some(h) = v["halted"].as_object() {
        return format!("halted: {}", s(&h["reason"].clone()));
    }
    if let Some(d) = v["deploying"].as_object()
        && d.get("waiting_for_approval") == Some(&json!(true))
    {
        return format!(
            "awaiting approval: deploy #{} {}@{}",
            s(&d["deploy"].clone()),
            s(&d["artifact"]["name"].clone()),
            s(&d["artifact"]["version"].clone())
        );
    }
    if let Some(d) = v["deploying"].as_object() {
        return format!(
            "deploying #{} {}@{} ({} {}%)",
            s(&d["deploy"].clone()),
            s(&d["artifact"]["name"].clone()),
            s(&d["artifact"]["version"].clone()),
            s(&d["action"].clone()),
            s(&d["weight"].clone())
        );
    }
    let runs = if v["running"].is_null() {
        "empty"
    } else if v["healthy"] == json!(true) {
        "healthy"
    } else {
        "unhealthy"
    };
    match v["frozen_until"].as_str() {
        Some(t) => format!("frozen until {t} ({runs})"),
        None => runs.into(),
    }
}

pub async fn env(c: EnvCommand) -> anyhow::Result<()> {
    match c {
        EnvCommand::Ls { json, remote } => {
            let (_, v) = Api::new(&remote)?
                .call(Method::GET, "/api/v1/environments", None)
                .await?;
            if json {
                outln!("{}", v["environments"]);
                return Ok(());
            }
            let rows = v["environments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    vec![
                        s(&e["project"]),
                        s(&e["environment"]),
                        running(e),
                        s(&e["since"]),
                        state_of(e),
                        s(&e["strategy"]),
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
        EnvCommand::Show { target, json, remote } => {
            let api = Api::new(&remote)?;
            let (p, e) = resolve(&api, &target).await?;
            let (_, v) = api
                .call(Method::GET, &format!("/api/v1/environments/{p}/{e}"), None)
                .await?;
            if json {
                outln!("{v}");
                return Ok(());
            }
            outln!("{p}/{e}: {} — {}", running(&v), state_of(&v));
            if let Some(since) = v["since"].as_str() {
                outln!(
                    "since {since}; driver {}, strategy {}",
                    s(&v["driver"]),
                    s(&v["strategy"])
                );
            }
            let rows = v["history"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    vec![
                        s(&d["deploy"]),
                        format!("{}@{}", s(&d["artifact"]["name"]), s(&d["artifact"]["version"])),
                        s(&d["strategy"]),
                        d["outcome"].as_str().unwrap_or("in progress").to_string(),
                        s(&d["started_at"]),
                        d["reason"].as_str().unwrap_or("").to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A frozen environment showed as `empty`, one awaiting approval as `deploying`.
    #[test]
    fn env_ls_names_frozen_halted_and_awaiting_approval() {
        let frozen = json!({"running": null, "frozen_until": "2026-12-01T18:00:00Z"});
        assert_eq!(state_of(&frozen), "frozen until 2026-12-01T18:00:00Z (empty)");
        let halted = json!({"halted": {"reason": "incident 42"}, "frozen_until": "x"});
        assert_eq!(state_of(&halted), "halted: incident 42");
        let waiting = json!({"deploying": {"deploy": 3, "artifact": {"name": "app", "version": "7"},
            "action": "approval", "weight": 0, "waiting_for_approval": true}});
        assert_eq!(state_of(&waiting), "awaiting approval: deploy #3 app@7");
        let deploying = json!({"deploying": {"deploy": 4, "artifact": {"name": "app", "version": "8"},
            "action": "set_weight", "weight": 20, "waiting_for_approval": false}});
        assert_eq!(state_of(&deploying), "deploying #4 app@8 (set_weight 20%)");
        let healthy = json!({"running": {"name": "app", "version": "8"}, "healthy": true, "frozen_until": null});
        assert_eq!(state_of(&healthy), "healthy");
    }
}
