//! A run's recorded `output` (what its flow logged, or its process wrote) and a flow's persisted `state`
//! (what its last successful run saved, such as an incremental copy's cursor), both as text.
//!
//! Existing rows get NULL in both: no output was recorded before, and no flow has state yet.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::columns::{add_column as add, drop_column as drop};

/// Adds `data_flow_runs.output` and `data_flows.state`.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DataFlows {
    Table,
    State,
}

#[derive(DeriveIden)]
enum DataFlowRuns {
    Table,
    Output,
}

/// Text of up to megabytes: `MEDIUMTEXT` on MySQL/MariaDB (whose `TEXT` stops at 64 KiB), `text` elsewhere.
fn long_text(backend: DatabaseBackend, column: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    match backend {
        DatabaseBackend::MySql => def.custom(Alias::new("MEDIUMTEXT")),
        _ => def.text(),
    };
    def.null();
    def
}

// As in the first migration: the trait elides SchemaManager's lifetime, async-trait needs it elided too.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        add(
            manager,
            DataFlowRuns::Table,
            long_text(backend, DataFlowRuns::Output),
        )
        .await?;
        add(manager, DataFlows::Table, long_text(backend, DataFlows::State)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop(manager, DataFlows::Table, DataFlows::State).await?;
        drop(manager, DataFlowRuns::Table, DataFlowRuns::Output).await
    }
}
