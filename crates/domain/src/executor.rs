//! The FlowExecutor use case: one entry point that runs a data flow and records every step of it.

use std::fmt;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration as StdDuration;

use chrono::{DateTime, TimeDelta, Utc};
use thiserror::Error;
use tracing::{Instrument, info_span, warn};

use crate::context::{RunContext, RunOutput, RunProgress};
use crate::duration::format_duration;
use crate::flow::FlowError;
use crate::lease_keeper::{Kept, LeaseKeeper};
use crate::model::{
    CancelRequest, DataFlow, DataFlowRun, FailureKind, LeaseOwner, RunId, RunOutcome, Trigger,
};
use crate::observer::{NoopObserver, RunObserver, notify};
use crate::panic::{CatchPanic, catch};
use crate::ports::{
    Claim, Clock, DueBatch, DueStart, FinishRunError, RepositoryError, RunRepository, StartRun, StartRunError,
};
use crate::registry::FlowRegistry;
use crate::shutdown::{Phase, ShutdownSignal};
use crate::trace::{FlowTrace, flow_boundary};

/// The first pause before recording a run's end again after a transient database error; it doubles up
/// to [`RECORD_RETRY_MAX_DELAY`].
const RECORD_RETRY_FIRST_DELAY: StdDuration = StdDuration::from_millis(50);
const RECORD_RETRY_MAX_DELAY: StdDuration = StdDuration::from_secs(5);

/// How often a running flow's process asks the database whether someone asked to cancel the run.
const CANCEL_POLL: StdDuration = StdDuration::from_secs(2);

/// How often a running flow's output so far is written to its run, when it has written something new.
const OUTPUT_FLUSH_EVERY: StdDuration = StdDuration::from_secs(2);

/// How long a flow asked to stop (timeout, cancel, shutdown) may take to return before it is dropped.
pub const DEFAULT_STOP_GRACE: StdDuration = StdDuration::from_secs(5);

/// How long a run's lease lasts unless renewed, and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The lease length. While the flow runs, the executor starts a renewal once a third of this has passed
    /// since the last one started (it looks at least every twelfth), so a live run has more than half of it
    /// left whenever a renewal begins.
    pub duration: StdDuration,
    /// Recorded on the run for the operator (host and process id).
    pub owner: LeaseOwner,
}

impl LeaseSettings {
    /// The lease length used when none is configured: long enough that a database hiccup of a few seconds
    /// does not make a live run look dead, short enough that a crashed run frees its flow within a minute.
    pub const DEFAULT_DURATION: StdDuration = StdDuration::from_secs(60);

    /// A lease of the default length held by `owner`.
    pub fn new(owner: LeaseOwner) -> Self {
        Self {
            duration: Self::DEFAULT_DURATION,
            owner,
        }
    }

    /// The longest lease accepted: a day. Renewals come every third of it, so a longer lease would only
    /// delay the reaping of a crashed run.
    pub const MAX_DURATION: StdDuration = StdDuration::from_secs(86_400);

    fn delta(&self) -> TimeDelta {
        TimeDelta::from_std(self.duration.min(Self::MAX_DURATION)).unwrap_or(TimeDelta::MAX)
    }

    /// When a lease taken at `now` expires; the end of the calendar if that is beyond it, so no setting
    /// can make the arithmetic overflow.
    pub(crate) fn expiry(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_add_signed(self.delta())
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn renew_every(&self) -> StdDuration {
        (self.duration.min(Self::MAX_DURATION) / 3).max(StdDuration::from_millis(10))
    }
}

/// A flow's panic, caught and recorded: its message, where it happened and the backtrace at that point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowPanic {
    /// The panic message.
    pub message: String,
    /// `file:line:column` of the panic.
    pub location: Option<String>,
    /// The flow's frames of the stack at the panic site; `None` when another panic hook replaced
    /// flowrun's after the executor started, so the panic was never seen with its stack.
    pub backtrace: Option<FlowTrace>,
}

