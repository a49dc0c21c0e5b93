//! Column definitions the later migrations share. The first migration keeps its own copies: a shipped
//! migration is never edited.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// A UTC timestamp with microseconds on every backend: `timestamptz` on PostgreSQL, `DATETIME(6)` on
/// MySQL/MariaDB (whose plain `timestamp` keeps whole seconds and ends in 2038), text on SQLite.
pub(crate) fn timestamp(backend: DatabaseBackend, column: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    match backend {
        DatabaseBackend::MySql => def.custom(Alias::new("DATETIME(6)")),
        _ => def.timestamp_with_time_zone(),
    };
    def
}

/// Adds one column to `table` unless it is there already. SQLite alters one column per statement, so every
/// backend gets one statement per column; and MySQL/MariaDB commit each `ALTER` on its own, so an upgrade
/// interrupted there leaves some columns added and the migration unrecorded — skipping what exists lets it
/// simply run again.
pub(crate) async fn add_column(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    mut column: ColumnDef,
) -> Result<(), DbErr> {
    let table = table.into_iden();
    if manager
        .has_column(table.to_string(), column.get_column_name())
        .await?
    {
        return Ok(());
    }
    manager
        .alter_table(Table::alter().table(table).add_column(&mut column).to_owned())
        .await
}

/// Drops one column of `table` if it is there (for the same reason as [`add_column`]).
pub(crate) async fn drop_column(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    column: impl IntoIden,
) -> Result<(), DbErr> {
    let (table, column) = (table.into_iden(), column.into_iden());
    if !manager.has_column(table.to_string(), column.to_string()).await? {
        return Ok(());
    }
    manager
        .alter_table(Table::alter().table(table).drop_column(column).to_owned())
        .await
}
