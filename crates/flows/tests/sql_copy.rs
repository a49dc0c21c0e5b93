//! SqlCopy between every pair of configured backends: SQLite always, PostgreSQL and MySQL/MariaDB when
//! `FLOWRUN_TEST_POSTGRES_URL` / `FLOWRUN_TEST_MYSQL_URL` are set (each test gets fresh databases).

use std::time::Duration;

use flowrun_domain::{ClassRegistry, FlowClass, FlowName, FlowRegistry, RunContext, RunId, Trigger};
use flowrun_flows::register_builtins;
use flowrun_flows::sql_copy::{Cell, CopySummary, SqlCopy, SqlCopyError, read_rows};
use flowrun_test_support::{Kind, TestDatabase, configured_kinds, fresh_database};
use serde_json::{Value, json};
use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};

/// The columns of the generated source table, in order.
const COLUMNS: &str = "id, name, amount, ratio, flag, born, seen, at, doc, data, version";

fn url(db: &TestDatabase) -> String {
    match db.kind {
        Kind::Sqlite => format!("{}?mode=rwc", db.url),
        _ => db.url.clone(),
    }
}

async fn exec(db: &TestDatabase, statements: &[String]) {
    let url = url(db);
    match db.kind {
        Kind::Postgres => {
            let mut c = PgConnection::connect(&url).await.expect("connect");
            for s in statements {
                c.execute(AssertSqlSafe(s.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
        }
        Kind::Memory => unreachable!("SqlCopy runs on SQL backends only"),
        Kind::MySql => {
            let mut c = MySqlConnection::connect(&url).await.expect("connect");
            for s in statements {
                c.execute(AssertSqlSafe(s.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
        }
        Kind::Sqlite => {
            let mut c = SqliteConnection::connect(&url).await.expect("connect");
            for s in statements {
                c.execute(AssertSqlSafe(s.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
        }
    }
}

fn create_source(kind: Kind, table: &str) -> String {
    let types = match kind {
        Kind::Postgres => {
            "id BIGINT PRIMARY KEY, name TEXT, amount NUMERIC(20,6), ratio DOUBLE PRECISION, \
             flag BOOLEAN, born DATE, seen TIMESTAMP, at TIMESTAMPTZ, doc JSONB, data BYTEA, version BIGINT"
        }
        Kind::Memory => unreachable!("SqlCopy runs on SQL backends only"),
        Kind::MySql => {
            "id BIGINT PRIMARY KEY, name LONGTEXT, amount DECIMAL(20,6), ratio DOUBLE, flag BOOLEAN, \
             born DATE, seen DATETIME(6), at TIMESTAMP(6) NULL DEFAULT NULL, doc JSON, data LONGBLOB, \
             version BIGINT"
        }
        Kind::Sqlite => {
            "id INTEGER PRIMARY KEY, name TEXT, amount DECIMAL_TEXT, ratio REAL, flag BOOLEAN, \
             born DATE, seen TIMESTAMP, at TIMESTAMPTZ, doc JSON_TEXT, data BLOB, version INTEGER"
        }
    };
    format!("CREATE TABLE {table} ({types})")
}

/// One generated row as SQL literals; `variant` changes the non-key values. Every column but `id` and
/// `version` is NULL in some rows.
fn row(kind: Kind, id: i64, version: i64, variant: &str) -> String {
    let null = |every: i64| id % every == 0;
    let name = if null(17) {
        "NULL".to_owned()
    } else {
        format!("'név {id} ✓ ''{variant}'' 🚀'")
    };
    let sign = if id % 2 == 0 { "" } else { "-" };
    let amount = if null(19) {
        "NULL".to_owned()
    } else {
        format!("{sign}{}.{:06}", id * 1000 + 7, (id * 7919) % 1_000_000)
    };
    let ratio = if null(23) {
        "NULL".to_owned()
    } else {
        format!("{:e}", id as f64 / 7.0)
    };
    let flag = match (null(29), id % 3 == 0, kind) {
        (true, _, _) => "NULL",
        (false, b, Kind::Sqlite) => {
            if b {
                "1"
            } else {
                "0"
            }
        }
        (false, b, _) => {
            if b {
                "TRUE"
            } else {
                "FALSE"
            }
        }
    };
    let base = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).expect("date");
    let born = base + chrono::Duration::days(id);
    let seen = base.and_hms_opt(0, 0, 0).expect("time")
        + chrono::Duration::seconds(id * 3607)
        + chrono::Duration::microseconds((id * 7919) % 1_000_000);
    let seen_text = seen.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let at = match kind {
        Kind::Postgres => format!("'{seen_text}+00'"),
        Kind::Memory => unreachable!("SqlCopy runs on SQL backends only"),
        Kind::MySql => format!("'{seen_text}'"),
        Kind::Sqlite => format!("'{seen_text}+00:00'"),
    };
    let doc = format!("'{{\"id\": {id}, \"tags\": [\"a\", \"ü\"], \"v\": \"{variant}\", \"n\": null}}'");
    let hex = format!("{:02x}00ff", id % 256);
    let data = match kind {
        Kind::Postgres => format!("'\\x{hex}'"),
        _ => format!("X'{hex}'"),
    };
    let opt = |every: i64, text: String| if null(every) { "NULL".to_owned() } else { text };
    format!(
        "({id}, {name}, {amount}, {ratio}, {flag}, {}, {}, {}, {}, {}, {version})",
        opt(31, format!("'{born}'")),
        opt(37, format!("'{seen_text}'")),
        opt(41, at),
        opt(43, doc),
        opt(47, data),
    )
}

fn insert_rows(
    kind: Kind,
    table: &str,
    rows: impl Iterator<Item = (i64, i64)>,
    variant: &str,
) -> Vec<String> {
    let rows: Vec<String> = rows
        .map(|(id, version)| row(kind, id, version, variant))
        .collect();
    rows.chunks(500)
        .map(|chunk| format!("INSERT INTO {table} ({COLUMNS}) VALUES {}", chunk.join(", ")))
        .collect()
}

fn new_context(state: Option<Value>) -> RunContext {
    RunContext::new(
        RunId(1),
        1,
        FlowName::parse("copy").expect("name"),
        Trigger::Manual,
        state,
    )
}

fn flow(settings: Value) -> SqlCopy {
    let settings = serde_json::from_value(settings).expect("settings deserialize");
    SqlCopy::build(settings).expect("settings are valid")
}

/// Runs the flow as the executor would: the state saved only when the run succeeds.
async fn run(
    flow: &SqlCopy,
    state: &mut Option<Value>,
) -> Result<(CopySummary, String), (SqlCopyError, String)> {
    let mut context = new_context(state.clone());
    let result = flow.copy(&mut context).await;
    let output = context.output().text();
    match result {
        Ok(summary) => {
            if let Some(new) = context.new_state() {
                *state = Some(new.clone());
            }
            Ok((summary, output))
        }
        Err(error) => {
            assert!(context.new_state().is_none(), "a failed run sets no state");
            Err((error, output))
        }
    }
}

/// The rows of `query`, every cell as `type:value`, so that equal values of equal types compare equal
/// across backends. Decimals compare by value (a MySQL DECIMAL(65,30) has trailing zeros), JSON by its
/// parsed value (MariaDB keeps the text as written).
async fn normalized(db: &TestDatabase, query: &str) -> Vec<Vec<String>> {
    let (_, rows) = read_rows(&url(db), query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    rows.iter()
        .map(|row| {
            row.iter()
                .map(|cell| match cell {
                    Cell::Decimal(d) => {
                        let d: rust_decimal::Decimal = d.parse().expect("a decimal");
                        format!("decimal:{}", d.normalize())
                    }
                    Cell::Json(v) => format!("json:{v}"),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .collect()
}

async fn assert_same(source: &TestDatabase, sink: &TestDatabase, table: &str) {
    let query = |t: &str| format!("SELECT {COLUMNS} FROM {t} ORDER BY id");
    let expected = normalized(source, &query("src")).await;
    let actual = normalized(sink, &query(table)).await;
    assert_eq!(expected.len(), actual.len(), "row count");
    for (e, a) in expected.iter().zip(&actual) {
        assert_eq!(e, a, "{:?} → {:?}", source.kind, sink.kind);
    }
}

fn configured(kinds: &[Kind]) -> bool {
    let configured = configured_kinds();
    kinds.iter().all(|k| configured.contains(k))
}

/// A full copy equals the source; 1,000 new and 100 updated rows are copied by the next run and nothing
/// else (but the row at the last cursor, read again by `>=`); a run with no change copies only that row.
async fn copy_pair(from: Kind, to: Kind) {
    if !configured(&[from, to]) {
        return;
    }
    let source = fresh_database(from).await;
    let sink = fresh_database(to).await;
    let mut statements = vec![create_source(from, "src")];
    statements.extend(insert_rows(from, "src", (1..=2000).map(|i| (i, i)), "a"));
    exec(&source, &statements).await;
    let flow = flow(json!({
        "source": url(&source), "query": format!("SELECT {COLUMNS} FROM src"),
        "sink": url(&sink), "table": "dst", "key": ["id"], "cursor": "version",
        "batch_size": 300, "create_table": true,
    }));
    let mut state = None;
    let (summary, output) = run(&flow, &mut state).await.expect("the first run succeeds");
    assert_eq!(summary.rows_read, 2000, "{output}");
    assert_eq!(summary.batches, 7, "{output}");
    assert!(
        output.contains("batch 7: 200 rows read, 200 written, cursor 2000\n"),
        "{output}"
    );
    assert_eq!(
        state,
        Some(json!({"column": "version", "cursor": {"type": "i64", "value": 2000}}))
    );
    assert_same(&source, &sink, "dst").await;

    let mut changes = insert_rows(from, "src", (2001..=3000).map(|i| (i, i)), "a");
    for i in 1..=100 {
        changes.push(format!(
            "UPDATE src SET name = 'changed {i}', amount = 0.5, version = {} WHERE id = {}",
            3000 + i,
            i * 7
        ));
    }
    exec(&source, &changes).await;
    let (summary, output) = run(&flow, &mut state).await.expect("the second run succeeds");
    assert_eq!(
        summary.rows_read, 1101,
        "1000 new, 100 updated and the row at the last cursor: {output}"
    );
    assert_eq!(summary.rows_written, 1101, "{output}");
    assert_eq!(
        state,
        Some(json!({"column": "version", "cursor": {"type": "i64", "value": 3100}}))
    );
    assert_same(&source, &sink, "dst").await;

    let (summary, _) = run(&flow, &mut state).await.expect("the third run succeeds");
    assert_eq!(summary.rows_read, 1, "only the row at the last cursor");
    assert_same(&source, &sink, "dst").await;
}

#[tokio::test]
async fn sqlite_to_sqlite() {
    copy_pair(Kind::Sqlite, Kind::Sqlite).await;
}

#[tokio::test]
async fn sqlite_to_postgres() {
    copy_pair(Kind::Sqlite, Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_to_mysql() {
    copy_pair(Kind::Sqlite, Kind::MySql).await;
}

#[tokio::test]
async fn postgres_to_postgres() {
    copy_pair(Kind::Postgres, Kind::Postgres).await;
}

#[tokio::test]
async fn postgres_to_mysql() {
    copy_pair(Kind::Postgres, Kind::MySql).await;
}

#[tokio::test]
async fn postgres_to_sqlite() {
    copy_pair(Kind::Postgres, Kind::Sqlite).await;
}

#[tokio::test]
async fn mysql_to_sqlite() {
    copy_pair(Kind::MySql, Kind::Sqlite).await;
}

#[tokio::test]
async fn mysql_to_postgres() {
    copy_pair(Kind::MySql, Kind::Postgres).await;
}

#[tokio::test]
async fn mysql_to_mysql() {
    copy_pair(Kind::MySql, Kind::MySql).await;
}

async fn sqlite_pair(rows: i64) -> (TestDatabase, TestDatabase) {
    let source = fresh_database(Kind::Sqlite).await;
    let sink = fresh_database(Kind::Sqlite).await;
    let mut statements = vec![create_source(Kind::Sqlite, "src")];
    statements.extend(insert_rows(Kind::Sqlite, "src", (1..=rows).map(|i| (i, i)), "a"));
    exec(&source, &statements).await;
    (source, sink)
}

async fn count(db: &TestDatabase, table: &str) -> usize {
    read_rows(&url(db), &format!("SELECT id FROM {table}"))
        .await
        .map(|(_, rows)| rows.len())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_failed_run_leaves_the_cursor_unchanged_and_a_rerun_converges() {
    let (source, sink) = sqlite_pair(2000).await;
    let settings = |create: bool| {
        json!({
            "source": url(&source), "query": format!("SELECT {COLUMNS} FROM src"),
            "sink": url(&sink), "table": "dst", "key": ["id"], "cursor": "version",
            "batch_size": 500, "create_table": create,
        })
    };
    let mut state = None;
    let (error, _) = run(&flow(settings(false)), &mut state)
        .await
        .expect_err("no sink table");
    assert_eq!(
        error.to_string(),
        "the sink table `dst` does not exist (set `create_table` to create it)"
    );
    assert_eq!(state, None);

    let flow = flow(settings(true));
    run(&flow, &mut state).await.expect("the first run succeeds");
    let saved = state.clone();
    let mut changes = insert_rows(Kind::Sqlite, "src", (2001..=3000).map(|i| (i, i)), "a");
    changes.push("UPDATE src SET amount = 'not a number' WHERE id = 2700".to_owned());
    exec(&source, &changes).await;
    let (error, output) = run(&flow, &mut state).await.expect_err("a bad value mid-way");
    assert_eq!(
        error.to_string(),
        "column `amount`: `not a number` is not a decimal number"
    );
    assert!(
        output.contains("batch 1: 500 rows read"),
        "batches before the bad row were written: {output}"
    );
    assert_eq!(state, saved, "the cursor is unchanged");

    exec(
        &source,
        &["UPDATE src SET amount = '1.25' WHERE id = 2700".to_owned()],
    )
    .await;
    let (summary, _) = run(&flow, &mut state).await.expect("the rerun succeeds");
    assert_eq!(
        summary.rows_read, 1001,
        "the rerun copies again from the unchanged cursor"
    );
    assert_same(&source, &sink, "dst").await;
}

#[tokio::test]
async fn an_unmappable_type_fails_with_a_clear_message_and_writes_nothing() {
    let source = fresh_database(Kind::Sqlite).await;
    let sink = fresh_database(Kind::Sqlite).await;
    exec(
        &source,
        &[
            "CREATE TABLE src (id INTEGER PRIMARY KEY, opens TIME)".to_owned(),
            "INSERT INTO src VALUES (1, '10:00')".to_owned(),
        ],
    )
    .await;
    let flow = flow(json!({
        "source": url(&source), "query": "SELECT id, opens FROM src", "sink": url(&sink),
        "table": "dst", "key": ["id"], "create_table": true,
    }));
    let (error, _) = run(&flow, &mut None).await.expect_err("TIME cannot be copied");
    assert_eq!(
        error.to_string(),
        "column `opens` has type `TIME`, which SqlCopy cannot copy; cast it in the query (nothing was written)"
    );
    let tables = read_rows(&url(&sink), "SELECT name FROM sqlite_master WHERE type = 'table'")
        .await
        .expect("reads");
    assert!(tables.1.is_empty(), "no table was created: {:?}", tables.1);

    if configured(&[Kind::Postgres]) {
        let pg = fresh_database(Kind::Postgres).await;
        exec(
            &pg,
            &["CREATE TABLE src (id BIGINT PRIMARY KEY, spot POINT)".to_owned()],
        )
        .await;
        let flow = flow_to(&pg, "SELECT id, spot FROM src", &sink);
        let (error, _) = run(&flow, &mut None).await.expect_err("POINT cannot be copied");
        assert!(
            error.to_string().starts_with("column `spot` has type `POINT`"),
            "{error}"
        );
    }
}

fn flow_to(source: &TestDatabase, query: &str, sink: &TestDatabase) -> SqlCopy {
    flow(json!({
        "source": url(source), "query": query, "sink": url(sink),
        "table": "dst", "key": ["id"], "create_table": true,
    }))
}

#[tokio::test]
async fn rows_sharing_the_last_cursor_value_are_not_lost() {
    let source = fresh_database(Kind::Sqlite).await;
    let sink = fresh_database(Kind::Sqlite).await;
    exec(
        &source,
        &[
            "CREATE TABLE src (id INTEGER PRIMARY KEY, at TIMESTAMP)".to_owned(),
            "INSERT INTO src VALUES (1, '2024-01-01 10:00:00'), (2, '2024-01-01 10:00:05'), \
           (3, '2024-01-01 10:00:05')"
                .to_owned(),
        ],
    )
    .await;
    let flow = flow(json!({
        "source": url(&source), "query": "SELECT id, at FROM src", "sink": url(&sink),
        "table": "dst", "key": ["id"], "cursor": "at", "create_table": true, "batch_size": 2,
    }));
    let mut state = None;
    run(&flow, &mut state).await.expect("first run");
    assert_eq!(
        state,
        Some(json!({"column": "at", "cursor": {"type": "timestamp", "value": "2024-01-01T10:00:05.000000"}}))
    );
    // Committed later by a slow writer, with the same timestamp as the last copied row.
    exec(
        &source,
        &["INSERT INTO src VALUES (4, '2024-01-01 10:00:05'), (5, '2024-01-01 10:00:09')".to_owned()],
    )
    .await;
    let (summary, _) = run(&flow, &mut state).await.expect("second run");
    assert_eq!(summary.rows_read, 4, "rows 2, 3, 4 (at the last cursor) and 5");
    assert_eq!(count(&sink, "dst").await, 5);
}

#[tokio::test]
async fn cancellation_stops_between_batches_and_keeps_the_cursor() {
    let (source, sink) = sqlite_pair(20_000).await;
    let flow = flow(json!({
        "source": url(&source), "query": format!("SELECT {COLUMNS} FROM src"),
        "sink": url(&sink), "table": "dst", "key": ["id"], "cursor": "version",
        "batch_size": 100, "create_table": true,
    }));

    let mut context = new_context(None);
    context.cancellation().cancel();
    let error = flow
        .copy(&mut context)
        .await
        .expect_err("cancelled before it starts");
    assert!(
        matches!(
            error,
            SqlCopyError::Cancelled {
                rows_written: 0,
                batches: 0
            }
        ),
        "{error}"
    );

    let mut context = new_context(None);
    let cancel = context.cancellation();
    let output = context.output();
    let watcher = tokio::spawn(async move {
        while !output.text().contains("batch 3:") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        cancel.cancel();
    });
    let error = flow.copy(&mut context).await.expect_err("cancelled mid-way");
    watcher.await.expect("watcher");
    let SqlCopyError::Cancelled {
        rows_written,
        batches,
    } = error
    else {
        panic!("not a cancellation: {error}");
    };
    assert!((3..200).contains(&batches), "{batches}");
    assert_eq!(rows_written, batches * 100, "only whole batches");
    assert_eq!(count(&sink, "dst").await as u64, rows_written);
    assert!(context.new_state().is_none());
}

#[tokio::test]
async fn replace_swaps_in_a_fresh_table_and_append_adds() {
    let mut kinds = vec![Kind::Sqlite];
    kinds.extend(configured_kinds().into_iter().filter(|k| *k != Kind::Sqlite));
    for kind in kinds {
        let (source, _) = sqlite_pair(250).await;
        let sink = fresh_database(kind).await;
        let replace = flow(json!({
            "source": url(&source), "query": format!("SELECT {COLUMNS} FROM src"),
            "sink": url(&sink), "table": "dst", "key": ["id"], "mode": "replace",
            "batch_size": 100, "create_table": true,
        }));
        run(&replace, &mut None).await.expect("first replace");
        exec(&source, &["DELETE FROM src WHERE id > 200".to_owned()]).await;
        run(&replace, &mut None).await.expect("second replace");
        assert_same(&source, &sink, "dst").await;
        let staging = read_rows(&url(&sink), "SELECT id FROM dst__flowrun_new").await;
        assert!(staging.is_err(), "{kind:?}: the staging table is gone");

        let append = flow(json!({
            "source": url(&source), "query": "SELECT id, name FROM src",
            "sink": url(&sink), "table": "log", "mode": "append", "create_table": true,
        }));
        run(&append, &mut None).await.expect("first append");
        run(&append, &mut None).await.expect("second append");
        assert_eq!(count(&sink, "log").await, 400, "{kind:?}");
    }
}

#[tokio::test]
async fn text_with_nul_reaches_postgres_as_a_replacement_character() {
    if !configured(&[Kind::Postgres]) {
        return;
    }
    let source = fresh_database(Kind::Sqlite).await;
    let sink = fresh_database(Kind::Postgres).await;
    exec(
        &source,
        &[
            "CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT)".to_owned(),
            "INSERT INTO src VALUES (1, 'a' || char(0) || 'b')".to_owned(),
        ],
    )
    .await;
    run(&flow_to(&source, "SELECT id, name FROM src", &sink), &mut None)
        .await
        .expect("copies");
    let (_, rows) = read_rows(&url(&sink), "SELECT name FROM dst")
        .await
        .expect("reads");
    assert_eq!(rows, vec![vec![Cell::Text("a\u{FFFD}b".into())]]);
}

#[test]
fn bad_settings_are_refused_with_the_reason() {
    let mut registry = ClassRegistry::new();
    register_builtins(&mut registry);
    let base = json!({"class_name": "SqlCopy", "source": "sqlite://a.db", "query": "SELECT 1 AS id",
                      "sink": "postgres://u@h/db", "table": "t", "key": ["id"]});
    assert!(registry.build("SqlCopy", &base).is_ok());
    let refused = |change: Value| {
        let mut config = base.clone();
        if let (Some(config), Some(change)) = (config.as_object_mut(), change.as_object()) {
            config.extend(change.clone());
        }
        registry
            .build("SqlCopy", &config)
            .err()
            .expect("refused")
            .to_string()
    };
    let prefix = "invalid configuration for flow class `SqlCopy`: ";
    assert_eq!(
        refused(json!({"table": "t; DROP"})),
        format!(
            "{prefix}`table`: `t; DROP` is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*, at most 60 characters)"
        )
    );
    assert_eq!(
        refused(json!({"key": []})),
        format!("{prefix}`key` must name at least one column in `upsert` mode")
    );
    assert_eq!(
        refused(json!({"batch_size": 0})),
        format!("{prefix}`batch_size` must be between 1 and 100000, got 0")
    );
    assert_eq!(
        refused(json!({"sink": "oracle://x"})),
        format!("{prefix}`sink`: unsupported database `oracle` (postgres, mysql, mariadb or sqlite)")
    );
    assert!(refused(json!({"mode": "merge"})).contains("unknown variant `merge`"));
    assert_eq!(
        refused(json!({"tabel": "t"})),
        format!("{prefix}unknown setting `tabel`")
    );
    assert!(registry.build("SqlCopy", &json!({"class_name": "SqlCopy", "source": "sqlite://a.db", "query": "SELECT 1 AS id", "sink": "sqlite://b.db", "table": "t", "mode": "append"})).is_ok());
}

/// Rows/s for each pair of configured backends on a generated table (id, text, numeric, timestamptz,
/// JSON); needs PostgreSQL for the generator. A measurement, not a check:
/// `FLOWRUN_TEST_POSTGRES_URL=… FLOWRUN_TEST_MYSQL_URL=… FLOWRUN_COPY_ROWS=100000 cargo test --release -p
/// flowrun-flows --test sql_copy -- --ignored --nocapture throughput`
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn throughput() {
    if !configured(&[Kind::Postgres]) {
        return;
    }
    let rows: i64 = std::env::var("FLOWRUN_COPY_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let generator = fresh_database(Kind::Postgres).await;
    let generate = format!(
        "SELECT g AS id, 'name ' || g AS name, (g * 1.000001)::numeric(20, 6) AS amount, \
         timestamptz '2024-01-01' + g * interval '1 second' AS at, \
         jsonb_build_object('id', g, 'tag', 'x') AS doc FROM generate_series(1, {rows}) AS g"
    );
    let mut sources = Vec::new();
    for kind in configured_kinds() {
        let db = fresh_database(kind).await;
        let fill = flow(json!({
            "source": url(&generator), "query": generate, "sink": url(&db), "table": "src",
            "key": ["id"], "create_table": true, "batch_size": 5000,
        }));
        run(&fill, &mut None).await.expect("fills the source");
        sources.push(db);
    }
    for source in &sources {
        for to in configured_kinds() {
            let sink = fresh_database(to).await;
            let copy = flow(json!({
                "source": url(source), "query": "SELECT id, name, amount, at, doc FROM src",
                "sink": url(&sink), "table": "dst", "key": ["id"], "create_table": true,
                "batch_size": 5000,
            }));
            let started = std::time::Instant::now();
            let (summary, _) = run(&copy, &mut None).await.expect("copies");
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{:?} → {to:?}: {} rows in {seconds:.2} s, {:.0} rows/s",
                source.kind,
                summary.rows_read,
                summary.rows_read as f64 / seconds
            );
        }
    }
}

#[tokio::test]
async fn awkward_values_reach_a_postgres_sink_through_copy_unchanged() {
    if !configured(&[Kind::Postgres]) {
        return;
    }
    let source = fresh_database(Kind::Postgres).await;
    let sink = fresh_database(Kind::Postgres).await;
    exec(
        &source,
        &[
            "CREATE TABLE src (id BIGINT PRIMARY KEY, t TEXT, f DOUBLE PRECISION, n NUMERIC, d DATE, \
             ts TIMESTAMP, tz TIMESTAMPTZ, b BYTEA, j JSONB)"
                .to_owned(),
            "INSERT INTO src VALUES \
             (1, E'tab\\there\\nnew line\\r\\\\back\\\\slash', 'NaN', 0.00000000000000000001, '0044-03-15 BC', \
              '0001-01-01 00:00:00.000001 BC', '2038-01-19 03:14:07.999999+00', '\\x5c4e0a09', \
              '{\"a\": \"\\\\N\\t\", \"b\": [1.5, null]}'), \
             (2, '\\N', '-Infinity', 1234567890123456789012.345678, '9999-12-31', '2024-02-29 23:59:59.999999', \
              '1900-01-01 00:00:00+00', '', '\"\"'), \
             (3, '', 1e-300, -0.5, NULL, NULL, NULL, NULL, NULL)"
                .to_owned(),
        ],
    )
    .await;
    let query = "SELECT id, t, f, n, d, ts, tz, b, j FROM src";
    run(&flow_to(&source, query, &sink), &mut None)
        .await
        .expect("copies");
    let debug = |rows: Vec<Vec<Cell>>| format!("{rows:?}");
    let (_, expected) = read_rows(&url(&source), &format!("{query} ORDER BY id"))
        .await
        .expect("reads the source");
    let (_, actual) = read_rows(
        &url(&sink),
        "SELECT id, t, f, n, d, ts, tz, b, j FROM dst ORDER BY id",
    )
    .await
    .expect("reads the sink");
    assert_eq!(debug(actual), debug(expected));
}

/// `(id, name)` of a sink table, in key order.
async fn pairs(db: &TestDatabase, table: &str) -> Vec<(i64, String)> {
    let (_, rows) = read_rows(&url(db), &format!("SELECT id, name FROM {table} ORDER BY id"))
        .await
        .expect("reads the sink");
    rows.into_iter()
        .map(|row| match row.as_slice() {
            [Cell::I64(id), Cell::Text(name)] => (*id, name.clone()),
            other => panic!("unexpected row {other:?}"),
        })
        .collect()
}

/// PostgreSQL to PostgreSQL carries rows as COPY text it never decodes, so a key repeated in a batch,
/// or met again in a later batch of a table the run created, is found by the sink; either way the last
/// row of a key wins, as on every other pair.
#[tokio::test]
async fn postgres_to_postgres_keeps_the_last_row_of_a_repeated_key() {
    if !configured(&[Kind::Postgres]) {
        return;
    }
    let source = fresh_database(Kind::Postgres).await;
    let sink = fresh_database(Kind::Postgres).await;
    exec(
        &source,
        &[
            "CREATE TABLE src (seq INT, id BIGINT, name TEXT)".to_owned(),
            // Batches of 3: a repeat within the first and the second, and the second repeats a key of
            // the first.
            "INSERT INTO src VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 1, 'c'), (4, 3, 'd'), (5, 3, 'e'), \
             (6, 2, 'f')"
                .to_owned(),
            // Only across batches: the first batch goes straight into the new table, the second meets
            // its key.
            "CREATE TABLE src2 (seq INT, id BIGINT, name TEXT)".to_owned(),
            "INSERT INTO src2 VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 2, 'c'), (4, 3, 'd')".to_owned(),
        ],
    )
    .await;
    let copy = |query: &str, table: &str| {
        flow(json!({
            "source": url(&source), "query": query, "sink": url(&sink),
            "table": table, "key": ["id"], "create_table": true, "batch_size": 3,
        }))
    };
    let within = copy("SELECT id, name FROM src ORDER BY seq", "dst");
    for attempt in ["into a new table", "into the full table"] {
        let (summary, output) = run(&within, &mut None).await.expect(attempt);
        assert_eq!(summary.rows_read, 6, "{attempt}: {output}");
        assert_eq!(summary.batches, 2, "{attempt}: {output}");
        assert_eq!(
            pairs(&sink, "dst").await,
            [(1, "c".to_owned()), (2, "f".to_owned()), (3, "e".to_owned())],
            "{attempt}"
        );
    }
    let across = copy("SELECT id, name FROM src2 ORDER BY seq", "dst2");
    run(&across, &mut None).await.expect("copies");
    assert_eq!(
        pairs(&sink, "dst2").await,
        [(1, "a".to_owned()), (2, "c".to_owned()), (3, "d".to_owned())]
    );
}

/// The cursor reached is read from the COPY text of PostgreSQL to PostgreSQL: it is stored as the
/// decoded path stores it, and the next run starts from it.
#[tokio::test]
async fn postgres_to_postgres_cursors_of_each_type_resume_where_they_stopped() {
    if !configured(&[Kind::Postgres]) {
        return;
    }
    let source = fresh_database(Kind::Postgres).await;
    let sink = fresh_database(Kind::Postgres).await;
    exec(
        &source,
        &[
            "CREATE TABLE src (id BIGINT PRIMARY KEY, name TEXT, tz TIMESTAMPTZ, ts TIMESTAMP, d DATE, \
             n NUMERIC, f DOUBLE PRECISION)"
                .to_owned(),
            "INSERT INTO src VALUES \
             (1, E'a\\tb', '2024-01-01 10:00:00.000001+02', '2024-01-01 10:00:00.5', '2024-01-01', 1.5, 0.25), \
             (2, E'a\\\\z\\nq', '2024-01-01 10:00:05.25+00', '2024-01-01 10:00:05', '2024-01-02', 2.75, 0.5), \
             (3, NULL, NULL, NULL, NULL, NULL, NULL)"
                .to_owned(),
        ],
    )
    .await;
    let cases = [
        ("name", json!({"type": "text", "value": "a\\z\nq"})),
        (
            "tz",
            json!({"type": "timestamptz", "value": "2024-01-01T10:00:05.250000Z"}),
        ),
        (
            "ts",
            json!({"type": "timestamp", "value": "2024-01-01T10:00:05.000000"}),
        ),
        ("d", json!({"type": "date", "value": "2024-01-02"})),
        ("n", json!({"type": "decimal", "value": "2.75"})),
        ("f", json!({"type": "f64", "value": 0.5})),
    ];
    for (column, cursor) in cases {
        let flow = flow(json!({
            "source": url(&source), "query": "SELECT id, name, tz, ts, d, n, f FROM src",
            "sink": url(&sink), "table": format!("dst_{column}"), "key": ["id"], "cursor": column,
            "create_table": true, "batch_size": 2,
        }));
        let mut state = None;
        let (summary, output) = run(&flow, &mut state).await.expect(column);
        assert_eq!(summary.rows_read, 3, "{column}: {output}");
        assert_eq!(
            state,
            Some(json!({"column": column, "cursor": cursor})),
            "{column}"
        );
        // The NULL row sorts last and is read again; row 2 is at the cursor.
        let (summary, output) = run(&flow, &mut state).await.expect(column);
        assert_eq!(
            summary.rows_read, 1,
            "{column}: only the row at the cursor: {output}"
        );
        assert_eq!(
            state,
            Some(json!({"column": column, "cursor": cursor})),
            "{column}"
        );
    }
}
