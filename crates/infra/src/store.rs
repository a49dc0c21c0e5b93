//! [`SqlStore`]: an open SQL database as the domain's [`Storage`] port, and the maker of its repositories.

use std::sync::Arc;

use async_trait::async_trait;
use flowrun_domain::{Clock, Storage, StoreKind};
use sea_orm::DatabaseConnection;

use crate::db::Backend;
use crate::flows_repo::SeaOrmDataFlowRepository;
use crate::runs_repo::SeaOrmRunRepository;
use crate::writer::RunWriter;

impl From<Backend> for StoreKind {
    fn from(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::Sqlite,
            Backend::Postgres => Self::Postgres,
            Backend::MySql => Self::MySql,
        }
    }
}

/// An open, migrated SQL database: its pool and run writer, which product it is and where. The
/// connection stays in this crate's world: the composition root hands the domain the repositories
/// ([`SqlStore::flows`], [`SqlStore::runs`]) and this store as [`Storage`], never the connection.
#[derive(Debug, Clone)]
pub struct SqlStore {
    writer: RunWriter,
    backend: Backend,
    masked_url: String,
}

impl SqlStore {
    /// A store over an open, migrated database: runs start and finish through `writer`, everything else
    /// uses its pool. `masked_url` is what people are shown (no password).
    pub fn new(writer: RunWriter, backend: Backend, masked_url: String) -> Self {
        Self {
            writer,
            backend,
            masked_url,
        }
    }

    /// The SQL product.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool: for tools and tests that need SQL itself (the bench, suites that change rows by
    /// hand), not for the domain.
    pub fn connection(&self) -> &DatabaseConnection {
        self.writer.pool()
    }

    /// Where runs start and finish (the pool, plus a reserved connection on a SQLite file).
    pub fn run_writer(&self) -> &RunWriter {
        &self.writer
    }

    /// The flow repository on this database.
    pub fn flows(&self) -> SeaOrmDataFlowRepository {
        SeaOrmDataFlowRepository::new(self.writer.pool().clone())
    }

    /// The run repository on this database, recording a run's start at the time `clock` says its claim
    /// was granted (see [`SeaOrmRunRepository::with_clock`]).
    pub fn runs(&self, clock: Arc<dyn Clock>) -> SeaOrmRunRepository {
        SeaOrmRunRepository::with_writer(self.writer.clone()).with_clock(clock)
    }
}

#[async_trait]
impl Storage for SqlStore {
    fn kind(&self) -> StoreKind {
        self.backend.into()
    }

    fn masked_url(&self) -> &str {
        &self.masked_url
    }

    async fn ping(&self) -> bool {
        self.writer.pool().ping().await.is_ok()
    }

    async fn close(&self) {
        // Closing is the last thing a process does with the database; a failure there changes nothing.
        let _ = self.writer.close().await;
    }
}
