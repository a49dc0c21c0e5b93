//! One suite for the repository adapters, run on every configured backend (SQLite always; PostgreSQL and
//! MariaDB when their URLs are set). Every backend must behave identically.

use chrono::{DateTime, Duration, TimeZone, Utc};
use flowrun_app::App;
use flowrun_domain::{
    Claim, CreateDataFlowError, DataFlow, DataFlowId, FinishRunError, FlowName, LeaseOwner, NewDataFlow,
    RunFilter, RunId, RunInterval, RunOutcome, RunStatus, StartRun, StartRunError, Trigger,
};
use flowrun_infra::SeaOrmRunRepository;
use flowrun_tests::{Kind, TestDatabase, fresh_databases, open, recent_runs, stored_run};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use std::sync::Arc;

fn t(secs: i64) -> DateTime<Utc> {
    // Microseconds on purpose: every backend must keep them.
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
        .single()
        .expect("valid")
        + Duration::seconds(secs)
        + Duration::microseconds(123_456)
}

async fn create(app: &App, name: &str, config: serde_json::Value) -> DataFlow {
    let new = NewDataFlow::new(
        FlowName::parse(name).expect("name"),
        "d",
        true,
        config,
        RunInterval::DEFAULT.schedule(),
    )
    .expect("valid flow");
    app.flows.create(new, t(0)).await.expect("created")
}

fn start(flow: &DataFlow, at: DateTime<Utc>) -> StartRun {
    StartRun {
        data_flow_id: flow.id,
        started_at: at,
        lease_owner: LeaseOwner::new("host:1"),
        lease_expires_at: at + Duration::seconds(60),
        claim: Claim::Manual,
        trigger: Trigger::Manual,
        attempt: 1,
    }
}

/// A scheduler's start at `at` that moves the flow's next run to `next`.
fn start_due(flow: &DataFlow, at: DateTime<Utc>, next: Option<DateTime<Utc>>) -> StartRun {
    StartRun {
        claim: Claim::Due { next_run_at: next },
        ..start(flow, at)
    }
}

async fn next_run_at(app: &App, flow: &DataFlow) -> Option<DateTime<Utc>> {
    app.flows
        .find_by_id(flow.id)
        .await
        .expect("query")
        .expect("found")
        .next_run_at
}

