//! Flow metrics for real: a commit built by the server, deployed to staging automatically and
//! promoted to production; `takt metrics` reports production only (what nothing requires),
//! with the commit's lead time and the bottleneck, and refuses a window it cannot read.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_promoted_commit_shows_in_the_production_keys() {
    let dir = tempfile::tempdir().unwrap();
    let env = |name: &str, extra: &str| format!("  {name}:\n    driver: command\n    deploy: \"true\"\n{extra}");
    let yml = format!(
        "jobs:\n  build:\n    script: [\"echo $CI_COMMIT_SHA > app\"]\n    artifacts: {{name: app, paths: [app]}}\n  test:\n    stage: test\n    needs: [build]\n    script: [\"sleep 0.5\"]\nenvironments:\n{}{}",
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
    // The run's page: its critical path, build then the test that needed it (the longest).
    let (code, out, err) = cli(&s, &admin, &["runs", "show", "app", "1", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    let steps: Vec<&str> = run["critical_path"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["job"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["build", "test"], "{run:#}");
    assert_eq!(run["critical_path"]["shorten"], "test", "{run:#}");
    let (_, out, _) = cli(&s, &admin, &["runs", "show", "app", "1"]);
    assert!(
        out.contains("critical path: build (") && out.contains("`test` would shorten the run most"),
        "{out}"
    );
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
    // `test` needs `build`: the path is both, and `test` (it sleeps) the longest on it.
    let run = &m["paths"]["recent"][0];
    assert_eq!(
        (&run["path"], &run["shorten"]),
        (&json!(["build", "test"]), &json!("test")),
        "{m:#}"
    );
    // One run of a few seconds, within the default budget of 5 minutes.
    assert_eq!(
        (&m["coffee"]["runs"], &m["coffee"]["within"], &m["coffee"]["share"]),
        (&json!(1), &json!(1), &json!(1.0)),
        "{m:#}"
    );

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
    assert!(
        out.contains("Coffee test: 100% of runs within their budget (1 of 1)."),
        "{out}"
    );
    assert!(out.contains("Flow efficiency: runs "), "{out}");

    // The same figures as gauges in /metrics.
    let text = get_text(&s, "/metrics", &admin).await;
    let sample = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{project=\"app\"}} ")))
            .map(|v| v.parse::<f64>().unwrap())
    };
    assert!(
        (sample("takt_flow_deployments_per_day").unwrap() - 1.0 / 30.0).abs() < 1e-9,
        "{text}"
    );
    assert_eq!(sample("takt_flow_change_fail_rate"), Some(0.0), "{text}");
    assert_eq!(sample("takt_flow_runs_within_budget_ratio"), Some(1.0), "{text}");
    assert!(sample("takt_flow_lead_time_p50_seconds").unwrap() > 0.0, "{text}");
    assert_eq!(
        sample("takt_flow_recovery_time_p50_seconds"),
        None,
        "no failure, no sample: {text}"
    );
    assert!(text.contains("# TYPE takt_flow_rework_rate gauge"), "{text}");

    // A fix: `--fixes` names the incident it fixes (resolved by then: only the flag says so).
    for args in [
        &["incident", "open", "app", "production", "checkout fails"][..],
        &["incident", "resolve", "app#1"],
    ] {
        let (code, out, err) = cli(&s, &admin, args);
        assert_eq!(code, Some(0), "{args:?}: {out}{err}");
    }
    for (fixes, says) in [
        ("app", "is an incident id such as app#3"),
        ("app#9", "no incident app#9"),
    ] {
        let (code, _, err) = cli(&s, &admin, &["promote", "production", "--fixes", fixes]);
        assert_eq!(code, Some(2), "{fixes}: {err}");
        assert!(err.contains(says), "{fixes}: {err}");
    }
    repo.commit(&[("fix.txt", "1")], "the fix");
    post_json(&s, "/api/v1/projects/app/trigger", &admin, json!({"rev": "main"})).await;
    finished_run(&s, &admin, "app", 2).await;
    settled(&s, &admin, "app", "staging", 2).await;
    let (code, out, err) = cli(&s, &admin, &["promote", "production", "--fixes", "app#1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let started = get_json(&s, "/api/v1/events?kind=deploy_started", &admin).await;
    let last = started["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["environment"], &last["fixes"]),
        (&json!("production"), &json!("app#1")),
        "{last:#}"
    );
    let (_, out, _) = cli(&s, &reader, &["metrics", "--project", "app", "--json"]);
    let m: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rework = &m["dora"]["rework_rate"];
    assert_eq!(rework["deployments"], json!(["app/production#2"]), "{m:#}");
    // The deploy it followed needed a fix: it failed.
    assert_eq!(
        m["dora"]["change_fail_rate"]["deployments"],
        json!(["app/production#1"]),
        "{m:#}"
    );

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

/// A test case that fails, then passes on the job's retry, on one commit: `takt flaky` lists
/// it (and not its steady neighbour), with the run and when it was seen.
#[tokio::test]
async fn a_test_that_passes_on_retry_is_flaky() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("failed-once");
    let pass = r#"<testsuite name="cart" tests="2"><testcase classname="shop.Cart" name="adds"/><testcase classname="shop.Cart" name="totals"/></testsuite>"#;
    let fail = r#"<testsuite name="cart" tests="2" failures="1"><testcase classname="shop.Cart" name="adds"/><testcase classname="shop.Cart" name="totals"><failure message="off by one"/></testcase></testsuite>"#;
    let yml = format!(
        "jobs:\n  unit:\n    retry: 1\n    script:\n      - if [ -f {m} ]; then echo '{pass}' > report.xml; else touch {m}; echo '{fail}' > report.xml; exit 1; fi\n    artifacts:\n      when: always\n      reports: {{junit: report.xml}}\n",
        m = mark.display()
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "app", repo.path()).await;
    let (st, b) = post_json(&s, "/api/v1/projects/app/trigger", &admin, json!({"rev": "main"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let run = finished_run(&s, &admin, "app", 1).await;
    assert_eq!(run["status"], "success", "passed on retry: {run:#}");

    let (code, out, err) = cli(&s, &admin, &["flaky", "--project", "app", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tests = v["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 1, "only `totals` flaked: {v:#}");
    let t = &tests[0];
    assert_eq!(
        (&t["job"], &t["name"], &t["flaky_commits"], &t["commits"], &t["runs"]),
        (&json!("unit"), &json!("totals"), &json!(1), &json!(1), &json!([1])),
        "{v:#}"
    );
    assert!(
        t["suite"].as_str().unwrap().contains("Cart") || t["suite"] == "cart",
        "{v:#}"
    );
    let (code, out, _) = cli(&s, &admin, &["flaky"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("totals") && out.contains("1 of 1 commits") && out.contains("#1"),
        "{out}"
    );
}

/// `takt run`'s own log: the same flaky test found with `--local`, and its run in the coffee
/// test, without a server.
#[test]
fn local_runs_have_their_flaky_tests_and_coffee_test() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("failed-once");
    let pass = r#"<testsuite name="cart" tests="1"><testcase classname="shop.Cart" name="totals"/></testsuite>"#;
    let fail = r#"<testsuite name="cart" tests="1" failures="1"><testcase classname="shop.Cart" name="totals"><failure message="off by one"/></testcase></testsuite>"#;
    let yml = format!(
        "jobs:\n  unit:\n    retry: 1\n    script:\n      - if [ -f {m} ]; then echo '{pass}' > report.xml; else touch {m}; echo '{fail}' > report.xml; exit 1; fi\n    artifacts:\n      when: always\n      reports: {{junit: report.xml}}\n",
        m = mark.display()
    );
    let repo = Repo::new(&[("takt.yml", &yml)]);
    let (out, report) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["status"], "success");
    let local = |args: &[&str]| {
        let out = takt().args(args).current_dir(repo.path()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    };
    let (code, out, err) = local(&["flaky", "--local", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tests"][0]["name"], "totals", "{v:#}");
    assert_eq!(v["tests"][0]["runs"], json!([1]), "{v:#}");
    let (code, out, err) = local(&["metrics", "--local", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let m: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&m["coffee"]["runs"], &m["coffee"]["within"]),
        (&json!(1), &json!(1)),
        "{m:#}"
    );
    assert_eq!(m["dora"]["deployment_frequency"]["deployments"], 0, "{m:#}");
    // Another directory has no log: said, exit 1.
    let empty = tempfile::tempdir().unwrap();
    let data = empty.path().display().to_string();
    let (code, _, err) = local(&["metrics", "--local", "--data-dir", &data]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no local event log at"), "{err}");
}

/// `quarantine:`: a job that failed only by quarantined tests passes, listing them; a test
/// whose quarantine ended fails its job again, and lint says the entry expired.
#[test]
fn quarantined_tests_may_fail_until_their_date() {
    let report = |failing: &[&str]| {
        let cases: String = ["totals", "rounds", "adds"]
            .iter()
            .map(|n| {
                if failing.contains(n) {
                    format!(r#"<testcase classname="shop.Cart" name="{n}"><failure message="no"/></testcase>"#)
                } else {
                    format!(r#"<testcase classname="shop.Cart" name="{n}"/></testcase>"#).replace("/></testcase>", "/>")
                }
            })
            .collect();
        format!(r#"<testsuite name="cart" tests="3">{cases}</testsuite>"#)
    };
    let yml = |failing: &[&str]| {
        format!(
            "quarantine:\n  - {{name: totals, suite: shop.Cart, until: 2099-12-31, reason: flaky since run 12}}\n  - {{name: rounds, job: unit, until: 2000-01-01}}\njobs:\n  unit:\n    script:\n      - echo '{}' > report.xml\n      - exit 1\n    artifacts:\n      paths: [report.xml]\n      reports: {{junit: report.xml}}\n",
            report(failing)
        )
    };
    let repo = Repo::new(&[("takt.yml", &yml(&["totals"]))]);
    let (out, r) = repo.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let unit = job(&r, "unit");
    assert_eq!(unit["status"], "success", "{r:#}");
    assert_eq!(unit["quarantined"], json!(["shop.Cart totals"]), "{r:#}");
    assert!(
        unit["artifact"]["digest"].is_string(),
        "it passed, so its artifact (on success) is stored: {r:#}"
    );
    assert!(
        stderr(&out).contains("warning: the quarantine of test `rounds` ended on 2000-01-01"),
        "{}",
        stderr(&out)
    );
    let text = takt().args(["run"]).arg(repo.path()).output().unwrap();
    let said = String::from_utf8_lossy(&text.stdout);
    assert!(
        said.contains("quarantined: `unit` passed although these failed: shop.Cart totals"),
        "{said}"
    );

    // `rounds`' quarantine is over: its failure fails the job.
    repo.commit(&[("takt.yml", &yml(&["totals", "rounds"]))], "rounds fails too");
    let (out, r) = repo.run(&[]);
    assert!(!out.status.success(), "{r:#}");
    assert_eq!(job(&r, "unit")["status"], "failed", "{r:#}");
    // A test failing outside quarantine fails it too.
    repo.commit(&[("takt.yml", &yml(&["totals", "adds"]))], "adds fails");
    let (_, r) = repo.run(&[]);
    assert_eq!(job(&r, "unit")["status"], "failed", "{r:#}");

    let lint = takt().args(["lint"]).arg(repo.path()).output().unwrap();
    assert_eq!(lint.status.code(), Some(0), "{}", stderr(&lint));
    assert!(
        stderr(&lint).contains(":3:5: warning: the quarantine of test `rounds` ended on 2000-01-01"),
        "{}",
        stderr(&lint)
    );
}

/// `takt import`: a project's history from before takt shows in its flow metrics from day
/// one, judged by the bands its takt.yml sets; importing it again changes nothing; the same
/// history as CSV tables counts the same; a bad file is refused with where and why.
#[tokio::test]
async fn imported_history_counts_in_the_flow_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let yml = "jobs:\n  a: {script: [x]}\nenvironments:\n  production: {driver: command, deploy: \"true\"}\n\
               metrics:\n  bands: {lead_time: [1h, 2h, 3h], deployment_frequency: [1/day, 1/week, 1/month]}\n  min_sample: 1\n";
    let repo = Repo::new(&[("takt.yml", yml)]);
    let s = start(&dir.path().join("data"), &[]);
    let admin = s.printed_token.clone().unwrap();
    add_project(&s, &admin, "app", repo.path()).await;
    let now = takt_model::OffsetDateTime::now_utc();
    let t = |days: i64, hours: i64| {
        takt_model::timefmt::rfc3339(now - time::Duration::days(days) + time::Duration::hours(hours))
    };
    let deploy = |id: &str, day: i64, outcome: &str, artifact: &str, commits: serde_json::Value| {
        json!({"id": id, "environment": "production", "started_at": t(day, 0), "finished_at": t(day, 1),
               "outcome": outcome, "artifact": artifact, "commits": commits})
    };
    let history = json!({
        "deployments": [
            deploy("d1", 20, "succeeded", "v1", json!([{"sha": "c1", "committed_at": t(21, 0)}])),
            // Rolled back: failed (its incident says so too).
            deploy("d2", 15, "rolled_back", "v2", json!([{"sha": "c2", "committed_at": t(16, 0)}])),
            deploy("d3", 10, "succeeded", "v3", json!([{"sha": "c2", "committed_at": t(16, 0)}, {"sha": "c3", "committed_at": t(11, 0)}])),
            // The same artifact again: not a change.
            deploy("d4", 9, "succeeded", "v3", json!([])),
        ],
        "incidents": [
            {"id": "i1", "environment": "production", "opened_at": t(15, 1), "impact_started_at": t(15, 0), "resolved_at": t(15, 1), "cause": "d2"},
        ],
    });
    let file = dir.path().join("history.json");
    std::fs::write(&file, serde_json::to_string_pretty(&history).unwrap()).unwrap();
    let path = file.display().to_string();
    let (code, out, err) = cli(&s, &admin, &["import", "app", &path]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("app: 4 deployments and 1 incidents imported"), "{out}");
    // Again: replaced, not doubled.
    let (code, _, err) = cli(&s, &admin, &["import", "app", &path]);
    assert_eq!(code, Some(0), "{err}");

    let (code, out, err) = cli(&s, &admin, &["metrics", "--project", "app", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let m: serde_json::Value = serde_json::from_str(&out).unwrap();
    let d = &m["dora"];
    assert_eq!(d["deployment_frequency"]["deployments"], 2, "d1 and d3: {m:#}");
    assert_eq!(
        d["change_fail_rate"]["deployments"],
        json!(["app/production#import:d2"]),
        "{m:#}"
    );
    assert_eq!(d["change_fail_rate"]["of"], 3, "d1, d2, d3 took traffic: {m:#}");
    // c1: 20d+1h after 21d = 25 h; c2 ships with d3 (d2 was rolled back): 6 days + 1 h; c3: 1 day + 1 h.
    let lead = &d["change_lead_time"]["total"];
    assert_eq!((&lead["sample"], &lead["p50"]), (&json!(3), &json!(90000.0)), "{m:#}");
    // d2's impact began at its start; it was restored when it finished (1 h).
    assert_eq!(d["recovery_time"]["time"]["p50"], json!(3600.0), "{m:#}");
    // takt.yml's bands: 25 h is beyond medium (3 h), where the default bands say high (≤ 7 d);
    // one sample is enough (`min_sample: 1`).
    assert_eq!(
        m["thresholds"]["lead_time_s"],
        json!([3600.0, 7200.0, 10800.0]),
        "{m:#}"
    );
    assert_eq!(m["thresholds"]["min_sample"], 1, "{m:#}");
    assert_eq!(d["change_lead_time"]["band"], "low", "{m:#}");
    // 2 deployments in 30 days: 1/15 a day, between 1/week and 1/month.
    assert_eq!(d["deployment_frequency"]["band"], "medium", "{m:#}");

    // The same history as CSV tables, into a second project: the same keys.
    add_project(&s, &admin, "app2", repo.path()).await;
    let csv = |name: &str, text: String| {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        f.display().to_string()
    };
    let deployments = csv(
        "deployments.csv",
        format!(
            "id,environment,started_at,finished_at,outcome,artifact\n\
             d1,production,{},{},succeeded,v1\nd2,production,{},{},rolled_back,v2\n\
             d3,production,{},{},succeeded,v3\nd4, production ,{},{},succeeded,v3\n",
            t(20, 0),
            t(20, 1),
            t(15, 0),
            t(15, 1),
            t(10, 0),
            t(10, 1),
            t(9, 0),
            t(9, 1)
        ),
    );
    let commits = csv(
        "commits.csv",
        format!(
            "deployment,sha,committed_at\nd1,c1,{}\nd2,c2,{}\nd3,c2,{}\nd3,c3,{}\n",
            t(21, 0),
            t(16, 0),
            t(16, 0),
            t(11, 0)
        ),
    );
    let incidents = csv(
        "incidents.csv",
        format!(
            "id,environment,opened_at,impact_started_at,resolved_at,cause\ni1,production,{},{},{},d2\n",
            t(15, 1),
            t(15, 0),
            t(15, 1)
        ),
    );
    let (code, out, err) = cli(&s, &admin, &["import", "app2", &deployments, &commits, &incidents]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("app2: 4 deployments and 1 incidents imported"), "{out}");
    let (_, out, _) = cli(&s, &admin, &["metrics", "--project", "app2", "--json"]);
    let m2: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut d2 = m2["dora"].clone();
    // The names differ by project only.
    d2["change_fail_rate"]["deployments"] = json!(["app/production#import:d2"]);
    assert_eq!(d2, m["dora"], "{m2:#}");
    for (file, text, says) in [
        (
            "bad1.csv",
            "id,environment,when\n".to_string(),
            "bad1.csv:1: the header names neither",
        ),
        (
            "bad2.csv",
            format!(
                "id,environment,started_at,finished_at,outcome\nd9,production,{},yesterday,succeeded\n",
                t(1, 0)
            ),
            "bad2.csv:2: column `finished_at`",
        ),
        (
            "bad3.csv",
            format!("deployment,sha,committed_at\nnope,c9,{}\n", t(1, 0)),
            "bad3.csv:2: commit `c9` names deployment `nope`",
        ),
        (
            "bad4.csv",
            format!("id,environment,opened_at,colour\ni9,production,{},red\n", t(1, 0)),
            "bad4.csv:2:",
        ),
    ] {
        let f = csv(file, text);
        let (code, _, err) = cli(&s, &admin, &["import", "app2", &f]);
        assert_eq!(code, Some(2), "{file}: {err}");
        assert!(err.contains(says), "{file}: {err}");
    }

    // Bad files: nothing is imported.
    for (text, says) in [
        ("{\"deployments\": [{\"id\": 1}]}", "history.json:1:"),
        ("{\"deployment\": []}", "unknown field `deployment`"),
    ] {
        std::fs::write(&file, text).unwrap();
        let (code, _, err) = cli(&s, &admin, &["import", "app", &path]);
        assert_eq!(code, Some(2), "{text}: {err}");
        assert!(err.contains(says), "{text}: {err}");
    }
    let backwards = json!({"deployments": [{"id": "x", "environment": "production", "started_at": t(1, 1), "finished_at": t(1, 0), "outcome": "succeeded"}]});
    std::fs::write(&file, backwards.to_string()).unwrap();
    let (code, _, err) = cli(&s, &admin, &["import", "app", &path]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("deployments[0] (id `x`): `finished_at` is before `started_at`"),
        "{err}"
    );
    let reader = new_token(&s, &admin, takt_server::auth::Scope::Read).await;
    std::fs::write(&file, "{}").unwrap();
    let (code, _, err) = cli(&s, &reader, &["import", "app", &path]);
    assert_eq!(code, Some(2), "an import is an admin's: {err}");
    let (_, out, _) = cli(&s, &admin, &["metrics", "--project", "app", "--json"]);
    let after: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(after["dora"], m["dora"], "the refused imports changed nothing");
}
