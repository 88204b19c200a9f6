//! Jobs cannot read the server's data directory, config or credentials, other projects'
//! workspaces or other jobs' environments (bubblewrap, for real); `network: false` has no
//! network; nothing a job starts outlives it. Without isolation the server says so.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::server::{self, add_project, client, finished_run, post_json, until};
use common::{Repo, takt};
use std::path::{Path, PathBuf};

/// The isolation tests need bubblewrap; they fail (never skip) without it.
fn require_bwrap() {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("bwrap").is_file()));
    assert!(
        found,
        "bwrap is not on PATH: install the `bubblewrap` package (.ci/run installs it)"
    );
}

/// A directory outside /tmp (the private /tmp of a job would hide /tmp paths anyway, so the
/// data directory's own hiding is only tested out here).
fn outside_tmp() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn marker(what: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{n:x}", std::process::id())
}

/// Host processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(c) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let c = String::from_utf8_lossy(&c).replace('\0', " ");
        if c.contains(needle) {
            found.push(format!("{}: {c}", e.file_name().to_string_lossy()));
        }
    }
    found
}

/// The job's output lines (after the timestamp), without takt's echo of each command.
fn output_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|l| l.split_once(' ').map(|x| x.1))
        .filter(|l| !l.starts_with("$ ") && !l.starts_with("[takt]"))
        .collect()
}

