//! [`RunRepository`] on SeaORM: each lifecycle step is one transaction with guarded updates.
//!
//! The steps every run takes — start, lease renewals, finish — run fixed statements built once per backend
//! from the entities' columns when the repository is made ([`HotPath`]) and only bound per run. Building
//! them with SeaORM's query builder each time cost more client CPU than the executor itself (expression
//! trees, quoting, value copies: about a fifth of a run's instructions on SQLite, measured with callgrind;
//! see `docs/performance.md`). Everything else (reads, the reaper) uses the entities.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use flowrun_domain::ports::abandoned_message;
use flowrun_domain::{
    ActiveRun, CancelOutcome, CancelRequest, Claim, Clock, DataFlowId, DataFlowRun, DueBatch, FailureKind,
    FinishRunError, LastRunStatus, PruneRuns, RepositoryError, RunFilter, RunId, RunOutcome, RunRecord,
    RunRepository, RunStatus, StartRun, StartRunError,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, FromQueryResult,
    JoinType, QueryFilter, QueryOrder, QuerySelect, RelationTrait, Statement, TransactionTrait, Value,
};
use sea_orm::{DbErr, ExecResult};
use tracing::debug;

use crate::entity::{data_flow, data_flow_run};
use crate::group_commit::{Finish, GroupCommit};
use crate::hot_path::{HotPath, SqliteBatches, Steps};
use crate::mapping::{self, is_rolled_back_by_conflict, repository_error};
use crate::text::{MAX_ERROR_BACKTRACE_BYTES, MAX_ERROR_MESSAGE_BYTES, MAX_LEASE_OWNER_BYTES, storable};
use crate::writer::{RunWriter, WriteTransaction};

/// How often a run's start or end is tried when the database rolls it back to break a deadlock. MySQL
/// and MariaDB do that under concurrent runs (the gap locks of their default isolation level), and ask
/// applications to retry; the transaction was undone whole, so a retry cannot write twice.
const ATTEMPTS: u32 = 3;

