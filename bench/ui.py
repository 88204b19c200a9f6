#!/usr/bin/env python3
"""The web UI's speed, on a store of 10,000 runs and 100,000 jobs (plus one run of 200 jobs).

  python3 bench/ui.py [--runs 10000] [--rounds 40]

A real `takt serve` (release build) runs one real pipeline; the bench then stops it, writes
the other runs into its SQLite event log as the server writes them (the real run's events,
renumbered), starts it again on that log and logs in with the admin token. Then, per page:
server time p50 and p95 over `rounds` requests (one keep-alive connection, from the request
to the last byte), and the page's size. Baselines measured in the same run: `/healthz` (the
HTTP floor) and the JSON route each page reads most.

Last, a live log: a job prints its own clock ten times a second for 3 s; an SSE client on the
UI's log stream reports how late each line arrives.

Targets (the web UI issue): each page <= 50 ms p95, a run page of 200 jobs <= 100 ms, a live
log line in the browser within 200 ms, every page under 200 KiB.
"""
import http.client
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAKT = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "takt")

PIPELINE = """stages: [build, test, package]
jobs:
  compile: {stage: build, script: [echo compiled]}
  lint: {stage: build, script: [echo linted]}
  unit-1: {stage: test, script: [echo ok]}
  unit-2: {stage: test, script: [echo ok]}
  unit-3: {stage: test, script: [echo ok]}
  unit-4: {stage: test, script: [echo ok]}
  unit-5: {stage: test, script: [echo ok]}
  unit-6: {stage: test, script: [echo ok]}
  docs: {stage: package, script: [echo docs]}
  package:
    stage: package
    script: [echo built > app]
    artifacts: {name: app, paths: [app]}
  clock:
    stage: package
    when: manual
    script: ['for i in $(seq 30); do python3 -c "import time; print(time.time())"; sleep 0.1; done']
"""


def git(repo, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, env=env).stdout.decode().strip()


class Server:
    def __init__(self, data):
        env = dict(os.environ, TAKT_POLL_SECONDS="0", TAKT_LOG="warn", TAKT_ISOLATION="none")
        env.pop("TAKT_ADMIN_TOKEN", None)
        self.p = subprocess.Popen([TAKT, "serve", "--listen", "127.0.0.1:0", "--data-dir", data],
                                  stdout=subprocess.PIPE, text=True, env=env)
        self.token = None
        for line in self.p.stdout:
            m = re.search(r"admin token .*: (\S+)$", line)
            if m:
                self.token = m.group(1)
            m = re.search(r"listening on http://(\S+)", line)
            if m:
                self.host, port = m.group(1).split(":")
                self.port = int(port)
                break
        threading.Thread(target=lambda: [None for _ in self.p.stdout], daemon=True).start()
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self.cookie = None

    def api(self, method, path, body=None):
        headers = {"Authorization": "Bearer " + self.token}
        if body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body)
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data else None)

    def login(self):
        self.conn.request("GET", "/login?token=" + self.token)
        r = self.conn.getresponse()
        r.read()
        assert r.status == 303, r.status
        self.cookie = r.getheader("Set-Cookie").split(";")[0]

    def page(self, path):
        self.conn.request("GET", path, headers={"Cookie": self.cookie} if self.cookie else {})
        r = self.conn.getresponse()
        data = r.read()
        assert r.status == 200, (path, r.status, data[:300])
        return data

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=20)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def timed(fn, rounds):
    for _ in range(3):
        fn()
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return pct(out, 0.5), pct(out, 0.95)


