//! Connecting to the database: URL handling, per-backend pool and session settings, migration.

use std::fmt;
use std::time::Duration;

use flowrun_migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseBackend, DatabaseConnection, DbErr};
use thiserror::Error;
use url::Url;

use crate::secrets::{mask_url, scrub};

/// The database products flowrun runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite, a file or in memory.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
}

impl Backend {
    /// The backend a URL points at, from its scheme.
    pub fn from_url(url: &str) -> Result<Self, ConnectError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::MySql),
            _ => Err(ConnectError::UnsupportedUrl { url: mask_url(url) }),
        }
    }

    /// A short lowercase name: `sqlite`, `postgres`, `mysql`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<DatabaseBackend> for Backend {
    fn from(backend: DatabaseBackend) -> Self {
        match backend {
            DatabaseBackend::Postgres => Self::Postgres,
            DatabaseBackend::MySql => Self::MySql,
            _ => Self::Sqlite,
        }
    }
}

/// Why the database could not be opened or migrated. URLs in it have their password masked.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The URL's scheme is not one flowrun supports.
    #[error("unsupported database URL `{url}`: use sqlite://, postgres://, mysql:// or memory:")]
    UnsupportedUrl {
        /// The URL, password masked.
        url: String,
    },
    /// The URL cannot be read (bad input, not a database that is down).
    #[error("invalid database URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, secrets masked.
        url: String,
        /// What is wrong, with a hint.
        reason: String,
    },
    /// The database could not be reached or refused the connection.
    #[error("cannot connect to {url}: {problem}")]
    Connect {
        /// The URL, password masked.
        url: String,
        /// What went wrong.
        problem: ConnectProblem,
        /// The driver's message, without the URL's secrets.
        #[source]
        detail: DriverText,
    },
    /// Applying the migrations failed.
    #[error("cannot migrate {url}: {detail}")]
    Migrate {
        /// The URL, password masked.
        url: String,
        /// The driver's message, without the URL's secrets.
        #[source]
        detail: DriverText,
    },
}

/// What went wrong when connecting, as far as the driver says: each needs a different fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectProblem {
    /// Nothing listens at the address (server down, wrong host or port).
    Refused {
        /// `host:port`.
        address: String,
    },
    /// No answer within the connect timeout (server overloaded, firewall dropping packets).
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// The server refused the user name or password.
    AuthFailed {
        /// The server's message.
        message: String,
    },
    /// The server has no database of that name.
    UnknownDatabase {
        /// The server's message.
        message: String,
    },
    /// The directory of a SQLite file does not exist.
    MissingDirectory {
        /// The directory.
        directory: String,
    },
    /// Anything else; the driver's message.
    Other {
        /// The driver's message, without the URL's secrets.
        message: String,
    },
}

impl ConnectProblem {
    /// Whether the server could not be reached at all (where "is it running?" is the right question).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::TimedOut { .. })
    }
}

impl fmt::Display for ConnectProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { address } => write!(f, "connection refused by {address}"),
            Self::TimedOut { after } => write!(f, "no answer within {} s", after.as_secs_f64()),
            Self::AuthFailed { message } => write!(f, "authentication failed: {message}"),
            Self::UnknownDatabase { message } => write!(f, "no such database: {message}"),
            Self::MissingDirectory { directory } => {
                write!(f, "the directory `{directory}` does not exist")
            }
            Self::Other { message } => f.write_str(message),
        }
    }
}

