//! Why a copy failed.

use thiserror::Error;

/// Why a [`SqlCopy`](super::SqlCopy) run failed. Nothing of a failed run's batch in progress is committed,
/// and the stored cursor is left as it was.
#[derive(Debug, Error)]
pub enum SqlCopyError {
    /// Could not connect to the source or the sink.
    #[error("cannot connect to the {side} database: {source}")]
    Connect {
        /// `source` or `sink`.
        side: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A statement failed.
    #[error("{what}: {source}")]
    Sql {
        /// What was being done.
        what: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A column of the query has a type SqlCopy cannot carry.
    #[error(
        "column `{column}` has type `{type_name}`, which SqlCopy cannot copy; cast it in the query (nothing was written)"
    )]
    Unmappable {
        /// The column.
        column: String,
        /// The type the source reported.
        type_name: String,
    },
    /// A value could not be read as its column's type.
    #[error("column `{column}`: {message}")]
    Value {
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// The sink table does not exist and `create_table` is off.
    #[error("the sink table `{0}` does not exist (set `create_table` to create it)")]
    MissingTable(String),
    /// A column of the query is not in the sink table.
    #[error("the sink table `{table}` has no column `{column}`")]
    MissingColumn {
        /// The sink table.
        table: String,
        /// The column of the query.
        column: String,
    },
    /// The `cursor` setting or the stored cursor does not fit the query.
    #[error("cursor: {0}")]
    Cursor(String),
    /// The settings do not fit the query (a key column it lacks, …).
    #[error("{0}")]
    Settings(String),
    /// The run was asked to stop; batches committed before stay, the one in progress was rolled back.
    #[error(
        "stopped when asked to, after {rows_written} rows written in {batches} batches; the cursor is unchanged"
    )]
    Cancelled {
        /// Rows committed before stopping.
        rows_written: u64,
        /// Batches committed before stopping.
        batches: u64,
    },
}

/// Wraps a driver error with what was being done.
pub(crate) fn sql(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> SqlCopyError {
    let what = what.into();
    move |source| SqlCopyError::Sql { what, source }
}
