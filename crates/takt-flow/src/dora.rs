//! The five DORA keys over a window: deployment frequency, change lead time, change fail rate,
//! failed deployment recovery time and deployment rework rate, each with its band and the
//! sample it rests on. The exact formulas are in `docs/metrics.md`.

use crate::stats::{secs, spread};
use crate::{Deployment, Flow, Scope, Spread};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use takt_model::{DeployOutcome, DeployTrigger, OffsetDateTime};
use takt_views::Incident;

/// DORA's performance bands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Band {
    Elite,
    High,
    Medium,
    Low,
}

/// How often a team deploys, in DORA's survey buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Bucket {
    /// More than once a day.
    OnDemand,
    /// Between once a day and once a week.
    Daily,
    /// Between once a week and once a month.
    Weekly,
    /// Between once a month and once every six months.
    Monthly,
    /// Fewer than once every six months.
    Fewer,
}

/// The band thresholds: for each key, the bounds of elite, high and medium (beyond: low).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Successful deployments per day at least.
    pub frequency_per_day: [f64; 3],
    /// Lead time p50 in seconds at most.
    pub lead_time_s: [f64; 3],
    /// Change fail rate at most.
    pub change_fail_rate: [f64; 3],
    /// Recovery time p50 in seconds at most.
    pub recovery_s: [f64; 3],
    /// Rework rate at most.
    pub rework_rate: [f64; 3],
    /// No band below this many values (deployments, commits, failures).
    pub min_sample: usize,
}

const HOUR: f64 = 3600.0;
const DAY: f64 = 24.0 * HOUR;

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            frequency_per_day: [1.0, 1.0 / 7.0, 1.0 / 30.0],
            lead_time_s: [DAY, 7.0 * DAY, 30.0 * DAY],
            change_fail_rate: [0.05, 0.10, 0.15],
            recovery_s: [HOUR, DAY, 7.0 * DAY],
            rework_rate: [0.05, 0.10, 0.15],
            min_sample: 5,
        }
    }
}

