//! The scheduler use case: claim the due flows and run each on a task of its own, under a per-process limit
//! of flows running at once.
//!
//! The loop that claims work never waits for the work: [`Scheduler::dispatch`] returns as soon as the due
//! flows it had room for are claimed and started, so a long flow holds only its own slot and never delays
//! the next cycle. [`Scheduler::run_cycle`] is the one-shot form for a process that is itself the runner
//! (`flowrun heartbeat`): it waits for a slot for every due flow and then for every run it started.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::executor::{ClaimBatchError, ClaimedRun, ExecuteError, FlowExecutor};
use crate::model::{DataFlow, DataFlowRun, FlowName, RunId, Trigger};
use crate::observer::notify;
use crate::ports::{Clock, DataFlowRepository, RepositoryError, RunRepository};

/// The most due flows one repository call claims: bounds the statements' size (each flow binds a few
/// values, and every backend caps the values of one statement) and the time a batch holds its rows.
const MAX_BATCH: usize = 500;

/// A run a cycle started, on its own task.
type RunTask = JoinHandle<Result<DataFlowRun, ExecuteError>>;

/// How a run started by a cycle ended, once it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Recorded `success`.
    Succeeded,
    /// Recorded `failed` with this message, or could not be recorded (then the message says so).
    Failed(String),
}

/// A run a cycle started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggeredRun {
    /// The flow.
    pub flow: FlowName,
    /// The run, recorded `in_progress` when the cycle started it.
    pub run_id: RunId,
    /// How it ended; `None` while it runs (a [`Scheduler::dispatch`] answers before its runs end).
    pub end: Option<RunEnd>,
}

/// What one cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReport {
    /// Flows found due when the cycle began.
    pub flows_due: usize,
    /// Runs this cycle started (a due flow another process claimed first, or left for a later cycle for
    /// want of a free slot, is not counted).
    pub flows_triggered: usize,
    /// Due flows whose run could not be started because of an error, plus started runs known to have
    /// failed (only [`Scheduler::run_cycle`] knows how its runs ended).
    pub flows_failed: usize,
    /// Abandoned runs closed at the start of the cycle.
    pub runs_reaped: usize,
    /// When the cycle began.
    pub timestamp: DateTime<Utc>,
    /// The runs started, in the order they were claimed.
    pub triggered: Vec<TriggeredRun>,
}

/// Why a cycle could not run at all. A single flow's failure is never one of these.
#[derive(Debug, Error)]
pub enum CycleError {
    /// Reaping or listing the due flows failed.
    #[error("the scheduler cycle could not read the due flows: {0}")]
    Repository(#[from] RepositoryError),
}

/// How the scheduler's cycles have been going, for health checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleHealth {
    /// When the last cycle that completed began.
    pub last_success: Option<DateTime<Utc>>,
    /// When the last failed cycle began, and why it failed.
    pub last_failure: Option<(DateTime<Utc>, String)>,
    /// Failed cycles since the last one that completed.
    pub consecutive_failures: u32,
}

