#!/usr/bin/env bash
# The whole test suite, as the README says: installs what the tests run for real when it is
# missing (Debian packages: PostgreSQL, nginx, Prometheus, bubblewrap, python3-feedparser, dnsmasq,
# Chromium and its WebDriver; moto from PyPI;
# needs root or sudo),
# then runs every test. A test whose component is still missing fails, naming it.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
# The store suite starts its own PostgreSQL server.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# The nginx driver's test reloads a real nginx; a canary analysis queries a real Prometheus;
# the job isolation tests run jobs under a real bubblewrap.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx-light)
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
[ -x /usr/bin/bwrap ] || missing+=(bubblewrap)
# The status page's Atom feed is read by a real Atom parser (Debian's, for /usr/bin/python3).
/usr/bin/python3 -c "import feedparser" 2>/dev/null || missing+=(python3-feedparser)
# DNS checks ask a real DNS server (dnsmasq, started by the test on a local port).
[ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
# The web UI's test drives a real headless Chromium over WebDriver.
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# The forge tests read published descriptions installed with npm (below).
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Published descriptions the forge tests check against (GitHub's OpenAPI description, its
# webhook examples), the JSON-schema validator of the provenance test (Ajv) and flagd's own
# evaluator (the flags' conformance test), pinned in
# crates/takt/tests/npm/package-lock.json.
npm_dir=crates/takt/tests/npm/node_modules
if [ ! -d $npm_dir/@octokit/openapi ] || [ ! -d $npm_dir/ajv-formats ] || [ ! -d $npm_dir/@openfeature/ofrep-provider ] || [ ! -d $npm_dir/@openfeature/ofrep-web-provider ]; then
  echo "== npm ci (crates/takt/tests/npm)"
  npm ci --prefix crates/takt/tests/npm --no-audit --no-fund --silent
fi

# The S3 test's peer: moto's S3-compatible server (PyPI), pinned with its dependencies in
# crates/takt/tests/py/requirements.txt, in a virtualenv under target/ (about 1 min, 320 MB).
venv=target/test-venv
if [ ! -x $venv/bin/moto_server ]; then
  echo "== pip install moto[server] (into $venv)"
  python3 -m venv $venv
  $venv/bin/pip install --quiet --disable-pip-version-check -r crates/takt/tests/py/requirements.txt
fi

# Most tests wait on processes, servers and sockets (one test binary of the takt crate used one
# core of two at 2 threads: 87 s; 55 s at 4), so run more tests at once than there are cores.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"

echo "== cargo test --workspace --no-fail-fast"
cargo test --workspace --no-fail-fast "$@"
