//! A run's start and finish as two PostgreSQL functions, so each lifecycle step is one round trip and one
//! implicit transaction instead of `BEGIN`, a statement per step and `COMMIT`.
//!
//! `flowrun_start_run` claims the flow (the manual, due and retry variants of the claim), inserts the run
//! as `pending`, moves it to `in_progress` and replaces the claim marker with the run's id; it returns no
//! row when the claim matched nothing. `flowrun_finish_run` ends the run only while it is `in_progress` (a
//! reaped run's late outcome changes nothing), records the end on the flow and releases it, and writes the
//! output and the state when given; it returns whether the run was ended. They execute exactly the
//! statements `flowrun_infra::hot_path` builds for the other backends; the Rust side calls them through
//! the texts built there.
//!
//! The bodies name columns of `data_flows` and `data_flow_runs`. **A later migration that renames or
//! retypes one of those columns must recreate these functions** (`CREATE OR REPLACE FUNCTION` with the
//! new names), or every run's start or finish fails at its first call.
//!
//! SQLite and MySQL/MariaDB get nothing here: SQLite runs each step as one batch on its connection, and
//! MariaDB keeps its statements (see `docs/performance.md`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// Creates `flowrun_start_run` and `flowrun_finish_run` on PostgreSQL.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

/// The claim marker (`flowrun_infra::hot_path::CLAIM_MARKER`) is the literal `0` below.
const START: &str = r#"
CREATE OR REPLACE FUNCTION flowrun_start_run(
    p_claim text,
    p_flow_id bigint,
    p_next_run_at timestamptz,
    p_now timestamptz,
    p_started_at timestamptz,
    p_lease_owner text,
    p_lease_expires_at timestamptz,
    p_attempt integer,
    p_triggered_by text,
    p_count_wait boolean
) RETURNS TABLE (new_run_id bigint, new_started_at timestamptz, new_lease_expires_at timestamptz)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    entered timestamptz := clock_timestamp();
    waited interval := interval '0';
    run bigint;
BEGIN
    IF p_claim = 'manual' THEN
        UPDATE data_flows SET active_run_id = 0
         WHERE id = p_flow_id AND active_run_id IS NULL;
    ELSIF p_claim = 'due' THEN
        UPDATE data_flows SET active_run_id = 0, next_run_at = p_next_run_at
         WHERE id = p_flow_id AND active_run_id IS NULL AND enabled = true AND next_run_at <= p_now;
    ELSIF p_claim = 'retry' THEN
        UPDATE data_flows SET active_run_id = 0, retry_at = NULL, retry_attempt = NULL
         WHERE id = p_flow_id AND active_run_id IS NULL AND enabled = true AND retry_at <= p_now;
    ELSE
        RAISE EXCEPTION 'flowrun_start_run: unknown claim %', p_claim USING ERRCODE = '22023';
    END IF;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- The claim may have waited for the flow's row lock; the run starts when it was granted.
    IF p_count_wait THEN
        waited := greatest(clock_timestamp() - entered, interval '0');
    END IF;
    INSERT INTO data_flow_runs (data_flow_id, status, started_at, lease_owner, lease_expires_at, attempt,
                                triggered_by, created_at, updated_at)
    VALUES (p_flow_id, 'pending', p_started_at + waited, p_lease_owner, p_lease_expires_at + waited,
            p_attempt, p_triggered_by, p_started_at + waited, p_started_at + waited)
    RETURNING id INTO run;
    UPDATE data_flow_runs SET status = 'in_progress' WHERE id = run;
    UPDATE data_flows SET active_run_id = run WHERE id = p_flow_id;
    RETURN QUERY SELECT run, p_started_at + waited, p_lease_expires_at + waited;
END
$fn$
"#;

const FINISH: &str = r#"
CREATE OR REPLACE FUNCTION flowrun_finish_run(
    p_run_id bigint,
    p_flow_id bigint,
    p_status text,
    p_ended_at timestamptz,
    p_error_message text,
    p_error_backtrace text,
    p_failure_kind text,
    p_retry_at timestamptz,
    p_retry_attempt integer,
    p_output text,
    p_state text
) RETURNS boolean
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
    UPDATE data_flow_runs
       SET status = p_status, ended_at = p_ended_at, error_message = p_error_message,
           error_backtrace = p_error_backtrace, failure_kind = p_failure_kind, updated_at = p_ended_at
     WHERE id = p_run_id AND status = 'in_progress';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE data_flows
       SET last_run_at = p_ended_at, last_run_status = p_status, active_run_id = NULL,
           retry_at = p_retry_at, retry_attempt = p_retry_attempt, updated_at = p_ended_at
     WHERE id = p_flow_id;
    IF p_output IS NOT NULL THEN
        UPDATE data_flow_runs SET output = p_output WHERE id = p_run_id;
    END IF;
    IF p_state IS NOT NULL THEN
        UPDATE data_flows SET state = p_state WHERE id = p_flow_id;
    END IF;
    RETURN true;
END
$fn$
"#;

const DROP: [&str; 2] = [
    "DROP FUNCTION IF EXISTS flowrun_start_run(text, bigint, timestamptz, timestamptz, timestamptz, text, \
     timestamptz, integer, text, boolean)",
    "DROP FUNCTION IF EXISTS flowrun_finish_run(bigint, bigint, text, timestamptz, text, text, text, \
     timestamptz, integer, text, text)",
];

// As in the first migration: the trait elides SchemaManager's lifetime, async-trait needs it elided too.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for sql in [START, FINISH] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for sql in DROP {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
