//! One suite for every storage adapter, written once against the ports ([`DataFlowRepository`],
//! [`RunRepository`]) and run on each: the in-memory store (always), SQLite (always), PostgreSQL and MariaDB
//! (when their URLs are set). Every adapter must behave identically.
//!
//! A test sees an adapter through a [`Harness`]: its two repositories, plus the few hooks only the adapter
//! can give (writing a long history quickly). Tests about the SQL schema itself (triggers, CHECK
//! constraints, migrations, indexes, rows corrupted by hand) run on the SQL backends only, through the same
//! harness ([`each_sql_backend`]); each says so in its doc comment.

use chrono::{DateTime, Duration, TimeZone, Utc};
use flowrun_app::{MigratePolicy, Settings, SqlStore};
use flowrun_domain::{
    Claim, CreateDataFlowError, DataFlow, DataFlowId, DataFlowRepository, DataFlowRun, DueBatch, DueStart,
    FinishRunError, FlowName, LeaseOwner, NewDataFlow, RunFilter, RunId, RunInterval, RunOutcome, RunRecord,
    RunRepository, RunStatus, StartRun, StartRunError, Trigger,
};
use flowrun_infra::SeaOrmRunRepository;
use flowrun_memory::MemoryStore;
use flowrun_test_support::{Kind, TestDatabase, configured_kinds_with_memory, fresh_database};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::json;
use std::sync::Arc;

/// One adapter under test.
struct Harness {
    /// Its name in assertion messages: `memory`, `sqlite`, `postgres`, `mysql`.
    name: &'static str,
    flows: Arc<dyn DataFlowRepository>,
    runs: Arc<dyn RunRepository>,
    /// SQL backends: the same run repository as its own type (a clone shares its group commit), for the
    /// hooks only it has.
    sea_runs: Option<SeaOrmRunRepository>,
    store: Store,
}

/// What the adapter-specific hooks act on.
enum Store {
    Memory(MemoryStore),
    Sql(Sql),
}

/// An SQL backend under test: its fresh database and the open store.
struct Sql {
    kind: Kind,
    db: TestDatabase,
    store: SqlStore,
}

impl Sql {
    fn connection(&self) -> &DatabaseConnection {
        self.store.connection()
    }
}

impl Harness {
    /// A harness on `kind`, on a fresh store. The run repository is the adapter alone, without a clock:
    /// the suite gives every time explicitly, and the adapter records exactly those.
    async fn open(kind: Kind) -> Self {
        if kind == Kind::Memory {
            let store = MemoryStore::new();
            return Self {
                name: kind.name(),
                flows: store.flows(),
                runs: store.runs(),
                sea_runs: None,
                store: Store::Memory(store),
            };
        }
        let db = fresh_database(kind).await;
        let store = open_sql(&db).await;
        let runs = SeaOrmRunRepository::with_writer(store.run_writer().clone());
        Self {
            name: kind.name(),
            flows: Arc::new(store.flows()),
            runs: Arc::new(runs.clone()),
            sea_runs: Some(runs),
            store: Store::Sql(Sql { kind, db, store }),
        }
    }

    fn sql(&self) -> Option<&Sql> {
        match &self.store {
            Store::Sql(sql) => Some(sql),
            Store::Memory(_) => None,
        }
    }

    /// Stores finished runs of `flow` directly, bypassing the run lifecycle (a long history, quickly): one
    /// per `(started_at, ended_at, ok)`.
    async fn insert_finished_runs(&self, flow: &DataFlow, rows: &[(DateTime<Utc>, DateTime<Utc>, bool)]) {
        match &self.store {
            Store::Memory(store) => {
                for &(started, ended, ok) in rows {
                    let run = DataFlowRun {
                        id: RunId(0),
                        data_flow_id: flow.id,
                        status: if ok { RunStatus::Success } else { RunStatus::Failed },
                        started_at: started,
                        ended_at: Some(ended),
                        error_message: None,
                        error_backtrace: None,
                        lease_owner: None,
                        lease_expires_at: None,
                        attempt: 1,
                        trigger: Trigger::Schedule,
                        failure_kind: (!ok).then_some(flowrun_domain::FailureKind::Error),
                        cancel_requested: None,
                        output: String::new(),
                        created_at: started,
                        updated_at: ended,
                    };
                    store.insert_run(run).expect("the flow exists");
                }
            }
            Store::Sql(sql) => {
                use flowrun_infra::entity::data_flow_run;
                use sea_orm::{ActiveValue::NotSet, ActiveValue::Set, EntityTrait};
                // One statement per chunk, to keep the test quick.
                for chunk in rows.chunks(500) {
                    let models = chunk
                        .iter()
                        .map(|&(started, ended, ok)| data_flow_run::ActiveModel {
                            id: NotSet,
                            data_flow_id: Set(flow.id.0),
                            status: Set(if ok { "success" } else { "failed" }.to_owned()),
                            started_at: Set(started),
                            ended_at: Set(Some(ended)),
                            error_message: Set(None),
                            error_backtrace: Set(None),
                            lease_owner: Set(None),
                            lease_expires_at: Set(None),
                            attempt: Set(1),
                            triggered_by: Set("schedule".to_owned()),
                            failure_kind: Set((!ok).then(|| "error".to_owned())),
                            cancel_requested_at: Set(None),
                            cancel_requested_by: Set(None),
                            output: Set(None),
                            created_at: Set(started),
                            updated_at: Set(ended),
                        });
                    data_flow_run::Entity::insert_many(models)
                        .exec(sql.connection())
                        .await
                        .expect("insert runs");
                }
            }
        }
    }
}

/// Opens (and migrates) the SQL store of a test database.
async fn open_sql(db: &TestDatabase) -> SqlStore {
    flowrun_app::open_sql(&Settings::new(db.url.clone()), MigratePolicy::Always)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.kind.name()))
}

fn t(secs: i64) -> DateTime<Utc> {
    // Microseconds on purpose: every backend must keep them.
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
        .single()
        .expect("valid")
        + Duration::seconds(secs)
        + Duration::microseconds(123_456)
}

