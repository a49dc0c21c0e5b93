//! One typed connection per side: what the query returns, what the sink table holds, plain statements.

use std::str::FromStr;

use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{
    AssertSqlSafe, Column, ConnectOptions, Connection, Executor, Row, SqlSafeStr, Statement, TypeInfo,
};

use super::backend::Backend;
use super::cell::{Column as QueryColumn, ColumnType};
use super::error::{SqlCopyError, sql};
use super::nodelay;
use super::settings::is_identifier;

/// A connection to one backend. Typed (not sqlx's `Any`) so that every type the driver knows is kept.
pub(crate) enum Conn {
    /// PostgreSQL.
    Postgres(PgConnection),
    /// MySQL or MariaDB.
    MySql(MySqlConnection),
    /// SQLite.
    Sqlite(SqliteConnection),
}

impl Conn {
    /// Connects; an SQLite sink file is created when missing.
    pub(crate) async fn connect(
        backend: Backend,
        url: &str,
        side: &'static str,
    ) -> Result<Self, SqlCopyError> {
        let connect = |source| SqlCopyError::Connect { side, source };
        Ok(match backend {
            Backend::Postgres => {
                let mut conn = PgConnection::connect(url).await.map_err(connect)?;
                if side == "sink" {
                    nodelay::set_nodelay(&mut conn).await;
                }
                Self::Postgres(conn)
            }
            Backend::MySql => Self::MySql(MySqlConnection::connect(url).await.map_err(connect)?),
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(connect)?
                    .create_if_missing(side == "sink");
                Self::Sqlite(options.connect().await.map_err(connect)?)
            }
        })
    }

    /// The backend.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::MySql(_) => Backend::MySql,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Runs statements that return nothing, in order.
    pub(crate) async fn execute(&mut self, statement: &str) -> Result<(), SqlCopyError> {
        let what = || format!("`{statement}`");
        let q = AssertSqlSafe(statement.to_owned());
        match self {
            Self::Postgres(c) => c.execute(q).await.map(drop).map_err(sql(what())),
            Self::MySql(c) => c.execute(q).await.map(drop).map_err(sql(what())),
            Self::Sqlite(c) => c.execute(q).await.map(drop).map_err(sql(what())),
        }
    }

    /// The query's columns, mapped to logical types; a type SqlCopy cannot carry fails here, before
    /// anything is written.
    pub(crate) async fn describe(&mut self, query: &str) -> Result<Vec<QueryColumn>, SqlCopyError> {
        let what = "cannot prepare the query";
        let backend = self.backend();
        let q = AssertSqlSafe(query.to_owned());
        let reported: Vec<(String, String)> = match self {
            Self::Postgres(c) => {
                let statement = c.prepare(q.into_sql_str()).await.map_err(sql(what))?;
                named_types(statement.columns())
            }
            Self::MySql(c) => {
                let statement = c.prepare(q.into_sql_str()).await.map_err(sql(what))?;
                let origins: Vec<_> = statement
                    .columns()
                    .iter()
                    .map(|col| {
                        (
                            col.name().to_owned(),
                            col.type_info().name().to_owned(),
                            col.origin(),
                        )
                    })
                    .collect();
                let mut reported = Vec::with_capacity(origins.len());
                for (name, driver_type, origin) in origins {
                    let stringish = matches!(
                        backend.map_type(&driver_type),
                        Some(ColumnType::Text | ColumnType::Bytes)
                    );
                    let declared = match origin.table_column() {
                        Some(origin) if stringish => {
                            mysql_declared_type(c, &origin.table, &origin.name).await
                        }
                        _ => None,
                    };
                    reported.push((name, declared.unwrap_or(driver_type)));
                }
                reported
            }
            Self::Sqlite(c) => {
                let statement = c.prepare(q.into_sql_str()).await.map_err(sql(what))?;
                let origins: Vec<_> = statement
                    .columns()
                    .iter()
                    .map(|col| {
                        (
                            col.name().to_owned(),
                            col.type_info().name().to_owned(),
                            col.origin(),
                        )
                    })
                    .collect();
                let mut reported = Vec::with_capacity(origins.len());
                for (name, driver_type, origin) in origins {
                    // The driver only knows a few declared types; ask SQLite for the declared one.
                    let declared = match origin.table_column() {
                        Some(origin) => sqlite_declared_type(c, &origin.table, &origin.name).await?,
                        None => None,
                    };
                    reported.push((name, declared.unwrap_or(driver_type)));
                }
                reported
            }
        };
        let mut columns = Vec::with_capacity(reported.len());
        for (name, source_type) in reported {
            if !is_identifier(&name) {
                return Err(SqlCopyError::Settings(format!(
                    "the query's column `{name}` is not a plain identifier; alias it (`… AS name`)"
                )));
            }
            let ty = backend
                .map_type(&source_type)
                .ok_or_else(|| SqlCopyError::Unmappable {
                    column: name.clone(),
                    type_name: source_type.clone(),
                })?;
            columns.push(QueryColumn {
                name,
                ty,
                source_type,
            });
        }
        Ok(columns)
    }

    /// The sink table's columns and their type names; empty when the table does not exist.
    pub(crate) async fn table_columns(&mut self, table: &str) -> Result<Vec<(String, String)>, SqlCopyError> {
        let what = format!("cannot read the columns of `{table}`");
        let rows: Vec<(String, String)> = match self {
            Self::Postgres(c) => sqlx::query(
                "SELECT column_name::text, udt_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(c)
            .await
            .map_err(sql(what))?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(sql("cannot read information_schema.columns"))?,
            Self::MySql(c) => sqlx::query(
                "SELECT column_name, data_type FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(c)
            .await
            .map_err(sql(what))?
            .iter()
            // information_schema's text columns are reported as binary by some servers.
            .map(|r| Ok((r.try_get_unchecked(0)?, r.try_get_unchecked(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(sql("cannot read information_schema.columns"))?,
            Self::Sqlite(c) => sqlx::query("SELECT name, type FROM pragma_table_info(?)")
                .bind(table)
                .fetch_all(c)
                .await
                .map_err(sql(what))?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()
                .map_err(sql("cannot read pragma_table_info"))?,
        };
        Ok(rows)
    }
}

fn named_types<C: Column>(columns: &[C]) -> Vec<(String, String)> {
    columns
        .iter()
        .map(|c| (c.name().to_owned(), c.type_info().name().to_owned()))
        .collect()
}

async fn sqlite_declared_type(
    conn: &mut SqliteConnection,
    table: &str,
    column: &str,
) -> Result<Option<String>, SqlCopyError> {
    // The origin may be schema-qualified (`main.t`).
    let table = table.rsplit('.').next().unwrap_or(table);
    let declared: Option<String> = sqlx::query_scalar("SELECT type FROM pragma_table_info(?) WHERE name = ?")
        .bind(table)
        .bind(column)
        .fetch_optional(conn)
        .await
        .map_err(sql(format!(
            "cannot read the declared type of `{table}.{column}`"
        )))?;
    Ok(declared.filter(|d| !d.trim().is_empty()))
}

/// The declared type of a MySQL/MariaDB text or binary column. The driver reports a text column with a
/// binary collation as BLOB, and MariaDB's JSON is a LONGTEXT with a `json_valid` check; the catalog tells
/// them apart. `None` (keep the driver's type) when the catalog cannot be read.
async fn mysql_declared_type(conn: &mut MySqlConnection, table: &str, column: &str) -> Option<String> {
    let table = table.rsplit('.').next().unwrap_or(table);
    let data_type: String = sqlx::query(
        "SELECT DATA_TYPE FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
    )
    .bind(table)
    .bind(column)
    .fetch_optional(&mut *conn)
    .await
    .ok()
    .flatten()
    .and_then(|row| row.try_get_unchecked(0).ok())?;
    // MySQL's CHECK_CONSTRAINTS has no TABLE_NAME; there JSON columns are reported as JSON anyway.
    let json_checked: Option<i64> = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.CHECK_CONSTRAINTS \
         WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CHECK_CLAUSE = CONCAT('json_valid(`', ?, '`)')",
    )
    .bind(table)
    .bind(column)
    .fetch_one(&mut *conn)
    .await
    .ok();
    if json_checked.unwrap_or(0) > 0 {
        Some("json".to_owned())
    } else {
        Some(data_type)
    }
}
