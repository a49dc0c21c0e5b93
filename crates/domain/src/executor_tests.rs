//! The seed's acceptance criteria for the FlowExecutor, proven against mocked ports. Each test's name
//! starts with the criterion it covers (`reqR_C_…`); `docs/requirements.md` maps them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use mockall::Sequence;
use serde_json::{Value, json};
use thiserror::Error;

use crate::context::RunContext;
use crate::executor::{ExecuteError, FlowExecutor, FlowFailure, LeaseSettings};
use crate::flow::{Flow, FlowError};
use crate::model::{
    DataFlow, DataFlowId, DataFlowRun, FlowName, LastRunStatus, LeaseOwner, RunId, RunInterval, RunOutcome,
    RunStatus,
};
use crate::ports::{
    ActiveRun, Claim, FinishRunError, MockClock, MockRunRepository, RepositoryError, RunFilter, RunRecord,
    RunRepository, StartRun, StartRunError,
};
use crate::registry::{BuildFlowError, MockFlowRegistry};

const FLOW_ID: DataFlowId = DataFlowId(7);
const RUN_ID: RunId = RunId(42);

fn at(secs: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, secs)
        .single()
        .expect("valid time")
}

fn started() -> DateTime<Utc> {
    at(0)
}

fn ended() -> DateTime<Utc> {
    at(5)
}

fn data_flow(configuration: Value) -> DataFlow {
    DataFlow {
        id: FLOW_ID,
        name: FlowName::parse("nightly-copy").expect("valid name"),
        description: String::new(),
        enabled: true,
        configuration,
        schedule: RunInterval::DEFAULT.schedule(),
        next_run_at: Some(at(0)),
        timeout: None,
        retry: crate::model::RetryPolicy::NONE,
        pending_retry: None,
        state: None,
        last_run_at: None,
        last_run_status: None,
        created_at: at(0),
        updated_at: at(0),
    }
}

fn in_progress_run(request: &StartRun) -> DataFlowRun {
    DataFlowRun {
        id: RUN_ID,
        data_flow_id: request.data_flow_id,
        status: RunStatus::InProgress,
        started_at: request.started_at,
        ended_at: None,
        error_message: None,
        error_backtrace: None,
        lease_owner: Some(request.lease_owner.to_string()),
        lease_expires_at: Some(request.lease_expires_at),
        attempt: request.attempt,
        trigger: request.trigger,
        failure_kind: None,
        cancel_requested: None,
        output: String::new(),
        created_at: request.started_at,
        updated_at: request.started_at,
    }
}

/// The order in which the ports and the flow were used.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    fn push(&self, event: impl Into<String>) {
        self.0.lock().expect("events lock").push(event.into());
    }

    fn list(&self) -> Vec<String> {
        self.0.lock().expect("events lock").clone()
    }
}

#[derive(Debug, Error)]
#[error("source table is missing")]
struct SourceMissing;

#[derive(Debug, Error)]
#[error("copy failed")]
struct CopyFailed(#[source] SourceMissing);

enum Behaviour {
    Succeed,
    Fail,
    Panic,
}

struct FakeFlow {
    events: Events,
    runs: Arc<AtomicUsize>,
    behaviour: Behaviour,
}

impl FakeFlow {
    fn copy_rows(&self) -> Result<(), CopyFailed> {
        Err(CopyFailed(SourceMissing))
    }
}

#[async_trait]
impl Flow for FakeFlow {
    async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
        self.events.push("flow.run");
        self.runs.fetch_add(1, Ordering::SeqCst);
        match self.behaviour {
            Behaviour::Succeed => Ok(()),
            Behaviour::Fail => {
                self.copy_rows()?;
                Ok(())
            }
            Behaviour::Panic => panic!("index out of range in the flow"),
        }
    }
}

/// Mocked ports with permissive defaults that individual tests tighten.
struct Harness {
    runs: MockRunRepository,
    registry: MockFlowRegistry,
    times: Arc<Mutex<VecDeque<DateTime<Utc>>>>,
    events: Events,
    flow_runs: Arc<AtomicUsize>,
}

impl Harness {
    fn new() -> Self {
        let mut runs = MockRunRepository::new();
        // A flow that yields is watched for cancel requests; none is made unless a test says so.
        runs.expect_cancel_request().returning(|_| Ok(None));
        runs.expect_record_output().returning(|_, _| Ok(true));
        Self {
            runs,
            registry: MockFlowRegistry::new(),
            times: Arc::new(Mutex::new(VecDeque::from([started(), ended()]))),
            events: Events::default(),
            flow_runs: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn expect_start(&mut self) {
        let events = self.events.clone();
        self.runs.expect_start_run().times(1).returning(move |request| {
            events.push("runs.start_run");
            Ok(in_progress_run(&request))
        });
    }

    fn expect_build(&mut self, behaviour: fn() -> Behaviour) {
        let events = self.events.clone();
        let runs = Arc::clone(&self.flow_runs);
        self.registry.expect_build().times(1).returning(move |class, _| {
            events.push(format!("registry.build({class})"));
            Ok(Box::new(FakeFlow {
                events: events.clone(),
                runs: Arc::clone(&runs),
                behaviour: behaviour(),
            }))
        });
    }

    /// Expects the end to be recorded and captures the outcome.
    fn expect_finish(&mut self) -> Arc<Mutex<Option<RunOutcome>>> {
        let captured = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&captured);
        let events = self.events.clone();
        self.runs
            .expect_finish_run()
            .times(1)
            .returning(move |run_id, flow_id, outcome| {
                events.push(format!(
                    "runs.finish_run({run_id}, {flow_id}, {})",
                    outcome.status
                ));
                *slot.lock().expect("slot lock") = Some(outcome);
                Ok(())
            });
        captured
    }

    fn executor(self) -> (FlowExecutor, Events, Arc<AtomicUsize>) {
        self.executor_with_lease(Duration::from_secs(60))
    }

    fn executor_with_lease(self, lease: Duration) -> (FlowExecutor, Events, Arc<AtomicUsize>) {
        self.executor_wrapped(lease, |runs| runs)
    }

    /// An executor whose run repository is the mock as `wrap` returns it.
    fn executor_wrapped(
        self,
        lease: Duration,
        wrap: impl FnOnce(Arc<dyn RunRepository>) -> Arc<dyn RunRepository>,
    ) -> (FlowExecutor, Events, Arc<AtomicUsize>) {
        let mut clock = MockClock::new();
        let times = Arc::clone(&self.times);
        clock.expect_now().returning(move || {
            times
                .lock()
                .expect("times lock")
                .pop_front()
                .unwrap_or_else(ended)
        });
        let executor = FlowExecutor::new(
            wrap(Arc::new(self.runs)),
            Arc::new(self.registry),
            Arc::new(clock),
            LeaseSettings {
                duration: lease,
                owner: LeaseOwner::new("test-host:1"),
            },
        );
        (executor, self.events, self.flow_runs)
    }
}

fn captured(slot: &Arc<Mutex<Option<RunOutcome>>>) -> RunOutcome {
    slot.lock()
        .expect("slot lock")
        .clone()
        .expect("the end was recorded")
}

async fn run_successfully(
    configuration: Value,
) -> (Result<DataFlowRun, ExecuteError>, RunOutcome, Vec<String>) {
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Succeed);
    let outcome = h.expect_finish();
    let (executor, events, _) = h.executor();
    let result = executor.execute(&data_flow(configuration)).await;
    (result, captured(&outcome), events.list())
}

