//! `takt drill run|ls|show`: disaster-recovery drills, as API calls (docs/monitoring.md,
//! "Drills").

use crate::client::{Api, BadInput, Remote, encode, table};
use crate::env_cli::{Target, resolve};
use reqwest::Method;
use takt_api::{DrillAnswer, DrillBody, DrillList};
use takt_model::{DrillKill, DrillOutcome};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KillArg {
    /// `--count` instances of the running version.
    Instance,
    /// Every instance at once.
    AllInstances,
    /// The environment's supervisor (and its proxy).
    Supervisor,
}

#[derive(clap::Subcommand)]
pub enum DrillCommand {
    /// Turn down a piece of a running environment on purpose, under takt's own load, and
    /// measure time to detect, time to recover and requests failed. Waits for the result.
    Run {
        #[command(flatten)]
        target: Target,
        /// What to turn down.
        #[arg(long, value_enum)]
        kill: KillArg,
        /// Instances to turn down (`--kill instance`).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Requests a second sent to the environment's public address meanwhile.
        #[arg(long, default_value_t = 20)]
        load: u32,
        /// Run it in a production environment too (refused otherwise).
        #[arg(long)]
        yes: bool,
        /// Return once it started.
        #[arg(long)]
        detach: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// A project's drills, newest first.
    Ls {
        #[arg(long)]
        project: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// One drill.
    Show {
        number: u64,
        #[arg(long)]
        project: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |m| format!("{m} ms"))
}

fn rows(l: &DrillList) -> Vec<Vec<String>> {
    l.drills
        .iter()
        .map(|d| {
            vec![
                d.drill.to_string(),
                d.environment.clone(),
                <&str>::from(d.kill).to_string(),
                d.outcome.map_or("running", <&str>::from).to_string(),
                ms(d.detect_ms),
                ms(d.recover_ms),
                format!("{} of {}", d.failed, d.requests),
                takt_model::timefmt::rfc3339(d.started_at),
            ]
        })
        .collect()
}

fn print(l: &DrillList, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string(l)?);
        return Ok(());
    }
    outln!(
        "{}",
        table(
            &[
                "drill",
                "environment",
                "kill",
                "outcome",
                "detected in",
                "recovered in",
                "requests failed",
                "started (UTC)"
            ],
            rows(l)
        )
    );
    for d in &l.drills {
        if let Some(why) = &d.detail {
            outln!("drill {}: {why}", d.drill);
        }
    }
    Ok(())
}

pub async fn drill(c: DrillCommand) -> anyhow::Result<()> {
    match c {
        DrillCommand::Run {
            target,
            kill,
            count,
            load,
            yes,
            detach,
            json,
            remote,
        } => {
            let api = Api::new(&remote)?;
            let (p, e) = resolve(&api, &target).await?;
            let kill = match kill {
                KillArg::Instance => DrillKill::Instance,
                KillArg::AllInstances => DrillKill::AllInstances,
                KillArg::Supervisor => DrillKill::Supervisor,
            };
            let head: takt_api::EventsPage = api.get(&format!("/api/v1/events?after={}&limit=1", i64::MAX)).await?;
            let body = DrillBody {
                kill,
                count: Some(count),
                load: Some(load),
                yes,
            };
            let a: DrillAnswer = api
                .send_json(
                    Method::POST,
                    &format!("/api/v1/environments/{}/{}/drill", encode(&p), encode(&e)),
                    &body,
                )
                .await?;
            if !json {
                outln!(
                    "drill {} of {p}/{e}: turning down {} under {load} requests a second…",
                    a.drill,
                    <&str>::from(kill)
                );
            }
            let show = format!("/api/v1/projects/{}/drills/{}", encode(&p), a.drill);
            let mut after = head.head;
            // Until its drill_finished (the API's long poll: no sleeping here).
            let l = loop {
                let l: DrillList = api.get(&show).await?;
                if detach || l.drills.first().is_some_and(|d| d.outcome.is_some()) {
                    break l;
                }
                after = api
                    .next_event(&format!("project={}&kind=drill_finished", encode(&p)), after)
                    .await?;
            };
            print(&l, json)?;
            if l.drills
                .first()
                .and_then(|d| d.outcome)
                .is_some_and(|o| o != DrillOutcome::Recovered)
            {
                return Err(crate::client::AlreadyReported.into());
            }
        }
        DrillCommand::Ls { project, json, remote } => {
            let api = Api::new(&remote)?;
            let l: DrillList = api
                .get(&format!("/api/v1/projects/{}/drills", encode(&project)))
                .await?;
            print(&l, json)?;
        }
        DrillCommand::Show {
            number,
            project,
            json,
            remote,
        } => {
            let api = Api::new(&remote)?;
            let l: DrillList = api
                .get(&format!("/api/v1/projects/{}/drills/{number}", encode(&project)))
                .await?;
            if l.drills.is_empty() {
                return Err(BadInput(format!("no drill {number}")).into());
            }
            print(&l, json)?;
        }
    }
    Ok(())
}
