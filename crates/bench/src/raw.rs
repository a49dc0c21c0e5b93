//! The floor: a run's rows written by statements executed straight on the same SeaORM connections flowrun
//! uses (its pool, and on a SQLite file the connection reserved for run writes, see
//! `flowrun_infra::RunWriter`).
//!
//! Same rows, same lifecycle, same guards as flowrun's `SeaOrmRunRepository`, in as few round trips as
//! those semantics allow — with the very statements it executes (`flowrun_infra::hot_path`, built once from
//! the entities), so the floor cannot drift from what flowrun sends. Only the layers around them are left
//! out: the executor, the repository's retries, the flow.
//!
//! 1. one transaction that claims the flow (`active_run_id IS NULL` → a marker), inserts the run as
//!    `pending` with `started_at` and its lease (`RETURNING id` on PostgreSQL, the driver's insert id on
//!    MySQL and SQLite), moves it to `in_progress` and makes it the flow's active run;
//! 2. no flow work at all: a Fail run writes a failure text prepared once per invocation (by default the
//!    very text flowrun records for the same failure), so the floor holds only the database work, and
//!    flowrun's figures include capturing and symbolizing its stack trace on every failure;
//! 3. one transaction that ends the run (guarded by `status = 'in_progress'`) with `ended_at` and the error,
//!    and records `last_run_at`/`last_run_status` on the flow, releasing it.
//!
//! A claim or guard that matches no row is an error: the benchmark never expects one.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, Value};

use crate::Class;
use flowrun_infra::RunWriter;
use flowrun_infra::hot_path::HotPath;

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

    async fn insert_pending(
        &self,
        txn: &DatabaseTransaction,
        flow_id: i64,
        now: chrono::DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        let values: [Value; 8] = [
            flow_id.into(),
            self.sql.time(now),
            self.lease_owner.as_str().into(),
            self.sql.time(now + self.lease),
            1_i32.into(),
            "manual".into(),
            self.sql.time(now),
            self.sql.time(now),
        ];
        let insert = self.sql.statement(&self.sql.insert_pending, values);
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
        let txn = self.db.begin().await?;
        let ended_run = txn
            .execute_raw(self.sql.statement(
                &self.sql.end_run,
                [
                    status.into(),
                    self.sql.time(ended),
                    message.into(),
                    backtrace.into(),
                    (status == "failed").then_some("error").into(),
                    self.sql.time(ended),
                    run_id.into(),
                ],
            ))
            .await?
            .rows_affected();
        if ended_run == 0 {
            txn.rollback().await?;
            bail!("run {run_id} is no longer in progress");
        }
        txn.execute_raw(self.sql.statement(
            &self.sql.end_flow,
            [
                self.sql.time(ended),
                status.into(),
                self.sql.time(None),
                Option::<i32>::None.into(),
                self.sql.time(ended),
                flow_id.into(),
            ],
        ))
        .await?;
        txn.commit().await?;
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
