#!/usr/bin/env python3
"""The artifact repository over HTTP: push, verified pull, many small pushes.

  python3 bench/artifacts.py [--size-mib N]     (default 1024)

1. push: `takt artifact push FILE` of a 1 GiB file over loopback HTTP into the server's local
   store (client hashes, server hashes while writing, fsync), against
   `openssl dgst -sha256 f && cp f dst && sync` in the same run. Target <= 1.3x.
2. pull: `takt artifact pull` of it (server hashes while streaming, client hashes while
   writing, fsync, signature check), against the same baseline. Target <= 2.0x.
3. 10,000 artifacts of 1 KiB pushed by 8 concurrent clients: rate, errors, and that every one
   is there afterwards.
The server's peak RSS (VmHWM) over 1-3 must stay under 100 MiB.
Each of 1 and 2 is the median of 3 rounds alternating with the baseline.
"""
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.environ.get("BENCH_DIR", "/var/tmp")


def main():
    size_mib = 1024
    if "--size-mib" in sys.argv:
        size_mib = int(sys.argv[sys.argv.index("--size-mib") + 1])
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "takt"], cwd=ROOT, check=True)
    takt = os.path.join(ROOT, "target/release/takt")
    d = tempfile.mkdtemp(prefix="takt-art-bench-", dir=WORK)
    env = dict(os.environ, TAKT_POLL_SECONDS="0", TAKT_LOG="warn", TAKT_MAX_ARTIFACT_BYTES=str(4 << 30))
    env.pop("TAKT_ADMIN_TOKEN", None)
    p = subprocess.Popen([takt, "serve", "--listen", "127.0.0.1:0", "--data-dir", d + "/data"], stdout=subprocess.PIPE, text=True, env=env)
    token = base = None
    for line in p.stdout:
        m = re.search(r"admin token .*: (\S+)$", line)
        if m:
            token = m.group(1)
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            base = m.group(1)
            break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    cenv = dict(os.environ, TAKT_SERVER=base, TAKT_TOKEN=token)

    big = os.path.join(d, "big.bin")
    with open(big, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    subprocess.run(["sync"], check=True)

    def quiet():
        # The root filesystem here is mounted with `discard`: a deleted 1 GiB file is trimmed
        # during the next journal commits, and whichever step runs then pays for it. Let the
        # disk settle before each timed step, so that no step pays for another's deletions.
        subprocess.run(["sync"], check=True)
        time.sleep(2)

    def baseline():
        dst = os.path.join(d, "copy.bin")
        t0 = time.monotonic()
        subprocess.run(f"openssl dgst -sha256 {big} >/dev/null && cp {big} {dst} && sync", shell=True, check=True)
        t = time.monotonic() - t0
        os.remove(dst)
        quiet()
        return t

    def timed(args):
        t0 = time.monotonic()
        r = subprocess.run([takt, *args], env=cenv, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return time.monotonic() - t0

    push, pull, base_t = [], [], []
    for i in range(3):
        base_t.append(baseline())
        push.append(timed(["artifact", "push", big, "--as", f"big@{i}"]))
        quiet()
        out = os.path.join(d, f"pulled-{i}.bin")
        pull.append(timed(["artifact", "pull", f"big@{i}", "-o", out]))
        os.remove(out)
        os.remove(out + ".takt.json")
        quiet()
    med = lambda xs: sorted(xs)[len(xs) // 2]
    b, pu, pl = med(base_t), med(push), med(pull)
    print(f"rounds (push / pull / baseline, s): " + "  ".join(f"{a:.2f}/{c:.2f}/{x:.2f}" for a, c, x in zip(push, pull, base_t)))
    print(f"1. push of {size_mib} MiB over HTTP: {pu:.2f} s ({size_mib / pu:.0f} MiB/s), baseline {b:.2f} s, ratio {pu / b:.2f}x (target <= 1.3x) {'ok' if pu / b <= 1.3 else 'OVER TARGET'}")
    print(f"2. verified pull of {size_mib} MiB: {pl:.2f} s ({size_mib / pl:.0f} MiB/s), ratio {pl / b:.2f}x (target <= 2.0x) {'ok' if pl / b <= 2.0 else 'OVER TARGET'}")

    host, port = base[len("http://"):].split(":")
    n, clients = 10000, 8
    errors = []

    def client(k):
        c = http.client.HTTPConnection(host, int(port), timeout=60)
        for i in range(k, n, clients):
            body = os.urandom(1024)
            digest = hashlib.sha256(body).hexdigest()
            c.request("PUT", f"/api/v1/artifacts/small/{i}?project=bench", body=body,
                      headers={"authorization": f"Bearer {token}", "x-checksum-sha256": digest})
            r = c.getresponse()
            r.read()
            if r.status != 201:
                errors.append((i, r.status))
        c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.monotonic() - t0
    present = sum(1 for i in range(n) if os.path.exists(os.path.join(d, "data/manifests/small", f"{i}.json")))
    print(f"3. {n} pushes of 1 KiB by {clients} clients: {dt:.1f} s, {n / dt:.0f}/s, {len(errors)} errors, {present} of {n} stored "
          f"{'ok' if not errors and present == n else 'FAILED'}")
    with open(f"/proc/{p.pid}/status") as f:
        hwm = int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024
    print(f"   server peak RSS over 1-3: {hwm:.1f} MiB (target < 100 MiB) {'ok' if hwm < 100 else 'OVER TARGET'}")
    p.terminate()
    p.wait()
    subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
