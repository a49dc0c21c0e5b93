//! `flowrun`: create data flows, run them, read their history, and drive the scheduler.

/// `println!` that never panics: std's panics when stdout is closed (`flowrun runs | head -1`). Defined
/// before the modules so that it replaces `println!` everywhere in this crate; see
/// [`output::write_stdout`].
macro_rules! println {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use flowrun_app::{App, AppError, DEFAULT_DATABASE_URL, MigratePolicy, Settings, builtin_registry};
use flowrun_domain::duration::parse_duration;
use flowrun_domain::schedule::MAX_UPCOMING;
use flowrun_domain::{
    CancelOutcome, CreateFlow, CronSchedule, DataFlow, ExecuteError, FailureKind, FlowFailure, FlowRegistry,
    FlowUpdate, ManagementError, PruneRequest, RetryPolicy, RunFilter, RunId, RunInterval, RunStatus,
    Schedule, Timeout,
};
use serde_json::Value;

use flowrun_app::json::{flow_json, heartbeat_json, run_json};

use crate::output::{Style, print_json};

/// Run data flows and keep an exact record of every execution.
#[derive(Debug, Parser)]
#[command(name = "flowrun", version, about, propagate_version = true)]
struct Cli {
    /// Database URL: sqlite://FILE, postgres://… or mysql://…
    #[arg(long, global = true, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,

    /// Show detail on errors and log progress to stderr.
    #[arg(short, long, global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

#[derive(Debug, Subcommand)]
enum FlowCommand {
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

/// When a flow runs: every interval (default: every hour) or on a cron expression.
#[derive(Debug, Args)]
struct ScheduleArgs {
    /// Run every DURATION: 90, 90s, 15m, 1h30m, 7d.
    #[arg(long, value_name = "DURATION", conflicts_with_all = ["interval", "cron"])]
    every: Option<String>,
    /// Seconds between runs (the same as --every SECS).
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        conflicts_with = "cron"
    )]
    interval: Option<i64>,
    /// Run on a cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds
    /// first, e.g. "0 2 * * *".
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// The IANA time zone --cron is read in (default UTC), e.g. Europe/Berlin.
    #[arg(long, value_name = "ZONE", requires = "cron")]
    tz: Option<String>,
}

impl ScheduleArgs {
    /// The schedule given, if any; bad values are usage errors.
    fn parse(&self) -> Result<Option<Schedule>, Failure> {
        let usage = |e: &dyn std::fmt::Display| Failure::Usage(e.to_string());
        if let Some(expression) = &self.cron {
            let cron = CronSchedule::parse(expression, self.tz.as_deref()).map_err(|e| usage(&e))?;
            return Ok(Some(Schedule::Cron(cron)));
        }
        let secs = match (&self.every, self.interval) {
            (Some(every), _) => {
                let every = parse_duration(every).map_err(|e| usage(&e))?;
                i64::try_from(every.as_secs()).unwrap_or(i64::MAX)
            }
            (None, Some(secs)) => secs,
            (None, None) => return Ok(None),
        };
        let interval = RunInterval::from_secs(secs).map_err(|e| usage(&e))?;
        Ok(Some(interval.schedule()))
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct RunsArgs {
    #[command(subcommand)]
    command: Option<RunsCommand>,
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

#[derive(Debug, Subcommand)]
enum RunsCommand {
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

/// How a command ended, mapped to the contract's exit codes.
#[derive(Debug)]
enum Failure {
    /// 1: the flow ran and failed; the run is recorded.
    FlowFailed(String),
    /// 2: bad usage or input.
    Usage(String),
    /// 3: database or other infrastructure error.
    Infra(anyhow::Error),
    /// 4: a live run holds the flow.
    AlreadyRunning(String),
    /// 130 (SIGINT) or 143 (SIGTERM): the command was interrupted; its run is recorded as interrupted.
    Interrupted {
        /// What happened to the run.
        message: String,
        /// 128 + the signal's number.
        code: u8,
    },
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Self::FlowFailed(_) => 1,
            Self::Usage(_) => 2,
            Self::Infra(_) => 3,
            Self::AlreadyRunning(_) => 4,
            Self::Interrupted { code, .. } => *code,
        }
    }
}

impl From<ManagementError> for Failure {
    fn from(error: ManagementError) -> Self {
        match error {
            ManagementError::NotFound(name) => {
                Self::Usage(format!("no data flow named `{name}` (see `flowrun flow list`)"))
            }
            ManagementError::Repository(e) => e.into(),
            error @ ManagementError::Running { .. } => Self::AlreadyRunning(error.to_string()),
            other => Self::Usage(other.to_string()),
        }
    }
}

impl From<flowrun_domain::RepositoryError> for Failure {
    fn from(error: flowrun_domain::RepositoryError) -> Self {
        Self::Infra(error.into())
    }
}

type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(3);
        }
    };
    let verbose = cli.verbose;
    // Whatever a driver puts in an error, the URL's secrets never reach the terminal.
    let url = cli.database_url.clone();
    // Error texts come from stored runs and drivers too: shown, never obeyed by the terminal.
    let scrub = |text: String| output::visible(&flowrun_app::scrub(&text, &url), true);
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let style = Style::stderr();
            match &failure {
                Failure::FlowFailed(message)
                | Failure::Usage(message)
                | Failure::AlreadyRunning(message)
                | Failure::Interrupted { message, .. } => {
                    eprintln!("{} {}", style.error("error:"), scrub(message.clone()));
                }
                Failure::Infra(error) => {
                    eprintln!("{} {}", style.error("error:"), scrub(error.to_string()));
                    if verbose {
                        for cause in error.chain().skip(1) {
                            eprintln!("  caused by: {}", scrub(cause.to_string()));
                        }
                    }
                }
            }
            ExitCode::from(failure.code())
        }
    }
}

