//! An event log written by takt 0.1 reads unchanged: `fixtures/events-0.1.jsonl` holds the
//! stored JSON of every event kind 0.1 wrote (up to six of each, in log order, exactly as
//! stored), made by running the 0.1 binary through every feature. The test writes them into a
//! SQLite file the way 0.1 did, opens it with today's store and reads every event back.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use std::collections::BTreeSet;
use takt_model::{Event, EventKind, Severity};
use takt_store::{EventFilter, Store};

const FIXTURE: &str = include_str!("fixtures/events-0.1.jsonl");

/// Every kind takt 0.1 wrote.
const KINDS_0_1: &[&str] = &[
    "commit_seen",
    "run_queued",
    "run_planning",
    "run_started",
    "run_finished",
    "job_queued",
    "job_started",
    "job_finished",
    "job_skipped",
    "log_stored",
    "artifact_stored",
    "test_report",
    "cache_used",
    "token_created",
    "token_revoked",
    "token_used",
    "artifact_downloaded",
    "artifact_deleted",
    "artifact_replicated",
    "artifact_read",
    "project_added",
    "project_updated",
    "job_process",
    "secret_set",
    "secret_removed",
    "webhook_received",
    "notification_sent",
    "deploy_started",
    "deploy_step",
    "deploy_finished",
    "environment_halted",
    "environment_resumed",
    "deploy_approved",
    "incident_opened",
];

#[tokio::test]
async fn an_event_log_written_by_0_1_reads_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("takt.db");
    // The 0.1 schema, filled as 0.1 filled it (the body is the stored JSON, byte for byte).
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, project TEXT NOT NULL, run BIGINT, kind TEXT NOT NULL, body TEXT NOT NULL)")
            .execute(&mut c)
            .await
            .unwrap();
        for line in FIXTURE.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            sqlx::query("INSERT INTO events (at, project, run, kind, body) VALUES ($1, $2, $3, $4, $5)")
                .bind(v["at"].as_str().unwrap())
                .bind(v["project"].as_str().unwrap())
                .bind(v["run"].as_i64())
                .bind(v["kind"].as_str().unwrap())
                .bind(line)
                .execute(&mut c)
                .await
                .unwrap();
        }
        c.close().await.unwrap();
    }
    let store = Store::open_sqlite(&path).await.unwrap();
    let events: Vec<Event> = store.events(&EventFilter::default()).await.unwrap();
    assert_eq!(events.len(), FIXTURE.lines().count(), "every event reads");
    let kinds: BTreeSet<&str> = events.iter().map(|e| e.kind.name()).collect();
    for k in KINDS_0_1 {
        assert!(kinds.contains(k), "the fixture has no `{k}`");
    }
    // Each reads as what it was: the same JSON once written again, but for fields added since.
    for (e, line) in events.iter().zip(FIXTURE.lines()) {
        let old: serde_json::Value = serde_json::from_str(line).unwrap();
        let new = serde_json::to_value(e).unwrap();
        for (key, value) in old.as_object().unwrap() {
            if key == "at" {
                continue; // re-written at the same instant
            }
            assert_eq!(&new[key], value, "{key} of {line}");
        }
    }
    // Fields added since 0.1 take their documented defaults.
    for e in &events {
        match &e.kind {
            EventKind::TestReport { attempt, .. } => assert_eq!(*attempt, 1),
            EventKind::JobQueued { needs, .. } => assert_eq!(*needs, None),
            EventKind::IncidentOpened { id, severity, .. } => {
                assert_eq!((id, *severity), (&None, Severity::Critical));
                assert!(
                    takt_model::incident_id(e)
                        .unwrap()
                        .starts_with(&format!("{}#", e.project))
                );
            }
            EventKind::DeployStarted { truncated, .. } => assert_eq!(*truncated, 0),
            _ => {}
        }
    }
    // Today's store opens the old file and goes on appending to it.
    let seq = store
        .append(&Event::now("p", Some(1), EventKind::RunStarted))
        .await
        .unwrap();
    assert_eq!(seq as usize, events.len() + 1);
    assert_eq!(store.cursor("auto_deploy").await.unwrap(), None);
}
