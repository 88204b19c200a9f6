//! `takt flag ls|show|set|kill|history`: a project's feature flags (its default branch's
//! `flags:`, with the changes made at run time), as API calls (docs/flags.md).

use crate::client::{Api, BadInput, Remote, encode, table};
use takt_api::{FlagChangeAnswer, FlagChangeRequest, FlagHistory, FlagInfo, FlagList, FlagSetting};
use takt_model::{FlagSource, FlagState};

#[derive(clap::Subcommand)]
pub enum FlagCommand {
    /// A project's flags: type, variants, and in each environment the state, the default
    /// variant and whether the file or a run-time change is in force (read scope).
    Ls {
        project: String,
        /// Only stale flags: one variant for everyone, unchanged for `--days` in every
        /// environment (candidates for removal).
        #[arg(long)]
        stale: bool,
        /// Days unchanged after which a flag is stale.
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// One flag in full: its variants, the file's setting, and in each environment the setting
    /// in force and where it comes from (the file, or a run-time change by whom).
    Show {
        project: String,
        key: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Change a flag in one environment at run time (deploy scope): serve one variant to
    /// everyone, roll a boolean flag out to a percentage of targeting keys, or set its state.
    /// The change wins over the file until the file changes that flag again.
    #[command(group(clap::ArgGroup::new("change").required(true).args(["variant", "rollout", "state"])))]
    Set {
        project: String,
        key: String,
        #[arg(long)]
        env: String,
        /// Serve this variant to everyone.
        #[arg(long)]
        variant: Option<String>,
        /// A boolean flag on for this percentage (0-100) of targeting keys (flagd's
        /// `fractional`, by flag key and targeting key).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        rollout: Option<u8>,
        /// ENABLED or DISABLED.
        #[arg(long, value_parser = ["ENABLED", "DISABLED"])]
        state: Option<String>,
        /// Let --variant or --rollout replace a targeting rule of the flag's own.
        #[arg(long)]
        replace_targeting: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// The kill switch: set a flag's state to DISABLED in one environment at once (OFREP then
    /// answers reason DISABLED and clients use their code default).
    Kill {
        project: String,
        key: String,
        #[arg(long)]
        env: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Every change of a project's flags, oldest first: from the file (with the commit) and at
    /// run time (with the token), each with what was in force before and after.
    History {
        project: String,
        /// Only this flag.
        key: Option<String>,
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

fn targeting(s: &FlagSetting) -> String {
    match &s.targeting {
        Some(t) => t.to_string(),
        None => "-".into(),
    }
}

/// `ENABLED, default off, targeting {…}` in a few words.
fn brief(s: &FlagSetting) -> String {
    let mut out = format!(
        "{}, default {}",
        s.state.as_str(),
        s.default_variant.as_deref().unwrap_or("(code default)")
    );
    if s.targeting.is_some() {
        out.push_str(", targeting");
    }
    out
}

fn source(s: FlagSource, by: Option<&str>) -> String {
    match s {
        FlagSource::File => "file".into(),
        FlagSource::Api => format!("set by {}", by.unwrap_or("?")),
    }
}

async fn list(api: &Api, project: &str, days: u32) -> anyhow::Result<FlagList> {
    api.get(&format!("/api/v1/projects/{}/flags?stale_days={days}", encode(project)))
        .await
}

fn find<'a>(v: &'a FlagList, project: &str, key: &str) -> anyhow::Result<&'a FlagInfo> {
    v.flags.iter().find(|f| f.key == key).ok_or_else(|| {
        let keys: Vec<&str> = v.flags.iter().map(|f| f.key.as_str()).collect();
        BadInput(format!(
            "{project} has no flag `{key}` (its flags: {})",
            if keys.is_empty() {
                "none".to_string()
            } else {
                keys.join(", ")
            }
        ))
        .into()
    })
}

async fn change(
    remote: &Remote,
    project: &str,
    env: &str,
    key: &str,
    body: FlagChangeRequest,
    json: bool,
) -> anyhow::Result<()> {
    let path = format!(
        "/api/v1/environments/{}/{}/flags/{}",
        encode(project),
        encode(env),
        encode(key)
    );
    let a: FlagChangeAnswer = Api::new(remote)?.send_json(reqwest::Method::POST, &path, &body).await?;
    if json {
        outln!("{}", serde_json::to_string(&a)?);
    } else if a.changed {
        outln!(
            "{key} in {project}/{env}: {} -> {} (event {})",
            brief(&a.before),
            brief(&a.after),
            a.seq.unwrap_or_default()
        );
        if let Some(t) = &a.after.targeting {
            outln!("  targeting: {t}");
        }
    } else {
        outln!("{key} in {project}/{env} is already so: {}", brief(&a.after));
    }
    Ok(())
}

pub async fn flag(c: FlagCommand) -> anyhow::Result<()> {
    match c {
        FlagCommand::Ls {
            project,
            stale,
            days,
            json,
            remote,
        } => {
            let mut v = list(&Api::new(&remote)?, &project, days).await?;
            if stale {
                v.flags.retain(|f| f.stale);
            }
            if json {
                outln!("{}", serde_json::to_string(&v)?);
                return Ok(());
            }
            if v.flags.is_empty() {
                if stale {
                    outln!(
                        "{project} has no stale flags (none at one variant for everyone and unchanged for {days} days)"
                    );
                } else {
                    outln!("{project} has no flags (add `flags:` to its default branch's takt.yml; docs/flags.md)");
                }
                return Ok(());
            }
            let rows = v
                .flags
                .iter()
                .map(|f| {
                    let envs: Vec<String> = f
                        .environments
                        .iter()
                        .map(|(e, s)| {
                            let mark = if s.source == FlagSource::Api { " (set)" } else { "" };
                            format!("{e}: {}{mark}", s.setting.state.as_str())
                        })
                        .collect();
                    vec![
                        f.key.clone(),
                        f.kind.clone(),
                        f.file.state.as_str().to_string(),
                        f.file
                            .default_variant
                            .clone()
                            .unwrap_or_else(|| "(code default)".into()),
                        f.variants.join(", "),
                        if f.file.targeting.is_some() { "yes" } else { "no" }.into(),
                        if envs.is_empty() { "-".into() } else { envs.join("; ") },
                        if f.stale { "stale" } else { "" }.into(),
                    ]
                })
                .collect();
            outln!(
                "{}",
                table(
                    &[
                        "flag",
                        "type",
                        "file",
                        "default",
                        "variants",
                        "targeting",
                        "in force",
                        ""
                    ],
                    rows
                )
            );
        }
        FlagCommand::Show {
            project,
            key,
            json,
            remote,
        } => {
            let v = list(&Api::new(&remote)?, &project, 30).await?;
            let f = find(&v, &project, &key)?;
            if json {
                outln!("{}", serde_json::to_string(f)?);
                return Ok(());
            }
            outln!(
                "{} ({}), file at {}",
                f.key,
                f.kind,
                v.commit.get(..8).unwrap_or(&v.commit)
            );
            outln!("  variants: {}", f.variants.join(", "));
            outln!("  file: {}", brief(&f.file));
            outln!("  targeting: {}", targeting(&f.file));
            for (env, s) in &f.environments {
                outln!(
                    "  in {env}: {} ({}, {}){}",
                    brief(&s.setting),
                    source(s.source, s.by.as_deref()),
                    s.changed_at,
                    if s.setting.targeting != f.file.targeting {
                        format!("\n    targeting: {}", targeting(&s.setting))
                    } else {
                        String::new()
                    }
                );
            }
            if f.stale {
                outln!("  stale: one variant for everyone, unchanged for {} days", v.stale_days);
            }
        }
        FlagCommand::Set {
            project,
            key,
            env,
            variant,
            rollout,
            state,
            replace_targeting,
            json,
            remote,
        } => {
            let state = state.map(|s| {
                if s == "ENABLED" {
                    FlagState::Enabled
                } else {
                    FlagState::Disabled
                }
            });
            let body = FlagChangeRequest {
                variant,
                rollout,
                state,
                replace_targeting,
            };
            change(&remote, &project, &env, &key, body, json).await?;
        }
        FlagCommand::Kill {
            project,
            key,
            env,
            json,
            remote,
        } => {
            let body = FlagChangeRequest {
                state: Some(FlagState::Disabled),
                ..Default::default()
            };
            change(&remote, &project, &env, &key, body, json).await?;
        }
        FlagCommand::History {
            project,
            key,
            env,
            json,
            remote,
        } => {
            let mut path = format!("/api/v1/projects/{}/flags/history?", encode(&project));
            if let Some(k) = &key {
                path.push_str(&format!("flag={}&", encode(k)));
            }
            if let Some(e) = &env {
                path.push_str(&format!("env={}&", encode(e)));
            }
            let h: FlagHistory = Api::new(&remote)?.get(path.trim_end_matches(['&', '?'])).await?;
            if json {
                outln!("{}", serde_json::to_string(&h)?);
                return Ok(());
            }
            if h.changes.is_empty() {
                outln!("no flag changes recorded for {project}");
                return Ok(());
            }
            let rows = h
                .changes
                .iter()
                .map(|c| {
                    let from = match c.source {
                        FlagSource::File => {
                            format!("file {}", c.commit.as_deref().map_or("", |s| s.get(..8).unwrap_or(s)))
                        }
                        FlagSource::Api => c.by.clone().unwrap_or_default(),
                    };
                    vec![
                        c.at.clone(),
                        c.environment.clone(),
                        c.flag.clone(),
                        from,
                        c.before.as_ref().map_or("(none)".into(), brief),
                        c.after.as_ref().map_or("(removed)".into(), brief),
                    ]
                })
                .collect();
            outln!(
                "{}",
                table(&["at", "environment", "flag", "by", "before", "after"], rows)
            );
        }
    }
    Ok(())
}
