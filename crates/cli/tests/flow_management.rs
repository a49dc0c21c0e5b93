//! Defining and keeping flows through the `flowrun` binary: `--every`, `--interval` and `--cron` with their
//! bounds, the schedule and next run time in `flow list`/`show`, `flowrun schedule`, a scheduler cycle that
//! skips a row corrupted by hand, `flow update`, `flow delete` with its confirmation, and `runs prune` — on
//! SQLite in a temporary directory.

use std::path::Path;

use chrono::{Timelike, Utc};
use flowrun_test_support::{Kind, execute_sql, fresh_database};
use predicates::prelude::*;
use serde_json::{Value, json};

mod common;
use common::{flowrun, json, refused, time};

fn run(dir: &Path, name: &str) {
    flowrun(dir).args(["run", name]).assert().success();
}

#[test]
fn update_changes_only_what_is_given_and_keeps_the_id_and_the_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let created = json(
        d,
        &[
            "flow",
            "create",
            "f",
            "--class",
            "Sleep",
            "--config",
            r#"{"seconds": 0}"#,
            "--every",
            "1h",
            "--description",
            "old",
            "--json",
        ],
    );
    run(d, "f");
    let before = json(d, &["flow", "show", "f", "--json"]);

    let described = json(d, &["flow", "update", "f", "--description", "new", "--json"]);
    assert_eq!(described["description"], "new");
    for same in [
        "id",
        "configuration",
        "schedule",
        "next_run_at",
        "last_run_at",
        "last_run_status",
        "created_at",
        "enabled",
    ] {
        assert_eq!(described[same], before[same], "{same} is kept");
    }
    assert!(time(&described["updated_at"]) > time(&created["updated_at"]));

    let same_schedule = json(d, &["flow", "update", "f", "--every", "60m", "--json"]);
    assert_eq!(
        same_schedule["next_run_at"], before["next_run_at"],
        "an unchanged schedule keeps the next run"
    );

    let cron = json(
        d,
        &[
            "flow",
            "update",
            "f",
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--json",
        ],
    );
    assert_eq!(cron["id"], created["id"]);
    assert_eq!(
        cron["schedule"],
        json!({"cron": "30 2 * * *", "tz": "Europe/Berlin"})
    );
    assert_eq!(cron["run_interval_secs"], Value::Null);
    let next = time(&cron["next_run_at"]);
    assert!(next > Utc::now(), "the next run is recomputed from now: {next}");
    assert!(
        matches!((next.hour(), next.minute()), (0 | 1, 30)),
        "02:30 in Berlin: {next}"
    );

    let config = json(
        d,
        &["flow", "update", "f", "--config", r#"{"seconds": 0.5}"#, "--json"],
    );
    assert_eq!(
        config["configuration"],
        json!({"class_name": "Sleep", "seconds": 0.5}),
        "--config alone keeps the class"
    );
    assert_eq!(config["next_run_at"], cron["next_run_at"]);
    let class = json(
        d,
        &[
            "flow", "update", "f", "--class", "Fail", "--config", "{}", "--json",
        ],
    );
    assert_eq!(class["class_name"], "Fail");
    assert_eq!(class["configuration"], json!({"class_name": "Fail"}));

    let runs = json(d, &["runs", "--flow", "f", "--json"]);
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "the history stays");
    assert_eq!(runs[0]["data_flow_id"], created["id"]);

    flowrun(d)
        .args(["flow", "update", "f", "--every", "15m"])
        .assert()
        .success()
        .stdout(predicates::str::contains("updated data flow f"));
}

