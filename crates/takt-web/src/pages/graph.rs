//! The pictures, as small SVG templates: a run's pipeline graph, an incident's time axis, and
//! the flow page's bars. Each has a title and text, so it reads without colour too.

use super::render::{seconds, word};
use maud::{Markup, html};
use std::collections::{BTreeMap, HashMap};
use takt_model::OffsetDateTime;
use takt_views::RunView;

const W: i64 = 168;
const H: i64 = 34;
const GAP: i64 = 56;
const VGAP: i64 = 14;
const PAD: i64 = 8;
/// Above this many lines between two stages, the stage order is left to the columns.
const MAX_STAGE_EDGES: usize = 64;

/// The pipeline: one column per stage in queue order, one box per job, a line per `needs`
/// (or from each job of the stage before); the critical path is drawn thick.
pub fn pipeline(r: &RunView, critical: &[&str], here: &str) -> Markup {
    let mut stages: Vec<&str> = Vec::new();
    for j in &r.jobs {
        let s = j.stage.as_deref().unwrap_or("");
        if !stages.contains(&s) {
            stages.push(s);
        }
    }
    let mut at: HashMap<&str, (i64, i64)> = HashMap::new();
    let mut rows: BTreeMap<usize, i64> = BTreeMap::new();
    for j in &r.jobs {
        let col = stages
            .iter()
            .position(|s| *s == j.stage.as_deref().unwrap_or(""))
            .unwrap_or(0);
        let row = rows.entry(col).or_insert(0);
        at.insert(
            j.name.as_str(),
            (PAD + col as i64 * (W + GAP), PAD + 22 + *row * (H + VGAP)),
        );
        *row += 1;
    }
    let width = PAD * 2 + stages.len().max(1) as i64 * (W + GAP) - GAP;
    let height = PAD * 2 + 22 + rows.values().copied().max().unwrap_or(1) * (H + VGAP);
    let on_path = |a: &str, b: &str| critical.windows(2).any(|w| w[0] == a && w[1] == b);
    let mut edges: Vec<(&str, &str)> = Vec::new();
    for (i, j) in r.jobs.iter().enumerate() {
        match &j.needs {
            Some(needs) => edges.extend(needs.iter().map(|n| (n.as_str(), j.name.as_str()))),
            None => {
                let stage = j.stage.as_deref().unwrap_or("");
                let col = stages.iter().position(|s| *s == stage).unwrap_or(0);
                if col == 0 {
                    continue;
                }
                let before: Vec<&str> = r.jobs[..i]
                    .iter()
                    .filter(|p| p.stage.as_deref() == Some(stages[col - 1]))
                    .map(|p| p.name.as_str())
                    .collect();
                let this_stage = r.jobs.iter().filter(|x| x.stage.as_deref() == Some(stage)).count();
                if before.len() * this_stage <= MAX_STAGE_EDGES {
                    edges.extend(before.into_iter().map(|b| (b, j.name.as_str())));
                }
            }
        }
    }
    html! {
        svg.pipeline viewBox={ "0 0 " (width) " " (height) } width=(width) height=(height) role="img" aria-labelledby="pipeline-title" {
            title #pipeline-title { "Pipeline of run #" (r.run) ": " (r.jobs.len()) " jobs in " (stages.len()) " stages" }
            @for (i, s) in stages.iter().enumerate() {
                text.stage x=(PAD + i as i64 * (W + GAP)) y=(PAD + 12) { (s) }
            }
            @for (from, to) in &edges {
                @if let (Some((x1, y1)), Some((x2, y2))) = (at.get(from), at.get(to)) {
                    @let (sx, sy, ex, ey) = (x1 + W, y1 + H / 2, *x2, y2 + H / 2);
                    path.edge.crit[on_path(from, to)] d={ "M" (sx) "," (sy) " C" (sx + GAP / 2) "," (sy) " " (ex - GAP / 2) "," (ey) " " (ex) "," (ey) } {}
                }
            }
            @for j in &r.jobs {
                @if let Some((x, y)) = at.get(j.name.as_str()) {
                    @let st = j.status.map(|s| s.name()).unwrap_or("created");
                    a href={ (here) "#job-" (j.name) } {
                        rect class={ "node st-" (st) @if critical.contains(&j.name.as_str()) { " crit" } } x=(x) y=(y) width=(W) height=(H) rx="6" {
                            title { (j.name) ": " (st) }
                        }
                        text.job x=(x + 10) y=(y + H / 2 + 5) { (clip(&j.name)) }
                    }
                }
            }
        }
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() <= 20 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(19).collect::<String>())
    }
}

