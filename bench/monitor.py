#!/usr/bin/env python3
"""takt's health checks under load, beside Prometheus's blackbox exporter doing the same probes.

  python3 bench/monitor.py [--checks 500] [--interval 10] [--seconds 60]

1. checks: a project with N HTTP checks (default 500) at an interval (default 10 s) against a
   local HTTP service; after a warm-up, takt's CPU (user + system, from /proc) and RSS over the
   measuring window. Targets: CPU under 5% of one core, RSS under 60 MiB.
2. baseline, in the same run, one after the other: Debian's prometheus-blackbox-exporter probing
   the same N targets, scraped by a real Prometheus at the same interval; the CPU of both
   together over the same window. Target: takt's CPU per probe no more than theirs.
3. incident: one check (failure_threshold 1) turns unhealthy; from the `check_state_changed`
   that the crossing result records to its `incident_opened`. Target: under 100 ms.
4. status: /status with 50 public services and a year of day buckets written into the results
   table before the server starts; p95 of pages built afresh (one a second) and of pages served
   from the one-second cache. Target: under 10 ms p95.

Needs a release build (cargo build --release -p takt), prometheus and
prometheus-blackbox-exporter (Debian packages).
"""
import argparse
import http.server
import json
import os
import socketserver
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server import ROOT, Server, new_repo, pct  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
unhealthy = set()


class Target(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        i = self.path.rsplit("=", 1)[-1]
        code = 503 if i in unhealthy else 200
        body = b'{"status":"ok"}'
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:
            pass  # the prober gave up (its timeout)

    def log_message(self, *a):
        pass


class Threaded(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    # Every check is probed at once when the server starts: a backlog of 5 would refuse most.
    request_queue_size = 4096


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1]) / 1024


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def measure(pids, seconds):
    before = sum(cpu_seconds(p) for p in pids)
    time.sleep(seconds)
    return sum(cpu_seconds(p) for p in pids) - before


def takt_checks(takt, n, interval, seconds, port):
    checks = "".join(
        f"  c{i}:\n    http: {{url: \"http://127.0.0.1:{port}/healthz?i={i}\"}}\n    interval: {interval}s\n"
        f"    timeout: 5s\n    conditions: [\"[STATUS] == 200\"]\n"
        + ("    failure_threshold: 1\n" if i == 0 else "")
        for i in range(n)
    )
    repo = new_repo(f"jobs:\n  a: {{script: [x]}}\nchecks:\n{checks}")
    s = Server(takt)
    s.project("mon", repo)
    time.sleep(interval + 5)  # every check probed at least once
    used = measure([s.p.pid], seconds)
    rss = rss_mib(s.p.pid)
    probes = n * seconds / interval
    # The crossing result and its incident.
    st, b = s.call("GET", f"/api/v1/events?after={1 << 62}&limit=1")
    head = b["head"]
    unhealthy.add("0")
    change = incident = None
    deadline = time.time() + interval * 3 + 10
    while time.time() < deadline and not (change and incident):
        st, b = s.call("GET", f"/api/v1/events?project=mon&after={head}&wait=10")
        for e in b["events"]:
            head = max(head, e["seq"])
            if e["kind"] == "check_state_changed" and e["check"] == "c0" and not change:
                change = e
            if e["kind"] == "incident_opened" and not incident:
                incident = e
    unhealthy.discard("0")
    s.stop()
    lag = None
    if change and incident:
        from datetime import datetime
        t = lambda e: datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()
        lag = (t(incident) - t(change)) * 1000
    return used, rss, probes, lag


def blackbox(n, interval, seconds, port):
    d = tempfile.mkdtemp(prefix="takt-bench-blackbox-")
    bport, pport = free_port(), free_port()
    with open(f"{d}/blackbox.yml", "w") as f:
        f.write("modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http: {valid_status_codes: [200]}\n")
    targets = ", ".join(f"'http://127.0.0.1:{port}/healthz?i={i}'" for i in range(n))
    with open(f"{d}/prometheus.yml", "w") as f:
        f.write(
            f"global: {{scrape_interval: {interval}s, scrape_timeout: 5s}}\n"
            "scrape_configs:\n  - job_name: blackbox\n    metrics_path: /probe\n    params: {module: [http_2xx]}\n"
            f"    static_configs: [{{targets: [{targets}]}}]\n"
            "    relabel_configs:\n"
            "      - {source_labels: [__address__], target_label: __param_target}\n"
            "      - {source_labels: [__param_target], target_label: instance}\n"
            f"      - {{target_label: __address__, replacement: '127.0.0.1:{bport}'}}\n"
        )
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bb = subprocess.Popen(["/usr/bin/prometheus-blackbox-exporter", f"--config.file={d}/blackbox.yml",
                           f"--web.listen-address=127.0.0.1:{bport}"], **quiet)
    prom = subprocess.Popen(["/usr/bin/prometheus", f"--config.file={d}/prometheus.yml",
                             f"--storage.tsdb.path={d}/tsdb", f"--web.listen-address=127.0.0.1:{pport}"], **quiet)
    time.sleep(interval + 5)
    used = measure([bb.pid, prom.pid], seconds)
    rss = rss_mib(bb.pid) + rss_mib(prom.pid)
    for p in (bb, prom):
        p.terminate()
        p.wait()
    subprocess.run(["rm", "-rf", d])
    return used, rss, n * seconds / interval


