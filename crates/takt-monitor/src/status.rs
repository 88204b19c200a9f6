//! The status page's model, pure: each public service's state from its checks, its uptime over
//! the last 90 days from the result buckets, and the incidents that concern it. The server
//! reads the views and buckets, this module decides, and [`crate::render`] writes the page.

use crate::aggregate::{Bar, Bucket, bars};
use crate::maintenance::{Window, under_maintenance};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use takt_model::{CheckState, IncidentStatus, IncidentTrigger, OffsetDateTime, Severity, timefmt};
use takt_views::{Checks, Incident};

pub use takt_model::ServiceState;

/// A service's state from its checks (`true`: down; `degraded`: a check passes but reports
/// degraded performance). Maintenance wins; then all down is a major outage, some down a
/// partial one.
pub fn service_state(down: &[bool], degraded: bool, maintenance: bool) -> ServiceState {
    if maintenance {
        ServiceState::UnderMaintenance
    } else if !down.is_empty() && down.iter().all(|d| *d) {
        ServiceState::MajorOutage
    } else if down.iter().any(|d| *d) {
        ServiceState::PartialOutage
    } else if degraded {
        ServiceState::Degraded
    } else {
        ServiceState::Operational
    }
}

/// The `service_state_changed` events that bring the recorded states (`last`, by service; a
/// service never recorded was operational) in line with `checks` (one project's, each with
/// whether it is public) at unix seconds `now`. A service whose checks are all gone is left
/// as it was recorded.
pub fn service_changes<'a>(
    checks: impl IntoIterator<Item = (&'a takt_views::CheckView, bool)>,
    last: &BTreeMap<String, ServiceState>,
    windows: &[Window],
    now: i64,
) -> Vec<takt_model::EventKind> {
    let mut by_service: BTreeMap<&str, Vec<(&takt_views::CheckView, bool)>> = BTreeMap::new();
    for (c, public) in checks {
        by_service.entry(&c.service).or_default().push((c, public));
    }
    let mut out = Vec::new();
    for (service, cs) in by_service {
        let down: Vec<bool> = cs.iter().map(|(c, _)| c.state == CheckState::Down).collect();
        let degraded = cs.iter().any(|(c, _)| c.state == CheckState::Degraded);
        let state = service_state(&down, degraded, under_maintenance(windows, service, now));
        let from = last.get(service).copied().unwrap_or_default();
        if state != from {
            out.push(takt_model::EventKind::ServiceStateChanged {
                service: service.to_string(),
                state,
                from,
                public: cs.iter().any(|(_, p)| *p),
                checks: cs
                    .iter()
                    .filter(|(c, _)| c.state != CheckState::Up)
                    .map(|(c, _)| c.check.clone())
                    .collect(),
            });
        }
    }
    out
}