/// The sqlx error inside a SeaORM error, where there is one.
fn sqlx_error(error: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match error {
        DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

/// Sorts a failed connection into what the user has to fix. A refused port shows up as a pool timeout
/// (sqlx retries refused connections until its deadline, in case the server is starting), so a timeout is
/// followed by one plain TCP connection to tell the two apart.
async fn classify(error: &DbErr, settings: &ConnectSettings) -> ConnectProblem {
    use sea_orm::sqlx::Error as Sqlx;
    use std::io::ErrorKind;
    let url = &settings.url;
    let timed_out = ConnectProblem::TimedOut {
        after: settings.connect_timeout,
    };
    if matches!(error, DbErr::ConnectionAcquire(_)) || matches!(sqlx_error(error), Some(Sqlx::PoolTimedOut)) {
        return refused_or(timed_out, url).await;
    }
    match sqlx_error(error) {
        Some(Sqlx::Io(e)) if e.kind() == ErrorKind::ConnectionRefused => ConnectProblem::Refused {
            address: server_address(url).unwrap_or_else(|| "the server".to_owned()),
        },
        Some(Sqlx::Io(e)) if e.kind() == ErrorKind::TimedOut => refused_or(timed_out, url).await,
        Some(Sqlx::Database(database)) => {
            let message = scrub(database.message(), url);
            let mysql = database
                .try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>()
                .map(|e| e.number());
            match (database.code().as_deref(), mysql) {
                (_, Some(1045 | 1044)) | (Some("28P01" | "28000"), None) => {
                    ConnectProblem::AuthFailed { message }
                }
                (_, Some(1049)) | (Some("3D000"), None) => ConnectProblem::UnknownDatabase { message },
                _ => ConnectProblem::Other { message },
            }
        }
        _ => ConnectProblem::Other {
            message: scrub(&error.to_string(), url),
        },
    }
}

/// `host:port` of a server URL (with the backend's default port).
fn server_address(url: &str) -> Option<String> {
    let parsed = Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let port = parsed.port().unwrap_or(match Backend::from_url(url).ok()? {
        Backend::Postgres => 5432,
        Backend::MySql => 3306,
        Backend::Sqlite => return None,
    });
    Some(format!("{host}:{port}"))
}

async fn refused_or(otherwise: ConnectProblem, url: &str) -> ConnectProblem {
    let Some(address) = server_address(url) else {
        return otherwise;
    };
    let attempt = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(address.as_str()),
    )
    .await;
    match attempt {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            ConnectProblem::Refused { address }
        }
        _ => otherwise,
    }
}

/// The file a SQLite URL names; `None` for an in-memory database or another backend.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if Backend::from_url(url).ok()? != Backend::Sqlite || is_sqlite_memory(url) {
        return None;
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty()).then(|| std::path::PathBuf::from(path))
}

/// A driver's message with every secret of the database URL scrubbed out: drivers repeat the URL (or the
/// password) in some of their errors, and what they say must not reach a terminal or a log unmasked.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct DriverText(String);

impl DriverText {
    /// `error`'s message with the secrets of `url` removed.
    pub fn new(error: &dyn std::fmt::Display, url: &str) -> Self {
        Self(scrub(&error.to_string(), url))
    }
}

/// Refuses a server URL the driver could not read either, before the driver gets to repeat it.
fn check_server_url(url: &str) -> Result<(), ConnectError> {
    match Url::parse(url) {
        Ok(_) => Ok(()),
        Err(error) => Err(ConnectError::InvalidUrl {
            url: mask_url(url),
            reason: format!(
                "{error} (a password holding `#`, `/`, `?`, `@` or `:` must be percent-encoded: %23, %2F, %3F, %40, %3A)"
            ),
        }),
    }
}

/// Whether the driver refused the URL's settings (bad input) rather than failed to reach the database.
fn is_configuration_error(error: &DbErr) -> bool {
    matches!(
        error,
        DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)) if matches!(**e, sea_orm::sqlx::Error::Configuration(_))
    )
}

/// Pool and connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSettings {
    /// The database URL (`sqlite://flowrun.db`, `postgres://…`, `mysql://…`).
    pub url: String,
    /// Pool size; `None` picks one per backend.
    pub max_connections: Option<u32>,
    /// How long to wait for a connection before giving up.
    pub connect_timeout: Duration,
}

