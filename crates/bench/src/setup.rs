//! The database state each invocation starts from: fresh bench flows and a history of exactly `N` runs.

use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};
use flowrun_app::App;
use flowrun_domain::{DataFlow, FlowName, NewDataFlow, RunInterval};
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement, TransactionTrait, Value};
use serde_json::json;

use crate::Class;
use flowrun_infra::numbered_placeholders as placeholders;

/// The flow that holds the pre-filled history.
pub const HISTORY_FLOW: &str = "bench-history";

/// Rows per multi-row `INSERT` of the history (5 bound values each: under every backend's limit).
const HISTORY_BATCH: u64 = 1000;
/// `INSERT`s per transaction while filling the history.
const BATCHES_PER_COMMIT: u64 = 20;

/// The name of the flow task `i` runs.
pub fn flow_name(i: u32) -> String {
    format!("bench-{i}")
}

/// Deletes the flows (and runs) of earlier invocations and creates `count` flows of `class`, `bench-0` …,
/// disabled so that no scheduler picks them up.
pub async fn fresh_flows(
    app: &App,
    db: &sea_orm::DatabaseConnection,
    count: u32,
    class: Class,
) -> anyhow::Result<Vec<DataFlow>> {
    let backend = db.get_database_backend();
    let history = Value::from(HISTORY_FLOW);
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        placeholders(
            backend,
            "DELETE FROM data_flow_runs WHERE data_flow_id IN \
             (SELECT id FROM data_flows WHERE name LIKE 'bench-%' AND name <> ?)",
        ),
        [history.clone()],
    ))
    .await
    .context("deleting earlier bench runs")?;
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        placeholders(
            backend,
            "DELETE FROM data_flows WHERE name LIKE 'bench-%' AND name <> ?",
        ),
        [history],
    ))
    .await
    .context("deleting earlier bench flows")?;
    let mut flows = Vec::with_capacity(count as usize);
    for i in 0..count {
        let flow = NewDataFlow::new(
            FlowName::parse(&flow_name(i))?,
            "flowrun-bench",
            false,
            json!({ "class_name": class.name() }),
            RunInterval::from_secs(3600)?.schedule(),
        )?;
        flows.push(app.flows.create(flow, app.clock.now()).await?);
    }
    Ok(flows)
}

/// The flow the size of flowrun's failure text is measured on.
pub const PROBE_FLOW: &str = "bench-probe";

/// The `error_backtrace` flowrun records for a Fail run executed the way the benchmark executes it: one
/// run on a throwaway flow, deleted again with its run.
pub async fn flowrun_failure_text(app: &App) -> anyhow::Result<String> {
    app.flows.delete(PROBE_FLOW).await?;
    let flow = NewDataFlow::new(
        FlowName::parse(PROBE_FLOW)?,
        "flowrun-bench: measures flowrun's failure text",
        false,
        json!({ "class_name": Class::Fail.name() }),
        RunInterval::from_secs(3600)?.schedule(),
    )?;
    let flow = app.flows.create(flow, app.clock.now()).await?;
    // Called from a spawned task, like the timed runs, so the stack (and the backtrace) is as deep.
    let executor = app.executor.clone();
    let result = tokio::spawn(async move { executor.execute(&flow).await }).await?;
    app.flows.delete(PROBE_FLOW).await?;
    match result {
        Err(flowrun_domain::ExecuteError::Failed { run, .. }) => run
            .error_backtrace
            .context("the probe Fail run recorded no error_backtrace"),
        other => bail!("the probe Fail run did not fail as expected: {other:?}"),
    }
}

