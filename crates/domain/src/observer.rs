//! The observer port: what the executor and the scheduler tell whoever watches them (metrics, failure
//! notifications) as runs start and end and cycles pass.
//!
//! Calls are synchronous and made on the run's own task, so an implementation must never block or wait:
//! it updates counters or queues work for a task of its own. A panic inside an observer is caught and
//! logged; it never changes a run's record or the caller's result.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::error;

use crate::model::{DataFlow, DataFlowRun, LastRunStatus};
use crate::scheduler::HeartbeatReport;

/// Watches runs and scheduler cycles. Every method has a default that does nothing, so an observer
/// implements only what it needs.
pub trait RunObserver: Send + Sync {
    /// `run` of `flow` has started (it is recorded `in_progress`) and its flow is about to be built.
    fn run_started(&self, flow: &DataFlow, run: &DataFlowRun) {
        let _ = (flow, run);
    }

    /// `run` of `flow` has ended. `run` is the run as its end was written (`success` or `failed`, with its
    /// times, failure kind and message). `recorded` is false when that end could not be written (the
    /// database failed, or the run had already been closed as abandoned): the stored run then says
    /// something else, and observers that tell people about outcomes should stay quiet.
    ///
    /// `previous` is the flow's `last_run_status` as it was read before this run: `Some(Failed)` with a
    /// successful `run` means the flow has recovered.
    fn run_ended(&self, flow: &DataFlow, run: &DataFlowRun, previous: Option<LastRunStatus>, recorded: bool) {
        let _ = (flow, run, previous, recorded);
    }

    /// A scheduler cycle that began at `began` has claimed and started what it could, taking `took`.
    /// `report` is `None` when the cycle failed (the due flows could not be read).
    fn cycle_finished(&self, began: DateTime<Utc>, took: Duration, report: Option<&HeartbeatReport>) {
        let _ = (began, took, report);
    }

    /// `count` abandoned runs (their lease expired) were closed as `failed`.
    fn runs_reaped(&self, count: usize) {
        let _ = count;
    }
}

/// The observer used when none is set: it does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl RunObserver for NoopObserver {}

