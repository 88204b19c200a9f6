//! `takt incident open|note|status|ack|resolve|cause|ls|show`: incidents, as API calls.

use crate::client::{Api, BadInput, Remote, encode, table};
use reqwest::Method;
use takt_api::{CauseBody, IncidentAnswer, IncidentChange, IncidentDetail, IncidentList, NewIncidentBody};
use takt_model::{IncidentStatus, Severity, timefmt};

#[derive(clap::Subcommand)]
pub enum IncidentCommand {
    /// Incidents, newest first: open ones, or every one with --all.
    Ls {
        /// Only this project's.
        #[arg(long)]
        project: Option<String>,
        /// Resolved ones too.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// One incident: its timeline, and its suspects (the deployments to that environment in
    /// the 2 h before the impact began, most likely first, with the commits they shipped).
    Show {
        /// PROJECT#N.
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Open an incident by hand (deploy scope).
    Open {
        /// The project.
        project: String,
        /// The environment affected.
        environment: String,
        /// What is wrong, as users see it.
        reason: String,
        #[arg(long, value_enum, default_value = "major")]
        severity: SeverityArg,
        /// A service affected (repeatable) [default: the project's].
        #[arg(long = "service")]
        services: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Add a note to an incident's timeline.
    Note {
        /// PROJECT#N.
        id: String,
        text: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Move an incident on: investigating, identified, monitoring or resolved.
    Status {
        /// PROJECT#N.
        id: String,
        #[arg(value_enum)]
        status: StatusArg,
        /// A note with it.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Take an incident on: reminders stop.
    Ack {
        /// PROJECT#N.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Resolve an incident.
    Resolve {
        /// PROJECT#N.
        id: String,
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Mark the deployment that caused an incident (PROJECT/ENV#N, as `takt incident show`
    /// lists its suspects); the last mark wins, and the flow metrics read it.
    Cause {
        /// PROJECT#N.
        id: String,
        /// PROJECT/ENV#N; leave out with --none to take the mark back.
        #[arg(required_unless_present = "none")]
        deploy: Option<String>,
        /// No deployment caused it.
        #[arg(long, conflicts_with = "deploy")]
        none: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum SeverityArg {
    Minor,
    Major,
    Critical,
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum StatusArg {
    Investigating,
    Identified,
    Monitoring,
    Resolved,
}

/// The API path of incident `PROJECT#N` (and what after it).
fn path(id: &str, what: &str) -> anyhow::Result<String> {
    let (p, n) = takt_model::parse_incident_id(id).ok_or_else(|| BadInput(takt_model::bad_incident_id(id)))?;
    let base = format!("/api/v1/projects/{}/incidents/{n}", encode(p));
    Ok(if what.is_empty() {
        base
    } else {
        format!("{base}/{what}")
    })
}

fn name<T: Into<&'static str>>(v: T) -> &'static str {
    v.into()
}

pub async fn incident(c: IncidentCommand) -> anyhow::Result<()> {
    match c {
        IncidentCommand::Ls {
            project,
            all,
            json,
            remote,
        } => {
            let api = Api::new(&remote)?;
            let mut q = vec![];
            if let Some(p) = &project {
                q.push(format!("project={}", encode(p)));
            }
            if all {
                q.push("all=true".into());
            }
            let v: IncidentList = api.get(&format!("/api/v1/incidents?{}", q.join("&"))).await?;
            if json {
                outln!("{}", serde_json::to_string(&v)?);
                return Ok(());
            }
            if v.incidents.is_empty() {
                outln!("no {}incidents", if all { "" } else { "open " });
                return Ok(());
            }
            let rows = v
                .incidents
                .iter()
                .map(|i| {
                    vec![
                        i.id.clone(),
                        i.environment.clone(),
                        name(i.severity).to_string(),
                        name(i.status).to_string(),
                        timefmt::rfc3339(i.opened_at),
                        i.reason.clone(),
                    ]
                })
                .collect();
            outln!(
                "{}",
                table(&["id", "environment", "severity", "status", "opened", "reason"], rows)
            );
        }
        IncidentCommand::Show { id, json, remote } => {
            let api = Api::new(&remote)?;
            let v: IncidentDetail = api.get(&path(&id, "")?).await?;
            if json {
                outln!("{}", serde_json::to_string(&v)?);
                return Ok(());
            }
            show(&v);
        }
        IncidentCommand::Open {
            project,
            environment,
            reason,
            severity,
            services,
            remote,
        } => {
            let api = Api::new(&remote)?;
            let body = NewIncidentBody {
                environment,
                reason,
                severity: Some(match severity {
                    SeverityArg::Minor => Severity::Minor,
                    SeverityArg::Major => Severity::Major,
                    SeverityArg::Critical => Severity::Critical,
                }),
                services,
            };
            let to = format!("/api/v1/projects/{}/incidents", encode(&project));
            let v: IncidentAnswer = api.send_json(Method::POST, &to, &body).await?;
            outln!("incident {} opened", v.id);
        }
        IncidentCommand::Note { id, text, remote } => {
            let body = IncidentChange {
                status: None,
                note: Some(text),
            };
            change(&remote, &id, "update", &body, "noted").await?;
        }
        IncidentCommand::Status {
            id,
            status,
            note,
            remote,
        } => {
            let status = match status {
                StatusArg::Investigating => IncidentStatus::Investigating,
                StatusArg::Identified => IncidentStatus::Identified,
                StatusArg::Monitoring => IncidentStatus::Monitoring,
                StatusArg::Resolved => IncidentStatus::Resolved,
            };
            let body = IncidentChange {
                status: Some(status),
                note,
            };
            change(&remote, &id, "update", &body, "").await?;
        }
        IncidentCommand::Ack { id, remote } => {
            change(&remote, &id, "ack", &IncidentChange::default(), "acknowledged").await?;
        }
        IncidentCommand::Resolve { id, note, remote } => {
            let body = IncidentChange { status: None, note };
            change(&remote, &id, "resolve", &body, "").await?;
        }
        IncidentCommand::Cause {
            id,
            deploy,
            none,
            remote,
        } => {
            let body = CauseBody {
                deploy: if none { None } else { deploy },
            };
            let what = match &body.deploy {
                Some(d) => format!("caused by {d}"),
                None => "caused by no deployment".into(),
            };
            change(&remote, &id, "cause", &body, &what).await?;
        }
    }
    Ok(())
}

async fn change<B: serde::Serialize>(
    remote: &Remote,
    id: &str,
    what: &str,
    body: &B,
    done: &str,
) -> anyhow::Result<()> {
    let api = Api::new(remote)?;
    let v: IncidentAnswer = api.send_json(Method::POST, &path(id, what)?, body).await?;
    let done = if done.is_empty() {
        String::new()
    } else {
        format!("{done}; ")
    };
    outln!("incident {}: {done}{}", v.id, name(v.status));
    Ok(())
}

fn show(v: &IncidentDetail) {
    let i = &v.incident;
    outln!(
        "incident {}  {}  {}  in {}/{}",
        i.id,
        name(i.severity),
        name(i.status),
        i.project,
        i.environment
    );
    outln!("  {}", i.reason);
    outln!("  impact began {}", timefmt::rfc3339(i.impact_started_at));
    if !i.checks.is_empty() {
        outln!("  checks: {}", i.checks.join(", "));
    }
    if let Some(a) = &i.acknowledged {
        outln!("  acknowledged by {} at {}", a.by, timefmt::rfc3339(a.at));
    }
    if let Some(c) = &i.cause {
        outln!("  cause: {c}");
    }
    outln!("timeline:");
    for t in &i.timeline {
        let status = t.status.map(|s| format!(" [{}]", name(s))).unwrap_or_default();
        let by = t.by.as_deref().map(|b| format!(" ({b})")).unwrap_or_default();
        outln!(
            "  {}  {}{status}{by}  {}",
            timefmt::rfc3339(t.at),
            t.kind,
            t.note.as_deref().unwrap_or("")
        );
    }
    if !v.flag_changes.is_empty() {
        outln!("flag changes before the impact (suspects too; takt never flips them back):");
        for f in &v.flag_changes {
            outln!("  {}  {} min before", f.describe(), f.before_impact_s / 60);
        }
    }
    if v.suspects.is_empty() {
        outln!(
            "suspects: no deployment to {} in the 2 h before the impact",
            i.environment
        );
        return;
    }
    outln!("suspects (most likely first):");
    for s in &v.suspects {
        let mins = s.before_impact_s / 60;
        outln!(
            "  {}  {}@{}  {mins} min before{}{}",
            s.deployment,
            s.artifact.name,
            s.artifact.version,
            if s.same_service { "" } else { "  (another service)" },
            if s.rollback { "  (a rollback)" } else { "" }
        );
        for c in &s.commits {
            let short = &c.commit[..c.commit.len().min(8)];
            outln!(
                "      {short}  {}  {}",
                c.author.as_deref().unwrap_or("?"),
                c.subject.as_deref().unwrap_or("")
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PostmortemFormat {
    Md,
    Json,
}

#[derive(clap::Args)]
pub struct PostmortemArgs {
    /// The incident, `PROJECT#N` (`takt incident ls --all` lists them).
    id: String,
    /// Write it to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    /// Markdown for people, or the draft's JSON.
    #[arg(long, value_enum, default_value = "md")]
    format: PostmortemFormat,
    #[command(flatten)]
    remote: Remote,
}

/// `takt postmortem ID`: the server's blameless draft of an incident.
pub async fn postmortem(a: PostmortemArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let api = Api::new(&a.remote)?;
    let v: takt_api::PostmortemDraft = api.get(&path(&a.id, "postmortem")?).await?;
    let text = match a.format {
        PostmortemFormat::Md => v.markdown,
        PostmortemFormat::Json => format!("{}\n", serde_json::to_string_pretty(&v.postmortem)?),
    };
    match &a.output {
        Some(file) => {
            std::fs::write(file, &text).with_context(|| format!("writing {}", file.display()))?;
            outln!("the postmortem draft of {} is in {}", a.id, file.display());
        }
        None => crate::output::write_stdout(format_args!("{text}"), false),
    }
    Ok(())
}
