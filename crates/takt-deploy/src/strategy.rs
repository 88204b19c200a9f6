//! A whole deployment as one state machine, for every strategy: the caller (the CD service's
//! interpreter loop) asks [`Deploy::next`] what to do, does it through the environment's driver,
//! and reports back ([`Deploy::done`], [`Deploy::measured`], [`Deploy::approved`]); a person's
//! halt, resume and rollback are inputs too. Time is passed in; nothing here does I/O.
//!
//! Each strategy is a short program of operations run in order (Argo Rollouts' reconcile model:
//! one step decided at a time from what happened so far):
//!
//! - **recreate**: start the new version, smoke-check it alone, send it all traffic, stop the
//!   old one, smoke-check the public address;
//! - **rolling**: start the new version, then move `batch` instances' share of traffic at a
//!   time, smoke-checking after each batch; stop the old one;
//! - **blue/green**: start the new colour beside the old, check it on the preview port (or
//!   alone), switch all traffic, check the public address, keep the old colour up for a while;
//! - **canary**: start, check alone, then the canary's own steps ([`crate::canary::Rollout`]),
//!   then all traffic to the new version and the old one stopped.
//!
//! A failure before the new version took traffic stops it and changes nothing else (`failed`).
//! After that it rolls back: the old version started if need be, all traffic back to it, the
//! new version stopped, the old one smoke-checked. If that cannot be done the deploy ends in
//! `rollback_failed` and the caller halts the environment. Traffic is only ever taken away from
//! a version by a route that succeeded: nothing is stopped while it still has traffic.
//!
//! Halts stop the clock: time halted never counts toward a canary's waits, analyses or
//! `progress_deadline`.

use crate::analysis::Measurement;
use crate::canary::{self, Rollout};
use std::time::Duration;

/// How traffic moves to the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Recreate,
    /// `batch` instances' share of traffic of `instances` at a time, smoke-checked through the
    /// public address after each batch, `pause` between batches. Surge first, as Argo Rollouts'
    /// `maxSurge: 100%`, `maxUnavailable: 0`: every new instance starts before traffic moves.
    Rolling {
        batch: u32,
        instances: u32,
        pause: Option<Duration>,
    },
    /// `preview`: the environment has a preview port for the new colour.
    BlueGreen {
        preview: bool,
        keep_old: Duration,
    },
    Canary {
        steps: Vec<canary::Step>,
        progress_deadline: Option<Duration>,
    },
}

/// What one deploy is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The strategy. Without an old version (`has_old` false) every plan is a recreate.
    pub plan: Plan,
    /// Wait for a person's approval before anything starts.
    pub approval: bool,
    /// A version runs there now: the one to roll back to.
    pub has_old: bool,
    /// After a failure once the new version took traffic, pause for a person
    /// (`on_failure: pause`) instead of rolling back.
    pub pause_on_failure: bool,
    /// A halt stops it at its next step (a rollback is not stopped by the andon cord).
    pub honours_halt: bool,
}

/// Which version an operation concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Old,
    New,
}

/// Where a smoke check is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The new version alone, before it takes traffic (skipped where the driver cannot reach
    /// one version alone).
    Alone,
    /// Blue/green's preview port, else the new version alone (skipped when neither exists and
    /// the checks need an address).
    Preview,
    /// The environment's public address.
    Public,
    /// The new version alone where the driver can reach it, else the public address.
    DirectOrPublic,
}

/// Where a deploy going forward is: its strategy's operation `op` (from 0) and, inside a
/// canary, canary step `canary`. A restarted server continues from here
/// ([`Deploy::resume_at`]): that operation or canary step runs again from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub op: u32,
    pub canary: u32,
}

/// Shares of traffic, in percent; they always sum to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    pub old: u8,
    pub new: u8,
}

