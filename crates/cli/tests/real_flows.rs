//! `Command` flows through the stock `flowrun` binary on every configured backend: output and exit code
//! recorded, a timeout leaving no process behind, and a secret from the environment reaching the flow but
//! never the stored configuration, the CLI's output or the run's record.

mod common;

use std::process::Output;

use common::flowrun;
use flowrun_test_support::{TestDatabase, fresh_databases};
use serde_json::Value;

const SECRET: &str = "s3cr3t-from-the-environment";

fn at(db: &TestDatabase, dir: &std::path::Path, args: &[&str]) -> Output {
    flowrun(dir)
        .env("FLOWRUN_TEST_SECRET", SECRET)
        .args(["--database-url", db.url.as_str()])
        .args(args)
        .output()
        .expect("runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("JSON: {e}: {}", text(output)))
}

/// Whether any process runs with exactly this command line.
fn process_running(command_line: &str) -> bool {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " ").trim_end() == command_line)
}

#[tokio::test(flavor = "multi_thread")]
async fn command_flows_record_their_output_and_exit_code_and_keep_secrets_out_of_every_record() {
    for db in fresh_databases().await {
        let k = db.kind.name();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let migrated = at(&db, d, &["migrate"]);
        assert!(migrated.status.success(), "{k}: {}", text(&migrated));
        // The script shows that the secret arrived by printing its end only, so the whole secret can be
        // looked for everywhere else.
        let config = r#"{"program": "sh",
            "args": ["-c", "echo \"secret ends ${TOKEN#s3cr3t-}\"; echo out; echo err >&2; exit 3"],
            "env": {"TOKEN": "${env:FLOWRUN_TEST_SECRET}"}}"#;
        let created = at(
            &db,
            d,
            &[
                "flow", "create", "cron-job", "--class", "Command", "--config", config,
            ],
        );
        assert!(created.status.success(), "{k}: {}", text(&created));

        let ran = at(&db, d, &["run", "cron-job", "--json"]);
        assert_eq!(ran.status.code(), Some(1), "{k}: the flow failed: {}", text(&ran));
        let run = json_of(&ran);
        assert_eq!(run["status"], "failed", "{k}");
        assert_eq!(
            run["output"], "secret ends from-the-environment\nout\nerr\n",
            "{k}: both lines, in order"
        );
        let message = run["error_message"].as_str().unwrap_or_default();
        assert!(message.contains("exited with code 3"), "{k}: {message}");

        let id = run["id"].to_string();
        let shown = at(&db, d, &["runs", "show", &id]);
        let shown = text(&shown);
        assert!(
            shown.contains("secret ends from-the-environment\nout\nerr"),
            "{k}: {shown}"
        );

        let flow = at(&db, d, &["flow", "show", "cron-job", "--json"]);
        assert_eq!(
            json_of(&flow)["configuration"]["env"]["TOKEN"],
            "${env:FLOWRUN_TEST_SECRET}",
            "{k}: stored as written, never resolved"
        );
        for args in [
            &["flow", "show", "cron-job", "--json"][..],
            &["flow", "show", "cron-job"],
            &["flow", "list", "--json"],
            &["runs", "--json"],
            &["runs", "show", &id, "--json"],
        ] {
            let output = text(&at(&db, d, args));
            assert!(
                !output.contains(SECRET),
                "{k}: {args:?} shows the secret: {output}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_times_out_leaves_no_process_behind() {
    for db in fresh_databases().await {
        let k = db.kind.name();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let migrated = at(&db, d, &["migrate"]);
        assert!(migrated.status.success(), "{k}: {}", text(&migrated));
        // A duration no other process on the machine is likely to sleep for.
        let created = at(
            &db,
            d,
            &[
                "flow",
                "create",
                "stuck",
                "--class",
                "Command",
                "--timeout",
                "1s",
                "--config",
                r#"{"program": "sleep", "args": ["617"]}"#,
            ],
        );
        assert!(created.status.success(), "{k}: {}", text(&created));
        let ran = at(&db, d, &["run", "stuck", "--json"]);
        assert_eq!(ran.status.code(), Some(1), "{k}: {}", text(&ran));
        assert_eq!(json_of(&ran)["failure_kind"], "timeout", "{k}");
        assert!(!process_running("sleep 617"), "{k}: the program outlived its run");
    }
}