/// How often a batch of starts is tried when rolled back to break a deadlock, and the wait before the
/// n-th retry (n times this). A batch that still fails is started flow by flow by the scheduler.
const BATCH_ATTEMPTS: u32 = 5;
const BATCH_RETRY_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// Stores runs in `data_flow_runs` and the flows' claims in `data_flows.active_run_id`.
#[derive(Clone)]
pub struct SeaOrmRunRepository {
    db: DatabaseConnection,
    writer: RunWriter,
    sql: Arc<HotPath>,
    /// PostgreSQL: where finishes are gathered and written in batches (see [`crate::group_commit`]).
    group: Option<Arc<GroupCommit>>,
    /// Read again once a claim is granted, when set (see [`SeaOrmRunRepository::with_clock`]).
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for SeaOrmRunRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeaOrmRunRepository")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl SeaOrmRunRepository {
    /// A repository on this connection pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self::with_writer(RunWriter::pooled(db))
    }

    /// A repository whose runs start and finish through `writer`, everything else on its pool.
    pub fn with_writer(writer: RunWriter) -> Self {
        let db = writer.pool().clone();
        let sql = Arc::new(HotPath::new(db.get_database_backend()));
        let group = match &sql.steps {
            Steps::Calls { finish, .. } => Some(Arc::new(GroupCommit::new(writer.pool().clone(), finish))),
            Steps::Batches(_) | Steps::Statements => None,
        };
        Self {
            db,
            writer,
            sql,
            group,
            clock: None,
        }
    }

    /// The same repository recording a run's start at the time its claim was granted, read from `clock`
    /// once the claim is (so a claim that waited for a lock or a connection never seems to overlap the run
    /// before it). Without a clock, a run starts at the time its [`StartRun`] says.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Finishes `runs` at once, each exactly as [`RunRepository::finish_run`] would, and returns each
    /// one's result in order. On PostgreSQL they are written together, by as few batch statements as
    /// [`crate::group_commit`] allows (the same path concurrent `finish_run` calls take, made
    /// deterministic: tests use it to put chosen finishes into one batch); a finish rolled back by a
    /// conflict is not tried again here. Elsewhere they are finished one after the other.
    pub async fn finish_runs(
        &self,
        runs: Vec<(RunId, DataFlowId, RunOutcome)>,
    ) -> Vec<Result<(), FinishRunError>> {
        let Some(group) = &self.group else {
            let mut results = Vec::with_capacity(runs.len());
            for (run_id, data_flow_id, outcome) in runs {
                results.push(self.finish_run(run_id, data_flow_id, outcome).await);
            }
            return results;
        };
        let finishes = runs
            .iter()
            .map(|(run_id, data_flow_id, outcome)| finish_call(*run_id, *data_flow_id, outcome))
            .collect();
        let answers = group.finish_all(finishes).await;
        let mut results = Vec::with_capacity(runs.len());
        for ((run_id, _, _), answer) in runs.into_iter().zip(answers) {
            results.push(match answer {
                Ok(ended) => self.ended_or_why(run_id, ended).await,
                Err(e) => Err(e.into()),
            });
        }
        results
    }

    /// How many finishes this repository (and its clones) wrote in a batch of more than one: always 0
    /// but on PostgreSQL.
    pub fn grouped_finishes(&self) -> u64 {
        self.group.as_ref().map_or(0, |group| group.grouped())
    }

    async fn begin(&self) -> Result<DatabaseTransaction, RepositoryError> {
        self.db.begin().await.map_err(repository_error)
    }

    async fn begin_write(&self) -> Result<WriteTransaction, RepositoryError> {
        self.writer.begin().await.map_err(repository_error)
    }

    /// How long the start of `request` has waited so far (a connection, a lock): its start moves by as
    /// much. Zero without a clock.
    fn waited(&self, request: &StartRun) -> TimeDelta {
        self.clock.as_ref().map_or(TimeDelta::zero(), |clock| {
            (clock.now() - request.started_at).max(TimeDelta::zero())
        })
    }

    /// One attempt at [`RunRepository::start_run`].
    async fn start_once(&self, request: &StartRun) -> Result<DataFlowRun, StartRunError> {
        match &self.sql.steps {
            Steps::Calls { start, .. } => self.start_by_call(request, start).await,
            Steps::Batches(batches) => self.start_by_batch(request, batches).await,
            Steps::Statements => self.start_by_statements(request).await,
        }
    }

    /// [`Self::start_once`] as one call of `flowrun_start_run` (PostgreSQL).
    async fn start_by_call(&self, request: &StartRun, call: &str) -> Result<DataFlowRun, StartRunError> {
        let sql = &*self.sql;
        let (claim, next_run_at) = match request.claim {
            Claim::Manual => ("manual", None),
            Claim::Due { next_run_at } => ("due", next_run_at),
            Claim::Retry => ("retry", None),
        };
        // The wait so far is read here; the function adds the wait for the claim's lock, if any.
        let waited = self.waited(request);
        let started = shifted(request.started_at, waited);
        let lease_expires_at = shifted(request.lease_expires_at, waited);
        let owner = storable(request.lease_owner.as_str(), MAX_LEASE_OWNER_BYTES).into_owned();
        let statement = sql.statement(
            call,
            [
                claim.into(),
                request.data_flow_id.0.into(),
                sql.time(next_run_at),
                sql.time(request.started_at),
                sql.time(started),
                owner.as_str().into(),
                sql.time(lease_expires_at),
                attempt_value(request.attempt),
                request.trigger.as_str().into(),
                self.clock.is_some().into(),
            ],
        );
        let Some(row) = self
            .writer
            .pool()
            .query_one_raw(statement)
            .await
            .map_err(repository_error)?
        else {
            return Err(self.why_not_claimed(request.data_flow_id).await?);
        };
        let read = |e| repository_error(e);
        let run_id = row.try_get_by_index::<i64>(0).map_err(read)?;
        let started = row.try_get_by_index::<DateTime<Utc>>(1).map_err(read)?;
        let lease_expires_at = row.try_get_by_index::<DateTime<Utc>>(2).map_err(read)?;
        Ok(started_run(request, run_id, started, owner, lease_expires_at))
    }

    /// [`Self::start_once`] as two batches on one SQLite connection: `BEGIN IMMEDIATE` alone (the write
    /// lock is granted when it returns, and the run starts then), then the claim and the rest with the
    /// `COMMIT`.
    async fn start_by_batch(
        &self,
        request: &StartRun,
        batches: &SqliteBatches,
    ) -> Result<DataFlowRun, StartRunError> {
        let sql = &*self.sql;
        let flow_id = request.data_flow_id.0;
        let mut conn = self
            .writer
            .sqlite_batches()
            .await
            .map_err(repository_error)?
            .ok_or_else(|| RepositoryError::Database("SQLite batches on another backend".into()))?;
        conn.batch(sql.statement(&batches.begin, []), false)
            .await
            .map_err(repository_error)?;
        let waited = self.waited(request);
        let started = shifted(request.started_at, waited);
        let lease_expires_at = shifted(request.lease_expires_at, waited);
        let owner = storable(request.lease_owner.as_str(), MAX_LEASE_OWNER_BYTES).into_owned();
        let mut values: Vec<Value> = Vec::with_capacity(13);
        let text = match request.claim {
            Claim::Manual => {
                values.push(flow_id.into());
                &batches.start_manual
            }
            Claim::Retry => {
                values.extend([flow_id.into(), true.into(), sql.time(request.started_at)]);
                &batches.start_retry
            }
            Claim::Due { next_run_at } => {
                values.extend([
                    sql.time(next_run_at),
                    flow_id.into(),
                    true.into(),
                    sql.time(request.started_at),
                ]);
                &batches.start_due
            }
        };
        values.extend(insert_values(sql, request, started, &owner, lease_expires_at));
        values.push(flow_id.into());
        let results = conn
            .batch(
                Statement::from_sql_and_values(sql.backend(), text.as_str(), values),
                true,
            )
            .await
            .map_err(repository_error)?;
        drop(conn);
        // claim, insert, in_progress, activate, COMMIT
        let [claim, insert, ..] = results.as_slice() else {
            return Err(batch_shape(results.len()).into());
        };
        if claim.rows_affected() == 0 {
            return Err(self.why_not_claimed(request.data_flow_id).await?);
        }
        if insert.rows_affected() != 1 {
            return Err(batch_shape(results.len()).into());
        }
        Ok(started_run(
            request,
            insert.last_insert_rowid(),
            started,
            owner,
            lease_expires_at,
        ))
    }

    /// [`Self::start_once`] statement by statement in a transaction (MySQL/MariaDB).
    async fn start_by_statements(&self, request: &StartRun) -> Result<DataFlowRun, StartRunError> {
        let sql = &*self.sql;
        let flow_id = request.data_flow_id.0;
        let claim = match request.claim {
            Claim::Manual => sql.statement(&sql.claim, [flow_id.into()]),
            Claim::Retry => sql.statement(
                &sql.claim_retry,
                [flow_id.into(), true.into(), sql.time(request.started_at)],
            ),
            Claim::Due { next_run_at } => sql.statement(
                &sql.claim_due,
                [
                    sql.time(next_run_at),
                    flow_id.into(),
                    true.into(),
                    sql.time(request.started_at),
                ],
            ),
        };
        let txn = self.begin_write().await?;
        if execute(&txn, claim).await?.rows_affected() == 0 {
            txn.rollback().await.map_err(repository_error)?;
            return Err(self.why_not_claimed(request.data_flow_id).await?);
        }
        // The claim may have waited for a lock or a connection; the run starts when it was granted, so a
        // run claimed after another was released never seems to overlap it.
        let waited = self.waited(request);
        let started = shifted(request.started_at, waited);
        let lease_expires_at = shifted(request.lease_expires_at, waited);
        let owner = storable(request.lease_owner.as_str(), MAX_LEASE_OWNER_BYTES).into_owned();
        let insert = sql.statement(
            &sql.insert_pending,
            insert_values(sql, request, started, &owner, lease_expires_at),
        );
        let run_id = insert_returning_id(&txn, sql, insert).await?;
        execute(&txn, sql.statement(&sql.in_progress, [run_id.into()])).await?;
        execute(
            &txn,
            sql.statement(&sql.activate, [run_id.into(), flow_id.into()]),
        )
        .await?;
        txn.commit().await.map_err(repository_error)?;
        Ok(started_run(request, run_id, started, owner, lease_expires_at))
    }

    /// One attempt at [`RunRepository::finish_run`].
    async fn finish_once(
        &self,
        run_id: RunId,
        data_flow_id: DataFlowId,
        outcome: &RunOutcome,
    ) -> Result<(), FinishRunError> {
        let ended = match &self.sql.steps {
            Steps::Calls { .. } => self.finish_by_call(run_id, data_flow_id, outcome).await?,
            Steps::Batches(batches) => {
                self.finish_by_batch(run_id, data_flow_id, outcome, batches)
                    .await?
            }
            Steps::Statements => self.finish_by_statements(run_id, data_flow_id, outcome).await?,
        };
        self.ended_or_why(run_id, ended).await
    }

    /// `Ok` when the finish of `run_id` ended it, else why not: the run was no longer in progress.
    async fn ended_or_why(&self, run_id: RunId, ended: bool) -> Result<(), FinishRunError> {
        if ended {
            return Ok(());
        }
        let now = data_flow_run::Entity::find_by_id(run_id.0)
            .one(&self.db)
            .await
            .map_err(repository_error)?;
        Err(FinishRunError::NotInProgress {
            run_id,
            status: now.map_or_else(|| "deleted".to_owned(), |run| run.status),
        })
    }

    /// [`Self::finish_once`] through `flowrun_finish_run` (PostgreSQL), written together with the finishes
    /// queued meanwhile ([`GroupCommit`]); whether the run was still in progress.
    async fn finish_by_call(
        &self,
        run_id: RunId,
        data_flow_id: DataFlowId,
        outcome: &RunOutcome,
    ) -> Result<bool, RepositoryError> {
        let group = self
            .group
            .as_ref()
            .ok_or_else(|| RepositoryError::Database("group commit on another backend".into()))?;
        group.finish(finish_call(run_id, data_flow_id, outcome)).await
    }

    /// [`Self::finish_once`] as one batch on a SQLite connection; whether the run was still in progress.
    async fn finish_by_batch(
        &self,
        run_id: RunId,
        data_flow_id: DataFlowId,
        outcome: &RunOutcome,
        batches: &SqliteBatches,
    ) -> Result<bool, RepositoryError> {
        let sql = &*self.sql;
        let end = Ending::of(outcome);
        let ended = outcome.ended_at;
        let output = stored_output(&outcome.output);
        let state = outcome.state.as_ref().map(ToString::to_string);
        let text = &batches.finish[SqliteBatches::finish_index(output.is_some(), state.is_some())];
        let mut values: Vec<Value> = Vec::with_capacity(17);
        values.extend([
            end.status.into(),
            sql.time(ended),
            end.message.into(),
            end.backtrace.into(),
            end.failure_kind.into(),
            sql.time(ended),
            run_id.0.into(),
        ]);
        if let Some(output) = output {
            values.extend([output.into(), run_id.0.into()]);
        }
        values.extend([
            sql.time(ended),
            end.status.into(),
            sql.time(outcome.retry.map(|retry| retry.at)),
            end.retry_attempt.into(),
            sql.time(ended),
            data_flow_id.0.into(),
        ]);
        if let Some(state) = state {
            values.extend([state.into(), data_flow_id.0.into()]);
        }
        let mut conn = self
            .writer
            .sqlite_batches()
            .await
            .map_err(repository_error)?
            .ok_or_else(|| RepositoryError::Database("SQLite batches on another backend".into()))?;
        let results = conn
            .batch(
                Statement::from_sql_and_values(sql.backend(), text.as_str(), values),
                true,
            )
            .await
            .map_err(repository_error)?;
        drop(conn);
        // BEGIN, end of the run, …
        match results.get(1) {
            Some(end_run) => Ok(end_run.rows_affected() == 1),
            None => Err(batch_shape(results.len())),
        }
    }

    /// [`Self::finish_once`] statement by statement in a transaction (MySQL/MariaDB); whether the run was
    /// still in progress.
    async fn finish_by_statements(
        &self,
        run_id: RunId,
        data_flow_id: DataFlowId,
        outcome: &RunOutcome,
    ) -> Result<bool, RepositoryError> {
        let end = Ending::of(outcome);
        let (status, message, backtrace) = (end.status, end.message, end.backtrace);
        let ended = outcome.ended_at;
        let sql = &*self.sql;
        let end_run = sql.statement(
            &sql.end_run,
            [
                status.into(),
                sql.time(ended),
                message.into(),
                backtrace.into(),
                end.failure_kind.into(),
                sql.time(ended),
                run_id.0.into(),
            ],
        );
        let txn = self.begin_write().await?;
        if execute(&txn, end_run).await?.rows_affected() == 0 {
            txn.rollback().await.map_err(repository_error)?;
            return Ok(false);
        }
        let retry_attempt = end.retry_attempt;
        let end_flow = sql.statement(
            &sql.end_flow,
            [
                sql.time(ended),
                status.into(),
                sql.time(outcome.retry.map(|retry| retry.at)),
                retry_attempt.into(),
                sql.time(ended),
                data_flow_id.0.into(),
            ],
        );
        execute(&txn, end_flow).await?;
        // Outside the fixed statements: most runs write no output and save no state, and pay nothing for it.
        if !outcome.output.is_empty() {
            data_flow_run::Entity::update_many()
                .col_expr(
                    data_flow_run::Column::Output,
                    Expr::value(stored_output(&outcome.output)),
                )
                .filter(data_flow_run::Column::Id.eq(run_id.0))
                .exec(&*txn)
                .await
                .map_err(repository_error)?;
        }
        if let Some(state) = &outcome.state {
            data_flow::Entity::update_many()
                .col_expr(data_flow::Column::State, Expr::value(state.to_string()))
                .filter(data_flow::Column::Id.eq(data_flow_id.0))
                .exec(&*txn)
                .await
                .map_err(repository_error)?;
        }
        txn.commit().await.map_err(repository_error)?;
        Ok(true)
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
        let at = self.sql.time(now);
        let txn = self.begin().await?;
        let closed = data_flow_run::Entity::update_many()
            .col_expr(
                data_flow_run::Column::Status,
                Expr::value(RunStatus::Failed.as_str()),
            )
            .col_expr(data_flow_run::Column::EndedAt, Expr::value(at.clone()))
            .col_expr(data_flow_run::Column::ErrorMessage, Expr::value(message.clone()))
            .col_expr(
                data_flow_run::Column::ErrorBacktrace,
                Expr::value(message.clone()),
            )
            .col_expr(
                data_flow_run::Column::FailureKind,
                Expr::value(FailureKind::Abandoned.as_str()),
            )
            .col_expr(data_flow_run::Column::UpdatedAt, Expr::value(at.clone()))
            .filter(data_flow_run::Column::Id.eq(run.id))
            .filter(data_flow_run::Column::Status.eq(RunStatus::InProgress.as_str()))
            .filter(data_flow_run::Column::LeaseExpiresAt.lt(at.clone()))
            .exec(&txn)
            .await
            .map_err(repository_error)?;
        if closed.rows_affected == 0 {
            txn.rollback().await.map_err(repository_error)?;
            return Ok(None);
        }
        data_flow::Entity::update_many()
            .col_expr(data_flow::Column::LastRunAt, Expr::value(at.clone()))
            .col_expr(
                data_flow::Column::LastRunStatus,
                Expr::value(LastRunStatus::Failed.as_str()),
            )
            .col_expr(data_flow::Column::ActiveRunId, Expr::value(Option::<i64>::None))
            .col_expr(data_flow::Column::UpdatedAt, Expr::value(at))
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
            failure_kind: Some(FailureKind::Abandoned.as_str().to_owned()),
            updated_at: now,
            ..run
        };
        mapping::data_flow_run(closed).map(Some)
    }
}