/// What the caller should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Wait for a person's approval, then [`Deploy::approved`].
    AwaitApproval,
    /// Start the new version (then [`Deploy::done`], as for every action up to `Promote`).
    Start,
    /// Run the smoke checks of `of` against `target`; `label` names the step.
    Smoke {
        target: Target,
        label: String,
        of: Side,
    },
    /// Send traffic in these shares.
    Route(Weights),
    /// A rollback: all traffic back to the old version.
    RouteBack {
        reason: String,
    },
    /// Nothing to roll back to: take all traffic away from the new version.
    Unroute,
    /// Point blue/green's preview port at the new colour (`true`) or nowhere (`false`).
    Preview(bool),
    /// Start the old version if it no longer runs (a rollback to it).
    StartOld,
    StopOld,
    StopNew,
    /// Stop the old colour after this long, unless it runs again by then (blue/green).
    KeepOld(Duration),
    /// The canary took all traffic: record that it was promoted.
    Promote,
    /// Take a measurement for the canary's analysis at canary step `step` (from 0), then
    /// [`Deploy::measured`].
    Measure {
        step: usize,
    },
    /// Nothing until this time (on the caller's clock, since the deploy started), or until a
    /// control changes; then `next` again.
    WaitUntil(Duration),
    /// Paused until a person resumes ([`Deploy::resume`]) or asks for a rollback
    /// ([`Deploy::abort`]). `on_failure`: a failure held for a person (`on_failure: pause`);
    /// resuming keeps the new version.
    Paused {
        reason: String,
        on_failure: bool,
    },
    /// Halted by the andon cord: nothing moves until [`Deploy::resume`].
    Halted {
        reason: String,
    },
    /// The deploy is over.
    Done(End),
}

/// How a deploy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The new version runs with all traffic (`reason`: kept by a person after a failure).
    Succeeded { reason: Option<String> },
    /// It never kept traffic: it was stopped, and the old version (if any) runs as before.
    Failed { reason: String },
    /// Back to the old version, which passed its smoke checks. `failed`: because the new
    /// version failed a check or its analysis after it took traffic (not only because a person
    /// asked): takt opens an incident for it.
    RolledBack { reason: String, failed: bool },
    /// The rollback itself failed (`problem`), or traffic could not be taken away from a failed
    /// version with nothing to go back to: the caller halts the environment and opens an
    /// incident; nothing more happens automatically, and nothing that holds traffic is stopped.
    RollbackFailed { reason: String, problem: String },
    /// Asked to roll back while it waited for approval: nothing had started.
    Cancelled { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Approval,
    Start,
    Smoke(Target, String, Side),
    Route(u8),
    RouteBack,
    Unroute,
    Preview(bool),
    StartOld,
    StopOld,
    StopNew,
    KeepOld(Duration),
    /// Wait this long on the deploy's clock (rolling's pause between batches).
    Pause(Duration),
    Canary,
    Promote,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Forward,
    /// A failure after the new version took traffic, held for a person.
    PausedOnFailure {
        reason: String,
    },
    /// Resumed after that: the new version is kept.
    Keeping {
        reason: String,
    },
    RollingBack {
        reason: String,
        /// The new version failed after it took traffic (see [`End::RolledBack`]).
        failed: bool,
    },
    /// The new version is stopped (it never kept traffic, or there is nothing to go back to).
    Stopping {
        reason: String,
    },
    Over(End),
}

/// One deploy in flight.
#[derive(Debug, Clone)]
pub struct Deploy {
    spec: Spec,
    ops: Vec<Op>,
    pc: usize,
    phase: Phase,
    /// The new version's share after the last route that succeeded.
    weight: u8,
    /// A route to the new version was sent (it may hold traffic).
    took_traffic: bool,
    /// Halted since (the caller's clock), for this reason.
    halt: Option<(String, Duration)>,
    halted_for: Duration,
    /// A rollback asked for while an action was out: applied when it is reported.
    abort: Option<String>,
    canary: Option<Rollout>,
    /// What the canary said last and is not yet acted on.
    canary_next: Option<canary::Action>,
    /// The action given out and not yet reported.
    pending: Option<Action>,
    /// The canary step being run (see [`Position`]).
    canary_at: usize,
    /// Continued after a restart past its start: the new version is started again first if it
    /// no longer runs.
    ensure_start: bool,
    /// The end of the pause under way (the deploy's clock).
    pause_until: Option<Duration>,
}

