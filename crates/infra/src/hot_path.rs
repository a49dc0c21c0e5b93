//! The statements every run executes, built once per backend from the entities' columns.
//!
//! A run's start and finish (and the lease renewals between them) run the same few statements millions of
//! times. They are built here with sea-query from the `Column` enums of [`crate::entity`], rendered once
//! for the backend (its quoting and placeholders: `$n` on PostgreSQL, `?` elsewhere) and then only bound
//! per run: building them per run cost about a fifth of a run's client instructions (see
//! `docs/performance.md`). Renaming a column in an entity renames it here, and removing one is a compile
//! error; there is no SQL text to keep in step by hand.
//!
//! Both [`crate::SeaOrmRunRepository`] and the benchmark's hand-written floor (`flowrun-bench --raw`)
//! execute these definitions, so the floor always measures the statements flowrun sends.
//!
//! Each statement's placeholders are listed in binding order on its field. Constants (the claim marker,
//! the statuses a statement writes or guards on, NULLs) are written into the SQL as literals; status
//! guards in particular stay literal so a planner sees them when it plans the statement.
//!
//! How the statements travel differs per backend ([`Steps`]): PostgreSQL runs each step as one call of a
//! function the migration `m20261201_000001_lifecycle_functions` created, whose body runs these very
//! statements; SQLite sends each step's transaction to its connection's worker as one batch of them
//! ([`SqliteBatches`]); MySQL/MariaDB runs them one by one in a transaction.
//!
//! Times must be bound with [`HotPath::time`]: every timestamp column is a `DATETIME(6)` on MySQL/MariaDB,
//! and a time bound the drivers' default way arrives there as a `TIMESTAMP`, which MariaDB turns into
//! NULL after January 2038.

use chrono::{DateTime, Utc};
use flowrun_domain::RunStatus;
use sea_orm::sea_query::{Expr, ExprTrait, Keyword, Query, SimpleExpr, UpdateStatement};
use sea_orm::{DatabaseBackend, EntityName, Statement, StatementBuilder, Value};

use crate::entity::{data_flow, data_flow_run};
use crate::mapping;

/// While the start transaction runs, the flow's `active_run_id` holds this marker; the real run id replaces
/// it before commit, so no other transaction ever sees it.
pub const CLAIM_MARKER: i64 = 0;

/// The SQL of the statements a run's start, lease renewals and finish execute, in one backend's dialect.
#[derive(Debug, Clone)]
pub struct HotPath {
    backend: DatabaseBackend,
    /// Claims a flow for a manual run: `active_run_id` NULL → [`CLAIM_MARKER`]. Binds: flow id.
    pub claim: String,
    /// The same, only while the flow is enabled and due (scheduled runs), moving `next_run_at` on.
    /// Binds: next run time, flow id, `true`, now.
    pub claim_due: String,
    /// The same, only while the flow is enabled and its pending retry is due, clearing it.
    /// Binds: flow id, `true`, now.
    pub claim_retry: String,
    /// Inserts the run as `pending`; `RETURNING id` where [`HotPath::insert_returns_id`], the driver's
    /// insert id elsewhere. Binds: flow id, started at, lease owner, lease expires at, attempt, trigger,
    /// created at, updated at.
    pub insert_pending: String,
    /// Moves the run to `in_progress`. Binds: run id.
    pub in_progress: String,
    /// Makes the run the flow's active run, replacing the claim marker. Binds: run id, flow id.
    pub activate: String,
    /// Extends a live run's lease; guarded by `status = 'in_progress'`. Binds: lease expires at, run id.
    pub renew_lease: String,
    /// Ends the run; guarded by `status = 'in_progress'`, so a reaped run's late outcome changes nothing.
    /// Binds: status, ended at, error message, error backtrace, failure kind, updated at, run id.
    pub end_run: String,
    /// Records the end on the flow and releases its claim. Binds: last run at, last run status, retry
    /// at, retry attempt, updated at, flow id.
    pub end_flow: String,
    /// How a start and a finish reach this backend.
    pub steps: Steps,
}