/// Why [`Scheduler::start_now`] started nothing.
#[derive(Debug, Error)]
pub enum StartNowError {
    /// Every slot of this process is taken by a running flow.
    #[error("all {0} of this process's slots are running flows; try again when one ends")]
    NoFreeSlot(usize),
    /// The run could not be started (already running, deleted, shutting down, storage failed).
    #[error(transparent)]
    Execute(#[from] ExecuteError),
}

/// The runs a [`Scheduler::dispatch`] started, still running on their own tasks.
#[derive(Debug)]
pub struct Dispatch {
    /// The cycle's report, as of the moment every run was started.
    pub report: HeartbeatReport,
    running: Vec<(usize, RunTask)>,
}

impl Dispatch {
    /// Waits for every run this dispatch started and fills in how each ended.
    pub async fn wait(mut self) -> HeartbeatReport {
        for (index, handle) in self.running {
            let end = match handle.await {
                Ok(Ok(_)) => RunEnd::Succeeded,
                Ok(Err(error)) => RunEnd::Failed(error.to_string()),
                Err(join) => RunEnd::Failed(format!("the run's task ended abnormally: {join}")),
            };
            if matches!(end, RunEnd::Failed(_)) {
                self.report.flows_failed += 1;
            }
            if let Some(run) = self.report.triggered.get_mut(index) {
                run.end = Some(end);
            }
        }
        self.report
    }
}

/// Runs due flows through the [`FlowExecutor`], never one flow twice at once nor twice for one slot of its
/// schedule, however many schedulers share the database: each start is claimed atomically by the run
/// repository, which also moves the flow's `next_run_at`.
#[derive(Clone)]
pub struct Scheduler {
    flows: Arc<dyn DataFlowRepository>,
    runs: Arc<dyn RunRepository>,
    executor: FlowExecutor,
    clock: Arc<dyn Clock>,
    slots: Arc<Semaphore>,
    concurrency: usize,
    health: Arc<Mutex<CycleHealth>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("concurrency", &self.concurrency)
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Flows run at once by one process when not configured.
    pub const DEFAULT_CONCURRENCY: usize = 16;
    /// The most flows one process may be configured to run at once.
    pub const MAX_CONCURRENCY: usize = 10_000;

    /// A scheduler over these ports, running at most [`Scheduler::DEFAULT_CONCURRENCY`] flows at once.
    pub fn new(
        flows: Arc<dyn DataFlowRepository>,
        runs: Arc<dyn RunRepository>,
        executor: FlowExecutor,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            flows,
            runs,
            executor,
            clock,
            slots: Arc::new(Semaphore::new(Self::DEFAULT_CONCURRENCY)),
            concurrency: Self::DEFAULT_CONCURRENCY,
            health: Arc::default(),
        }
    }

