//! Recurring drills: the `drills:` of each default branch, started at their cron times
//! (`takt_cd::drill`), as a person's `takt drill run` would. A time missed while the server
//! was down is not made up, as with schedules.

use crate::AppState;
use std::sync::Arc;
use std::time::Duration;

pub fn start(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut last = jiff::Timestamp::now();
        loop {
            // Registered first: a mirror that moves meanwhile (a new takt.yml) wakes the sleep.
            let moved = state.ci.queue.moved.notified();
            let now = jiff::Timestamp::now();
            let mut next_wake = now + jiff::SignedDuration::from_secs(3600);
            let projects = state.projects.read().list();
            for project in projects {
                takt_ci::schedule::refresh(&state.ci, &project).await;
                let p = project.name;
                let drills = state.ci.branch_config(&p).map(|c| c.drills).unwrap_or_default();
                for d in drills {
                    let Some(next) = takt_ci::schedule::next_fire(&d.schedule, last) else {
                        continue;
                    };
                    if next > now {
                        next_wake = next_wake.min(next);
                        continue;
                    }
                    if let Some(after) = takt_ci::schedule::next_fire(&d.schedule, now) {
                        next_wake = next_wake.min(after);
                    }
                    let ask = takt_cd::drill::DrillAsk {
                        project: p.clone(),
                        environment: d.environment.clone(),
                        kill: d.kill,
                        count: d.count,
                        load_rps: d.load,
                        production_ok: d.production,
                        by: format!("drill schedule {}", d.name),
                    };
                    match state.cd.drill(ask).await {
                        Ok(n) => tracing::info!(project = %p, drill = n, schedule = %d.name, "scheduled drill started"),
                        Err(e) => {
                            tracing::warn!(project = %p, schedule = %d.name, error = %e, "scheduled drill not started")
                        }
                    }
                }
            }
            last = now;
            let wait = Duration::try_from(next_wake.duration_since(jiff::Timestamp::now()))
                .unwrap_or_default()
                .clamp(Duration::from_millis(1), Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = moved => {}
            }
        }
    });
}
