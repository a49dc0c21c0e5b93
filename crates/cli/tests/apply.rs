//! `flowrun apply FILE.toml` through the binary: create, apply again (nothing changes) and edit (updates
//! keep the runs) on every configured backend; `--prune`, `--dry-run`, and an invalid file that changes
//! nothing on SQLite (they go through the same use case, which the memory-store tests cover).

mod common;

use std::path::Path;

use common::{flowrun, json};
use flowrun_test_support::fresh_databases;
use serde_json::Value;

const FILE: &str = r#"
[flows.nightly]
class = "Sleep"
cron = "0 2 * * *"
tz = "Europe/Berlin"
timeout = "10m"
retries = 2
description = "the nightly one"
[flows.nightly.settings]
seconds = 0

[flows.ping]
class = "Noop"
every = "5m"
"#;

fn write(dir: &Path, text: &str) {
    std::fs::write(dir.join("flows.toml"), text).expect("write");
}

fn names(value: &Value, key: &str) -> Vec<String> {
    value[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key}: {value}"))
        .iter()
        .map(|name| name.as_str().expect("a name").to_owned())
        .collect()
}

fn flow_names(dir: &Path) -> Vec<String> {
    json(dir, &["flow", "list", "--json"])
        .as_array()
        .expect("flows")
        .iter()
        .map(|flow| flow["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_creates_its_flows_a_second_apply_changes_nothing_and_an_edit_keeps_the_runs() {
    for db in fresh_databases().await {
        let k = db.kind.name();
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let url = db.url.as_str();
        let on = |args: &[&'static str]| -> Vec<&str> { [&["--database-url", url][..], args].concat() };
        let migrated = flowrun(d).args(on(&["migrate"])).output().expect("runs");
        assert!(migrated.status.success(), "{k}: {migrated:?}");
        write(d, FILE);
        let first = json(d, &on(&["apply", "flows.toml", "--json"]));
        assert_eq!(names(&first, "created"), ["nightly", "ping"], "{k}");
        assert_eq!(first["dry_run"], false);
        let nightly = json(d, &on(&["flow", "show", "nightly", "--json"]));
        assert_eq!(nightly["schedule"]["cron"], "0 2 * * *", "{k}");
        assert_eq!(nightly["schedule"]["tz"], "Europe/Berlin", "{k}");
        assert_eq!(nightly["timeout_secs"], 600, "{k}");
        assert_eq!(nightly["retries"], 2, "{k}");
        assert_eq!(nightly["description"], "the nightly one", "{k}");
        assert_eq!(nightly["configuration"]["seconds"], 0, "{k}");

        let again = json(d, &on(&["apply", "flows.toml", "--json"]));
        assert_eq!(names(&again, "unchanged"), ["nightly", "ping"], "{k}");
        assert!(
            names(&again, "created").is_empty() && names(&again, "updated").is_empty(),
            "{k}"
        );

        let run = json(d, &on(&["run", "ping", "--json"]));
        write(
            d,
            &FILE.replace("every = \"5m\"", "every = \"10m\"\nenabled = false"),
        );
        let text = flowrun(d)
            .args(on(&["apply", "flows.toml"]))
            .output()
            .expect("runs");
        assert!(text.status.success(), "{k}: {text:?}");
        let stdout = String::from_utf8_lossy(&text.stdout);
        assert!(
            stdout.contains("~ updated ping (schedule, enabled)"),
            "{k}: {stdout}"
        );
        assert!(
            stdout.contains("applied: 0 created, 1 updated, 0 deleted, 1 unchanged"),
            "{k}: {stdout}"
        );
        let ping = json(d, &on(&["flow", "show", "ping", "--json"]));
        assert_eq!(ping["schedule"]["every_secs"], 600, "{k}");
        assert_eq!(ping["enabled"], false, "{k}");
        let runs = json(d, &on(&["runs", "--flow", "ping", "--json"]));
        assert_eq!(
            runs.as_array().map(Vec::len),
            Some(1),
            "{k}: the history stays: {runs}"
        );
        assert_eq!(runs[0]["id"], run["id"], "{k}");
    }
}

#[test]
fn dry_run_changes_nothing_and_prune_deletes_what_the_file_drops() {
    let dir = tempfile::tempdir().expect("dir");
    write(dir.path(), FILE);
    let plan = flowrun(dir.path())
        .args(["apply", "flows.toml", "--dry-run"])
        .output()
        .expect("runs");
    assert!(plan.status.success(), "{plan:?}");
    let stdout = String::from_utf8_lossy(&plan.stdout);
    assert!(
        stdout.contains("+ create nightly") && stdout.contains("+ create ping"),
        "{stdout}"
    );
    assert!(stdout.contains("dry run: nothing changed"), "{stdout}");
    assert!(
        !dir.path().join("flowrun.db").exists(),
        "a dry run creates no database"
    );

    json(dir.path(), &["apply", "flows.toml", "--json"]);
    let only_nightly = FILE.split("[flows.ping]").next().expect("first flow");
    write(dir.path(), only_nightly);
    let dry = json(
        dir.path(),
        &["apply", "flows.toml", "--prune", "--dry-run", "--json"],
    );
    assert_eq!(names(&dry, "deleted"), ["ping"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        flow_names(dir.path()),
        ["nightly", "ping"],
        "a dry run deletes nothing"
    );

    let kept = json(dir.path(), &["apply", "flows.toml", "--json"]);
    assert!(names(&kept, "deleted").is_empty(), "only --prune deletes");
    let pruned = json(dir.path(), &["apply", "flows.toml", "--prune", "--json"]);
    assert_eq!(names(&pruned, "deleted"), ["ping"]);
    assert_eq!(names(&pruned, "unchanged"), ["nightly"]);
    assert_eq!(flow_names(dir.path()), ["nightly"]);
}

#[test]
fn an_invalid_file_exits_2_naming_every_problem_with_its_line_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    json(
        dir.path(),
        &["flow", "create", "kept", "--class", "Noop", "--json"],
    );
    write(
        dir.path(),
        r#"[flows.backup]
class = "Sleep"
every = "1h"
cron = "0 2 * * *"

[flows.typo]
class = "Noop"
evry = "5m"

[flows.late]
class = "Noop"
timeout = "soon"
"#,
    );
    let output = flowrun(dir.path())
        .args(["apply", "flows.toml", "--prune"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for says in [
        "flows.toml:4: flow `backup`: `every` and `cron` both given",
        "flows.toml:8: flow `typo`: unknown key `evry`",
        "flows.toml:12: flow `late`: `timeout`: invalid duration `soon`",
        "nothing was changed",
    ] {
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The file's syntax is fine; the class refuses a setting: the domain's problem, with its line.
    write(
        dir.path(),
        "[flows.new]\nclass = \"Noop\"\n\n[flows.sleepy]\nclass = \"Sleep\"\n[flows.sleepy.settings]\nseconds = 1\nsecnds = 2\n",
    );
    let output = flowrun(dir.path())
        .args(["apply", "flows.toml", "--prune"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("flows.toml:8: flow `sleepy`: invalid configuration for flow class `Sleep`: unknown setting `secnds`"),
        "{stderr}"
    );
    assert_eq!(
        flow_names(dir.path()),
        ["kept"],
        "nothing created, nothing pruned"
    );
}
