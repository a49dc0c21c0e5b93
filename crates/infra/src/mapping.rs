//! Between SeaORM models and domain values, and from driver errors to domain errors. The only place
//! that knows both sides.

use chrono::{DateTime, Utc};
use flowrun_domain::{
    CancelRequest, CronSchedule, DataFlow, DataFlowId, DataFlowRun, FailureKind, FlowName, LastRunStatus,
    PendingRetry, RepositoryError, RetryPolicy, RunId, RunInterval, RunStatus, Schedule, Timeout, Trigger,
};
use sea_orm::{DatabaseBackend, DbErr, RuntimeErr};

use crate::entity::{data_flow, data_flow_run};

/// Whether the database rolled a transaction back to break a deadlock or a serialization conflict
/// (SQLSTATE `40001`, MySQL's error 1213 included, or PostgreSQL's `40P01`). The whole transaction was
/// undone, so running it again is safe.
pub(crate) fn is_rolled_back_by_conflict(error: &RepositoryError) -> bool {
    let RepositoryError::Conflict(source) = error else {
        return false;
    };
    let Some(DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) =
        source.downcast_ref::<DbErr>()
    else {
        return false;
    };
    match e.as_ref() {
        sea_orm::sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001" | "40P01")),
        _ => false,
    }
}

/// How the domain should take a driver error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Unavailable,
    Conflict,
    Database,
}

/// Classifies a database's own error by its code: the connection is being closed (PostgreSQL's class
/// `08` and `57P01`–`57P03`, e.g. `pg_terminate_backend`), or other work holds what it needs (SQLite's
/// busy/locked, lock wait timeouts, deadlocks and serialization failures).
fn database_error_kind(code: &str) -> ErrorKind {
    match code {
        c if c.starts_with("08") => ErrorKind::Unavailable,
        "57P01" | "57P02" | "57P03" => ErrorKind::Unavailable,
        // SQLite reports its numeric result code (SQLSTATEs are always five characters): SQLITE_BUSY (5)
        // and SQLITE_LOCKED (6), with their extended codes (low byte 5 or 6).
        c if c.len() < 5 && c.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)) => ErrorKind::Conflict,
        // SQLSTATE: serialization failure, deadlock, lock not available; MySQL's lock wait timeout (HY000
        // with error 1205 is reported as SQLSTATE HY000, so it is matched by message below).
        "40001" | "40P01" | "55P03" => ErrorKind::Conflict,
        _ => ErrorKind::Database,
    }
}

fn error_kind(error: &DbErr) -> ErrorKind {
    let sqlx = match error {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => return ErrorKind::Unavailable,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e.as_ref(),
        _ => return ErrorKind::Database,
    };
    match sqlx {
        sea_orm::sqlx::Error::Io(_)
        | sea_orm::sqlx::Error::PoolTimedOut
        | sea_orm::sqlx::Error::WorkerCrashed => ErrorKind::Unavailable,
        // Closed by this process (it is shutting down): no later attempt can succeed.
        sea_orm::sqlx::Error::PoolClosed => ErrorKind::Database,
        sea_orm::sqlx::Error::Database(db) => {
            let kind = db
                .code()
                .as_deref()
                .map_or(ErrorKind::Database, database_error_kind);
            if kind == ErrorKind::Database && db.message().starts_with("Lock wait timeout exceeded") {
                ErrorKind::Conflict
            } else {
                kind
            }
        }
        _ => ErrorKind::Database,
    }
}

/// A driver error as the domain sees it: unavailable (the connection is gone or cannot be had), a
/// conflict with other work (busy, locked, deadlock: worth trying again), or a database error.
pub(crate) fn repository_error(error: DbErr) -> RepositoryError {
    match error_kind(&error) {
        ErrorKind::Unavailable => RepositoryError::Unavailable(Box::new(error)),
        ErrorKind::Conflict => RepositoryError::Conflict(Box::new(error)),
        ErrorKind::Database => RepositoryError::Database(Box::new(error)),
    }
}

fn corrupt(table: &'static str, reason: impl ToString) -> RepositoryError {
    RepositoryError::CorruptRow {
        table,
        reason: reason.to_string(),
    }
}

