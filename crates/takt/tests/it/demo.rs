//! `takt demo` end to end: the real binary tells the whole story (pipeline, blue/green to
//! staging, canary to production, a broken canary caught and rolled back, a break after the
//! rollout caught by a check and remediated, its incident and postmortem), exits 0, and leaves
//! nothing behind — no listener on the ports it printed, no process under its directory, the
//! directory gone — unless `--keep DIR`. Ctrl-C in the middle stops everything too, and
//! `--serve` keeps a working server until Ctrl-C.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common::takt;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `takt demo`, its standard output read line by line.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut child = takt()
            .arg("demo")
            .args(args)
            .env_remove("TAKT_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `want` (at most 120 s); all read so far.
    fn until(&mut self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.seen.iter().any(|l| l.contains(want)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line with `{want}` in:\n{}", self.seen.join("\n")),
            }
        }
        self.seen.join("\n")
    }

    fn interrupt(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
    }

    /// Waits for it to exit (at most 120 s, else it is killed and the test fails): its exit
    /// code, all of its standard output, its standard error.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("takt demo did not end within 120 s:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread ends at the pipe's end.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(l);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.code(), self.seen.join("\n"), err)
    }
}

/// The directory and the ports the demo printed at its start.
struct Printed {
    root: PathBuf,
    ports: Vec<(String, u16)>,
}

fn printed(out: &str) -> Printed {
    let first = out.lines().next().unwrap_or_default();
    let root = PathBuf::from(first.rsplit(", in ").next().unwrap().trim());
    let mut ports = Vec::new();
    for what in ["server", "staging", "production"] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(what) && l.contains("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no {what} address in:\n{out}"));
        let port = line.split("http://127.0.0.1:").nth(1).unwrap();
        let port: u16 = port
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap();
        ports.push((what.to_string(), port));
    }
    Printed { root, ports }
}

/// Each of `want` appears in `out`, in this order.
fn in_order(out: &str, want: &[&str]) {
    let mut from = 0;
    for w in want {
        let Some(k) = out[from..].find(w) else {
            panic!("`{w}` after byte {from} of:\n{out}");
        };
        from += k + w.len();
    }
}

/// Nothing the demo started runs: no process names its directory, nothing listens on the
/// ports it printed.
fn nothing_left(p: &Printed, out: &str) {
    let root = p.root.display().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()) {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(
                !cmdline.contains(&root),
                "still running: {cmdline} (pid {:?})\n{out}",
                e.file_name()
            );
        }
    }
    for (what, port) in &p.ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", *port)).is_err(),
            "{what}'s port {port} still takes connections\n{out}"
        );
    }
}

/// The whole story, in the order it happens.
const STORY: &[&str] = &[
    "1. A first commit",
    "✓ run #1 passed",
    "artifact app@1-",
    "✓ staging: app@1-",
    "✓ production: promoted app@1-",
    "2. A change",
    "✓ run #2 passed",
    "✓ staging: blue/green deploy of app@2-",
    "✓ production: canary of app@2-",
    "promoted",
    "20% → analysis ✓",
    "3. A broken commit",
    "✓ run #3 passed",
    "✓ staging: blue/green deploy of app@3-",
    "✗ production: canary of app@3-",
    "failed its analysis (error_rate",
    "rolled back to app@2-",
    "! incident shop#1 opened by the failed analysis, resolved at once by the rollback",
    "4. A break after the rollout",
    "✓ run #4 passed",
    "✓ production: canary of app@4-",
    "! check health is down",
    "! incident shop#2 opened by check health",
    "↺ remediation: takt rolls back shop/production#4",
    "✓ remediation rolled back shop/production#4: production runs app@2-",
    "✓ postmortem draft of shop#2",
    "Cause (marked): shop/production#4",
    "Remediation: rollback of shop/production#4 succeeded",
];

