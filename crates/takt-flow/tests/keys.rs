//! The DORA keys and the bottleneck on a small history whose every figure is worked out by
//! hand in the comments: a rollback, a fix deployed during an incident, the same digest
//! deployed twice, a commit whose clock is ahead, a staging deploy that does not count, and a
//! project with an incident and no deployment at all.

#![allow(clippy::unwrap_used)]

use takt_flow::bottleneck::{self, Part};
use takt_flow::dora::{self, Band, Bucket, Thresholds};
use takt_flow::{Flow, Scope};
use takt_model::*;
use takt_views::Projection;

/// 2026-11-02, a Monday.
fn t0() -> OffsetDateTime {
    time::macros::datetime!(2026-11-02 00:00 UTC)
}

/// `h` hours and `m` minutes after t0.
fn at(h: i64, m: i64) -> OffsetDateTime {
    t0() + time::Duration::hours(h) + time::Duration::minutes(m)
}

struct Log {
    events: Vec<Event>,
}

impl Log {
    fn push(&mut self, project: &str, run: Option<u64>, when: OffsetDateTime, kind: EventKind) {
        let mut e = Event::now(project, run, kind);
        e.at = when;
        e.seq = Some(self.events.len() as i64 + 1);
        self.events.push(e);
    }

    fn commit(&mut self, sha: &str, when: OffsetDateTime) {
        let kind = EventKind::CommitInfo {
            commit: sha.into(),
            author: "ana".into(),
            email: None,
            committed_at: when,
            subject: format!("change {sha}"),
        };
        self.push("shop", None, when, kind);
    }

    /// Run `n` of `commit`: each stage one job, from `start`, lasting its minutes; then its
    /// artifact `digest`.
    fn run(&mut self, n: u64, commit: &str, start: OffsetDateTime, stages: &[(&str, i64)], digest: &str) {
        let r = Some(n);
        let queued = EventKind::RunQueued {
            commit: commit.into(),
            branch: Some("main".into()),
            tag: None,
            trigger: Trigger::Poll,
            dirty: false,
            merge_request: None,
        };
        self.push("shop", r, start, queued);
        self.push("shop", r, start, EventKind::RunStarted);
        let mut t = start;
        for (stage, minutes) in stages {
            let job = format!("{stage}-job");
            let queued = EventKind::JobQueued {
                job: job.clone(),
                stage: (*stage).into(),
                needs: None,
                environment: None,
            };
            self.push("shop", r, start, queued);
            let started = EventKind::JobStarted {
                job: job.clone(),
                attempt: 1,
                wait_ms: 0,
                log: None,
                interruptible: false,
            };
            self.push("shop", r, t, started);
            t += time::Duration::minutes(*minutes);
            let finished = EventKind::JobFinished {
                job,
                attempt: 1,
                status: JobStatus::Success,
                exit_code: Some(0),
                failure_reason: None,
                allow_failure: false,
                duration_ms: 1,
                wait_ms: 0,
                flaky: false,
            };
            self.push("shop", r, t, finished);
        }
        let stored = EventKind::ArtifactStored {
            job: "package".into(),
            name: "app".into(),
            version: format!("1.0.{n}"),
            digest: digest.into(),
            size: 1,
        };
        self.push("shop", r, t, stored);
        // A budget of 30 minutes: over it, its longest job pushed it over.
        let took: i64 = stages.iter().map(|(_, m)| m).sum();
        let longest = stages.iter().max_by_key(|(_, m)| *m).map(|(s, _)| format!("{s}-job"));
        let finished = EventKind::RunFinished {
            status: RunStatus::Success,
            duration_ms: took as u64 * 60_000,
            reason: None,
            budget_ms: Some(30 * 60_000),
            slowest_job: longest.filter(|_| took > 30),
        };
        self.push("shop", r, t, finished);
    }

