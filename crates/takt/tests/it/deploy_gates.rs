//! Deployment gates and the command driver, for real: the user's deploy script gets a verified
//! read-only copy of the artifact; `requires`, `soak`, freeze windows, manual approval, one
//! deploy per environment, an indefinite canary pause, and a rollback whose smoke checks fail
//! (the environment is halted and an incident opened).

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use takt_server::auth::Scope;

fn config(dir: &std::path::Path) -> String {
    let script = dir.join("deploy.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         echo \"$TAKT_ENVIRONMENT $TAKT_DEPLOY_STEP $TAKT_TRAFFIC_WEIGHT $TAKT_ARTIFACT_VERSION $(stat -c %a \"$TAKT_ARTIFACT_PATH\") $(sha256sum < \"$TAKT_ARTIFACT_PATH\" | cut -c1-64) $GREETING\" >> \"$LOG\"\n",
    )
    .unwrap();
    let (log, flag) = (dir.join("log"), dir.join("broken"));
    let env = |name: &str, extra: &str| {
        format!(
            "  {name}:\n    driver: command\n    deploy: sh {}\n    variables: {{LOG: {}, GREETING: hello}}\n    smoke:\n      - command: test ! -f {}\n{extra}",
            script.display(),
            log.display(),
            flag.display()
        )
    };
    format!(
        "retention: {{keep_last: 1}}\njobs:\n  build:\n    script: [\"echo $CI_COMMIT_SHA > app\"]\n    artifacts: {{name: app, paths: [app]}}\nenvironments:\n{}{}{}{}{}{}{}",
        env("stage", "    auto: true\n"),
        env(
            "prod",
            "    requires: [stage]\n    approval: manual\n    protected: [deploy-bot]\n"
        ),
        env("soaked", "    requires: [stage]\n    soak: 1h\n"),
        env(
            "frozen",
            "    requires: [stage]\n    freeze:\n      - {cron: \"* * * * *\", duration: 1h, timezone: Europe/Berlin}\n"
        ),
        env(
            "canary",
            "    strategy:\n      canary: {steps: [{set_weight: 50}, {pause: {}}]}\n"
        ),
        env("careful", "    on_failure: pause\n"),
        env(
            "measured",
            &format!(
                "    strategy:\n      canary:\n        steps:\n          - set_weight: 30\n          - analysis: {{interval: 50ms, count: 3, metric: {{command: test ! -f {}}}}}\n",
                dir.join("bad-metric").display()
            )
        ),
    )
}

async fn events(s: &Server, token: &str, kind: &str) -> Vec<Value> {
    get_json(s, &format!("/api/v1/events?kind={kind}"), token).await["events"]
        .as_array()
        .unwrap()
        .clone()
}

async fn view(s: &Server, token: &str, env: &str) -> Value {
    get_json(s, &format!("/api/v1/environments/app/{env}"), token).await
}

async fn deploy(s: &Server, token: &str, env: &str, what: &str) -> (StatusCode, Value) {
    post_json(s, &format!("/api/v1/environments/app/{env}/{what}"), token, json!({})).await
}

