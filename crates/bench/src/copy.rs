//! `flowrun-bench --copy --source URL --sink URL [--rows N]`: SqlCopy's rows/s and peak memory for one
//! source→sink pair, beside two floors.
//!
//! The source table `flowrun_bench_src` (id, text, exact decimal, timestamp with time zone, JSON) is
//! generated inside the source database, and kept while it holds exactly `--rows` rows, so that one source
//! serves every sink. SqlCopy then copies it into `flowrun_bench_dst` (dropped first, created by
//! `create_table`, upserted on `id`), as a `flowrun run` would. The floors:
//! - `insert_select`: PostgreSQL's own `INSERT INTO … SELECT` from the source database into the sink
//!   database, through `postgres_fdw` and through `dblink` (the faster counts), when both are PostgreSQL;
//! - `row_by_row`: the same driver (sqlx) reading the first `--row-by-row-rows` rows and writing each with
//!   its own `INSERT` (autocommit), as a naive copy would.
//!
//! The peak resident set size (`VmHWM`) is read right after the copy, before the floors run.

use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use flowrun_domain::{FlowClass, FlowName, RunContext};
use flowrun_flows::sql_copy::{SqlCopy, SqlCopySettings};
use serde::Serialize;
use serde_json::json;
use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};

use crate::report::peak_rss_mb;

/// The generated source table.
pub const SOURCE_TABLE: &str = "flowrun_bench_src";
/// The table SqlCopy writes.
pub const SINK_TABLE: &str = "flowrun_bench_dst";
/// The table the `INSERT … SELECT` floor writes.
const FLOOR_TABLE: &str = "flowrun_bench_floor";
/// The table the row-by-row floor writes.
const ROWS_TABLE: &str = "flowrun_bench_rows";

/// The command line of `flowrun-bench --copy`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "flowrun-bench --copy",
    about = "SqlCopy rows/s and peak memory beside INSERT … SELECT and a row-by-row copy"
)]
pub struct CopyOptions {
    /// Selects this mode.
    #[arg(long)]
    pub copy: bool,
    /// The source database (`postgres://…`, `mysql://…`, `sqlite://path`).
    #[arg(long)]
    pub source: String,
    /// The sink database.
    #[arg(long)]
    pub sink: String,
    /// Rows in the generated source table.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub rows: u64,
    /// SqlCopy's `batch_size` (default: SqlCopy's own).
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// Rows the row-by-row floor copies (0: skip it). A sample: each row is a commit, so on a server that
    /// syncs every commit this floor runs at a few hundred rows/s.
    #[arg(long, default_value_t = 5_000)]
    pub row_by_row_rows: u64,
    /// Skip the `INSERT … SELECT` floor.
    #[arg(long)]
    pub no_insert_select: bool,
    /// Copy once unmeasured, then measure a second copy into the table the first one filled: every row
    /// meets its key, so each batch is merged (an upsert's update path) instead of loaded.
    #[arg(long)]
    pub again: bool,
}

/// The one JSON line `--copy` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    /// `copy`.
    pub mode: &'static str,
    /// `postgres`, `mysql` or `sqlite`.
    pub source: &'static str,
    /// As `source`.
    pub sink: &'static str,
    /// Rows SqlCopy copied.
    pub rows: u64,
    /// SqlCopy's batch size.
    pub batch_size: usize,
    /// How long the copy took, connections included.
    pub seconds: f64,
    /// `rows / seconds`.
    pub rows_per_sec: f64,
    /// The bench process's peak resident set size after the copy, in MiB.
    pub peak_rss_mb: Option<f64>,
    /// The `INSERT … SELECT` floor's rows/s (PostgreSQL to PostgreSQL only; with `--again`, an upsert over the
    /// rows it inserted first).
    pub insert_select_rows_per_sec: Option<f64>,
    /// Which extension gave that floor: `postgres_fdw` or `dblink`.
    pub insert_select_via: Option<&'static str>,
    /// Rows the row-by-row floor copied.
    pub row_by_row_rows: u64,
    /// The row-by-row floor's rows/s.
    pub row_by_row_rows_per_sec: Option<f64>,
    /// `rows_per_sec / insert_select_rows_per_sec`.
    pub vs_insert_select: Option<f64>,
    /// `rows_per_sec / row_by_row_rows_per_sec`.
    pub vs_row_by_row: Option<f64>,
    /// Whether the measured copy went into a full table (`--again`).
    pub again: bool,
}

