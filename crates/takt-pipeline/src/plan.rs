//! Pipeline + the facts of one commit → [`Plan`]: which jobs run, with what `when`, after which
//! jobs, and with whose artifacts. [`Schedule`] then decides, as jobs finish, which may start —
//! the stop-the-line rule lives here, with no clock and no I/O.

use crate::glob::GlobList;
use crate::model::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use takt_model::JobStatus;

/// The facts a plan is made from.
#[derive(Debug, Clone, Default)]
pub struct PlanContext {
    /// Variables visible to `rules: if` (predefined `CI_*` facts and pipeline variables).
    pub variables: HashMap<String, String>,
    /// Files changed by the commit; `None` when unknown (then every `changes` rule matches).
    pub changed_files: Option<Vec<String>>,
    /// Every file in the commit, for `exists` rules.
    pub files: Vec<String>,
    /// Run only these jobs and what they need (`takt run --job`).
    pub only_jobs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub job: Job,
    pub when: When,
    pub allow_failure: bool,
    /// Variables added by the matching rule.
    pub rule_variables: Vec<(String, String)>,
    /// Jobs that must be finished before this one is decided.
    pub deps: Vec<usize>,
    /// Whether `deps` come from `needs` (true) or from stage order (false).
    pub by_needs: bool,
    /// Jobs whose artifacts are placed into this job's workspace.
    pub artifacts_from: Vec<usize>,
    pub stage_index: usize,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub jobs: Vec<PlannedJob>,
    /// Jobs left out by their rules, with the reason.
    pub excluded: Vec<(String, String)>,
}

/// A plan that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no job is named `{0}`; the jobs are: {1}")]
    UnknownJob(String, String),
    #[error(
        "job `{job}` needs `{need}`, but the rules leave `{need}` out of this run (add `optional: true` to the need, or fix the rules)"
    )]
    NeedExcluded { job: String, need: String },
    #[error("no job runs for this commit: the rules left every job out")]
    Empty,
}

fn rule_matches(rule: &Rule, vars: &HashMap<String, String>, cx: &PlanContext) -> bool {
    if let Some(c) = &rule.condition
        && !c.eval(vars)
    {
        return false;
    }
    if let Some(globs) = &rule.changes
        && let Some(changed) = &cx.changed_files
    {
        let g = GlobList::new(globs);
        if !changed.iter().any(|f| g.is_match(f)) {
            return false;
        }
    }
    if let Some(globs) = &rule.exists {
        let g = GlobList::new(globs);
        if !cx.files.iter().any(|f| g.is_match(f)) {
            return false;
        }
    }
    true
}

/// Makes the plan for one commit.
pub fn plan(p: &Pipeline, cx: &PlanContext) -> Result<Plan, PlanError> {
    let stage_index = |s: &str| p.stages.iter().position(|x| x == s).unwrap_or(0);
    let mut included: Vec<PlannedJob> = Vec::new();
    let mut excluded = Vec::new();
    for job in &p.jobs {
        let mut vars = cx.variables.clone();
        for (k, v) in p.variables.iter().chain(job.variables.iter()) {
            vars.insert(k.clone(), v.clone());
        }
        let (when, allow_failure, rule_variables) = if job.rules.is_empty() {
            (job.when, job.allow_failure, Vec::new())
        } else {
            match job.rules.iter().find(|r| rule_matches(r, &vars, cx)) {
                None => {
                    excluded.push((job.name.clone(), "no rule matched".to_string()));
                    continue;
                }
                Some(r) => (
                    r.when.unwrap_or(job.when),
                    r.allow_failure.unwrap_or(job.allow_failure),
                    r.variables.clone(),
                ),
            }
        };
        if when == When::Never {
            excluded.push((job.name.clone(), "a rule said `when: never`".to_string()));
            continue;
        }
        included.push(PlannedJob {
            job: job.clone(),
            when,
            allow_failure,
            rule_variables,
            deps: Vec::new(),
            by_needs: job.needs.is_some(),
            artifacts_from: Vec::new(),
            stage_index: stage_index(&job.stage),
        });
    }
    // Resolve edges among included jobs.
    let by_name = |name: &str, jobs: &[PlannedJob]| -> Vec<usize> {
        jobs.iter()
            .enumerate()
            .filter(|(_, j)| j.job.name == name || j.job.base == name)
            .map(|(i, _)| i)
            .collect()
    };
    let mut edges: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
    for (i, pj) in included.iter().enumerate() {
        let (deps, mut arts) = match &pj.job.needs {
            Some(needs) => {
                let mut deps = Vec::new();
                let mut arts = Vec::new();
                for n in needs {
                    let ids: Vec<usize> = by_name(&n.job, &included).into_iter().filter(|x| *x != i).collect();
                    if ids.is_empty() {
                        if n.optional {
                            continue;
                        }
                        return Err(PlanError::NeedExcluded {
                            job: pj.job.name.clone(),
                            need: n.job.clone(),
                        });
                    }
                    if n.artifacts {
                        arts.extend(ids.iter().copied());
                    }
                    deps.extend(ids);
                }
                (deps, arts)
            }
            None => {
                let deps: Vec<usize> = included
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.stage_index < pj.stage_index)
                    .map(|(k, _)| k)
                    .collect();
                (deps.clone(), deps)
            }
        };
        if let Some(only) = &pj.job.dependencies {
            arts = included
                .iter()
                .enumerate()
                .filter(|(k, o)| {
                    o.stage_index <= pj.stage_index
                        && *k != i
                        && only.iter().any(|d| *d == o.job.name || *d == o.job.base)
                })
                .map(|(k, _)| k)
                .collect();
        }
        edges.push((deps, arts));
    }
    for (pj, (deps, arts)) in included.iter_mut().zip(edges) {
        pj.deps = dedup(deps);
        pj.artifacts_from = dedup(arts);
    }
    if !cx.only_jobs.is_empty() {
        included = restrict(included, &cx.only_jobs)?;
    }
    if included.is_empty() {
        return Err(PlanError::Empty);
    }
    Ok(Plan {
        jobs: included,
        excluded,
    })
}

