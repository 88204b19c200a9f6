//! What people see: a live display on a terminal, plain lines otherwise, and the summary.

/// Whether a closed standard output ends the program (commands that only print) or is
/// ignored (`takt run` and `takt serve`, whose work must go on and keep its exit code).
static QUIT_ON_CLOSED_STDOUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// For `takt run` and `takt serve`: a reader that goes away stops their output, not their work.
pub fn keep_going_when_stdout_closes() {
    QUIT_ON_CLOSED_STDOUT.store(false, std::sync::atomic::Ordering::Relaxed);
}

/// Writes to standard output. When the reader has gone (`takt runs ls | head -1`), a printing
/// command ends at once and quietly with exit code 0, as ripgrep does, instead of panicking
/// as `println!` would.
pub fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let r = out
        .write_fmt(args)
        .and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = r {
        quit_if_reader_gone(&e);
    }
}

/// Ends the program quietly if `e` says standard output's reader has gone (and the command
/// only prints).
pub fn quit_if_reader_gone(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe && QUIT_ON_CLOSED_STDOUT.load(std::sync::atomic::Ordering::Relaxed) {
        std::process::exit(0);
    }
}

/// Standard output for commands that copy bytes to it (`takt logs`): a closed pipe ends the
/// program quietly, like [`write_stdout`].
pub struct Stdout(pub std::io::StdoutLock<'static>);

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).inspect_err(quit_if_reader_gone)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().inspect_err(quit_if_reader_gone)
    }
}

/// `println!` that ends the program quietly on a closed pipe.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!(""), true)
    };
    ($($t:tt)*) => {
        $crate::output::write_stdout(format_args!($($t)*), true)
    };
}

use comfy_table::Table;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;
use takt_engine::{Live, Progress, RunReport};
use takt_model::{JobStatus, RunStatus, timefmt};
use tokio::sync::mpsc;

pub struct Ui {
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

fn line_for(p: &Progress) -> String {
    match p {
        Progress::Started { job, attempt: 1 } => format!("▶ {job} started"),
        Progress::Started { job, attempt } => format!("▶ {job} started (attempt {attempt})"),
        Progress::Retrying { job, attempt, reason } => {
            format!("↻ {job} failed ({reason}); retrying, attempt {attempt}")
        }
        Progress::Finished(r) => {
            let d = timefmt::human(Duration::from_millis(r.duration_ms));
            match r.status {
                JobStatus::Success if r.flaky => {
                    format!("✓ {} passed on retry in {d} (flaky)", r.name)
                }
                JobStatus::Success if !r.quarantined.is_empty() => format!(
                    "✓ {} passed in {d}; quarantined tests failed: {}",
                    r.name,
                    r.quarantined.join(", ")
                ),
                JobStatus::Success => format!("✓ {} passed in {d}", r.name),
                JobStatus::Failed if r.allow_failure => {
                    format!("! {} failed in {d} (allowed to fail)", r.name)
                }
                JobStatus::Failed => format!("✗ {} failed in {d}: {}", r.name, r.reason.clone().unwrap_or_default()),
                s => format!("- {} {s}: {}", r.name, r.reason.clone().unwrap_or_default()),
            }
        }
    }
}

impl Ui {
    pub fn start(json: bool, live: Arc<Live>, mut rx: mpsc::Receiver<Progress>) -> Ui {
        let tty = std::io::stdout().is_terminal() && !json;
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mp = MultiProgress::new();
            let mut bars: HashMap<String, ProgressBar> = HashMap::new();
            let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed:>4} {wide_msg:.dim}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let mut tick = tokio::time::interval(Duration::from_millis(120));
            loop {
                tokio::select! {
                    p = rx.recv() => {
                        let Some(p) = p else { break };
                        let line = line_for(&p);
                        if tty {
                            if let Progress::Finished(r) = &p && let Some(b) = bars.remove(&r.name) {
                                b.finish_and_clear();
                                mp.remove(&b);
                            }
                            let _ = mp.println(line);
                        } else if json {
                            eprintln!("{line}");
                        } else {
                            outln!("{line}");
                        }
                    }
                    _ = tick.tick(), if tty => {
                        for j in live.jobs.lock().iter() {
                            let bar = bars.entry(j.name.clone()).or_insert_with(|| {
                                let b = mp.add(ProgressBar::new_spinner());
                                b.set_style(style.clone());
                                b.set_prefix(j.name.clone());
                                b
                            });
                            bar.set_message(j.last_line.lock().clone());
                            bar.tick();
                        }
                    }
                    _ = &mut stop_rx => break,
                }
            }
            while let Ok(p) = rx.try_recv() {
                if json {
                    eprintln!("{}", line_for(&p))
                } else {
                    outln!("{}", line_for(&p))
                }
            }
            for (_, b) in bars {
                b.finish_and_clear();
            }
        });
        Ui { task, stop }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// A table for stdout: box-drawn on a terminal, plain aligned columns (no box drawing, no
