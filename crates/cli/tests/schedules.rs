//! Schedules through the `flowrun` binary: `--every`, `--interval` and `--cron` at create with their bounds,
//! the schedule and next run time in `flow list`/`show` and their JSON, `flowrun schedule`, and a scheduler
//! cycle that skips a row corrupted by hand instead of stopping.

use std::path::Path;

use assert_cmd::Command;
use chrono::{DateTime, Timelike, Utc};
use flowrun_test_support::{Kind, execute_sql, fresh_database};
use predicates::prelude::*;
use serde_json::{Value, json};

fn flowrun(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("flowrun").expect("binary built");
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env_remove("FLOWRUN_RUN_LEASE_SECS")
        .env_remove("FLOWRUN_CONCURRENCY")
        .env("NO_COLOR", "1");
    cmd
}

fn json_of(cmd: &mut Command) -> Value {
    let output = cmd.output().expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

fn json(dir: &Path, args: &[&str]) -> Value {
    json_of(flowrun(dir).args(args))
}

/// Asserts that `args` exit 2 with one line on stderr containing `says`.
fn refused(dir: &Path, args: &[&str], says: &str) {
    let output = flowrun(dir).args(args).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: one line: {stderr}"
    );
    assert!(stderr.contains(says), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("an RFC 3339 time: {value}"))
}

#[test]
fn a_flow_with_a_huge_interval_is_refused_at_create_and_nothing_is_stored() {
    // Seen in the wild: `--interval 10000000000000` was accepted, then every scheduler cycle panicked.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    refused(
        d,
        &[
            "flow",
            "create",
            "big",
            "--class",
            "Noop",
            "--interval",
            "10000000000000",
        ],
        "too long",
    );
    refused(
        d,
        &[
            "flow",
            "create",
            "big",
            "--class",
            "Noop",
            "--interval",
            "9223372036854775807",
        ],
        "too long",
    );
    refused(
        d,
        &["flow", "create", "big", "--class", "Noop", "--interval", "0"],
        "positive",
    );
    refused(
        d,
        &["flow", "create", "big", "--class", "Noop", "--every", "36501d"],
        "36501d",
    );
    refused(
        d,
        &["flow", "create", "big", "--class", "Noop", "--every", "soon"],
        "soon",
    );
    refused(
        d,
        &["flow", "create", "big", "--class", "Noop", "--cron", "61 * * * *"],
        "61 * * * *",
    );
    refused(
        d,
        &[
            "flow",
            "create",
            "big",
            "--class",
            "Noop",
            "--cron",
            "0 2 * * *",
            "--tz",
            "Mars/Olympus",
        ],
        "Mars/Olympus",
    );
    let output = flowrun(d)
        .args(["flow", "create", "big", "--class", "Noop", "--tz", "UTC"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "--tz needs --cron");
    assert_eq!(json(d, &["flow", "list", "--json"]), json!([]));
    flowrun(d)
        .args([
            "flow", "create", "century", "--class", "Noop", "--every", "36500d",
        ])
        .assert()
        .success();
}

#[test]
fn a_lease_setting_beyond_a_day_is_bad_input_not_a_panic() {
    // Seen in the wild: FLOWRUN_RUN_LEASE_SECS=1e13 made `flowrun run` panic on date arithmetic.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    flowrun(d)
        .args(["flow", "create", "x", "--class", "Noop"])
        .assert()
        .success();
    flowrun(d)
        .args(["run", "x"])
        .env("FLOWRUN_RUN_LEASE_SECS", "1e13")
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("FLOWRUN_RUN_LEASE_SECS")
                .and(predicate::str::contains("panicked").not()),
        );
    flowrun(d)
        .args(["heartbeat"])
        .env("FLOWRUN_CONCURRENCY", "0")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("FLOWRUN_CONCURRENCY"));
}

#[test]
fn interval_and_cron_schedules_show_with_their_next_run_in_list_show_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let every = json(
        d,
        &[
            "flow", "create", "every", "--class", "Noop", "--every", "1h30m", "--json",
        ],
    );
    assert_eq!(every["schedule"], json!({"every_secs": 5400}));
    assert_eq!(every["run_interval_secs"], 5400);
    assert_eq!(
        every["next_run_at"], every["created_at"],
        "a new interval flow is due at once"
    );
    let cron = json(
        d,
        &[
            "flow",
            "create",
            "nightly",
            "--class",
            "Noop",
            "--cron",
            "0 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--json",
        ],
    );
    assert_eq!(
        cron["schedule"],
        json!({"cron": "0 2 * * *", "tz": "Europe/Berlin"})
    );
    assert_eq!(cron["run_interval_secs"], Value::Null);
    let next = time(&cron["next_run_at"]);
    assert!(next > time(&cron["created_at"]), "{next}");
    assert!(
        matches!(next.hour(), 0 | 1) && next.minute() == 0,
        "02:00 in Berlin is 00:00 or 01:00 UTC: {next}"
    );
    let shown = json(d, &["flow", "show", "nightly", "--json"]);
    assert_eq!(shown["next_run_at"], cron["next_run_at"]);

    let list = flowrun(d).args(["flow", "list"]).output().expect("runs");
    let list = String::from_utf8_lossy(&list.stdout);
    for expected in [
        "SCHEDULE",
        "NEXT RUN",
        "every 1h30m",
        "cron 0 2 * * * Europe/Berlin",
        "due now",
    ] {
        assert!(list.contains(expected), "{expected}: {list}");
    }
    let show = flowrun(d)
        .args(["flow", "show", "nightly"])
        .output()
        .expect("runs");
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("next run:"), "{show}");
    assert!(
        show.contains(cron["next_run_at"].as_str().unwrap_or("?").trim_end_matches('Z')),
        "{show}"
    );
}

