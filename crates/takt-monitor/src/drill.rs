//! Disaster-recovery drills, measured, pure: from the requests takt sent to an environment
//! while it turned a piece of it down (each request's time and whether it was answered with
//! a success), and the environment's checks going down and up, how long the failure took to
//! be detected and to recover from, and how many requests failed. Time is passed in.

use serde::{Deserialize, Serialize};
use takt_model::OffsetDateTime;

/// One request of the drill's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: OffsetDateTime,
    pub ok: bool,
}

/// What a drill measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Requests sent during the drill, and those that failed (an error status, or no answer).
    pub requests: u64,
    pub failed: u64,
    /// From the kill to the failure being noticed: a check going down, or else the first
    /// failed request. `None`: nothing noticed it.
    pub detect_ms: Option<u64>,
    /// What noticed it: `check` or `load`.
    pub detected_by: Option<String>,
    /// From the kill to service restored: the first success after the last failed request
    /// (and every check of the environment up again, when one went down). `None`: it had not
    /// recovered when the drill ended.
    pub recover_ms: Option<u64>,
}

fn ms(from: OffsetDateTime, to: OffsetDateTime) -> u64 {
    u64::try_from((to - from).whole_milliseconds().max(0)).unwrap_or(u64::MAX)
}

/// The drill's figures: `killed_at` is when the piece went down; `samples` the load in time
/// order; `checks_down`/`checks_up` when the environment's checks went down and came back
/// (after the kill).
pub fn measure(
    killed_at: OffsetDateTime,
    samples: &[Sample],
    checks_down: Option<OffsetDateTime>,
    checks_up: Option<OffsetDateTime>,
) -> Measured {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= killed_at).collect();
    let failed = samples.iter().filter(|s| !s.ok).count() as u64;
    let first_failure = after.iter().find(|s| !s.ok).map(|s| s.at);
    let (detect, by) = match (checks_down.filter(|d| *d >= killed_at), first_failure) {
        (Some(c), _) => (Some(c), Some("check")),
        (None, Some(f)) => (Some(f), Some("load")),
        (None, None) => (None, None),
    };
    let last_failure = after.iter().rev().find(|s| !s.ok).map(|s| s.at);
    let load_back = match last_failure {
        // The first success after the last failure; none: it never came back.
        Some(last) => after.iter().find(|s| s.ok && s.at > last).map(|s| s.at),
        // Nothing failed: the load was never interrupted.
        None => Some(killed_at),
    };
    let recovered = match (checks_down.filter(|d| *d >= killed_at), checks_up) {
        (Some(_), Some(up)) => load_back.map(|l| l.max(up)),
        (Some(_), None) => None,
        (None, _) => load_back,
    };
    Measured {
        requests: samples.len() as u64,
        failed,
        detect_ms: detect.map(|d| ms(killed_at, d)),
        detected_by: by.map(str::to_string),
        recover_ms: recovered.map(|r| ms(killed_at, r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: OffsetDateTime = time::macros::datetime!(2026-11-01 12:00 UTC);

    fn load(pattern: &str) -> Vec<Sample> {
        // One request every 100 ms: `.` answered, `x` failed.
        pattern
            .chars()
            .enumerate()
            .map(|(k, c)| Sample {
                at: T0 + time::Duration::milliseconds(k as i64 * 100),
                ok: c == '.',
            })
            .collect()
    }

    #[test]
    fn detection_and_recovery_from_the_load_alone() {
        let killed = T0 + time::Duration::milliseconds(250);
        let m = measure(killed, &load("...xxxx..x...."), None, None);
        assert_eq!((m.requests, m.failed), (14, 5));
        assert_eq!(m.detect_ms, Some(50), "the first failure at 300 ms");
        assert_eq!(m.detected_by.as_deref(), Some("load"));
        assert_eq!(
            m.recover_ms,
            Some(750),
            "the first success after the last failure (900 ms), at 1000 ms"
        );
    }

    #[test]
    fn a_check_detects_and_must_be_up_again() {
        let killed = T0 + time::Duration::milliseconds(250);
        let down = T0 + time::Duration::milliseconds(450);
        let up = T0 + time::Duration::milliseconds(1200);
        let m = measure(killed, &load("...xxxx......."), Some(down), Some(up));
        assert_eq!(m.detect_ms, Some(200));
        assert_eq!(m.detected_by.as_deref(), Some("check"));
        assert_eq!(m.recover_ms, Some(950), "the check came back after the load");
        let m = measure(killed, &load("...xxxx......."), Some(down), None);
        assert_eq!(m.recover_ms, None, "still down when the drill ended");
    }

    #[test]
    fn what_never_failed_never_needed_recovering_and_what_never_recovered_says_so() {
        let killed = T0 + time::Duration::milliseconds(250);
        let m = measure(killed, &load(".........."), None, None);
        assert_eq!((m.failed, m.detect_ms, m.recover_ms), (0, None, Some(0)));
        let m = measure(killed, &load("...xxxxxxx"), None, None);
        assert_eq!(m.recover_ms, None);
    }
}