    /// Sets how many flows this scheduler runs at once, clamped to `1..=MAX_CONCURRENCY`. Clones made
    /// afterwards share the slots.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.clamp(1, Self::MAX_CONCURRENCY);
        self.slots = Arc::new(Semaphore::new(self.concurrency));
        self
    }

    /// How many flows this scheduler runs at once at most.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// How many of its runs are running now.
    pub fn running(&self) -> usize {
        self.concurrency - self.slots.available_permits()
    }

    /// One cycle for a long-lived process: closes abandoned runs, claims as many due flows as there are
    /// free slots, starts each on a task of its own and returns at once. Due flows left for want of a slot
    /// stay due for the next cycle. One flow's failure never stops the others.
    #[tracing::instrument(skip(self))]
    pub async fn dispatch(&self) -> Result<Dispatch, CycleError> {
        self.cycle(false).await
    }

    /// One whole cycle for a one-shot process: like [`Scheduler::dispatch`], but waits for a free slot for
    /// every due flow, then for every run it started, and reports how each ended.
    #[tracing::instrument(skip(self))]
    pub async fn run_cycle(&self) -> Result<HeartbeatReport, CycleError> {
        Ok(self.cycle(true).await?.wait().await)
    }

    /// Starts `flow` now, whatever its schedule (a "run now" request): takes a free slot, claims the flow,
    /// records the run `in_progress` with `trigger` and runs it on a task of its own. Returns the run as
    /// recorded; it goes on after this returns.
    pub async fn start_now(&self, flow: &DataFlow, trigger: Trigger) -> Result<DataFlowRun, StartNowError> {
        let slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| StartNowError::NoFreeSlot(self.concurrency))?;
        let claimed = self.executor.claim_now(flow, trigger).await?;
        let run = claimed.run().clone();
        tokio::spawn(async move {
            let _slot = slot;
            claimed.finish().await
        });
        Ok(run)
    }

    /// Waits until none of this scheduler's runs is running.
    pub async fn wait_idle(&self) {
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        // The semaphore is never closed, so acquiring can only wait, not fail.
        let _all = self.slots.acquire_many(all).await;
    }

    /// How the cycles of this scheduler (and its clones) have been going.
    pub fn health(&self) -> CycleHealth {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Records a cycle that failed outside [`Scheduler::dispatch`]'s own error handling (a panic the
    /// caller caught), so health checks see it.
    pub fn note_failed_cycle(&self, reason: impl Into<String>) {
        self.note(Err(reason.into()), self.clock.now());
    }

    fn note(&self, result: Result<(), String>, at: DateTime<Utc>) {
        // A poisoned lock only means a panic while holding it; the data is plain values, still usable.
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match result {
            Ok(()) => {
                health.last_success = Some(at);
                health.consecutive_failures = 0;
            }
            Err(reason) => {
                health.last_failure = Some((at, reason));
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
            }
        }
    }

    /// Closes abandoned runs now; returns how many.
    pub async fn reap(&self) -> Result<usize, RepositoryError> {
        let reaped = self.runs.reap_expired(self.clock.now(), None).await?.len();
        self.reaped(reaped);
        Ok(reaped)
    }

    fn reaped(&self, count: usize) {
        if count > 0 {
            let observer = self.executor.observer();
            notify("runs_reaped", || observer.runs_reaped(count));
        }
    }

    async fn cycle(&self, wait_for_slots: bool) -> Result<Dispatch, CycleError> {
        let now = self.clock.now();
        let began = std::time::Instant::now();
        let result = self.claim_and_start(now, wait_for_slots).await;
        self.note(result.as_ref().map(|_| ()).map_err(ToString::to_string), now);
        let observer = self.executor.observer();
        let report = result.as_ref().ok().map(|dispatch| &dispatch.report);
        notify("cycle_finished", || {
            observer.cycle_finished(now, began.elapsed(), report);
        });
        result
    }

    async fn claim_and_start(
        &self,
        now: DateTime<Utc>,
        wait_for_slots: bool,
    ) -> Result<Dispatch, CycleError> {
        let reaped = self.runs.reap_expired(now, None).await?;
        self.reaped(reaped.len());
        for run in &reaped {
            warn!(
                run_id = run.id.0,
                flow_id = run.data_flow_id.0,
                "closed an abandoned run"
            );
        }
        let due = self.flows.list_due(now).await?;
        let mut report = HeartbeatReport {
            flows_due: due.len(),
            flows_triggered: 0,
            flows_failed: 0,
            runs_reaped: reaped.len(),
            timestamp: now,
            triggered: Vec::new(),
        };
        let mut running = Vec::new();
        let mut due = std::collections::VecDeque::from(due);
        while !due.is_empty() {
            let Some(first) = self.slot(wait_for_slots).await else {
                info!("no free slot: the remaining due flows wait for the next cycle");
                break;
            };
            let mut slots = vec![first];
            while slots.len() < due.len().min(MAX_BATCH) {
                match Arc::clone(&self.slots).try_acquire_owned() {
                    Ok(slot) => slots.push(slot),
                    Err(_) => break,
                }
            }
            let chunk: Vec<DataFlow> = due.drain(..slots.len()).collect();
            // A pending retry's claim differs (it clears the retry, keeps the schedule) and is rare: one by
            // one. Scheduled slots are claimed together when there are several.
            let (retries, mut scheduled): (Vec<DataFlow>, Vec<DataFlow>) = chunk
                .into_iter()
                .partition(|flow| flow.pending_retry.is_some_and(|retry| retry.at <= now));
            for flow in retries {
                if let Some(slot) = slots.pop() {
                    self.start_one(flow, true, slot, &mut report, &mut running).await;
                }
            }
            if scheduled.len() == 1 {
                if let (Some(flow), Some(slot)) = (scheduled.pop(), slots.pop()) {
                    self.start_one(flow, false, slot, &mut report, &mut running).await;
                }
            } else if !scheduled.is_empty() {
                self.start_batch(&scheduled, &mut slots, &mut report, &mut running)
                    .await;
            }
            // Slots left over (flows another process took) go back here, when `slots` drops.
        }
        report.flows_triggered = report.triggered.len();
        info!(
            flows_due = report.flows_due,
            flows_triggered = report.flows_triggered,
            runs_reaped = report.runs_reaped,
            "scheduler cycle dispatched"
        );
        Ok(Dispatch { report, running })
    }

    /// Claims one due flow (its pending retry when `retry`) and starts its run on a task holding `slot`.
    async fn start_one(
        &self,
        flow: DataFlow,
        retry: bool,
        slot: OwnedSemaphorePermit,
        report: &mut HeartbeatReport,
        running: &mut Vec<(usize, RunTask)>,
    ) {
        let claimed = if retry {
            self.executor.claim_retry(&flow).await
        } else {
            self.executor.claim_due(&flow).await
        };
        match claimed {
            Ok(claimed) => Self::spawn(claimed, slot, report, running),
            Err(
                ExecuteError::AlreadyRunning { .. }
                | ExecuteError::NotDue { .. }
                | ExecuteError::FlowNotFound { .. }
                | ExecuteError::ShuttingDown { .. },
            ) => {}
            Err(error) => {
                warn!(flow = %flow.name, %error, "could not start a due flow");
                report.flows_failed += 1;
            }
        }
    }

    /// Claims several due flows in one repository call and starts each claimed run on a task holding one
    /// of `slots`. A flow another process took just has no run.
    async fn start_batch(
        &self,
        flows: &[DataFlow],
        slots: &mut Vec<OwnedSemaphorePermit>,
        report: &mut HeartbeatReport,
        running: &mut Vec<(usize, RunTask)>,
    ) {
        match self.executor.claim_due_batch(flows).await {
            Ok(claimed) => {
                for run in claimed {
                    // The batch claims at most one run per flow, and there is a slot per flow.
                    let Some(slot) = slots.pop() else { break };
                    Self::spawn(run, slot, report, running);
                }
            }
            Err(ClaimBatchError::ShuttingDown) => {}
            Err(error) => {
                // Nothing of the batch was written. One by one, a flow that cannot start (a bad row) does
                // not keep the others from running.
                warn!(flows = flows.len(), %error, "could not start a batch of due flows; starting them one by one");
                for flow in flows {
                    let Some(slot) = slots.pop() else { break };
                    self.start_one(flow.clone(), false, slot, report, running).await;
                }
            }
        }
    }

    fn spawn(
        claimed: ClaimedRun,
        slot: OwnedSemaphorePermit,
        report: &mut HeartbeatReport,
        running: &mut Vec<(usize, RunTask)>,
    ) {
        let run_id = claimed.run().id;
        let flow = claimed.data_flow().name.clone();
        running.push((
            report.triggered.len(),
            tokio::spawn(async move {
                let _slot = slot;
                claimed.finish().await
            }),
        ));
        report.triggered.push(TriggeredRun {
            flow,
            run_id,
            end: None,
        });
    }

    async fn slot(&self, wait: bool) -> Option<OwnedSemaphorePermit> {
        if wait {
            Arc::clone(&self.slots).acquire_owned().await.ok()
        } else {
            Arc::clone(&self.slots).try_acquire_owned().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use chrono::TimeZone;
    use serde_json::json;
    use tokio::sync::watch;

    use super::*;
    use crate::context::RunContext;
    use crate::executor::LeaseSettings;
    use crate::flow::{Flow, FlowError};
    use crate::model::{DataFlowId, LeaseOwner, RetryPolicy, RunInterval, RunStatus};
    use crate::ports::{MockClock, MockDataFlowRepository, MockRunRepository, StartRunError};
    use crate::registry::ClassRegistry;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .expect("valid")
    }

    fn due_flow(id: i64, class: &str) -> DataFlow {
        DataFlow {
            id: DataFlowId(id),
            name: FlowName::parse(&format!("flow-{id}")).expect("name"),
            description: String::new(),
            enabled: true,
            configuration: json!(class),
            schedule: RunInterval::DEFAULT.schedule(),
            next_run_at: Some(at(0)),
            timeout: None,
            retry: RetryPolicy::NONE,
            pending_retry: None,
            state: None,
            last_run_at: None,
            last_run_status: None,
            created_at: at(0),
            updated_at: at(0),
        }
    }

    /// A flow that runs until its gate opens.
    struct Held(watch::Receiver<bool>);

    #[async_trait]
    impl Flow for Held {
        async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
            let _ = self.0.wait_for(|open| *open).await;
            Ok(())
        }
    }

    /// A flow that ends at once.
    struct Quick;

    #[async_trait]
    impl Flow for Quick {
        async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
            Ok(())
        }
    }

    /// The run the mocked repository starts.
    fn run_of(flow: DataFlowId, started_at: DateTime<Utc>, trigger: Trigger) -> DataFlowRun {
        DataFlowRun {
            id: RunId(flow.0 * 100),
            data_flow_id: flow,
            status: RunStatus::InProgress,
            started_at,
            ended_at: None,
            error_message: None,
            error_backtrace: None,
            lease_owner: Some("test:1".to_owned()),
            lease_expires_at: Some(started_at),
            attempt: 1,
            trigger,
            failure_kind: None,
            cancel_requested: None,
            output: String::new(),
            created_at: started_at,
            updated_at: started_at,
        }
    }

    /// A scheduler whose due flows are `due`, every start succeeding unless its flow id is in `refused`
    /// (a batch holding one fails whole), whose batches leave out the flows in `taken` (claimed by another
    /// process), and whose `Held` flows run until `gate` opens.
    fn scheduler(
        due: Vec<DataFlow>,
        refused: &'static [i64],
        taken: &'static [i64],
        gate: watch::Receiver<bool>,
        slots: usize,
    ) -> Scheduler {
        let mut flows = MockDataFlowRepository::new();
        flows.expect_list_due().returning(move |_| Ok(due.clone()));
        let mut runs = MockRunRepository::new();
        runs.expect_reap_expired().returning(|_, _| Ok(Vec::new()));
        runs.expect_start_run().returning(move |request| {
            if refused.contains(&request.data_flow_id.0) {
                return Err(StartRunError::Repository(RepositoryError::Database(
                    "disk full".into(),
                )));
            }
            Ok(run_of(request.data_flow_id, request.started_at, request.trigger))
        });
        runs.expect_start_due_runs().returning(move |batch| {
            if batch
                .flows
                .iter()
                .any(|flow| refused.contains(&flow.data_flow_id.0))
            {
                return Err(RepositoryError::Database("disk full".into()));
            }
            Ok(batch
                .flows
                .iter()
                .filter(|flow| !taken.contains(&flow.data_flow_id.0))
                .map(|flow| run_of(flow.data_flow_id, batch.started_at, Trigger::Schedule))
                .collect())
        });
        runs.expect_finish_run().returning(|_, _, _| Ok(()));
        runs.expect_renew_lease().returning(|_, _| Ok(true));
        runs.expect_cancel_request().returning(|_| Ok(None));
        let mut clock = MockClock::new();
        clock.expect_now().returning(|| at(10));
        let mut registry = ClassRegistry::new();
        registry.register_fn("Held", move |_| Ok(Box::new(Held(gate.clone()))));
        registry.register_fn("Quick", |_| Ok(Box::new(Quick)));
        let runs: Arc<dyn RunRepository> = Arc::new(runs);
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let executor = FlowExecutor::new(
            Arc::clone(&runs),
            Arc::new(registry),
            Arc::clone(&clock),
            LeaseSettings::new(LeaseOwner::new("test:1")),
        );
        Scheduler::new(Arc::new(flows), runs, executor, clock).with_concurrency(slots)
    }

    #[tokio::test]
    async fn dispatch_answers_while_its_runs_still_run_and_starts_no_more_than_the_free_slots() {
        let (open, gate) = watch::channel(false);
        let due = (1..=3).map(|id| due_flow(id, "Held")).collect();
        let scheduler = scheduler(due, &[], &[], gate, 2);
        let dispatch = tokio::time::timeout(Duration::from_secs(5), scheduler.dispatch())
            .await
            .expect("a dispatch never waits for its runs")
            .expect("a cycle");
        assert_eq!(
            (dispatch.report.flows_due, dispatch.report.flows_triggered),
            (3, 2),
            "two slots: the third due flow waits for the next cycle"
        );
        assert_eq!(scheduler.running(), 2);
        let again = scheduler.dispatch().await.expect("a cycle");
        assert_eq!(again.report.flows_triggered, 0, "no free slot while both run");
        open.send_replace(true);
        let report = dispatch.wait().await;
        assert_eq!(report.flows_failed, 0);
        assert!(
            report
                .triggered
                .iter()
                .all(|run| run.end == Some(RunEnd::Succeeded)),
            "{report:?}"
        );
        scheduler.wait_idle().await;
        assert_eq!(scheduler.running(), 0);
    }

    #[tokio::test]
    async fn a_flow_that_cannot_start_is_counted_and_the_others_still_run() {
        let due = vec![due_flow(1, "Quick"), due_flow(2, "Quick"), due_flow(3, "Quick")];
        let scheduler = scheduler(due, &[2], &[], watch::channel(true).1, 16);
        let report = scheduler.run_cycle().await.expect("a cycle");
        assert_eq!(
            (report.flows_due, report.flows_triggered, report.flows_failed),
            (3, 2, 1)
        );
        let started: Vec<&str> = report.triggered.iter().map(|run| run.flow.as_str()).collect();
        assert_eq!(started, ["flow-1", "flow-3"]);
        let health = scheduler.health();
        assert_eq!(health.last_success, Some(at(10)));
        assert_eq!(health.consecutive_failures, 0);
    }

    #[tokio::test]
    async fn many_due_flows_are_claimed_together_and_a_flow_another_process_took_frees_its_slot() {
        let (open, gate) = watch::channel(false);
        let due = (1..=5).map(|id| due_flow(id, "Held")).collect();
        let scheduler = scheduler(due, &[], &[2], gate, 3);
        let dispatch = scheduler.dispatch().await.expect("a cycle");
        let started: Vec<&str> = dispatch
            .report
            .triggered
            .iter()
            .map(|run| run.flow.as_str())
            .collect();
        assert_eq!(
            started,
            ["flow-1", "flow-3", "flow-4"],
            "flow-2 was taken by another process; its slot went to the next due flow"
        );
        assert_eq!(scheduler.running(), 3);
        assert_eq!(dispatch.report.flows_failed, 0);
        open.send_replace(true);
        let report = dispatch.wait().await;
        assert!(
            report
                .triggered
                .iter()
                .all(|run| run.end == Some(RunEnd::Succeeded)),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn a_cycle_that_cannot_list_the_due_flows_shows_in_the_health() {
        let mut flows = MockDataFlowRepository::new();
        flows
            .expect_list_due()
            .returning(|_| Err(RepositoryError::Unavailable("connection refused".into())));
        let mut runs = MockRunRepository::new();
        runs.expect_reap_expired().returning(|_, _| Ok(Vec::new()));
        let mut clock = MockClock::new();
        clock.expect_now().returning(|| at(20));
        let runs: Arc<dyn RunRepository> = Arc::new(runs);
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let executor = FlowExecutor::new(
            Arc::clone(&runs),
            Arc::new(ClassRegistry::new()),
            Arc::clone(&clock),
            LeaseSettings::new(LeaseOwner::new("test:1")),
        );
        let scheduler = Scheduler::new(Arc::new(flows), runs, executor, clock);
        assert!(scheduler.dispatch().await.is_err());
        scheduler.note_failed_cycle("a cycle panicked");
        let health = scheduler.health();
        assert_eq!(health.last_success, None);
        assert_eq!(health.consecutive_failures, 2);
        assert_eq!(health.last_failure, Some((at(20), "a cycle panicked".to_owned())));
    }
}
