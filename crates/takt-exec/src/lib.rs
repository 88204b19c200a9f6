//! How a job's commands run. [`Executor`] is the port; [`LocalExecutor`] runs steps as local
//! processes under a per-step [`shim`] that makes sure no process outlives its step.
//!
//! A container or Kubernetes executor implements the same trait later: it gets a
//! [`StepSpec`] (program, environment, working directory, timeout), streams output into a
//! [`LogSink`], and reports how the step ended. It never writes logs to local paths itself.
//!
//! [`Isolation`] keeps a step's processes away from takt itself: under bubblewrap
//! ([`Bwrap`]: their own pid, ipc and uts namespaces, the host read-only, takt's own files
//! hidden, only the workspace and a private `/tmp` writable), or as another user.

mod isolate;
pub mod shim;

pub use isolate::{Bwrap, Isolation, find_on_path, probe_bwrap};

use parking_lot::Mutex;
use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Where a step's output goes: stdout and stderr interleaved in arrival order.
pub trait LogSink: Send {
    /// Bytes as they arrived from the step's processes.
    fn output(&mut self, bytes: &[u8]);
    /// A line from takt itself (starts, ends, kills), kept apart from the job's output.
    fn note(&mut self, text: &str);
}

pub type SharedLog = Arc<Mutex<dyn LogSink>>;

/// One step to run: a program with a complete environment (nothing is inherited).
#[derive(Debug, Clone)]
pub struct StepSpec {
    pub program: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// The step's own directory tree (its workspace): under bubblewrap the only writable place
    /// besides a private `/tmp`, bound at the same path.
    pub workspace: Option<PathBuf>,
    /// `false`: no network (bubblewrap: a new, empty network namespace).
    pub network: bool,
    pub timeout: Duration,
    /// Called with the pid of the step's top process (for the local executor: the shim, which
    /// leads the step's process group; under bubblewrap: bwrap, whose arguments name the shim
    /// and whose death ends the sandbox) as soon as it runs, so it can be recorded.
    pub on_start: Option<OnStart>,
}

/// A callback given the pid of a started step.
#[derive(Clone)]
pub struct OnStart(pub Arc<dyn Fn(u32) + Send + Sync>);

impl std::fmt::Debug for OnStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnStart(..)")
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEnd {
    /// Exit code (128 + N when killed by signal N).
    Exited(i32),
    TimedOut,
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("lost track of the step's process: {0}")]
    Wait(std::io::Error),
    #[error("bubblewrap ({program}) does not work here: {reason}")]
    Bwrap { program: String, reason: String },
}

/// Runs steps. Implementations must kill everything a step started when it ends, times out or
/// is cancelled (`cancel` becomes `true`).
pub trait Executor: Send + Sync {
    fn run_step(
        &self,
        spec: StepSpec,
        log: SharedLog,
        cancel: watch::Receiver<bool>,
    ) -> impl Future<Output = Result<StepEnd, ExecError>> + Send;

    /// The user and group that must own a step's workspace (it runs as them), if not takt's own.
    fn workspace_owner(&self) -> Option<(u32, u32)> {
        None
    }
}

/// Runs steps as local processes, each under a shim: `<shim> <shim_args...> -- <program...>`;
/// under bubblewrap `bwrap <args> -- <shim> <shim_args...> -- <program...>`.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    pub shim: PathBuf,
    pub shim_args: Vec<String>,
    pub isolation: Isolation,
}

impl LocalExecutor {
    /// The program that starts a step and its arguments: the shim's command line, inside
    /// bubblewrap's when the executor isolates that way.
    pub fn command_line(&self, spec: &StepSpec) -> (PathBuf, Vec<std::ffi::OsString>) {
        let mut inner: Vec<std::ffi::OsString> = self.shim_args.iter().map(Into::into).collect();
        inner.push("--".into());
        inner.extend(spec.program.iter().map(Into::into));
        match &self.isolation {
            Isolation::Bwrap(b) => {
                let mut args = b.args(spec, &self.shim);
                args.push(self.shim.clone().into());
                args.extend(inner);
                (b.program.clone(), args)
            }
            Isolation::None | Isolation::User { .. } => (self.shim.clone(), inner),
        }
    }
}

impl Executor for LocalExecutor {
    async fn run_step(
        &self,
        spec: StepSpec,
        log: SharedLog,
        mut cancel: watch::Receiver<bool>,
    ) -> Result<StepEnd, ExecError> {
        let (reader, writer) = std::io::pipe().map_err(|e| ExecError::Spawn {
            program: "a pipe".into(),
            source: e,
        })?;
        // A larger pipe (1 MiB instead of 64 KiB) means fewer wake-ups for chatty jobs. Best
        // effort: the system limit may refuse it.
        let _ = nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
        let writer2 = writer.try_clone().map_err(|e| ExecError::Spawn {
            program: "a pipe".into(),
            source: e,
        })?;
        if !spec.network && !matches!(self.isolation, Isolation::Bwrap(_)) {
            log.lock()
                .note("`network: false` is not enforced: jobs are not isolated with bubblewrap here");
        }
        let (program, args) = self.command_line(&spec);
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            // The shim watches its stdin: when takt closes it (or dies), the step is ended.
            .stdin(Stdio::piped())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2))
            // Its own process group: a terminal's Ctrl-C reaches takt, which decides.
            .process_group(0)
            .kill_on_drop(false);
        if let Isolation::User { uid, gid } = self.isolation {
            // std drops supplementary groups too (setgroups) when takt runs as root.
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
        drop(cmd); // close our copies of the pipe's write end
        if let (Some(f), Some(pid)) = (&spec.on_start, child.id()) {
            (f.0)(pid);
        }
        let stdin = child.stdin.take();

        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let log2 = log.clone();
        std::thread::Builder::new()
            .name("takt-log".into())
            .spawn(move || {
                pump(reader, &log2);
                let _ = done_tx.send(());
            })
            .map_err(|e| ExecError::Spawn {
                program: "a log thread".into(),
                source: e,
            })?;

        let mut end: Option<StepEnd> = None;
        let status = tokio::select! {
            s = child.wait() => s,
            _ = tokio::time::sleep(spec.timeout) => { end = Some(StepEnd::TimedOut); drop(stdin); child.wait().await }
            _ = wait_cancel(&mut cancel) => { end = Some(StepEnd::Cancelled); drop(stdin); child.wait().await }
        }
        .map_err(ExecError::Wait)?;
        // The pipe closes once every process of the step is gone; the shim guarantees that.
        let _ = done_rx.await;
        if end.is_none() && *cancel.borrow() {
            end = Some(StepEnd::Cancelled);
        }
        Ok(end.unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            StepEnd::Exited(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        }))
    }

    fn workspace_owner(&self) -> Option<(u32, u32)> {
        match self.isolation {
            Isolation::User { uid, gid } => Some((uid, gid)),
            _ => None,
        }
    }
}

async fn wait_cancel(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow() {
            return;
        }
        if rx.changed().await.is_err() {
            // Sender gone: nobody can cancel any more.
            std::future::pending::<()>().await;
        }
    }
}

fn pump(mut reader: std::io::PipeReader, log: &SharedLog) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut l = log.lock();
                l.output(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}
