//! Pipeline + the facts of one commit → [`Plan`]: which jobs run, with what `when`, after which
//! jobs, and with whose artifacts. [`Schedule`] then decides, as jobs finish, which may start —
//! the stop-the-line rule lives here, with no clock and no I/O.

use crate::expr::Vars;
use crate::glob::GlobList;
use crate::limits::{MAX_JOBS, MAX_NEED_EDGES};
use crate::model::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Deref;
use std::sync::Arc;
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

/// Jobs of a plan (indices into [`Plan::jobs`], ascending), shared between the jobs that have
/// the same set: every job of a stage takes the artifacts of every earlier stage, and one copy
/// per job would grow with the square of the job count. Reads like a `[usize]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSet(Arc<[usize]>);

impl Deref for JobSet {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        &self.0
    }
}

impl From<Vec<usize>> for JobSet {
    fn from(v: Vec<usize>) -> JobSet {
        JobSet(v.into())
    }
}

impl<'a> IntoIterator for &'a JobSet {
    type Item = &'a usize;
    type IntoIter = std::slice::Iter<'a, usize>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<const N: usize> PartialEq<[usize; N]> for JobSet {
    fn eq(&self, other: &[usize; N]) -> bool {
        *self.0 == other[..]
    }
}

impl PartialEq<Vec<usize>> for JobSet {
    fn eq(&self, other: &Vec<usize>) -> bool {
        *self.0 == other[..]
    }
}

#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub job: Job,
    pub when: When,
    pub allow_failure: bool,
    /// Variables added by the matching rule.
    pub rule_variables: Vec<(String, String)>,
    /// The jobs its `needs` name (ascending), when `by_needs`. A job ordered by stage waits
    /// for every job of an earlier stage (smaller `stage_index`); those are not listed here,
    /// as that list grows with the square of the job count: [`Plan::waits_for`] lists them.
    pub deps: Vec<usize>,
    /// Whether it waits for its `needs` (true) or for every earlier stage (false).
    pub by_needs: bool,
    /// Jobs whose artifacts are placed into this job's workspace: those its `needs` or
    /// `dependencies` name, or (by default) the jobs of earlier stages that declare `artifacts`.
    pub artifacts_from: JobSet,
    pub stage_index: usize,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub jobs: Vec<PlannedJob>,
    /// Jobs left out by their rules, with the reason.
    pub excluded: Vec<(String, String)>,
    /// The variables of the `workflow: rules` entry that made the run (GitLab: over the
    /// pipeline's `variables`, under each job's).
    pub variables: Vec<(String, String)>,
}

impl Plan {
    /// Every job that job `i` waits for directly, ascending: its `needs`, or every job of an
    /// earlier stage.
    pub fn waits_for(&self, i: usize) -> Vec<usize> {
        match self.jobs.get(i) {
            None => Vec::new(),
            Some(j) if j.by_needs => j.deps.clone(),
            Some(j) => (0..self.jobs.len())
                .filter(|k| self.jobs.get(*k).is_some_and(|o| o.stage_index < j.stage_index))
                .collect(),
        }
    }
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
    #[error("`workflow: rules` make no run for this commit ({0})")]
    Workflow(String),
    /// A pipeline beyond [`crate::limits`] (only one not made by [`crate::parse`], which
    /// refuses those with positioned diagnostics).
    #[error("{0}")]
    TooLarge(String),
}

/// A job's variables over the run's and the pipeline's, without copying the latter per job.
struct Layered<'a> {
    job: HashMap<&'a str, &'a str>,
    base: &'a HashMap<String, String>,
}

impl Vars for Layered<'_> {
    fn var(&self, name: &str) -> Option<&str> {
        self.job.get(name).copied().or_else(|| self.base.var(name))
    }
}

fn rule_matches(rule: &Rule, vars: &Layered<'_>, cx: &PlanContext) -> bool {
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

/// Job name (and matrix base name) → the jobs so named, ascending.
fn name_index(jobs: &[PlannedJob]) -> HashMap<&str, Vec<usize>> {
    let mut index: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, j) in jobs.iter().enumerate() {
        index.entry(j.job.name.as_str()).or_default().push(i);
        if j.job.base != j.job.name {
            index.entry(j.job.base.as_str()).or_default().push(i);
        }
    }
    index
}