/// Makes `data_flow_runs` hold exactly `runs` past runs of the [`HISTORY_FLOW`], inserting only what is
/// missing (a history of the right size is kept between invocations). With `runs == 0` the history is
/// removed.
pub async fn ensure_history(app: &App, db: &sea_orm::DatabaseConnection, runs: u64) -> anyhow::Result<()> {
    let backend = db.get_database_backend();
    let existing = app.flows.find_by_name(HISTORY_FLOW).await?;
    let flow = match existing {
        Some(flow) => flow,
        None if runs == 0 => return Ok(()),
        None => {
            let flow = NewDataFlow::new(
                FlowName::parse(HISTORY_FLOW)?,
                "flowrun-bench: past runs",
                false,
                json!({ "class_name": "Noop" }),
                RunInterval::from_secs(3600)?.schedule(),
            )?;
            app.flows.create(flow, app.clock.now()).await?
        }
    };
    let id = flow.id.0;
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            placeholders(
                backend,
                "SELECT COUNT(*) FROM data_flow_runs WHERE data_flow_id = ?",
            ),
            [id.into()],
        ))
        .await?
        .context("COUNT(*) returned no row")?;
    let mut have = u64::try_from(row.try_get_by_index::<i64>(0)?).unwrap_or(0);
    if have > runs || runs == 0 {
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            placeholders(backend, "DELETE FROM data_flow_runs WHERE data_flow_id = ?"),
            [id.into()],
        ))
        .await
        .context("deleting the history")?;
        have = 0;
    }
    if runs == 0 {
        app.flows.delete(HISTORY_FLOW).await?;
        return Ok(());
    }
    let base = Utc::now() - TimeDelta::seconds(i64::try_from(runs)?) - TimeDelta::days(1);
    let mut next = have;
    while next < runs {
        let txn = db.begin().await?;
        for _ in 0..BATCHES_PER_COMMIT {
            if next >= runs {
                break;
            }
            let rows = HISTORY_BATCH.min(runs - next);
            txn.execute_raw(history_insert(backend, id, base, next, rows)?)
                .await
                .context("inserting history")?;
            next += rows;
        }
        txn.commit().await?;
    }
    if next != runs {
        bail!("history has {next} runs, wanted {runs}");
    }
    if next > have {
        settle(db, backend).await;
    }
    Ok(())
}

/// After a bulk insert, brings the database to the state a long-lived one is in: statistics gathered and,
/// on PostgreSQL, the table vacuumed (its visibility map set) and the freshly written WAL checkpointed.
/// Otherwise the first timed invocations measure autovacuum and the checkpoint competing for the disk,
/// not the size of the history. Failures only warn: the benchmark still runs, less settled.
async fn settle(db: &sea_orm::DatabaseConnection, backend: DatabaseBackend) {
    let statements: &[&str] = match backend {
        DatabaseBackend::Postgres => &["VACUUM (ANALYZE) data_flow_runs", "CHECKPOINT"],
        DatabaseBackend::MySql => &["ANALYZE TABLE data_flow_runs"],
        _ => &["ANALYZE", "PRAGMA wal_checkpoint(TRUNCATE)"],
    };
    for sql in statements {
        if let Err(error) = db.execute_unprepared(sql).await {
            eprintln!("flowrun-bench: `{sql}` after filling the history failed: {error}");
        }
    }
}

/// One multi-row `INSERT` of past runs `first .. first + rows`, one second apart from `base`; every tenth
/// failed with a short message and trace.
fn history_insert(
    backend: DatabaseBackend,
    flow_id: i64,
    base: DateTime<Utc>,
    first: u64,
    rows: u64,
) -> anyhow::Result<Statement> {
    let mut sql = String::from(
        "INSERT INTO data_flow_runs (data_flow_id, status, started_at, ended_at, error_message, \
         error_backtrace, lease_owner, lease_expires_at, created_at, updated_at) VALUES ",
    );
    let mut values: Vec<Value> = Vec::with_capacity(rows as usize * 5);
    for k in first..first + rows {
        if k > first {
            sql.push_str(", ");
        }
        let failed = k % 10 == 9;
        let (status, error) = if failed {
            (
                "failed",
                "'the Fail flow failed as configured', \
                 'Error: the Fail flow failed as configured\n\nBacktrace:\n   0: flowrun_flows::Fail::fail'",
            )
        } else {
            ("success", "NULL, NULL")
        };
        sql.push_str(&format!(
            "({flow_id}, '{status}', ?, ?, {error}, '{HISTORY_FLOW}', ?, ?, ?)"
        ));
        let started = base + TimeDelta::seconds(i64::try_from(k)?);
        let ended = started + TimeDelta::milliseconds(5);
        values.extend([
            started.into(),
            ended.into(),
            (started + TimeDelta::seconds(60)).into(),
            started.into(),
            ended.into(),
        ]);
    }
    Ok(Statement::from_sql_and_values(
        backend,
        placeholders(backend, &sql),
        values,
    ))
}