/// Why a flow's run failed: an error (from the flow, or from building it) or a panic.
#[derive(Debug)]
pub enum FlowFailure {
    /// The flow returned an error, or could not be built (then the error is a
    /// [`BuildFlowError`](crate::registry::BuildFlowError) or a
    /// [`ConfigurationError`](crate::model::ConfigurationError)).
    Error(FlowError),
    /// The flow panicked.
    Panic(FlowPanic),
    /// The process was stopped (shut down after its grace period, or Ctrl-C) before the flow finished; the
    /// flow was dropped.
    Interrupted,
    /// The flow ran past its flow's timeout and was dropped.
    TimedOut(StdDuration),
    /// Someone asked to cancel the run; the flow was dropped.
    Cancelled(CancelRequest),
}

impl FlowFailure {
    /// The text recorded as the run's `error_message`.
    pub fn message(&self) -> String {
        match self {
            Self::Error(error) => error.to_string(),
            Self::Panic(panic) => format!("flow panicked: {}", panic.message),
            Self::Interrupted => {
                "interrupted: the process running the flow was stopped before the flow finished \
                 (a server stops its flows once its shutdown grace period has run out)"
                    .to_owned()
            }
            Self::TimedOut(after) => {
                format!(
                    "timed out: the flow was stopped after {}",
                    format_duration(*after)
                )
            }
            Self::Cancelled(request) => format!(
                "cancelled by {} at {}",
                request.by,
                request.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        }
    }

    /// Why the run failed, as recorded on it.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Error(_) => FailureKind::Error,
            Self::Panic(_) => FailureKind::Panic,
            Self::Interrupted => FailureKind::Interrupted,
            Self::TimedOut(_) => FailureKind::Timeout,
            Self::Cancelled(_) => FailureKind::Cancelled,
        }
    }

    /// The text recorded as the run's `error_backtrace`.
    pub fn report(&self) -> String {
        match self {
            Self::Error(error) => error.report(),
            Self::Panic(panic) => {
                let location = panic.location.as_deref().unwrap_or("unknown");
                let backtrace = match &panic.backtrace {
                    Some(trace) => trace.to_string(),
                    None => "none: another panic hook replaced flowrun's".to_owned(),
                };
                format!(
                    "Panic: {}\n\nLocation: {location}\n\nBacktrace:\n{backtrace}",
                    panic.message
                )
            }
            Self::Interrupted | Self::TimedOut(_) | Self::Cancelled(_) => self.message(),
        }
    }
}

impl fmt::Display for FlowFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

fn describe(failure: &Option<FlowFailure>) -> String {
    match failure {
        None => "succeeded".to_owned(),
        Some(failure) => format!("failed ({failure})"),
    }
}

/// Why [`FlowExecutor::execute`] did not end in a successful, recorded run.
///
/// Variants before [`ExecuteError::Failed`] mean no run row was created. From `Failed` on, the run exists;
/// the flow's own error is always handed back, whatever happened to the recording.
#[derive(Debug, Error)]
pub enum ExecuteError {
    /// Another live run holds the flow; nothing was written.
    #[error("data flow `{flow}` is already running since {} (run {run_id})", since.to_rfc3339())]
    AlreadyRunning {
        /// The flow.
        flow: String,
        /// The live run.
        run_id: RunId,
        /// When it started.
        since: DateTime<Utc>,
    },
    /// Only for scheduled execution: the flow ran within its interval; nothing was written.
    #[error("data flow `{flow}` is not due")]
    NotDue {
        /// The flow.
        flow: String,
    },
    /// The process is shutting down and starts no new execution; nothing was written.
    #[error("data flow `{flow}` was not started: the process is shutting down")]
    ShuttingDown {
        /// The flow.
        flow: String,
    },
    /// The flow was deleted; nothing was written.
    #[error("data flow `{flow}` does not exist")]
    FlowNotFound {
        /// The flow.
        flow: String,
    },
    /// The run could not be created; nothing was written.
    #[error("could not start a run of data flow `{flow}`: {source}")]
    Start {
        /// The flow.
        flow: String,
        /// The storage failure.
        #[source]
        source: RepositoryError,
    },
    /// The flow failed and the failure was recorded on the run and the flow.
    #[error("{failure}")]
    Failed {
        /// The run as recorded (`failed`).
        run: Box<DataFlowRun>,
        /// The flow's own error or panic.
        failure: FlowFailure,
    },
    /// The run ended but its end could not be recorded. Carries the flow's failure, if any, as well.
    #[error("run {run_id} {}, but recording that failed: {source}", describe(failure))]
    Record {
        /// The run, which stays `in_progress` until it is reaped.
        run_id: RunId,
        /// The flow's failure, if it failed.
        failure: Option<FlowFailure>,
        /// Why recording failed.
        #[source]
        source: RepositoryError,
    },
    /// The run was reaped (its lease expired while this process stalled) before it ended; its late outcome
    /// was refused and not written.
    #[error(
        "run {run_id} {} after it had been closed as abandoned; the late outcome was not recorded",
        describe(failure)
    )]
    Superseded {
        /// The run, as the reaper closed it.
        run_id: RunId,
        /// The flow's failure, if it failed.
        failure: Option<FlowFailure>,
    },
}

