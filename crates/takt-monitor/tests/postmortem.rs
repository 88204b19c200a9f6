//! The postmortem draft of a fixture incident (a deploy, a flag turned on, its check failing, remediation, a
//! page, an acknowledgement, the resolution) against its expected Markdown,
//! `tests/postmortem/expected.md`. `TAKT_WRITE_EXPECTED=1` writes the file instead (then read
//! it before committing).

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use takt_model::*;
use takt_monitor::postmortem::{draft, markdown};
use takt_views::{Environments, Incidents, Projection};

const T0: OffsetDateTime = time::macros::datetime!(2026-11-03 14:00 UTC);

fn at(kind: EventKind, secs: i64) -> Event {
    let mut e = Event::now("shop", None, kind);
    e.at = T0 + time::Duration::seconds(secs);
    e
}

fn art(v: &str) -> ArtifactRef {
    ArtifactRef {
        name: "app".into(),
        version: v.into(),
        digest: format!("sha256:{v}"),
        commit: Some(format!("c0ffee{v}")),
    }
}

fn events() -> Vec<Event> {
    let deploy = |n: u64, v: &str, rollback: bool, secs: i64, trigger: DeployTrigger| {
        vec![
            at(
                EventKind::DeployStarted {
                    environment: "production".into(),
                    deploy: n,
                    artifact: art(v),
                    previous: None,
                    commits: if rollback { vec![] } else { vec![format!("c0ffee{v}")] },
                    truncated: 0,
                    trigger,
                    strategy: DeployStrategy::Canary,
                    rollback,
                    fixes: None,
                },
                secs,
            ),
            at(
                EventKind::DeployFinished {
                    environment: "production".into(),
                    deploy: n,
                    outcome: DeployOutcome::Succeeded,
                    running: Some(art(v)),
                    reason: None,
                },
                secs + 40,
            ),
        ]
    };
    let mut new = NewIncident::by_takt("production", "check `home` failing", IncidentTrigger::Check);
    new.severity = Severity::Major;
    new.services = vec!["shop".into()];
    new.checks = vec!["home".into()];
    new.impact_started_at = Some(T0 + time::Duration::seconds(300));
    let mut out = vec![at(
        EventKind::CommitInfo {
            commit: "c0ffeev2".into(),
            author: "Ana".into(),
            email: None,
            committed_at: T0 - time::Duration::minutes(30),
            subject: "Cache the cart totals".into(),
        },
        -1800,
    )];
    out.extend(deploy(1, "v1", false, -86_400, DeployTrigger::Pipeline { run: 1 }));
    out.extend(deploy(2, "v2", false, 0, DeployTrigger::Pipeline { run: 2 }));
    // A flag turned on a minute after the deploy: a suspect too.
    let setting = |state| FlagSetting {
        state,
        default_variant: Some("on".into()),
        targeting: None,
        variants: [
            ("on".to_string(), serde_json::json!(true)),
            ("off".to_string(), serde_json::json!(false)),
        ]
        .into(),
    };
    out.push(at(
        EventKind::FlagChanged {
            environment: "production".into(),
            flag: "new-cart".into(),
            source: FlagSource::Api,
            by: Some("ana".into()),
            commit: None,
            before: Some(setting(FlagState::Disabled)),
            after: Some(setting(FlagState::Enabled)),
        },
        60,
    ));
    out.push(at(
        EventKind::CheckStateChanged {
            check: "home".into(),
            service: "shop".into(),
            environment: Some("production".into()),
            state: CheckState::Down,
            streak: 2,
            reason: "[STATUS] (500) == 200 failed twice".into(),
            since: T0 + time::Duration::seconds(300),
        },
        301,
    ));
    out.push(at(new.opened("shop#7"), 301));
    // The proxy's counters at the first failing result and at the resolution.
    let traffic = |mark, requests, errors, secs| {
        at(
            EventKind::IncidentTraffic {
                id: "shop#7".into(),
                mark,
                requests,
                errors,
            },
            secs,
        )
    };
    out.push(traffic(TrafficMark::Impact, 90_000, 12, 301));
    out.push(traffic(TrafficMark::Resolved, 125_000, 4_012, 1000));
    let remediation = |outcome, detail: Option<&str>, secs| {
        at(
            EventKind::IncidentRemediation {
                id: "shop#7".into(),
                action: RemedyAction::Rollback,
                deploy: Some("shop/production#2".into()),
                outcome,
                detail: detail.map(str::to_string),
            },
            secs,
        )
    };
    out.push(remediation(RemedyOutcome::Started, None, 302));
    out.push(at(
        EventKind::IncidentCauseMarked {
            id: "shop#7".into(),
            deploy: Some("shop/production#2".into()),
            by: "takt".into(),
        },
        302,
    ));
    out.extend(deploy(
        3,
        "v1",
        true,
        303,
        DeployTrigger::Automatic {
            reason: "remediation of incident shop#7".into(),
        },
    ));
    out.push(remediation(
        RemedyOutcome::Succeeded,
        Some("rolled back by shop/production#3"),
        343,
    ));
    out.push(at(
        EventKind::IncidentPaged {
            id: "shop#7".into(),
            count: 1,
            reason: PageReason::Unresolved,
        },
        901,
    ));
    out.push(at(
        EventKind::IncidentAcknowledged {
            id: "shop#7".into(),
            by: "token ana".into(),
        },
        960,
    ));
    out.push(at(
        EventKind::IncidentResolved {
            id: "shop#7".into(),
            auto: true,
            by: "takt".into(),
            note: None,
        },
        1000,
    ));
    // Another environment's deploy is not this incident's.
    out.push(at(
        EventKind::EnvironmentHalted {
            environment: "staging".into(),
            reason: "elsewhere".into(),
            by: "bo".into(),
        },
        500,
    ));
    out
}

