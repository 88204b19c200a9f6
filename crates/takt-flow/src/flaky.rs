//! Flaky tests, from the JUnit reports of runs: a test case (its identity: project, job name
//! with its matrix values, suite or classname, name) is flaky when it both failed and passed on
//! the same commit, in one run's attempts (it passed on retry) or across runs of that commit.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use takt_model::{OffsetDateTime, TestOutcome, timefmt};

/// A test case's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TestId {
    pub project: String,
    pub job: String,
    pub suite: String,
    pub name: String,
}

/// What one test case did on one commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnCommit {
    pub passed: bool,
    pub failed: bool,
    /// The runs that reported it, and when the first and the last did.
    pub runs: BTreeSet<u64>,
    pub first: Option<OffsetDateTime>,
    pub last: Option<OffsetDateTime>,
}

/// Every test case's outcomes, by identity and commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tests {
    pub cases: BTreeMap<TestId, BTreeMap<String, OnCommit>>,
}

impl Tests {
    /// Records one case's outcome in run `run` of `commit`, at `at`. Skipped cases say nothing.
    pub fn record(&mut self, id: TestId, commit: &str, run: u64, outcome: TestOutcome, at: OffsetDateTime) {
        let (passed, failed) = match outcome {
            TestOutcome::Passed => (true, false),
            TestOutcome::Failed | TestOutcome::Error => (false, true),
            TestOutcome::Skipped => return,
        };
        let c = self.cases.entry(id).or_default().entry(commit.to_string()).or_default();
        c.passed |= passed;
        c.failed |= failed;
        c.runs.insert(run);
        c.first = Some(c.first.map_or(at, |f| f.min(at)));
        c.last = Some(c.last.map_or(at, |l| l.max(at)));
    }
}

/// One flaky test: on how many commits it flaked, out of how many it ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flaky {
    #[serde(flatten)]
    pub id: TestId,
    /// Commits on which it both failed and passed.
    pub flaky_commits: usize,
    /// Commits it ran on.
    pub commits: usize,
    /// Its failures and passes on the commits where it flaked (runs that reported it).
    pub runs: Vec<u64>,
    pub first_seen: String,
    pub last_seen: String,
}

/// The flaky tests of `project` (or every project), most often flaky first.
pub fn flaky(tests: &Tests, project: Option<&str>) -> Vec<Flaky> {
    let mut out: Vec<Flaky> = tests
        .cases
        .iter()
        .filter(|(id, _)| project.is_none_or(|p| p == id.project))
        .filter_map(|(id, by_commit)| {
            let flaked: Vec<&OnCommit> = by_commit.values().filter(|c| c.passed && c.failed).collect();
            let first = flaked.iter().filter_map(|c| c.first).min()?;
            let last = flaked.iter().filter_map(|c| c.last).max()?;
            let runs: BTreeSet<u64> = flaked.iter().flat_map(|c| c.runs.iter().copied()).collect();
            Some(Flaky {
                id: id.clone(),
                flaky_commits: flaked.len(),
                commits: by_commit.len(),
                runs: runs.into_iter().collect(),
                first_seen: timefmt::rfc3339(first),
                last_seen: timefmt::rfc3339(last),
            })
        })
        .collect();
    out.sort_by(|a, b| b.flaky_commits.cmp(&a.flaky_commits).then(a.id.cmp(&b.id)));
    out
}
