//! The executor and scheduler on the real stack (SeaORM adapters, built-in flows, system clock) on every
//! configured backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowrun_app::{App, RunWriter, builtin_registry};
use flowrun_domain::{
    BuildFlowError, DataFlow, ExecuteError, Flow, FlowError, FlowFailure, FlowName, NewDataFlow, RunInterval,
    RunStatus,
};
use flowrun_flows::FailError;
use flowrun_tests::{fresh_databases, open, open_with, recent_runs, stored_run};
use serde_json::{Value, json};

async fn create(app: &App, name: &str, configuration: Value) -> DataFlow {
    let new = NewDataFlow::new(
        FlowName::parse(name).expect("name"),
        "",
        true,
        configuration,
        RunInterval::DEFAULT.schedule(),
    )
    .expect("valid");
    app.flows.create(new, app.clock.now()).await.expect("created")
}

#[tokio::test]
async fn req1_req4_a_successful_flow_is_recorded_as_success_on_run_and_flow() {
    for db in fresh_databases().await {
        let (app, k) = (open(&db).await, db.kind.name());
        let flow = create(&app, "noop", json!({"class_name": "Noop"})).await;
        let run = app
            .executor
            .execute(&flow)
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        assert_eq!(
            stored_run(&app, run.id).await,
            run,
            "{k}: the returned run is what is stored"
        );
        assert_eq!(run.status, RunStatus::Success, "{k}");
        assert!(run.ended_at.expect("ended") >= run.started_at, "{k}");
        let flow = app
            .flows
            .find_by_id(flow.id)
            .await
            .expect("query")
            .expect("found");
        assert_eq!(flow.last_run_at, run.ended_at, "{k}");
        assert_eq!(flow.last_run_status.map(|s| s.as_str()), Some("success"), "{k}");
    }
}

#[tokio::test]
async fn req5_a_failing_flow_is_recorded_with_message_and_backtrace_and_its_error_returned() {
    for db in fresh_databases().await {
        let (app, k) = (open(&db).await, db.kind.name());
        let flow = create(
            &app,
            "fail",
            json!({"class_name": "Fail", "message": "disk \0 full"}),
        )
        .await;
        let error = app.executor.execute(&flow).await.expect_err("fails");
        let run_id = error.run_id().expect("a run was recorded");
        let fail = error
            .flow_error()
            .and_then(|e| e.downcast_ref::<FailError>())
            .cloned();
        assert_eq!(
            fail,
            Some(FailError {
                message: "disk \0 full".into()
            }),
            "{k}: the flow's own error"
        );
        let run = stored_run(&app, run_id).await;
        assert_eq!(run.status, RunStatus::Failed, "{k}");
        assert_eq!(run.error_message.as_deref(), Some("disk \u{FFFD} full"), "{k}");
        let backtrace = run.error_backtrace.expect("backtrace");
        assert!(
            backtrace.contains("flowrun_flows::Fail"),
            "{k}: reaches into the flow: {backtrace}"
        );
        let flow = app
            .flows
            .find_by_id(flow.id)
            .await
            .expect("query")
            .expect("found");
        assert_eq!(flow.last_run_status.map(|s| s.as_str()), Some("failed"), "{k}");
        assert_eq!(flow.last_run_at, run.ended_at, "{k}");
    }
}

#[tokio::test]
async fn a_panicking_flow_is_recorded_as_failed_with_its_location() {
    for db in fresh_databases().await {
        let (app, k) = (open(&db).await, db.kind.name());
        let flow = create(
            &app,
            "panic",
            json!({"class_name": "Panic", "message": "invariant broken"}),
        )
        .await;
        let error = app.executor.execute(&flow).await.expect_err("fails");
        assert!(
            matches!(
                error,
                ExecuteError::Failed {
                    failure: FlowFailure::Panic(_),
                    ..
                }
            ),
            "{k}: {error:?}"
        );
        let run = stored_run(&app, error.run_id().expect("run")).await;
        assert_eq!(
            run.error_message.as_deref(),
            Some("flow panicked: invariant broken"),
            "{k}"
        );
        assert!(
            run.error_backtrace
                .expect("backtrace")
                .contains("crates/flows/src/lib.rs"),
            "{k}"
        );
    }
}

