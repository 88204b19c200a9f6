//! `takt metrics`: the flow metrics of a window as a table (value, band, trend, sample) and the
//! bottleneck in a sentence, from `GET /api/v1/metrics`.

use crate::client::{Api, Remote, encode, table};
use takt_api::{FlakyList, FlowReport};
use takt_flow::Spread;
use takt_flow::dora::{Band, Dora, Rate};

#[derive(clap::Args)]
pub struct MetricsArgs {
    /// Only this project's [default: every project].
    #[arg(long)]
    project: Option<String>,
    /// Only this environment [default: the production ones: `production: true`, or those no
    /// other environment requires].
    #[arg(long)]
    env: Option<String>,
    /// The window: this long before now (30d, 12w, 36h).
    #[arg(long, default_value = "30d")]
    since: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    local: Local,
    #[command(flatten)]
    remote: Remote,
}

/// Where the figures come from: a server (default), or `takt run`'s own log.
#[derive(clap::Args)]
pub struct Local {
    /// Read `takt run`'s local event log instead of a server's (the current repository's, or
    /// `--data-dir`'s); its environments are the working tree's takt.yml's.
    #[arg(long)]
    local: bool,
    /// With `--local`: the data directory [default: <git common dir>/takt].
    #[arg(long, value_name = "DIR", requires = "local")]
    data_dir: Option<std::path::PathBuf>,
}

/// `takt run`'s local log folded into the flow view, and the working tree's takt.yml (its
/// environments and `metrics:`), when it reads.
async fn local_flow(l: &Local) -> anyhow::Result<(takt_flow::Flow, Option<takt_pipeline::Pipeline>)> {
    use anyhow::Context;
    use takt_views::Projection;
    let (root, tree) = match &l.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let repo = takt_engine::git::Repo::open(std::path::Path::new("."))
                .await
                .context("--local reads the current repository's runs: run it inside one, or give --data-dir")?;
            (repo.common_dir.join("takt"), Some(repo.root))
        }
    };
    let db = root.join("takt.db");
    if !db.exists() {
        anyhow::bail!("no local event log at {}: `takt run` records one there", db.display());
    }
    let store = takt_store::Store::open_sqlite(&db)
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    let mut flow = takt_flow::Flow::default();
    let filter = takt_store::EventFilter {
        kinds: takt_flow::Flow::KINDS.to_vec(),
        ..Default::default()
    };
    store.scan(&filter, |e| flow.apply(&e)).await?;
    let pipeline = tree
        .and_then(|t| std::fs::read(t.join("takt.yml")).ok())
        .and_then(|b| takt_pipeline::parse("takt.yml", &b).ok());
    Ok((flow, pipeline))
}

fn human_secs(s: f64) -> String {
    takt_model::timefmt::human(std::time::Duration::from_secs_f64(s.max(0.0)))
}

fn band(b: Option<Band>) -> String {
    b.map_or_else(|| "- (too few)".to_string(), |b| <&str>::from(b).to_string())
}

/// ↑ when the value grew since the window before, ↓ when it shrank, → when equal, blank when
/// either is missing.
fn trend(now: Option<f64>, before: Option<f64>) -> String {
    match (now, before) {
        (Some(a), Some(b)) if (a - b).abs() < 1e-9 => "→".into(),
        (Some(a), Some(b)) if a > b => "↑".into(),
        (Some(_), Some(_)) => "↓".into(),
        _ => String::new(),
    }
}

fn spread(s: Option<Spread>) -> String {
    s.map_or_else(
        || "-".to_string(),
        |s| format!("{} (p90 {})", human_secs(s.p50), human_secs(s.p90)),
    )
}

fn rate(r: &Rate) -> String {
    r.rate.map_or_else(
        || "-".to_string(),
        |x| format!("{:.0}% ({} of {})", x * 100.0, r.count, r.of),
    )
}

