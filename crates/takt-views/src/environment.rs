//! Environments and their deployments: what runs where, since when, what is in flight, the
//! history, and what a rollback goes back to.

use crate::Projection;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use takt_model::{
    ArtifactRef, DeployOutcome, DeployStrategy, DeployTrigger, Event, EventKind, OffsetDateTime, StepAction,
    StepPosition, StepVerdict, timefmt,
};

/// Deployments kept in an environment's history view.
pub const HISTORY: usize = 50;

fn rfc(t: OffsetDateTime) -> String {
    timefmt::rfc3339(t)
}

/// A deploy in flight, as the log tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub deploy: u64,
    pub artifact: ArtifactRef,
    pub strategy: DeployStrategy,
    pub rollback: bool,
    pub started_at: String,
    pub step: u32,
    pub action: StepAction,
    pub weight: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<StepVerdict>,
    /// Its last step is an approval still waiting for a person.
    #[serde(default)]
    pub waiting_for_approval: bool,
    /// Where it was going forward at its last step (none: rolling back, or paused after a
    /// failure): where a restarted server continues it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<StepPosition>,
}

/// One step of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    pub step: u32,
    pub action: StepAction,
    pub weight: u8,
    pub verdict: Option<StepVerdict>,
    pub detail: Option<String>,
    pub at: String,
}

/// One deployment: what, why, how and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub deploy: u64,
    pub artifact: ArtifactRef,
    pub trigger: DeployTrigger,
    pub strategy: DeployStrategy,
    pub rollback: bool,
    pub commits: Vec<String>,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<DeployOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub steps: Vec<StepView>,
}

/// The andon cord pulled on an environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Halt {
    pub reason: String,
    pub by: String,
    pub at: String,
}

/// An environment retired by `takt env stop`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    pub by: String,
    pub at: String,
}

/// What an environment runs, since when, and what is going on there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvView {
    pub project: String,
    pub environment: String,
    pub running: Option<ArtifactRef>,
    /// When the running artifact was deployed (UTC, RFC 3339).
    pub since: Option<String>,
    /// Its last deployment (or rollback) passed its checks.
    pub healthy: bool,
    pub deploying: Option<InFlight>,
    pub halted: Option<Halt>,
    /// Retired by `takt env stop` (until the next deploy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
    /// Artifacts that ran healthy here before, newest first: what a rollback goes back to.
    pub previous: Vec<ArtifactRef>,
    pub last_deploy: u64,
    /// When each artifact version last ran here ("name@version" → until when, or since when
    /// for the one running now).
    #[serde(skip)]
    pub ran: BTreeMap<String, OffsetDateTime>,
    #[serde(skip)]
    pub since_at: Option<OffsetDateTime>,
    #[serde(skip)]
    pub history: VecDeque<Deployment>,
}

impl EnvView {
    /// The number the next deployment here gets.
    pub fn next_deploy(&self) -> u64 {
        self.last_deploy.max(self.history.front().map_or(0, |d| d.deploy)) + 1
    }
}

/// Every environment's view, by (project, environment).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Environments {
    pub envs: BTreeMap<(String, String), EnvView>,
}

impl Environments {
    pub fn get(&self, project: &str, env: &str) -> Option<&EnvView> {
        self.envs.get(&(project.to_string(), env.to_string()))
    }

    /// Versions ("name", "version") retention must keep at `now`: running or roll-back
    /// targets anywhere, in flight, or run in the last `days` days of their project.
    pub fn protected(&self, days: &HashMap<String, u32>, now: OffsetDateTime) -> HashSet<(String, String)> {
        let mut keep = HashSet::new();
        for v in self.envs.values() {
            for r in v.running.iter().chain(v.previous.iter().take(1)) {
                keep.insert((r.name.clone(), r.version.clone()));
            }
            if let Some(f) = &v.deploying {
                keep.insert((f.artifact.name.clone(), f.artifact.version.clone()));
            }
            if let Some(d) = days.get(&v.project) {
                let horizon = now - time::Duration::days(i64::from(*d));
                for (nv, at) in &v.ran {
                    if *at >= horizon
                        && let Some((n, ver)) = nv.split_once('@')
                    {
                        keep.insert((n.to_string(), ver.to_string()));
                    }
                }
            }
        }
        keep
    }
}

