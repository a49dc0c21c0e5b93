//! The floor: a run's rows written with hand-written SQL on the same SeaORM pool flowrun uses.
//!
//! Same rows, same lifecycle, same guards as flowrun's `SeaOrmRunRepository`, in as few round trips as
//! those semantics allow:
//!
//! 1. one transaction that claims the flow (`active_run_id IS NULL` → a marker), inserts the run as
//!    `pending` with `started_at` and its lease (`RETURNING id` on PostgreSQL and SQLite, the insert id of
//!    the OK packet on MySQL), moves it to `in_progress` and makes it the flow's active run;
//! 2. the flow itself (nothing for Noop; for Fail, a captured backtrace, as flowrun records one per
//!    failure);
//! 3. one transaction that ends the run (guarded by `status = 'in_progress'`) with `ended_at` and the error,
//!    and records `last_run_at`/`last_run_status` on the flow, releasing it.
//!
//! A claim or guard that matches no row is an error: the benchmark never expects one.

use std::backtrace::Backtrace;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, Statement, TransactionTrait,
    Value,
};

use crate::Class;

/// The message a raw Fail run records, like the Fail flow's default one.
pub const FAIL_MESSAGE: &str = "the Fail flow failed as configured";

/// The statements of one run, with the backend's placeholders.
#[derive(Debug, Clone)]
struct Sql {
    claim: String,
    insert: String,
    in_progress: String,
    activate: String,
    end_run: String,
    end_flow: String,
}

impl Sql {
    fn new(backend: DatabaseBackend) -> Self {
        let returning = if backend == DatabaseBackend::MySql {
            ""
        } else {
            " RETURNING id"
        };
        Self {
            claim: placeholders(
                backend,
                "UPDATE data_flows SET active_run_id = 0 WHERE id = ? AND active_run_id IS NULL",
            ),
            insert: placeholders(
                backend,
                &format!(
                    "INSERT INTO data_flow_runs (data_flow_id, status, started_at, lease_owner, \
                     lease_expires_at, created_at, updated_at) VALUES (?, 'pending', ?, ?, ?, ?, ?){returning}"
                ),
            ),
            in_progress: placeholders(
                backend,
                "UPDATE data_flow_runs SET status = 'in_progress' WHERE id = ?",
            ),
            activate: placeholders(backend, "UPDATE data_flows SET active_run_id = ? WHERE id = ?"),
            end_run: placeholders(
                backend,
                "UPDATE data_flow_runs SET status = ?, ended_at = ?, error_message = ?, error_backtrace = ?, \
                 updated_at = ? WHERE id = ? AND status = 'in_progress'",
            ),
            end_flow: placeholders(
                backend,
                "UPDATE data_flows SET last_run_at = ?, last_run_status = ?, active_run_id = NULL, \
                 updated_at = ? WHERE id = ?",
            ),
        }
    }
}