/// What a finish writes about the run's end, bounded as stored.
struct Ending {
    status: &'static str,
    message: Option<String>,
    backtrace: Option<String>,
    failure_kind: Option<&'static str>,
    retry_attempt: Option<i32>,
}

impl Ending {
    fn of(outcome: &RunOutcome) -> Self {
        Self {
            status: outcome.status.as_str(),
            message: outcome
                .error_message
                .as_deref()
                .map(|m| storable(m, MAX_ERROR_MESSAGE_BYTES).into_owned()),
            backtrace: outcome
                .error_backtrace
                .as_deref()
                .map(|b| storable(b, MAX_ERROR_BACKTRACE_BYTES).into_owned()),
            failure_kind: outcome.failure_kind.map(FailureKind::as_str),
            retry_attempt: outcome
                .retry
                .map(|retry| i32::try_from(retry.attempt).unwrap_or(i32::MAX)),
        }
    }
}

/// A finish as `flowrun_finish_run` takes it.
fn finish_call(run_id: RunId, data_flow_id: DataFlowId, outcome: &RunOutcome) -> Finish {
    let end = Ending::of(outcome);
    Finish {
        run_id: run_id.0,
        flow_id: data_flow_id.0,
        status: end.status,
        ended_at: outcome.ended_at,
        message: end.message,
        backtrace: end.backtrace,
        failure_kind: end.failure_kind,
        retry_at: outcome.retry.map(|retry| retry.at),
        retry_attempt: end.retry_attempt,
        output: stored_output(&outcome.output),
        state: outcome.state.as_ref().map(ToString::to_string),
    }
}