/// Makes the plan for one commit. Linear in the jobs and their `needs`.
pub fn plan(p: &Pipeline, cx: &PlanContext) -> Result<Plan, PlanError> {
    if p.jobs.len() > MAX_JOBS {
        return Err(PlanError::TooLarge(format!(
            "the pipeline has {} jobs; the limit is {MAX_JOBS}",
            p.jobs.len()
        )));
    }
    let mut stage_of: HashMap<&str, usize> = HashMap::new();
    for (i, s) in p.stages.iter().enumerate() {
        stage_of.entry(s.as_str()).or_insert(i);
    }
    let mut base = cx.variables.clone();
    for (k, v) in &p.variables {
        base.insert(k.clone(), v.clone());
    }
    let mut workflow_variables = Vec::new();
    if !p.workflow.is_empty() {
        let vars = Layered {
            job: HashMap::new(),
            base: &base,
        };
        match p.workflow.iter().find(|r| rule_matches(r, &vars, cx)) {
            None => return Err(PlanError::Workflow("no rule matched".into())),
            Some(r) if r.when == Some(When::Never) => {
                return Err(PlanError::Workflow(format!(
                    "the rule at line {} says `when: never`",
                    r.pos.line
                )));
            }
            Some(r) => {
                for (k, v) in &r.variables {
                    base.insert(k.clone(), v.clone());
                }
                workflow_variables.clone_from(&r.variables);
            }
        }
    }
    let mut included: Vec<PlannedJob> = Vec::new();
    let mut excluded = Vec::new();
    for job in &p.jobs {
        // GitLab's defaults: a manual job may fail (it does not block what comes after it)
        // unless it says otherwise; one made manual by a rule blocks unless it says it may fail.
        let (when, allow_failure, rule_variables) = if job.rules.is_empty() {
            (
                job.when,
                job.allow_failure.unwrap_or(job.when == When::Manual),
                Vec::new(),
            )
        } else {
            let vars = Layered {
                job: job.variables.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                base: &base,
            };
            match job.rules.iter().find(|r| rule_matches(r, &vars, cx)) {
                None => {
                    excluded.push((job.name.clone(), "no rule matched".to_string()));
                    continue;
                }
                Some(r) => (
                    r.when.unwrap_or(job.when),
                    r.allow_failure.or(job.allow_failure).unwrap_or(false),
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
            artifacts_from: JobSet::default(),
            stage_index: stage_of.get(job.stage.as_str()).copied().unwrap_or(0),
        });
    }
    // Resolve `needs` among the included jobs.
    let mut need_arts: Vec<Vec<usize>> = vec![Vec::new(); included.len()];
    let mut resolved: Vec<Vec<usize>> = vec![Vec::new(); included.len()];
    let mut edges = 0usize;
    {
        let index = name_index(&included);
        for (i, pj) in included.iter().enumerate() {
            let Some(needs) = &pj.job.needs else { continue };
            let mut deps = Vec::new();
            let mut arts = Vec::new();
            for n in needs {
                let ids: Vec<usize> = index
                    .get(n.job.as_str())
                    .map(|v| v.iter().copied().filter(|x| *x != i).collect())
                    .unwrap_or_default();
                if ids.is_empty() {
                    if n.optional {
                        continue;
                    }
                    return Err(PlanError::NeedExcluded {
                        job: pj.job.name.clone(),
                        need: n.job.clone(),
                    });
                }
                edges += ids.len();
                if edges > MAX_NEED_EDGES {
                    return Err(PlanError::TooLarge(format!(
                        "the jobs' `needs` name more than {MAX_NEED_EDGES} jobs in all; the limit is {MAX_NEED_EDGES}"
                    )));
                }
                if n.artifacts {
                    arts.extend(ids.iter().copied());
                }
                deps.extend(ids);
            }
            if let Some(slot) = resolved.get_mut(i) {
                *slot = dedup(deps);
            }
            if let Some(slot) = need_arts.get_mut(i) {
                *slot = dedup(arts);
            }
        }
    }
    for (pj, deps) in included.iter_mut().zip(resolved) {
        pj.deps = deps;
    }
    if !cx.only_jobs.is_empty() {
        let (kept, map) = restrict(included, &cx.only_jobs)?;
        included = kept;
        // A manual job asked for by name is played.
        for pj in &mut included {
            if pj.when == When::Manual && cx.only_jobs.contains(&pj.job.name) {
                pj.when = When::OnSuccess;
            }
        }
        let mut arts = vec![Vec::new(); included.len()];
        for (old, new) in map.iter().enumerate() {
            if let (Some(new), Some(a)) = (new, need_arts.get(old))
                && let Some(slot) = arts.get_mut(*new)
            {
                *slot = a.iter().filter_map(|d| map.get(*d).copied().flatten()).collect();
            }
        }
        need_arts = arts;
    }
    if included.is_empty() {
        return Err(PlanError::Empty);
    }
    let arts = artifact_sources(&included, need_arts);
    for (pj, a) in included.iter_mut().zip(arts) {
        pj.artifacts_from = a;
    }
    Ok(Plan {
        jobs: included,
        excluded,
        variables: workflow_variables,
    })
}

/// Each job's `artifacts_from`: its `dependencies` (jobs so named in its stage or earlier), or
/// the `needs` that take artifacts, or every job of an earlier stage that declares
/// `artifacts` — one shared list per stage.
fn artifact_sources(jobs: &[PlannedJob], need_arts: Vec<Vec<usize>>) -> Vec<JobSet> {
    let index = name_index(jobs);
    // Jobs that declare artifacts, by stage then position.
    let mut producers: Vec<usize> = (0..jobs.len())
        .filter(|k| jobs.get(*k).is_some_and(|j| j.job.artifacts.is_some()))
        .collect();
    producers.sort_by_key(|k| (jobs.get(*k).map_or(0, |j| j.stage_index), *k));
    let mut per_stage: BTreeMap<usize, JobSet> = BTreeMap::new();
    for j in jobs {
        if !j.by_needs && j.job.dependencies.is_none() {
            per_stage.entry(j.stage_index).or_default();
        }
    }
    // Stages ascending: each list is the previous one plus the producers in between.
    let mut acc: Vec<usize> = Vec::new();
    let mut next = 0;
    for (stage, set) in per_stage.iter_mut() {
        let mut chunk = Vec::new();
        while let Some(&k) = producers.get(next) {
            if jobs.get(k).map_or(0, |j| j.stage_index) >= *stage {
                break;
            }
            chunk.push(k);
            next += 1;
        }
        if !chunk.is_empty() {
            chunk.sort_unstable();
            acc = merge(&acc, &chunk);
        }
        *set = JobSet::from(acc.clone());
    }
    jobs.iter()
        .enumerate()
        .zip(need_arts)
        .map(|((i, j), arts)| {
            if let Some(only) = &j.job.dependencies {
                let mut v: Vec<usize> = only
                    .iter()
                    .filter_map(|d| index.get(d.as_str()))
                    .flatten()
                    .copied()
                    .filter(|k| *k != i && jobs.get(*k).is_some_and(|o| o.stage_index <= j.stage_index))
                    .collect();
                v = dedup(v);
                JobSet::from(v)
            } else if j.by_needs {
                JobSet::from(arts)
            } else {
                per_stage.get(&j.stage_index).cloned().unwrap_or_default()
            }
        })
        .collect()
}

/// Two ascending lists as one.
fn merge(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut x, mut y) = (a.iter().peekable(), b.iter().peekable());
    while let (Some(&&p), Some(&&q)) = (x.peek(), y.peek()) {
        if p <= q {
            out.push(p);
            x.next();
        } else {
            out.push(q);
            y.next();
        }
    }
    out.extend(x);
    out.extend(y);
    out
}

