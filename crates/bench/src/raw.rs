//! The floor: a run's rows written by statements executed straight on the same connections flowrun uses
//! (its pool, and on a SQLite file the connection reserved for run writes, see `flowrun_infra::RunWriter`).
//!
//! Same rows, same lifecycle, same guards as flowrun's `SeaOrmRunRepository`, in as few round trips as
//! those semantics allow — with the very SQL it sends (`flowrun_infra::hot_path`, built once from the
//! entities), so the floor cannot drift from what flowrun sends. Only the layers around them are left out:
//! the executor, the repository's retries, the flow.
//!
//! 1. the start: claim the flow (`active_run_id IS NULL` → a marker), insert the run as `pending` with
//!    `started_at` and its lease, move it to `in_progress` and make it the flow's active run — on
//!    PostgreSQL one call of `flowrun_start_run`; on SQLite `BEGIN IMMEDIATE` then one batch with the
//!    `COMMIT`; on MySQL/MariaDB one statement at a time in a transaction;
//! 2. no flow work at all: a Fail run writes a failure text prepared once per invocation (by default the
//!    very text flowrun records for the same failure), so the floor holds only the database work, and
//!    flowrun's figures include capturing and symbolizing its stack trace on every failure;
//! 3. the finish: end the run (guarded by `status = 'in_progress'`) with `ended_at` and the error, and
//!    record `last_run_at`/`last_run_status` on the flow, releasing it — one call of `flowrun_finish_run`
//!    on PostgreSQL, one batch on SQLite, a transaction of two statements on MySQL/MariaDB.
//!
//! A claim or guard that matches no row is an error: the benchmark never expects one.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, Statement, Value};

use crate::Class;
use flowrun_infra::RunWriter;
use flowrun_infra::hot_path::{HotPath, SqliteBatches, Steps};

/// The message a raw Fail run records, like the Fail flow's default one.
pub const FAIL_MESSAGE: &str = "the Fail flow failed as configured";

/// The `error_backtrace` a raw Fail run writes: `text` (what flowrun recorded for the same failure),
/// brought to exactly `bytes` bytes when that is given — cut on a character boundary, or extended with
/// further copies of its backtrace lines.
///
/// The size matters more than the content: over TCP a PostgreSQL statement larger than the socket's send
/// buffer (16 KiB by default on Linux) waits for a delayed ACK, about 40 ms; `--raw-trace-bytes` shows
/// that cliff.
pub fn failure_text(text: &str, bytes: Option<usize>) -> String {
    let Some(bytes) = bytes else {
        return text.to_owned();
    };
    let filler = text
        .split_once("Backtrace:\n")
        .map_or(text, |(_, frames)| frames)
        .to_owned()
        + "\n";
    let mut out = text.to_owned();
    while out.len() < bytes && !filler.trim().is_empty() {
        out.push_str(&filler);
    }
    let mut end = bytes.min(out.len());
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out
}

/// Writes runs with flowrun's statements straight on the driver.
#[derive(Debug)]
pub struct RawWriter {
    db: RunWriter,
    sql: HotPath,
    class: Class,
    lease_owner: String,
    lease: TimeDelta,
    failure_text: String,
}

impl RawWriter {
    /// A writer beginning its transactions where flowrun's do (`db`), for runs of `class`, with leases of
    /// `lease` held by this process. A Fail run records `failure_text` as its `error_backtrace` (see
    /// [`failure_text`]).
    pub fn new(db: RunWriter, class: Class, lease: Duration, failure_text: String) -> anyhow::Result<Self> {
        Ok(Self {
            sql: HotPath::new(db.pool().get_database_backend()),
            db,
            class,
            lease_owner: flowrun_app::lease_owner().as_str().to_owned(),
            lease: TimeDelta::from_std(lease).context("lease length")?,
            failure_text,
        })
    }

    /// Executes one run of the flow with id `flow_id`: start, the flow, finish.
    pub async fn run(&self, flow_id: i64) -> anyhow::Result<()> {
        let run_id = self.start(flow_id).await?;
        let (status, message, backtrace) = match self.class {
            Class::Noop => ("success", None, None),
            Class::Fail => (
                "failed",
                Some(FAIL_MESSAGE.to_owned()),
                Some(self.failure_text.clone()),
            ),
        };
        self.finish(flow_id, run_id, status, message, backtrace).await
    }

    async fn start(&self, flow_id: i64) -> anyhow::Result<i64> {
        let now = Utc::now();
        match &self.sql.steps {
            Steps::Calls { start, .. } => {
                let sql = &self.sql;
                let call = sql.statement(
                    start,
                    [
                        "manual".into(),
                        flow_id.into(),
                        sql.time(None),
                        sql.time(now),
                        sql.time(now),
                        self.lease_owner.as_str().into(),
                        sql.time(now + self.lease),
                        1_i32.into(),
                        "manual".into(),
                        false.into(),
                    ],
                );
                let row = self.db.pool().query_one_raw(call).await?;
                let Some(row) = row else {
                    bail!("flow {flow_id} is held by another run");
                };
                Ok(row.try_get_by_index::<i64>(0)?)
            }
            Steps::Batches(batches) => self.start_batches(batches, flow_id, now).await,
            Steps::Statements => self.start_statements(flow_id, now).await,
        }
    }