    #[allow(clippy::too_many_arguments)]
    fn deploy(
        &mut self,
        env: &str,
        n: u64,
        digest: &str,
        previous: Option<&str>,
        commits: &[&str],
        (start, end): (OffsetDateTime, OffsetDateTime),
        outcome: DeployOutcome,
        rollback: bool,
    ) {
        let art = |d: &str| ArtifactRef {
            name: "app".into(),
            version: d.into(),
            digest: d.into(),
            commit: None,
        };
        let started = EventKind::DeployStarted {
            environment: env.into(),
            deploy: n,
            artifact: art(digest),
            previous: previous.map(art),
            commits: commits.iter().map(|c| c.to_string()).collect(),
            truncated: 0,
            trigger: DeployTrigger::Token {
                token: "t".into(),
                command: "deploy".into(),
            },
            strategy: DeployStrategy::Canary,
            rollback,
            fixes: None,
        };
        self.push("shop", None, start, started);
        let step = EventKind::DeployStep {
            environment: env.into(),
            deploy: n,
            step: 1,
            action: StepAction::SetWeight,
            weight: 20,
            verdict: None,
            detail: None,
            position: None,
        };
        self.push("shop", None, start, step);
        let finished = EventKind::DeployFinished {
            environment: env.into(),
            deploy: n,
            outcome,
            running: None,
            reason: None,
        };
        self.push("shop", None, end, finished);
    }

    fn incident(&mut self, project: &str, id: &str, opened: OffsetDateTime, impact: OffsetDateTime) {
        let mut new = NewIncident::by_takt("production", "checks failing", IncidentTrigger::Check);
        new.impact_started_at = Some(impact);
        self.push(project, None, opened, new.opened(id));
    }

    fn resolve(&mut self, id: &str, when: OffsetDateTime) {
        let kind = EventKind::IncidentResolved {
            id: id.into(),
            auto: true,
            by: "takt".into(),
            note: None,
        };
        self.push("shop", None, when, kind);
    }
}

fn history() -> Vec<Event> {
    let mut log = Log { events: Vec::new() };
    log.commit("c1", at(0, 0));
    log.commit("c2", at(1, 0));
    log.commit("c3", at(2, 0));
    // Its clock is ahead: committed "after" it shipped.
    log.commit("c4", at(100, 0));
    log.commit("c5", at(61, 0));
    // Run 1 (c2): build 10 min, test 30 min, from 2h: done at 2h40.
    log.run(1, "c2", at(2, 0), &[("build", 10), ("test", 30)], "d1");
    log.deploy(
        "staging",
        1,
        "d1",
        None,
        &["c2", "c1"],
        (at(3, 0), at(3, 5)),
        DeployOutcome::Succeeded,
        false,
    );
    // #1 ships c1 and c2: 4h10 − 0h = 15000 s, 4h10 − 1h = 11400 s.
    log.deploy(
        "production",
        1,
        "d1",
        None,
        &["c2", "c1"],
        (at(4, 0), at(4, 10)),
        DeployOutcome::Succeeded,
        false,
    );
    log.run(2, "c3", at(24, 0), &[("build", 10), ("test", 50)], "d2");
    // #2 is rolled back by its analysis; its incident's impact began a minute before.
    log.deploy(
        "production",
        2,
        "d2",
        Some("d1"),
        &["c3"],
        (at(26, 0), at(26, 5)),
        DeployOutcome::RolledBack,
        false,
    );
    log.incident("shop", "shop#1", at(26, 5), at(26, 4));
    let cause = EventKind::IncidentCauseMarked {
        id: "shop#1".into(),
        deploy: Some("shop/production#2".into()),
        by: "takt".into(),
    };
    log.push("shop", None, at(26, 5), cause);
    log.resolve("shop#1", at(26, 5));
    // Run 3 (c4): build 60 min from 48h. #3 ships c3 (50h10 − 2h = 173400 s) and c4 (skewed).
    log.run(3, "c4", at(48, 0), &[("build", 60)], "d3");
    log.deploy(
        "production",
        3,
        "d3",
        Some("d1"),
        &["c4", "c3"],
        (at(50, 0), at(50, 10)),
        DeployOutcome::Succeeded,
        false,
    );
    // The same digest again: not a change.
    log.deploy(
        "production",
        4,
        "d3",
        Some("d3"),
        &[],
        (at(51, 0), at(51, 1)),
        DeployOutcome::Succeeded,
        false,
    );
    // Production breaks at 59h50 (an incident at 60h); #5 (c5) is deployed while it is open: a
    // fix, so #3 failed. Restored when the fix finished (62h10), before the incident resolved.
    log.incident("shop", "shop#2", at(60, 0), at(59, 50));
    log.run(4, "c5", at(61, 10), &[("test", 30)], "d4");
    log.deploy(
        "production",
        5,
        "d4",
        Some("d3"),
        &["c5"],
        (at(62, 0), at(62, 10)),
        DeployOutcome::Succeeded,
        false,
    );
    log.resolve("shop#2", at(62, 20));
    // Another project: an incident, no deployment ever.
    log.incident("empty", "empty#1", at(10, 0), at(10, 0));
    log.events
}

