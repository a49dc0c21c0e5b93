//! Counting what a run costs the database: statements on the client, commits on the server.
//!
//! Statements are counted with SeaORM's metric callback, which sees every statement sent through the pool
//! and its transactions — but not `BEGIN` and `COMMIT`, which the driver issues itself. Commits are read from
//! the server's own counters: `pg_stat_database.xact_commit` on PostgreSQL (per database; read after a pause
//! so that every backend has flushed its statistics) and the global `Com_commit` on MySQL/MariaDB (which also
//! counts other clients' commits: run it on an otherwise idle server). SQLite has no such counter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};

/// Counts statements, and the time spent in each kind, while started.
#[derive(Debug, Default)]
pub struct StatementCounter {
    enabled: AtomicBool,
    statements: AtomicU64,
    by_sql: Mutex<HashMap<String, (u64, Duration)>>,
}

impl StatementCounter {
    /// Called for every statement the pool executes, with how long it took.
    pub fn record(&self, sql: &str, elapsed: Duration) {
        if self.enabled.load(Ordering::Relaxed) {
            self.statements.fetch_add(1, Ordering::Relaxed);
            let key: String = sql.chars().take(60).collect();
            if let Ok(mut by_sql) = self.by_sql.lock() {
                let entry = by_sql.entry(key).or_default();
                entry.0 += 1;
                entry.1 += elapsed;
            }
        }
    }

    /// Starts counting from zero.
    pub fn start(&self) {
        self.statements.store(0, Ordering::Relaxed);
        if let Ok(mut by_sql) = self.by_sql.lock() {
            by_sql.clear();
        }
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Per statement (its first 60 characters): how often it ran and its mean time in milliseconds,
    /// most total time first.
    pub fn profile(&self) -> Vec<(String, u64, f64)> {
        let Ok(by_sql) = self.by_sql.lock() else {
            return Vec::new();
        };
        let mut rows: Vec<(String, u64, f64, Duration)> = by_sql
            .iter()
            .map(|(sql, (n, total))| {
                let mean = total.as_secs_f64() * 1000.0 / (*n).max(1) as f64;
                (sql.clone(), *n, mean, *total)
            })
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.3));
        rows.into_iter().map(|(sql, n, mean, _)| (sql, n, mean)).collect()
    }

    /// Stops counting and returns the count.
    pub fn stop(&self) -> u64 {
        self.enabled.store(false, Ordering::Relaxed);
        self.statements.load(Ordering::Relaxed)
    }
}

/// How long PostgreSQL backends may keep statistics before flushing them (`PGSTAT_IDLE_INTERVAL` is 10 s).
const PG_STATS_FLUSH_WAIT: Duration = Duration::from_secs(11);

/// The server's commit counter, or `None` on SQLite.
pub async fn server_commits(db: &DatabaseConnection) -> anyhow::Result<Option<u64>> {
    let backend = db.get_database_backend();
    let (sql, column) = match backend {
        DatabaseBackend::Postgres => {
            tokio::time::sleep(PG_STATS_FLUSH_WAIT).await;
            (
                "SELECT CAST(xact_commit AS TEXT) FROM pg_stat_database WHERE datname = current_database()",
                0,
            )
        }
        DatabaseBackend::MySql => ("SHOW GLOBAL STATUS LIKE 'Com_commit'", 1),
        _ => return Ok(None),
    };
    let row = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await
        .context("reading the server's commit counter")?
        .context("the server's commit counter is missing")?;
    let value: String = row.try_get_by_index(column)?;
    Ok(Some(value.trim().parse().context("parsing the commit counter")?))
}