fn dedup(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v.dedup();
    v
}

/// Keeps the named jobs and, transitively, what they wait for; renumbers `deps`. Returns the
/// kept jobs and, for each old index, its new one.
fn restrict(jobs: Vec<PlannedJob>, only: &[String]) -> Result<(Vec<PlannedJob>, Vec<Option<usize>>), PlanError> {
    let index = name_index(&jobs);
    let mut keep = vec![false; jobs.len()];
    let mut todo: Vec<usize> = Vec::new();
    for name in only {
        match index.get(name.as_str()) {
            Some(ids) => todo.extend(ids.iter().copied()),
            None => {
                let names: Vec<&str> = jobs.iter().map(|j| j.job.name.as_str()).collect();
                return Err(PlanError::UnknownJob(name.clone(), names.join(", ")));
            }
        }
    }
    // A job ordered by stage keeps every job of the earlier stages: `by_stage[..cut]` are
    // queued already, so each job is queued at most twice.
    let mut by_stage: Vec<usize> = (0..jobs.len()).collect();
    by_stage.sort_by_key(|k| (jobs.get(*k).map_or(0, |j| j.stage_index), *k));
    let mut cut = 0;
    while let Some(i) = todo.pop() {
        let Some(j) = jobs.get(i) else { continue };
        if keep.get(i).copied().unwrap_or(true) {
            continue;
        }
        if let Some(k) = keep.get_mut(i) {
            *k = true;
        }
        if j.by_needs {
            todo.extend(j.deps.iter().copied());
        } else {
            while let Some(&k) = by_stage.get(cut) {
                if jobs.get(k).map_or(0, |o| o.stage_index) >= j.stage_index {
                    break;
                }
                todo.push(k);
                cut += 1;
            }
        }
    }
    let mut map: Vec<Option<usize>> = vec![None; jobs.len()];
    let mut out = Vec::new();
    for (i, j) in jobs.into_iter().enumerate() {
        if keep.get(i).copied().unwrap_or(false) {
            if let Some(m) = map.get_mut(i) {
                *m = Some(out.len());
            }
            out.push(j);
        }
    }
    for j in &mut out {
        j.deps = j.deps.iter().filter_map(|d| map.get(*d).copied().flatten()).collect();
    }
    Ok((out, map))
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

/// Each job's stage as a dense rank (0 = the first stage that has jobs), and the number of ranks.
fn ranks(plan: &Plan) -> (Vec<usize>, usize) {
    let mut stages: Vec<usize> = plan.jobs.iter().map(|j| j.stage_index).collect();
    stages.sort_unstable();
    stages.dedup();
    let rank = plan
        .jobs
        .iter()
        .map(|j| stages.binary_search(&j.stage_index).unwrap_or(0))
        .collect();
    (rank, stages.len())
}

/// The stop-the-line scheduler. Feed it finished jobs; ask it which jobs may start.
///
/// Every operation costs what it changes (plus a logarithm), not the size of the plan: a job
/// ordered by stage waits for a per-stage count of unfinished jobs, not for a list of them,
/// and "an ancestor failed" is pushed forward once when a job fails.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// `needs` of each `by_needs` job (empty for jobs ordered by stage).
    deps: Vec<Vec<usize>>,
    /// The `by_needs` jobs that need each job.
    needed_by: Vec<Vec<usize>>,
    by_needs: Vec<bool>,
    /// Stage ranks, and the jobs ordered by stage in each rank.
    rank: Vec<usize>,
    stage_jobs: Vec<Vec<usize>>,
    /// Unfinished jobs per rank, and the ranks that still have some.
    unfinished: Vec<usize>,
    incomplete: BTreeSet<usize>,
    /// Unfinished `needs` of each job, and its `needs` that did not run (skipped, manual, cancelled).
    pending: Vec<usize>,
    not_run: Vec<usize>,
    /// Whether a (transitive) dependency failed, and the first rank whose jobs ordered by
    /// stage have all been marked so.
    tainted: Vec<bool>,
    tainted_from: usize,
    /// The same for a manual job that may not fail (GitLab's blocking manual job): what comes
    /// after it waits for a person; `blocker` is the first such job.
    blocked: Vec<bool>,
    blocked_from: usize,
    blocker: Option<usize>,
    when: Vec<When>,
    allow_failure: Vec<bool>,
    names: Vec<String>,
    state: Vec<State>,
    /// Waiting jobs whose dependencies are all finished.
    ready: BTreeSet<usize>,
    done: usize,
    /// The job that stopped the line, if any.
    stopped_by: Option<usize>,
}

