//! flowrun's composition root: typed settings, connect and migrate, the flow registry, and ready services
//! ([`App`]) for the binaries. No business rules live here.

use std::sync::Arc;
use std::time::Duration;

use flowrun_domain::{
    ClassRegistry, Clock, DataFlowRepository, FlowExecutor, FlowManagement, FlowRegistry, LeaseOwner,
    LeaseSettings, RunRepository, Scheduler, ShutdownSignal,
};
use flowrun_infra::{
    Backend, ConnectSettings, DatabaseConnection, SeaOrmDataFlowRepository, SeaOrmRunRepository, SystemClock,
};
use thiserror::Error;

pub mod json;

pub use flowrun_infra::{ConnectError, ConnectProblem, MASK, RunWriter, mask_url, scrub, sqlite_file};

/// The database used when none is configured: an SQLite file in the current directory, created and
/// migrated on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://flowrun.db";

/// A tracing directive that keeps PostgreSQL's notices (`relation … already exists, skipping`, sent for
/// every `IF NOT EXISTS`) out of the logs: they are expected, not news. Add it to a filter unless the user's
/// own filter mentions sqlx.
pub const QUIET_NOTICES: &str = "sqlx::postgres::notice=warn";

/// Environment variable with the lease length in seconds.
pub const LEASE_ENV: &str = "FLOWRUN_RUN_LEASE_SECS";

/// Environment variable with the number of flows one process runs at once.
pub const CONCURRENCY_ENV: &str = "FLOWRUN_CONCURRENCY";

/// What the binaries configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The database URL.
    pub database_url: String,
    /// How long a run's lease lasts unless renewed.
    pub lease: Duration,
    /// Pool size; `None` picks one per backend.
    pub max_connections: Option<u32>,
    /// How long to wait for the database before giving up.
    pub connect_timeout: Duration,
    /// How many flows the scheduler runs at once in this process.
    pub concurrency: usize,
}

impl Settings {
    /// Settings for `database_url` with every other value at its default.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            lease: LeaseSettings::DEFAULT_DURATION,
            max_connections: None,
            connect_timeout: Duration::from_secs(10),
            concurrency: Scheduler::DEFAULT_CONCURRENCY,
        }
    }

    /// Reads the scheduler's concurrency from `FLOWRUN_CONCURRENCY` when set.
    pub fn with_concurrency_from_env(mut self) -> Result<Self, AppError> {
        if let Ok(raw) = std::env::var(CONCURRENCY_ENV) {
            self.concurrency = parse_concurrency(&raw)?;
        }
        Ok(self)
    }

    /// Reads the lease length from `FLOWRUN_RUN_LEASE_SECS` when set.
    pub fn with_lease_from_env(mut self) -> Result<Self, AppError> {
        if let Ok(raw) = std::env::var(LEASE_ENV) {
            self.lease = parse_lease_secs(&raw)?;
        }
        Ok(self)
    }
}

/// Parses a lease length in seconds (fractions allowed, more than zero, at most a day).
pub fn parse_lease_secs(raw: &str) -> Result<Duration, AppError> {
    let max = LeaseSettings::MAX_DURATION.as_secs();
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|lease| *lease <= LeaseSettings::MAX_DURATION)
        .ok_or_else(|| AppError::InvalidSetting {
            name: LEASE_ENV,
            reason: format!("expected a number of seconds above 0 and at most {max}, got `{raw}`"),
        })
}

/// Parses how many flows one process runs at once: a whole number from 1 to
/// [`Scheduler::MAX_CONCURRENCY`].
pub fn parse_concurrency(raw: &str) -> Result<usize, AppError> {
    raw.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=Scheduler::MAX_CONCURRENCY).contains(n))
        .ok_or_else(|| AppError::InvalidSetting {
            name: CONCURRENCY_ENV,
            reason: format!(
                "expected a whole number from 1 to {}, got `{raw}`",
                Scheduler::MAX_CONCURRENCY
            ),
        })
}

/// Why the application could not be set up.
#[derive(Debug, Error)]
pub enum AppError {
    /// A setting has an invalid value.
    #[error("invalid {name}: {reason}")]
    InvalidSetting {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A server database has not been migrated; the binaries do not change a shared schema implicitly.
    #[error("the database at {url} is not migrated: run `flowrun migrate` first")]
    NotMigrated {
        /// The URL, password masked.
        url: String,
    },
    /// Checking the schema failed.
    #[error("cannot read the schema of {url}: {reason}")]
    Schema {
        /// The URL, password masked.
        url: String,
        /// The driver's message.
        reason: String,
    },
}

/// When opening the database applies migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigratePolicy {
    /// Always (for `flowrun migrate`).
    Always,
    /// On SQLite, which is private to its user; on a server database, refuse to start unmigrated.
    SqliteOnly,
}

/// The registry with every built-in class.
pub fn builtin_registry() -> ClassRegistry {
    let mut registry = ClassRegistry::new();
    flowrun_flows::register_builtins(&mut registry);
    registry
}

/// Who holds leases taken by this process: `host:pid`.
pub fn lease_owner() -> LeaseOwner {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    LeaseOwner::new(format!("{host}:{}", std::process::id()))
}

