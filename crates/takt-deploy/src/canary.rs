//! A canary rollout as a state machine. The caller feeds it what happened (time passed, a
//! measurement, a failed smoke check, a person's resume or halt) and gets what to do next.
//!
//! Steps run in order as in Argo Rollouts: `set_weight` shifts traffic to the canary, `pause`
//! waits (for a duration, or until resumed), `analysis` measures at intervals until it has a
//! verdict. After the last step the canary is promoted (100%). A failed smoke check, a failed
//! analysis or an exceeded progress deadline rolls back; an inconclusive analysis pauses.

use crate::analysis::{Analysis, AnalysisSpec, Measurement, Verdict};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Percent of traffic to the canary, 0–100.
    SetWeight(u8),
    /// `None`: until `resume`.
    Pause(Option<Duration>),
    Analysis(AnalysisSpec),
}

/// What the caller should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this percent of traffic to the canary (then call `advance` again).
    SetWeight(u8),
    /// Nothing until this time (since the rollout started); then `advance`.
    WaitUntil(Duration),
    /// Take a measurement and report it with `measured`.
    Measure,
    /// Paused until a person resumes (an indefinite pause, or an inconclusive analysis).
    Paused { reason: String },
    /// All traffic to the canary: it is the new stable version.
    Promote,
    /// Back to the stable version, for this reason.
    Rollback { reason: String },
    /// Halted by the andon cord; nothing moves until resumed.
    Halted { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Ready to run step `index`.
    Next,
    Waiting {
        until: Duration,
    },
    Paused {
        reason: String,
    },
    Analyzing {
        analysis: Analysis,
        started: Duration,
    },
    Halted {
        reason: String,
        before: Box<State>,
    },
    Promoted,
    RolledBack {
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Rollout {
    steps: Vec<Step>,
    index: usize,
    state: State,
    /// The weight the canary has now.
    pub weight: u8,
    /// Roll back when a step takes longer than this (pauses for a person and halts excepted).
    pub progress_deadline: Option<Duration>,
    /// When the current step started.
    step_started: Duration,
}

impl Rollout {
    pub fn new(steps: Vec<Step>, progress_deadline: Option<Duration>) -> Rollout {
        Rollout {
            steps,
            index: 0,
            state: State::Next,
            weight: 0,
            progress_deadline,
            step_started: Duration::ZERO,
        }
    }

    /// A rollout continued at step `index` (from 0) with the canary at `weight`, as a restarted
    /// server picks it up: that step runs again from its start.
    pub fn resume_at(steps: Vec<Step>, progress_deadline: Option<Duration>, index: usize, weight: u8) -> Rollout {
        Rollout {
            index: index.min(steps.len()),
            weight: weight.min(100),
            ..Rollout::new(steps, progress_deadline)
        }
    }

    /// The index of the next step to run (the number of steps done or under way).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether the rollout has ended (promoted or rolled back).
    pub fn finished(&self) -> bool {
        matches!(self.state, State::Promoted | State::RolledBack { .. })
    }

    /// The step being run, if any.
    pub fn step(&self) -> Option<usize> {
        (self.index < self.steps.len()).then_some(self.index)
    }

    fn roll_back(&mut self, reason: String) -> Action {
        self.weight = 0;
        self.state = State::RolledBack { reason: reason.clone() };
        Action::Rollback { reason }
    }

    /// What to do at time `now` (since the rollout started).
    pub fn advance(&mut self, now: Duration) -> Action {
        if let Some(d) = self.progress_deadline
            && now.saturating_sub(self.step_started) > d
            && !self.finished()
            && !matches!(self.state, State::Paused { .. } | State::Halted { .. })
        {
            return self.roll_back(format!(
                "step {} made no progress within the progress deadline of {}s",
                self.index + 1,
                d.as_secs()
            ));
        }
        loop {
            match &self.state {
                State::Promoted => return Action::Promote,
                State::RolledBack { reason } => return Action::Rollback { reason: reason.clone() },
                State::Halted { reason, .. } => return Action::Halted { reason: reason.clone() },
                State::Paused { reason } => return Action::Paused { reason: reason.clone() },
                State::Waiting { until } if now < *until => return Action::WaitUntil(*until),
                State::Waiting { .. } => {
                    self.index += 1;
                    self.state = State::Next;
                }
                State::Analyzing { analysis, started } => {
                    let due = *started + analysis.next_due();
                    return if now < due {
                        Action::WaitUntil(due)
                    } else {
                        Action::Measure
                    };
                }
                State::Next => {
                    self.step_started = now;
                    let Some(step) = self.steps.get(self.index).cloned() else {
                        self.weight = 100;
                        self.state = State::Promoted;
                        return Action::Promote;
                    };
                    match step {
                        Step::SetWeight(w) => {
                            self.weight = w.min(100);
                            self.index += 1;
                            return Action::SetWeight(self.weight);
                        }
                        Step::Pause(Some(d)) => self.state = State::Waiting { until: now + d },
                        Step::Pause(None) => {
                            self.state = State::Paused {
                                reason: format!("paused at step {} until `takt resume`", self.index + 1),
                            }
                        }
                        Step::Analysis(spec) => {
                            self.state = State::Analyzing {
                                analysis: Analysis::new(spec),
                                started: now,
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reports a measurement taken for the running analysis.
    pub fn measured(&mut self, now: Duration, m: Measurement) -> Action {
        if let State::Analyzing { analysis, .. } = &mut self.state {
            match analysis.record(m) {
                None => {}
                Some(Verdict::Successful) => {
                    self.index += 1;
                    self.state = State::Next;
                }
                Some(Verdict::Inconclusive) => {
                    self.state = State::Paused {
                        reason: format!("analysis at step {} was inconclusive", self.index + 1),
                    }
                }
                Some(v @ (Verdict::Failed | Verdict::Error)) => {
                    let what = if v == Verdict::Failed { "failed" } else { "errored" };
                    return self.roll_back(format!("analysis at step {} {what}", self.index + 1));
                }
            }
        }
        self.advance(now)
    }

    /// A smoke check failed: roll back.
    pub fn smoke_failed(&mut self, reason: &str) -> Action {
        if self.finished() {
            return self.advance(Duration::ZERO);
        }
        self.roll_back(format!("smoke check failed: {reason}"))
    }

    /// The andon cord: nothing moves until `resume`.
    pub fn halt(&mut self, reason: &str) -> Action {
        if !self.finished() && !matches!(self.state, State::Halted { .. }) {
            let before = std::mem::replace(&mut self.state, State::Next);
            self.state = State::Halted {
                reason: reason.to_string(),
                before: Box::new(before),
            };
        }
        Action::Halted {
            reason: reason.to_string(),
        }
    }

    /// Lifts a halt, or continues a paused rollout.
    pub fn resume(&mut self, now: Duration) -> Action {
        self.step_started = now;
        match std::mem::replace(&mut self.state, State::Next) {
            State::Halted { before, .. } => self.state = *before,
            State::Paused { .. } => self.index += 1,
            other => self.state = other,
        }
        self.advance(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Measurement::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn steps() -> Vec<Step> {
        vec![
            Step::SetWeight(10),
            Step::Analysis(AnalysisSpec {
                interval: secs(1),
                count: 2,
                ..Default::default()
            }),
            Step::SetWeight(50),
            Step::Pause(Some(secs(30))),
        ]
    }

    #[test]
    fn a_healthy_canary_walks_its_steps_and_is_promoted() {
        let mut r = Rollout::new(steps(), None);
        assert_eq!(r.advance(secs(0)), Action::SetWeight(10));
        assert_eq!(r.advance(secs(0)), Action::Measure);
        assert_eq!(r.measured(secs(0), Successful), Action::WaitUntil(secs(1)));
        assert_eq!(r.advance(secs(1)), Action::Measure);
        assert_eq!(r.measured(secs(1), Successful), Action::SetWeight(50));
        assert_eq!(r.advance(secs(1)), Action::WaitUntil(secs(31)));
        assert_eq!(r.advance(secs(20)), Action::WaitUntil(secs(31)));
        assert_eq!(r.advance(secs(31)), Action::Promote);
        assert!(r.finished());
        assert_eq!(r.weight, 100);
    }

    #[test]
    fn a_failed_measurement_or_smoke_check_rolls_back_at_once() {
        let mut r = Rollout::new(steps(), None);
        r.advance(secs(0));
        r.advance(secs(0));
        let a = r.measured(secs(0), Failed);
        assert!(
            matches!(&a, Action::Rollback { reason } if reason.contains("analysis at step 2 failed")),
            "{a:?}"
        );
        assert_eq!(r.weight, 0);
        assert!(r.finished());
        let mut r = Rollout::new(steps(), None);
        r.advance(secs(0));
        assert!(matches!(r.smoke_failed("GET /healthz: 500"), Action::Rollback { reason } if reason.contains("500")));
    }

    #[test]
    fn pauses_halts_and_deadlines() {
        let mut r = Rollout::new(
            vec![Step::SetWeight(20), Step::Pause(None), Step::SetWeight(60)],
            Some(secs(600)),
        );
        assert_eq!(r.advance(secs(0)), Action::SetWeight(20));
        assert!(matches!(r.advance(secs(0)), Action::Paused { .. }));
        // A pause for a person does not run into the deadline.
        assert!(matches!(r.advance(secs(900)), Action::Paused { .. }));
        assert_eq!(r.resume(secs(900)), Action::SetWeight(60));
        // The andon cord: nothing moves until resumed; then it goes on where it was.
        assert!(matches!(r.halt("bad numbers"), Action::Halted { .. }));
        assert!(matches!(r.advance(secs(901)), Action::Halted { .. }));
        assert_eq!(r.resume(secs(10)), Action::Promote);
        // Inconclusive analysis pauses; a running rollout past its deadline rolls back.
        let mut r = Rollout::new(steps(), Some(secs(20)));
        r.advance(secs(0));
        r.advance(secs(0));
        assert!(
            matches!(r.measured(secs(0), Inconclusive), Action::Paused { reason } if reason.contains("inconclusive"))
        );
        // An analysis slower than the deadline rolls back.
        let slow = Step::Analysis(AnalysisSpec {
            interval: secs(1),
            count: 10,
            ..Default::default()
        });
        let mut r = Rollout::new(vec![Step::SetWeight(10), slow], Some(secs(3)));
        r.advance(secs(0));
        r.advance(secs(0));
        for t in 0..3 {
            assert!(!matches!(r.measured(secs(t), Successful), Action::Rollback { .. }));
        }
        assert!(matches!(r.advance(secs(4)), Action::Rollback { reason } if reason.contains("progress deadline")));
    }
}