fn rows(d: &Dora, p: &Dora) -> Vec<Vec<String>> {
    let f = &d.deployment_frequency;
    let l = &d.change_lead_time;
    let r = &d.recovery_time;
    vec![
        vec![
            "deployment frequency".into(),
            format!("{:.1}/week ({})", f.per_week, <&str>::from(f.bucket).replace('_', " ")),
            <&str>::from(f.band).to_string(),
            trend(Some(f.per_week), Some(p.deployment_frequency.per_week)),
            format!("{} deployments", f.deployments),
        ],
        vec![
            "change lead time".into(),
            spread(l.total),
            band(l.band),
            trend(l.total.map(|s| s.p50), p.change_lead_time.total.map(|s| s.p50)),
            format!("{} commits", l.total.map_or(0, |s| s.sample)),
        ],
        vec![
            "change fail rate".into(),
            rate(&d.change_fail_rate),
            band(d.change_fail_rate.band),
            trend(d.change_fail_rate.rate, p.change_fail_rate.rate),
            format!("{} deployments", d.change_fail_rate.of),
        ],
        vec![
            "recovery time".into(),
            spread(r.time),
            band(r.band),
            trend(r.time.map(|s| s.p50), p.recovery_time.time.map(|s| s.p50)),
            format!("{} failures", r.time.map_or(0, |s| s.sample) + r.unrestored),
        ],
        vec![
            "rework rate".into(),
            rate(&d.rework_rate),
            band(d.rework_rate.band),
            trend(d.rework_rate.rate, p.rework_rate.rate),
            format!("{} deployments", d.rework_rate.of),
        ],
    ]
}