/// `at` moved later by `waited`, or `at` itself where that is beyond what a time can hold.
fn shifted(at: DateTime<Utc>, waited: TimeDelta) -> DateTime<Utc> {
    at.checked_add_signed(waited).unwrap_or(at)
}

fn attempt_value(attempt: u32) -> Value {
    i32::try_from(attempt).unwrap_or(i32::MAX).into()
}

/// The values of [`HotPath::insert_pending`], in its binding order.
fn insert_values(
    sql: &HotPath,
    request: &StartRun,
    started: DateTime<Utc>,
    owner: &str,
    lease_expires_at: DateTime<Utc>,
) -> [Value; 8] {
    [
        request.data_flow_id.0.into(),
        sql.time(started),
        owner.into(),
        sql.time(lease_expires_at),
        attempt_value(request.attempt),
        request.trigger.as_str().into(),
        sql.time(started),
        sql.time(started),
    ]
}

/// The run a successful start recorded.
fn started_run(
    request: &StartRun,
    run_id: i64,
    started: DateTime<Utc>,
    owner: String,
    lease_expires_at: DateTime<Utc>,
) -> DataFlowRun {
    DataFlowRun {
        id: RunId(run_id),
        data_flow_id: request.data_flow_id,
        status: RunStatus::InProgress,
        started_at: started,
        ended_at: None,
        error_message: None,
        error_backtrace: None,
        lease_owner: Some(owner),
        lease_expires_at: Some(lease_expires_at),
        attempt: request.attempt,
        trigger: request.trigger,
        failure_kind: None,
        cancel_requested: None,
        output: String::new(),
        created_at: started,
        updated_at: started,
    }
}

