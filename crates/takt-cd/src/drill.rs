//! Disaster-recovery drills: turn down a piece of a running environment on purpose — some of
//! its instances, all of them, or its supervisor — while takt sends its own load to the
//! public address, then measure from that load and the environment's checks how long the
//! failure took to detect and to recover from, and how many requests failed
//! (`takt_monitor::drill::measure`). Each drill is a `drill_started` and a `drill_finished`.

use crate::{Cd, CdError};
use std::sync::Arc;
use std::time::Duration;
use takt_model::{CheckState, DrillKill, DrillOutcome, Event, EventKind, OffsetDateTime};
use takt_monitor::drill::Sample;
use takt_pipeline::{Driver, Environment};
use takt_views::{Drills, Projection};

/// Load before the kill, so that the figures start from a working service.
const WARM_UP: Duration = Duration::from_millis(500);
/// The least time the drill goes on after the kill (a check may notice later than the load).
const SETTLE: Duration = Duration::from_secs(2);
/// Successes in a row for this long after the last failure: recovered.
const STEADY: Duration = Duration::from_secs(1);
/// A drill gives up this long after the kill.
pub const GIVE_UP: Duration = Duration::from_secs(60);

/// What a drill is asked to do.
#[derive(Debug, Clone)]
pub struct DrillAsk {
    pub project: String,
    pub environment: String,
    pub kill: DrillKill,
    pub count: u32,
    pub load_rps: u32,
    /// A drill in a production environment must say so.
    pub production_ok: bool,
    pub by: String,
}

impl Cd {
    /// `project`'s drills.
    pub async fn drills(&self, project: Option<&str>) -> Result<Drills, CdError> {
        let events = self
            .store
            .events(&takt_store::EventFilter {
                project: project.map(str::to_string),
                kinds: Drills::KINDS.to_vec(),
                ..Default::default()
            })
            .await?;
        Ok(Drills::fold(&events))
    }

    /// Checks the ask, records `drill_started` and runs the drill in the background; returns
    /// its number.
    pub async fn drill(self: &Arc<Self>, ask: DrillAsk) -> Result<u64, CdError> {
        let all = self.environments(&ask.project).await?;
        let env = self.environment(&ask.project, &ask.environment).await?;
        if env.driver == Driver::Command {
            return Err(CdError::BadRequest(format!(
                "environment `{}` uses the command driver: takt runs no instances there to turn down (drills need the process or nginx driver)",
                env.name
            )));
        }
        if takt_pipeline::is_production(&all, &env.name) && !ask.production_ok {
            return Err(CdError::Conflict(format!(
                "`{}` is a production environment: a drill there turns real service down; say --yes to run it anyway",
                env.name
            )));
        }
        if !(1..=1000).contains(&ask.load_rps) || ask.count == 0 {
            return Err(CdError::BadRequest(
                "--load is 1 to 1000 requests a second and --count at least 1".into(),
            ));
        }
        let Some(url) = public_url(&env) else {
            return Err(CdError::BadRequest(format!(
                "environment `{}` has no public address to send load to: give it `port` or `url`",
                env.name
            )));
        };
        if self.view(&ask.project, &env.name).running.is_none() {
            return Err(CdError::Conflict(format!("nothing runs in `{}` to drill", env.name)));
        }
        // One drill at a time per environment (this server's; one cut off by a restart ends
        // with it).
        let key = (ask.project.clone(), env.name.clone());
        if !running().lock().insert(key.clone()) {
            return Err(CdError::Conflict(format!(
                "a drill is running in `{}` already; `takt drill ls --project {}` shows it",
                env.name, ask.project
            )));
        }
        let done = Running(key);
        let n = async {
            let _one = self.drills_lock.lock().await;
            let n = self.drills(Some(&ask.project)).await?.next_number(&ask.project);
            let started = EventKind::DrillStarted {
                drill: n,
                environment: env.name.clone(),
                kill: ask.kill,
                count: ask.count,
                load_rps: ask.load_rps,
                by: ask.by.clone(),
            };
            self.record(Event::now(&ask.project, None, started)).await?;
            Ok::<u64, CdError>(n)
        }
        .await?;
        let cd = self.clone();
        tokio::spawn(async move {
            let _done = done;
            let finished = run(&cd, &ask, &env, &url, n).await;
            if let Err(e) = cd.record(Event::now(&ask.project, None, finished)).await {
                tracing::error!(error = %e, drill = n, "cannot record a drill's end");
            }
        });
        Ok(n)
    }
}

/// The environments a drill runs in now.
fn running() -> &'static parking_lot::Mutex<std::collections::HashSet<(String, String)>> {
    static RUNNING: std::sync::OnceLock<parking_lot::Mutex<std::collections::HashSet<(String, String)>>> =
        std::sync::OnceLock::new();
    RUNNING.get_or_init(Default::default)
}

/// Takes its environment off [`running`] when dropped (the drill ended, or never started).
struct Running((String, String));

impl Drop for Running {
    fn drop(&mut self) {
        running().lock().remove(&self.0);
    }
}

fn public_url(env: &Environment) -> Option<String> {
    env.url
        .clone()
        .or_else(|| env.port.map(|p| format!("http://127.0.0.1:{p}/")))
}