/// Runs `scenario` on an app of every backend whose run repository is the adapter alone, without a clock:
/// the suite gives every time explicitly, and the adapter records exactly those.
async fn each_backend(mut scenario: impl AsyncFnMut(&TestDatabase, App, &'static str)) {
    for db in fresh_databases().await {
        let mut app = open(&db).await;
        app.runs = Arc::new(SeaOrmRunRepository::with_writer(app.run_writer().clone()));
        scenario(&db, app, db.kind.name()).await;
    }
}

#[tokio::test]
async fn flows_are_created_found_listed_toggled_and_deleted() {
    each_backend(async |_, app, k| {
        let flow = create(&app, "b-flow", json!({"class_name": "Noop", "x": [1, 2]})).await;
        create(&app, "a-flow", json!("Noop")).await;
        let found = app
            .flows
            .find_by_name("b-flow")
            .await
            .expect("query")
            .expect("found");
        assert_eq!(found, flow, "{k}: reads back what was written");
        assert_eq!(
            app.flows.find_by_id(flow.id).await.expect("query"),
            Some(flow.clone()),
            "{k}"
        );
        let names: Vec<String> = app
            .flows
            .list()
            .await
            .expect("list")
            .iter()
            .map(|f| f.name.to_string())
            .collect();
        assert_eq!(names, ["a-flow", "b-flow"], "{k}: listed by name");
        let disabled = app
            .flows
            .set_enabled("b-flow", false, t(1))
            .await
            .expect("toggle")
            .expect("exists");
        assert!(!disabled.enabled, "{k}");
        assert_eq!(disabled.updated_at, t(1), "{k}");
        assert_eq!(
            app.flows.set_enabled("nope", false, t(1)).await.expect("toggle"),
            None,
            "{k}"
        );
        assert!(app.flows.delete("b-flow").await.expect("delete"), "{k}");
        assert!(!app.flows.delete("b-flow").await.expect("delete"), "{k}");
    })
    .await;
}

#[tokio::test]
async fn duplicate_names_are_refused_as_duplicates() {
    each_backend(async |_, app, k| {
        create(&app, "dup", json!("Noop")).await;
        let again = NewDataFlow::new(
            FlowName::parse("dup").expect("name"),
            "",
            true,
            json!("Noop"),
            RunInterval::DEFAULT.schedule(),
        )
        .expect("valid");
        let error = app.flows.create(again, t(0)).await.expect_err("duplicate");
        assert!(
            matches!(error, CreateDataFlowError::Duplicate(_)),
            "{k}: {error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn names_compare_exactly_on_every_backend() {
    each_backend(async |_, app, k| {
        create(&app, "Report", json!("Noop")).await;
        create(&app, "report", json!("Noop")).await;
        assert_eq!(
            app.flows.list().await.expect("list").len(),
            2,
            "{k}: names are case-sensitive"
        );
        create(&app, "çà🦀", json!("Noop")).await;
        assert!(
            app.flows.find_by_name("çà🦀").await.expect("query").is_some(),
            "{k}: any Unicode"
        );
    })
    .await;
}

/// Installs triggers that log every status a run row takes, to observe the steps inside a transaction.
async fn log_status_changes(app: &App, kind: Kind) {
    let db = app.connection();
    let backend = db.get_database_backend();
    let statements: Vec<&str> = match kind {
        Kind::Sqlite => vec![
            "CREATE TABLE status_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id BIGINT, status TEXT)",
            "CREATE TRIGGER log_insert AFTER INSERT ON data_flow_runs BEGIN INSERT INTO status_log (run_id, status) VALUES (NEW.id, NEW.status); END",
            "CREATE TRIGGER log_update AFTER UPDATE OF status ON data_flow_runs BEGIN INSERT INTO status_log (run_id, status) VALUES (NEW.id, NEW.status); END",
        ],
        Kind::Postgres => vec![
            "CREATE TABLE status_log (seq BIGSERIAL PRIMARY KEY, run_id BIGINT, status TEXT)",
            "CREATE FUNCTION log_status() RETURNS trigger AS $$ BEGIN INSERT INTO status_log (run_id, status) VALUES (NEW.id, NEW.status); RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER log_insert AFTER INSERT ON data_flow_runs FOR EACH ROW EXECUTE FUNCTION log_status()",
            "CREATE TRIGGER log_update AFTER UPDATE OF status ON data_flow_runs FOR EACH ROW EXECUTE FUNCTION log_status()",
        ],
        Kind::MySql => vec![
            "CREATE TABLE status_log (seq BIGINT AUTO_INCREMENT PRIMARY KEY, run_id BIGINT, status VARCHAR(16))",
            "CREATE TRIGGER log_insert AFTER INSERT ON data_flow_runs FOR EACH ROW INSERT INTO status_log (run_id, status) VALUES (NEW.id, NEW.status)",
            "CREATE TRIGGER log_update AFTER UPDATE ON data_flow_runs FOR EACH ROW INSERT INTO status_log (run_id, status) VALUES (NEW.id, NEW.status)",
        ],
    };
    for sql in statements {
        db.execute_raw(Statement::from_string(backend, sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

async fn status_log(app: &App) -> Vec<String> {
    let db = app.connection();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT status FROM status_log ORDER BY seq",
        ))
        .await
        .expect("read the log");
    rows.iter()
        .map(|row| row.try_get::<String>("", "status").expect("status"))
        .collect()
}

#[tokio::test]
async fn req2_1_and_req2_3_a_run_is_inserted_pending_then_moved_to_in_progress_in_one_step() {
    each_backend(async |db, app, k| {
        log_status_changes(&app, db.kind).await;
        let flow = create(&app, "f", json!("Noop")).await;
        let run = app.runs.start_run(start(&flow, t(10))).await.expect("started");
        assert_eq!(run.status, RunStatus::InProgress, "{k}");
        assert_eq!(status_log(&app).await, ["pending", "in_progress"], "{k}");
        app.runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(11)))
            .await
            .expect("finished");
        assert_eq!(
            status_log(&app).await,
            ["pending", "in_progress", "success"],
            "{k}"
        );
    })
    .await;
}

#[tokio::test]
async fn req2_2_req2_4_req4_5_started_runs_are_stored_with_their_flow_and_exact_utc_timestamps() {
    each_backend(async |_, app, k| {
        let flow = create(&app, "f", json!("Noop")).await;
        let run = app.runs.start_run(start(&flow, t(10))).await.expect("started");
        let stored = app.runs.find_run(run.id).await.expect("query").expect("found");
        assert_eq!(stored.run, run, "{k}: what start_run returns is what is stored");
        assert_eq!(stored.flow_name, "f", "{k}");
        assert_eq!(stored.run.data_flow_id, flow.id, "{k}");
        assert_eq!(stored.run.started_at, t(10), "{k}: microseconds round-trip");
        assert_eq!(stored.run.lease_owner.as_deref(), Some("host:1"), "{k}");
        let reread = app
            .flows
            .find_by_id(flow.id)
            .await
            .expect("query")
            .expect("found");
        assert_eq!(reread.created_at, t(0), "{k}");
        assert_eq!(reread.created_at.timezone(), Utc, "{k}");
    })
    .await;
}

#[tokio::test]
async fn req4_1_to_req4_5_success_is_persisted_on_the_run_and_the_flow() {
    each_backend(async |_, app, k| {
        let flow = create(&app, "f", json!("Noop")).await;
        let run = app.runs.start_run(start(&flow, t(10))).await.expect("started");
        app.runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(12)))
            .await
            .expect("finished");
        let stored = stored_run(&app, run.id).await;
        assert_eq!(stored.status, RunStatus::Success, "{k}");
        assert_eq!(stored.ended_at, Some(t(12)), "{k}");
        assert_eq!(stored.error_message, None, "{k}");
        let flow = app
            .flows
            .find_by_id(flow.id)
            .await
            .expect("query")
            .expect("found");
        assert_eq!(flow.last_run_at, Some(t(12)), "{k}");
        assert_eq!(flow.last_run_status.map(|s| s.as_str()), Some("success"), "{k}");
    })
    .await;
}

#[tokio::test]
async fn req5_failure_details_are_persisted_whatever_the_text_contains() {
    each_backend(async |_, app, k| {
        let flow = create(&app, "f", json!("Noop")).await;
        let cases = [
            "nul \0 inside".to_owned(),
            format!("huge {}", "x".repeat(1024 * 1024)),
            "unicode é🦀\u{FFFD}".to_owned(),
        ];
        for message in cases {
            let run = app.runs.start_run(start(&flow, t(10))).await.expect("started");
            let outcome = RunOutcome::failure(t(13), message.clone(), format!("trace for {message}"));
            app.runs
                .finish_run(run.id, flow.id, outcome)
                .await
                .unwrap_or_else(|e| panic!("{k}: {e}"));
            let stored = stored_run(&app, run.id).await;
            assert_eq!(stored.status, RunStatus::Failed, "{k}");
            assert_eq!(stored.ended_at, Some(t(13)), "{k}");
            let stored_message = stored.error_message.expect("message");
            let prefix: String = message.replace('\0', "\u{FFFD}").chars().take(200).collect();
            assert!(
                stored_message.starts_with(&prefix),
                "{k}: stored message starts with the original"
            );
            assert!(
                stored_message.len() <= flowrun_infra::text::MAX_ERROR_MESSAGE_BYTES,
                "{k}"
            );
            assert!(
                stored
                    .error_backtrace
                    .expect("backtrace")
                    .starts_with("trace for"),
                "{k}"
            );
        }
        let flow = app
            .flows
            .find_by_id(flow.id)
            .await
            .expect("query")
            .expect("found");
        assert_eq!(flow.last_run_status.map(|s| s.as_str()), Some("failed"), "{k}");
        assert_eq!(flow.last_run_at, Some(t(13)), "{k}");
    })
    .await;
}

#[tokio::test]
async fn a_flow_cannot_be_started_twice_at_once_and_is_free_again_after_finishing() {
    each_backend(async |_, app, k| {
        let flow = create(&app, "f", json!("Noop")).await;
        let first = app.runs.start_run(start(&flow, t(10))).await.expect("started");
        match app.runs.start_run(start(&flow, t(11))).await {
            Err(StartRunError::Busy(active)) => {
                assert_eq!(active.run_id, first.id, "{k}");
                assert_eq!(active.started_at, t(10), "{k}");
            }
            other => panic!("{k}: expected Busy, got {other:?}"),
        }
        let runs = recent_runs(&app, 10).await;
        assert_eq!(runs.len(), 1, "{k}: the refused start wrote nothing");
        app.runs
            .finish_run(first.id, flow.id, RunOutcome::success(t(12)))
            .await
            .expect("finished");
        app.runs.start_run(start(&flow, t(13))).await.expect("free again");
    })
    .await;
}

#[tokio::test]
async fn due_starts_take_one_slot_each_move_next_run_at_and_are_refused_early_or_when_disabled() {
    each_backend(async |_, app, k| {
        let flow = create(&app, "f", json!("Noop")).await;
        assert_eq!(
            next_run_at(&app, &flow).await,
            Some(t(0)),
            "{k}: a new interval flow is due at once"
        );
        let run = app
            .runs
            .start_run(start_due(&flow, t(30), Some(t(3600))))
            .await
            .unwrap_or_else(|e| panic!("{k}: due since t(0): {e}"));
        assert_eq!(
            next_run_at(&app, &flow).await,
            Some(t(3600)),
            "{k}: the claim moved the slot"
        );
        app.runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(40)))
            .await
            .expect("finished");
        assert!(
            matches!(
                app.runs.start_run(start_due(&flow, t(50), Some(t(7200)))).await,
                Err(StartRunError::NotDue)
            ),
            "{k}: that slot was taken; the next is at t(3600)"
        );
        assert_eq!(
            next_run_at(&app, &flow).await,
            Some(t(3600)),
            "{k}: a refused claim changes nothing"
        );
        let manual = app
            .runs
            .start_run(start(&flow, t(60)))
            .await
            .expect("a manual start");
        assert_eq!(
            next_run_at(&app, &flow).await,
            Some(t(3600)),
            "{k}: manual runs keep the schedule"
        );
        app.runs
            .finish_run(manual.id, flow.id, RunOutcome::success(t(61)))
            .await
            .expect("finished");
        let at_slot = app
            .runs
            .start_run(start_due(&flow, t(3600), None))
            .await
            .unwrap_or_else(|e| panic!("{k}: due exactly at its slot: {e}"));
        app.runs
            .finish_run(at_slot.id, flow.id, RunOutcome::success(t(3601)))
            .await
            .expect("finished");
        assert_eq!(
            next_run_at(&app, &flow).await,
            None,
            "{k}: a schedule without a next time"
        );
        assert!(
            app.flows.list_due(t(1_000_000)).await.expect("due").is_empty(),
            "{k}: a flow without a next run time is never due"
        );
        let yearly = create(&app, "far", json!("Noop")).await;
        let far = t(0) + Duration::days(60 * 365);
        app.runs
            .start_run(start_due(&yearly, t(30), Some(far)))
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        assert_eq!(
            next_run_at(&app, &yearly).await,
            Some(far),
            "{k}: a next run beyond 2038 is kept (MySQL's TIMESTAMP range ends there)"
        );
        let off = create(&app, "off", json!("Noop")).await;
        app.flows.set_enabled("off", false, t(30)).await.expect("toggle");
        assert!(
            matches!(
                app.runs.start_run(start_due(&off, t(30), Some(t(90)))).await,
                Err(StartRunError::NotDue)
            ),
            "{k}: a disabled flow is never due"
        );
        app.runs
            .start_run(start(&off, t(30)))
            .await
            .unwrap_or_else(|e| panic!("{k}: a disabled flow still runs when asked to: {e}"));
        let mut gone = start(&flow, t(40));
        gone.data_flow_id = DataFlowId(999_999);
        assert!(
            matches!(app.runs.start_run(gone).await, Err(StartRunError::FlowNotFound)),
            "{k}"
        );
    })
    .await;
}

