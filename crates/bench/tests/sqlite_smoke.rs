//! A tiny benchmark against a temporary SQLite file, in both modes, with a history and with counting.

use flowrun_bench::report::{CONTRACT_KEYS, EXTRA_KEYS};
use flowrun_bench::{Class, Options, run};
use sea_orm::{ConnectionTrait, Database, Statement};

fn options(url: &str, class: Class, raw: bool) -> Options {
    Options {
        database_url: url.to_owned(),
        runs: 20,
        concurrency: 3,
        class,
        raw,
        history: 0,
        warmup: 2,
        count: false,
        raw_trace_bytes: None,
        scheduler: false,
        flows: 1,
        servers: 1,
        slots: 1,
        tick_ms: 10,
        timeout_secs: 60,
        scheduler_worker: false,
    }
}

async fn count(url: &str, sql: &str) -> i64 {
    let db = Database::connect(url).await.expect("connects");
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("queries")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_record_every_run_as_flowrun_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    for raw in [false, true] {
        for class in [Class::Noop, Class::Fail] {
            let report = run(&options(&url, class, raw)).await.expect("the benchmark runs");
            assert_eq!(report.errors, 0);
            assert_eq!(report.runs, 20);
            assert_eq!(report.backend, "sqlite");
            assert_eq!(report.mode, if raw { "raw" } else { "flowrun" });
            assert!(report.runs_per_sec > 0.0);
            assert!(report.p99_ms >= report.p50_ms);

            let line = report.to_json_line().expect("serializes");
            let value: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
            let keys = value.as_object().expect("an object");
            for key in CONTRACT_KEYS.iter().chain(EXTRA_KEYS.iter()) {
                assert!(keys.contains_key(*key), "{key} missing from {line}");
            }
            assert_eq!(keys.len(), CONTRACT_KEYS.len() + EXTRA_KEYS.len(), "{line}");

            // A fresh state per invocation: only this invocation's 22 runs (20 timed, 2 warm-up) exist,
            // all ended, and every flow is released with the right last status.
            let status = if class == Class::Noop { "success" } else { "failed" };
            assert_eq!(count(&url, "SELECT COUNT(*) FROM data_flow_runs").await, 22);
            assert_eq!(
                count(
                    &url,
                    &format!("SELECT COUNT(*) FROM data_flow_runs WHERE status = '{status}' AND ended_at IS NOT NULL AND lease_owner IS NOT NULL")
                )
                .await,
                22
            );
            assert_eq!(
                count(
                    &url,
                    &format!("SELECT COUNT(*) FROM data_flows WHERE active_run_id IS NULL AND last_run_status = '{status}'")
                )
                .await,
                3
            );
            if class == Class::Fail {
                assert_eq!(
                    count(
                        &url,
                        "SELECT COUNT(*) FROM data_flow_runs WHERE error_backtrace LIKE '%Backtrace:%'"
                    )
                    .await,
                    22
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_prefilled_kept_and_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    let mut opts = options(&url, Class::Noop, true);
    opts.history = 2500;
    opts.count = true;
    let report = run(&opts).await.expect("the benchmark runs");
    assert_eq!(report.history, 2500);
    // What the client sends, a batch once: the start's `BEGIN IMMEDIATE` and its batch (claim, insert,
    // in_progress, activate, COMMIT); the finish's batch (BEGIN IMMEDIATE, end run, end flow, COMMIT).
    assert_eq!(report.statements_per_run, Some(3.0));
    assert_eq!(count(&url, "SELECT COUNT(*) FROM data_flow_runs").await, 2522);
    let report = run(&Options {
        raw: false,
        ..opts.clone()
    })
    .await
    .expect("runs again");
    assert_eq!(report.statements_per_run, Some(3.0));
    assert_eq!(count(&url, "SELECT COUNT(*) FROM data_flow_runs").await, 2522);
    run(&Options { history: 0, ..opts })
        .await
        .expect("runs without history");
    assert_eq!(count(&url, "SELECT COUNT(*) FROM data_flow_runs").await, 22);
}

#[test]
fn the_scheduler_benchmark_runs_every_flow_exactly_once_across_two_processes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("sched.db").display());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flowrun-bench"))
        .args([
            "--database-url",
            &url,
            "--scheduler",
            "--flows",
            "120",
            "--servers",
            "2",
        ])
        .args(["--slots", "8", "--timeout-secs", "60"])
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["backend"], "sqlite");
    assert_eq!(report["flows"], 120);
    assert_eq!(report["servers"], 2);
    assert_eq!(report["runs"], 120);
    assert_eq!(report["exactly_once"], true);
    assert!(report["runs_per_sec"].as_f64().expect("a rate") > 0.0);
}