async fn run_failing() -> (Result<DataFlowRun, ExecuteError>, RunOutcome) {
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Fail);
    let outcome = h.expect_finish();
    let (executor, _, _) = h.executor();
    let result = executor.execute(&data_flow(json!({"class_name": "Copy"}))).await;
    (result, captured(&outcome))
}

// Requirement 1: execute a data flow.

#[tokio::test]
async fn req1_1_execute_accepts_a_data_flow() {
    let (result, _, _) = run_successfully(json!({"class_name": "Copy"})).await;
    assert_eq!(result.expect("succeeds").data_flow_id, FLOW_ID);
}

#[tokio::test]
async fn req1_2_each_call_creates_its_own_execution_for_its_data_flow() {
    let mut h = Harness::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    h.runs.expect_start_run().times(2).returning(move |request| {
        log.lock().expect("lock").push(request.data_flow_id);
        Ok(in_progress_run(&request))
    });
    h.registry
        .expect_build()
        .times(2)
        .returning(|_, _| Ok(Box::new(crate::executor_tests::Nothing)));
    h.runs.expect_finish_run().times(2).returning(|_, _, _| Ok(()));
    let (executor, _, _) = h.executor();
    let mut other = data_flow(json!("Copy"));
    other.id = DataFlowId(8);
    executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("first succeeds");
    executor.execute(&other).await.expect("second succeeds");
    assert_eq!(*seen.lock().expect("lock"), [FLOW_ID, DataFlowId(8)]);
}

struct Nothing;

#[async_trait]
impl Flow for Nothing {
    async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
        Ok(())
    }
}

#[tokio::test]
async fn req1_3_execute_runs_the_whole_execution() {
    let (_, _, events) = run_successfully(json!({"class_name": "Copy"})).await;
    assert_eq!(events.len(), 4, "{events:?}");
}

#[tokio::test]
async fn req1_4_execute_returns_the_result_of_the_execution() {
    let (result, _, _) = run_successfully(json!({"class_name": "Copy"})).await;
    let run = result.expect("succeeds");
    assert_eq!(run.id, RUN_ID);
    assert_eq!(run.status, RunStatus::Success);
    assert_eq!(run.ended_at, Some(ended()));
    assert_eq!(run.duration(), Some(chrono::Duration::seconds(5)));
}

#[tokio::test]
async fn req1_5_steps_complete_in_sequence() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    h.runs
        .expect_start_run()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|request| Ok(in_progress_run(&request)));
    h.registry
        .expect_build()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Box::new(Nothing)));
    h.runs
        .expect_finish_run()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(()));
    let (executor, _, _) = h.executor();
    executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("succeeds");
}

// Requirement 2: run records.

#[tokio::test]
async fn req2_1_execution_begins_by_creating_the_run_record() {
    let (_, _, events) = run_successfully(json!({"class_name": "Copy"})).await;
    assert_eq!(events.first().map(String::as_str), Some("runs.start_run"));
}

#[tokio::test]
async fn req2_2_started_at_is_the_current_time_from_the_clock() {
    let mut h = Harness::new();
    h.runs
        .expect_start_run()
        .withf(|request| request.started_at == started())
        .times(1)
        .returning(|request| Ok(in_progress_run(&request)));
    h.expect_build(|| Behaviour::Succeed);
    h.expect_finish();
    let (executor, _, _) = h.executor();
    let run = executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("succeeds");
    assert_eq!(run.started_at, started());
}

#[tokio::test]
async fn req2_3_run_is_in_progress_before_the_flow_runs() {
    let (_, _, events) = run_successfully(json!({"class_name": "Copy"})).await;
    let started = events
        .iter()
        .position(|e| e == "runs.start_run")
        .expect("started");
    let ran = events.iter().position(|e| e == "flow.run").expect("ran");
    assert!(started < ran, "{events:?}");
}

#[tokio::test]
async fn req2_4_run_is_associated_with_the_data_flow() {
    let mut h = Harness::new();
    h.runs
        .expect_start_run()
        .withf(|request| request.data_flow_id == FLOW_ID && request.claim == Claim::Manual)
        .times(1)
        .returning(|request| Ok(in_progress_run(&request)));
    h.expect_build(|| Behaviour::Succeed);
    h.runs
        .expect_finish_run()
        .withf(|_, flow_id, _| *flow_id == FLOW_ID)
        .times(1)
        .returning(|_, _, _| Ok(()));
    let (executor, _, _) = h.executor();
    executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("succeeds");
}

