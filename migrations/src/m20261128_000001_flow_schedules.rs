//! Schedules: a flow runs every interval or on a cron expression in a time zone, and stores when it is next
//! due (`next_run_at`), so the scheduler compares one indexed column with the time instead of deriving
//! due-ness from when the last run ended (which drifted by each run's length).
//!
//! Existing flows keep their interval and are backfilled so they run when they would have: a flow that never
//! ran is due at once (at its creation time); the others one interval after their last run. Intervals above
//! a hundred years (accepted by earlier releases, and the cause of scheduler panics) are lowered to a
//! hundred years, the longest flowrun accepts now: such a flow was never going to come due either way.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend, Statement, Value};

use crate::columns::{add_column, drop_column, timestamp};

/// Adds `schedule_cron`, `schedule_tz` and `next_run_at` to `data_flows`.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DataFlows {
    Table,
    Enabled,
    LastRunAt,
    ScheduleCron,
    ScheduleTz,
    NextRunAt,
}

/// A hundred years, as `flowrun_domain::MAX_INTERVAL_SECS` (a migration keeps its own copy: it must mean
/// the same whatever later releases change).
const MAX_INTERVAL_SECS: i64 = 100 * 365 * 86_400;

const DUE_BY_LAST_RUN: &str = "idx_data_flows_due";
const DUE_BY_NEXT_RUN: &str = "idx_data_flows_next_run";

async fn index(manager: &SchemaManager<'_>, name: &str, second: DataFlows) -> Result<(), DbErr> {
    manager
        .create_index(
            Index::create()
                .if_not_exists()
                .name(name)
                .table(DataFlows::Table)
                .col(DataFlows::Enabled)
                .col(second)
                .to_owned(),
        )
        .await
}

async fn drop_index(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    // Only if it exists, so an upgrade interrupted on MySQL (which commits each DDL on its own) can run again.
    if !manager.has_index("data_flows", name).await? {
        return Ok(());
    }
    manager
        .drop_index(Index::drop().name(name).table(DataFlows::Table).to_owned())
        .await
}

/// Sets `next_run_at` on every existing flow from its last run and interval, in Rust: interval arithmetic
/// on timestamps is written differently by each backend, and SQLite keeps them as text.
async fn backfill(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = manager.get_database_backend();
    db.execute_unprepared(&format!(
        "UPDATE data_flows SET run_interval_secs = {MAX_INTERVAL_SECS} WHERE run_interval_secs > {MAX_INTERVAL_SECS}"
    ))
    .await?;
    db.execute_unprepared("UPDATE data_flows SET next_run_at = created_at WHERE last_run_at IS NULL")
        .await?;
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT id, last_run_at, run_interval_secs FROM data_flows WHERE last_run_at IS NOT NULL",
        ))
        .await?;
    let update = match backend {
        DatabaseBackend::Postgres => "UPDATE data_flows SET next_run_at = $1 WHERE id = $2",
        _ => "UPDATE data_flows SET next_run_at = ? WHERE id = ?",
    };
    for row in rows {
        let id: i64 = row.try_get("", "id")?;
        let last: chrono::DateTime<chrono::Utc> = row.try_get("", "last_run_at")?;
        let interval: i64 = row.try_get("", "run_interval_secs")?;
        let next = chrono::TimeDelta::try_seconds(interval).and_then(|step| last.checked_add_signed(step));
        // MySQL drivers send a UTC time as a TIMESTAMP, whose range ends in 2038; a DATETIME holds any year.
        let next: Value = match backend {
            DatabaseBackend::MySql => next.map(|at| at.naive_utc()).into(),
            _ => next.into(),
        };
        let values: [Value; 2] = [next, id.into()];
        db.execute_raw(Statement::from_sql_and_values(backend, update, values))
            .await?;
    }
    Ok(())
}

// As in the first migration: the trait elides SchemaManager's lifetime, async-trait needs it elided too.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        add_column(
            manager,
            DataFlows::Table,
            ColumnDef::new(DataFlows::ScheduleCron)
                .string_len(255)
                .null()
                .to_owned(),
        )
        .await?;
        add_column(
            manager,
            DataFlows::Table,
            ColumnDef::new(DataFlows::ScheduleTz)
                .string_len(64)
                .null()
                .to_owned(),
        )
        .await?;
        add_column(
            manager,
            DataFlows::Table,
            timestamp(backend, DataFlows::NextRunAt).null().to_owned(),
        )
        .await?;
        backfill(manager).await?;
        drop_index(manager, DUE_BY_LAST_RUN).await?;
        index(manager, DUE_BY_NEXT_RUN, DataFlows::NextRunAt).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_index(manager, DUE_BY_NEXT_RUN).await?;
        index(manager, DUE_BY_LAST_RUN, DataFlows::LastRunAt).await?;
        // A cron flow cannot be expressed by the older schema; it keeps the interval stored beside it.
        drop_column(manager, DataFlows::Table, DataFlows::NextRunAt).await?;
        drop_column(manager, DataFlows::Table, DataFlows::ScheduleTz).await?;
        drop_column(manager, DataFlows::Table, DataFlows::ScheduleCron).await
    }
}