#[tokio::test]
async fn an_unknown_class_is_recorded_as_a_failed_run() {
    for db in fresh_databases().await {
        let (app, k) = (open(&db).await, db.kind.name());
        let flow = create(&app, "ghost", json!("Ghost")).await;
        let error = app.executor.execute(&flow).await.expect_err("fails");
        assert!(
            error
                .flow_error()
                .and_then(|e| e.downcast_ref::<BuildFlowError>())
                .is_some(),
            "{k}"
        );
        let run = stored_run(&app, error.run_id().expect("run")).await;
        assert_eq!(run.status, RunStatus::Failed, "{k}");
        assert!(
            run.error_message
                .expect("message")
                .starts_with("unknown flow class `Ghost`"),
            "{k}"
        );
    }
}

/// Fails after closing the pool, so recording its failure is impossible.
struct CutsTheConnection(RunWriter);

#[async_trait]
impl Flow for CutsTheConnection {
    async fn run(&mut self, _context: &mut flowrun_domain::RunContext) -> Result<(), FlowError> {
        let _ = self.0.close().await;
        Err(FlowError::msg("the flow's own failure"))
    }
}

#[tokio::test]
async fn a_lost_connection_between_steps_reports_both_errors() {
    for db in fresh_databases().await {
        let k = db.kind.name();
        let setup = open(&db).await;
        let flow = create(&setup, "cut", json!("Cut")).await;
        let victim = open(&db).await;
        let mut registry = builtin_registry();
        let writer = victim.run_writer().clone();
        registry.register_fn("Cut", move |_| Ok(Box::new(CutsTheConnection(writer.clone()))));
        let app = App::wire(
            victim.run_writer().clone(),
            victim.backend(),
            String::new(),
            registry,
            // Short: the end cannot be recorded, and the executor keeps trying for one lease length.
            Duration::from_secs(2),
        );
        let error = app.executor.execute(&flow).await.expect_err("fails");
        assert!(matches!(error, ExecuteError::Record { .. }), "{k}: {error:?}");
        let message = error.to_string();
        assert!(message.contains("the flow's own failure"), "{k}: {message}");
        assert!(error.flow_error().is_some(), "{k}: the flow's error is not lost");
        let run = stored_run(&setup, error.run_id().expect("run")).await;
        assert_eq!(
            run.status,
            RunStatus::InProgress,
            "{k}: left for the reaper, not silently rewritten"
        );
    }
}

#[tokio::test]
async fn a_scheduler_cycle_runs_each_due_flow_once_and_counts_failures() {
    for db in fresh_databases().await {
        let (app, k) = (open(&db).await, db.kind.name());
        create(&app, "ok", json!("Noop")).await;
        create(&app, "bad", json!({"class_name": "Fail"})).await;
        let report = app
            .scheduler
            .run_cycle()
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        assert_eq!(
            (report.flows_due, report.flows_triggered, report.flows_failed),
            (2, 2, 1),
            "{k}"
        );
        let again = app.scheduler.run_cycle().await.expect("cycle");
        assert_eq!(
            (again.flows_due, again.flows_triggered),
            (0, 0),
            "{k}: not due again within the interval"
        );
    }
}