#[tokio::test]
async fn req2_5_the_stored_run_is_the_one_later_updated() {
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Succeed);
    h.runs
        .expect_finish_run()
        .withf(|run_id, _, _| *run_id == RUN_ID)
        .times(1)
        .returning(|_, _, _| Ok(()));
    let (executor, _, _) = h.executor();
    executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("succeeds");
}

// Requirement 3: flow instantiation and execution.

#[tokio::test]
async fn req3_1_flow_class_comes_from_the_configuration() {
    let (_, _, events) = run_successfully(json!({"class_name": "Copy", "table": "users"})).await;
    assert!(events.contains(&"registry.build(Copy)".to_owned()), "{events:?}");
}

#[tokio::test]
async fn req3_2_flow_is_instantiated_with_the_configuration() {
    let mut h = Harness::new();
    h.expect_start();
    h.registry
        .expect_build()
        .withf(|class, configuration| class == "Copy" && configuration["table"] == "users")
        .times(1)
        .returning(|_, _| Ok(Box::new(Nothing)));
    h.expect_finish();
    let (executor, _, _) = h.executor();
    executor
        .execute(&data_flow(json!({"class_name": "Copy", "table": "users"})))
        .await
        .expect("succeeds");
}

#[tokio::test]
async fn req3_3_run_is_called_on_the_flow_instance() {
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Succeed);
    h.expect_finish();
    let (executor, _, flow_runs) = h.executor();
    executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("succeeds");
    assert_eq!(flow_runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn req3_4_flow_class_is_resolved_by_data_flow_flow_class_including_string_configurations() {
    let flow = data_flow(json!("Copy"));
    assert_eq!(flow.flow_class(), Ok("Copy"));
    let (_, _, events) = run_successfully(json!("Copy")).await;
    assert!(events.contains(&"registry.build(Copy)".to_owned()), "{events:?}");
}

#[tokio::test]
async fn req3_5_the_complete_configuration_is_passed_to_the_flow_constructor() {
    let configuration = json!({"class_name": "Copy", "source": {"table": "a"}, "batch": 500, "tags": ["x"]});
    let expected = configuration.clone();
    let mut h = Harness::new();
    h.expect_start();
    h.registry
        .expect_build()
        .withf(move |_, given| *given == expected)
        .times(1)
        .returning(|_, _| Ok(Box::new(Nothing)));
    h.expect_finish();
    let (executor, _, _) = h.executor();
    executor
        .execute(&data_flow(configuration))
        .await
        .expect("succeeds");
}

// Requirement 4: success tracking.

#[tokio::test]
async fn req4_1_success_sets_the_flows_last_run_at_to_the_current_time() {
    let (_, outcome, _) = run_successfully(json!("Copy")).await;
    assert_eq!(
        outcome.ended_at,
        ended(),
        "finish_run sets last_run_at to the outcome's ended_at"
    );
}

#[tokio::test]
async fn req4_2_success_sets_the_flows_last_run_status_to_success() {
    let (_, outcome, _) = run_successfully(json!("Copy")).await;
    assert_eq!(outcome.status, LastRunStatus::Success);
}

#[tokio::test]
async fn req4_3_success_sets_the_run_status_to_success() {
    let (result, outcome, events) = run_successfully(json!("Copy")).await;
    assert_eq!(RunStatus::from(outcome.status), RunStatus::Success);
    assert_eq!(result.expect("succeeds").status, RunStatus::Success);
    assert_eq!(
        events.last().map(String::as_str),
        Some("runs.finish_run(42, 7, success)")
    );
}

#[tokio::test]
async fn req4_4_success_sets_the_run_ended_at_to_the_current_time() {
    let (result, outcome, _) = run_successfully(json!("Copy")).await;
    assert_eq!(outcome.ended_at, ended());
    assert_eq!(result.expect("succeeds").ended_at, Some(ended()));
    assert_eq!(outcome.error_message, None);
}

#[tokio::test]
async fn req4_5_all_status_updates_are_persisted_through_the_repository() {
    let (_, _, events) = run_successfully(json!("Copy")).await;
    assert_eq!(
        events,
        [
            "runs.start_run",
            "registry.build(Copy)",
            "flow.run",
            "runs.finish_run(42, 7, success)"
        ]
    );
}

// Requirement 5: failure tracking.

#[tokio::test]
async fn req5_1_failure_sets_the_flows_last_run_status_to_failed() {
    let (_, outcome) = run_failing().await;
    assert_eq!(outcome.status, LastRunStatus::Failed);
}

#[tokio::test]
async fn req5_2_failure_sets_the_flows_last_run_at_to_the_current_time() {
    let (_, outcome) = run_failing().await;
    assert_eq!(outcome.ended_at, ended());
}

#[tokio::test]
async fn req5_3_failure_sets_the_run_status_to_failed() {
    let (result, _) = run_failing().await;
    match result {
        Err(ExecuteError::Failed { run, .. }) => assert_eq!(run.status, RunStatus::Failed),
        other => panic!("expected a recorded failure, got {other:?}"),
    }
}

#[tokio::test]
async fn req5_4_failure_stores_the_error_message() {
    let (result, outcome) = run_failing().await;
    assert_eq!(outcome.error_message.as_deref(), Some("copy failed"));
    let Err(ExecuteError::Failed { run, .. }) = result else {
        panic!("expected a recorded failure")
    };
    assert_eq!(run.error_message.as_deref(), Some("copy failed"));
}

#[tokio::test]
async fn req5_5_failure_stores_the_cause_chain_and_a_backtrace_into_the_flow() {
    let (_, outcome) = run_failing().await;
    let backtrace = outcome.error_backtrace.expect("a backtrace is stored");
    assert!(
        backtrace.starts_with("Error: copy failed\n\nCaused by:\n    0: source table is missing"),
        "{backtrace}"
    );
    assert!(
        backtrace.contains(
            "Backtrace:\n   0: <flowrun_domain::executor_tests::FakeFlow as flowrun_domain::flow::Flow>::run"
        ),
        "the backtrace starts in the flow's code, below the `?` conversion: {backtrace}"
    );
    assert!(
        backtrace.ends_with("\n      … frames of the executor and the async runtime omitted"),
        "the executor's and the runtime's frames are left out: {backtrace}"
    );
}

#[tokio::test]
async fn req5_6_failure_sets_the_run_ended_at_to_the_current_time() {
    let (result, outcome) = run_failing().await;
    assert_eq!(outcome.ended_at, ended());
    let Err(ExecuteError::Failed { run, .. }) = result else {
        panic!("expected a recorded failure")
    };
    assert_eq!(run.ended_at, Some(ended()));
}

#[tokio::test]
async fn req5_7_the_flows_own_error_is_handed_back_after_recording() {
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Fail);
    let outcome = h.expect_finish();
    let (executor, _, _) = h.executor();
    let error = executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect_err("fails");
    assert!(
        outcome.lock().expect("lock").is_some(),
        "recorded before returning"
    );
    assert_eq!(error.to_string(), "copy failed");
    assert_eq!(error.run_id(), Some(RUN_ID));
    let flow_error = error.into_flow_error().expect("the flow's own error");
    let copy_failed = flow_error
        .downcast::<CopyFailed>()
        .expect("downcasts to the flow's type");
    assert_eq!(copy_failed.0.to_string(), "source table is missing");
}