impl ConnectSettings {
    /// Settings with per-backend defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// A SQLite file is only created with `mode=rwc`; add it unless the URL says otherwise.
fn sqlite_url(url: &str) -> String {
    if is_sqlite_memory(url) || url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// How much of a SQLite database file each connection maps into memory (`PRAGMA mmap_size`).
///
/// In WAL mode a connection drops its page cache whenever another connection has written since its last
/// transaction, which with a pool is nearly every transaction; it then reads every page it needs again.
/// With the file mapped, those reads are memory accesses instead of a `pread` system call and a copy each.
/// It is address space, not memory: pages come from the operating system's page cache, shared by all
/// connections.
pub const SQLITE_MMAP_BYTES: u64 = 256 * 1024 * 1024;

/// How long a pooled PostgreSQL or MySQL connection may sit idle before it is pinged on its way out of the
/// pool.
///
/// sqlx pings every connection it hands out by default: one more round trip per transaction, two per run.
/// A connection that was in use moments ago is alive; one idle this long may have been closed by the
/// server (`wait_timeout`, `idle_session_timeout`), a proxy or a firewall, and is replaced if the ping
/// fails.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(30);

/// Opens a pool on the database named by `settings`, with the settings each backend needs.
///
/// SQLite gets WAL (readers never block the writer), `synchronous=NORMAL` (durable across process crashes;
/// safe with WAL), `foreign_keys=ON` and a 30 s busy timeout so concurrent writers queue instead of
/// failing. An in-memory SQLite database lives as long as its single, never-recycled connection.
pub async fn connect(settings: &ConnectSettings) -> Result<DatabaseConnection, ConnectError> {
    let backend = Backend::from_url(&settings.url)?;
    if backend != Backend::Sqlite {
        check_server_url(&settings.url)?;
    }
    let memory = backend == Backend::Sqlite && is_sqlite_memory(&settings.url);
    let size = match backend {
        Backend::Sqlite if memory => 1,
        // SQLite has one writer at a time; a few connections serve readers alongside it.
        Backend::Sqlite => 4,
        Backend::Postgres | Backend::MySql => 10,
    };
    let size = settings.max_connections.unwrap_or(size);
    // SQLite's own answer is "unable to open database file", whatever the reason: say which.
    if let Some(directory) = sqlite_file(&settings.url)
        .and_then(|file| file.parent().map(std::path::Path::to_path_buf))
        .filter(|dir| !dir.as_os_str().is_empty() && !dir.is_dir())
    {
        return Err(ConnectError::Connect {
            url: mask_url(&settings.url),
            problem: ConnectProblem::MissingDirectory {
                directory: directory.display().to_string(),
            },
            detail: DriverText("no such directory".to_owned()),
        });
    }
    open_pool(settings, backend, size, memory).await
}

/// Opens the connection reserved for starting and finishing runs ([`crate::RunWriter`]) where one pays:
/// on a SQLite database file. `None` elsewhere.
///
/// In WAL mode a SQLite connection drops its whole page cache when another connection has written since
/// its last transaction, and a pool hands out its connections in turn, so nearly every run transaction
/// starts cold and walks the run table's B-trees from the file again — more of them as history grows.
/// Run writes that keep to one connection find their pages still cached. PostgreSQL and MySQL keep their
/// caches in the server, shared by every connection; an in-memory SQLite database has only one connection.
pub async fn connect_run_writer(
    settings: &ConnectSettings,
) -> Result<Option<DatabaseConnection>, ConnectError> {
    let backend = Backend::from_url(&settings.url)?;
    if backend != Backend::Sqlite || is_sqlite_memory(&settings.url) {
        return Ok(None);
    }
    open_pool(settings, backend, 1, true).await.map(Some)
}

/// "Never" for a pool's idle timeout and maximum lifetime. Not `Duration::MAX`: sqlx adds these to an
/// `Instant`, which overflows and panics its maintenance task.
const KEEP_FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A pool of at most `size` connections; `keep` opens one at once and never closes it for age or idleness.
async fn open_pool(
    settings: &ConnectSettings,
    backend: Backend,
    size: u32,
    keep: bool,
) -> Result<DatabaseConnection, ConnectError> {
    let url = match backend {
        Backend::Sqlite => sqlite_url(&settings.url),
        _ => settings.url.clone(),
    };
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(size)
        .min_connections(u32::from(keep))
        .connect_timeout(settings.connect_timeout)
        .acquire_timeout(settings.connect_timeout)
        .sqlx_logging(false);
    if keep {
        options.idle_timeout(KEEP_FOREVER).max_lifetime(KEEP_FOREVER);
    }
    match backend {
        // A SQLite connection is a file handle in this process: nothing can drop it while idle.
        Backend::Sqlite => {
            options.test_before_acquire(false);
        }
        Backend::Postgres | Backend::MySql => {
            options.test_before_acquire_if_idle_for(PING_IDLE_AFTER);
        }
    }
    options.map_sqlx_sqlite_opts(|opts| {
        opts.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            .pragma("mmap_size", SQLITE_MMAP_BYTES.to_string())
    });
    let error = match Database::connect(options).await {
        Ok(db) => return Ok(db),
        Err(error) => error,
    };
    let url = mask_url(&settings.url);
    let detail = DriverText::new(&error, &settings.url);
    if is_configuration_error(&error) {
        return Err(ConnectError::InvalidUrl {
            url,
            reason: detail.0,
        });
    }
    let problem = classify(&error, settings).await;
    Err(ConnectError::Connect { url, problem, detail })
}

/// `sql` written with `?` placeholders, in the dialect of `backend`: PostgreSQL's are numbered (`$1`, `$2`,
/// …). Only for statements that hold no `?` inside literals or identifiers.
pub fn numbered_placeholders(backend: DatabaseBackend, sql: &str) -> String {
    if backend != DatabaseBackend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    for (n, part) in sql.split('?').enumerate() {
        if n > 0 {
            out.push('$');
            out.push_str(&n.to_string());
        }
        out.push_str(part);
    }
    out
}

/// PostgreSQL advisory lock key held while migrating (any constant; "flowrun" in ASCII).
const PG_MIGRATE_LOCK: i64 = 0x0066_6c6f_7772_756e;

/// How long a MySQL/MariaDB migration waits for another one to finish, in seconds.
const MYSQL_MIGRATE_LOCK_WAIT_SECS: u32 = 600;

/// Applies every pending migration. Applying them again is a no-op.
///
/// Several processes may migrate one fresh database at once (deployments start replicas together); without
/// a lock each would create the same tables and all but one fail on duplicate keys. On PostgreSQL and
/// MySQL/MariaDB the migration runs under a database lock (`pg_advisory_lock`, `GET_LOCK`) on a connection
/// of its own, as those locks belong to a session. A SQLite file is migrated inside one `BEGIN IMMEDIATE`
/// transaction, which holds its write lock (sea-orm-migration opens no transaction of its own on SQLite
/// unless a migration asks for one, which flowrun's must not).
pub async fn migrate(db: &DatabaseConnection, url: &str) -> Result<(), ConnectError> {
    let failed = |error: DbErr| ConnectError::Migrate {
        url: mask_url(url),
        detail: DriverText::new(&error, url),
    };
    let backend = Backend::from(db.get_database_backend());
    if backend == Backend::Sqlite && is_sqlite_memory(url) {
        // Private to this process's one connection: nobody else can migrate it.
        return Migrator::up(db, None).await.map_err(failed);
    }
    let session = open_pool(&ConnectSettings::new(url), backend, 1, true).await?;
    let result = async {
        lock_migrations(&session, backend).await?;
        let migrated = Migrator::up(&session, None).await;
        let unlocked = unlock_migrations(&session, backend, migrated.is_ok()).await;
        migrated.and(unlocked)
    }
    .await
    .map_err(failed);
    let _ = session.close().await;
    result
}

/// The MySQL lock name: per database (lock names are server-wide), at most 64 characters.
const MYSQL_LOCK_NAME: &str = "LEFT(CONCAT('flowrun_migrate:', DATABASE()), 64)";

async fn lock_migrations(session: &DatabaseConnection, backend: Backend) -> Result<(), DbErr> {
    use sea_orm::{ConnectionTrait, Statement};
    let db_backend = session.get_database_backend();
    match backend {
        Backend::Postgres => {
            session
                .execute_raw(Statement::from_string(
                    db_backend,
                    format!("SELECT pg_advisory_lock({PG_MIGRATE_LOCK})"),
                ))
                .await?;
            Ok(())
        }
        Backend::MySql => {
            let got = session
                .query_one_raw(Statement::from_string(
                    db_backend,
                    format!("SELECT GET_LOCK({MYSQL_LOCK_NAME}, {MYSQL_MIGRATE_LOCK_WAIT_SECS})"),
                ))
                .await?
                .and_then(|row| row.try_get_by_index::<Option<i64>>(0).ok().flatten());
            if got == Some(1) {
                Ok(())
            } else {
                Err(DbErr::Migration(format!(
                    "another migration held the lock for more than {MYSQL_MIGRATE_LOCK_WAIT_SECS} s"
                )))
            }
        }
        Backend::Sqlite => session.execute_unprepared("BEGIN IMMEDIATE").await.map(|_| ()),
    }
}

async fn unlock_migrations(
    session: &DatabaseConnection,
    backend: Backend,
    migrated: bool,
) -> Result<(), DbErr> {
    use sea_orm::{ConnectionTrait, Statement};
    let sql = match backend {
        Backend::Postgres => format!("SELECT pg_advisory_unlock({PG_MIGRATE_LOCK})"),
        Backend::MySql => format!("SELECT RELEASE_LOCK({MYSQL_LOCK_NAME})"),
        Backend::Sqlite if migrated => "COMMIT".to_owned(),
        Backend::Sqlite => "ROLLBACK".to_owned(),
    };
    session
        .execute_raw(Statement::from_string(session.get_database_backend(), sql))
        .await
        .map(|_| ())
}

/// Whether every migration has been applied.
///
/// Only reads (the catalog, then the migrations table), so that a runtime role with no right to create
/// tables can check: sea-orm-migration's own check first runs `CREATE TABLE IF NOT EXISTS
/// seaql_migrations`, which such a role may not even attempt.
pub async fn is_migrated(db: &DatabaseConnection) -> Result<bool, DbErr> {
    use sea_orm::{ConnectionTrait, Statement};
    let backend = db.get_database_backend();
    let table_exists = match backend {
        DatabaseBackend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'seaql_migrations'"
        }
        DatabaseBackend::MySql => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = 'seaql_migrations'"
        }
        _ => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'seaql_migrations'",
    };
    let count = db
        .query_one_raw(Statement::from_string(backend, table_exists))
        .await?
        .map(|row| row.try_get_by_index::<i64>(0))
        .transpose()?
        .unwrap_or(0);
    if count == 0 {
        return Ok(false);
    }
    let applied: std::collections::HashSet<String> = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT version FROM seaql_migrations",
        ))
        .await?
        .iter()
        .filter_map(|row| row.try_get_by_index::<String>(0).ok())
        .collect();
    Ok(Migrator::migrations()
        .iter()
        .all(|migration| applied.contains(migration.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_files_are_created_on_first_use() {
        assert_eq!(sqlite_url("sqlite://flowrun.db"), "sqlite://flowrun.db?mode=rwc");
        assert_eq!(sqlite_url("sqlite://a.db?mode=ro"), "sqlite://a.db?mode=ro");
        assert_eq!(sqlite_url("sqlite::memory:"), "sqlite::memory:");
    }

    #[tokio::test]
    async fn sqlite_connections_get_wal_foreign_keys_and_a_mapped_file() {
        use sea_orm::ConnectionTrait;
        let path = std::env::temp_dir().join(format!("flowrun-pragmas-{}.db", std::process::id()));
        let url = format!("sqlite://{}", path.display());
        let db = connect(&ConnectSettings::new(url)).await.expect("connects");
        let pragma = async |name: &str| {
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DatabaseBackend::Sqlite,
                    format!("PRAGMA {name}"),
                ))
                .await
                .expect("pragma")
                .expect("a row");
            row.try_get_by_index::<String>(0)
                .or_else(|_| row.try_get_by_index::<i64>(0).map(|n| n.to_string()))
                .expect("a value")
        };
        assert_eq!(pragma("journal_mode").await, "wal");
        assert_eq!(pragma("foreign_keys").await, "1");
        assert_eq!(pragma("mmap_size").await, SQLITE_MMAP_BYTES.to_string());
        db.close().await.expect("closes");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[test]
    fn postgres_placeholders_are_numbered() {
        assert_eq!(
            numbered_placeholders(DatabaseBackend::Postgres, "a = ? AND b = ?"),
            "a = $1 AND b = $2"
        );
        assert_eq!(numbered_placeholders(DatabaseBackend::MySql, "a = ?"), "a = ?");
    }

    #[test]
    fn backends_come_from_the_scheme() {
        assert_eq!(Backend::from_url("postgresql://x").ok(), Some(Backend::Postgres));
        assert!(Backend::from_url("oracle://x").is_err());
    }
}
