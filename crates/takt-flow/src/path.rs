//! Runs along their critical path: the chain of jobs, each the one its successor waited for
//! last, that ends with the run's last job; the work and wait of each job on it; the job that
//! would shorten the run most (the longest on the path); and flow efficiency, work over the
//! time it took, per run and from commit to production.

use crate::stats::{secs, spread};
use crate::{Flow, RunFacts, Scope, Spread};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A job on a run's critical path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub job: String,
    pub stage: String,
    /// Seconds it ran (its last attempt).
    pub work: f64,
    /// Seconds it waited, ready, for a slot.
    pub wait: f64,
}

/// The critical path of `r`, first job first (empty when no job finished).
pub fn critical_path(r: &RunFacts) -> Vec<Step> {
    let done: Vec<(&crate::Name, &crate::JobTimes)> = r
        .jobs
        .iter()
        .filter(|(_, j)| j.started.is_some() && j.finished.is_some())
        .collect();
    // Where each stage first appears in the queue: the order of stages.
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    for j in r.jobs.values() {
        first
            .entry(j.stage.as_ref())
            .and_modify(|o| *o = (*o).min(j.order))
            .or_insert(j.order);
    }
    let before = |a: &crate::JobTimes, b: &crate::JobTimes| first.get(a.stage.as_ref()) < first.get(b.stage.as_ref());
    let mut path = Vec::new();
    let mut current = done.iter().max_by_key(|(n, j)| (j.finished, std::cmp::Reverse(*n)));
    while let Some((name, j)) = current {
        path.push(Step {
            job: name.to_string(),
            stage: j.stage.to_string(),
            work: j.started.zip(j.finished).map_or(0.0, |(s, f)| secs(f - s).max(0.0)),
            wait: j.wait_ms as f64 / 1000.0,
        });
        // What it waited for: of what it depends on, the one that finished last (events'
        // times may put a dependency's finish a moment after this job's start).
        current = done
            .iter()
            .filter(|(n, d)| match &j.needs {
                Some(needs) => needs.iter().any(|x| x.as_ref() == n.as_ref()),
                None => before(d, j),
            })
            .max_by_key(|(n, d)| (d.finished, std::cmp::Reverse(*n)));
        if path.len() > r.jobs.len() {
            break; // cannot happen with finish times that only go back; a bound all the same
        }
    }
    path.reverse();
    path
}

/// One run's critical path, with the job that would shorten it most and its flow efficiency
/// (what a run's page shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCriticalPath {
    pub steps: Vec<Step>,
    /// The longest job on it.
    pub shorten: String,
    /// Work on the path over the run's time (from its start to its finish, or to its last
    /// job's finish while it runs), at most 1.
    pub efficiency: f64,
}

/// `r`'s critical path, or none while no job has finished.
pub fn run_path(r: &RunFacts) -> Option<RunCriticalPath> {
    let steps = critical_path(r);
    let longest = steps.iter().max_by(|a, b| a.work.total_cmp(&b.work))?.job.clone();
    let last = r
        .finished_at
        .or_else(|| r.jobs.values().filter_map(|j| j.finished).max());
    let took = r.started_at.zip(last).map_or(0.0, |(s, f)| secs(f - s));
    let work: f64 = steps.iter().map(|s| s.work).sum();
    let efficiency = if took > 0.0 { (work / took).min(1.0) } else { 1.0 };
    Some(RunCriticalPath {
        steps,
        shorten: longest,
        efficiency,
    })
}

/// One run's path, summed up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPath {
    pub project: String,
    pub run: u64,
    pub path: Vec<String>,
    /// The longest job on its path: shortening it shortens the run most.
    pub shorten: String,
    /// Work on the path over the run's time.
    pub efficiency: f64,
}

/// A job's share of critical paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOnPath {
    pub project: String,
    pub job: String,
    /// Runs whose critical path it is on.
    pub runs: usize,
    /// Runs it would shorten most.
    pub shortens: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<Spread>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Spread>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paths {
    /// Runs finished in the window with a critical path.
    pub runs: usize,
    /// Flow efficiency of runs: work on the path over the run's time (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_efficiency: Option<Spread>,
    /// From commit to production: the shipping run's path work and the deployment, over lead
    /// time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_to_production_efficiency: Option<Spread>,
    /// On most paths first.
    pub jobs: Vec<JobOnPath>,
    /// The last runs of the window, newest first (at most 20).
    pub recent: Vec<RunPath>,
}

/// Per job: runs on whose path, runs it would shorten most, work and wait seconds.
type Tally = (usize, usize, Vec<f64>, Vec<f64>);

/// How many of the newest runs' paths a report lists.
const RECENT: usize = 20;

