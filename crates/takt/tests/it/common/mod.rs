//! Helpers for tests that drive the real `takt` binary on real git repositories.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn takt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_takt"));
    c.env_remove("TAKT_DATA_DIR");
    c
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A git repository in a temporary directory with one commit of `files`.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn new(files: &[(&str, &str)]) -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q", "-b", "main"]);
        let r = Repo { dir };
        r.commit(files, "initial");
        r
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, content: &str) {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, content).expect("write");
    }

    pub fn commit(&self, files: &[(&str, &str)], msg: &str) {
        for (name, content) in files {
            self.write(name, content);
        }
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "--allow-empty", "-m", msg]);
    }

    pub fn git(&self, args: &[&str]) {
        git(self.path(), args);
    }

    /// The full id of a revision.
    pub fn rev(&self, rev: &str) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args(["rev-parse", rev])
            .output()
            .expect("git runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join(".git/takt")
    }

    /// Every event of the repository's SQLite event log.
    pub fn events(&self) -> Vec<takt_model::Event> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = takt_store::Store::open_sqlite(&self.data_dir().join("takt.db"))
                .await
                .unwrap();
            store.events(&takt_store::EventFilter::default()).await.unwrap()
        })
    }

    /// `takt run --json` with extra arguments.
    pub fn run(&self, extra: &[&str]) -> (Output, serde_json::Value) {
        let out = takt()
            .arg("run")
            .arg(self.path())
            .arg("--json")
            .args(extra)
            .output()
            .expect("takt runs");
        let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, json)
    }
}

pub fn job<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["name"] == name))
        .unwrap_or_else(|| panic!("no job {name} in {report:#}"))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes: it runs nothing.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|st| st != "Z"),
        Err(_) => false,
    }
}

/// Waits (bounded) until `f` is true.
pub fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

pub fn read_pids(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path())
                && let Ok(p) = s.trim().parse()
            {
                out.push(p);
            }
        }
    }
    out
}

/// A child process (a peer server a test started) that is killed and reaped when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
