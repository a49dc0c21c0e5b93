//! The ports the use cases need: storage and time. Adapters live in `flowrun-infra`.

use std::error::Error as StdError;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::model::{
    CancelRequest, DataFlow, DataFlowId, DataFlowRun, FailureKind, FlowName, LeaseOwner, NewDataFlow, RunId,
    RunOutcome, RunStatus, Trigger,
};

/// The source of every timestamp the domain records.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// The current time, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// A storage failure that is not a rule of the domain: the database is unreachable, a statement failed.
#[derive(Debug, Error)]
pub enum RepositoryError {
    /// The database could not be reached, or the connection broke.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync + 'static>),
    /// The database refused the statement for now because of other work: busy or locked (SQLite), a lock
    /// wait timeout, or a transaction rolled back to break a deadlock or a serialization conflict. Nothing
    /// was written; the same work may succeed when tried again.
    #[error("database busy: {0}")]
    Conflict(#[source] Box<dyn StdError + Send + Sync + 'static>),
    /// The database answered with an error.
    #[error("database error: {0}")]
    Database(#[source] Box<dyn StdError + Send + Sync + 'static>),
    /// A stored row could not be read back into a domain value (for example an unknown status string).
    #[error("corrupt row in {table}: {reason}")]
    CorruptRow {
        /// The table the row came from.
        table: &'static str,
        /// What was wrong with it.
        reason: String,
    },
}

impl RepositoryError {
    /// Whether trying the same work again later may succeed: the database was unreachable or busy, not
    /// wrong.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Conflict(_))
    }
}

/// Why a data flow could not be created.
#[derive(Debug, Error)]
pub enum CreateDataFlowError {
    /// A flow of that name exists.
    #[error("a data flow named `{0}` already exists")]
    Duplicate(FlowName),
    /// Storage failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Stores data flows.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait DataFlowRepository: Send + Sync {
    /// Stores a new flow with `created_at = updated_at = now`.
    ///
    /// MUST return [`CreateDataFlowError::Duplicate`] when the name is taken.
    async fn create(&self, flow: NewDataFlow, now: DateTime<Utc>) -> Result<DataFlow, CreateDataFlowError>;

    /// The flow of that name, if any.
    async fn find_by_name(&self, name: &str) -> Result<Option<DataFlow>, RepositoryError>;

    /// The flow of that id, if any.
    async fn find_by_id(&self, id: DataFlowId) -> Result<Option<DataFlow>, RepositoryError>;

    /// Every flow, by name.
    async fn list(&self) -> Result<Vec<DataFlow>, RepositoryError>;

    /// Enables or disables a flow; returns it as stored afterwards, or `None` if there is no such flow.
    async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<DataFlow>, RepositoryError>;

    /// Deletes a flow and, by cascade, its runs, unless a run holds it (its claim is set). Returns whether
    /// it was deleted: `false` when there is no such flow or a run holds it.
    async fn delete(&self, name: &str) -> Result<bool, RepositoryError>;

    /// Changes the settings `changes` gives of the flow `id`, and sets `updated_at = now`; returns the flow as
    /// stored afterwards, or `None` if there is no such flow.
    ///
    /// MUST write only the fields that are `Some` (a field left `None` keeps its stored value, so a
    /// concurrent scheduler's move of `next_run_at` is not undone by an update that keeps the schedule), and
    /// MUST NOT change the id, the name, `enabled`, `created_at`, the last run or the active run: the runs
    /// and the history stay attached. MUST store a `next_run_at` of any year the schedule can give (beyond
    /// 2038 too).
    async fn update(
        &self,
        id: DataFlowId,
        changes: FlowChanges,
        now: DateTime<Utc>,
    ) -> Result<Option<DataFlow>, RepositoryError>;

    /// Flows due at `now`: enabled, not running, and `next_run_at <= now` or a pending retry due by `now`,
    /// soonest first.
    ///
    /// A row that cannot be read back as a flow (a value corrupted by hand) MUST be skipped, not fail the
    /// call: one bad row must not stop the others from being scheduled.
    async fn list_due(&self, now: DateTime<Utc>) -> Result<Vec<DataFlow>, RepositoryError>;
}

/// A request to start a run: what [`RunRepository::start_run`] stores.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRun {
    /// The flow to run.
    pub data_flow_id: DataFlowId,
    /// The time the start was asked for, from the [`Clock`]. The run's `started_at` (and `created_at`) is
    /// the time the claim was granted: an adapter that can wait for the database (a lock, a busy pool) and
    /// is given the clock reads it again once the claim is granted and moves `started_at` and
    /// `lease_expires_at` later by the wait, so that one flow's runs never overlap in the record.
    pub started_at: DateTime<Utc>,
    /// Who runs it.
    pub lease_owner: LeaseOwner,
    /// Until when the run counts as alive without renewal, counted from `started_at`.
    pub lease_expires_at: DateTime<Utc>,
    /// Whether the run is started by hand or because the flow is due.
    pub claim: Claim,
    /// What started it, recorded on the run.
    pub trigger: Trigger,
    /// Which attempt at its slot it is (1 unless it retries a failed run).
    pub attempt: u32,
}

