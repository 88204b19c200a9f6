//! Small pieces every page uses: times, durations, status colours, bars, buttons, and the
//! flow page's tiles and charts.

use maud::{Markup, html};
use serde::Serialize;
use serde_json::Value;
use takt_model::OffsetDateTime;

/// A typed value's one word as the API spells it (`success`, `blue_green`, ...); a tagged
/// value as `tag: value`.
pub fn word<T: Serialize + ?Sized>(x: &T) -> String {
    match serde_json::to_value(x) {
        Ok(Value::String(s)) => s,
        // Internally tagged: the kind, then what it names (`stage test`).
        Ok(Value::Object(m)) if m.get("kind").is_some_and(Value::is_string) => {
            let mut out = m.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
            for v in m.iter().filter(|(k, _)| *k != "kind").filter_map(|(_, v)| v.as_str()) {
                out.push(' ');
                out.push_str(v);
            }
            out
        }
        Ok(Value::Object(m)) if m.len() == 1 => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}"),
                Value::Object(inner) => {
                    let fields: Vec<String> = inner
                        .iter()
                        .map(|(a, b)| format!("{a} {}", b.as_str().map_or_else(|| b.to_string(), str::to_string)))
                        .collect();
                    format!("{k} ({})", fields.join(", "))
                }
                other => format!("{k}: {other}"),
            })
            .collect(),
        Ok(Value::Null) | Err(_) => String::new(),
        Ok(v) => v.to_string(),
    }
}

/// The class that colours a status word.
pub fn state_class(state: &str) -> String {
    format!("st st-{state}")
}

/// A commit or digest, shortened.
pub fn short(s: &str) -> &str {
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    s.get(..12).unwrap_or(s)
}

pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

pub fn seconds(s: f64) -> String {
    duration((s.max(0.0) * 1000.0) as u64)
}

pub fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// A UTC time; the page's script puts the local time in its title.
pub fn time(t: &OffsetDateTime) -> Markup {
    let iso = takt_model::timefmt::rfc3339(*t);
    time_str(&iso)
}

/// An RFC 3339 time as the API gives it.
pub fn time_str(iso: &str) -> Markup {
    let shown = iso
        .get(..19)
        .map(|s| s.replace('T', " "))
        .unwrap_or_else(|| iso.to_string());
    html! { time datetime=(iso) { (shown) " UTC" } }
}

/// How much of a budget a duration used, as a bar (red past 100%).
pub fn bar(used_ms: u64, budget_ms: u64, what: &str) -> Markup {
    let pct = if budget_ms == 0 {
        100.0
    } else {
        used_ms as f64 * 100.0 / budget_ms as f64
    };
    let over = pct > 100.0;
    html! {
        div.budget title={ (format!("{pct:.0}%")) " " (what) " (" (duration(budget_ms)) ")" } {
            span.fill.over[over] style={ "width:" (format!("{:.0}", pct.min(100.0))) "%" } {}
            span.label { (format!("{pct:.0}%")) " " (what) }
        }
    }
}

/// A form that posts one API route through `/ui/do`; `ask` adds a required text field of
/// that name (e.g. a halt's reason).
pub fn button(
    csrf: &str,
    label: &str,
    api: &str,
    body: Option<&Value>,
    back: &str,
    danger: bool,
    ask: Option<&str>,
) -> Markup {
    html! {
        form.act method="post" action="/ui/do" {
            input type="hidden" name="_csrf" value=(csrf);
            input type="hidden" name="_api" value=(api);
            input type="hidden" name="_back" value=(back);
            @if let Some(b) = body { input type="hidden" name="_body" value=(b.to_string()); }
            @if let Some(field) = ask {
                input type="text" name=(field) required placeholder=(field) aria-label={ (label) ": " (field) };
            }
            button.danger[danger] type="submit" { (label) }
        }
    }
}