// Requirement 6: a simple service interface.

#[tokio::test]
async fn req6_1_execute_is_the_primary_interface_on_a_shareable_service() {
    let (result, _, _) = run_successfully(json!("Copy")).await;
    assert!(result.is_ok());
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<FlowExecutor>();
}

#[tokio::test]
async fn req6_4_all_database_updates_happen_inside_execute() {
    // The mocks are strict: any repository call not expected here fails the test.
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Fail);
    h.expect_finish();
    let (executor, events, _) = h.executor();
    let _ = executor.execute(&data_flow(json!("Copy"))).await;
    let repository_calls: Vec<_> = events
        .list()
        .into_iter()
        .filter(|e| e.starts_with("runs."))
        .collect();
    assert_eq!(
        repository_calls,
        ["runs.start_run", "runs.finish_run(42, 7, failed)"]
    );
}

#[tokio::test]
async fn req6_5_scheduled_execution_goes_through_the_same_lifecycle() {
    let mut h = Harness::new();
    let flow = data_flow(json!("Copy"));
    // Due since at(0), hourly: the claim moves the next run to the next slot of the schedule.
    let next = at(0) + chrono::TimeDelta::hours(1);
    h.runs
        .expect_start_run()
        .withf(move |request| {
            request.claim
                == Claim::Due {
                    next_run_at: Some(next),
                }
        })
        .times(1)
        .returning(|request| Ok(in_progress_run(&request)));
    h.expect_build(|| Behaviour::Succeed);
    h.expect_finish();
    let (executor, events, _) = h.executor();
    executor.execute_if_due(&flow).await.expect("succeeds");
    assert_eq!(
        events.list(),
        [
            "registry.build(Copy)",
            "flow.run",
            "runs.finish_run(42, 7, success)"
        ]
    );
}

// Beyond the seed.

#[tokio::test]
async fn unknown_class_is_recorded_as_a_failed_run_and_returned() {
    let mut h = Harness::new();
    h.expect_start();
    h.registry.expect_build().times(1).returning(|class, _| {
        Err(BuildFlowError::UnknownClass {
            class: class.to_owned(),
            known: vec!["Noop".into()],
        })
    });
    let outcome = h.expect_finish();
    let (executor, _, _) = h.executor();
    let error = executor
        .execute(&data_flow(json!("Nope")))
        .await
        .expect_err("fails");
    let outcome = captured(&outcome);
    assert_eq!(outcome.status, LastRunStatus::Failed);
    assert_eq!(
        outcome.error_message.as_deref(),
        Some("unknown flow class `Nope` (registered: Noop)")
    );
    assert!(
        error
            .flow_error()
            .and_then(|e| e.downcast_ref::<BuildFlowError>())
            .is_some()
    );
}

#[tokio::test]
async fn configuration_without_a_class_is_recorded_as_a_failed_run() {
    let mut h = Harness::new();
    h.expect_start();
    let outcome = h.expect_finish();
    let (executor, _, _) = h.executor();
    let error = executor
        .execute(&data_flow(json!({"table": "x"})))
        .await
        .expect_err("fails");
    assert_eq!(
        captured(&outcome).error_message.as_deref(),
        Some("the configuration has no `class_name`")
    );
    assert!(matches!(error, ExecuteError::Failed { .. }));
}

#[tokio::test]
async fn a_panicking_flow_is_recorded_with_message_location_and_backtrace() {
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Panic);
    let outcome = h.expect_finish();
    let (executor, _, _) = h.executor();
    let error = executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect_err("fails");
    let outcome = captured(&outcome);
    assert_eq!(
        outcome.error_message.as_deref(),
        Some("flow panicked: index out of range in the flow")
    );
    let report = outcome.error_backtrace.expect("backtrace");
    assert!(report.contains("executor_tests.rs"), "location: {report}");
    assert!(
        report.contains("Backtrace:\n   0: <flowrun_domain::executor_tests::FakeFlow as"),
        "the trace starts at the panic site, not in the panic machinery: {report}"
    );
    assert!(
        report.ends_with("\n      … frames of the executor and the async runtime omitted"),
        "the trace stops at the executor: {report}"
    );
    assert!(matches!(
        error,
        ExecuteError::Failed {
            failure: FlowFailure::Panic(_),
            ..
        }
    ));
}

