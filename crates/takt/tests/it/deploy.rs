//! Deployments end to end, for real: the example service in `examples/deploy` goes commit →
//! pipeline → artifact → auto-deploy to staging (blue/green) → promote to production (canary).
//! A load generator runs during a blue/green switch (no request may fail) and during a bad
//! canary (exactly the canary's share fails — two requests in every ten at 20% — and only until
//! the automatic rollback).

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use takt_server::auth::Scope;

fn example(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../../examples/deploy/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Sequential GETs of `/` until stopped: (status, body) per request, in order.
fn load(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<(u16, String)>> {
    tokio::spawn(async move {
        tls();
        let c = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            match c.get(&url).send().await {
                Ok(r) => {
                    let st = r.status().as_u16();
                    out.push((st, r.text().await.unwrap_or_default()));
                }
                Err(e) => out.push((0, e.to_string())),
            }
        }
        out
    })
}

async fn env_view(s: &Server, token: &str, env: &str) -> Value {
    get_json(s, &format!("/api/v1/environments/shop/{env}"), token).await
}

async fn run_commit(s: &Server, ci: &str, n: u64) {
    let (st, b) = post_json(s, "/api/v1/projects/shop/trigger", ci, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let r = finished_run(s, ci, "shop", n).await;
    assert_eq!(r["status"], "success", "{r:#}");
}

/// `takt ARGS --server … --token …`.
fn cli(s: &Server, token: &str, args: &[&str]) -> std::process::Output {
    takt()
        .args(args)
        .args(["--server", &s.base, "--token", token])
        .output()
        .unwrap()
}

fn body_version(b: &str) -> String {
    b.trim().rsplit(' ').next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_to_staging_to_production_with_blue_green_and_a_canary_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (staging, production) = (free_port(), free_port());
    let yml = example("takt.yml")
        .replace("18081", &staging.to_string())
        .replace("18082", &production.to_string());
    let app = example("app.py");
    let repo = Repo::new(&[("takt.yml", &yml), ("app.py", &app)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let ci = new_token(&s, &admin, Scope::Ci).await;
    let deployer = new_token(&s, &admin, Scope::Deploy).await;
    add_project(&s, &admin, "shop", repo.path()).await;

    // A ci token may not deploy.
    let (st, _) = post_json(&s, "/api/v1/environments/shop/production/promote", &ci, json!({})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // 1. Green run → auto-deploy to staging (its first deploy goes straight to 100%).
    run_commit(&s, &ci, 1).await;
    let v = settled(&s, &deployer, "shop", "staging", 1).await;
    assert_eq!(v["history"][0]["outcome"], "succeeded", "{v:#}");
    assert_eq!(v["healthy"], true);
    let v1 = v["running"]["version"].as_str().unwrap().to_string();
    assert!(v1.starts_with("1-"), "{v1}");
    let body = client()
        .get(format!("http://127.0.0.1:{staging}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), format!("hello from {v1}"));

    // Production requires staging: promote takes v1 there (first deploy: 100% at once).
    let out = cli(&s, &deployer, &["promote", "production"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let v = settled(&s, &deployer, "shop", "production", 1).await;
    assert_eq!(v["running"]["version"], v1.as_str());
    // Deploying what already runs is a no-op that says so.
    let out = cli(&s, &deployer, &["deploy", "production", &format!("app@{v1}")]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already runs"), "{out:?}");

    // 2. A second commit: staging switches blue → green under load without one failure.
    let stop = Arc::new(AtomicBool::new(false));
    let during = load(format!("http://127.0.0.1:{staging}/"), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // (app.py changes: the same bytes would be the same artifact, and deploying that is a no-op.)
    let app2 = format!("{app}# v2\n");
    repo.commit(&[("app.py", &app2)], "v2");
    run_commit(&s, &ci, 2).await;
    let v = settled(&s, &deployer, "shop", "staging", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = during.await.unwrap();
    let v2 = v["running"]["version"].as_str().unwrap().to_string();
    assert!(v2.starts_with("2-"), "{v:#}");
    assert_eq!(v["history"][0]["strategy"], "blue_green");
    let failed: Vec<_> = seen.iter().filter(|(st, _)| *st != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed during the switch: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    let versions: Vec<String> = seen.iter().map(|(_, b)| body_version(b)).collect();
    assert!(
        versions.contains(&v1) && versions.contains(&v2),
        "the load did not span the switch"
    );
    let first_v2 = versions.iter().position(|x| *x == v2).unwrap();
    assert!(
        versions[first_v2..].iter().all(|x| *x == v2),
        "traffic went back and forth"
    );

    // Promote v2 by canary: 20% → analysis (no traffic, nothing fails) → 50% → promoted.
    let out = cli(&s, &deployer, &["promote", "production"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("succeeded"), "{text}");
    let v = settled(&s, &deployer, "shop", "production", 2).await;
    assert_eq!(v["running"]["version"], v2.as_str());
    let steps: Vec<String> = v["history"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            format!(
                "{}:{}:{}",
                st["action"].as_str().unwrap(),
                st["weight"],
                st["verdict"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert!(steps.contains(&"set_weight:20:-".to_string()), "{steps:?}");
    assert!(steps.contains(&"analysis:20:successful".to_string()), "{steps:?}");
    assert!(steps.contains(&"set_weight:50:-".to_string()), "{steps:?}");
    assert!(steps.contains(&"promote:100:successful".to_string()), "{steps:?}");

    // 3. A broken commit passes staging (its smoke check only asks /healthz) …
    repo.commit(
        &[("app.py", &app2.replace("BROKEN = False", "BROKEN = True"))],
        "v3: broken",
    );
    run_commit(&s, &ci, 3).await;
    let v = settled(&s, &deployer, "shop", "staging", 3).await;
    let v3 = v["running"]["version"].as_str().unwrap().to_string();
    assert!(v3.starts_with("3-"), "{v:#}");

    // … and production's canary catches it at its first analysis and rolls back.
    let stop = Arc::new(AtomicBool::new(false));
    let during = load(format!("http://127.0.0.1:{production}/"), stop.clone());
    let out = cli(&s, &deployer, &["promote", "production"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("rolled_back"), "{text}");
    let v = settled(&s, &deployer, "shop", "production", 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = during.await.unwrap();
    assert_eq!(v["running"]["version"], v2.as_str(), "{v:#}");
    let d = &v["history"][0];
    assert_eq!(d["outcome"], "rolled_back");
    assert!(
        d["reason"].as_str().unwrap().contains("analysis at step 2 failed"),
        "{d:#}"
    );
    // The rollback opened an incident: caused by this deploy, over once v2 ran again; the
    // deploy heads its suspects, with the commit it shipped.
    let this = format!("shop/production#{}", d["deploy"]);
    let list = get_json(&s, "/api/v1/incidents?project=shop&all=true", &deployer).await;
    let i = &list["incidents"][0];
    assert_eq!(
        (&i["trigger"], &i["status"], &i["auto_resolved"], &i["severity"]),
        (&json!("analysis"), &json!("resolved"), &json!(true), &json!("major")),
        "{list:#}"
    );
    assert_eq!(i["cause"], this.as_str(), "{i:#}");
    let open = get_json(&s, "/api/v1/incidents?project=shop", &deployer).await;
    assert_eq!(
        open["incidents"],
        json!([]),
        "resolved ones are listed with all=true only"
    );
    let id = i["id"].as_str().unwrap();
    let n = id.rsplit('#').next().unwrap();
    let detail = get_json(&s, &format!("/api/v1/projects/shop/incidents/{n}"), &deployer).await;
    assert_eq!(detail["suspects"][0]["deployment"], this.as_str(), "{detail:#}");
    assert_eq!(
        detail["suspects"][0]["commits"][0]["subject"], "v3: broken",
        "{detail:#}"
    );
    assert!(
        d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|st| st["action"] == "analysis" && st["verdict"] == "failed"),
        "{d:#}"
    );
    // Exactly the canary's share failed: at 20% (two instances of each version), two requests
    // in every ten, and only v3's.
    let fails: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, (st, _))| *st != 200)
        .map(|(i, _)| i)
        .collect();
    assert!(
        fails.len() >= 3,
        "the canary got too little traffic to judge: {} failures of {}: {d:#}",
        fails.len(),
        seen.len()
    );
    assert!(
        fails.windows(3).all(|w| w[2] - w[0] == 10),
        "not two failures in every ten requests: {fails:?}"
    );
    assert!(
        fails
            .iter()
            .all(|i| seen[*i].0 == 500 && body_version(&seen[*i].1) == v3)
    );
    // … and only until the rollback: everything after the last failure is v2 and fine.
    let last = *fails.last().unwrap();
    assert!(seen.len() - last > 20, "too little load after the rollback to tell");
    assert!(
        seen[last + 1..]
            .iter()
            .all(|(st, b)| *st == 200 && body_version(b) == v2)
    );

    // The andon cord: halt blocks deploys until resume; `env ls` shows it.
    let out = cli(&s, &deployer, &["halt", "shop/production", "--reason", "incident 42"]);
    assert!(out.status.success(), "{out:?}");
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/shop/production/deploy",
        &deployer,
        json!({"artifact": format!("app@{v3}")}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert!(b["error"].as_str().unwrap().contains("halted (incident 42)"), "{b}");
    let out = cli(&s, &deployer, &["env", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("halted: incident 42"), "{text}");
    // Rollback still works while halted: back to v1, skipping analysis.
    let out = cli(&s, &deployer, &["rollback", "production"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let v = settled(&s, &deployer, "shop", "production", 4).await;
    assert_eq!(v["running"]["version"], v1.as_str(), "{v:#}");
    assert_eq!(v["history"][0]["strategy"], "rollback");
    let out = cli(&s, &deployer, &["resume", "production"]);
    assert!(out.status.success());
    assert!(env_view(&s, &deployer, "production").await["halted"].is_null());

    // Every deployment is in the log with its commit range and trigger.
    let events = get_json(&s, "/api/v1/events?kind=deploy_started&project=shop", &admin).await;
    let started = events["events"].as_array().unwrap();
    assert_eq!(started.len(), 7, "{events:#}");
    let auto = &started[0];
    assert_eq!(auto["trigger"]["pipeline"]["run"], 1, "{auto:#}");
    assert_eq!(auto["commits"].as_array().unwrap().len(), 1);
    let promoted_v2 = started
        .iter()
        .find(|e| e["environment"] == "production" && e["artifact"]["version"] == v2.as_str())
        .unwrap();
    assert_eq!(promoted_v2["commits"].as_array().unwrap().len(), 1, "{promoted_v2:#}");
    assert_eq!(promoted_v2["previous"]["version"], v1.as_str());

    // A supervisor killed -9 (what a machine restart or the OOM killer does) is noticed at once
    // and what ran there restored, recorded as a deploy with the reason.
    let before = env_view(&s, &deployer, "staging").await;
    let pid = before["supervisor"]["pid"].as_u64().unwrap();
    let running = before["running"]["version"].as_str().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    until("the watchdog restored staging", || async {
        let v = env_view(&s, &deployer, "staging").await;
        v["history"][0]["trigger"]["automatic"]["reason"] == "its supervisor stopped unexpectedly"
            && v["history"][0]["outcome"] == "succeeded"
            && v["supervisor"]["pid"].as_u64().is_some_and(|p| p != pid)
    })
    .await;
    let v = env_view(&s, &deployer, "staging").await;
    assert_eq!(v["running"]["version"], running.as_str(), "{v:#}");
    let body = client()
        .get(format!("http://127.0.0.1:{staging}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.trim().ends_with(&running),
        "staging serves {running} again: {body}"
    );

    // `takt env stop` retires both: supervisor, instances and proxy gone, the ports closed.
    for (env, port) in [("staging", staging), ("production", production)] {
        let out = cli(&s, &deployer, &["env", "stop", env]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("supervisor, instances and proxy stopped"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        until("the port is closed", || async move {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        })
        .await;
        let sock = dir
            .path()
            .join(format!("data/environments/shop/{env}/supervisor/supervisor.sock"));
        assert!(
            std::os::unix::net::UnixStream::connect(&sock).is_err(),
            "the supervisor of {env} still answers"
        );
        assert!(env_view(&s, &deployer, env).await["running"].is_null());
    }
}
