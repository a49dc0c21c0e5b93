//! [`RunRepository`] on SeaORM: each lifecycle step is one transaction with guarded updates.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowrun_domain::ports::abandoned_message;
use flowrun_domain::{
    ActiveRun, DataFlowId, DataFlowRun, FinishRunError, LastRunStatus, RepositoryError, RunFilter, RunId,
    RunOutcome, RunRecord, RunRepository, RunStatus, StartRun, StartRunError,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    FromQueryResult, JoinType, QueryFilter, QueryOrder, QuerySelect, RelationTrait, TransactionTrait,
};

use crate::entity::{data_flow, data_flow_run};
use crate::mapping::{self, repository_error};
use crate::text::{MAX_ERROR_BACKTRACE_BYTES, MAX_ERROR_MESSAGE_BYTES, MAX_LEASE_OWNER_BYTES, storable};

/// While the start transaction runs, the flow's `active_run_id` holds this marker; the real run id replaces
/// it before commit, so no other transaction ever sees it.
const CLAIM_MARKER: i64 = 0;

/// Stores runs in `data_flow_runs` and the flows' claims in `data_flows.active_run_id`.
#[derive(Debug, Clone)]
pub struct SeaOrmRunRepository {
    db: DatabaseConnection,
}

impl SeaOrmRunRepository {
    /// A repository on this connection pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    async fn begin(&self) -> Result<DatabaseTransaction, RepositoryError> {
        self.db.begin().await.map_err(repository_error)
    }

    /// Why a claim matched no row: the flow is gone, held by a run, or not due.
    async fn why_not_claimed(&self, data_flow_id: DataFlowId) -> Result<StartRunError, RepositoryError> {
        let Some(flow) = data_flow::Entity::find_by_id(data_flow_id.0)
            .one(&self.db)
            .await
            .map_err(repository_error)?
        else {
            return Ok(StartRunError::FlowNotFound);
        };
        let Some(active_id) = flow.active_run_id else {
            return Ok(StartRunError::NotDue);
        };
        let active = data_flow_run::Entity::find_by_id(active_id)
            .one(&self.db)
            .await
            .map_err(repository_error)?;
        Ok(StartRunError::Busy(ActiveRun {
            run_id: RunId(active_id),
            started_at: active.as_ref().map_or(flow.updated_at, |run| run.started_at),
            lease_expires_at: active.and_then(|run| run.lease_expires_at),
        }))
    }

    /// Closes one expired run as `failed` if it is still `in_progress` with an expired lease, and releases its
    /// flow. Returns the run as closed, or `None` if it was renewed or finished meanwhile.
    async fn reap_one(
        &self,
        run: data_flow_run::Model,
        now: DateTime<Utc>,
    ) -> Result<Option<DataFlowRun>, RepositoryError> {
        let message = abandoned_message(run.lease_owner.as_deref(), run.lease_expires_at, now);
        let txn = self.begin().await?;
        let closed = data_flow_run::Entity::update_many()
            .col_expr(
                data_flow_run::Column::Status,
                Expr::value(RunStatus::Failed.as_str()),
            )
            .col_expr(data_flow_run::Column::EndedAt, Expr::value(now))
            .col_expr(data_flow_run::Column::ErrorMessage, Expr::value(message.clone()))
            .col_expr(
                data_flow_run::Column::ErrorBacktrace,
                Expr::value(message.clone()),
            )
            .col_expr(data_flow_run::Column::UpdatedAt, Expr::value(now))
            .filter(data_flow_run::Column::Id.eq(run.id))
            .filter(data_flow_run::Column::Status.eq(RunStatus::InProgress.as_str()))
            .filter(data_flow_run::Column::LeaseExpiresAt.lt(now))
            .exec(&txn)
            .await
            .map_err(repository_error)?;
        if closed.rows_affected == 0 {
            txn.rollback().await.map_err(repository_error)?;
            return Ok(None);
        }
        data_flow::Entity::update_many()
            .col_expr(data_flow::Column::LastRunAt, Expr::value(now))
            .col_expr(
                data_flow::Column::LastRunStatus,
                Expr::value(LastRunStatus::Failed.as_str()),
            )
            .col_expr(data_flow::Column::ActiveRunId, Expr::value(Option::<i64>::None))
            .col_expr(data_flow::Column::UpdatedAt, Expr::value(now))
            .filter(data_flow::Column::Id.eq(run.data_flow_id))
            .filter(data_flow::Column::ActiveRunId.eq(run.id))
            .exec(&txn)
            .await
            .map_err(repository_error)?;
        txn.commit().await.map_err(repository_error)?;
        let closed = data_flow_run::Model {
            status: RunStatus::Failed.as_str().to_owned(),
            ended_at: Some(now),
            error_message: Some(message.clone()),
            error_backtrace: Some(message),
            updated_at: now,
            ..run
        };
        mapping::data_flow_run(closed).map(Some)
    }
}

