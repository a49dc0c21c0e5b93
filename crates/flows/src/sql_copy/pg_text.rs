//! PostgreSQL to PostgreSQL without decoding: the source's `COPY (…) TO STDOUT` text goes into the sink's
//! `COPY … FROM STDIN` as the source server wrote it.
//!
//! A PostgreSQL sink parses every value of COPY text with its column's own input function, whether the
//! text came from a decoded cell ([`copy_text`](super::copy_text)) or straight from another PostgreSQL
//! server. Passing the server's text along skips a decode and an encode of every value in the flow, and
//! keeps values the decoded path cannot hold (decimals beyond 28 digits, `NaN`). The source session is
//! set so that its text reads back the same on any server: ISO dates, UTC, exact floats, hex bytea.

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Executor};

use super::backend::Backend;
use super::bind::bind_pg;
use super::cell::{Cell, Column, ColumnType};
use super::error::{SqlCopyError, sql};
use super::read;

/// Settings of the source session whose text output another server reads back unchanged.
const SOURCE_SESSION: &str = "SET DateStyle TO ISO, YMD; SET TimeZone TO 'UTC'; \
                              SET extra_float_digits TO 3; SET bytea_output TO hex";

/// The session setting that holds the stored cursor: `COPY` takes no parameters, so the value is bound
/// with `set_config` and the query reads it back, typed, with `current_setting`.
const CURSOR_SETTING: &str = "flowrun.cursor";

/// Where the reading query finds the stored cursor, cast to the column's type.
pub(crate) fn cursor_placeholder(ty: ColumnType) -> String {
    format!(
        "current_setting('{CURSOR_SETTING}')::{}",
        Backend::Postgres.column_type(ty, true)
    )
}

/// Readies the source session for `COPY (sql) TO STDOUT` and binds the stored cursor, if any.
pub(crate) async fn prepare_source(
    conn: &mut PgConnection,
    cursor: Option<(&Cell, ColumnType)>,
) -> Result<(), SqlCopyError> {
    conn.execute(SOURCE_SESSION)
        .await
        .map_err(sql("cannot set up the source session"))?;
    if let Some((cell, ty)) = cursor {
        let statement = format!(
            "SELECT set_config('{CURSOR_SETTING}', CAST($1 AS {}) :: text, false)",
            Backend::Postgres.column_type(ty, true)
        );
        bind_pg(sqlx::query(AssertSqlSafe(statement)), cell, ty)
            .execute(&mut *conn)
            .await
            .map_err(sql("cannot bind the stored cursor"))?;
    }
    Ok(())
}

/// Reads the text of a cursor value, as the source printed it, back as a cell of the column's type.
pub(crate) async fn cursor_cell(
    conn: &mut PgConnection,
    text: &str,
    column: &Column,
) -> Result<Cell, SqlCopyError> {
    let statement = format!(
        "SELECT CAST($1 AS {})",
        Backend::Postgres.column_type(column.ty, true)
    );
    let row = sqlx::query(AssertSqlSafe(statement))
        .bind(text)
        .fetch_one(&mut *conn)
        .await
        .map_err(sql("cannot read the cursor reached"))?;
    // Cast to the type `column_type` names, which the decoder reads without a source type.
    let typed = Column {
        name: column.name.clone(),
        ty: column.ty,
        source_type: String::new(),
    };
    read::pg_value(&row, &typed)
}

/// Whole rows of COPY text, `batch_size` at a time.
#[derive(Debug, Default)]
pub(crate) struct TextBatch {
    /// The rows, each ending in a newline.
    pub(crate) data: Vec<u8>,
    /// How many rows `data` holds.
    pub(crate) rows: usize,
    /// The text of the last non-NULL cursor value of the batch, when there is a cursor column.
    pub(crate) cursor: Option<String>,
}

/// Gathers the chunks of a `COPY TO` stream into batches that end at a row's end.
#[derive(Debug)]
pub(crate) struct Batcher {
    batch_size: usize,
    cursor: Option<usize>,
    batch: TextBatch,
}