/// How a start claims its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Run now, whatever the schedule says; the schedule is left as it is.
    Manual,
    /// The scheduler's start: only while the flow is enabled and `next_run_at <= started_at`, and the
    /// claim moves `next_run_at` to this value in the same statement, so however many schedulers share
    /// the database, one slot starts one run.
    Due {
        /// The flow's next run time after this one; `None` when its schedule has no next time.
        next_run_at: Option<DateTime<Utc>>,
    },
    /// The scheduler's start of a pending retry: only while the flow is enabled and its `retry_at <=
    /// started_at`; the claim clears the pending retry in the same statement and leaves the schedule alone.
    Retry,
}

/// The scheduled starts of several due flows, claimed together by [`RunRepository::start_due_runs`].
///
/// Every run of the batch starts at the same time with the same lease, as trigger
/// [`Trigger::Schedule`](crate::model::Trigger::Schedule) and attempt 1: exactly what a
/// [`Claim::Due`] [`StartRun`] of each flow records.
#[derive(Debug, Clone, PartialEq)]
pub struct DueBatch {
    /// The time the starts were asked for, from the [`Clock`]; as for [`StartRun::started_at`], an adapter
    /// given the clock moves it (and the lease) later by the time the claim waited.
    pub started_at: DateTime<Utc>,
    /// Who runs them.
    pub lease_owner: LeaseOwner,
    /// Until when each run counts as alive without renewal.
    pub lease_expires_at: DateTime<Utc>,
    /// The flows to claim, each with the `next_run_at` its claim stores; at most one entry per flow.
    pub flows: Vec<DueStart>,
}

/// One flow of a [`DueBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueStart {
    /// The flow.
    pub data_flow_id: DataFlowId,
    /// Its next run time after this one; `None` when its schedule has no next time.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// The run that holds a flow, reported when another start is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveRun {
    /// The live run.
    pub run_id: RunId,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When its lease expires unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// Why a run was not started. No run row exists in any of these cases.
#[derive(Debug, Error)]
pub enum StartRunError {
    /// Another run of the flow holds it.
    #[error("already running since {} (run {})", .0.started_at.to_rfc3339(), .0.run_id)]
    Busy(ActiveRun),
    /// A [`Claim::Due`] or [`Claim::Retry`] start, and the flow is disabled or not due (another scheduler
    /// took this slot).
    #[error("not due")]
    NotDue,
    /// The flow does not exist (any more).
    #[error("the data flow does not exist")]
    FlowNotFound,
    /// Storage failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Why a run's end was not recorded.
#[derive(Debug, Error)]
pub enum FinishRunError {
    /// The run is no longer `in_progress` — it was reaped after its lease expired, or finished already.
    /// Nothing was written.
    #[error(
        "run {run_id} is no longer in progress (it was closed as {status}); its outcome was not recorded"
    )]
    NotInProgress {
        /// The run.
        run_id: RunId,
        /// Its status as stored now (`failed` after a reap).
        status: String,
    },
    /// Storage failed; nothing was written.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Which runs to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// Only this flow's runs.
    pub data_flow_id: Option<DataFlowId>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only failed runs of this kind.
    pub failure_kind: Option<FailureKind>,
    /// At most this many, newest first.
    pub limit: u64,
}

/// What [`RunRepository::request_cancel`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The request is recorded on the running run (or was already: the first request stands); the process
    /// running it stops it at its next check.
    Requested(CancelRequest),
    /// The run has already ended, with this status; nothing was written.
    AlreadyEnded(RunStatus),
    /// There is no such run.
    NotFound,
}

/// A run with its flow's name, as read for people.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The run.
    pub run: DataFlowRun,
    /// The name of the flow it belongs to.
    pub flow_name: String,
}

/// What [`DataFlowRepository::update`] changes; `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowChanges {
    /// New free text.
    pub description: Option<String>,
    /// New configuration (already validated by building it).
    pub configuration: Option<serde_json::Value>,
    /// New schedule with the next run time it gives.
    pub schedule: Option<ScheduleChange>,
    /// New run timeout (`Some(None)`: no limit).
    pub timeout: Option<Option<crate::model::Timeout>>,
    /// New retry policy (a retry already pending stays pending).
    pub retry: Option<crate::model::RetryPolicy>,
}

/// A new schedule and the `next_run_at` stored with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleChange {
    /// The schedule.
    pub schedule: crate::schedule::Schedule,
    /// When the flow is next due under it; `None` when it has no next time.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// Which runs [`RunRepository::prune`] deletes.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneRuns {
    /// Only runs that started before this time.
    pub started_before: DateTime<Utc>,
    /// Keep the newest this many finished runs of each flow (by `started_at`, then id), whatever their age.
    pub keep_last: Option<u64>,
    /// Only this flow's runs.
    pub data_flow_id: Option<DataFlowId>,
}