/// A `data_flows` row as a domain [`DataFlow`].
pub(crate) fn data_flow(model: data_flow::Model) -> Result<DataFlow, RepositoryError> {
    const TABLE: &str = "data_flows";
    let configuration = serde_json::from_str(&model.configuration).map_err(|e| {
        corrupt(
            TABLE,
            format!("flow {}: configuration is not JSON: {e}", model.id),
        )
    })?;
    let schedule = schedule(&model).map_err(|e| corrupt(TABLE, format!("flow {}: {e}", model.id)))?;
    Ok(DataFlow {
        id: DataFlowId(model.id),
        name: FlowName::parse(&model.name).map_err(|e| corrupt(TABLE, e))?,
        description: model.description,
        enabled: model.enabled,
        configuration,
        schedule,
        next_run_at: model.next_run_at,
        timeout: model
            .timeout_secs
            .map(|secs| Timeout::from_secs(secs.try_into().unwrap_or(0)))
            .transpose()
            .map_err(|e| corrupt(TABLE, format!("flow {}: {e}", model.id)))?,
        retry: RetryPolicy::new(
            u32::try_from(model.retries).unwrap_or(u32::MAX),
            model
                .retry_backoff_secs
                .map(|secs| std::time::Duration::from_secs(secs.unsigned_abs())),
        )
        .map_err(|e| corrupt(TABLE, format!("flow {}: {e}", model.id)))?,
        pending_retry: model.retry_at.map(|at| PendingRetry {
            at,
            // A retry is attempt 2 or later; a smaller value (edited by hand) would fail the run's check.
            attempt: model
                .retry_attempt
                .and_then(|attempt| u32::try_from(attempt).ok())
                .unwrap_or(2)
                .max(2),
        }),
        state: model
            .state
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(TABLE, format!("flow {}: state is not JSON: {e}", model.id)))?,
        last_run_at: model.last_run_at,
        last_run_status: model
            .last_run_status
            .as_deref()
            .map(str::parse::<LastRunStatus>)
            .transpose()
            .map_err(|e| corrupt(TABLE, e))?,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

/// The schedule a `data_flows` row stores: its cron expression and zone when it has one, else its interval.
fn schedule(model: &data_flow::Model) -> Result<Schedule, String> {
    match &model.schedule_cron {
        Some(expression) => CronSchedule::parse(expression, model.schedule_tz.as_deref())
            .map(Schedule::Cron)
            .map_err(|e| e.to_string()),
        None => RunInterval::from_secs(model.run_interval_secs)
            .map(RunInterval::schedule)
            .map_err(|e| e.to_string()),
    }
}

/// How a [`Schedule`] is stored: `(run_interval_secs, schedule_cron, schedule_tz)`. A cron flow keeps the
/// default interval in its (not null) interval column.
pub(crate) fn schedule_columns(schedule: &Schedule) -> (i64, Option<String>, Option<String>) {
    match schedule {
        Schedule::Every(every) => (i64::try_from(every.as_secs()).unwrap_or(i64::MAX), None, None),
        Schedule::Cron(cron) => (
            RunInterval::DEFAULT.as_secs(),
            Some(cron.expression().to_owned()),
            Some(cron.time_zone().to_owned()),
        ),
    }
}

/// A time as a statement value for `backend`. MySQL drivers send a UTC time as a `TIMESTAMP`, whose range
/// ends in January 2038 (MariaDB stores NULL beyond it); the columns are `DATETIME(6)`, so MySQL gets the
/// UTC time without a zone, which holds any year. Use it for every time bound to a timestamp column that
/// can lie past 2038: schedule times, and on the run path every time (see [`crate::hot_path`]).
pub(crate) fn far_time(backend: DatabaseBackend, at: Option<DateTime<Utc>>) -> sea_orm::Value {
    match backend {
        DatabaseBackend::MySql => at.map(|at| at.naive_utc()).into(),
        _ => at.into(),
    }
}

const RUNS: &str = "data_flow_runs";

/// A `data_flow_runs` row as a domain [`DataFlowRun`].
pub(crate) fn data_flow_run(model: data_flow_run::Model) -> Result<DataFlowRun, RepositoryError> {
    Ok(DataFlowRun {
        id: RunId(model.id),
        data_flow_id: DataFlowId(model.data_flow_id),
        status: model.status.parse::<RunStatus>().map_err(|e| corrupt(RUNS, e))?,
        started_at: model.started_at,
        ended_at: model.ended_at,
        error_message: model.error_message,
        error_backtrace: model.error_backtrace,
        lease_owner: model.lease_owner,
        lease_expires_at: model.lease_expires_at,
        attempt: u32::try_from(model.attempt)
            .ok()
            .filter(|attempt| *attempt >= 1)
            .ok_or_else(|| corrupt(RUNS, format!("run {}: attempt {}", model.id, model.attempt)))?,
        trigger: model
            .triggered_by
            .parse::<Trigger>()
            .map_err(|e| corrupt(RUNS, e))?,
        failure_kind: model
            .failure_kind
            .as_deref()
            .map(str::parse::<FailureKind>)
            .transpose()
            .map_err(|e| corrupt(RUNS, e))?,
        cancel_requested: model.cancel_requested_at.map(|at| CancelRequest {
            at,
            by: model.cancel_requested_by.unwrap_or_default(),
        }),
        output: model.output.unwrap_or_default(),
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}