impl Projection for Environments {
    const KINDS: &'static [&'static str] = &[
        "deploy_started",
        "deploy_step",
        "deploy_finished",
        "environment_halted",
        "environment_resumed",
        "environment_stopped",
        "deploy_approved",
        "incident_opened",
    ];

    fn apply(&mut self, e: &Event) {
        let env = match &e.kind {
            EventKind::DeployStarted { environment, .. }
            | EventKind::DeployStep { environment, .. }
            | EventKind::DeployFinished { environment, .. }
            | EventKind::EnvironmentHalted { environment, .. }
            | EventKind::EnvironmentResumed { environment, .. }
            | EventKind::EnvironmentStopped { environment, .. } => environment,
            _ => return,
        };
        let v = self
            .envs
            .entry((e.project.clone(), env.clone()))
            .or_insert_with(|| EnvView {
                project: e.project.clone(),
                environment: env.clone(),
                ..Default::default()
            });
        match &e.kind {
            EventKind::DeployStarted {
                deploy,
                artifact,
                commits,
                trigger,
                strategy,
                rollback,
                ..
            } => {
                v.last_deploy = v.last_deploy.max(*deploy);
                v.stopped = None;
                v.deploying = Some(InFlight {
                    deploy: *deploy,
                    artifact: artifact.clone(),
                    strategy: *strategy,
                    rollback: *rollback,
                    started_at: rfc(e.at),
                    step: 0,
                    action: StepAction::Started,
                    weight: 0,
                    verdict: None,
                    waiting_for_approval: false,
                    position: None,
                });
                v.history.push_front(Deployment {
                    deploy: *deploy,
                    artifact: artifact.clone(),
                    trigger: trigger.clone(),
                    strategy: *strategy,
                    rollback: *rollback,
                    commits: commits.clone(),
                    started_at: rfc(e.at),
                    finished_at: None,
                    outcome: None,
                    reason: None,
                    steps: Vec::new(),
                });
                v.history.truncate(HISTORY);
            }
            EventKind::DeployStep {
                deploy,
                step,
                action,
                weight,
                verdict,
                detail,
                position,
                ..
            } => {
                if let Some(f) = v.deploying.as_mut().filter(|f| f.deploy == *deploy) {
                    f.position = *position;
                    f.step = *step;
                    f.action = action.clone();
                    f.weight = *weight;
                    f.verdict = *verdict;
                    f.waiting_for_approval = *action == StepAction::Approval && *verdict == Some(StepVerdict::Waiting);
                }
                if let Some(d) = v.history.iter_mut().find(|d| d.deploy == *deploy) {
                    d.steps.push(StepView {
                        step: *step,
                        action: action.clone(),
                        weight: *weight,
                        verdict: *verdict,
                        detail: detail.clone(),
                        at: rfc(e.at),
                    });
                }
            }
            EventKind::DeployFinished {
                deploy,
                outcome,
                running,
                reason,
                ..
            } => {
                if v.deploying.as_ref().is_some_and(|f| f.deploy == *deploy) {
                    v.deploying = None;
                }
                if let Some(d) = v.history.iter_mut().find(|d| d.deploy == *deploy) {
                    d.finished_at = Some(rfc(e.at));
                    d.outcome = Some(*outcome);
                    d.reason = reason.clone();
                }
                if *outcome == DeployOutcome::Unchanged {
                    return;
                }
                let changed = running.as_ref().map(|r| &r.digest) != v.running.as_ref().map(|r| &r.digest);
                if changed {
                    // What ran here until now: retention counts `keep_deployed_days` from here.
                    if let Some(old) = &v.running {
                        v.ran.insert(format!("{}@{}", old.name, old.version), e.at);
                    }
                    if let Some(old) = v.running.take()
                        && v.healthy
                    {
                        v.previous.retain(|p| p.digest != old.digest);
                        v.previous.insert(0, old);
                        v.previous.truncate(HISTORY);
                    }
                    v.running = running.clone();
                    if let Some(r) = running {
                        v.previous.retain(|p| p.digest != r.digest);
                    }
                    v.since = Some(rfc(e.at));
                    v.since_at = Some(e.at);
                }
                // A failed deploy that never took traffic leaves what runs as healthy as it was.
                use DeployOutcome::*;
                if changed || matches!(outcome, Succeeded | RolledBack | RollbackFailed) {
                    v.healthy = running.is_some() && matches!(outcome, Succeeded | RolledBack);
                }
                if let Some(r) = &v.running {
                    v.ran.insert(format!("{}@{}", r.name, r.version), e.at);
                }
            }
            EventKind::EnvironmentHalted { reason, by, .. } => {
                v.halted = Some(Halt {
                    reason: reason.clone(),
                    by: by.clone(),
                    at: rfc(e.at),
                });
            }
            EventKind::EnvironmentResumed { .. } => v.halted = None,
            EventKind::EnvironmentStopped { by, .. } => {
                // Nothing runs any more: what ran is what a later rollback goes back to, and
                // retention counts its days from now.
                if let Some(old) = v.running.take() {
                    v.ran.insert(format!("{}@{}", old.name, old.version), e.at);
                    if v.healthy {
                        v.previous.retain(|p| p.digest != old.digest);
                        v.previous.insert(0, old);
                        v.previous.truncate(HISTORY);
                    }
                }
                v.healthy = false;
                v.since = None;
                v.since_at = None;
                v.stopped = Some(Stopped {
                    by: by.clone(),
                    at: rfc(e.at),
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(v: &str) -> ArtifactRef {
        ArtifactRef {
            name: "app".into(),
            version: v.into(),
            digest: format!("sha256:{}", v.repeat(64).chars().take(64).collect::<String>()),
            commit: None,
        }
    }

    fn finished(deploy: u64, v: &str, at: OffsetDateTime) -> Event {
        let mut e = Event::now(
            "p",
            None,
            EventKind::DeployFinished {
                environment: "prod".into(),
                deploy,
                outcome: DeployOutcome::Succeeded,
                running: Some(art(v)),
                reason: None,
            },
        );
        e.at = at;
        e
    }

    #[test]
    fn retention_keeps_what_runs_the_rollback_target_and_what_ran_within_the_days() {
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        // Deployed one after another: 1 thirty days ago, 2 five, 3 three, 4 now.
        let events: Vec<Event> = [("1", 30), ("2", 5), ("3", 3), ("4", 0)]
            .into_iter()
            .enumerate()
            .map(|(i, (v, days))| finished(i as u64 + 1, v, now - day * days))
            .collect();
        let view = Environments::fold(&events);
        let keep = |days: Option<u32>| {
            let mut m = HashMap::new();
            if let Some(d) = days {
                m.insert("p".to_string(), d);
            }
            let mut k: Vec<String> = view.protected(&m, now).into_iter().map(|(_, v)| v).collect();
            k.sort();
            k
        };
        // Without keep_deployed_days: what runs (4) and what a rollback goes back to (3).
        assert_eq!(keep(None), ["3", "4"]);
        // 1 ran until 5 days ago (then 2 replaced it), 2 until 3 days ago.
        assert_eq!(keep(Some(4)), ["2", "3", "4"]);
        assert_eq!(keep(Some(7)), ["1", "2", "3", "4"]);
        let prod = view.get("p", "prod").unwrap();
        assert_eq!(prod.running.as_ref().map(|r| r.version.as_str()), Some("4"));
        assert!(prod.healthy);
        assert_eq!(prod.previous[0].version, "3");
    }
}