/// A batch whose results do not have the shape its statements give: a defect, reported, never a panic.
fn batch_shape(results: usize) -> RepositoryError {
    RepositoryError::Database(
        format!("a lifecycle batch returned {results} results unlike its statements").into(),
    )
}

async fn execute(txn: &DatabaseTransaction, statement: Statement) -> Result<ExecResult, RepositoryError> {
    txn.execute_raw(statement).await.map_err(repository_error)
}

/// Inserts a row and returns its id: from `RETURNING id` on PostgreSQL, from the driver (MySQL's OK
/// packet, SQLite's `last_insert_rowid`) elsewhere — one round trip either way.
async fn insert_returning_id(
    txn: &DatabaseTransaction,
    sql: &HotPath,
    insert: Statement,
) -> Result<i64, RepositoryError> {
    if sql.insert_returns_id() {
        let row = txn
            .query_one_raw(insert)
            .await
            .map_err(repository_error)?
            .ok_or_else(|| repository_error(DbErr::RecordNotInserted))?;
        return row.try_get_by_index::<i64>(0).map_err(repository_error);
    }
    let id = execute(txn, insert).await?.last_insert_id();
    i64::try_from(id).map_err(|_| RepositoryError::CorruptRow {
        table: "data_flow_runs",
        reason: format!("inserted run id {id} is out of range"),
    })
}

