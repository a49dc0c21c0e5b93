//! Rows of the source as a stream of cells.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::mysql::MySqlRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, TypeInfo, ValueRef};

use super::bind::{bind_mysql, bind_pg, bind_sqlite};
use super::cell::{Cell, Column, ColumnType};
use super::conn::Conn;
use super::error::SqlCopyError;

/// The rows of `sql` (with `parameter` bound, if any), read one at a time: memory does not grow with the
/// result.
pub(crate) fn rows<'a>(
    conn: &'a mut Conn,
    sql: String,
    parameter: Option<Cell>,
    columns: &'a [Column],
) -> BoxStream<'a, Result<Vec<Cell>, SqlCopyError>> {
    let failed = |source| SqlCopyError::Sql {
        what: "cannot read the source".into(),
        source,
    };
    match conn {
        Conn::Postgres(c) => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            if let Some(cell) = &parameter {
                q = bind_pg(q, cell, column_type(cell));
            }
            q.fetch(c)
                .map(move |row| decode(&row.map_err(failed)?, columns, pg_cell))
                .boxed()
        }
        Conn::MySql(c) => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            if let Some(cell) = &parameter {
                q = bind_mysql(q, cell, column_type(cell));
            }
            q.fetch(c)
                .map(move |row| decode(&row.map_err(failed)?, columns, mysql_cell))
                .boxed()
        }
        Conn::Sqlite(c) => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            if let Some(cell) = &parameter {
                q = bind_sqlite(q, cell, column_type(cell));
            }
            q.fetch(c)
                .map(move |row| decode(&row.map_err(failed)?, columns, sqlite_cell))
                .boxed()
        }
    }
}

/// The type of a cursor value (never NULL).
fn column_type(cell: &Cell) -> ColumnType {
    match cell {
        Cell::Bool(_) => ColumnType::Bool,
        Cell::I64(_) => ColumnType::I64,
        Cell::F64(_) => ColumnType::F64,
        Cell::Decimal(_) => ColumnType::Decimal,
        Cell::Null | Cell::Text(_) => ColumnType::Text,
        Cell::Bytes(_) => ColumnType::Bytes,
        Cell::Json(_) => ColumnType::Json,
        Cell::Date(_) => ColumnType::Date,
        Cell::Timestamp(_) => ColumnType::Timestamp,
        Cell::TimestampTz(_) => ColumnType::TimestampTz,
    }
}

fn decode<R>(
    row: &R,
    columns: &[Column],
    cell: fn(&R, usize, &Column) -> Result<Cell, String>,
) -> Result<Vec<Cell>, SqlCopyError> {
    columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            cell(row, i, column).map_err(|message| SqlCopyError::Value {
                column: column.name.clone(),
                message,
            })
        })
        .collect()
}

/// The first value of a PostgreSQL row as a cell of `column`'s type.
pub(crate) fn pg_value(row: &PgRow, column: &Column) -> Result<Cell, SqlCopyError> {
    let mut cells = decode(row, std::slice::from_ref(column), pg_cell)?;
    Ok(cells.pop().unwrap_or(Cell::Null))
}

fn text<E: std::fmt::Display>(error: E) -> String {
    error.to_string()
}