async fn exec_claim(txn: &DatabaseTransaction, request: &StartRun) -> Result<u64, RepositoryError> {
    let mut claim = data_flow::Entity::update_many()
        .col_expr(data_flow::Column::ActiveRunId, Expr::value(CLAIM_MARKER))
        .filter(data_flow::Column::Id.eq(request.data_flow_id.0))
        .filter(data_flow::Column::ActiveRunId.is_null());
    if let Some(cutoff) = request.due_cutoff {
        claim = claim.filter(data_flow::Column::Enabled.eq(true)).filter(
            Condition::any()
                .add(data_flow::Column::LastRunAt.is_null())
                .add(data_flow::Column::LastRunAt.lte(cutoff)),
        );
    }
    Ok(claim.exec(txn).await.map_err(repository_error)?.rows_affected)
}

/// A run row with its flow's name, read in one query.
#[derive(Debug, FromQueryResult)]
struct RunRow {
    id: i64,
    data_flow_id: i64,
    status: String,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    error_message: Option<String>,
    error_backtrace: Option<String>,
    lease_owner: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    flow_name: String,
}

impl RunRow {
    fn into_record(self) -> Result<RunRecord, RepositoryError> {
        let run = mapping::data_flow_run(data_flow_run::Model {
            id: self.id,
            data_flow_id: self.data_flow_id,
            status: self.status,
            started_at: self.started_at,
            ended_at: self.ended_at,
            error_message: self.error_message,
            error_backtrace: self.error_backtrace,
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })?;
        Ok(RunRecord {
            run,
            flow_name: self.flow_name,
        })
    }
}

fn runs_with_flow_name() -> sea_orm::Select<data_flow_run::Entity> {
    data_flow_run::Entity::find()
        .join(JoinType::InnerJoin, data_flow_run::Relation::DataFlow.def())
        .column_as(data_flow::Column::Name, "flow_name")
}

#[async_trait]
impl RunRepository for SeaOrmRunRepository {
    async fn start_run(&self, request: StartRun) -> Result<DataFlowRun, StartRunError> {
        let txn = self.begin().await?;
        if exec_claim(&txn, &request).await? == 0 {
            txn.rollback().await.map_err(repository_error)?;
            return Err(self.why_not_claimed(request.data_flow_id).await?);
        }
        let owner = storable(request.lease_owner.as_str(), MAX_LEASE_OWNER_BYTES).into_owned();
        let row = data_flow_run::ActiveModel {
            id: NotSet,
            data_flow_id: Set(request.data_flow_id.0),
            status: Set(RunStatus::Pending.as_str().to_owned()),
            started_at: Set(request.started_at),
            ended_at: Set(None),
            error_message: Set(None),
            error_backtrace: Set(None),
            lease_owner: Set(Some(owner.clone())),
            lease_expires_at: Set(Some(request.lease_expires_at)),
            created_at: Set(request.started_at),
            updated_at: Set(request.started_at),
        };
        let run_id = data_flow_run::Entity::insert(row)
            .exec(&txn)
            .await
            .map_err(repository_error)?
            .last_insert_id;
        data_flow_run::Entity::update_many()
            .col_expr(
                data_flow_run::Column::Status,
                Expr::value(RunStatus::InProgress.as_str()),
            )
            .filter(data_flow_run::Column::Id.eq(run_id))
            .exec(&txn)
            .await
            .map_err(repository_error)?;
        data_flow::Entity::update_many()
            .col_expr(data_flow::Column::ActiveRunId, Expr::value(run_id))
            .filter(data_flow::Column::Id.eq(request.data_flow_id.0))
            .exec(&txn)
            .await
            .map_err(repository_error)?;
        txn.commit().await.map_err(repository_error)?;
        Ok(DataFlowRun {
            id: RunId(run_id),
            data_flow_id: request.data_flow_id,
            status: RunStatus::InProgress,
            started_at: request.started_at,
            ended_at: None,
            error_message: None,
            error_backtrace: None,
            lease_owner: Some(owner),
            lease_expires_at: Some(request.lease_expires_at),
            created_at: request.started_at,
            updated_at: request.started_at,
        })
    }

