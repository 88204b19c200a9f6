//! Artifact ingest of a large file (hash while copying, fsync, rename) against
//! `openssl dgst -sha256 f && cp f dst && sync`, in the same run.
//!
//! `cargo bench -p takt-blob --bench ingest [-- SIZE_MIB]` (default 1024 MiB). Prints each figure
//! and the ratio to the baseline (target ≤ 1.2×).

use std::io::Write;
use std::process::Command;
use std::time::Instant;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let mib: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1024);
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))?;
    let src = dir.path().join("input.bin");
    {
        // Incompressible but cheap to make: a repeated 1 MiB random block with a counter.
        let mut block = vec![0u8; 1 << 20];
        getrandom::fill(&mut block).map_err(|e| e.to_string())?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
        for i in 0..mib {
            block[..8].copy_from_slice(&i.to_le_bytes());
            f.write_all(&block)?;
        }
    }
    let sh = |cmd: &str| -> Result<f64> {
        let t = Instant::now();
        if !Command::new("sh").arg("-c").arg(cmd).status()?.success() {
            return Err(format!("`{cmd}` failed").into());
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let dst = dir.path().join("copy.bin");
    let baseline_cmd = format!(
        "openssl dgst -sha256 {s} >/dev/null && cp {s} {d} && sync",
        s = src.display(),
        d = dst.display()
    );
    let mut base = Vec::new();
    let mut ours = Vec::new();
    for round in 0..5 {
        sh("sync")?;
        let _ = std::fs::remove_file(&dst);
        base.push(sh(&baseline_cmd)?);
        let store = dir.path().join(format!("store{round}"));
        let blobs = takt_blob::LocalBlobs::open(&store)?;
        sh("sync")?;
        let t = Instant::now();
        let r = blobs.ingest_file(&src)?;
        ours.push(t.elapsed().as_secs_f64());
        assert_eq!(r.size, mib << 20);
        std::fs::remove_dir_all(&store)?;
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let t = Instant::now();
    takt_blob::hash_reader(std::fs::File::open(&src)?)?;
    let hash_only = t.elapsed().as_secs_f64();
    println!(
        "(sha256 alone over the cached file: {:.0} MiB/s)",
        mib as f64 / hash_only
    );
    println!(
        "rounds (takt / baseline, s): {}",
        ours.iter()
            .zip(&base)
            .map(|(o, b)| format!("{o:.2}/{b:.2}"))
            .collect::<Vec<_>>()
            .join("  ")
    );
    let (b, o) = (med(&mut base), med(&mut ours));
    println!(
        "artifact ingest of {mib} MiB: takt {o:.3}s ({:.0} MiB/s), baseline openssl+cp+sync {b:.3}s, ratio {:.2}x (target <= 1.20x)",
        mib as f64 / o,
        o / b
    );
    Ok(())
}
