//! The retry columns (`retries`, `retry_backoff_secs`, `retry_at`, `retry_attempt`) for databases whose
//! `run_control` migration ran before those columns were part of it: that migration is recorded there, so
//! it never runs again. Each column is added only where it is missing, so on every other database this
//! changes nothing.

use sea_orm_migration::prelude::*;

use crate::columns::{add_column as add, timestamp};

/// Adds the retry columns where a database lacks them.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DataFlows {
    Table,
    Retries,
    RetryBackoffSecs,
    RetryAt,
    RetryAttempt,
}

// As in the first migration: the trait elides SchemaManager's lifetime, async-trait needs it elided too.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
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
        .await
    }

    /// Nothing: the columns belong to `run_control`, whose own `down` drops them.
    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
