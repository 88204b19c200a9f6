//! The CI service: the run queue (numbering, one run per commit, global and per-project
//! limits, newest-only mode, cancel, dispatch to the engine, crash recovery), the trigger path
//! every report of a commit takes, polling, each default branch's settings and the cron
//! scheduler, projects and their secrets. It knows nothing of HTTP: the server routes to it.

pub mod flags;
pub mod forge;
pub mod poll;
pub mod projects;
pub mod queue;
pub mod schedule;
pub mod secrets;
pub mod status;
pub mod trigger;

use parking_lot::RwLock;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Told when a trigger queued a run: the project, the run, when the trigger arrived (before
/// the fetch). The server's metrics measure trigger latency from it.
pub type OnQueued = Box<dyn Fn(&str, u64, Instant) + Send + Sync>;

/// The CI service's handles: the queue, the projects (shared with the server, which records
/// their events), the data directory, and what each default branch configures.
pub struct Ci {
    pub queue: Arc<queue::Queue>,
    pub projects: Arc<RwLock<projects::Projects>>,
    pub data_dir: PathBuf,
    /// What each project's default branch configures (schedules, notify, retention,
    /// environments), kept by [`schedule::refresh`].
    pub branch_configs: RwLock<HashMap<String, schedule::BranchConfig>>,
    pub on_queued: OnQueued,
    /// Feature flags' run-time changes and their listeners.
    pub flags_live: flags::FlagsLive,
    /// One default-branch re-read per project at a time ([`schedule::refresh`]).
    pub(crate) refreshing: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Ci {
    pub fn new(
        queue: Arc<queue::Queue>,
        projects: Arc<RwLock<projects::Projects>>,
        data_dir: PathBuf,
        on_queued: OnQueued,
    ) -> Ci {
        Ci {
            queue,
            projects,
            data_dir,
            branch_configs: RwLock::default(),
            on_queued,
            flags_live: flags::FlagsLive::default(),
            refreshing: Default::default(),
        }
    }

    /// A project by name.
    pub fn project(&self, name: &str) -> Result<projects::Project, trigger::TriggerError> {
        self.projects
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| trigger::TriggerError::NotFound(format!("no project named `{name}`")))
    }

    /// The default branch's settings of a project, as last read.
    pub fn branch_config(&self, name: &str) -> Option<schedule::BranchConfig> {
        self.branch_configs.read().get(name).cloned()
    }

    /// The default branch's compiled flags (a handle, not a copy of the whole config: OFREP
    /// asks for it on every evaluation).
    pub fn flags(&self, name: &str) -> Option<std::sync::Arc<schedule::ProjectFlags>> {
        self.branch_configs.read().get(name).and_then(|c| c.flags.clone())
    }
}

/// Writes a secret to a file only its owner may read (0600), fsynced.
pub fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{secret}")?;
    f.sync_all()
}
