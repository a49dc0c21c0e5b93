//! One file per command group; [`dispatch`] opens what a command needs and hands it over.

pub(crate) mod apply;
pub(crate) mod classes;
pub(crate) mod flow;
pub(crate) mod heartbeat;
pub(crate) mod migrate;
pub(crate) mod run;
pub(crate) mod runs;
pub(crate) mod schedule;

use std::sync::Arc;
use std::time::Duration;

use flowrun_app::{App, MigratePolicy};
use flowrun_domain::ClassRegistry;
use flowrun_observe::Observers;

use crate::cli::{Cli, Command};
use crate::database::{open, require_existing_database};
use crate::exit::{Failure, Outcome};

use self::flow::FlowCommand;
use self::runs::RunsCommand;

/// Runs `cli`'s command with the classes of `registry`.
pub(crate) async fn dispatch(cli: Cli, registry: ClassRegistry) -> Outcome {
    let url = cli.database_url;
    match cli.command {
        Command::Migrate => migrate::migrate(&url, registry).await,
        Command::Apply {
            file,
            dry_run,
            prune,
            json,
        } => {
            let request = apply::ApplyRequest {
                file,
                dry_run,
                prune,
                json,
            };
            apply::apply(&url, registry, request).await
        }
        Command::Classes { json } => {
            classes::classes(&registry, json, &crate::output::Style::stdout());
            Ok(())
        }
        Command::Flow(command) => {
            if !matches!(command, FlowCommand::Create { .. }) {
                require_existing_database(&url)?;
            }
            let app = open(&url, MigratePolicy::SqliteOnly, registry).await?;
            flow::flow_command(&app, command).await
        }
        Command::Run { name, json } => {
            let (app, observers) = observed(open(&url, MigratePolicy::SqliteOnly, registry).await?)?;
            let outcome = run::run_command(&app, &name, json).await;
            flush(&observers).await;
            outcome
        }
        Command::Runs(args) => {
            if !matches!(args.command, Some(RunsCommand::Reap { .. })) {
                require_existing_database(&url)?;
            }
            let app = open(&url, MigratePolicy::SqliteOnly, registry).await?;
            runs::runs_command(&app, args).await
        }
        Command::Heartbeat { json } => {
            let (app, observers) = observed(open(&url, MigratePolicy::SqliteOnly, registry).await?)?;
            let outcome = heartbeat::heartbeat(&app, json).await;
            flush(&observers).await;
            outcome
        }
        Command::Schedule {
            name,
            schedule,
            from,
            count,
            json,
        } => schedule::schedule_command(&url, registry, name, &schedule, from.as_deref(), count, json).await,
    }
}

/// How long a command that ran flows waits, before exiting, for their notifications to be sent: a dead or
/// hung receiver must not hold a cron job or a terminal for long.
const NOTIFY_FLUSH_ON_EXIT: Duration = Duration::from_secs(10);

/// `app` reporting its runs' failures and recoveries to `FLOWRUN_NOTIFY_URL` and to flows' own webhooks,
/// as the server does; a bad notification setting is a usage error.
fn observed(app: App) -> Result<(App, Observers), Failure> {
    let observers = Observers::from_env().map_err(|e| Failure::Usage(e.to_string()))?;
    Ok((app.with_observer(Arc::new(observers.clone())), observers))
}

/// Waits (boundedly) for the notifications of the runs this command made.
async fn flush(observers: &Observers) {
    if tokio::time::timeout(NOTIFY_FLUSH_ON_EXIT, observers.flush())
        .await
        .is_err()
    {
        tracing::warn!("some notifications were not sent before exiting");
    }
}
