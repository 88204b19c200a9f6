#!/usr/bin/env python3
"""takt serve: start-to-ready on an empty data directory, and idle RSS.

  python3 bench/serve.py

Start to ready: from spawning `takt serve` to the first 200 from /readyz (target <= 100 ms),
median of 10 starts, each on a new empty data directory. Idle RSS: VmRSS after 2 s idle
(target <= 30 MiB).
"""
import os
import re
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "takt"], cwd=ROOT, check=True)
    takt = os.path.join(ROOT, "target/release/takt")
    times, rss = [], []
    for _ in range(10):
        d = tempfile.mkdtemp(prefix="takt-serve-bench-")
        t0 = time.monotonic()
        p = subprocess.Popen([takt, "serve", "--listen", "127.0.0.1:0", "--data-dir", d], stdout=subprocess.PIPE, text=True)
        base = None
        for line in p.stdout:
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                base = m.group(1)
                break
        ready = None
        while time.monotonic() - t0 < 10:
            try:
                if urllib.request.urlopen(base + "/readyz", timeout=1).status == 200:
                    ready = time.monotonic() - t0
                    break
            except OSError:
                time.sleep(0.001)
        times.append(ready * 1000)
        time.sleep(2)
        with open(f"/proc/{p.pid}/status") as f:
            rss.append(int(next(l for l in f if l.startswith("VmRSS:")).split()[1]) / 1024)
        p.terminate()
        p.wait()
        subprocess.run(["rm", "-rf", d], check=True)
    times.sort()
    med = times[len(times) // 2]
    print(f"start to ready: median {med:.1f} ms, max {times[-1]:.1f} ms (target <= 100 ms) {'ok' if med <= 100 else 'OVER TARGET'}")
    print(f"idle RSS: {max(rss):.1f} MiB (target <= 30 MiB) {'ok' if max(rss) <= 30 else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
