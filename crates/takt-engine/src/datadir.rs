//! The data directory: one owner at a time (a lock file naming the owner's pid).

use crate::EngineError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub struct DataDir {
    pub root: PathBuf,
    _lock: Flock<File>,
}

impl DataDir {
    /// Creates (if needed) and locks `root`. A second owner gets [`EngineError::Locked`].
    pub fn open(root: &Path) -> Result<DataDir, EngineError> {
        let io = |doing: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| EngineError::Io { doing, path: p, source }
        };
        fs::create_dir_all(root).map_err(io("creating", root))?;
        // Absolute from here on: git and the jobs run in other directories (`--data-dir d`).
        let root = &std::path::absolute(root).map_err(io("resolving", root))?;
        let lock_path = root.join("takt.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io("opening", &lock_path))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut f, _)) => {
                let mut s = String::new();
                let _ = f.read_to_string(&mut s);
                return Err(EngineError::Locked {
                    path: root.to_path_buf(),
                    pid: s.trim().to_string(),
                });
            }
        };
        lock.set_len(0).map_err(io("writing", &lock_path))?;
        lock.rewind().map_err(io("writing", &lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(io("writing", &lock_path))?;
        let dd = DataDir {
            root: root.to_path_buf(),
            _lock: lock,
        };
        // Workspaces left by a run that was killed: we own the directory now, nobody uses them.
        let _ = fs::remove_dir_all(dd.work_dir());
        let _ = fs::remove_dir_all(dd.root.join("tmp"));
        for d in [
            dd.work_dir(),
            dd.root.join("logs"),
            dd.root.join("cache"),
            dd.root.join("tmp"),
        ] {
            fs::create_dir_all(&d).map_err(io("creating", &d))?;
        }
        Ok(dd)
    }

    /// Where job workspaces go: in the system's temporary directory (never inside a repository,
    /// where a job's `git` would find the user's repository), one folder per data directory.
    pub fn work_dir(&self) -> PathBuf {
        use sha2::Digest;
        let h = sha2::Sha256::digest(self.root.as_os_str().as_encoded_bytes());
        std::env::temp_dir().join(format!("takt-work-{}", hex::encode(&h[..6])))
    }

    pub fn db_path(&self) -> PathBuf {
        self.root.join("takt.db")
    }
}