fn did_not_run(s: State) -> bool {
    matches!(
        s,
        State::Done(JobStatus::Skipped | JobStatus::Manual | JobStatus::Cancelled, _)
    )
}

fn stops(s: State) -> bool {
    s == State::Done(JobStatus::Failed, false)
}

fn blocks(s: State) -> bool {
    s == State::Done(JobStatus::Manual, false)
}

impl Schedule {
    pub fn new(plan: &Plan) -> Schedule {
        let n = plan.jobs.len();
        let (rank, ranks) = ranks(plan);
        let by_needs: Vec<bool> = plan.jobs.iter().map(|j| j.by_needs).collect();
        let deps: Vec<Vec<usize>> = plan
            .jobs
            .iter()
            .map(|j| {
                if j.by_needs {
                    j.deps.iter().copied().filter(|d| *d < n).collect()
                } else {
                    Vec::new()
                }
            })
            .collect();
        let mut needed_by = vec![Vec::new(); n];
        for (i, ds) in deps.iter().enumerate() {
            for d in ds {
                if let Some(v) = needed_by.get_mut(*d) {
                    v.push(i);
                }
            }
        }
        let mut stage_jobs = vec![Vec::new(); ranks];
        let mut unfinished = vec![0usize; ranks];
        for (i, r) in rank.iter().enumerate() {
            if let Some(u) = unfinished.get_mut(*r) {
                *u += 1;
            }
            if !by_needs.get(i).copied().unwrap_or(true)
                && let Some(v) = stage_jobs.get_mut(*r)
            {
                v.push(i);
            }
        }
        let mut s = Schedule {
            pending: deps.iter().map(Vec::len).collect(),
            not_run: vec![0; n],
            tainted: vec![false; n],
            tainted_from: ranks,
            blocked: vec![false; n],
            blocked_from: ranks,
            blocker: None,
            allow_failure: plan.jobs.iter().map(|j| j.allow_failure).collect(),
            deps,
            needed_by,
            by_needs,
            rank,
            stage_jobs,
            unfinished,
            incomplete: (0..ranks).collect(),
            when: plan.jobs.iter().map(|j| j.when).collect(),
            names: plan.jobs.iter().map(|j| j.job.name.clone()).collect(),
            state: vec![State::Waiting; n],
            ready: BTreeSet::new(),
            done: 0,
            stopped_by: None,
        };
        s.ready = (0..n).filter(|i| s.deps_done(*i)).collect();
        s
    }

