//! One value on its way from the source to the sink, and the logical column types.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Value, json};

/// The types SqlCopy carries between backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Boolean.
    Bool,
    /// Any integer that fits 64 bits signed.
    I64,
    /// Floating point.
    F64,
    /// Exact decimal, carried as its text.
    Decimal,
    /// Text.
    Text,
    /// Bytes.
    Bytes,
    /// JSON.
    Json,
    /// Date.
    Date,
    /// Timestamp without time zone (microseconds).
    Timestamp,
    /// Timestamp with time zone, as UTC (microseconds).
    TimestampTz,
}

impl ColumnType {
    /// The name used in the stored cursor and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::I64 => "i64",
            Self::F64 => "f64",
            Self::Decimal => "decimal",
            Self::Text => "text",
            Self::Bytes => "bytes",
            Self::Json => "json",
            Self::Date => "date",
            Self::Timestamp => "timestamp",
            Self::TimestampTz => "timestamptz",
        }
    }
}

/// A column of the query: its name, logical type and the type the source reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Its logical type.
    pub ty: ColumnType,
    /// The type name the source's driver reported (or SQLite's declared type).
    pub source_type: String,
}

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Boolean.
    Bool(bool),
    /// Integer.
    I64(i64),
    /// Floating point.
    F64(f64),
    /// Exact decimal as text (`-12.3400`).
    Decimal(String),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// JSON.
    Json(Value),
    /// Date.
    Date(NaiveDate),
    /// Timestamp without time zone.
    Timestamp(NaiveDateTime),
    /// Timestamp with time zone, in UTC.
    TimestampTz(DateTime<Utc>),
}

impl Cell {
    /// The cell as stored in the flow's state: `{"type": "i64", "value": 42}`; `None` for types a cursor
    /// cannot be (and NULL).
    pub fn to_state(&self) -> Option<Value> {
        let (ty, value) = match self {
            Self::I64(v) => ("i64", json!(v)),
            Self::F64(v) => ("f64", json!(v)),
            Self::Decimal(v) => ("decimal", json!(v)),
            Self::Text(v) => ("text", json!(v)),
            Self::Date(v) => ("date", json!(v.to_string())),
            Self::Timestamp(v) => ("timestamp", json!(v.format("%Y-%m-%dT%H:%M:%S%.6f").to_string())),
            Self::TimestampTz(v) => (
                "timestamptz",
                json!(v.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
            ),
            Self::Null | Self::Bool(_) | Self::Bytes(_) | Self::Json(_) => return None,
        };
        Some(json!({"type": ty, "value": value}))
    }

    /// The cell a stored cursor holds, or why it cannot be read.
    pub fn from_state(state: &Value) -> Result<Self, String> {
        let ty = state.get("type").and_then(Value::as_str).unwrap_or_default();
        let value = state.get("value").unwrap_or(&Value::Null);
        let text = || {
            value
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("stored cursor of type `{ty}` is not a string: {value}"))
        };
        match ty {
            "i64" => value
                .as_i64()
                .map(Self::I64)
                .ok_or_else(|| format!("stored cursor is not an integer: {value}")),
            "f64" => value
                .as_f64()
                .map(Self::F64)
                .ok_or_else(|| format!("stored cursor is not a number: {value}")),
            "decimal" => text().map(Self::Decimal),
            "text" => text().map(Self::Text),
            "date" => text()?
                .parse()
                .map(Self::Date)
                .map_err(|e| format!("stored cursor is not a date: {e}")),
            "timestamp" => NaiveDateTime::parse_from_str(&text()?, "%Y-%m-%dT%H:%M:%S%.f")
                .map(Self::Timestamp)
                .map_err(|e| format!("stored cursor is not a timestamp: {e}")),
            "timestamptz" => DateTime::parse_from_rfc3339(&text()?)
                .map(|t| Self::TimestampTz(t.with_timezone(&Utc)))
                .map_err(|e| format!("stored cursor is not a timestamp with time zone: {e}")),
            other => Err(format!("stored cursor has an unknown type `{other}`")),
        }
    }

    /// Whether the cell is of the logical type `ty` (NULL is of every type).
    pub fn is_of(&self, ty: ColumnType) -> bool {
        matches!(
            (self, ty),
            (Self::Null, _)
                | (Self::Bool(_), ColumnType::Bool)
                | (Self::I64(_), ColumnType::I64)
                | (Self::F64(_), ColumnType::F64)
                | (Self::Decimal(_), ColumnType::Decimal)
                | (Self::Text(_), ColumnType::Text)
                | (Self::Bytes(_), ColumnType::Bytes)
                | (Self::Json(_), ColumnType::Json)
                | (Self::Date(_), ColumnType::Date)
                | (Self::Timestamp(_), ColumnType::Timestamp)
                | (Self::TimestampTz(_), ColumnType::TimestampTz)
        )
    }

    /// A short text for progress lines.
    pub fn display(&self) -> String {
        match self {
            Self::Null => "NULL".to_owned(),
            Self::Bool(v) => v.to_string(),
            Self::I64(v) => v.to_string(),
            Self::F64(v) => v.to_string(),
            Self::Decimal(v) | Self::Text(v) => v.clone(),
            Self::Bytes(v) => format!("{} bytes", v.len()),
            Self::Json(v) => v.to_string(),
            Self::Date(v) => v.to_string(),
            Self::Timestamp(v) => v.to_string(),
            Self::TimestampTz(v) => v.to_rfc3339(),
        }
    }

    /// A text that is equal for equal keys, to find rows of one batch sharing a key.
    pub(crate) fn key_text(&self) -> String {
        format!("{self:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_through_the_state() {
        let cells = [
            Cell::I64(42),
            Cell::F64(1.5),
            Cell::Decimal("12.3400".into()),
            Cell::Text("é".into()),
            Cell::Date(NaiveDate::from_ymd_opt(2024, 2, 29).expect("date")),
            Cell::Timestamp(
                NaiveDate::from_ymd_opt(2024, 2, 29)
                    .and_then(|d| d.and_hms_micro_opt(1, 2, 3, 456_789))
                    .expect("timestamp"),
            ),
            Cell::TimestampTz(DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("ts")),
        ];
        for cell in cells {
            let state = cell.to_state().expect("a cursor type");
            assert_eq!(Cell::from_state(&state), Ok(cell));
        }
        assert_eq!(
            Cell::to_state(&Cell::I64(42)),
            Some(json!({"type": "i64", "value": 42}))
        );
        assert!(Cell::from_state(&json!({"type": "i64", "value": "x"})).is_err());
    }
}
