//! The verdict of an analysis: a series of measurements, judged as Argo Rollouts does.

use std::time::Duration;

/// One measurement's result (a check's condition decided it, or it could not be taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measurement {
    Successful,
    Failed,
    /// Neither the success nor the failure condition held.
    Inconclusive,
    /// The measurement could not be taken (the query or check itself failed).
    Error,
}

/// How an analysis ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Successful,
    Failed,
    /// Too many inconclusive measurements: a person decides (the rollout pauses).
    Inconclusive,
    /// Too many consecutive errors: treated like a failure.
    Error,
}

/// `analysis:` settings (Argo Rollouts' names and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisSpec {
    pub interval: Duration,
    /// Measurements to take; the analysis succeeds after this many without a limit exceeded.
    pub count: u32,
    pub initial_delay: Duration,
    /// Failed measurements tolerated (more → failed). Default 0.
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated (more → inconclusive). Default 0.
    pub inconclusive_limit: u32,
    /// Errors in a row tolerated (more → error). Default 4.
    pub consecutive_error_limit: u32,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            interval: Duration::from_secs(10),
            count: 1,
            initial_delay: Duration::ZERO,
            failure_limit: 0,
            inconclusive_limit: 0,
            consecutive_error_limit: 4,
        }
    }
}

/// A running analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub spec: AnalysisSpec,
    taken: u32,
    failed: u32,
    inconclusive: u32,
    errors_in_a_row: u32,
}

impl Analysis {
    pub fn new(spec: AnalysisSpec) -> Analysis {
        Analysis {
            spec,
            taken: 0,
            failed: 0,
            inconclusive: 0,
            errors_in_a_row: 0,
        }
    }

    /// When the next measurement is due, counted from the analysis' start.
    pub fn next_due(&self) -> Duration {
        self.spec.initial_delay + self.spec.interval * self.taken
    }

    /// Records a measurement; `Some` once the analysis has its verdict. A limit exceeded ends
    /// it at once; errors do not count towards `count`.
    pub fn record(&mut self, m: Measurement) -> Option<Verdict> {
        match m {
            Measurement::Error => {
                self.errors_in_a_row += 1;
                if self.errors_in_a_row > self.spec.consecutive_error_limit {
                    return Some(Verdict::Error);
                }
                return None;
            }
            Measurement::Successful => {}
            Measurement::Failed => self.failed += 1,
            Measurement::Inconclusive => self.inconclusive += 1,
        }
        self.errors_in_a_row = 0;
        self.taken += 1;
        if self.failed > self.spec.failure_limit {
            Some(Verdict::Failed)
        } else if self.inconclusive > self.spec.inconclusive_limit {
            Some(Verdict::Inconclusive)
        } else if self.taken >= self.spec.count {
            Some(Verdict::Successful)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Measurement::*;

    fn run(spec: AnalysisSpec, ms: &[Measurement]) -> Option<Verdict> {
        let mut a = Analysis::new(spec);
        ms.iter().find_map(|m| a.record(*m))
    }

    #[test]
    fn limits_decide_as_in_argo_rollouts() {
        let spec = AnalysisSpec {
            count: 5,
            failure_limit: 1,
            inconclusive_limit: 1,
            consecutive_error_limit: 2,
            ..Default::default()
        };
        assert_eq!(run(spec.clone(), &[Successful; 5]), Some(Verdict::Successful));
        assert_eq!(run(spec.clone(), &[Successful; 4]), None, "not done before `count`");
        assert_eq!(
            run(spec.clone(), &[Failed, Successful, Successful, Successful, Successful]),
            Some(Verdict::Successful)
        );
        assert_eq!(
            run(spec.clone(), &[Failed, Successful, Failed]),
            Some(Verdict::Failed),
            "the second failure ends it at once"
        );
        assert_eq!(
            run(spec.clone(), &[Inconclusive, Inconclusive]),
            Some(Verdict::Inconclusive)
        );
        assert_eq!(run(spec.clone(), &[Error, Error, Error]), Some(Verdict::Error));
        // Errors in a row only: a success in between resets them, and they do not count.
        assert_eq!(
            run(
                spec.clone(),
                &[
                    Error, Error, Successful, Error, Error, Successful, Successful, Successful, Successful
                ]
            ),
            Some(Verdict::Successful)
        );
        // Defaults: any failure fails.
        assert_eq!(
            run(
                AnalysisSpec {
                    count: 3,
                    ..Default::default()
                },
                &[Successful, Failed]
            ),
            Some(Verdict::Failed)
        );
    }

    #[test]
    fn measurements_fall_due_after_the_initial_delay_at_each_interval() {
        let mut a = Analysis::new(AnalysisSpec {
            interval: Duration::from_secs(1),
            initial_delay: Duration::from_secs(5),
            count: 3,
            ..Default::default()
        });
        assert_eq!(a.next_due(), Duration::from_secs(5));
        a.record(Measurement::Successful);
        assert_eq!(a.next_due(), Duration::from_secs(6));
    }
}