#[tokio::test]
async fn expired_runs_are_reaped_once_and_their_late_outcome_is_refused() {
    each_backend(async |_, app, k| {
        let flow = create(&app, "f", json!("Noop")).await;
        let run = app.runs.start_run(start(&flow, t(10))).await.expect("started");
        assert!(
            app.runs.reap_expired(t(60), None).await.expect("reap").is_empty(),
            "{k}: lease still valid"
        );
        assert!(app.runs.renew_lease(run.id, t(100)).await.expect("renew"), "{k}");
        assert!(
            app.runs.reap_expired(t(90), None).await.expect("reap").is_empty(),
            "{k}: renewed"
        );
        let reaped = app.runs.reap_expired(t(101), None).await.expect("reap");
        assert_eq!(reaped.len(), 1, "{k}");
        let stored = stored_run(&app, run.id).await;
        assert_eq!(stored.status, RunStatus::Failed, "{k}");
        assert_eq!(stored.ended_at, Some(t(101)), "{k}");
        let message = stored.error_message.expect("message");
        assert!(
            message.contains("abandoned") && message.contains("host:1"),
            "{k}: {message}"
        );
        assert!(
            app.runs
                .reap_expired(t(200), None)
                .await
                .expect("reap")
                .is_empty(),
            "{k}: reaped once"
        );
        assert!(
            !app.runs.renew_lease(run.id, t(300)).await.expect("renew"),
            "{k}: no renewal after reap"
        );
        let late = app
            .runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(300)))
            .await;
        assert!(
            matches!(late, Err(FinishRunError::NotInProgress { .. })),
            "{k}: {late:?}"
        );
        let flow = app
            .flows
            .find_by_id(flow.id)
            .await
            .expect("query")
            .expect("found");
        assert_eq!(flow.last_run_status.map(|s| s.as_str()), Some("failed"), "{k}");
        assert_eq!(flow.last_run_at, Some(t(101)), "{k}");
        app.runs
            .start_run(start(&flow, t(301)))
            .await
            .expect("free after the reap");
    })
    .await;
}

