//! A `SqlCopy` run of the stock `flowrun` binary killed with SIGKILL in the middle of a copy, then reaped
//! and run again, leaves the sink equal to the source (row count and a checksum over every column) and the
//! cursor where the second run ended, for every pair of configured backends.
//!
//! Also: on a terminal (a pseudo-terminal from `script(1)`), `flowrun run` shows the copy's rows and rows/s
//! on a line rewritten in place and cleared at the end; without one, nothing of it is written.
//!
//! The copy is killed as soon as the sink holds some rows (polled), which is before the source's last batch
//! on any machine: the source has many more batches than the first one. The flow's own runs are recorded in
//! an SQLite file of the test's temporary directory, whatever the source and sink are.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use flowrun_flows::sql_copy::{Cell, read_rows};
use flowrun_test_support::{Kind, TestDatabase, configured_kinds, fresh_database};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

const FLOWRUN: &str = env!("CARGO_BIN_EXE_flowrun");
/// Rows in the source: 160 batches of [`BATCH`].
const ROWS: i64 = 40_000;
const BATCH: i64 = 250;
const LEASE_SECS: &str = "1";
/// A lease and a margin: once this has passed since the kill, the run's lease has expired.
const LEASE_EXPIRED: Duration = Duration::from_millis(1300);
/// Bounds every wait; a failure, never a success, takes this long.
const DEADLINE: Duration = Duration::from_secs(120);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The URL SqlCopy and the test use: an SQLite file is created on first use.
fn url(db: &TestDatabase) -> String {
    match db.kind {
        Kind::Sqlite => format!("{}?mode=rwc", db.url),
        _ => db.url.clone(),
    }
}

