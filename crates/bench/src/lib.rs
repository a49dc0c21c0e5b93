//! `flowrun-bench`: how many runs per second flowrun records, against a raw SQL floor.
//!
//! The benchmark opens the database the way the binaries do ([`flowrun_app::open_sql`], which
//! [`flowrun_app::App::open`] calls for an SQL URL), creates one data flow per concurrent task (`bench-0`,
//! `bench-1`, …) and executes `--runs` runs through the real [`flowrun_domain::FlowExecutor`],
//! `--concurrency` tasks at once, each on its own flow. With `--raw` it
//! writes the same rows with the same lifecycle by executing flowrun's run statements
//! (`flowrun_infra::hot_path`) straight on the same connection pool instead ([`raw`]), without the executor
//! and repository layers: the floor flowrun is compared with.
//!
//! It prints one JSON line ([`Report`]). Every invocation starts from the same state: the bench flows of
//! earlier invocations and their runs are deleted first, and `--history N` makes sure exactly `N` past runs
//! exist (on a dedicated flow, `bench-history`) so that the cost per run can be compared with and without
//! a large history.

pub mod copy;
pub mod count;
pub mod raw;
pub mod report;
pub mod scheduler;
pub mod setup;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use flowrun_app::{App, MigratePolicy, Ports, Settings, builtin_registry};
use flowrun_domain::{DataFlow, ExecuteError, FlowExecutor, RunStatus};
use sea_orm::DatabaseConnection;

pub use report::Report;

/// The command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "flowrun-bench",
    version,
    about = "Executor throughput against a hand-written SQL floor"
)]
pub struct Options {
    /// The database: `sqlite:///tmp/bench.db`, `postgres://…`, `mysql://…`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// How many runs to time.
    #[arg(long, default_value_t = 1000)]
    pub runs: u64,
    /// How many tasks run at once, each on its own flow.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// The flow class every run executes.
    #[arg(long, value_enum, ignore_case = true, default_value = "Noop")]
    pub class: Class,
    /// Write the rows with hand-written SQL instead of flowrun (the floor).
    #[arg(long)]
    pub raw: bool,
    /// Past runs to have in `data_flow_runs` before timing (bulk-inserted, kept between invocations).
    #[arg(long, default_value_t = 0)]
    pub history: u64,
    /// Untimed runs before the timed ones, to open the pool's connections and prepare statements.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// With `--raw --class Fail`: the size in bytes of each `error_backtrace`. By default raw runs write
    /// the very text flowrun records for the same failure (taken from one flowrun run before timing), so
    /// both modes send the same bytes; a size cuts that text or extends it with copies of its frames.
    #[arg(long)]
    pub raw_trace_bytes: Option<usize>,
    /// Also count statements (client side) and commits (server side, PostgreSQL and MySQL) per run.
    /// Opens the pool with a statement counter attached; use it for counting, not for timing.
    #[arg(long)]
    pub count: bool,
    /// Measure the scheduler instead: `--flows` due Noop flows worked off by `--servers` scheduler
    /// processes (see [`scheduler`]).
    #[arg(long)]
    pub scheduler: bool,
    /// With `--scheduler`: how many due flows.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub flows: u32,
    /// With `--scheduler`: how many scheduler processes share the database.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub servers: u32,
    /// With `--scheduler`: flows each scheduler process runs at once (its `FLOWRUN_CONCURRENCY`).
    #[arg(long, default_value_t = 256, value_parser = parse_slots)]
    pub slots: usize,
    /// With `--scheduler`: milliseconds between a process's scheduler cycles (its `FLOWRUN_TICK_SECS`).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub tick_ms: u64,
    /// With `--scheduler`: give up waiting for the flows to run after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Internal: run as one of `--scheduler`'s scheduler processes.
    #[arg(long, hide = true)]
    pub scheduler_worker: bool,
}

fn parse_slots(raw: &str) -> Result<usize, String> {
    flowrun_app::parse_concurrency(raw).map_err(|e| e.to_string())
}

/// The built-in flow class the runs execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Class {
    /// Succeeds at once.
    #[value(name = "Noop")]
    Noop,
    /// Fails at once, with a backtrace.
    #[value(name = "Fail")]
    Fail,
}

