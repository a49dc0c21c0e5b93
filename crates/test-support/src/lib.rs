//! Fixtures shared by flowrun's suites: a fresh, migrated database per test on every configured backend.
//!
//! The in-memory store ([`Kind::Memory`]) is covered by the suites that ask for it
//! ([`configured_kinds_with_memory`]); its "database" is the URL `memory:`, fresh for each store opened.
//!
//! SQLite always runs (a file in a temporary directory). PostgreSQL runs when `FLOWRUN_TEST_POSTGRES_URL`
//! is set and MySQL/MariaDB when `FLOWRUN_TEST_MYSQL_URL` is set; each test gets its own database there, so
//! tests run in parallel. `FLOWRUN_TEST_REQUIRE_BACKENDS=sqlite,postgres,mysql` (set by CI) turns a missing
//! backend into a failure instead of a skip. Each test binary prints once, past the output capture, which
//! backends it covered and which it skipped.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use url::Url;

/// Environment variable with the PostgreSQL server URL for tests.
pub const POSTGRES_ENV: &str = "FLOWRUN_TEST_POSTGRES_URL";
/// Environment variable with the MySQL/MariaDB server URL for tests.
pub const MYSQL_ENV: &str = "FLOWRUN_TEST_MYSQL_URL";
/// Environment variable listing backends that must run (comma-separated).
pub const REQUIRE_ENV: &str = "FLOWRUN_TEST_REQUIRE_BACKENDS";

/// A database product under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
    /// MySQL/MariaDB server.
    MySql,
    /// The in-memory store (`memory:`): covered only by suites that ask for it with
    /// [`configured_kinds_with_memory`], since it lives in one process and knows no SQL.
    Memory,
}

impl Kind {
    /// Lowercase name, as in `FLOWRUN_TEST_REQUIRE_BACKENDS`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
            Self::Memory => "memory",
        }
    }

    /// Whether it is an SQL database (every kind but [`Kind::Memory`]).
    pub fn is_sql(self) -> bool {
        self != Self::Memory
    }

    fn env(self) -> Option<&'static str> {
        match self {
            Self::Sqlite | Self::Memory => None,
            Self::Postgres => Some(POSTGRES_ENV),
            Self::MySql => Some(MYSQL_ENV),
        }
    }
}

/// A fresh, empty database for one test. SQLite files are removed when it is dropped; server databases
/// are dropped by a later test run once they are an hour old (tests can panic before any async cleanup).
#[derive(Debug)]
pub struct TestDatabase {
    /// Which backend.
    pub kind: Kind,
    /// Its URL.
    pub url: String,
    _dir: Option<TempDir>,
}

#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{secs}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The SQL backends this run covers, after printing (once per binary) what is covered and skipped. Panics
/// if a required backend is not configured.
pub fn configured_kinds() -> Vec<Kind> {
    covered_kinds(false)
}

/// [`Kind::Memory`] and the SQL backends this run covers, for suites written against the ports alone (the
/// repository conformance suite); the line printed names memory too. A binary calls either this or
/// [`configured_kinds`], not both: the line is printed once, by the first call.
pub fn configured_kinds_with_memory() -> Vec<Kind> {
    covered_kinds(true)
}

fn covered_kinds(with_memory: bool) -> Vec<Kind> {
    static REPORT: Once = Once::new();
    let required: Vec<String> = std::env::var(REQUIRE_ENV)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let mut covered = if with_memory {
        vec![Kind::Memory, Kind::Sqlite]
    } else {
        vec![Kind::Sqlite]
    };
    let mut skipped = Vec::new();
    for kind in [Kind::Postgres, Kind::MySql] {
        let env = kind.env().unwrap_or_default();
        if std::env::var(env).is_ok_and(|v| !v.trim().is_empty()) {
            covered.push(kind);
        } else {
            assert!(
                !required.iter().any(|r| r == kind.name()),
                "{REQUIRE_ENV} requires {} but {env} is not set",
                kind.name()
            );
            skipped.push(format!("{} ({env} not set)", kind.name()));
        }
    }
    REPORT.call_once(|| {
        let names: Vec<&str> = covered.iter().map(|k| k.name()).collect();
        let line = if skipped.is_empty() {
            format!(
                "flowrun test backends: covered {}; skipped none\n",
                names.join(", ")
            )
        } else {
            format!(
                "flowrun test backends: covered {}; skipped {}\n",
                names.join(", "),
                skipped.join(", ")
            )
        };
        // Written to the stderr handle directly: the test harness captures print!/eprint! only.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    });
    covered
}

/// A fresh database on `kind`. Panics with the reason when the server is configured but does not answer:
/// a configured backend that cannot be reached is a failure, not a skip.
pub async fn fresh_database(kind: Kind) -> TestDatabase {
    let suffix = unique_suffix();
    match kind {
        Kind::Memory => TestDatabase {
            kind,
            url: "memory:".to_owned(),
            _dir: None,
        },
        Kind::Sqlite => {
            let dir = std::env::temp_dir().join(format!("flowrun_test_{suffix}"));
            std::fs::create_dir_all(&dir).expect("create a temporary directory");
            let url = format!("sqlite://{}/flowrun.db", dir.display());
            TestDatabase {
                kind,
                url,
                _dir: Some(TempDir(dir)),
            }
        }
        Kind::Postgres | Kind::MySql => {
            let env = kind.env().unwrap_or_default();
            let base = std::env::var(env).unwrap_or_else(|_| panic!("{env} is not set"));
            let admin = Database::connect(base.as_str())
                .await
                .unwrap_or_else(|e| panic!("{env}={base} is set but the server does not answer: {e}"));
            drop_stale_databases(&admin, kind).await;
            let name = format!("flowrun_t_{suffix}");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
            let _ = admin.close().await;
            let mut url = Url::parse(&base).expect("a valid server URL");
            url.set_path(&format!("/{name}"));
            TestDatabase {
                kind,
                url: url.to_string(),
                _dir: None,
            }
        }
    }
}

/// A fresh database on every configured SQL backend.
pub async fn fresh_databases() -> Vec<TestDatabase> {
    let mut databases = Vec::new();
    for kind in configured_kinds() {
        databases.push(fresh_database(kind).await);
    }
    databases
}

/// Runs `sql` on the database at `url` (for tests that change rows by hand, as an operator might).
pub async fn execute_sql(url: &str, sql: &str) {
    let db = Database::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = db.close().await;
}

async fn drop_stale_databases(admin: &DatabaseConnection, kind: Kind) {
    static ONCE: std::sync::Mutex<(bool, bool)> = std::sync::Mutex::new((false, false));
    {
        let mut done = ONCE.lock().unwrap_or_else(|e| e.into_inner());
        let flag = if kind == Kind::Postgres {
            &mut done.0
        } else {
            &mut done.1
        };
        if *flag {
            return;
        }
        *flag = true;
    }
    let sql = match kind {
        Kind::Postgres => "SELECT datname AS name FROM pg_database WHERE datname LIKE 'flowrun_t_%'",
        _ => {
            "SELECT schema_name AS name FROM information_schema.schemata WHERE schema_name LIKE 'flowrun_t_%'"
        }
    };
    let backend = admin.get_database_backend();
    let Ok(rows) = admin.query_all_raw(Statement::from_string(backend, sql)).await else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "name") else {
            continue;
        };
        let created: u64 = name
            .trim_start_matches("flowrun_t_")
            .split('_')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(created) > 3600 {
            let drop = match kind {
                Kind::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                _ => format!("DROP DATABASE IF EXISTS {name}"),
            };
            let _ = admin.execute_unprepared(&drop).await;
        }
    }
}
