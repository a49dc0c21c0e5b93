//! The settings of [`SqlCopy`](super::SqlCopy) and the checks made when a flow is built.

use schemars::JsonSchema;
use serde::Deserialize;

use super::backend::Backend;

/// The most rows one batch may hold.
pub const MAX_BATCH_SIZE: usize = 100_000;

/// The settings of [`SqlCopy`](super::SqlCopy).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SqlCopySettings {
    /// The database to read from: `postgres://…`, `mysql://…` (or `mariadb://…`) or `sqlite://path`.
    pub source: String,
    /// The SELECT whose rows are copied.
    pub query: String,
    /// The database to write to, as `source`.
    pub sink: String,
    /// The sink table (a plain identifier).
    pub table: String,
    /// The columns sink rows are upserted on (a primary key or unique index of the sink table).
    #[serde(default)]
    pub key: Vec<String>,
    /// A column of the query that only grows; with it, each run copies only rows from the last run's
    /// highest value on.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Rows per batch, each written in one transaction (1 to 100000; default 10000).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Create the sink table, with types mapped from the query's and a primary key on `key`, when missing.
    #[serde(default)]
    pub create_table: bool,
    /// `upsert` (insert or update on `key`), `append` (plain inserts) or `replace` (load a fresh table and
    /// swap it in at the end).
    #[serde(default)]
    pub mode: Mode,
}

/// Every batch is a transaction, and on PostgreSQL a `COPY` whose end waits on the sink's delayed ACK (sqlx
/// does not set `TCP_NODELAY`): ten thousand rows amortize both (docs/performance.md) in a few MB.
fn default_batch_size() -> usize {
    10_000
}

/// How rows are written into the sink table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Insert, or update the row with the same key.
    #[default]
    Upsert,
    /// Plain inserts.
    Append,
    /// Load into `<table>__flowrun_new`, then replace the table with it at the end.
    Replace,
}

/// Settings that passed every check made before connecting.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub source: (Backend, String),
    pub sink: (Backend, String),
    pub query: String,
    pub table: String,
    pub key: Vec<String>,
    pub cursor: Option<String>,
    pub batch_size: usize,
    pub create_table: bool,
    pub mode: Mode,
}

/// Whether `name` is a plain identifier: `[A-Za-z_][A-Za-z0-9_]*`, so quoting it is safe on every backend.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 60
}

fn identifier(setting: &str, name: &str) -> Result<String, String> {
    if is_identifier(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "`{setting}`: `{name}` is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*, at most 60 characters)"
        ))
    }
}

impl SqlCopySettings {
    /// Checks everything that can be checked without a database.
    pub(crate) fn check(self) -> Result<Checked, String> {
        let source = Backend::from_url(&self.source).map_err(|e| format!("`source`: {e}"))?;
        let sink = Backend::from_url(&self.sink).map_err(|e| format!("`sink`: {e}"))?;
        let query = self.query.trim().trim_end_matches(';').trim().to_owned();
        if query.is_empty() {
            return Err("`query` must not be empty".into());
        }
        let table = identifier("table", &self.table)?;
        let key = self
            .key
            .iter()
            .map(|k| identifier("key", k))
            .collect::<Result<Vec<_>, _>>()?;
        if self.mode == Mode::Upsert && key.is_empty() {
            return Err("`key` must name at least one column in `upsert` mode".into());
        }
        let cursor = self
            .cursor
            .as_deref()
            .map(|c| identifier("cursor", c))
            .transpose()?;
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(format!(
                "`batch_size` must be between 1 and {MAX_BATCH_SIZE}, got {}",
                self.batch_size
            ));
        }
        Ok(Checked {
            source,
            sink,
            query,
            table,
            key,
            cursor,
            batch_size: self.batch_size,
            create_table: self.create_table,
            mode: self.mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_plain() {
        assert!(is_identifier("a_1"));
        assert!(is_identifier("_x"));
        assert!(!is_identifier("1a"));
        assert!(!is_identifier("a-b"));
        assert!(!is_identifier("a\"b"));
        assert!(!is_identifier(""));
    }
}
