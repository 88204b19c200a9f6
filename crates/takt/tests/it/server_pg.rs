//! The same server on PostgreSQL: a real server started by the test, `takt serve --database`.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use crate::common;
use common::server::*;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use takt_server::auth::Scope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_pipelines_on_postgresql_and_keeps_them_across_restarts() {
    let pg = takt_store::testing::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let env = [("TAKT_DATABASE_URL", url.as_str())];
    let s = start(dir.path(), &env);
    let admin = s.printed_token.clone().unwrap();
    let ci = new_token(&s, &admin, Scope::Ci).await;
    let repo = Repo::new(&[(
        "takt.yml",
        "jobs:\n  build: {secrets: [KEY], script: ['echo key=$KEY']}\n  test: {stage: test, script: ['exit 3']}\n",
    )]);
    add_project(&s, &admin, "demo", repo.path()).await;
    assert_eq!(
        put_secret(&s, &admin, "demo", "KEY", "pg-secret-1").await,
        StatusCode::NO_CONTENT
    );
    let (st, b) = post_json(&s, "/api/v1/projects/demo/trigger", &ci, json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let r = finished_run(&s, &ci, "demo", 1).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(job_of(&r, "test")["exit_code"], 3);
    let log = get_text(&s, "/api/v1/runs/demo/1/logs/build", &ci).await;
    assert!(log.contains("key=***"), "{log}");
    drop(s);

    // A new server on the same database: tokens, projects, secrets and runs are all there.
    let s = start(dir.path(), &env);
    assert!(s.printed_token.is_none());
    let (st, b) = post_json(&s, "/api/v1/runs/demo/1/retry", &ci, json!({"failed": true})).await;
    assert_eq!((st, &b["run"]), (StatusCode::ACCEPTED, &json!(2)), "{b}");
    let r2 = finished_run(&s, &ci, "demo", 2).await;
    assert_eq!(job_of(&r2, "build")["status"], "success", "{r2}");
    assert_eq!(job_of(&r2, "test")["exit_code"], 3);
    let runs = get_json(&s, "/api/v1/runs?project=demo", &ci).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2);
}