impl Batcher {
    /// Batches of `batch_size` rows (the last may be smaller); `cursor` is the cursor column's index.
    pub(crate) fn new(batch_size: usize, cursor: Option<usize>) -> Self {
        Self {
            batch_size,
            cursor,
            batch: TextBatch::default(),
        }
    }

    /// Adds a chunk of the stream; returns a batch when one is full. PostgreSQL sends a row per chunk,
    /// but rows are counted by their newlines (a newline inside a value is escaped), and a batch is
    /// only cut where a row ends.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Option<TextBatch> {
        self.batch.data.extend_from_slice(chunk);
        self.batch.rows += chunk.iter().filter(|&&b| b == b'\n').count();
        if self.batch.rows >= self.batch_size && self.batch.data.ends_with(b"\n") {
            return Some(self.take());
        }
        None
    }

    /// The rows left when the stream ends, if any.
    pub(crate) fn finish(&mut self) -> Option<TextBatch> {
        (!self.batch.data.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> TextBatch {
        let capacity = self.batch.data.capacity();
        let mut batch = std::mem::replace(
            &mut self.batch,
            TextBatch {
                data: Vec::with_capacity(capacity),
                ..TextBatch::default()
            },
        );
        if let Some(index) = self.cursor {
            batch.cursor = last_value(&batch.data, index);
        }
        batch
    }
}

/// The last non-NULL value of column `index` in rows of COPY text, unescaped.
fn last_value(data: &[u8], index: usize) -> Option<String> {
    // Every row ends in a newline; an empty line is a row of one empty text.
    let rows = data.strip_suffix(b"\n")?;
    rows.split(|&b| b == b'\n').rev().find_map(|line| {
        let field = line.split(|&b| b == b'\t').nth(index)?;
        (field != b"\\N").then(|| unescape(field))
    })
}

/// A field of COPY text as the value it stands for (PostgreSQL's output escapes only these).
fn unescape(field: &[u8]) -> String {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'b') => out.push(8),
            Some(b'f') => out.push(12),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'v') => out.push(11),
            Some(&other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a statement failed because an upsert met one key twice (the batch repeats a key).
pub(crate) fn repeats_a_key(error: &sqlx::Error) -> bool {
    has_sqlstate(error, "21000")
}

/// Whether a statement failed on a unique index (a key already in the table).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    has_sqlstate(error, "23505")
}

fn has_sqlstate(error: &sqlx::Error, code: &str) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_end_at_row_ends_and_count_rows() {
        let mut batcher = Batcher::new(2, Some(1));
        assert!(batcher.push(b"1\ta\n").is_none());
        // A chunk that stops inside a row does not cut the batch there.
        assert!(batcher.push(b"2\tb\n3\t").is_none());
        let batch = batcher.push(b"c\n").expect("a full batch");
        assert_eq!(batch.rows, 3);
        assert_eq!(batch.data, b"1\ta\n2\tb\n3\tc\n");
        assert_eq!(batch.cursor.as_deref(), Some("c"));
        assert!(batcher.push(b"4\td\n").is_none());
        let last = batcher.finish().expect("the rest");
        assert_eq!((last.rows, last.cursor.as_deref()), (1, Some("d")));
        assert!(Batcher::new(2, None).finish().is_none());
    }

    #[test]
    fn the_cursor_is_the_last_value_that_is_not_null_unescaped() {
        assert_eq!(
            last_value(b"1\ta\\tb\\\\c\\nd\n2\t\\N\n", 1).as_deref(),
            Some("a\tb\\c\nd")
        );
        assert_eq!(last_value(b"1\t\\N\n", 1), None);
        assert_eq!(
            last_value(b"a\n\n", 0).as_deref(),
            Some(""),
            "an empty text is a value"
        );
        assert_eq!(last_value(b"", 0), None);
        assert_eq!(last_value(b"1\n", 3), None);
    }
}
