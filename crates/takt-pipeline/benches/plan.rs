//! Parse + plan + schedule (to completion) + critical path for N stages of one job each, and
//! for N stages of five jobs with `needs` chains and artifacts. Prints each figure and its ratio
//! to the previous N in the same run: doubling N should about double the time (the first
//! implementation was cubic: 3,000 stages took 23 s). Run with `cargo bench -p takt-pipeline`.

#![allow(clippy::unwrap_used)] // a benchmark may panic: that is how it fails

use std::fmt::Write;
use std::hint::black_box;
use std::time::{Duration, Instant};
use takt_model::JobStatus;
use takt_pipeline::{PlanContext, Schedule, critical_path, parse, plan};

fn one_job_per_stage(n: usize) -> String {
    let mut s = String::from("stages: [");
    for i in 0..n {
        let _ = write!(s, "s{i}, ");
    }
    s.push_str("]\njobs:\n");
    for i in 0..n {
        let _ = writeln!(s, "  j{i}: {{stage: s{i}, script: [x]}}");
    }
    s
}

fn five_jobs_per_stage(n: usize) -> String {
    let mut s = String::from("stages: [");
    for i in 0..n {
        let _ = write!(s, "s{i}, ");
    }
    s.push_str("]\njobs:\n");
    for i in 0..n {
        let _ = writeln!(s, "  a{i}: {{stage: s{i}, script: [x], artifacts: {{paths: [out]}}}}");
        for k in 0..4 {
            let need = if k == 0 {
                format!("a{i}")
            } else {
                format!("b{i}-{}", k - 1)
            };
            let _ = writeln!(s, "  b{i}-{k}: {{stage: s{i}, script: [x], needs: [{need}]}}");
        }
    }
    s
}

/// One full pass: parse, plan, every job started and finished in schedule order, critical path.
fn once(text: &str) -> usize {
    let p = parse("takt.yml", text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let pl = plan(&p, &PlanContext::default()).unwrap();
    let mut s = Schedule::new(&pl);
    let mut n = 0;
    loop {
        let (skips, ready) = s.poll();
        n += skips.len();
        if ready.is_empty() {
            break;
        }
        for i in ready {
            s.start(i);
            s.finish(i, JobStatus::Success, false);
            n += 1;
        }
    }
    assert!(s.all_done());
    let d = vec![Duration::from_millis(10); pl.jobs.len()];
    n + critical_path(&pl, &d).len()
}

/// The best of a few runs, to keep noise out of the ratios.
fn time(text: &str) -> Duration {
    (0..11)
        .map(|_| {
            let t = Instant::now();
            black_box(once(black_box(text)));
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    for (what, make) in [
        ("1 job per stage", one_job_per_stage as fn(usize) -> String),
        ("5 jobs per stage, needs chains, artifacts", five_jobs_per_stage),
    ] {
        println!("{what}:");
        let mut base: Option<Duration> = None;
        let mut prev: Option<Duration> = None;
        for n in [250, 500, 1000] {
            let text = make(n);
            let t = time(&text);
            let vs_prev = prev.map_or(String::new(), |p| {
                format!(", x{:.2} for twice the stages", t.as_secs_f64() / p.as_secs_f64())
            });
            let vs_base = base.map_or(String::from(" (baseline)"), |b| {
                format!(", x{:.2} the baseline", t.as_secs_f64() / b.as_secs_f64())
            });
            println!(
                "  {n:>5} stages, {:>7} bytes: {:>9.3} ms{vs_base}{vs_prev}",
                text.len(),
                t.as_secs_f64() * 1e3
            );
            base.get_or_insert(t);
            prev = Some(t);
        }
    }
}
