//! Consecutive results to states, as Gatus's `failure-threshold` and `success-threshold`: a
//! check starts up; `failure_threshold` failures in a row take it down (the streak's first
//! failure is when the impact started); `success_threshold` successes in a row bring it back.
//!
//! A result may also be *degraded*: it passed its conditions, but one of its `degraded_when`
//! conditions held or it was slower than its `degraded_latency`. `failure_threshold` results in
//! a row that are not clean passes (degraded or failed, fewer failures than it takes to go
//! down) make an up check degraded; `success_threshold` clean passes in a row make it up again.
//! A degraded result counts as a success for coming back from down (to degraded if it is the
//! last one), and for uptime.

pub use takt_model::CheckState;

/// One result, judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Degraded,
    Fail,
}

impl Outcome {
    /// Whether it counts as up (for uptime and for results' `success`).
    pub fn success(self) -> bool {
        self != Outcome::Fail
    }
}

/// A check's state changed with this result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub to: CheckState,
    /// How many results in a row made it (the first of them is where the change began).
    pub streak: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streak {
    pub failure_threshold: u32,
    pub success_threshold: u32,
    state: CheckState,
    /// Failures in a row.
    failures: u32,
    /// Results in a row that were not clean passes.
    unclean: u32,
    /// Successes (passes or degraded) in a row.
    successes: u32,
    /// Clean passes in a row.
    passes: u32,
}

impl Default for Streak {
    /// Gatus's defaults: 3 failures down, 2 successes up.
    fn default() -> Streak {
        Streak::new(3, 2)
    }
}

impl Streak {
    /// Thresholds of 0 count as 1.
    pub fn new(failure_threshold: u32, success_threshold: u32) -> Streak {
        Streak {
            failure_threshold: failure_threshold.max(1),
            success_threshold: success_threshold.max(1),
            state: CheckState::Up,
            failures: 0,
            unclean: 0,
            successes: 0,
            passes: 0,
        }
    }

    /// The same, starting from `state` (what the last recorded change said).
    pub fn starting(mut self, state: CheckState) -> Streak {
        self.state = state;
        self
    }

    pub fn state(&self) -> CheckState {
        self.state
    }

    /// Records one result; `Some` when it changes the state.
    pub fn record(&mut self, outcome: Outcome) -> Option<Change> {
        let bump = |n: &mut u32, on: bool| *n = if on { n.saturating_add(1) } else { 0 };
        bump(&mut self.failures, outcome == Outcome::Fail);
        bump(&mut self.unclean, outcome != Outcome::Pass);
        bump(&mut self.successes, outcome.success());
        bump(&mut self.passes, outcome == Outcome::Pass);
        let (to, streak) = match self.state {
            CheckState::Up | CheckState::Degraded if self.failures >= self.failure_threshold => {
                (CheckState::Down, self.failures)
            }
            CheckState::Up if self.unclean >= self.failure_threshold => (CheckState::Degraded, self.unclean),
            CheckState::Degraded if self.passes >= self.success_threshold => (CheckState::Up, self.passes),
            CheckState::Down if self.successes >= self.success_threshold => {
                let to = if outcome == Outcome::Degraded {
                    CheckState::Degraded
                } else {
                    CheckState::Up
                };
                (to, self.successes)
            }
            _ => return None,
        };
        self.state = to;
        Some(Change { to, streak })
    }
}

