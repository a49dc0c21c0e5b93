//! flowrun's composition root: typed settings, opening the store (SQL through `flowrun-infra`, or
//! `memory:` through `flowrun-memory`), the flow registry, and ready services ([`App`]) for the binaries.
//! No business rules live here.

use std::sync::Arc;
use std::time::Duration;

use flowrun_domain::{
    ClassRegistry, Clock, DataFlowRepository, FlowExecutor, FlowManagement, FlowRegistry, LeaseOwner,
    LeaseSettings, RunObserver, RunRepository, Scheduler, ShutdownSignal, Storage,
};
use flowrun_infra::{Backend, ConnectSettings, SystemClock};
use flowrun_memory::{MEMORY_URL, MemoryStore};
use thiserror::Error;

pub mod apply_file;
pub mod json;

pub use flowrun_infra::{
    ConnectError, ConnectProblem, MASK, RunWriter, SqlStore, mask_url, scrub, sqlite_file,
};

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
    /// The database URL: `sqlite://…`, `postgres://…`, `mysql://…`, or `memory:` for a store that lives
    /// only as long as the process.
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

/// The ports [`App::wire`] builds the services on: the repositories, the store behind them and the clock.
#[derive(Clone)]
pub struct Ports {
    /// Stored data flows.
    pub flows: Arc<dyn DataFlowRepository>,
    /// Stored runs.
    pub runs: Arc<dyn RunRepository>,
    /// The store itself: what it is, where, and whether it answers.
    pub storage: Arc<dyn Storage>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl Ports {
    /// The ports of an open SQL database, on the system clock.
    pub fn sql(store: SqlStore) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Self {
            flows: Arc::new(store.flows()),
            runs: Arc::new(store.runs(Arc::clone(&clock))),
            storage: Arc::new(store),
            clock,
        }
    }

    /// The ports of an in-memory store (shared with its clones), on the system clock.
    pub fn memory(store: MemoryStore) -> Self {
        Self {
            flows: store.flows(),
            runs: store.runs(),
            storage: store.storage(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The wired application: the ports, and the executor, scheduler and flow management built on them. It
/// holds no database handle: the store is a [`Storage`] port like the repositories.
#[derive(Clone)]
pub struct App {
    storage: Arc<dyn Storage>,
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
            .field("backend", &self.storage.kind())
            .field("url", &self.storage.masked_url())
            .finish_non_exhaustive()
    }
}

/// Whether `url` selects the in-memory store: `memory:` (also written `memory://`).
pub fn is_memory_url(url: &str) -> bool {
    matches!(url.trim(), MEMORY_URL | "memory://")
}

/// Connects to the SQL database `settings` names and migrates it according to `policy`: the SQL store
/// alone, for what needs SQL itself (the bench, suites that change rows by hand). [`App::open`] does this
/// for every SQL URL.
pub async fn open_sql(settings: &Settings, policy: MigratePolicy) -> Result<SqlStore, AppError> {
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
    Ok(SqlStore::new(RunWriter::new(db, reserved), backend, masked_url))
}

impl App {
    /// Opens the store `settings` names and wires the services with `registry`: for an SQL URL, connects
    /// and migrates according to `policy`; for `memory:`, makes a fresh, empty in-memory store that lives
    /// as long as the process (nothing persists: for demos and tests).
    pub async fn open(
        settings: &Settings,
        registry: ClassRegistry,
        policy: MigratePolicy,
    ) -> Result<Self, AppError> {
        let ports = if is_memory_url(&settings.database_url) {
            Ports::memory(MemoryStore::new())
        } else {
            Ports::sql(open_sql(settings, policy).await?)
        };
        Ok(Self::wire(ports, registry, settings.lease).with_concurrency(settings.concurrency))
    }

    /// Wires the services over `ports`, with leases of `lease`.
    pub fn wire(ports: Ports, registry: ClassRegistry, lease: Duration) -> Self {
        let Ports {
            flows,
            runs,
            storage,
            clock,
        } = ports;
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
            storage,
            flows,
            runs,
            clock,
            executor,
            scheduler,
            management,
        }
    }

    /// The kind of store in use.
    pub fn backend(&self) -> DatabaseBackend {
        self.storage.kind()
    }

    /// The database URL with its password masked.
    pub fn masked_url(&self) -> &str {
        self.storage.masked_url()
    }

    /// The store behind the repositories, as a port.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
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

    /// The same app with its executor (and so its scheduler) reporting runs and cycles to `observer`
    /// (metrics, notifications).
    pub fn with_observer(mut self, observer: Arc<dyn RunObserver>) -> Self {
        self.executor = self.executor.with_observer(observer);
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

    /// Whether the store answers a trivial request.
    pub async fn ping(&self) -> bool {
        self.storage.ping().await
    }
}

/// The kind of store an [`App`] runs on (SQLite, PostgreSQL, MySQL/MariaDB or memory).
pub use flowrun_domain::StoreKind as DatabaseBackend;

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

    #[tokio::test]
    async fn a_memory_url_opens_a_fresh_store_of_its_own_that_runs_flows() {
        use flowrun_domain::{FlowName, NewDataFlow, RunInterval, RunStatus};
        let settings = Settings::new("memory:");
        let app = App::open(&settings, builtin_registry(), MigratePolicy::SqliteOnly)
            .await
            .expect("opens");
        assert_eq!(app.backend(), DatabaseBackend::Memory);
        assert_eq!(app.masked_url(), "memory:");
        assert!(app.ping().await);
        let new = NewDataFlow::new(
            FlowName::parse("demo").expect("name"),
            "",
            true,
            serde_json::json!("Noop"),
            RunInterval::DEFAULT.schedule(),
        )
        .expect("valid");
        let flow = app.flows.create(new, app.clock.now()).await.expect("created");
        let run = app.executor.execute(&flow).await.expect("runs");
        assert_eq!(run.status, RunStatus::Success);
        let other = App::open(&settings, builtin_registry(), MigratePolicy::Always)
            .await
            .expect("opens");
        assert!(
            other.flows.list().await.expect("list").is_empty(),
            "each open is a store of its own: nothing persists"
        );
    }

    #[test]
    fn builtins_are_registered() {
        use flowrun_domain::FlowRegistry;
        assert_eq!(
            builtin_registry().class_names(),
            ["Command", "Fail", "Http", "Noop", "Panic", "Sleep", "SqlCopy"]
        );
    }
}
