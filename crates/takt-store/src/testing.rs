//! Test support (feature `testing`): a throwaway PostgreSQL server on 127.0.0.1, started from
//! Debian's `postgresql` package, for the store suite and the server's end-to-end tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failure is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway PostgreSQL server on 127.0.0.1; stopped on drop, even when a test panics.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| {
                d.flatten()
                    .map(|e| e.path().join("bin"))
                    .filter(|b| b.join("initdb").exists())
                    .max()
            })
            .expect("PostgreSQL is not installed: `apt-get install -y postgresql` (see .ci/run)");
        let dir = tempfile::tempdir().unwrap();
        // initdb refuses to run as root: run the server as the `postgres` user then.
        let as_postgres = nix::unistd::geteuid().is_root();
        if as_postgres {
            let uid = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("a `postgres` user")
                .uid;
            nix::unistd::chown(dir.path(), Some(uid), None).unwrap();
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pg = Postgres {
            bin,
            dir,
            port,
            as_postgres,
        };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let opts = format!(
            "-k {} -c listen_addresses=127.0.0.1 -p {} -c fsync=off",
            pg.dir.path().display(),
            port
        );
        let log = pg.dir.path().join("log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let prog = self.bin.join(tool);
        let out = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&prog)
                .args(args)
                .current_dir(self.dir.path())
                .output()
        } else {
            Command::new(&prog).args(args).current_dir(self.dir.path()).output()
        }
        .unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let d: &Path = &data;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run("pg_ctl", &["-D", &d.to_string_lossy(), "-m", "immediate", "-w", "stop"])
        }));
    }
}
