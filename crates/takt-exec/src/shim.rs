//! The per-step shim: `takt-shim __shim -- PROGRAM ARGS...` (or `takt __shim -- ...`).
//!
//! `takt-shim` is a small binary holding only this module, installed beside `takt`: it starts
//! in a fraction of the time the whole CLI takes (the dynamic loader relocates a 67 MB
//! position-independent `takt` on every start), and a step pays that start once. When it is
//! not beside `takt`, `takt __shim` does the same (see [`beside`]).
//!
//! It becomes a *child subreaper*, so every process the step starts — also ones that call
//! `setsid` or double-fork to daemonise — stays its descendant or is re-parented to it. It runs
//! the program in a new process group with stdin from /dev/null, and ends the step when
//! 1. the program exits: leftover descendants are killed, then the shim exits with its code;
//! 2. its own stdin reaches EOF — takt closed it (timeout, cancel) or takt died, even by
//!    `kill -9`: everything is sent SIGTERM, then after a grace period SIGKILL.
//!
//! The shim exits only when it has no descendant left, so the log pipe closes exactly then.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The argument that marks a shim's command line, for both binaries. Crash recovery looks for
/// it in `/proc/PID/cmdline` before it signals a recorded pid.
pub const ARG: &str = "__shim";

/// The file name of the shim-only binary, beside `takt`.
pub const BINARY: &str = "takt-shim";

/// The program to start steps under, given takt's own executable: `takt-shim` in the same
/// directory when it is there, else takt itself. Either is called with [`ARG`] first.
pub fn beside(takt: &Path) -> PathBuf {
    let small = takt.with_file_name(BINARY);
    if small.is_file() { small } else { takt.to_path_buf() }
}

/// Entry point of both binaries, given the arguments after the program name: `__shim [--]
/// PROGRAM ARGS...`. Returns the process exit code.
pub fn entry(args: &[OsString]) -> i32 {
    let mut rest = args;
    if rest.first().is_some_and(|a| a == ARG) {
        rest = &rest[1..];
    }
    if rest.first().is_some_and(|a| a == "--") {
        rest = &rest[1..];
    }
    main(rest)
}

/// Time between SIGTERM and SIGKILL when a step is stopped.
pub const GRACE: Duration = Duration::from_secs(2);

fn say(msg: &str) {
    // The log pipe may be gone (takt died): never fail on it.
    let _ = writeln!(std::io::stderr(), "[takt] {msg}");
}

/// The shim's `main`. `args` are what follows `--`. Returns the process exit code.
pub fn main(args: &[OsString]) -> i32 {
    let Some((program, rest)) = args.split_first() else {
        say("shim: no program given");
        return 2;
    };
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        say(&format!("shim: cannot become a subreaper: {e}"));
        return 125;
    }
    let mut signals = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        say(&format!("shim: cannot block signals: {e}"));
        return 125;
    }
    // std resets the signal mask and SIGPIPE in the child, so the program starts normally.
    let child = match std::process::Command::new(program)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            say(&format!("cannot start {}: {e}", program.to_string_lossy()));
            return 127;
        }
    };
    let child_pid = Pid::from_raw(child.id() as i32);
    // Watch stdin: EOF means "stop now" (takt closed it, or takt is gone).
    let me = nix::unistd::getpid();
    let _ = std::thread::Builder::new().name("stdin-watch".into()).spawn(move || {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = kill(me, Signal::SIGTERM);
    });

    let mut code: Option<i32> = None;
    let mut stopped = false;
    while code.is_none() && !stopped {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(c) = reap(child_pid) {
                    code = Some(c);
                }
            }
            Ok(_) => stopped = true,
            Err(_) => {}
        }
    }
    if stopped {
        let _ = killpg(child_pid, Signal::SIGTERM);
        for p in descendants(me) {
            let _ = kill(p, Signal::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if let Some(c) = reap(child_pid) {
                code.get_or_insert(c);
            }
            if descendants(me).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let killed = kill_all(me, child_pid, &mut code);
    if killed > 0 && !stopped {
        say(&format!("killed {killed} process(es) the job left running"));
    }
    if stopped { 143 } else { code.unwrap_or(125) }
}

/// Reaps every exited child; returns the program's exit code if it was among them.
fn reap(child: Pid) -> Option<i32> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, c)) => {
                if pid == child {
                    found = Some(c);
                }
            }
            Ok(WaitStatus::Signaled(pid, s, _)) => {
                if pid == child {
                    found = Some(128 + s as i32);
                }
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) | Err(_) => return found,
            Ok(_) => {}
        }
    }
}