pub async fn metrics(a: MetricsArgs) -> anyhow::Result<()> {
    let v: FlowReport = if a.local.local {
        let length = takt_server::flow::window(Some(&a.since)).map_err(crate::client::BadInput)?;
        let (flow, pipeline) = local_flow(&a.local).await?;
        let envs = pipeline.as_ref().map(|p| p.environments.as_slice()).unwrap_or_default();
        let names = takt_server::flow::production_of(envs, a.env.as_deref());
        let thresholds = takt_server::flow::thresholds(&pipeline.map(|p| p.metrics).unwrap_or_default());
        let mut projects: Vec<String> = flow.runs.keys().map(|(p, _)| p.clone()).collect();
        projects.extend(flow.deployments.keys().map(|(p, _, _)| p.clone()));
        let production = projects.into_iter().map(|p| (p, names.clone())).collect();
        takt_server::flow::build(
            &flow,
            a.project.as_deref(),
            &production,
            &thresholds,
            length,
            takt_model::OffsetDateTime::now_utc(),
        )
    } else {
        let api = Api::new(&a.remote)?;
        let mut path = format!("/api/v1/metrics?since={}", encode(&a.since));
        if let Some(p) = &a.project {
            path.push_str(&format!("&project={}", encode(p)));
        }
        if let Some(e) = &a.env {
            path.push_str(&format!("&env={}", encode(e)));
        }
        api.get(&path).await?
    };
    if a.json {
        outln!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let envs = if v.environments.is_empty() {
        "no production environment".to_string()
    } else {
        v.environments.join(", ")
    };
    outln!("Flow of {envs}, the last {} (to {})", a.since, v.to);
    outln!(
        "{}",
        table(&["key", "value", "band", "trend", "sample"], rows(&v.dora, &v.previous))
    );
    let l = &v.dora.change_lead_time;
    if l.non_positive + l.unknown_commit + l.without_commits > 0 {
        outln!(
            "Left out of lead time: {} commits with a time after their deploy (clock skew), {} with no commit time, {} deployments with no commit range.",
            l.non_positive,
            l.unknown_commit,
            l.without_commits
        );
    }
    outln!("Bottleneck: {}.", v.bottleneck.summary);
    let p = &v.paths;
    if let Some(e) = p.run_efficiency {
        let mut line = format!(
            "Flow efficiency: runs {:.0}% (p50, work on the critical path over the run's time)",
            e.p50 * 100.0
        );
        if let Some(c) = p.commit_to_production_efficiency {
            line.push_str(&format!("; commit to production {:.0}%", c.p50 * 100.0));
        }
        if let Some(j) = p.jobs.first().filter(|j| j.shortens > 0) {
            line.push_str(&format!(
                ". The job that would shorten runs most: {} `{}` (the longest on {} of {} critical paths)",
                j.project, j.job, j.shortens, p.runs
            ));
        }
        outln!("{line}.");
    }
    let c = &v.coffee;
    if let Some(share) = c.share {
        let mut line = format!(
            "Coffee test: {:.0}% of runs within their budget ({} of {})",
            share * 100.0,
            c.within,
            c.runs
        );
        let pushers: Vec<String> = c
            .over
            .iter()
            .take(3)
            .map(|p| format!("{} `{}` {}×", p.project, p.job, p.runs))
            .collect();
        if !pushers.is_empty() {
            line.push_str(&format!("; pushed over by {}", pushers.join(", ")));
        }
        outln!("{line}.");
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct FlakyArgs {
    /// Only this project's [default: every project].
    #[arg(long)]
    project: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    local: Local,
    #[command(flatten)]
    remote: Remote,
}

pub async fn flaky(a: FlakyArgs) -> anyhow::Result<()> {
    let v: FlakyList = if a.local.local {
        let (flow, _) = local_flow(&a.local).await?;
        FlakyList {
            tests: takt_flow::flaky::flaky(&flow.tests, a.project.as_deref()),
        }
    } else {
        let api = Api::new(&a.remote)?;
        let path = match &a.project {
            Some(p) => format!("/api/v1/flaky?project={}", encode(p)),
            None => "/api/v1/flaky".to_string(),
        };
        api.get(&path).await?
    };
    if a.json {
        outln!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    if v.tests.is_empty() {
        outln!("no flaky tests: no test case both failed and passed on one commit");
        return Ok(());
    }
    let rows = v
        .tests
        .iter()
        .map(|t| {
            vec![
                format!("{} {} · {}", t.id.project, t.id.job, t.id.suite),
                t.id.name.clone(),
                format!("{} of {} commits", t.flaky_commits, t.commits),
                t.first_seen.clone(),
                t.last_seen.clone(),
                t.runs.iter().map(|r| format!("#{r}")).collect::<Vec<_>>().join(" "),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &["job · suite", "test", "flaky on", "first seen", "last seen", "runs"],
            rows
        )
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The project the history is of.
    project: String,
    /// JSON files (`{"deployments": [...], "incidents": [...]}`) or CSV files (a deployments,
    /// incidents or commits table each, told apart by their header): docs/metrics.md has both
    /// formats. All of them go in one import.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<std::path::PathBuf>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

pub async fn import(a: ImportArgs) -> anyhow::Result<()> {
    use crate::client::BadInput;
    // Read here first: a mistake is said with its file and line, and nothing is sent.
    let mut tables = crate::import_csv::Tables::default();
    for file in &a.files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|e| BadInput(format!("cannot read {name}: {e}")))?;
        if file.extension().is_some_and(|x| x.eq_ignore_ascii_case("csv")) {
            tables.read(&name, &text)?;
            continue;
        }
        let body: takt_api::ImportBody = serde_json::from_str(&text).map_err(|e| {
            BadInput(format!(
                "{name}:{}:{}: {e} (the format is in docs/metrics.md, `takt import`)",
                e.line(),
                e.column()
            ))
        })?;
        tables.deployments.extend(body.deployments);
        tables.incidents.extend(body.incidents);
    }
    let body = tables.finish()?;
    let api = Api::new(&a.remote)?;
    let v: takt_api::ImportAnswer = api
        .send_json(
            reqwest::Method::POST,
            &format!("/api/v1/projects/{}/import", encode(&a.project)),
            &body,
        )
        .await?;
    if a.json {
        outln!("{}", serde_json::to_string(&v)?);
    } else {
        outln!(
            "{}: {} deployments and {} incidents imported (only the flow metrics read them)",
            v.project,
            v.deployments,
            v.incidents
        );
    }
    Ok(())
}
