//! Many due flows started in one transaction: the bulk form of a scheduled start
//! ([`flowrun_domain::RunRepository::start_due_runs`]).
//!
//! A scheduler that finds hundreds of due flows would otherwise pay one transaction (a claim, an insert, two
//! updates, the commit) per flow. Here a batch pays it once, whatever its size:
//!
//! 1. **claim** every flow of the batch that is still due and free, moving its `next_run_at` to its own next
//!    slot (a `CASE` over the batch) and marking it with the claim marker. Where the database has row locks
//!    the flows are picked with `FOR UPDATE SKIP LOCKED`, so concurrent schedulers never wait for each
//!    other's batches: a flow another batch is claiming is simply not in this one. PostgreSQL does it in one
//!    statement (`UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING id`); MySQL/MariaDB has no
//!    `UPDATE … RETURNING`, so it locks with the `SELECT` and updates what it got; SQLite serialises writers,
//!    so its `UPDATE … RETURNING` alone is atomic;
//! 2. **insert** the runs as `pending`, one multi-row `INSERT` (`RETURNING id, data_flow_id` where the
//!    database has it; MySQL reads its own pending rows back);
//! 3. **move** them to `in_progress` and make each its flow's active run, one statement each.
//!
//! The rows written are those [`crate::SeaOrmRunRepository`]'s single start writes, with the same columns
//! (the entities of [`crate::entity`]), the same claim marker ([`CLAIM_MARKER`]) and the same guards.
//! The statements depend on the batch's size, so they are built per batch; that costs little next to one
//! round trip, shared by every flow of the batch.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use flowrun_domain::{Clock, DataFlowRun, DueBatch, RepositoryError, RunId, RunStatus, Trigger};
use sea_orm::sea_query::extension::mysql::{IndexHintScope, IndexName, MySqlSelectStatementExt};
use sea_orm::sea_query::{
    CaseStatement, Expr, ExprTrait, LockBehavior, LockType, Query, SelectStatement, UpdateStatement,
};
use sea_orm::{ConnectionTrait, DatabaseBackend, EntityName, Statement, StatementBuilder, Value};

use crate::entity::{data_flow, data_flow_run};
use crate::hot_path::CLAIM_MARKER;
use crate::mapping::{far_time, repository_error};
use crate::text::{MAX_LEASE_OWNER_BYTES, storable};
use crate::writer::{RunWriter, WriteTransaction};

/// A constant written into the SQL, as [`crate::hot_path`] writes its statuses.
fn literal(value: impl Into<Value>) -> Expr {
    Expr::Constant(value.into())
}

/// One attempt at starting `batch`: one transaction, nothing written on an error.
pub(crate) async fn start_due_runs(
    writer: &RunWriter,
    clock: Option<&Arc<dyn Clock>>,
    batch: &DueBatch,
) -> Result<Vec<DataFlowRun>, RepositoryError> {
    if batch.flows.is_empty() {
        return Ok(Vec::new());
    }
    let backend = writer.pool().get_database_backend();
    let txn = writer.begin().await.map_err(repository_error)?;
    let claimed = claim(&txn, backend, batch).await?;
    if claimed.is_empty() {
        txn.rollback().await.map_err(repository_error)?;
        return Ok(Vec::new());
    }
    // As for a single start: the runs start when the claim was granted, not when it was asked for.
    let waited = clock.map_or(TimeDelta::zero(), |clock| {
        (clock.now() - batch.started_at).max(TimeDelta::zero())
    });
    let started = batch
        .started_at
        .checked_add_signed(waited)
        .unwrap_or(batch.started_at);
    let lease_expires_at = batch
        .lease_expires_at
        .checked_add_signed(waited)
        .unwrap_or(batch.lease_expires_at);
    let owner = storable(batch.lease_owner.as_str(), MAX_LEASE_OWNER_BYTES).into_owned();
    let run_ids = insert_pending(&txn, backend, &claimed, started, &owner, lease_expires_at).await?;
    if run_ids.len() != claimed.len() {
        return Err(RepositoryError::Database(
            format!(
                "inserted {} runs for {} claimed flows",
                run_ids.len(),
                claimed.len()
            )
            .into(),
        ));
    }
    let runs: Vec<i64> = run_ids.values().copied().collect();
    execute(&txn, backend, &in_progress(&runs)).await?;
    execute(&txn, backend, &activate(&run_ids)).await?;
    txn.commit().await.map_err(repository_error)?;
    Ok(batch
        .flows
        .iter()
        .filter_map(|flow| {
            let id = *run_ids.get(&flow.data_flow_id.0)?;
            Some(DataFlowRun {
                id: RunId(id),
                data_flow_id: flow.data_flow_id,
                status: RunStatus::InProgress,
                started_at: started,
                ended_at: None,
                error_message: None,
                error_backtrace: None,
                lease_owner: Some(owner.clone()),
                lease_expires_at: Some(lease_expires_at),
                attempt: 1,
                trigger: Trigger::Schedule,
                failure_kind: None,
                cancel_requested: None,
                output: String::new(),
                created_at: started,
                updated_at: started,
            })
        })
        .collect())
}

