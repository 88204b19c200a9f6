//! Check results kept beside the log: each probe's result as a raw row (a day), summed into
//! per-hour buckets, merged into per-day buckets after 48 h, pruned after the retention
//! (`takt_monitor::aggregate`). One writer task batches them (at most a second's worth per
//! transaction); results are measurements, not facts, so a full queue drops them (counted),
//! never the checks' state changes, which are events.

use std::collections::HashMap;
use std::time::Duration;
use takt_model::OffsetDateTime;
use takt_monitor::aggregate::{Bucket, DAY, HOUR, Retention, Sketch, compaction, into_days};
use takt_store::{BucketRow, ResultRow, Store, StoreError};
use tokio::sync::mpsc;

/// One probe's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub project: String,
    pub check: String,
    pub at: OffsetDateTime,
    pub success: bool,
    pub latency_ms: u64,
}

/// Results waiting for the writer; more are dropped.
pub const QUEUE: usize = 8192;
/// The most results written in one transaction.
pub const BATCH: usize = 2048;

fn secs(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

pub fn to_row(project: &str, check: &str, b: &Bucket) -> BucketRow {
    let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    BucketRow {
        project: project.to_string(),
        check: check.to_string(),
        width_s: b.width,
        start_s: b.start,
        count: i(b.count),
        successes: i(b.successes),
        latency_sum: i(b.latency_sum),
        latency_min: i(b.latency_min),
        latency_max: i(b.latency_max),
        sketch: b.sketch.encode(),
    }
}

pub fn from_row(r: &BucketRow) -> Bucket {
    let u = |n: i64| u64::try_from(n).unwrap_or(0);
    Bucket {
        start: r.start_s,
        width: r.width_s,
        count: u(r.count),
        successes: u(r.successes),
        latency_sum: u(r.latency_sum),
        latency_min: u(r.latency_min),
        latency_max: u(r.latency_max),
        sketch: Sketch::decode(&r.sketch),
    }
}

/// The writer's state: the hour buckets it is filling.
#[derive(Default)]
pub struct Writer {
    hours: HashMap<(String, String, i64), Bucket>,
}

impl Writer {
    /// Writes `samples` (as raw rows if `raw`) and the hour buckets they fall in, in one
    /// transaction; forgets buckets that ended more than an hour before `now`.
    pub async fn flush(
        &mut self,
        store: &Store,
        samples: &[Sample],
        raw: bool,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut touched: Vec<(String, String, i64)> = Vec::new();
        let key_of = |s: &Sample| {
            let start = secs(s.at) - secs(s.at).rem_euclid(HOUR);
            (s.project.clone(), s.check.clone(), start)
        };
        // Hours not in memory (a restart, a late result) carry on from what is stored: all read
        // before any is changed, so a failed read leaves the counts as they were.
        let mut loaded = HashMap::new();
        for s in samples {
            let key = key_of(s);
            if !self.hours.contains_key(&key) && !loaded.contains_key(&key) {
                let stored = store.bucket(&key.0, &key.1, HOUR, key.2).await?;
                let b = stored.map_or_else(|| Bucket::new(key.2, HOUR), |r| from_row(&r));
                loaded.insert(key, b);
            }
        }
        self.hours.extend(loaded);
        for s in samples {
            let key = key_of(s);
            if let Some(b) = self.hours.get_mut(&key) {
                b.record(s.success, s.latency_ms);
            }
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
        let rows: Vec<ResultRow> = if raw {
            samples
                .iter()
                .map(|s| ResultRow {
                    project: s.project.clone(),
                    check: s.check.clone(),
                    at_ms: i64::try_from(s.at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
                    success: s.success,
                    latency_ms: i64::try_from(s.latency_ms).unwrap_or(i64::MAX),
                })
                .collect()
        } else {
            Vec::new()
        };
        let buckets: Vec<BucketRow> = touched
            .iter()
            .filter_map(|k| self.hours.get(k).map(|b| to_row(&k.0, &k.1, b)))
            .collect();
        store.write_results(&rows, &buckets).await?;
        let horizon = secs(now) - 2 * HOUR;
        self.hours.retain(|(_, _, start), _| *start >= horizon);
        Ok(())
    }
}

/// Compaction at `now`: raw results past their day go; hour buckets past 48 h are merged into
/// their days; day buckets past the retention go. Idempotent: running it twice changes nothing
/// more.
pub async fn compact(store: &Store, now: OffsetDateTime, retention: Retention) -> Result<(), StoreError> {
    let c = compaction(secs(now), retention);
    let hours = store.buckets(None, HOUR, 0, c.hours_before).await?;
    let first_day = hours.iter().map(|h| h.start_s - h.start_s.rem_euclid(DAY)).min();
    let mut days = Vec::new();
    if let Some(first_day) = first_day {
        let stored = store.buckets(None, DAY, first_day, c.hours_before).await?;
        let mut by_check: HashMap<(String, String), (Vec<Bucket>, Vec<Bucket>)> = HashMap::new();
        for h in &hours {
            by_check
                .entry((h.project.clone(), h.check.clone()))
                .or_default()
                .0
                .push(from_row(h));
        }
        for d in &stored {
            if let Some(e) = by_check.get_mut(&(d.project.clone(), d.check.clone())) {
                e.1.push(from_row(d));
            }
        }
        for ((project, check), (h, d)) in by_check {
            days.extend(into_days(&h, &d).iter().map(|b| to_row(&project, &check, b)));
        }
    }
    let results_before_ms = (c.results_before).saturating_mul(1000);
    store
        .compact_results(results_before_ms, &days, c.hours_before, c.days_before)
        .await
}

/// Each check's results per day (count, successes), for the status page: read from the store
/// once, when the page is first built, then kept current by the writer, so the page does not
/// read 90 days of buckets each time. (Results written between that read and the moment the
/// counts are marked loaded are not counted: a handful, once.)
#[derive(Debug, Default)]
pub struct DayCounts {
    pub loaded: bool,
    pub days: HashMap<(String, String), std::collections::BTreeMap<i64, (u64, u64)>>,
}

impl DayCounts {
    pub fn add(&mut self, project: &str, check: &str, day: i64, count: u64, successes: u64) {
        let e = self
            .days
            .entry((project.to_string(), check.to_string()))
            .or_default()
            .entry(day)
            .or_default();
        e.0 += count;
        e.1 += successes;
    }
}

pub type SharedDays = std::sync::Arc<parking_lot::Mutex<DayCounts>>;

/// Takes results and writes them in batches; compacts every hour (and once at start).
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Sample>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Recorder {
    pub fn start(store: Store, days: SharedDays) -> Recorder {
        let (tx, mut rx) = mpsc::channel::<Sample>(QUEUE);
        let writer_store = store.clone();
        tokio::spawn(async move {
            let mut w = Writer::default();
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                // Whatever else arrives within a second joins the batch.
                let until = tokio::time::Instant::now() + Duration::from_secs(1);
                while batch.len() < BATCH {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(s)) => batch.push(s),
                        Ok(None) | Err(_) => break,
                    }
                }
                match w.flush(&writer_store, &batch, true, OffsetDateTime::now_utc()).await {
                    Ok(()) => {
                        let mut d = days.lock();
                        if d.loaded {
                            for s in &batch {
                                let day = secs(s.at) - secs(s.at).rem_euclid(DAY);
                                d.add(&s.project, &s.check, day, 1, u64::from(s.success));
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, results = batch.len(), "cannot keep check results"),
                }
                batch.clear();
            }
        });
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                if let Err(e) = compact(&store, OffsetDateTime::now_utc(), Retention::default()).await {
                    tracing::warn!(error = %e, "cannot compact check results");
                }
            }
        });
        Recorder {
            tx,
            dropped: Default::default(),
        }
    }

    /// Queues a result; if the writer is that far behind, it is dropped (and counted).
    pub fn record(&self, s: Sample) {
        if self.tx.try_send(s).is_err() {
            let n = self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if (n + 1).is_power_of_two() {
                tracing::warn!(dropped = n + 1, "check results dropped: the writer is behind");
            }
        }
    }
}