/// A flag's rollout, when its targeting is a `fractional` split (takt's `--rollout`).
pub fn rollout(targeting: &Option<Value>) -> String {
    let Some(t) = targeting else { return "—".into() };
    let frac = t.get("fractional").and_then(Value::as_array);
    match frac {
        Some(parts) => {
            let shares: Vec<String> = parts
                .iter()
                .filter_map(Value::as_array)
                .filter_map(|p| Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_u64()?)))
                .collect();
            shares.join(" / ")
        }
        None => "rule".into(),
    }
}

fn band(b: Option<&takt_flow::dora::Band>) -> Markup {
    html! {
        @match b {
            Some(b) => { span class={ "band band-" (word(b)) } { (word(b)) } }
            None => { span.band.muted { "no band (too few)" } }
        }
    }
}

fn trend(now: Option<f64>, before: Option<f64>, lower_is_better: bool) -> Markup {
    let (Some(n), Some(b)) = (now, before) else {
        return html! {};
    };
    let better = if lower_is_better { n < b } else { n > b };
    let arrow = if (n - b).abs() < f64::EPSILON {
        "→"
    } else if n > b {
        "↑"
    } else {
        "↓"
    };
    html! { span.trend.better[better && (n - b).abs() >= f64::EPSILON] title="against the window before" { (arrow) } }
}

