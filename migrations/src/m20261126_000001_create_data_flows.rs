//! `data_flows` and `data_flow_runs`, with the constraints and indexes the executor, the history and the
//! scheduler rely on.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// Creates both tables.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DataFlows {
    Table,
    Id,
    Name,
    Description,
    Enabled,
    Configuration,
    RunIntervalSecs,
    LastRunAt,
    LastRunStatus,
    ActiveRunId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum DataFlowRuns {
    Table,
    Id,
    DataFlowId,
    Status,
    StartedAt,
    EndedAt,
    ErrorMessage,
    ErrorBacktrace,
    LeaseOwner,
    LeaseExpiresAt,
    CreatedAt,
    UpdatedAt,
}

/// A UTC timestamp with at least microsecond precision on every backend: `timestamptz` on PostgreSQL,
/// `DATETIME(6)` on MySQL/MariaDB (whose plain `timestamp` keeps whole seconds and ends in 2038), text
/// on SQLite.
fn timestamp(backend: DatabaseBackend, column: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    match backend {
        DatabaseBackend::MySql => def.custom(Alias::new("DATETIME(6)")),
        _ => def.timestamp_with_time_zone(),
    };
    def
}

/// MySQL tables get utf8mb4 (every Unicode character) with a binary collation, so names compare exactly as
/// on PostgreSQL and SQLite.
fn table(backend: DatabaseBackend, name: impl IntoIden) -> TableCreateStatement {
    let mut table = Table::create();
    table.table(name).if_not_exists();
    if backend == DatabaseBackend::MySql {
        table.character_set("utf8mb4").collate("utf8mb4_bin");
    }
    table
}

/// Unbounded text: MySQL's `TEXT` stops at 64 KiB, so it gets `MEDIUMTEXT` (16 MiB).
fn long_text(backend: DatabaseBackend, column: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    match backend {
        DatabaseBackend::MySql => def.custom(Alias::new("MEDIUMTEXT")),
        _ => def.text(),
    };
    def
}

// sea-orm-migration's trait elides SchemaManager's lifetime; spelling it out breaks async-trait's expansion.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                table(backend, DataFlows::Table)
                    .col(
                        ColumnDef::new(DataFlows::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(DataFlows::Name)
                            .string_len(200)
                            .not_null()
                            .unique_key(),
                    )
                    .col(long_text(backend, DataFlows::Description).not_null())
                    .col(ColumnDef::new(DataFlows::Enabled).boolean().not_null())
                    .col(long_text(backend, DataFlows::Configuration).not_null())
                    .col(
                        ColumnDef::new(DataFlows::RunIntervalSecs)
                            .big_integer()
                            .not_null()
                            .check(Expr::col(DataFlows::RunIntervalSecs).gt(0)),
                    )
                    .col(timestamp(backend, DataFlows::LastRunAt).null())
                    .col(
                        ColumnDef::new(DataFlows::LastRunStatus)
                            .string_len(16)
                            .null()
                            .check(Expr::col(DataFlows::LastRunStatus).is_in(["success", "failed"])),
                    )
                    .col(ColumnDef::new(DataFlows::ActiveRunId).big_integer().null())
                    .col(timestamp(backend, DataFlows::CreatedAt).not_null())
                    .col(timestamp(backend, DataFlows::UpdatedAt).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_data_flows_due")
                    .table(DataFlows::Table)
                    .col(DataFlows::Enabled)
                    .col(DataFlows::LastRunAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                table(backend, DataFlowRuns::Table)
                    .col(
                        ColumnDef::new(DataFlowRuns::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(DataFlowRuns::DataFlowId).big_integer().not_null())
                    .col(
                        ColumnDef::new(DataFlowRuns::Status)
                            .string_len(16)
                            .not_null()
                            .check(Expr::col(DataFlowRuns::Status).is_in([
                                "pending",
                                "in_progress",
                                "success",
                                "failed",
                            ])),
                    )
                    .col(timestamp(backend, DataFlowRuns::StartedAt).not_null())
                    .col(timestamp(backend, DataFlowRuns::EndedAt).null())
                    .col(long_text(backend, DataFlowRuns::ErrorMessage).null())
                    .col(long_text(backend, DataFlowRuns::ErrorBacktrace).null())
                    .col(ColumnDef::new(DataFlowRuns::LeaseOwner).string_len(255).null())
                    .col(timestamp(backend, DataFlowRuns::LeaseExpiresAt).null())
                    .col(timestamp(backend, DataFlowRuns::CreatedAt).not_null())
                    .col(timestamp(backend, DataFlowRuns::UpdatedAt).not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_data_flow_runs_data_flow")
                            .from(DataFlowRuns::Table, DataFlowRuns::DataFlowId)
                            .to(DataFlows::Table, DataFlows::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_data_flow_runs_history")
                    .table(DataFlowRuns::Table)
                    .col(DataFlowRuns::DataFlowId)
                    .col(DataFlowRuns::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_data_flow_runs_lease")
                    .table(DataFlowRuns::Table)
                    .col(DataFlowRuns::Status)
                    .col(DataFlowRuns::LeaseExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DataFlowRuns::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(DataFlows::Table).to_owned())
            .await
    }
}
