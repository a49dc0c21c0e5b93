//! One file per command group; [`dispatch`] opens what a command needs and hands it over.

pub(crate) mod classes;
pub(crate) mod flow;
pub(crate) mod heartbeat;
pub(crate) mod migrate;
pub(crate) mod run;
pub(crate) mod runs;
pub(crate) mod schedule;

use flowrun_app::MigratePolicy;
use flowrun_domain::ClassRegistry;

use crate::cli::{Cli, Command};
use crate::database::{open, require_existing_database};
use crate::exit::Outcome;

use self::flow::FlowCommand;
use self::runs::RunsCommand;

/// Runs `cli`'s command with the classes of `registry`.
pub(crate) async fn dispatch(cli: Cli, registry: ClassRegistry) -> Outcome {
    let url = cli.database_url;
    match cli.command {
        Command::Migrate => migrate::migrate(&url, registry).await,
        Command::Classes { json } => {
            classes::classes(&registry, json);
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
            let app = open(&url, MigratePolicy::SqliteOnly, registry).await?;
            run::run_command(&app, &name, json).await
        }
        Command::Runs(args) => {
            if !matches!(args.command, Some(RunsCommand::Reap { .. })) {
                require_existing_database(&url)?;
            }
            let app = open(&url, MigratePolicy::SqliteOnly, registry).await?;
            runs::runs_command(&app, args).await
        }
        Command::Heartbeat { json } => {
            let app = open(&url, MigratePolicy::SqliteOnly, registry).await?;
            heartbeat::heartbeat(&app, json).await
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
