//! The sink: the table rows go into, and batches written in one transaction each.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Connection, Executor};

use super::backend::Backend;
use super::bind::{bind_mysql, bind_sqlite};
use super::cell::{Cell, Column};
use super::conn::Conn;
use super::copy_text;
use super::error::{SqlCopyError, sql};
use super::pg_text;
use super::settings::{Checked, Mode};

/// The suffix of the table a `replace` run loads before swapping it in.
pub const STAGING_SUFFIX: &str = "__flowrun_new";

/// PostgreSQL: the temporary table each batch is copied into before it is merged into the target.
const PG_BATCH_TABLE: &str = "flowrun__batch";

/// PostgreSQL: the temporary table a batch of COPY text that repeats a key is loaded into again, with
/// each row's place, so that the last of the rows sharing a key wins.
const PG_ORDERED_TABLE: &str = "flowrun__batch_ordered";

/// The column of [`PG_ORDERED_TABLE`] that numbers the rows in the order they came.
const PG_ORDER_COLUMN: &str = "flowrun__row";

/// Where rows go.
pub(crate) struct Sink {
    conn: Conn,
    /// The table written to: the sink table, or its staging table in `replace` mode.
    target: String,
    table: String,
    columns: Vec<Column>,
    /// PostgreSQL only: how a batch is written (see [`PgStatements`]).
    pg: PgStatements,
    key: Vec<usize>,
    mode: Mode,
    /// Whether the sink table existed before a `replace` run.
    table_existed: bool,
    statements: HashMap<usize, String>,
    /// Whether [`PG_ORDERED_TABLE`] exists in the sink session.
    ordered_table: bool,
    /// PostgreSQL upserts: `COPY` straight into the target, while it may still be used (see
    /// [`Sink::write_text`]).
    direct: Option<String>,
}

