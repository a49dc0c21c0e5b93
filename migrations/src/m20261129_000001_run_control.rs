//! Run control: a flow's timeout and retry policy (`retries`, `retry_backoff_secs`) with the retry it has
//! pending (`retry_at`, `retry_attempt`), and on each run how it was started (`triggered_by`, `attempt`), why it failed
//! (`failure_kind`) and whether someone asked to cancel it (`cancel_requested_at`, `cancel_requested_by`).
//!
//! Existing runs keep their rows: they get `attempt` 1 and `triggered_by` `manual` (which of them the scheduler
//! started was never recorded), and a failed run's `failure_kind` is derived from its message — `abandoned`
//! for the reaper's, `interrupted` for a shutdown's, `panic` for a panic, `error` otherwise.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

use crate::columns::{add_column as add, drop_column as drop, timestamp};

/// Adds the run-control columns.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DataFlows {
    Table,
    TimeoutSecs,
    Retries,
    RetryBackoffSecs,
    RetryAt,
    RetryAttempt,
}

#[derive(DeriveIden)]
enum DataFlowRuns {
    Table,
    Attempt,
    TriggeredBy,
    FailureKind,
    CancelRequestedAt,
    CancelRequestedBy,
}

/// The values `triggered_by` may hold (`trigger` is a reserved word in MySQL).
const TRIGGERS: [&str; 4] = ["schedule", "manual", "retry", "api"];
/// The values `failure_kind` may hold.
const FAILURE_KINDS: [&str; 6] = [
    "error",
    "panic",
    "timeout",
    "cancelled",
    "interrupted",
    "abandoned",
];

// As in the first migration: the trait elides SchemaManager's lifetime, async-trait needs it elided too.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        add(
            manager,
            DataFlows::Table,
            ColumnDef::new(DataFlows::TimeoutSecs)
                .big_integer()
                .null()
                .check(Expr::col(DataFlows::TimeoutSecs).gt(0))
                .to_owned(),
        )
        .await?;
        add(
            manager,
            DataFlows::Table,
            ColumnDef::new(DataFlows::Retries)
                .integer()
                .not_null()
                .default(0)
                .check(Expr::col(DataFlows::Retries).gte(0))
                .to_owned(),
        )
        .await?;
        add(
            manager,
            DataFlows::Table,
            ColumnDef::new(DataFlows::RetryBackoffSecs)
                .big_integer()
                .null()
                .check(Expr::col(DataFlows::RetryBackoffSecs).gt(0))
                .to_owned(),
        )
        .await?;
        add(
            manager,
            DataFlows::Table,
            timestamp(backend, DataFlows::RetryAt).null().to_owned(),
        )
        .await?;
        add(
            manager,
            DataFlows::Table,
            ColumnDef::new(DataFlows::RetryAttempt)
                .integer()
                .null()
                .to_owned(),
        )
        .await?;
        add(
            manager,
            DataFlowRuns::Table,
            ColumnDef::new(DataFlowRuns::Attempt)
                .integer()
                .not_null()
                .default(1)
                .check(Expr::col(DataFlowRuns::Attempt).gte(1))
                .to_owned(),
        )
        .await?;
        add(
            manager,
            DataFlowRuns::Table,
            ColumnDef::new(DataFlowRuns::TriggeredBy)
                .string_len(16)
                .not_null()
                .default("manual")
                .check(Expr::col(DataFlowRuns::TriggeredBy).is_in(TRIGGERS))
                .to_owned(),
        )
        .await?;
        add(
            manager,
            DataFlowRuns::Table,
            ColumnDef::new(DataFlowRuns::FailureKind)
                .string_len(16)
                .null()
                .check(Expr::col(DataFlowRuns::FailureKind).is_in(FAILURE_KINDS))
                .to_owned(),
        )
        .await?;
        add(
            manager,
            DataFlowRuns::Table,
            timestamp(backend, DataFlowRuns::CancelRequestedAt)
                .null()
                .to_owned(),
        )
        .await?;
        add(
            manager,
            DataFlowRuns::Table,
            ColumnDef::new(DataFlowRuns::CancelRequestedBy)
                .string_len(255)
                .null()
                .to_owned(),
        )
        .await?;
        let db = manager.get_connection();
        for (kind, condition) in [
            ("abandoned", "error_message LIKE 'run abandoned:%'"),
            ("interrupted", "error_message LIKE 'interrupted:%'"),
            ("panic", "error_message LIKE 'flow panicked:%'"),
            ("error", "failure_kind IS NULL"),
        ] {
            db.execute_unprepared(&format!(
                "UPDATE data_flow_runs SET failure_kind = '{kind}' WHERE status = 'failed' AND {condition}"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop(manager, DataFlowRuns::Table, DataFlowRuns::CancelRequestedBy).await?;
        drop(manager, DataFlowRuns::Table, DataFlowRuns::CancelRequestedAt).await?;
        drop(manager, DataFlowRuns::Table, DataFlowRuns::FailureKind).await?;
        drop(manager, DataFlowRuns::Table, DataFlowRuns::TriggeredBy).await?;
        drop(manager, DataFlowRuns::Table, DataFlowRuns::Attempt).await?;
        drop(manager, DataFlows::Table, DataFlows::RetryAttempt).await?;
        drop(manager, DataFlows::Table, DataFlows::RetryAt).await?;
        drop(manager, DataFlows::Table, DataFlows::RetryBackoffSecs).await?;
        drop(manager, DataFlows::Table, DataFlows::Retries).await?;
        drop(manager, DataFlows::Table, DataFlows::TimeoutSecs).await
    }
}
