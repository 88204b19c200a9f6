//! Lint time of real-shaped `.gitlab-ci.yml` files: every pipeline of the GitLab corpus
//! (tests/gitlab/, with its includes) read as `takt lint` reads it, many times over. Prints the
//! mean per lint of each file and of all, and the ratio to the baseline measured in the same
//! run: the lint of a one-job file. The issue that brought GitLab's layout measured real files
//! at under 0.15 s a lint; the target here is that, with room: every file under 15 ms.
//! Run with `cargo bench -p takt-pipeline --bench gitlab`.

#![allow(clippy::unwrap_used)] // a benchmark may panic: that is how it fails

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use takt_pipeline::gitlab::IncludeWalk;
use takt_pipeline::{Layout, ParseOptions, parse_with};

const ROUNDS: u32 = 200;
const TARGET: Duration = Duration::from_millis(15);

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// The mean time of one lint (includes read once, as the engine hands them in).
fn mean_lint(main: &[u8], includes: &BTreeMap<String, Vec<u8>>) -> Duration {
    let opts = ParseOptions {
        layout: Some(Layout::Gitlab),
        strict: false,
    };
    let t0 = Instant::now();
    for _ in 0..ROUNDS {
        let _ = black_box(parse_with(".gitlab-ci.yml", black_box(main), &opts, includes));
    }
    t0.elapsed() / ROUNDS
}

fn main() {
    let base = mean_lint(b"job:\n  script: [make]\n", &BTreeMap::new());
    println!("baseline (a one-job file): {:.1} µs a lint", base.as_secs_f64() * 1e6);
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gitlab");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let mut total = Duration::ZERO;
    let mut worst = (Duration::ZERO, String::new());
    for case in &cases {
        let main = std::fs::read(case.join(".gitlab-ci.yml")).unwrap();
        let files = files_under(case);
        let includes = IncludeWalk::read_all(&main, &files, |f| std::fs::read(case.join(f)).ok());
        let t = mean_lint(&main, &includes);
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        println!(
            "{name:<32} {:>8.1} µs  {:>6.1}× baseline",
            t.as_secs_f64() * 1e6,
            t.as_secs_f64() / base.as_secs_f64()
        );
        total += t;
        if t > worst.0 {
            worst = (t, name);
        }
    }
    let mean = total / cases.len() as u32;
    println!(
        "{} files: mean {:.1} µs a lint ({:.1}× baseline); slowest {} at {:.1} µs; target: every file under {} ms",
        cases.len(),
        mean.as_secs_f64() * 1e6,
        mean.as_secs_f64() / base.as_secs_f64(),
        worst.1,
        worst.0.as_secs_f64() * 1e6,
        TARGET.as_millis()
    );
    assert!(
        worst.0 < TARGET,
        "{} takes {:?} a lint; the target is {TARGET:?}",
        worst.1,
        worst.0
    );
}
