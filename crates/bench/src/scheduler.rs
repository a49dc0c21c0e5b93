//! `flowrun-bench --scheduler --flows N [--servers K]`: how fast the scheduler works off many due flows.
//!
//! The benchmark creates `N` Noop flows (`bench-sched-0` …, one multi-row `INSERT` per chunk, disabled), then
//! starts `K` scheduler processes — this binary again, in its hidden `--scheduler-worker` mode — on the same
//! database. Each worker opens the database as the binaries do and runs a scheduler cycle
//! ([`flowrun_domain::Scheduler::dispatch`]) every `--tick-ms`, exactly as `flowrun-server` does with
//! `FLOWRUN_TICK_SECS`, with `--slots` flows running at once (`FLOWRUN_CONCURRENCY`). Once every worker is
//! connected, the benchmark makes all the flows due at one instant `T0` (one `UPDATE`) and waits until each
//! has a finished run.
//!
//! It prints one JSON line ([`SchedulerReport`]): `seconds` is from `T0` to the last run's recorded end,
//! `p50_ms`/`p99_ms` are from `T0` (every flow's `next_run_at`) to each run's recorded `started_at`, and
//! `exactly_once` is checked in SQL: every flow has exactly one run. A flow with none or several is named on
//! stderr and the process exits with 1.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, SubsecRound, Utc};
use flowrun_app::{App, MigratePolicy, Ports, Settings, builtin_registry};
use flowrun_infra::entity::data_flow;
use sea_orm::{
    ActiveValue::NotSet, ActiveValue::Set, ConnectionTrait, EntityTrait, Statement, TransactionTrait,
};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::Options;
use crate::report::{peak_rss_mb, percentile_ms};

/// The names of the benchmark's flows start with this (so the executor benchmark's clean-up, which
/// deletes `bench-%`, removes them too).
pub const FLOW_PREFIX: &str = "bench-sched-";

/// Rows per multi-row `INSERT` of the flows.
const INSERT_CHUNK: usize = 500;

/// How often the benchmark looks whether every flow has run.
const POLL: Duration = Duration::from_millis(20);

/// What a worker prints once its database is open.
const READY: &str = "ready";

/// The one JSON line of `--scheduler`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulerReport {
    /// `sqlite`, `postgres` or `mysql`.
    pub backend: &'static str,
    /// Due flows.
    pub flows: u32,
    /// Scheduler processes.
    pub servers: u32,
    /// Flows each process runs at once (`FLOWRUN_CONCURRENCY`).
    pub slots: usize,
    /// Milliseconds between a process's scheduler cycles (`FLOWRUN_TICK_SECS`).
    pub tick_ms: u64,
    /// From the moment every flow became due to the last run's recorded end.
    pub seconds: f64,
    /// Finished runs per second over `seconds`.
    pub runs_per_sec: f64,
    /// Median time from due (`next_run_at`) to started (`started_at`), in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile of the same.
    pub p99_ms: f64,
    /// Every flow has exactly one run (checked in SQL).
    pub exactly_once: bool,
    /// Runs recorded.
    pub runs: u64,
    /// Flows without a run.
    pub flows_without_run: u64,
    /// Flows with more than one run.
    pub flows_run_twice: u64,
    /// Runs that did not end `success`.
    pub unsuccessful_runs: u64,
    /// The benchmark process's peak RSS in MiB (not the workers').
    pub peak_rss_mb: Option<f64>,
}

impl SchedulerReport {
    /// Whether the benchmark saw what it must: every flow run once, successfully.
    pub fn ok(&self) -> bool {
        self.exactly_once && self.unsuccessful_runs == 0
    }
}

