//! `GET /api/v1/metrics`: the flow metrics (`takt-flow`), from a view of the log kept current
//! by a store observer, so a report costs its computation, not a replay of the log.

use crate::{ApiError, AppState};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;
use takt_api::{FlakyList, FlakyQuery, FlowQuery, FlowReport, ImportAnswer, ImportBody};
use takt_flow::{Flow, Scope};
use takt_model::OffsetDateTime;
use takt_store::EventFilter;
use takt_views::Projection;

/// The flow view, current with the log.
#[derive(Default)]
pub struct FlowIndex {
    flow: parking_lot::RwLock<Flow>,
}

impl FlowIndex {
    pub fn apply(&self, e: &takt_model::Event) {
        if Flow::wants(e) {
            self.flow.write().apply(e);
        }
    }

    /// Builds the view from the log.
    pub async fn load(store: &takt_store::Store) -> Result<FlowIndex, takt_store::StoreError> {
        let index = FlowIndex::default();
        let filter = EventFilter {
            kinds: Flow::KINDS.to_vec(),
            ..Default::default()
        };
        store.scan(&filter, |e| index.apply(&e)).await?;
        Ok(index)
    }
}

/// The default window.
const DEFAULT_SINCE: &str = "30d";

/// The window `since` names (`30d`, `12w`): a duration from 1 s to 10 years.
pub fn window(since: Option<&str>) -> Result<time::Duration, String> {
    let since = since.unwrap_or(DEFAULT_SINCE);
    takt_pipeline::duration::parse(since)
        .ok()
        .filter(|d| !d.is_zero() && d.as_secs() <= 10 * 366 * 86_400)
        .and_then(|d| time::Duration::try_from(d).ok())
        .ok_or_else(|| format!("`since` must be a duration from 1s to 10 years such as 30d or 12w, not `{since}`"))
}

/// The report of `flow` for `project` (or all), the environments `production` lists per
/// project, over `length` up to `to`, with the window before it for the trend.
pub fn build(
    flow: &Flow,
    project: Option<&str>,
    production: &HashMap<String, Vec<String>>,
    thresholds: &takt_flow::dora::Thresholds,
    length: time::Duration,
    to: OffsetDateTime,
) -> FlowReport {
    let is_production = |p: &str, e: &str| production.get(p).is_some_and(|v| v.iter().any(|x| x == e));
    let from = to - length;
    let scope = Scope {
        project,
        production: &is_production,
        from,
        to,
    };
    let before = Scope {
        project,
        production: &is_production,
        from: from - length,
        to: from,
    };
    let mut environments: Vec<String> = production
        .iter()
        .filter(|(p, _)| project.is_none_or(|w| w == p.as_str()))
        .flat_map(|(p, envs)| envs.iter().map(move |e| format!("{p}/{e}")))
        .collect();
    environments.sort();
    FlowReport {
        project: project.map(str::to_string),
        environments,
        from: takt_model::timefmt::rfc3339(from),
        to: takt_model::timefmt::rfc3339(to),
        dora: takt_flow::dora::report(flow, &scope, thresholds),
        weeks: (0..8)
            .rev()
            .map(|k| {
                let end = to - time::Duration::weeks(k);
                let week = Scope {
                    project,
                    production: &is_production,
                    from: end - time::Duration::weeks(1),
                    to: end,
                };
                let d = takt_flow::dora::report(flow, &week, thresholds);
                takt_api::WeekKeys {
                    from: takt_model::timefmt::rfc3339(week.from),
                    deployments_per_day: d.deployment_frequency.per_day,
                    lead_time_p50: d.change_lead_time.total.map(|s| s.p50),
                    change_fail_rate: d.change_fail_rate.rate,
                    recovery_p50: d.recovery_time.time.map(|s| s.p50),
                    rework_rate: d.rework_rate.rate,
                }
            })
            .collect(),
        previous: takt_flow::dora::report(flow, &before, thresholds),
        bottleneck: takt_flow::bottleneck::report(flow, &scope),
        coffee: takt_flow::coffee::report(flow, &scope),
        paths: takt_flow::path::report(flow, &scope),
        thresholds: thresholds.clone(),
    }
}

/// The band thresholds `metrics:` sets, over the defaults.
pub fn thresholds(m: &takt_pipeline::MetricsConfig) -> takt_flow::dora::Thresholds {
    let mut t = takt_flow::dora::Thresholds::default();
    let b = &m.bands;
    for (slot, set) in [
        (&mut t.frequency_per_day, b.deployment_frequency),
        (&mut t.lead_time_s, b.lead_time_s),
        (&mut t.change_fail_rate, b.change_fail_rate),
        (&mut t.recovery_s, b.recovery_s),
        (&mut t.rework_rate, b.rework_rate),
    ] {
        if let Some(v) = set {
            *slot = v;
        }
    }
    if let Some(n) = m.min_sample {
        t.min_sample = n as usize;
    }
    t
}

/// The environments of `envs` that count: `only` by name, or else the production ones.
pub fn production_of(envs: &[takt_pipeline::Environment], only: Option<&str>) -> Vec<String> {
    envs.iter()
        .filter(|e| match only {
            Some(want) => e.name == want,
            None => takt_pipeline::is_production(envs, &e.name),
        })
        .map(|e| e.name.clone())
        .collect()
}

