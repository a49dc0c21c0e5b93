//! The `flowrun` binary against hostile or unlucky input: secrets in database URLs, escape sequences in
//! stored errors, closed pipes, absurd limits, the wrong directory. Server databases are used where
//! configured (`FLOWRUN_TEST_POSTGRES_URL`, `FLOWRUN_TEST_MYSQL_URL`) and skipped with a message otherwise.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use flowrun_test_support::{Kind, configured_kinds, fresh_database};

fn flowrun(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("flowrun").expect("binary built");
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn skip(what: &str, kind: Kind) -> bool {
    if configured_kinds().contains(&kind) {
        return false;
    }
    eprintln!("skipped {what}: no {} URL configured", kind.name());
    true
}

#[test]
fn passwords_with_url_delimiters_never_appear_and_the_url_is_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    for url in [
        "postgres://app:s3cr#tPW@127.0.0.1:5432/db",
        "postgres://app:s3cr/tPW@127.0.0.1:5432/db",
        "postgres://app:s3cr?tPW@127.0.0.1:5432/db",
    ] {
        for verbose in [false, true] {
            let mut cmd = flowrun(dir.path());
            if verbose {
                cmd.arg("-v");
            }
            let output = cmd
                .args(["--database-url", url, "flow", "list"])
                .output()
                .expect("runs");
            let all = text(&output);
            assert_eq!(output.status.code(), Some(2), "{url}: {all}");
            assert!(!all.contains("tPW"), "{url}: {all}");
            assert!(all.contains("percent-encoded"), "{url}: says what to do: {all}");
        }
    }
}

#[test]
fn a_password_in_the_query_string_is_masked_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &[
            "--database-url",
            "postgres://app@127.0.0.1:1/db?password=HUNTER2",
            "flow",
            "list",
        ][..],
        &[
            "-v",
            "--database-url",
            "mysql://app@127.0.0.1:1/db?password=HUNTER2",
            "migrate",
        ][..],
    ] {
        let output = flowrun(dir.path()).args(args).output().expect("runs");
        let all = text(&output);
        assert_eq!(output.status.code(), Some(3), "{all}");
        assert!(!all.contains("HUNTER2"), "{all}");
        assert!(all.contains("password=<masked>"), "{all}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_names_the_database_without_its_query_string_password() {
    if skip("the query-string password on PostgreSQL", Kind::Postgres) {
        return;
    }
    let db = fresh_database(Kind::Postgres).await;
    // The test server trusts 127.0.0.1, so the password is accepted and ignored.
    let url = format!("{}?password=HUNTER2", db.url);
    let dir = tempfile::tempdir().expect("tempdir");
    let output = flowrun(dir.path())
        .args(["-v", "--database-url", &url, "migrate"])
        .output()
        .expect("runs");
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("password=<masked> is migrated"), "{all}");
    assert!(!all.contains("HUNTER2"), "{all}");
}

const HOSTILE: &str = "\u{1b}[2J\u{1b}]0;TITLE\u{7}cleared\rfake: success";

fn assert_inert(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for raw in ['\u{1b}', '\u{7}', '\r'] {
        assert!(!text.contains(raw), "{what} prints {raw:?} raw: {text:?}");
    }
    assert!(
        text.contains(r"\e[2J\e]0;TITLE\u{7}cleared\rfake: success"),
        "{what}: {text:?}"
    );
}

#[test]
fn control_characters_in_errors_are_shown_not_obeyed_and_json_stays_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = serde_json::json!({ "message": HOSTILE }).to_string();
    flowrun(dir.path())
        .args(["flow", "create", "evil", "--class", "Fail", "--config", &config])
        .assert()
        .success();
    let run = flowrun(dir.path()).args(["run", "evil"]).output().expect("runs");
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert_inert("run", &run.stderr);
    let list = flowrun(dir.path()).args(["runs"]).output().expect("runs");
    assert!(list.status.success(), "{}", text(&list));
    assert_inert("runs", &list.stdout);
    let show = flowrun(dir.path())
        .args(["runs", "show", "1"])
        .output()
        .expect("runs");
    assert!(show.status.success(), "{}", text(&show));
    assert_inert("runs show", &show.stdout);
    let json = flowrun(dir.path())
        .args(["runs", "show", "1", "--json"])
        .output()
        .expect("runs");
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(value["error_message"], HOSTILE, "JSON keeps the exact text");
}