#[tokio::test]
async fn a_recording_failure_does_not_mask_the_flows_error() {
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Fail);
    h.runs.expect_finish_run().times(1).returning(|_, _, _| {
        Err(FinishRunError::Repository(RepositoryError::Database(
            "disk I/O error: connection reset".into(),
        )))
    });
    let (executor, _, _) = h.executor();
    let error = executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect_err("fails");
    let message = error.to_string();
    assert!(message.contains("failed (copy failed)"), "{message}");
    assert!(message.contains("connection reset"), "{message}");
    assert!(matches!(error, ExecuteError::Record { .. }));
    assert!(
        error
            .flow_error()
            .and_then(|e| e.downcast_ref::<CopyFailed>())
            .is_some()
    );
}

/// Finishes that fail with `error` for the first `failures` calls, then succeed; counts the calls.
fn finishes_failing_first(
    h: &mut Harness,
    failures: usize,
    error: fn() -> FinishRunError,
) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    h.runs.expect_finish_run().returning(move |_, _, _| {
        if counted.fetch_add(1, Ordering::SeqCst) < failures {
            Err(error())
        } else {
            Ok(())
        }
    });
    h.runs.expect_renew_lease().returning(|_, _| Ok(true));
    calls
}

fn connection_lost() -> FinishRunError {
    FinishRunError::Repository(RepositoryError::Unavailable("connection reset by peer".into()))
}

#[tokio::test(start_paused = true)]
async fn a_lost_connection_while_recording_the_end_is_retried_and_the_real_outcome_kept() {
    // Seen with PostgreSQL connections killed mid-run: successful runs were left to be reaped as failed.
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Succeed);
    let calls = finishes_failing_first(&mut h, 2, connection_lost);
    let (executor, _, _) = h.executor();
    let run = executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("recorded on the third try");
    assert_eq!(run.status, RunStatus::Success);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_busy_database_while_recording_the_end_is_retried_too() {
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Fail);
    let calls = finishes_failing_first(&mut h, 1, || {
        FinishRunError::Repository(RepositoryError::Conflict("database is locked".into()))
    });
    let (executor, _, _) = h.executor();
    let error = executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect_err("the flow failed");
    assert!(matches!(error, ExecuteError::Failed { .. }), "{error:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn recording_is_given_up_once_half_a_lease_has_passed_before_a_reaper_could_close_the_run() {
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Succeed);
    let calls = finishes_failing_first(&mut h, usize::MAX, connection_lost);
    let (executor, _, _) = h.executor_with_lease(Duration::from_secs(60));
    let began = tokio::time::Instant::now();
    let error = executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect_err("never recorded");
    assert!(matches!(error, ExecuteError::Record { .. }), "{error:?}");
    let waited = began.elapsed();
    assert!(
        waited <= Duration::from_secs(30) && waited >= Duration::from_secs(20),
        "{waited:?}"
    );
    // 50 ms doubling to a 5 s cap: a handful of quick tries, then one every 5 s.
    let tries = calls.load(Ordering::SeqCst);
    assert!((6..=16).contains(&tries), "{tries}");
}

#[tokio::test(start_paused = true)]
async fn an_end_committed_before_its_answer_was_lost_is_not_reported_as_superseded() {
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Succeed);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    h.runs.expect_finish_run().returning(move |run_id, _, _| {
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(connection_lost())
        } else {
            Err(FinishRunError::NotInProgress {
                run_id,
                status: "success".to_owned(),
            })
        }
    });
    h.runs.expect_renew_lease().returning(|_, _| Ok(true));
    let (executor, _, _) = h.executor();
    let run = executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("the first try was committed");
    assert_eq!(run.status, RunStatus::Success);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_late_outcome_after_a_reap_is_refused_and_reported() {
    let mut h = Harness::new();
    h.expect_start();
    h.expect_build(|| Behaviour::Succeed);
    h.runs.expect_finish_run().times(1).returning(|run_id, _, _| {
        Err(FinishRunError::NotInProgress {
            run_id,
            status: "failed".into(),
        })
    });
    let (executor, _, _) = h.executor();
    let error = executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            error,
            ExecuteError::Superseded {
                run_id: RUN_ID,
                failure: None
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("closed as abandoned"), "{error}");
}

#[tokio::test]
async fn a_flow_held_by_a_live_run_is_refused_without_building_it() {
    let mut h = Harness::new();
    h.runs.expect_start_run().times(1).returning(|_| {
        Err(StartRunError::Busy(ActiveRun {
            run_id: RunId(3),
            started_at: at(0),
            lease_expires_at: Some(at(50)),
        }))
    });
    let (executor, _, _) = h.executor();
    let error = executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "data flow `nightly-copy` is already running since 2026-11-26T12:00:00+00:00 (run 3)"
    );
}

#[tokio::test]
async fn a_flow_held_by_an_expired_run_is_reaped_then_started() {
    let mut h = Harness::new();
    let mut seq = Sequence::new();
    h.runs
        .expect_start_run()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| {
            Err(StartRunError::Busy(ActiveRun {
                run_id: RunId(3),
                started_at: at(0),
                lease_expires_at: Some(at(0) - chrono::Duration::seconds(1)),
            }))
        });
    h.runs
        .expect_reap_expired()
        .withf(|_, flow| *flow == Some(FLOW_ID))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Vec::new()));
    h.runs
        .expect_start_run()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|request| Ok(in_progress_run(&request)));
    h.expect_build(|| Behaviour::Succeed);
    h.runs
        .expect_finish_run()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(()));
    let (executor, _, _) = h.executor();
    executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("succeeds after the reap");
}