def status_page(takt):
    """50 public services, a year of day buckets, then /status timed."""
    checks = "".join(
        f"  s{i}:\n    service: service-{i:02}\n    public: true\n    tcp: {{host: 127.0.0.1, port: 9}}\n    interval: 1h\n"
        for i in range(50)
    )
    repo = new_repo(f"jobs:\n  a: {{script: [x]}}\nchecks:\n{checks}")
    s = Server(takt)
    s.project("shop", repo)
    data = s.dir + "/data"
    s.p.terminate()
    s.p.wait()
    db = sqlite3.connect(f"{data}/takt.db")
    now = int(time.time())
    today = now - now % 86400
    rows = [("shop", f"s{i}", 86400, today - d * 86400, 2880, 2879, 2880 * 40, 5, 900, "20:2000,22:880")
            for i in range(50) for d in range(1, 366)]
    db.executemany("INSERT OR REPLACE INTO check_buckets VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()
    # Start again on the same data directory.
    env = dict(os.environ, TAKT_POLL_SECONDS="0", TAKT_LOG="warn", TAKT_ISOLATION="none")
    env.pop("TAKT_ADMIN_TOKEN", None)
    p = subprocess.Popen([takt, "serve", "--listen", "127.0.0.1:0", "--data-dir", data], stdout=subprocess.PIPE, text=True, env=env)
    import re
    for line in p.stdout:
        m = re.search(r"listening on http://(\S+)", line)
        if m:
            host, port = m.group(1).split(":")
            break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    import http.client

    def get():
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        t0 = time.perf_counter()
        c.request("GET", "/status")
        r = c.getresponse()
        body = r.read()
        ms = (time.perf_counter() - t0) * 1000
        c.close()
        assert r.status == 200 and b"service-49" in body, (r.status, body[:200])
        return ms

    get()  # the first build warms the caches of the file system
    fresh = []
    for _ in range(15):
        time.sleep(1.05)
        fresh.append(get())
    cached = [get() for _ in range(200)]
    p.terminate()
    p.wait()
    subprocess.run(["rm", "-rf", s.dir])
    return fresh, cached


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checks", type=int, default=500)
    ap.add_argument("--interval", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=60)
    a = ap.parse_args()
    takt = os.path.join(ROOT, "target/release/takt")
    srv = Threaded(("127.0.0.1", 0), Target)
    port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    used, rss, probes, lag = takt_checks(takt, a.checks, a.interval, a.seconds, port)
    bused, brss, bprobes = blackbox(a.checks, a.interval, a.seconds, port)
    pct_core = used / a.seconds * 100
    bpct = bused / a.seconds * 100
    per, bper = used / probes * 1e6, bused / bprobes * 1e6
    print(f"checks: {a.checks} HTTP checks every {a.interval} s, measured over {a.seconds} s ({probes:.0f} probes)")
    print(f"  takt:     CPU {pct_core:.2f}% of one core (target < 5%, ratio {pct_core / 5:.2f}), "
          f"RSS {rss:.1f} MiB (target < 60 MiB, ratio {rss / 60:.2f}), {per:.0f} µs of CPU per probe")
    print(f"  baseline: blackbox exporter + Prometheus: CPU {bpct:.2f}% of one core, RSS {brss:.1f} MiB, "
          f"{bper:.0f} µs of CPU per probe; takt/baseline per probe: {per / bper:.2f} (target <= 1)")
    if lag is None:
        print("incident: the crossing result or its incident was not seen")
    else:
        print(f"incident: opened {lag:.1f} ms after the crossing result was recorded (target < 100 ms, ratio {lag / 100:.2f})")
    fresh, cached = status_page(takt)
    print(f"status: 50 services, a year of day buckets: built afresh p95 {pct(fresh, 95):.1f} ms "
          f"(target < 10 ms, ratio {pct(fresh, 95) / 10:.2f}); from the 1 s cache p95 {pct(cached, 95):.2f} ms")
    srv.shutdown()


if __name__ == "__main__":
    main()
