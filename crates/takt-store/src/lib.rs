//! The append-only event log — takt's single source of truth — and the views derived from it.
//!
//! One implementation over sqlx's `Any` driver serves both databases: SQLite (embedded default,
//! a file in the data directory) and PostgreSQL (by URL). Queries are portable SQL with `$1`
//! placeholders; only the table definitions differ per database ([`Backend::schema`]).
//! Events are never updated or deleted.

#[cfg(feature = "testing")]
pub mod testing;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};
use std::path::Path;
use std::sync::{Arc, RwLock};
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
            ],
            Backend::Postgres => &[
                "CREATE TABLE IF NOT EXISTS events (seq BIGSERIAL PRIMARY KEY, at TEXT NOT NULL, project TEXT NOT NULL, run BIGINT, kind TEXT NOT NULL, body TEXT NOT NULL)",
                "CREATE INDEX IF NOT EXISTS events_project_run ON events (project, run)",
                "CREATE INDEX IF NOT EXISTS events_kind ON events (kind)",
            ],
        }
    }
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub project: Option<String>,
    pub run: Option<u64>,
    pub kind: Option<String>,
    /// Any of these kinds (in addition to `kind`, when both are given an event must match both).
    pub kinds: Vec<String>,
    /// Only events at or after this time (RFC 3339, UTC).
    pub since: Option<OffsetDateTime>,
    /// Only events before this time.
    pub until: Option<OffsetDateTime>,
    /// Only events with `seq` greater than this (for paging and following).
    pub after: Option<i64>,
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
}

/// A synchronous observer of appended events.
#[derive(Clone)]
pub struct Observer(pub Arc<dyn Fn(&Event) + Send + Sync>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer(..)")
    }
}

/// How many appended events a live follower may fall behind before it must re-read the log.
pub const FOLLOW_CAPACITY: usize = 4096;

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Store::connect(&url).await
    }

    /// Connects to `sqlite://...` or `postgres://...` and creates the schema if it is missing.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let mut opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            // One writer keeps SQLite simple and fast; WAL lets readers in other processes read.
            opts = opts.max_connections(1).after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode=WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous=NORMAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout=10000").execute(&mut *conn).await?;
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
        for stmt in backend.schema() {
            sqlx::query(*stmt)
                .execute(&pool)
                .await
                .map_err(q("creating the schema"))?;
        }
        let (appended, _) = broadcast::channel(FOLLOW_CAPACITY);
        Ok(Store {
            pool,
            backend,
            appended,
            observers: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Appends one event; returns its position in the log.
    pub async fn append(&self, event: &Event) -> Result<i64, StoreError> {
        let body = serde_json::to_string(event).map_err(StoreError::Encode)?;
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
        let mut e = event.clone();
        e.seq = Some(seq);
        if let Ok(obs) = self.observers.read() {
            for o in obs.iter() {
                (o.0)(&e);
            }
        }
        let _ = self.appended.send(e); // nobody following is fine
        Ok(seq)
    }

    /// Calls `f` with every event appended from now on, before the append returns. `f` must be
    /// quick and must not append.
    pub fn observe(&self, f: Observer) {
        if let Ok(mut obs) = self.observers.write() {
            obs.push(f);
        }
    }

    /// Follows the events appended from now on (through this `Store` and its clones).
    pub fn follow(&self) -> broadcast::Receiver<Event> {
        self.appended.subscribe()
    }

    /// Reads events in log order.
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
        for k in &f.kinds {
            query = query.bind(k.clone());
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

    pub async fn close(&self) {
        self.pool.close().await;
    }
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
}
