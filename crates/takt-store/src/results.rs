//! Health-check results, beside the log: raw results (kept a day) and per-hour and per-day
//! buckets. These are measurements, not facts (a check's state changes are events); they have
//! their own tables, are written in batches and are pruned. The arithmetic of buckets is
//! `takt-monitor`'s; this module only keeps rows.

use crate::{Store, StoreError, q};
use sqlx::Row;

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    pub project: String,
    pub check: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub success: bool,
    pub latency_ms: i64,
}

/// One check's results over an hour (`width_s` 3600) or a day (86400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRow {
    pub project: String,
    pub check: String,
    pub width_s: i64,
    /// Unix seconds.
    pub start_s: i64,
    pub count: i64,
    pub successes: i64,
    pub latency_sum: i64,
    pub latency_min: i64,
    pub latency_max: i64,
    /// The latency sketch's stored form (`takt_monitor::aggregate::Sketch::encode`).
    pub sketch: String,
}

pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS check_results (project TEXT NOT NULL, check_name TEXT NOT NULL, at_ms BIGINT NOT NULL, success BIGINT NOT NULL, latency_ms BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS check_results_at ON check_results (at_ms)",
    "CREATE TABLE IF NOT EXISTS check_buckets (project TEXT NOT NULL, check_name TEXT NOT NULL, width_s BIGINT NOT NULL, start_s BIGINT NOT NULL, count BIGINT NOT NULL, successes BIGINT NOT NULL, latency_sum BIGINT NOT NULL, latency_min BIGINT NOT NULL, latency_max BIGINT NOT NULL, sketch TEXT NOT NULL, PRIMARY KEY (project, check_name, width_s, start_s))",
    // Compaction and the status page read by width and time, across checks.
    "CREATE INDEX IF NOT EXISTS check_buckets_time ON check_buckets (width_s, start_s)",
];

macro_rules! bucket_columns {
    () => {
        "project, check_name, width_s, start_s, count, successes, latency_sum, latency_min, latency_max, sketch"
    };
}

fn bucket(r: &sqlx::any::AnyRow) -> Result<BucketRow, sqlx::Error> {
    Ok(BucketRow {
        project: r.try_get(0)?,
        check: r.try_get(1)?,
        width_s: r.try_get(2)?,
        start_s: r.try_get(3)?,
        count: r.try_get(4)?,
        successes: r.try_get(5)?,
        latency_sum: r.try_get(6)?,
        latency_min: r.try_get(7)?,
        latency_max: r.try_get(8)?,
        sketch: r.try_get(9)?,
    })
}

impl Store {
    /// Writes `results` and puts `buckets` in place of the stored ones of the same check,
    /// width and start, in one transaction.
    pub async fn write_results(&self, results: &[ResultRow], buckets: &[BucketRow]) -> Result<(), StoreError> {
        let doing = "writing check results";
        let mut tx = self.pool.begin().await.map_err(q(doing))?;
        // Many rows per statement: one statement per row cost 100 µs each.
        for chunk in results.chunks(ROWS_PER_STATEMENT) {
            let sql = values_sql(
                "INSERT INTO check_results (project, check_name, at_ms, success, latency_ms) VALUES ",
                5,
                chunk.len(),
                "",
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                query = query
                    .bind(r.project.clone())
                    .bind(r.check.clone())
                    .bind(r.at_ms)
                    .bind(i64::from(r.success))
                    .bind(r.latency_ms);
            }
            query.execute(&mut *tx).await.map_err(q(doing))?;
        }
        put_buckets(&mut tx, buckets).await?;
        tx.commit().await.map_err(q(doing))?;
        Ok(())
    }

    /// One stored bucket.
    pub async fn bucket(
        &self,
        project: &str,
        check: &str,
        width_s: i64,
        start_s: i64,
    ) -> Result<Option<BucketRow>, StoreError> {
        let doing = "reading a check's bucket";
        let row = sqlx::query(concat!(
            "SELECT ",
            bucket_columns!(),
            " FROM check_buckets WHERE project = $1 AND check_name = $2 AND width_s = $3 AND start_s = $4"
        ))
        .bind(project.to_string())
        .bind(check.to_string())
        .bind(width_s)
        .bind(start_s)
        .fetch_optional(&self.pool)
        .await
        .map_err(q(doing))?;
        row.map(|r| bucket(&r)).transpose().map_err(q(doing))
    }