fn dedup(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v.dedup();
    v
}

/// Keeps the named jobs and, transitively, what they depend on; renumbers edges.
fn restrict(jobs: Vec<PlannedJob>, only: &[String]) -> Result<Vec<PlannedJob>, PlanError> {
    let mut keep: HashSet<usize> = HashSet::new();
    let mut todo: Vec<usize> = Vec::new();
    for name in only {
        let ids: Vec<usize> = jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.job.name == *name || j.job.base == *name)
            .map(|(i, _)| i)
            .collect();
        if ids.is_empty() {
            let names: Vec<&str> = jobs.iter().map(|j| j.job.name.as_str()).collect();
            return Err(PlanError::UnknownJob(name.clone(), names.join(", ")));
        }
        todo.extend(ids);
    }
    while let Some(i) = todo.pop() {
        if keep.insert(i) {
            todo.extend(jobs[i].deps.iter().copied());
        }
    }
    let mut map = HashMap::new();
    let mut out = Vec::new();
    for (i, j) in jobs.into_iter().enumerate() {
        if keep.contains(&i) {
            map.insert(i, out.len());
            out.push(j);
        }
    }
    for j in &mut out {
        j.deps = j.deps.iter().filter_map(|d| map.get(d).copied()).collect();
        j.artifacts_from = j.artifacts_from.iter().filter_map(|d| map.get(d).copied()).collect();
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done(JobStatus, bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Start,
    Skip(JobStatus, String),
}

/// What the scheduler decided about a job that did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub job: usize,
    pub status: JobStatus,
    pub reason: String,
}

/// The stop-the-line scheduler. Feed it finished jobs; ask it which jobs may start.
#[derive(Debug, Clone)]
pub struct Schedule {
    deps: Vec<Vec<usize>>,
    /// Transitive dependencies of each job.
    ancestors: Vec<Vec<usize>>,
    by_needs: Vec<bool>,
    when: Vec<When>,
    names: Vec<String>,
    state: Vec<State>,
    /// The job that stopped the line, if any.
    stopped_by: Option<usize>,
}

impl Schedule {
    pub fn new(plan: &Plan) -> Schedule {
        let deps: Vec<Vec<usize>> = plan.jobs.iter().map(|j| j.deps.clone()).collect();
        let ancestors = (0..deps.len())
            .map(|i| {
                let mut seen = vec![false; deps.len()];
                let mut todo = deps[i].clone();
                while let Some(d) = todo.pop() {
                    if d < seen.len() && !seen[d] {
                        seen[d] = true;
                        todo.extend(deps[d].iter().copied());
                    }
                }
                (0..deps.len()).filter(|k| seen[*k]).collect()
            })
            .collect();
        Schedule {
            ancestors,
            deps,
            by_needs: plan.jobs.iter().map(|j| j.by_needs).collect(),
            when: plan.jobs.iter().map(|j| j.when).collect(),
            names: plan.jobs.iter().map(|j| j.job.name.clone()).collect(),
            state: vec![State::Waiting; plan.jobs.len()],
            stopped_by: None,
        }
    }