impl Deploy {
    pub fn new(mut spec: Spec) -> Deploy {
        if !spec.has_old {
            spec.plan = Plan::Recreate;
        }
        let mut ops = Vec::new();
        if spec.approval {
            ops.push(Op::Approval);
        }
        ops.push(Op::Start);
        let alone = || Op::Smoke(Target::Alone, "new version".into(), Side::New);
        let after_switch = || Op::Smoke(Target::Public, "after switch".into(), Side::New);
        match &spec.plan {
            Plan::Recreate => {
                ops.extend([alone(), Op::Route(100)]);
                if spec.has_old {
                    ops.push(Op::StopOld);
                }
                ops.push(after_switch());
            }
            Plan::Rolling {
                batch,
                instances,
                pause,
            } => {
                let n = (*instances).max(1);
                let mut moved = 0;
                while moved < n {
                    if let Some(p) = pause.filter(|_| moved > 0) {
                        ops.push(Op::Pause(p));
                    }
                    moved = (moved + (*batch).max(1)).min(n);
                    ops.push(Op::Route((u64::from(moved) * 100 / u64::from(n)) as u8));
                    ops.push(Op::Smoke(Target::Public, format!("batch {moved}/{n}"), Side::New));
                }
                ops.push(Op::StopOld);
            }
            Plan::BlueGreen { preview, keep_old } => {
                if *preview {
                    ops.push(Op::Preview(true));
                }
                ops.extend([Op::Smoke(Target::Preview, "preview".into(), Side::New), Op::Route(100)]);
                if *preview {
                    ops.push(Op::Preview(false));
                }
                ops.extend([after_switch(), Op::KeepOld(*keep_old)]);
            }
            Plan::Canary { .. } => ops.extend([alone(), Op::Canary, Op::Route(100), Op::StopOld, Op::Promote]),
        }
        Deploy {
            spec,
            ops,
            pc: 0,
            phase: Phase::Forward,
            weight: 0,
            took_traffic: false,
            halt: None,
            halted_for: Duration::ZERO,
            abort: None,
            canary: None,
            canary_next: None,
            pending: None,
            canary_at: 0,
            ensure_start: false,
            pause_until: None,
        }
    }

    /// The deploy `spec` continued at `at` with the new version at `weight` percent, as a
    /// restarted server folds it from the steps it recorded. `None` when `at` does not fit the
    /// plan (it changed since): roll back instead.
    pub fn resume_at(spec: Spec, at: Position, weight: u8) -> Option<Deploy> {
        let mut d = Deploy::new(spec);
        let op = usize::try_from(at.op).ok()?;
        let canary = usize::try_from(at.canary).ok()?;
        match (d.ops.get(op)?, &d.spec.plan) {
            (
                Op::Canary,
                Plan::Canary {
                    steps,
                    progress_deadline,
                },
            ) => {
                if canary > steps.len() {
                    return None;
                }
                d.canary = Some(Rollout::resume_at(steps.clone(), *progress_deadline, canary, weight));
                d.canary_at = canary;
            }
            (_, _) if canary != 0 => return None,
            _ => {}
        }
        let start = d.ops.iter().position(|o| *o == Op::Start).unwrap_or(0);
        d.pc = op;
        d.weight = if d.spec.has_old {
            weight.min(100)
        } else {
            100 * u8::from(weight > 0)
        };
        d.took_traffic = weight > 0 || d.ops[..op].iter().any(|o| matches!(o, Op::Route(_)));
        d.ensure_start = op > start;
        Some(d)
    }

    /// Where it is, while it goes forward (`None` once it rolls back, stops, is paused after a
    /// failure, or is over: a restarted server then rolls it back).
    pub fn position(&self) -> Option<Position> {
        (self.phase == Phase::Forward).then(|| Position {
            op: u32::try_from(self.pc).unwrap_or(u32::MAX),
            canary: match self.ops.get(self.pc) {
                Some(Op::Canary) => u32::try_from(self.canary_at).unwrap_or(u32::MAX),
                _ => 0,
            },
        })
    }

    /// The new version's share of traffic (after the last route that succeeded).
    pub fn weight(&self) -> u8 {
        self.weight
    }

    /// The plan it runs (a recreate where there is no old version).
    pub fn plan(&self) -> &Plan {
        &self.spec.plan
    }