#[tokio::test]
async fn a_run_that_cannot_be_created_is_reported_and_nothing_else_happens() {
    let mut h = Harness::new();
    h.runs.expect_start_run().times(1).returning(|_| {
        Err(StartRunError::Repository(RepositoryError::Unavailable(
            "refused".into(),
        )))
    });
    let (executor, _, flow_runs) = h.executor();
    let error = executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect_err("fails");
    assert!(matches!(error, ExecuteError::Start { .. }));
    assert_eq!(error.run_id(), None);
    assert_eq!(flow_runs.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_renewed_while_a_long_flow_runs() {
    let mut h = Harness::new();
    h.expect_start();
    h.registry
        .expect_build()
        .returning(|_, _| Ok(Box::new(Sleeps(Duration::from_secs(210)))));
    let renewals = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&renewals);
    h.runs.expect_renew_lease().returning(move |run_id, _| {
        assert_eq!(run_id, RUN_ID);
        count.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    });
    h.expect_finish();
    let (executor, _, _) = h.executor();
    executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("succeeds");
    // A 60 s lease is renewed every 20 s: ten times in 210 s.
    assert_eq!(renewals.load(Ordering::SeqCst), 10);
}

/// A flow that never ends by itself.
struct Forever;

#[async_trait]
impl Flow for Forever {
    async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

fn counting_renewals(h: &mut Harness, answer: bool) -> Arc<AtomicUsize> {
    let renewals = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&renewals);
    h.runs.expect_renew_lease().returning(move |_, _| {
        count.fetch_add(1, Ordering::SeqCst);
        Ok(answer)
    });
    renewals
}

#[tokio::test]
async fn a_flow_that_ends_without_yielding_leaves_the_lease_keeper_unarmed() {
    let mut h = Harness::new();
    h.expect_start();
    struct AtOnce;
    #[async_trait]
    impl Flow for AtOnce {
        async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
            Ok(())
        }
    }
    h.registry.expect_build().returning(|_, _| Ok(Box::new(AtOnce)));
    h.expect_finish();
    let (executor, _, _) = h.executor();
    executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("succeeds");
    assert!(!executor.renewal_task_started(), "no renewal task, so no timer");
}

/// A flow that sleeps (on the runtime's clock) for as long as it is told.
struct Sleeps(Duration);

#[async_trait]
impl Flow for Sleeps {
    async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
        tokio::time::sleep(self.0).await;
        Ok(())
    }
}

