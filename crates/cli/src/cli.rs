//! The command line: global options and the top-level commands. Each command group's own options live
//! beside its code in [`crate::commands`].

use clap::{Parser, Subcommand};
use flowrun_app::DEFAULT_DATABASE_URL;

use crate::commands::flow::FlowCommand;
use crate::commands::runs::RunsArgs;
use crate::commands::schedule::ScheduleArgs;

/// Run data flows and keep an exact record of every execution.
#[derive(Debug, Parser)]
#[command(name = "flowrun", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Database URL: sqlite://FILE, postgres://… or mysql://…
    #[arg(long, global = true, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub(crate) database_url: String,

    /// Show detail on errors and log progress to stderr.
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Apply database migrations (idempotent).
    Migrate,
    /// Create, update, list, show, enable, disable or delete data flows.
    #[command(subcommand)]
    Flow(FlowCommand),
    /// Execute a data flow now and record the run.
    Run {
        /// The flow's name.
        name: String,
        /// Print the recorded run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List recorded runs, newest first; `runs show ID` for one run, `runs reap` to close abandoned ones.
    Runs(RunsArgs),
    /// Print the next times a schedule fires: a flow's, or a --cron / --every given here.
    Schedule {
        /// The flow whose schedule to show (or give --cron / --every instead).
        #[arg(required_unless_present_any = ["every", "interval", "cron"], conflicts_with_all = ["every", "interval", "cron"])]
        name: Option<String>,
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// Start from this instant (RFC 3339, e.g. 2026-03-28T00:00:00Z) instead of now.
        #[arg(long, value_name = "RFC3339")]
        from: Option<String>,
        /// How many fire times to print.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Print a JSON array of RFC 3339 UTC times.
        #[arg(long)]
        json: bool,
    },
    /// Run one scheduler cycle: every due flow once.
    Heartbeat {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the registered flow classes.
    Classes {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}