/// What makes a flow of the batch claimable: in the batch, free, enabled and due at `started_at` (the
/// conditions of [`crate::hot_path::HotPath::claim_due`]).
fn due_conditions(backend: DatabaseBackend, batch: &DueBatch) -> [Expr; 4] {
    [
        Expr::col(data_flow::Column::Id).is_in(batch.flows.iter().map(|f| f.data_flow_id.0)),
        Expr::col(data_flow::Column::ActiveRunId).is_null(),
        Expr::col(data_flow::Column::Enabled).eq(true),
        Expr::col(data_flow::Column::NextRunAt).lte(far_time(backend, Some(batch.started_at))),
    ]
}

/// The claimable flows of the batch, as a `SELECT` of their ids that locks them and skips rows another
/// transaction has locked.
fn claimable(backend: DatabaseBackend, batch: &DueBatch) -> SelectStatement {
    let mut select = Query::select();
    select
        .column(data_flow::Column::Id)
        .from(data_flow::Entity.table_ref());
    if backend == DatabaseBackend::MySql {
        // By primary key only: InnoDB then locks just the rows it returns. Through the due index it would
        // lock ranges of it too (next-key locks), which the claims' moves of `next_run_at` in that index
        // wait for, and concurrent batches deadlock.
        select.force_index(IndexName::new("PRIMARY"), IndexHintScope::All);
    }
    for condition in due_conditions(backend, batch) {
        select.and_where(condition);
    }
    select.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    select
}

/// `UPDATE data_flows SET active_run_id = <marker>, next_run_at = CASE id … END`, without its `WHERE`.
fn claim_update(backend: DatabaseBackend, batch: &DueBatch) -> UpdateStatement {
    let next = batch.flows.iter().fold(CaseStatement::new(), |case, flow| {
        case.case(
            Expr::col(data_flow::Column::Id).eq(flow.data_flow_id.0),
            Expr::val(far_time(backend, flow.next_run_at)),
        )
    });
    Query::update()
        .table(data_flow::Entity.table_ref())
        .value(data_flow::Column::ActiveRunId, literal(CLAIM_MARKER))
        .value(
            data_flow::Column::NextRunAt,
            next.finally(Expr::col(data_flow::Column::NextRunAt)),
        )
        .to_owned()
}

/// Claims what it can of the batch; returns the claimed flows' ids.
async fn claim(
    txn: &WriteTransaction,
    backend: DatabaseBackend,
    batch: &DueBatch,
) -> Result<Vec<i64>, RepositoryError> {
    let mut update = claim_update(backend, batch);
    match backend {
        DatabaseBackend::MySql => {
            let locked = ids(txn, backend, &claimable(backend, batch)).await?;
            if locked.is_empty() {
                return Ok(locked);
            }
            update.and_where(Expr::col(data_flow::Column::Id).is_in(locked.iter().copied()));
            execute(txn, backend, &update).await?;
            Ok(locked)
        }
        DatabaseBackend::Postgres => {
            update
                .and_where(Expr::col(data_flow::Column::Id).in_subquery(claimable(backend, batch)))
                .returning_col(data_flow::Column::Id);
            ids(txn, backend, &update).await
        }
        _ => {
            // SQLite: one writer at a time, so the guarded UPDATE alone is atomic.
            for condition in due_conditions(backend, batch) {
                update.and_where(condition);
            }
            update.returning_col(data_flow::Column::Id);
            ids(txn, backend, &update).await
        }
    }
}

