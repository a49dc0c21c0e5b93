//! Between SeaORM models and domain values, and from driver errors to domain errors. The only place
//! that knows both sides.

use flowrun_domain::{
    DataFlow, DataFlowId, DataFlowRun, FlowName, LastRunStatus, RepositoryError, RunId, RunInterval,
    RunStatus,
};
use sea_orm::{DbErr, RuntimeErr};

use crate::entity::{data_flow, data_flow_run};

/// Whether the database rolled a transaction back to break a deadlock or a serialization conflict
/// (SQLSTATE `40001`, MySQL's error 1213 included, or PostgreSQL's `40P01`). The whole transaction was
/// undone, so running it again is safe.
pub(crate) fn is_rolled_back_by_conflict(error: &RepositoryError) -> bool {
    let RepositoryError::Database(source) = error else {
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

/// A driver error as the domain sees it: unavailable (the connection is gone or cannot be had) or a
/// database error.
pub(crate) fn repository_error(error: DbErr) -> RepositoryError {
    let unavailable = match &error {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => matches!(
            e.as_ref(),
            sea_orm::sqlx::Error::Io(_)
                | sea_orm::sqlx::Error::PoolTimedOut
                | sea_orm::sqlx::Error::PoolClosed
                | sea_orm::sqlx::Error::WorkerCrashed
        ),
        _ => false,
    };
    if unavailable {
        RepositoryError::Unavailable(Box::new(error))
    } else {
        RepositoryError::Database(Box::new(error))
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
    Ok(DataFlow {
        id: DataFlowId(model.id),
        name: FlowName::parse(&model.name).map_err(|e| corrupt(TABLE, e))?,
        description: model.description,
        enabled: model.enabled,
        configuration,
        run_interval: RunInterval::from_secs(model.run_interval_secs).map_err(|e| corrupt(TABLE, e))?,
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

/// A `data_flow_runs` row as a domain [`DataFlowRun`].
pub(crate) fn data_flow_run(model: data_flow_run::Model) -> Result<DataFlowRun, RepositoryError> {
    Ok(DataFlowRun {
        id: RunId(model.id),
        data_flow_id: DataFlowId(model.data_flow_id),
        status: model
            .status
            .parse::<RunStatus>()
            .map_err(|e| corrupt("data_flow_runs", e))?,
        started_at: model.started_at,
        ended_at: model.ended_at,
        error_message: model.error_message,
        error_backtrace: model.error_backtrace,
        lease_owner: model.lease_owner,
        lease_expires_at: model.lease_expires_at,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}