#[tokio::test]
async fn concurrent_schedulers_never_overlap_and_run_each_flow_once_per_window() {
    for db in fresh_databases().await {
        let k = db.kind.name();
        let first = open(&db).await;
        for i in 0..6 {
            create(
                &first,
                &format!("flow-{i}"),
                json!({"class_name": "Sleep", "seconds": 0.05}),
            )
            .await;
        }
        let mut schedulers = vec![first];
        for _ in 0..3 {
            schedulers.push(open(&db).await);
        }
        let schedulers = Arc::new(schedulers);
        let mut tasks = Vec::new();
        for round in 0..3 {
            for i in 0..schedulers.len() {
                let schedulers = Arc::clone(&schedulers);
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(round * 20)).await;
                    schedulers[i]
                        .scheduler
                        .run_cycle()
                        .await
                        .map(|r| r.flows_triggered)
                }));
            }
        }
        let mut triggered = 0;
        for task in tasks {
            triggered += task.await.expect("joined").unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        let app = &schedulers[0];
        let runs = recent_runs(app, 1000).await;
        assert_eq!(triggered, 6, "{k}: six due flows, six runs in all");
        assert_eq!(runs.len(), 6, "{k}");
        let mut names: Vec<&str> = runs.iter().map(|r| r.flow_name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 6, "{k}: each flow exactly once");
        assert!(runs.iter().all(|r| r.run.status == RunStatus::Success), "{k}");
    }
}

#[tokio::test]
async fn a_flow_already_running_is_refused_without_a_new_run() {
    for db in fresh_databases().await {
        let (app, k) = (
            open_with(&db, builtin_registry(), Duration::from_secs(30)).await,
            db.kind.name(),
        );
        let flow = create(&app, "slow", json!({"class_name": "Sleep", "seconds": 0.5})).await;
        let executor = app.executor.clone();
        let running = flow.clone();
        let first = tokio::spawn(async move { executor.execute(&running).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        let second = app.executor.execute(&flow).await;
        assert!(
            matches!(second, Err(ExecuteError::AlreadyRunning { .. })),
            "{k}: {second:?}"
        );
        first
            .await
            .expect("joined")
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        let runs = recent_runs(&app, 10).await;
        assert_eq!(runs.len(), 1, "{k}");
    }
}

#[tokio::test]
async fn a_claim_held_by_a_dead_process_expires_and_the_scheduler_runs_the_flow_again() {
    for db in fresh_databases().await {
        let (app, k) = (open(&db).await, db.kind.name());
        let new = NewDataFlow::new(
            FlowName::parse("f").expect("name"),
            "",
            true,
            json!("Noop"),
            RunInterval::from_secs(1).expect("interval").schedule(),
        )
        .expect("valid");
        let flow = app.flows.create(new, app.clock.now()).await.expect("created");
        // A process claims the flow with a 1 s lease and dies: nobody renews or finishes the run.
        let now = app.clock.now();
        let dead = app
            .runs
            .start_run(flowrun_domain::StartRun {
                data_flow_id: flow.id,
                started_at: now,
                lease_owner: flowrun_domain::LeaseOwner::new("dead-host:999"),
                lease_expires_at: now + chrono::Duration::seconds(1),
                claim: flowrun_domain::Claim::Manual,
                trigger: flowrun_domain::Trigger::Manual,
                attempt: 1,
            })
            .await
            .expect("claimed");
        let blocked = app.scheduler.run_cycle().await.expect("cycle");
        assert_eq!(
            (blocked.flows_due, blocked.flows_triggered),
            (0, 0),
            "{k}: held while the lease lives"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let reaping = app.scheduler.run_cycle().await.expect("cycle");
        assert_eq!(reaping.runs_reaped, 1, "{k}");
        let closed = stored_run(&app, dead.id).await;
        assert_eq!(closed.status, RunStatus::Failed, "{k}");
        assert!(
            closed.error_message.expect("message").contains("dead-host:999"),
            "{k}"
        );
        // The reap counts as the flow's last (failed) run; one interval later the flow is due again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let rerun = app.scheduler.run_cycle().await.expect("cycle");
        assert_eq!(
            (rerun.flows_due, rerun.flows_triggered, rerun.flows_failed),
            (1, 1, 0),
            "{k}"
        );
    }
}
