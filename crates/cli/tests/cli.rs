//! The `flowrun` binary end to end: every command, exit code and bad input of the contract, on SQLite in a
//! temporary directory (the default database), and the server-database paths where configured.

use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use predicates::prelude::*;
use serde_json::Value;

mod common;
use common::{flowrun, json};

fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().expect("an object").keys().cloned().collect();
    keys.sort();
    keys
}

fn sorted(keys: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    keys.sort();
    keys
}

const FLOW_KEYS: [&str; 18] = [
    "state",
    "schedule",
    "next_run_at",
    "timeout_secs",
    "retries",
    "retry_backoff_secs",
    "retry_at",
    "id",
    "name",
    "description",
    "enabled",
    "class_name",
    "configuration",
    "run_interval_secs",
    "last_run_at",
    "last_run_status",
    "created_at",
    "updated_at",
];
const RUN_KEYS: [&str; 15] = [
    "output",
    "attempt",
    "trigger",
    "failure_kind",
    "cancel_requested_at",
    "cancel_requested_by",
    "id",
    "data_flow_id",
    "flow_name",
    "status",
    "started_at",
    "ended_at",
    "duration_ms",
    "error_message",
    "error_backtrace",
];

#[test]
fn the_default_sqlite_database_is_created_and_migrated_on_first_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    flowrun(dir.path())
        .args(["flow", "create", "hello", "--class", "Noop"])
        .assert()
        .success()
        .stdout(predicate::str::contains("created data flow hello"));
    assert!(dir.path().join("flowrun.db").exists());
    flowrun(dir.path())
        .args(["run", "hello"])
        .assert()
        .success()
        .stdout(predicate::str::contains("success"));
    flowrun(dir.path())
        .args(["runs"])
        .assert()
        .success()
        .stdout(predicate::str::contains("hello"));
}