fn percent(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn seconds_not(x: f64) -> String {
    format!("{x:.2}")
}

/// One key's last eight weeks as a small bar chart (scaled to its largest week).
fn week_chart(
    weeks: &[takt_api::WeekKeys],
    what: &str,
    value: impl Fn(&takt_api::WeekKeys) -> Option<f64>,
    show: fn(f64) -> String,
) -> Markup {
    let values: Vec<Option<f64>> = weeks.iter().map(&value).collect();
    let top = values.iter().flatten().copied().fold(0.0_f64, f64::max);
    if weeks.is_empty() {
        return html! {};
    }
    html! {
        svg.trendchart viewBox="0 0 160 40" role="img" aria-label={ (what) ", week by week" } {
            @for (n, (w, v)) in weeks.iter().zip(&values).enumerate() {
                @let h = match v { Some(v) if top > 0.0 => (v / top * 36.0).max(1.0), _ => 0.0 };
                rect.bar x=(n * 20 + 2) y=(format!("{:.1}", 38.0 - h)) width="16" height=(format!("{h:.1}")) {
                    title { "week of " (w.from.get(..10).unwrap_or(&w.from)) ": " (v.map_or_else(|| "none".to_string(), show)) }
                }
            }
        }
    }
}

/// The flow page: the DORA keys as tiles, the bottleneck, work and wait on the critical
/// paths, the coffee test, flaky tests.
pub fn flow(r: &takt_api::FlowReport, flaky: &takt_api::FlakyList) -> Markup {
    let d = &r.dora;
    let pv = &r.previous;
    let lt = d.change_lead_time.total.as_ref();
    let rec = d.recovery_time.time.as_ref();
    html! {
        h1 { "Flow" @if let Some(p) = &r.project { " of " (p) } }
        p.muted { "Production: " (r.environments.join(", ")) "; " (time_str(&r.from)) " to " (time_str(&r.to)) "." }
        ul.tiles #dora {
            li.tile {
                h2 { "Deployment frequency" }
                p.value { (format!("{:.2}", d.deployment_frequency.per_day)) "/day " (trend(Some(d.deployment_frequency.per_day), Some(pv.deployment_frequency.per_day), false)) }
                p { (band(Some(&d.deployment_frequency.band))) " " (word(&d.deployment_frequency.bucket)) }
                p.muted { "sample " (d.deployment_frequency.deployments) }
                (week_chart(&r.weeks, "deployments a day", |w| Some(w.deployments_per_day), seconds_not))
            }
            li.tile {
                h2 { "Change lead time" }
                p.value { @if let Some(s) = lt { (seconds(s.p50)) " p50" } @else { "—" } " " (trend(lt.map(|s| s.p50), pv.change_lead_time.total.as_ref().map(|s| s.p50), true)) }
                p { (band(d.change_lead_time.band.as_ref())) @if let Some(s) = lt { " p90 " (seconds(s.p90)) } }
                p.muted { "sample " (lt.map_or(0, |s| s.sample)) }
                (week_chart(&r.weeks, "lead time p50", |w| w.lead_time_p50, seconds))
            }
            li.tile {
                h2 { "Change fail rate" }
                p.value { @if let Some(x) = d.change_fail_rate.rate { (format!("{:.0}%", x * 100.0)) } @else { "—" } " " (trend(d.change_fail_rate.rate, pv.change_fail_rate.rate, true)) }
                p { (band(d.change_fail_rate.band.as_ref())) }
                p.muted { (d.change_fail_rate.count) " of " (d.change_fail_rate.of) }
                (week_chart(&r.weeks, "change fail rate", |w| w.change_fail_rate, percent))
            }
            li.tile {
                h2 { "Failed deployment recovery time" }
                p.value { @if let Some(s) = rec { (seconds(s.p50)) " p50" } @else { "—" } " " (trend(rec.map(|s| s.p50), pv.recovery_time.time.as_ref().map(|s| s.p50), true)) }
                p { (band(d.recovery_time.band.as_ref())) }
                p.muted { "sample " (rec.map_or(0, |s| s.sample)) }
                (week_chart(&r.weeks, "recovery time p50", |w| w.recovery_p50, seconds))
            }
            li.tile {
                h2 { "Deployment rework rate" }
                p.value { @if let Some(x) = d.rework_rate.rate { (format!("{:.0}%", x * 100.0)) } @else { "—" } " " (trend(d.rework_rate.rate, pv.rework_rate.rate, true)) }
                p { (band(d.rework_rate.band.as_ref())) }
                p.muted { (d.rework_rate.count) " of " (d.rework_rate.of) }
                (week_chart(&r.weeks, "rework rate", |w| w.rework_rate, percent))
            }
        }
        section {
            h2 { "Bottleneck" }
            p.callout { (r.bottleneck.summary) }
            @if !r.bottleneck.shares.is_empty() {
                figure { (super::graph::shares(&r.bottleneck.shares)) figcaption { "Where commit → production time goes." } }
            }
            @if !r.bottleneck.weeks.is_empty() {
                figure { (super::graph::weeks(&r.bottleneck.weeks.iter().map(|w| (w.week.clone(), w.share, word(&w.bottleneck))).collect::<Vec<_>>(), "bottleneck's share")) figcaption { "Each week's bottleneck and its share." } }
            }
        }
        section {
            h2 { "Work and wait on the critical path" }
            table {
                thead { tr { th scope="col" { "Job" } th scope="col" { "Runs" } th scope="col" { "Work p50" } th scope="col" { "Wait p50" } th scope="col" { "Shortens most" } } }
                tbody {
                    @for j in &r.paths.jobs {
                        tr { td { (j.project) " " (j.job) } td { (j.runs) } td { @if let Some(w) = &j.work { (seconds(w.p50)) } } td { @if let Some(w) = &j.wait { (seconds(w.p50)) } } td { (j.shortens) } }
                    }
                }
            }
        }
        section {
            h2 { "Coffee test" }
            p { @if let Some(s) = r.coffee.share { (format!("{:.0}%", s * 100.0)) } @else { "—" } " of " (r.coffee.runs) " runs within their budget." }
            @if !r.coffee.weeks.is_empty() {
                figure { (super::graph::weeks(&r.coffee.weeks.iter().map(|w| (w.week.clone(), w.share, format!("{} of {}", w.within, w.runs))).collect::<Vec<_>>(), "within budget")) figcaption { "Share of runs within budget, by week." } }
            }
        }
        section {
            h2 { "Flaky tests" }
            @if flaky.tests.is_empty() { p { "None found." } }
            ul { @for f in &flaky.tests { li { code { (f.id.suite) "::" (f.id.name) } " (" (f.id.project) " " (f.id.job) "): flaky on " (f.flaky_commits) " of " (f.commits) " commits" } } }
        }
    }
}