    /// The first rank with an unfinished job (the number of ranks when there is none).
    fn frontier(&self) -> usize {
        self.incomplete.first().copied().unwrap_or(self.stage_jobs.len())
    }

    fn deps_done(&self, i: usize) -> bool {
        if self.by_needs.get(i).copied().unwrap_or(false) {
            self.pending.get(i) == Some(&0)
        } else {
            self.rank.get(i).is_some_and(|r| *r <= self.frontier())
        }
    }

    /// Changes job `i`'s state and everything that follows from it; returns the jobs that this
    /// made ready (waiting, every dependency finished).
    fn set(&mut self, i: usize, new: State) -> Vec<usize> {
        let mut newly = Vec::new();
        let Some(&old) = self.state.get(i) else {
            return newly;
        };
        if old == new {
            return newly;
        }
        if let Some(s) = self.state.get_mut(i) {
            *s = new;
        }
        if old == State::Waiting {
            self.ready.remove(&i);
        }
        let (was, is) = (matches!(old, State::Done(..)), matches!(new, State::Done(..)));
        let dependents = self.needed_by.get(i).cloned().unwrap_or_default();
        if was != is {
            if is {
                self.done += 1;
            } else {
                self.done -= 1;
            }
            for &r in &dependents {
                let Some(p) = self.pending.get_mut(r) else { continue };
                if is {
                    *p = p.saturating_sub(1);
                    if *p == 0 && self.state.get(r) == Some(&State::Waiting) {
                        self.ready.insert(r);
                        newly.push(r);
                    }
                } else {
                    *p += 1;
                    if *p == 1 {
                        self.ready.remove(&r);
                    }
                }
            }
            let before = self.frontier();
            let r = self.rank.get(i).copied().unwrap_or(0);
            if let Some(u) = self.unfinished.get_mut(r) {
                if is {
                    *u = u.saturating_sub(1);
                    if *u == 0 {
                        self.incomplete.remove(&r);
                    }
                } else {
                    *u += 1;
                    if *u == 1 {
                        self.incomplete.insert(r);
                    }
                }
            }
            let after = self.frontier();
            // Jobs ordered by stage in ranks (before, after] became ready, or (after, before]
            // stopped being ready.
            let (lo, hi) = (before.min(after), before.max(after));
            for rank in lo + 1..=hi {
                for &k in self.stage_jobs.get(rank).map_or(&[][..], Vec::as_slice) {
                    if self.state.get(k) != Some(&State::Waiting) {
                        continue;
                    }
                    if after > before {
                        self.ready.insert(k);
                        newly.push(k);
                    } else {
                        self.ready.remove(&k);
                    }
                }
            }
        }
        if did_not_run(old) != did_not_run(new) {
            for &r in &dependents {
                if let Some(c) = self.not_run.get_mut(r) {
                    if did_not_run(new) {
                        *c += 1;
                    } else {
                        *c = c.saturating_sub(1);
                    }
                }
            }
        }
        if blocks(new) && !blocks(old) {
            self.blocker.get_or_insert(i);
            self.mark_from(i, true);
        }
        if stops(old) != stops(new) {
            if stops(new) {
                self.taint_from(i);
            } else {
                // A failure recorded again as something else: rare, so recount everything.
                self.tainted.iter_mut().for_each(|t| *t = false);
                self.tainted_from = self.stage_jobs.len();
                for k in 0..self.state.len() {
                    if self.state.get(k).is_some_and(|s| stops(*s)) {
                        self.taint_from(k);
                    }
                }
            }
        }
        newly
    }