#[test]
fn a_bad_update_exits_2_with_one_line_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    json(
        d,
        &[
            "flow",
            "create",
            "f",
            "--class",
            "Sleep",
            "--config",
            r#"{"seconds": 0}"#,
            "--json",
        ],
    );
    let before = json(d, &["flow", "show", "f", "--json"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["flow", "update", "ghost", "--description", "x"],
            "no data flow named `ghost`",
        ),
        (
            &["flow", "update", "f", "--class", "Nope"],
            "unknown flow class `Nope`",
        ),
        (
            &["flow", "update", "f", "--config", "{\"seconds\": }"],
            "--config is not valid JSON",
        ),
        (
            &["flow", "update", "f", "--config", "[1]"],
            "must be a JSON object, got an array",
        ),
        (
            &["flow", "update", "f", "--config", r#"{"seconds": -1}"#],
            "non-negative",
        ),
        (
            &["flow", "update", "f", "--config", r#"{"class_name": "Noop"}"#],
            "name class `Noop`",
        ),
        (&["flow", "update", "f", "--every", "0"], "at least one second"),
        (
            &["flow", "update", "f", "--interval", "-5"],
            "positive number of seconds",
        ),
        (&["flow", "update", "f", "--every", "soon"], "soon"),
        (&["flow", "update", "f", "--cron", "0 0 30 2 *"], "0 0 30 2 *"),
        (
            &[
                "flow",
                "update",
                "f",
                "--cron",
                "0 2 * * *",
                "--tz",
                "Mars/Olympus",
            ],
            "Mars/Olympus",
        ),
        (&["flow", "update", "f"], "nothing to update"),
    ];
    for (args, says) in cases {
        refused(d, args, says);
    }
    assert_eq!(
        json(d, &["flow", "show", "f", "--json"]),
        before,
        "nothing was stored"
    );
}

#[test]
fn delete_asks_for_yes_when_the_flow_has_runs_and_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    flowrun(d)
        .args(["flow", "create", "empty", "--class", "Noop"])
        .assert()
        .success();
    flowrun(d)
        .args(["flow", "create", "busy", "--class", "Noop"])
        .assert()
        .success();
    run(d, "busy");
    run(d, "busy");

    assert_eq!(
        json(d, &["flow", "delete", "empty", "--json"]),
        json!({"deleted": "empty", "runs_deleted": 0}),
        "a flow without runs goes without asking"
    );
    // Not a terminal (stdin is a pipe here): --yes is required, and nothing goes.
    refused(d, &["flow", "delete", "busy"], "has 2 runs");
    refused(d, &["flow", "delete", "busy"], "--yes");
    assert_eq!(
        json(d, &["runs", "--flow", "busy", "--json"])
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    flowrun(d)
        .args(["flow", "delete", "busy", "--yes"])
        .assert()
        .success()
        .stdout(predicates::str::contains("deleted data flow busy and 2 runs"));
    assert_eq!(json(d, &["runs", "--json"]), json!([]));
    refused(
        d,
        &["flow", "delete", "busy", "--yes"],
        "no data flow named `busy`",
    );
}

#[test]
fn delete_with_yes_reports_the_runs_it_deleted_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    flowrun(d)
        .args(["flow", "create", "f", "--class", "Noop"])
        .assert()
        .success();
    run(d, "f");
    assert_eq!(
        json(d, &["flow", "delete", "f", "--yes", "--json"]),
        json!({"deleted": "f", "runs_deleted": 1})
    );
}

#[test]
fn prune_deletes_old_finished_runs_keeping_the_newest_per_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for name in ["a", "b"] {
        flowrun(d)
            .args(["flow", "create", name, "--class", "Noop"])
            .assert()
            .success();
        for _ in 0..3 {
            run(d, name);
        }
    }
    assert_eq!(
        json(d, &["runs", "prune", "--older-than", "1h", "--json"]),
        json!({"deleted": 0}),
        "nothing is an hour old"
    );
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    assert_eq!(
        json(
            d,
            &[
                "runs",
                "prune",
                "--older-than",
                "1s",
                "--flow",
                "a",
                "--keep-last",
                "1",
                "--json"
            ]
        ),
        json!({"deleted": 2})
    );
    let left = |flow: &str| {
        json(d, &["runs", "--flow", flow, "--json"])
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!((left("a"), left("b")), (1, 3));
    assert_eq!(
        json(
            d,
            &[
                "runs",
                "prune",
                "--older-than",
                "1s",
                "--keep-last",
                "2",
                "--json"
            ]
        ),
        json!({"deleted": 1}),
        "b keeps two, a already has one"
    );
    flowrun(d)
        .args(["runs", "prune", "--older-than", "1s"])
        .assert()
        .success()
        .stdout(predicates::str::contains("deleted 3 finished runs"));
    assert_eq!(json(d, &["runs", "--json"]), json!([]));
}

#[test]
fn prune_refuses_bad_input_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    flowrun(d)
        .args(["flow", "create", "f", "--class", "Noop"])
        .assert()
        .success();
    refused(d, &["runs", "prune", "--older-than", "soon"], "--older-than");
    refused(d, &["runs", "prune", "--older-than", "0"], "--older-than");
    refused(
        d,
        &["runs", "prune", "--older-than", "1d", "--flow", "ghost"],
        "no data flow named `ghost`",
    );
    let missing = flowrun(d).args(["runs", "prune"]).output().expect("runs");
    assert_eq!(missing.status.code(), Some(2), "--older-than is required");
}

