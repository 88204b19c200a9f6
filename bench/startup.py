#!/usr/bin/env python3
"""What `takt serve` costs to start with a big event log: views are rebuilt from the log at
every start (ARCHITECTURE.md, "Views"), so start-up grows with the events they fold.

  python3 bench/startup.py [EVENTS]          (default 1,000,000)

Writes EVENTS events of finished runs (run_queued, run_started, 3 x job_queued/job_started/
log_stored/job_finished, artifact_stored, test_report, run_finished: 17 per run, over 10
projects), plus token and project events, straight into a data directory's SQLite log
(written by takt itself first, so the schema is takt's). Then times, 5 times each, from the
process start to `/readyz` answering 200, for that log and, in the same run, for an empty log
(the baseline), and prints both, their ratio and the server's peak RSS (VmHWM).
"""
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS_PER_EVENT_BLOCK = 17


def start(takt, data):
    env = dict(os.environ, TAKT_POLL_SECONDS="0", TAKT_LOG="warn", TAKT_ISOLATION="none",
               TAKT_ADMIN_TOKEN="takt_bench_startup_admin_token_0000000000")
    t0 = time.monotonic()
    p = subprocess.Popen([takt, "serve", "--listen", "127.0.0.1:0", "--data-dir", data],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    addr = None
    for line in p.stdout:
        m = re.search(r"listening on http://(\S+)", line)
        if m:
            addr = m.group(1)
            break
    if addr is None:
        raise SystemExit("takt serve did not start")
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    for _ in range(6000):  # at most 60 s
        try:
            with urllib.request.urlopen(f"http://{addr}/readyz", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.01)
    ready = time.monotonic() - t0
    with open(f"/proc/{p.pid}/status") as f:
        hwm = int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024
    p.terminate()
    p.wait(timeout=30)
    return ready, hwm


def at(i):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_790_000_000 + i)) + ".000Z"


def fill(db, events):
    con = sqlite3.connect(db)
    rows = []

    def ev(i, project, run, kind, **fields):
        body = {"at": at(i), "project": project, "run": run, "kind": kind, **fields}
        rows.append((at(i), project, run, kind, json.dumps(body, separators=(",", ":"))))

    for p in range(10):
        ev(0, f"p{p}", None, "project_added", name=f"p{p}", repo=f"/srv/p{p}.git", branch="main")
    ev(0, "", None, "token_created", id="c1", name="ci", scope="ci", hash="0" * 64)
    n = len(rows)
    run = {}
    i = 0
    while n < events:
        project = f"p{i % 10}"
        r = run[project] = run.get(project, 0) + 1
        commit = f"{i:040x}"
        ev(i, project, r, "run_queued", commit=commit, branch="main", tag=None,
           trigger={"webhook": {"provider": "github", "delivery": f"d{i}"}}, dirty=False)
        ev(i, project, r, "run_started")
        for j, job in enumerate(["build", "test", "package"]):
            log = f"logs/{project}/{r}/{j}-{job}.1.log"
            ev(i, project, r, "job_queued", job=job, stage=job)
            ev(i, project, r, "job_started", job=job, attempt=1, wait_ms=1, log=log)
            ev(i, project, r, "log_stored", job=job, attempt=1, location=log, bytes=1200, truncated=False)
            ev(i, project, r, "job_finished", job=job, attempt=1, status="success", exit_code=0,
               failure_reason=None, allow_failure=False, duration_ms=900, wait_ms=1, flaky=False)
        ev(i, project, r, "artifact_stored", job="package", name="app", version=f"{r}-{commit[:8]}",
           digest="sha256:" + "ab" * 32, size=4096)
        ev(i, project, r, "test_report", job="test", attempt=1,
           counts={"tests": 1, "failures": 0, "errors": 0, "skipped": 0},
           cases=[{"suite": "unit", "name": "works", "outcome": "passed", "duration_ms": 3}])
        ev(i, project, r, "run_finished", status="success", duration_ms=2800)
        n += RUNS_PER_EVENT_BLOCK
        i += 1
        if len(rows) >= 50_000:
            con.executemany("INSERT INTO events (at, project, run, kind, body) VALUES (?, ?, ?, ?, ?)", rows)
            rows.clear()
    con.executemany("INSERT INTO events (at, project, run, kind, body) VALUES (?, ?, ?, ?, ?)", rows)
    con.commit()
    total = con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    con.close()
    return total, i


def main():
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "takt"], cwd=ROOT, check=True)
    takt = os.path.join(ROOT, "target", "release", "takt")
    tmp = tempfile.mkdtemp(prefix="takt-startup-bench-")
    empty, big = os.path.join(tmp, "empty"), os.path.join(tmp, "big")
    for d in (empty, big):
        start(takt, d)  # takt writes its schema and first events
    t0 = time.monotonic()
    total, runs = fill(os.path.join(big, "takt.db"), events)
    print(f"wrote {total:,} events ({runs:,} runs) in {time.monotonic() - t0:.1f} s; "
          f"log {os.path.getsize(os.path.join(big, 'takt.db')) / 2**20:.0f} MiB")
    # Alternate, so both see the same machine.
    base, full, base_rss, full_rss = [], [], [], []
    for _ in range(5):
        t, m = start(takt, empty)
        base.append(t)
        base_rss.append(m)
        t, m = start(takt, big)
        full.append(t)
        full_rss.append(m)
    b, f = statistics.median(base), statistics.median(full)
    print(f"start to /readyz, empty log (baseline): median {b * 1000:.0f} ms, peak RSS {max(base_rss):.0f} MiB")
    print(f"start to /readyz, {total:,} events:   median {f * 1000:.0f} ms (min {min(full) * 1000:.0f}, "
          f"max {max(full) * 1000:.0f}), peak RSS {max(full_rss):.0f} MiB")
    print(f"ratio to the baseline: {f / b:.1f}x time, {max(full_rss) / max(base_rss):.1f}x memory")
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