fn failed(drill: u64, env: &str, why: String) -> EventKind {
    EventKind::DrillFinished {
        drill,
        environment: env.to_string(),
        outcome: DrillOutcome::Failed,
        requests: 0,
        failed: 0,
        detect_ms: None,
        detected_by: None,
        recover_ms: None,
        killed: 0,
        detail: Some(why),
    }
}

/// The drill itself: load, kill, watch, measure.
async fn run(cd: &Arc<Cd>, ask: &DrillAsk, env: &Environment, url: &str, n: u64) -> EventKind {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => return failed(n, &env.name, format!("cannot make an HTTP client: {e}")),
    };
    let supervisor = crate::supervisor(cd, &ask.project, env);
    let Some(status) = supervisor.status().await else {
        return failed(n, &env.name, "the environment's supervisor does not answer".into());
    };
    // The load: one request every 1/rate s, each recorded.
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let samples = Arc::new(parking_lot::Mutex::new(Vec::<Sample>::new()));
    // Moves with each sample: what the watch below waits on.
    let (sampled_tx, mut sampled) = tokio::sync::watch::channel(0u64);
    let load = {
        let (samples, url) = (samples.clone(), url.to_string());
        let every = Duration::from_secs_f64(1.0 / f64::from(ask.load_rps));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let ok = client.get(&url).send().await.is_ok_and(|r| r.status().is_success());
                samples.lock().push(Sample {
                    at: OffsetDateTime::now_utc(),
                    ok,
                });
                sampled_tx.send_modify(|n| *n += 1);
            }
        })
    };
    tokio::time::sleep(WARM_UP).await;
    // The checks of this environment, from before the kill.
    let after = cd.store.head().await.unwrap_or(0);
    let mut checks = cd.store.subscribe(after, &["check_state_changed"]);
    let killed_at = OffsetDateTime::now_utc();
    let (killed, orphans) = kill(&status, ask.kill, ask.count);
    if killed == 0 {
        let _ = stop_tx.send(true);
        let _ = load.await;
        return failed(n, &env.name, "nothing was running there to turn down".into());
    }
    let deadline = tokio::time::Instant::now() + GIVE_UP;
    let settle = tokio::time::Instant::now() + SETTLE;
    let (mut down, mut first_down, mut all_up) = (std::collections::BTreeSet::new(), None, None);
    loop {
        let steady = {
            let s = samples.lock();
            let last_failure = s.iter().rev().find(|x| !x.ok).map_or(killed_at, |x| x.at);
            s.last().is_some_and(|x| x.ok && x.at - last_failure >= STEADY)
        };
        let now = tokio::time::Instant::now();
        if (steady && down.is_empty() && now >= settle) || now >= deadline {
            break;
        }
        // Wake for a check's change or the next request's answer.
        tokio::select! {
            e = checks.next() => {
                if let Ok(Event { project, kind: EventKind::CheckStateChanged { check, environment, state, .. }, at, .. }) = e
                    && project == ask.project
                    && environment.as_deref() == Some(env.name.as_str())
                {
                    if state == CheckState::Down {
                        down.insert(check);
                        first_down.get_or_insert(at);
                    } else {
                        down.remove(&check);
                        if down.is_empty() && first_down.is_some() {
                            all_up = Some(at);
                        }
                    }
                }
            }
            _ = sampled.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    let _ = stop_tx.send(true);
    let _ = load.await;
    // A supervisor killed outright leaves its instances behind: end them, as a supervisor
    // that stops does.
    for pgid in orphans {
        signal_group(pgid);
    }
    let samples = samples.lock().clone();
    let m = takt_monitor::drill::measure(killed_at, &samples, first_down, all_up);
    EventKind::DrillFinished {
        drill: n,
        environment: env.name.clone(),
        outcome: if m.recover_ms.is_some() {
            DrillOutcome::Recovered
        } else {
            DrillOutcome::NotRecovered
        },
        requests: m.requests,
        failed: m.failed,
        detect_ms: m.detect_ms,
        detected_by: m.detected_by,
        recover_ms: m.recover_ms,
        killed,
        detail: None,
    }
}

/// SIGKILL to a process group.
fn signal_group(pgid: u32) -> bool {
    let Ok(raw) = i32::try_from(pgid) else { return false };
    raw > 0 && nix::sys::signal::killpg(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGKILL).is_ok()
}

/// Turns down what `kill` names; returns how many processes, and the instances a killed
/// supervisor leaves behind.
fn kill(status: &takt_driver::protocol::Status, kill: DrillKill, count: u32) -> (u32, Vec<u32>) {
    // The instances that serve traffic (the running version's).
    let serving: Vec<u32> = status
        .slots
        .iter()
        .filter(|s| s.weight > 0)
        .flat_map(|s| s.instances.iter().filter_map(|i| i.pid))
        .collect();
    match kill {
        DrillKill::Instance => {
            let n = serving
                .iter()
                .take(count as usize)
                .filter(|p| signal_group(**p))
                .count();
            (n as u32, Vec::new())
        }
        DrillKill::AllInstances => (serving.iter().filter(|p| signal_group(**p)).count() as u32, Vec::new()),
        DrillKill::Supervisor => {
            let Ok(raw) = i32::try_from(status.pid) else {
                return (0, Vec::new());
            };
            let ok = raw > 0
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGKILL).is_ok();
            let all = status
                .slots
                .iter()
                .flat_map(|s| s.instances.iter().filter_map(|i| i.pid))
                .collect();
            (u32::from(ok), if ok { all } else { Vec::new() })
        }
    }
}