/// `flowrun ARGS` on a pseudo-terminal (util-linux `script`) with `answer` typed in; `None` where `script`
/// is not installed.
fn on_a_terminal(dir: &Path, args: &str, answer: &str) -> Option<(Option<i32>, String)> {
    use std::io::Write;
    use std::process::{Command as StdCommand, Stdio};
    let binary = assert_cmd::cargo::cargo_bin("flowrun");
    let mut child = StdCommand::new("script")
        .args(["-qec", &format!("{} {args}", binary.display()), "/dev/null"])
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(answer.as_bytes())
        .expect("type the answer");
    let output = child.wait_with_output().expect("runs");
    Some((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

#[test]
fn on_a_terminal_delete_asks_and_only_yes_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    flowrun(d)
        .args(["flow", "create", "busy", "--class", "Noop"])
        .assert()
        .success();
    run(d, "busy");
    let Some((code, screen)) = on_a_terminal(d, "flow delete busy", "n\n") else {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    };
    assert!(
        screen.contains("delete flow busy and its 1 run? [y/N]"),
        "{screen}"
    );
    assert_eq!(code, Some(2), "{screen}");
    assert_eq!(
        json(d, &["runs", "--json"]).as_array().map(Vec::len),
        Some(1),
        "kept"
    );
    let (code, screen) = on_a_terminal(d, "flow delete busy", "y\n").expect("script");
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("deleted data flow busy and 1 run"), "{screen}");
    assert_eq!(json(d, &["flow", "list", "--json"]), json!([]));
}

#[test]
fn a_flow_with_a_live_run_is_not_deleted_and_exits_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    flowrun(d)
        .args([
            "flow",
            "create",
            "slow",
            "--class",
            "Sleep",
            "--config",
            r#"{"seconds": 3}"#,
        ])
        .assert()
        .success();
    let mut running = std::process::Command::new(assert_cmd::cargo::cargo_bin("flowrun"))
        .args(["run", "slow"])
        .current_dir(d)
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while json(d, &["runs", "--status", "in_progress", "--json"]) == json!([]) {
        assert!(std::time::Instant::now() < deadline, "the run never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = flowrun(d)
        .args(["flow", "delete", "slow", "--yes"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("data flow `slow` is running (run 1)"), "{stderr}");
    assert!(
        running.wait().expect("the run ends").success(),
        "the run was left alone"
    );
    assert_eq!(
        json(d, &["flow", "delete", "slow", "--yes", "--json"]),
        json!({"deleted": "slow", "runs_deleted": 1}),
        "deleted once the run has ended"
    );
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

#[test]
fn update_sets_and_removes_a_timeout_and_changes_the_retry_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    flowrun(d)
        .args(["flow", "create", "f", "--class", "Noop", "--retries", "1"])
        .assert()
        .success();
    let created = json(d, &["flow", "show", "f", "--json"]);
    assert_eq!(
        (
            created["timeout_secs"].clone(),
            created["retries"].clone(),
            created["retry_backoff_secs"].clone()
        ),
        (Value::Null, json!(1), json!(30))
    );
    let updated = json(
        d,
        &[
            "flow",
            "update",
            "f",
            "--timeout",
            "5m",
            "--retry-backoff",
            "1m",
            "--json",
        ],
    );
    assert_eq!(
        (
            updated["timeout_secs"].clone(),
            updated["retries"].clone(),
            updated["retry_backoff_secs"].clone()
        ),
        (json!(300), json!(1), json!(60)),
        "a new backoff keeps the number of retries"
    );
    let cleared = json(
        d,
        &[
            "flow",
            "update",
            "f",
            "--timeout",
            "none",
            "--retries",
            "0",
            "--json",
        ],
    );
    assert_eq!(
        (cleared["timeout_secs"].clone(), cleared["retries"].clone()),
        (Value::Null, json!(0))
    );
    refused(d, &["flow", "update", "f", "--timeout", "0s"], "--timeout");
    refused(d, &["flow", "update", "f", "--retries", "101"], "101");
    refused(
        d,
        &[
            "flow",
            "create",
            "g",
            "--class",
            "Noop",
            "--retries",
            "2",
            "--retry-backoff",
            "2d",
        ],
        "backoff",
    );
}

#[test]
fn config_comes_from_a_file_with_at_or_from_standard_input_with_a_dash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // Larger than one command-line argument may be (128 KiB on Linux).
    let blob = "x".repeat(1024 * 1024);
    std::fs::write(d.join("big.json"), json!({ "message": blob }).to_string()).expect("write");
    flowrun(d)
        .args([
            "flow",
            "create",
            "big",
            "--class",
            "Fail",
            "--config",
            "@big.json",
        ])
        .assert()
        .success();
    let stored = json(d, &["flow", "show", "big", "--json"]);
    assert_eq!(
        stored["configuration"]["message"].as_str().map(str::len),
        Some(1024 * 1024)
    );
    // The flow fails as configured, with a message far longer than an error message may be stored.
    flowrun(d).args(["run", "big"]).assert().code(1);

    flowrun(d)
        .args(["flow", "create", "piped", "--class", "Sleep", "--config", "-"])
        .write_stdin(r#"{"seconds": 0.1}"#)
        .assert()
        .success();
    assert_eq!(
        json(d, &["flow", "show", "piped", "--json"])["configuration"]["seconds"],
        0.1
    );
    flowrun(d)
        .args(["flow", "update", "piped", "--config", "-"])
        .write_stdin(r#"{"seconds": 0.2}"#)
        .assert()
        .success();
    assert_eq!(
        json(d, &["flow", "show", "piped", "--json"])["configuration"]["seconds"],
        0.2
    );

    refused(
        d,
        &[
            "flow",
            "create",
            "x",
            "--class",
            "Noop",
            "--config",
            "@missing.json",
        ],
        "@missing.json",
    );
    std::fs::write(d.join("broken.json"), "{not json").expect("write");
    refused(
        d,
        &[
            "flow",
            "create",
            "x",
            "--class",
            "Noop",
            "--config",
            "@broken.json",
        ],
        "@broken.json is not valid JSON",
    );
}
