//! Consecutive results to states, as Gatus's `failure-threshold` and `success-threshold`: a
//! check starts up; `failure_threshold` failures in a row take it down (the streak's first
//! failure is when the impact started); `success_threshold` successes in a row bring it back.

/// Whether a check is passing, as its thresholds decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// A check's state changed with this result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub to: Health,
    /// How many results in a row made it (the first of them is where the change began).
    pub streak: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streak {
    pub failure_threshold: u32,
    pub success_threshold: u32,
    health: Health,
    failures: u32,
    successes: u32,
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
            health: Health::Up,
            failures: 0,
            successes: 0,
        }
    }

    /// The same, starting from `health` (what the last recorded change said).
    pub fn starting(mut self, health: Health) -> Streak {
        self.health = health;
        self
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Records one result; `Some` when it changes the state.
    pub fn record(&mut self, success: bool) -> Option<Change> {
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.health == Health::Down && self.successes >= self.success_threshold {
                self.health = Health::Up;
                return Some(Change {
                    to: Health::Up,
                    streak: self.successes,
                });
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.health == Health::Up && self.failures >= self.failure_threshold {
                self.health = Health::Down;
                return Some(Change {
                    to: Health::Down,
                    streak: self.failures,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_in_a_row_go_down_and_two_successes_come_back() {
        let mut s = Streak::default();
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        // A success in between starts the count again.
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert_eq!(
            s.record(false),
            Some(Change {
                to: Health::Down,
                streak: 3
            })
        );
        assert_eq!(s.record(false), None, "already down");
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(false), None, "the success streak starts again");
        assert_eq!(s.record(true), None);
        assert_eq!(
            s.record(true),
            Some(Change {
                to: Health::Up,
                streak: 2
            })
        );
        assert_eq!(s.health(), Health::Up);
    }

    #[test]
    fn thresholds_of_one_change_at_each_result_and_zero_counts_as_one() {
        let mut s = Streak::new(0, 1);
        assert_eq!(s.record(false).map(|c| c.to), Some(Health::Down));
        assert_eq!(s.record(true).map(|c| c.to), Some(Health::Up));
    }
}
