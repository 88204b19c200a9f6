#!/usr/bin/env python3
"""`takt metrics` end to end against a server holding a year of ten projects (about 1,000,000
events), on SQLite and on PostgreSQL (docs/metrics.md, "Speed").

  python3 bench/metrics.py [--no-postgres]

Writes the events of `crates/takt-flow/benches/year.rs` (commits, runs of five jobs, staging
and production canaries, rollbacks with their incidents) straight into a data directory's
store (written by takt itself first, so the schema is takt's), with ten projects whose
repositories' takt.yml declare `staging` and `production`. Then, for each store: the server's
start-up (process start to `/readyz` answering 200), and `takt metrics --since 365d` and
`--since 30d` (the process's wall time, from the CLI's start to its exit: request, report,
JSON, table), 5 times each, median; the baseline, measured in the same run, is the same
command against a server with an empty store. Prints the server's peak RSS (VmHWM) too.
Targets: `takt metrics` <= 500 ms, memory <= 200 MiB.
"""
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = "takt_bench_metrics_admin_token_00000000000"
TAKT_YML = """jobs:
  build: {script: ["true"]}
environments:
  staging: {driver: command, deploy: "true"}
  production: {driver: command, deploy: "true", requires: [staging]}
"""


class Server:
    def __init__(self, takt, data, database_url=None):
        env = dict(os.environ, TAKT_POLL_SECONDS="0", TAKT_LOG="warn", TAKT_ISOLATION="none",
                   TAKT_ADMIN_TOKEN=ADMIN)
        if database_url:
            env["TAKT_DATABASE_URL"] = database_url
        t0 = time.monotonic()
        self.p = subprocess.Popen([takt, "serve", "--listen", "127.0.0.1:0", "--data-dir", data],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.addr = None
        for line in self.p.stdout:
            m = re.search(r"listening on http://(\S+)", line)
            if m:
                self.addr = m.group(1)
                break
        if self.addr is None:
            raise SystemExit("takt serve did not start")
        threading.Thread(target=lambda: [None for _ in self.p.stdout], daemon=True).start()
        for _ in range(12000):  # at most 120 s
            try:
                with urllib.request.urlopen(f"http://{self.addr}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.01)
        else:
            raise SystemExit("takt serve was not ready within 120 s")
        self.ready = time.monotonic() - t0

    def get(self, path):
        req = urllib.request.Request(f"http://{self.addr}{path}", headers={"Authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)

    def hwm(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            return int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=60)


def repos(tmp):
    """Ten git repositories whose takt.yml declares staging and production."""
    out = []
    for p in range(10):
        d = os.path.join(tmp, "repos", f"p{p}")
        os.makedirs(d)
        with open(os.path.join(d, "takt.yml"), "w") as f:
            f.write(TAKT_YML)
        git = ["git", "-C", d, "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
        subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
        subprocess.run(git + ["add", "."], check=True)
        subprocess.run(git + ["commit", "-q", "-m", "takt.yml"], check=True)
        out.append(d)
    return out


def add_projects(takt, server, repo_dirs):
    """The ten projects, added as a user adds them (the server mirrors each repository)."""
    env = dict(os.environ, TAKT_SERVER=f"http://{server.addr}", TAKT_TOKEN=ADMIN)
    for p, d in enumerate(repo_dirs):
        subprocess.run([takt, "project", "add", f"p{p}", "--repo", d], env=env, check=True,
                       stdout=subprocess.DEVNULL)


def rows(jsonl):
    """(at, project, run, kind, body) of the year's events."""
    with open(jsonl) as f:
        for line in f:
            e = json.loads(line)
            yield e["at"], e["project"], e.get("run"), e["kind"], line.rstrip("\n")


def fill_sqlite(db, jsonl):
    con = sqlite3.connect(db)
    con.executemany("INSERT INTO events (at, project, run, kind, body) VALUES (?, ?, ?, ?, ?)",
                    rows(jsonl))
    con.commit()
    n = con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    con.close()
    return n


def fill_postgres(psql, jsonl, tmp):
    import csv
    path = os.path.join(tmp, "events.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        for r in rows(jsonl):
            w.writerow(["" if v is None else v for v in r])
    subprocess.run(psql + ["-q", "-c", f"\\copy events (at, project, run, kind, body) FROM '{path}' WITH (FORMAT csv)"],
                   check=True)
    out = subprocess.run(psql + ["-At", "-c", "SELECT COUNT(*) FROM events"], check=True,
                         capture_output=True, text=True)
    return int(out.stdout.strip())


def cli_ms(takt, addr, since):
    env = dict(os.environ, TAKT_SERVER=f"http://{addr}", TAKT_TOKEN=ADMIN)
    t0 = time.monotonic()
    subprocess.run([takt, "metrics", "--since", since], env=env, check=True, stdout=subprocess.DEVNULL)
    return (time.monotonic() - t0) * 1000


def wait_configs(server):
    """Until every project's default branch settings are read (production is known)."""
    for _ in range(120):
        if len(server.get("/api/v1/metrics?since=1d")["environments"]) == 10:
            return
        time.sleep(0.5)
    raise SystemExit("the projects' takt.yml were not read within 60 s")


def measure(label, takt, big, empty, database_url=None, empty_url=None):
    s = Server(takt, big, database_url)
    ready = s.ready
    wait_configs(s)
    e = Server(takt, empty, empty_url)
    wait_configs(e)
    figures = {}
    for since in ("365d", "30d"):
        full, base = [], []
        for _ in range(5):  # alternate, so both see the same machine
            full.append(cli_ms(takt, s.addr, since))
            base.append(cli_ms(takt, e.addr, since))
        figures[since] = (statistics.median(full), min(full), max(full), statistics.median(base))
    hwm = s.hwm()
    s.stop()
    e_ready, e_hwm = e.ready, e.hwm()
    e.stop()
    print(f"[{label}] server start to /readyz: {ready * 1000:.0f} ms with the year "
          f"(empty store: {e_ready * 1000:.0f} ms)")
    for since, (med, lo, hi, base) in figures.items():
        print(f"[{label}] takt metrics --since {since}: median {med:.0f} ms (min {lo:.0f}, max {hi:.0f}; "
              f"target 500 ms); empty store (baseline) {base:.0f} ms; ratio {med / base:.1f}x")
    print(f"[{label}] server peak RSS: {hwm:.0f} MiB (target 200 MiB); empty store {e_hwm:.0f} MiB")


def postgres(tmp):
    """A PostgreSQL server of its own in `tmp`, or None when PostgreSQL is not installed."""
    bins = sorted(d for d in (os.path.join("/usr/lib/postgresql", v, "bin") for v in
                              (os.listdir("/usr/lib/postgresql") if os.path.isdir("/usr/lib/postgresql") else []))
                  if os.path.exists(os.path.join(d, "initdb")))
    if not bins:
        return None
    b = bins[-1]
    d = os.path.join(tmp, "pg")
    os.makedirs(d)
    run = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if run:
        shutil.chown(d, "postgres")
        shutil.chown(tmp, "postgres")
    subprocess.run(run + [f"{b}/initdb", "-D", f"{d}/data", "-A", "trust", "-U", "postgres"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(run + [f"{b}/pg_ctl", "-D", f"{d}/data", "-o",
                          f"-k {d} -c listen_addresses=127.0.0.1 -p 55439 -c fsync=off", "-l", f"{d}/log", "-w", "start"],
                   check=True, stdout=subprocess.DEVNULL)
    psql = ["psql", "-h", "127.0.0.1", "-p", "55439", "-U", "postgres"]
    for db in ("big", "empty"):
        subprocess.run(psql + ["-q", "-c", f"CREATE DATABASE {db}"], check=True)
    stop = lambda: subprocess.run(run + [f"{b}/pg_ctl", "-D", f"{d}/data", "-m", "fast", "stop"],
                                  stdout=subprocess.DEVNULL)
    return psql, stop


def main():
    use_pg = "--no-postgres" not in sys.argv
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "takt"], cwd=ROOT, check=True)
    takt = os.path.join(ROOT, "target", "release", "takt")
    tmp = tempfile.mkdtemp(prefix="takt-metrics-bench-")
    os.chmod(tmp, 0o755)
    jsonl = os.path.join(tmp, "year.jsonl")
    subprocess.run(["cargo", "bench", "-q", "-p", "takt-flow", "--bench", "year", "--", "--jsonl", jsonl],
                   cwd=ROOT, check=True)
    repo_dirs = repos(tmp)
    big, empty = os.path.join(tmp, "big"), os.path.join(tmp, "empty")
    for d in (big, empty):
        s = Server(takt, d)  # takt writes its schema and first events
        add_projects(takt, s, repo_dirs)
        s.stop()
    t0 = time.monotonic()
    n = fill_sqlite(os.path.join(big, "takt.db"), jsonl)
    print(f"SQLite: {n:,} events written in {time.monotonic() - t0:.1f} s; "
          f"log {os.path.getsize(os.path.join(big, 'takt.db')) / 2**20:.0f} MiB")
    measure("SQLite", takt, big, empty)
    pg = postgres(tmp) if use_pg else None
    if pg:
        psql, stop = pg
        try:
            url = "postgres://postgres@127.0.0.1:55439/"
            pbig, pempty = os.path.join(tmp, "pbig"), os.path.join(tmp, "pempty")
            for d, db in ((pbig, "big"), (pempty, "empty")):
                s = Server(takt, d, url + db)
                add_projects(takt, s, repo_dirs)
                s.stop()
            t0 = time.monotonic()
            n = fill_postgres(psql + ["-d", "big"], jsonl, tmp)
            print(f"PostgreSQL: {n:,} events written in {time.monotonic() - t0:.1f} s")
            measure("PostgreSQL", takt, pbig, pempty, url + "big", url + "empty")
        finally:
            stop()
    elif use_pg:
        print("PostgreSQL is not installed: its figures were not measured")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