/// Runs the scheduler benchmark `options` describes.
pub async fn run(options: &Options) -> anyhow::Result<SchedulerReport> {
    if options.flows == 0 {
        bail!("--flows must be at least 1");
    }
    let settings = Settings::new(options.database_url.clone());
    let store = flowrun_app::open_sql(&settings, MigratePolicy::Always)
        .await
        .context("opening the database")?;
    let db = store.connection().clone();
    let backend = db.get_database_backend();
    let backend_name = App::wire(Ports::sql(store.clone()), builtin_registry(), settings.lease)
        .backend()
        .name();
    create_flows(&db, options.flows).await?;

    let mut workers = Vec::new();
    for _ in 0..options.servers {
        workers.push(spawn_worker(options)?);
    }
    for worker in &mut workers {
        wait_ready(worker).await?;
    }

    let due = Utc::now().trunc_subsecs(6);
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        flowrun_infra::numbered_placeholders(
            backend,
            "UPDATE data_flows SET enabled = ?, next_run_at = ? WHERE name LIKE ?",
        ),
        [
            true.into(),
            time_value(backend, due),
            format!("{FLOW_PREFIX}%").into(),
        ],
    ))
    .await
    .context("making the flows due")?;
    let waiting = Instant::now();
    let deadline = Duration::from_secs(options.timeout_secs);
    loop {
        let finished = count(
            &db,
            "SELECT COUNT(*) FROM data_flow_runs r JOIN data_flows f ON f.id = r.data_flow_id \
             WHERE f.name LIKE ? AND r.status IN ('success', 'failed')",
        )
        .await?;
        if finished >= u64::from(options.flows) {
            break;
        }
        if waiting.elapsed() > deadline {
            eprintln!(
                "flowrun-bench: {finished} of {} flows ran within {} s; stopping",
                options.flows, options.timeout_secs
            );
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    for worker in &mut workers {
        stop_worker(worker).await;
    }
    let report = measure(&db, backend_name, options, due).await?;
    store.run_writer().close().await.ok();
    Ok(report)
}

/// Deletes the flows (and runs) of earlier invocations and inserts `n` disabled Noop flows due at once
/// when enabled, every hour after.
async fn create_flows(db: &sea_orm::DatabaseConnection, n: u32) -> anyhow::Result<()> {
    let backend = db.get_database_backend();
    let pattern = sea_orm::Value::from(format!("{FLOW_PREFIX}%"));
    for sql in [
        "DELETE FROM data_flow_runs WHERE data_flow_id IN (SELECT id FROM data_flows WHERE name LIKE ?)",
        "DELETE FROM data_flows WHERE name LIKE ?",
    ] {
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            flowrun_infra::numbered_placeholders(backend, sql),
            [pattern.clone()],
        ))
        .await
        .with_context(|| format!("cleaning up: {sql}"))?;
    }
    let now = Utc::now();
    let configuration = serde_json::json!({ "class_name": "Noop" }).to_string();
    let txn = db.begin().await?;
    let names: Vec<u32> = (0..n).collect();
    for chunk in names.chunks(INSERT_CHUNK) {
        let rows = chunk.iter().map(|i| data_flow::ActiveModel {
            id: NotSet,
            name: Set(format!("{FLOW_PREFIX}{i}")),
            description: Set("flowrun-bench --scheduler".to_owned()),
            enabled: Set(false),
            configuration: Set(configuration.clone()),
            run_interval_secs: Set(3600),
            schedule_cron: Set(None),
            schedule_tz: Set(None),
            next_run_at: Set(Some(now)),
            timeout_secs: Set(None),
            retries: Set(0),
            retry_backoff_secs: Set(None),
            retry_at: Set(None),
            retry_attempt: Set(None),
            state: Set(None),
            last_run_at: Set(None),
            last_run_status: Set(None),
            active_run_id: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        });
        data_flow::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await
            .context("inserting the flows")?;
    }
    txn.commit().await?;
    Ok(())
}

/// A time as the backend's timestamp columns take it.
fn time_value(backend: sea_orm::DatabaseBackend, at: DateTime<Utc>) -> sea_orm::Value {
    match backend {
        sea_orm::DatabaseBackend::MySql => at.naive_utc().into(),
        _ => at.into(),
    }
}

/// A `COUNT(*)` with the flows' name pattern as its one placeholder.
async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> anyhow::Result<u64> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            flowrun_infra::numbered_placeholders(backend, sql),
            [format!("{FLOW_PREFIX}%").into()],
        ))
        .await?
        .context("COUNT(*) returned no row")?;
    Ok(u64::try_from(row.try_get_by_index::<i64>(0)?).unwrap_or(0))
}

/// Starts one scheduler process: this binary in `--scheduler-worker` mode.
fn spawn_worker(options: &Options) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the benchmark's own binary")?;
    Command::new(exe)
        .arg("--scheduler-worker")
        .arg("--database-url")
        .arg(&options.database_url)
        .arg("--slots")
        .arg(options.slots.to_string())
        .arg("--tick-ms")
        .arg(options.tick_ms.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting a scheduler process")
}

async fn wait_ready(worker: &mut Child) -> anyhow::Result<()> {
    let stdout = worker.stdout.take().context("the worker's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
        Ok(Ok(Some(line))) if line.trim() == READY => Ok(()),
        Ok(other) => bail!("a scheduler process did not start: {other:?}"),
        Err(_) => bail!("a scheduler process did not get ready within 60 s"),
    }
}

/// Closes the worker's stdin (its signal to stop) and waits for it to exit.
async fn stop_worker(worker: &mut Child) {
    drop(worker.stdin.take());
    if tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .is_err()
    {
        eprintln!("flowrun-bench: a scheduler process did not stop; killing it");
        let _ = worker.kill().await;
    }
}