/// Stores runs. Each method is one transaction in the adapter.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait RunRepository: Send + Sync {
    /// Starts a run, in one transaction: claims the flow (refusing if a run holds it, or if it is not due
    /// for a [`Claim::Due`] start, which also moves its `next_run_at`), inserts the run as `pending` with `started_at`, moves it to
    /// `in_progress` and marks it as the flow's active run. Returns the run as stored (`in_progress`).
    ///
    /// MUST return [`StartRunError::Busy`] when another run holds the flow (even one whose lease expired and
    /// that was not reaped yet), [`StartRunError::NotDue`] or [`StartRunError::FlowNotFound`] — all
    /// without writing anything.
    async fn start_run(&self, request: StartRun) -> Result<DataFlowRun, StartRunError>;

    /// Starts the scheduled runs of many due flows at once, in one transaction: claims every flow of the
    /// batch that is still claimable as a [`Claim::Due`] start would (enabled, `next_run_at <=
    /// started_at`, no run holding it), moving its `next_run_at` to the batch's value, and records each
    /// claimed flow's run exactly as [`RunRepository::start_run`] does (`pending`, then `in_progress`, the
    /// flow's active run). Returns the runs started, in the batch's order.
    ///
    /// A flow that cannot be claimed (another process took it, it is running, disabled, not due or gone) is
    /// left untouched and simply has no run in the answer. MUST NOT give a flow to two callers however many
    /// call at once, and MUST NOT wait for another caller's claim of the same flows (where the database has
    /// row locks, a flow locked by another claim is skipped). On an error nothing is written.
    async fn start_due_runs(&self, batch: DueBatch) -> Result<Vec<DataFlowRun>, RepositoryError>;

    /// Records a run's end, in one transaction: the run (status, `ended_at`, error, output) only if it is
    /// still `in_progress`, and the flow's `last_run_at`/`last_run_status`, pending retry (the outcome's, or
    /// none) and, when the outcome carries one, its new state, releasing the flow.
    ///
    /// MUST return [`FinishRunError::NotInProgress`], writing nothing, when the run was reaped or finished.
    async fn finish_run(
        &self,
        run_id: RunId,
        data_flow_id: DataFlowId,
        outcome: RunOutcome,
    ) -> Result<(), FinishRunError>;

    /// Extends the lease of an `in_progress` run. Returns `false` if the run is no longer in progress.
    async fn renew_lease(&self, run_id: RunId, expires_at: DateTime<Utc>) -> Result<bool, RepositoryError>;

    /// Closes as `failed` every `in_progress` run whose lease expired before `now` (only those of one flow
    /// when `data_flow_id` is set), each in its own guarded transaction, and releases their flows. Returns
    /// the runs closed by this call.
    async fn reap_expired(
        &self,
        now: DateTime<Utc>,
        data_flow_id: Option<DataFlowId>,
    ) -> Result<Vec<DataFlowRun>, RepositoryError>;

    /// Records a request to cancel a run, if it is still running (`pending` or `in_progress`). A second
    /// request leaves the first in place.
    ///
    /// MUST return [`CancelOutcome::AlreadyEnded`] for a finished run and [`CancelOutcome::NotFound`] for
    /// an unknown id, writing nothing.
    async fn request_cancel(
        &self,
        run_id: RunId,
        by: String,
        at: DateTime<Utc>,
    ) -> Result<CancelOutcome, RepositoryError>;

    /// The cancel request recorded on a run, if any: what the process running it polls.
    async fn cancel_request(&self, run_id: RunId) -> Result<Option<CancelRequest>, RepositoryError>;

    /// Replaces the output of a run that is still `in_progress` with `output` (its whole output so far),
    /// so others can follow a long run. Returns whether the run was in progress; an ended run keeps the
    /// output recorded with its end.
    async fn record_output(&self, run_id: RunId, output: &str) -> Result<bool, RepositoryError>;

    /// A run with its flow's name.
    async fn find_run(&self, id: RunId) -> Result<Option<RunRecord>, RepositoryError>;

    /// Runs matching the filter, newest first.
    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>, RepositoryError>;

    /// How many runs a flow has, in any status.
    async fn count_runs(&self, data_flow_id: DataFlowId) -> Result<u64, RepositoryError>;

    /// Deletes the finished runs (`success`, `failed`) that `request` selects and returns how many it
    /// deleted.
    ///
    /// MUST NOT delete a run that is `pending` or `in_progress`, nor a flow's active run, whatever its age.
    /// MUST delete in bounded batches, each its own short transaction, so that pruning a huge history never
    /// holds locks that running flows wait for; an error after some batches leaves those deleted.
    async fn prune(&self, request: PruneRuns) -> Result<u64, RepositoryError>;
}

/// The message recorded on a run closed by the reaper.
pub fn abandoned_message(
    owner: Option<&str>,
    lease_expired_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> String {
    let owner = owner.unwrap_or("an unknown process");
    match lease_expired_at {
        Some(at) => format!(
            "run abandoned: its lease held by {owner} expired at {} and was not renewed; closed by the reaper at {}",
            at.to_rfc3339(),
            now.to_rfc3339()
        ),
        None => format!(
            "run abandoned: held by {owner} without a lease; closed by the reaper at {}",
            now.to_rfc3339()
        ),
    }
}
