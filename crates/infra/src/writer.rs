//! Where the transactions that start and finish runs begin: [`RunWriter`].

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::sqlite::SqliteQueryResult;
use sea_orm::sqlx::{self, Either, Executor, Sqlite};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, RuntimeErr, Statement, TransactionTrait};
use sea_query_sqlx::SqlxValues;
use tracing::warn;

/// Sees every batch a [`BatchConnection`] sends, with how long it took (SeaORM's metric callback does not:
/// batches bypass SeaORM).
pub type BatchObserver = Arc<dyn Fn(&str, Duration) + Send + Sync>;

/// Begins the write transactions of a run's lifecycle: on a connection reserved for them while it is free,
/// otherwise on the pool.
///
/// The reserved connection exists on a SQLite file ([`crate::connect_run_writer`] says why). A transaction
/// never waits for another run's: when one holds the reserved connection, the transaction takes a pooled
/// connection as it would without one, so concurrent runs lose nothing and a lone run always finds the
/// connection it used last. (It may wait for that connection's way back into its pool after the previous
/// transaction: sqlx returns connections from a spawned task, with a ping.) If the reserved connection
/// fails, the transaction falls back to the pool.
#[derive(Clone)]
pub struct RunWriter {
    pool: DatabaseConnection,
    reserved: Option<Arc<Reserved>>,
    observer: Option<BatchObserver>,
}

impl std::fmt::Debug for RunWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunWriter")
            .field("pool", &self.pool)
            .field("reserved", &self.reserved)
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

#[derive(Debug)]
struct Reserved {
    db: DatabaseConnection,
    taken: AtomicBool,
}

impl RunWriter {
    /// Run transactions on `pool`, and on `reserved` (a pool of one connection) while it is free.
    pub fn new(pool: DatabaseConnection, reserved: Option<DatabaseConnection>) -> Self {
        let reserved = reserved.map(|db| {
            Arc::new(Reserved {
                db,
                taken: AtomicBool::new(false),
            })
        });
        Self {
            pool,
            reserved,
            observer: None,
        }
    }

    /// The same writer, telling `observer` of every SQLite batch it sends (for counting statements).
    pub fn observed(mut self, observer: BatchObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Run transactions on `pool` only.
    pub fn pooled(pool: DatabaseConnection) -> Self {
        Self::new(pool, None)
    }

    /// The pool, for everything that is not a run's start or finish.
    pub fn pool(&self) -> &DatabaseConnection {
        &self.pool
    }

    /// Closes the reserved connection and the pool; transactions begun afterwards fail.
    pub async fn close(&self) -> Result<(), DbErr> {
        if let Some(reserved) = &self.reserved {
            reserved.db.close_by_ref().await?;
        }
        self.pool.close_by_ref().await
    }

    /// Begins a transaction, on the reserved connection if it is free.
    pub async fn begin(&self) -> Result<WriteTransaction, DbErr> {
        if let Some(reserved) = &self.reserved
            && reserved
                .taken
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            // The flag is cleared when the guard drops, whether `begin` fails here or the transaction ends.
            let slot = Slot(Arc::clone(reserved));
            match reserved.db.begin().await {
                Ok(txn) => {
                    return Ok(WriteTransaction {
                        txn,
                        _slot: Some(slot),
                    });
                }
                // The pool can still serve the run; the reserved connection is tried again next time.
                Err(error) => warn!(%error, "the connection reserved for run writes failed; using the pool"),
            }
        }
        Ok(WriteTransaction {
            txn: self.pool.begin().await?,
            _slot: None,
        })
    }
}

impl RunWriter {
    /// A SQLite connection for one lifecycle step's batches: the reserved connection if it is free, else
    /// one of the pool's (as [`RunWriter::begin`] chooses). `None` on other backends.
    pub async fn sqlite_batches(&self) -> Result<Option<BatchConnection>, DbErr> {
        if self.pool.get_database_backend() != sea_orm::DatabaseBackend::Sqlite {
            return Ok(None);
        }
        if let Some(reserved) = &self.reserved
            && reserved
                .taken
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            let slot = Slot(Arc::clone(reserved));
            match reserved.db.get_sqlite_connection_pool().acquire().await {
                Ok(conn) => return Ok(Some(self.batch_connection(conn, Some(slot)))),
                Err(error) => warn!(%error, "the connection reserved for run writes failed; using the pool"),
            }
        }
        let conn = self
            .pool
            .get_sqlite_connection_pool()
            .acquire()
            .await
            .map_err(driver_error)?;
        Ok(Some(self.batch_connection(conn, None)))
    }

    fn batch_connection(&self, conn: PoolConnection<Sqlite>, slot: Option<Slot>) -> BatchConnection {
        BatchConnection {
            conn,
            open: false,
            observer: self.observer.clone(),
            _slot: slot,
        }
    }
}

