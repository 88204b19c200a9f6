//! `takt check ls|heartbeat`: health checks and their states, and where a heartbeat check gets
//! its beats, as API calls.

use crate::client::{Api, Remote, encode, table};
use takt_api::{CheckList, HeartbeatToken};

#[derive(clap::Subcommand)]
pub enum CheckCommand {
    /// A project's health checks (its default branch's `checks:`) and their states.
    Ls {
        project: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Where a heartbeat check gets its beats, and its own token (admin scope): a job or cron
    /// entry then sends `curl -fsS -X POST -H "Authorization: Bearer TOKEN" URL`.
    Heartbeat {
        project: String,
        check: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

pub async fn check(c: CheckCommand) -> anyhow::Result<()> {
    match c {
        CheckCommand::Ls { project, json, remote } => {
            let api = Api::new(&remote)?;
            let v: CheckList = api
                .get(&format!("/api/v1/projects/{}/checks", encode(&project)))
                .await?;
            if json {
                outln!("{}", serde_json::to_string(&v)?);
                return Ok(());
            }
            if v.checks.is_empty() {
                outln!("{project} has no checks (add `checks:` to its default branch's takt.yml)");
                return Ok(());
            }
            let rows = v
                .checks
                .iter()
                .map(|c| {
                    let state: &str = c.state.map_or("up", |s| s.into());
                    vec![
                        c.name.clone(),
                        c.probe.clone(),
                        c.environment.clone().unwrap_or_else(|| "-".into()),
                        state.to_string(),
                        c.since.clone().unwrap_or_else(|| "-".into()),
                        c.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            outln!(
                "{}",
                table(
                    &["check", "probe", "environment", "state", "since", "last change"],
                    rows
                )
            );
        }
        CheckCommand::Heartbeat {
            project,
            check,
            json,
            remote,
        } => {
            let api = Api::new(&remote)?;
            let path = format!(
                "/api/v1/projects/{}/checks/{}/heartbeat",
                encode(&project),
                encode(&check)
            );
            let v: HeartbeatToken = api.get(&path).await?;
            if json {
                outln!("{}", serde_json::to_string(&v)?);
                return Ok(());
            }
            outln!("url:   {}", v.url);
            outln!("token: {}", v.token);
            outln!(
                "send a beat: curl -fsS -X POST -H \"Authorization: Bearer {}\" {}",
                v.token,
                v.url
            );
        }
    }
    Ok(())
}