#[test]
fn the_demo_tells_the_whole_story_and_leaves_nothing_behind() {
    let (code, out, err) = Demo::start(&[]).finish();
    assert_eq!(code, Some(0), "{out}\n{err}");
    in_order(&out, STORY);
    // It stops everything, removes its directory, says how long it all took and what next.
    in_order(
        &out,
        &[
            "✓ stopped staging and production (supervisors, instances, proxies)",
            "✓ stopped the server at http://127.0.0.1:",
            "✓ removed ",
            "takt demo: done in ",
            "Try next:",
            "takt demo --serve",
            "takt run examples/multi-stage",
        ],
    );
    assert!(
        !out.contains("ended what else"),
        "everything stopped the proper way:\n{out}"
    );
    let p = printed(&out);
    assert!(p.root.starts_with(std::env::temp_dir()), "{}", p.root.display());
    assert!(!p.root.exists(), "{} is still there", p.root.display());
    nothing_left(&p, &out);
}

#[test]
fn ctrl_c_in_the_middle_stops_everything_it_started() {
    let mut demo = Demo::start(&[]);
    // Production runs and traffic flows; a run is queued and a deploy is coming.
    demo.until("3. A broken commit");
    demo.interrupt();
    let (code, out, err) = demo.finish();
    assert_eq!(code, Some(130), "{out}\n{err}");
    assert!(err.contains("interrupted"), "{err}");
    in_order(&out, &["✓ stopped the server", "✓ removed "]);
    let p = printed(&out);
    assert!(!p.root.exists(), "{} is still there", p.root.display());
    nothing_left(&p, &out);
}

#[test]
fn serve_keeps_a_working_server_until_ctrl_c_and_keep_keeps_the_directory() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("kept");
    let mut demo = Demo::start(&["--serve", "--keep", dir.to_str().unwrap()]);
    let out = demo.until("TAKT_SERVER=");
    in_order(&out, STORY);
    // The login link carries an admin token that the API takes.
    let link = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("log in"))
        .unwrap()
        .trim()
        .to_string();
    let (base, token) = link.split_once("/login?token=").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let envs: serde_json::Value = rt.block_on(async {
        crate::common::server::client()
            .get(format!("{base}/api/v1/environments"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    // The link opens a session of the web UI, whose pages show the story.
    let incidents = rt.block_on(async {
        crate::common::server::tls();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = http.get(&link).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER, "the login link logs in");
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let page = http
            .get(format!("{base}/incidents"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), reqwest::StatusCode::OK);
        page.text().await.unwrap()
    });
    assert!(
        incidents.contains("shop#1") && incidents.contains("shop#2"),
        "{incidents}"
    );
    let running: Vec<(String, String)> = envs["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["environment"].as_str().unwrap().to_string(),
                e["running"]["version"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        running.iter().any(|(e, v)| e == "production" && v.starts_with("2-")),
        "production runs v2 again: {envs:#}"
    );
    demo.interrupt();
    let (code, out, err) = demo.finish();
    assert_eq!(code, Some(0), "Ctrl-C ends --serve as it should: {out}\n{err}");
    in_order(
        &out,
        &["✓ stopped staging and production", "✓ stopped the server", "✓ kept "],
    );
    let p = printed(&out);
    assert_eq!(p.root, std::fs::canonicalize(&dir).unwrap());
    nothing_left(&p, &out);
    // What it kept: the server's data (its event log, the admin token), the repository with
    // its four commits, the postmortem draft.
    let kept = |rel: &str| -> PathBuf { dir.join(rel) };
    for f in ["data/takt.db", "data/admin-token", "shop/.git", "shop/app.py"] {
        assert!(kept(f).exists(), "{f} was not kept");
    }
    let pm = std::fs::read_to_string(kept("postmortem-shop-2.md")).unwrap();
    assert!(pm.contains("- Cause (marked): shop/production#4"), "{pm}");
    let log = std::process::Command::new("git")
        .arg("-C")
        .arg(kept("shop"))
        .args(["log", "--format=%s"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&log.stdout).lines().count(), 4);
}

#[test]
fn keep_refuses_a_directory_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let out = takt().args(["demo", "--keep"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not empty"), "{err}");
    let left: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, vec![dir.path().join("notes.txt")], "it made nothing there");
}