/// How a run's start and finish reach the database: as few round trips as the backend allows.
#[derive(Debug, Clone)]
pub enum Steps {
    /// PostgreSQL: each step is one call of a function (`flowrun_start_run`, `flowrun_finish_run`, created
    /// by a migration), one round trip and one implicit transaction.
    Calls {
        /// Starts a run; returns `(run id, started at, lease expires at)`, or no row when the claim matched
        /// nothing. Binds: claim (`manual`, `due`, `retry`), flow id, next run at (due claims; else
        /// NULL), now (due and retry claims compare with it), started at, lease owner, lease expires at,
        /// attempt, trigger, whether the wait for the claim's lock moves the start.
        start: String,
        /// Finishes a run while it is `in_progress`; returns whether it did. Binds: run id, flow id,
        /// status, ended at, error message, error backtrace, failure kind, retry at, retry attempt, output
        /// (NULL: leave it), state (NULL: leave it).
        finish: String,
    },
    /// SQLite: each step's transaction travels to the connection's worker as one batch.
    Batches(SqliteBatches),
    /// MySQL/MariaDB: the statements one by one inside a transaction.
    Statements,
}

/// The batches a SQLite connection runs for a start and a finish: several statements in one text, which
/// sqlx's SQLite driver executes in one command on the connection's worker thread, binding the values to
/// the statements' placeholders in order.
///
/// A statement after a guard is itself guarded by `changes() = 1`: SQLite's count of the rows the
/// statement just before it changed (not counting trigger changes), so when the claim or the end's guard
/// matches no row, nothing after it changes anything either, and the batch's `COMMIT` commits nothing.
/// The run's id reaches the statements after the insert as `last_insert_rowid()`, which a trigger's own
/// inserts do not change once the trigger ends.
#[derive(Debug, Clone)]
pub struct SqliteBatches {
    /// Takes the write lock (`BEGIN IMMEDIATE`), alone, so the run's start is read once it is granted.
    pub begin: String,
    /// After [`SqliteBatches::begin`]: the manual claim, then the guarded insert, `in_progress`, the
    /// activation and `COMMIT`. Binds: the claim's, then the insert's (as [`HotPath::insert_pending`]), then
    /// the flow id.
    pub start_manual: String,
    /// The same with the due claim.
    pub start_due: String,
    /// The same with the retry claim.
    pub start_retry: String,
    /// `BEGIN IMMEDIATE`, the end of the run, its output when there is one, the end on the flow, the flow's
    /// state when there is one, `COMMIT`; indexed by [`SqliteBatches::finish_index`]. Binds: the end's (as
    /// [`HotPath::end_run`]), then output and run id when there is output, then the flow end's (as
    /// [`HotPath::end_flow`]), then state and flow id when there is state.
    pub finish: [String; 4],
}

impl SqliteBatches {
    /// Which of [`SqliteBatches::finish`] writes what the outcome has.
    pub fn finish_index(output: bool, state: bool) -> usize {
        usize::from(output) | usize::from(state) << 1
    }
}

/// A placeholder: the value given here only types it while the SQL is rendered and is thrown away.
fn bind() -> Expr {
    Expr::val(Value::BigInt(None))
}

/// A constant written into the SQL.
fn literal(value: impl Into<Value>) -> Expr {
    Expr::Constant(value.into())
}

fn null() -> Expr {
    Expr::Keyword(Keyword::Null)
}

fn in_progress() -> Expr {
    literal(RunStatus::InProgress.as_str())
}

/// SQLite: the statement just before this one changed exactly one row (see [`SqliteBatches`]).
fn after_one_change() -> SimpleExpr {
    Expr::cust("changes() = 1")
}

/// SQLite: the id of the row the batch inserted.
fn inserted_id() -> Expr {
    Expr::cust("last_insert_rowid()")
}

/// The PostgreSQL function calls, with every parameter cast to the type of the function's parameter so
/// the call resolves whatever type a NULL is bound as.
const PG_START: &str = "SELECT new_run_id, new_started_at, new_lease_expires_at FROM flowrun_start_run(\
     $1::text, $2::bigint, $3::timestamptz, $4::timestamptz, $5::timestamptz, $6::text, $7::timestamptz, \
     $8::integer, $9::text, $10::boolean)";