    async fn finish_run(
        &self,
        run_id: RunId,
        data_flow_id: DataFlowId,
        outcome: RunOutcome,
    ) -> Result<(), FinishRunError> {
        let message = outcome
            .error_message
            .as_deref()
            .map(|m| storable(m, MAX_ERROR_MESSAGE_BYTES).into_owned());
        let backtrace = outcome
            .error_backtrace
            .as_deref()
            .map(|b| storable(b, MAX_ERROR_BACKTRACE_BYTES).into_owned());
        let status = outcome.status.as_str();
        let txn = self.begin().await?;
        let updated = data_flow_run::Entity::update_many()
            .col_expr(data_flow_run::Column::Status, Expr::value(status))
            .col_expr(data_flow_run::Column::EndedAt, Expr::value(outcome.ended_at))
            .col_expr(data_flow_run::Column::ErrorMessage, Expr::value(message))
            .col_expr(data_flow_run::Column::ErrorBacktrace, Expr::value(backtrace))
            .col_expr(data_flow_run::Column::UpdatedAt, Expr::value(outcome.ended_at))
            .filter(data_flow_run::Column::Id.eq(run_id.0))
            .filter(data_flow_run::Column::Status.eq(RunStatus::InProgress.as_str()))
            .exec(&txn)
            .await
            .map_err(repository_error)?;
        if updated.rows_affected == 0 {
            txn.rollback().await.map_err(repository_error)?;
            let now = data_flow_run::Entity::find_by_id(run_id.0)
                .one(&self.db)
                .await
                .map_err(repository_error)?;
            return Err(FinishRunError::NotInProgress {
                run_id,
                status: now.map_or_else(|| "deleted".to_owned(), |run| run.status),
            });
        }
        data_flow::Entity::update_many()
            .col_expr(data_flow::Column::LastRunAt, Expr::value(outcome.ended_at))
            .col_expr(data_flow::Column::LastRunStatus, Expr::value(status))
            .col_expr(data_flow::Column::ActiveRunId, Expr::value(Option::<i64>::None))
            .col_expr(data_flow::Column::UpdatedAt, Expr::value(outcome.ended_at))
            .filter(data_flow::Column::Id.eq(data_flow_id.0))
            .exec(&txn)
            .await
            .map_err(repository_error)?;
        txn.commit().await.map_err(repository_error)?;
        Ok(())
    }

    async fn renew_lease(&self, run_id: RunId, expires_at: DateTime<Utc>) -> Result<bool, RepositoryError> {
        let result = data_flow_run::Entity::update_many()
            .col_expr(data_flow_run::Column::LeaseExpiresAt, Expr::value(expires_at))
            .filter(data_flow_run::Column::Id.eq(run_id.0))
            .filter(data_flow_run::Column::Status.eq(RunStatus::InProgress.as_str()))
            .exec(&self.db)
            .await
            .map_err(repository_error)?;
        Ok(result.rows_affected > 0)
    }

    async fn reap_expired(
        &self,
        now: DateTime<Utc>,
        data_flow_id: Option<DataFlowId>,
    ) -> Result<Vec<DataFlowRun>, RepositoryError> {
        let mut query = data_flow_run::Entity::find()
            .filter(data_flow_run::Column::Status.eq(RunStatus::InProgress.as_str()))
            .filter(data_flow_run::Column::LeaseExpiresAt.lt(now));
        if let Some(id) = data_flow_id {
            query = query.filter(data_flow_run::Column::DataFlowId.eq(id.0));
        }
        let expired = query.all(&self.db).await.map_err(repository_error)?;
        let mut reaped = Vec::new();
        for run in expired {
            if let Some(run) = self.reap_one(run, now).await? {
                reaped.push(run);
            }
        }
        Ok(reaped)
    }

    async fn find_run(&self, id: RunId) -> Result<Option<RunRecord>, RepositoryError> {
        runs_with_flow_name()
            .filter(data_flow_run::Column::Id.eq(id.0))
            .into_model::<RunRow>()
            .one(&self.db)
            .await
            .map_err(repository_error)?
            .map(RunRow::into_record)
            .transpose()
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>, RepositoryError> {
        let mut query = runs_with_flow_name();
        if let Some(id) = filter.data_flow_id {
            query = query.filter(data_flow_run::Column::DataFlowId.eq(id.0));
        }
        if let Some(status) = filter.status {
            query = query.filter(data_flow_run::Column::Status.eq(status.as_str()));
        }
        query
            .order_by_desc(data_flow_run::Column::Id)
            .limit(filter.limit)
            .into_model::<RunRow>()
            .all(&self.db)
            .await
            .map_err(repository_error)?
            .into_iter()
            .map(RunRow::into_record)
            .collect()
    }
}

/// Runs a statement that must not fail the caller's flow, used by tests to observe the database.
#[doc(hidden)]
pub async fn execute_unprepared(db: &DatabaseConnection, sql: &str) -> Result<(), RepositoryError> {
    db.execute_unprepared(sql)
        .await
        .map(|_| ())
        .map_err(repository_error)
}