/// Why [`FlowExecutor::claim_due_batch`] started nothing.
#[derive(Debug, Error)]
pub enum ClaimBatchError {
    /// The process is shutting down and starts no new execution; nothing was written.
    #[error("the due flows were not started: the process is shutting down")]
    ShuttingDown,
    /// The runs could not be created; nothing was written.
    #[error("could not start the runs of the due flows: {0}")]
    Start(#[source] RepositoryError),
}

impl ExecuteError {
    /// The flow's failure, whichever way it was (or was not) recorded.
    pub fn failure(&self) -> Option<&FlowFailure> {
        match self {
            Self::Failed { failure, .. } => Some(failure),
            Self::Record { failure, .. } | Self::Superseded { failure, .. } => failure.as_ref(),
            _ => None,
        }
    }

    /// The flow's own error, if it returned one; downcast it to its type with [`FlowError::downcast_ref`].
    pub fn flow_error(&self) -> Option<&FlowError> {
        match self.failure() {
            Some(FlowFailure::Error(error)) => Some(error),
            _ => None,
        }
    }

    /// The flow's own error, by value.
    pub fn into_flow_error(self) -> Option<FlowError> {
        let failure = match self {
            Self::Failed { failure, .. } => Some(failure),
            Self::Record { failure, .. } | Self::Superseded { failure, .. } => failure,
            _ => None,
        };
        match failure {
            Some(FlowFailure::Error(error)) => Some(error),
            _ => None,
        }
    }

    /// The id of the run this execution created, if it created one.
    pub fn run_id(&self) -> Option<RunId> {
        match self {
            Self::Failed { run, .. } => Some(run.id),
            Self::Record { run_id, .. } | Self::Superseded { run_id, .. } => Some(*run_id),
            _ => None,
        }
    }
}

/// Executes data flows and records each execution as a [`DataFlowRun`].
///
/// The service holds the ports; [`FlowExecutor::execute`] is the single entry point. Each call creates a
/// private per-execution instance that walks the lifecycle: run `pending` with `started_at`, then
/// `in_progress`; build the flow from its class and whole configuration; `run` it; record `success` or
/// `failed` on the run and the flow together; hand the flow's error back.
#[derive(Clone)]
pub struct FlowExecutor {
    runs: Arc<dyn RunRepository>,
    registry: Arc<dyn FlowRegistry>,
    clock: Arc<dyn Clock>,
    lease: LeaseSettings,
    keeper: Arc<LeaseKeeper>,
    shutdown: ShutdownSignal,
    stop_grace: StdDuration,
    observer: Arc<dyn RunObserver>,
    progress: Option<RunProgress>,
}

impl fmt::Debug for FlowExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowExecutor")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl FlowExecutor {
    /// An executor over these ports.
    pub fn new(
        runs: Arc<dyn RunRepository>,
        registry: Arc<dyn FlowRegistry>,
        clock: Arc<dyn Clock>,
        lease: LeaseSettings,
    ) -> Self {
        let keeper = LeaseKeeper::new(
            Arc::clone(&runs),
            Arc::clone(&clock),
            lease.delta(),
            lease.renew_every(),
        );
        Self {
            runs,
            registry,
            clock,
            lease,
            keeper,
            shutdown: ShutdownSignal::never(),
            stop_grace: DEFAULT_STOP_GRACE,
            observer: Arc::new(NoopObserver),
            progress: None,
        }
    }

