//! The append-only event log — takt's single source of truth — and the views derived from it.
//!
//! One implementation over sqlx's `Any` driver serves both databases: SQLite (embedded default,
//! a file in the data directory) and PostgreSQL (by URL). Queries are portable SQL with `$1`
//! placeholders; only the table definitions differ per database ([`Backend::schema`]).
//! Events are never updated or deleted.

mod follow;
pub mod results;
#[cfg(feature = "testing")]
pub mod testing;

pub use follow::{CATCH_UP_BATCH, Cursor, SAVE_EVERY, Subscription, Watermark};
pub use results::{BucketRow, ResultRow};

use parking_lot::RwLock;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use takt_model::{Event, OffsetDateTime, timefmt};
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("database error while {doing}: {source}")]
    Query { doing: &'static str, source: sqlx::Error },
    #[error("event #{seq} in the log is unreadable: {source}")]
    Corrupt { seq: i64, source: serde_json::Error },
    #[error("cannot encode an event: {0}")]
    Encode(serde_json::Error),
}

fn q(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { doing, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn schema(self) -> &'static [&'static str] {
        match self {
            Backend::Sqlite => &[
                "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, project TEXT NOT NULL, run BIGINT, kind TEXT NOT NULL, body TEXT NOT NULL)",
                "CREATE INDEX IF NOT EXISTS events_project_run ON events (project, run)",
                "CREATE INDEX IF NOT EXISTS events_kind ON events (kind)",
                CURSORS,
            ],
            Backend::Postgres => &[
                "CREATE TABLE IF NOT EXISTS events (seq BIGSERIAL PRIMARY KEY, at TEXT NOT NULL, project TEXT NOT NULL, run BIGINT, kind TEXT NOT NULL, body TEXT NOT NULL)",
                "CREATE INDEX IF NOT EXISTS events_project_run ON events (project, run)",
                "CREATE INDEX IF NOT EXISTS events_kind ON events (kind)",
                CURSORS,
            ],
        }
    }
}

/// Followers' durable positions (bookkeeping, not facts: a follower's work is re-done from its
/// cursor after a crash, so it must be idempotent or deduplicate on the log's facts).
const CURSORS: &str = "CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, seq BIGINT NOT NULL)";

/// How many events [`Store::scan`] reads at a time.
pub const SCAN_PAGE: u32 = 10_000;

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub project: Option<String>,
    pub run: Option<u64>,
    pub kind: Option<String>,
    /// Any of these kinds (in addition to `kind`, when both are given an event must match both).
    pub kinds: Vec<&'static str>,
    /// Only events at or after this time (RFC 3339, UTC).
    pub since: Option<OffsetDateTime>,
    /// Only events before this time.
    pub until: Option<OffsetDateTime>,
    /// Only events with `seq` greater than this (for paging and following).
    pub after: Option<i64>,
    /// Only events with `seq` at most this.
    pub until_seq: Option<i64>,
    pub limit: Option<u32>,
}

/// The event log.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Every appended event, in order, for whoever follows the log live (metrics, notifiers,
    /// log followers). A follower that falls behind gets `Lagged` and re-reads from the store.
    appended: broadcast::Sender<Event>,
    /// Called with every appended event before `append` returns (projections that must be
    /// current the moment an append is acknowledged).
    observers: Arc<RwLock<Vec<Observer>>>,
    /// Appends so far (SQLite: every CHECKPOINT_EVERY-th starts a checkpoint).
    appends: Arc<AtomicU64>,
    /// Held from an event's insert until it is broadcast: one writer, so followers receive
    /// events in `seq` order.
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// How many appends pass between two checkpoints of SQLite's write-ahead log.
pub const CHECKPOINT_EVERY: u64 = 1000;

/// A synchronous observer of appended events.
#[derive(Clone)]
pub struct Observer(pub Arc<dyn Fn(&Event) + Send + Sync>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer(..)")
    }
}

/// How many appended events a live follower may fall behind before it must re-read the log
/// (the default of [`StoreOptions::follow_capacity`]).
pub const FOLLOW_CAPACITY: usize = 4096;