/// `sql` with its `?` placeholders numbered `$1`, `$2`, … on PostgreSQL. The statements here hold no `?`
/// inside literals.
pub fn placeholders(backend: DatabaseBackend, sql: &str) -> String {
    if backend != DatabaseBackend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes runs with hand-written SQL.
#[derive(Debug)]
pub struct RawWriter {
    db: DatabaseConnection,
    backend: DatabaseBackend,
    sql: Sql,
    class: Class,
    lease_owner: String,
    lease: TimeDelta,
    trace_bytes: usize,
}

impl RawWriter {
    /// A writer on `db` for runs of `class`, with leases of `lease` held by this process. A Fail run's
    /// `error_backtrace` is brought to `trace_bytes` bytes (see [`RawWriter::trace_text`]); 0 keeps it as
    /// captured.
    pub fn new(
        db: DatabaseConnection,
        class: Class,
        lease: Duration,
        trace_bytes: usize,
    ) -> anyhow::Result<Self> {
        let backend = db.get_database_backend();
        Ok(Self {
            backend,
            sql: Sql::new(backend),
            db,
            class,
            lease_owner: flowrun_app::lease_owner().as_str().to_owned(),
            lease: TimeDelta::from_std(lease).context("lease length")?,
            trace_bytes,
        })
    }

    /// The `error_backtrace` of a failed run: the error and the captured backtrace, like flowrun's report.
    ///
    /// flowrun's backtrace is taken deeper in the stack (executor, panic guard, tracing span), so it is a
    /// few KiB longer than one captured here. The size matters far more than the content: over TCP a
    /// statement larger than the socket's send buffer (16 KiB by default on Linux) waits for a delayed ACK,
    /// about 40 ms. So that both modes send the same bytes, the text is cut or extended with further copies
    /// of the trace to exactly `trace_bytes` bytes (on a character boundary) when that is set.
    pub fn trace_text(&self, trace: &str) -> String {
        let mut text = format!("Error: {FAIL_MESSAGE}\n\nBacktrace:\n{trace}");
        if self.trace_bytes == 0 || trace.is_empty() {
            return text;
        }
        while text.len() < self.trace_bytes {
            text.push_str(trace);
        }
        let mut end = self.trace_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text
    }

    fn stmt(&self, sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
        Statement::from_sql_and_values(self.backend, sql, values)
    }

    /// Executes one run of the flow with id `flow_id`: start, the flow, finish.
    pub async fn run(&self, flow_id: i64) -> anyhow::Result<()> {
        let run_id = self.start(flow_id).await?;
        let (status, message, backtrace) = match self.class {
            Class::Noop => ("success", None, None),
            Class::Fail => {
                let trace = Backtrace::force_capture();
                (
                    "failed",
                    Some(FAIL_MESSAGE.to_owned()),
                    Some(self.trace_text(&trace.to_string())),
                )
            }
        };
        self.finish(flow_id, run_id, status, message, backtrace).await
    }

    async fn start(&self, flow_id: i64) -> anyhow::Result<i64> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let claimed = txn
            .execute_raw(self.stmt(&self.sql.claim, [flow_id.into()]))
            .await?
            .rows_affected();
        if claimed == 0 {
            txn.rollback().await?;
            bail!("flow {flow_id} is held by another run");
        }
        let run_id = self.insert_pending(&txn, flow_id, now).await?;
        txn.execute_raw(self.stmt(&self.sql.in_progress, [run_id.into()]))
            .await?;
        txn.execute_raw(self.stmt(&self.sql.activate, [run_id.into(), flow_id.into()]))
            .await?;
        txn.commit().await?;
        Ok(run_id)
    }

    async fn insert_pending(
        &self,
        txn: &DatabaseTransaction,
        flow_id: i64,
        now: chrono::DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        let values: [Value; 6] = [
            flow_id.into(),
            now.into(),
            self.lease_owner.as_str().into(),
            (now + self.lease).into(),
            now.into(),
            now.into(),
        ];
        let insert = self.stmt(&self.sql.insert, values);
        if self.backend == DatabaseBackend::MySql {
            let id = txn.execute_raw(insert).await?.last_insert_id();
            return i64::try_from(id).context("run id out of range");
        }
        let row = txn
            .query_one_raw(insert)
            .await?
            .context("INSERT … RETURNING returned no row")?;
        Ok(row.try_get_by_index::<i64>(0)?)
    }

    async fn finish(
        &self,
        flow_id: i64,
        run_id: i64,
        status: &'static str,
        message: Option<String>,
        backtrace: Option<String>,
    ) -> anyhow::Result<()> {
        let ended = Utc::now();
        let txn = self.db.begin().await?;
        let ended_run = txn
            .execute_raw(self.stmt(
                &self.sql.end_run,
                [
                    status.into(),
                    ended.into(),
                    message.into(),
                    backtrace.into(),
                    ended.into(),
                    run_id.into(),
                ],
            ))
            .await?
            .rows_affected();
        if ended_run == 0 {
            txn.rollback().await?;
            bail!("run {run_id} is no longer in progress");
        }
        txn.execute_raw(self.stmt(
            &self.sql.end_flow,
            [ended.into(), status.into(), ended.into(), flow_id.into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn traces_are_brought_to_the_requested_size() {
        let db = sea_orm::Database::connect("sqlite::memory:")
            .await
            .expect("connects");
        let writer = RawWriter::new(db, Class::Fail, Duration::from_secs(60), 1000).expect("writer");
        let text = writer.trace_text("   0: frame\n");
        assert_eq!(text.len(), 1000);
        assert!(text.starts_with("Error: the Fail flow failed as configured\n\nBacktrace:\n   0: frame"));
    }

    #[test]
    fn postgres_placeholders_are_numbered() {
        assert_eq!(
            placeholders(DatabaseBackend::Postgres, "a = ? AND b = ?"),
            "a = $1 AND b = $2"
        );
        assert_eq!(placeholders(DatabaseBackend::MySql, "a = ?"), "a = ?");
    }
}