#[tokio::test]
async fn history_is_listed_newest_first_with_filters_and_limit() {
    each_backend(async |_, app, k| {
        let a = create(&app, "a", json!("Noop")).await;
        let b = create(&app, "b", json!("Noop")).await;
        let mut ids = Vec::new();
        for (i, flow) in [&a, &b, &a].into_iter().enumerate() {
            let run = app
                .runs
                .start_run(start(flow, t(i as i64)))
                .await
                .expect("started");
            let outcome = if i == 1 {
                RunOutcome::failure(t(50), "x".into(), "y".into())
            } else {
                RunOutcome::success(t(50))
            };
            app.runs
                .finish_run(run.id, flow.id, outcome)
                .await
                .expect("finished");
            ids.push(run.id);
        }
        let all = recent_runs(&app, 10).await;
        let listed: Vec<RunId> = all.iter().map(|r| r.run.id).collect();
        assert_eq!(listed, [ids[2], ids[1], ids[0]], "{k}: newest first");
        let of_a = app
            .runs
            .list_runs(RunFilter {
                data_flow_id: Some(a.id),
                limit: 10,
                ..RunFilter::default()
            })
            .await
            .expect("list");
        assert!(of_a.iter().all(|r| r.flow_name == "a") && of_a.len() == 2, "{k}");
        let failed = app
            .runs
            .list_runs(RunFilter {
                status: Some(RunStatus::Failed),
                limit: 10,
                ..RunFilter::default()
            })
            .await
            .expect("list");
        assert_eq!(failed.len(), 1, "{k}");
        assert_eq!(failed[0].flow_name, "b", "{k}");
        let one = recent_runs(&app, 1).await;
        assert_eq!(one.len(), 1, "{k}");
        assert!(
            app.runs.find_run(RunId(123_456)).await.expect("query").is_none(),
            "{k}"
        );
    })
    .await;
}

