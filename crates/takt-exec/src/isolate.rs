//! How a step's processes are kept away from takt itself (its data directory, its config, its
//! credentials, other jobs): bubblewrap, another user, or nothing.

use crate::{ExecError, StepSpec};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// How [`crate::LocalExecutor`] isolates the steps it runs.
#[derive(Debug, Clone, Default)]
pub enum Isolation {
    /// Steps run as takt's own user and see everything takt sees.
    #[default]
    None,
    /// Steps run under bubblewrap (see [`Bwrap::args`]).
    Bwrap(Bwrap),
    /// Steps run as this (unprivileged) user and group; their workspace is made theirs.
    User { uid: u32, gid: u32 },
}

impl Isolation {
    /// `none`, `bwrap` or `user`, as settings and `/readyz` name it.
    pub fn name(&self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Bwrap(_) => "bwrap",
            Isolation::User { .. } => "user",
        }
    }
}

/// Steps under bubblewrap: new pid, ipc and uts namespaces with the shim as pid 1 (and a new
/// network namespace for `network: false`),
/// the host read-only, a private `/tmp`, the step's workspace writable at its own path, and
/// the hidden paths replaced by an empty tmpfs (directories) or `/dev/null` (files).
#[derive(Debug, Clone)]
pub struct Bwrap {
    pub program: PathBuf,
    hidden: Vec<Hidden>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hidden {
    path: PathBuf,
    dir: bool,
}

impl Bwrap {
    /// `hide`: what steps must not see. Paths that exist now are resolved (symlinks) and hidden
    /// from every step; missing ones are skipped. Looks at the file system: call it at start,
    /// off the async runtime.
    pub fn new(program: PathBuf, hide: &[PathBuf]) -> Bwrap {
        let mut hidden: Vec<Hidden> = Vec::new();
        for p in hide {
            let Ok(path) = std::fs::canonicalize(p) else { continue };
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let h = Hidden {
                path,
                dir: meta.is_dir(),
            };
            if !hidden.contains(&h) {
                hidden.push(h);
            }
        }
        Bwrap { program, hidden }
    }

    /// The paths hidden from steps (resolved; those that existed at start).
    pub fn hidden(&self) -> impl Iterator<Item = &Path> {
        self.hidden.iter().map(|h| h.path.as_path())
    }

