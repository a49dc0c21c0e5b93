//! The index the reaper searches holds only live runs.
//!
//! `idx_data_flow_runs_lease` covered `(status, lease_expires_at)` for every run ever recorded, so each of a
//! run's three status changes moved an entry in an index that grows with the history. The reaper only ever
//! looks for `in_progress` runs, so on PostgreSQL and SQLite a partial index over those replaces it: it
//! holds as many entries as runs are live, whatever the history. Measured with callgrind on SQLite, a run
//! executes 2 % fewer instructions on an empty database and 6 % fewer with 1,000,000 past runs
//! (`docs/performance.md`). MySQL and MariaDB have no partial indexes and keep the full one.
//!
//! Building the index reads the table once and blocks writes to it meanwhile (about a second per million
//! runs); apply it while no flow is running.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// Replaces the full lease index with a partial one on PostgreSQL and SQLite.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

const FULL: &str = "idx_data_flow_runs_lease";
const FULL_COLUMNS: &str = "(status, lease_expires_at)";
const LIVE: &str = "idx_data_flow_runs_live_lease";
const LIVE_COLUMNS: &str = "(lease_expires_at) WHERE status = 'in_progress'";

/// Drops index `old` and creates `new` on `data_flow_runs`, except on MySQL, which keeps the full index.
async fn replace_index(
    manager: &SchemaManager<'_>,
    old: &str,
    new: &str,
    columns: &str,
) -> Result<(), DbErr> {
    if manager.get_database_backend() == DatabaseBackend::MySql {
        return Ok(());
    }
    let db = manager.get_connection();
    db.execute_unprepared(&format!("DROP INDEX IF EXISTS {old}"))
        .await?;
    db.execute_unprepared(&format!(
        "CREATE INDEX IF NOT EXISTS {new} ON data_flow_runs {columns}"
    ))
    .await?;
    Ok(())
}

// As in the first migration: the trait elides SchemaManager's lifetime, async-trait needs it elided too.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace_index(manager, FULL, LIVE, LIVE_COLUMNS).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        replace_index(manager, LIVE, FULL, FULL_COLUMNS).await
    }
}
