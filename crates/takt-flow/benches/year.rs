//! The flow metrics over a year of ten projects, about 1,000,000 events: how long folding the
//! log into the `Flow` view takes (what `takt serve` does once at start), how long the five
//! keys and the bottleneck take from the view (what each `GET /api/v1/metrics` does; target
//! ≤ 200 ms), and the memory the view holds (target ≤ 200 MiB). The baseline, measured in the
//! same run, is answering a report by folding the log again. Run with
//! `cargo bench -p takt-flow`.
//!
//! `cargo bench -p takt-flow --bench year -- --jsonl FILE` writes the same events to FILE, one
//! JSON event a line, and stops: `bench/metrics.py` loads them into a server's store.

#![allow(clippy::unwrap_used)] // a benchmark may panic: that is how it fails

use std::hint::black_box;
use std::time::Instant;
use takt_flow::{Flow, Scope};
use takt_model::*;
use takt_views::Projection;

const PROJECTS: usize = 10;
const DAYS: i64 = 365;
/// Commits (each one run, one staging and usually one production deploy) per project and day.
const PER_DAY: i64 = 10;

fn event(project: &str, run: Option<u64>, at: OffsetDateTime, kind: EventKind) -> Event {
    let mut e = Event::now(project, run, kind);
    e.at = at;
    e
}

fn art(d: &str) -> ArtifactRef {
    ArtifactRef {
        name: "app".into(),
        version: d.into(),
        digest: d.into(),
        commit: None,
    }
}