const PG_FINISH: &str = "SELECT flowrun_finish_run($1::bigint, $2::bigint, $3::text, $4::timestamptz, \
     $5::text, $6::text, $7::text, $8::timestamptz, $9::integer, $10::text, $11::text)";

/// `UPDATE data_flows SET active_run_id = 0 WHERE id = ? AND active_run_id IS NULL`, to which the due and
/// retry claims add their columns and conditions.
fn claim() -> UpdateStatement {
    Query::update()
        .table(data_flow::Entity.table_ref())
        .value(data_flow::Column::ActiveRunId, literal(CLAIM_MARKER))
        .to_owned()
}

fn claim_where(update: &mut UpdateStatement) -> &mut UpdateStatement {
    update
        .and_where(Expr::col(data_flow::Column::Id).eq(bind()))
        .and_where(Expr::col(data_flow::Column::ActiveRunId).is_null())
}

impl HotPath {
    /// The statements in `backend`'s dialect. Build it once (a repository does when it is made) and bind
    /// its statements per run with [`HotPath::statement`].
    pub fn new(backend: DatabaseBackend) -> Self {
        use data_flow_run::Column as Run;
        let sql = |statement: &dyn StatementBuilder| statement.build(&backend).sql;

        let mut manual = claim();
        claim_where(&mut manual);

        let mut due = claim();
        due.value(data_flow::Column::NextRunAt, bind());
        claim_where(&mut due)
            .and_where(Expr::col(data_flow::Column::Enabled).eq(bind()))
            .and_where(Expr::col(data_flow::Column::NextRunAt).lte(bind()));

        let mut retry = claim();
        retry
            .value(data_flow::Column::RetryAt, null())
            .value(data_flow::Column::RetryAttempt, null());
        claim_where(&mut retry)
            .and_where(Expr::col(data_flow::Column::Enabled).eq(bind()))
            .and_where(Expr::col(data_flow::Column::RetryAt).lte(bind()));

        let columns = [
            (Run::DataFlowId, bind()),
            (Run::Status, literal(RunStatus::Pending.as_str())),
            (Run::StartedAt, bind()),
            (Run::LeaseOwner, bind()),
            (Run::LeaseExpiresAt, bind()),
            (Run::Attempt, bind()),
            (Run::TriggeredBy, bind()),
            (Run::CreatedAt, bind()),
            (Run::UpdatedAt, bind()),
        ];
        let (names, values): (Vec<_>, Vec<_>) = columns.into_iter().unzip();
        let mut guarded_insert = Query::insert();
        guarded_insert
            .into_table(data_flow_run::Entity.table_ref())
            .columns(names.clone())
            .select_from(
                Query::select()
                    .exprs(values.clone())
                    .and_where(after_one_change())
                    .to_owned(),
            )
            .expect("as many values as columns, by construction");
        let mut insert = Query::insert();
        insert
            .into_table(data_flow_run::Entity.table_ref())
            .columns(names)
            .values(values)
            .expect("as many values as columns, by construction");
        if Self::returns_id(backend) {
            insert.returning_col(Run::Id);
        }

        let in_progress_sql = Query::update()
            .table(data_flow_run::Entity.table_ref())
            .value(Run::Status, in_progress())
            .and_where(Expr::col(Run::Id).eq(bind()))
            .to_owned();

        let activate = Query::update()
            .table(data_flow::Entity.table_ref())
            .value(data_flow::Column::ActiveRunId, bind())
            .and_where(Expr::col(data_flow::Column::Id).eq(bind()))
            .to_owned();

        let renew_lease = Query::update()
            .table(data_flow_run::Entity.table_ref())
            .value(Run::LeaseExpiresAt, bind())
            .and_where(Expr::col(Run::Id).eq(bind()))
            .and_where(Expr::col(Run::Status).eq(in_progress()))
            .to_owned();

        let end_run = Query::update()
            .table(data_flow_run::Entity.table_ref())
            .value(Run::Status, bind())
            .value(Run::EndedAt, bind())
            .value(Run::ErrorMessage, bind())
            .value(Run::ErrorBacktrace, bind())
            .value(Run::FailureKind, bind())
            .value(Run::UpdatedAt, bind())
            .and_where(Expr::col(Run::Id).eq(bind()))
            .and_where(Expr::col(Run::Status).eq(in_progress()))
            .to_owned();

        let end_flow = Query::update()
            .table(data_flow::Entity.table_ref())
            .value(data_flow::Column::LastRunAt, bind())
            .value(data_flow::Column::LastRunStatus, bind())
            .value(data_flow::Column::ActiveRunId, null())
            .value(data_flow::Column::RetryAt, bind())
            .value(data_flow::Column::RetryAttempt, bind())
            .value(data_flow::Column::UpdatedAt, bind())
            .and_where(Expr::col(data_flow::Column::Id).eq(bind()))
            .to_owned();

        let steps = match backend {
            DatabaseBackend::Postgres => Steps::Calls {
                start: PG_START.to_owned(),
                finish: PG_FINISH.to_owned(),
            },
            DatabaseBackend::Sqlite => {
                let guarded_in_progress = Query::update()
                    .table(data_flow_run::Entity.table_ref())
                    .value(Run::Status, in_progress())
                    .and_where(Expr::col(Run::Id).eq(inserted_id()))
                    .and_where(after_one_change())
                    .to_owned();
                let guarded_activate = Query::update()
                    .table(data_flow::Entity.table_ref())
                    .value(data_flow::Column::ActiveRunId, inserted_id())
                    .and_where(Expr::col(data_flow::Column::Id).eq(bind()))
                    .and_where(after_one_change())
                    .to_owned();
                let output = Query::update()
                    .table(data_flow_run::Entity.table_ref())
                    .value(Run::Output, bind())
                    .and_where(Expr::col(Run::Id).eq(bind()))
                    .and_where(after_one_change())
                    .to_owned();
                let mut guarded_end_flow = end_flow.clone();
                guarded_end_flow.and_where(after_one_change());
                let state = Query::update()
                    .table(data_flow::Entity.table_ref())
                    .value(data_flow::Column::State, bind())
                    .and_where(Expr::col(data_flow::Column::Id).eq(bind()))
                    .and_where(after_one_change())
                    .to_owned();
                let batch = |parts: &[&str]| parts.join(";\n");
                let tail = [
                    sql(&guarded_insert),
                    sql(&guarded_in_progress),
                    sql(&guarded_activate),
                ]
                .join(";\n");
                let start = |claim: &UpdateStatement| batch(&[&sql(claim), &tail, "COMMIT"]);
                let finish = |output_too: bool, state_too: bool| {
                    let (end_run, output, end_flow, state) =
                        (sql(&end_run), sql(&output), sql(&guarded_end_flow), sql(&state));
                    let mut parts = vec!["BEGIN IMMEDIATE", end_run.as_str()];
                    if output_too {
                        parts.push(&output);
                    }
                    parts.push(&end_flow);
                    if state_too {
                        parts.push(&state);
                    }
                    parts.push("COMMIT");
                    batch(&parts)
                };
                Steps::Batches(SqliteBatches {
                    begin: "BEGIN IMMEDIATE".to_owned(),
                    start_manual: start(&manual),
                    start_due: start(&due),
                    start_retry: start(&retry),
                    finish: [
                        finish(false, false),
                        finish(true, false),
                        finish(false, true),
                        finish(true, true),
                    ],
                })
            }
            _ => Steps::Statements,
        };

        Self {
            backend,
            steps,
            claim: sql(&manual),
            claim_due: sql(&due),
            claim_retry: sql(&retry),
            insert_pending: sql(&insert),
            in_progress: sql(&in_progress_sql),
            activate: sql(&activate),
            renew_lease: sql(&renew_lease),
            end_run: sql(&end_run),
            end_flow: sql(&end_flow),
        }
    }