    /// The buckets of `width_s` that start in `[from_s, to_s)`, of `project` (every project's
    /// when `None`), by project, check and start.
    pub async fn buckets(
        &self,
        project: Option<&str>,
        width_s: i64,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<BucketRow>, StoreError> {
        let doing = "reading checks' buckets";
        let rows = sqlx::query(concat!(
            "SELECT ",
            bucket_columns!(),
            " FROM check_buckets WHERE ($1 = '' OR project = $1) AND width_s = $2 AND start_s >= $3 AND start_s < $4 ORDER BY project, check_name, start_s"
        ))
        .bind(project.unwrap_or("").to_string())
        .bind(width_s)
        .bind(from_s)
        .bind(to_s)
        .fetch_all(&self.pool)
        .await
        .map_err(q(doing))?;
        rows.iter().map(bucket).collect::<Result<_, _>>().map_err(q(doing))
    }

    /// Each check's counts per bucket, hours and days, from `from_s` on: (project, check, day
    /// start, count, successes), an hour's under its day. What the status page's bars need,
    /// without the sketches; read through the (width, start) index.
    pub async fn daily_counts(&self, from_s: i64) -> Result<Vec<(String, String, i64, i64, i64)>, StoreError> {
        let doing = "reading checks' daily counts";
        let rows = sqlx::query(
            "SELECT project, check_name, start_s - (start_s % 86400), count, successes \
             FROM check_buckets WHERE width_s IN (3600, 86400) AND start_s >= $1",
        )
        .bind(from_s)
        .fetch_all(&self.pool)
        .await
        .map_err(q(doing))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(q(doing))
    }

    /// Compaction, in one transaction: deletes raw results before `results_before_ms`, puts
    /// `days` in place (hour buckets merged into them), deletes the hour buckets that start
    /// before `hours_before_s` (those merged) and day buckets before `days_before_s`.
    pub async fn compact_results(
        &self,
        results_before_ms: i64,
        days: &[BucketRow],
        hours_before_s: i64,
        days_before_s: i64,
    ) -> Result<(), StoreError> {
        let doing = "compacting check results";
        let mut tx = self.pool.begin().await.map_err(q(doing))?;
        sqlx::query("DELETE FROM check_results WHERE at_ms < $1")
            .bind(results_before_ms)
            .execute(&mut *tx)
            .await
            .map_err(q(doing))?;
        put_buckets(&mut tx, days).await?;
        for (width, before) in [(3600_i64, hours_before_s), (86_400, days_before_s)] {
            sqlx::query("DELETE FROM check_buckets WHERE width_s = $1 AND start_s < $2")
                .bind(width)
                .bind(before)
                .execute(&mut *tx)
                .await
                .map_err(q(doing))?;
        }
        tx.commit().await.map_err(q(doing))?;
        Ok(())
    }

    /// How many raw results are kept (for tests and metrics).
    pub async fn result_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM check_results")
            .fetch_one(&self.pool)
            .await
            .map_err(q("counting check results"))?;
        row.try_get(0).map_err(q("counting check results"))
    }

    /// SQLite: gives the space of deleted rows back to the file system (`VACUUM`); nothing
    /// on PostgreSQL, whose autovacuum does it.
    pub async fn vacuum(&self) -> Result<(), StoreError> {
        if self.backend == crate::Backend::Sqlite {
            sqlx::query("VACUUM")
                .execute(&self.pool)
                .await
                .map_err(q("vacuuming"))?;
        }
        Ok(())
    }
}

/// `head` then `rows` tuples of `columns` numbered placeholders (`($1, $2), ($3, $4)`), then
/// `tail`: built from constants only, every value is bound.
fn values_sql(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    let mut sql = String::from(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(r * columns + c + 1).to_string());
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

/// Rows per multi-row statement (10 columns each: well under every database's limit).
const ROWS_PER_STATEMENT: usize = 200;

/// Puts `buckets` in place of the stored ones with the same keys (which must differ from each
/// other: one statement may not update a row twice).
async fn put_buckets(tx: &mut sqlx::Transaction<'_, sqlx::Any>, buckets: &[BucketRow]) -> Result<(), StoreError> {
    for chunk in buckets.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            concat!("INSERT INTO check_buckets (", bucket_columns!(), ") VALUES "),
            10,
            chunk.len(),
            " ON CONFLICT (project, check_name, width_s, start_s) DO UPDATE SET count = excluded.count, \
             successes = excluded.successes, latency_sum = excluded.latency_sum, latency_min = excluded.latency_min, \
             latency_max = excluded.latency_max, sketch = excluded.sketch",
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in chunk {
            query = query
                .bind(b.project.clone())
                .bind(b.check.clone())
                .bind(b.width_s)
                .bind(b.start_s)
                .bind(b.count)
                .bind(b.successes)
                .bind(b.latency_sum)
                .bind(b.latency_min)
                .bind(b.latency_max)
                .bind(b.sketch.clone());
        }
        query.execute(&mut **tx).await.map_err(q("writing checks' buckets"))?;
    }
    Ok(())
}