fn year() -> Vec<Event> {
    let t0 = time::macros::datetime!(2025-12-01 00:00 UTC);
    let mut out = Vec::new();
    for p in 0..PROJECTS {
        let project = format!("p{p}");
        let mut run = 0u64;
        let mut deploys = [0u64; 2];
        let mut running: Option<String> = None;
        let mut incidents = 0;
        for day in 0..DAYS {
            for k in 0..PER_DAY {
                run += 1;
                let at = t0 + time::Duration::days(day) + time::Duration::minutes(k * 140 + p as i64);
                let sha = format!("{project}-{run:06}");
                let m = |min: i64| at + time::Duration::minutes(min);
                out.push(event(
                    &project,
                    None,
                    at,
                    EventKind::CommitInfo {
                        commit: sha.clone(),
                        author: "ana".into(),
                        email: None,
                        committed_at: at,
                        subject: "a change".into(),
                    },
                ));
                let r = Some(run);
                let queued = EventKind::RunQueued {
                    commit: sha.clone(),
                    branch: Some("main".into()),
                    tag: None,
                    trigger: Trigger::Poll,
                    dirty: false,
                    merge_request: None,
                };
                out.push(event(&project, r, m(1), queued));
                out.push(event(&project, r, m(2), EventKind::RunStarted));
                for (j, stage) in ["build", "test", "test", "package", "release"].iter().enumerate() {
                    let job = format!("job{j}");
                    let start = m(2 + j as i64 * 3);
                    let q = EventKind::JobQueued {
                        job: job.clone(),
                        stage: (*stage).into(),
                        needs: None,
                        environment: None,
                    };
                    out.push(event(&project, r, m(2), q));
                    let s = EventKind::JobStarted {
                        job: job.clone(),
                        attempt: 1,
                        wait_ms: 10,
                        log: None,
                        interruptible: false,
                    };
                    out.push(event(&project, r, start, s));
                    let f = EventKind::JobFinished {
                        job,
                        attempt: 1,
                        status: JobStatus::Success,
                        exit_code: Some(0),
                        failure_reason: None,
                        allow_failure: false,
                        duration_ms: 180_000,
                        wait_ms: 10,
                        flaky: false,
                    };
                    out.push(event(&project, r, start + time::Duration::minutes(3), f));
                }
                let digest = format!("sha256:{project}{run}");
                let stored = EventKind::ArtifactStored {
                    job: "job3".into(),
                    name: "app".into(),
                    version: run.to_string(),
                    digest: digest.clone(),
                    size: 1,
                };
                out.push(event(&project, r, m(17), stored));
                let finished = EventKind::RunFinished {
                    status: RunStatus::Success,
                    duration_ms: 900_000,
                    reason: None,
                    budget_ms: None,
                    slowest_job: None,
                };
                out.push(event(&project, r, m(17), finished));
                // Staging every commit; production two commits in three, one in twenty rolled back.
                for (e, env) in ["staging", "production"].iter().enumerate() {
                    if e == 1 && run.is_multiple_of(3) {
                        continue;
                    }
                    deploys[e] += 1;
                    let n = deploys[e];
                    let start = m(20 + e as i64 * 30);
                    let outcome = if e == 1 && n.is_multiple_of(20) {
                        DeployOutcome::RolledBack
                    } else {
                        DeployOutcome::Succeeded
                    };
                    let started = EventKind::DeployStarted {
                        environment: (*env).into(),
                        deploy: n,
                        artifact: art(&digest),
                        previous: running.as_deref().map(art),
                        commits: vec![sha.clone()],
                        truncated: 0,
                        trigger: DeployTrigger::Pipeline { run },
                        strategy: DeployStrategy::Canary,
                        rollback: false,
                        fixes: None,
                    };
                    out.push(event(&project, None, start, started));
                    for (step, w) in [(1u32, 20u8), (2, 50), (3, 100)] {
                        let s = EventKind::DeployStep {
                            environment: (*env).into(),
                            deploy: n,
                            step,
                            action: StepAction::SetWeight,
                            weight: w,
                            verdict: None,
                            detail: None,
                            position: None,
                        };
                        out.push(event(
                            &project,
                            None,
                            start + time::Duration::minutes(i64::from(step)),
                            s,
                        ));
                    }
                    let f = EventKind::DeployFinished {
                        environment: (*env).into(),
                        deploy: n,
                        outcome,
                        running: None,
                        reason: None,
                    };
                    out.push(event(&project, None, start + time::Duration::minutes(5), f));
                    if outcome == DeployOutcome::RolledBack {
                        incidents += 1;
                        let id = format!("{project}#{incidents}");
                        let mut new = NewIncident::by_takt(env, "analysis failed", IncidentTrigger::Analysis);
                        new.impact_started_at = Some(start + time::Duration::minutes(2));
                        out.push(event(
                            &project,
                            None,
                            start + time::Duration::minutes(5),
                            new.opened(&id),
                        ));
                        let cause = EventKind::IncidentCauseMarked {
                            id: id.clone(),
                            deploy: Some(format!("{project}/{env}#{n}")),
                            by: "takt".into(),
                        };
                        out.push(event(&project, None, start + time::Duration::minutes(5), cause));
                        let resolved = EventKind::IncidentResolved {
                            id,
                            auto: true,
                            by: "takt".into(),
                            note: None,
                        };
                        out.push(event(&project, None, start + time::Duration::minutes(6), resolved));
                    } else if e == 1 {
                        running = Some(digest.clone());
                    }
                }
            }
        }
    }
    out.sort_by_key(|e| e.at);
    out
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let events = year();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--jsonl") {
        let path = args.get(i + 1).expect("--jsonl FILE");
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for e in &events {
            serde_json::to_writer(&mut out, e).unwrap();
            std::io::Write::write_all(&mut out, b"\n").unwrap();
        }
        std::io::Write::flush(&mut out).unwrap();
        println!("wrote {} events to {path}", events.len());
        return;
    }
    println!("{} events: {PROJECTS} projects, {DAYS} days", events.len());
    let before = rss_kib();
    let started = Instant::now();
    let flow = Flow::fold(&events);
    let fold = started.elapsed();
    let held = rss_kib().saturating_sub(before);
    println!(
        "fold into the view (once, at start): {:.0} ms; the view holds about {:.1} MiB",
        fold.as_secs_f64() * 1e3,
        held as f64 / 1024.0
    );
    let production = |_: &str, e: &str| e == "production";
    let end = time::macros::datetime!(2026-12-01 00:00 UTC);
    let t = takt_flow::dora::Thresholds::default();
    for (label, days) in [("year", 365), ("30 days", 30)] {
        let scope = Scope {
            project: None,
            production: &production,
            from: end - time::Duration::days(days),
            to: end,
        };
        let runs = 5;
        let started = Instant::now();
        for _ in 0..runs {
            black_box(takt_flow::dora::report(&flow, &scope, &t));
            black_box(takt_flow::bottleneck::report(&flow, &scope));
        }
        let each = started.elapsed() / runs;
        // The rest of a report: critical paths and the coffee test.
        let started = Instant::now();
        black_box(takt_flow::path::report(&flow, &scope));
        black_box(takt_flow::coffee::report(&flow, &scope));
        let rest = started.elapsed();
        // The baseline: a report that folds the log again each time.
        let started = Instant::now();
        let again = Flow::fold(&events);
        black_box(takt_flow::dora::report(&again, &scope, &t));
        black_box(takt_flow::bottleneck::report(&again, &scope));
        let baseline = started.elapsed();
        let d = takt_flow::dora::report(&flow, &scope, &t);
        println!(
            "all keys and the bottleneck, every project, the last {label}: {:.1} ms from the view (target 200 ms), {:.1} ms more for critical paths and the coffee test; {:.0} ms folding the log again; ratio {:.3} ({} deployments, {} commits)",
            each.as_secs_f64() * 1e3,
            rest.as_secs_f64() * 1e3,
            baseline.as_secs_f64() * 1e3,
            each.as_secs_f64() / baseline.as_secs_f64(),
            d.deployment_frequency.deployments,
            d.change_lead_time.total.map_or(0, |s| s.sample),
        );
    }
}
