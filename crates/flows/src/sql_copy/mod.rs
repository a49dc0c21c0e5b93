//! `SqlCopy`: copies the rows of a query from one database into a table of another (SQLite, PostgreSQL,
//! MySQL/MariaDB in any direction), incrementally when given a cursor column.
//!
//! Rows are read as a stream and written in batches, each in its own transaction, so memory does not grow
//! with the table and a failed run leaves only whole batches behind. With `cursor`, a run reads the rows
//! whose cursor is at least the last successful run's highest (`>=`, so rows sharing that value are not
//! skipped; the upsert makes copying them again harmless) and saves the new highest in the flow's state,
//! which flowrun stores with the run's success only.
//!
//! Rows are decoded into [`Cell`]s and written in the sink's dialect, except between two PostgreSQL
//! databases, where the source's COPY text is passed to the sink's `COPY` as it is (`pg_text.rs`).
//!
//! ```json
//! {"class_name": "SqlCopy",
//!  "source": "postgres://app:${env:PGPASSWORD}@db/app",
//!  "query": "SELECT id, email, updated_at FROM users",
//!  "sink": "sqlite:///var/lib/reports/users.db",
//!  "table": "users", "key": ["id"], "cursor": "updated_at", "create_table": true}
//! ```

mod backend;
mod bind;
mod cell;
mod conn;
mod copy_text;
mod error;
mod nodelay;
mod pg_text;
mod read;
mod settings;
mod write;

use std::time::Instant;

use async_trait::async_trait;
use flowrun_domain::{Flow, FlowClass, FlowError, RunContext};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

pub use backend::Backend;
pub use cell::{Cell, Column, ColumnType};
pub use error::SqlCopyError;
pub use settings::{MAX_BATCH_SIZE, Mode, SqlCopySettings};
pub use write::STAGING_SUFFIX;

use conn::Conn;
use settings::Checked;
use write::Sink;

/// Copies the rows of a query from one database into a table of another; see the [module](self) docs.
#[derive(Debug)]
pub struct SqlCopy {
    settings: Checked,
}

impl FlowClass for SqlCopy {
    const NAME: &'static str = "SqlCopy";
    type Settings = SqlCopySettings;

    fn build(settings: SqlCopySettings) -> Result<Self, String> {
        Ok(Self {
            settings: settings.check()?,
        })
    }
}

