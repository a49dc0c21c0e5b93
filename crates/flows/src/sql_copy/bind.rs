//! Cells as statement parameters, per backend.

use std::borrow::Cow;

use sqlx::mysql::MySql;
use sqlx::postgres::Postgres;
use sqlx::query::Query;
use sqlx::sqlite::Sqlite;
use sqlx::{Database, Encode, Type};

use super::cell::{Cell, ColumnType};

/// A statement being given its parameters.
pub(crate) type Q<'q, DB> = Query<'q, DB, <DB as Database>::Arguments>;

/// PostgreSQL refuses NUL in text; it becomes U+FFFD, as flowrun does for error texts.
pub(crate) fn without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// JSON as text; for PostgreSQL, whose `jsonb` refuses `\u0000`, with NUL replaced by U+FFFD.
pub(crate) fn json_text(value: &serde_json::Value, postgres: bool) -> String {
    let text = value.to_string();
    if postgres && text.contains("\\u0000") {
        text.replace("\\u0000", "\u{FFFD}")
    } else {
        text
    }
}

/// Binds a NULL of the column's type. The type matters: drivers cache a statement with the parameter
/// types of its first use, so a column's parameter must have one type whatever its value.
fn bind_null<'q, DB>(q: Q<'q, DB>, ty: ColumnType) -> Q<'q, DB>
where
    DB: Database,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<bool>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<f64>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<Vec<u8>>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<chrono::NaiveDate>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<chrono::NaiveDateTime>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<chrono::DateTime<chrono::Utc>>: Encode<'a, DB> + Type<DB>,
{
    match ty {
        ColumnType::Bool => q.bind(None::<bool>),
        ColumnType::I64 => q.bind(None::<i64>),
        ColumnType::F64 => q.bind(None::<f64>),
        ColumnType::Decimal | ColumnType::Text | ColumnType::Json => q.bind(None::<String>),
        ColumnType::Bytes => q.bind(None::<Vec<u8>>),
        ColumnType::Date => q.bind(None::<chrono::NaiveDate>),
        ColumnType::Timestamp => q.bind(None::<chrono::NaiveDateTime>),
        ColumnType::TimestampTz => q.bind(None::<chrono::DateTime<chrono::Utc>>),
    }
}

/// Binds a cell of a column of type `ty` for PostgreSQL. Text-like values (decimals, JSON) go as text:
/// every placeholder carries an explicit cast to the sink column's type, so PostgreSQL converts them
/// exactly.
pub(crate) fn bind_pg<'q>(q: Q<'q, Postgres>, cell: &Cell, ty: ColumnType) -> Q<'q, Postgres> {
    match cell {
        Cell::Null => bind_null(q, ty),
        Cell::Bool(v) => q.bind(*v),
        Cell::I64(v) => q.bind(*v),
        Cell::F64(v) => q.bind(*v),
        Cell::Decimal(v) => q.bind(v.as_str()),
        Cell::Text(v) => q.bind(without_nul(v).into_owned()),
        Cell::Bytes(v) => q.bind(v.as_slice()),
        Cell::Json(v) => q.bind(json_text(v, true)),
        Cell::Date(v) => q.bind(*v),
        Cell::Timestamp(v) => q.bind(*v),
        Cell::TimestampTz(v) => q.bind(*v),
    }
}

fn bind_common<'q, DB>(q: Q<'q, DB>, cell: &Cell, ty: ColumnType) -> Q<'q, DB>
where
    DB: Database,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<bool>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<f64>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<Vec<u8>>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<chrono::NaiveDate>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<chrono::NaiveDateTime>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<chrono::DateTime<chrono::Utc>>: Encode<'a, DB> + Type<DB>,
    for<'a> bool: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> f64: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> Vec<u8>: Encode<'a, DB> + Type<DB>,
    for<'a> chrono::NaiveDate: Encode<'a, DB> + Type<DB>,
    for<'a> chrono::NaiveDateTime: Encode<'a, DB> + Type<DB>,
    for<'a> chrono::DateTime<chrono::Utc>: Encode<'a, DB> + Type<DB>,
{
    match cell {
        Cell::Null => bind_null(q, ty),
        Cell::Bool(v) => q.bind(*v),
        Cell::I64(v) => q.bind(*v),
        Cell::F64(v) => q.bind(*v),
        Cell::Decimal(v) | Cell::Text(v) => q.bind(v.clone()),
        Cell::Bytes(v) => q.bind(v.clone()),
        Cell::Json(v) => q.bind(json_text(v, false)),
        Cell::Date(v) => q.bind(*v),
        Cell::Timestamp(v) => q.bind(*v),
        Cell::TimestampTz(v) => q.bind(*v),
    }
}

/// Binds a cell for MySQL/MariaDB, which converts text to DECIMAL and JSON columns exactly.
pub(crate) fn bind_mysql<'q>(q: Q<'q, MySql>, cell: &Cell, ty: ColumnType) -> Q<'q, MySql> {
    bind_common(q, cell, ty)
}

/// Binds a cell for SQLite.
pub(crate) fn bind_sqlite<'q>(q: Q<'q, Sqlite>, cell: &Cell, ty: ColumnType) -> Q<'q, Sqlite> {
    bind_common(q, cell, ty)
}