    /// Whether it is over.
    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Over(_))
    }

    /// `now` on the deploy's own clock, which stops while it is halted.
    fn active(&self, now: Duration) -> Duration {
        let halted = self
            .halt
            .as_ref()
            .map_or(Duration::ZERO, |(_, since)| now.saturating_sub(*since));
        now.saturating_sub(self.halted_for + halted)
    }

    fn split(&self, new: u8) -> Weights {
        let new = if self.spec.has_old { new.min(100) } else { 100 };
        Weights { old: 100 - new, new }
    }

    fn switch(&mut self, phase: Phase, ops: Vec<Op>) {
        self.phase = phase;
        self.ops = ops;
        self.pc = 0;
        self.canary = None;
        self.canary_next = None;
        self.halt = None;
        self.pause_until = None;
    }

    /// A failure once the new version may hold traffic.
    fn failed_after_traffic(&mut self, reason: String) {
        match &self.phase {
            Phase::Forward if self.spec.pause_on_failure => {
                self.switch(Phase::PausedOnFailure { reason }, Vec::new());
            }
            Phase::Forward => self.roll_back(reason, true),
            Phase::Keeping { reason: kept } => {
                let reason = format!("{kept}; then the new version could not be kept: {reason}");
                self.roll_back(reason, true)
            }
            _ => {}
        }
    }

    fn roll_back(&mut self, reason: String, failed: bool) {
        if self.spec.has_old {
            let smoke = Op::Smoke(Target::Public, "after rollback".into(), Side::Old);
            let ops = vec![Op::StartOld, Op::RouteBack, Op::StopNew, smoke];
            self.switch(Phase::RollingBack { reason, failed }, ops);
        } else {
            let reason = format!("{reason}; nothing earlier to roll back to");
            self.switch(Phase::Stopping { reason }, vec![Op::Unroute, Op::StopNew]);
        }
    }

    fn rollback_failed(&mut self, problem: String) {
        if let Phase::RollingBack { reason, .. } | Phase::Stopping { reason } = &self.phase {
            let reason = reason.clone();
            self.switch(Phase::Over(End::RollbackFailed { reason, problem }), Vec::new());
        }
    }

    /// What to do at `now` (the caller's clock, since the deploy started). Asking again before
    /// reporting gives the same action.
    pub fn next(&mut self, now: Duration) -> Action {
        loop {
            if let Some(a) = &self.pending {
                return a.clone();
            }
            if let Some(why) = self.abort.take() {
                self.apply_abort(why);
            }
            match &self.phase {
                Phase::Over(end) => return Action::Done(end.clone()),
                Phase::PausedOnFailure { reason } => {
                    return Action::Paused {
                        reason: reason.clone(),
                        on_failure: true,
                    };
                }
                // A halt stops what is left to do; with nothing left it ends.
                Phase::Forward if self.pc < self.ops.len() => {
                    if let Some((reason, _)) = &self.halt {
                        return Action::Halted { reason: reason.clone() };
                    }
                    if self.ensure_start {
                        self.pending = Some(Action::Start);
                        continue;
                    }
                }
                _ => {}
            }
            let Some(op) = self.ops.get(self.pc).cloned() else {
                let end = match &self.phase {
                    Phase::Keeping { reason } => End::Succeeded {
                        reason: Some(format!("kept by a person after: {reason}")),
                    },
                    Phase::RollingBack { reason, failed } => End::RolledBack {
                        reason: reason.clone(),
                        failed: *failed,
                    },
                    Phase::Stopping { reason } => End::Failed { reason: reason.clone() },
                    _ => End::Succeeded { reason: None },
                };
                self.switch(Phase::Over(end), Vec::new());
                continue;
            };
            let action = match op {
                Op::Approval => return Action::AwaitApproval,
                Op::Canary => match self.canary_step(now) {
                    Some(a) => return a,
                    None => continue,
                },
                Op::Pause(d) => {
                    let active = self.active(now);
                    let until = *self.pause_until.get_or_insert(active + d);
                    if active < until {
                        return Action::WaitUntil(until + self.halted_for);
                    }
                    self.pause_until = None;
                    self.pc += 1;
                    continue;
                }
                Op::Start => Action::Start,
                Op::Smoke(target, label, of) => Action::Smoke { target, label, of },
                Op::Route(w) => {
                    self.took_traffic = true;
                    Action::Route(self.split(w))
                }
                Op::RouteBack => Action::RouteBack {
                    reason: match &self.phase {
                        Phase::RollingBack { reason, .. } => reason.clone(),
                        _ => String::new(),
                    },
                },
                Op::Unroute => Action::Unroute,
                Op::Preview(on) => Action::Preview(on),
                Op::StartOld => Action::StartOld,
                Op::StopOld => Action::StopOld,
                Op::StopNew => Action::StopNew,
                Op::KeepOld(d) => Action::KeepOld(d),
                Op::Promote => Action::Promote,
            };
            self.pending = Some(action);
        }
    }

    /// The canary's own steps; `None`: look again (an action is pending, or the canary ended).
    fn canary_step(&mut self, now: Duration) -> Option<Action> {
        let active = self.active(now);
        let halted_for = self.halted_for;
        let rollout = self.canary.get_or_insert_with(|| match &self.spec.plan {
            Plan::Canary {
                steps,
                progress_deadline,
            } => Rollout::new(steps.clone(), *progress_deadline),
            _ => Rollout::new(Vec::new(), None),
        });
        let said = match self.canary_next.take() {
            Some(a) => a,
            None => rollout.advance(active),
        };
        let step = rollout.step().unwrap_or(0);
        self.canary_at = match said {
            canary::Action::SetWeight(_) => rollout.index().saturating_sub(1),
            _ => rollout.index(),
        };
        match said {
            canary::Action::SetWeight(w) => {
                self.took_traffic = true;
                self.pending = Some(Action::Route(self.split(w)));
                None
            }
            canary::Action::WaitUntil(t) => Some(Action::WaitUntil(t + halted_for)),
            canary::Action::Measure => {
                self.pending = Some(Action::Measure { step });
                None
            }
            canary::Action::Paused { reason } | canary::Action::Halted { reason } => Some(Action::Paused {
                reason,
                on_failure: false,
            }),
            canary::Action::Promote => {
                self.canary = None;
                self.pc += 1;
                None
            }
            canary::Action::Rollback { reason } => {
                self.failed_after_traffic(reason);
                None
            }
        }
    }

    /// Reports the outcome of the action given out (`Err`: what went wrong), and says what next.
    pub fn done(&mut self, now: Duration, result: Result<(), String>) -> Action {
        let Some(action) = self.pending.take() else {
            return self.next(now);
        };
        let in_canary = self.ops.get(self.pc) == Some(&Op::Canary);
        match (action, result) {
            (Action::Route(w), Ok(())) => {
                self.weight = w.new;
                if in_canary {
                    self.pending = Some(Action::Smoke {
                        target: Target::DirectOrPublic,
                        label: format!("at {}%", w.new),
                        of: Side::New,
                    });
                } else {
                    self.pc += 1;
                }
            }
            (Action::Route(_), Err(e)) => self.failed_after_traffic(format!("traffic could not be shifted: {e}")),
            (Action::Smoke { .. }, Ok(())) if in_canary => self.canary_next = None,
            (Action::Smoke { of: Side::Old, .. }, Err(e)) => {
                self.rollback_failed(format!("the smoke checks failed after the rollback: {e}"))
            }
            (Action::Smoke { .. }, Err(e)) if in_canary => {
                self.canary_next = self.canary.as_mut().map(|r| r.smoke_failed(&e));
            }
            (Action::Smoke { .. }, Err(e)) if self.took_traffic => {
                self.failed_after_traffic(format!("smoke check failed: {e}"))
            }
            (Action::Start, Ok(())) if self.ensure_start => self.ensure_start = false,
            (Action::Start, Err(e)) if self.took_traffic => {
                self.ensure_start = false;
                self.failed_after_traffic(format!("the new version could not be started again: {e}"))
            }
            (Action::Smoke { .. } | Action::Start, Err(e)) => {
                self.ensure_start = false;
                self.switch(Phase::Stopping { reason: e }, vec![Op::StopNew])
            }
            (Action::Preview(true), Err(e)) => self.switch(
                Phase::Stopping {
                    reason: format!("the preview port could not be set: {e}"),
                },
                vec![Op::StopNew],
            ),
            (Action::StartOld, Err(e)) => {
                self.rollback_failed(format!("the previous version could not be started: {e}"))
            }
            (Action::RouteBack { .. }, Err(e)) => self.rollback_failed(format!("traffic could not be moved back: {e}")),
            (Action::Unroute, Err(e)) => {
                self.rollback_failed(format!("traffic could not be taken away from the new version: {e}"))
            }
            (Action::RouteBack { .. } | Action::Unroute, _) => {
                self.weight = 0;
                self.pc += 1;
            }
            // Stopping, keeping and previews off change nothing else when they fail.
            _ => self.pc += 1,
        }
        self.next(now)
    }

    /// Reports the measurement asked for by [`Action::Measure`].
    pub fn measured(&mut self, now: Duration, m: Measurement) -> Action {
        if matches!(self.pending, Some(Action::Measure { .. })) {
            self.pending = None;
            let active = self.active(now);
            self.canary_next = self.canary.as_mut().map(|r| r.measured(active, m));
        }
        self.next(now)
    }

    /// A person approved: it goes on (ignored unless it waits for approval and is not halted).
    pub fn approved(&mut self, now: Duration) -> Action {
        if self.phase == Phase::Forward
            && self.halt.is_none()
            && self.pending.is_none()
            && self.ops.get(self.pc) == Some(&Op::Approval)
        {
            self.pc += 1;
        }
        self.next(now)
    }

    /// The andon cord: it stops before its next step, until [`Deploy::resume`]. Only a deploy
    /// going forward is halted (not a rollback, nor one paused for a person).
    pub fn halt(&mut self, now: Duration, reason: &str) {
        if self.spec.honours_halt && self.phase == Phase::Forward && self.halt.is_none() {
            self.halt = Some((reason.to_string(), now));
        }
    }

    /// Lifts a halt; else continues a pause (a canary's, or a failure held for a person, which
    /// then keeps the new version).
    pub fn resume(&mut self, now: Duration) -> Action {
        if let Some((_, since)) = self.halt.take() {
            self.halted_for += now.saturating_sub(since);
            return self.next(now);
        }
        match &self.phase {
            Phase::PausedOnFailure { reason } => {
                let reason = reason.clone();
                let mut ops = vec![Op::Route(100)];
                if self.spec.has_old {
                    ops.push(Op::StopOld);
                }
                self.switch(Phase::Keeping { reason }, ops);
            }
            Phase::Forward if self.pending.is_none() && self.ops.get(self.pc) == Some(&Op::Canary) => {
                let active = self.active(now);
                if let Some(r) = self.canary.as_mut() {
                    self.canary_next = Some(r.resume(active));
                }
            }
            _ => {}
        }
        self.next(now)
    }

    /// A person asked for a rollback (`reason`): while it waits for approval it is cancelled;
    /// going forward or paused it rolls back. A rollback or a stop under way goes on.
    pub fn abort(&mut self, now: Duration, reason: &str) -> Action {
        if self.pending.is_some() {
            self.abort.get_or_insert_with(|| reason.to_string());
            return self.next(now);
        }
        self.apply_abort(reason.to_string());
        self.next(now)
    }

    fn apply_abort(&mut self, why: String) {
        match &self.phase {
            Phase::Forward if self.ops.get(self.pc) == Some(&Op::Approval) => {
                self.switch(Phase::Over(End::Cancelled { reason: why }), Vec::new());
            }
            Phase::Forward => self.roll_back(why, false),
            Phase::PausedOnFailure { reason } => {
                let reason = format!("{reason}; then {why}");
                self.roll_back(reason, true)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(plan: Plan) -> Spec {
        Spec {
            plan,
            approval: false,
            has_old: true,
            pause_on_failure: false,
            honours_halt: true,
        }
    }

    /// Runs to the end answering every action with success; returns the actions.
    fn run_ok(d: &mut Deploy) -> Vec<Action> {
        let mut seen = Vec::new();
        let mut now = Duration::ZERO;
        let mut a = d.next(now);
        for _ in 0..1000 {
            seen.push(a.clone());
            a = match a {
                Action::Done(_) => return seen,
                Action::WaitUntil(t) => {
                    now = t;
                    d.next(now)
                }
                Action::Measure { .. } => d.measured(now, Measurement::Successful),
                Action::AwaitApproval => d.approved(now),
                Action::Paused { .. } | Action::Halted { .. } => d.resume(now),
                _ => d.done(now, Ok(())),
            };
        }
        panic!("no end: {seen:?}");
    }

    fn route(old: u8, new: u8) -> Action {
        Action::Route(Weights { old, new })
    }

    #[test]
    fn recreate_switches_then_stops_the_old_version() {
        let seen = run_ok(&mut Deploy::new(spec(Plan::Recreate)));
        assert_eq!(seen[0], Action::Start);
        assert!(matches!(
            &seen[1],
            Action::Smoke {
                target: Target::Alone,
                ..
            }
        ));
        assert_eq!(seen[2], route(0, 100));
        assert_eq!(seen[3], Action::StopOld);
        assert_eq!(seen.last(), Some(&Action::Done(End::Succeeded { reason: None })));
    }

    #[test]
    fn rolling_moves_batches_and_checks_each() {
        let seen = run_ok(&mut Deploy::new(spec(Plan::Rolling {
            batch: 1,
            instances: 3,
            pause: Some(Duration::from_secs(5)),
        })));
        let routes: Vec<_> = seen.iter().filter(|a| matches!(a, Action::Route(_))).collect();
        assert_eq!(routes, [&route(67, 33), &route(34, 66), &route(0, 100)]);
        // Checked through the public address after each batch, 5 s between batches.
        let i = seen.iter().position(|a| *a == route(34, 66)).unwrap();
        assert_eq!(seen[i - 1], Action::WaitUntil(Duration::from_secs(5)));
        assert_eq!(
            seen[i + 1],
            Action::Smoke {
                target: Target::Public,
                label: "batch 2/3".into(),
                of: Side::New
            }
        );
        let waits = seen.iter().filter(|a| matches!(a, Action::WaitUntil(_))).count();
        assert_eq!(waits, 2, "no pause before the first batch: {seen:?}");
    }

    #[test]
    fn a_failed_smoke_check_after_the_switch_rolls_back_before_stopping_anything() {
        let mut d = Deploy::new(spec(Plan::BlueGreen {
            preview: true,
            keep_old: Duration::from_secs(60),
        }));
        let t = Duration::ZERO;
        assert_eq!(d.next(t), Action::Start);
        assert_eq!(d.done(t, Ok(())), Action::Preview(true));
        assert!(matches!(
            d.done(t, Ok(())),
            Action::Smoke {
                target: Target::Preview,
                ..
            }
        ));
        assert_eq!(d.done(t, Ok(())), route(0, 100));
        assert_eq!(d.done(t, Ok(())), Action::Preview(false));
        assert!(matches!(
            d.done(t, Ok(())),
            Action::Smoke {
                target: Target::Public,
                ..
            }
        ));
        assert_eq!(d.done(t, Err("500".into())), Action::StartOld);
        assert!(matches!(d.done(t, Ok(())), Action::RouteBack { reason } if reason == "smoke check failed: 500"));
        assert_eq!(d.done(t, Ok(())), Action::StopNew);
        assert!(matches!(d.done(t, Ok(())), Action::Smoke { of: Side::Old, .. }));
        assert!(matches!(
            d.done(t, Ok(())),
            Action::Done(End::RolledBack { failed: true, .. })
        ));
        assert_eq!(d.weight(), 0);
    }

    #[test]
    fn a_rollback_a_person_asked_for_is_not_a_failure() {
        let mut d = Deploy::new(spec(Plan::Recreate));
        let t = Duration::ZERO;
        assert_eq!(d.next(t), Action::Start);
        d.abort(t, "by hand");
        let mut a = d.done(t, Ok(()));
        for _ in 0..6 {
            if matches!(a, Action::Done(_)) {
                break;
            }
            a = d.done(t, Ok(()));
        }
        assert!(
            matches!(a, Action::Done(End::RolledBack { failed: false, .. })),
            "{a:?}"
        );
    }

    #[test]
    fn a_failed_start_stops_the_new_version_and_nothing_else() {
        let mut d = Deploy::new(spec(Plan::Recreate));
        let t = Duration::ZERO;
        d.next(t);
        assert_eq!(d.done(t, Err("exit 1".into())), Action::StopNew);
        assert_eq!(
            d.done(t, Ok(())),
            Action::Done(End::Failed {
                reason: "exit 1".into()
            })
        );
    }

    #[test]
    fn a_halt_while_awaiting_approval_stops_the_wait_and_refuses_approval_until_resumed() {
        let mut d = Deploy::new(Spec {
            approval: true,
            ..spec(Plan::Recreate)
        });
        let t = Duration::ZERO;
        assert_eq!(d.next(t), Action::AwaitApproval);
        d.halt(t, "bad numbers");
        assert!(matches!(d.next(t), Action::Halted { .. }));
        assert!(matches!(d.approved(t), Action::Halted { .. }));
        assert_eq!(d.resume(t), Action::AwaitApproval);
        assert_eq!(d.approved(t), Action::Start);
    }

    #[test]
    fn a_halt_never_counts_toward_the_progress_deadline() {
        let steps = vec![
            canary::Step::SetWeight(20),
            canary::Step::Pause(Some(Duration::from_secs(10))),
        ];
        let mut d = Deploy::new(spec(Plan::Canary {
            steps,
            progress_deadline: Some(Duration::from_secs(30)),
        }));
        let s = Duration::from_secs;
        d.next(s(0));
        d.done(s(0), Ok(())); // started
        d.done(s(0), Ok(())); // smoke alone
        assert_eq!(
            d.done(s(0), Ok(())),
            Action::Smoke {
                target: Target::DirectOrPublic,
                label: "at 20%".into(),
                of: Side::New
            }
        );
        assert_eq!(d.done(s(0), Ok(())), Action::WaitUntil(s(10)));
        d.halt(s(5), "hold");
        assert!(matches!(d.next(s(500)), Action::Halted { .. }));
        // 495 s halted: the pause ends 5 s after the resume, and no deadline has passed.
        assert_eq!(d.resume(s(500)), Action::WaitUntil(s(505)));
        assert_eq!(d.next(s(505)), route(0, 100));
    }

    #[test]
    fn on_failure_pause_holds_for_a_person_who_keeps_or_rolls_back() {
        let paused = || {
            let mut d = Deploy::new(Spec {
                pause_on_failure: true,
                ..spec(Plan::Recreate)
            });
            let t = Duration::ZERO;
            d.next(t);
            d.done(t, Ok(()));
            d.done(t, Ok(()));
            d.done(t, Ok(())); // all traffic
            d.done(t, Ok(())); // old stopped
            let a = d.done(t, Err("500".into()));
            assert!(matches!(a, Action::Paused { on_failure: true, .. }), "{a:?}");
            d
        };
        let t = Duration::ZERO;
        let mut d = paused();
        assert_eq!(d.resume(t), route(0, 100));
        assert_eq!(d.done(t, Ok(())), Action::StopOld);
        assert!(matches!(d.done(t, Ok(())), Action::Done(End::Succeeded { reason: Some(r) }) if r.contains("500")));
        let mut d = paused();
        assert_eq!(d.abort(t, "by hand"), Action::StartOld);
        assert!(matches!(d.done(t, Ok(())), Action::RouteBack { reason } if reason.ends_with("then by hand")));
    }

    #[test]
    fn a_rollback_that_cannot_move_traffic_back_stops_nothing() {
        let mut d = Deploy::new(spec(Plan::Recreate));
        let t = Duration::ZERO;
        d.next(t);
        d.done(t, Ok(()));
        d.done(t, Ok(()));
        d.done(t, Err("proxy down".into()));
        assert_eq!(d.next(t), Action::StartOld);
        assert!(matches!(d.done(t, Ok(())), Action::RouteBack { .. }));
        assert!(matches!(
            d.done(t, Err("still down".into())),
            Action::Done(End::RollbackFailed { problem, .. }) if problem.contains("still down")
        ));
    }
}