#[tokio::test]
async fn deleting_a_flow_deletes_its_runs() {
    each_backend(async |_, app, k| {
        let flow = create(&app, "f", json!("Noop")).await;
        let run = app.runs.start_run(start(&flow, t(1))).await.expect("started");
        app.runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(2)))
            .await
            .expect("finished");
        app.flows.delete("f").await.expect("delete");
        assert!(
            app.runs.find_run(run.id).await.expect("query").is_none(),
            "{k}: cascaded"
        );
    })
    .await;
}

#[tokio::test]
async fn due_flows_are_enabled_idle_and_past_their_next_run_time_soonest_first() {
    each_backend(async |_, app, k| {
        let never = create(&app, "never-ran", json!("Noop")).await;
        let later = create(&app, "later", json!("Noop")).await;
        let old = create(&app, "old", json!("Noop")).await;
        let off = create(&app, "off", json!("Noop")).await;
        app.flows.set_enabled("off", false, t(0)).await.expect("toggle");
        for (flow, next) in [(&later, t(5000)), (&old, t(100))] {
            let run = app
                .runs
                .start_run(start_due(flow, t(1), Some(next)))
                .await
                .expect("started");
            app.runs
                .finish_run(run.id, flow.id, RunOutcome::success(t(2)))
                .await
                .expect("finished");
        }
        let running = create(&app, "running", json!("Noop")).await;
        app.runs.start_run(start(&running, t(1))).await.expect("started");
        let due: Vec<String> = app
            .flows
            .list_due(t(3700))
            .await
            .expect("due")
            .iter()
            .map(|f| f.name.to_string())
            .collect();
        assert_eq!(due, ["never-ran", "old"], "{k}");
        let _ = (never, off);
    })
    .await;
}