/// One probe's result judged by a check's `conditions` (all must pass), then its
/// `degraded_when` conditions (any that holds degrades it) and `degraded_latency`; with why: the
/// first failed condition, what degraded it, or the first that passed.
pub fn judge(
    probe: &crate::condition::Probe,
    conditions: &[crate::condition::Condition],
    degraded_when: &[crate::condition::Condition],
    degraded_latency: Option<std::time::Duration>,
) -> (Outcome, String) {
    let verdicts: Vec<_> = conditions.iter().map(|k| k.evaluate(probe)).collect();
    if let Some(v) = verdicts.iter().find(|v| !v.success) {
        return (Outcome::Fail, v.explained.clone());
    }
    if let Some(v) = degraded_when.iter().map(|k| k.evaluate(probe)).find(|v| v.success) {
        return (Outcome::Degraded, format!("degraded: {}", v.explained));
    }
    if let Some(bound) = degraded_latency
        && probe.response_time > bound
    {
        return (
            Outcome::Degraded,
            format!(
                "degraded: [RESPONSE_TIME] ({}) > {} (degraded_latency)",
                probe.response_time.as_millis(),
                bound.as_millis()
            ),
        );
    }
    let why = verdicts
        .first()
        .map_or_else(|| "no conditions".into(), |v| v.explained.clone());
    (Outcome::Pass, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    #[test]
    fn judged_by_conditions_then_degraded_when_then_latency() {
        use crate::condition::{Condition, Probe};
        let c = |t: &str| Condition::parse(t).unwrap();
        let probe = |status: u16, ms: u64| Probe {
            status: Some(status),
            response_time: std::time::Duration::from_millis(ms),
            connected: true,
            ..Probe::default()
        };
        let conditions = [c("[STATUS] < 500")];
        let degraded = [c("[STATUS] == 429")];
        let bound = Some(std::time::Duration::from_millis(300));
        let j = |p: &Probe| judge(p, &conditions, &degraded, bound);
        assert_eq!(j(&probe(200, 10)), (Pass, "[STATUS] (200) < 500".into()));
        assert_eq!(j(&probe(503, 10)), (Fail, "[STATUS] (503) < 500".into()));
        assert_eq!(j(&probe(429, 10)), (Degraded, "degraded: [STATUS] (429) == 429".into()));
        assert_eq!(
            j(&probe(200, 812)),
            (
                Degraded,
                "degraded: [RESPONSE_TIME] (812) > 300 (degraded_latency)".into()
            )
        );
        assert_eq!(j(&probe(503, 812)).0, Fail, "a failure is a failure, slow or not");
    }

    fn to(c: Option<Change>) -> Option<CheckState> {
        c.map(|c| c.to)
    }

    #[test]
    fn three_failures_in_a_row_go_down_and_two_successes_come_back() {
        let mut s = Streak::default();
        assert_eq!(s.record(Fail), None);
        assert_eq!(s.record(Fail), None);
        // A success in between starts the count again.
        assert_eq!(s.record(Pass), None);
        assert_eq!(s.record(Fail), None);
        assert_eq!(s.record(Fail), None);
        assert_eq!(
            s.record(Fail),
            Some(Change {
                to: CheckState::Down,
                streak: 3
            })
        );
        assert_eq!(s.record(Fail), None, "already down");
        assert_eq!(s.record(Pass), None);
        assert_eq!(s.record(Fail), None, "the success streak starts again");
        assert_eq!(s.record(Pass), None);
        assert_eq!(
            s.record(Pass),
            Some(Change {
                to: CheckState::Up,
                streak: 2
            })
        );
        assert_eq!(s.state(), CheckState::Up);
    }

    #[test]
    fn thresholds_of_one_change_at_each_result_and_zero_counts_as_one() {
        let mut s = Streak::new(0, 1);
        assert_eq!(to(s.record(Fail)), Some(CheckState::Down));
        assert_eq!(to(s.record(Pass)), Some(CheckState::Up));
        assert_eq!(to(s.record(Degraded)), Some(CheckState::Degraded));
        assert_eq!(to(s.record(Pass)), Some(CheckState::Up));
    }

    #[test]
    fn degraded_results_degrade_an_up_check_and_clean_passes_restore_it() {
        let mut s = Streak::default();
        assert_eq!(s.record(Degraded), None);
        assert_eq!(
            s.record(Fail),
            None,
            "a failure is not clean either, but one is not down"
        );
        assert_eq!(
            s.record(Degraded),
            Some(Change {
                to: CheckState::Degraded,
                streak: 3
            })
        );
        assert_eq!(s.record(Pass), None);
        assert_eq!(s.record(Degraded), None, "the clean streak starts again");
        assert_eq!(s.record(Pass), None);
        assert_eq!(to(s.record(Pass)), Some(CheckState::Up));
        // Degraded, then failing: down, counting only the failures.
        for _ in 0..3 {
            s.record(Degraded);
        }
        assert_eq!(s.state(), CheckState::Degraded);
        s.record(Fail);
        s.record(Fail);
        assert_eq!(
            s.record(Fail),
            Some(Change {
                to: CheckState::Down,
                streak: 3
            })
        );
    }

    #[test]
    fn a_down_check_comes_back_degraded_when_its_last_success_is_degraded() {
        let mut s = Streak::default().starting(CheckState::Down);
        assert_eq!(s.record(Pass), None);
        assert_eq!(
            s.record(Degraded),
            Some(Change {
                to: CheckState::Degraded,
                streak: 2
            })
        );
        let mut s = Streak::default().starting(CheckState::Down);
        s.record(Degraded);
        assert_eq!(to(s.record(Pass)), Some(CheckState::Up));
    }
}
