//! The server's scheduler: a tick never waits for running flows, a heartbeat's runs outlive a client that
//! hangs up, and `/healthz` reports whether scheduler cycles are completing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowrun_app::{App, MigratePolicy, Settings, builtin_registry};
use flowrun_domain::{FlowName, NewDataFlow, RunFilter, RunRecord, RunStatus, Schedule};
use flowrun_server::routes::Tick;
use flowrun_server::{Security, router};
use flowrun_test_support::{Kind, TestDatabase, fresh_database, fresh_databases};
use serde_json::{Value, json};

async fn app_on(db: &TestDatabase) -> App {
    App::open(
        &Settings::new(db.url.clone()),
        builtin_registry(),
        MigratePolicy::Always,
    )
    .await
    .expect("open")
}

async fn create(app: &App, name: &str, configuration: Value, every_secs: i64) {
    let new = NewDataFlow::new(
        FlowName::parse(name).expect("name"),
        "",
        true,
        configuration,
        Schedule::every_secs(every_secs).expect("interval"),
    )
    .expect("valid");
    app.flows.create(new, app.clock.now()).await.expect("created");
}

async fn runs_of(app: &App, name: &str) -> Vec<RunRecord> {
    let flow = app.flows.find_by_name(name).await.expect("query").expect("flow");
    app.runs
        .list_runs(RunFilter {
            data_flow_id: Some(flow.id),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("runs")
}

/// One request without a body on its own connection; the status and the JSON body.
fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    request(addr, "GET", path)
}

fn post(addr: SocketAddr, path: &str) -> (u16, Value) {
    request(addr, "POST", path)
}

/// The server binary on `db` with a scheduler tick; returns it with the address it listens on.
fn start_server(db: &TestDatabase, tick_secs: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowrun-server"))
        .env("DATABASE_URL", &db.url)
        .env("FLOWRUN_BIND", "127.0.0.1:0")
        .env("FLOWRUN_TICK_SECS", tick_secs)
        .env("FLOWRUN_SHUTDOWN_GRACE_SECS", "1")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        assert!(Instant::now() < deadline, "the server did not start");
        let line = lines.next().expect("the server's log").expect("a log line");
        if let Some(at) = line.find("listening on ") {
            let addr = line[at + "listening on ".len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default();
            break addr.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

fn stop(mut child: Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fast_flow_keeps_its_rate_beside_a_long_one() {
    // Seen on the old scheduler: a cycle waited for every flow it started, so `fast` (every 1 s) ran twice
    // in 21 s beside a 20 s `slow`.
    for db in fresh_databases().await {
        let k = db.kind.name();
        let app = app_on(&db).await;
        create(&app, "slow", json!({"class_name": "Sleep", "seconds": 30}), 3600).await;
        create(&app, "fast", json!("Noop"), 1).await;
        let (server, addr) = start_server(&db, "0.25");
        let began = Instant::now();
        tokio::time::sleep(Duration::from_millis(4500)).await;
        let (status, health) = tokio::task::spawn_blocking(move || get(addr, "/healthz"))
            .await
            .expect("joined");
        stop(server);
        let watched = began.elapsed().as_secs_f64();
        let fast = runs_of(&app, "fast").await;
        let succeeded = fast.iter().filter(|r| r.run.status == RunStatus::Success).count();
        assert!(
            succeeded >= 4,
            "{k}: `fast` ran {succeeded} times in {watched:.1} s beside `slow`: {fast:#?}"
        );
        assert_eq!(runs_of(&app, "slow").await.len(), 1, "{k}: `slow` ran once");
        assert_eq!(status, 200, "{k}: {health}");
        assert_eq!(health["scheduler"]["state"], "ok", "{k}: {health}");
        assert!(health["scheduler"]["last_cycle_at"].is_string(), "{k}: {health}");
        assert_eq!(
            health["scheduler"]["running"], 1,
            "{k}: `slow` holds one slot: {health}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_heartbeat_client_that_hangs_up_at_once_does_not_cancel_the_flows_it_started() {
    // Seen on the old server: `curl -m 1` against a 5 s flow dropped the handler and the flow with it; the
    // run stayed `in_progress` until it was reaped as abandoned.
    for db in fresh_databases().await {
        let k = db.kind.name();
        let app = app_on(&db).await;
        create(
            &app,
            "two-seconds",
            json!({"class_name": "Sleep", "seconds": 2}),
            3600,
        )
        .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = app.clone();
        tokio::spawn(async move {
            let service =
                router(served, Security::default()).into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service).await.expect("serve");
        });
        tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect(addr).expect("connect");
            write!(
                stream,
                "POST /data_flows/heartbeat HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
            )
            .expect("send");
            // Long enough for the server to start the cycle, far shorter than the flow; then hang up as a
            // client with a timeout does.
            std::thread::sleep(Duration::from_millis(300));
            stream.shutdown(std::net::Shutdown::Both).expect("hang up");
        })
        .await
        .expect("joined");
        let deadline = Instant::now() + Duration::from_secs(15);
        let runs = loop {
            let runs = runs_of(&app, "two-seconds").await;
            if runs.iter().any(|r| r.run.status.is_terminal()) || Instant::now() > deadline {
                break runs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(runs.len(), 1, "{k}: {runs:#?}");
        assert_eq!(runs[0].run.status, RunStatus::Success, "{k}: {runs:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_is_503_when_the_schedulers_cycles_stopped_completing() {
    let db = fresh_database(Kind::Sqlite).await;
    let app = app_on(&db).await;
    let tick = Tick {
        every: Duration::from_millis(100),
        since: Instant::now() - Duration::from_secs(60),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = app.clone();
    tokio::spawn(async move {
        let service = router(served, Security::default())
            .layer(axum::Extension(tick))
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.expect("serve");
    });
    let health = || async move {
        tokio::task::spawn_blocking(move || get(addr, "/healthz"))
            .await
            .expect("joined")
    };
    let (status, body) = health().await;
    assert_eq!(
        (status, body["scheduler"]["state"].as_str()),
        (503, Some("stale")),
        "{body}"
    );
    assert_eq!(body["database"], "ok", "{body}");
    app.scheduler.dispatch().await.expect("a cycle");
    let (status, body) = health().await;
    assert_eq!(
        (status, body["scheduler"]["state"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let (status, body) = health().await;
    assert_eq!(status, 503, "no cycle for longer than the tick allows: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_now_and_cancel_over_http() {
    for db in fresh_databases().await {
        let k = db.kind.name();
        let app = app_on(&db).await;
        create(&app, "long", json!({"class_name": "Sleep", "seconds": 60}), 3600).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = app.clone();
        tokio::spawn(async move {
            let service =
                router(served, Security::default()).into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service).await.expect("serve");
        });
        let call = |path: String| async move {
            tokio::task::spawn_blocking(move || post(addr, &path))
                .await
                .expect("joined")
        };
        let (status, body) = call("/data_flows/long/run".to_owned()).await;
        assert_eq!(status, 202, "{k}: {body}");
        let run_id = body["run_id"].as_i64().expect("a run id");
        let runs = runs_of(&app, "long").await;
        assert_eq!(runs.len(), 1, "{k}: the run appears at once");
        assert_eq!(runs[0].run.trigger.as_str(), "api", "{k}");
        let (status, busy) = call("/data_flows/long/run".to_owned()).await;
        assert_eq!(
            (status, busy["run_id"].as_i64()),
            (409, Some(run_id)),
            "{k}: {busy}"
        );
        assert_eq!(call("/data_flows/missing/run".to_owned()).await.0, 404, "{k}");

        tokio::time::sleep(Duration::from_millis(300)).await;
        let asked = Instant::now();
        let path = format!("/runs/{run_id}/cancel");
        let (status, body) = call(path.clone()).await;
        assert_eq!(status, 202, "{k}: {body}");
        assert!(
            body["cancel_requested_by"]
                .as_str()
                .unwrap_or_default()
                .starts_with("http 127.0.0.1"),
            "{k}: {body}"
        );
        let run = loop {
            let run = runs_of(&app, "long").await.remove(0).run;
            if run.status.is_terminal() || asked.elapsed() > Duration::from_secs(10) {
                break run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{k}: stopped after {:?}",
            asked.elapsed()
        );
        assert_eq!(
            (run.status, run.failure_kind.map(|kind| kind.as_str())),
            (RunStatus::Failed, Some("cancelled")),
            "{k}: {run:?}"
        );
        let (status, body) = call(path).await;
        assert_eq!(status, 409, "{k}: a finished run cannot be cancelled: {body}");
        assert_eq!(call("/runs/999999/cancel".to_owned()).await.0, 404, "{k}");
    }
}
