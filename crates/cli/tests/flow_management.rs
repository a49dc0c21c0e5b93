//! `flow update`, `flow delete` with its confirmation, and `runs prune`, through the `flowrun` binary on
//! SQLite in a temporary directory.

use std::path::Path;

use assert_cmd::Command;
use chrono::{DateTime, Timelike, Utc};
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

fn json(dir: &Path, args: &[&str]) -> Value {
    let output = flowrun(dir).args(args).output().expect("runs");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{args:?} prints one JSON document: {e}"))
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
