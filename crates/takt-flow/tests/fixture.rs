//! The flow metrics on a generated history of about 3,000 events (three projects, four weeks:
//! retries, flaky tests, rollbacks by analysis and by hand, the same digest twice, commits
//! whose clock is ahead, incidents, fixes), checked exactly against the figures that
//! `tests/fixture/make.py` computes on its own from docs/metrics.md (it shares no code with
//! the crate).

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use takt_flow::{Flow, Scope};
use takt_model::Event;
use takt_views::Projection;

fn spread(s: Option<takt_flow::Spread>) -> Value {
    match s {
        None => Value::Null,
        Some(s) => serde_json::json!({"p50": s.p50, "p90": s.p90, "sample": s.sample}),
    }
}

#[test]
fn every_figure_matches_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixture/make.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(dir.path())
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let events: Vec<Event> = text
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}: {l}", i + 1)))
        .collect();
    assert!(events.len() >= 1000, "{} events", events.len());
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json")).unwrap()).unwrap();
    let flow = Flow::fold(&events);
    let production = |_: &str, e: &str| e == "production";
    for w in expected["windows"].as_array().unwrap() {
        let time = |k: &str| takt_model::timefmt::parse_rfc3339(w[k].as_str().unwrap()).unwrap();
        let scope = Scope {
            project: w["project"].as_str(),
            production: &production,
            from: time("from"),
            to: time("to"),
        };
        let d = takt_flow::dora::report(&flow, &scope, &takt_flow::dora::Thresholds::default());
        let l = &d.change_lead_time;
        let got = serde_json::json!({
            "deployments": d.deployment_frequency.deployments,
            "lead_time": spread(l.total),
            "wait": spread(l.wait),
            "non_positive": l.non_positive,
            "unknown_commit": l.unknown_commit,
            "without_commits": l.without_commits,
            "failed": d.change_fail_rate.deployments,
            "fixes": d.rework_rate.deployments,
            "took_traffic": d.change_fail_rate.of,
            "recovery": spread(d.recovery_time.time),
            "unrestored": d.recovery_time.unrestored,
        });
        let want = &w["report"];
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&got[k], v, "{k} of {} {}..{}", w["project"], w["from"], w["to"]);
        }
    }
    let flaky = takt_flow::flaky::flaky(&flow.tests, None);
    let mut got: Vec<Value> = flaky
        .iter()
        .map(|f| {
            serde_json::json!({"project": f.id.project, "job": f.id.job, "suite": f.id.suite, "name": f.id.name,
                "flaky_commits": f.flaky_commits, "commits": f.commits, "runs": f.runs})
        })
        .collect();
    got.sort_by_key(|v| v.to_string());
    let mut want = expected["flaky"].as_array().unwrap().clone();
    want.sort_by_key(|v| v.to_string());
    assert_eq!(got, want);
    assert!(!want.is_empty(), "the fixture has flaky tests");
}