/// Parses the command line (which holds `--copy`), runs the benchmark and prints its line.
pub async fn main() -> std::process::ExitCode {
    let options = CopyOptions::parse();
    match run(&options).await {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(line) => {
                println!("{line}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("flowrun-bench: cannot print the report: {error}");
                std::process::ExitCode::from(2)
            }
        },
        Err(error) => {
            eprintln!("flowrun-bench: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Runs the copy benchmark.
pub async fn run(options: &CopyOptions) -> anyhow::Result<CopyReport> {
    let mut source = Db::connect(&options.source).await.context("the source")?;
    let mut sink = Db::connect(&options.sink).await.context("the sink")?;
    source.ensure_source(options.rows).await?;
    sink.exec(&format!("DROP TABLE IF EXISTS {SINK_TABLE}")).await?;

    let settings: SqlCopySettings = serde_json::from_value(json!({
        "source": options.source,
        "query": format!("SELECT id, name, amount, at, doc FROM {SOURCE_TABLE}"),
        "sink": options.sink,
        "table": SINK_TABLE,
        "key": ["id"],
        "batch_size": options.batch_size,
        "create_table": true,
    }))?;
    let flow = SqlCopy::build(settings).map_err(anyhow::Error::msg)?;
    let mut context = RunContext::detached(FlowName::parse("bench-copy")?);
    if options.again {
        flow.copy(&mut context)
            .await
            .context("SqlCopy's first copy failed")?;
        context = RunContext::detached(FlowName::parse("bench-copy")?);
    }
    // Start the peak from here: what the bench did before (generating the source) does not count.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let summary = flow.copy(&mut context).await.context("SqlCopy failed")?;
    let seconds = started.elapsed().as_secs_f64();
    let peak = peak_rss_mb().map(|mb| round(mb, 1));
    let copied = sink.count(SINK_TABLE).await?;
    if copied != options.rows || summary.rows_read != options.rows {
        bail!(
            "SqlCopy read {} rows and the sink holds {copied}, not {}",
            summary.rows_read,
            options.rows
        );
    }
    let rows_per_sec = options.rows as f64 / seconds;

    let insert_select = match (&mut sink, options.no_insert_select) {
        (Db::Postgres(pg), false) if source.kind() == "postgres" => {
            Some(insert_select_floor(pg, &options.source, options.rows, options.again).await?)
        }
        _ => None,
    };
    let row_by_row = if options.row_by_row_rows > 0 {
        let n = options.row_by_row_rows.min(options.rows);
        Some(row_by_row_floor(&mut source, &mut sink, n).await?)
    } else {
        None
    };
    Ok(CopyReport {
        mode: "copy",
        source: source.kind(),
        sink: sink.kind(),
        rows: options.rows,
        batch_size: options.batch_size,
        seconds: round(seconds, 3),
        rows_per_sec: round(rows_per_sec, 0),
        peak_rss_mb: peak,
        insert_select_rows_per_sec: insert_select.map(|(r, _)| round(r, 0)),
        insert_select_via: insert_select.map(|(_, via)| via),
        row_by_row_rows: row_by_row.map_or(0, |_| options.row_by_row_rows.min(options.rows)),
        row_by_row_rows_per_sec: row_by_row.map(|r| round(r, 0)),
        vs_insert_select: insert_select.map(|(r, _)| round(rows_per_sec / r, 2)),
        vs_row_by_row: row_by_row.map(|r| round(rows_per_sec / r, 1)),
        again: options.again,
    })
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// `INSERT INTO floor SELECT * FROM <the source table, in the other database>`, through `postgres_fdw` and
/// through `dblink` where each is installable; the faster one's rows/s. `again`: the same as an upsert
/// (`… ON CONFLICT (id) DO UPDATE`) into the floor table after it was filled, as `--again` measures SqlCopy.
async fn insert_select_floor(
    sink: &mut PgConnection,
    source_url: &str,
    rows: u64,
    again: bool,
) -> anyhow::Result<(f64, &'static str)> {
    let url = url::Url::parse(source_url).context("the source URL")?;
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(5432);
    let dbname = url.path().trim_start_matches('/');
    let user = if url.username().is_empty() {
        "postgres"
    } else {
        url.username()
    };
    let password = url.password().unwrap_or_default();
    let quote = |text: &str| text.replace('\'', "''");
    let columns = "id BIGINT, name TEXT, amount NUMERIC(20,6), at TIMESTAMPTZ, doc JSONB";
    let mut best: Option<(f64, &'static str)> = None;

    let fdw = [
        "CREATE EXTENSION IF NOT EXISTS postgres_fdw".to_owned(),
        "DROP SERVER IF EXISTS flowrun_bench_source CASCADE".to_owned(),
        format!(
            "CREATE SERVER flowrun_bench_source FOREIGN DATA WRAPPER postgres_fdw \
             OPTIONS (host '{}', port '{port}', dbname '{}', fetch_size '10000')",
            quote(host),
            quote(dbname)
        ),
        format!(
            "CREATE USER MAPPING FOR CURRENT_USER SERVER flowrun_bench_source \
             OPTIONS (user '{}'{})",
            quote(user),
            if password.is_empty() {
                String::new()
            } else {
                format!(", password '{}'", quote(password))
            }
        ),
        format!(
            "CREATE FOREIGN TABLE flowrun_bench_remote ({columns}) SERVER flowrun_bench_source \
             OPTIONS (table_name '{SOURCE_TABLE}')"
        ),
    ];
    if exec_all(sink, &fdw).await.is_ok() {
        let rate = timed_insert(
            sink,
            columns,
            "SELECT id, name, amount, at, doc FROM flowrun_bench_remote",
            rows,
            again,
        )
        .await?;
        best = Some((rate, "postgres_fdw"));
    }
    exec_all(
        sink,
        &["DROP SERVER IF EXISTS flowrun_bench_source CASCADE".to_owned()],
    )
    .await?;

    let mut conninfo = format!("host={host} port={port} dbname={dbname} user={user}");
    if !password.is_empty() {
        conninfo.push_str(&format!(" password={password}"));
    }
    if exec_all(sink, &["CREATE EXTENSION IF NOT EXISTS dblink".to_owned()])
        .await
        .is_ok()
    {
        let select = format!(
            "SELECT * FROM dblink('{}', 'SELECT id, name, amount, at, doc FROM {SOURCE_TABLE}') AS t({columns})",
            quote(&conninfo)
        );
        let rate = timed_insert(sink, columns, &select, rows, again).await?;
        if best.is_none_or(|(b, _)| rate > b) {
            best = Some((rate, "dblink"));
        }
    }
    exec_all(sink, &[format!("DROP TABLE IF EXISTS {FLOOR_TABLE}")]).await?;
    best.context("neither postgres_fdw nor dblink can be installed in the sink database")
}

/// Creates the floor table afresh and times `INSERT INTO it <select>`; rows/s. `again`: fills it first,
/// untimed, and times the same rows upserted over it.
async fn timed_insert(
    sink: &mut PgConnection,
    columns: &str,
    select: &str,
    rows: u64,
    again: bool,
) -> anyhow::Result<f64> {
    exec_all(
        sink,
        &[
            format!("DROP TABLE IF EXISTS {FLOOR_TABLE}"),
            format!("CREATE TABLE {FLOOR_TABLE} ({columns}, PRIMARY KEY (id))"),
        ],
    )
    .await?;
    let insert = format!("INSERT INTO {FLOOR_TABLE} {select}");
    let statement = if again {
        sink.execute(AssertSqlSafe(insert.clone()))
            .await
            .context("filling the INSERT … SELECT floor")?;
        format!(
            "{insert} ON CONFLICT (id) DO UPDATE SET name = excluded.name, amount = excluded.amount, \
             at = excluded.at, doc = excluded.doc"
        )
    } else {
        insert
    };
    let started = Instant::now();
    let done = sink
        .execute(AssertSqlSafe(statement))
        .await
        .context("the INSERT … SELECT floor")?;
    let seconds = started.elapsed().as_secs_f64();
    if done.rows_affected() != rows {
        bail!(
            "the INSERT … SELECT floor wrote {} rows, not {rows}",
            done.rows_affected()
        );
    }
    Ok(rows as f64 / seconds)
}

async fn exec_all(conn: &mut PgConnection, statements: &[String]) -> anyhow::Result<()> {
    for statement in statements {
        conn.execute(AssertSqlSafe(statement.clone()))
            .await
            .with_context(|| statement.clone())?;
    }
    Ok(())
}

/// One row of the generated table, as the row-by-row floor carries it.
type Row = (
    i64,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
);

/// Reads the first `n` rows with the same driver and writes each with its own INSERT (autocommit); rows/s.
async fn row_by_row_floor(source: &mut Db, sink: &mut Db, n: u64) -> anyhow::Result<f64> {
    sink.exec(&format!("DROP TABLE IF EXISTS {ROWS_TABLE}")).await?;
    sink.exec(&sink.create_table(ROWS_TABLE)).await?;
    let started = Instant::now();
    let rows = source.first_rows(n).await?;
    sink.insert_each(&rows).await?;
    let seconds = started.elapsed().as_secs_f64();
    let written = sink.count(ROWS_TABLE).await?;
    sink.exec(&format!("DROP TABLE {ROWS_TABLE}")).await?;
    if written != n {
        bail!("the row-by-row floor wrote {written} rows, not {n}");
    }
    Ok(n as f64 / seconds)
}

/// A connection to one of the three backends.
enum Db {
    Postgres(PgConnection),
    MySql(MySqlConnection),
    Sqlite(SqliteConnection),
}

impl Db {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default().to_ascii_lowercase();
        Ok(match scheme.as_str() {
            "postgres" | "postgresql" => Self::Postgres(PgConnection::connect(url).await?),
            "mysql" | "mariadb" => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                Self::MySql(MySqlConnection::connect(&url).await?)
            }
            "sqlite" => Self::Sqlite(
                SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .connect()
                    .await?,
            ),
            other => bail!("unsupported database `{other}` (postgres, mysql, mariadb or sqlite)"),
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::MySql(_) => "mysql",
            Self::Sqlite(_) => "sqlite",
        }
    }

    async fn exec(&mut self, statement: &str) -> anyhow::Result<()> {
        let q = AssertSqlSafe(statement.to_owned());
        match self {
            Self::Postgres(c) => c.execute(q).await.map(drop),
            Self::MySql(c) => c.execute(q).await.map(drop),
            Self::Sqlite(c) => c.execute(q).await.map(drop),
        }
        .with_context(|| statement.to_owned())
    }

    async fn count(&mut self, table: &str) -> anyhow::Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let n: i64 = match self {
            Self::Postgres(c) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(c).await,
            Self::MySql(c) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(c).await,
            Self::Sqlite(c) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(c).await,
        }
        .with_context(|| format!("counting the rows of {table}"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// `CREATE TABLE` for the generated shape in this backend's types.
    fn create_table(&self, table: &str) -> String {
        let types = match self {
            Self::Postgres(_) => {
                "id BIGINT PRIMARY KEY, name TEXT, amount NUMERIC(20,6), at TIMESTAMPTZ, doc JSONB"
            }
            Self::MySql(_) => {
                "id BIGINT PRIMARY KEY, name LONGTEXT, amount DECIMAL(20,6), \
                 at TIMESTAMP(6) NULL DEFAULT NULL, doc JSON"
            }
            Self::Sqlite(_) => {
                "id INTEGER PRIMARY KEY, name TEXT, amount DECIMAL_TEXT, at TIMESTAMPTZ, doc JSON_TEXT"
            }
        };
        format!("CREATE TABLE {table} ({types})")
    }

    /// Generates the source table unless it already holds exactly `rows` rows. Row `g`: `name g`, the
    /// amount `g × 1.000001`, the time 2024-01-01 plus `g × 1.000001` seconds, `{"id": g, "tag": "x"}`.
    async fn ensure_source(&mut self, rows: u64) -> anyhow::Result<()> {
        if self.count(SOURCE_TABLE).await.ok() == Some(rows) {
            return Ok(());
        }
        self.exec(&format!("DROP TABLE IF EXISTS {SOURCE_TABLE}")).await?;
        self.exec(&self.create_table(SOURCE_TABLE)).await?;
        const CHUNK: u64 = 100_000;
        let mut first = 1;
        while first <= rows {
            let last = (first + CHUNK - 1).min(rows);
            let insert = match self {
                Self::Postgres(_) => format!(
                    "INSERT INTO {SOURCE_TABLE} SELECT g, 'name ' || g, g + 0.000001 * g, \
                     timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' + g * interval '1 microsecond', \
                     jsonb_build_object('id', g, 'tag', 'x') FROM generate_series({first}, {last}) AS g"
                ),
                Self::MySql(_) => {
                    let digits = "(SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                                  UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                                  UNION ALL SELECT 8 UNION ALL SELECT 9)";
                    format!(
                        "INSERT INTO {SOURCE_TABLE} SELECT g, CONCAT('name ', g), g + 0.000001 * g, \
                         TIMESTAMPADD(MICROSECOND, g * 1000001, TIMESTAMP '2024-01-01 00:00:00'), \
                         JSON_OBJECT('id', g, 'tag', 'x') FROM (SELECT {first} + a.n + 10 * b.n + 100 * c.n \
                         + 1000 * d.n + 10000 * e.n AS g FROM {digits} a CROSS JOIN {digits} b CROSS JOIN \
                         {digits} c CROSS JOIN {digits} d CROSS JOIN {digits} e) AS s WHERE g <= {last}"
                    )
                }
                Self::Sqlite(_) => format!(
                    "WITH RECURSIVE s(g) AS (SELECT {first} UNION ALL SELECT g + 1 FROM s WHERE g < {last}) \
                     INSERT INTO {SOURCE_TABLE} SELECT g, 'name ' || g, \
                     printf('%d.%06d', (g * 1000001) / 1000000, (g * 1000001) % 1000000), \
                     strftime('%Y-%m-%d %H:%M:%S', 1704067200 + (g * 1000001) / 1000000, 'unixepoch') \
                     || printf('.%06d+00:00', (g * 1000001) % 1000000), \
                     json_object('id', g, 'tag', 'x') FROM s"
                ),
            };
            self.exec(&insert).await?;
            first = last + 1;
        }
        Ok(())
    }

    /// The first `n` rows of the source table, decimals and JSON as text.
    async fn first_rows(&mut self, n: u64) -> anyhow::Result<Vec<Row>> {
        let rows = match self {
            Self::Postgres(c) => {
                let sql = format!(
                    "SELECT id, name, amount::text, at, doc::text FROM {SOURCE_TABLE} ORDER BY id LIMIT {n}"
                );
                sqlx::query_as(AssertSqlSafe(sql)).fetch_all(c).await
            }
            Self::MySql(c) => {
                let sql = format!(
                    "SELECT id, name, CAST(amount AS CHAR), at, CAST(doc AS CHAR) FROM {SOURCE_TABLE} \
                     ORDER BY id LIMIT {n}"
                );
                sqlx::query_as(AssertSqlSafe(sql)).fetch_all(c).await
            }
            Self::Sqlite(c) => {
                let sql =
                    format!("SELECT id, name, amount, at, doc FROM {SOURCE_TABLE} ORDER BY id LIMIT {n}");
                sqlx::query_as(AssertSqlSafe(sql)).fetch_all(c).await
            }
        };
        rows.context("reading the source rows")
    }

    /// One INSERT per row, each its own transaction.
    async fn insert_each(&mut self, rows: &[Row]) -> anyhow::Result<()> {
        let context = || format!("inserting into {ROWS_TABLE}");
        match self {
            Self::Postgres(c) => {
                let sql = format!("INSERT INTO {ROWS_TABLE} VALUES ($1, $2, $3::numeric, $4, $5::jsonb)");
                for (id, name, amount, at, doc) in rows {
                    sqlx::query(AssertSqlSafe(sql.clone()))
                        .bind(id)
                        .bind(name)
                        .bind(amount)
                        .bind(at)
                        .bind(doc)
                        .execute(&mut *c)
                        .await
                        .with_context(context)?;
                }
            }
            Self::MySql(c) => {
                let sql = format!("INSERT INTO {ROWS_TABLE} VALUES (?, ?, ?, ?, ?)");
                for (id, name, amount, at, doc) in rows {
                    sqlx::query(AssertSqlSafe(sql.clone()))
                        .bind(id)
                        .bind(name)
                        .bind(amount)
                        .bind(at)
                        .bind(doc)
                        .execute(&mut *c)
                        .await
                        .with_context(context)?;
                }
            }
            Self::Sqlite(c) => {
                let sql = format!("INSERT INTO {ROWS_TABLE} VALUES (?, ?, ?, ?, ?)");
                for (id, name, amount, at, doc) in rows {
                    sqlx::query(AssertSqlSafe(sql.clone()))
                        .bind(id)
                        .bind(name)
                        .bind(amount)
                        .bind(at)
                        .bind(doc)
                        .execute(&mut *c)
                        .await
                        .with_context(context)?;
                }
            }
        }
        Ok(())
    }
}