    /// Marks every job that (transitively) waits for `f` as having a failed dependency.
    fn taint_from(&mut self, f: usize) {
        self.mark_from(f, false);
    }

    /// Marks every job that (transitively) waits for `f`: as blocked by a manual job
    /// (`blocked`), or as having a failed dependency.
    fn mark_from(&mut self, f: usize, blocked: bool) {
        let (marks, marked_from) = if blocked {
            (&mut self.blocked, &mut self.blocked_from)
        } else {
            (&mut self.tainted, &mut self.tainted_from)
        };
        let mut todo = vec![f];
        while let Some(x) = todo.pop() {
            for &y in self.needed_by.get(x).map_or(&[][..], Vec::as_slice) {
                if let Some(t) = marks.get_mut(y)
                    && !*t
                {
                    *t = true;
                    todo.push(y);
                }
            }
            let first = self.rank.get(x).copied().unwrap_or(0) + 1;
            for rank in first..*marked_from {
                for &y in self.stage_jobs.get(rank).map_or(&[][..], Vec::as_slice) {
                    if let Some(t) = marks.get_mut(y)
                        && !*t
                    {
                        *t = true;
                        todo.push(y);
                    }
                }
            }
            *marked_from = (*marked_from).min(first);
        }
    }

    /// Resolves every job that can be decided without running (skips, manual jobs) and returns
    /// them, then the jobs that may start now, in plan order.
    pub fn poll(&mut self) -> (Vec<Skip>, Vec<usize>) {
        let mut skips = Vec::new();
        // Passes in plan order, as if every waiting job were looked at again until nothing
        // changes: a job made ready by a skip is decided in the same pass when it comes later
        // in the plan, in the next pass otherwise. A job that may start keeps that decision
        // within a poll (skips never fail a job), so it is not looked at again.
        let mut this: BTreeSet<usize> = self.ready.clone();
        let mut next: BTreeSet<usize> = BTreeSet::new();
        loop {
            let mut changed = false;
            while let Some(i) = this.pop_first() {
                if self.state.get(i) != Some(&State::Waiting) || !self.deps_done(i) {
                    continue;
                }
                if let Decision::Skip(status, reason) = self.decide(i) {
                    // A manual job that may not fail holds what comes after it.
                    let allowed = status != JobStatus::Manual || self.allow_failure.get(i).copied().unwrap_or(true);
                    for k in self.set(i, State::Done(status, allowed)) {
                        if k > i {
                            this.insert(k);
                        } else {
                            next.insert(k);
                        }
                    }
                    skips.push(Skip { job: i, status, reason });
                    changed = true;
                }
            }
            if !changed || next.is_empty() {
                break;
            }
            this = std::mem::take(&mut next);
        }
        let ready = self
            .ready
            .iter()
            .copied()
            .filter(|i| self.decide(*i) == Decision::Start)
            .collect();
        (skips, ready)
    }

