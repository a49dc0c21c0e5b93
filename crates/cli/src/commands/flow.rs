//! `flowrun flow …`: create, update, list, show, enable, disable and delete data flows.

use std::io::IsTerminal;

use clap::Subcommand;
use flowrun_app::App;
use flowrun_app::json::flow_json;
use flowrun_domain::duration::parse_duration;
use flowrun_domain::{CreateFlow, FlowUpdate, RetryPolicy, Timeout};
use serde_json::Value;

use crate::commands::schedule::ScheduleArgs;
use crate::database::{describe_database, find_flow};
use crate::exit::{Failure, Outcome};
use crate::output::{self, Style, plural, print_json};

/// `flowrun flow create|update|list|show|enable|disable|delete`.
#[derive(Debug, Subcommand)]
pub(crate) enum FlowCommand {
    /// Create a data flow.
    Create {
        /// Unique name.
        name: String,
        /// The flow class (see `flowrun classes`).
        #[arg(long = "class")]
        class: String,
        /// The class's settings, as a JSON object; `@FILE` reads them from a file, `-` from standard input.
        #[arg(long)]
        config: Option<String>,
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// Stop a run that takes longer than DURATION (90, 90s, 15m, 1h30m) and record it failed (timeout).
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// Retry a run that fails (error, panic, timeout) up to N times (0 to 100).
        #[arg(long, value_name = "N", default_value_t = 0)]
        retries: u32,
        /// The wait before the first retry (default 30s), doubling for each next one, at most a day.
        #[arg(long, value_name = "DURATION", requires = "retries")]
        retry_backoff: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// Create it disabled (the scheduler skips it).
        #[arg(long)]
        disabled: bool,
        /// Print the created flow as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a data flow's class, settings, schedule or description; keeps its id and its runs.
    Update {
        /// The flow's name.
        name: String,
        /// A new flow class; alone, the current settings are kept and checked against it.
        #[arg(long = "class")]
        class: Option<String>,
        /// New settings, as a JSON object (replacing the current ones); `@FILE` or `-` as for create.
        #[arg(long)]
        config: Option<String>,
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// New free text.
        #[arg(long)]
        description: Option<String>,
        /// A new run timeout (90s, 15m, 1h30m); `none` removes it.
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// A new number of retries (0 to 100); keeps the backoff unless --retry-backoff is given too.
        #[arg(long, value_name = "N")]
        retries: Option<u32>,
        /// A new wait before the first retry (keeps the number of retries unless --retries is given too).
        #[arg(long, value_name = "DURATION")]
        retry_backoff: Option<String>,
        /// Print the updated flow as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List data flows.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one data flow.
    Show {
        /// The flow's name.
        name: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Let the scheduler run a flow.
    Enable {
        /// The flow's name.
        name: String,
        /// Print the flow as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the scheduler from running a flow.
    Disable {
        /// The flow's name.
        name: String,
        /// Print the flow as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a flow and its runs (asks first on a terminal when it has runs; elsewhere needs --yes).
    Delete {
        /// The flow's name.
        name: String,
        /// Delete its runs too without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Print `{"deleted": name, "runs_deleted": n}` as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The most `--config @FILE` or `--config -` reads: far above any sensible configuration, far below what
/// would strain the database or the process.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// `--config` as JSON: the text itself, `@FILE` for a file's contents, or `-` for standard input (a single
/// argument is capped at 128 KiB by Linux). Whether it suits the class is the management use case's to say.
fn parse_settings(config: Option<&str>) -> Result<Option<Value>, Failure> {
    let Some(config) = config else {
        return Ok(None);
    };
    let (text, source) = match config {
        "-" => (
            read_config(std::io::stdin().lock(), "standard input")?,
            "standard input".to_owned(),
        ),
        path if path.starts_with('@') => {
            let path = &path[1..];
            let file = std::fs::File::open(path)
                .map_err(|e| Failure::Usage(format!("--config @{path}: cannot read the file: {e}")))?;
            (read_config(file, path)?, format!("@{path}"))
        }
        text => (text.to_owned(), "--config".to_owned()),
    };
    serde_json::from_str::<Value>(&text)
        .map(Some)
        .map_err(|error| Failure::Usage(format!("{source} is not valid JSON: {error}")))
}

/// Reads a configuration of at most [`MAX_CONFIG_BYTES`] from `reader`.
fn read_config(reader: impl std::io::Read, what: &str) -> Result<String, Failure> {
    use std::io::Read as _;
    let mut text = String::new();
    reader
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Failure::Usage(format!("--config: cannot read {what} as UTF-8 text: {e}")))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Failure::Usage(format!(
            "--config: {what} is larger than {} MiB",
            MAX_CONFIG_BYTES / (1024 * 1024)
        )));
    }
    Ok(text)
}

/// Runs a `flowrun flow` command.
pub(crate) async fn flow_command(app: &App, command: FlowCommand) -> Outcome {
    let style = Style::stdout();
    match command {
        FlowCommand::Create {
            name,
            class,
            config,
            schedule,
            timeout,
            retries,
            retry_backoff,
            description,
            disabled,
            json,
        } => {
            let flow = app
                .management
                .create(CreateFlow {
                    name,
                    class,
                    settings: parse_settings(config.as_deref())?,
                    schedule: schedule.parse()?,
                    description,
                    enabled: !disabled,
                    timeout: timeout.as_deref().map(parse_timeout).transpose()?,
                    retry: parse_retry(retries, retry_backoff.as_deref())?,
                })
                .await?;
            if json {
                print_json(&flow_json(&flow));
            } else {
                println!(
                    "created data flow {} (id {})",
                    style.bold(flow.name.as_str()),
                    flow.id
                );
            }
            Ok(())
        }
        FlowCommand::Update {
            name,
            class,
            config,
            schedule,
            description,
            timeout,
            retries,
            retry_backoff,
            json,
        } => {
            let retry = if retries.is_some() || retry_backoff.is_some() {
                let current = app.management.find(&name).await?.retry;
                let backoff = match retry_backoff.as_deref() {
                    Some(raw) => Some(
                        parse_duration(raw).map_err(|e| Failure::Usage(format!("--retry-backoff: {e}")))?,
                    ),
                    None => Some(current.backoff()),
                };
                Some(
                    RetryPolicy::new(retries.unwrap_or(current.retries()), backoff)
                        .map_err(|e| Failure::Usage(e.to_string()))?,
                )
            } else {
                None
            };
            let timeout = match timeout.as_deref().map(str::trim) {
                None => None,
                Some("none") => Some(None),
                Some(raw) => Some(Some(parse_timeout(raw)?)),
            };
            let update = FlowUpdate {
                class,
                settings: parse_settings(config.as_deref())?,
                schedule: schedule.parse()?,
                description,
                timeout,
                retry,
            };
            if update.is_empty() {
                return Err(Failure::Usage(
                    "nothing to update: give --class, --config, --every/--interval/--cron, --description, \
                     --timeout, --retries or --retry-backoff"
                        .to_owned(),
                ));
            }
            let flow = app.management.update(&name, update).await?;
            if json {
                print_json(&flow_json(&flow));
            } else {
                println!(
                    "updated data flow {} (id {})",
                    style.bold(flow.name.as_str()),
                    flow.id
                );
            }
            Ok(())
        }
        FlowCommand::List { json } => {
            let flows = app.flows.list().await?;
            if json {
                print_json(&Value::Array(flows.iter().map(flow_json).collect()));
            } else {
                output::print_flows(
                    &flows,
                    app.clock.now(),
                    &style,
                    &describe_database(app.masked_url()),
                );
            }
            Ok(())
        }
        FlowCommand::Show { name, json } => {
            let flow = find_flow(app, &name).await?;
            if json {
                print_json(&flow_json(&flow));
            } else {
                output::print_flow(&flow, app.clock.now(), &style);
            }
            Ok(())
        }
        FlowCommand::Enable { name, json } => set_enabled(app, &name, true, json).await,
        FlowCommand::Disable { name, json } => set_enabled(app, &name, false, json).await,
        FlowCommand::Delete { name, yes, json } => {
            let (flow, runs) = app.management.count_runs(&name).await?;
            if runs > 0 && !yes {
                confirm_delete(flow.name.as_str(), runs)?;
            }
            let deleted = app.management.delete(flow.name.as_str()).await?;
            if json {
                print_json(&serde_json::json!({
                    "deleted": deleted.name.as_str(),
                    "runs_deleted": deleted.runs_deleted,
                }));
            } else {
                println!(
                    "deleted data flow {} and {}",
                    style.bold(deleted.name.as_str()),
                    plural(deleted.runs_deleted, "run")
                );
            }
            Ok(())
        }
    }
}

/// Deleting a flow deletes its history: a person at a terminal is asked; a script must say `--yes`, so
/// a typo in a cron job cannot wipe a flow's runs.
fn confirm_delete(name: &str, runs: u64) -> Result<(), Failure> {
    let runs_text = plural(runs, "run");
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Failure::Usage(format!(
            "data flow `{name}` has {runs_text}, which would be deleted with it; pass --yes to delete them"
        )));
    }
    eprint!("delete flow {name} and its {runs_text}? [y/N] ");
    let mut answer = String::new();
    // An unreadable answer is a no.
    let _ = std::io::stdin().read_line(&mut answer);
    if is_yes(&answer) {
        Ok(())
    } else {
        Err(Failure::Usage(format!("not deleted: data flow `{name}` is kept")))
    }
}

/// Whether a person's answer to a `[y/N]` question is yes.
fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}

/// `flow enable` and `flow disable`.
async fn set_enabled(app: &App, name: &str, enabled: bool, json: bool) -> Outcome {
    let flow = app.management.set_enabled(name, enabled).await?;
    if json {
        print_json(&flow_json(&flow));
    } else {
        println!(
            "{} is {}",
            flow.name,
            if enabled { "enabled" } else { "disabled" }
        );
    }
    Ok(())
}

/// A `--timeout` value: a duration of 1 s to 100 years.
fn parse_timeout(raw: &str) -> Result<Timeout, Failure> {
    let usage = |e: &dyn std::fmt::Display| Failure::Usage(format!("--timeout: {e}"));
    let duration = parse_duration(raw).map_err(|e| usage(&e))?;
    Timeout::from_secs(duration.as_secs()).map_err(|e| usage(&e))
}

/// `--retries N [--retry-backoff D]` as a policy.
fn parse_retry(retries: u32, backoff: Option<&str>) -> Result<RetryPolicy, Failure> {
    let backoff = backoff
        .map(|raw| parse_duration(raw).map_err(|e| Failure::Usage(format!("--retry-backoff: {e}"))))
        .transpose()?;
    RetryPolicy::new(retries, backoff).map_err(|e| Failure::Usage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_explicit_yes_confirms() {
        for yes in ["y\n", "Y", " yes \n", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "y es"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }
}