#[test]
fn schedule_prints_the_next_fire_times_of_an_expression_or_a_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    assert_eq!(
        json(
            d,
            &[
                "schedule",
                "--every",
                "15m",
                "--from",
                "2026-01-01T00:00:00Z",
                "--count",
                "3",
                "--json"
            ]
        ),
        json!([
            "2026-01-01T00:15:00Z",
            "2026-01-01T00:30:00Z",
            "2026-01-01T00:45:00Z"
        ])
    );
    // Vixie cron: with both day fields restricted, a day matching either fires (Fridays, and the 13th, a
    // Tuesday in January 2026).
    assert_eq!(
        json(
            d,
            &[
                "schedule",
                "--cron",
                "0 0 13 * 5",
                "--from",
                "2026-01-01T00:00:00Z",
                "--count",
                "4",
                "--json"
            ]
        ),
        json!([
            "2026-01-02T00:00:00Z",
            "2026-01-09T00:00:00Z",
            "2026-01-13T00:00:00Z",
            "2026-01-16T00:00:00Z"
        ])
    );
    let text = flowrun(d)
        .args([
            "schedule",
            "--cron",
            "0 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--from",
            "2026-06-30T23:00:00Z",
            "--count",
            "2",
        ])
        .output()
        .expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&text.stdout),
        "2026-07-01T00:00:00Z\n2026-07-02T00:00:00Z\n",
        "02:00 in Berlin summer time is 00:00 UTC"
    );
    // On the spring-forward day 02:30 does not exist in Berlin: the job runs once, right after the gap
    // (03:00 CEST), as Vixie cron does.
    assert_eq!(
        json(
            d,
            &[
                "schedule",
                "--cron",
                "30 2 * * *",
                "--tz",
                "Europe/Berlin",
                "--from",
                "2026-03-28T00:00:00Z",
                "--count",
                "3",
                "--json"
            ]
        ),
        json!([
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z"
        ])
    );
    flowrun(d)
        .args(["flow", "create", "f", "--class", "Noop", "--every", "1h"])
        .assert()
        .success();
    let flow = json(d, &["flow", "show", "f", "--json"]);
    let times = json(d, &["schedule", "f", "--count", "2", "--json"]);
    assert_eq!(
        times[0], flow["next_run_at"],
        "a flow's first time is its stored next run"
    );
    assert_eq!(
        time(&times[1]) - time(&times[0]),
        chrono::TimeDelta::hours(1),
        "then one interval later"
    );
    refused(d, &["schedule", "--every", "1h", "--count", "0"], "--count");
    refused(
        d,
        &["schedule", "--every", "1h", "--from", "yesterday"],
        "yesterday",
    );
    refused(d, &["schedule", "missing"], "missing");
    assert_eq!(
        flowrun(d)
            .args(["schedule"])
            .output()
            .expect("runs")
            .status
            .code(),
        Some(2),
        "a name or an expression is required"
    );
}

#[test]
fn a_scheduler_cycle_skips_rows_corrupted_by_hand_and_runs_the_others() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(fresh_database(Kind::Sqlite));
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let url = db.url.as_str();
    for name in ["bad-config", "bad-interval", "bad-cron", "good"] {
        flowrun(d)
            .args(["--database-url", url, "flow", "create", name, "--class", "Noop"])
            .assert()
            .success();
    }
    runtime.block_on(async {
        execute_sql(
            url,
            "UPDATE data_flows SET configuration = '{not json' WHERE name = 'bad-config'",
        )
        .await;
        execute_sql(
            url,
            "UPDATE data_flows SET run_interval_secs = 10000000000000 WHERE name = 'bad-interval'",
        )
        .await;
        execute_sql(
            url,
            "UPDATE data_flows SET schedule_cron = 'whenever' WHERE name = 'bad-cron'",
        )
        .await;
    });
    let report = json(d, &["--database-url", url, "heartbeat", "--json"]);
    assert_eq!(report["triggered"], json!(["good"]), "{report}");
    assert_eq!(report["runs"][0]["status"], "success", "{report}");
    let output = flowrun(d)
        .args(["--database-url", url, "heartbeat"])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