/// SIGKILLs every descendant until none is left. Returns how many were killed.
fn kill_all(me: Pid, child: Pid, code: &mut Option<i32>) -> usize {
    let mut killed = std::collections::HashSet::new();
    for _ in 0..10_000 {
        let _ = killpg(child, Signal::SIGKILL);
        let left = descendants(me);
        for p in &left {
            if *p != child {
                killed.insert(*p);
            }
            let _ = kill(*p, Signal::SIGKILL);
        }
        if let Some(c) = reap(child) {
            code.get_or_insert(c);
        }
        if left.is_empty() && matches!(waitpid(None, Some(WaitPidFlag::WNOHANG)), Err(Errno::ECHILD)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    killed.len()
}

/// Every live descendant of `root`. Walks `/proc/PID/task/TID/children` (cheap: only our own
/// tree); falls back to scanning all of /proc where the kernel lacks that file.
pub fn descendants(root: Pid) -> Vec<Pid> {
    let mut out = Vec::new();
    let mut todo = vec![root.as_raw()];
    while let Some(p) = todo.pop() {
        let Some(kids) = children_of(p) else {
            return descendants_by_scan(root);
        };
        for k in kids {
            out.push(Pid::from_raw(k));
            todo.push(k);
        }
        if out.len() > 100_000 {
            break;
        }
    }
    out
}

/// Direct children of `pid` (of all its threads); `None` if the kernel cannot tell this way.
fn children_of(pid: i32) -> Option<Vec<i32>> {
    let tasks = match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(t) => t,
        // The process is gone: no children to report.
        Err(_) => return Some(Vec::new()),
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        match std::fs::read_to_string(t.path().join("children")) {
            Ok(s) => out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && t.path().exists() => return None,
            Err(_) => {}
        }
    }
    Some(out)
}

fn descendants_by_scan(root: Pid) -> Vec<Pid> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let mut buf = [0u8; 1024];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(mut f) = std::fs::File::open(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Ok(n) = f.read(&mut buf) else { continue };
            if let Some((ppid, state)) = parse_stat(&String::from_utf8_lossy(&buf[..n]))
                && state != 'Z'
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root.as_raw()];
    while let Some(p) = todo.pop() {
        if let Some(kids) = children.get(&p) {
            for k in kids {
                out.push(Pid::from_raw(*k));
                todo.push(*k);
            }
        }
    }
    out
}

/// `(ppid, state)` from a /proc/PID/stat line (the command name may contain spaces and parens).
fn parse_stat(stat: &str) -> Option<(i32, char)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut it = after.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((ppid, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_with_odd_names() {
        assert_eq!(parse_stat("123 (a b) c)) S 45 123 123 0"), Some((45, 'S')));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn finds_own_descendants() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("sleep 5 & wait")
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let me = nix::unistd::getpid();
        // Bounded wait until sh has started its sleep.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut d = descendants(me);
        while d.len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            d = descendants(me);
        }
        let by_scan = descendants_by_scan(me);
        assert!(d.contains(&Pid::from_raw(child.id() as i32)));
        assert!(d.len() >= 2, "the grandchild too: {d:?}");
        for p in &d {
            assert!(by_scan.contains(p), "{d:?} vs {by_scan:?}");
        }
        // The whole group, so that the sleep does not outlive the test.
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        child.wait().unwrap();
    }
}
