//! The storage port for what is not a repository: which store the ports run on, where it is, and whether
//! it answers. The binaries report these (`flowrun migrate`, `/healthz`, logs) without knowing how the
//! store is built; each adapter crate implements it next to its repositories.

use std::fmt;

use async_trait::async_trait;

/// Which kind of store holds the flows and runs, for people and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// An SQLite file (or SQLite in memory).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
    /// A MySQL or MariaDB server.
    MySql,
    /// The in-memory store of one process: nothing persists.
    Memory,
}

impl StoreKind {
    /// A short lowercase name: `sqlite`, `postgres`, `mysql`, `memory`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
            Self::Memory => "memory",
        }
    }

    /// Whether the data outlives the process.
    pub fn is_persistent(self) -> bool {
        self != Self::Memory
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A store's identity and health, beside its repositories.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Storage: Send + Sync {
    /// Which kind of store it is.
    fn kind(&self) -> StoreKind;

    /// Where it is, with any password masked: safe to print and log.
    fn masked_url(&self) -> &str;

    /// Whether the store answers a trivial request now.
    async fn ping(&self) -> bool;

    /// Closes its connections once the work is done; the repositories must not be used afterwards. A store
    /// without connections does nothing.
    async fn close(&self);
}