/// The wired application: ports, executor and scheduler over one connection pool.
#[derive(Clone)]
pub struct App {
    db: DatabaseConnection,
    writer: RunWriter,
    backend: Backend,
    masked_url: String,
    /// Stored data flows.
    pub flows: Arc<dyn DataFlowRepository>,
    /// Stored runs.
    pub runs: Arc<dyn RunRepository>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The executor, the one way flows run.
    pub executor: FlowExecutor,
    /// The scheduler for heartbeats and ticks.
    pub scheduler: Scheduler,
    /// Creating, changing and deleting flows, and pruning runs: the one way flows are managed.
    pub management: FlowManagement,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("backend", &self.backend)
            .field("url", &self.masked_url)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Connects, migrates according to `policy`, and wires the services with `registry`.
    pub async fn open(
        settings: &Settings,
        registry: ClassRegistry,
        policy: MigratePolicy,
    ) -> Result<Self, AppError> {
        let masked_url = mask_url(&settings.database_url);
        let backend = Backend::from_url(&settings.database_url)?;
        let connect_settings = ConnectSettings {
            url: settings.database_url.clone(),
            max_connections: settings.max_connections,
            connect_timeout: settings.connect_timeout,
        };
        let db = flowrun_infra::connect(&connect_settings).await?;
        if policy == MigratePolicy::Always || backend == Backend::Sqlite {
            flowrun_infra::migrate(&db, &settings.database_url).await?;
        } else {
            let migrated = flowrun_infra::is_migrated(&db)
                .await
                .map_err(|e| AppError::Schema {
                    url: masked_url.clone(),
                    reason: scrub(&e.to_string(), &settings.database_url),
                })?;
            if !migrated {
                return Err(AppError::NotMigrated { url: masked_url });
            }
        }
        let reserved = flowrun_infra::connect_run_writer(&connect_settings).await?;
        let writer = RunWriter::new(db, reserved);
        Ok(Self::wire(writer, backend, masked_url, registry, settings.lease)
            .with_concurrency(settings.concurrency))
    }

    /// Wires the services over an open, migrated database: runs start and finish through `writer`,
    /// everything else uses its pool.
    pub fn wire(
        writer: RunWriter,
        backend: Backend,
        masked_url: String,
        registry: ClassRegistry,
        lease: Duration,
    ) -> Self {
        let db = writer.pool().clone();
        let flows: Arc<dyn DataFlowRepository> = Arc::new(SeaOrmDataFlowRepository::new(db.clone()));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let runs: Arc<dyn RunRepository> =
            Arc::new(SeaOrmRunRepository::with_writer(writer.clone()).with_clock(Arc::clone(&clock)));
        let registry: Arc<dyn FlowRegistry> = Arc::new(registry);
        let management = FlowManagement::new(
            Arc::clone(&flows),
            Arc::clone(&runs),
            Arc::clone(&registry),
            Arc::clone(&clock),
        );
        let executor = FlowExecutor::new(
            Arc::clone(&runs),
            registry,
            Arc::clone(&clock),
            LeaseSettings {
                duration: lease,
                owner: lease_owner(),
            },
        );
        let scheduler = Scheduler::new(
            Arc::clone(&flows),
            Arc::clone(&runs),
            executor.clone(),
            Arc::clone(&clock),
        );
        Self {
            db,
            writer,
            backend,
            masked_url,
            flows,
            runs,
            clock,
            executor,
            scheduler,
            management,
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database URL with its password masked.
    pub fn masked_url(&self) -> &str {
        &self.masked_url
    }

    /// The connection pool, for health checks and tests.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Where runs start and finish (the pool, plus a reserved connection on a SQLite file).
    pub fn run_writer(&self) -> &RunWriter {
        &self.writer
    }

    /// The same app with its executor (and so its scheduler) following `shutdown`.
    pub fn with_shutdown(mut self, shutdown: ShutdownSignal) -> Self {
        self.executor = self.executor.with_shutdown(shutdown);
        let concurrency = self.scheduler.concurrency();
        self.scheduler = Scheduler::new(
            Arc::clone(&self.flows),
            Arc::clone(&self.runs),
            self.executor.clone(),
            Arc::clone(&self.clock),
        )
        .with_concurrency(concurrency);
        self
    }

    /// The same app with its scheduler running at most `concurrency` flows at once.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.scheduler = self.scheduler.with_concurrency(concurrency);
        self
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }
}

pub use flowrun_infra::Backend as DatabaseBackend;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_lengths_must_be_positive_numbers() {
        assert_eq!(parse_lease_secs("1.5").ok(), Some(Duration::from_millis(1500)));
        assert!(parse_lease_secs("0").is_err());
        assert!(parse_lease_secs("-3").is_err());
        assert!(parse_lease_secs("soon").is_err());
    }

    #[test]
    fn leases_longer_than_a_day_are_refused_instead_of_overflowing_later() {
        // 1e13 s was accepted and made `flowrun run` panic on date arithmetic.
        assert!(parse_lease_secs("1e13").is_err());
        assert!(parse_lease_secs("86401").is_err());
        assert_eq!(parse_lease_secs("86400").ok(), Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn concurrency_is_a_bounded_whole_number() {
        assert_eq!(parse_concurrency(" 4 ").ok(), Some(4));
        assert!(parse_concurrency("0").is_err());
        assert!(parse_concurrency("-1").is_err());
        assert!(parse_concurrency("1.5").is_err());
        assert!(parse_concurrency("99999999999999999999").is_err());
    }

    #[test]
    fn builtins_are_registered() {
        use flowrun_domain::FlowRegistry;
        assert_eq!(
            builtin_registry().class_names(),
            ["Fail", "Noop", "Panic", "Sleep", "SqlCopy"]
        );
    }
}