/// How a store is opened.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    pub durability: Durability,
    /// How many appended events the live broadcast holds for a follower that is behind.
    pub follow_capacity: usize,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            durability: Durability::PowerLoss,
            follow_capacity: FOLLOW_CAPACITY,
        }
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        Store::open_sqlite_with(path, StoreOptions::default()).await
    }

    /// [`Store::open_sqlite`] with options (benchmarks measure what FULL durability costs).
    pub async fn open_sqlite_with(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Store::connect_with(&url, options).await
    }

    /// Connects to `sqlite://...` or `postgres://...` and creates the schema if it is missing.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, StoreOptions::default()).await
    }

    /// [`Store::connect`] with options.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let durability = options.durability;
        install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let mut opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            // One writer keeps SQLite simple and fast; WAL lets readers in other processes read.
            let synchronous = match durability {
                Durability::PowerLoss => "PRAGMA synchronous=FULL",
                Durability::ProcessCrash => "PRAGMA synchronous=NORMAL",
            };
            opts = opts.max_connections(1).after_connect(move |conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode=WAL").execute(&mut *conn).await?;
                    // FULL: every commit is fsynced before `append` returns, so an acknowledged
                    // event survives a power loss (NORMAL in WAL mode may lose the last ones).
                    sqlx::query(synchronous).execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout=10000").execute(&mut *conn).await?;
                    // SQLite's own auto-checkpoint does not run under sqlx (measured: the WAL
                    // grew to 150 MB over 12 MB of events), so `append` starts a TRUNCATE
                    // checkpoint itself every CHECKPOINT_EVERY appends, and the WAL is cut
                    // back to 64 MiB after any checkpoint.
                    sqlx::query("PRAGMA journal_size_limit=67108864")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        } else {
            opts = opts.max_connections(8);
        }
        // One direct connection first: a wrong URL or a refused connection fails at once,
        // instead of the pool retrying until its acquire timeout.
        {
            use sqlx::Connection;
            let first = tokio::time::timeout(Duration::from_secs(15), sqlx::AnyConnection::connect(url))
                .await
                .map_err(|_| StoreError::Open {
                    url: redact(url),
                    source: sqlx::Error::PoolTimedOut,
                })?
                .map_err(|source| StoreError::Open {
                    url: redact(url),
                    source,
                })?;
            let _ = first.close().await;
        }
        let pool = opts.connect(url).await.map_err(|source| StoreError::Open {
            url: redact(url),
            source,
        })?;
        for stmt in backend.schema().iter().chain(results::SCHEMA) {
            sqlx::query(*stmt)
                .execute(&pool)
                .await
                .map_err(q("creating the schema"))?;
        }
        let (appended, _) = broadcast::channel(options.follow_capacity.max(1));
        Ok(Store {
            pool,
            backend,
            appended,
            observers: Arc::default(),
            appends: Arc::default(),
            writer: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Appends one event; returns its position in the log.
    pub async fn append(&self, event: &Event) -> Result<i64, StoreError> {
        let body = serde_json::to_string(event).map_err(StoreError::Encode)?;
        let writer = self.writer.lock().await;
        let row =
            sqlx::query("INSERT INTO events (at, project, run, kind, body) VALUES ($1, $2, $3, $4, $5) RETURNING seq")
                .bind(timefmt::rfc3339(event.at))
                .bind(event.project.clone())
                .bind(event.run.map(|r| r as i64))
                .bind(event.kind.name())
                .bind(body)
                .fetch_one(&self.pool)
                .await
                .map_err(q("appending an event"))?;
        let seq = row.try_get::<i64, _>(0).map_err(q("reading an event's position"))?;
        self.appended(std::slice::from_ref(event), &[seq]);
        drop(writer);
        Ok(seq)
    }

    /// Appends `events` in one transaction (one commit, one fsync): all of them or none, at
    /// consecutive positions, which it returns. For facts known at the same moment, such as a
    /// job's log, outputs and end.
    pub async fn append_all(&self, events: &[Event]) -> Result<Vec<i64>, StoreError> {
        let mut bodies = Vec::with_capacity(events.len());
        for e in events {
            bodies.push(serde_json::to_string(e).map_err(StoreError::Encode)?);
        }
        let writer = self.writer.lock().await;
        let mut tx = self.pool.begin().await.map_err(q("beginning an append"))?;
        let mut seqs = Vec::with_capacity(events.len());
        for (event, body) in events.iter().zip(bodies) {
            let row = sqlx::query(
                "INSERT INTO events (at, project, run, kind, body) VALUES ($1, $2, $3, $4, $5) RETURNING seq",
            )
            .bind(timefmt::rfc3339(event.at))
            .bind(event.project.clone())
            .bind(event.run.map(|r| r as i64))
            .bind(event.kind.name())
            .bind(body)
            .fetch_one(&mut *tx)
            .await
            .map_err(q("appending an event"))?;
            seqs.push(row.try_get::<i64, _>(0).map_err(q("reading an event's position"))?);
        }
        tx.commit().await.map_err(q("committing an append"))?;
        self.appended(events, &seqs);
        drop(writer);
        Ok(seqs)
    }

    /// After an acknowledged append (the writer still held): observers, followers, and now
    /// and then a checkpoint.
    fn appended(&self, events: &[Event], seqs: &[i64]) {
        for (event, seq) in events.iter().zip(seqs) {
            let mut e = event.clone();
            e.seq = Some(*seq);
            {
                let obs = self.observers.read();
                for o in obs.iter() {
                    (o.0)(&e);
                }
            }
            let _ = self.appended.send(e); // nobody following is fine
        }
        let before = self.appends.fetch_add(events.len() as u64, Ordering::Relaxed);
        if self.backend == Backend::Sqlite
            && before / CHECKPOINT_EVERY != (before + events.len() as u64) / CHECKPOINT_EVERY
        {
            // Off the append's path: this append is acknowledged already.
            let store = self.clone();
            tokio::spawn(async move {
                if let Err(e) = store.checkpoint().await {
                    tracing::warn!(error = %e, "cannot checkpoint the event log");
                }
            });
        }
    }

    /// Calls `f` with every event appended from now on, before the append returns. `f` must be
    /// quick and must not append.
    pub fn observe(&self, f: Observer) {
        {
            let mut obs = self.observers.write();
            obs.push(f);
        }
    }

    /// Follows the events appended from now on (through this `Store` and its clones). Lossy
    /// when the receiver falls behind: followers that must see every event use
    /// [`Store::subscribe`].
    pub fn follow(&self) -> broadcast::Receiver<Event> {
        self.appended.subscribe()
    }

    /// Every event after `after` (of these kinds; all when empty), in order, without gaps or
    /// duplicates: read from the store until caught up, then live, re-reading the store when
    /// the follower lags.
    pub fn subscribe(&self, after: i64, kinds: &[&'static str]) -> Subscription {
        Subscription::new(self.clone(), after, kinds)
    }

    /// The position of the last event in the log (0 when empty).
    pub async fn head(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT MAX(seq) FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(q("reading the log's head"))?;
        let max: Option<i64> = row.try_get(0).map_err(q("reading the log's head"))?;
        Ok(max.unwrap_or(0))
    }

    /// A follower's durable cursor, if it has saved one.
    pub async fn cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT seq FROM cursors WHERE name = $1")
            .bind(name.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading a follower's cursor"))?;
        row.map(|r| r.try_get::<i64, _>(0))
            .transpose()
            .map_err(q("reading a follower's cursor"))
    }

    /// Saves a follower's durable cursor (every event up to `seq` is done).
    pub async fn save_cursor(&self, name: &str, seq: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cursors (name, seq) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
        )
        .bind(name.to_string())
        .bind(seq)
        .execute(&self.pool)
        .await
        .map_err(q("saving a follower's cursor"))?;
        Ok(())
    }

    /// Reads events in log order.
    /// Every event the filter matches, in log order, handed to `f` one at a time: read in
    /// pages of [`SCAN_PAGE`], so a fold over a big log never holds more than a page (the
    /// filter's own `limit` is ignored). Returns how many there were.
    pub async fn scan(&self, filter: &EventFilter, mut f: impl FnMut(Event)) -> Result<u64, StoreError> {
        let mut page = filter.clone();
        page.limit = Some(SCAN_PAGE);
        let mut n = 0;
        loop {
            let events = self.events(&page).await?;
            let full = events.len() == SCAN_PAGE as usize;
            for e in events {
                page.after = e.seq;
                n += 1;
                f(e);
            }
            if !full {
                return Ok(n);
            }
        }
    }

    pub async fn events(&self, f: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let mut sql = String::from("SELECT seq, body FROM events WHERE seq > $1");
        let mut n = 1;
        let mut next = |col: &str, sql: &mut String| {
            n += 1;
            sql.push_str(&format!(" AND {col} = ${n}"));
        };
        if f.project.is_some() {
            next("project", &mut sql);
        }
        if f.run.is_some() {
            next("run", &mut sql);
        }
        if f.kind.is_some() {
            next("kind", &mut sql);
        }
        if f.since.is_some() {
            n += 1;
            sql.push_str(&format!(" AND at >= ${n}"));
        }
        if f.until.is_some() {
            n += 1;
            sql.push_str(&format!(" AND at < ${n}"));
        }
        if f.until_seq.is_some() {
            n += 1;
            sql.push_str(&format!(" AND seq <= ${n}"));
        }
        if !f.kinds.is_empty() {
            let list: Vec<String> = (0..f.kinds.len()).map(|i| format!("${}", n + 1 + i)).collect();
            sql.push_str(&format!(" AND kind IN ({})", list.join(", ")));
        }
        sql.push_str(" ORDER BY seq");
        if let Some(l) = f.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(f.after.unwrap_or(0));
        if let Some(p) = &f.project {
            query = query.bind(p.clone());
        }
        if let Some(r) = f.run {
            query = query.bind(r as i64);
        }
        if let Some(k) = &f.kind {
            query = query.bind(k.clone());
        }
        for t in [f.since, f.until].into_iter().flatten() {
            query = query.bind(timefmt::rfc3339(t));
        }
        if let Some(s) = f.until_seq {
            query = query.bind(s);
        }
        for k in &f.kinds {
            query = query.bind(*k);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(q("reading events"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get(0).map_err(q("reading events"))?;
            let body: String = row.try_get(1).map_err(q("reading events"))?;
            let mut e: Event = serde_json::from_str(&body).map_err(|source| StoreError::Corrupt { seq, source })?;
            e.seq = Some(seq);
            out.push(e);
        }
        Ok(out)
    }

    /// The number the next run of `project` gets (runs count per project, from 1).
    pub async fn next_run_number(&self, project: &str) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT MAX(run) FROM events WHERE project = $1")
            .bind(project.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(q("numbering a run"))?;
        let max: Option<i64> = row.try_get(0).map_err(q("numbering a run"))?;
        Ok(max.unwrap_or(0) as u64 + 1)
    }

    /// Moves the SQLite write-ahead log into the main file and truncates it to nothing
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`); returns whether the checkpoint completed (a reader
    /// in another process can hold it back until later). A no-op on PostgreSQL.
    pub async fn checkpoint(&self) -> Result<bool, StoreError> {
        if self.backend != Backend::Sqlite {
            return Ok(true);
        }
        let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await
            .map_err(q("checkpointing the log"))?;
        let busy: i64 = row.try_get(0).map_err(q("checkpointing the log"))?;
        Ok(busy == 0)
    }

    /// How much room the event log takes: for SQLite the database file and its write-ahead
    /// log (in bytes, from SQLite's page counts and the WAL file); for PostgreSQL the size of
    /// the database (`pg_database_size`) and no WAL figure.
    pub async fn size(&self) -> Result<StoreSize, StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let pages: i64 = sqlx::query("PRAGMA page_count")
                    .fetch_one(&self.pool)
                    .await
                    .and_then(|r| r.try_get(0))
                    .map_err(q("measuring the log"))?;
                let page_size: i64 = sqlx::query("PRAGMA page_size")
                    .fetch_one(&self.pool)
                    .await
                    .and_then(|r| r.try_get(0))
                    .map_err(q("measuring the log"))?;
                let file: String = sqlx::query("PRAGMA database_list")
                    .fetch_one(&self.pool)
                    .await
                    .and_then(|r| r.try_get(2))
                    .map_err(q("measuring the log"))?;
                let wal = tokio::fs::metadata(format!("{file}-wal"))
                    .await
                    .map(|m| m.len())
                    .unwrap_or(0);
                Ok(StoreSize {
                    bytes: (pages.max(0) as u64) * (page_size.max(0) as u64),
                    wal_bytes: Some(wal),
                })
            }
            Backend::Postgres => {
                let bytes: i64 = sqlx::query("SELECT pg_database_size(current_database())")
                    .fetch_one(&self.pool)
                    .await
                    .and_then(|r| r.try_get(0))
                    .map_err(q("measuring the log"))?;
                Ok(StoreSize {
                    bytes: bytes.max(0) as u64,
                    wal_bytes: None,
                })
            }
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// What an acknowledged SQLite append survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A power loss: every commit is fsynced (`synchronous=FULL`). The default.
    #[default]
    PowerLoss,
    /// Only a crash of the process: WAL commits are not fsynced (`synchronous=NORMAL`); the
    /// last acknowledged events may be lost on power loss. For benchmarks.
    ProcessCrash,
}

/// What [`Store::size`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSize {
    /// The database itself.
    pub bytes: u64,
    /// SQLite's write-ahead log file (`None` on PostgreSQL).
    pub wal_bytes: Option<u64>,
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use takt_model::{EventKind, JobStatus, RunStatus};

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }

    #[tokio::test]
    async fn sqlite_log_appends_filters_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("takt.db");
        let store = Store::open_sqlite(&path).await.unwrap();
        assert_eq!(store.next_run_number("p").await.unwrap(), 1);
        let s1 = store
            .append(&Event::now("p", Some(1), EventKind::RunStarted))
            .await
            .unwrap();
        let s2 = store
            .append(&Event::now(
                "p",
                Some(1),
                EventKind::JobFinished {
                    job: "build".into(),
                    attempt: 1,
                    status: JobStatus::Success,
                    exit_code: Some(0),
                    failure_reason: None,
                    allow_failure: false,
                    duration_ms: 5,
                    wait_ms: 0,
                    flaky: false,
                },
            ))
            .await
            .unwrap();
        store
            .append(&Event::now("q", Some(7), EventKind::RunStarted))
            .await
            .unwrap();
        assert!(s2 > s1);
        store.close().await;

        let store = Store::open_sqlite(&path).await.unwrap();
        assert_eq!(store.next_run_number("p").await.unwrap(), 2);
        assert_eq!(store.next_run_number("q").await.unwrap(), 8);
        let all = store
            .events(&EventFilter {
                project: Some("p".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].seq, Some(s1));
        let jobs = store
            .events(&EventFilter {
                kind: Some("job_finished".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1);
        assert!(matches!(
            jobs[0].kind,
            EventKind::JobFinished {
                status: JobStatus::Success,
                ..
            }
        ));
        let after = store
            .events(&EventFilter {
                after: Some(s1),
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(after[0].seq, Some(s2));
        let _ = RunStatus::Success;
    }

    /// The write-ahead log does not grow without bound: under a steady load it is cut back
    /// after checkpoints, and `checkpoint()` truncates it; `size()` reports both files.
    #[tokio::test]
    async fn the_wal_is_checkpointed_and_measured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("takt.db");
        let store = Store::open_sqlite(&path).await.unwrap();
        let wal = || {
            std::fs::metadata(dir.path().join("takt.db-wal"))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let note = "x".repeat(2000);
        let mut peak = 0;
        for i in 0..6000u64 {
            let kind = EventKind::CommitSeen {
                commit: format!("{i:040}"),
                branch: Some(note.clone()),
                tag: None,
            };
            store.append(&Event::now("p", Some(i), kind)).await.unwrap();
            peak = peak.max(wal());
        }
        // 6,000 events of 2 KB: without checkpoints the WAL grew past 150 MB; with one every
        // 1,000 appends it stays near what 1,000 appends write (~26 MB here), however long
        // the log grows.
        assert!(peak < 40 << 20, "the WAL grew to {peak} bytes");
        let size = store.size().await.unwrap();
        assert!(size.bytes > 10 << 20, "{size:?}");
        assert!(store.checkpoint().await.unwrap());
        assert_eq!(wal(), 0, "a TRUNCATE checkpoint leaves an empty WAL");
        assert_eq!(store.size().await.unwrap().wal_bytes, Some(0));
    }

    /// An acknowledged append is fsynced: SQLite runs with synchronous=FULL (2) by default
    /// (NORMAL, 1, may lose the last commits on power loss in WAL mode).
    #[tokio::test]
    async fn appends_are_durable_against_power_loss_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let sync = |store: Store| async move {
            let row = sqlx::query("PRAGMA synchronous").fetch_one(&store.pool).await.unwrap();
            row.try_get::<i64, _>(0).unwrap()
        };
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        assert_eq!(sync(store).await, 2);
        let options = StoreOptions {
            durability: Durability::ProcessCrash,
            ..Default::default()
        };
        let store = Store::open_sqlite_with(&dir.path().join("b.db"), options)
            .await
            .unwrap();
        assert_eq!(sync(store).await, 1);
    }
}