async fn log_of(s: &server::Server, token: &str, project: &str, run: u64, job: &str) -> String {
    let r = client()
        .get(format!("{}/api/v1/runs/{project}/{run}/logs/{job}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if r.status().is_success() {
        r.text().await.unwrap()
    } else {
        String::new()
    }
}

/// What a hostile job tries. `{data}`, `{conf}` and `{port}` are filled in; the script never
/// names the other project or any marker, so whatever of them the log shows, it found.
const PROBE: &str = r#"
      - cat {data}/admin-token || echo no-admin-token
      - cat {data}/secret.key || echo no-secret-key
      - ls -la {data} || true
      - cat {conf} || echo no-config
      - cat "$HOME/.config/takt/credentials" || echo no-credentials
      - for f in /proc/[0-9]*/cmdline; do printf 'CMDLINE %s\n' "$(tr '\0' ' ' < $f)"; done
      - for f in /proc/[0-9]*/environ; do tr '\0' '\n' < $f; done | grep VICTIM_VALUE || echo no-env
      - ls -d /tmp/takt-work-*/* || true
      - cat /tmp/takt-work-*/*/src/in-workspace.txt || echo no-other-workspace
      - echo ws-$((1+1)) > mine.txt && cat mine.txt
      - echo tmp-$((2+1)) > /tmp/mine.txt && cat /tmp/mine.txt
      - touch /etc/takt-probe 2>/dev/null && echo host-writable || echo ro-$((3+1))
      - echo err-$((4+1)) >&2
      - grep -q '^CapEff:[[:space:]]*0000000000000000$' /proc/self/status && echo caps-$((5+1)) || grep Cap /proc/self/status
      - umount {data} 2>/dev/null && echo unmounted || echo kept-$((6+1))
      - sh -c 'sleep 600; true {left}' > /dev/null 2>&1 &
"#;

fn probe_job(data: &Path, conf: &Path, left: &str) -> String {
    PROBE
        .replace("{data}", &data.display().to_string())
        .replace("{conf}", &conf.display().to_string())
        .replace("{left}", left)
}

fn net_check(port: u16) -> String {
    format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 5)\" && echo reached-$((0+1)) || echo blocked-$((1+1))"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_under_bubblewrap_see_nothing_of_the_server_or_other_jobs() {
    require_bwrap();
    let root = outside_tmp();
    let data = root.path().join("data");
    let home = root.path().join("home");
    std::fs::create_dir_all(home.join(".config/takt")).unwrap();
    let credentials = marker("credentials");
    std::fs::write(home.join(".config/takt/credentials"), &credentials).unwrap();
    let conf = root.path().join("takt.toml");
    let conf_marker = marker("config");
    std::fs::write(&conf, format!("# {conf_marker}\nconcurrency = 4\n")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let s = server::start(
        &data,
        &[
            ("TAKT_ISOLATION", "bwrap"),
            ("TAKT_CONFIG", conf.to_str().unwrap()),
            ("HOME", home.to_str().unwrap()),
        ],
    );
    let admin = s.printed_token.clone().unwrap();
    let key = std::fs::read_to_string(data.join("secret.key"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(key.len(), 64);
    let ready = server::readyz(&s).await;
    assert_eq!(ready["isolation"], "bwrap", "{ready}");
    assert!(ready.get("warning").is_none(), "{ready}");

    // A job of another project holds a value in its environment and a file in its workspace,
    // and leaves a process behind.
    let victim_env = marker("victim-env");
    let victim_file = marker("victim-file");
    let victim_left = marker("victim-left");
    let victim = Repo::new(&[(
        "takt.yml",
        &format!(
            "jobs:\n  hold:\n    variables:\n      VICTIM_VALUE: {victim_env}\n    script:\n      - echo {victim_file} > in-workspace.txt\n      - sh -c 'sleep 600; true {victim_left}' > /dev/null 2>&1 &\n      - echo victim-ready\n      - sleep 120\n"
        ),
    )]);
    add_project(&s, &admin, "victim", victim.path()).await;
    let (st, _) = post_json(&s, "/api/v1/projects/victim/trigger", &admin, serde_json::json!({})).await;
    assert!(st.is_success());
    until("the victim's job runs", || async {
        log_of(&s, &admin, "victim", 1, "hold").await.contains("victim-ready")
    })
    .await;

    let left = marker("probe-left");
    let yml = format!(
        "jobs:\n  probe:\n    script:{}  net:\n    script:\n      - {}\n  nonet:\n    network: false\n    script:\n      - {}\n",
        probe_job(&data, &conf, &left),
        net_check(port),
        net_check(port)
    );
    let attacker = Repo::new(&[("takt.yml", &yml)]);
    add_project(&s, &admin, "attacker", attacker.path()).await;
    post_json(&s, "/api/v1/projects/attacker/trigger", &admin, serde_json::json!({})).await;
    let run = finished_run(&s, &admin, "attacker", 1).await;
    let log = log_of(&s, &admin, "attacker", 1, "probe").await;
    assert_eq!(run["status"], "success", "{run:#}\n{log}");

    for (what, secret) in [
        ("the admin token", admin.as_str()),
        ("the secret key", key.as_str()),
        ("the config file", conf_marker.as_str()),
        ("the CLI credentials", credentials.as_str()),
        ("another job's environment", victim_env.as_str()),
        ("another project's workspace", victim_file.as_str()),
        ("another project's workspace folder", "victim-r1"),
    ] {
        assert!(!log.contains(secret), "the job read {what}:\n{log}");
    }
    let out = output_lines(&log);
    for want in [
        "no-admin-token",
        "no-secret-key",
        "no-config",
        "no-credentials",
        "no-env",
        "no-other-workspace",
        "ws-2",
        "tmp-3",
        "ro-4",
        "err-5",
        "caps-6",
        "kept-7",
    ] {
        assert!(out.contains(&want), "`{want}` missing from:\n{log}");
    }
    let cmdlines: Vec<&str> = out.iter().copied().filter(|l| l.starts_with("CMDLINE ")).collect();
    assert!(!cmdlines.is_empty(), "{log}");
    let data_s = data.display().to_string();
    for c in &cmdlines {
        assert!(
            !c.contains(&data_s) && !c.contains(" serve "),
            "the job saw the server: {c}"
        );
    }
    assert!(
        cmdlines.len() < 10,
        "the job sees only its own processes: {cmdlines:#?}"
    );

    let net = output_lines(&log_of(&s, &admin, "attacker", 1, "net").await).join("\n");
    assert!(net.contains("reached-1"), "network is on by default:\n{net}");
    let nonet = output_lines(&log_of(&s, &admin, "attacker", 1, "nonet").await).join("\n");
    assert!(
        nonet.contains("blocked-2") && !nonet.contains("reached-1"),
        "network: false:\n{nonet}"
    );
    assert_eq!(processes_with(&left), Vec::<String>::new(), "left running by the probe");

    // Cancelling the other project's run ends everything it started.
    assert_eq!(processes_with(&victim_left).len(), 1, "the victim's leftover runs");
    let (st, body) = post_json(&s, "/api/v1/runs/victim/1/cancel", &admin, serde_json::json!({})).await;
    assert!(st.is_success(), "{body}");
    let v = finished_run(&s, &admin, "victim", 1).await;
    assert_eq!(v["status"], "cancelled", "{v:#}");
    assert_eq!(
        processes_with(&victim_left),
        Vec::<String>::new(),
        "left by a cancelled job"
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_leaves_no_sandboxed_job_running() {
    require_bwrap();
    let root = outside_tmp();
    let data = root.path().join("data");
    let mut s = server::start(&data, &[("TAKT_ISOLATION", "bwrap")]);
    let admin = s.printed_token.clone().unwrap();
    let left = marker("crash-left");
    let repo = Repo::new(&[(
        "takt.yml",
        &format!(
            "jobs:\n  hold:\n    script:\n      - sh -c 'sleep 600; true {left}' &\n      - echo held\n      - sleep 120\n"
        ),
    )]);
    add_project(&s, &admin, "demo", repo.path()).await;
    post_json(&s, "/api/v1/projects/demo/trigger", &admin, serde_json::json!({})).await;
    until("the job runs", || async {
        log_of(&s, &admin, "demo", 1, "hold").await.contains("held")
    })
    .await;
    // At least the background job (for a moment, the shell that forked it may show the same
    // command line: once, 2 were seen).
    let running = processes_with(&left);
    assert!(!running.is_empty(), "{running:?}");
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    until("the sandbox is gone", || {
        let left = left.clone();
        async move { processes_with(&left).is_empty() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_isolation_the_server_says_jobs_can_read_its_secrets() {
    let root = outside_tmp();
    let data = root.path().join("data");
    let s = server::start(&data, &[("TAKT_ISOLATION", "none")]);
    let admin = s.printed_token.clone().unwrap();
    let r = client().get(format!("{}/readyz", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["isolation"], "none", "{ready}");
    assert!(
        ready["warning"]
            .as_str()
            .unwrap()
            .contains("jobs can read the server's secrets"),
        "{ready}"
    );

    // And it is true: a job reads the admin token.
    let yml = format!(
        "jobs:\n  probe:\n    script:\n      - cat {}/admin-token\n",
        data.display()
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    add_project(&s, &admin, "demo", repo.path()).await;
    post_json(&s, "/api/v1/projects/demo/trigger", &admin, serde_json::json!({})).await;
    finished_run(&s, &admin, "demo", 1).await;
    let log = log_of(&s, &admin, "demo", 1, "probe").await;
    assert!(
        log.contains(&admin),
        "without isolation the job reads the token:\n{log}"
    );

    let out = takt()
        .args([
            "project", "show", "demo", "--json", "--server", &s.base, "--token", &admin,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARNING: jobs can read the server's secrets"),
        "{stderr}"
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["job_isolation"]["isolation"], "none", "{shown}");

    // So a fork's merge request, whose code nobody here vouched for, does not run.
    add_project(&s, &admin, "web", repo.path()).await;
    let st = server::put_secret(&s, &admin, "web", "TAKT_WEBHOOK_SECRET", crate::forge::HOOK_SECRET).await;
    assert!(st.is_success(), "{st}");
    let fork = crate::forge::github_pull_request("opened", 8, "main", &repo.rev("HEAD"), true);
    let (st, b) = crate::forge::deliver(&s, "github", "pull_request", "fork-1", &fork).await;
    assert_eq!((st.as_u16(), &b["ignored"]), (200, &serde_json::json!(true)), "{b}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("comes from a fork, and this server runs jobs unisolated"),
        "{b}"
    );
    let runs = server::get_json(&s, "/api/v1/runs?project=web", &admin).await;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "{runs}");
}

/// The log of the only job of the only run `takt run` made in `data`.
fn local_log(data: &Path) -> String {
    let mut logs: Vec<PathBuf> = Vec::new();
    let mut todo = vec![data.join("logs")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                logs.push(e.path());
            }
        }
    }
    assert_eq!(logs.len(), 1, "{logs:?}");
    std::fs::read_to_string(&logs[0]).unwrap()
}

#[test]
fn takt_run_isolate_hides_its_data_directory() {
    require_bwrap();
    let root = outside_tmp();
    let yml_for = |data: &Path| {
        format!(
            "jobs:\n  peek:\n    script:\n      - test -e {}/takt.db && echo seen-$((0+1)) || echo hidden-$((1+1))\n      - echo ws-$((2+1)) > f && cat f\n",
            data.display()
        )
    };
    for isolate in [false, true] {
        let data = root.path().join(format!("data-{isolate}"));
        let repo = Repo::new(&[("takt.yml", &yml_for(&data))]);
        let mut cmd = takt();
        cmd.arg("run").arg("--data-dir").arg(&data).current_dir(repo.path());
        if isolate {
            cmd.arg("--isolate");
        }
        let out = cmd.output().unwrap();
        let log = local_log(&data);
        assert!(out.status.success(), "{}\n{log}", String::from_utf8_lossy(&out.stderr));
        let out = output_lines(&log);
        assert!(out.contains(&"ws-3"), "{log}");
        let want = if isolate { "hidden-2" } else { "seen-1" };
        assert!(out.contains(&want), "isolate={isolate}: `{want}` missing from:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_job_user_jobs_write_their_workspace_but_not_read_the_data_directory() {
    if !nix_is_root() {
        eprintln!("note: running jobs as another user needs root; this test checks it as root only");
        return;
    }
    let root = outside_tmp();
    let data = root.path().join("data");
    let s = server::start(&data, &[("TAKT_ISOLATION", "user"), ("TAKT_JOB_USER", "65534:65534")]);
    let admin = s.printed_token.clone().unwrap();
    let ready = server::readyz(&s).await;
    assert_eq!(ready["isolation"], "user", "{ready}");
    let yml = format!(
        "jobs:\n  probe:\n    script:\n      - cat {0}/admin-token || echo no-admin-token\n      - cat {0}/takt.db > /dev/null && echo db-read || echo no-db\n      - id -u\n      - echo ws-$((1+1)) > mine.txt && cat mine.txt\n      - mkdir -p sub/dir && echo ok > sub/dir/f\n",
        data.display()
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    add_project(&s, &admin, "demo", repo.path()).await;
    post_json(&s, "/api/v1/projects/demo/trigger", &admin, serde_json::json!({})).await;
    let run = finished_run(&s, &admin, "demo", 1).await;
    let log = log_of(&s, &admin, "demo", 1, "probe").await;
    assert_eq!(run["status"], "success", "{run:#}\n{log}");
    assert!(!log.contains(&admin), "{log}");
    let out = output_lines(&log);
    for want in ["no-admin-token", "no-db", "65534", "ws-2"] {
        assert!(out.contains(&want), "`{want}` missing from:\n{log}");
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}
