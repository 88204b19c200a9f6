//! Flag serving over HTTP: takt's OFREP single evaluation against `unleash-server` (npm, on a
//! local PostgreSQL) answering the same flag — a boolean released to 50 % of users — through
//! its frontend API, in the same run, with the same client (wrk, HTTP/1.1 keep-alive,
//! loopback). A different user on every request.
//!
//! Targets (the flags issue): p50 ≤ 200 µs on one connection; ≥ 20,000 evaluations/s over 16
//! connections, on a 2-core machine where the load generator shares the cores.
//!
//!     cargo bench -p takt --bench ofrep [-- --seconds 5] [-- --no-unleash]
//!
//! Needs `git`, `wrk` (Debian's package: a C load generator, so that the figures are the
//! servers' and not a client's), Node 20 and PostgreSQL 15 (`/usr/lib/postgresql/15/bin`); installs
//! unleash-server into `bench/npm` with `npm ci` when missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills what it holds when dropped (servers, however the bench ends).
struct Running(Vec<Child>, Vec<Box<dyn FnOnce()>>);

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        for f in self.1.drain(..) {
            f();
        }
    }
}

/// One way to ask for the flag: method, URL, headers and body, where `{i}` becomes a number
/// that differs on every request (a different user each time).
struct Ask {
    method: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Option<&'static str>,
}

struct Figures {
    p50_us: f64,
    p99_us: f64,
    per_second: f64,
}

fn sh(cmd: &mut Command) {
    let st = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?} failed");
}

/// A Lua string literal.
fn lua(s: &str) -> String {
    format!("{s:?}")
}