/// Renewals that take `delay` each (the first one panics if `panic_first`), noting when each started.
struct SlowRenewals {
    inner: Arc<dyn RunRepository>,
    delay: Duration,
    panic_first: bool,
    started: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

#[async_trait]
impl RunRepository for SlowRenewals {
    async fn start_run(&self, request: StartRun) -> Result<DataFlowRun, StartRunError> {
        self.inner.start_run(request).await
    }
    async fn start_due_runs(
        &self,
        batch: crate::ports::DueBatch,
    ) -> Result<Vec<DataFlowRun>, RepositoryError> {
        self.inner.start_due_runs(batch).await
    }
    async fn finish_run(
        &self,
        run_id: RunId,
        data_flow_id: DataFlowId,
        outcome: RunOutcome,
    ) -> Result<(), FinishRunError> {
        self.inner.finish_run(run_id, data_flow_id, outcome).await
    }
    async fn renew_lease(&self, run_id: RunId, expires_at: DateTime<Utc>) -> Result<bool, RepositoryError> {
        let first = {
            let mut started = self.started.lock().expect("started lock");
            started.push(tokio::time::Instant::now());
            started.len() == 1
        };
        assert!(!(first && self.panic_first), "a renewal that panics");
        tokio::time::sleep(self.delay).await;
        self.inner.renew_lease(run_id, expires_at).await
    }
    async fn reap_expired(
        &self,
        now: DateTime<Utc>,
        data_flow_id: Option<DataFlowId>,
    ) -> Result<Vec<DataFlowRun>, RepositoryError> {
        self.inner.reap_expired(now, data_flow_id).await
    }
    async fn request_cancel(
        &self,
        run_id: RunId,
        by: String,
        at: DateTime<Utc>,
    ) -> Result<crate::ports::CancelOutcome, RepositoryError> {
        self.inner.request_cancel(run_id, by, at).await
    }
    async fn cancel_request(
        &self,
        run_id: RunId,
    ) -> Result<Option<crate::model::CancelRequest>, RepositoryError> {
        self.inner.cancel_request(run_id).await
    }
    async fn record_output(&self, run_id: RunId, output: &str) -> Result<bool, RepositoryError> {
        self.inner.record_output(run_id, output).await
    }
    async fn find_run(&self, id: RunId) -> Result<Option<RunRecord>, RepositoryError> {
        self.inner.find_run(id).await
    }
    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>, RepositoryError> {
        self.inner.list_runs(filter).await
    }
    async fn count_runs(&self, data_flow_id: DataFlowId) -> Result<u64, RepositoryError> {
        self.inner.count_runs(data_flow_id).await
    }
    async fn prune(&self, request: crate::ports::PruneRuns) -> Result<u64, RepositoryError> {
        self.inner.prune(request).await
    }
}

/// Runs the flow `build` makes under a 60 s lease with renewals taking `delay`; returns when each renewal
/// started, in seconds from the start.
async fn renewal_starts(build: fn() -> Box<dyn Flow>, delay: Duration, panic_first: bool) -> Vec<u64> {
    let mut h = Harness::new();
    h.expect_start();
    h.registry.expect_build().returning(move |_, _| Ok(build()));
    h.runs.expect_renew_lease().returning(|_, _| Ok(true));
    h.expect_finish();
    let started = Arc::new(Mutex::new(Vec::new()));
    let noted = Arc::clone(&started);
    let (executor, _, _) = h.executor_wrapped(Duration::from_secs(60), move |inner| {
        Arc::new(SlowRenewals {
            inner,
            delay,
            panic_first,
            started: noted,
        })
    });
    let t0 = tokio::time::Instant::now();
    executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("succeeds");
    let starts = started.lock().expect("started lock").clone();
    starts.iter().map(|at| (*at - t0).as_secs()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_slow_renewal_does_not_push_the_next_one_past_half_the_lease() {
    // Each renewal takes 15 s; the next must still start 20 s after the previous one started, not after
    // it ended, so the lease never runs below half its length.
    let starts = renewal_starts(
        || Box::new(Sleeps(Duration::from_secs(200))),
        Duration::from_secs(15),
        false,
    )
    .await;
    assert_eq!(
        starts,
        vec![20, 40, 60, 80, 100, 120, 140, 160, 180],
        "{starts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_renewal_does_not_stop_the_later_ones() {
    let starts = renewal_starts(
        || Box::new(Sleeps(Duration::from_secs(200))),
        Duration::ZERO,
        true,
    )
    .await;
    // The one at 200 s races the flow's end at 200 s; whether it starts does not matter.
    assert_eq!(
        starts[..9],
        [20, 40, 60, 80, 100, 120, 140, 160, 180],
        "the first renewal panicked, the others went on: {starts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_already_due_when_its_flow_first_yields_is_renewed_at_once() {
    struct SlowStart;
    #[async_trait]
    impl Flow for SlowStart {
        async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
            // 25 s pass before the flow first yields: the lease is already due (every 20 s).
            tokio::time::advance(Duration::from_secs(25)).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        }
    }
    let starts = renewal_starts(|| Box::new(SlowStart), Duration::ZERO, false).await;
    assert_eq!(starts, vec![25, 45], "{starts:?}");
}

/// Real time, not paused: the watchdog is a plain thread, outside the runtime's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_blocking_its_thread_before_yielding_still_has_its_lease_renewed() {
    struct Blocking;
    #[async_trait]
    impl Flow for Blocking {
        async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
            // Synchronous work before the first `.await`: the flow's worker thread polls nothing else.
            std::thread::sleep(Duration::from_millis(1500));
            Ok(())
        }
    }
    let mut h = Harness::new();
    h.expect_start();
    h.registry.expect_build().returning(|_, _| Ok(Box::new(Blocking)));
    let renewals = counting_renewals(&mut h, true);
    h.expect_finish();
    // Renewed every 200 ms: about seven times in 1.5 s; two leave room for a loaded machine.
    let (executor, _, _) = h.executor_with_lease(Duration::from_millis(600));
    executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("succeeds");
    let renewed = renewals.load(Ordering::SeqCst);
    assert!(
        renewed >= 2,
        "renewed {renewed} times while the flow blocked its thread"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_execution_stops_renewing_its_lease() {
    let mut h = Harness::new();
    h.expect_start();
    h.registry.expect_build().returning(|_, _| Ok(Box::new(Forever)));
    let renewals = counting_renewals(&mut h, true);
    let (executor, _, _) = h.executor();
    // The executor lives on (as in a server) after the one execution is dropped.
    let alive = executor.clone();
    let running = tokio::spawn(async move { executor.execute(&data_flow(json!("Copy"))).await });
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert_eq!(renewals.load(Ordering::SeqCst), 2, "renewed at 20 s and 40 s");
    running.abort();
    let _ = running.await;
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(
        renewals.load(Ordering::SeqCst),
        2,
        "an abandoned run keeps no lease, so the reaper can close it"
    );
    drop(alive);
}

#[tokio::test(start_paused = true)]
async fn a_lease_taken_by_the_reaper_is_not_renewed_again() {
    let mut h = Harness::new();
    h.expect_start();
    h.registry
        .expect_build()
        .returning(|_, _| Ok(Box::new(Sleeps(Duration::from_secs(210)))));
    let renewals = counting_renewals(&mut h, false);
    h.expect_finish();
    let (executor, _, _) = h.executor();
    executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("the repository's finish is mocked to succeed");
    assert_eq!(renewals.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_draining_process_starts_no_new_run() {
    let h = Harness::new();
    let (controller, signal) = crate::shutdown::ShutdownController::new();
    let (executor, _, _) = h.executor();
    let executor = executor.with_shutdown(signal);
    controller.drain();
    let error = executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect_err("refused");
    assert!(matches!(error, ExecuteError::ShuttingDown { .. }), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn an_aborting_process_records_running_flows_as_interrupted() {
    let mut h = Harness::new();
    h.expect_start();
    h.registry.expect_build().returning(|_, _| Ok(Box::new(Forever)));
    h.runs.expect_renew_lease().returning(|_, _| Ok(true));
    let outcome = h.expect_finish();
    let (controller, signal) = crate::shutdown::ShutdownController::new();
    let (executor, _, _) = h.executor();
    let executor = executor.with_shutdown(signal);
    let running = tokio::spawn(async move { executor.execute(&data_flow(json!("Copy"))).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    controller.drain();
    controller.abort();
    let error = running.await.expect("joined").expect_err("interrupted");
    assert!(
        matches!(
            error,
            ExecuteError::Failed {
                failure: FlowFailure::Interrupted,
                ..
            }
        ),
        "{error:?}"
    );
    let outcome = captured(&outcome);
    assert_eq!(outcome.status, LastRunStatus::Failed);
    assert_eq!(outcome.failure_kind, Some(crate::model::FailureKind::Interrupted));
    assert!(
        outcome
            .error_message
            .expect("message")
            .starts_with("interrupted: the process running the flow was stopped")
    );
}

// The run context.

/// What a flow saw of its run: its id, attempt and stored state.
type Seen = Option<(RunId, u32, Option<Value>)>;

/// Logs a line, checks what it was given, saves state, then does `then`.
struct Contextual {
    then: Behaviour,
    seen: Arc<Mutex<Seen>>,
}

#[async_trait]
impl Flow for Contextual {
    async fn run(&mut self, context: &mut RunContext) -> Result<(), FlowError> {
        *self.seen.lock().expect("seen lock") =
            Some((context.run_id(), context.attempt(), context.state().cloned()));
        context.log("copied 3 rows");
        context.output().write("cursor at 42\n");
        context.set_state(json!({"cursor": 42}));
        match self.then {
            Behaviour::Succeed => Ok(()),
            Behaviour::Fail => Err(FlowError::msg("the sink went away")),
            Behaviour::Panic => panic!("the flow panicked"),
        }
    }
}

async fn run_contextual(then: fn() -> Behaviour) -> (RunOutcome, Seen) {
    let mut h = Harness::new();
    h.expect_start();
    let seen = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&seen);
    h.registry.expect_build().returning(move |_, _| {
        Ok(Box::new(Contextual {
            then: then(),
            seen: Arc::clone(&slot),
        }))
    });
    let outcome = h.expect_finish();
    let (executor, _, _) = h.executor();
    let mut flow = data_flow(json!("Copy"));
    flow.state = Some(json!({"cursor": 7}));
    let _ = executor.execute(&flow).await;
    let seen = seen.lock().expect("seen lock").clone();
    (captured(&outcome), seen)
}

#[tokio::test]
async fn a_flow_gets_its_run_and_state_and_its_output_and_new_state_are_recorded_with_a_success() {
    let (outcome, seen) = run_contextual(|| Behaviour::Succeed).await;
    assert_eq!(seen, Some((RUN_ID, 1, Some(json!({"cursor": 7})))));
    assert_eq!(outcome.status, LastRunStatus::Success);
    assert_eq!(outcome.output, "copied 3 rows\ncursor at 42\n");
    assert_eq!(outcome.state, Some(json!({"cursor": 42})));
}

#[tokio::test]
async fn a_failed_run_keeps_its_output_but_saves_no_state() {
    for then in [(|| Behaviour::Fail) as fn() -> Behaviour, || Behaviour::Panic] {
        let (outcome, _) = run_contextual(then).await;
        assert_eq!(outcome.status, LastRunStatus::Failed);
        assert_eq!(outcome.output, "copied 3 rows\ncursor at 42\n");
        assert_eq!(outcome.state, None, "the stored state stays as it was");
    }
}

/// Waits for its cancellation, then cleans up (for `cleanup`) and returns, or ignores it.
struct Stoppable {
    honours_cancel: bool,
    cleanup: Duration,
}

#[async_trait]
impl Flow for Stoppable {
    async fn run(&mut self, context: &mut RunContext) -> Result<(), FlowError> {
        context.log("working");
        if self.honours_cancel {
            context.cancelled().await;
            tokio::time::sleep(self.cleanup).await;
            context.log("cleaned up");
            Ok(())
        } else {
            tokio::time::sleep(Duration::from_secs(100_000)).await;
            context.log("never reached");
            Ok(())
        }
    }
}

async fn timed_out(flow: fn() -> Stoppable) -> (RunOutcome, Duration) {
    let mut h = Harness::new();
    h.expect_start();
    h.registry
        .expect_build()
        .returning(move |_, _| Ok(Box::new(flow())));
    let outcome = h.expect_finish();
    let (executor, _, _) = h.executor();
    let mut data = data_flow(json!("Copy"));
    data.timeout = Some(crate::model::Timeout::from_secs(10).expect("valid"));
    let began = tokio::time::Instant::now();
    let result = executor.execute(&data).await;
    assert!(matches!(
        result,
        Err(ExecuteError::Failed {
            failure: FlowFailure::TimedOut(_),
            ..
        })
    ));
    (captured(&outcome), began.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_flow_is_told_to_stop_and_may_clean_up_before_it_is_dropped() {
    let (outcome, took) = timed_out(|| Stoppable {
        honours_cancel: true,
        cleanup: Duration::from_secs(1),
    })
    .await;
    assert_eq!(outcome.failure_kind, Some(crate::model::FailureKind::Timeout));
    assert_eq!(outcome.output, "working\ncleaned up\n");
    assert_eq!(
        took,
        Duration::from_secs(11),
        "the timeout, then its own clean-up"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flow_that_ignores_its_cancellation_is_dropped_after_the_stop_grace() {
    let (outcome, took) = timed_out(|| Stoppable {
        honours_cancel: false,
        cleanup: Duration::ZERO,
    })
    .await;
    assert_eq!(outcome.failure_kind, Some(crate::model::FailureKind::Timeout));
    assert_eq!(outcome.output, "working\n");
    assert_eq!(
        took,
        Duration::from_secs(10) + crate::executor::DEFAULT_STOP_GRACE
    );
}

#[tokio::test(start_paused = true)]
async fn a_running_flows_output_is_written_in_batches_while_it_runs() {
    let mut h = Harness::new();
    let flushed = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&flushed);
    h.runs.checkpoint();
    h.runs.expect_cancel_request().returning(|_| Ok(None));
    h.runs.expect_record_output().returning(move |_, output| {
        log.lock().expect("log lock").push(output.to_owned());
        Ok(true)
    });
    h.expect_start();
    struct Chatty;
    #[async_trait]
    impl Flow for Chatty {
        async fn run(&mut self, context: &mut RunContext) -> Result<(), FlowError> {
            for i in 0..3 {
                context.log(format!("batch {i}"));
                tokio::time::sleep(Duration::from_millis(2500)).await;
            }
            Ok(())
        }
    }
    h.registry.expect_build().returning(|_, _| Ok(Box::new(Chatty)));
    let outcome = h.expect_finish();
    let (executor, _, _) = h.executor();
    executor
        .execute(&data_flow(json!("Copy")))
        .await
        .expect("succeeds");
    assert_eq!(
        *flushed.lock().expect("log lock"),
        ["batch 0\n", "batch 0\nbatch 1\n", "batch 0\nbatch 1\nbatch 2\n"],
        "written every 2 s when it grew"
    );
    assert_eq!(captured(&outcome).output, "batch 0\nbatch 1\nbatch 2\n");
}