/// A sqlx error as SeaORM reports it, so the repository classifies it as it does every other.
fn driver_error(error: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(error)))
}

/// One SQLite connection running a lifecycle step as batches ([`crate::hot_path::SqliteBatches`]): each
/// batch is one command to the connection's worker thread, and the batches open and commit the step's
/// transaction themselves.
///
/// A batch that fails, or whose caller stops waiting for it, can leave that transaction open; sqlx's
/// driver does not know of it (it tracks only the transactions it began). Such a connection is closed
/// instead of going back to its pool, and closing a SQLite connection rolls its open transaction back.
pub struct BatchConnection {
    conn: PoolConnection<Sqlite>,
    /// Whether a transaction may be open: from the moment a batch is sent until one ends it.
    open: bool,
    observer: Option<BatchObserver>,
    // Declared after `conn`, so the connection is released before the reserved slot is.
    _slot: Option<Slot>,
}

impl std::fmt::Debug for BatchConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchConnection")
            .field("open", &self.open)
            .field("reserved", &self._slot.is_some())
            .finish_non_exhaustive()
    }
}

impl BatchConnection {
    /// Runs `statement` (one or several statements, with their values in order) as one command and
    /// returns each statement's result. `ends_transaction`: the batch ends with the `COMMIT` of what it or
    /// an earlier batch began; otherwise it leaves a transaction open for the next batch.
    pub async fn batch(
        &mut self,
        statement: Statement,
        ends_transaction: bool,
    ) -> Result<Vec<SqliteQueryResult>, DbErr> {
        self.open = true;
        let started = Instant::now();
        let values = statement.values.map(|values| values.0).unwrap_or_default();
        let query = sqlx::query_with(
            sqlx::AssertSqlSafe(statement.sql.as_str()),
            SqlxValues(sea_orm::sea_query::Values(values)),
        );
        let results: Vec<SqliteQueryResult> = self
            .conn
            .fetch_many(query)
            .try_filter_map(|step| async move {
                Ok(match step {
                    Either::Left(done) => Some(done),
                    Either::Right(_) => None,
                })
            })
            .try_collect()
            .await
            .map_err(driver_error)?;
        if let Some(observer) = &self.observer {
            observer(&statement.sql, started.elapsed());
        }
        if ends_transaction {
            self.open = false;
        }
        Ok(results)
    }
}

impl Drop for BatchConnection {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

/// Holds the reserved connection for one transaction.
struct Slot(Arc<Reserved>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.store(false, Ordering::Release);
    }
}

/// A transaction begun by [`RunWriter::begin`]; dereferences to SeaORM's transaction. Dropped without
/// [`commit`](Self::commit), it rolls back.
pub struct WriteTransaction {
    txn: DatabaseTransaction,
    // Declared after `txn`, so the transaction (and its connection) is released first.
    _slot: Option<Slot>,
}

impl std::fmt::Debug for WriteTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTransaction")
            .field("reserved", &self._slot.is_some())
            .finish_non_exhaustive()
    }
}

impl WriteTransaction {
    /// Commits.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.txn.rollback().await
    }
}

