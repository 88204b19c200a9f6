//! Projects (a repository and its default branch), their bare mirrors, and the run queue that
//! executes triggered runs through the same engine `takt run` uses.
//!
//! One commit gets one run per project and branch however often it is triggered, unless the
//! trigger says `force`. Runs wait in a bounded queue and execute one at a time (the global
//! concurrency limit is 1 in this first version).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use takt_engine::git::Repo;
use takt_engine::{Engine, Live, Prepared, RunRequest};
use takt_exec::LocalExecutor;
use takt_model::{Event, EventKind, Trigger};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Project {
    pub name: String,
    pub repo: String,
    pub branch: String,
    pub added_at: String,
}

/// The projects, projected from `project_added` events.
#[derive(Debug, Default)]
pub struct Projects {
    by_name: BTreeMap<String, Project>,
}

impl Projects {
    pub fn apply(&mut self, e: &Event) {
        if let EventKind::ProjectAdded { name, repo, branch } = &e.kind {
            let p = Project {
                name: name.clone(),
                repo: repo.clone(),
                branch: branch.clone(),
                added_at: takt_model::timefmt::rfc3339(e.at),
            };
            self.by_name.insert(name.clone(), p);
        }
    }
    pub fn get(&self, name: &str) -> Option<&Project> {
        self.by_name.get(name)
    }
    pub fn list(&self) -> Vec<Project> {
        self.by_name.values().cloned().collect()
    }
}

/// Project names: 1–100 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
pub fn check_name(n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 100
        && !n.starts_with(['.', '-'])
        && n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "project name `{n}` is not allowed: use 1 to 100 of A-Z a-z 0-9 . _ - (not first . or -)"
        ))
    }
}

/// Branch names as git allows them, conservatively.
pub fn check_branch(b: &str) -> Result<(), String> {
    let ok = !b.is_empty()
        && b.len() <= 200
        && !b.starts_with('-')
        && !b.contains("..")
        && !b.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("`{b}` is not a valid branch name"))
    }
}

pub fn mirror_path(data: &Path, name: &str) -> PathBuf {
    data.join("mirrors").join(format!("{name}.git"))
}

/// A run waiting in the queue.
#[derive(Debug, Clone)]
pub struct QueuedRun {
    pub project: Project,
    pub commit: String,
    pub branch: Option<String>,
    pub token: String,
}

/// (project, commit, branch) of the runs queued or running.
type Pending = Arc<Mutex<HashSet<(String, String, Option<String>)>>>;

/// The run queue and its single worker.
pub struct Runner {
    tx: mpsc::Sender<QueuedRun>,
    /// (project, commit, branch) queued or running: a second trigger is a duplicate.
    pending: Pending,
}

/// How many runs may wait.
pub const QUEUE_CAPACITY: usize = 1024;

impl Runner {
    pub fn start(engine: Engine<LocalExecutor>, data: PathBuf) -> Runner {
        let (tx, mut rx) = mpsc::channel::<QueuedRun>(QUEUE_CAPACITY);
        let pending: Pending = Arc::default();
        let pending2 = pending.clone();
        tokio::spawn(async move {
            while let Some(q) = rx.recv().await {
                let key = (q.project.name.clone(), q.commit.clone(), q.branch.clone());
                if let Err(e) = run_one(&engine, &data, &q).await {
                    tracing::error!(project = %q.project.name, commit = %q.commit, error = %e, "run could not be executed");
                }
                if let Ok(mut p) = pending2.lock() {
                    p.remove(&key);
                }
            }
        });
        Runner { tx, pending }
    }

    /// Queues a run unless the same commit is already queued or running (then `Ok(false)`).
    pub fn enqueue(&self, q: QueuedRun, force: bool) -> Result<bool, String> {
        let key = (q.project.name.clone(), q.commit.clone(), q.branch.clone());
        {
            let mut p = self.pending.lock().map_err(|_| "queue state poisoned".to_string())?;
            if !force && p.contains(&key) {
                return Ok(false);
            }
            p.insert(key.clone());
        }
        match self.tx.try_send(q) {
            Ok(()) => Ok(true),
            Err(e) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&key);
                }
                Err(format!(
                    "the run queue is full ({QUEUE_CAPACITY} runs); try again later: {e}"
                ))
            }
        }
    }
}

async fn run_one(engine: &Engine<LocalExecutor>, data: &Path, q: &QueuedRun) -> Result<(), String> {
    let mirror = mirror_path(data, &q.project.name);
    let repo = Repo {
        root: mirror.clone(),
        common_dir: mirror.clone(),
    };
    let req = RunRequest {
        path: mirror.clone(),
        rev: q.commit.clone(),
        dirty: false,
        only_jobs: Vec::new(),
        parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
        log_limit: takt_engine::log::DEFAULT_LIMIT,
        project: Some(q.project.name.clone()),
        trigger: Trigger::Api { token: q.token.clone() },
        branch: q.branch.clone(),
    };
    let prep = match Prepared::new(&req, repo, &data.join("tmp")).await {
        Ok(p) => p,
        Err(e) => return record_failed_start(engine, q, &e.to_string()).await,
    };
    let (ptx, prx) = mpsc::channel(16);
    drop(prx); // nobody watches progress here; the events say everything
    let (_cancel_tx, cancel_rx) = watch::channel(false);
    let report = engine
        .run(prep, &req, Arc::new(Live::default()), ptx, cancel_rx)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(project = %report.project, run = report.run, status = %report.status, "run finished");
    Ok(())
}

/// A run that could not start (invalid takt.yml, a plan that cannot run, a git failure) is still
/// a run of that commit: recorded as failed, with the reason, so people see why.
async fn record_failed_start(engine: &Engine<LocalExecutor>, q: &QueuedRun, reason: &str) -> Result<(), String> {
    let store = &engine.store;
    let project = &q.project.name;
    let run = store.next_run_number(project).await.map_err(|e| e.to_string())?;
    let kinds = [
        EventKind::CommitSeen {
            commit: q.commit.clone(),
            branch: q.branch.clone(),
            tag: None,
        },
        EventKind::RunQueued {
            commit: q.commit.clone(),
            branch: q.branch.clone(),
            tag: None,
            trigger: Trigger::Api { token: q.token.clone() },
            dirty: false,
        },
        EventKind::RunFinished {
            status: takt_model::RunStatus::Failed,
            duration_ms: 0,
            reason: Some(reason.to_string()),
        },
    ];
    for k in kinds {
        store
            .append(&Event::now(project, Some(run), k))
            .await
            .map_err(|e| e.to_string())?;
    }
    tracing::warn!(%project, run, %reason, "run could not start");
    Ok(())
}