    fn returns_id(backend: DatabaseBackend) -> bool {
        backend == DatabaseBackend::Postgres
    }

    /// The backend these statements are written for.
    pub fn backend(&self) -> DatabaseBackend {
        self.backend
    }

    /// Whether [`HotPath::insert_pending`] returns the new run's id as a row (PostgreSQL); elsewhere the
    /// driver reports it (MySQL's OK packet, SQLite's `last_insert_rowid`). One round trip either way.
    pub fn insert_returns_id(&self) -> bool {
        Self::returns_id(self.backend)
    }

    /// One of these statements (`sql`, a field of this value) with its values, in binding order.
    pub fn statement<const N: usize>(&self, sql: &str, values: [Value; N]) -> Statement {
        Statement::from_sql_and_values(self.backend, sql, values)
    }

    /// A time (or NULL) as a value for a timestamp column of this backend: without a zone on MySQL/MariaDB,
    /// whose drivers would otherwise send it as a `TIMESTAMP` (see the module's documentation).
    pub fn time(&self, at: impl Into<Option<DateTime<Utc>>>) -> Value {
        mapping::far_time(self.backend, at.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements as each backend receives them: the same text the repository wrote by hand before
    /// they were built from the entities, quoted.
    #[test]
    fn the_statements_are_rendered_per_backend() {
        let pg = HotPath::new(DatabaseBackend::Postgres);
        assert_eq!(
            pg.claim,
            r#"UPDATE "data_flows" SET "active_run_id" = 0 WHERE "id" = $1 AND "active_run_id" IS NULL"#
        );
        assert_eq!(
            pg.claim_due,
            r#"UPDATE "data_flows" SET "active_run_id" = 0, "next_run_at" = $1 WHERE "id" = $2 AND "active_run_id" IS NULL AND "enabled" = $3 AND "next_run_at" <= $4"#
        );
        assert_eq!(
            pg.claim_retry,
            r#"UPDATE "data_flows" SET "active_run_id" = 0, "retry_at" = NULL, "retry_attempt" = NULL WHERE "id" = $1 AND "active_run_id" IS NULL AND "enabled" = $2 AND "retry_at" <= $3"#
        );
        assert_eq!(
            pg.insert_pending,
            r#"INSERT INTO "data_flow_runs" ("data_flow_id", "status", "started_at", "lease_owner", "lease_expires_at", "attempt", "triggered_by", "created_at", "updated_at") VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8) RETURNING "id""#
        );
        assert_eq!(
            pg.in_progress,
            r#"UPDATE "data_flow_runs" SET "status" = 'in_progress' WHERE "id" = $1"#
        );
        assert_eq!(
            pg.activate,
            r#"UPDATE "data_flows" SET "active_run_id" = $1 WHERE "id" = $2"#
        );
        assert_eq!(
            pg.renew_lease,
            r#"UPDATE "data_flow_runs" SET "lease_expires_at" = $1 WHERE "id" = $2 AND "status" = 'in_progress'"#
        );
        assert_eq!(
            pg.end_run,
            r#"UPDATE "data_flow_runs" SET "status" = $1, "ended_at" = $2, "error_message" = $3, "error_backtrace" = $4, "failure_kind" = $5, "updated_at" = $6 WHERE "id" = $7 AND "status" = 'in_progress'"#
        );
        assert_eq!(
            pg.end_flow,
            r#"UPDATE "data_flows" SET "last_run_at" = $1, "last_run_status" = $2, "active_run_id" = NULL, "retry_at" = $3, "retry_attempt" = $4, "updated_at" = $5 WHERE "id" = $6"#
        );

        let my = HotPath::new(DatabaseBackend::MySql);
        assert_eq!(
            my.claim_due,
            "UPDATE `data_flows` SET `active_run_id` = 0, `next_run_at` = ? WHERE `id` = ? AND `active_run_id` IS NULL AND `enabled` = ? AND `next_run_at` <= ?"
        );
        assert_eq!(
            my.insert_pending,
            "INSERT INTO `data_flow_runs` (`data_flow_id`, `status`, `started_at`, `lease_owner`, `lease_expires_at`, `attempt`, `triggered_by`, `created_at`, `updated_at`) VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?)"
        );
        assert_eq!(
            my.end_run,
            "UPDATE `data_flow_runs` SET `status` = ?, `ended_at` = ?, `error_message` = ?, `error_backtrace` = ?, `failure_kind` = ?, `updated_at` = ? WHERE `id` = ? AND `status` = 'in_progress'"
        );

        let lite = HotPath::new(DatabaseBackend::Sqlite);
        assert_eq!(
            lite.insert_pending,
            r#"INSERT INTO "data_flow_runs" ("data_flow_id", "status", "started_at", "lease_owner", "lease_expires_at", "attempt", "triggered_by", "created_at", "updated_at") VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?)"#,
            "no RETURNING: the driver's insert id is one round trip already"
        );
        assert_eq!(
            lite.end_flow,
            r#"UPDATE "data_flows" SET "last_run_at" = ?, "last_run_status" = ?, "active_run_id" = NULL, "retry_at" = ?, "retry_attempt" = ?, "updated_at" = ? WHERE "id" = ?"#
        );
    }

    /// SQLite's batches: the same statements, those after a guard guarded by `changes() = 1`, the run's id
    /// taken from `last_insert_rowid()`.
    #[test]
    fn sqlite_steps_are_batches_of_guarded_statements() {
        let lite = HotPath::new(DatabaseBackend::Sqlite);
        let Steps::Batches(batches) = &lite.steps else {
            panic!("SQLite runs batches: {:?}", lite.steps);
        };
        assert_eq!(batches.begin, "BEGIN IMMEDIATE");
        assert_eq!(
            batches.start_manual,
            [
                r#"UPDATE "data_flows" SET "active_run_id" = 0 WHERE "id" = ? AND "active_run_id" IS NULL"#,
                r#"INSERT INTO "data_flow_runs" ("data_flow_id", "status", "started_at", "lease_owner", "lease_expires_at", "attempt", "triggered_by", "created_at", "updated_at") SELECT ?, 'pending', ?, ?, ?, ?, ?, ?, ? WHERE changes() = 1"#,
                r#"UPDATE "data_flow_runs" SET "status" = 'in_progress' WHERE "id" = (last_insert_rowid()) AND (changes() = 1)"#,
                r#"UPDATE "data_flows" SET "active_run_id" = last_insert_rowid() WHERE "id" = ? AND (changes() = 1)"#,
                "COMMIT",
            ]
            .join(";\n")
        );
        assert!(batches.start_due.starts_with(&format!("{};\n", lite.claim_due)));
        assert!(
            batches
                .start_retry
                .starts_with(&format!("{};\n", lite.claim_retry))
        );
        assert_eq!(
            batches.finish[SqliteBatches::finish_index(true, true)],
            [
                "BEGIN IMMEDIATE",
                &lite.end_run,
                r#"UPDATE "data_flow_runs" SET "output" = ? WHERE "id" = ? AND (changes() = 1)"#,
                &format!("{} AND (changes() = 1)", lite.end_flow),
                r#"UPDATE "data_flows" SET "state" = ? WHERE "id" = ? AND (changes() = 1)"#,
                "COMMIT",
            ]
            .join(";\n")
        );
        let plain = &batches.finish[SqliteBatches::finish_index(false, false)];
        assert!(!plain.contains("output") && !plain.contains("state"), "{plain}");
        let output_only = &batches.finish[SqliteBatches::finish_index(true, false)];
        assert!(output_only.contains("output") && !output_only.contains("\"state\""));
        let state_only = &batches.finish[SqliteBatches::finish_index(false, true)];
        assert!(!state_only.contains("output") && state_only.contains("\"state\""));
    }

    #[test]
    fn postgres_steps_are_function_calls_and_mysql_keeps_statements() {
        let Steps::Calls { start, finish } = HotPath::new(DatabaseBackend::Postgres).steps else {
            panic!("PostgreSQL calls functions");
        };
        assert!(start.contains("FROM flowrun_start_run($1::text,"), "{start}");
        assert!(start.ends_with("$10::boolean)"), "{start}");
        assert!(
            finish.starts_with("SELECT flowrun_finish_run($1::bigint,"),
            "{finish}"
        );
        assert!(finish.ends_with("$11::text)"), "{finish}");
        assert!(matches!(
            HotPath::new(DatabaseBackend::MySql).steps,
            Steps::Statements
        ));
    }

    #[test]
    fn times_bind_without_a_zone_only_on_mysql() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(
            HotPath::new(DatabaseBackend::MySql).time(at),
            Value::from(at.naive_utc())
        );
        assert_eq!(HotPath::new(DatabaseBackend::Postgres).time(at), Value::from(at));
        assert_eq!(
            HotPath::new(DatabaseBackend::Sqlite).time(None),
            Value::from(Option::<DateTime<Utc>>::None)
        );
    }
}
