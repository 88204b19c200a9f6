//! Health checks as their state changes tell them: each check's last state, since when, and
//! why. Raw results are not events; only `check_state_changed` is.

use crate::Projection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use takt_model::{CheckState, Event, EventKind, OffsetDateTime, timefmt};

/// One check's state, as its last change left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckView {
    pub project: String,
    pub check: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub state: CheckState,
    /// The first result of the streak that made the change (for `down`: when the impact began).
    #[serde(with = "timefmt::ms")]
    pub since: OffsetDateTime,
    /// When the change was recorded.
    #[serde(with = "timefmt::ms")]
    pub changed_at: OffsetDateTime,
    pub reason: String,
}

/// Every check that ever changed state, by (project, check).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checks {
    pub checks: BTreeMap<(String, String), CheckView>,
}

impl Checks {
    pub fn get(&self, project: &str, check: &str) -> Option<&CheckView> {
        self.checks.get(&(project.to_string(), check.to_string()))
    }

    /// `project`'s checks, by name.
    pub fn of<'a>(&'a self, project: &'a str) -> impl Iterator<Item = &'a CheckView> + 'a {
        self.checks.values().filter(move |c| c.project == project)
    }
}

impl Projection for Checks {
    const KINDS: &'static [&'static str] = &["check_state_changed"];

    fn apply(&mut self, e: &Event) {
        if let EventKind::CheckStateChanged {
            check,
            service,
            environment,
            state,
            reason,
            since,
            ..
        } = &e.kind
        {
            self.checks.insert(
                (e.project.clone(), check.clone()),
                CheckView {
                    project: e.project.clone(),
                    check: check.clone(),
                    service: service.clone(),
                    environment: environment.clone(),
                    state: *state,
                    since: *since,
                    changed_at: e.at,
                    reason: reason.clone(),
                },
            );
        }
    }
}