impl Sink {
    /// Readies the sink table (creating it or the staging table as the settings say) and checks that it
    /// has every column of the query. Nothing is written to it yet.
    pub(crate) async fn open(
        mut conn: Conn,
        settings: &Checked,
        columns: &[Column],
    ) -> Result<Self, SqlCopyError> {
        let backend = conn.backend();
        let key = settings
            .key
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .position(|c| &c.name == k)
                    .ok_or_else(|| SqlCopyError::Settings(format!("`key`: the query has no column `{k}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let table = settings.table.clone();
        let existing = conn.table_columns(&table).await?;
        let table_existed = !existing.is_empty();
        if !table_existed && !settings.create_table {
            return Err(SqlCopyError::MissingTable(table));
        }
        let target = if settings.mode == Mode::Replace {
            let staging = format!("{table}{STAGING_SUFFIX}");
            conn.execute(&format!("DROP TABLE IF EXISTS {}", backend.quote(&staging)))
                .await?;
            let like = match backend {
                Backend::Postgres if table_existed => Some(format!(
                    "CREATE TABLE {} (LIKE {} INCLUDING ALL)",
                    backend.quote(&staging),
                    backend.quote(&table)
                )),
                Backend::MySql if table_existed => Some(format!(
                    "CREATE TABLE {} LIKE {}",
                    backend.quote(&staging),
                    backend.quote(&table)
                )),
                _ => None,
            };
            let create = like.unwrap_or_else(|| create_table(backend, &staging, columns, &settings.key));
            conn.execute(&create).await?;
            staging
        } else {
            if !table_existed {
                conn.execute(&create_table(backend, &table, columns, &settings.key))
                    .await?;
            }
            table.clone()
        };
        let sink_columns = if target == table && table_existed {
            existing
        } else {
            conn.table_columns(&target).await?
        };
        for column in columns {
            let found = sink_columns.iter().find(|(name, _)| match backend {
                Backend::Postgres => name == &column.name,
                Backend::MySql | Backend::Sqlite => name.eq_ignore_ascii_case(&column.name),
            });
            if found.is_none() {
                return Err(SqlCopyError::MissingColumn {
                    table: target,
                    column: column.name.clone(),
                });
            }
        }
        let merged = settings.mode != Mode::Append && !settings.key.is_empty();
        let pg = PgStatements::new(
            backend,
            &target,
            columns,
            merged.then_some(settings.key.as_slice()),
        );
        // A table this run created holds only what the run loaded, and has its primary key on `key`.
        let direct = (backend == Backend::Postgres && merged && !table_existed).then(|| {
            format!(
                "COPY {} ({}) FROM STDIN",
                backend.quote(&target),
                column_list(backend, columns)
            )
        });
        if backend == Backend::Postgres && merged {
            // Typed as the target's columns, so COPY parses each value with the sink column's own type;
            // emptied by every commit, so each batch starts from nothing.
            let names = column_list(backend, columns);
            conn.execute(&format!(
                "CREATE TEMPORARY TABLE {} ON COMMIT DELETE ROWS AS SELECT {names} FROM {} WITH NO DATA",
                backend.quote(PG_BATCH_TABLE),
                backend.quote(&target)
            ))
            .await?;
        }
        Ok(Self {
            conn,
            target,
            table,
            columns: columns.to_vec(),
            pg,
            key,
            mode: settings.mode,
            table_existed,
            statements: HashMap::new(),
            ordered_table: false,
            direct,
        })
    }

    /// Writes rows in one transaction: all of them or, on an error or when the future is dropped, none.
    pub(crate) async fn write(&mut self, rows: &[Vec<Cell>]) -> Result<u64, SqlCopyError> {
        let what = format!("cannot write into `{}`", self.target);
        if self.conn.backend() == Backend::Postgres {
            let rows = without_repeated_keys(&self.key, self.mode, rows);
            let mut data = Vec::with_capacity(rows.len() * 64);
            let mut cells = Vec::with_capacity(self.columns.len());
            for row in &rows {
                cells.clear();
                cells.extend(row.iter());
                copy_text::push_row(&mut data, &cells);
            }
            let rows = rows.len() as u64;
            self.write_text(&data).await?;
            return Ok(rows);
        }
        let per_statement = (self.conn.backend().max_parameters() / self.columns.len().max(1)).max(1);
        let mut statements = Vec::new();
        for chunk in rows.chunks(per_statement) {
            let chunk = without_repeated_keys(&self.key, self.mode, chunk);
            let text = self.statement(chunk.len());
            statements.push((text, chunk));
        }
        let written: u64 = statements.iter().map(|(_, c)| c.len() as u64).sum();
        match &mut self.conn {
            Conn::Postgres(_) => {}
            Conn::MySql(c) => {
                let mut tx = c.begin().await.map_err(sql(what.clone()))?;
                for (text, chunk) in statements {
                    let mut q = sqlx::query(AssertSqlSafe(text));
                    for row in chunk {
                        for (cell, column) in row.iter().zip(&self.columns) {
                            q = bind_mysql(q, cell, column.ty);
                        }
                    }
                    q.execute(&mut *tx).await.map_err(sql(what.clone()))?;
                }
                tx.commit().await.map_err(sql(what))?;
            }
            Conn::Sqlite(c) => {
                let mut tx = c.begin().await.map_err(sql(what.clone()))?;
                for (text, chunk) in statements {
                    let mut q = sqlx::query(AssertSqlSafe(text));
                    for row in chunk {
                        for (cell, column) in row.iter().zip(&self.columns) {
                            q = bind_sqlite(q, cell, column.ty);
                        }
                    }
                    q.execute(&mut *tx).await.map_err(sql(what.clone()))?;
                }
                tx.commit().await.map_err(sql(what))?;
            }
        }
        Ok(written)
    }

    /// Loads a batch of COPY text into a PostgreSQL sink in one transaction, like [`Self::write`]; the
    /// rows written. The text comes from decoded rows ([`Self::write`]) or straight from a PostgreSQL
    /// source (`pg_text.rs`).
    ///
    /// An upsert copies the batch into a temporary table and merges it into the target. Two shortcuts
    /// keep that exact:
    /// - Into a table this run created, the batch is first copied straight into the target: a row that
    ///   conflicts (a key seen before) fails the whole batch with a unique violation, which rolls it
    ///   back, and from then on every batch is merged. Until then the upsert would have inserted every
    ///   row, which is what the plain copy did.
    /// - Rows not decoded by the flow are not sifted for repeated keys beforehand; a batch that repeats
    ///   one fails the merge, and is loaded again with each row's place so that the last one wins.
    pub(crate) async fn write_text(&mut self, data: &[u8]) -> Result<u64, SqlCopyError> {
        let what = format!("cannot write into `{}`", self.target);
        let Conn::Postgres(c) = &mut self.conn else {
            return Err(SqlCopyError::Settings(format!(
                "{what}: COPY text goes to a PostgreSQL sink only"
            )));
        };
        if let Some(copy) = &self.direct {
            match copy_and_merge(c, copy, None, data).await {
                Err(error) if pg_text::is_unique_violation(&error) => self.direct = None,
                other => return other.map_err(sql(what)),
            }
        }
        match copy_and_merge(c, &self.pg.copy, self.pg.merge.as_deref(), data).await {
            Err(error) if pg_text::repeats_a_key(&error) => {}
            other => return other.map_err(sql(what)),
        }
        let names = column_list(Backend::Postgres, &self.columns);
        let quote = |name| Backend::Postgres.quote(name);
        if !self.ordered_table {
            let create = format!(
                "CREATE TEMPORARY TABLE {ordered} ON COMMIT DELETE ROWS AS SELECT {names} FROM {batch} \
                 WITH NO DATA; ALTER TABLE {ordered} ADD COLUMN {row} BIGINT GENERATED ALWAYS AS IDENTITY",
                ordered = quote(PG_ORDERED_TABLE),
                batch = quote(PG_BATCH_TABLE),
                row = quote(PG_ORDER_COLUMN),
            );
            c.execute(AssertSqlSafe(create))
                .await
                .map_err(sql(what.clone()))?;
            self.ordered_table = true;
        }
        let keys = self
            .key
            .iter()
            .map(|&k| quote(&self.columns[k].name))
            .collect::<Vec<_>>()
            .join(", ");
        let copy = format!("COPY {} ({names}) FROM STDIN", quote(PG_ORDERED_TABLE));
        let merge = format!(
            "INSERT INTO {} ({names}) SELECT {names} FROM (SELECT DISTINCT ON ({keys}) {names} FROM {} \
             ORDER BY {keys}, {} DESC) AS last{}",
            quote(&self.target),
            quote(PG_ORDERED_TABLE),
            quote(PG_ORDER_COLUMN),
            upsert_clause(Backend::Postgres, &self.columns, &self.key),
        );
        copy_and_merge(c, &copy, Some(&merge), data)
            .await
            .map_err(sql(what))
    }

    /// In `replace` mode, puts the loaded table in the sink table's place (in one transaction where the
    /// backend allows; MySQL's RENAME TABLE of both is atomic itself).
    pub(crate) async fn finish(&mut self) -> Result<(), SqlCopyError> {
        if self.mode != Mode::Replace {
            return Ok(());
        }
        let backend = self.conn.backend();
        let table = backend.quote(&self.table);
        let staging = backend.quote(&self.target);
        match backend {
            Backend::Postgres | Backend::Sqlite => {
                self.conn.execute("BEGIN").await?;
                let swapped = async {
                    self.conn
                        .execute(&format!("DROP TABLE IF EXISTS {table}"))
                        .await?;
                    self.conn
                        .execute(&format!("ALTER TABLE {staging} RENAME TO {table}"))
                        .await?;
                    self.conn.execute("COMMIT").await
                }
                .await;
                if swapped.is_err() {
                    let _ = self.conn.execute("ROLLBACK").await;
                }
                swapped
            }
            Backend::MySql if self.table_existed => {
                let old = backend.quote(&format!("{}__flowrun_old", self.table));
                self.conn.execute(&format!("DROP TABLE IF EXISTS {old}")).await?;
                self.conn
                    .execute(&format!("RENAME TABLE {table} TO {old}, {staging} TO {table}"))
                    .await?;
                self.conn.execute(&format!("DROP TABLE {old}")).await
            }
            Backend::MySql => {
                self.conn
                    .execute(&format!("RENAME TABLE {staging} TO {table}"))
                    .await
            }
        }
    }

    /// The INSERT for `rows` rows, made once per row count so the driver reuses the prepared statement.
    fn statement(&mut self, rows: usize) -> String {
        if let Some(text) = self.statements.get(&rows) {
            return text.clone();
        }
        let text = insert(
            self.conn.backend(),
            &self.target,
            &self.columns,
            if self.mode == Mode::Append { &[] } else { &self.key },
            rows,
        );
        self.statements.insert(rows, text.clone());
        text
    }
}

/// One transaction: `data` (COPY text) through `copy`, then `merge` when given; the rows written.
async fn copy_and_merge(
    c: &mut sqlx::PgConnection,
    copy: &str,
    merge: Option<&str>,
    data: &[u8],
) -> Result<u64, sqlx::Error> {
    let mut tx = c.begin().await?;
    let mut writer = tx.copy_in_raw(copy).await?;
    if let Err(error) = writer.send(data).await {
        // The driver's error says why; a failed abort adds nothing to it.
        let _ = writer.abort("flowrun: sending the batch failed").await;
        return Err(error);
    }
    let mut written = writer.finish().await?;
    if let Some(merge) = merge {
        written = sqlx::query(AssertSqlSafe(merge.to_owned()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    Ok(written)
}

/// An upsert may not touch one row twice in a statement (PostgreSQL refuses it); the last of rows sharing
/// a key wins, as it would have row by row. Appends keep every row.
fn without_repeated_keys<'r>(key: &[usize], mode: Mode, rows: &'r [Vec<Cell>]) -> Vec<&'r Vec<Cell>> {
    if key.is_empty() || mode == Mode::Append {
        return rows.iter().collect();
    }
    let mut kept: Vec<&Vec<Cell>> = Vec::with_capacity(rows.len());
    let mut at: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    for row in rows {
        let key: String = key
            .iter()
            .map(|&k| row[k].key_text())
            .collect::<Vec<_>>()
            .join("\u{1}");
        match at.get(&key) {
            Some(&i) => kept[i] = row,
            None => {
                at.insert(key, kept.len());
                kept.push(row);
            }
        }
    }
    kept
}

/// How a batch reaches a PostgreSQL sink: `COPY … FROM STDIN` straight into the target (append, and
/// replace without a key), or into a temporary table merged into the target with one
/// `INSERT … SELECT … ON CONFLICT` (upsert, and replace with a key, so that a key repeated in the source
/// behaves as on the other backends).
struct PgStatements {
    copy: String,
    merge: Option<String>,
}

impl PgStatements {
    fn new(backend: Backend, target: &str, columns: &[Column], key: Option<&[String]>) -> Self {
        let names = column_list(backend, columns);
        let Some(key) = key else {
            return Self {
                copy: format!("COPY {} ({names}) FROM STDIN", backend.quote(target)),
                merge: None,
            };
        };
        let key: Vec<usize> = key
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        let merge = format!(
            "INSERT INTO {} ({names}) SELECT {names} FROM {}{}",
            backend.quote(target),
            backend.quote(PG_BATCH_TABLE),
            upsert_clause(backend, columns, &key)
        );
        Self {
            copy: format!("COPY {} ({names}) FROM STDIN", backend.quote(PG_BATCH_TABLE)),
            merge: Some(merge),
        }
    }
}

/// The quoted column names, comma-separated.
fn column_list(backend: Backend, columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| backend.quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `INSERT INTO t (…) VALUES (…), …` with the upsert clause of the backend when `key` is not empty.
fn insert(backend: Backend, table: &str, columns: &[Column], key: &[usize], rows: usize) -> String {
    let mut text = format!(
        "INSERT INTO {} ({}) VALUES ",
        backend.quote(table),
        column_list(backend, columns)
    );
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        text.push('(');
        for i in 0..columns.len() {
            n += 1;
            if i > 0 {
                text.push_str(", ");
            }
            text.push_str(&backend.placeholder(n));
        }
        text.push(')');
    }
    text.push_str(&upsert_clause(backend, columns, key));
    text
}

/// ` ON CONFLICT (key) DO UPDATE …` / ` ON DUPLICATE KEY UPDATE …`, or nothing when `key` is empty.
fn upsert_clause(backend: Backend, columns: &[Column], key: &[usize]) -> String {
    if key.is_empty() {
        return String::new();
    }
    let names: Vec<String> = columns.iter().map(|c| backend.quote(&c.name)).collect();
    let updated: Vec<&String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| !key.contains(i))
        .map(|(_, name)| name)
        .collect();
    match backend {
        Backend::Postgres | Backend::Sqlite => {
            let key_names: Vec<&str> = key.iter().map(|&k| names[k].as_str()).collect();
            let action = if updated.is_empty() {
                "NOTHING".to_owned()
            } else {
                let sets: Vec<String> = updated.iter().map(|n| format!("{n} = excluded.{n}")).collect();
                format!("UPDATE SET {}", sets.join(", "))
            };
            format!(" ON CONFLICT ({}) DO {action}", key_names.join(", "))
        }
        Backend::MySql => {
            let sets: Vec<String> = if updated.is_empty() {
                vec![format!("{0} = {0}", names[key[0]])]
            } else {
                updated.iter().map(|n| format!("{n} = VALUES({n})")).collect()
            };
            format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", "))
        }
    }
}

/// `CREATE TABLE` with types mapped from the query's and a primary key on `key`.
fn create_table(backend: Backend, table: &str, columns: &[Column], key: &[String]) -> String {
    let mut parts: Vec<String> = columns
        .iter()
        .map(|c| {
            let in_key = key.contains(&c.name);
            format!("{} {}", backend.quote(&c.name), backend.column_type(c.ty, in_key))
        })
        .collect();
    if !key.is_empty() {
        let names: Vec<String> = key.iter().map(|k| backend.quote(k)).collect();
        parts.push(format!("PRIMARY KEY ({})", names.join(", ")));
    }
    format!("CREATE TABLE {} ({})", backend.quote(table), parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql_copy::cell::ColumnType;

    fn columns() -> Vec<Column> {
        ["id", "name"]
            .iter()
            .zip([ColumnType::I64, ColumnType::Text])
            .map(|(n, ty)| Column {
                name: (*n).to_owned(),
                ty,
                source_type: String::new(),
            })
            .collect()
    }

    #[test]
    fn upserts_are_written_in_each_dialect() {
        assert_eq!(
            insert(Backend::Sqlite, "t", &columns(), &[0], 2),
            "INSERT INTO \"t\" (\"id\", \"name\") VALUES (?, ?), (?, ?) \
             ON CONFLICT (\"id\") DO UPDATE SET \"name\" = excluded.\"name\""
        );
        assert_eq!(
            insert(Backend::MySql, "t", &columns(), &[0], 1),
            "INSERT INTO `t` (`id`, `name`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `name` = VALUES(`name`)"
        );
        assert_eq!(
            insert(Backend::Sqlite, "t", &columns(), &[], 1),
            "INSERT INTO \"t\" (\"id\", \"name\") VALUES (?, ?)"
        );
        let upsert = PgStatements::new(Backend::Postgres, "t", &columns(), Some(&["id".to_owned()]));
        assert_eq!(
            upsert.copy,
            "COPY \"flowrun__batch\" (\"id\", \"name\") FROM STDIN"
        );
        assert_eq!(
            upsert.merge.as_deref(),
            Some(
                "INSERT INTO \"t\" (\"id\", \"name\") SELECT \"id\", \"name\" FROM \"flowrun__batch\" \
                 ON CONFLICT (\"id\") DO UPDATE SET \"name\" = excluded.\"name\""
            )
        );
        let append = PgStatements::new(Backend::Postgres, "t", &columns(), None);
        assert_eq!(append.copy, "COPY \"t\" (\"id\", \"name\") FROM STDIN");
        assert_eq!(append.merge, None);
        assert_eq!(
            create_table(Backend::MySql, "t", &columns(), &["name".to_owned()]),
            "CREATE TABLE `t` (`id` BIGINT, `name` VARCHAR(255), PRIMARY KEY (`name`))"
        );
    }
}