#[tokio::test]
async fn a_row_corrupted_by_hand_is_skipped_and_the_other_due_flows_are_listed() {
    each_backend(async |_, app, k| {
        let good = create(&app, "good", json!("Noop")).await;
        let bad_json = create(&app, "bad-json", json!("Noop")).await;
        let bad_cron = create(&app, "bad-cron", json!("Noop")).await;
        let db = app.connection();
        let backend = db.get_database_backend();
        for sql in [
            format!(
                "UPDATE data_flows SET configuration = 'not json' WHERE id = {}",
                bad_json.id
            ),
            format!(
                "UPDATE data_flows SET schedule_cron = 'every full moon' WHERE id = {}",
                bad_cron.id
            ),
        ] {
            db.execute_raw(Statement::from_string(backend, sql))
                .await
                .unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        let due: Vec<String> = app
            .flows
            .list_due(t(10))
            .await
            .unwrap_or_else(|e| panic!("{k}: one bad row must not fail the listing: {e}"))
            .iter()
            .map(|f| f.name.to_string())
            .collect();
        assert_eq!(due, [good.name.to_string()], "{k}");
    })
    .await;
}

#[tokio::test]
async fn the_database_enforces_statuses_and_positive_intervals() {
    each_backend(async |_, app, k| {
        let flow = create(&app, "f", json!("Noop")).await;
        let db = app.connection();
        let backend = db.get_database_backend();
        let bad_status = format!(
            "UPDATE data_flows SET last_run_status = 'running' WHERE id = {}",
            flow.id
        );
        assert!(
            db.execute_raw(Statement::from_string(backend, bad_status))
                .await
                .is_err(),
            "{k}: CHECK on status"
        );
        let bad_interval = format!(
            "UPDATE data_flows SET run_interval_secs = 0 WHERE id = {}",
            flow.id
        );
        assert!(
            db.execute_raw(Statement::from_string(backend, bad_interval))
                .await
                .is_err(),
            "{k}: CHECK on interval"
        );
    })
    .await;
}

#[tokio::test]
async fn migrating_again_is_a_no_op() {
    each_backend(async |db, app, k| {
        create(&app, "kept", json!("Noop")).await;
        flowrun_infra::migrate(app.connection(), &db.url)
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        let again = open(db).await;
        assert!(
            again.flows.find_by_name("kept").await.expect("query").is_some(),
            "{k}"
        );
    })
    .await;
}

/// Names of the indexes on `data_flow_runs`.
async fn run_indexes(app: &App, kind: Kind) -> Vec<String> {
    let sql = match kind {
        Kind::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'data_flow_runs'",
        Kind::Postgres => "SELECT indexname FROM pg_indexes WHERE tablename = 'data_flow_runs'",
        Kind::MySql => {
            "SELECT DISTINCT index_name FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = 'data_flow_runs'"
        }
    };
    let db = app.connection();
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("index names");
    let mut names: Vec<String> = rows
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("a name"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_reaper_index_holds_only_live_runs_where_the_backend_allows_it() {
    each_backend(async |db, app, k| {
        let names = run_indexes(&app, db.kind).await;
        let (present, absent) = if db.kind == Kind::MySql {
            ("idx_data_flow_runs_lease", "idx_data_flow_runs_live_lease")
        } else {
            ("idx_data_flow_runs_live_lease", "idx_data_flow_runs_lease")
        };
        assert!(names.iter().any(|n| n == present), "{k}: {names:?}");
        assert!(!names.iter().any(|n| n == absent), "{k}: {names:?}");

        // The migration can be taken back and applied again, and the reaper works on the result.
        use flowrun_migration::MigratorTrait as _;
        // Down through the later migrations and the lease index (the second), and back up.
        let from_lease_index =
            u32::try_from(flowrun_migration::Migrator::migrations().len() - 1).expect("few");
        flowrun_migration::Migrator::down(app.connection(), Some(from_lease_index))
            .await
            .unwrap_or_else(|e| panic!("{k}: down: {e}"));
        assert!(
            run_indexes(&app, db.kind)
                .await
                .iter()
                .any(|n| n == "idx_data_flow_runs_lease"),
            "{k}: down restores the full index"
        );
        flowrun_infra::migrate(app.connection(), &db.url)
            .await
            .unwrap_or_else(|e| panic!("{k}: up: {e}"));
        assert_eq!(run_indexes(&app, db.kind).await, names, "{k}");
        let flow = create(&app, "f", json!("Noop")).await;
        app.runs.start_run(start(&flow, t(10))).await.expect("started");
        let reaped = app.runs.reap_expired(t(100), None).await.expect("reap");
        assert_eq!(reaped.len(), 1, "{k}");
    })
    .await;
}

/// Runs `flow` once, from `at` to one second later, with the given outcome.
async fn finished_run(app: &App, flow: &DataFlow, at: i64, ok: bool) -> RunId {
    let run = app.runs.start_run(start(flow, t(at))).await.expect("started");
    let outcome = if ok {
        RunOutcome::success(t(at + 1))
    } else {
        RunOutcome::failure(t(at + 1), "boom".into(), "trace".into())
    };
    app.runs
        .finish_run(run.id, flow.id, outcome)
        .await
        .expect("finished");
    run.id
}

#[tokio::test]
async fn an_update_changes_only_what_it_is_given_and_keeps_the_id_and_the_history() {
    use flowrun_domain::{CronSchedule, FlowChanges, Schedule, ScheduleChange};
    each_backend(async |_, app, k| {
        let flow = create(&app, "f", json!({"class_name": "Sleep", "seconds": 0})).await;
        let run = finished_run(&app, &flow, 10, false).await;
        let before = app
            .flows
            .find_by_id(flow.id)
            .await
            .expect("query")
            .expect("found");

        let described = app
            .flows
            .update(
                flow.id,
                FlowChanges {
                    description: Some("new\0text".into()),
                    ..FlowChanges::default()
                },
                t(20),
            )
            .await
            .expect("update")
            .expect("exists");
        assert_eq!(
            described,
            flowrun_domain::DataFlow {
                description: "new\u{FFFD}text".into(),
                updated_at: t(20),
                ..before.clone()
            },
            "{k}: only the description and updated_at change; last run, next run and id stay"
        );

        // Past 2038 on purpose: MySQL must not turn it into NULL.
        let cron = Schedule::Cron(CronSchedule::parse("0 2 1 1 *", Some("Europe/Berlin")).expect("cron"));
        let far = Utc.with_ymd_and_hms(2040, 1, 1, 1, 0, 0).single().expect("valid");
        let changed = app
            .flows
            .update(
                flow.id,
                FlowChanges {
                    configuration: Some(json!({"class_name": "Noop"})),
                    schedule: Some(ScheduleChange {
                        schedule: cron.clone(),
                        next_run_at: Some(far),
                    }),
                    ..FlowChanges::default()
                },
                t(30),
            )
            .await
            .expect("update")
            .expect("exists");
        assert_eq!(changed.id, flow.id, "{k}");
        assert_eq!(changed.configuration, json!({"class_name": "Noop"}), "{k}");
        assert_eq!(changed.schedule, cron, "{k}");
        assert_eq!(changed.next_run_at, Some(far), "{k}: far times are kept");
        assert_eq!(changed.description, "new\u{FFFD}text", "{k}");
        assert_eq!(changed.last_run_status, before.last_run_status, "{k}");
        assert_eq!(changed.created_at, flow.created_at, "{k}");
        assert_eq!(
            app.flows.find_by_name("f").await.expect("query"),
            Some(changed.clone()),
            "{k}: what update returns is what is stored"
        );
        assert!(
            app.runs.find_run(run).await.expect("query").is_some(),
            "{k}: the history stays"
        );

        let every = RunInterval::from_secs(90).expect("valid").schedule();
        let back = app
            .flows
            .update(
                flow.id,
                FlowChanges {
                    schedule: Some(ScheduleChange {
                        schedule: every.clone(),
                        next_run_at: Some(t(40)),
                    }),
                    ..FlowChanges::default()
                },
                t(40),
            )
            .await
            .expect("update")
            .expect("exists");
        assert_eq!(
            (back.schedule, back.next_run_at),
            (every, Some(t(40))),
            "{k}: a cron flow becomes an interval flow again"
        );
        assert_eq!(
            app.flows
                .update(DataFlowId(987_654), FlowChanges::default(), t(50))
                .await
                .expect("update"),
            None,
            "{k}: no such flow"
        );
    })
    .await;
}

#[tokio::test]
async fn runs_are_counted_per_flow() {
    each_backend(async |_, app, k| {
        let a = create(&app, "a", json!("Noop")).await;
        let b = create(&app, "b", json!("Noop")).await;
        finished_run(&app, &a, 10, true).await;
        finished_run(&app, &a, 20, false).await;
        app.runs.start_run(start(&a, t(30))).await.expect("started");
        assert_eq!(app.runs.count_runs(a.id).await.expect("count"), 3, "{k}");
        assert_eq!(app.runs.count_runs(b.id).await.expect("count"), 0, "{k}");
    })
    .await;
}

#[tokio::test]
async fn pruning_deletes_old_finished_runs_only_keeps_the_newest_and_never_a_live_run() {
    use flowrun_domain::PruneRuns;
    each_backend(async |_, app, k| {
        let a = create(&app, "a", json!("Noop")).await;
        let b = create(&app, "b", json!("Noop")).await;
        let mut a_runs = Vec::new();
        for (at, ok) in [(10, true), (20, false), (30, true), (40, true)] {
            a_runs.push(finished_run(&app, &a, at, ok).await);
        }
        let b_old = [
            finished_run(&app, &b, 10, true).await,
            finished_run(&app, &b, 20, false).await,
        ];
        // Live, and older than every cut-off below.
        let live = app.runs.start_run(start(&b, t(25))).await.expect("started").id;
        let ids = async |app: &App| -> Vec<RunId> {
            let mut ids: Vec<RunId> = recent_runs(app, 100).await.iter().map(|r| r.run.id).collect();
            ids.sort();
            ids
        };

        let only_b = PruneRuns {
            started_before: t(1000),
            keep_last: None,
            data_flow_id: Some(b.id),
        };
        assert_eq!(app.runs.prune(only_b).await.expect("prune"), 2, "{k}");
        let mut left = a_runs.clone();
        left.push(live);
        assert_eq!(
            ids(&app).await,
            left,
            "{k}: b's finished runs went, its live one and a's stayed"
        );
        assert!(b_old.iter().all(|id| !left.contains(id)));

        let keep_two = PruneRuns {
            started_before: t(1000),
            keep_last: Some(2),
            data_flow_id: None,
        };
        assert_eq!(app.runs.prune(keep_two).await.expect("prune"), 2, "{k}");
        assert_eq!(
            ids(&app).await,
            vec![a_runs[2], a_runs[3], live],
            "{k}: the two newest of a are kept"
        );

        let too_young = PruneRuns {
            started_before: t(30),
            keep_last: None,
            data_flow_id: None,
        };
        assert_eq!(
            app.runs.prune(too_young).await.expect("prune"),
            0,
            "{k}: runs that started at or after the cut-off stay"
        );
        let everything = PruneRuns {
            started_before: t(1000),
            keep_last: None,
            data_flow_id: None,
        };
        assert_eq!(app.runs.prune(everything).await.expect("prune"), 2, "{k}");
        assert_eq!(ids(&app).await, vec![live], "{k}: the live run is never pruned");
        assert_eq!(stored_run(&app, live).await.status, RunStatus::InProgress, "{k}");
    })
    .await;
}

#[tokio::test]
async fn pruning_goes_on_past_one_batch() {
    use flowrun_infra::entity::data_flow_run;
    use sea_orm::{ActiveValue::NotSet, ActiveValue::Set, EntityTrait};
    each_backend(async |_, app, k| {
        let flow = create(&app, "many", json!("Noop")).await;
        // More than two batches of 1000, written in one statement per chunk to keep the test quick.
        for chunk in 0..5_i64 {
            let rows = (0..500_i64).map(|i| data_flow_run::ActiveModel {
                id: NotSet,
                data_flow_id: Set(flow.id.0),
                status: Set(if i % 2 == 0 { "success" } else { "failed" }.to_owned()),
                started_at: Set(t(chunk * 1000 + i)),
                ended_at: Set(Some(t(chunk * 1000 + i + 1))),
                error_message: Set(None),
                error_backtrace: Set(None),
                lease_owner: Set(None),
                lease_expires_at: Set(None),
                attempt: Set(1),
                triggered_by: Set("schedule".to_owned()),
                failure_kind: Set((i % 2 == 1).then(|| "error".to_owned())),
                cancel_requested_at: Set(None),
                cancel_requested_by: Set(None),
                output: Set(None),
                created_at: Set(t(chunk * 1000 + i)),
                updated_at: Set(t(chunk * 1000 + i + 1)),
            });
            data_flow_run::Entity::insert_many(rows)
                .exec(app.connection())
                .await
                .expect("insert runs");
        }
        let pruned = app
            .runs
            .prune(flowrun_domain::PruneRuns {
                started_before: t(100_000),
                keep_last: Some(10),
                data_flow_id: None,
            })
            .await
            .expect("prune");
        assert_eq!(pruned, 2_490, "{k}");
        assert_eq!(app.runs.count_runs(flow.id).await.expect("count"), 10, "{k}");
    })
    .await;
}

#[tokio::test]
async fn a_flow_a_run_holds_is_not_deleted_under_it() {
    each_backend(async |_, app, k| {
        let flow = create(&app, "held", json!("Noop")).await;
        let run = app.runs.start_run(start(&flow, t(10))).await.expect("started");
        assert!(
            !app.flows.delete("held").await.expect("delete"),
            "{k}: refused while the run holds the flow"
        );
        assert_eq!(
            stored_run(&app, run.id).await.status,
            RunStatus::InProgress,
            "{k}: the run is kept"
        );
        app.runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(11)))
            .await
            .expect("finished");
        assert!(
            app.flows.delete("held").await.expect("delete"),
            "{k}: free, so deleted"
        );
    })
    .await;
}
