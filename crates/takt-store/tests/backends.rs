//! The store suite, run the same on SQLite and on a real PostgreSQL server that the test
//! starts itself (Debian's `postgresql` package: `.ci/run` installs it).

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use takt_model::{Event, EventKind, JobStatus, RunStatus};
use takt_store::testing::Postgres;
use takt_store::{Backend, EventFilter, Store};

fn finished(job: &str, status: JobStatus) -> EventKind {
    EventKind::JobFinished {
        job: job.into(),
        attempt: 1,
        status,
        exit_code: Some(0),
        failure_reason: None,
        allow_failure: false,
        duration_ms: 3,
        wait_ms: 1,
        flaky: false,
    }
}

/// What every backend must do.
async fn suite(url: &str, project: &str) {
    let store = Store::connect(url).await.unwrap();
    assert_eq!(store.next_run_number(project).await.unwrap(), 1);
    let first = store
        .append(&Event::now(project, Some(1), EventKind::RunStarted))
        .await
        .unwrap();
    store
        .append(&Event::now(
            project,
            Some(1),
            finished("build [OS=linux]", JobStatus::Success),
        ))
        .await
        .unwrap();
    store
        .append(&Event::now(
            project,
            Some(1),
            EventKind::RunFinished {
                status: RunStatus::Success,
                duration_ms: 9,
                reason: None,
            },
        ))
        .await
        .unwrap();
    assert_eq!(store.next_run_number(project).await.unwrap(), 2);

    // Concurrent writers: nothing lost, positions unique and increasing.
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let s = store.clone();
        let p = project.to_string();
        tasks.push(tokio::spawn(async move {
            s.append(&Event::now(&p, Some(2 + i % 4), EventKind::RunStarted))
                .await
                .unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 40);

    let all = store
        .events(&EventFilter {
            project: Some(project.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 43);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "log order");
    assert_eq!(all[0].seq, Some(first));
    assert!(matches!(&all[1].kind, EventKind::JobFinished { job, .. } if job == "build [OS=linux]"));
    let run1 = store
        .events(&EventFilter {
            project: Some(project.into()),
            run: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(run1.len(), 3);
    let kinds = store
        .events(&EventFilter {
            project: Some(project.into()),
            kind: Some("run_finished".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(kinds.len(), 1);
    let page = store
        .events(&EventFilter {
            project: Some(project.into()),
            after: Some(first),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert!(page[0].seq > Some(first));
    assert_eq!(store.next_run_number(project).await.unwrap(), 6);
    assert_eq!(store.next_run_number("another").await.unwrap(), 1);
    // Several kinds at once, and time windows.
    let two_kinds = store
        .events(&EventFilter {
            project: Some(project.into()),
            kinds: vec!["run_finished".into(), "job_finished".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(two_kinds.len(), 2);
    let t = all[1].at;
    let window = |since, until| EventFilter {
        project: Some(project.into()),
        since,
        until,
        ..Default::default()
    };
    // The log keeps milliseconds: windows compare at that precision.
    let ms = |at| takt_model::timefmt::rfc3339(at);
    let from_t = store.events(&window(Some(t), None)).await.unwrap();
    assert!(!from_t.is_empty() && from_t.iter().all(|e| ms(e.at) >= ms(t)));
    let before_t = store.events(&window(None, Some(t))).await.unwrap();
    assert!(before_t.iter().all(|e| ms(e.at) < ms(t)));
    assert_eq!(from_t.len() + before_t.len(), 43);
    // Followers see each appended event, with its position.
    let mut follow = store.follow();
    let seq = store
        .append(&Event::now(project, Some(9), EventKind::RunStarted))
        .await
        .unwrap();
    let seen = follow.recv().await.unwrap();
    assert_eq!((seen.seq, seen.run), (Some(seq), Some(9)));
    // Observers see an event before its append returns.
    let count = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let c2 = count.clone();
    store.observe(takt_store::Observer(std::sync::Arc::new(move |e: &Event| {
        c2.store(e.seq.unwrap_or(-1), std::sync::atomic::Ordering::SeqCst);
    })));
    let seq = store
        .append(&Event::now(project, Some(9), EventKind::RunStarted))
        .await
        .unwrap();
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), seq);
    store.close().await;

    // Reconnecting finds everything again (the schema is created only once).
    let again = Store::connect(url).await.unwrap();
    assert_eq!(
        again
            .events(&EventFilter {
                project: Some(project.into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        45
    );
    again.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_store_suite_passes_on_sqlite_and_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("takt.db").display());
    suite(&sqlite, "p").await;
    assert_eq!(Store::connect(&sqlite).await.unwrap().backend(), Backend::Sqlite);

    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    suite(&pg.url(), "p").await;
    assert_eq!(Store::connect(&pg.url()).await.unwrap().backend(), Backend::Postgres);
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

#[tokio::test]
async fn a_bad_database_url_is_a_clear_error() {
    let e = Store::connect("postgres://u:secret@127.0.0.1:1/nope")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot open the database postgres://u:***@127.0.0.1:1/nope"),
        "{e}"
    );
    assert!(!e.contains("secret"));
}