/// Inserts one `pending` run per claimed flow; returns each flow's run id (flow id → run id).
async fn insert_pending(
    txn: &WriteTransaction,
    backend: DatabaseBackend,
    flows: &[i64],
    started: DateTime<Utc>,
    owner: &str,
    lease_expires_at: DateTime<Utc>,
) -> Result<HashMap<i64, i64>, RepositoryError> {
    use data_flow_run::Column as Run;
    let mut insert = Query::insert();
    insert.into_table(data_flow_run::Entity.table_ref()).columns([
        Run::DataFlowId,
        Run::Status,
        Run::StartedAt,
        Run::LeaseOwner,
        Run::LeaseExpiresAt,
        Run::Attempt,
        Run::TriggeredBy,
        Run::CreatedAt,
        Run::UpdatedAt,
    ]);
    let at = far_time(backend, Some(started));
    for &flow in flows {
        insert
            .values([
                Expr::val(flow),
                literal(RunStatus::Pending.as_str()),
                Expr::val(at.clone()),
                Expr::val(owner),
                Expr::val(far_time(backend, Some(lease_expires_at))),
                Expr::val(1_i32),
                Expr::val(Trigger::Schedule.as_str()),
                Expr::val(at.clone()),
                Expr::val(at.clone()),
            ])
            .map_err(|error| RepositoryError::Database(Box::new(error)))?;
    }
    if backend == DatabaseBackend::MySql {
        // No `INSERT … RETURNING` on MySQL: read the batch's own rows back. No other transaction can
        // have a pending run of these flows: this one holds their claims, and a run is pending only inside
        // the transaction that starts it.
        execute(txn, backend, &insert).await?;
        let mut select = Query::select();
        select
            .columns([Run::Id, Run::DataFlowId])
            .from(data_flow_run::Entity.table_ref())
            .and_where(Expr::col(Run::DataFlowId).is_in(flows.iter().copied()))
            .and_where(Expr::col(Run::Status).eq(literal(RunStatus::Pending.as_str())));
        return pairs(txn, backend, &select).await;
    }
    insert.returning(Query::returning().columns([Run::Id, Run::DataFlowId]));
    pairs(txn, backend, &insert).await
}

/// `UPDATE data_flow_runs SET status = 'in_progress' WHERE id IN (…)`.
fn in_progress(runs: &[i64]) -> UpdateStatement {
    Query::update()
        .table(data_flow_run::Entity.table_ref())
        .value(
            data_flow_run::Column::Status,
            literal(RunStatus::InProgress.as_str()),
        )
        .and_where(Expr::col(data_flow_run::Column::Id).is_in(runs.iter().copied()))
        .to_owned()
}

/// Makes each run its flow's active run, replacing the claim marker.
fn activate(run_ids: &HashMap<i64, i64>) -> UpdateStatement {
    let active = run_ids.iter().fold(CaseStatement::new(), |case, (&flow, &run)| {
        case.case(Expr::col(data_flow::Column::Id).eq(flow), Expr::val(run))
    });
    Query::update()
        .table(data_flow::Entity.table_ref())
        .value(
            data_flow::Column::ActiveRunId,
            active.finally(Expr::col(data_flow::Column::ActiveRunId)),
        )
        .and_where(Expr::col(data_flow::Column::Id).is_in(run_ids.keys().copied()))
        .to_owned()
}

async fn execute(
    txn: &WriteTransaction,
    backend: DatabaseBackend,
    statement: &dyn StatementBuilder,
) -> Result<(), RepositoryError> {
    txn.execute_raw(build(backend, statement))
        .await
        .map(|_| ())
        .map_err(repository_error)
}

fn build(backend: DatabaseBackend, statement: &dyn StatementBuilder) -> Statement {
    statement.build(&backend)
}

/// The first column of every row, as ids.
async fn ids(
    txn: &WriteTransaction,
    backend: DatabaseBackend,
    statement: &dyn StatementBuilder,
) -> Result<Vec<i64>, RepositoryError> {
    txn.query_all_raw(build(backend, statement))
        .await
        .map_err(repository_error)?
        .iter()
        .map(|row| row.try_get_by_index::<i64>(0).map_err(repository_error))
        .collect()
}

/// Rows of `(run id, flow id)`, as flow id → run id.
async fn pairs(
    txn: &WriteTransaction,
    backend: DatabaseBackend,
    statement: &dyn StatementBuilder,
) -> Result<HashMap<i64, i64>, RepositoryError> {
    txn.query_all_raw(build(backend, statement))
        .await
        .map_err(repository_error)?
        .iter()
        .map(|row| {
            let run = row.try_get_by_index::<i64>(0).map_err(repository_error)?;
            let flow = row.try_get_by_index::<i64>(1).map_err(repository_error)?;
            Ok((flow, run))
        })
        .collect()
}