    /// What to do with a waiting job whose dependencies are all done.
    fn decide(&self, i: usize) -> Decision {
        if self.blocked.get(i).copied().unwrap_or(false) {
            let name = self.blocker.and_then(|b| self.names.get(b)).map_or("", String::as_str);
            return Decision::Skip(
                JobStatus::Skipped,
                format!("waits for the manual job `{name}` (allow_failure: false): play it"),
            );
        }
        match self.when.get(i).copied().unwrap_or(When::OnSuccess) {
            When::Manual => Decision::Skip(JobStatus::Manual, "manual job: start it by hand".into()),
            When::Always => Decision::Start,
            // As in GitLab: runs when a job it waits for (by stage or `needs`, transitively)
            // failed. Deterministic: only finished ancestors count, never a concurrent job.
            When::OnFailure => {
                if self.tainted.get(i).copied().unwrap_or(false) {
                    Decision::Start
                } else {
                    Decision::Skip(JobStatus::Skipped, "nothing it waits for failed".into())
                }
            }
            When::OnSuccess | When::Never => {
                if let Some(s) = self.stopped_by {
                    let name = self.names.get(s).map_or("", String::as_str);
                    return Decision::Skip(JobStatus::Skipped, format!("the line stopped: `{name}` failed"));
                }
                if self.not_run.get(i).copied().unwrap_or(0) > 0 {
                    let deps = self.deps.get(i).map_or(&[][..], Vec::as_slice);
                    if let Some(d) = deps
                        .iter()
                        .find(|d| self.state.get(**d).is_some_and(|s| did_not_run(*s)))
                    {
                        let name = self.names.get(*d).map_or("", String::as_str);
                        return Decision::Skip(JobStatus::Skipped, format!("needed job `{name}` did not run"));
                    }
                }
                Decision::Start
            }
        }
    }

    pub fn start(&mut self, i: usize) {
        self.set(i, State::Running);
    }

    /// Records a finished job. A failure that is not allowed stops the line.
    pub fn finish(&mut self, i: usize, status: JobStatus, allow_failure: bool) {
        if i >= self.state.len() {
            return;
        }
        self.set(i, State::Done(status, allow_failure));
        if status == JobStatus::Failed && !allow_failure && self.stopped_by.is_none() {
            self.stopped_by = Some(i);
        }
    }

    /// Cancels every job that has not started; returns them.
    pub fn cancel_waiting(&mut self) -> Vec<usize> {
        let waiting: Vec<usize> = (0..self.state.len())
            .filter(|i| self.state.get(*i) == Some(&State::Waiting))
            .collect();
        for &i in &waiting {
            self.set(i, State::Done(JobStatus::Cancelled, true));
        }
        waiting
    }

    pub fn stopped_by(&self) -> Option<usize> {
        self.stopped_by
    }

    /// The first manual job that may not fail and so held the jobs after it: the run waits
    /// for a person (GitLab's blocked pipeline).
    pub fn blocked_by(&self) -> Option<usize> {
        self.blocker
    }

