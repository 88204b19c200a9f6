//! Disaster-recovery drills: what each turned down, with what load, and what it measured.

use crate::Projection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use takt_model::{DrillKill, DrillOutcome, Event, EventKind, OffsetDateTime, timefmt};

/// One drill, as its two events tell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillView {
    pub project: String,
    pub drill: u64,
    pub environment: String,
    pub kill: DrillKill,
    pub count: u32,
    pub load_rps: u32,
    pub by: String,
    #[serde(with = "timefmt::ms")]
    pub started_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "timefmt::ms::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// `None` while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<DrillOutcome>,
    pub requests: u64,
    pub failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_ms: Option<u64>,
    pub killed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Every drill, by (project, number).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drills {
    pub drills: BTreeMap<(String, u64), DrillView>,
}

impl Drills {
    /// The number `project`'s next drill gets.
    pub fn next_number(&self, project: &str) -> u64 {
        self.drills
            .keys()
            .filter(|(p, _)| p == project)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
            + 1
    }
}

impl Projection for Drills {
    const KINDS: &'static [&'static str] = &["drill_started", "drill_finished"];

    fn apply(&mut self, e: &Event) {
        match &e.kind {
            EventKind::DrillStarted {
                drill,
                environment,
                kill,
                count,
                load_rps,
                by,
            } => {
                let view = DrillView {
                    project: e.project.clone(),
                    drill: *drill,
                    environment: environment.clone(),
                    kill: *kill,
                    count: *count,
                    load_rps: *load_rps,
                    by: by.clone(),
                    started_at: e.at,
                    finished_at: None,
                    outcome: None,
                    requests: 0,
                    failed: 0,
                    detect_ms: None,
                    detected_by: None,
                    recover_ms: None,
                    killed: 0,
                    detail: None,
                };
                self.drills.insert((e.project.clone(), *drill), view);
            }
            EventKind::DrillFinished {
                drill,
                outcome,
                requests,
                failed,
                detect_ms,
                detected_by,
                recover_ms,
                killed,
                detail,
                ..
            } => {
                if let Some(d) = self.drills.get_mut(&(e.project.clone(), *drill)) {
                    d.finished_at = Some(e.at);
                    d.outcome = Some(*outcome);
                    d.requests = *requests;
                    d.failed = *failed;
                    d.detect_ms = *detect_ms;
                    d.detected_by = detected_by.clone();
                    d.recover_ms = *recover_ms;
                    d.killed = *killed;
                    d.detail = detail.clone();
                }
            }
            _ => {}
        }
    }
}