    /// Resolves every job that can be decided without running (skips, manual jobs) and returns
    /// them, then the jobs that may start now, in plan order.
    pub fn poll(&mut self) -> (Vec<Skip>, Vec<usize>) {
        let mut skips = Vec::new();
        loop {
            let mut changed = false;
            for i in 0..self.state.len() {
                if self.state[i] != State::Waiting || !self.deps_done(i) {
                    continue;
                }
                if let Decision::Skip(status, reason) = self.decide(i) {
                    self.state[i] = State::Done(status, true);
                    skips.push(Skip { job: i, status, reason });
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let ready = (0..self.state.len())
            .filter(|i| self.state[*i] == State::Waiting && self.deps_done(*i) && self.decide(*i) == Decision::Start)
            .collect();
        (skips, ready)
    }

    fn deps_done(&self, i: usize) -> bool {
        self.deps[i].iter().all(|d| matches!(self.state[*d], State::Done(..)))
    }

    /// What to do with a waiting job whose dependencies are all done.
    fn decide(&self, i: usize) -> Decision {
        let stopped = self.stopped_by.map(|s| self.names[s].clone());
        match self.when[i] {
            When::Manual => Decision::Skip(JobStatus::Manual, "manual job: start it by hand".into()),
            When::Always => Decision::Start,
            // As in GitLab: runs when a job it waits for (by stage or `needs`, transitively)
            // failed. Deterministic: only finished ancestors count, never a concurrent job.
            When::OnFailure => {
                let failed = self.ancestors[i]
                    .iter()
                    .any(|a| matches!(self.state[*a], State::Done(JobStatus::Failed, false)));
                if failed {
                    Decision::Start
                } else {
                    Decision::Skip(JobStatus::Skipped, "nothing it waits for failed".into())
                }
            }
            When::OnSuccess | When::Never => {
                if let Some(s) = stopped {
                    return Decision::Skip(JobStatus::Skipped, format!("the line stopped: `{s}` failed"));
                }
                if self.by_needs[i] {
                    for d in &self.deps[i] {
                        if let State::Done(st, _) = self.state[*d]
                            && matches!(st, JobStatus::Skipped | JobStatus::Manual | JobStatus::Cancelled)
                        {
                            return Decision::Skip(
                                JobStatus::Skipped,
                                format!("needed job `{}` did not run", self.names[*d]),
                            );
                        }
                    }
                }
                Decision::Start
            }
        }
    }

    pub fn start(&mut self, i: usize) {
        self.state[i] = State::Running;
    }

    /// Records a finished job. A failure that is not allowed stops the line.
    pub fn finish(&mut self, i: usize, status: JobStatus, allow_failure: bool) {
        self.state[i] = State::Done(status, allow_failure);
        if status == JobStatus::Failed && !allow_failure && self.stopped_by.is_none() {
            self.stopped_by = Some(i);
        }
    }

    /// Cancels every job that has not started; returns them.
    pub fn cancel_waiting(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, s) in self.state.iter_mut().enumerate() {
            if *s == State::Waiting {
                *s = State::Done(JobStatus::Cancelled, true);
                out.push(i);
            }
        }
        out
    }

    pub fn stopped_by(&self) -> Option<usize> {
        self.stopped_by
    }

    pub fn all_done(&self) -> bool {
        self.state.iter().all(|s| matches!(s, State::Done(..)))
    }
}

/// The longest chain of dependent jobs by duration: the run's critical path, first job first.
pub fn critical_path(plan: &Plan, durations: &[Duration]) -> Vec<usize> {
    let n = plan.jobs.len();
    let mut finish: Vec<Option<(Duration, Option<usize>)>> = vec![None; n];
    fn visit(
        i: usize,
        plan: &Plan,
        d: &[Duration],
        memo: &mut Vec<Option<(Duration, Option<usize>)>>,
        depth: usize,
    ) -> Duration {
        if let Some((f, _)) = memo[i] {
            return f;
        }
        let mut best: (Duration, Option<usize>) = (Duration::ZERO, None);
        if depth < 10_000 {
            for &dep in &plan.jobs[i].deps {
                let f = visit(dep, plan, d, memo, depth + 1);
                if f >= best.0 {
                    best = (f, Some(dep));
                }
            }
        }
        let total = best.0 + d.get(i).copied().unwrap_or_default();
        memo[i] = Some((total, best.1));
        total
    }
    let mut end = None;
    let mut longest = Duration::ZERO;
    for i in 0..n {
        let f = visit(i, plan, durations, &mut finish, 0);
        if end.is_none() || f > longest {
            longest = f;
            end = Some(i);
        }
    }
    let mut path = Vec::new();
    let mut cur = end;
    while let Some(i) = cur {
        path.push(i);
        cur = finish[i].and_then(|(_, p)| p);
    }
    path.reverse();
    path
}