/// Reads the runs back and checks that each flow ran exactly once.
async fn measure(
    db: &sea_orm::DatabaseConnection,
    backend: &'static str,
    options: &Options,
    due: DateTime<Utc>,
) -> anyhow::Result<SchedulerReport> {
    let pattern = format!("{FLOW_PREFIX}%");
    let flows_without_run = count(
        db,
        "SELECT COUNT(*) FROM data_flows f WHERE f.name LIKE ? \
         AND NOT EXISTS (SELECT 1 FROM data_flow_runs r WHERE r.data_flow_id = f.id)",
    )
    .await?;
    let flows_run_twice = count(
        db,
        "SELECT COUNT(*) FROM data_flows f WHERE f.name LIKE ? \
         AND (SELECT COUNT(*) FROM data_flow_runs r WHERE r.data_flow_id = f.id) > 1",
    )
    .await?;
    let unsuccessful_runs = count(
        db,
        "SELECT COUNT(*) FROM data_flow_runs r JOIN data_flows f ON f.id = r.data_flow_id \
         WHERE f.name LIKE ? AND r.status <> 'success'",
    )
    .await?;
    if flows_without_run + flows_run_twice > 0 {
        let backend_kind = db.get_database_backend();
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                backend_kind,
                flowrun_infra::numbered_placeholders(
                    backend_kind,
                    "SELECT f.name, (SELECT COUNT(*) FROM data_flow_runs r WHERE r.data_flow_id = f.id) \
                     FROM data_flows f WHERE f.name LIKE ? \
                     AND (SELECT COUNT(*) FROM data_flow_runs r WHERE r.data_flow_id = f.id) <> 1",
                ),
                [pattern.clone().into()],
            ))
            .await?;
        for row in rows.iter().take(20) {
            let name: String = row.try_get_by_index(0)?;
            let runs: i64 = row.try_get_by_index(1)?;
            eprintln!("flowrun-bench: flow {name} has {runs} runs, not 1");
        }
    }
    let backend_kind = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend_kind,
            flowrun_infra::numbered_placeholders(
                backend_kind,
                "SELECT r.started_at, r.ended_at FROM data_flow_runs r \
                 JOIN data_flows f ON f.id = r.data_flow_id WHERE f.name LIKE ?",
            ),
            [pattern.into()],
        ))
        .await?;
    let mut latencies = Vec::with_capacity(rows.len());
    let mut last_end = due;
    for row in &rows {
        let started: DateTime<Utc> = row.try_get_by_index(0)?;
        let ended: Option<DateTime<Utc>> = row.try_get_by_index(1)?;
        latencies.push((started - due).to_std().unwrap_or_default());
        if let Some(ended) = ended {
            last_end = last_end.max(ended);
        }
    }
    latencies.sort_unstable();
    let seconds = (last_end - due).to_std().unwrap_or_default().as_secs_f64();
    let runs = rows.len() as u64;
    let round = |value: f64, digits: i32| {
        let scale = 10f64.powi(digits);
        (value * scale).round() / scale
    };
    Ok(SchedulerReport {
        backend,
        flows: options.flows,
        servers: options.servers,
        slots: options.slots,
        tick_ms: options.tick_ms,
        seconds: round(seconds, 3),
        runs_per_sec: if seconds > 0.0 {
            round((runs - unsuccessful_runs.min(runs)) as f64 / seconds, 1)
        } else {
            0.0
        },
        p50_ms: round(percentile_ms(&latencies, 50.0), 1),
        p99_ms: round(percentile_ms(&latencies, 99.0), 1),
        exactly_once: flows_without_run == 0 && flows_run_twice == 0,
        runs,
        flows_without_run,
        flows_run_twice,
        unsuccessful_runs,
        peak_rss_mb: peak_rss_mb().map(|mb| round(mb, 1)),
    })
}

/// The `--scheduler-worker` process: opens the database as `flowrun-server` does, says it is ready, and
/// runs a scheduler cycle every `--tick-ms` (the server's tick loop) until its stdin closes; then lets its
/// runs end.
pub async fn worker(options: &Options) -> anyhow::Result<()> {
    let settings = Settings::new(options.database_url.clone());
    let app = App::open(&settings, builtin_registry(), MigratePolicy::SqliteOnly)
        .await
        .context("opening the database")?
        .with_concurrency(options.slots);
    let mut stdout = tokio::io::stdout();
    stdout.write_all(format!("{READY}\n").as_bytes()).await?;
    stdout.flush().await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut ticks = tokio::time::interval(Duration::from_millis(options.tick_ms.max(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            line = stdin.next_line() => match line {
                Ok(Some(_)) => continue,
                _ => break,
            },
        }
        if let Err(error) = app.scheduler.dispatch().await {
            eprintln!("flowrun-bench worker: a scheduler cycle failed: {error}");
        }
    }
    app.scheduler.wait_idle().await;
    Ok(())
}