#[tokio::test]
async fn gates_approval_pause_and_a_failed_rollback_with_the_command_driver() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(&[("takt.yml", &config(dir.path()))]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    let ci = new_token(&s, &admin, Scope::Ci).await;
    let dep = new_token(&s, &admin, Scope::Deploy).await;
    add_project(&s, &admin, "app", repo.path()).await;
    let log = dir.path().join("log");
    // A deploy token for stage only, made with the CLI; `takt token ls` shows its limits.
    let (code, out, err) = cli(
        &s,
        &admin,
        &[
            "token",
            "create",
            "--scope",
            "deploy",
            "--name",
            "stager",
            "--project",
            "app",
            "--env",
            "stage",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let stager = serde_json::from_str::<Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, ls, _) = cli(&s, &admin, &["token", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.contains("stager") && l.contains("projects app; environments stage")),
        "{ls}"
    );

    // Green run 1 → stage; the script got a read-only (555) copy whose bytes are the artifact's.
    let (st, b) = post_json(&s, "/api/v1/projects/app/trigger", &ci, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    finished_run(&s, &ci, "app", 1).await;
    let v = settled(&s, &dep, "app", "stage", 1).await;
    let v1 = v["running"]["version"].as_str().unwrap().to_string();
    assert_eq!(view(&s, &stager, "stage").await["running"]["version"], v1.as_str());
    let (st, b) = deploy(&s, &stager, "prod", "promote").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("token `stager` is limited to environments stage, not `prod`"),
        "{b}"
    );
    let digest = v["running"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        lines,
        format!("stage start 0 {v1} 555 {digest} hello\nstage route 100 {v1} 555 {digest} hello\n")
    );

    // Run 2 → stage runs v2. prod requires what it deploys to run healthy in stage first.
    repo.commit(&[], "two");
    post_json(&s, "/api/v1/projects/app/trigger", &ci, json!({"rev": "main"})).await;
    finished_run(&s, &ci, "app", 2).await;
    let v = settled(&s, &dep, "app", "stage", 2).await;
    let v2 = v["running"]["version"].as_str().unwrap().to_string();
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/app/prod/deploy",
        &dep,
        json!({"artifact": format!("app@{v1}")}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains(&format!(
            "requires app@{v1} to run healthy in `stage` first (it runs app@{v2} there)"
        )),
        "{b}"
    );
    let (st, b) = deploy(&s, &dep, "soaked", "promote").await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("to soak in `stage` for 3600s"),
        "{b}"
    );
    let (st, b) = deploy(&s, &dep, "frozen", "promote").await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert!(b["error"].as_str().unwrap().contains("is frozen until"), "{b}");
    // A gate's refusal is not bad input: the CLI exits 1 with the reason (it exited 2).
    let out = takt()
        .args(["promote", "frozen", "--server", &s.base, "--token", &dep])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is frozen until"),
        "{out:?}"
    );
    assert!(!view(&s, &dep, "frozen").await["frozen_until"].is_null());
    // `takt env ls` says what holds each environment (a frozen one showed as `empty`).
    let env_ls = || {
        let out = takt()
            .args(["env", "ls", "--server", &s.base, "--token", &dep])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ls = env_ls();
    assert!(
        ls.lines().any(|l| l.contains("frozen") && l.contains("frozen until ")),
        "{ls}"
    );

    // prod is protected: a deploy token it does not name may halt it (anyone may pull the
    // andon cord), and nothing else.
    let (st, b) = post_json(
        &s,
        "/api/v1/tokens",
        &admin,
        json!({"name": "intern", "scope": "deploy"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let intern = b["token"].as_str().unwrap().to_string();
    for what in ["promote", "approve", "rollback", "resume", "stop"] {
        let (st, b) = deploy(&s, &intern, "prod", what).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{what}: {b}");
        assert!(
            b["error"]
                .as_str()
                .unwrap()
                .contains("environment `prod` is protected: only tokens named deploy-bot may"),
            "{what}: {b}"
        );
    }
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/app/prod/halt",
        &intern,
        json!({"reason": "looks wrong"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, b) = deploy(&s, &dep, "prod", "resume").await;
    assert_eq!(st, StatusCode::OK, "{b}");

    // prod needs approval: the deploy waits, a second request is refused, approve lets it go.
    let (st, b) = deploy(&s, &dep, "prod", "promote").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    until("prod waits for approval", || async {
        view(&s, &dep, "prod").await["deploying"]["waiting_for_approval"] == true
    })
    .await;
    // It showed as `deploying`.
    let ls = env_ls();
    assert!(
        ls.lines()
            .any(|l| l.contains("prod") && l.contains("awaiting approval: deploy #1 app@")),
        "{ls}"
    );
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/app/prod/deploy",
        &dep,
        json!({"artifact": format!("app@{v2}")}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert!(b["error"].as_str().unwrap().contains("is busy with deploy #1"), "{b}");
    // A halt stops the wait for approval at once and refuses `takt approve` until `takt resume`.
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/app/prod/halt",
        &dep,
        json!({"reason": "hold on"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    until("the wait for approval is halted", || async {
        let v = view(&s, &dep, "prod").await;
        v["deploying"]["action"] == "halted" && v["deploying"]["waiting_for_approval"] == false
    })
    .await;
    let (st, b) = deploy(&s, &dep, "prod", "approve").await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert!(b["error"].as_str().unwrap().contains("is halted (hold on)"), "{b}");
    let (st, b) = deploy(&s, &dep, "prod", "resume").await;
    assert_eq!(st, StatusCode::OK, "{b}");
    until("prod waits for approval again", || async {
        view(&s, &dep, "prod").await["deploying"]["waiting_for_approval"] == true
    })
    .await;
    // `takt approve` follows the deploy it let go to its end (it returned at once before).
    let out = takt()
        .args(["approve", "prod", "--server", &s.base, "--token", &dep])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("deploy #1 approved"), "{text}");
    assert!(
        text.contains("deploy #1: succeeded"),
        "approve follows the deploy: {text}"
    );
    let v = view(&s, &dep, "prod").await;
    assert!(v["deploying"].is_null(), "it had ended when approve returned: {v:#}");
    let v = settled(&s, &dep, "app", "prod", 1).await;
    assert_eq!(v["running"]["version"], v2.as_str());
    assert_eq!(v["history"][0]["outcome"], "succeeded");
    let (st, _) = deploy(&s, &dep, "prod", "approve").await;
    assert_eq!(st, StatusCode::CONFLICT, "nothing waits for approval now");

    // A canary with an indefinite pause stops there until `takt resume`.
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/app/canary/deploy",
        &dep,
        json!({"artifact": format!("app@{v1}")}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    settled(&s, &dep, "app", "canary", 1).await;
    let out = takt()
        .args([
            "deploy",
            "canary",
            &format!("app@{v2}"),
            "--server",
            &s.base,
            "--token",
            &dep,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("is paused"), "{text}");
    let v = view(&s, &dep, "canary").await;
    assert_eq!(v["deploying"]["weight"], 50, "{v:#}");
    let out = takt()
        .args(["resume", "canary", "--server", &s.base, "--token", &dep])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = settled(&s, &dep, "app", "canary", 2).await;
    assert_eq!(v["running"]["version"], v2.as_str());
    assert_eq!(v["history"][0]["outcome"], "succeeded");

    // Run 3 with every smoke check failing: stage rolls back to v2, whose checks fail too, so
    // stage is halted and an incident opened; nothing further happens automatically.
    std::fs::write(dir.path().join("broken"), "").unwrap();
    repo.commit(&[], "three");
    post_json(&s, "/api/v1/projects/app/trigger", &ci, json!({"rev": "main"})).await;
    finished_run(&s, &ci, "app", 3).await;
    let v = settled(&s, &dep, "app", "stage", 3).await;
    let d = &v["history"][0];
    assert_eq!(d["outcome"], "rollback_failed", "{v:#}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("the smoke checks failed after the rollback"),
        "{d:#}"
    );
    assert_eq!(v["running"]["version"], v2.as_str());
    assert!(
        v["halted"]["reason"].as_str().unwrap().contains("smoke checks failed"),
        "{v:#}"
    );
    let inc = get_json(&s, "/api/v1/incidents?project=app", &admin).await;
    let i = &inc["incidents"][0];
    assert_eq!(
        (&i["environment"], &i["trigger"], &i["status"]),
        (&json!("stage"), &json!("rollback_failed"), &json!("investigating")),
        "a failed rollback's incident stays open for a person: {inc:#}"
    );
    assert_eq!(i["cause"], format!("app/stage#{}", d["deploy"]), "{i:#}");
    // Halted: no new deploy until resumed.
    std::fs::remove_file(dir.path().join("broken")).unwrap();
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/app/stage/deploy",
        &dep,
        json!({"artifact": format!("app@{v1}")}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");

    // on_failure: pause — a failed check stops the deploy where it is; a person rolls back.
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/app/careful/deploy",
        &dep,
        json!({"artifact": format!("app@{v1}")}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    settled(&s, &dep, "app", "careful", 1).await;
    std::fs::write(dir.path().join("broken"), "").unwrap();
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/app/careful/deploy",
        &dep,
        json!({"artifact": format!("app@{v2}")}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    until("the failed deploy pauses", || async {
        view(&s, &dep, "careful").await["deploying"]["action"] == "paused"
    })
    .await;
    assert_eq!(view(&s, &dep, "careful").await["deploying"]["weight"], 100);
    std::fs::remove_file(dir.path().join("broken")).unwrap();
    let out = takt()
        .args(["rollback", "careful", "--server", &s.base, "--token", &dep])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v = settled(&s, &dep, "app", "careful", 2).await;
    assert_eq!(v["history"][0]["outcome"], "rolled_back", "{v:#}");
    assert_eq!(v["running"]["version"], v1.as_str());

    // A canary analysis by command: successful measurements promote; a failing one rolls back.
    for (artifact, n) in [(&v1, 1), (&v2, 2)] {
        let (st, b) = post_json(
            &s,
            "/api/v1/environments/app/measured/deploy",
            &dep,
            json!({"artifact": format!("app@{artifact}")}),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{b}");
        let v = settled(&s, &dep, "app", "measured", n).await;
        assert_eq!(v["history"][0]["outcome"], "succeeded", "{v:#}");
    }
    let d = &settled(&s, &dep, "app", "measured", 2).await["history"][0];
    let verdicts: Vec<&str> = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["action"] == "analysis")
        .map(|st| st["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["successful"; 3], "{d:#}");
    std::fs::write(dir.path().join("bad-metric"), "").unwrap();
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/app/measured/deploy",
        &dep,
        json!({"artifact": format!("app@{v1}")}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let v = settled(&s, &dep, "app", "measured", 3).await;
    assert_eq!(v["history"][0]["outcome"], "rolled_back", "{v:#}");
    assert_eq!(v["running"]["version"], v2.as_str());
    assert!(
        v["history"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("analysis at step 2 failed")
    );

    // Retention keeps what environments run (v2: stage, prod, canary; v1: careful) although
    // `keep_last: 1` alone would delete both; v3 is the newest.
    let (st, gc) = post_json(&s, "/api/v1/artifacts/gc", &admin, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{gc}");
    assert_eq!(gc["artifacts"], json!([]), "{gc:#}");

    // Bad input: unknown environment, malformed artifact, missing reason, unknown field.
    let (st, b) = deploy(&s, &dep, "nowhere", "promote").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("it has: stage, prod, soaked, frozen, canary, careful, measured"),
        "{b}"
    );
    let (st, _) = post_json(
        &s,
        "/api/v1/environments/app/prod/deploy",
        &dep,
        json!({"artifact": "app"}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = post_json(&s, "/api/v1/environments/app/prod/halt", &dep, json!({})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = post_json(
        &s,
        "/api/v1/environments/app/prod/deploy",
        &dep,
        json!({"artfact": "x@1"}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

/// `takt env stop` retires an environment: the command driver's `stop` runs, the environment
/// shows `stopped`, it no longer satisfies `requires`, and the next deploy starts it again.
#[tokio::test]
async fn env_stop_retires_an_environment_until_the_next_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("deploy.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"$TAKT_DEPLOY_STEP $TAKT_ARTIFACT_VERSION\" >> \"$LOG\"\n",
    )
    .unwrap();
    let log = dir.path().join("log");
    let env = |name: &str, extra: &str| {
        format!(
            "  {name}:\n    driver: command\n    deploy: sh {}\n    variables: {{LOG: {}}}\n{extra}",
            script.display(),
            log.display()
        )
    };
    let yml = format!(
        "jobs:\n  build:\n    script: [\"echo $CI_COMMIT_SHA > app\"]\n    artifacts: {{name: app, paths: [app]}}\nenvironments:\n{}{}",
        env("stage", "    auto: true\n"),
        env("prod", "    requires: [stage]\n")
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "app", repo.path()).await;
    post_json(&s, "/api/v1/projects/app/trigger", &admin, json!({})).await;
    finished_run(&s, &admin, "app", 1).await;
    let v = settled(&s, &admin, "app", "stage", 1).await;
    let version = v["running"]["version"].as_str().unwrap().to_string();

    let cli = |args: &[&str]| {
        let mut c = takt();
        c.args(args).args(["--server", &s.base, "--token", &admin]);
        c.output().unwrap()
    };
    // Bad input: an environment nobody defines is 404 (exit 2), and nothing is recorded.
    let out = cli(&["env", "stop", "app/nowhere"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nowhere"), "{}", stderr(&out));
    assert!(events(&s, &admin, "environment_stopped").await.is_empty());
    let out = cli(&["env", "stop", "stage"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("app/stage: stopped (the deploy script stopped app@"),
        "{text}"
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(lines.ends_with(&format!("stop {version}\n")), "{lines}");
    let v = view(&s, &admin, "stage").await;
    assert!(
        v["running"].is_null() && v["healthy"] == false && v["stopped"].is_object(),
        "{v:#}"
    );
    let ls = cli(&["env", "ls"]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.lines().any(|l| l.contains("stage") && l.contains("stopped")), "{ls}");
    // It no longer satisfies `requires`.
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/app/prod/deploy",
        &admin,
        json!({"artifact": format!("app@{version}")}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert!(b["error"].as_str().unwrap().contains("(it runs nothing there)"), "{b}");
    // The next deploy starts it again.
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/app/stage/deploy",
        &admin,
        json!({"artifact": format!("app@{version}")}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    until("stage runs again", || async {
        let v = view(&s, &admin, "stage").await;
        v["healthy"] == true && v["stopped"].is_null()
    })
    .await;
    let st = post_json(
        &s,
        "/api/v1/environments/app/prod/deploy",
        &admin,
        json!({"artifact": format!("app@{version}")}),
    )
    .await
    .0;
    assert_eq!(st, StatusCode::ACCEPTED);
}

/// A halt stops a deploy's clock: halted longer than `progress_deadline`, a canary still
/// promotes after `takt resume` (it was rolled back for a deadline it never ran into).
#[tokio::test]
async fn a_halt_never_counts_toward_the_progress_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("deploy.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let yml = format!(
        "jobs:\n  build:\n    script: [\"echo $CI_COMMIT_SHA > app\"]\n    artifacts: {{name: app, paths: [app]}}\nenvironments:\n  web:\n    driver: command\n    deploy: sh {}\n    strategy:\n      canary: {{steps: [{{set_weight: 50}}, {{pause: 1s}}], progress_deadline: 2s}}\n",
        script.display()
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "app", repo.path()).await;
    for n in 1..=2u64 {
        if n == 2 {
            repo.commit(&[], "two");
        }
        post_json(
            &s,
            "/api/v1/projects/app/trigger",
            &admin,
            json!({"rev": "main", "force": true}),
        )
        .await;
        let run = finished_run(&s, &admin, "app", n).await;
        assert_eq!(run["status"], "success", "{run:#}");
    }
    let versions: Vec<String> = get_json(&s, "/api/v1/artifacts?project=app", &admin).await["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["version"].as_str().unwrap().to_string())
        .collect();
    // The first deploy goes straight to 100%; the second is a canary.
    for (n, v) in [(1, &versions[1]), (2, &versions[0])] {
        let (st, b) = post_json(
            &s,
            "/api/v1/environments/app/web/deploy",
            &admin,
            json!({"artifact": format!("app@{v}")}),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{b}");
        if n == 1 {
            settled(&s, &admin, "app", "web", 1).await;
        }
    }
    until("the canary is in its pause", || async {
        view(&s, &admin, "web").await["deploying"]["weight"] == 50
    })
    .await;
    let (st, b) = post_json(
        &s,
        "/api/v1/environments/app/web/halt",
        &admin,
        json!({"reason": "look"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await; // past the 2 s deadline
    let (st, b) = deploy(&s, &admin, "web", "resume").await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let v = settled(&s, &admin, "app", "web", 2).await;
    assert_eq!(v["history"][0]["outcome"], "succeeded", "{:#}", v["history"][0]);
    assert_eq!(v["running"]["version"], versions[0].as_str());
}

/// Blue/green's keep-old on the command driver ends with the deploy script's `stop` of the old
/// colour (it used to start a supervisor instead).
#[tokio::test]
async fn blue_green_keep_old_runs_the_command_drivers_stop() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("deploy.sh");
    let log = dir.path().join("log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$TAKT_DEPLOY_STEP $TAKT_ARTIFACT_VERSION\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    let yml = format!(
        "jobs:\n  build:\n    script: [\"echo $CI_COMMIT_SHA > app\"]\n    artifacts: {{name: app, paths: [app]}}\nenvironments:\n  web:\n    driver: command\n    deploy: sh {}\n    auto: true\n    strategy:\n      blue_green: {{keep_old: 1s}}\n",
        script.display()
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "app", repo.path()).await;
    post_json(&s, "/api/v1/projects/app/trigger", &admin, json!({})).await;
    finished_run(&s, &admin, "app", 1).await;
    let v1 = settled(&s, &admin, "app", "web", 1).await["running"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    repo.commit(&[], "two");
    post_json(&s, "/api/v1/projects/app/trigger", &admin, json!({})).await;
    finished_run(&s, &admin, "app", 2).await;
    settled(&s, &admin, "app", "web", 2).await;
    until("the old colour is stopped by the script", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&format!("stop {v1}\n"))
    })
    .await;
    assert!(
        !dir.path().join("data/environments/app/web/supervisor").exists(),
        "a supervisor was started for a command-driver environment"
    );
}