#[test]
fn flow_commands_print_the_documented_json_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let created = json(
        dir.path(),
        &[
            "flow",
            "create",
            "copy",
            "--class",
            "Sleep",
            "--config",
            r#"{"seconds": 0}"#,
            "--interval",
            "60",
            "--description",
            "copies",
            "--json",
        ],
    );
    assert_eq!(keys(&created), sorted(&FLOW_KEYS));
    assert_eq!(created["class_name"], "Sleep");
    assert_eq!(
        created["configuration"],
        serde_json::json!({"class_name": "Sleep", "seconds": 0})
    );
    assert_eq!(created["run_interval_secs"], 60);
    assert_eq!(created["last_run_at"], Value::Null);
    assert!(created["created_at"].as_str().expect("timestamp").ends_with('Z'));
    let list = json(dir.path(), &["flow", "list", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(
        json(dir.path(), &["flow", "show", "copy", "--json"])["description"],
        "copies"
    );
    assert_eq!(
        json(dir.path(), &["flow", "disable", "copy", "--json"])["enabled"],
        false
    );
    assert_eq!(
        json(dir.path(), &["flow", "enable", "copy", "--json"])["enabled"],
        true
    );
    assert_eq!(
        json(dir.path(), &["flow", "delete", "copy", "--json"]),
        serde_json::json!({"deleted": "copy", "runs_deleted": 0})
    );
    assert_eq!(
        json(dir.path(), &["flow", "list", "--json"]),
        serde_json::json!([])
    );
}

#[test]
fn run_exits_0_on_success_and_1_on_a_recorded_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    flowrun(dir.path())
        .args(["flow", "create", "ok", "--class", "Noop"])
        .assert()
        .success();
    flowrun(dir.path())
        .args([
            "flow",
            "create",
            "bad",
            "--class",
            "Fail",
            "--config",
            r#"{"message": "no rows today"}"#,
        ])
        .assert()
        .success();
    let run = json(dir.path(), &["run", "ok", "--json"]);
    assert_eq!(keys(&run), sorted(&RUN_KEYS));
    assert_eq!(run["status"], "success");
    assert_eq!(run["flow_name"], "ok");
    flowrun(dir.path())
        .args(["run", "bad"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no rows today").and(predicate::str::contains("run 2")));
    let failed = json(dir.path(), &["runs", "show", "2", "--json"]);
    assert_eq!(keys(&failed), sorted(&RUN_KEYS));
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error_message"], "no rows today");
    assert!(
        failed["error_backtrace"]
            .as_str()
            .expect("backtrace")
            .contains("Backtrace:")
    );
    flowrun(dir.path())
        .args(["runs", "show", "2"])
        .assert()
        .success()
        .stdout(predicate::str::contains("backtrace:").and(predicate::str::contains("no rows today")));
    let failures = json(dir.path(), &["runs", "--status", "failed", "--json"]);
    assert_eq!(failures.as_array().map(Vec::len), Some(1));
    let of_ok = json(dir.path(), &["runs", "--flow", "ok", "--limit", "5", "--json"]);
    assert_eq!(of_ok[0]["flow_name"], "ok");
    let flow = json(dir.path(), &["flow", "show", "bad", "--json"]);
    assert_eq!(flow["last_run_status"], "failed");
}

#[test]
fn heartbeat_reap_and_classes_print_their_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    flowrun(dir.path())
        .args(["flow", "create", "a", "--class", "Noop"])
        .assert()
        .success();
    flowrun(dir.path())
        .args(["flow", "create", "b", "--class", "Fail"])
        .assert()
        .success();
    let report = json(dir.path(), &["heartbeat", "--json"]);
    assert_eq!(
        keys(&report),
        sorted(&[
            "flows_due",
            "flows_triggered",
            "flows_failed",
            "timestamp",
            "triggered",
            "runs"
        ])
    );
    assert_eq!(
        (report["flows_due"].as_u64(), report["flows_failed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(report["triggered"], serde_json::json!(["a", "b"]));
    assert_eq!(report["runs"][0]["status"], "success");
    assert_eq!(report["runs"][1]["status"], "failed");
    assert_eq!(json(dir.path(), &["heartbeat", "--json"])["flows_due"], 0);
    assert_eq!(
        json(dir.path(), &["runs", "reap", "--json"]),
        serde_json::json!({"reaped": 0})
    );
    let classes = json(dir.path(), &["classes", "--json"]);
    let names: Vec<&str> = classes
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|class| class["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["Command", "Fail", "Http", "Noop", "Panic", "Sleep", "SqlCopy"]
    );
    assert_eq!(
        classes[5]["settings"],
        serde_json::json!([{
            "name": "seconds",
            "type": "number",
            "required": false,
            "default": 1.0,
            "description": "How long to sleep, in seconds (fractions allowed).",
        }])
    );
    let text =
        String::from_utf8(flowrun(dir.path()).arg("classes").output().expect("runs").stdout).expect("utf-8");
    assert!(text.contains("Sleep\n  seconds: number, default 1.0\n"), "{text}");
    assert!(text.contains("Noop\n  no settings\n"), "{text}");
}

fn flows_snapshot(dir: &Path) -> Value {
    json(dir, &["flow", "list", "--json"])
}

#[test]
fn bad_input_exits_2_with_one_clear_line_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    flowrun(dir.path())
        .args(["flow", "create", "taken", "--class", "Noop"])
        .assert()
        .success();
    let before = flows_snapshot(dir.path());
    let cases: [(&[&str], &str); 10] = [
        (&["run", "missing"], "no data flow named `missing`"),
        (&["flow", "show", "missing"], "no data flow named `missing`"),
        (&["flow", "create", "taken", "--class", "Noop"], "already exists"),
        (
            &["flow", "create", "x", "--class", "Noop", "--config", "{\"a\": }"],
            "not valid JSON: expected value at line 1 column 7",
        ),
        (
            &["flow", "create", "x", "--class", "Noop", "--config", "[1]"],
            "must be a JSON object, got an array",
        ),
        (
            &["flow", "create", "x", "--class", "Noop", "--interval", "0"],
            "positive number of seconds",
        ),
        (
            &["flow", "create", "x", "--class", "Noop", "--interval", "-5"],
            "positive number of seconds",
        ),
        (
            &["flow", "create", "x", "--class", "Nope"],
            "unknown flow class `Nope` (registered: Command, Fail, Http, Noop, Panic, Sleep, SqlCopy)",
        ),
        (
            &[
                "flow",
                "create",
                "x",
                "--class",
                "Sleep",
                "--config",
                "{\"seconds\": -1}",
            ],
            "non-negative",
        ),
        (&["runs", "--status", "running"], "unknown run status `running`"),
    ];
    for (args, message) in cases {
        let output = flowrun(dir.path()).args(args).output().expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: one line: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    flowrun(dir.path())
        .args(["flow", "create", " ", "--class", "Noop"])
        .assert()
        .code(2);
    flowrun(dir.path()).args(["runs", "show", "999"]).assert().code(2);
    flowrun(dir.path()).args(["no-such-command"]).assert().code(2);
    assert_eq!(flows_snapshot(dir.path()), before, "the database is unchanged");
}

#[test]
fn an_unreachable_database_exits_3_with_the_password_masked() {
    let dir = tempfile::tempdir().expect("tempdir");
    flowrun(dir.path())
        .args([
            "--database-url",
            "postgres://flow:hunter2@127.0.0.1:1/flows",
            "flow",
            "list",
        ])
        .assert()
        .code(3)
        .stderr(
            predicate::str::contains("postgres://flow:<masked>@127.0.0.1:1/flows")
                .and(predicate::str::contains("hunter2").not()),
        );
    flowrun(dir.path())
        .args(["--database-url", "oracle://x", "flow", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unsupported database URL"));
}

#[test]
fn a_second_run_of_a_running_flow_exits_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    flowrun(dir.path())
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
    let binary = assert_cmd::cargo::cargo_bin("flowrun");
    let mut first = StdCommand::new(binary)
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .args(["run", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Wait until the first run is recorded as in progress.
    let mut running = false;
    for _ in 0..100 {
        let runs = json(dir.path(), &["runs", "--status", "in_progress", "--json"]);
        if runs.as_array().is_some_and(|r| !r.is_empty()) {
            running = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(running, "the first run started");
    flowrun(dir.path())
        .args(["run", "slow"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("already running since").and(predicate::str::contains("(run 1)")));
    assert!(first.wait().expect("first run ends").success());
    let runs = json(dir.path(), &["runs", "--json"]);
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(1),
        "the refused run left no row"
    );
}

#[test]
fn server_databases_are_migrated_explicitly_and_idempotently() {
    if !flowrun_test_support::configured_kinds().contains(&flowrun_test_support::Kind::Postgres) {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(flowrun_test_support::fresh_database(
        flowrun_test_support::Kind::Postgres,
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    flowrun(dir.path())
        .args(["--database-url", &db.url, "flow", "list"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("flowrun migrate"));
    flowrun(dir.path())
        .args(["--database-url", &db.url, "migrate"])
        .assert()
        .success();
    flowrun(dir.path())
        .args(["--database-url", &db.url, "migrate"])
        .assert()
        .success();
    flowrun(dir.path())
        .args(["--database-url", &db.url, "flow", "list"])
        .assert()
        .success();
}
