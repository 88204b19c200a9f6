//! The scheduler and `critical_path` against a reference model: the first, quadratic
//! implementation (an ancestor list per job, every dependency looked at on every poll), kept
//! here verbatim in spirit. Random pipelines, random outcomes: both must decide the same skips,
//! with the same reasons, and the same ready jobs in the same order, at every step.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic: that is how they fail

use proptest::prelude::*;
use std::fmt::Write;
use std::time::Duration;
use takt_model::JobStatus;
use takt_pipeline::{Plan, PlanContext, Schedule, When, critical_path, parse, plan};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done(JobStatus, bool),
}

struct Model {
    deps: Vec<Vec<usize>>,
    ancestors: Vec<Vec<usize>>,
    by_needs: Vec<bool>,
    when: Vec<When>,
    names: Vec<String>,
    state: Vec<State>,
    stopped_by: Option<usize>,
}

impl Model {
    fn new(plan: &Plan) -> Model {
        let deps: Vec<Vec<usize>> = (0..plan.jobs.len()).map(|i| plan.waits_for(i)).collect();
        let ancestors = (0..deps.len())
            .map(|i| {
                let mut seen = vec![false; deps.len()];
                let mut todo = deps[i].clone();
                while let Some(d) = todo.pop() {
                    if !seen[d] {
                        seen[d] = true;
                        todo.extend(deps[d].iter().copied());
                    }
                }
                (0..deps.len()).filter(|k| seen[*k]).collect()
            })
            .collect();
        Model {
            ancestors,
            deps,
            by_needs: plan.jobs.iter().map(|j| j.by_needs).collect(),
            when: plan.jobs.iter().map(|j| j.when).collect(),
            names: plan.jobs.iter().map(|j| j.job.name.clone()).collect(),
            state: vec![State::Waiting; plan.jobs.len()],
            stopped_by: None,
        }
    }

    fn deps_done(&self, i: usize) -> bool {
        self.deps[i].iter().all(|d| matches!(self.state[*d], State::Done(..)))
    }

    fn decide(&self, i: usize) -> Option<(JobStatus, String)> {
        match self.when[i] {
            When::Manual => Some((JobStatus::Manual, "manual job: start it by hand".into())),
            When::Always => None,
            When::OnFailure => {
                let failed = self.ancestors[i]
                    .iter()
                    .any(|a| matches!(self.state[*a], State::Done(JobStatus::Failed, false)));
                (!failed).then(|| (JobStatus::Skipped, "nothing it waits for failed".into()))
            }
            When::OnSuccess | When::Never => {
                if let Some(s) = self.stopped_by {
                    return Some((
                        JobStatus::Skipped,
                        format!("the line stopped: `{}` failed", self.names[s]),
                    ));
                }
                if self.by_needs[i] {
                    for d in &self.deps[i] {
                        if let State::Done(st, _) = self.state[*d]
                            && matches!(st, JobStatus::Skipped | JobStatus::Manual | JobStatus::Cancelled)
                        {
                            return Some((
                                JobStatus::Skipped,
                                format!("needed job `{}` did not run", self.names[*d]),
                            ));
                        }
                    }
                }
                None
            }
        }
    }

