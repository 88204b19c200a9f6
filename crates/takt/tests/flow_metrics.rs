//! Flow metrics for real: a commit built by the server, deployed to staging automatically and
//! promoted to production; `takt metrics` reports production only (what nothing requires),
//! with the commit's lead time and the bottleneck, and refuses a window it cannot read.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

mod common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use serde_json::json;

fn cli(s: &Server, token: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = takt()
        .args(args)
        .args(["--server", &s.base, "--token", token])
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn a_promoted_commit_shows_in_the_production_keys() {
    let dir = tempfile::tempdir().unwrap();
    let env = |name: &str, extra: &str| format!("  {name}:\n    driver: command\n    deploy: \"true\"\n{extra}");
    let yml = format!(
        "jobs:\n  build:\n    script: [\"echo $CI_COMMIT_SHA > app\"]\n    artifacts: {{name: app, paths: [app]}}\n  test:\n    stage: test\n    script: [\"sleep 0.3\"]\nenvironments:\n{}{}",
        env("staging", "    auto: true\n"),
        env("production", "    requires: [staging]\n"),
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "app", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/app/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    finished_run(&s, &admin, "app", 1).await;
    settled(&s, &admin, "app", "staging", 1).await;
    let (st, b) = post_json(&s, "/api/v1/environments/app/production/promote", &admin, json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let v = settled(&s, &admin, "app", "production", 1).await;
    assert_eq!(v["history"][0]["outcome"], "succeeded", "{v:#}");

    let reader = new_token(&s, &admin, takt_server::auth::Scope::Read).await;
    let (code, out, err) = cli(&s, &reader, &["metrics", "--project", "app", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let m: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(m["environments"], json!(["app/production"]), "{m:#}");
    let d = &m["dora"];
    assert_eq!(d["deployment_frequency"]["deployments"], 1, "{m:#}");
    assert_eq!(d["deployment_frequency"]["bucket"], "weekly", "one in 30 days: {m:#}");
    // The repository's one commit, shipped by the promotion.
    let lead = &d["change_lead_time"]["total"];
    assert_eq!(lead["sample"], 1, "{m:#}");
    assert!(lead["p50"].as_f64().unwrap() > 0.0, "{m:#}");
    assert_eq!(d["change_fail_rate"]["of"], 1, "{m:#}");
    assert_eq!(d["change_fail_rate"]["count"], 0, "{m:#}");
    assert_eq!(m["previous"]["deployment_frequency"]["deployments"], 0, "{m:#}");
    let parts: Vec<&str> = m["bottleneck"]["shares"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["part"]["name"].as_str())
        .collect();
    assert!(
        parts.contains(&"test"),
        "the run's test stage is a part of lead time: {m:#}"
    );
    assert_eq!(m["bottleneck"]["commits"], 1, "{m:#}");

    let (code, out, err) = cli(&s, &reader, &["metrics", "--project", "app"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Flow of app/production, the last 30d"), "{out}");
    assert!(
        out.contains("deployment frequency") && out.contains("0.2/week (weekly)"),
        "{out}"
    );
    assert!(
        out.contains("- (too few)"),
        "one deployment is too few for a band: {out}"
    );
    assert!(out.contains("Bottleneck: "), "{out}");

    // Staging, asked for by name.
    let (_, out, _) = cli(
        &s,
        &reader,
        &["metrics", "--project", "app", "--env", "staging", "--json"],
    );
    let m: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(m["environments"], json!(["app/staging"]), "{m:#}");

    for (args, says) in [
        (&["metrics", "--since", "soon"][..], "`since` must be a duration"),
        (&["metrics", "--project", "nope"], "nope"),
    ] {
        let (code, _, err) = cli(&s, &reader, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