/// colour) when stdout is a pipe or a file, as `cargo` and `kubectl` print.
pub fn new_table() -> Table {
    use std::io::IsTerminal;
    let mut t = Table::new();
    if std::io::stdout().is_terminal() {
        t.load_style(comfy_table::presets::UTF8_BORDERS_ONLY);
    } else {
        t.load_style(comfy_table::presets::NOTHING);
        t.force_no_tty();
    }
    t
}

pub fn summary(r: &RunReport) {
    let mut t = new_table();
    t.set_header(vec![
        "job", "stage", "status", "exit", "duration", "wait", "tests", "cache", "artifact",
    ]);
    for j in &r.jobs {
        let status = match (j.status, j.allow_failure, j.flaky) {
            (JobStatus::Failed, true, _) => "failed (allowed)".to_string(),
            (JobStatus::Success, _, true) => format!("success (flaky, {} attempts)", j.attempts),
            (s, _, _) => s.to_string(),
        };
        t.add_row(vec![
            j.name.clone(),
            j.stage.clone(),
            status,
            j.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            if j.attempts > 0 {
                timefmt::human(Duration::from_millis(j.duration_ms))
            } else {
                String::new()
            },
            if j.attempts > 0 {
                timefmt::human(Duration::from_millis(j.wait_ms))
            } else {
                String::new()
            },
            j.tests
                .as_ref()
                .map(|c| format!("{}/{} passed", c.tests - c.failures - c.errors - c.skipped, c.tests))
                .unwrap_or_default(),
            j.cache
                .as_ref()
                .map(|c| if c.hit { "hit".to_string() } else { "miss".to_string() })
                .unwrap_or_default(),
            j.artifact
                .as_ref()
                .map(|a| format!("{}@{} {}", a.name, a.version, &a.digest[..a.digest.len().min(19)]))
                .unwrap_or_default(),
        ]);
    }
    outln!("{t}");
    for j in r.jobs.iter().filter(|j| !j.quarantined.is_empty()) {
        outln!(
            "quarantined: `{}` passed although these failed: {}",
            j.name,
            j.quarantined.join(", ")
        );
    }
    for j in r.jobs.iter().filter(|j| j.status == JobStatus::Failed) {
        if let Some(l) = &j.log {
            outln!("log of `{}`: {}/{l}", j.name, r.data_dir);
        }
    }
    if let Some(w) = &r.over_budget {
        outln!(
            "WARNING: coffee test failed: the run took {} against a budget of {}. Critical path: {}. Bottleneck: `{}` ({}).",
            timefmt::human(Duration::from_millis(w.wall_ms)),
            timefmt::human(Duration::from_millis(w.budget_ms)),
            w.critical_path.join(" → "),
            w.slowest_job,
            timefmt::human(Duration::from_millis(w.slowest_ms)),
        );
    }
    let word = match r.status {
        RunStatus::Success => "succeeded",
        RunStatus::Failed => "FAILED",
        RunStatus::Cancelled => "was cancelled",
        RunStatus::Manual => "waits for a manual job",
        _ => "ended",
    };
    let short = &r.commit[..r.commit.len().min(8)];
    let on = r
        .branch
        .as_deref()
        .or(r.tag.as_deref())
        .map(|b| format!(" on {b}"))
        .unwrap_or_default();
    outln!(
        "run #{} of {} at {short}{on}{} {word} in {}",
        r.run,
        r.project,
        if r.dirty { " (DIRTY)" } else { "" },
        timefmt::human(Duration::from_millis(r.duration_ms))
    );
}
