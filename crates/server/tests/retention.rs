//! `FLOWRUN_RETENTION`: the server prunes finished runs older than it shortly after start, and refuses an
//! invalid value with one line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flowrun_app::{App, MigratePolicy, Settings, builtin_registry};
use flowrun_domain::CreateFlow;
use flowrun_server::retention::{parse_retention, retention_loop};
use flowrun_test_support::{Kind, fresh_database};
use tokio::sync::watch;

/// An app on a fresh SQLite file with flow `f` run twice.
async fn app_with_two_runs() -> (flowrun_test_support::TestDatabase, App) {
    let db = fresh_database(Kind::Sqlite).await;
    let app = App::open(
        &Settings::new(db.url.clone()),
        builtin_registry(),
        MigratePolicy::Always,
    )
    .await
    .expect("open");
    let flow = app
        .management
        .create(CreateFlow {
            name: "f".into(),
            class: "Noop".into(),
            settings: None,
            schedule: None,
            description: String::new(),
            enabled: false,
            timeout: None,
            retry: flowrun_domain::RetryPolicy::NONE,
        })
        .await
        .expect("created");
    for _ in 0..2 {
        app.executor.execute(&flow).await.expect("ran");
    }
    (db, app)
}

async fn runs_left(app: &App) -> u64 {
    let flow = app.management.find("f").await.expect("flow");
    app.runs.count_runs(flow.id).await.expect("count")
}

#[test]
fn retention_values_are_durations() {
    assert_eq!(parse_retention("30d"), Ok(Duration::from_secs(30 * 86_400)));
    assert_eq!(parse_retention("90"), Ok(Duration::from_secs(90)));
    for bad in ["", "soon", "0", "-1d", "1000y"] {
        let error = parse_retention(bad).expect_err(bad);
        assert!(error.starts_with("invalid FLOWRUN_RETENTION"), "{error}");
    }
}

#[tokio::test]
async fn the_retention_task_prunes_old_runs_and_stops_when_told() {
    let (_db, app) = app_with_two_runs().await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (stop_sender, stop) = watch::channel(false);
    let task = tokio::spawn(retention_loop(
        app.management.clone(),
        Duration::from_secs(1),
        Duration::from_millis(10),
        Duration::from_secs(3600),
        stop,
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs_left(&app).await > 0 {
        assert!(Instant::now() < deadline, "the runs were never pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_sender.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task stops at once")
        .expect("no panic");
}

/// Starts the server binary and returns its exit code (killed after `within`) and its stderr lines.
fn server(database_url: &str, retention: &str, until: &str, within: Duration) -> (Option<i32>, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowrun-server"))
        .env("DATABASE_URL", database_url)
        .env("FLOWRUN_BIND", "127.0.0.1:0")
        .env("FLOWRUN_RETENTION", retention)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("FLOWRUN_TICK_SECS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let stderr = child.stderr.take().expect("stderr");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(50)) {
            let done = line.contains(until);
            seen.push(line);
            if done {
                break;
            }
        }
        if child.try_wait().expect("status").is_some() || Instant::now() > deadline {
            break;
        }
    }
    let _ = child.kill();
    let code = child.wait().expect("exit").code();
    while let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
        seen.push(line);
    }
    (code, seen)
}

#[test]
fn an_invalid_retention_stops_the_server_with_one_line() {
    let dir = tempfile_dir();
    let url = format!("sqlite://{}/flowrun.db?mode=rwc", dir.display());
    let (code, seen) = server(&url, "a month", "never printed", Duration::from_secs(20));
    assert_eq!(code, Some(1), "{seen:#?}");
    assert_eq!(seen.len(), 1, "one line: {seen:#?}");
    assert!(
        seen[0].contains("invalid FLOWRUN_RETENTION `a month`"),
        "{seen:#?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flowrun_retention_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[tokio::test]
async fn the_server_prunes_shortly_after_start() {
    let (db, app) = app_with_two_runs().await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let url = db.url.clone();
    let (_, seen) = tokio::task::spawn_blocking(move || {
        server(&url, "1s", "retention: deleted", Duration::from_secs(60))
    })
    .await
    .expect("joined");
    assert!(
        seen.iter()
            .any(|l| l.contains("retention: deleted 2 finished runs older than 1s")),
        "{seen:#?}"
    );
    assert_eq!(runs_left(&app).await, 0);
}