/// An incident on one axis with the deployments suspected of it and the flag changes before it.
pub fn incident_axis(d: &takt_api::IncidentDetail) -> Markup {
    let i = &d.incident;
    let mut times: Vec<OffsetDateTime> = vec![i.impact_started_at, i.opened_at];
    times.extend(i.resolved_at);
    times.extend(d.suspects.iter().map(|s| s.started_at));
    times.extend(d.flag_changes.iter().map(|f| f.at));
    times.extend(i.timeline.iter().map(|e| e.at));
    let (Some(lo), Some(hi)) = (times.iter().min().copied(), times.iter().max().copied()) else {
        return html! {};
    };
    let span = (hi - lo).as_seconds_f64().max(1.0);
    let (width, left, right) = (720.0_f64, 20.0_f64, 700.0_f64);
    let x = |t: OffsetDateTime| left + (t - lo).as_seconds_f64() / span * (right - left);
    let end = i.resolved_at.unwrap_or(hi);
    html! {
        svg.axis viewBox={ "0 0 " (width) " 120" } role="img" aria-labelledby="axis-title" {
            title #axis-title { "Incident " (i.id) " over " (seconds(span)) ", with " (d.suspects.len()) " suspected deployments and " (d.flag_changes.len()) " flag changes" }
            rect.impact x=(format!("{:.1}", x(i.impact_started_at))) y="40" width=(format!("{:.1}", (x(end) - x(i.impact_started_at)).max(2.0))) height="24" {
                title { "impact from " (takt_model::timefmt::rfc3339(i.impact_started_at)) }
            }
            line.axisline x1=(left) y1="64" x2=(right) y2="64" {}
            @for (n, s) in d.suspects.iter().enumerate() {
                g.deploy.suspect[n == 0] {
                    line x1=(format!("{:.1}", x(s.started_at))) y1="14" x2=(format!("{:.1}", x(s.started_at))) y2="64" {}
                    text x=(format!("{:.1}", x(s.started_at) + 3.0)) y=(24 + (n % 3) * 13) { (s.deployment) }
                    title { (s.deployment) " " (s.artifact.name) "@" (s.artifact.version) }
                }
            }
            @for f in &d.flag_changes {
                g.flagchange {
                    circle cx=(format!("{:.1}", x(f.at))) cy="86" r="5" {}
                    text x=(format!("{:.1}", x(f.at) + 8.0)) y="90" { (f.flag) }
                    title { "flag " (f.flag) " changed (" (word(&f.source)) ")" }
                }
            }
            text x=(left) y="112" { (takt_model::timefmt::rfc3339(lo)) }
            text x=(right) y="112" text-anchor="end" { (takt_model::timefmt::rfc3339(hi)) }
        }
    }
}

/// Shares of the commit → production time, as one stacked bar with a legend.
pub fn shares(shares: &[takt_flow::bottleneck::Share]) -> Markup {
    let mut parts = Vec::new();
    let mut left = 0.0;
    for s in shares {
        parts.push((left, s.share * 720.0, s));
        left += s.share * 720.0;
    }
    html! {
        svg.shares viewBox="0 0 720 64" role="img" aria-labelledby="shares-title" {
            title #shares-title { "Share of each part of commit → production time" }
            @for (n, (x, w, s)) in parts.iter().enumerate() {
                rect class={ "part part-" (n % 6) } x=(format!("{x:.1}")) y="0" width=(format!("{w:.1}")) height="28" {
                    title { (word(&s.part)) ": " (format!("{:.0}%", s.share * 100.0)) ", " (seconds(s.seconds)) }
                }
                @if *w > 60.0 { text x=(format!("{:.1}", x + 4.0)) y="46" { (word(&s.part)) " " (format!("{:.0}%", s.share * 100.0)) } }
            }
        }
    }
}

/// One bar per week (`share` of 0 to 1), labelled.
pub fn weeks(weeks: &[(String, f64, String)], what: &str) -> Markup {
    let bw = 44.0;
    let width = (weeks.len() as f64 * (bw + 8.0)).max(100.0);
    html! {
        svg.weeks viewBox={ "0 0 " (format!("{width:.0}")) " 140" } role="img" aria-label={ "By week: " (what) } {
            @for (n, (week, share, note)) in weeks.iter().enumerate() {
                @let h = share.clamp(0.0, 1.0) * 100.0;
                @let x = n as f64 * (bw + 8.0);
                rect.bar x=(format!("{x:.1}")) y=(format!("{:.1}", 110.0 - h)) width=(bw) height=(format!("{h:.1}")) {
                    title { (week) ": " (format!("{:.0}%", share * 100.0)) " " (what) " — " (note) }
                }
                text x=(format!("{x:.1}")) y="128" { (week.rsplit('-').next().unwrap_or(week)) }
            }
        }
    }
}
