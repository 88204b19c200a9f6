//! The store suite, run the same on SQLite and on a real PostgreSQL server that the test
//! starts itself (Debian's `postgresql` package: `.ci/run` installs it).

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use takt_model::{Event, EventKind, JobStatus, RunStatus};
use takt_store::testing::Postgres;
use takt_store::{Backend, EventFilter, Store, StoreOptions};

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
                budget_ms: None,
                slowest_job: None,
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
            kinds: vec!["run_finished", "job_finished"],
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

/// A subscription sees every event after its position once and in order: while it catches up
/// from the store, while appends race with it live, and after it fell further behind than the
/// broadcast holds (a capacity of 4 here). Cursors survive a reconnect.
async fn follow_suite(url: &str, project: &str) {
    let options = StoreOptions {
        follow_capacity: 4,
        ..Default::default()
    };
    let store = Store::connect_with(url, options).await.unwrap();
    let start = store.head().await.unwrap();
    let append = |store: Store, runs: std::ops::Range<u64>| {
        let project = project.to_string();
        async move {
            for r in runs {
                store
                    .append(&Event::now(&project, Some(r), EventKind::RunStarted))
                    .await
                    .unwrap();
            }
        }
    };
    // The same, four events to a transaction: consecutive positions, in order.
    let append_batches = |store: Store, runs: std::ops::Range<u64>| {
        let project = project.to_string();
        async move {
            let runs: Vec<u64> = runs.collect();
            for chunk in runs.chunks(4) {
                let events: Vec<Event> = chunk
                    .iter()
                    .map(|r| Event::now(&project, Some(*r), EventKind::RunStarted))
                    .collect();
                let seqs = store.append_all(&events).await.unwrap();
                assert_eq!(seqs.len(), chunk.len());
                assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "consecutive: {seqs:?}");
            }
        }
    };
    append(store.clone(), 0..30).await;
    // The position never passes events still buffered (a follower saves it as done).
    let mut probe = store.subscribe(start, &[]);
    let first = probe.next().await.unwrap();
    assert_eq!(
        probe.position(),
        first.seq.unwrap(),
        "not past the 29 events still buffered"
    );
    let mut all = store.subscribe(start, &[]);
    let mut started = store.subscribe(start, &["run_started"]);
    let mut none = store.subscribe(start, &["run_finished"]);
    let mut seen = Vec::new();
    // 30 from the store; 120 more appended concurrently (in transactions of four), while the reader pauses now and then
    // so that it lags behind the broadcast.
    let writer = tokio::spawn(append_batches(store.clone(), 30..150));
    while seen.len() < 150 {
        let e = all.next().await.unwrap();
        seen.push(e.run.unwrap());
        if seen.len() % 10 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    writer.await.unwrap();
    assert_eq!(seen, (0..150).collect::<Vec<_>>(), "every event once, in order");
    for r in 0..150 {
        assert_eq!(started.next().await.unwrap().run, Some(r));
    }
    // A kind that never occurs: the position still moves to the head once caught up.
    let head = store.head().await.unwrap();
    let waited = tokio::time::timeout(std::time::Duration::from_millis(200), none.next()).await;
    assert!(waited.is_err(), "no run_finished was appended");
    assert_eq!(none.position(), head);
    assert_eq!(all.position(), head);
    // Live again after catching up.
    store
        .append(&Event::now(project, Some(150), EventKind::RunStarted))
        .await
        .unwrap();
    assert_eq!(all.next().await.unwrap().run, Some(150));
    assert!(all.is_live());

    assert_eq!(store.cursor("test").await.unwrap(), None);
    store.save_cursor("test", 7).await.unwrap();
    store.save_cursor("test", head).await.unwrap();
    store.close().await;
    let again = Store::connect(url).await.unwrap();
    assert_eq!(again.cursor("test").await.unwrap(), Some(head));
    again.close().await;
}

/// Check results and buckets: written in one go, replaced by key, compacted by cut-offs.
async fn results_suite(url: &str) {
    use takt_store::{BucketRow, ResultRow};
    let store = Store::connect(url).await.unwrap();
    let result = |at_ms| ResultRow {
        project: "p".into(),
        check: "api".into(),
        at_ms,
        success: true,
        latency_ms: 12,
    };
    let bucket = |width_s, start_s, count| BucketRow {
        project: "p".into(),
        check: "api".into(),
        width_s,
        start_s,
        count,
        successes: count,
        latency_sum: 12 * count,
        latency_min: 12,
        latency_max: 12,
        sketch: "15:1".into(),
    };
    store
        .write_results(&[result(1_000), result(90_000_000)], &[bucket(3600, 0, 1)])
        .await
        .unwrap();
    // The same key again replaces the bucket.
    store
        .write_results(&[], &[bucket(3600, 0, 2), bucket(3600, 3600, 1)])
        .await
        .unwrap();
    assert_eq!(
        store.bucket("p", "api", 3600, 0).await.unwrap(),
        Some(bucket(3600, 0, 2))
    );
    assert_eq!(store.bucket("p", "api", 3600, 7200).await.unwrap(), None);
    assert_eq!(store.buckets(Some("p"), 3600, 0, 7200).await.unwrap().len(), 2);
    assert_eq!(
        store.buckets(None, 3600, 3600, 7200).await.unwrap(),
        [bucket(3600, 3600, 1)]
    );
    assert_eq!(store.buckets(Some("q"), 3600, 0, 7200).await.unwrap(), []);
    assert_eq!(store.result_count().await.unwrap(), 2);
    store
        .compact_results(2_000, &[bucket(86_400, 0, 3)], 86_400, 0)
        .await
        .unwrap();
    assert_eq!(store.result_count().await.unwrap(), 1, "the old result went");
    assert_eq!(
        store.buckets(None, 3600, 0, i64::MAX).await.unwrap(),
        [],
        "merged hours went"
    );
    assert_eq!(
        store.buckets(None, 86_400, 0, i64::MAX).await.unwrap(),
        [bucket(86_400, 0, 3)]
    );
    store.compact_results(0, &[], 0, 86_400).await.unwrap();
    assert_eq!(
        store.buckets(None, 86_400, 0, i64::MAX).await.unwrap(),
        [],
        "past retention"
    );
    // Per-day counts: the hours of a day add up with the day's own bucket.
    store
        .write_results(
            &[],
            &[
                bucket(86_400, 86_400, 5),
                bucket(3600, 86_400 + 3600, 2),
                bucket(3600, 0, 3),
            ],
        )
        .await
        .unwrap();
    let mut days = store.daily_counts(0).await.unwrap();
    days.sort();
    let row = |day, n| ("p".to_string(), "api".to_string(), day, n, n);
    assert_eq!(days, [row(0, 3), row(86_400, 2), row(86_400, 5)], "each under its day");
    assert_eq!(store.daily_counts(86_400).await.unwrap().len(), 2);
    store.vacuum().await.unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_results_are_kept_and_compacted_on_sqlite_and_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    results_suite(&format!("sqlite://{}?mode=rwc", dir.path().join("takt.db").display())).await;
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    results_suite(&pg.url()).await;
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_see_every_event_once_in_order_on_sqlite_and_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("takt.db").display());
    follow_suite(&sqlite, "f").await;
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    follow_suite(&pg.url(), "f").await;
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
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