    async fn start_batches(
        &self,
        batches: &SqliteBatches,
        flow_id: i64,
        now: chrono::DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        let sql = &self.sql;
        let mut conn = self.db.sqlite_batches().await?.context("a SQLite connection")?;
        conn.batch(sql.statement(&batches.begin, []), false).await?;
        let mut values = vec![flow_id.into()];
        values.extend(self.insert_values(flow_id, now));
        values.push(flow_id.into());
        let results = conn
            .batch(
                Statement::from_sql_and_values(sql.backend(), batches.start_manual.as_str(), values),
                true,
            )
            .await?;
        match results.as_slice() {
            [claim, insert, ..] if claim.rows_affected() == 1 => Ok(insert.last_insert_rowid()),
            _ => bail!("flow {flow_id} is held by another run"),
        }
    }

    async fn start_statements(&self, flow_id: i64, now: chrono::DateTime<Utc>) -> anyhow::Result<i64> {
        let txn = self.db.begin().await?;
        let claimed = txn
            .execute_raw(self.sql.statement(&self.sql.claim, [flow_id.into()]))
            .await?
            .rows_affected();
        if claimed == 0 {
            txn.rollback().await?;
            bail!("flow {flow_id} is held by another run");
        }
        let run_id = self.insert_pending(&txn, flow_id, now).await?;
        txn.execute_raw(self.sql.statement(&self.sql.in_progress, [run_id.into()]))
            .await?;
        txn.execute_raw(
            self.sql
                .statement(&self.sql.activate, [run_id.into(), flow_id.into()]),
        )
        .await?;
        txn.commit().await?;
        Ok(run_id)
    }

    fn insert_values(&self, flow_id: i64, now: chrono::DateTime<Utc>) -> [Value; 8] {
        [
            flow_id.into(),
            self.sql.time(now),
            self.lease_owner.as_str().into(),
            self.sql.time(now + self.lease),
            1_i32.into(),
            "manual".into(),
            self.sql.time(now),
            self.sql.time(now),
        ]
    }

    async fn insert_pending(
        &self,
        txn: &DatabaseTransaction,
        flow_id: i64,
        now: chrono::DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        let insert = self
            .sql
            .statement(&self.sql.insert_pending, self.insert_values(flow_id, now));
        if !self.sql.insert_returns_id() {
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
        let sql = &self.sql;
        let failure_kind = (status == "failed").then_some("error");
        let end_run: [Value; 7] = [
            status.into(),
            sql.time(ended),
            message.into(),
            backtrace.into(),
            failure_kind.into(),
            sql.time(ended),
            run_id.into(),
        ];
        let end_flow: [Value; 6] = [
            sql.time(ended),
            status.into(),
            sql.time(None),
            Option::<i32>::None.into(),
            sql.time(ended),
            flow_id.into(),
        ];
        let ended_run = match &sql.steps {
            Steps::Calls { finish, .. } => {
                let [status, ended, message, backtrace, kind, _, _] = end_run;
                let call = sql.statement(
                    finish,
                    [
                        run_id.into(),
                        flow_id.into(),
                        status,
                        ended,
                        message,
                        backtrace,
                        kind,
                        sql.time(None),
                        Option::<i32>::None.into(),
                        Option::<String>::None.into(),
                        Option::<String>::None.into(),
                    ],
                );
                let row = self.db.pool().query_one_raw(call).await?;
                row.context("flowrun_finish_run returned no row")?
                    .try_get_by_index::<bool>(0)?
            }
            Steps::Batches(batches) => {
                let mut conn = self.db.sqlite_batches().await?.context("a SQLite connection")?;
                let values: Vec<Value> = end_run.into_iter().chain(end_flow).collect();
                let text = &batches.finish[SqliteBatches::finish_index(false, false)];
                let results = conn
                    .batch(
                        Statement::from_sql_and_values(sql.backend(), text.as_str(), values),
                        true,
                    )
                    .await?;
                results.get(1).is_some_and(|end| end.rows_affected() == 1)
            }
            Steps::Statements => {
                let txn = self.db.begin().await?;
                let changed = txn
                    .execute_raw(sql.statement(&sql.end_run, end_run))
                    .await?
                    .rows_affected();
                if changed == 0 {
                    txn.rollback().await?;
                    false
                } else {
                    txn.execute_raw(sql.statement(&sql.end_flow, end_flow)).await?;
                    txn.commit().await?;
                    true
                }
            }
        };
        if !ended_run {
            bail!("run {run_id} is no longer in progress");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_texts_are_brought_to_the_requested_size() {
        let flowrun =
            "Error: boom\n\nBacktrace:\n   0: fail\n             at src/lib.rs:1:1\n      … omitted";
        assert_eq!(failure_text(flowrun, None), flowrun);
        let long = failure_text(flowrun, Some(1000));
        assert_eq!(long.len(), 1000);
        assert!(long.starts_with(flowrun), "{long}");
        assert!(long.contains("omitted\n   0: fail"), "{long}");
        assert_eq!(failure_text(flowrun, Some(5)), "Error");
        assert_eq!(failure_text("é", Some(1)), "", "cut on a character boundary");
    }
}