#[test]
fn the_draft_of_a_remediated_incident_reads_as_expected() {
    let events = events();
    let incident = Incidents::fold(&events).get("shop#7").cloned().unwrap();
    let envs = Environments::fold(&events);
    let commits = takt_views::Commits::fold(&events);
    let suspects = takt_monitor::suspect::suspects(&incident, &envs, &commits, takt_monitor::suspect::DEFAULT_WINDOW);
    let p = draft(&incident, &events, &suspects, T0 + time::Duration::hours(5));
    assert_eq!(p.time_to_detect_s, 1);
    assert_eq!(p.time_to_acknowledge_s, Some(659));
    assert_eq!(p.time_to_restore_s, Some(700));
    let md = markdown(&p);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postmortem/expected.md");
    if std::env::var_os("TAKT_WRITE_EXPECTED").is_some() {
        std::fs::write(&path, &md).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert_eq!(md, expected, "the draft differs from {}", path.display());
}

#[test]
fn requests_failed_are_counted_only_where_a_proxy_measured_them() {
    use takt_monitor::postmortem::Requests;
    let requests = |events: &[Event]| {
        let incident = Incidents::fold(events).get("shop#7").cloned().unwrap();
        draft(&incident, events, &[], T0 + time::Duration::hours(5)).requests
    };
    let all = events();
    assert_eq!(
        requests(&all),
        Requests::Counted {
            failed: 4_000,
            total: 35_000
        }
    );
    let without = |kinds: &[&str], mark: Option<TrafficMark>| -> Vec<Event> {
        all.iter()
            .filter(|e| !kinds.contains(&e.kind.name()))
            .filter(|e| !matches!((&e.kind, mark), (EventKind::IncidentTraffic { mark: m, .. }, Some(x)) if *m == x))
            .cloned()
            .collect()
    };
    // No reading at all: no proxy in front of the environment.
    assert_eq!(requests(&without(&["incident_traffic"], None)), Requests::NotMeasured);
    // Not resolved yet: still counting.
    let open = without(&["incident_resolved"], Some(TrafficMark::Resolved));
    assert_eq!(requests(&open), Requests::StillOpen);
    assert!(
        markdown(&draft(
            &Incidents::fold(&open).get("shop#7").cloned().unwrap(),
            &open,
            &[],
            T0
        ))
        .contains("- Requests failed: still counting")
    );
    // Counters that went back: the proxy restarted, nothing is made up.
    let mut restarted = all.clone();
    for e in &mut restarted {
        if let EventKind::IncidentTraffic {
            mark: TrafficMark::Resolved,
            requests,
            errors,
            ..
        } = &mut e.kind
        {
            (*requests, *errors) = (500, 3);
        }
    }
    assert_eq!(requests(&restarted), Requests::ProxyRestarted);
}
