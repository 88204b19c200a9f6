//! The other drivers and the supervisor, for real: traffic shared by a real nginx (Debian's
//! package) from the upstream file takt writes; and the process driver's supervisor carrying
//! traffic on while `takt serve` is killed with -9 and started again.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use takt_server::auth::Scope;

fn app() -> String {
    std::fs::read_to_string(format!("{}/../../examples/deploy/app.py", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

const JOBS: &str = "jobs:\n  package:\n    script: [cp app.py app]\n    artifacts: {name: app, paths: [app]}\n";

async fn green_run(s: &Server, ci: &str, n: u64) {
    let (st, b) = post_json(s, "/api/v1/projects/web/trigger", ci, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!(finished_run(s, ci, "web", n).await["status"], "success");
}

/// A fresh connection per request, so nginx's workers see each one.
async fn versions(url: &str, n: usize) -> Vec<String> {
    tls();
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let b = c.get(url).send().await.unwrap().text().await.unwrap();
        out.push(b.trim().rsplit(' ').next().unwrap().to_string());
    }
    out
}

/// How many processes `pid` has as children (an nginx master's workers).
fn children(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid …: the comm may hold spaces; split after its ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(|p| p == pid.to_string()))
                .unwrap_or(false)
        })
        .count()
}

struct Nginx(std::process::Child);
impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: a killed master leaves its workers behind.
        let _ = std::process::Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn nginx_shares_a_canary_from_the_upstream_file_takt_writes() {
    let Some(bin) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        panic!("nginx is not installed (.ci/run installs nginx-light)");
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let port = free_port();
    let upstream = dir.path().join("upstream.conf");
    std::fs::write(&upstream, "upstream takt_live { server 127.0.0.1:9 down; }\n").unwrap();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "daemon off; worker_processes 1; pid {d}/pid; error_log {d}/err;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
               include {d}/upstream.conf;\n\
               server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://takt_live; }} }} }}\n"
        ),
    )
    .unwrap();
    let nginx = Nginx(
        std::process::Command::new(bin)
            .args(["-p", &d, "-c", &format!("{d}/nginx.conf")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let yml = format!(
        "{JOBS}environments:\n  live:\n    driver: nginx\n    url: http://127.0.0.1:{port}\n    upstream: {d}/upstream.conf\n    reload: {bin} -p {d} -c {d}/nginx.conf -s reload\n    start: exec python3 \"$TAKT_ARTIFACT_PATH\"\n    auto: true\n    strategy:\n      canary: {{steps: [{{set_weight: 50}}, {{pause: {{}}}}]}}\n"
    );
    let repo = Repo::new(&[("takt.yml", &yml), ("app.py", &app())]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let ci = new_token(&s, &admin, Scope::Ci).await;
    let dep = new_token(&s, &admin, Scope::Deploy).await;
    add_project(&s, &admin, "web", repo.path()).await;
    let url = format!("http://127.0.0.1:{port}/");

    green_run(&s, &ci, 1).await;
    let v = settled(&s, &dep, "web", "live", 1).await;
    let v1 = v["running"]["version"].as_str().unwrap().to_string();
    until("nginx serves v1", || {
        let url = url.clone();
        let v1 = v1.clone();
        async move { versions(&url, 1).await == [v1] }
    })
    .await;

    // v2 as a canary at 50%: nginx alternates between the versions (one worker, smooth WRR).
    repo.commit(&[("app.py", &format!("{}# v2\n", app()))], "v2");
    green_run(&s, &ci, 2).await;
    until("the canary pauses at 50%", || async {
        let v = get_json(&s, "/api/v1/environments/web/live", &dep).await;
        v["deploying"]["action"] == "paused"
    })
    .await;
    let v2 = get_json(&s, "/api/v1/environments/web/live", &dep).await["deploying"]["artifact"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let file = std::fs::read_to_string(&upstream).unwrap();
    assert_eq!(file.matches("weight=50;").count(), 2, "{file}");
    // After a reload the old worker serves the old configuration until it has gone: wait
    // until the new one answers (v2 seen) and the old one has left.
    let master = nginx.0.id();
    until("nginx reloaded and its old worker gone", || {
        let url = url.clone();
        let v2 = v2.clone();
        async move { versions(&url, 4).await.contains(&v2) && children(master) == 1 }
    })
    .await;
    let seen = versions(&url, 20).await;
    assert_eq!(seen.iter().filter(|v| **v == v2).count(), 10, "{seen:?}");
    assert_eq!(seen.iter().filter(|v| **v == v1).count(), 10, "{seen:?}");

    let (st, _) = post_json(&s, "/api/v1/environments/web/live/resume", &dep, json!({})).await;
    assert_eq!(st, StatusCode::OK);
    let v = settled(&s, &dep, "web", "live", 2).await;
    assert_eq!(v["running"]["version"], v2.as_str());
    let file = std::fs::read_to_string(&upstream).unwrap();
    assert_eq!(file.matches("weight=100;").count(), 1, "{file}");
    until("nginx serves only v2", || {
        let url = url.clone();
        let v2 = v2.clone();
        async move { versions(&url, 6).await.iter().all(|x| *x == v2) }
    })
    .await;

    // The server dies with v3 as a canary at 50%: the restarted server's recovery goes through
    // the nginx driver, so the upstream file it rewrites sends everything back to v2 (recovery
    // used to tell the supervisor alone, and nginx kept sending half to the stopped canary).
    repo.commit(&[("app.py", &format!("{}# v3\n", app()))], "v3");
    green_run(&s, &ci, 3).await;
    until("the v3 canary pauses at 50%", || async {
        get_json(&s, "/api/v1/environments/web/live", &dep).await["deploying"]["action"] == "paused"
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&upstream)
            .unwrap()
            .matches("weight=50;")
            .count(),
        2
    );
    let mut s = s;
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    s = start(&dir.path().join("data"), &[]);
    let v = settled(&s, &dep, "web", "live", 3).await;
    assert_eq!(v["history"][0]["outcome"], "interrupted", "{v:#}");
    assert_eq!(v["running"]["version"], v2.as_str());
    let file = std::fs::read_to_string(&upstream).unwrap();
    assert_eq!(file.matches("weight=100;").count(), 1, "{file}");
    assert_eq!(file.matches("server ").count(), 1, "only v2's instance: {file}");
    until("nginx serves only v2 again", || {
        let url = url.clone();
        let v2 = v2.clone();
        async move { versions(&url, 6).await.iter().all(|x| *x == v2) }
    })
    .await;
    let sock = dir.path().join("data/environments/web/live/supervisor/supervisor.sock");
    let _ = std::fs::remove_file(sock);
}

#[tokio::test]
async fn the_supervisor_keeps_serving_while_the_server_is_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yml = format!(
        "{JOBS}environments:\n  live:\n    port: {port}\n    start: exec python3 \"$TAKT_ARTIFACT_PATH\"\n    auto: true\n    strategy:\n      canary: {{steps: [{{set_weight: 20}}, {{pause: {{}}}}]}}\n"
    );
    let repo = Repo::new(&[("takt.yml", &yml), ("app.py", &app())]);
    let data = dir.path().join("data");
    let mut s = start(&data, &[("TAKT_ADMIN_TOKEN", "admin-secret-token-1")]);
    let admin = "admin-secret-token-1".to_string();
    let dep = new_token(&s, &admin, Scope::Deploy).await;
    add_project(&s, &admin, "web", repo.path()).await;
    green_run(&s, &admin, 1).await;
    let v = settled(&s, &dep, "web", "live", 1).await;
    let v1 = v["running"]["version"].as_str().unwrap().to_string();
    // A crashed instance is started again.
    let inst = &v["supervisor"]["slots"][0]["instances"][0];
    let pid = inst["pid"].as_u64().unwrap() as i32;
    assert!(pid > 1, "{v:#}");
    assert_eq!(inst["restarts"], 0, "{v:#}");
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    until("the instance is started again", || async {
        let v = get_json(&s, "/api/v1/environments/web/live", &dep).await;
        let i = &v["supervisor"]["slots"][0]["instances"][0];
        i["restarts"] == 1 && i["pid"].as_u64().is_some_and(|p| p as i32 != pid)
    })
    .await;
    // v2 stops at 20%, paused; then the server dies.
    repo.commit(&[("app.py", &format!("{}# v2\n", app()))], "v2");
    green_run(&s, &admin, 2).await;
    until("the canary pauses", || async {
        get_json(&s, "/api/v1/environments/web/live", &dep).await["deploying"]["action"] == "paused"
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let url = format!("http://127.0.0.1:{port}/");
        tokio::spawn(async move {
            tls();
            let c = reqwest::Client::builder().no_proxy().build().unwrap();
            let (mut ok, mut failed) = (0u32, 0u32);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s = start(&data, &[("TAKT_ADMIN_TOKEN", "admin-secret-token-1")]);
    // The cut-off deploy is recorded as interrupted, and its traffic goes back to v1.
    let v = settled(&s, &dep, "web", "live", 2).await;
    assert_eq!(v["history"][0]["outcome"], "interrupted", "{v:#}");
    assert_eq!(v["running"]["version"], v1.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = load.await.unwrap();
    assert_eq!(
        failed, 0,
        "{failed} requests failed while the server was down ({ok} ok)"
    );
    assert!(ok > 50, "too little load to tell: {ok}");
    let seen = versions(&format!("http://127.0.0.1:{port}/"), 10).await;
    assert!(seen.iter().all(|x| *x == v1), "{seen:?}");
    // The new server drives the same supervisor: v2 again, and this time it is resumed.
    let v2 = v["history"][0]["artifact"]["version"].as_str().unwrap().to_string();
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/web/live/deploy",
        &dep,
        json!({"artifact": format!("app@{v2}")}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    until("paused again", || async {
        get_json(&s, "/api/v1/environments/web/live", &dep).await["deploying"]["action"] == "paused"
    })
    .await;
    post_json(&s, "/api/v1/environments/web/live/resume", &dep, json!({})).await;
    let v = settled(&s, &dep, "web", "live", 3).await;
    assert_eq!(v["running"]["version"], v2.as_str(), "{v:#}");

    // As after a machine restart: the supervisor and its instances are gone, then the server
    // starts. It starts what the log says runs again (a `restore` deploy).
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let sock = data.join("environments/web/live/supervisor/supervisor.sock");
    std::fs::remove_file(&sock).unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    until("the supervisor stopped", || {
        let url = url.clone();
        async move { client().get(&url).send().await.is_err() }
    })
    .await;
    let s = start(&data, &[("TAKT_ADMIN_TOKEN", "admin-secret-token-1")]);
    let v = settled(&s, &dep, "web", "live", 4).await;
    assert_eq!(v["history"][0]["strategy"], "restore", "{v:#}");
    assert_eq!(v["history"][0]["outcome"], "succeeded", "{v:#}");
    assert_eq!(versions(&url, 4).await, vec![v2.clone(); 4]);
    let _ = std::fs::remove_file(sock);
}

/// Kills a child process when dropped.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_canary_analysis_by_prometheus_query_promotes_or_rolls_back() {
    assert!(
        std::path::Path::new("/usr/bin/prometheus").exists(),
        "prometheus is not installed (.ci/run installs Debian's package)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    // An exporter whose one metric is whatever the file `value` says.
    let exporter_port = free_port();
    std::fs::write(dir.path().join("value"), "0\n").unwrap();
    let _exporter = Child(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import http.server\n\
                 class H(http.server.BaseHTTPRequestHandler):\n\
                 \x20   def do_GET(self):\n\
                 \x20       b = ('canary_error_ratio ' + open('{d}/value').read()).encode()\n\
                 \x20       self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)\n\
                 \x20   def log_message(self, *a): pass\n\
                 http.server.HTTPServer(('127.0.0.1', {exporter_port}), H).serve_forever()\n"
            ))
            .spawn()
            .unwrap(),
    );
    let prom_port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: canary\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
        ),
    )
    .unwrap();
    let _prometheus = Child(
        std::process::Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={d}/prometheus.yml"))
            .arg(format!("--storage.tsdb.path={d}/tsdb"))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    until("prometheus has the metric", || {
        let url = format!("{prom}/api/v1/query?query=canary_error_ratio");
        async move {
            match client().get(&url).send().await {
                Ok(r) => r.text().await.unwrap_or_default().contains("canary_error_ratio"),
                Err(_) => false,
            }
        }
    })
    .await;

    let yml = format!(
        "jobs:\n  build:\n    script: [\"echo $CI_COMMIT_SHA > app\"]\n    artifacts: {{name: app, paths: [app]}}\n\
         environments:\n  live:\n    driver: command\n    deploy: \"true\"\n    strategy:\n      canary:\n        steps:\n\
         \x20         - set_weight: 10\n\
         \x20         - analysis:\n              initial_delay: 2s\n              interval: 1s\n              count: 2\n\
         \x20             metric: {{prometheus: {{url: \"{prom}\", query: canary_error_ratio}}}}\n\
         \x20             success_condition: result < 0.1\n"
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "web", repo.path()).await;
    green_run(&s, &admin, 1).await;
    repo.commit(&[], "two");
    green_run(&s, &admin, 2).await;
    let list = get_json(&s, "/api/v1/artifacts?project=web", &admin).await;
    let (v2, v1) = (
        list["artifacts"][0]["version"].as_str().unwrap().to_string(),
        list["artifacts"][1]["version"].as_str().unwrap().to_string(),
    );
    let deploy = |v: String| {
        let s = &s;
        let admin = admin.clone();
        async move {
            let (st, b) = post_json(
                s,
                "/api/v1/environments/web/live/deploy",
                &admin,
                json!({"artifact": format!("app@{v}")}),
            )
            .await;
            assert_eq!(st, StatusCode::ACCEPTED, "{b}");
        }
    };
    deploy(v1.clone()).await;
    settled(&s, &admin, "web", "live", 1).await;
    // The query answers 0: both measurements succeed, v2 is promoted.
    deploy(v2.clone()).await;
    let v = settled(&s, &admin, "web", "live", 2).await;
    assert_eq!(v["history"][0]["outcome"], "succeeded", "{v:#}");
    let details: Vec<&str> = v["history"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["action"] == "analysis")
        .map(|st| st["detail"].as_str().unwrap())
        .collect();
    assert_eq!(details, ["result=0.0000"; 2], "{v:#}");
    // Now it answers 0.5: the first measurement fails and v1 goes back to v2.
    std::fs::write(dir.path().join("value"), "0.5\n").unwrap();
    deploy(v1.clone()).await;
    let v = settled(&s, &admin, "web", "live", 3).await;
    let d = &v["history"][0];
    assert_eq!(d["outcome"], "rolled_back", "{v:#}");
    assert!(
        d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|st| st["action"] == "analysis" && st["verdict"] == "failed" && st["detail"] == "result=0.5000"),
        "{d:#}"
    );
    assert_eq!(v["running"]["version"], v2.as_str());
}

#[tokio::test]
async fn rolling_blue_green_with_a_preview_port_and_a_canary_with_a_timed_pause_and_an_http_metric() {
    let dir = tempfile::tempdir().unwrap();
    let (roll, bg, preview, can) = (free_port(), free_port(), free_port(), free_port());
    let launch = "    start: exec python3 \"$TAKT_ARTIFACT_PATH\"\n    instances: 2\n";
    let common = format!("{launch}    smoke: [{{http: {{path: /healthz, body: ok}}}}]\n");
    // Blue/green's smoke check and the canary's measurement are the monitoring check `health`,
    // sent to the preview port and to the canary's backend.
    let yml = format!(
        "{JOBS}checks:\n  health:\n    environment: bg\n    http: {{path: /healthz}}\n    interval: 1h\n    conditions: [\"[STATUS] == 200\", \"[BODY] == pat(*ok*)\"]\n\
         environments:\n\
         \x20 roll:\n    port: {roll}\n{common}    strategy: {{rolling: {{batch: 1, pause: 700ms}}}}\n\
         \x20 bg:\n    port: {bg}\n{launch}    smoke: [{{check: health}}]\n    strategy: {{blue_green: {{preview_port: {preview}, keep_old: 1s}}}}\n\
         \x20 can:\n    port: {can}\n{common}    strategy:\n      canary:\n        steps:\n\
         \x20         - set_weight: 50\n          - pause: 1s\n\
         \x20         - analysis: {{count: 2, interval: 100ms, metric: {{check: health}}}}\n"
    );
    let repo = Repo::new(&[("takt.yml", &yml), ("app.py", &app())]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "web", repo.path()).await;
    green_run(&s, &admin, 1).await;
    repo.commit(&[("app.py", &format!("{}# v2\n", app()))], "v2");
    green_run(&s, &admin, 2).await;
    let list = get_json(&s, "/api/v1/artifacts?project=web", &admin).await;
    let (v2, v1) = (
        list["artifacts"][0]["version"].as_str().unwrap().to_string(),
        list["artifacts"][1]["version"].as_str().unwrap().to_string(),
    );
    for env in ["roll", "bg", "can"] {
        for (v, n) in [(&v1, 1), (&v2, 2)] {
            let (st, b) = post_json(
                &s,
                &format!("/api/v1/environments/web/{env}/deploy"),
                &admin,
                json!({"artifact": format!("app@{v}")}),
            )
            .await;
            assert_eq!(st, StatusCode::ACCEPTED, "{b}");
            let v = settled(&s, &admin, "web", env, n).await;
            assert_eq!(v["history"][0]["outcome"], "succeeded", "{env}: {v:#}");
        }
    }
    let steps = |v: &serde_json::Value| -> Vec<String> {
        v["history"][0]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| format!("{} {}", st["action"].as_str().unwrap(), st["weight"]))
            .collect()
    };
    // Rolling, one instance of two at a time: 50%, then 100%, smoke-checked after each batch.
    let v = get_json(&s, "/api/v1/environments/web/roll", &admin).await;
    let st = steps(&v);
    for want in [
        "set_weight 50",
        "smoke batch 1/2 50",
        "set_weight 100",
        "smoke batch 2/2 100",
    ] {
        assert!(st.contains(&want.to_string()), "{want}: {st:?}");
    }
    // The batch's smoke check went through the public address (the proxy's port), and the
    // second batch waited its pause.
    let steps_of = v["history"][0]["steps"].as_array().unwrap();
    let at = |action: &str, w: u64| -> &serde_json::Value {
        steps_of
            .iter()
            .find(|x| x["action"] == action && x["weight"] == w)
            .unwrap()
    };
    let smoke = at("smoke batch 1/2", 50)["detail"].as_str().unwrap_or_default();
    assert!(smoke.contains(&format!(":{roll}/")), "{smoke}");
    let t = |x: &serde_json::Value| takt_model::timefmt::parse_rfc3339(x["at"].as_str().unwrap()).unwrap();
    let waited = t(at("set_weight", 100)) - t(at("smoke batch 1/2", 50));
    assert!(waited.whole_milliseconds() >= 650, "{waited:?}");
    assert_eq!(
        v["supervisor"]["slots"].as_array().unwrap().len(),
        1,
        "the old version is stopped"
    );
    // Blue/green: the idle colour was smoke-checked on the preview port, then took everything;
    // the old colour is stopped after keep_old (1 s).
    let v = get_json(&s, "/api/v1/environments/web/bg", &admin).await;
    let d = &v["history"][0]["steps"];
    assert!(
        d.as_array().unwrap().iter().any(|st| st["action"] == "smoke preview"
            && st["detail"].as_str().unwrap().starts_with(&format!(
                "check `health` at http://127.0.0.1:{preview}/healthz: [STATUS] (200) == 200"
            ))),
        "{d:#}"
    );
    until("the old colour is stopped after keep_old", || async {
        let v = get_json(&s, "/api/v1/environments/web/bg", &admin).await;
        v["supervisor"]["slots"].as_array().map(Vec::len) == Some(1)
    })
    .await;
    // Canary: 50%, a timed pause of 1 s, then two successful http measurements.
    let v = get_json(&s, "/api/v1/environments/web/can", &admin).await;
    let all = v["history"][0]["steps"].as_array().unwrap();
    let at = |action: &str| {
        all.iter()
            .find(|st| st["action"] == action)
            .map(|st| st["at"].as_str().unwrap().to_string())
            .unwrap()
    };
    let (shifted, measured) = (at("set_weight"), at("analysis"));
    let t = |s: &str| takt_model::timefmt::parse_rfc3339(s).unwrap();
    let paused = t(&measured) - t(&shifted);
    assert!(
        paused.whole_milliseconds() >= 999,
        "the pause lasted 1 s: {shifted} → {measured}"
    );
    let verdicts: Vec<&str> = all
        .iter()
        .filter(|st| st["action"] == "analysis")
        .map(|st| st["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["successful", "successful"]);
    // Measured on the canary's own backend, not through the public port.
    let detail = all.iter().find(|st| st["action"] == "analysis").unwrap()["detail"]
        .as_str()
        .unwrap();
    assert!(
        detail.starts_with("check `health` at http://127.0.0.1:") && !detail.contains(&format!(":{can}/")),
        "{detail}"
    );
    for env in ["roll", "bg", "can"] {
        let _ = std::fs::remove_file(
            dir.path()
                .join(format!("data/environments/web/{env}/supervisor/supervisor.sock")),
        );
    }
}

/// `on_restart: continue`: a canary cut off by a restart of the server (killed with -9) goes on
/// where its steps say it was — still paused at 30%, the same deploy, its traffic untouched —
/// and `takt resume` then promotes it; no step before the pause runs again.
#[tokio::test]
async fn with_on_restart_continue_a_canary_goes_on_where_it_was_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yml = format!(
        "{JOBS}environments:\n  live:\n    port: {port}\n    start: exec python3 \"$TAKT_ARTIFACT_PATH\"\n    auto: true\n    on_restart: continue\n    strategy:\n      canary: {{steps: [{{set_weight: 30}}, {{pause: {{}}}}]}}\n"
    );
    let repo = Repo::new(&[("takt.yml", &yml), ("app.py", &app())]);
    let data = dir.path().join("data");
    let env = [("TAKT_ADMIN_TOKEN", "admin-secret-token-1")];
    let mut s = start(&data, &env);
    let admin = "admin-secret-token-1".to_string();
    let dep = new_token(&s, &admin, Scope::Deploy).await;
    add_project(&s, &admin, "web", repo.path()).await;
    green_run(&s, &admin, 1).await;
    let v1 = settled(&s, &dep, "web", "live", 1).await["running"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    repo.commit(&[("app.py", &format!("{}# v2\n", app()))], "v2");
    green_run(&s, &admin, 2).await;
    until("the canary pauses at 30%", || async {
        let v = get_json(&s, "/api/v1/environments/web/live", &dep).await;
        v["deploying"]["action"] == "paused" && v["deploying"]["weight"] == 30
    })
    .await;
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    s = start(&data, &env);
    until("the same deploy is paused again after the restart", || async {
        let v = get_json(&s, "/api/v1/environments/web/live", &dep).await;
        let steps = v["history"][0]["steps"].as_array().cloned().unwrap_or_default();
        let resumed = steps.iter().position(|st| {
            st["action"] == "resumed"
                && st["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("the server restarted"))
        });
        v["deploying"]["deploy"] == 2
            && v["deploying"]["action"] == "paused"
            && resumed.is_some_and(|i| i + 1 < steps.len())
    })
    .await;
    let v = get_json(&s, "/api/v1/environments/web/live", &dep).await;
    assert_eq!(v["deploying"]["weight"], 30, "{v:#}");
    // Its traffic is as it was: both versions answer.
    let seen = versions(&format!("http://127.0.0.1:{port}/"), 10).await;
    let v2 = v["deploying"]["artifact"]["version"].as_str().unwrap().to_string();
    assert!(seen.contains(&v1) && seen.contains(&v2), "{seen:?}");
    post_json(&s, "/api/v1/environments/web/live/resume", &dep, json!({})).await;
    let v = settled(&s, &dep, "web", "live", 2).await;
    assert_eq!(v["history"][0]["outcome"], "succeeded", "{v:#}");
    assert_eq!(v["running"]["version"], v2.as_str(), "{v:#}");
    let steps: Vec<String> = v["history"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| format!("{} {}", st["action"].as_str().unwrap(), st["weight"]))
        .collect();
    assert_eq!(
        steps.iter().filter(|s| *s == "set_weight 30").count(),
        1,
        "nothing before the pause ran again: {steps:?}"
    );
    assert_eq!(steps.iter().filter(|s| s.starts_with("start")).count(), 1, "{steps:?}");
    assert!(steps.contains(&"promote 100".to_string()), "{steps:?}");
    let seen = versions(&format!("http://127.0.0.1:{port}/"), 6).await;
    assert!(seen.iter().all(|x| *x == v2), "{seen:?}");
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let sock = data.join("environments/web/live/supervisor/supervisor.sock");
    let _ = std::fs::remove_file(sock);
}
