//! A year of 30-second checks on 50 services, through the real writer and compaction with a
//! simulated clock: the SQLite file stays under 50 MiB after VACUUM (docs/monitoring.md,
//! Storage). The last two days go through the writer's raw-result path, a result at a time;
//! the last three days before them write 24 hour buckets per check (120 results each, the rows
//! the writer writes); the 360 days before those write one hour bucket per check and day that
//! holds the day's 2,880 results. Compaction merges them into the same day buckets either way,
//! so the test takes seconds, not the hours that 52 million inserts would.

#![allow(clippy::unwrap_used)] // tests may panic: that is how they fail

use takt_model::OffsetDateTime;
use takt_monitor::aggregate::{Bucket, DAY, HOUR, Retention};
use takt_observe::results::{Sample, Writer, compact, to_row};
use takt_store::{Durability, Store, StoreOptions};
use time::Duration;

const CHECKS: usize = 50;
const PER_HOUR: i64 = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_results_for_50_checks_stays_under_50_mib() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("takt.db");
    let options = StoreOptions {
        durability: Durability::ProcessCrash,
        ..StoreOptions::default()
    };
    let store = Store::open_sqlite_with(&path, options).await.unwrap();
    let t0 = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap(); // 2026-01-01
    let names: Vec<String> = (0..CHECKS).map(|i| format!("service-{i:02}-health")).collect();
    let latency = |i: i64| 20 + u64::try_from((i * 37) % 400).unwrap();
    // Each check's hour, as 120 results make it (one failure in 500).
    let template: Vec<Bucket> = (0..CHECKS as i64)
        .map(|c| {
            let mut b = Bucket::new(0, HOUR);
            for i in 0..PER_HOUR {
                b.record((i + c) % 500 != 0, latency(i));
            }
            b
        })
        .collect();
    let mut writer = Writer::default();
    let started = std::time::Instant::now();
    for day in 0..365 {
        let day_start = t0 + Duration::days(day);
        if day < 360 {
            let rows: Vec<_> = names
                .iter()
                .enumerate()
                .map(|(c, name)| {
                    let mut b = Bucket::new(day_start.unix_timestamp(), HOUR);
                    (0..24).for_each(|_| b.merge(&template[c]));
                    to_row("shop", name, &b)
                })
                .collect();
            store.write_results(&[], &rows).await.unwrap();
        } else if day < 363 {
            let mut rows = Vec::with_capacity(CHECKS * 24);
            for (c, name) in names.iter().enumerate() {
                for h in 0..24 {
                    let mut b = template[c].clone();
                    b.start = (day_start + Duration::hours(h)).unix_timestamp();
                    rows.push(to_row("shop", name, &b));
                }
            }
            store.write_results(&[], &rows).await.unwrap();
        } else {
            for h in 0..24 {
                let hour = day_start + Duration::hours(h);
                let samples: Vec<Sample> = names
                    .iter()
                    .flat_map(|name| {
                        (0..PER_HOUR).map(move |i| Sample {
                            project: "shop".into(),
                            check: name.clone(),
                            at: hour + Duration::seconds(30 * i),
                            success: i % 500 != 0,
                            latency_ms: latency(i),
                        })
                    })
                    .collect();
                writer
                    .flush(&store, &samples, true, hour + Duration::hours(1))
                    .await
                    .unwrap();
            }
        }
        compact(&store, day_start + Duration::days(1), Retention::default())
            .await
            .unwrap();
    }
    let end = t0 + Duration::days(365);
    // Compacting again changes nothing.
    compact(&store, end, Retention::default()).await.unwrap();
    let days = store.buckets(None, DAY, 0, i64::MAX).await.unwrap();
    let hours = store.buckets(None, HOUR, 0, i64::MAX).await.unwrap();
    let raw = store.result_count().await.unwrap();
    assert_eq!(raw, (CHECKS as i64) * 24 * PER_HOUR, "a day of raw results");
    assert!(
        hours.len() <= CHECKS * 72,
        "hours of the last 48 h (whole days): {}",
        hours.len()
    );
    assert!(
        days.len() >= CHECKS * 362 && days.len() <= CHECKS * 365,
        "{}",
        days.len()
    );
    let day0 = days.iter().find(|d| d.check == names[0]).unwrap();
    assert_eq!(day0.count, 24 * PER_HOUR, "a day bucket holds its 24 hours");
    store.vacuum().await.unwrap();
    store.close().await;
    let bytes = std::fs::metadata(&path).unwrap().len();
    println!(
        "a year of 30 s checks on {CHECKS} services: {:.1} MiB after VACUUM (target: under 50 MiB, ratio {:.2}); {} day, {} hour buckets, {raw} raw results; {:.1} s",
        bytes as f64 / 1048576.0,
        bytes as f64 / (50.0 * 1048576.0),
        days.len(),
        hours.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(bytes < 50 * 1024 * 1024, "{bytes} bytes");
}