/// Calls an observer, catching and logging its panic: whatever goes wrong while watching must not change
/// the run or the cycle being watched.
pub(crate) fn notify(what: &'static str, call: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(call)).is_err() {
        error!(
            hook = what,
            "a run observer panicked; the run and its record are unaffected"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::context::RunContext;
    use crate::executor::{ExecuteError, FlowExecutor, LeaseSettings};
    use crate::flow::{Flow, FlowError};
    use crate::model::{DataFlowId, FlowName, LeaseOwner, RetryPolicy, RunId, RunInterval, RunStatus};
    use crate::ports::{
        Clock, FinishRunError, MockClock, MockDataFlowRepository, MockRunRepository, RepositoryError,
        RunRepository,
    };
    use crate::registry::ClassRegistry;
    use crate::scheduler::Scheduler;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .expect("valid")
    }

    fn flow(class: &str, previous: Option<LastRunStatus>) -> DataFlow {
        DataFlow {
            id: DataFlowId(3),
            name: FlowName::parse("watched").expect("name"),
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
            last_run_status: previous,
            created_at: at(0),
            updated_at: at(0),
        }
    }

    struct Quick;

    #[async_trait]
    impl Flow for Quick {
        async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
            Ok(())
        }
    }

    struct Broken;

    #[async_trait]
    impl Flow for Broken {
        async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
            Err(FlowError::msg("source is gone"))
        }
    }

    /// Writes down every call, or panics in every call when `panics`.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<String>>,
        panics: bool,
    }

    impl Recorder {
        fn push(&self, event: String) {
            if self.panics {
                panic!("observer bug");
            }
            self.seen.lock().expect("lock").push(event);
        }

        fn seen(&self) -> Vec<String> {
            self.seen.lock().expect("lock").clone()
        }
    }

    impl RunObserver for Recorder {
        fn run_started(&self, flow: &DataFlow, run: &DataFlowRun) {
            self.push(format!("started {} {}", flow.name, run.status.as_str()));
        }

        fn run_ended(
            &self,
            flow: &DataFlow,
            run: &DataFlowRun,
            previous: Option<LastRunStatus>,
            recorded: bool,
        ) {
            self.push(format!(
                "ended {} {} after {} recorded={recorded}",
                flow.name,
                run.status.as_str(),
                previous.map_or("nothing", LastRunStatus::as_str)
            ));
        }

        fn cycle_finished(&self, _began: DateTime<Utc>, _took: Duration, report: Option<&HeartbeatReport>) {
            self.push(format!("cycle due={:?}", report.map(|report| report.flows_due)));
        }

        fn runs_reaped(&self, count: usize) {
            self.push(format!("reaped {count}"));
        }
    }

    fn runs(finish: Result<(), ()>, finishes: usize) -> MockRunRepository {
        let mut runs = MockRunRepository::new();
        runs.expect_start_run().returning(|request| {
            Ok(DataFlowRun {
                id: RunId(9),
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
            })
        });
        runs.expect_finish_run()
            .times(finishes)
            .returning(move |_, _, _| {
                finish.map_err(|()| FinishRunError::Repository(RepositoryError::Database("disk full".into())))
            });
        runs.expect_renew_lease().returning(|_, _| Ok(true));
        runs.expect_cancel_request().returning(|_| Ok(None));
        runs
    }

    fn executor(runs: MockRunRepository, observer: Arc<dyn RunObserver>) -> FlowExecutor {
        let mut clock = MockClock::new();
        clock.expect_now().returning(|| at(10));
        let mut registry = ClassRegistry::new();
        registry.register_fn("Quick", |_| Ok(Box::new(Quick)));
        registry.register_fn("Broken", |_| Ok(Box::new(Broken)));
        FlowExecutor::new(
            Arc::new(runs),
            Arc::new(registry),
            Arc::new(clock),
            LeaseSettings::new(LeaseOwner::new("test:1")),
        )
        .with_observer(observer)
    }

    #[tokio::test]
    async fn the_observer_sees_the_start_and_the_recorded_end_with_the_previous_status() {
        let recorder = Arc::new(Recorder::default());
        let executor = executor(runs(Ok(()), 1), recorder.clone());
        executor
            .execute(&flow("Quick", Some(LastRunStatus::Failed)))
            .await
            .expect("a success");
        assert_eq!(
            recorder.seen(),
            [
                "started watched in_progress",
                "ended watched success after failed recorded=true"
            ]
        );
    }

    #[tokio::test]
    async fn an_end_that_could_not_be_recorded_is_reported_as_unrecorded() {
        let recorder = Arc::new(Recorder::default());
        let executor = executor(runs(Err(()), 1), recorder.clone());
        let error = executor
            .execute(&flow("Broken", None))
            .await
            .expect_err("recording failed");
        assert!(matches!(error, ExecuteError::Record { .. }), "{error}");
        assert_eq!(
            recorder.seen().last().map(String::as_str),
            Some("ended watched failed after nothing recorded=false")
        );
    }

    #[tokio::test]
    async fn a_panicking_observer_changes_neither_the_record_nor_the_result() {
        let recorder = Arc::new(Recorder {
            panics: true,
            ..Recorder::default()
        });
        // Exactly one finish_run per run: each end is recorded once, as without an observer.
        let executor = executor(runs(Ok(()), 2), recorder.clone());
        let run = executor
            .execute(&flow("Quick", None))
            .await
            .expect("the run succeeds whatever its observer does");
        assert_eq!(run.status, RunStatus::Success);
        let error = executor.execute(&flow("Broken", None)).await;
        assert!(
            matches!(error, Err(ExecuteError::Failed { .. })),
            "the flow's failure comes back unchanged"
        );
    }

    #[tokio::test]
    async fn a_scheduler_reports_its_cycles_and_reaped_runs_to_its_executor_observer() {
        let recorder = Arc::new(Recorder::default());
        let mut runs = runs(Ok(()), 0);
        runs.expect_reap_expired().returning(|_, _| {
            Ok(vec![DataFlowRun {
                status: RunStatus::Failed,
                ..DataFlowRun {
                    id: RunId(1),
                    data_flow_id: DataFlowId(3),
                    status: RunStatus::InProgress,
                    started_at: at(0),
                    ended_at: Some(at(1)),
                    error_message: None,
                    error_backtrace: None,
                    lease_owner: None,
                    lease_expires_at: None,
                    attempt: 1,
                    trigger: crate::model::Trigger::Schedule,
                    failure_kind: None,
                    cancel_requested: None,
                    output: String::new(),
                    created_at: at(0),
                    updated_at: at(0),
                }
            }])
        });
        let runs: Arc<dyn RunRepository> = Arc::new(runs);
        let mut clock = MockClock::new();
        clock.expect_now().returning(|| at(10));
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let executor = FlowExecutor::new(
            Arc::clone(&runs),
            Arc::new(ClassRegistry::new()),
            Arc::clone(&clock),
            LeaseSettings::new(LeaseOwner::new("test:1")),
        )
        .with_observer(recorder.clone());
        let mut flows = MockDataFlowRepository::new();
        flows.expect_list_due().returning(|_| Ok(Vec::new()));
        let scheduler = Scheduler::new(Arc::new(flows), runs, executor, clock);
        scheduler.dispatch().await.expect("a cycle");
        assert_eq!(recorder.seen(), ["reaped 1", "cycle due=Some(0)"]);
    }
}