impl Deref for WriteTransaction {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectSettings, connect, connect_run_writer};
    use sea_orm::ConnectionTrait;

    async fn writer(name: &str) -> (RunWriter, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("flowrun-writer-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let settings = ConnectSettings::new(format!("sqlite://{}", path.display()));
        let pool = connect(&settings).await.expect("pool");
        let reserved = connect_run_writer(&settings).await.expect("reserved");
        assert!(reserved.is_some(), "a SQLite file gets a reserved connection");
        (RunWriter::new(pool, reserved), path)
    }

    async fn connection_id(txn: &WriteTransaction) -> i64 {
        // The address of the connection's `sqlite3` handle is not exposed; its temp schema is per connection.
        txn.execute_unprepared("CREATE TEMP TABLE IF NOT EXISTS whoami (id INTEGER)")
            .await
            .expect("temp table");
        let row = txn
            .query_one_raw(sea_orm::Statement::from_string(
                txn.get_database_backend(),
                "SELECT count(*) FROM whoami",
            ))
            .await
            .expect("query")
            .expect("row");
        row.try_get_by_index::<i64>(0).expect("count")
    }

    #[tokio::test]
    async fn a_lone_writer_keeps_to_the_reserved_connection() {
        let (writer, path) = writer("lone").await;
        for round in 0..20 {
            let txn = writer.begin().await.expect("begin");
            assert!(
                txn._slot.is_some(),
                "round {round}: took the pool though the slot was free"
            );
            // Only the reserved connection has seen this row, so the count grows by one each round.
            assert_eq!(connection_id(&txn).await, round);
            txn.execute_unprepared("INSERT INTO whoami VALUES (1)")
                .await
                .expect("insert");
            txn.commit().await.expect("commit");
        }
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn a_second_writer_takes_the_pool_instead_of_waiting() {
        let (writer, path) = writer("busy").await;
        let first = writer.begin().await.expect("first");
        assert!(first._slot.is_some());
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), writer.begin())
            .await
            .expect("does not wait for the reserved connection")
            .expect("second");
        assert!(second._slot.is_none(), "went to the pool");
        second.rollback().await.expect("rollback");
        drop(first);
        let third = writer.begin().await.expect("third");
        assert!(third._slot.is_some(), "a dropped transaction frees the slot");
        third.rollback().await.expect("rollback");
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn a_failed_reserved_connection_falls_back_to_the_pool() {
        let (writer, path) = writer("fallback").await;
        if let Some(reserved) = &writer.reserved {
            reserved.db.close_by_ref().await.expect("closes");
        }
        let txn = writer.begin().await.expect("the pool serves it");
        assert!(txn._slot.is_none());
        txn.rollback().await.expect("rollback");
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn a_batch_left_in_a_transaction_closes_its_connection_so_its_lock_is_released() {
        let (writer, path) = writer("open-batch").await;
        writer
            .pool()
            .execute_unprepared("CREATE TABLE t (x INTEGER)")
            .await
            .expect("table");
        for round in 0..3 {
            let mut conn = writer.sqlite_batches().await.expect("batches").expect("SQLite");
            let begin = Statement::from_string(sea_orm::DatabaseBackend::Sqlite, "BEGIN IMMEDIATE");
            conn.batch(begin, false).await.expect("begin");
            let insert = Statement::from_string(sea_orm::DatabaseBackend::Sqlite, "INSERT INTO t VALUES (1)");
            conn.batch(insert, false).await.expect("insert");
            // Dropped with its transaction open, as when its caller is cancelled or a batch failed.
            drop(conn);
            let txn = tokio::time::timeout(std::time::Duration::from_secs(10), writer.begin())
                .await
                .unwrap_or_else(|_| panic!("round {round}: the write lock was never released"))
                .expect("begin");
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                txn.execute_unprepared("INSERT INTO t VALUES (2)"),
            )
            .await
            .unwrap_or_else(|_| panic!("round {round}: the write lock was never released"))
            .expect("write");
            txn.commit().await.expect("commit");
        }
        let rows = writer
            .pool()
            .query_one_raw(Statement::from_string(
                sea_orm::DatabaseBackend::Sqlite,
                "SELECT count(*), sum(x) FROM t",
            ))
            .await
            .expect("query")
            .expect("row");
        assert_eq!(rows.try_get_by_index::<i64>(0).expect("count"), 3);
        assert_eq!(
            rows.try_get_by_index::<i64>(1).expect("sum"),
            6,
            "only the committed rows"
        );
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn only_sqlite_files_get_a_reserved_connection() {
        let memory = ConnectSettings::new("sqlite::memory:");
        assert!(connect_run_writer(&memory).await.expect("memory").is_none());
    }
}