impl Class {
    /// The class name stored in the flow's configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Noop => "Noop",
            Self::Fail => "Fail",
        }
    }
}

/// Which code writes the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// flowrun's `FlowExecutor` and SeaORM repositories.
    Flowrun,
    /// Hand-written SQL on the same pool.
    Raw,
}

impl Mode {
    /// `flowrun` or `raw`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flowrun => "flowrun",
            Self::Raw => "raw",
        }
    }
}

/// What one task did: the latency of each run it completed, and the error that stopped it, if any.
#[derive(Debug, Default)]
struct TaskOutcome {
    latencies: Vec<Duration>,
    error: Option<anyhow::Error>,
}

/// Runs the benchmark described by `options` and returns its report. Errors in individual runs are counted
/// in [`Report::errors`] (each task stops at its first one); setup failures are returned as `Err`.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    if options.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mode = if options.raw { Mode::Raw } else { Mode::Flowrun };
    let (app, store, counter) = open(options).await?;
    let db = store.connection().clone();
    setup::ensure_history(&app, &db, options.history).await?;
    let flows = setup::fresh_flows(&app, &db, options.concurrency, options.class).await?;
    let failure_text = match (mode, options.class) {
        (Mode::Raw, Class::Fail) => {
            raw::failure_text(&setup::flowrun_failure_text(&app).await?, options.raw_trace_bytes)
        }
        _ => String::new(),
    };
    let runner = Runner::new(&app, &store, mode, options.class, failure_text)?;

    // Warm-up: open the pool's connections and prepare every statement before timing.
    let warmup = run_all(&runner, &flows, options.warmup).await;
    if let Some(error) = warmup.iter().find_map(|t| t.error.as_ref()) {
        bail!("a warm-up run failed: {error:#}");
    }

    let commits_before = if options.count {
        count::server_commits(&db).await?
    } else {
        None
    };
    if let Some(counter) = &counter {
        counter.start();
    }
    let started = Instant::now();
    let outcomes = run_all(&runner, &flows, options.runs).await;
    let elapsed = started.elapsed();
    let statements = counter.as_ref().map(|c| c.stop());
    if let Some(counter) = &counter {
        for (sql, n, mean_ms) in counter.profile() {
            eprintln!("flowrun-bench: {n:>8} × {mean_ms:>8.3} ms  {sql}");
        }
    }
    let commits_after = if options.count {
        count::server_commits(&db).await?
    } else {
        None
    };

    let mut latencies = Vec::with_capacity(usize::try_from(options.runs).unwrap_or(0));
    let mut errors = 0u64;
    for outcome in outcomes {
        latencies.extend(outcome.latencies);
        if let Some(error) = outcome.error {
            errors += 1;
            eprintln!("flowrun-bench: a {} run failed: {error:#}", mode.name());
        }
    }
    let completed = latencies.len() as u64;
    let mut report = Report::new(
        app.backend().name(),
        options.class,
        mode,
        options.concurrency,
        options.history,
        elapsed,
        latencies,
    );
    report.errors = errors;
    if let Some(statements) = statements {
        report.statements_per_run = Some(per_run(statements, completed));
    }
    if let (Some(before), Some(after)) = (commits_before, commits_after) {
        report.commits_per_run = Some(per_run(after.saturating_sub(before), completed));
    }
    store.run_writer().close().await.ok();
    Ok(report)
}

fn per_run(total: u64, runs: u64) -> f64 {
    if runs == 0 {
        0.0
    } else {
        total as f64 / runs as f64
    }
}

