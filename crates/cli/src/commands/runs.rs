//! `flowrun runs …`: list runs, show one, cancel one, prune old ones, close abandoned ones.

use clap::{Args, Subcommand};
use flowrun_app::App;
use flowrun_app::json::run_json;
use flowrun_domain::duration::parse_duration;
use flowrun_domain::{CancelOutcome, FailureKind, PruneRequest, RunFilter, RunId, RunStatus};
use serde_json::Value;

use crate::database::find_flow;
use crate::exit::{Failure, Outcome};
use crate::output::{self, Style, plural, print_json};

/// `flowrun runs`: its filters, or one of its subcommands.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct RunsArgs {
    #[command(subcommand)]
    pub(crate) command: Option<RunsCommand>,
    /// Only this flow's runs.
    #[arg(long)]
    flow: Option<String>,
    /// Only runs in this status: pending, in_progress, success, failed.
    #[arg(long)]
    status: Option<String>,
    /// Only failed runs of this kind: error, panic, timeout, cancelled, interrupted, abandoned.
    #[arg(long, value_name = "KIND")]
    failure_kind: Option<String>,
    /// At most this many runs (1 to 10000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=MAX_RUNS_LIMIT))]
    limit: u64,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// Most runs `flowrun runs` lists at once; larger values reach the driver as out-of-range integers.
const MAX_RUNS_LIMIT: u64 = 10_000;

/// `flowrun runs show|reap|cancel|prune`.
#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// Show one run with its full error and backtrace.
    Show {
        /// The run id.
        id: i64,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Close runs whose lease expired (their process died) as failed.
    Reap {
        /// Print `{"reaped": n}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a running run, wherever it runs: recorded as failed (cancelled) within a few seconds.
    Cancel {
        /// The run id.
        id: i64,
        /// Print the run as JSON once it has stopped (or the request, if it has not yet).
        #[arg(long)]
        json: bool,
    },
    /// Delete finished runs that started longer ago than --older-than (never a running one).
    Prune {
        /// Age of the runs to delete: 90, 90s, 15m, 1h30m, 7d.
        #[arg(long, value_name = "DURATION")]
        older_than: String,
        /// Keep the newest N finished runs of each flow, however old.
        #[arg(long, value_name = "N")]
        keep_last: Option<u64>,
        /// Only this flow's runs.
        #[arg(long)]
        flow: Option<String>,
        /// Print `{"deleted": n}` as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// the running process's cancel poll.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `flowrun runs cancel ID`: records the request, then waits (briefly) for the process running the run to
/// stop it, and says how it ended.
async fn cancel_command(app: &App, id: RunId, json: bool) -> Outcome {
    let by = format!("cli {}", flowrun_app::lease_owner());
    match app.runs.request_cancel(id, by, app.clock.now()).await? {
        CancelOutcome::NotFound => {
            return Err(Failure::Usage(format!(
                "no run with id {id} (see `flowrun runs`)"
            )));
        }
        CancelOutcome::AlreadyEnded(status) => {
            return Err(Failure::Usage(format!(
                "run {id} has already ended ({status}); nothing to cancel"
            )));
        }
        CancelOutcome::Requested(_) => {}
    }
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    let record = loop {
        let record = app
            .runs
            .find_run(id)
            .await?
            .ok_or_else(|| Failure::Usage(format!("run {id} was deleted")))?;
        if record.run.status.is_terminal() || tokio::time::Instant::now() >= deadline {
            break record;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    if json {
        print_json(&run_json(&record.run, &record.flow_name));
    } else if record.run.status.is_terminal() {
        println!(
            "run {id} of {} stopped: {}",
            output::visible(&record.flow_name, false),
            output::visible(
                record
                    .run
                    .error_message
                    .as_deref()
                    .unwrap_or(record.run.status.as_str()),
                false
            )
        );
    } else {
        println!(
            "cancel of run {id} requested; the process running it ({}) stops it at its next check",
            output::visible(record.run.lease_owner.as_deref().unwrap_or("unknown"), false)
        );
    }
    Ok(())
}

/// Runs a `flowrun runs` command.
pub(crate) async fn runs_command(app: &App, args: RunsArgs) -> Outcome {
    let style = Style::stdout();
    match args.command {
        Some(RunsCommand::Show { id, json }) => {
            let record = app
                .runs
                .find_run(RunId(id))
                .await?
                .ok_or_else(|| Failure::Usage(format!("no run with id {id} (see `flowrun runs`)")))?;
            if json {
                print_json(&run_json(&record.run, &record.flow_name));
            } else {
                output::print_run(&record, app.clock.now(), &style);
            }
            Ok(())
        }
        Some(RunsCommand::Cancel { id, json }) => cancel_command(app, RunId(id), json).await,
        Some(RunsCommand::Reap { json }) => {
            let reaped = app.scheduler.reap().await?;
            if json {
                print_json(&serde_json::json!({ "reaped": reaped }));
            } else {
                println!(
                    "closed {reaped} abandoned run{}",
                    if reaped == 1 { "" } else { "s" }
                );
            }
            Ok(())
        }
        Some(RunsCommand::Prune {
            older_than,
            keep_last,
            flow,
            json,
        }) => {
            let older_than =
                parse_duration(&older_than).map_err(|e| Failure::Usage(format!("--older-than: {e}")))?;
            let deleted = app
                .management
                .prune_runs(PruneRequest {
                    older_than,
                    keep_last,
                    flow,
                })
                .await?;
            if json {
                print_json(&serde_json::json!({ "deleted": deleted }));
            } else {
                println!("deleted {}", plural(deleted, "finished run"));
            }
            Ok(())
        }
        None => {
            let status = args
                .status
                .as_deref()
                .map(str::parse::<RunStatus>)
                .transpose()
                .map_err(|e| Failure::Usage(e.to_string()))?;
            let data_flow_id = match args.flow.as_deref() {
                Some(name) => Some(find_flow(app, name).await?.id),
                None => None,
            };
            let failure_kind = args
                .failure_kind
                .as_deref()
                .map(str::parse::<FailureKind>)
                .transpose()
                .map_err(|e| Failure::Usage(e.to_string()))?;
            let records = app
                .runs
                .list_runs(RunFilter {
                    data_flow_id,
                    status,
                    failure_kind,
                    limit: args.limit,
                })
                .await?;
            if args.json {
                print_json(&Value::Array(
                    records.iter().map(|r| run_json(&r.run, &r.flow_name)).collect(),
                ));
            } else {
                output::print_runs(&records, app.clock.now(), &style);
            }
            Ok(())
        }
    }
}