async fn create(h: &Harness, name: &str, config: serde_json::Value) -> DataFlow {
    let new = NewDataFlow::new(
        FlowName::parse(name).expect("name"),
        "d",
        true,
        config,
        RunInterval::DEFAULT.schedule(),
    )
    .expect("valid flow");
    h.flows.create(new, t(0)).await.expect("created")
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

async fn next_run_at(h: &Harness, flow: &DataFlow) -> Option<DateTime<Utc>> {
    h.flows
        .find_by_id(flow.id)
        .await
        .expect("query")
        .expect("found")
        .next_run_at
}

/// The run as stored now; panics if it does not exist.
async fn stored_run(h: &Harness, id: RunId) -> DataFlowRun {
    h.runs
        .find_run(id)
        .await
        .expect("query the run")
        .expect("the run exists")
        .run
}

/// The newest `limit` runs of every flow.
async fn recent_runs(h: &Harness, limit: u64) -> Vec<RunRecord> {
    h.runs
        .list_runs(RunFilter {
            limit,
            ..RunFilter::default()
        })
        .await
        .expect("list runs")
}

/// Runs `scenario` on a fresh store of every adapter: memory, then every configured SQL backend.
async fn each_backend(mut scenario: impl AsyncFnMut(&Harness, &'static str)) {
    for kind in configured_kinds_with_memory() {
        let h = Harness::open(kind).await;
        scenario(&h, h.name).await;
    }
}

/// Runs `scenario` on a fresh database of every configured SQL backend only, for tests of the SQL schema.
async fn each_sql_backend(mut scenario: impl AsyncFnMut(&Harness, &Sql, &'static str)) {
    for kind in configured_kinds_with_memory() {
        if !kind.is_sql() {
            continue;
        }
        let h = Harness::open(kind).await;
        let sql = h.sql().expect("an SQL backend");
        scenario(&h, sql, h.name).await;
    }
}

#[tokio::test]
async fn flows_are_created_found_listed_toggled_and_deleted() {
    each_backend(async |h, k| {
        let flow = create(h, "b-flow", json!({"class_name": "Noop", "x": [1, 2]})).await;
        create(h, "a-flow", json!("Noop")).await;
        let found = h
            .flows
            .find_by_name("b-flow")
            .await
            .expect("query")
            .expect("found");
        assert_eq!(found, flow, "{k}: reads back what was written");
        assert_eq!(
            h.flows.find_by_id(flow.id).await.expect("query"),
            Some(flow.clone()),
            "{k}"
        );
        let names: Vec<String> = h
            .flows
            .list()
            .await
            .expect("list")
            .iter()
            .map(|f| f.name.to_string())
            .collect();
        assert_eq!(names, ["a-flow", "b-flow"], "{k}: listed by name");
        let disabled = h
            .flows
            .set_enabled("b-flow", false, t(1))
            .await
            .expect("toggle")
            .expect("exists");
        assert!(!disabled.enabled, "{k}");
        assert_eq!(disabled.updated_at, t(1), "{k}");
        assert_eq!(
            h.flows.set_enabled("nope", false, t(1)).await.expect("toggle"),
            None,
            "{k}"
        );
        assert!(h.flows.delete("b-flow").await.expect("delete"), "{k}");
        assert!(!h.flows.delete("b-flow").await.expect("delete"), "{k}");
    })
    .await;
}

#[tokio::test]
async fn duplicate_names_are_refused_as_duplicates() {
    each_backend(async |h, k| {
        create(h, "dup", json!("Noop")).await;
        let again = NewDataFlow::new(
            FlowName::parse("dup").expect("name"),
            "",
            true,
            json!("Noop"),
            RunInterval::DEFAULT.schedule(),
        )
        .expect("valid");
        let error = h.flows.create(again, t(0)).await.expect_err("duplicate");
        assert!(
            matches!(error, CreateDataFlowError::Duplicate(_)),
            "{k}: {error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn names_compare_exactly_on_every_backend() {
    each_backend(async |h, k| {
        create(h, "Report", json!("Noop")).await;
        create(h, "report", json!("Noop")).await;
        assert_eq!(
            h.flows.list().await.expect("list").len(),
            2,
            "{k}: names are case-sensitive"
        );
        create(h, "çà🦀", json!("Noop")).await;
        assert!(
            h.flows.find_by_name("çà🦀").await.expect("query").is_some(),
            "{k}: any Unicode"
        );
    })
    .await;
}

/// Installs triggers that log every status a run row takes, to observe the steps inside a transaction.
async fn log_status_changes(sql: &Sql) {
    let kind = sql.kind;
    let db = sql.connection();
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
        Kind::Memory => unreachable!("SQL backends only"),
    };
    for sql in statements {
        db.execute_raw(Statement::from_string(backend, sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

async fn status_log(sql: &Sql) -> Vec<String> {
    let db = sql.connection();
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

/// SQL only: it watches the row's statuses with triggers. The in-memory store writes the run under one lock,
/// so no one can see it between the two steps there either.
#[tokio::test]
async fn req2_1_and_req2_3_a_run_is_inserted_pending_then_moved_to_in_progress_in_one_step() {
    each_sql_backend(async |h, sql, k| {
        log_status_changes(sql).await;
        let flow = create(h, "f", json!("Noop")).await;
        let run = h.runs.start_run(start(&flow, t(10))).await.expect("started");
        assert_eq!(run.status, RunStatus::InProgress, "{k}");
        assert_eq!(status_log(sql).await, ["pending", "in_progress"], "{k}");
        h.runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(11)))
            .await
            .expect("finished");
        assert_eq!(
            status_log(sql).await,
            ["pending", "in_progress", "success"],
            "{k}"
        );
    })
    .await;
}

#[tokio::test]
async fn req2_2_req2_4_req4_5_started_runs_are_stored_with_their_flow_and_exact_utc_timestamps() {
    each_backend(async |h, k| {
        let flow = create(h, "f", json!("Noop")).await;
        let run = h.runs.start_run(start(&flow, t(10))).await.expect("started");
        let stored = h.runs.find_run(run.id).await.expect("query").expect("found");
        assert_eq!(stored.run, run, "{k}: what start_run returns is what is stored");
        assert_eq!(stored.flow_name, "f", "{k}");
        assert_eq!(stored.run.data_flow_id, flow.id, "{k}");
        assert_eq!(stored.run.started_at, t(10), "{k}: microseconds round-trip");
        assert_eq!(stored.run.lease_owner.as_deref(), Some("host:1"), "{k}");
        let reread = h.flows.find_by_id(flow.id).await.expect("query").expect("found");
        assert_eq!(reread.created_at, t(0), "{k}");
        assert_eq!(reread.created_at.timezone(), Utc, "{k}");
    })
    .await;
}

#[tokio::test]
async fn req4_1_to_req4_5_success_is_persisted_on_the_run_and_the_flow() {
    each_backend(async |h, k| {
        let flow = create(h, "f", json!("Noop")).await;
        let run = h.runs.start_run(start(&flow, t(10))).await.expect("started");
        h.runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(12)))
            .await
            .expect("finished");
        let stored = stored_run(h, run.id).await;
        assert_eq!(stored.status, RunStatus::Success, "{k}");
        assert_eq!(stored.ended_at, Some(t(12)), "{k}");
        assert_eq!(stored.error_message, None, "{k}");
        let flow = h.flows.find_by_id(flow.id).await.expect("query").expect("found");
        assert_eq!(flow.last_run_at, Some(t(12)), "{k}");
        assert_eq!(flow.last_run_status.map(|s| s.as_str()), Some("success"), "{k}");
    })
    .await;
}

#[tokio::test]
async fn req5_failure_details_are_persisted_whatever_the_text_contains() {
    each_backend(async |h, k| {
        let flow = create(h, "f", json!("Noop")).await;
        let cases = [
            "nul \0 inside".to_owned(),
            format!("huge {}", "x".repeat(1024 * 1024)),
            "unicode é🦀\u{FFFD}".to_owned(),
        ];
        for message in cases {
            let run = h.runs.start_run(start(&flow, t(10))).await.expect("started");
            let outcome = RunOutcome::failure(t(13), message.clone(), format!("trace for {message}"));
            h.runs
                .finish_run(run.id, flow.id, outcome)
                .await
                .unwrap_or_else(|e| panic!("{k}: {e}"));
            let stored = stored_run(h, run.id).await;
            assert_eq!(stored.status, RunStatus::Failed, "{k}");
            assert_eq!(stored.ended_at, Some(t(13)), "{k}");
            let stored_message = stored.error_message.expect("message");
            let prefix: String = message.replace('\0', "\u{FFFD}").chars().take(200).collect();
            assert!(
                stored_message.starts_with(&prefix),
                "{k}: stored message starts with the original"
            );
            assert!(
                stored_message.len() <= flowrun_domain::text::MAX_ERROR_MESSAGE_BYTES,
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
        let flow = h.flows.find_by_id(flow.id).await.expect("query").expect("found");
        assert_eq!(flow.last_run_status.map(|s| s.as_str()), Some("failed"), "{k}");
        assert_eq!(flow.last_run_at, Some(t(13)), "{k}");
    })
    .await;
}

#[tokio::test]
async fn a_flow_cannot_be_started_twice_at_once_and_is_free_again_after_finishing() {
    each_backend(async |h, k| {
        let flow = create(h, "f", json!("Noop")).await;
        let first = h.runs.start_run(start(&flow, t(10))).await.expect("started");
        match h.runs.start_run(start(&flow, t(11))).await {
            Err(StartRunError::Busy(active)) => {
                assert_eq!(active.run_id, first.id, "{k}");
                assert_eq!(active.started_at, t(10), "{k}");
            }
            other => panic!("{k}: expected Busy, got {other:?}"),
        }
        let runs = recent_runs(h, 10).await;
        assert_eq!(runs.len(), 1, "{k}: the refused start wrote nothing");
        h.runs
            .finish_run(first.id, flow.id, RunOutcome::success(t(12)))
            .await
            .expect("finished");
        h.runs.start_run(start(&flow, t(13))).await.expect("free again");
    })
    .await;
}

#[tokio::test]
async fn due_starts_take_one_slot_each_move_next_run_at_and_are_refused_early_or_when_disabled() {
    each_backend(async |h, k| {
        let flow = create(h, "f", json!("Noop")).await;
        assert_eq!(
            next_run_at(h, &flow).await,
            Some(t(0)),
            "{k}: a new interval flow is due at once"
        );
        let run = h
            .runs
            .start_run(start_due(&flow, t(30), Some(t(3600))))
            .await
            .unwrap_or_else(|e| panic!("{k}: due since t(0): {e}"));
        assert_eq!(
            next_run_at(h, &flow).await,
            Some(t(3600)),
            "{k}: the claim moved the slot"
        );
        h.runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(40)))
            .await
            .expect("finished");
        assert!(
            matches!(
                h.runs.start_run(start_due(&flow, t(50), Some(t(7200)))).await,
                Err(StartRunError::NotDue)
            ),
            "{k}: that slot was taken; the next is at t(3600)"
        );
        assert_eq!(
            next_run_at(h, &flow).await,
            Some(t(3600)),
            "{k}: a refused claim changes nothing"
        );
        let manual = h
            .runs
            .start_run(start(&flow, t(60)))
            .await
            .expect("a manual start");
        assert_eq!(
            next_run_at(h, &flow).await,
            Some(t(3600)),
            "{k}: manual runs keep the schedule"
        );
        h.runs
            .finish_run(manual.id, flow.id, RunOutcome::success(t(61)))
            .await
            .expect("finished");
        let at_slot = h
            .runs
            .start_run(start_due(&flow, t(3600), None))
            .await
            .unwrap_or_else(|e| panic!("{k}: due exactly at its slot: {e}"));
        h.runs
            .finish_run(at_slot.id, flow.id, RunOutcome::success(t(3601)))
            .await
            .expect("finished");
        assert_eq!(
            next_run_at(h, &flow).await,
            None,
            "{k}: a schedule without a next time"
        );
        assert!(
            h.flows.list_due(t(1_000_000)).await.expect("due").is_empty(),
            "{k}: a flow without a next run time is never due"
        );
        let yearly = create(h, "far", json!("Noop")).await;
        let far = t(0) + Duration::days(60 * 365);
        h.runs
            .start_run(start_due(&yearly, t(30), Some(far)))
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        assert_eq!(
            next_run_at(h, &yearly).await,
            Some(far),
            "{k}: a next run beyond 2038 is kept (MySQL's TIMESTAMP range ends there)"
        );
        let off = create(h, "off", json!("Noop")).await;
        h.flows.set_enabled("off", false, t(30)).await.expect("toggle");
        assert!(
            matches!(
                h.runs.start_run(start_due(&off, t(30), Some(t(90)))).await,
                Err(StartRunError::NotDue)
            ),
            "{k}: a disabled flow is never due"
        );
        h.runs
            .start_run(start(&off, t(30)))
            .await
            .unwrap_or_else(|e| panic!("{k}: a disabled flow still runs when asked to: {e}"));
        let mut gone = start(&flow, t(40));
        gone.data_flow_id = DataFlowId(999_999);
        assert!(
            matches!(h.runs.start_run(gone).await, Err(StartRunError::FlowNotFound)),
            "{k}"
        );
    })
    .await;
}

/// A batch of scheduled starts at `at`, every flow's next run at `next`.
fn due_batch(flows: &[&DataFlow], at: DateTime<Utc>, next: DateTime<Utc>) -> DueBatch {
    DueBatch {
        started_at: at,
        lease_owner: LeaseOwner::new("host:1"),
        lease_expires_at: at + Duration::seconds(60),
        flows: flows
            .iter()
            .map(|flow| DueStart {
                data_flow_id: flow.id,
                next_run_at: Some(next),
            })
            .collect(),
    }
}

#[tokio::test]
async fn a_batch_starts_each_due_free_flow_as_a_single_due_start_would_and_leaves_the_others_untouched() {
    each_backend(async |h, k| {
        let a = create(h, "a", json!("Noop")).await;
        let b = create(h, "b", json!("Noop")).await;
        let off = create(h, "off", json!("Noop")).await;
        h.flows.set_enabled("off", false, t(1)).await.expect("toggle");
        let later = create(h, "later", json!("Noop")).await;
        let ran = h
            .runs
            .start_run(start_due(&later, t(2), Some(t(3600))))
            .await
            .expect("started");
        h.runs
            .finish_run(ran.id, later.id, RunOutcome::success(t(3)))
            .await
            .expect("finished");
        let busy = create(h, "busy", json!("Noop")).await;
        let holding = h.runs.start_run(start(&busy, t(4))).await.expect("a manual run");
        let mut gone = a.clone();
        gone.id = DataFlowId(999_999);

        let batch = due_batch(&[&b, &off, &later, &busy, &gone, &a], t(30), t(3630));
        let started = h.runs.start_due_runs(batch).await.expect("a batch");
        let flows: Vec<DataFlowId> = started.iter().map(|run| run.data_flow_id).collect();
        assert_eq!(
            flows,
            [b.id, a.id],
            "{k}: the due, free flows, in the batch's order"
        );
        for run in &started {
            assert_eq!(run.status, RunStatus::InProgress, "{k}");
            assert_eq!(run.started_at, t(30), "{k}");
            assert_eq!(run.lease_expires_at, Some(t(90)), "{k}");
            assert_eq!(run.lease_owner.as_deref(), Some("host:1"), "{k}");
            assert_eq!(run.trigger, Trigger::Schedule, "{k}");
            assert_eq!(run.attempt, 1, "{k}");
            assert_eq!(&stored_run(h, run.id).await, run, "{k}: returned as stored");
        }
        assert_eq!(
            next_run_at(h, &a).await,
            Some(t(3630)),
            "{k}: the claim moved the slot"
        );
        assert_eq!(next_run_at(h, &b).await, Some(t(3630)), "{k}");
        assert_eq!(
            next_run_at(h, &off).await,
            Some(t(0)),
            "{k}: a disabled flow is untouched"
        );
        assert_eq!(
            next_run_at(h, &later).await,
            Some(t(3600)),
            "{k}: a flow not due is untouched"
        );
        assert_eq!(
            next_run_at(h, &busy).await,
            Some(t(0)),
            "{k}: a running flow is untouched"
        );
        assert_eq!(h.runs.count_runs(busy.id).await.expect("count"), 1, "{k}");
        assert_eq!(h.runs.count_runs(off.id).await.expect("count"), 0, "{k}");

        match h.runs.start_run(start(&a, t(31))).await {
            Err(StartRunError::Busy(active)) => {
                assert_eq!(
                    active.run_id, started[1].id,
                    "{k}: the batch's run holds the flow"
                );
            }
            other => panic!("{k}: expected Busy, got {other:?}"),
        }
        let again = h
            .runs
            .start_due_runs(due_batch(&[&a, &b], t(40), t(7200)))
            .await
            .expect("a batch");
        assert!(again.is_empty(), "{k}: one slot starts one run: {again:?}");
        for run in &started {
            h.runs
                .finish_run(run.id, run.data_flow_id, RunOutcome::success(t(50)))
                .await
                .unwrap_or_else(|e| panic!("{k}: a batch's run finishes as any run: {e}"));
        }
        h.runs.start_run(start(&a, t(51))).await.expect("free again");
        h.runs
            .finish_run(holding.id, busy.id, RunOutcome::success(t(52)))
            .await
            .expect("finished");
        assert!(
            h.runs
                .start_due_runs(due_batch(&[], t(60), t(90)))
                .await
                .expect("an empty batch")
                .is_empty(),
            "{k}"
        );
    })
    .await;
}

/// SQL only: it watches the rows' statuses with triggers.
#[tokio::test]
async fn a_batch_writes_each_run_pending_then_in_progress() {
    each_sql_backend(async |h, sql, k| {
        log_status_changes(sql).await;
        let a = create(h, "a", json!("Noop")).await;
        let b = create(h, "b", json!("Noop")).await;
        let started = h
            .runs
            .start_due_runs(due_batch(&[&a, &b], t(10), t(3610)))
            .await
            .expect("a batch");
        assert_eq!(started.len(), 2, "{k}");
        assert_eq!(
            status_log(sql).await,
            ["pending", "pending", "in_progress", "in_progress"],
            "{k}"
        );
    })
    .await;
}

#[tokio::test]
async fn concurrent_batches_never_give_a_flow_to_two_claimers() {
    const FLOWS: usize = 60;
    const CLAIMERS: usize = 4;
    each_backend(async |h, k| {
        let mut flows = Vec::new();
        for i in 0..FLOWS {
            flows.push(create(h, &format!("f{i}"), json!("Noop")).await);
        }
        // Several pools on one database, as several processes would have (the memory store's clones share
        // its data).
        let mut claimers: Vec<Arc<dyn RunRepository>> = Vec::new();
        for _ in 0..CLAIMERS {
            claimers.push(match h.sql() {
                Some(sql) => Arc::new(SeaOrmRunRepository::with_writer(
                    open_sql(&sql.db).await.run_writer().clone(),
                )),
                None => Arc::clone(&h.runs),
            });
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, claimer) in claimers.into_iter().enumerate() {
            // Each claimer walks the flows from a different place, in batches of 7, as schedulers that
            // listed the same due flows at once would race for them.
            let mut order: Vec<&DataFlow> = flows.iter().collect();
            order.rotate_left(i * FLOWS / CLAIMERS);
            let batches: Vec<DueBatch> = order
                .chunks(7)
                .map(|chunk| due_batch(chunk, t(30), t(3630)))
                .collect();
            tasks.spawn(async move {
                let mut runs = Vec::new();
                for batch in batches {
                    runs.extend(claimer.start_due_runs(batch).await.expect("a batch"));
                }
                runs
            });
        }
        let mut claimed: Vec<DataFlowId> = Vec::new();
        while let Some(runs) = tasks.join_next().await {
            claimed.extend(runs.expect("a claimer").iter().map(|run| run.data_flow_id));
        }
        claimed.sort_by_key(|id| id.0);
        let mut expected: Vec<DataFlowId> = flows.iter().map(|flow| flow.id).collect();
        expected.sort_by_key(|id| id.0);
        assert_eq!(claimed, expected, "{k}: every flow claimed once, by one claimer");
        for flow in &flows {
            assert_eq!(h.runs.count_runs(flow.id).await.expect("count"), 1, "{k}");
        }
    })
    .await;
}

#[tokio::test]
async fn expired_runs_are_reaped_once_and_their_late_outcome_is_refused() {
    each_backend(async |h, k| {
        let flow = create(h, "f", json!("Noop")).await;
        let run = h.runs.start_run(start(&flow, t(10))).await.expect("started");
        assert!(
            h.runs.reap_expired(t(60), None).await.expect("reap").is_empty(),
            "{k}: lease still valid"
        );
        assert!(h.runs.renew_lease(run.id, t(100)).await.expect("renew"), "{k}");
        assert!(
            h.runs.reap_expired(t(90), None).await.expect("reap").is_empty(),
            "{k}: renewed"
        );
        let reaped = h.runs.reap_expired(t(101), None).await.expect("reap");
        assert_eq!(reaped.len(), 1, "{k}");
        let stored = stored_run(h, run.id).await;
        assert_eq!(stored.status, RunStatus::Failed, "{k}");
        assert_eq!(stored.ended_at, Some(t(101)), "{k}");
        let message = stored.error_message.expect("message");
        assert!(
            message.contains("abandoned") && message.contains("host:1"),
            "{k}: {message}"
        );
        assert!(
            h.runs.reap_expired(t(200), None).await.expect("reap").is_empty(),
            "{k}: reaped once"
        );
        assert!(
            !h.runs.renew_lease(run.id, t(300)).await.expect("renew"),
            "{k}: no renewal after reap"
        );
        let late = h
            .runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(300)))
            .await;
        assert!(
            matches!(late, Err(FinishRunError::NotInProgress { .. })),
            "{k}: {late:?}"
        );
        let flow = h.flows.find_by_id(flow.id).await.expect("query").expect("found");
        assert_eq!(flow.last_run_status.map(|s| s.as_str()), Some("failed"), "{k}");
        assert_eq!(flow.last_run_at, Some(t(101)), "{k}");
        h.runs
            .start_run(start(&flow, t(301)))
            .await
            .expect("free after the reap");
    })
    .await;
}

#[tokio::test]
async fn history_is_listed_newest_first_with_filters_and_limit() {
    each_backend(async |h, k| {
        let a = create(h, "a", json!("Noop")).await;
        let b = create(h, "b", json!("Noop")).await;
        let mut ids = Vec::new();
        for (i, flow) in [&a, &b, &a].into_iter().enumerate() {
            let run = h.runs.start_run(start(flow, t(i as i64))).await.expect("started");
            let outcome = if i == 1 {
                RunOutcome::failure(t(50), "x".into(), "y".into())
            } else {
                RunOutcome::success(t(50))
            };
            h.runs
                .finish_run(run.id, flow.id, outcome)
                .await
                .expect("finished");
            ids.push(run.id);
        }
        let all = recent_runs(h, 10).await;
        let listed: Vec<RunId> = all.iter().map(|r| r.run.id).collect();
        assert_eq!(listed, [ids[2], ids[1], ids[0]], "{k}: newest first");
        let of_a = h
            .runs
            .list_runs(RunFilter {
                data_flow_id: Some(a.id),
                limit: 10,
                ..RunFilter::default()
            })
            .await
            .expect("list");
        assert!(of_a.iter().all(|r| r.flow_name == "a") && of_a.len() == 2, "{k}");
        let failed = h
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
        let one = recent_runs(h, 1).await;
        assert_eq!(one.len(), 1, "{k}");
        assert!(
            h.runs.find_run(RunId(123_456)).await.expect("query").is_none(),
            "{k}"
        );
    })
    .await;
}

#[tokio::test]
async fn deleting_a_flow_deletes_its_runs() {
    each_backend(async |h, k| {
        let flow = create(h, "f", json!("Noop")).await;
        let run = h.runs.start_run(start(&flow, t(1))).await.expect("started");
        h.runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(2)))
            .await
            .expect("finished");
        h.flows.delete("f").await.expect("delete");
        assert!(
            h.runs.find_run(run.id).await.expect("query").is_none(),
            "{k}: cascaded"
        );
    })
    .await;
}

#[tokio::test]
async fn due_flows_are_enabled_idle_and_past_their_next_run_time_soonest_first() {
    each_backend(async |h, k| {
        let never = create(h, "never-ran", json!("Noop")).await;
        let later = create(h, "later", json!("Noop")).await;
        let old = create(h, "old", json!("Noop")).await;
        let off = create(h, "off", json!("Noop")).await;
        h.flows.set_enabled("off", false, t(0)).await.expect("toggle");
        for (flow, next) in [(&later, t(5000)), (&old, t(100))] {
            let run = h
                .runs
                .start_run(start_due(flow, t(1), Some(next)))
                .await
                .expect("started");
            h.runs
                .finish_run(run.id, flow.id, RunOutcome::success(t(2)))
                .await
                .expect("finished");
        }
        let running = create(h, "running", json!("Noop")).await;
        h.runs.start_run(start(&running, t(1))).await.expect("started");
        let due: Vec<String> = h
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

/// SQL only: a row corrupted by hand (a column no value of the domain can hold) exists only in a database
/// an operator can edit.
#[tokio::test]
async fn a_row_corrupted_by_hand_is_skipped_and_the_other_due_flows_are_listed() {
    each_sql_backend(async |h, sql, k| {
        let good = create(h, "good", json!("Noop")).await;
        let bad_json = create(h, "bad-json", json!("Noop")).await;
        let bad_cron = create(h, "bad-cron", json!("Noop")).await;
        let db = sql.connection();
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
        let due: Vec<String> = h
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

/// SQL only: the schema's CHECK constraints guard against hand edits; the in-memory store holds only domain
/// values, which cannot express these.
#[tokio::test]
async fn the_database_enforces_statuses_and_positive_intervals() {
    each_sql_backend(async |h, sql, k| {
        let flow = create(h, "f", json!("Noop")).await;
        let db = sql.connection();
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

/// SQL only: migrations are the SQL schema's.
#[tokio::test]
async fn migrating_again_is_a_no_op() {
    each_sql_backend(async |h, sql, k| {
        create(h, "kept", json!("Noop")).await;
        flowrun_infra::migrate(sql.connection(), &sql.db.url)
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        let again = open_sql(&sql.db).await;
        assert!(
            again.flows().find_by_name("kept").await.expect("query").is_some(),
            "{k}"
        );
    })
    .await;
}

/// Names of the indexes on `data_flow_runs`.
async fn run_indexes(sql: &Sql) -> Vec<String> {
    let kind = sql.kind;
    let query = match kind {
        Kind::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'data_flow_runs'",
        Kind::Postgres => "SELECT indexname FROM pg_indexes WHERE tablename = 'data_flow_runs'",
        Kind::MySql => {
            "SELECT DISTINCT index_name FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = 'data_flow_runs'"
        }
        Kind::Memory => unreachable!("SQL backends only"),
    };
    let db = sql.connection();
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), query))
        .await
        .expect("index names");
    let mut names: Vec<String> = rows
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("a name"))
        .collect();
    names.sort();
    names
}

/// SQL only: indexes and migrations are the SQL schema's.
#[tokio::test]
async fn the_reaper_index_holds_only_live_runs_where_the_backend_allows_it() {
    each_sql_backend(async |h, sql, k| {
        let names = run_indexes(sql).await;
        let (present, absent) = if sql.kind == Kind::MySql {
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
        flowrun_migration::Migrator::down(sql.connection(), Some(from_lease_index))
            .await
            .unwrap_or_else(|e| panic!("{k}: down: {e}"));
        assert!(
            run_indexes(sql)
                .await
                .iter()
                .any(|n| n == "idx_data_flow_runs_lease"),
            "{k}: down restores the full index"
        );
        flowrun_infra::migrate(sql.connection(), &sql.db.url)
            .await
            .unwrap_or_else(|e| panic!("{k}: up: {e}"));
        assert_eq!(run_indexes(sql).await, names, "{k}");
        let flow = create(h, "f", json!("Noop")).await;
        h.runs.start_run(start(&flow, t(10))).await.expect("started");
        let reaped = h.runs.reap_expired(t(100), None).await.expect("reap");
        assert_eq!(reaped.len(), 1, "{k}");
    })
    .await;
}

/// Runs `flow` once, from `at` to one second later, with the given outcome.
async fn finished_run(h: &Harness, flow: &DataFlow, at: i64, ok: bool) -> RunId {
    let run = h.runs.start_run(start(flow, t(at))).await.expect("started");
    let outcome = if ok {
        RunOutcome::success(t(at + 1))
    } else {
        RunOutcome::failure(t(at + 1), "boom".into(), "trace".into())
    };
    h.runs
        .finish_run(run.id, flow.id, outcome)
        .await
        .expect("finished");
    run.id
}

#[tokio::test]
async fn an_update_changes_only_what_it_is_given_and_keeps_the_id_and_the_history() {
    use flowrun_domain::{CronSchedule, FlowChanges, Schedule, ScheduleChange};
    each_backend(async |h, k| {
        let flow = create(h, "f", json!({"class_name": "Sleep", "seconds": 0})).await;
        let run = finished_run(h, &flow, 10, false).await;
        let before = h.flows.find_by_id(flow.id).await.expect("query").expect("found");

        let described = h
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
        let changed = h
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
            h.flows.find_by_name("f").await.expect("query"),
            Some(changed.clone()),
            "{k}: what update returns is what is stored"
        );
        assert!(
            h.runs.find_run(run).await.expect("query").is_some(),
            "{k}: the history stays"
        );

        let every = RunInterval::from_secs(90).expect("valid").schedule();
        let back = h
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
            h.flows
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
    each_backend(async |h, k| {
        let a = create(h, "a", json!("Noop")).await;
        let b = create(h, "b", json!("Noop")).await;
        finished_run(h, &a, 10, true).await;
        finished_run(h, &a, 20, false).await;
        h.runs.start_run(start(&a, t(30))).await.expect("started");
        assert_eq!(h.runs.count_runs(a.id).await.expect("count"), 3, "{k}");
        assert_eq!(h.runs.count_runs(b.id).await.expect("count"), 0, "{k}");
    })
    .await;
}

#[tokio::test]
async fn pruning_deletes_old_finished_runs_only_keeps_the_newest_and_never_a_live_run() {
    use flowrun_domain::PruneRuns;
    each_backend(async |h, k| {
        let a = create(h, "a", json!("Noop")).await;
        let b = create(h, "b", json!("Noop")).await;
        let mut a_runs = Vec::new();
        for (at, ok) in [(10, true), (20, false), (30, true), (40, true)] {
            a_runs.push(finished_run(h, &a, at, ok).await);
        }
        let b_old = [
            finished_run(h, &b, 10, true).await,
            finished_run(h, &b, 20, false).await,
        ];
        // Live, and older than every cut-off below.
        let live = h.runs.start_run(start(&b, t(25))).await.expect("started").id;
        let ids = async |h: &Harness| -> Vec<RunId> {
            let mut ids: Vec<RunId> = recent_runs(h, 100).await.iter().map(|r| r.run.id).collect();
            ids.sort();
            ids
        };

        let only_b = PruneRuns {
            started_before: t(1000),
            keep_last: None,
            data_flow_id: Some(b.id),
        };
        assert_eq!(h.runs.prune(only_b).await.expect("prune"), 2, "{k}");
        let mut left = a_runs.clone();
        left.push(live);
        assert_eq!(
            ids(h).await,
            left,
            "{k}: b's finished runs went, its live one and a's stayed"
        );
        assert!(b_old.iter().all(|id| !left.contains(id)));

        let keep_two = PruneRuns {
            started_before: t(1000),
            keep_last: Some(2),
            data_flow_id: None,
        };
        assert_eq!(h.runs.prune(keep_two).await.expect("prune"), 2, "{k}");
        assert_eq!(
            ids(h).await,
            vec![a_runs[2], a_runs[3], live],
            "{k}: the two newest of a are kept"
        );

        let too_young = PruneRuns {
            started_before: t(30),
            keep_last: None,
            data_flow_id: None,
        };
        assert_eq!(
            h.runs.prune(too_young).await.expect("prune"),
            0,
            "{k}: runs that started at or after the cut-off stay"
        );
        let everything = PruneRuns {
            started_before: t(1000),
            keep_last: None,
            data_flow_id: None,
        };
        assert_eq!(h.runs.prune(everything).await.expect("prune"), 2, "{k}");
        assert_eq!(ids(h).await, vec![live], "{k}: the live run is never pruned");
        assert_eq!(stored_run(h, live).await.status, RunStatus::InProgress, "{k}");
    })
    .await;
}

/// More than two of the SQL adapters' delete batches (1000 runs each); the in-memory store must prune the
/// same long history the same way.
#[tokio::test]
async fn pruning_goes_on_past_one_batch() {
    each_backend(async |h, k| {
        let flow = create(h, "many", json!("Noop")).await;
        let rows: Vec<(DateTime<Utc>, DateTime<Utc>, bool)> = (0..5_i64)
            .flat_map(|chunk| {
                (0..500_i64).map(move |i| (t(chunk * 1000 + i), t(chunk * 1000 + i + 1), i % 2 == 0))
            })
            .collect();
        h.insert_finished_runs(&flow, &rows).await;
        let pruned = h
            .runs
            .prune(flowrun_domain::PruneRuns {
                started_before: t(100_000),
                keep_last: Some(10),
                data_flow_id: None,
            })
            .await
            .expect("prune");
        assert_eq!(pruned, 2_490, "{k}");
        assert_eq!(h.runs.count_runs(flow.id).await.expect("count"), 10, "{k}");
    })
    .await;
}

#[tokio::test]
async fn a_flow_a_run_holds_is_not_deleted_under_it() {
    each_backend(async |h, k| {
        let flow = create(h, "held", json!("Noop")).await;
        let run = h.runs.start_run(start(&flow, t(10))).await.expect("started");
        assert!(
            !h.flows.delete("held").await.expect("delete"),
            "{k}: refused while the run holds the flow"
        );
        assert_eq!(
            stored_run(h, run.id).await.status,
            RunStatus::InProgress,
            "{k}: the run is kept"
        );
        h.runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(11)))
            .await
            .expect("finished");
        assert!(
            h.flows.delete("held").await.expect("delete"),
            "{k}: free, so deleted"
        );
    })
    .await;
}

#[tokio::test]
async fn a_failure_records_its_pending_retry_which_only_a_retry_claim_takes_once_due() {
    use flowrun_domain::PendingRetry;
    each_backend(async |h, k| {
        let flow = create(h, "r", json!("Noop")).await;
        // Move the schedule far away, so only the retry can make the flow due.
        let run = h
            .runs
            .start_run(start_due(&flow, t(1), Some(t(100_000))))
            .await
            .expect("started");
        let retry = PendingRetry {
            at: t(50),
            attempt: 2,
        };
        h.runs
            .finish_run(
                run.id,
                flow.id,
                RunOutcome::failure(t(2), "boom".into(), "trace".into()).retried(Some(retry)),
            )
            .await
            .expect("finished");
        let stored = h.flows.find_by_id(flow.id).await.expect("query").expect("found");
        assert_eq!(stored.pending_retry, Some(retry), "{k}: recorded with the end");
        assert!(
            h.flows.list_due(t(49)).await.expect("due").is_empty(),
            "{k}: not yet"
        );
        let due: Vec<DataFlowId> = h
            .flows
            .list_due(t(50))
            .await
            .expect("due")
            .iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(due, [flow.id], "{k}: due for its retry");
        let early = StartRun {
            claim: Claim::Retry,
            ..start(&flow, t(49))
        };
        assert!(
            matches!(h.runs.start_run(early).await, Err(StartRunError::NotDue)),
            "{k}: a retry claim before its time is refused"
        );
        let retried = h
            .runs
            .start_run(StartRun {
                claim: Claim::Retry,
                trigger: Trigger::Retry,
                attempt: 2,
                ..start(&flow, t(50))
            })
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        assert_eq!((retried.attempt, retried.trigger), (2, Trigger::Retry), "{k}");
        let stored = h.flows.find_by_id(flow.id).await.expect("query").expect("found");
        assert_eq!(stored.pending_retry, None, "{k}: the claim cleared it");
        assert_eq!(stored.next_run_at, Some(t(100_000)), "{k}: and kept the schedule");
        h.runs
            .finish_run(retried.id, flow.id, RunOutcome::success(t(51)))
            .await
            .expect("finished");
        assert!(
            matches!(
                h.runs
                    .start_run(StartRun {
                        claim: Claim::Retry,
                        ..start(&flow, t(60))
                    })
                    .await,
                Err(StartRunError::NotDue)
            ),
            "{k}: the retry was taken once"
        );
        h.flows.set_enabled("r", false, t(61)).await.expect("toggle");
        let run = h.runs.start_run(start(&flow, t(62))).await.expect("started");
        h.runs
            .finish_run(
                run.id,
                flow.id,
                RunOutcome::failure(t(63), "boom".into(), "trace".into()).retried(Some(PendingRetry {
                    at: t(64),
                    attempt: 2,
                })),
            )
            .await
            .expect("finished");
        assert!(
            h.flows.list_due(t(70)).await.expect("due").is_empty(),
            "{k}: a disabled flow's retry is not due"
        );
        assert!(
            matches!(
                h.runs
                    .start_run(StartRun {
                        claim: Claim::Retry,
                        ..start(&flow, t(70))
                    })
                    .await,
                Err(StartRunError::NotDue)
            ),
            "{k}: nor claimed"
        );
    })
    .await;
}

#[tokio::test]
async fn a_cancel_request_is_recorded_once_on_a_running_run_and_refused_on_an_ended_or_unknown_one() {
    use flowrun_domain::CancelOutcome;
    each_backend(async |h, k| {
        let flow = create(h, "c", json!("Noop")).await;
        let run = h.runs.start_run(start(&flow, t(10))).await.expect("started");
        assert_eq!(h.runs.cancel_request(run.id).await.expect("query"), None, "{k}");
        let first = match h.runs.request_cancel(run.id, "alice".into(), t(11)).await {
            Ok(CancelOutcome::Requested(request)) => request,
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!((first.at, first.by.as_str()), (t(11), "alice"), "{k}");
        assert_eq!(
            h.runs
                .request_cancel(run.id, "bob".into(), t(12))
                .await
                .expect("cancel"),
            CancelOutcome::Requested(first.clone()),
            "{k}: the first request stands"
        );
        assert_eq!(
            h.runs.cancel_request(run.id).await.expect("query"),
            Some(first.clone()),
            "{k}"
        );
        assert_eq!(stored_run(h, run.id).await.cancel_requested, Some(first), "{k}");
        h.runs
            .finish_run(
                run.id,
                flow.id,
                RunOutcome::failure(t(13), "cancelled".into(), String::new())
                    .of_kind(flowrun_domain::FailureKind::Cancelled),
            )
            .await
            .expect("finished");
        let other = h.runs.start_run(start(&flow, t(20))).await.expect("started");
        h.runs
            .finish_run(other.id, flow.id, RunOutcome::success(t(21)))
            .await
            .expect("finished");
        assert_eq!(
            h.runs
                .request_cancel(other.id, "carol".into(), t(22))
                .await
                .expect("cancel"),
            CancelOutcome::AlreadyEnded(RunStatus::Success),
            "{k}"
        );
        assert_eq!(
            h.runs.cancel_request(other.id).await.expect("query"),
            None,
            "{k}: nothing written"
        );
        assert_eq!(
            h.runs
                .request_cancel(RunId(987_654), "dave".into(), t(23))
                .await
                .expect("cancel"),
            CancelOutcome::NotFound,
            "{k}"
        );
        let cancelled = h
            .runs
            .list_runs(RunFilter {
                failure_kind: Some(flowrun_domain::FailureKind::Cancelled),
                limit: 10,
                ..RunFilter::default()
            })
            .await
            .expect("list");
        assert_eq!(cancelled.len(), 1, "{k}: filtered by failure kind");
        assert_eq!(cancelled[0].run.id, run.id, "{k}");
    })
    .await;
}

#[tokio::test]
async fn reaping_one_flow_leaves_the_others_expired_runs() {
    each_backend(async |h, k| {
        let a = create(h, "a", json!("Noop")).await;
        let b = create(h, "b", json!("Noop")).await;
        let run_a = h.runs.start_run(start(&a, t(10))).await.expect("started");
        let run_b = h.runs.start_run(start(&b, t(10))).await.expect("started");
        let reaped = h.runs.reap_expired(t(100), Some(a.id)).await.expect("reap");
        assert_eq!(reaped.iter().map(|r| r.id).collect::<Vec<_>>(), [run_a.id], "{k}");
        assert_eq!(
            reaped[0].failure_kind,
            Some(flowrun_domain::FailureKind::Abandoned),
            "{k}"
        );
        assert_eq!(stored_run(h, run_b.id).await.status, RunStatus::InProgress, "{k}");
        match h.runs.start_run(start(&b, t(101))).await {
            Err(StartRunError::Busy(active)) => {
                assert_eq!(active.run_id, run_b.id, "{k}");
                assert_eq!(
                    active.lease_expires_at,
                    Some(t(70)),
                    "{k}: expired, not reaped yet"
                );
            }
            other => panic!("{k}: an expired but unreaped run still holds its flow: {other:?}"),
        }
    })
    .await;
}

/// A run's output is visible while it runs and recorded whole with its end; a success saves the flow's
/// state in the same write, a failure leaves it as it was.
#[tokio::test]
async fn output_follows_a_run_and_state_is_saved_only_with_a_success() {
    each_backend(async |h, k| {
        let flow = create(h, "stateful", json!("Noop")).await;
        assert_eq!(
            h.flows
                .find_by_id(flow.id)
                .await
                .expect("read")
                .expect("flow")
                .state,
            None,
            "{k}"
        );
        let run = h.runs.start_run(start(&flow, t(10))).await.expect("started");
        assert_eq!(stored_run(h, run.id).await.output, "", "{k}: nothing written yet");
        assert!(
            h.runs.record_output(run.id, "batch 1\n").await.expect("recorded"),
            "{k}"
        );
        assert_eq!(stored_run(h, run.id).await.output, "batch 1\n", "{k}");
        let outcome = RunOutcome::success(t(11))
            .with_output("batch 1\nbatch 2 \u{0} ünïcode\n".to_owned())
            .with_state(Some(json!({"cursor": {"type": "i64", "value": 42}})));
        h.runs
            .finish_run(run.id, flow.id, outcome)
            .await
            .expect("finished");
        let ended = stored_run(h, run.id).await;
        assert_eq!(
            ended.output, "batch 1\nbatch 2 \u{FFFD} ünïcode\n",
            "{k}: NUL stored safely"
        );
        assert!(
            !h.runs.record_output(run.id, "late").await.expect("answered"),
            "{k}: ended runs keep theirs"
        );
        assert_eq!(stored_run(h, run.id).await.output, ended.output, "{k}");
        let state = h
            .flows
            .find_by_id(flow.id)
            .await
            .expect("read")
            .expect("flow")
            .state;
        assert_eq!(
            state,
            Some(json!({"cursor": {"type": "i64", "value": 42}})),
            "{k}"
        );

        let failed = h.runs.start_run(start(&flow, t(20))).await.expect("started");
        let outcome =
            RunOutcome::failure(t(21), "boom".into(), "trace".into()).with_state(Some(json!({"cursor": 99})));
        h.runs
            .finish_run(failed.id, flow.id, outcome)
            .await
            .expect("finished");
        let state = h
            .flows
            .find_by_id(flow.id)
            .await
            .expect("read")
            .expect("flow")
            .state;
        assert_eq!(
            state,
            Some(json!({"cursor": {"type": "i64", "value": 42}})),
            "{k}: a failure saves none"
        );
        assert_eq!(stored_run(h, failed.id).await.output, "", "{k}");
    })
    .await;
}

/// A run started and ended in 2040 keeps every time it wrote. MySQL/MariaDB drivers send a UTC time as a
/// `TIMESTAMP`, which ends in January 2038 (MariaDB stores NULL beyond it), so the run path binds its times
/// as `DATETIME`s: the due claim's comparison, the run's start, lease and end, the flow's last run and the
/// retry it schedules, and the retry's claim.
#[tokio::test]
async fn a_run_in_2040_round_trips_on_every_backend() {
    let at = |secs: i64| {
        Utc.with_ymd_and_hms(2040, 3, 1, 12, 0, 0)
            .single()
            .expect("valid")
            + Duration::seconds(secs)
            + Duration::microseconds(654_321)
    };
    each_backend(async |h, k| {
        let new = NewDataFlow::new(
            FlowName::parse("far-2040").expect("name"),
            "d",
            true,
            json!("Noop"),
            RunInterval::DEFAULT.schedule(),
        )
        .expect("valid flow");
        let created = Utc
            .with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
            .single()
            .expect("valid");
        let flow = h.flows.create(new, created).await.expect("created");
        let run_at = |claim, secs, attempt| StartRun {
            data_flow_id: flow.id,
            started_at: at(secs),
            lease_owner: LeaseOwner::new("host:1"),
            lease_expires_at: at(secs + 60),
            claim,
            trigger: Trigger::Manual,
            attempt,
        };

        let due = Claim::Due {
            next_run_at: Some(at(3600)),
        };
        let run = h
            .runs
            .start_run(run_at(due, 0, 1))
            .await
            .unwrap_or_else(|e| panic!("{k}: claimed when due in 2040: {e}"));
        assert!(
            h.runs.renew_lease(run.id, at(120)).await.expect("renew"),
            "{k}: renewed"
        );
        let mut failed = RunOutcome::failure(at(30), "boom".into(), "trace".into());
        failed.retry = Some(flowrun_domain::PendingRetry {
            at: at(40),
            attempt: 2,
        });
        h.runs
            .finish_run(run.id, flow.id, failed)
            .await
            .unwrap_or_else(|e| panic!("{k}: finished: {e}"));
        let stored = h.runs.find_run(run.id).await.expect("query").expect("found").run;
        assert_eq!(stored.started_at, at(0), "{k}");
        assert_eq!(stored.created_at, at(0), "{k}");
        assert_eq!(stored.lease_expires_at, Some(at(120)), "{k}");
        assert_eq!(stored.ended_at, Some(at(30)), "{k}");
        assert_eq!(stored.updated_at, at(30), "{k}");
        let after = h.flows.find_by_id(flow.id).await.expect("query").expect("found");
        assert_eq!(after.last_run_at, Some(at(30)), "{k}");
        assert_eq!(after.next_run_at, Some(at(3600)), "{k}");
        assert_eq!(after.pending_retry.map(|retry| retry.at), Some(at(40)), "{k}");

        let retry = h
            .runs
            .start_run(run_at(Claim::Retry, 40, 2))
            .await
            .unwrap_or_else(|e| panic!("{k}: retry claimed when due in 2040: {e}"));
        h.runs
            .finish_run(retry.id, flow.id, RunOutcome::success(at(50)))
            .await
            .unwrap_or_else(|e| panic!("{k}: retry finished: {e}"));
        let stored = h
            .runs
            .find_run(retry.id)
            .await
            .expect("query")
            .expect("found")
            .run;
        assert_eq!(
            (stored.started_at, stored.ended_at, stored.status),
            (at(40), Some(at(50)), RunStatus::Success),
            "{k}"
        );
    })
    .await;
}

/// Creates (or drops) a trigger that refuses every `event` (`INSERT`, `UPDATE`) on `table`.
async fn refuse(sql: &Sql, table: &str, event: &str, on: bool) {
    let db = sql.connection();
    let name = format!("refuse_{}_{}", table, event.to_lowercase());
    let statements = match (sql.kind, on) {
        (Kind::Sqlite, true) => vec![format!(
            "CREATE TRIGGER {name} BEFORE {event} ON {table} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )],
        (Kind::Postgres, true) => vec![
            "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql".to_owned(),
            format!("CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()"),
        ],
        (Kind::MySql, true) => vec![format!(
            "CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'"
        )],
        (Kind::Postgres, false) => vec![format!("DROP TRIGGER {name} ON {table}")],
        (_, false) => vec![format!("DROP TRIGGER {name}")],
        (Kind::Memory, true) => unreachable!("SQL backends only"),
    };
    for statement in statements {
        db.execute_raw(Statement::from_string(
            db.get_database_backend(),
            statement.clone(),
        ))
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// SQL only: the database refuses a step halfway (a trigger raises), which no adapter-level input can
/// cause. Each step is one transaction however it travels (a function call, a batch, statements): a
/// refused start leaves the flow unclaimed and no run, a refused finish leaves the run in progress, and
/// the connections that saw the failure serve the next steps.
#[tokio::test]
async fn a_step_the_database_refuses_halfway_changes_nothing() {
    each_sql_backend(async |h, sql, k| {
        let flow = create(h, "f", json!("Noop")).await;
        refuse(sql, "data_flow_runs", "INSERT", true).await;
        for attempt in 0..3 {
            let refused = h.runs.start_run(start(&flow, t(10 + attempt))).await;
            assert!(
                matches!(refused, Err(StartRunError::Repository(_))),
                "{k}: {refused:?}"
            );
        }
        refuse(sql, "data_flow_runs", "INSERT", false).await;
        let run = h
            .runs
            .start_run(start(&flow, t(20)))
            .await
            .unwrap_or_else(|e| panic!("{k}: the refused claims were undone: {e}"));
        assert_eq!(h.runs.count_runs(flow.id).await.expect("count"), 1, "{k}");

        // The flow's end is refused after the run's own end was written in the same transaction.
        refuse(sql, "data_flows", "UPDATE", true).await;
        for attempt in 0..3 {
            let refused = h
                .runs
                .finish_run(run.id, flow.id, RunOutcome::success(t(21 + attempt)))
                .await;
            assert!(
                matches!(refused, Err(FinishRunError::Repository(_))),
                "{k}: {refused:?}"
            );
            let stored = h.runs.find_run(run.id).await.expect("query").expect("found");
            assert_eq!(
                stored.run.status,
                RunStatus::InProgress,
                "{k}: the run's end was undone too"
            );
        }
        refuse(sql, "data_flows", "UPDATE", false).await;
        h.runs
            .finish_run(run.id, flow.id, RunOutcome::success(t(30)))
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        let stored = h.runs.find_run(run.id).await.expect("query").expect("found");
        assert_eq!(stored.run.status, RunStatus::Success, "{k}");
        assert_eq!(stored.run.ended_at, Some(t(30)), "{k}");
        let again = h.runs.start_run(start(&flow, t(40))).await;
        assert!(again.is_ok(), "{k}: the flow was released: {again:?}");
    })
    .await;
}

/// The outcome the group-commit tests give run `i`: successes with and without output and state, failures
/// with and without a pending retry, so every column a finish writes is exercised.
fn varied_outcome(i: usize, at: DateTime<Utc>) -> RunOutcome {
    use flowrun_domain::PendingRetry;
    match i % 4 {
        0 => RunOutcome::success(at),
        1 => RunOutcome::success(at)
            .with_output(format!("out {i}\n'; DROP TABLE data_flows; --"))
            .with_state(Some(json!({"cursor": i}))),
        2 => RunOutcome::failure(at, format!("boom {i}"), format!("trace {i}")),
        _ => RunOutcome::failure(at, format!("boom {i}"), "trace".into()).retried(Some(PendingRetry {
            at: at + Duration::seconds(60),
            attempt: 2,
        })),
    }
}

/// What a finish recorded on the run and its flow, without the ids and names that differ between flows.
async fn recorded_end(h: &Harness, run: RunId, flow: DataFlowId) -> String {
    let run = stored_run(h, run).await;
    let flow = h.flows.find_by_id(flow).await.expect("query").expect("found");
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} | {:?} {:?} {:?} {:?}",
        run.status,
        run.ended_at,
        run.error_message,
        run.error_backtrace,
        run.failure_kind,
        run.output,
        flow.last_run_at,
        flow.last_run_status,
        flow.pending_retry,
        flow.state,
    )
}

/// Starts one run on each of `n` new flows named `{prefix}-{i}`.
async fn started_runs(h: &Harness, prefix: &str, n: usize) -> Vec<(DataFlow, DataFlowRun)> {
    let mut started = Vec::with_capacity(n);
    for i in 0..n {
        let flow = create(h, &format!("{prefix}-{i}"), json!("Noop")).await;
        let run = h.runs.start_run(start(&flow, t(10))).await.expect("started");
        started.push((flow, run));
    }
    started
}

/// Many finishes at once (200 runs finished from 200 tasks) are each recorded exactly as the same finish
/// alone records it. On PostgreSQL concurrent finishes are written in batches (group commit): the test
/// checks that some were, and that batching changed nothing a finish records.
#[tokio::test]
async fn many_concurrent_finishes_are_each_recorded_as_a_single_finish_would_be() {
    const N: usize = 200;
    each_backend(async |h, k| {
        let alone = started_runs(h, "alone", N).await;
        for (i, (flow, run)) in alone.iter().enumerate() {
            h.runs
                .finish_run(run.id, flow.id, varied_outcome(i, t(20 + i as i64)))
                .await
                .unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        let together = started_runs(h, "together", N).await;
        let grouped_before = h
            .sea_runs
            .as_ref()
            .map_or(0, SeaOrmRunRepository::grouped_finishes);
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let tasks: Vec<_> = together
            .iter()
            .enumerate()
            .map(|(i, (flow, run))| {
                let (runs, barrier) = (h.runs.clone(), barrier.clone());
                let (run_id, flow_id) = (run.id, flow.id);
                tokio::spawn(async move {
                    barrier.wait().await;
                    runs.finish_run(run_id, flow_id, varied_outcome(i, t(20 + i as i64)))
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await
                .expect("the task ran")
                .unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        for (i, ((a_flow, a_run), (b_flow, b_run))) in alone.iter().zip(&together).enumerate() {
            assert_eq!(
                recorded_end(h, b_run.id, b_flow.id).await,
                recorded_end(h, a_run.id, a_flow.id).await,
                "{k}: run {i} finished together with others is recorded as alone"
            );
            let again = h.runs.start_run(start(b_flow, t(1000))).await;
            assert!(again.is_ok(), "{k}: run {i}'s flow was released: {again:?}");
        }
        if k == "postgres" {
            let grouped = h
                .sea_runs
                .as_ref()
                .map_or(0, SeaOrmRunRepository::grouped_finishes);
            assert!(grouped > grouped_before, "{k}: no finish was written in a batch");
        }
    })
    .await;
}

/// Finishes `runs` as one group: on SQL backends through the repository's own `finish_runs` (on
/// PostgreSQL, one batch statement), elsewhere one after the other.
async fn finish_together(
    h: &Harness,
    runs: Vec<(RunId, DataFlowId, RunOutcome)>,
) -> Vec<Result<(), FinishRunError>> {
    match &h.sea_runs {
        Some(sea) => sea.finish_runs(runs).await,
        None => {
            let mut results = Vec::new();
            for (run, flow, outcome) in runs {
                results.push(h.runs.finish_run(run, flow, outcome).await);
            }
            results
        }
    }
}

/// A finish of a run that is no longer in progress, in the same batch as finishes of live runs, is
/// refused as `NotInProgress` on its own: the others are recorded, and the stale one changes nothing.
#[tokio::test]
async fn a_stale_finish_in_a_batch_is_refused_alone_and_the_others_are_recorded() {
    each_backend(async |h, k| {
        let runs = started_runs(h, "b", 5).await;
        let (stale_flow, stale_run) = &runs[2];
        h.runs
            .finish_run(stale_run.id, stale_flow.id, RunOutcome::success(t(15)))
            .await
            .expect("finished first");
        let grouped_before = h
            .sea_runs
            .as_ref()
            .map_or(0, SeaOrmRunRepository::grouped_finishes);
        let results = finish_together(
            h,
            runs.iter()
                .map(|(flow, run)| {
                    (
                        run.id,
                        flow.id,
                        RunOutcome::failure(t(20), "late".into(), "t".into()),
                    )
                })
                .collect(),
        )
        .await;
        for (i, ((flow, run), result)) in runs.iter().zip(results).enumerate() {
            let stored = stored_run(h, run.id).await;
            if i == 2 {
                assert!(
                    matches!(&result, Err(FinishRunError::NotInProgress { run_id, status })
                        if *run_id == run.id && status == "success"),
                    "{k}: {result:?}"
                );
                assert_eq!(
                    (stored.status, stored.ended_at),
                    (RunStatus::Success, Some(t(15))),
                    "{k}: the stale finish changed nothing"
                );
                let flow = h.flows.find_by_id(flow.id).await.expect("query").expect("found");
                assert_eq!(flow.last_run_at, Some(t(15)), "{k}");
            } else {
                result.unwrap_or_else(|e| panic!("{k}: run {i}: {e}"));
                assert_eq!(
                    (stored.status, stored.ended_at, stored.error_message.as_deref()),
                    (RunStatus::Failed, Some(t(20)), Some("late")),
                    "{k}: run {i}"
                );
            }
        }
        if k == "postgres" {
            let grouped = h
                .sea_runs
                .as_ref()
                .map_or(0, SeaOrmRunRepository::grouped_finishes);
            assert_eq!(grouped - grouped_before, 5, "{k}: the five went as one batch");
        }
    })
    .await;
}

/// Creates (or drops) a trigger that refuses to store the output `poison` on a run.
async fn refuse_poison(sql: &Sql, on: bool) {
    let statements = match (sql.kind, on) {
        (Kind::Sqlite, true) => vec![
            "CREATE TRIGGER refuse_poison BEFORE UPDATE ON data_flow_runs WHEN NEW.output = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        ],
        (Kind::Postgres, true) => vec![
            "CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
             IF NEW.output = 'poison' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; \
             END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_poison BEFORE UPDATE ON data_flow_runs FOR EACH ROW \
             EXECUTE FUNCTION refuse_poison()",
        ],
        (Kind::MySql, true) => vec![
            "CREATE TRIGGER refuse_poison BEFORE UPDATE ON data_flow_runs FOR EACH ROW BEGIN \
             IF NEW.output = 'poison' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'; \
             END IF; END",
        ],
        (Kind::Postgres, false) => vec!["DROP TRIGGER refuse_poison ON data_flow_runs"],
        (_, false) => vec!["DROP TRIGGER refuse_poison"],
        (Kind::Memory, true) => unreachable!("SQL backends only"),
    };
    for statement in statements {
        sql.connection()
            .execute_unprepared(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// SQL only: a batch whose statement the database refuses (one finish's output is refused by a trigger)
/// falls back to finishing each run alone: the refused finish fails on its own, leaving its run in
/// progress, and the others are recorded.
#[tokio::test]
async fn a_batch_the_database_refuses_falls_back_and_records_the_good_finishes() {
    each_sql_backend(async |h, sql, k| {
        let runs = started_runs(h, "c", 6).await;
        refuse_poison(sql, true).await;
        let results = finish_together(
            h,
            runs.iter()
                .enumerate()
                .map(|(i, (flow, run))| {
                    let output = if i == 3 { "poison" } else { "fine" };
                    (
                        run.id,
                        flow.id,
                        RunOutcome::success(t(20)).with_output(output.to_owned()),
                    )
                })
                .collect(),
        )
        .await;
        refuse_poison(sql, false).await;
        for (i, ((flow, run), result)) in runs.iter().zip(results).enumerate() {
            let stored = stored_run(h, run.id).await;
            if i == 3 {
                assert!(
                    matches!(result, Err(FinishRunError::Repository(_))),
                    "{k}: {result:?}"
                );
                assert_eq!(
                    stored.status,
                    RunStatus::InProgress,
                    "{k}: nothing of it was written"
                );
                h.runs
                    .finish_run(run.id, flow.id, RunOutcome::success(t(30)))
                    .await
                    .unwrap_or_else(|e| panic!("{k}: finished once allowed: {e}"));
            } else {
                result.unwrap_or_else(|e| panic!("{k}: run {i}: {e}"));
                assert_eq!(
                    (stored.status, stored.ended_at, stored.output.as_str()),
                    (RunStatus::Success, Some(t(20)), "fine"),
                    "{k}: run {i}"
                );
            }
        }
    })
    .await;
}
