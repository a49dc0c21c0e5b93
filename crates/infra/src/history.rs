//! Upkeep of the run history: counting a flow's runs and pruning old ones. Apart from the run hot path on
//! purpose: pruning deletes in small batches through the pool and never touches a live run.

use chrono::{DateTime, Utc};
use flowrun_domain::{DataFlowId, PruneRuns, RepositoryError, RunStatus};
use sea_orm::sea_query::{Condition, Query};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::entity::{data_flow, data_flow_run};
use crate::mapping::repository_error;

/// Runs deleted per statement. Each batch is one short autocommit statement, so a prune of millions of rows
/// holds row locks only briefly at a time, and a run that starts or ends meanwhile waits for at most one
/// batch (measured in milliseconds), not for the whole prune.
pub(crate) const PRUNE_BATCH: u64 = 1000;

/// The statuses a run can be pruned in: it has ended.
fn finished() -> Vec<&'static str> {
    RunStatus::ALL
        .into_iter()
        .filter(|status| status.is_terminal())
        .map(RunStatus::as_str)
        .collect()
}

/// Runs that may be deleted: ended, and not a flow's active run (checked again by every delete, so a
/// run that some flow holds is never removed whatever its status says).
fn deletable() -> Condition {
    Condition::all()
        .add(data_flow_run::Column::Status.is_in(finished()))
        .add(
            data_flow_run::Column::Id.not_in_subquery(
                Query::select()
                    .column(data_flow::Column::ActiveRunId)
                    .from(data_flow::Entity)
                    .and_where(data_flow::Column::ActiveRunId.is_not_null())
                    .to_owned(),
            ),
        )
}

/// How many runs the flow has, in any status.
pub(crate) async fn count_runs(
    db: &DatabaseConnection,
    data_flow_id: DataFlowId,
) -> Result<u64, RepositoryError> {
    data_flow_run::Entity::find()
        .filter(data_flow_run::Column::DataFlowId.eq(data_flow_id.0))
        .count(db)
        .await
        .map_err(repository_error)
}

/// Deletes what `request` selects (see [`flowrun_domain::RunRepository::prune`]).
pub(crate) async fn prune(db: &DatabaseConnection, request: &PruneRuns) -> Result<u64, RepositoryError> {
    let old = Condition::all()
        .add(deletable())
        .add(data_flow_run::Column::StartedAt.lt(request.started_before));
    let mut scopes = Vec::new();
    match request.keep_last.filter(|keep| *keep > 0) {
        None => scopes.push(match request.data_flow_id {
            Some(id) => old.add(data_flow_run::Column::DataFlowId.eq(id.0)),
            None => old,
        }),
        Some(keep) => {
            let flows: Vec<i64> = match request.data_flow_id {
                Some(id) => vec![id.0],
                None => data_flow::Entity::find()
                    .select_only()
                    .column(data_flow::Column::Id)
                    .into_tuple()
                    .all(db)
                    .await
                    .map_err(repository_error)?,
            };
            for flow in flows {
                if let Some(oldest_kept) = oldest_kept(db, flow, keep).await? {
                    scopes.push(
                        old.clone()
                            .add(data_flow_run::Column::DataFlowId.eq(flow))
                            .add(older_than(oldest_kept)),
                    );
                }
            }
        }
    }
    let mut deleted = 0;
    for scope in scopes {
        deleted += prune_batches(db, scope).await?;
    }
    Ok(deleted)
}

/// The `keep`-th newest finished run of a flow, by `(started_at, id)`: every finished run older than it
/// may go. `None` when the flow has no more than `keep` finished runs.
async fn oldest_kept(
    db: &DatabaseConnection,
    flow: i64,
    keep: u64,
) -> Result<Option<(i64, DateTime<Utc>)>, RepositoryError> {
    // Drivers refuse offsets beyond a signed 64-bit integer; such an offset finds nothing anyway.
    let offset = keep.saturating_sub(1).min(i64::MAX.unsigned_abs());
    data_flow_run::Entity::find()
        .select_only()
        .column(data_flow_run::Column::Id)
        .column(data_flow_run::Column::StartedAt)
        .filter(data_flow_run::Column::DataFlowId.eq(flow))
        .filter(data_flow_run::Column::Status.is_in(finished()))
        .order_by_desc(data_flow_run::Column::StartedAt)
        .order_by_desc(data_flow_run::Column::Id)
        .offset(offset)
        .limit(1)
        .into_tuple()
        .one(db)
        .await
        .map_err(repository_error)
}

/// Runs strictly older than `(id, started_at)` in `(started_at, id)` order.
fn older_than((id, started_at): (i64, DateTime<Utc>)) -> Condition {
    Condition::any()
        .add(data_flow_run::Column::StartedAt.lt(started_at))
        .add(
            Condition::all()
                .add(data_flow_run::Column::StartedAt.eq(started_at))
                .add(data_flow_run::Column::Id.lt(id)),
        )
}

/// Deletes the runs `scope` selects, [`PRUNE_BATCH`] ids per statement.
async fn prune_batches(db: &DatabaseConnection, scope: Condition) -> Result<u64, RepositoryError> {
    let mut deleted = 0;
    loop {
        let ids: Vec<i64> = data_flow_run::Entity::find()
            .select_only()
            .column(data_flow_run::Column::Id)
            .filter(scope.clone())
            .order_by_asc(data_flow_run::Column::Id)
            .limit(PRUNE_BATCH)
            .into_tuple()
            .all(db)
            .await
            .map_err(repository_error)?;
        let full = ids.len() as u64 == PRUNE_BATCH;
        if ids.is_empty() {
            break;
        }
        let result = data_flow_run::Entity::delete_many()
            .filter(data_flow_run::Column::Id.is_in(ids))
            // A run claimed as active since the select stays.
            .filter(deletable())
            .exec(db)
            .await
            .map_err(repository_error)?;
        deleted += result.rows_affected;
        // A batch that deleted nothing would select the same ids again.
        if !full || result.rows_affected == 0 {
            break;
        }
    }
    Ok(deleted)
}