/// The runs whose lease expired before `now` (a time as [`HotPath::time`] binds it), of one flow or of all.
///
/// `status = 'in_progress'` is written as a literal, not bound: the index the reaper searches is partial
/// (`WHERE status = 'in_progress'`, see the migration `m20261127_000001_live_run_lease_index`), and a planner
/// can only use it when it can see that the query implies that condition. With a bound value SQLite has to
/// re-prepare the statement once the value is known, and a PostgreSQL generic plan cannot use the index at
/// all; a literal is planned right once.
fn expired_runs(now: Value, data_flow_id: Option<DataFlowId>) -> sea_orm::Select<data_flow_run::Entity> {
    let mut query = data_flow_run::Entity::find()
        .filter(Expr::cust(format!(
            "status = '{}'",
            RunStatus::InProgress.as_str()
        )))
        .filter(data_flow_run::Column::LeaseExpiresAt.lt(now));
    if let Some(id) = data_flow_id {
        query = query.filter(data_flow_run::Column::DataFlowId.eq(id.0));
    }
    query
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
    attempt: i32,
    triggered_by: String,
    failure_kind: Option<String>,
    cancel_requested_at: Option<DateTime<Utc>>,
    cancel_requested_by: Option<String>,
    output: Option<String>,
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
            attempt: self.attempt,
            triggered_by: self.triggered_by,
            failure_kind: self.failure_kind,
            cancel_requested_at: self.cancel_requested_at,
            cancel_requested_by: self.cancel_requested_by,
            output: self.output,
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
        let mut attempt = 1;
        loop {
            match self.start_once(&request).await {
                Err(StartRunError::Repository(e)) if attempt < ATTEMPTS && is_rolled_back_by_conflict(&e) => {
                    debug!(attempt, error = %e, "start of a run rolled back by a conflict; trying again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_due_runs(&self, batch: DueBatch) -> Result<Vec<DataFlowRun>, RepositoryError> {
        let mut attempt = 1;
        loop {
            match crate::claim::start_due_runs(&self.writer, self.clock.as_ref(), &batch).await {
                Err(e) if attempt < BATCH_ATTEMPTS && is_rolled_back_by_conflict(&e) => {
                    debug!(attempt, error = %e, "start of a batch rolled back by a conflict; trying again");
                    // A batch holds many row locks; retried at once, the victim tends to meet the same
                    // batches again. A short wait lets the winner commit first.
                    tokio::time::sleep(BATCH_RETRY_WAIT * attempt).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn finish_run(
        &self,
        run_id: RunId,
        data_flow_id: DataFlowId,
        outcome: RunOutcome,
    ) -> Result<(), FinishRunError> {
        let mut attempt = 1;
        loop {
            match self.finish_once(run_id, data_flow_id, &outcome).await {
                Err(FinishRunError::Repository(e))
                    if attempt < ATTEMPTS && is_rolled_back_by_conflict(&e) =>
                {
                    debug!(attempt, error = %e, "end of run {run_id} rolled back by a conflict; trying again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn renew_lease(&self, run_id: RunId, expires_at: DateTime<Utc>) -> Result<bool, RepositoryError> {
        let sql = &*self.sql;
        let renew = sql.statement(&sql.renew_lease, [sql.time(expires_at), run_id.0.into()]);
        let result = self.db.execute_raw(renew).await.map_err(repository_error)?;
        Ok(result.rows_affected() > 0)
    }

    async fn reap_expired(
        &self,
        now: DateTime<Utc>,
        data_flow_id: Option<DataFlowId>,
    ) -> Result<Vec<DataFlowRun>, RepositoryError> {
        let expired = expired_runs(self.sql.time(now), data_flow_id)
            .all(&self.db)
            .await
            .map_err(repository_error)?;
        let mut reaped = Vec::new();
        for run in expired {
            if let Some(run) = self.reap_one(run, now).await? {
                reaped.push(run);
            }
        }
        Ok(reaped)
    }

    async fn request_cancel(
        &self,
        run_id: RunId,
        by: String,
        at: DateTime<Utc>,
    ) -> Result<CancelOutcome, RepositoryError> {
        let by = storable(&by, MAX_LEASE_OWNER_BYTES).into_owned();
        data_flow_run::Entity::update_many()
            .col_expr(
                data_flow_run::Column::CancelRequestedAt,
                Expr::value(self.sql.time(at)),
            )
            .col_expr(data_flow_run::Column::CancelRequestedBy, Expr::value(by))
            .filter(data_flow_run::Column::Id.eq(run_id.0))
            .filter(
                data_flow_run::Column::Status
                    .is_in([RunStatus::Pending.as_str(), RunStatus::InProgress.as_str()]),
            )
            .filter(data_flow_run::Column::CancelRequestedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(repository_error)?;
        let Some(run) = data_flow_run::Entity::find_by_id(run_id.0)
            .one(&self.db)
            .await
            .map_err(repository_error)?
        else {
            return Ok(CancelOutcome::NotFound);
        };
        let run = mapping::data_flow_run(run)?;
        Ok(match run.cancel_requested {
            Some(request) if !run.status.is_terminal() => CancelOutcome::Requested(request),
            _ => CancelOutcome::AlreadyEnded(run.status),
        })
    }

    async fn record_output(&self, run_id: RunId, output: &str) -> Result<bool, RepositoryError> {
        let result = data_flow_run::Entity::update_many()
            .col_expr(data_flow_run::Column::Output, Expr::value(stored_output(output)))
            .filter(data_flow_run::Column::Id.eq(run_id.0))
            .filter(data_flow_run::Column::Status.eq(RunStatus::InProgress.as_str()))
            .exec(&self.db)
            .await
            .map_err(repository_error)?;
        Ok(result.rows_affected > 0)
    }

    async fn cancel_request(&self, run_id: RunId) -> Result<Option<CancelRequest>, RepositoryError> {
        let row = data_flow_run::Entity::find_by_id(run_id.0)
            .select_only()
            .column(data_flow_run::Column::CancelRequestedAt)
            .column(data_flow_run::Column::CancelRequestedBy)
            .into_tuple::<(Option<DateTime<Utc>>, Option<String>)>()
            .one(&self.db)
            .await
            .map_err(repository_error)?;
        Ok(row.and_then(|(at, by)| {
            at.map(|at| CancelRequest {
                at,
                by: by.unwrap_or_default(),
            })
        }))
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
        if let Some(kind) = filter.failure_kind {
            query = query.filter(data_flow_run::Column::FailureKind.eq(kind.as_str()));
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

    async fn count_runs(&self, data_flow_id: DataFlowId) -> Result<u64, RepositoryError> {
        crate::history::count_runs(&self.db, data_flow_id).await
    }

    async fn prune(&self, request: PruneRuns) -> Result<u64, RepositoryError> {
        crate::history::prune(&self.db, &request).await
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

/// A run's output as stored: bounded and safe for every backend (the domain already bounds it; this keeps
/// the column's limit whatever an adapter's caller hands in).
fn stored_output(output: &str) -> Option<String> {
    (!output.is_empty()).then(|| storable(output, MAX_ERROR_BACKTRACE_BYTES).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{DatabaseBackend, QueryTrait};

    #[tokio::test]
    async fn the_reaper_searches_the_partial_index_on_sqlite() {
        let db = sea_orm::Database::connect("sqlite::memory:")
            .await
            .expect("connects");
        crate::migrate(&db, "sqlite::memory:").await.expect("migrates");
        let query = expired_runs(Utc::now().into(), None).build(DatabaseBackend::Sqlite);
        let plan = db
            .query_all_raw(Statement::from_sql_and_values(
                DatabaseBackend::Sqlite,
                format!("EXPLAIN QUERY PLAN {}", query.sql),
                query.values.map(|v| v.0).unwrap_or_default(),
            ))
            .await
            .expect("plan");
        let details: Vec<String> = plan
            .iter()
            .map(|row| row.try_get::<String>("", "detail").expect("detail"))
            .collect();
        assert!(
            details
                .iter()
                .any(|d| d.contains("idx_data_flow_runs_live_lease")),
            "{details:?}"
        );
    }
}
