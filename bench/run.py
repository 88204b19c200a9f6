#!/usr/bin/env python3
"""takt run benchmarks: each figure beside its baseline, measured in the same run.

  python3 bench/run.py [--quick]

1. Per-job overhead: a one-stage pipeline of 200 `true` jobs at --jobs 1, against the minimum
   any clean runner does per job (`git archive REV | tar -x` into a fresh directory, then
   `sh -c true`, then the directory removed, as takt removes each workspace), sequentially,
   each side after a `sync`. Target <= 1.5x.
2. Log capture: a job writing 1 GiB of 100-byte lines, against the same command redirected to
   a file. Target <= 1.5x.
Each figure is the median of 3 (per-job and ingest: 5) alternating rounds: the disk of a shared VM varies
a lot from one second to the next.
3. Artifact ingest of 1 GiB against `openssl dgst -sha256 f && cp f dst && sync` (the Rust
   bench `cargo bench -p takt-blob --bench ingest`). Target <= 1.2x.
4. Peak RSS of takt during (1) and (2). Target <= 50 MiB.
"""
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "--quick" in sys.argv
JOBS = 50 if QUICK else 200
LOG_BYTES = (128 if QUICK else 1024) << 20
INGEST_MIB = 256 if QUICK else 1024
WORK = os.environ.get("BENCH_DIR", "/var/tmp")
results = []


def sh(cmd, **kw):
    subprocess.run(cmd, shell=True, check=True, **kw)


def git_repo(path, takt_yml):
    os.makedirs(path)
    with open(os.path.join(path, "takt.yml"), "w") as f:
        f.write(takt_yml)
    for i in range(20):  # a small repository: a few files
        with open(os.path.join(path, f"file{i}.txt"), "w") as f:
            f.write("x" * 2000)
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    sh(f"git -C {path} init -q -b main && git -C {path} add -A && git -C {path} commit -qm bench", env=env)


def run_takt(takt, args):
    """Runs takt, polling its peak RSS (VmHWM) until it exits. Returns (seconds, peak MiB)."""
    start = time.monotonic()
    p = subprocess.Popen([takt] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    elapsed = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"takt {' '.join(args)} failed: {p.stderr.read().decode()}")
    return elapsed, peak / 1024


def report(name, ours, base, unit, target):
    ratio = ours / base if base else float("inf")
    ok = "ok" if ratio <= target else "OVER TARGET"
    results.append((name, ratio, target, ok))
    print(f"{name}: takt {ours:.3f}{unit}, baseline {base:.3f}{unit}, ratio {ratio:.2f}x (target <= {target}x) {ok}", flush=True)


def main():
    print("building takt (release)…", flush=True)
    sh("cargo build --release -q -p takt", cwd=ROOT)
    takt = os.path.join(ROOT, "target/release/takt")
    tmp = tempfile.mkdtemp(prefix="takt-bench-", dir=WORK)
    peaks = []

    # 1. Per-job overhead.
    yml = "stages: [test]\njobs:\n" + "".join(f"  j{i}: {{stage: test, script: ['true']}}\n" for i in range(JOBS))
    repo = os.path.join(tmp, "jobs")
    git_repo(repo, yml)
    takt_times, base_times = [], []
    for rnd in range(5):
        data = os.path.join(tmp, f"jobs-data-{rnd}")
        # Each side starts with nothing left to write back: on ext4 an fsync (takt's event
        # log) also waits for the other side's dirty files, which made takt's figure swing.
        sh("sync")
        t, peak = run_takt(takt, ["run", repo, "--jobs", "1", "--data-dir", data])
        takt_times.append(t)
        peaks.append(peak)
        base = os.path.join(tmp, f"base-{rnd}")
        sh("sync")
        start = time.monotonic()
        sh(f"for i in $(seq {JOBS}); do mkdir -p {base}/$i && git -C {repo} archive HEAD | tar -x -C {base}/$i && sh -c true && rm -rf {base}/$i; done")
        base_times.append(time.monotonic() - start)
    t_takt, t_base = sorted(takt_times)[2], sorted(base_times)[2]
    print(f"per-job: takt {t_takt / JOBS * 1000:.1f} ms/job, baseline {t_base / JOBS * 1000:.1f} ms/job ({JOBS} jobs)")
    report("1. per-job overhead", t_takt / JOBS * 1000, t_base / JOBS * 1000, "ms", 1.5)

    # 2. Log capture.
    cmd = f"yes \"$(printf '%099d' 0)\" | head -c {LOG_BYTES}"
    repo = os.path.join(tmp, "log")
    git_repo(repo, f"jobs:\n  noisy:\n    script:\n      - |\n        {cmd}\n")
    # The job writes LOG_BYTES to stdout; takt stamps and stores every line.
    takt_times, base_times = [], []
    for rnd in range(3):
        sh("sync")
        t, peak = run_takt(takt, ["run", repo, "--data-dir", os.path.join(tmp, f"log-data-{rnd}"), "--log-limit", "4GiB"])
        takt_times.append(t)
        peaks.append(peak)
        sh(f"rm -rf {os.path.join(tmp, f'log-data-{rnd}')} && sync")
        start = time.monotonic()
        sh(f"{cmd} > {os.path.join(tmp, 'log.txt')}")
        base_times.append(time.monotonic() - start)
        sh(f"rm -f {os.path.join(tmp, 'log.txt')}")
    t_takt, t_base = sorted(takt_times)[1], sorted(base_times)[1]
    report(f"2. log capture of {LOG_BYTES >> 20} MiB", t_takt, t_base, "s", 1.5)

    # 3. Artifact ingest (Rust bench of the code path the engine uses).
    out = subprocess.run(
        ["cargo", "bench", "-q", "-p", "takt-blob", "--bench", "ingest", "--", str(INGEST_MIB)],
        cwd=ROOT, check=True, capture_output=True, text=True, env=dict(os.environ, BENCH_DIR=WORK),
    ).stdout
    print(out.strip())
    for line in out.splitlines():
        if "ratio" in line:
            ratio = float(line.split("ratio ")[1].split("x")[0])
            results.append(("3. artifact ingest", ratio, 1.2, "ok" if ratio <= 1.2 else "OVER TARGET"))

    # 4. Peak RSS.
    peak = max(peaks)
    ok = "ok" if peak <= 50 else "OVER TARGET"
    print(f"4. peak RSS of takt during (1) and (2): {peak:.1f} MiB (target <= 50 MiB) {ok}")
    results.append(("4. peak RSS MiB", peak, 50, ok))
    sh(f"rm -rf {tmp}")
    print("\nsummary:")
    for name, value, target, ok in results:
        print(f"  {name:28} {value:8.2f}  target {target:<5} {ok}")


if __name__ == "__main__":
    main()