/// A check the status page shows (`public: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicCheck {
    pub project: String,
    pub check: String,
    pub service: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckLine {
    pub name: String,
    pub state: CheckState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    pub checks: Vec<CheckLine>,
    /// Successes over results in the last 90 days; none without results.
    pub uptime: Option<f64>,
    /// The last 90 days, oldest first.
    pub days: Vec<Bar>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<IncidentStatus>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentLine {
    pub id: String,
    pub title: String,
    pub status: IncidentStatus,
    pub severity: Severity,
    pub services: Vec<String>,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// Newest first.
    pub updates: Vec<Update>,
}

/// What `/status` and `/status.json` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusPage {
    pub generated_at: String,
    /// The worst state of any service.
    pub state: ServiceState,
    pub services: Vec<ServiceStatus>,
    /// Open incidents of public services, newest first.
    pub open_incidents: Vec<IncidentLine>,
    /// Those resolved in the last 14 days, newest first.
    pub resolved_incidents: Vec<IncidentLine>,
    /// Maintenance under way or starting within a week, soonest first.
    pub maintenance: Vec<PlannedMaintenance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedMaintenance {
    pub services: Vec<String>,
    pub starts_at: String,
    pub ends_at: String,
    /// Under way now.
    pub active: bool,
}

/// Days of uptime bars.
pub const DAYS: i64 = 90;
/// How long a resolved incident stays on the page.
pub const RESOLVED_DAYS: i64 = 14;

/// The page at `now`. `buckets`: hour and day buckets of the public checks, by (project, check).
pub fn page<'a>(
    public: &[PublicCheck],
    checks: &Checks,
    buckets: &BTreeMap<(String, String), Vec<Bucket>>,
    incidents: impl IntoIterator<Item = &'a Incident>,
    windows: &[Window],
    now: OffsetDateTime,
) -> StatusPage {
    let mut by_service: BTreeMap<&str, Vec<&PublicCheck>> = BTreeMap::new();
    for c in public {
        by_service.entry(&c.service).or_default().push(c);
    }
    let services: Vec<ServiceStatus> = by_service
        .iter()
        .map(|(name, cs)| {
            let lines: Vec<CheckLine> = cs
                .iter()
                .map(|c| CheckLine {
                    name: c.check.clone(),
                    state: checks.get(&c.project, &c.check).map_or(CheckState::Up, |v| v.state),
                })
                .collect();
            let down: Vec<bool> = lines.iter().map(|l| l.state == CheckState::Down).collect();
            let mut all: Vec<Bucket> = Vec::new();
            for c in cs {
                if let Some(b) = buckets.get(&(c.project.clone(), c.check.clone())) {
                    all.extend(b.iter().cloned());
                }
            }
            // The 90 days of the bars: today and the 89 before it.
            let t = now.unix_timestamp();
            let since = t - t.rem_euclid(crate::aggregate::DAY) - (DAYS - 1) * crate::aggregate::DAY;
            let mut total = Bucket::default();
            for b in all.iter().filter(|b| b.start >= since) {
                total.merge(b);
            }
            ServiceStatus {
                name: name.to_string(),
                state: service_state(
                    &down,
                    lines.iter().any(|l| l.state == CheckState::Degraded),
                    under_maintenance(windows, name, now.unix_timestamp()),
                ),
                checks: lines,
                uptime: total.uptime(),
                days: bars(&all, now.unix_timestamp(), DAYS),
            }
        })
        .collect();
    // Public: an incident opened (or joined) by a public check of its project, or one a
    // person opened naming a public service. Rollbacks', analyses' and other checks'
    // incidents stay internal.
    let concerns = |i: &Incident| match i.trigger {
        IncidentTrigger::Check => i
            .checks
            .iter()
            .any(|c| public.iter().any(|p| p.project == i.project && p.check == *c)),
        IncidentTrigger::Person => i.services.iter().any(|s| by_service.contains_key(s.as_str())),
        IncidentTrigger::Analysis | IncidentTrigger::RollbackFailed => false,
    };
    let mut open = Vec::new();
    let mut resolved = Vec::new();
    let recent = now - time::Duration::days(RESOLVED_DAYS);
    for i in incidents.into_iter().filter(|i| concerns(i)) {
        let line = IncidentLine {
            id: i.id.clone(),
            title: i.reason.clone(),
            status: i.status,
            severity: i.severity,
            services: if i.services.is_empty() {
                vec![i.project.clone()]
            } else {
                i.services.clone()
            },
            started_at: timefmt::rfc3339(i.impact_started_at),
            resolved_at: i.resolved_at.map(timefmt::rfc3339),
            updates: i
                .timeline
                .iter()
                .rev()
                .filter(|t| t.note.is_some() || t.status.is_some())
                .map(|t| Update {
                    at: timefmt::rfc3339(t.at),
                    status: t.status,
                    text: t.note.clone().unwrap_or_default(),
                })
                .collect(),
        };
        match i.resolved_at {
            None => open.push((i.opened_at, line)),
            Some(at) if at >= recent => resolved.push((at, line)),
            Some(_) => {}
        }
    }
    open.sort_by_key(|b| std::cmp::Reverse(b.0));
    resolved.sort_by_key(|b| std::cmp::Reverse(b.0));
    let t = now.unix_timestamp();
    let stamp = |s: i64| {
        OffsetDateTime::from_unix_timestamp(s)
            .map(timefmt::rfc3339)
            .unwrap_or_default()
    };
    let mut maintenance: Vec<(i64, PlannedMaintenance)> = windows
        .iter()
        .filter_map(|w| {
            let (start, end) = w.around(t)?;
            let services: Vec<String> = w
                .services
                .iter()
                .filter(|s| by_service.contains_key(s.as_str()))
                .cloned()
                .collect();
            (!services.is_empty()).then(|| {
                (
                    start,
                    PlannedMaintenance {
                        services,
                        starts_at: stamp(start),
                        ends_at: stamp(end),
                        active: start <= t && t < end,
                    },
                )
            })
        })
        .collect();
    maintenance.sort_by_key(|m| m.0);
    StatusPage {
        maintenance: maintenance.into_iter().map(|(_, m)| m).collect(),
        generated_at: timefmt::rfc3339(now),
        state: services
            .iter()
            .map(|s| s.state)
            .max()
            .unwrap_or(ServiceState::Operational),
        services,
        open_incidents: open.into_iter().map(|(_, l)| l).collect(),
        resolved_incidents: resolved.into_iter().map(|(_, l)| l).collect(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn service_changes_follow_the_checks_and_stop_when_recorded() {
        use takt_model::EventKind;
        let view = |check: &str, service: &str, state| takt_views::CheckView {
            project: "shop".into(),
            check: check.into(),
            service: service.into(),
            environment: None,
            state,
            since: OffsetDateTime::UNIX_EPOCH,
            changed_at: OffsetDateTime::UNIX_EPOCH,
            reason: String::new(),
        };
        let checks = [
            view("home", "web", CheckState::Down),
            view("api", "web", CheckState::Up),
            view("slow", "search", CheckState::Degraded),
            view("db", "db", CheckState::Up),
        ];
        let with_public = || checks.iter().map(|c| (c, c.check != "db"));
        let mut last = BTreeMap::new();
        let changes = service_changes(with_public(), &last, &[], 0);
        assert_eq!(
            changes,
            [
                EventKind::ServiceStateChanged {
                    service: "search".into(),
                    state: ServiceState::Degraded,
                    from: ServiceState::Operational,
                    public: true,
                    checks: vec!["slow".into()],
                },
                EventKind::ServiceStateChanged {
                    service: "web".into(),
                    state: ServiceState::PartialOutage,
                    from: ServiceState::Operational,
                    public: true,
                    checks: vec!["home".into()],
                },
            ],
            "db is operational, as never recorded"
        );
        last.insert("search".to_string(), ServiceState::Degraded);
        last.insert("web".to_string(), ServiceState::PartialOutage);
        assert_eq!(service_changes(with_public(), &last, &[], 0), []);
        // A maintenance window of all services, open now, wins.
        let all = Window {
            start: crate::maintenance::Start::Once { at: 0 },
            duration_s: 60,
            services: vec![],
        };
        let changes = service_changes(with_public(), &last, std::slice::from_ref(&all), 30);
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(changes.iter().all(
            |c| matches!(c, EventKind::ServiceStateChanged { state, .. } if *state == ServiceState::UnderMaintenance)
        ));
    }
    use super::*;
    use takt_model::{Event, EventKind, IncidentTrigger, NewIncident};
    use takt_views::{Incidents, Projection};

    #[test]
    fn a_service_is_as_bad_as_its_checks_say() {
        use ServiceState::*;
        assert_eq!(service_state(&[false, false], false, false), Operational);
        assert_eq!(service_state(&[false, false], true, false), Degraded);
        assert_eq!(service_state(&[true, false], true, false), PartialOutage);
        assert_eq!(service_state(&[true, true], false, false), MajorOutage);
        assert_eq!(service_state(&[true, true], false, true), UnderMaintenance);
        assert_eq!(service_state(&[], false, false), Operational);
        assert!(MajorOutage > PartialOutage && PartialOutage > Degraded && Degraded > Operational);
    }

    #[test]
    fn the_page_shows_public_services_and_only_their_incidents() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(100);
        let at = |mut e: Event, days_ago: i64| {
            e.at = now - time::Duration::days(days_ago);
            e
        };
        let open = |id: &str, services: Vec<String>| {
            let mut n = NewIncident::by_takt("production", "it broke", IncidentTrigger::Check);
            // The public check is `home` (service shop); `internal`'s check `db` is not public.
            let check = if services.iter().any(|s| s == "internal") {
                "db"
            } else {
                "home"
            };
            n.checks = vec![check.into()];
            n.services = services;
            n.opened(id)
        };
        let resolve = |id: &str| EventKind::IncidentResolved {
            id: id.into(),
            auto: true,
            by: "takt".into(),
            note: Some("passing again".into()),
        };
        let log = vec![
            at(Event::now("p", None, open("p#1", vec!["shop".into()])), 3),
            at(Event::now("p", None, open("p#2", vec!["internal".into()])), 2),
            at(Event::now("p", None, open("p#3", vec![])), 30),
            at(Event::now("p", None, resolve("p#3")), 29),
            at(Event::now("p", None, open("p#4", vec!["shop".into()])), 5),
            at(Event::now("p", None, resolve("p#4")), 4),
            // A rollback's incident is internal, whatever its services.
            at(
                Event::now(
                    "p",
                    None,
                    NewIncident::by_takt("production", "rollback failed", IncidentTrigger::RollbackFailed)
                        .opened("p#5"),
                ),
                1,
            ),
        ];
        let public = [PublicCheck {
            project: "p".into(),
            check: "home".into(),
            service: "shop".into(),
        }];
        let mut b = Bucket::new(now.unix_timestamp() - 3600, crate::aggregate::HOUR);
        b.record(true, 5);
        b.record(false, 5);
        let buckets = BTreeMap::from([(("p".to_string(), "home".to_string()), vec![b])]);
        let incidents = Incidents::fold(&log);
        let p = page(
            &public,
            &Checks::default(),
            &buckets,
            incidents.incidents.values(),
            &[],
            now,
        );
        assert_eq!(p.state, ServiceState::Operational);
        assert_eq!(p.services.len(), 1);
        assert_eq!(p.services[0].uptime, Some(0.5));
        assert_eq!(p.services[0].days.len(), 90);
        let ids = |v: &[IncidentLine]| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&p.open_incidents), ["p#1"], "not the internal service's");
        assert_eq!(
            ids(&p.resolved_incidents),
            ["p#4"],
            "p#3 (the project's) was resolved 29 days ago"
        );
        assert_eq!(p.resolved_incidents[0].updates[0].text, "passing again");

        // A window under way: the service shows it, and the page lists it.
        let w = Window {
            start: crate::maintenance::Start::Once {
                at: now.unix_timestamp() - 60,
            },
            duration_s: 3600,
            services: vec!["shop".into(), "internal".into()],
        };
        let p = page(
            &public,
            &Checks::default(),
            &buckets,
            incidents.incidents.values(),
            &[w],
            now,
        );
        assert_eq!(p.services[0].state, ServiceState::UnderMaintenance);
        assert_eq!(p.maintenance.len(), 1);
        assert_eq!(p.maintenance[0].services, ["shop"], "only public services are named");
        assert!(p.maintenance[0].active);
    }
}
