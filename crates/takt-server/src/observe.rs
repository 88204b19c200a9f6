//! The monitoring service's view of the server: projects, and their default branch's checks and
//! environments' public addresses.

use crate::AppState;
use std::sync::{Arc, Weak};
use takt_model::NewIncident;
use takt_observe::{HostFuture, ProjectChecks};

pub struct ObserveHost {
    pub state: Weak<AppState>,
}

/// Starts the monitoring service for `state`'s projects.
pub fn start(state: &Arc<AppState>) {
    let host = Arc::new(ObserveHost {
        state: Arc::downgrade(state),
    });
    match takt_observe::Observe::new(state.store.clone(), host) {
        Ok(o) => {
            let o = Arc::new(o);
            let _ = state.observe.set(o.clone());
            o.start();
        }
        Err(e) => tracing::error!(error = %e, "the monitoring service cannot start"),
    }
}

impl takt_observe::Host for ObserveHost {
    fn projects(&self) -> Vec<String> {
        match self.state.upgrade() {
            Some(s) => s.projects.read().list().iter().map(|p| p.name.clone()).collect(),
            None => Vec::new(),
        }
    }

    fn checks<'a>(&'a self, project: &'a str) -> HostFuture<'a, ProjectChecks> {
        Box::pin(async move {
            let Some(state) = self.state.upgrade() else {
                return Default::default();
            };
            let Ok(p) = state.project(project) else {
                return Default::default();
            };
            takt_ci::schedule::refresh(&state.ci, &p).await;
            let cfg = state.ci.branch_config(project).unwrap_or_default();
            let urls = cfg
                .environments
                .iter()
                .filter_map(|e| {
                    let url = e
                        .url
                        .clone()
                        .or_else(|| e.port.map(|p| format!("http://127.0.0.1:{p}")))?;
                    Some((e.name.clone(), url))
                })
                .collect();
            ProjectChecks {
                checks: cfg.checks,
                urls,
                maintenance: cfg.maintenance,
                remind: cfg
                    .environments
                    .iter()
                    .filter_map(|e| Some((e.name.clone(), e.remind_every?)))
                    .collect(),
                escalate: cfg
                    .environments
                    .iter()
                    .filter(|e| takt_pipeline::is_production(&cfg.environments, &e.name))
                    .map(|e| (e.name.clone(), e.escalate_after))
                    .collect(),
            }
        })
    }

    fn instances<'a>(&'a self, project: &'a str, env: &'a str) -> HostFuture<'a, Option<Vec<takt_observe::Instance>>> {
        Box::pin(async move {
            let state = self.state.upgrade()?;
            instances(&state, project, env).await
        })
    }

    fn requests<'a>(&'a self, project: &'a str, env: &'a str) -> HostFuture<'a, Option<takt_model::RequestCounts>> {
        Box::pin(async move {
            let state = self.state.upgrade()?;
            let e = state.cd.environment(project, env).await.ok()?;
            if e.driver != takt_pipeline::Driver::Process {
                return None;
            }
            let status = takt_cd::supervisor(&state.cd, project, &e).status().await?;
            (status.port != 0).then_some(takt_model::RequestCounts {
                requests: status.total.requests,
                errors: status.total.errors,
            })
        })
    }

    fn open_incident<'a>(&'a self, project: &'a str, new: NewIncident) -> HostFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let state = self
                .state
                .upgrade()
                .ok_or_else(|| "the server is stopping".to_string())?;
            state.cd.open_incident(project, new).await.map_err(|e| e.to_string())
        })
    }
}

/// The instances of the version taking traffic in `project`/`env`, from its supervisor (none
/// for the command driver, or when no supervisor answers): alive when its process runs, open
/// when its port takes a connection within a second.
pub async fn instances(state: &AppState, project: &str, env: &str) -> Option<Vec<takt_observe::Instance>> {
    let e = state.cd.environment(project, env).await.ok()?;
    if e.driver == takt_pipeline::Driver::Command {
        return None;
    }
    let status = takt_cd::supervisor(&state.cd, project, &e).status().await?;
    let mut out = Vec::new();
    for i in status
        .slots
        .iter()
        .filter(|s| s.weight > 0)
        .flat_map(|s| s.instances.iter())
    {
        let alive = i
            .pid
            .and_then(|p| i32::try_from(p).ok())
            .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
        let open = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio::net::TcpStream::connect(("127.0.0.1", i.port)),
        )
        .await
        .is_ok_and(|c| c.is_ok());
        out.push(takt_observe::Instance {
            port: i.port,
            alive,
            open,
            restarts: i.restarts,
        });
    }
    Some(out)
}