    /// bubblewrap's arguments for one step, up to and including the `--` before the shim.
    pub fn args(&self, spec: &StepSpec, shim: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut add = |xs: &[&dyn AsRef<std::ffi::OsStr>]| a.extend(xs.iter().map(|x| x.as_ref().to_os_string()));
        add(&[&"--ro-bind", &"/", &"/", &"--dev", &"/dev", &"--proc", &"/proc"]);
        // A private /tmp: also hides the other jobs' workspaces when they live there.
        add(&[&"--tmpfs", &"/tmp"]);
        let tmp = Path::new("/tmp");
        for h in &self.hidden {
            if h.path.starts_with(tmp) {
                continue; // already behind the private /tmp
            }
            if h.dir {
                add(&[&"--tmpfs", &h.path]);
            } else {
                add(&[&"--ro-bind", &"/dev/null", &h.path]);
            }
        }
        if let Some(ws) = &spec.workspace {
            add(&[&"--bind", ws, ws]);
        }
        if shim.starts_with(tmp) || self.hidden.iter().any(|h| shim.starts_with(&h.path)) {
            add(&[&"--ro-bind", &shim, &shim]);
        }
        // --as-pid-1: the shim is the sandbox's init (when it exits, the kernel kills whatever
        // is left), and no bwrap process, whose arguments name the hidden paths, is visible.
        add(&[&"--unshare-pid", &"--unshare-ipc", &"--unshare-uts", &"--as-pid-1"]);
        // No capabilities: bubblewrap started by root keeps them all unless told otherwise,
        // and with CAP_SYS_ADMIN a step could unmount what hides the data directory or
        // remount the host writable.
        add(&[&"--cap-drop", &"ALL"]);
        if !spec.network {
            add(&[&"--unshare-net"]);
        }
        // --die-with-parent: bwrap and everything in the sandbox get SIGKILL when takt (the
        // thread that started bwrap: tokio's worker threads live as long as the runtime) dies,
        // or when bwrap itself is killed (crash recovery SIGTERMs it). --new-session: no
        // access to takt's terminal; the shim's process group is unaffected.
        add(&[&"--die-with-parent", &"--new-session", &"--chdir", &spec.cwd, &"--"]);
        a
    }
}

/// `name` in a directory of `PATH` (an executable file), if any. Looks at the file system.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Checks that bubblewrap works here with the options steps use, by running `true` under it.
pub async fn probe_bwrap(program: &Path) -> Result<(), ExecError> {
    let fail = |reason: String| ExecError::Bwrap {
        program: program.display().to_string(),
        reason,
    };
    let probe = tokio::process::Command::new(program)
        .args([
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--as-pid-1",
            "--cap-drop",
            "ALL",
            "--unshare-net",
            "--die-with-parent",
            "--new-session",
            "--",
            "true",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    // A bubblewrap that hangs must not hang the server's start.
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), probe)
        .await
        .map_err(|_| fail("it did not finish within 10 s".into()))?
        .map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(fail(format!("{} ({})", err.trim(), out.status)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(network: bool) -> StepSpec {
        StepSpec {
            program: vec!["sh".into()],
            env: Vec::new(),
            cwd: "/tmp/takt-work-1/p-r1-a-a1/src".into(),
            workspace: Some("/tmp/takt-work-1/p-r1-a-a1".into()),
            network,
            timeout: Duration::from_secs(1),
            on_start: None,
        }
    }

    fn strings(a: &[OsString]) -> Vec<String> {
        a.iter().map(|x| x.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn keeps_the_paths_that_exist_once() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let conf = dir.path().join("takt.toml");
        std::fs::write(&conf, "").unwrap();
        let b = Bwrap::new(
            "/usr/bin/bwrap".into(),
            &[data.clone(), conf.clone(), dir.path().join("missing"), data.clone()],
        );
        let want = [
            Hidden {
                path: std::fs::canonicalize(&data).unwrap(),
                dir: true,
            },
            Hidden {
                path: std::fs::canonicalize(&conf).unwrap(),
                dir: false,
            },
        ];
        assert_eq!(b.hidden, want, "missing and repeated paths are dropped");
    }

    #[test]
    fn hides_directories_and_files_and_binds_the_workspace_back() {
        let hidden = |p: &str, dir: bool| Hidden { path: p.into(), dir };
        let b = Bwrap {
            program: "/usr/bin/bwrap".into(),
            hidden: vec![
                hidden("/srv/takt", true),
                hidden("/etc/takt.toml", false),
                hidden("/tmp/data", true),
            ],
        };
        let at = |a: &[String], xs: &[&str]| {
            a.windows(xs.len())
                .position(|w| w.iter().zip(xs).all(|(x, y)| x == y))
                .unwrap_or_else(|| panic!("{xs:?} not in {a:?}"))
        };
        let a = strings(&b.args(&spec(true), Path::new("/usr/bin/takt")));
        assert_eq!(at(&a, &["--ro-bind", "/", "/"]), 0);
        let tmp = at(&a, &["--tmpfs", "/tmp"]);
        at(&a, &["--tmpfs", "/srv/takt"]);
        at(&a, &["--ro-bind", "/dev/null", "/etc/takt.toml"]);
        assert!(!a.iter().any(|x| x == "/tmp/data"), "behind the private /tmp already");
        let ws = "/tmp/takt-work-1/p-r1-a-a1";
        assert!(
            at(&a, &["--bind", ws, ws]) > tmp,
            "the workspace comes back after /tmp is hidden"
        );
        at(&a, &["--unshare-pid", "--unshare-ipc", "--unshare-uts"]);
        at(&a, &["--chdir", "/tmp/takt-work-1/p-r1-a-a1/src", "--"]);
        assert!(!a.iter().any(|x| x == "--unshare-net"));
        assert_eq!(a.last().map(String::as_str), Some("--"));
        assert!(
            !a.iter().any(|x| x == "/usr/bin/takt"),
            "a visible shim is not bound again"
        );
        let a = strings(&b.args(&spec(false), Path::new("/srv/takt/bin/takt")));
        assert!(a.iter().any(|x| x == "--unshare-net"));
        at(&a, &["--ro-bind", "/srv/takt/bin/takt", "/srv/takt/bin/takt"]);
    }
}