/// The band of a value where lower is better.
fn band_at_most(v: f64, bounds: [f64; 3]) -> Band {
    if v <= bounds[0] {
        Band::Elite
    } else if v <= bounds[1] {
        Band::High
    } else if v <= bounds[2] {
        Band::Medium
    } else {
        Band::Low
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frequency {
    /// Successful deployments of a change in the window.
    pub deployments: usize,
    pub per_day: f64,
    pub per_week: f64,
    pub bucket: Bucket,
    pub band: Band,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadTime {
    /// Deploy finish − commit time, over the commits shipped in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Spread>,
    /// Commit → its pipeline's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Spread>,
    /// The pipeline: start → finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<Spread>,
    /// The pipeline's finish → the deploy's finish (promotion wait and the deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Spread>,
    /// Commits left out: a lead time of zero or less (clock skew), no commit time known.
    pub non_positive: usize,
    pub unknown_commit: usize,
    /// Deployments that shipped no commit range (pushed artifacts, the first before 0.2).
    pub without_commits: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<Band>,
}

/// A ratio of deployments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub count: usize,
    /// Deployments of a change that took traffic.
    pub of: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<Band>,
    /// The deployments counted (`PROJECT/ENV#N`).
    pub deployments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Spread>,
    /// Failed deployments not restored yet.
    pub unrestored: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<Band>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dora {
    pub deployment_frequency: Frequency,
    pub change_lead_time: LeadTime,
    pub change_fail_rate: Rate,
    pub recovery_time: Recovery,
    pub rework_rate: Rate,
}

/// `PROJECT/ENV#N` (`PROJECT/ENV#import:ID` for an imported one).
pub fn deploy_id(d: &Deployment) -> String {
    match &d.imported {
        Some(id) => format!("{}/{}#import:{id}", d.project, d.environment),
        None => format!("{}/{}#{}", d.project, d.environment, d.deploy),
    }
}

/// The production deployments of `scope` by environment, each in the order they started, and
/// the incidents by environment and by the deployment marked as their cause: every lookup of
/// the keys is then within one environment.
struct Ctx<'a> {
    by_env: HashMap<(&'a str, &'a str), Vec<&'a Deployment>>,
    incidents: HashMap<(&'a str, &'a str), Vec<&'a Incident>>,
    caused: HashMap<&'a str, &'a Incident>,
}

impl<'a> Ctx<'a> {
    fn new(flow: &'a Flow, scope: &Scope) -> Ctx<'a> {
        let mut by_env: HashMap<(&str, &str), Vec<&Deployment>> = HashMap::new();
        for d in flow.deployments.values() {
            if scope.covers(&d.project, &d.environment) {
                by_env.entry((&d.project, &d.environment)).or_default().push(d);
            }
        }
        for v in by_env.values_mut() {
            v.sort_by_key(|d| (d.started_at, d.deploy));
        }
        // Incidents in the order they opened (ids sort `#10` before `#9`).
        let mut all: Vec<&Incident> = flow.incidents.incidents.values().collect();
        all.sort_by(|a, b| (a.opened_at, &a.id).cmp(&(b.opened_at, &b.id)));
        let mut incidents: HashMap<(&str, &str), Vec<&Incident>> = HashMap::new();
        let mut caused = HashMap::new();
        for i in all {
            if !by_env.contains_key(&(i.project.as_str(), i.environment.as_str())) {
                continue;
            }
            incidents.entry((&i.project, &i.environment)).or_default().push(i);
            if let Some(c) = &i.cause {
                caused.entry(c.as_str()).or_insert(i);
            }
        }
        Ctx {
            by_env,
            incidents,
            caused,
        }
    }

    /// Incidents of `d`'s environment.
    fn incidents_of<'s>(&'s self, d: &'a Deployment) -> &'s [&'a Incident] {
        self.incidents
            .get(&(d.project.as_str(), d.environment.as_str()))
            .map_or(&[], Vec::as_slice)
    }

    /// A fix deployment: a change that says which incident it fixes (`--fixes`), or one made
    /// by hand or by a pipeline while an incident of its environment was open.
    fn is_fix(&self, d: &'a Deployment) -> bool {
        let during_incident = || {
            self.incidents_of(d)
                .iter()
                .any(|i| i.opened_at <= d.started_at && i.resolved_at.is_none_or(|r| d.started_at < r))
        };
        d.is_change()
            && !matches!(d.trigger, DeployTrigger::Automatic { .. })
            && (d.fixes.is_some() || during_incident())
    }

    /// Whether change deployment `env[k]` needed immediate intervention, and how it ended.
    fn failure(&self, env: &[&'a Deployment], k: usize) -> Option<Failure> {
        let d = env[k];
        let id = deploy_id(d);
        // What came after it in its environment, up to the next change.
        let later = &env[k + 1..];
        let next_change = later.iter().position(|o| o.is_change());
        let before_next = &later[..next_change.unwrap_or(later.len())];
        let rolled_back_by_hand = before_next
            .iter()
            .find(|o| o.rollback && o.outcome == Some(DeployOutcome::Succeeded));
        let fix = next_change.map(|n| later[n]).filter(|o| self.is_fix(o));
        let end = next_change.map_or(OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT), |n| {
            later[n].started_at
        });
        // Its incident: the one marked as caused by it, or else one of its environment opened
        // while it ran (before the next change).
        let marked = self.caused.get(id.as_str()).copied();
        let incident = marked.or_else(|| {
            self.incidents_of(d)
                .iter()
                .find(|i| d.started_at <= i.opened_at && i.opened_at < end)
                .copied()
        });
        let auto_rolled_back = matches!(
            d.outcome,
            Some(DeployOutcome::RolledBack | DeployOutcome::RollbackFailed)
        );
        if !(auto_rolled_back || rolled_back_by_hand.is_some() || marked.is_some() || fix.is_some()) {
            return None;
        }
        let impact_from = incident
            .map(|i| i.impact_started_at)
            .or(d.finished_at)
            .unwrap_or(d.started_at);
        let restores = [
            (d.outcome == Some(DeployOutcome::RolledBack))
                .then_some(d.finished_at)
                .flatten(),
            rolled_back_by_hand.and_then(|o| o.finished_at),
            fix.filter(|f| f.outcome == Some(DeployOutcome::Succeeded))
                .and_then(|f| f.finished_at),
            incident.and_then(|i| i.resolved_at),
        ];
        Some(Failure {
            impact_from,
            restored_at: restores.into_iter().flatten().min(),
        })
    }
}

/// How one failed deployment failed and when it was restored.
struct Failure {
    impact_from: OffsetDateTime,
    restored_at: Option<OffsetDateTime>,
}

/// The five keys for `scope`.
pub fn report(flow: &Flow, scope: &Scope, t: &Thresholds) -> Dora {
    let ctx = Ctx::new(flow, scope);
    let finished_within = |d: &Deployment| d.finished_at.is_some_and(|f| scope.within(f));
    let days = ((scope.to - scope.from).as_seconds_f64() / DAY).max(1.0 / 24.0);

    // Deployment frequency.
    let succeeded = ctx
        .by_env
        .values()
        .flatten()
        .filter(|d| finished_within(d) && d.is_change() && d.outcome == Some(DeployOutcome::Succeeded))
        .count();
    let per_day = succeeded as f64 / days;
    let bucket = if per_day > 1.0 {
        Bucket::OnDemand
    } else if per_day >= 1.0 / 7.0 {
        Bucket::Daily
    } else if per_day >= 1.0 / 30.0 {
        Bucket::Weekly
    } else if per_day >= 1.0 / 182.0 {
        Bucket::Monthly
    } else {
        Bucket::Fewer
    };
    let band = {
        let [e, h, m] = t.frequency_per_day;
        if per_day >= e {
            Band::Elite
        } else if per_day >= h {
            Band::High
        } else if per_day >= m {
            Band::Medium
        } else {
            Band::Low
        }
    };
    let deployment_frequency = Frequency {
        deployments: succeeded,
        per_day,
        per_week: per_day * 7.0,
        bucket,
        band,
    };

    // Change lead time: each commit at the first production deployment that shipped it.
    let ship = crate::shipped(flow, scope);
    let (mut total, mut wait, mut pipeline, mut promotion) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in &ship.commits {
        total.push(secs(c.lead()));
        if let Some(r) = c.run
            && let (Some(s), Some(f)) = (r.started_at, r.finished_at)
        {
            wait.push(secs(s - c.committed_at).max(0.0));
            pipeline.push(secs(f - s).max(0.0));
            promotion.push(secs(c.done - f).max(0.0));
        }
    }
    let (non_positive, unknown_commit, without_commits) =
        (ship.non_positive, ship.unknown_commit, ship.without_commits);
    let total = spread(total);
    let change_lead_time = LeadTime {
        band: total
            .filter(|s| s.sample >= t.min_sample)
            .map(|s| band_at_most(s.p50, t.lead_time_s)),
        total,
        wait: spread(wait),
        pipeline: spread(pipeline),
        promotion: spread(promotion),
        non_positive,
        unknown_commit,
        without_commits,
    };

    // Change fail rate, recovery and rework, over the changes that took traffic.
    let mut took = 0;
    let (mut failed, mut fixes) = (Vec::new(), Vec::new());
    let mut recovery = Vec::new();
    let mut unrestored = 0;
    for env in ctx.by_env.values() {
        for (k, d) in env.iter().enumerate() {
            if !(finished_within(d) && d.is_change() && d.took_traffic()) {
                continue;
            }
            took += 1;
            if ctx.is_fix(d) {
                fixes.push((d.started_at, deploy_id(d)));
            }
            if let Some(f) = ctx.failure(env, k) {
                failed.push((d.started_at, deploy_id(d)));
                match f.restored_at {
                    Some(r) if r >= f.impact_from => recovery.push(secs(r - f.impact_from)),
                    Some(_) => recovery.push(0.0),
                    None => unrestored += 1,
                }
            }
        }
    }
    // In the order they started.
    let ordered = |mut v: Vec<(OffsetDateTime, String)>| {
        v.sort();
        v.into_iter().map(|(_, id)| id).collect::<Vec<String>>()
    };
    let (failed, fixes) = (ordered(failed), ordered(fixes));
    let rate = |count: Vec<String>, bounds: [f64; 3]| {
        let r = (took > 0).then(|| count.len() as f64 / took as f64);
        Rate {
            count: count.len(),
            of: took,
            rate: r,
            band: r.filter(|_| took >= t.min_sample).map(|r| band_at_most(r, bounds)),
            deployments: count,
        }
    };
    let time = spread(recovery);
    Dora {
        deployment_frequency,
        change_lead_time,
        change_fail_rate: rate(failed, t.change_fail_rate),
        recovery_time: Recovery {
            band: time
                .filter(|s| s.sample >= t.min_sample)
                .map(|s| band_at_most(s.p50, t.recovery_s)),
            time,
            unrestored,
        },
        rework_rate: rate(fixes, t.rework_rate),
    }
}