    pub fn all_done(&self) -> bool {
        self.done == self.state.len()
    }
}

/// The longest chain of dependent jobs by duration: the run's critical path, first job first.
/// Linear: a job ordered by stage looks at one running maximum per stage, not at every job of
/// the earlier stages.
pub fn critical_path(plan: &Plan, durations: &[Duration]) -> Vec<usize> {
    let n = plan.jobs.len();
    let (rank, ranks) = ranks(plan);
    let mut by_rank: Vec<Vec<usize>> = vec![Vec::new(); ranks];
    for (i, r) in rank.iter().enumerate() {
        if let Some(v) = by_rank.get_mut(*r) {
            v.push(i);
        }
    }
    // Nodes 0..n are jobs; n + r is "every job of a rank before r", whose value is the best
    // (latest finish, then highest index) of them. A job's value: its finish and the job
    // before it on its longest chain.
    let preds = |node: usize| -> Vec<usize> {
        if let Some(j) = plan.jobs.get(node) {
            if j.by_needs {
                j.deps.iter().copied().filter(|d| *d < n).collect()
            } else {
                vec![n + rank.get(node).copied().unwrap_or(0)]
            }
        } else {
            let r = node - n;
            if r == 0 {
                Vec::new()
            } else {
                let mut v = vec![n + r - 1];
                v.extend(by_rank.get(r - 1).map_or(&[][..], Vec::as_slice));
                v
            }
        }
    };
    let total = n + ranks + 1;
    let mut value: Vec<Option<(Duration, Option<usize>)>> = vec![None; total];
    let mut state = vec![0u8; total]; // 0 new, 1 on the stack, 2 done
    for root in 0..n {
        if state.get(root) != Some(&0) {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>, usize)> = vec![(root, preds(root), 0)];
        if let Some(s) = state.get_mut(root) {
            *s = 1;
        }
        while let Some((node, ps, next)) = stack.last_mut() {
            if let Some(&p) = ps.get(*next) {
                *next += 1;
                if state.get(p) == Some(&0) {
                    if let Some(s) = state.get_mut(p) {
                        *s = 1;
                    }
                    let pp = preds(p);
                    stack.push((p, pp, 0));
                }
                continue;
            }
            // Every predecessor is done (or on a cycle, which counts as nothing).
            let node = *node;
            let ps = std::mem::take(ps);
            stack.pop();
            let mut best: (Duration, Option<usize>) = (Duration::ZERO, None);
            for p in ps {
                let Some(Some((f, via))) = value.get(p).copied() else {
                    continue;
                };
                // The job a predecessor stands for: itself, or a barrier's best job.
                let cand = if p < n { Some(p) } else { via };
                let Some(c) = cand else { continue };
                // A job takes the last of its equally long `needs` (they are ascending); a
                // barrier the highest-numbered of its equally long jobs: both give what
                // looking at every dependency in plan order gives.
                let better = match best.1 {
                    None => true,
                    Some(_) if node < n => f >= best.0,
                    Some(b) => f > best.0 || (f == best.0 && c > b),
                };
                if better {
                    best = (f, Some(c));
                }
            }
            let v = if node < n {
                (best.0 + durations.get(node).copied().unwrap_or_default(), best.1)
            } else {
                best
            };
            if let Some(slot) = value.get_mut(node) {
                *slot = Some(v);
            }
            if let Some(s) = state.get_mut(node) {
                *s = 2;
            }
        }
    }
    let mut end = None;
    let mut longest = Duration::ZERO;
    for i in 0..n {
        let f = value.get(i).copied().flatten().map_or(Duration::ZERO, |v| v.0);
        if end.is_none() || f > longest {
            longest = f;
            end = Some(i);
        }
    }
    let mut path = Vec::new();
    let mut cur = end;
    while let Some(i) = cur {
        if path.len() > n {
            break;
        }
        path.push(i);
        cur = value.get(i).copied().flatten().and_then(|(_, p)| p);
    }
    path.reverse();
    path
}