fn flow() -> Flow {
    Flow::fold(&history())
}

/// Production: what nothing requires (staging is required by production).
fn production(_: &str, env: &str) -> bool {
    env == "production"
}

fn week(project: Option<&str>) -> Scope<'_> {
    Scope {
        project,
        production: &production,
        from: t0(),
        to: t0() + time::Duration::days(7),
    }
}

#[test]
fn the_five_keys_of_a_week() {
    let flow = flow();
    let d = dora::report(&flow, &week(Some("shop")), &Thresholds::default());

    // #1, #3 and #5 (#2 was rolled back, #4 redeployed what ran): 3 in 7 days.
    let f = &d.deployment_frequency;
    assert_eq!(f.deployments, 3);
    assert!((f.per_day - 3.0 / 7.0).abs() < 1e-9, "{f:?}");
    assert!((f.per_week - 3.0).abs() < 1e-9, "{f:?}");
    assert_eq!((f.bucket, f.band), (Bucket::Daily, Band::High));

    // c1 15000, c2 11400, c3 173400, c5 62h10 − 61h = 4200; c4 left out (its clock is ahead).
    let l = &d.change_lead_time;
    let total = l.total.unwrap();
    assert_eq!((total.p50, total.p90, total.sample), (11400.0, 173400.0, 4));
    assert_eq!((l.non_positive, l.unknown_commit, l.without_commits), (1, 0, 0));
    // Waits: c1 2h, c2 1h, c3 46h, c5 10 min → p50 1h.
    assert_eq!(l.wait.unwrap().p50, 3600.0);
    assert_eq!(l.band, None, "4 commits: below the minimum sample of 5");

    // Took traffic: #1, #2, #3, #5. Failed: #2 (rolled back), #3 (a fix followed).
    let c = &d.change_fail_rate;
    assert_eq!((c.count, c.of, c.rate), (2, 4, Some(0.5)));
    assert_eq!(c.deployments, ["shop/production#2", "shop/production#3"]);
    assert_eq!(c.band, None);

    // #2: 26h04 → 26h05 (60 s); #3: 59h50 → 62h10 (8400 s).
    let r = &d.recovery_time;
    let time = r.time.unwrap();
    assert_eq!((time.p50, time.p90, time.sample, r.unrestored), (60.0, 8400.0, 2, 0));

    // #5 was deployed while shop#2 was open.
    let w = &d.rework_rate;
    assert_eq!((w.count, w.of, w.rate), (1, 4, Some(0.25)));
    assert_eq!(w.deployments, ["shop/production#5"]);
}

#[test]
fn with_a_lower_minimum_sample_every_key_has_a_band() {
    let flow = flow();
    let t = Thresholds {
        min_sample: 2,
        ..Thresholds::default()
    };
    let d = dora::report(&flow, &week(None), &t);
    // Lead time p50 11400 s ≤ a day; fail rate 50% and rework 25% > 15%; recovery 60 s ≤ 1 h.
    assert_eq!(d.change_lead_time.band, Some(Band::Elite));
    assert_eq!(d.change_fail_rate.band, Some(Band::Low));
    assert_eq!(d.rework_rate.band, Some(Band::Low));
    assert_eq!(d.recovery_time.band, Some(Band::Elite));
}

