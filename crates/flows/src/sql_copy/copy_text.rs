//! Rows in PostgreSQL's `COPY … FROM STDIN` text format, the way SqlCopy feeds a PostgreSQL sink.
//!
//! The text format is parsed by each sink column's own input function, so a value reaches the column
//! exactly as its text says: decimals keep every digit, timestamps their microseconds, and a column of
//! another type than the source's gets PostgreSQL's own conversion (the binary format would need every
//! sink type known and matched byte for byte).

use std::io::Write as _;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

use super::bind::{json_text, without_nul};
use super::cell::Cell;

/// Appends one row (a line, tab-separated) to `out`.
pub(crate) fn push_row(out: &mut Vec<u8>, row: &[&Cell]) {
    for (i, cell) in row.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        push_cell(out, cell);
    }
    out.push(b'\n');
}

fn push_cell(out: &mut Vec<u8>, cell: &Cell) {
    match cell {
        Cell::Null => out.extend_from_slice(b"\\N"),
        Cell::Bool(v) => out.push(if *v { b't' } else { b'f' }),
        Cell::I64(v) => push_display(out, v),
        Cell::F64(v) if v.is_nan() => out.extend_from_slice(b"NaN"),
        Cell::F64(v) if v.is_infinite() => {
            out.extend_from_slice(if *v > 0.0 { b"Infinity" } else { b"-Infinity" });
        }
        // Rust prints the shortest text that reads back as the same float.
        Cell::F64(v) => push_display(out, v),
        Cell::Decimal(v) => push_escaped(out, v),
        Cell::Text(v) => push_escaped(out, &without_nul(v)),
        Cell::Bytes(v) => {
            // `\\x…` in COPY text is the bytea input `\x…`.
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\\\x");
            for byte in v {
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 15)]);
            }
        }
        Cell::Json(v) => push_escaped(out, &json_text(v, true)),
        Cell::Date(v) => push_date(out, *v),
        Cell::Timestamp(v) => push_timestamp(out, *v, ""),
        Cell::TimestampTz(v) => push_timestamp(out, v.naive_utc(), "+00"),
    }
}

fn push_display(out: &mut Vec<u8>, value: &dyn std::fmt::Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value}");
}

/// Escapes what the text format gives a meaning: backslash, and the row and column delimiters.
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    for &byte in text.as_bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            other => out.push(other),
        }
    }
}

/// `YYYY-MM-DD`, with PostgreSQL's ` BC` for years before 1 (chrono's year 0 is 1 BC).
fn push_date(out: &mut Vec<u8>, d: NaiveDate) {
    let (year, era) = era(d.year());
    let _ = write!(out, "{year:04}-{:02}-{:02}{era}", d.month(), d.day());
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` and `zone`, truncated to microseconds as PostgreSQL keeps them.
fn push_timestamp(out: &mut Vec<u8>, t: NaiveDateTime, zone: &str) {
    let (year, era) = era(t.year());
    // A leap second (nanoseconds past 1e9) is written as second 60, which PostgreSQL rolls over.
    let nanos = t.nanosecond();
    let (second, micros) = if nanos >= 1_000_000_000 {
        (t.second() + 1, (nanos - 1_000_000_000) / 1000)
    } else {
        (t.second(), nanos / 1000)
    };
    let _ = write!(
        out,
        "{year:04}-{:02}-{:02} {:02}:{:02}:{second:02}.{micros:06}{zone}{era}",
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
    );
}

fn era(year: i32) -> (i64, &'static str) {
    if year >= 1 {
        (i64::from(year), "")
    } else {
        (1 - i64::from(year), " BC")
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use serde_json::json;

    use super::*;

    fn line(cells: &[Cell]) -> String {
        let mut out = Vec::new();
        push_row(&mut out, &cells.iter().collect::<Vec<_>>());
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn every_cell_is_written_as_postgres_reads_it() {
        let at = NaiveDate::from_ymd_opt(2024, 2, 29)
            .and_then(|d| d.and_hms_nano_opt(1, 2, 3, 456_789_999))
            .expect("timestamp");
        assert_eq!(
            line(&[
                Cell::Null,
                Cell::Bool(true),
                Cell::I64(-7),
                Cell::F64(0.1),
                Cell::F64(f64::NEG_INFINITY),
                Cell::Decimal("-12.3400".into()),
                Cell::Bytes(vec![0, 255]),
                Cell::Date(at.date()),
                Cell::Timestamp(at),
                Cell::TimestampTz(DateTime::from_naive_utc_and_offset(at, chrono::Utc)),
            ]),
            "\\N\tt\t-7\t0.1\t-Infinity\t-12.3400\t\\\\x00ff\t2024-02-29\t\
             2024-02-29 01:02:03.456789\t2024-02-29 01:02:03.456789+00\n"
        );
    }

    #[test]
    fn delimiters_backslashes_and_nul_in_text_are_escaped() {
        assert_eq!(
            line(&[
                Cell::Text("a\tb\nc\rd\\e\0f é".into()),
                Cell::Json(json!({"k": "x\\y\u{0}"}))
            ]),
            "a\\tb\\nc\\rd\\\\e\u{FFFD}f é\t{\"k\":\"x\\\\\\\\y\u{FFFD}\"}\n"
        );
    }

    #[test]
    fn years_before_one_are_written_bc() {
        let d = NaiveDate::from_ymd_opt(-43, 3, 15).expect("date");
        let t = d.and_hms_opt(12, 0, 0).expect("time");
        assert_eq!(
            line(&[
                Cell::Date(d),
                Cell::TimestampTz(DateTime::from_naive_utc_and_offset(t, chrono::Utc))
            ]),
            "0044-03-15 BC\t0044-03-15 12:00:00.000000+00 BC\n"
        );
    }
}
