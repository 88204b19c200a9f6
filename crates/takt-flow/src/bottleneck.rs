//! The bottleneck, in the theory of constraints' sense: of the lead time of the commits shipped
//! to production, the share each stage of the pipeline and each wait takes; the largest is the
//! bottleneck. Week by week, and the week it moved to another stage.

use crate::stats::secs;
use crate::{Flow, Scope, ShippedCommit};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where lead time goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Part {
    /// Commit → its pipeline's start.
    WaitForPipeline,
    /// A stage of the pipeline (its share of the run's time).
    Stage(String),
    /// The pipeline's finish → the production deployment's start (promotion, soak, a
    /// person to deploy).
    WaitForPromotion,
    /// Waiting for `takt approve` inside the deployment.
    Approval,
    /// The deployment itself.
    Deploy,
}

impl Part {
    /// For people: `the test stage`, `wait for approval`.
    pub fn describe(&self) -> String {
        match self {
            Part::WaitForPipeline => "wait for a pipeline".into(),
            Part::Stage(s) => format!("the {s} stage"),
            Part::WaitForPromotion => "wait for promotion to production".into(),
            Part::Approval => "wait for approval".into(),
            Part::Deploy => "the deployment".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub part: Part,
    /// Seconds of lead time, summed over the commits.
    pub seconds: f64,
    /// Of all the lead time.
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Week {
    /// Its Monday (UTC), `YYYY-MM-DD`.
    pub week: String,
    pub bottleneck: Part,
    pub share: f64,
    pub commits: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bottleneck {
    /// Largest first.
    pub shares: Vec<Share>,
    /// Commits measured (those whose run is known).
    pub commits: usize,
    pub weeks: Vec<Week>,
    /// The last week whose bottleneck differs from the week before's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<String>,
    /// One sentence: `wait for approval is 61% of lead time; the week before it was the test stage`.
    pub summary: String,
}

/// One commit's lead time, split into parts (none when its run is not known).
fn split(c: &ShippedCommit) -> Option<Vec<(Part, f64)>> {
    let r = c.run?;
    let (start, finish) = (r.started_at?, r.finished_at?);
    let d = c.deployment;
    let pipeline = secs(finish - start).max(0.0);
    let mut parts = vec![(Part::WaitForPipeline, secs(start - c.committed_at).max(0.0))];
    let spans: f64 = r.stages.values().map(|(a, b)| secs(*b - *a).max(0.0)).sum();
    if spans > 0.0 {
        for (stage, (a, b)) in &r.stages {
            parts.push((
                Part::Stage(stage.to_string()),
                pipeline * secs(*b - *a).max(0.0) / spans,
            ));
        }
    } else {
        parts.push((Part::Stage("pipeline".into()), pipeline));
    }
    parts.push((Part::WaitForPromotion, secs(d.started_at - finish).max(0.0)));
    let approval = secs(d.approval_wait).max(0.0);
    parts.push((Part::Approval, approval));
    parts.push((Part::Deploy, (secs(c.done - d.started_at) - approval).max(0.0)));
    Some(parts)
}

fn shares(sums: BTreeMap<Part, f64>) -> Vec<Share> {
    let total: f64 = sums.values().sum();
    let mut v: Vec<Share> = sums
        .into_iter()
        .filter(|(_, s)| *s > 0.0)
        .map(|(part, seconds)| Share {
            part,
            seconds,
            share: if total > 0.0 { seconds / total } else { 0.0 },
        })
        .collect();
    v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.part.cmp(&b.part)));
    v
}

/// The Monday of `t`'s week.
pub(crate) fn monday(t: takt_model::OffsetDateTime) -> String {
    let d = t.date();
    let m = d - time::Duration::days(i64::from(d.weekday().number_days_from_monday()));
    takt_model::timefmt::ymd(m)
}

pub fn report(flow: &Flow, scope: &Scope) -> Bottleneck {
    let ship = crate::shipped(flow, scope);
    let mut all: BTreeMap<Part, f64> = BTreeMap::new();
    let mut weekly: BTreeMap<String, (BTreeMap<Part, f64>, usize)> = BTreeMap::new();
    let mut commits = 0;
    for c in &ship.commits {
        let Some(parts) = split(c) else { continue };
        commits += 1;
        let week = weekly.entry(monday(c.done)).or_default();
        week.1 += 1;
        for (p, s) in parts {
            *all.entry(p.clone()).or_default() += s;
            *week.0.entry(p).or_default() += s;
        }
    }
    let weeks: Vec<Week> = weekly
        .into_iter()
        .filter_map(|(week, (sums, n))| {
            let top = shares(sums).into_iter().next()?;
            Some(Week {
                week,
                bottleneck: top.part,
                share: top.share,
                commits: n,
            })
        })
        .collect();
    let moved = weeks
        .windows(2)
        .rev()
        .find(|w| w[0].bottleneck != w[1].bottleneck)
        .map(|w| w[1].week.clone());
    let shares = shares(all);
    let summary = match shares.first() {
        None => "no commit reached production in this window with its pipeline known".to_string(),
        Some(top) => {
            let mut s = format!(
                "{} is {:.0}% of lead time",
                capitalise(&top.part.describe()),
                top.share * 100.0
            );
            if let [.., before, last] = weeks.as_slice()
                && before.bottleneck != last.bottleneck
            {
                s.push_str(&format!(
                    "; the week before ({}) it was {}",
                    before.week,
                    before.bottleneck.describe()
                ));
            }
            s
        }
    };
    Bottleneck {
        shares,
        commits,
        weeks,
        moved,
        summary,
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