fn init_logging(verbose: bool) {
    let default = if verbose { "info" } else { "off" };
    let filter = quiet_notices(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Escape codes only where a terminal reads them: not in files, pipes or with NO_COLOR.
        .with_ansi(output::Style::stderr().coloured())
        .with_target(false)
        .try_init();
}

/// `filter` without PostgreSQL's expected notices, unless it asks for sqlx's output itself.
fn quiet_notices(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    if filter.to_string().contains("sqlx") {
        return filter;
    }
    match flowrun_app::QUIET_NOTICES.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

async fn open(database_url: &str, policy: MigratePolicy) -> Result<App, Failure> {
    let mut settings = Settings::new(database_url)
        .with_lease_from_env()
        .and_then(Settings::with_concurrency_from_env)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    // A person is waiting: report an unreachable database after a few seconds, not ten.
    settings.connect_timeout = std::time::Duration::from_secs(4);
    let app = App::open(&settings, builtin_registry(), policy).await.map_err(|error| match error {
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

async fn dispatch(cli: Cli) -> Outcome {
    let url = cli.database_url;
    match cli.command {
        Command::Migrate => {
            let app = open(&url, MigratePolicy::Always).await?;
            println!("{} is migrated", app.masked_url());
            Ok(())
        }
        Command::Classes { json } => {
            // Needs no database.
            let names = builtin_registry().class_names();
            if json {
                print_json(&Value::from(names));
            } else {
                for name in names {
                    println!("{name}");
                }
            }
            Ok(())
        }
        Command::Flow(command) => {
            if !matches!(command, FlowCommand::Create { .. }) {
                require_existing_database(&url)?;
            }
            let app = open(&url, MigratePolicy::SqliteOnly).await?;
            flow_command(&app, command).await
        }
        Command::Run { name, json } => {
            let app = open(&url, MigratePolicy::SqliteOnly).await?;
            run_command(&app, &name, json).await
        }
        Command::Runs(args) => {
            if !matches!(args.command, Some(RunsCommand::Reap { .. })) {
                require_existing_database(&url)?;
            }
            let app = open(&url, MigratePolicy::SqliteOnly).await?;
            runs_command(&app, args).await
        }
        Command::Heartbeat { json } => {
            let app = open(&url, MigratePolicy::SqliteOnly).await?;
            let report = app
                .scheduler
                .run_cycle()
                .await
                .map_err(|e| Failure::Infra(e.into()))?;
            if json {
                print_json(&heartbeat_json(&report));
            } else {
                output::print_heartbeat(&report, &Style::stdout());
            }
            Ok(())
        }
        Command::Schedule {
            name,
            schedule,
            from,
            count,
            json,
        } => schedule_command(&url, name, &schedule, from.as_deref(), count, json).await,
    }
}

/// The database as a person knows it: a SQLite file's absolute path, or the URL with secrets masked.
fn describe_database(url: &str) -> String {
    match flowrun_app::sqlite_file(url) {
        Some(file) => std::path::absolute(&file).unwrap_or(file).display().to_string(),
        None => flowrun_app::mask_url(url),
    }
}

/// Commands that only read (or change existing flows) must not leave a new, empty `flowrun.db` with its
/// `-wal` and `-shm` behind when run in the wrong directory: they refuse, naming the path they looked at.
/// Only commands that create something (`flow create`, `run`, `heartbeat`, `migrate`, `runs reap`) create
/// the file.
fn require_existing_database(url: &str) -> Result<(), Failure> {
    match flowrun_app::sqlite_file(url) {
        Some(file) if !file.exists() => Err(Failure::Usage(format!(
            "no flowrun database at {} (`flowrun flow create` creates one there; or point --database-url / DATABASE_URL at an existing one)",
            describe_database(url)
        ))),
        _ => Ok(()),
    }
}

/// `flowrun schedule`: the next fire times of a flow's schedule or of one given on the command line.
async fn schedule_command(
    url: &str,
    name: Option<String>,
    schedule: &ScheduleArgs,
    from: Option<&str>,
    count: usize,
    json: bool,
) -> Outcome {
    if count == 0 || count > MAX_UPCOMING {
        return Err(Failure::Usage(format!(
            "--count must be between 1 and {MAX_UPCOMING}, got {count}"
        )));
    }
    let from = from
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw.trim())
                .map(|at| at.with_timezone(&Utc))
                .map_err(|e| Failure::Usage(format!("--from `{raw}` is not an RFC 3339 time: {e}")))
        })
        .transpose()?;
    let times = match name {
        Some(name) => {
            require_existing_database(url)?;
            let app = open(url, MigratePolicy::SqliteOnly).await?;
            let flow = find_flow(&app, &name).await?;
            match (from, flow.next_run_at) {
                // The flow's own next times: its stored next run, then the schedule's slots after it.
                (None, Some(next)) => {
                    std::iter::successors(Some(next), |at| flow.schedule.next_run_after(*at, *at))
                        .take(count)
                        .collect()
                }
                (None, None) => Vec::new(),
                (Some(from), _) => flow.schedule.upcoming(from, count),
            }
        }
        None => {
            let schedule = schedule.parse()?.ok_or_else(|| {
                Failure::Usage("give a flow name, --cron EXPR or --every DURATION".to_owned())
            })?;
            schedule.upcoming(from.unwrap_or_else(Utc::now), count)
        }
    };
    if json {
        print_json(&Value::Array(
            times
                .iter()
                .map(|at| flowrun_app::json::timestamp(Some(*at)))
                .collect(),
        ));
    } else if times.is_empty() {
        println!("this schedule has no future fire time");
    } else {
        for at in times {
            println!("{}", at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        }
    }
    Ok(())
}

async fn find_flow(app: &App, name: &str) -> Result<DataFlow, Failure> {
    app.flows
        .find_by_name(name.trim())
        .await?
        .ok_or_else(|| Failure::Usage(format!("no data flow named `{name}` (see `flowrun flow list`)")))
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

async fn flow_command(app: &App, command: FlowCommand) -> Outcome {
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

/// `n thing`, `n things`.
fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("{n} {thing}")
    } else {
        format!("{n} {thing}s")
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

/// Waits for Ctrl-C or SIGTERM; returns the exit code that reports it (128 + the signal's number).
async fn interrupt_signal() -> u8 {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => 130,
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
                143
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<u8>();
    tokio::select! {
        code = ctrl_c => code,
        code = terminate => code,
    }
}

async fn run_command(app: &App, name: &str, json: bool) -> Outcome {
    let flow = find_flow(app, name).await?;
    // Ctrl-C or SIGTERM stops the flow and records its run as interrupted before the process exits, so
    // the flow is free at once instead of held until its lease expires.
    let (controller, signal) = flowrun_domain::ShutdownController::new();
    let app = app.clone().with_shutdown(signal);
    let (interrupted_tx, interrupted) = tokio::sync::oneshot::channel();
    let listener = tokio::spawn(async move {
        let code = interrupt_signal().await;
        controller.abort();
        let _ = interrupted_tx.send(code);
    });
    let spinner =
        (!json && std::io::stderr().is_terminal()).then(|| output::Spinner::start(flow.name.to_string()));
    let result = app.executor.execute(&flow).await;
    listener.abort();
    // A signal that came after the run ended changes nothing: report the run as it ended.
    let stopped = matches!(
        &result,
        Err(ExecuteError::Failed {
            failure: FlowFailure::Interrupted,
            ..
        } | ExecuteError::ShuttingDown { .. })
    );
    if let (true, Ok(code)) = (stopped, interrupted.await) {
        if let Some(spinner) = spinner {
            spinner.stop().await;
        }
        let run = result.as_ref().err().and_then(ExecuteError::run_id);
        return Err(Failure::Interrupted {
            message: match run {
                Some(id) => format!(
                    "interrupted: run {id} of {} was stopped and recorded as interrupted",
                    flow.name
                ),
                None => format!("interrupted before a run of {} started", flow.name),
            },
            code,
        });
    }
    if let Some(spinner) = spinner {
        spinner.stop().await;
    }
    let style = Style::stdout();
    match result {
        Ok(run) => {
            if json {
                print_json(&run_json(&run, flow.name.as_str()));
            } else {
                println!(
                    "{} run {} of {} in {}",
                    style.status(RunStatus::Success),
                    run.id,
                    flow.name,
                    output::human_duration(run.duration().unwrap_or_default())
                );
            }
            Ok(())
        }
        Err(ExecuteError::Failed { run, failure }) => {
            if json {
                print_json(&run_json(&run, flow.name.as_str()));
            }
            Err(Failure::FlowFailed(format!(
                "run {} of {} failed after {}: {failure} (details: flowrun runs show {})",
                run.id,
                flow.name,
                output::human_duration(run.duration().unwrap_or_default()),
                run.id
            )))
        }
        Err(error @ ExecuteError::AlreadyRunning { .. }) => Err(Failure::AlreadyRunning(error.to_string())),
        Err(error) => {
            let message = error.to_string();
            let run = error
                .run_id()
                .filter(|id| !message.contains(&format!("run {id}")))
                .map(|id| format!(" (run {id})"))
                .unwrap_or_default();
            Err(Failure::Infra(anyhow!("{message}{run}")))
        }
    }
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

/// How long `runs cancel` waits to see the run stop before it reports the request only: a little more than
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

async fn runs_command(app: &App, args: RunsArgs) -> Outcome {
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

    #[test]
    fn counts_read_naturally() {
        assert_eq!(plural(1, "run"), "1 run");
        assert_eq!(plural(0, "run"), "0 runs");
        assert_eq!(plural(3, "run"), "3 runs");
    }
}