    /// Makes every run's flow report its progress ([`RunContext::report_progress`]) into `progress`, for a
    /// caller that runs one flow at a time and shows how far it has come (`flowrun run` on a terminal).
    pub fn with_progress(mut self, progress: RunProgress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Makes executions report to `observer` (metrics, notifications): each run's start, and its end once
    /// the end has been recorded (see [`RunObserver`]). Schedulers built on this executor report their
    /// cycles to it too. The default observer does nothing.
    pub fn with_observer(mut self, observer: Arc<dyn RunObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The observer this executor reports to.
    pub fn observer(&self) -> &Arc<dyn RunObserver> {
        &self.observer
    }

    /// Sets how long a flow asked to stop (its timeout, a cancel request, shutdown) may take to return
    /// after its [`RunContext::cancelled`] fires before it is dropped (default [`DEFAULT_STOP_GRACE`]).
    pub fn with_stop_grace(mut self, grace: StdDuration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Whether this executor ever started its lease-renewal task.
    #[cfg(test)]
    pub(crate) fn renewal_task_started(&self) -> bool {
        self.keeper.started()
    }

    /// Makes executions follow `shutdown`: none starts once it is draining, and running flows are
    /// interrupted (and recorded as failed) once it aborts.
    pub fn with_shutdown(mut self, shutdown: ShutdownSignal) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Executes `data_flow` now and returns its finished run (`success`).
    ///
    /// Every failure after the run row exists is recorded as a `failed` run and returned as
    /// [`ExecuteError::Failed`] carrying the flow's own error (or panic). Refuses with
    /// [`ExecuteError::AlreadyRunning`], writing nothing, while another live run holds the flow.
    pub async fn execute(&self, data_flow: &DataFlow) -> Result<DataFlowRun, ExecuteError> {
        Execution::new(self, data_flow, Claim::Manual, Trigger::Manual, 1)
            .execute()
            .await
    }

    /// Like [`FlowExecutor::execute`], for the scheduler: refuses with [`ExecuteError::NotDue`], writing
    /// nothing, unless the flow is still due as stored (another process may have just taken this slot).
    pub async fn execute_if_due(&self, data_flow: &DataFlow) -> Result<DataFlowRun, ExecuteError> {
        self.claim_due(data_flow).await?.finish().await
    }

    /// The scheduler's first half of [`FlowExecutor::execute_if_due`]: claims the due flow, moves its
    /// `next_run_at` to the schedule's next slot and records the run `in_progress`, without running the
    /// flow. The caller then runs it with [`ClaimedRun::finish`] (typically on a task of its own, so that the
    /// loop that claims work never waits for the work). A claimed run that is dropped unfinished stays
    /// `in_progress` until its lease expires and it is reaped.
    pub async fn claim_due(&self, data_flow: &DataFlow) -> Result<ClaimedRun, ExecuteError> {
        let now = self.clock.now();
        let slot = data_flow.next_run_at.unwrap_or(now);
        let next_run_at = data_flow.schedule.next_run_after(slot, now);
        if next_run_at.is_none() {
            warn!(flow = %data_flow.name, schedule = %data_flow.schedule,
                "the schedule has no time after this run; the flow will not be due again until it is changed");
        }
        self.claim(data_flow, Claim::Due { next_run_at }, Trigger::Schedule, 1)
            .await
    }

    /// [`FlowExecutor::claim_due`] for many due flows at once: claims every one still due in one
    /// repository call ([`RunRepository::start_due_runs`]), moving each flow's `next_run_at` to its
    /// schedule's next slot and recording its run `in_progress`. Returns the claimed runs, in the order of
    /// `flows`; a flow another process took (or that is running, disabled or gone) has none. Nothing is
    /// written on an error.
    pub async fn claim_due_batch(&self, flows: &[DataFlow]) -> Result<Vec<ClaimedRun>, ClaimBatchError> {
        if self.shutdown.phase() != Phase::Running {
            return Err(ClaimBatchError::ShuttingDown);
        }
        let leased_at = tokio::time::Instant::now();
        let now = self.clock.now();
        let batch = DueBatch {
            started_at: now,
            lease_owner: self.lease.owner.clone(),
            lease_expires_at: self.lease.expiry(now),
            flows: flows
                .iter()
                .map(|flow| {
                    let next_run_at = flow.schedule.next_run_after(flow.next_run_at.unwrap_or(now), now);
                    if next_run_at.is_none() {
                        warn!(flow = %flow.name, schedule = %flow.schedule,
                            "the schedule has no time after this run; the flow will not be due again until it is changed");
                    }
                    DueStart {
                        data_flow_id: flow.id,
                        next_run_at,
                    }
                })
                .collect(),
        };
        let runs = self
            .runs
            .start_due_runs(batch)
            .await
            .map_err(ClaimBatchError::Start)?;
        let by_flow: std::collections::HashMap<_, _> = flows.iter().map(|flow| (flow.id, flow)).collect();
        Ok(runs
            .into_iter()
            .filter_map(|run| {
                let flow = by_flow.get(&run.data_flow_id)?;
                Some(ClaimedRun {
                    executor: self.clone(),
                    data_flow: (*flow).clone(),
                    run,
                    leased_at,
                })
            })
            .collect())
    }

    /// Like [`FlowExecutor::claim_due`], for a flow whose pending retry is due: claims it as a
    /// [`Claim::Retry`], clearing the pending retry, and records the run as that retry's attempt.
    pub async fn claim_retry(&self, data_flow: &DataFlow) -> Result<ClaimedRun, ExecuteError> {
        let attempt = data_flow.pending_retry.map_or(2, |retry| retry.attempt);
        self.claim(data_flow, Claim::Retry, Trigger::Retry, attempt).await
    }

    /// Like [`FlowExecutor::claim_due`], for a run started now whatever the schedule says (an API call):
    /// claims the flow if no run holds it and records the run `in_progress` with `trigger`, leaving the
    /// schedule alone.
    pub async fn claim_now(
        &self,
        data_flow: &DataFlow,
        trigger: Trigger,
    ) -> Result<ClaimedRun, ExecuteError> {
        self.claim(data_flow, Claim::Manual, trigger, 1).await
    }

    async fn claim(
        &self,
        data_flow: &DataFlow,
        claim: Claim,
        trigger: Trigger,
        attempt: u32,
    ) -> Result<ClaimedRun, ExecuteError> {
        let leased_at = tokio::time::Instant::now();
        let run = Execution::new(self, data_flow, claim, trigger, attempt)
            .start()
            .await?;
        Ok(ClaimedRun {
            executor: self.clone(),
            data_flow: data_flow.clone(),
            run,
            leased_at,
        })
    }

    /// The registry the executor builds flows from.
    pub fn registry(&self) -> &dyn FlowRegistry {
        self.registry.as_ref()
    }
}

/// Seed criterion 6.2 (execution logic in private methods), checked by this doctest: the per-execution type
/// and its steps cannot be reached from outside the crate, so this does not compile.
///
/// ```compile_fail
/// let _ = flowrun_domain::executor::Execution::start;
/// ```
///
/// The public entry point, by contrast, is reachable:
///
/// ```
/// let _ = flowrun_domain::FlowExecutor::execute;
/// ```
#[doc(hidden)]
#[allow(non_camel_case_types)]
pub enum Req6_2_execution_steps_are_private {}

/// Seed criterion 6.3 (no internal details exposed), checked by this doctest: the executor's ports are not
/// reachable through it, so this does not compile.
///
/// ```compile_fail
/// fn peek(executor: &flowrun_domain::FlowExecutor) {
///     let _ = &executor.runs;
/// }
/// ```
///
/// What it does expose is the registry it builds flows from:
///
/// ```
/// fn peek(executor: &flowrun_domain::FlowExecutor) -> Vec<String> {
///     executor.registry().class_names()
/// }
/// ```
#[doc(hidden)]
#[allow(non_camel_case_types)]
pub enum Req6_3_internals_are_not_exposed {}

/// A run the scheduler claimed and recorded `in_progress` whose flow has not run yet: see
/// [`FlowExecutor::claim_due`]. Owns what it needs, so it can be moved to a task of its own.
#[derive(Debug)]
pub struct ClaimedRun {
    executor: FlowExecutor,
    data_flow: DataFlow,
    run: DataFlowRun,
    leased_at: tokio::time::Instant,
}

impl ClaimedRun {
    /// The run as recorded when it was claimed (`in_progress`).
    pub fn run(&self) -> &DataFlowRun {
        &self.run
    }

    /// The flow it runs.
    pub fn data_flow(&self) -> &DataFlow {
        &self.data_flow
    }

    /// Builds and runs the flow and records its end, as [`FlowExecutor::execute`] does after the start.
    pub async fn finish(self) -> Result<DataFlowRun, ExecuteError> {
        let execution = Execution::new(
            &self.executor,
            &self.data_flow,
            Claim::Manual,
            self.run.trigger,
            self.run.attempt,
        );
        let span = info_span!("flow_run", flow = %self.data_flow.name, run_id = self.run.id.0);
        execution
            .run_and_record(self.run, self.leased_at)
            .instrument(span)
            .await
    }
}

/// One execution of one flow: the instance the seed's class method creates.
struct Execution<'a> {
    executor: &'a FlowExecutor,
    data_flow: &'a DataFlow,
    claim: Claim,
    trigger: Trigger,
    attempt: u32,
}

impl<'a> Execution<'a> {
    fn new(
        executor: &'a FlowExecutor,
        data_flow: &'a DataFlow,
        claim: Claim,
        trigger: Trigger,
        attempt: u32,
    ) -> Self {
        Self {
            executor,
            data_flow,
            claim,
            trigger,
            attempt,
        }
    }

    async fn execute(self) -> Result<DataFlowRun, ExecuteError> {
        let span = info_span!("flow_run", flow = %self.data_flow.name, run_id = tracing::field::Empty);
        async {
            // No later than the lease's start, so renewals are never late.
            let leased_at = tokio::time::Instant::now();
            let run = self.start().await?;
            tracing::Span::current().record("run_id", run.id.0);
            self.run_and_record(run, leased_at).await
        }
        .instrument(span)
        .await
    }

    /// Runs the started flow and records its end, keeping the run's lease (taken at `leased_at`) alive for
    /// both: a recording that has to wait for the database must not let the run look abandoned.
    async fn run_and_record(
        &self,
        run: DataFlowRun,
        leased_at: tokio::time::Instant,
    ) -> Result<DataFlowRun, ExecuteError> {
        // Before the build: a slow constructor is as much the run's time as the flow itself.
        let lease = self.executor.keeper.keep(run.id, leased_at);
        let mut context = RunContext::new(
            run.id,
            run.attempt,
            self.data_flow.name.clone(),
            run.trigger,
            self.data_flow.state.clone(),
        );
        if let Some(progress) = &self.executor.progress {
            context = context.with_progress(progress.clone());
        }
        let observer = &self.executor.observer;
        notify("run_started", || observer.run_started(self.data_flow, &run));
        let result = self.run_flow(&mut context, &lease).await;
        let state = context.take_new_state();
        self.record(run, result, context.output().text(), state, &lease)
            .await
    }

    /// Creates the run (`pending`, then `in_progress`). A flow held by a run whose lease has expired is
    /// reaped first, so a crashed process never blocks a manual run for longer than its lease.
    async fn start(&self) -> Result<DataFlowRun, ExecuteError> {
        if self.executor.shutdown.phase() != Phase::Running {
            return Err(ExecuteError::ShuttingDown {
                flow: self.flow_name(),
            });
        }
        let runs = &self.executor.runs;
        let mut reaped_once = false;
        let mut attempts = 0;
        loop {
            let now = self.executor.clock.now();
            let request = StartRun {
                data_flow_id: self.data_flow.id,
                started_at: now,
                lease_owner: self.executor.lease.owner.clone(),
                lease_expires_at: self.executor.lease.expiry(now),
                claim: self.claim,
                trigger: self.trigger,
                attempt: self.attempt,
            };
            let active = match runs.start_run(request).await {
                Ok(run) => return Ok(run),
                Err(StartRunError::Busy(active)) => active,
                // For a manual start, "not due" means the holding run ended between the refused claim and
                // the read that explained it: the flow is free now, so claim again (a bounded number of times).
                Err(StartRunError::NotDue) if self.claim == Claim::Manual && attempts < 3 => {
                    attempts += 1;
                    continue;
                }
                Err(StartRunError::NotDue) => {
                    return Err(ExecuteError::NotDue {
                        flow: self.flow_name(),
                    });
                }
                Err(StartRunError::FlowNotFound) => {
                    return Err(ExecuteError::FlowNotFound {
                        flow: self.flow_name(),
                    });
                }
                Err(StartRunError::Repository(source)) => {
                    return Err(ExecuteError::Start {
                        flow: self.flow_name(),
                        source,
                    });
                }
            };
            let expired = active.lease_expires_at.is_none_or(|at| at < now);
            if reaped_once || !expired {
                return Err(ExecuteError::AlreadyRunning {
                    flow: self.flow_name(),
                    run_id: active.run_id,
                    since: active.started_at,
                });
            }
            reaped_once = true;
            runs.reap_expired(now, Some(self.data_flow.id))
                .await
                .map_err(|source| ExecuteError::Start {
                    flow: self.flow_name(),
                    source,
                })?;
        }
    }

    /// Builds the flow and runs it while `renewal` keeps the run's lease alive.
    ///
    /// The lease's renewal timer is armed only once the flow yields, so a flow that finishes within its first
    /// poll (nothing to do, a quick failure) never arms one (see `lease_keeper`). A flow that must stop from
    /// outside gets its context's cancellation first and the executor's stop grace to return; then it is
    /// dropped. Either way the run ends as what stopped it.
    async fn run_flow(&self, context: &mut RunContext, renewal: &Kept) -> Result<(), FlowFailure> {
        let began = tokio::time::Instant::now();
        let run_id = context.run_id();
        let class = self
            .data_flow
            .flow_class()
            .map_err(|error| FlowFailure::Error(FlowError::new(error)))?;
        let registry = &self.executor.registry;
        let mut flow = catch(|| {
            let mut built = None;
            flow_boundary(&mut || built = Some(registry.build(class, &self.data_flow.configuration)));
            built
        })
        .map_err(FlowFailure::Panic)?
        .ok_or_else(|| FlowFailure::Error(FlowError::msg("the flow's constructor did not return")))?
        .map_err(|error| FlowFailure::Error(FlowError::new(error)))?;
        let timeout = self.data_flow.timeout.map(|t| t.as_duration());
        let cancellation = context.cancellation();
        let output = context.output();
        let mut running = std::pin::pin!(CatchPanic::new(flow.run(context)));
        let mut aborted = std::pin::pin!(self.executor.shutdown.aborted());
        // The watches that stop a flow from outside, made only once the flow yields: a flow that ends in its
        // first poll never starts a timer or a query.
        let mut watches: Option<std::pin::Pin<Box<dyn Future<Output = FlowFailure> + Send + '_>>> = None;
        let ended = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = running.as_mut().poll(cx) {
                return Poll::Ready(Ok(result));
            }
            let watch = watches.get_or_insert_with(|| {
                renewal.arm();
                Box::pin(self.stopped_from_outside(run_id, began, timeout, output.clone()))
            });
            if let Poll::Ready(failure) = watch.as_mut().poll(cx) {
                return Poll::Ready(Err(failure));
            }
            aborted.as_mut().poll(cx).map(|()| Err(FlowFailure::Interrupted))
        })
        .await;
        let ended = match ended {
            Ok(ended) => ended,
            Err(stopped) => {
                cancellation.cancel();
                // What the flow returns now does not change why the run ended; the grace only lets it clean
                // up (kill its process, roll back) before it is dropped.
                let _ = tokio::time::timeout(self.executor.stop_grace, running.as_mut()).await;
                return Err(stopped);
            }
        };
        match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(FlowFailure::Error(error)),
            Err(panic) => Err(FlowFailure::Panic(panic)),
        }
    }

    /// Ends when the run must stop although its flow has not: its timeout (counted from `began`) has
    /// passed, or someone asked to cancel it (polled every [`CANCEL_POLL`]; a failed poll is tried again at
    /// the next one).
    ///
    /// Meanwhile the flow's output so far is written to the run every [`OUTPUT_FLUSH_EVERY`] when it has
    /// grown (a failed write is tried again at the next one; the whole output is recorded with the end).
    async fn stopped_from_outside(
        &self,
        run_id: RunId,
        began: tokio::time::Instant,
        timeout: Option<StdDuration>,
        output: RunOutput,
    ) -> FlowFailure {
        let deadline = async {
            match timeout.and_then(|t| began.checked_add(t)) {
                Some(at) => {
                    tokio::time::sleep_until(at).await;
                    timeout.unwrap_or_default()
                }
                None => std::future::pending().await,
            }
        };
        let cancelled = async {
            loop {
                tokio::time::sleep(CANCEL_POLL).await;
                if let Ok(Some(request)) = self.executor.runs.cancel_request(run_id).await {
                    return request;
                }
            }
        };
        tokio::select! {
            after = deadline => FlowFailure::TimedOut(after),
            request = cancelled => FlowFailure::Cancelled(request),
            never = self.flush_output(run_id, output) => match never {},
        }
    }

    /// Writes the run's output so far every [`OUTPUT_FLUSH_EVERY`] when it has grown; never ends.
    async fn flush_output(&self, run_id: RunId, output: RunOutput) -> std::convert::Infallible {
        let mut recorded = 0;
        loop {
            tokio::time::sleep(OUTPUT_FLUSH_EVERY).await;
            let written = output.written();
            if written != recorded
                && let Ok(true) = self.executor.runs.record_output(run_id, &output.text()).await
            {
                recorded = written;
            }
        }
    }

    /// Records the end on the run and the flow in one step, then hands the flow's failure back.
    ///
    /// A transient database error (connection lost, busy, deadlock) is retried with backoff while the lease
    /// is kept: the outcome is only given up once half a lease length has passed, before the run can have
    /// been reaped.
    async fn record(
        &self,
        run: DataFlowRun,
        result: Result<(), FlowFailure>,
        output: String,
        state: Option<serde_json::Value>,
        lease: &Kept,
    ) -> Result<DataFlowRun, ExecuteError> {
        let ended_at = self.executor.clock.now();
        let outcome = match &result {
            Ok(()) => RunOutcome::success(ended_at).with_state(state),
            Err(failure) => {
                // Errors, panics and timeouts are retried; a cancel or an interruption was someone's choice.
                let retry = matches!(
                    failure.kind(),
                    FailureKind::Error | FailureKind::Panic | FailureKind::Timeout
                )
                .then(|| {
                    self.data_flow
                        .retry
                        .after_failure(run.attempt, ended_at, run.id.0.unsigned_abs())
                })
                .flatten();
                RunOutcome::failure(ended_at, failure.message(), failure.report())
                    .of_kind(failure.kind())
                    .retried(retry)
            }
        }
        .with_output(output);
        let run_id = run.id;
        // Half a lease: the last renewal started at most a third of a lease ago, so the lease is still live
        // when the retries stop, and a refused retry (`NotInProgress`) can only mean a committed earlier try,
        // never a reaper's close.
        let give_up_at =
            tokio::time::Instant::now() + self.executor.lease.duration.min(LeaseSettings::MAX_DURATION) / 2;
        let mut delay = RECORD_RETRY_FIRST_DELAY;
        let mut retried = false;
        let recorded = loop {
            let attempt = self
                .executor
                .runs
                .finish_run(run_id, self.data_flow.id, outcome.clone())
                .await;
            match attempt {
                Err(FinishRunError::Repository(error))
                    if error.is_transient() && tokio::time::Instant::now() + delay < give_up_at =>
                {
                    warn!(%error, retry_in_ms = delay.as_millis() as u64,
                        "could not record the end of the run; trying again");
                    lease.arm();
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RECORD_RETRY_MAX_DELAY);
                    retried = true;
                }
                // The previous attempt was committed but its answer lost with the connection: the run holds
                // exactly this outcome's status already (a reaper never records a success, and a reaped run
                // would have needed this lease to lapse while it was being kept).
                Err(FinishRunError::NotInProgress { ref status, .. })
                    if retried && status == outcome.status.as_str() =>
                {
                    break Ok(());
                }
                other => break other,
            }
        };
        // After the end is written (or given up), so no observer can delay or change the record.
        let ended = run.finished(&outcome);
        let observer = &self.executor.observer;
        notify("run_ended", || {
            observer.run_ended(
                self.data_flow,
                &ended,
                self.data_flow.last_run_status,
                recorded.is_ok(),
            );
        });
        match (recorded, result) {
            (Ok(()), Ok(())) => Ok(ended),
            (Ok(()), Err(failure)) => {
                warn!(error = %failure, "flow failed");
                Err(ExecuteError::Failed {
                    run: Box::new(ended),
                    failure,
                })
            }
            (Err(FinishRunError::NotInProgress { .. }), result) => Err(ExecuteError::Superseded {
                run_id,
                failure: result.err(),
            }),
            (Err(FinishRunError::Repository(source)), result) => Err(ExecuteError::Record {
                run_id,
                failure: result.err(),
                source,
            }),
        }
    }

    fn flow_name(&self) -> String {
        self.data_flow.name.to_string()
    }
}