#[async_trait]
impl Flow for SqlCopy {
    async fn run(&mut self, context: &mut RunContext) -> Result<(), FlowError> {
        self.copy(context).await?;
        Ok(())
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopySummary {
    /// Rows read from the source.
    pub rows_read: u64,
    /// Rows written into the sink (rows of one batch sharing a key count once).
    pub rows_written: u64,
    /// Batches committed.
    pub batches: u64,
    /// The highest cursor value copied, if a cursor is set and a row had one.
    pub cursor: Option<Cell>,
}

impl CopySummary {
    /// Counts a committed batch and reports it: progress, and a line of the run's output.
    fn committed(&mut self, rows: usize, written: u64, cursor: Option<&str>, context: &RunContext) {
        self.batches += 1;
        self.rows_read += rows as u64;
        self.rows_written += written;
        context.report_progress(self.rows_read, "rows");
        context.log(format!(
            "batch {}: {rows} rows read, {written} written, cursor {}",
            self.batches,
            cursor.unwrap_or("-")
        ));
    }

    /// A stop counts what was committed before it.
    fn counted(&self, error: SqlCopyError) -> SqlCopyError {
        match error {
            SqlCopyError::Cancelled { .. } => SqlCopyError::Cancelled {
                rows_written: self.rows_written,
                batches: self.batches,
            },
            other => other,
        }
    }
}

/// A stop when asked to; [`CopySummary::counted`] fills in what was committed.
fn cancelled() -> SqlCopyError {
    SqlCopyError::Cancelled {
        rows_written: 0,
        batches: 0,
    }
}

/// Reads every row of `query` at `url` with SqlCopy's own reader and type mapping (what a copy would
/// carry), for checks and tests. Unlike a copy, it holds the whole result in memory.
pub async fn read_rows(url: &str, query: &str) -> Result<(Vec<Column>, Vec<Vec<Cell>>), SqlCopyError> {
    let (backend, url) = Backend::from_url(url).map_err(SqlCopyError::Settings)?;
    let mut conn = Conn::connect(backend, &url, "source").await?;
    let columns = conn.describe(query).await?;
    let rows = read::rows(&mut conn, query.to_owned(), None, &columns)
        .try_collect()
        .await?;
    Ok((columns, rows))
}

/// How the source is read: the statement, its parameter and where the cursor column is.
struct Reading {
    sql: String,
    parameter: Option<Cell>,
    cursor: Option<usize>,
}

impl SqlCopy {
    /// Runs the copy and returns what it did; on success with a cursor, the new cursor is set as the run's
    /// state.
    pub async fn copy(&self, context: &mut RunContext) -> Result<CopySummary, SqlCopyError> {
        let s = &self.settings;
        let mut source = Conn::connect(s.source.0, &s.source.1, "source").await?;
        let sink = Conn::connect(s.sink.0, &s.sink.1, "sink").await?;
        // Every column is mapped, and the sink checked, before any row is written.
        let columns = source.describe(&s.query).await?;
        let text = s.source.0 == Backend::Postgres && s.sink.0 == Backend::Postgres;
        let reading = self.reading(&columns, context, text)?;
        let mut sink = Sink::open(sink, s, &columns).await?;

        let started = Instant::now();
        let summary = match &mut source {
            Conn::Postgres(pg) if text => {
                Self::pass_pg_text(pg, &mut sink, reading, &columns, s.batch_size, context).await?
            }
            _ => Self::copy_cells(&mut source, &mut sink, reading, &columns, s.batch_size, context).await?,
        };
        sink.finish().await?;

        let seconds = started.elapsed().as_secs_f64();
        context.log(format!(
            "copied {} rows into `{}` ({} written) in {} batches, {:.1} s, {:.0} rows/s; cursor {}",
            summary.rows_read,
            s.table,
            summary.rows_written,
            summary.batches,
            seconds,
            summary.rows_read as f64 / seconds.max(1e-6),
            summary
                .cursor
                .as_ref()
                .map_or_else(|| "-".to_owned(), Cell::display)
        ));
        if let (Some(column), Some(cursor)) = (&s.cursor, &summary.cursor)
            && let Some(value) = cursor.to_state()
        {
            context.set_state(json!({"column": column, "cursor": value}));
        }
        Ok(summary)
    }

    /// Copies decoded rows: the source's rows are read as cells and written by the sink in batches. The
    /// next batch is read while the last one is written: one batch waits between them.
    async fn copy_cells(
        source: &mut Conn,
        sink: &mut Sink,
        reading: Reading,
        columns: &[Column],
        batch_size: usize,
        context: &RunContext,
    ) -> Result<CopySummary, SqlCopyError> {
        let mut summary = CopySummary::default();
        let (batches, mut to_write) = tokio::sync::mpsc::channel::<Vec<Vec<Cell>>>(1);
        let reader = async {
            // Owned here, so the writer sees the end of the batches when the reader returns.
            let batches = batches;
            let mut rows = read::rows(source, reading.sql, reading.parameter, columns);
            let mut batch: Vec<Vec<Cell>> = Vec::with_capacity(batch_size);
            loop {
                let next = tokio::select! {
                    biased;
                    () = context.cancelled() => return Err(cancelled()),
                    next = rows.next() => next,
                };
                let end = next.is_none();
                if let Some(row) = next {
                    batch.push(row?);
                }
                if batch.len() == batch_size || (end && !batch.is_empty()) {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                    if batches.send(full).await.is_err() {
                        // The writer stopped; its error is the run's.
                        return Ok(());
                    }
                }
                if end {
                    return Ok(());
                }
            }
        };
        let writer = async {
            while let Some(batch) = to_write.recv().await {
                // Stop between batches only: a batch being written finishes (or, if the executor drops the
                // run, rolls back), so what was committed is always known and counted.
                if context.is_cancelled() {
                    return Err(cancelled());
                }
                let written = sink.write(&batch).await?;
                if let Some(i) = reading.cursor
                    && let Some(cell) = batch.iter().rev().map(|row| &row[i]).find(|c| **c != Cell::Null)
                {
                    summary.cursor = Some(cell.clone());
                }
                let shown = summary.cursor.as_ref().map(Cell::display);
                summary.committed(batch.len(), written, shown.as_deref(), context);
            }
            Ok(())
        };
        let (read, written) = tokio::join!(reader, writer);
        read.and(written).map_err(|error| summary.counted(error))?;
        Ok(summary)
    }

    /// Copies PostgreSQL to PostgreSQL as COPY text, never decoded (see [`pg_text`]); batches overlap
    /// as in [`Self::copy_cells`].
    async fn pass_pg_text(
        source: &mut sqlx::PgConnection,
        sink: &mut Sink,
        reading: Reading,
        columns: &[Column],
        batch_size: usize,
        context: &RunContext,
    ) -> Result<CopySummary, SqlCopyError> {
        let cursor_column = reading.cursor.map(|i| &columns[i]);
        let stored = reading.parameter.as_ref().zip(cursor_column.map(|c| c.ty));
        pg_text::prepare_source(source, stored).await?;
        let mut summary = CopySummary::default();
        let mut cursor_text: Option<String> = None;
        let (batches, mut to_write) = tokio::sync::mpsc::channel::<pg_text::TextBatch>(1);
        let reader = async {
            let batches = batches;
            let statement = format!("COPY ({}) TO STDOUT", reading.sql);
            let mut chunks = source
                .copy_out_raw(&statement)
                .await
                .map_err(error::sql("cannot read the source"))?;
            let mut batcher = pg_text::Batcher::new(batch_size, reading.cursor);
            loop {
                let next = tokio::select! {
                    biased;
                    () = context.cancelled() => return Err(cancelled()),
                    next = chunks.next() => next,
                };
                let (full, end) = match next {
                    Some(chunk) => {
                        let chunk = chunk.map_err(error::sql("cannot read the source"))?;
                        (batcher.push(&chunk), false)
                    }
                    None => (batcher.finish(), true),
                };
                if let Some(batch) = full
                    && batches.send(batch).await.is_err()
                {
                    return Ok(());
                }
                if end {
                    return Ok(());
                }
            }
        };
        let writer = async {
            while let Some(batch) = to_write.recv().await {
                if context.is_cancelled() {
                    return Err(cancelled());
                }
                let written = sink.write_text(&batch.data).await?;
                if batch.cursor.is_some() {
                    cursor_text = batch.cursor;
                }
                summary.committed(batch.rows, written, cursor_text.as_deref(), context);
            }
            Ok(())
        };
        let (read, written) = tokio::join!(reader, writer);
        read.and(written).map_err(|error| summary.counted(error))?;
        if let (Some(text), Some(column)) = (&cursor_text, cursor_column) {
            summary.cursor = Some(pg_text::cursor_cell(source, text, column).await?);
        }
        Ok(summary)
    }

    /// The statement that reads the source: the query as it is, or wrapped to start at the stored cursor.
    ///
    /// `text`: the source is read by `COPY`, which takes no parameters, so the stored cursor is read from
    /// the session (see [`pg_text`]).
    fn reading(&self, columns: &[Column], context: &RunContext, text: bool) -> Result<Reading, SqlCopyError> {
        let s = &self.settings;
        let Some(name) = &s.cursor else {
            return Ok(Reading {
                sql: s.query.clone(),
                parameter: None,
                cursor: None,
            });
        };
        let index = columns.iter().position(|c| &c.name == name).ok_or_else(|| {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            SqlCopyError::Cursor(format!(
                "`{name}` is not a column of the query (columns: {})",
                names.join(", ")
            ))
        })?;
        let column = &columns[index];
        if matches!(column.ty, ColumnType::Bool | ColumnType::Bytes | ColumnType::Json) {
            return Err(SqlCopyError::Cursor(format!(
                "`{name}` is of type {}, which cannot be a cursor",
                column.ty.name()
            )));
        }
        let stored = context
            .state()
            .filter(|state| state.get("column").and_then(Value::as_str) == Some(name))
            .and_then(|state| state.get("cursor"));
        let last = match stored {
            None => None,
            Some(value) => {
                let cell = Cell::from_state(value).map_err(SqlCopyError::Cursor)?;
                if !cell.is_of(column.ty) {
                    return Err(SqlCopyError::Cursor(format!(
                        "the stored cursor {value} is not of the column's type {}",
                        column.ty.name()
                    )));
                }
                Some(cell)
            }
        };
        let backend = s.source.0;
        let q = |column: &str| format!("q.{}", backend.quote(column));
        let sql = match &last {
            None => format!("SELECT * FROM ({}) AS q ORDER BY {}", s.query, q(name)),
            Some(_) => {
                let placeholder = match (backend, column.ty) {
                    (Backend::Postgres, ty) if text => pg_text::cursor_placeholder(ty),
                    (Backend::Postgres, ty) => format!("$1::{}", backend.column_type(ty, true)),
                    (Backend::MySql, ColumnType::Decimal) => "CAST(? AS DECIMAL(65,30))".to_owned(),
                    _ => "?".to_owned(),
                };
                format!(
                    "SELECT * FROM ({}) AS q WHERE {} >= {placeholder} ORDER BY {}",
                    s.query,
                    q(name),
                    q(name)
                )
            }
        };
        Ok(Reading {
            sql,
            parameter: last,
            cursor: Some(index),
        })
    }
}