/// Fills `src` with [`ROWS`] rows of text (Unicode, a tab, quotes), exact decimals, timestamps with time
/// zone and microseconds, JSON and bytes, with NULLs in every column but the key.
async fn fill_source(db: &TestDatabase) {
    let conn = Database::connect(url(db)).await.expect("connects to the source");
    let statements = match db.kind {
        Kind::Postgres => vec![
            "CREATE TABLE src (id BIGINT PRIMARY KEY, name TEXT, amount NUMERIC(20,6), at TIMESTAMPTZ, \
             doc JSONB, data BYTEA)"
                .to_owned(),
            format!(
                "INSERT INTO src SELECT g, CASE WHEN g % 17 = 0 THEN NULL ELSE 'név ' || g || E' ✓\\t\"q\"' END, \
                 CASE WHEN g % 19 = 0 THEN NULL ELSE g + 0.000001 * g END, \
                 CASE WHEN g % 23 = 0 THEN NULL ELSE timestamptz '2024-01-01 00:00:00+00' \
                 + g * interval '1 second' + g * interval '1 microsecond' END, \
                 CASE WHEN g % 29 = 0 THEN NULL ELSE jsonb_build_object('id', g, 'tag', 'ü') END, \
                 CASE WHEN g % 31 = 0 THEN NULL ELSE decode(lpad(to_hex(g), 8, '0') || '00ff', 'hex') END \
                 FROM generate_series(1, {ROWS}) AS g"
            ),
        ],
        Kind::MySql => {
            let digits = "(SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL \
                          SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL \
                          SELECT 8 UNION ALL SELECT 9)";
            vec![
                "CREATE TABLE src (id BIGINT PRIMARY KEY, name LONGTEXT, amount DECIMAL(20,6), \
                 at TIMESTAMP(6) NULL DEFAULT NULL, doc JSON, data LONGBLOB)"
                    .to_owned(),
                format!(
                    "INSERT INTO src SELECT g, IF(g % 17 = 0, NULL, CONCAT('név ', g, ' ✓\\t\"q\"')), \
                     IF(g % 19 = 0, NULL, g + 0.000001 * g), \
                     IF(g % 23 = 0, NULL, TIMESTAMPADD(MICROSECOND, g * 1000001, TIMESTAMP '2024-01-01 00:00:00')), \
                     IF(g % 29 = 0, NULL, JSON_OBJECT('id', g, 'tag', 'ü')), \
                     IF(g % 31 = 0, NULL, UNHEX(CONCAT(LPAD(HEX(g), 8, '0'), '00ff'))) \
                     FROM (SELECT 1 + a.n + 10 * b.n + 100 * c.n + 1000 * d.n + 10000 * e.n AS g \
                     FROM {digits} a CROSS JOIN {digits} b CROSS JOIN {digits} c CROSS JOIN {digits} d \
                     CROSS JOIN {digits} e) AS s WHERE g <= {ROWS}"
                ),
            ]
        }
        Kind::Sqlite => vec![
            "CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT, amount DECIMAL_TEXT, at TIMESTAMPTZ, \
             doc JSON_TEXT, data BLOB)"
                .to_owned(),
            format!(
                "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {ROWS}) \
                 INSERT INTO src SELECT g, \
                 CASE WHEN g % 17 = 0 THEN NULL ELSE 'név ' || g || ' ✓' || char(9) || '\"q\"' END, \
                 CASE WHEN g % 19 = 0 THEN NULL \
                 ELSE printf('%d.%06d', (g * 1000001) / 1000000, (g * 1000001) % 1000000) END, \
                 CASE WHEN g % 23 = 0 THEN NULL \
                 ELSE strftime('%Y-%m-%d %H:%M:%S', 1704067200 + (g * 1000001) / 1000000, 'unixepoch') \
                 || printf('.%06d+00:00', (g * 1000001) % 1000000) END, \
                 CASE WHEN g % 29 = 0 THEN NULL ELSE json_object('id', g, 'tag', 'ü') END, \
                 CASE WHEN g % 31 = 0 THEN NULL ELSE CAST(printf('%08x', g) AS BLOB) || x'00ff' END \
                 FROM s"
            ),
        ],
        Kind::Memory => unreachable!("SqlCopy runs on SQL backends only"),
    };
    for statement in statements {
        conn.execute_unprepared(&statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let _ = conn.close().await;
}

/// The row count and a checksum over every column of `table`, read with SqlCopy's own type mapping so
/// that equal values of equal types hash alike on every backend (decimals without trailing zeros, JSON as
/// parsed).
async fn count_and_checksum(db: &TestDatabase, table: &str) -> (usize, u64) {
    let query = format!("SELECT id, name, amount, at, doc, data FROM {table} ORDER BY id");
    let (_, rows) = read_rows(&url(db), &query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let mut hasher = DefaultHasher::new();
    for row in &rows {
        for cell in row {
            match cell {
                Cell::Decimal(d) if d.contains('.') => {
                    d.trim_end_matches('0').trim_end_matches('.').hash(&mut hasher)
                }
                Cell::Json(v) => v.to_string().hash(&mut hasher),
                other => format!("{other:?}").hash(&mut hasher),
            }
        }
    }
    (rows.len(), hasher.finish())
}

/// Rows in the sink table; 0 while it does not exist yet.
async fn sink_rows(db: &TestDatabase) -> i64 {
    match read_rows(&url(db), "SELECT COUNT(*) AS n FROM dst").await {
        // SQLite declares no type for `COUNT(*)`, so it is read as text there.
        Ok((_, rows)) => match rows.first().and_then(|r| r.first()) {
            Some(Cell::I64(n)) => *n,
            Some(Cell::Text(n)) => n.parse().unwrap_or(0),
            _ => 0,
        },
        Err(_) => 0,
    }
}

fn flowrun(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(FLOWRUN);
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env("FLOWRUN_RUN_LEASE_SECS", LEASE_SECS)
        .env("NO_COLOR", "1")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn ok(dir: &Path, args: &[&str]) -> Output {
    let output = flowrun(dir, args).output().expect("flowrun runs");
    assert!(
        output.status.success(),
        "flowrun {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let output = ok(dir, args);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("flowrun {args:?} printed no JSON: {e}"))
}

/// Kills the child if the test fails while it runs.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn killed_copy_converges(from: Kind, to: Kind) {
    let configured = configured_kinds();
    if !configured.contains(&from) || !configured.contains(&to) {
        return;
    }
    let pair = format!("{} → {}", from.name(), to.name());
    let rt = runtime();
    let source = rt.block_on(fresh_database(from));
    let sink = rt.block_on(fresh_database(to));
    rt.block_on(fill_source(&source));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dir = dir.path();
    let config = json!({
        "source": url(&source), "query": "SELECT id, name, amount, at, doc, data FROM src",
        "sink": url(&sink), "table": "dst", "key": ["id"], "cursor": "id",
        "batch_size": BATCH, "create_table": true,
    })
    .to_string();
    ok(
        dir,
        &[
            "flow", "create", "copy", "--class", "SqlCopy", "--config", &config,
        ],
    );

    let child = flowrun(dir, &["run", "copy"])
        .spawn()
        .expect("flowrun run starts");
    let mut child = Killed(child);
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.0.try_wait().expect("polls the child") {
            panic!("[{pair}] the copy ended ({status}) before any row reached the sink");
        }
        if rt.block_on(sink_rows(&sink)) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "[{pair}] no row reached the sink");
        sleep(Duration::from_millis(10));
    }
    child.0.kill().expect("SIGKILL");
    let status = child.0.wait().expect("waits for the child");
    assert_eq!(status.signal(), Some(9), "[{pair}] killed by SIGKILL: {status}");
    let partial = rt.block_on(sink_rows(&sink));
    assert!(
        partial > 0 && partial < ROWS && partial % BATCH == 0,
        "[{pair}] killed mid-copy, after whole batches: {partial} rows in the sink"
    );
    assert_eq!(
        json(dir, &["flow", "show", "copy", "--json"])["state"],
        Value::Null,
        "[{pair}] the killed run saved no cursor"
    );

    sleep(LEASE_EXPIRED);
    assert_eq!(
        json(dir, &["runs", "reap", "--json"])["reaped"],
        1,
        "[{pair}] the killed run is reaped"
    );
    let rerun = json(dir, &["run", "copy", "--json"]);
    assert_eq!(rerun["status"], "success", "[{pair}] {rerun}");
    assert_eq!(
        json(dir, &["flow", "show", "copy", "--json"])["state"],
        json!({"column": "id", "cursor": {"type": "i64", "value": ROWS}}),
        "[{pair}] the rerun saved the cursor it reached"
    );
    let expected = rt.block_on(count_and_checksum(&source, "src"));
    assert_eq!(expected.0, ROWS as usize);
    assert_eq!(
        rt.block_on(count_and_checksum(&sink, "dst")),
        expected,
        "[{pair}] the sink equals the source"
    );
}

#[test]
fn sqlite_to_postgres_killed_mid_copy_converges_on_rerun() {
    killed_copy_converges(Kind::Sqlite, Kind::Postgres);
}

#[test]
fn postgres_to_mysql_killed_mid_copy_converges_on_rerun() {
    killed_copy_converges(Kind::Postgres, Kind::MySql);
}

#[test]
fn mysql_to_sqlite_killed_mid_copy_converges_on_rerun() {
    killed_copy_converges(Kind::MySql, Kind::Sqlite);
}

#[test]
fn sqlite_to_sqlite_killed_mid_copy_converges_on_rerun() {
    killed_copy_converges(Kind::Sqlite, Kind::Sqlite);
}

#[test]
fn sqlite_to_mysql_killed_mid_copy_converges_on_rerun() {
    killed_copy_converges(Kind::Sqlite, Kind::MySql);
}

#[test]
fn postgres_to_postgres_killed_mid_copy_converges_on_rerun() {
    killed_copy_converges(Kind::Postgres, Kind::Postgres);
}

#[test]
fn postgres_to_sqlite_killed_mid_copy_converges_on_rerun() {
    killed_copy_converges(Kind::Postgres, Kind::Sqlite);
}

#[test]
fn mysql_to_postgres_killed_mid_copy_converges_on_rerun() {
    killed_copy_converges(Kind::MySql, Kind::Postgres);
}

#[test]
fn mysql_to_mysql_killed_mid_copy_converges_on_rerun() {
    killed_copy_converges(Kind::MySql, Kind::MySql);
}

#[test]
fn on_a_terminal_flowrun_run_shows_the_copy_progress_and_clears_it() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: script(1), which gives the run a pseudo-terminal, is not installed");
        return;
    }
    let rt = runtime();
    let source = rt.block_on(fresh_database(Kind::Sqlite));
    let sink = rt.block_on(fresh_database(Kind::Sqlite));
    rt.block_on(fill_source(&source));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let dir = dir.path();
    // Small batches, so that the copy lasts past the moment the line first shows (300 ms) on any machine.
    let config = json!({
        "source": url(&source), "query": "SELECT id, name, amount, at, doc, data FROM src",
        "sink": url(&sink), "table": "dst", "mode": "append", "batch_size": 50, "create_table": true,
    })
    .to_string();
    ok(
        dir,
        &[
            "flow", "create", "copy", "--class", "SqlCopy", "--config", &config,
        ],
    );

    let output = Command::new("script")
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .args(["-qec", &format!("'{FLOWRUN}' run copy"), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script(1) runs");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}: {screen}", output.status);
    let progress = screen
        .split("\r\x1b[2K")
        .find(|line| line.contains(" rows/s"))
        .unwrap_or_else(|| panic!("no progress line on the terminal: {screen:?}"));
    assert!(
        progress.starts_with(|c: char| ('⠋'..='⣿').contains(&c))
            && progress.contains(" running copy (")
            && progress.contains(" rows, "),
        "{progress:?}"
    );
    let after_clearing = screen.rsplit("\r\x1b[2K").next().unwrap_or_default();
    assert!(
        after_clearing.contains("success run 1 of copy") && !after_clearing.contains("rows/s"),
        "the line is cleared before the result is printed: {after_clearing:?}"
    );

    let piped = ok(dir, &["run", "copy"]);
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        stderr.is_empty(),
        "nothing but the result without a terminal: {stderr:?}"
    );
}
