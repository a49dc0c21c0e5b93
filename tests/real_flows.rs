//! The `Command` class through the real stack (app, executor, SeaORM adapters) on every configured backend:
//! what a process writes and how it ends are what its stored run shows.

use std::time::Duration;

use flowrun_app::App;
use flowrun_domain::{DataFlow, FailureKind, FlowName, NewDataFlow, RunInterval, RunStatus, Timeout};
use flowrun_flows::CommandError;
use flowrun_tests::{fresh_databases, open, stored_run};
use serde_json::{Value, json};

async fn create(app: &App, name: &str, configuration: Value, timeout: Option<Timeout>) -> DataFlow {
    let new = NewDataFlow::new(
        FlowName::parse(name).expect("name"),
        "",
        true,
        configuration,
        RunInterval::DEFAULT.schedule(),
    )
    .expect("valid")
    .with_timeout(timeout);
    app.flows.create(new, app.clock.now()).await.expect("created")
}

/// Whether a process is still running (a zombie waiting to be reaped does not count).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

#[tokio::test]
async fn a_failing_command_run_stores_its_output_and_exit_code() {
    for db in fresh_databases().await {
        let (app, k) = (open(&db).await, db.kind.name());
        let flow = create(
            &app,
            "command-exit-3",
            json!({
                "class_name": "Command",
                "program": "sh",
                "args": ["-c", "echo out; echo err >&2; exit 3"],
            }),
            None,
        )
        .await;
        let error = app.executor.execute(&flow).await.expect_err("fails");
        let command_error = error
            .flow_error()
            .and_then(|e| e.downcast_ref::<CommandError>())
            .cloned();
        assert!(
            matches!(command_error, Some(CommandError::Exited { code: 3, .. })),
            "{k}: {error:?}"
        );
        let run = stored_run(&app, error.run_id().expect("a run")).await;
        assert_eq!(run.status, RunStatus::Failed, "{k}");
        assert_eq!(run.output, "out\nerr\n", "{k}");
        assert_eq!(
            run.error_message.as_deref(),
            Some("`sh` exited with code 3; last lines of stderr:\nerr"),
            "{k}"
        );
    }
}

#[tokio::test]
async fn a_successful_command_run_stores_its_output() {
    for db in fresh_databases().await {
        let (app, k) = (open(&db).await, db.kind.name());
        let flow = create(
            &app,
            "command-ok",
            json!({"class_name": "Command", "program": "echo", "args": ["hello", "wörld"]}),
            None,
        )
        .await;
        let run = app
            .executor
            .execute(&flow)
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        let run = stored_run(&app, run.id).await;
        assert_eq!(run.status, RunStatus::Success, "{k}");
        assert_eq!(run.output, "hello wörld\n", "{k}");
    }
}

#[tokio::test]
async fn a_command_that_outlives_its_timeout_leaves_no_process_behind() {
    for db in fresh_databases().await {
        let (app, k) = (open(&db).await, db.kind.name());
        let flow = create(
            &app,
            "command-timeout",
            json!({
                "class_name": "Command",
                "program": "sh",
                "args": ["-c", "sleep 600 & echo $!; sleep 600"],
            }),
            Some(Timeout::from_secs(1).expect("timeout")),
        )
        .await;
        let error = app.executor.execute(&flow).await.expect_err("times out");
        let run = stored_run(&app, error.run_id().expect("a run")).await;
        assert_eq!(run.status, RunStatus::Failed, "{k}");
        assert_eq!(run.failure_kind, Some(FailureKind::Timeout), "{k}: {run:?}");
        let sleep: i32 = run
            .output
            .lines()
            .next()
            .and_then(|l| l.parse().ok())
            .expect("the pid");
        let mut gone = false;
        for _ in 0..500 {
            if !alive(sleep) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "{k}: the background sleep outlived its run");
        assert!(
            run.output.contains("sending SIGTERM to the process group"),
            "{k}: {}",
            run.output
        );
    }
}