def fill(db, runs, template, commit_info):
    """Writes `runs` more runs of project `shop`, each a copy of run 1's events, and one run of
    200 jobs in 10 stages with `needs`, straight into the event log."""
    c = sqlite3.connect(db)
    rows = []
    for n in range(2, runs + 2):
        commit = "%040x" % (0xC0FFEE + n // 10)
        for at, kind, body in template:
            b = dict(body, run=n)
            if "commit" in b and kind in ("run_queued", "commit_seen"):
                b["commit"] = commit
            rows.append((at, "shop", n, kind, json.dumps(b)))
        if n % 10 == 2:
            ci = dict(commit_info, run=n, commit=commit, subject="change %d" % n)
            rows.append((ci["at"][:23] + "Z", "shop", n, "commit_info", json.dumps(ci)))
    big = runs + 2
    queued = [b for _, k, b in template if k == "run_queued"][0]
    at = queued["at"]
    rows.append((at[:23] + "Z", "shop", big, "run_queued", json.dumps(dict(queued, run=big))))
    rows.append((at[:23] + "Z", "shop", big, "run_started", json.dumps({"at": at, "project": "shop", "run": big, "kind": "run_started"})))
    log = [b for _, k, b in template if k == "job_started"][0]["log"]
    for s in range(10):
        for j in range(20):
            name = "s%d-j%d" % (s, j)
            needs = ["s%d-j%d" % (s - 1, (j + d) % 20) for d in (0, 1)] if s else []
            base = {"at": at, "project": "shop", "run": big, "job": name}
            for kind, extra in (("job_queued", {"stage": "stage-%d" % s, "needs": needs}),
                                ("job_started", {"attempt": 1, "wait_ms": 5, "log": log}),
                                ("job_finished", {"attempt": 1, "status": "success", "exit_code": 0, "duration_ms": 100 + j, "wait_ms": 5})):
                rows.append((at[:23] + "Z", "shop", big, kind, json.dumps(dict(base, kind=kind, **extra))))
    rows.append((at[:23] + "Z", "shop", big, "run_finished",
                 json.dumps({"at": at, "project": "shop", "run": big, "kind": "run_finished", "status": "success", "duration_ms": 4000})))
    c.executemany("INSERT INTO events (at, project, run, kind, body) VALUES (?, ?, ?, ?, ?)", rows)
    c.commit()
    c.close()
    return big


def settle(pid, limit=120):
    """Waits until the server has caught up on the log (its followers and views replaying it
    use the CPU and the database after it says it is ready): under 2% of a core for a second."""
    def cpu():
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    t = time.perf_counter()
    while time.perf_counter() - t < limit:
        before = cpu()
        time.sleep(1)
        if cpu() - before < 0.02:
            return time.perf_counter() - t
    return None


def live_log(s, run):
    """How late each line of the `clock` job reaches an SSE client of the UI's log route."""
    path = "/ui/log/shop/%d/clock?from=0" % run
    conn = http.client.HTTPConnection(s.host, s.port, timeout=30)
    conn.request("GET", path, headers={"Cookie": s.cookie, "Accept": "text/event-stream"})
    r = conn.getresponse()
    assert r.status == 200, r.status
    late = []
    buf = b""
    while True:
        chunk = r.read1(65536)
        if not chunk:
            break
        now = time.time()
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if ev.startswith(b"event: end") or b"\nevent: end" in ev:
                return late
            for line in ev.split(b"\n"):
                # `data: <capture time> <what the job printed: its clock>`
                if line.startswith(b"data: "):
                    try:
                        late.append((now - float(line.split()[-1])) * 1000)
                    except ValueError:
                        pass
    return late


def main():
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 10000
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 40
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "takt"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="takt-ui-bench-")
    try:
        repo = os.path.join(work, "repo")
        os.makedirs(repo)
        git(repo, "init", "-q", "-b", "main")
        with open(os.path.join(repo, "takt.yml"), "w") as f:
            f.write(PIPELINE)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "the pipeline")
        data = os.path.join(work, "data")
        s = Server(data)
        token = s.token
        assert s.api("POST", "/api/v1/projects", {"name": "shop", "repo": repo})[0] in (200, 201)
        s.api("POST", "/api/v1/projects/shop/trigger", {})
        for _ in range(600):
            st, r = s.api("GET", "/api/v1/runs/shop/1")
            if st == 200 and r["status"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        s.stop()
        c = sqlite3.connect(os.path.join(data, "takt.db"))
        template = [(at, k, json.loads(b)) for at, k, b in
                    c.execute("SELECT at, kind, body FROM events WHERE project='shop' AND run=1 AND kind IN "
                              "('commit_seen','run_queued','run_started','job_queued','job_started','job_finished','job_skipped','run_finished') ORDER BY seq")]
        commit_info = [json.loads(b) for (b,) in c.execute("SELECT body FROM events WHERE kind='commit_info' LIMIT 1")][0]
        c.close()
        jobs = sum(1 for _, k, _ in template if k == "job_queued")
        t = time.perf_counter()
        big = fill(os.path.join(data, "takt.db"), runs, template, commit_info)
        print("store: %d runs of %d jobs and one of 200 written in %.1f s" % (runs + 1, jobs, time.perf_counter() - t))
        t = time.perf_counter()
        s = Server(data)
        s.token = token
        print("server ready on that log in %.2f s" % (time.perf_counter() - t))
        s.login()
        idle = settle(s.p.pid)
        print("caught up (idle) %s" % ("%.1f s after that" % idle if idle is not None else "NOT within 120 s"))
        floor = timed(lambda: s.api("GET", "/healthz"), rounds)
        print("baseline /healthz: p50 %.2f ms, p95 %.2f ms" % floor)
        mid = runs // 2
        pages = [
            ("projects", "/", "/api/v1/projects", 50),
            ("runs", "/projects/shop", "/api/v1/runs?project=shop&limit=50", 50),
            ("runs, page 100", "/projects/shop?before=%d" % (runs - 5000), "/api/v1/runs?project=shop&limit=50&before=%d" % (runs - 5000), 50),
            ("run (%d jobs)" % jobs, "/projects/shop/runs/%d" % mid, "/api/v1/runs/shop/%d" % mid, 50),
            ("run (200 jobs)", "/projects/shop/runs/%d" % big, "/api/v1/runs/shop/%d" % big, 100),
            ("artifacts", "/artifacts", "/api/v1/artifacts?limit=1000", 50),
            ("environments", "/environments", "/api/v1/environments", 50),
            ("flow", "/flow", "/api/v1/metrics", 50),
            ("incidents", "/incidents", "/api/v1/incidents?all=true", 50),
            ("flags", "/flags", "/api/v1/projects/shop/flags", 50),
        ]
        failed = []
        print("%-18s %9s %9s %9s %11s %10s" % ("page", "p50 ms", "p95 ms", "target", "API p95 ms", "size KiB"))
        for name, path, api, target in pages:
            size = len(s.page(path)) / 1024
            p50, p95 = timed(lambda: s.page(path), rounds)
            a50, a95 = timed(lambda: s.api("GET", api), rounds)
            ok = p95 <= target and size < 200
            if not ok:
                failed.append(name)
            print("%-18s %9.2f %9.2f %9d %11.2f %10.1f  %s  (%.1fx /healthz, %.1fx its API route)"
                  % (name, p50, p95, target, a95, size, "met" if ok else "NOT MET", p95 / floor[1], p95 / max(a95, 0.001)))
        st, r = s.api("POST", "/api/v1/runs/shop/1/jobs/clock/play")
        assert st in (200, 202), (st, r)
        late = live_log(s, r["run"])
        if late:
            print("live log: %d lines, delay p50 %.1f ms, p99 %.1f ms, max %.1f ms (target: within 200 ms)"
                  % (len(late), pct(late, 0.5), pct(late, 0.99), max(late)))
            if max(late) > 200:
                failed.append("live log")
        s.stop()
        print("targets not met: " + ", ".join(failed) if failed else "every target met")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