/// `wrk` (Debian's package: a C load generator, so the figures are the server's, not a
/// client's) running `ask` on `conns` connections from one thread for `secs`; its report.
fn wrk(dir: &Path, ask: &Ask, conns: usize, secs: u64) -> String {
    let scheme = "http://".len();
    let (origin, path) = ask.url.split_at(ask.url[scheme..].find('/').expect("a path") + scheme);
    let headers: Vec<String> = ask
        .headers
        .iter()
        .map(|(k, v)| format!("[{}] = {}", lua(k), lua(v)))
        .collect();
    let script = format!(
        "local i = 0\nrequest = function()\n  i = i + 1\n  local path = string.gsub({path}, \"{{i}}\", i)\n  local body = {body}\n  if body then body = string.gsub(body, \"{{i}}\", i) end\n  return wrk.format({method}, path, {{{headers}}}, body)\nend\n",
        path = lua(path),
        body = ask.body.map_or("nil".to_string(), lua),
        method = lua(ask.method),
        headers = headers.join(", "),
    );
    let file = dir.join("ask.lua");
    std::fs::write(&file, script).expect("the wrk script");
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s"), "--latency", "-s"])
        .arg(&file)
        .arg(origin)
        .output()
        .unwrap_or_else(|e| panic!("wrk: {e} (apt-get install -y wrk)"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "{} answered with errors: {text}",
        ask.url
    );
    text
}

/// A figure of wrk's report, in µs (`116.00us`, `1.90ms`, `2.00s`) or as printed.
fn figure(report: &str, label: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` in wrk's report: {report}"));
    let value = line.trim_start()[label.len()..].trim();
    let (n, scale) = if let Some(n) = value.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = value.strip_suffix('s').filter(|_| label.ends_with('%')) {
        (n, 1e6)
    } else {
        (value, 1.0)
    };
    n.trim()
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("`{line}` in wrk's report"))
        * scale
}

/// p50 and p99 of sequential requests on one connection, then the rate over `conns`
/// connections, each for `secs` (after a second to warm up).
fn measure(dir: &Path, ask: &Ask, conns: usize, secs: u64) -> Figures {
    wrk(dir, ask, conns, 1);
    let one = wrk(dir, ask, 1, secs);
    let many = wrk(dir, ask, conns, secs);
    Figures {
        p50_us: figure(&one, "50%"),
        p99_us: figure(&one, "99%"),
        per_second: figure(&many, "Requests/sec:"),
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `takt serve` with one project whose flag `new-checkout` is on for 50 % of users; the base
/// URL and a flags token.
async fn takt(dir: &Path, run: &mut Running) -> (String, String) {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).expect("a repo dir");
    std::fs::write(
        repo.join("takt.yml"),
        "jobs:\n  a: {script: [true]}\nenvironments:\n  production: {driver: command, deploy: 'true'}\nflags:\n  new-checkout:\n    state: ENABLED\n    variants: {on: true, off: false}\n    defaultVariant: off\n    targeting: {fractional: [['on', 50], ['off', 50]]}\n",
    )
    .expect("takt.yml");
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["-c", "user.name=b", "-c", "user.email=b@example.com", "add", "."],
        &[
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@example.com",
            "commit",
            "-qm",
            "flags",
        ],
    ] {
        sh(Command::new("git").args(args).current_dir(&repo));
    }
    let port = port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_takt"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.join("data"))
        .env("TAKT_POLL_SECONDS", "0")
        .env("TAKT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("takt serve starts");
    use std::io::BufRead;
    let mut admin = None;
    for line in std::io::BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("a line");
        if line.starts_with("admin token")
            && let Some(t) = line.rsplit(": ").next()
        {
            admin = Some(t.trim().to_string());
        }
        if line.contains("listening on") {
            break;
        }
    }
    run.0.push(child);
    let admin = admin.expect("the server printed its admin token");
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{base}/api/v1/projects"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "shop", "repo": repo, "branch": "main"}))
        .send()
        .await
        .expect("project added");
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    let r: serde_json::Value = c
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "bench", "scope": "flags", "projects": ["shop"], "environments": ["production"]}))
        .send()
        .await
        .expect("a token")
        .json()
        .await
        .expect("its answer");
    let token = r["token"].as_str().expect("a token").to_string();
    (base, token)
}

/// PostgreSQL and unleash-server with `new-checkout` on for 50 % of users in `development`;
/// the base URL and a frontend token.
async fn unleash(dir: &Path, run: &mut Running) -> (String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/npm");
    let server = root.join("node_modules/unleash-server/dist/server.js");
    if !server.exists() {
        sh(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&root));
    }
    let pg = dir.join("pg");
    std::fs::create_dir_all(&pg).expect("a pg dir");
    let bin = PathBuf::from("/usr/lib/postgresql/15/bin");
    let pg_port = port();
    let root_user = nix_is_root();
    let as_pg = |cmd: String| {
        if root_user {
            let mut c = Command::new("su");
            c.args(["postgres", "-c", &cmd]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &cmd]);
            c
        }
    };
    if root_user {
        sh(Command::new("chown").args(["-R", "postgres"]).arg(&pg));
    }
    let (data, sock) = (pg.join("data"), pg.display().to_string());
    sh(&mut as_pg(format!(
        "{}/initdb -D {} -A trust -U postgres >/dev/null",
        bin.display(),
        data.display()
    )));
    sh(&mut as_pg(format!(
        "{}/pg_ctl -D {} -o '-k {sock} -c listen_addresses=127.0.0.1 -p {pg_port}' -l {sock}/log -w start >/dev/null",
        bin.display(),
        data.display()
    )));
    let stop = format!("{}/pg_ctl -D {} -m fast stop >/dev/null", bin.display(), data.display());
    let stop = move || {
        let mut c = if root_user {
            Command::new("su")
        } else {
            Command::new("sh")
        };
        if root_user {
            c.args(["postgres", "-c", &stop]);
        } else {
            c.args(["-c", &stop]);
        }
        let _ = c.status();
    };
    run.1.push(Box::new(stop));
    sh(Command::new(bin.join("psql")).args([
        "-q",
        "-h",
        "127.0.0.1",
        "-p",
        &pg_port.to_string(),
        "-U",
        "postgres",
        "-c",
        "create database unleash",
    ]));
    let port = port();
    let child = Command::new("node")
        .arg(&server)
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{pg_port}/unleash"),
        )
        .env("DATABASE_SSL", "false")
        .env("INIT_ADMIN_API_TOKENS", "*:*.bench-admin")
        .env("INIT_FRONTEND_API_TOKENS", "default:development.bench-frontend")
        .env("HTTP_PORT", port.to_string())
        .env("LOG_LEVEL", "error")
        .env("TZ", "UTC")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unleash-server starts");
    run.0.push(child);
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while c.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "unleash-server did not start within 120 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let admin = |path: &str| {
        c.post(format!("{base}/api/admin/projects/default/features{path}"))
            .header("authorization", "*:*.bench-admin")
    };
    for (path, body) in [
        ("", serde_json::json!({"name": "new-checkout"})),
        (
            "/new-checkout/environments/development/strategies",
            serde_json::json!({"name": "flexibleRollout", "parameters": {"rollout": "50", "stickiness": "default", "groupId": "new-checkout"}}),
        ),
    ] {
        let r = admin(path).json(&body).send().await.expect("an answer");
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    let r = admin("/new-checkout/environments/development/on")
        .send()
        .await
        .expect("an answer");
    assert!(r.status().is_success(), "{}", r.status());
    // Its frontend API answers from a cache it refreshes: wait until it has the flag.
    let token = "default:development.bench-frontend".to_string();
    loop {
        let mut seen = false;
        for u in 0..20 {
            let v: serde_json::Value = c
                .get(format!("{base}/api/frontend?userId=u{u}"))
                .header("authorization", &token)
                .send()
                .await
                .expect("an answer")
                .json()
                .await
                .expect("json");
            seen |= v["toggles"].as_array().is_some_and(|t| !t.is_empty());
        }
        if seen {
            break;
        }
        assert!(Instant::now() < deadline, "unleash-server never served the flag");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (base, token)
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let secs = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(5);
    let with_unleash = !args.iter().any(|a| a == "--no-unleash");
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut run = Running(Vec::new(), Vec::new());
    let (base, token) = takt(dir.path(), &mut run).await;
    let ofrep = Ask {
        method: "POST",
        url: format!("{base}/ofrep/v1/evaluate/flags/new-checkout"),
        headers: vec![
            ("Authorization", format!("Bearer {token}")),
            ("Content-Type", "application/json".into()),
        ],
        body: Some(r#"{"context":{"targetingKey":"u{i}"}}"#),
    };
    // The HTTP stack alone, for what the evaluation adds to it.
    let stack = Ask {
        method: "GET",
        url: format!("{base}/healthz"),
        headers: Vec::new(),
        body: None,
    };
    let floor = measure(dir.path(), &stack, 16, secs);
    println!(
        "takt /healthz:     p50 {:>6.0} µs  p99 {:>6.0} µs  {:>7.0} requests/s over 16 connections  (the HTTP stack alone)",
        floor.p50_us, floor.p99_us, floor.per_second
    );
    let ours = measure(dir.path(), &ofrep, 16, secs);
    println!(
        "takt OFREP:        p50 {:>6.0} µs  p99 {:>6.0} µs  {:>7.0} evaluations/s over 16 connections  (targets: p50 <= 200 µs, >= 20,000/s)  {}",
        ours.p50_us,
        ours.p99_us,
        ours.per_second,
        if ours.p50_us <= 200.0 && ours.per_second >= 20_000.0 {
            "ok"
        } else {
            "OVER TARGET"
        }
    );
    if !with_unleash {
        return;
    }
    let (base, token) = unleash(dir.path(), &mut run).await;
    let frontend = Ask {
        method: "GET",
        url: format!("{base}/api/frontend?userId=u{{i}}"),
        headers: vec![("Authorization", token)],
        body: None,
    };
    let theirs = measure(dir.path(), &frontend, 16, secs);
    println!(
        "unleash frontend:  p50 {:>6.0} µs  p99 {:>6.0} µs  {:>7.0} evaluations/s over 16 connections",
        theirs.p50_us, theirs.p99_us, theirs.per_second
    );
    println!(
        "ratio: takt's p50 is {:.1}x lower, its rate {:.1}x higher than unleash-server 6.4's frontend API",
        theirs.p50_us / ours.p50_us,
        ours.per_second / theirs.per_second
    );
}