pub async fn report(
    State(state): State<Arc<AppState>>,
    q: Result<Query<FlowQuery>, QueryRejection>,
) -> Result<Json<FlowReport>, ApiError> {
    let q = crate::query(q)?;
    if let Some(p) = &q.project {
        state.project(p)?;
    }
    let length = window(q.since.as_deref()).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    // Which environments are production, per project, from each default branch's settings.
    // A report over several projects uses the bands they all set alike, or else the defaults.
    let mut production: HashMap<String, Vec<String>> = HashMap::new();
    let mut bands: Option<takt_pipeline::MetricsConfig> = None;
    let mut alike = true;
    let projects: Vec<String> = state.projects.read().list().iter().map(|p| p.name.clone()).collect();
    for p in projects.iter().filter(|p| q.project.as_ref().is_none_or(|w| w == *p)) {
        let cfg = state.ci.branch_config(p).unwrap_or_default();
        production.insert(p.clone(), production_of(&cfg.environments, q.env.as_deref()));
        match &bands {
            None => bands = Some(cfg.metrics),
            Some(b) => alike &= *b == cfg.metrics,
        }
    }
    let thresholds = match bands {
        Some(b) if alike => thresholds(&b),
        _ => takt_flow::dora::Thresholds::default(),
    };
    let flow = state.flow.flow.read();
    Ok(Json(build(
        &flow,
        q.project.as_deref(),
        &production,
        &thresholds,
        length,
        OffsetDateTime::now_utc(),
    )))
}

/// `GET /api/v1/flaky?project=P`.
pub async fn flaky(
    State(state): State<Arc<AppState>>,
    q: Result<Query<FlakyQuery>, QueryRejection>,
) -> Result<Json<FlakyList>, ApiError> {
    let q = crate::query(q)?;
    if let Some(p) = &q.project {
        state.project(p)?;
    }
    let tests = takt_flow::flaky::flaky(&state.flow.flow.read().tests, q.project.as_deref());
    Ok(Json(FlakyList { tests }))
}

/// Sets each project's flow gauges in `/metrics`: its production environments, the last 30
/// days, from the view (what `GET /api/v1/metrics` reports).
pub fn gauges(state: &AppState) {
    let projects: Vec<String> = state.projects.read().list().iter().map(|p| p.name.clone()).collect();
    let to = OffsetDateTime::now_utc();
    for p in projects {
        let cfg = state.ci.branch_config(&p).unwrap_or_default();
        let thresholds = thresholds(&cfg.metrics);
        let envs = cfg.environments;
        let is_production = |_: &str, e: &str| takt_pipeline::is_production(&envs, e);
        let scope = Scope {
            project: Some(&p),
            production: &is_production,
            from: to - time::Duration::days(30),
            to,
        };
        let flow = state.flow.flow.read();
        let dora = takt_flow::dora::report(&flow, &scope, &thresholds);
        let coffee = takt_flow::coffee::report(&flow, &scope);
        drop(flow);
        state.metrics.flow.set(&p, &dora, &coffee);
    }
}

/// `POST /api/v1/projects/{name}/import {"deployments": [...], "incidents": [...]}`: each item
/// checked, then each recorded as its own `imported_*` event, which only the flow view reads
/// (no deploy, notification or remediation acts on them). An item imported again (same id)
/// replaces the earlier one.
pub async fn import(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(project): axum::extract::Path<String>,
    b: Result<Json<ImportBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ImportAnswer>, ApiError> {
    let b = b.map_err(crate::body_error)?.0;
    state.project(&project)?;
    let bad = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, msg);
    let mut ids = std::collections::HashSet::new();
    for (k, d) in b.deployments.iter().enumerate() {
        let at = format!("deployments[{k}] (id `{}`)", d.id);
        if d.id.trim().is_empty() || d.environment.trim().is_empty() {
            return Err(bad(format!(
                "deployments[{k}]: `id` and `environment` must not be empty"
            )));
        }
        if !ids.insert(("d", d.id.as_str())) {
            return Err(bad(format!("{at}: the id is given twice")));
        }
        if d.finished_at < d.started_at {
            return Err(bad(format!("{at}: `finished_at` is before `started_at`")));
        }
    }
    for (k, i) in b.incidents.iter().enumerate() {
        let at = format!("incidents[{k}] (id `{}`)", i.id);
        if i.id.trim().is_empty() || i.environment.trim().is_empty() {
            return Err(bad(format!("incidents[{k}]: `id` and `environment` must not be empty")));
        }
        if !ids.insert(("i", i.id.as_str())) {
            return Err(bad(format!("{at}: the id is given twice")));
        }
        if i.resolved_at.is_some_and(|r| r < i.opened_at) {
            return Err(bad(format!("{at}: `resolved_at` is before `opened_at`")));
        }
    }
    let (deployments, incidents) = (b.deployments.len(), b.incidents.len());
    for deployment in b.deployments {
        let e = takt_model::Event::now(&project, None, takt_model::EventKind::ImportedDeployment { deployment });
        state.store.append(&e).await?;
    }
    for incident in b.incidents {
        let e = takt_model::Event::now(&project, None, takt_model::EventKind::ImportedIncident { incident });
        state.store.append(&e).await?;
    }
    Ok(Json(ImportAnswer {
        project,
        deployments,
        incidents,
    }))
}
