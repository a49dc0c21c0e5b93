//! Schedules: a flow runs every interval or on a cron expression in a time zone, and stores when it is next
//! due (`next_run_at`), so the scheduler compares one indexed column with the time instead of deriving
//! due-ness from when the last run ended (which drifted by each run's length).
//!
//! Existing flows keep their interval and are backfilled so they run when they would have: a flow that never
//! ran is due at once (at its creation time); the others one interval after their last run. A flow whose
//! next time is out of range (an interval stored by hand beyond any date) gets no `next_run_at` and is never
//! due until it is updated.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend, Statement, Value};

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

const DUE_BY_LAST_RUN: &str = "idx_data_flows_due";
const DUE_BY_NEXT_RUN: &str = "idx_data_flows_next_run";

/// Same column types as the first migration's timestamps: microseconds on every backend.
fn timestamp(backend: DatabaseBackend, column: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    match backend {
        DatabaseBackend::MySql => def.custom(Alias::new("DATETIME(6)")),
        _ => def.timestamp_with_time_zone(),
    };
    def
}

/// SQLite alters one column per statement, so every backend gets one statement per column.
async fn add_column(manager: &SchemaManager<'_>, column: ColumnDef) -> Result<(), DbErr> {
    manager
        .alter_table(
            Table::alter()
                .table(DataFlows::Table)
                .add_column(column)
                .to_owned(),
        )
        .await
}

async fn drop_column(manager: &SchemaManager<'_>, column: DataFlows) -> Result<(), DbErr> {
    manager
        .alter_table(
            Table::alter()
                .table(DataFlows::Table)
                .drop_column(column)
                .to_owned(),
        )
        .await
}

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
    manager
        .drop_index(Index::drop().name(name).table(DataFlows::Table).to_owned())
        .await
}

/// Sets `next_run_at` on every existing flow from its last run and interval, in Rust: interval arithmetic
/// on timestamps is written differently by each backend, and SQLite keeps them as text.
async fn backfill(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = manager.get_database_backend();
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
        let values: [Value; 2] = [next.into(), id.into()];
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
            ColumnDef::new(DataFlows::ScheduleCron)
                .string_len(255)
                .null()
                .to_owned(),
        )
        .await?;
        add_column(
            manager,
            ColumnDef::new(DataFlows::ScheduleTz)
                .string_len(64)
                .null()
                .to_owned(),
        )
        .await?;
        add_column(
            manager,
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
        drop_column(manager, DataFlows::NextRunAt).await?;
        drop_column(manager, DataFlows::ScheduleTz).await?;
        drop_column(manager, DataFlows::ScheduleCron).await
    }
}