#[test]
fn no_deployments_and_one_deployment() {
    let flow = flow();
    let d = dora::report(&flow, &week(Some("empty")), &Thresholds::default());
    assert_eq!(d.deployment_frequency.deployments, 0);
    assert_eq!(
        (d.deployment_frequency.bucket, d.deployment_frequency.band),
        (Bucket::Fewer, Band::Low)
    );
    assert_eq!(d.change_lead_time.total, None);
    assert_eq!((d.change_fail_rate.of, d.change_fail_rate.rate), (0, None));
    assert_eq!(d.recovery_time.time, None);
    let b = bottleneck::report(&flow, &week(Some("empty")));
    assert!(b.shares.is_empty() && b.summary.starts_with("no commit reached production"));

    // The first day: only #1.
    let day = Scope {
        to: t0() + time::Duration::days(1),
        ..week(Some("shop"))
    };
    let d = dora::report(&flow, &day, &Thresholds::default());
    assert_eq!(d.deployment_frequency.deployments, 1);
    assert_eq!(d.deployment_frequency.bucket, Bucket::Daily, "exactly once a day");
    assert_eq!(d.change_lead_time.total.unwrap().sample, 2);
    assert_eq!((d.change_fail_rate.count, d.change_fail_rate.of), (0, 1));
}

#[test]
fn the_bottleneck_is_the_largest_share_of_lead_time() {
    let flow = flow();
    let b = bottleneck::report(&flow, &week(Some("shop")));
    // Sums over c1, c2, c3, c5 (seconds): wait for a pipeline 7200 + 3600 + 165600 + 600;
    // build 600 + 600 + 3600; test 1800 · 3; promotion 4800 + 4800 + 3600 + 1200; deploy 600 · 4.
    let got: Vec<(Part, f64)> = b.shares.iter().map(|s| (s.part.clone(), s.seconds)).collect();
    assert_eq!(
        got,
        [
            (Part::WaitForPipeline, 177000.0),
            (Part::WaitForPromotion, 14400.0),
            (Part::Stage("test".into()), 5400.0),
            (Part::Stage("build".into()), 4800.0),
            (Part::Deploy, 2400.0),
        ]
    );
    assert!((b.shares[0].share - 177000.0 / 204000.0).abs() < 1e-9);
    assert_eq!(b.commits, 4);
    assert_eq!(b.weeks.len(), 1);
    assert_eq!(b.weeks[0].week, "2026-11-02");
    assert_eq!(b.moved, None);
    assert_eq!(b.summary, "Wait for a pipeline is 87% of lead time");
}

#[test]
fn the_view_folds_events_one_at_a_time_as_the_log_does() {
    let events = history();
    let mut live = Flow::default();
    for e in &events {
        live.apply(e);
    }
    let scope = week(None);
    let t = Thresholds::default();
    assert_eq!(dora::report(&live, &scope, &t), dora::report(&flow(), &scope, &t));
    assert_eq!(live.events, events.len() as u64);
}

#[test]
fn the_coffee_test_counts_runs_within_their_budget() {
    let flow = flow();
    let c = takt_flow::coffee::report(&flow, &week(Some("shop")));
    // Runs of 40, 60, 60 and 30 minutes against 30: only the last is within.
    assert_eq!((c.runs, c.within, c.share), (4, 1, Some(0.25)));
    assert_eq!(c.weeks.len(), 1);
    assert_eq!((c.weeks[0].week.as_str(), c.weeks[0].runs), ("2026-11-02", 4));
    let over: Vec<(&str, usize)> = c.over.iter().map(|p| (p.job.as_str(), p.runs)).collect();
    assert_eq!(over, [("test-job", 2), ("build-job", 1)]);
}
