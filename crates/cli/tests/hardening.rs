//! The `flowrun` binary against hostile or unlucky input: secrets in database URLs, escape sequences in
//! stored errors, closed pipes, absurd limits, the wrong directory. Server databases are used where
//! configured (`FLOWRUN_TEST_POSTGRES_URL`, `FLOWRUN_TEST_MYSQL_URL`) and skipped with a message otherwise.

use std::path::Path;
use std::process::Output;

use flowrun_test_support::{Kind, configured_kinds, fresh_database};

mod common;
use common::flowrun;

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

/// A login role on `db` (PostgreSQL) that may only read and write rows: no CREATE anywhere. Returns the
/// role's name and its URL; the schema must already be migrated.
async fn runtime_role(db: &flowrun_test_support::TestDatabase) -> (String, String) {
    use sea_orm::ConnectionTrait;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let role = format!("flowrun_rt_{}_{nanos}", std::process::id());
    let admin = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("connect");
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        admin
            .execute_unprepared(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let _ = admin.close().await;
    let (scheme_and_user, host) = db.url.split_once('@').expect("a URL with a user");
    let scheme = scheme_and_user.split("://").next().expect("a scheme");
    (role.clone(), format!("{scheme}://{role}@{host}"))
}

async fn drop_role(db: &flowrun_test_support::TestDatabase, role: &str) {
    use sea_orm::ConnectionTrait;
    if let Ok(admin) = sea_orm::Database::connect(db.url.as_str()).await {
        let _ = admin.execute_unprepared(&format!("DROP OWNED BY {role}")).await;
        let _ = admin.execute_unprepared(&format!("DROP ROLE {role}")).await;
        let _ = admin.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_may_only_read_and_write_rows_can_use_a_migrated_database() {
    if skip("the least-privilege role on PostgreSQL", Kind::Postgres) {
        return;
    }
    let db = fresh_database(Kind::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let migrated = flowrun(dir.path())
        .args(["--database-url", &db.url, "migrate"])
        .output()
        .expect("runs");
    assert!(migrated.status.success(), "{}", text(&migrated));
    let (role, url) = runtime_role(&db).await;
    let steps: [&[&str]; 4] = [
        &["flow", "create", "least", "--class", "Noop"],
        &["flow", "list"],
        &["run", "least"],
        &["runs", "--flow", "least"],
    ];
    let mut outputs = Vec::new();
    for args in steps {
        outputs.push((
            args,
            flowrun(dir.path())
                .arg("--database-url")
                .arg(&url)
                .args(args)
                .output()
                .expect("runs"),
        ));
    }
    drop_role(&db, &role).await;
    for (args, output) in outputs {
        assert!(
            output.status.success(),
            "{args:?} as a DML-only role: {}",
            text(&output)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_concurrent_migrations_of_a_fresh_database_all_succeed() {
    for kind in configured_kinds() {
        let db = fresh_database(kind).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = db.url.clone();
        let dir_path = dir.path().to_owned();
        let outputs = tokio::task::spawn_blocking(move || {
            let children: Vec<std::process::Child> = (0..10)
                .map(|_| {
                    std::process::Command::new(assert_cmd::cargo::cargo_bin("flowrun"))
                        .current_dir(&dir_path)
                        .env_remove("RUST_LOG")
                        .args(["--database-url", &url, "migrate"])
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .expect("spawn")
                })
                .collect();
            children
                .into_iter()
                .map(|child| child.wait_with_output().expect("wait"))
                .collect::<Vec<_>>()
        })
        .await
        .expect("joined");
        for output in &outputs {
            assert!(output.status.success(), "{}: {}", kind.name(), text(output));
        }
        let list = flowrun(dir.path())
            .args(["--database-url", &db.url, "flow", "list"])
            .output()
            .expect("runs");
        assert!(list.status.success(), "{}: {}", kind.name(), text(&list));
    }
}

const RUNNING_HINT: &str = "check that the database server is running";

#[test]
fn a_closed_port_says_connection_refused_with_the_hint_and_v_adds_the_driver_detail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = flowrun(dir.path())
        .args([
            "--database-url",
            "postgres://app:pw@127.0.0.1:1/db",
            "flow",
            "list",
        ])
        .output()
        .expect("runs");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(3), "{all}");
    assert!(all.contains("connection refused by 127.0.0.1:1"), "{all}");
    assert!(all.contains(RUNNING_HINT), "{all}");
    assert!(!all.contains("caused by"), "{all}");
    let verbose = flowrun(dir.path())
        .args([
            "-v",
            "--database-url",
            "postgres://app:pw@127.0.0.1:1/db",
            "flow",
            "list",
        ])
        .output()
        .expect("runs");
    let all = text(&verbose);
    assert!(all.contains("caused by: "), "-v adds the driver's words: {all}");
}

#[test]
fn a_missing_sqlite_directory_is_named_without_the_server_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/no/such/dir/flowrun.db", dir.path().display());
    let output = flowrun(dir.path())
        .args(["--database-url", &url, "flow", "create", "x", "--class", "Noop"])
        .output()
        .expect("runs");
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(all.contains("no/such/dir` does not exist"), "{all}");
    assert!(!all.contains(RUNNING_HINT), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_database_and_a_wrong_password_say_so_without_the_server_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cases = Vec::new();
    if !skip("the missing database on PostgreSQL", Kind::Postgres) {
        let db = fresh_database(Kind::Postgres).await;
        let (base, _) = db.url.rsplit_once('/').expect("a database path");
        cases.push((format!("{base}/flowrun_no_such_database"), "no such database"));
    }
    if !skip("the wrong password on MariaDB", Kind::MySql) {
        let db = fresh_database(Kind::MySql).await;
        let url = db.url.replacen("://root@", "://root:wrong-pass-3141@", 1);
        cases.push((url, "authentication failed"));
        let (base, _) = db.url.rsplit_once('/').expect("a database path");
        cases.push((format!("{base}/flowrun_no_such_database"), "no such database"));
    }
    for (url, expected) in cases {
        let output = flowrun(dir.path())
            .args(["--database-url", &url, "flow", "list"])
            .output()
            .expect("runs");
        let all = text(&output);
        assert_eq!(output.status.code(), Some(3), "{url}: {all}");
        assert!(all.contains(expected), "{url}: {all}");
        assert!(!all.contains(RUNNING_HINT), "{url}: {all}");
        assert!(!all.contains(" at line "), "{url}: {all}");
        assert!(!all.contains("wrong-pass-3141"), "{url}: {all}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_notices_stay_out_of_the_verbose_log() {
    if skip("PostgreSQL notices", Kind::Postgres) {
        return;
    }
    let db = fresh_database(Kind::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    for _ in 0..2 {
        let output = flowrun(dir.path())
            .args(["-v", "--database-url", &db.url, "migrate"])
            .output()
            .expect("runs");
        let all = text(&output);
        assert!(output.status.success(), "{all}");
        assert!(!all.contains("already exists, skipping"), "{all}");
    }
}

/// Runs `args`, reads one line of stdout, closes the pipe and returns how the command ended.
fn with_stdout_closed_early(dir: &Path, args: &[&str]) -> Output {
    use std::io::BufRead;
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("flowrun"))
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .expect("one line");
    // The reader is dropped here, like `head -1` exiting.
    child.wait_with_output().expect("wait")
}

#[test]
fn a_closed_stdout_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // More than a pipe buffer (64 KiB) in one go, so the write is still under way when the reader leaves.
    let big = "x".repeat(100 * 1024);
    let config = serde_json::json!({ "message": big }).to_string();
    flowrun(dir.path())
        .args(["flow", "create", "big", "--class", "Fail", "--config", &config])
        .assert()
        .success();
    flowrun(dir.path()).args(["run", "big"]).assert().code(1);
    for args in [
        &["runs", "show", "1"][..],
        &["runs", "--limit", "1000", "--json"][..],
        &["flow", "list", "--json"][..],
    ] {
        let output = with_stdout_closed_early(dir.path(), args);
        let all = text(&output);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {all}");
        assert!(output.stderr.is_empty(), "{args:?}: quiet: {all}");
    }
}

#[test]
fn runs_limit_is_bounded_with_a_clear_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    flowrun(dir.path())
        .args(["flow", "create", "a", "--class", "Noop"])
        .assert()
        .success();
    for limit in ["9223372036854775808", "18446744073709551616", "0", "10001", "-1"] {
        let output = flowrun(dir.path())
            .args(["runs", &format!("--limit={limit}")])
            .output()
            .expect("runs");
        let all = text(&output);
        assert_eq!(output.status.code(), Some(2), "{limit}: {all}");
        assert!(!all.contains("panicked"), "{limit}: {all}");
        assert!(all.contains("--limit"), "{limit}: names the flag: {all}");
    }
    flowrun(dir.path())
        .args(["runs", "--limit", "10000"])
        .assert()
        .success();
}

#[test]
fn verbose_logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = flowrun(dir.path())
        .env_remove("NO_COLOR")
        .args(["-v", "flow", "create", "a", "--class", "Noop"])
        .output()
        .expect("runs");
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(!output.stderr.is_empty(), "-v logs something: {all}");
    assert!(!all.contains('\u{1b}'), "{all:?}");
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn read_commands_in_the_wrong_directory_create_nothing_and_say_where_they_looked() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["flow", "list"][..],
        &["flow", "show", "x"][..],
        &["flow", "disable", "x"][..],
        &["runs"][..],
        &["runs", "show", "1"][..],
        &["flow", "list", "--json"][..],
        &["schedule", "x"][..],
    ] {
        let output = flowrun(dir.path()).args(args).output().expect("runs");
        let all = text(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {all}");
        assert!(all.contains("no flowrun database at"), "{args:?}: {all}");
        assert!(all.contains("flowrun.db"), "{args:?}: names the path: {all}");
        assert_eq!(
            files_in(dir.path()),
            Vec::<String>::new(),
            "{args:?} created files"
        );
    }
    flowrun(dir.path())
        .args(["flow", "create", "a", "--class", "Noop"])
        .assert()
        .success();
    assert!(dir.path().join("flowrun.db").exists());
    flowrun(dir.path())
        .args(["flow", "delete", "a"])
        .assert()
        .success();
    let empty = flowrun(dir.path()).args(["flow", "list"]).output().expect("runs");
    let all = text(&empty);
    assert!(empty.status.success(), "{all}");
    let path = std::path::absolute(dir.path().join("flowrun.db")).expect("absolute");
    assert!(
        all.contains(&format!("no data flows yet in {}", path.display())),
        "{all}"
    );
    let verbose = flowrun(dir.path())
        .args(["-v", "flow", "list"])
        .output()
        .expect("runs");
    let all = text(&verbose);
    assert!(
        all.contains(&path.display().to_string()),
        "-v names the database: {all}"
    );
}