    fn poll(&mut self) -> (Vec<(usize, JobStatus, String)>, Vec<usize>) {
        let mut skips = Vec::new();
        loop {
            let mut changed = false;
            for i in 0..self.state.len() {
                if self.state[i] != State::Waiting || !self.deps_done(i) {
                    continue;
                }
                if let Some((status, reason)) = self.decide(i) {
                    self.state[i] = State::Done(status, true);
                    skips.push((i, status, reason));
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let ready = (0..self.state.len())
            .filter(|i| self.state[*i] == State::Waiting && self.deps_done(*i) && self.decide(*i).is_none())
            .collect();
        (skips, ready)
    }

    fn finish(&mut self, i: usize, status: JobStatus, allow: bool) {
        self.state[i] = State::Done(status, allow);
        if status == JobStatus::Failed && !allow && self.stopped_by.is_none() {
            self.stopped_by = Some(i);
        }
    }

    fn critical_path(&self, d: &[Duration]) -> Vec<usize> {
        fn visit(
            i: usize,
            deps: &[Vec<usize>],
            d: &[Duration],
            memo: &mut Vec<Option<(Duration, Option<usize>)>>,
        ) -> Duration {
            if let Some((f, _)) = memo[i] {
                return f;
            }
            let mut best = (Duration::ZERO, None);
            for &dep in &deps[i] {
                let f = visit(dep, deps, d, memo);
                if f >= best.0 {
                    best = (f, Some(dep));
                }
            }
            let total = best.0 + d[i];
            memo[i] = Some((total, best.1));
            total
        }
        let mut memo = vec![None; self.deps.len()];
        let (mut end, mut longest) = (None, Duration::ZERO);
        for i in 0..self.deps.len() {
            let f = visit(i, &self.deps, d, &mut memo);
            if end.is_none() || f > longest {
                longest = f;
                end = Some(i);
            }
        }
        let mut path = Vec::new();
        let mut cur = end;
        while let Some(i) = cur {
            path.push(i);
            cur = memo[i].and_then(|(_, p)| p);
        }
        path.reverse();
        path
    }
}

#[derive(Debug, Clone)]
struct Spec {
    stage: usize,
    /// `None`: by stage; `Some`: needs these earlier jobs (no cycles).
    needs: Option<Vec<usize>>,
    when: usize,
    allow_failure: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..4usize,
        prop::option::weighted(0.4, prop::collection::vec(0..12usize, 0..3)),
        0..8usize,
        prop::bool::weighted(0.2),
    )
        .prop_map(|(stage, needs, when, allow_failure)| Spec {
            stage,
            needs,
            when,
            allow_failure,
        })
}

fn file(specs: &[Spec]) -> String {
    let mut s = String::from("stages: [s0, s1, s2, s3]\njobs:\n");
    for (i, j) in specs.iter().enumerate() {
        let when = [
            "on_success",
            "on_success",
            "on_success",
            "on_success",
            "on_failure",
            "always",
            "manual",
            "on_success",
        ][j.when];
        let _ = write!(s, "  j{i}: {{stage: s{}, script: [x], when: {when}", j.stage);
        if j.allow_failure {
            s.push_str(", allow_failure: true");
        }
        if let Some(n) = &j.needs {
            let mut n: Vec<usize> = n.iter().copied().filter(|k| *k < i).collect();
            n.sort_unstable();
            n.dedup();
            let names: Vec<String> = n.iter().map(|k| format!("j{k}")).collect();
            let _ = write!(s, ", needs: [{}]", names.join(", "));
        }
        s.push_str("}\n");
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn schedule_decides_like_the_reference(
        specs in prop::collection::vec(spec(), 1..12),
        outcomes in prop::collection::vec((0..16usize, 0..5usize), 0..40),
        durations in prop::collection::vec(0..5u64, 12),
    ) {
        let text = file(&specs);
        // Needs only point backwards, but a job of an early stage may need a later-stage job
        // that waits for it by stage: a cycle. Those files are refused; skip them.
        let Ok(p) = parse("takt.yml", text.as_bytes()) else { return Ok(()) };
        let pl = plan(&p, &PlanContext::default()).unwrap();
        let d: Vec<Duration> = (0..pl.jobs.len()).map(|i| Duration::from_secs(durations[i])).collect();
        let mut model = Model::new(&pl);
        prop_assert_eq!(critical_path(&pl, &d), model.critical_path(&d), "{}", text);
        let mut s = Schedule::new(&pl);
        let mut running: Vec<usize> = Vec::new();
        let mut outcomes = outcomes.into_iter();
        loop {
            let (skips, ready) = s.poll();
            let (mskips, mready) = model.poll();
            let skips: Vec<(usize, JobStatus, String)> = skips.into_iter().map(|k| (k.job, k.status, k.reason)).collect();
            prop_assert_eq!(&skips, &mskips, "{}", text);
            prop_assert_eq!(&ready, &mready, "{}", text);
            // Start one ready job (as with `--parallel 1`, or more when it says so), then finish
            // one running job with a random outcome.
            let (pick, outcome) = outcomes.next().unwrap_or((0, 0));
            if let Some(&i) = ready.get(pick % ready.len().max(1)) {
                s.start(i);
                model.state[i] = State::Running;
                running.push(i);
            }
            if running.is_empty() {
                break;
            }
            let i = running.remove(pick % running.len());
            let (status, allow) = match outcome {
                0 => (JobStatus::Failed, false),
                1 => (JobStatus::Failed, true),
                _ => (JobStatus::Success, false),
            };
            s.finish(i, status, allow);
            model.finish(i, status, allow);
            prop_assert_eq!(s.stopped_by(), model.stopped_by);
        }
        prop_assert_eq!(s.all_done(), model.state.iter().all(|x| matches!(x, State::Done(..))));
        // Cancelling leaves nothing waiting in either.
        let mut c = s.cancel_waiting();
        c.sort_unstable();
        let mc: Vec<usize> = (0..model.state.len()).filter(|i| model.state[*i] == State::Waiting).collect();
        prop_assert_eq!(c, mc);
    }
}
