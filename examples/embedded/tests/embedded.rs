//! The example's binaries with WordCount beside the built-in classes: the CLI creates and runs it, the
//! server schedules it, and the stock `flowrun` (the same CLI with the built-ins only) cannot.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

/// The example's CLI in `dir`, its database there, in a clean environment.
fn embedded(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("embedded").expect("binary built");
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env_remove("FLOWRUN_RUN_LEASE_SECS")
        .env_remove("FLOWRUN_CONCURRENCY")
        .env("NO_COLOR", "1");
    cmd
}

/// The example's CLI's JSON answer to `args`, which must succeed.
fn json(dir: &Path, args: &[&str]) -> Value {
    let output = embedded(dir).args(args).output().expect("runs");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{args:?} prints JSON: {e}"))
}

/// The runs recorded for `flow`, newest first.
fn runs(dir: &Path, flow: &str) -> Vec<Value> {
    json(dir, &["runs", "--flow", flow, "--json"])
        .as_array()
        .cloned()
        .expect("an array of runs")
}

#[test]
fn word_count_is_listed_beside_the_built_in_classes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let classes = json(dir.path(), &["classes", "--json"]);
    let names: Vec<&str> = classes
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for class in ["WordCount", "Noop", "Sleep", "Fail", "Panic"] {
        assert!(names.contains(&class), "{class} in {names:?}");
    }
}

#[test]
fn the_cli_creates_and_runs_word_count_and_records_the_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    embedded(dir.path())
        .args(["flow", "create", "w", "--class", "WordCount"])
        .args(["--config", r#"{"text": "the quick brown fox"}"#])
        .assert()
        .success();
    embedded(dir.path()).args(["run", "w"]).assert().success();

    let runs = runs(dir.path(), "w");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "success", "{runs:#?}");
    assert_eq!(runs[0]["flow_name"], "w");
    assert_eq!(
        runs[0]["output"].as_str().map(str::trim_end),
        Some("4 words"),
        "{runs:#?}"
    );
}

#[test]
fn word_count_reads_a_file_and_fails_clearly_when_it_is_missing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = dir.path().join("words.txt");
    std::fs::write(&text, "one two\nthree\n").expect("written");
    let config = serde_json::json!({ "path": text }).to_string();
    embedded(dir.path())
        .args([
            "flow",
            "create",
            "file",
            "--class",
            "WordCount",
            "--config",
            &config,
        ])
        .assert()
        .success();
    embedded(dir.path()).args(["run", "file"]).assert().success();
    assert_eq!(
        runs(dir.path(), "file")[0]["output"].as_str().map(str::trim_end),
        Some("3 words")
    );

    std::fs::remove_file(&text).expect("removed");
    let output = embedded(dir.path()).args(["run", "file"]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "a failed run exits 1: {stderr}");
    let missing = format!("cannot read {}", text.display());
    assert!(stderr.contains(&missing), "{stderr}");

    let runs = runs(dir.path(), "file");
    assert_eq!(runs[0]["status"], "failed", "{runs:#?}");
    let message = runs[0]["error_message"].as_str().expect("an error message");
    assert!(message.contains(&missing), "{message}");
    assert_eq!(runs[1]["status"], "success", "{runs:#?}");
}

#[test]
fn a_settings_typo_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = embedded(dir.path())
        .args([
            "flow",
            "create",
            "w",
            "--class",
            "WordCount",
            "--config",
            r#"{"txt": "a b"}"#,
        ])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("txt"), "{stderr}");
    assert_eq!(
        json(dir.path(), &["flow", "list", "--json"]),
        Value::Array(vec![])
    );
}

/// The example's server on the database in `dir`, ticking every second; returns once it listens.
fn start_server(dir: &Path) -> Child {
    let mut child = StdCommand::new(env!("CARGO_BIN_EXE_embedded-server"))
        .current_dir(dir)
        .env("DATABASE_URL", "sqlite://flowrun.db")
        .env("FLOWRUN_BIND", "127.0.0.1:0")
        .env("FLOWRUN_TICK_SECS", "1")
        .env("FLOWRUN_SHUTDOWN_GRACE_SECS", "1")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env_remove("FLOWRUN_HEARTBEAT_TOKEN")
        .env_remove("FLOWRUN_ALLOWED_IPS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    loop {
        let line = lines
            .next()
            .expect("the server logs `listening on` before anything ends it")
            .expect("a log line");
        if line.contains("listening on ") {
            break;
        }
    }
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

/// Stops the server as an operator would (SIGTERM) and waits for it.
fn stop(mut child: Child) {
    let pid = child.id().to_string();
    let _ = StdCommand::new("kill").args(["-TERM", &pid]).status();
    let _ = child.wait();
}

#[test]
fn the_example_server_schedules_word_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    embedded(dir.path())
        .args(["flow", "create", "w", "--class", "WordCount", "--every", "1s"])
        .args(["--config", r#"{"text": "scheduled words"}"#])
        .assert()
        .success();
    let server = start_server(dir.path());
    // A generous deadline to wait for, not a timing claim: the first tick comes at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let scheduled = loop {
        let scheduled: Vec<Value> = runs(dir.path(), "w")
            .into_iter()
            .filter(|run| run["trigger"] == "schedule" && run["status"] == "success")
            .collect();
        if !scheduled.is_empty() || Instant::now() > deadline {
            break scheduled;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop(server);
    assert!(
        !scheduled.is_empty(),
        "the server ran WordCount on its schedule: {:#?}",
        runs(dir.path(), "w")
    );
}

#[test]
fn the_stock_cli_does_not_know_word_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    embedded(dir.path())
        .args(["flow", "create", "w", "--class", "WordCount"])
        .args(["--config", r#"{"text": "only the example knows me"}"#])
        .assert()
        .success();
    // The stock `flowrun` binary is exactly this call with the built-in classes.
    let database = format!("sqlite://{}", dir.path().join("flowrun.db").display());
    let code = flowrun_cli::run_from(
        flowrun_app::builtin_registry(),
        ["flowrun", "--database-url", &database, "run", "w"],
    );
    assert_eq!(
        code,
        std::process::ExitCode::from(1),
        "the run failed and was recorded"
    );

    let runs = runs(dir.path(), "w");
    assert_eq!(runs[0]["status"], "failed", "{runs:#?}");
    let message = runs[0]["error_message"].as_str().expect("an error message");
    assert!(message.contains("unknown flow class `WordCount`"), "{message}");
}
