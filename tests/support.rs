//! Helpers for the cross-crate suites: an [`App`] on a fresh database of every configured backend.

use std::time::Duration;

use flowrun_app::{App, MigratePolicy, Settings, builtin_registry};
use flowrun_domain::{ClassRegistry, DataFlowRun, RunFilter, RunId, RunRecord};
pub use flowrun_test_support::{Kind, TestDatabase, fresh_databases};

/// An app on a fresh, migrated database, with the built-in classes.
pub async fn open(db: &TestDatabase) -> App {
    open_with(db, builtin_registry(), Duration::from_secs(60)).await
}

/// An app on a fresh, migrated database with a given registry and lease length.
pub async fn open_with(db: &TestDatabase, registry: ClassRegistry, lease: Duration) -> App {
    let mut settings = Settings::new(db.url.clone());
    settings.lease = lease;
    App::open(&settings, registry, MigratePolicy::Always)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.kind.name()))
}

/// The run as stored now; panics if it does not exist.
pub async fn stored_run(app: &App, id: RunId) -> DataFlowRun {
    app.runs
        .find_run(id)
        .await
        .expect("query the run")
        .expect("the run exists")
        .run
}

/// The newest `limit` runs of every flow.
pub async fn recent_runs(app: &App, limit: u64) -> Vec<RunRecord> {
    app.runs
        .list_runs(RunFilter {
            limit,
            ..RunFilter::default()
        })
        .await
        .expect("list runs")
}