pub fn report(flow: &Flow, scope: &Scope) -> Paths {
    let mut runs: Vec<(&(String, u64), &RunFacts)> = flow
        .runs
        .iter()
        .filter(|((p, _), r)| scope.project.is_none_or(|w| w == p) && r.finished_at.is_some_and(|f| scope.within(f)))
        .collect();
    // Compared in place: a key that clones (project, run) per comparison was most of this
    // report's time on 10,000 runs.
    runs.sort_by(|(ka, a), (kb, b)| (a.finished_at, ka).cmp(&(b.finished_at, kb)));
    let mut efficiency = Vec::new();
    // By project, then job (a job's name is cloned once, when first seen).
    let mut tallies: BTreeMap<&str, BTreeMap<String, Tally>> = BTreeMap::new();
    // The last runs' paths (the newest 20 are reported).
    let mut recent: std::collections::VecDeque<(&String, u64, RunCriticalPath)> = std::collections::VecDeque::new();
    let mut counted = 0;
    for ((project, run), r) in runs {
        let Some(p) = run_path(r) else {
            continue;
        };
        counted += 1;
        efficiency.push(p.efficiency);
        let of_project = tallies.entry(project.as_str()).or_default();
        for s in &p.steps {
            let j = match of_project.get_mut(s.job.as_str()) {
                Some(j) => j,
                None => of_project.entry(s.job.clone()).or_default(),
            };
            j.0 += 1;
            j.1 += usize::from(s.job == p.shorten);
            j.2.push(s.work);
            j.3.push(s.wait);
        }
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back((project, *run, p));
    }
    let recent: Vec<RunPath> = recent
        .into_iter()
        .rev()
        .map(|(project, run, p)| RunPath {
            project: project.clone(),
            run,
            path: p.steps.iter().map(|s| s.job.clone()).collect(),
            shorten: p.shorten,
            efficiency: p.efficiency,
        })
        .collect();
    let jobs: BTreeMap<(String, String), Tally> = tallies
        .into_iter()
        .flat_map(|(project, by_job)| by_job.into_iter().map(move |(job, t)| ((project.to_string(), job), t)))
        .collect();
    let mut jobs: Vec<JobOnPath> = jobs
        .into_iter()
        .map(|((project, job), (runs, shortens, work, wait))| JobOnPath {
            project,
            job,
            runs,
            shortens,
            work: spread(work),
            wait: spread(wait),
        })
        .collect();
    jobs.sort_by(|a, b| {
        b.shortens
            .cmp(&a.shortens)
            .then(b.runs.cmp(&a.runs))
            .then(a.job.cmp(&b.job))
    });
    // Commit to production: the shipping run's path work plus the deployment, over lead time.
    let ship = crate::shipped(flow, scope);
    let mut c2p = Vec::new();
    for c in &ship.commits {
        let lead = secs(c.lead());
        if lead <= 0.0 {
            continue;
        }
        let path: f64 = c.run.map_or(0.0, |r| critical_path(r).iter().map(|s| s.work).sum());
        let d = c.deployment;
        let deploy = (secs(c.done - d.started_at) - secs(d.approval_wait)).max(0.0);
        c2p.push(((path + deploy) / lead).min(1.0));
    }
    Paths {
        runs: counted,
        run_efficiency: spread(efficiency),
        commit_to_production_efficiency: spread(c2p),
        jobs,
        recent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobTimes;

    #[test]
    fn the_path_follows_what_each_job_waited_for_last() {
        let t0 = time::macros::datetime!(2026-11-02 00:00 UTC);
        let m = |min: i64| Some(t0 + time::Duration::minutes(min));
        let job = |stage: &str, order, needs: Option<Vec<&str>>, from, to, wait_ms| JobTimes {
            stage: stage.into(),
            order,
            needs: needs.map(|n| n.into_iter().map(crate::Name::from).collect()),
            started: m(from),
            finished: m(to),
            wait_ms,
        };
        let mut r = RunFacts {
            started_at: m(0),
            finished_at: m(55),
            ..RunFacts::default()
        };
        r.jobs.insert("a".into(), job("build", 0, None, 0, 10, 0));
        r.jobs.insert("b".into(), job("test", 1, Some(vec!["a"]), 10, 15, 0));
        r.jobs.insert("c".into(), job("test", 2, Some(vec!["a"]), 10, 40, 2000));
        // Ordered by stage: it waits for every job of build and test; c finished last.
        r.jobs.insert("d".into(), job("deploy", 3, None, 45, 50, 0));
        let path = critical_path(&r);
        let names: Vec<&str> = path.iter().map(|s| s.job.as_str()).collect();
        assert_eq!(names, ["a", "c", "d"]);
        assert_eq!(path[1].work, 1800.0);
        assert_eq!(path[1].wait, 2.0);

        let mut flow = Flow::default();
        flow.runs.insert(("p".into(), 1), r);
        let scope = Scope {
            project: None,
            production: &|_, _| true,
            from: t0,
            to: t0 + time::Duration::days(1),
        };
        let p = report(&flow, &scope);
        assert_eq!(p.runs, 1);
        assert_eq!(p.recent[0].shorten, "c", "the longest job on the path");
        let e = p.run_efficiency.unwrap().p50;
        assert!((e - 45.0 / 55.0).abs() < 1e-9, "{e}");
        assert_eq!(p.jobs[0].job, "c");
        assert_eq!((p.jobs[0].runs, p.jobs[0].shortens), (1, 1));
    }
}