/// Opens the SQL database as the binaries do, and the application on it. With `--count`, opens the same
/// pool by hand (what [`flowrun_app::open_sql`] does) to attach a statement counter before the services are
/// wired.
async fn open(
    options: &Options,
) -> anyhow::Result<(App, flowrun_app::SqlStore, Option<Arc<count::StatementCounter>>)> {
    let settings = Settings::new(options.database_url.clone());
    if !options.count {
        let store = flowrun_app::open_sql(&settings, MigratePolicy::Always)
            .await
            .context("opening the database")?;
        let app = App::wire(Ports::sql(store.clone()), builtin_registry(), settings.lease);
        return Ok((app, store, None));
    }
    let backend = flowrun_infra::Backend::from_url(&settings.database_url)?;
    let connect = flowrun_infra::ConnectSettings {
        url: settings.database_url.clone(),
        max_connections: settings.max_connections,
        connect_timeout: settings.connect_timeout,
    };
    let mut db = flowrun_infra::connect(&connect).await?;
    flowrun_infra::migrate(&db, &settings.database_url).await?;
    let mut reserved = flowrun_infra::connect_run_writer(&connect).await?;
    let counter = Arc::new(count::StatementCounter::default());
    for db in std::iter::once(&mut db).chain(reserved.as_mut()) {
        let hook = Arc::clone(&counter);
        db.set_metric_callback(move |info| hook.record(&info.statement.sql, info.elapsed));
    }
    // SQLite batches go to sqlx without SeaORM, so its callback does not see them.
    let hook = Arc::clone(&counter);
    let writer = flowrun_app::RunWriter::new(db, reserved)
        .observed(Arc::new(move |sql: &str, elapsed| hook.record(sql, elapsed)));
    let store = flowrun_app::SqlStore::new(writer, backend, flowrun_app::mask_url(&settings.database_url));
    let app = App::wire(Ports::sql(store.clone()), builtin_registry(), settings.lease);
    Ok((app, store, Some(counter)))
}

/// Executes one run in the chosen mode.
#[derive(Clone)]
enum Runner {
    Flowrun { executor: FlowExecutor, class: Class },
    Raw(Arc<raw::RawWriter>),
}

impl Runner {
    fn new(
        app: &App,
        store: &flowrun_app::SqlStore,
        mode: Mode,
        class: Class,
        failure_text: String,
    ) -> anyhow::Result<Self> {
        Ok(match mode {
            Mode::Flowrun => Self::Flowrun {
                executor: app.executor.clone(),
                class,
            },
            Mode::Raw => Self::Raw(Arc::new(raw::RawWriter::new(
                store.run_writer().clone(),
                class,
                flowrun_domain::LeaseSettings::DEFAULT_DURATION,
                failure_text,
            )?)),
        })
    }

    async fn run_once(&self, flow: &DataFlow) -> anyhow::Result<()> {
        match self {
            Self::Flowrun { executor, class } => check_outcome(*class, executor.execute(flow).await),
            Self::Raw(writer) => writer.run(flow.id.0).await,
        }
    }
}

/// A Noop run must succeed; a Fail run must end as a recorded failure. Anything else is an error.
fn check_outcome(
    class: Class,
    result: Result<flowrun_domain::DataFlowRun, ExecuteError>,
) -> anyhow::Result<()> {
    match (class, result) {
        (Class::Noop, Ok(run)) if run.status == RunStatus::Success => Ok(()),
        (Class::Fail, Err(ExecuteError::Failed { run, .. })) if run.status == RunStatus::Failed => Ok(()),
        (_, Ok(run)) => bail!("run {} ended as {:?}", run.id, run.status),
        (_, Err(error)) => Err(anyhow::Error::new(error).context("unexpected outcome")),
    }
}

/// Runs `total` runs, one task per flow, each task taking the next run number until none are left.
async fn run_all(runner: &Runner, flows: &[DataFlow], total: u64) -> Vec<TaskOutcome> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for flow in flows {
        let runner = runner.clone();
        let flow = flow.clone();
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            let mut outcome = TaskOutcome::default();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let started = Instant::now();
                match runner.run_once(&flow).await {
                    Ok(()) => outcome.latencies.push(started.elapsed()),
                    Err(error) => {
                        outcome.error = Some(error);
                        break;
                    }
                }
            }
            outcome
        });
    }
    let mut outcomes = Vec::with_capacity(flows.len());
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.unwrap_or_else(|panic| TaskOutcome {
            latencies: Vec::new(),
            error: Some(anyhow::anyhow!("a bench task panicked: {panic}")),
        }));
    }
    outcomes
}

/// The connection pool type the raw writer and the setup use.
pub type Db = DatabaseConnection;