fn pg_cell(row: &PgRow, i: usize, column: &Column) -> Result<Cell, String> {
    if row.try_get_raw(i).map_err(text)?.is_null() {
        return Ok(Cell::Null);
    }
    let t = column.source_type.as_str();
    Ok(match column.ty {
        ColumnType::Bool => Cell::Bool(row.try_get(i).map_err(text)?),
        ColumnType::I64 => Cell::I64(match t {
            "INT2" => row.try_get::<i16, _>(i).map_err(text)?.into(),
            "INT4" => row.try_get::<i32, _>(i).map_err(text)?.into(),
            _ => row.try_get::<i64, _>(i).map_err(text)?,
        }),
        ColumnType::F64 => Cell::F64(match t {
            "FLOAT4" => row.try_get::<f32, _>(i).map_err(text)?.into(),
            _ => row.try_get::<f64, _>(i).map_err(text)?,
        }),
        ColumnType::Decimal => {
            let value: rust_decimal::Decimal = row.try_get(i).map_err(|e| {
                format!("{e} (exact decimals are carried up to 28 digits; cast larger ones to text)")
            })?;
            Cell::Decimal(value.to_string())
        }
        ColumnType::Text => Cell::Text(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::Bytes => Cell::Bytes(row.try_get(i).map_err(text)?),
        ColumnType::Json => Cell::Json(row.try_get(i).map_err(text)?),
        ColumnType::Date => Cell::Date(row.try_get(i).map_err(text)?),
        ColumnType::Timestamp => Cell::Timestamp(row.try_get(i).map_err(text)?),
        ColumnType::TimestampTz => Cell::TimestampTz(row.try_get(i).map_err(text)?),
    })
}

fn mysql_cell(row: &MySqlRow, i: usize, column: &Column) -> Result<Cell, String> {
    if row.try_get_raw(i).map_err(text)?.is_null() {
        return Ok(Cell::Null);
    }
    let t = column.source_type.as_str();
    Ok(match column.ty {
        ColumnType::Bool => Cell::Bool(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::I64 if t.ends_with("UNSIGNED") => {
            let value: u64 = row.try_get_unchecked(i).map_err(text)?;
            Cell::I64(
                i64::try_from(value).map_err(|_| format!("{value} does not fit a signed 64-bit integer"))?,
            )
        }
        ColumnType::I64 => Cell::I64(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::F64 => Cell::F64(match t {
            "FLOAT" => row.try_get_unchecked::<f32, _>(i).map_err(text)?.into(),
            _ => row.try_get_unchecked::<f64, _>(i).map_err(text)?,
        }),
        // DECIMAL comes as its exact text.
        ColumnType::Decimal => Cell::Decimal(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::Text => Cell::Text(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::Bytes => Cell::Bytes(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::Json => json(&row.try_get_unchecked::<String, _>(i).map_err(text)?)?,
        ColumnType::Date => Cell::Date(row.try_get_unchecked::<NaiveDate, _>(i).map_err(text)?),
        ColumnType::Timestamp => Cell::Timestamp(row.try_get_unchecked::<NaiveDateTime, _>(i).map_err(text)?),
        ColumnType::TimestampTz => {
            Cell::TimestampTz(row.try_get_unchecked::<DateTime<Utc>, _>(i).map_err(text)?)
        }
    })
}

fn json(text: &str) -> Result<Cell, String> {
    serde_json::from_str(text)
        .map(Cell::Json)
        .map_err(|e| format!("not JSON: {e}"))
}

/// SQLite values have a storage class of their own, whatever the column's declared type; each is read
/// as the column's type where that is exact.
fn sqlite_cell(row: &SqliteRow, i: usize, column: &Column) -> Result<Cell, String> {
    let raw = row.try_get_raw(i).map_err(text)?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let storage = raw.type_info().name().to_owned();
    Ok(match column.ty {
        ColumnType::Bool => Cell::Bool(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::I64 if storage == "INTEGER" => Cell::I64(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::I64 => {
            let value: String = row.try_get_unchecked(i).map_err(text)?;
            Cell::I64(
                value
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{value}` ({storage}) is not an integer"))?,
            )
        }
        ColumnType::F64 => Cell::F64(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::Decimal => Cell::Decimal(match storage.as_str() {
            "INTEGER" => row.try_get_unchecked::<i64, _>(i).map_err(text)?.to_string(),
            "REAL" => row.try_get_unchecked::<f64, _>(i).map_err(text)?.to_string(),
            _ => {
                let value: String = row.try_get_unchecked(i).map_err(text)?;
                let trimmed = value.trim();
                if trimmed.parse::<f64>().is_err() {
                    return Err(format!("`{value}` is not a decimal number"));
                }
                trimmed.to_owned()
            }
        }),
        ColumnType::Text => Cell::Text(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::Bytes => Cell::Bytes(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::Json => json(&row.try_get_unchecked::<String, _>(i).map_err(text)?)?,
        ColumnType::Date => Cell::Date(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::Timestamp => Cell::Timestamp(row.try_get_unchecked(i).map_err(text)?),
        ColumnType::TimestampTz => Cell::TimestampTz(row.try_get_unchecked(i).map_err(text)?),
    })
}
