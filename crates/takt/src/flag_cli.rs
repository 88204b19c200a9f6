//! `takt flag ls|show`: a project's feature flags (its default branch's `flags:`), as API calls.

use crate::client::{Api, BadInput, Remote, encode, table};
use takt_api::{FlagList, FlagSetting};

#[derive(clap::Subcommand)]
pub enum FlagCommand {
    /// A project's flags: type, state, default variant, variants, and what each environment
    /// changes (read scope).
    Ls {
        project: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// One flag in full: its variants, default, targeting rule, and each environment's own.
    Show {
        project: String,
        key: String,
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

pub async fn flag(c: FlagCommand) -> anyhow::Result<()> {
    match c {
        FlagCommand::Ls { project, json, remote } => {
            let v: FlagList = Api::new(&remote)?
                .get(&format!("/api/v1/projects/{}/flags", encode(&project)))
                .await?;
            if json {
                outln!("{}", serde_json::to_string(&v)?);
                return Ok(());
            }
            if v.flags.is_empty() {
                outln!("{project} has no flags (add `flags:` to its default branch's takt.yml; docs/flags.md)");
                return Ok(());
            }
            let rows = v
                .flags
                .iter()
                .map(|f| {
                    let envs: Vec<String> = f
                        .environments
                        .iter()
                        .map(|(e, s)| format!("{e}: {}", s.state))
                        .collect();
                    vec![
                        f.key.clone(),
                        f.kind.clone(),
                        f.setting.state.clone(),
                        f.setting
                            .default_variant
                            .clone()
                            .unwrap_or_else(|| "(code default)".into()),
                        f.variants.join(", "),
                        if f.setting.targeting.is_some() { "yes" } else { "no" }.into(),
                        if envs.is_empty() { "-".into() } else { envs.join("; ") },
                    ]
                })
                .collect();
            outln!(
                "{}",
                table(
                    &[
                        "flag",
                        "type",
                        "state",
                        "default",
                        "variants",
                        "targeting",
                        "environments"
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
            let v: FlagList = Api::new(&remote)?
                .get(&format!("/api/v1/projects/{}/flags", encode(&project)))
                .await?;
            let Some(f) = v.flags.iter().find(|f| f.key == key) else {
                let keys: Vec<&str> = v.flags.iter().map(|f| f.key.as_str()).collect();
                return Err(BadInput(format!(
                    "{project} has no flag `{key}` (its flags: {})",
                    if keys.is_empty() {
                        "none".to_string()
                    } else {
                        keys.join(", ")
                    }
                ))
                .into());
            };
            if json {
                outln!("{}", serde_json::to_string(f)?);
                return Ok(());
            }
            outln!("{} ({}), from {}", f.key, f.kind, &v.commit[..v.commit.len().min(8)]);
            outln!("  state: {}", f.setting.state);
            outln!("  variants: {}", f.variants.join(", "));
            outln!(
                "  default: {}",
                f.setting
                    .default_variant
                    .as_deref()
                    .unwrap_or("(none: the client's code default)")
            );
            outln!("  targeting: {}", targeting(&f.setting));
            for (env, s) in &f.environments {
                outln!(
                    "  in {env}: state {}, default {}, targeting {}",
                    s.state,
                    s.default_variant.as_deref().unwrap_or("(none)"),
                    targeting(s)
                );
            }
        }
    }
    Ok(())
}
