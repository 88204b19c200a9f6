//! The coffee test: a build should take no longer than a coffee break. The share of runs that
//! finished within their pipeline's `budget`, per week and over the window, and the jobs that
//! pushed runs over it (the slowest job on each such run's critical path).

use crate::{Flow, Scope};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use takt_model::RunStatus;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoffeeWeek {
    /// Its Monday (UTC), `YYYY-MM-DD`.
    pub week: String,
    pub runs: usize,
    pub within: usize,
    pub share: f64,
}

/// A job that pushed runs over their budget, and how many.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pusher {
    pub project: String,
    pub job: String,
    pub runs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coffee {
    /// Runs that finished (passed or failed, not cancelled) in the window, with a budget.
    pub runs: usize,
    pub within: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    pub weeks: Vec<CoffeeWeek>,
    /// Most runs first.
    pub over: Vec<Pusher>,
}

/// The coffee test of `scope`'s project (or every project) over its window; environments do
/// not matter here.
pub fn report(flow: &Flow, scope: &Scope) -> Coffee {
    let mut weeks: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut over: BTreeMap<(String, String), usize> = BTreeMap::new();
    let (mut runs, mut within) = (0, 0);
    for ((project, _), r) in &flow.runs {
        if scope.project.is_some_and(|p| p != project) {
            continue;
        }
        let (Some(at), Some(took), Some(budget)) = (r.finished_at, r.duration_ms, r.budget_ms) else {
            continue;
        };
        if !scope.within(at) || !matches!(r.status, Some(RunStatus::Success | RunStatus::Failed)) {
            continue;
        }
        let ok = took <= budget;
        runs += 1;
        within += usize::from(ok);
        let w = weeks.entry(crate::bottleneck::monday(at)).or_default();
        w.0 += 1;
        w.1 += usize::from(ok);
        if !ok && let Some(job) = &r.slowest_job {
            *over.entry((project.clone(), job.clone())).or_default() += 1;
        }
    }
    let mut over: Vec<Pusher> = over
        .into_iter()
        .map(|((project, job), runs)| Pusher { project, job, runs })
        .collect();
    over.sort_by(|a, b| b.runs.cmp(&a.runs).then(a.job.cmp(&b.job)));
    Coffee {
        runs,
        within,
        share: (runs > 0).then(|| within as f64 / runs as f64),
        weeks: weeks
            .into_iter()
            .map(|(week, (runs, within))| CoffeeWeek {
                week,
                runs,
                within,
                share: within as f64 / runs as f64,
            })
            .collect(),
        over,
    }
}
