//! Opening the database for a command, and finding a flow in it.

use anyhow::anyhow;
use flowrun_app::{App, AppError, MigratePolicy, Settings};
use flowrun_domain::{ClassRegistry, DataFlow};

use crate::exit::Failure;

/// Opens the database at `database_url` for a command, wired with `registry`'s classes; a bad URL or
/// setting is a usage error, an unreachable server an infrastructure one with a hint.
pub(crate) async fn open(
    database_url: &str,
    policy: MigratePolicy,
    registry: ClassRegistry,
) -> Result<App, Failure> {
    let mut settings = Settings::new(database_url)
        .with_lease_from_env()
        .and_then(Settings::with_concurrency_from_env)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    // A person is waiting: report an unreachable database after a few seconds, not ten.
    settings.connect_timeout = std::time::Duration::from_secs(4);
    let app = App::open(&settings, registry, policy).await.map_err(|error| match error {
        AppError::InvalidSetting { .. } => Failure::Usage(error.to_string()),
        AppError::Connect(
            flowrun_app::ConnectError::UnsupportedUrl { .. } | flowrun_app::ConnectError::InvalidUrl { .. },
        ) => Failure::Usage(error.to_string()),
        AppError::Connect(flowrun_app::ConnectError::Connect {
            problem: flowrun_app::ConnectProblem::MissingDirectory { .. },
            ..
        }) => Failure::Usage(error.to_string()),
        // Only when nothing answered is "is the server running?" the right question.
        AppError::Connect(flowrun_app::ConnectError::Connect { ref problem, .. }) if problem.is_unreachable() => {
            let top = format!(
                "{error}\n  hint: check that the database server is running and that --database-url / DATABASE_URL is right"
            );
            let detail = std::error::Error::source(&error).map(ToString::to_string);
            Failure::Infra(match detail {
                Some(detail) => anyhow!(detail).context(top),
                None => anyhow!(top),
            })
        }
        other => Failure::Infra(anyhow::Error::new(other)),
    })?;
    tracing::info!(database = %describe_database(database_url), "database open");
    Ok(app)
}

/// The database as a person knows it: a SQLite file's absolute path, or the URL with secrets masked.
pub(crate) fn describe_database(url: &str) -> String {
    match flowrun_app::sqlite_file(url) {
        Some(file) => std::path::absolute(&file).unwrap_or(file).display().to_string(),
        None => flowrun_app::mask_url(url),
    }
}

/// Commands that only read (or change existing flows) must not leave a new, empty `flowrun.db` with its
/// `-wal` and `-shm` behind when run in the wrong directory: they refuse, naming the path they looked at.
/// Only commands that create something (`flow create`, `run`, `heartbeat`, `migrate`, `runs reap`) create
/// the file.
pub(crate) fn require_existing_database(url: &str) -> Result<(), Failure> {
    match flowrun_app::sqlite_file(url) {
        Some(file) if !file.exists() => Err(Failure::Usage(format!(
            "no flowrun database at {} (`flowrun flow create` creates one there; or point --database-url / DATABASE_URL at an existing one)",
            describe_database(url)
        ))),
        _ => Ok(()),
    }
}

/// The flow named `name`; an unknown name is a usage error.
pub(crate) async fn find_flow(app: &App, name: &str) -> Result<DataFlow, Failure> {
    app.flows
        .find_by_name(name.trim())
        .await?
        .ok_or_else(|| Failure::Usage(format!("no data flow named `{name}` (see `flowrun flow list`)")))
}
