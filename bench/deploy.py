#!/usr/bin/env python3
"""How fast a failing canary is rolled back (issue 4, figure 2).

  python3 bench/deploy.py [rounds]      (default 5)

The example service (examples/deploy/app.py) runs under the process driver with a canary:
set_weight 20, then an analysis every 1 s of the error rate takt's proxy sees. Each round
deploys a good version, then a broken one (500 on /) while a client sends requests through the
environment's public port. Measured from the failing measurement's recorded result (the
`analysis … failed` deploy step's time) to:
  - the `rollback` step (traffic moved back, as recorded), and
  - the last failed response the client received (all traffic back on the good version).
Target: <= 1 s. Also: the failed share during the canary (expected 20%).
"""
import datetime
import http.client
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server import ROOT, Server, git, new_repo, pct  # noqa: E402


def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "takt"], cwd=ROOT, check=True)
    takt = os.path.join(ROOT, "target/release/takt")
    app = open(os.path.join(ROOT, "examples/deploy/app.py")).read()
    import socket
    s0 = socket.socket()
    s0.bind(("127.0.0.1", 0))
    port = s0.getsockname()[1]
    s0.close()
    yml = f"""jobs:
  package:
    script: [cp app.py app]
    artifacts: {{name: app, paths: [app]}}
environments:
  live:
    port: {port}
    instances: 2
    start: exec python3 "$TAKT_ARTIFACT_PATH"
    strategy:
      canary:
        steps:
          - set_weight: 20
          - analysis: {{initial_delay: 1s, interval: 1s, count: 3, metric: proxy, failure_condition: error_rate > 0.05}}
"""
    repo = new_repo(yml, {"app.py": app})
    srv = Server(takt)
    try:
        st, b = srv.call("POST", "/api/v1/projects", {"name": "svc", "repo": repo})
        assert st == 201, b
        runs = 0
        deploys = 0

        def build(text, msg):
            nonlocal runs
            with open(os.path.join(repo, "app.py"), "w") as f:
                f.write(text)
            git(repo, "commit", "-qam", msg)
            st, b = srv.call("POST", "/api/v1/projects/svc/trigger", {"rev": "main"})
            assert st == 202, b
            runs += 1
            while True:
                r = srv.run("svc", runs)
                if r and r.get("finished_at"):
                    assert r["status"] == "success", r
                    break
                time.sleep(0.05)
            st, b = srv.call("GET", "/api/v1/artifacts?project=svc")
            return max(b["artifacts"], key=lambda a: int(a["version"].split("-")[0]))["version"]

        def deploy(version):
            nonlocal deploys
            st, b = srv.call("POST", "/api/v1/environments/svc/live/deploy", {"artifact": f"app@{version}"})
            assert st == 202, b
            deploys += 1
            while True:
                st, v = srv.call("GET", "/api/v1/environments/svc/live")
                d = next((d for d in v["history"] if d["deploy"] == b["deploy"]), None)
                if d and d.get("outcome"):
                    return d
                time.sleep(0.05)

        to_rollback, to_last_bad, shares = [], [], []
        for i in range(rounds):
            good = build(app + f"# good {i}\n", f"good {i}")
            d = deploy(good)
            assert d["outcome"] == "succeeded", d
            bad = build(app.replace("BROKEN = False", "BROKEN = True") + f"# bad {i}\n", f"bad {i}")
            seen = []
            stop = threading.Event()

            def load():
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                while not stop.is_set():
                    try:
                        c.request("GET", "/")
                        r = c.getresponse()
                        r.read()
                        seen.append((time.time(), r.status))
                    except Exception:
                        seen.append((time.time(), 0))
                        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

            t = threading.Thread(target=load)
            t.start()
            d = deploy(bad)
            time.sleep(0.5)
            stop.set()
            t.join()
            assert d["outcome"] == "rolled_back", d
            failed = next(s for s in d["steps"] if s["action"] == "analysis" and s.get("verdict") == "failed")
            rolled = next(s for s in d["steps"] if s["action"] == "rollback")
            t_fail = ts(failed["at"])
            bad_times = [at for at, st in seen if st != 200]
            first_bad = bad_times[0]
            during = [st for at, st in seen if first_bad <= at <= bad_times[-1]]
            shares.append(sum(1 for s in during if s != 200) / len(during))
            to_rollback.append((ts(rolled["at"]) - t_fail) * 1000)
            to_last_bad.append((bad_times[-1] - t_fail) * 1000)
            print(f"round {i + 1}: failing result → rollback step {to_rollback[-1]:.1f} ms; last failed response "
                  f"{to_last_bad[-1]:+.1f} ms from the result; failed share during the canary "
                  f"{shares[-1] * 100:.1f}% of {len(during)} requests")
        worst = max(max(to_rollback), max(to_last_bad))
        print(f"2. failing check's result → all traffic on the good version: rollback step median "
              f"{pct(to_rollback, 50):.1f} ms, max {max(to_rollback):.1f} ms; last failed response seen by the client "
              f"at most {max(to_last_bad):+.1f} ms after the result (target <= 1000 ms; worst/target "
              f"{worst / 1000:.3f}); failed share during the canary {min(shares) * 100:.1f}–{max(shares) * 100:.1f}% "
              f"(expected 20%)")
    finally:
        sock = os.path.join(srv.dir, "data/environments/svc/live/supervisor/supervisor.sock")
        srv.stop()
        if os.path.exists(sock):
            os.remove(sock)
        subprocess.run(["rm", "-rf", repo])


if __name__ == "__main__":
    main()
