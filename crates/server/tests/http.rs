//! The HTTP API against a real server on 127.0.0.1: routes, JSON errors, token, allow-list and
//! X-Forwarded-For handling, and the binary's start-up and graceful shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowrun_app::{App, MigratePolicy, Settings, builtin_registry};
use flowrun_domain::{FlowName, NewDataFlow, RunInterval, RunStatus};
use flowrun_server::{Security, parse_networks, router};
use flowrun_test_support::{Kind, TestDatabase, fresh_database, fresh_databases};
use serde_json::{Value, json};

struct Reply {
    status: u16,
    body: Value,
}

/// A minimal HTTP/1.1 client: one request per connection, `Connection: close`.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    let body = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {body}"));
    Reply { status, body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

async fn app_on(db: &TestDatabase) -> App {
    App::open(
        &Settings::new(db.url.clone()),
        builtin_registry(),
        MigratePolicy::Always,
    )
    .await
    .expect("open")
}

async fn create(app: &App, name: &str, configuration: Value) {
    let new = NewDataFlow::new(
        FlowName::parse(name).expect("name"),
        "",
        true,
        configuration,
        RunInterval::DEFAULT.schedule(),
    )
    .expect("valid");
    app.flows.create(new, app.clock.now()).await.expect("created");
}

async fn spawn(app: App, security: Security) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let service = router(app, security).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.expect("serve");
    });
    addr
}

async fn call(
    addr: SocketAddr,
    method: &'static str,
    path: &str,
    headers: Vec<(&'static str, String)>,
) -> Reply {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(addr, method, &path, &headers, "")
    })
    .await
    .expect("request thread")
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeat_runs_due_flows_on_every_backend() {
    for db in fresh_databases().await {
        let k = db.kind.name();
        let app = app_on(&db).await;
        create(&app, "ok", json!("Noop")).await;
        create(&app, "bad", json!({"class_name": "Fail"})).await;
        let addr = spawn(app, Security::default()).await;
        let reply = call(addr, "POST", "/data_flows/heartbeat", vec![]).await;
        assert_eq!(reply.status, 200, "{k}: {}", reply.body);
        let mut keys: Vec<&String> = reply.body.as_object().expect("object").keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "flows_due",
                "flows_failed",
                "flows_triggered",
                "runs",
                "timestamp",
                "triggered"
            ],
            "{k}"
        );
        assert_eq!(
            (
                reply.body["flows_due"].as_u64(),
                reply.body["flows_triggered"].as_u64(),
                reply.body["flows_failed"].as_u64()
            ),
            (Some(2), Some(2), Some(0)),
            "{k}: both started; how they end is not known when the heartbeat answers"
        );
        assert_eq!(reply.body["triggered"], json!(["ok", "bad"]), "{k}");
        let runs = runs_when_finished(&db, 2).await;
        let outcomes: Vec<(&str, &str)> = runs
            .iter()
            .map(|r| (r.flow_name.as_str(), r.run.status.as_str()))
            .collect();
        assert_eq!(outcomes, [("bad", "failed"), ("ok", "success")], "{k}");
    }
}

/// The runs of the database, newest first, once `count` of them have finished (waits at most 20 s).
async fn runs_when_finished(db: &TestDatabase, count: usize) -> Vec<flowrun_domain::RunRecord> {
    let observer = app_on(db).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let runs = observer
            .runs
            .list_runs(flowrun_domain::RunFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("runs");
        if runs.iter().filter(|r| r.run.status.is_terminal()).count() >= count {
            return runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runs did not finish: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_routes_answer_json_and_errors_are_json_too() {
    let db = fresh_database(Kind::Sqlite).await;
    let app = app_on(&db).await;
    create(&app, "daily report", json!({"class_name": "Noop"})).await;
    let flow = app
        .flows
        .find_by_name("daily report")
        .await
        .expect("query")
        .expect("found");
    let run = app.executor.execute(&flow).await.expect("ran");
    let addr = spawn(app, Security::default()).await;

    let list = call(addr, "GET", "/data_flows", vec![]).await;
    assert_eq!(
        (list.status, list.body[0]["name"].as_str()),
        (200, Some("daily report"))
    );
    let one = call(addr, "GET", "/data_flows/daily%20report", vec![]).await;
    assert_eq!(
        (one.status, one.body["last_run_status"].as_str()),
        (200, Some("success"))
    );
    let runs = call(
        addr,
        "GET",
        "/data_flows/daily%20report/runs?limit=5&status=success",
        vec![],
    )
    .await;
    assert_eq!((runs.status, runs.body[0]["id"].as_i64()), (200, Some(run.id.0)));
    let shown = call(addr, "GET", &format!("/runs/{}", run.id), vec![]).await;
    assert_eq!(
        (shown.status, shown.body["status"].as_str()),
        (200, Some(RunStatus::Success.as_str()))
    );
    assert_eq!(shown.body["flow_name"], "daily report");
    let health = call(addr, "GET", "/healthz", vec![]).await;
    assert_eq!((health.status, health.body["status"].as_str()), (200, Some("ok")));

    for (method, path, status) in [
        ("GET", "/data_flows/nope", 404),
        ("GET", "/data_flows/nope/runs", 404),
        ("GET", "/runs/999", 404),
        ("GET", "/runs/abc", 400),
        ("GET", "/data_flows/daily%20report/runs?limit=many", 400),
        ("GET", "/data_flows/daily%20report/runs?limit=0", 400),
        ("GET", "/data_flows/daily%20report/runs?status=running", 400),
        ("GET", "/no/such/route", 404),
        ("DELETE", "/data_flows", 405),
        ("GET", "/data_flows/heartbeat", 405),
    ] {
        let reply = call(addr, method, path, vec![]).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
        assert!(reply.body["error"].is_string(), "{method} {path}: {}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_heartbeat_with_a_body_that_is_not_json_is_still_served_as_json() {
    let db = fresh_database(Kind::Sqlite).await;
    let addr = spawn(app_on(&db).await, Security::default()).await;
    let reply = tokio::task::spawn_blocking(move || {
        request(
            addr,
            "POST",
            "/data_flows/heartbeat",
            &[("Content-Type", "application/json")],
            "{not json",
        )
    })
    .await
    .expect("request");
    assert_eq!(reply.status, 200, "the heartbeat takes no body: {}", reply.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_required_everywhere_but_healthz() {
    let db = fresh_database(Kind::Sqlite).await;
    let security = Security {
        token: Some("s3cret".into()),
        ..Security::default()
    };
    let addr = spawn(app_on(&db).await, security).await;
    let missing = call(addr, "POST", "/data_flows/heartbeat", vec![]).await;
    assert_eq!(
        (missing.status, missing.body.clone()),
        (401, json!({"error": "Unauthorized"}))
    );
    let wrong = call(
        addr,
        "GET",
        "/data_flows",
        vec![("X-Heartbeat-Token", "s3cre".into())],
    )
    .await;
    assert_eq!(wrong.status, 401);
    let right = call(
        addr,
        "POST",
        "/data_flows/heartbeat",
        vec![("X-Heartbeat-Token", "s3cret".into())],
    )
    .await;
    assert_eq!(right.status, 200);
    assert_eq!(call(addr, "GET", "/healthz", vec![]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_allow_list_refuses_other_addresses_and_believes_only_trusted_proxies() {
    let db = fresh_database(Kind::Sqlite).await;
    let app = app_on(&db).await;
    let nets = |raw: &str| parse_networks(raw).expect("networks");

    let only_lan = spawn(
        app.clone(),
        Security {
            allowed: Some(nets("10.0.0.0/8")),
            ..Security::default()
        },
    )
    .await;
    let refused = call(only_lan, "POST", "/data_flows/heartbeat", vec![]).await;
    assert_eq!(
        (refused.status, refused.body.clone()),
        (403, json!({"error": "Forbidden"}))
    );
    let spoofed = call(
        only_lan,
        "POST",
        "/data_flows/heartbeat",
        vec![("X-Forwarded-For", "10.1.2.3".into())],
    )
    .await;
    assert_eq!(
        spoofed.status, 403,
        "X-Forwarded-For from an untrusted peer changes nothing"
    );

    let local = spawn(
        app.clone(),
        Security {
            allowed: Some(nets("127.0.0.1")),
            ..Security::default()
        },
    )
    .await;
    assert_eq!(
        call(local, "POST", "/data_flows/heartbeat", vec![]).await.status,
        200
    );

    let behind_proxy = spawn(
        app,
        Security {
            allowed: Some(nets("10.0.0.0/8")),
            trusted_proxies: nets("127.0.0.1"),
            ..Security::default()
        },
    )
    .await;
    let forwarded = call(
        behind_proxy,
        "POST",
        "/data_flows/heartbeat",
        vec![("X-Forwarded-For", "10.1.2.3".into())],
    )
    .await;
    assert_eq!(
        forwarded.status, 200,
        "a trusted proxy's X-Forwarded-For is believed"
    );
    let chained = call(
        behind_proxy,
        "POST",
        "/data_flows/heartbeat",
        vec![("X-Forwarded-For", "10.1.2.3, 203.0.113.50".into())],
    )
    .await;
    assert_eq!(
        chained.status, 403,
        "the right-most untrusted hop is the client, not a spoofed left entry"
    );
    let garbage = call(
        behind_proxy,
        "POST",
        "/data_flows/heartbeat",
        vec![("X-Forwarded-For", "nonsense".into())],
    )
    .await;
    assert_eq!(garbage.status, 403);
}

/// Reads the server's stderr until a line contains `needle`, with a deadline.
fn wait_for_line(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    needle: &str,
    seen: &mut Vec<String>,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            _ => return None,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_interrupts_running_flows_after_the_grace_period_and_records_them() {
    let db = fresh_database(Kind::Sqlite).await;
    let app = app_on(&db).await;
    create(&app, "long", json!({"class_name": "Sleep", "seconds": 60})).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowrun-server"))
        .env("DATABASE_URL", &db.url)
        .env("FLOWRUN_BIND", "127.0.0.1:0")
        .env("FLOWRUN_TICK_SECS", "0.2")
        .env("FLOWRUN_SHUTDOWN_GRACE_SECS", "1")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    assert!(
        wait_for_line(&mut lines, "listening on", &mut seen).is_some(),
        "{seen:#?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("heartbeat token: DISABLED")),
        "start-up says security is off: {seen:#?}"
    );
    // Wait until the tick has started the long flow.
    let flow = app
        .flows
        .find_by_name("long")
        .await
        .expect("query")
        .expect("found");
    let deadline = Instant::now() + Duration::from_secs(20);
    let run = loop {
        let runs = app
            .runs
            .list_runs(flowrun_domain::RunFilter {
                data_flow_id: Some(flow.id),
                limit: 1,
                ..Default::default()
            })
            .await
            .expect("list");
        if let Some(record) = runs.into_iter().next() {
            break record.run;
        }
        assert!(
            Instant::now() < deadline,
            "the tick never started the flow: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let _ = wait_for_line(&mut lines, "stopped", &mut seen);
        (child.wait(), seen)
    })
    .await
    .expect("joined");
    let (exit, seen) = status;
    assert!(exit.expect("exit status").success(), "{seen:#?}");
    let stored = app
        .runs
        .find_run(run.id)
        .await
        .expect("query")
        .expect("found")
        .run;
    assert_eq!(stored.status, RunStatus::Failed, "{seen:#?}");
    assert!(
        stored.error_message.expect("message").starts_with("interrupted"),
        "{seen:#?}"
    );
}

#[test]
fn the_binary_retries_an_unreachable_database_instead_of_dying() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowrun-server"))
        .env("DATABASE_URL", "postgres://flow:hunter2@127.0.0.1:1/flows")
        .env("FLOWRUN_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    assert!(
        wait_for_line(&mut lines, "retrying", &mut seen).is_some(),
        "{seen:#?}"
    );
    assert!(
        child.try_wait().expect("status").is_none(),
        "still alive after a failed attempt: {seen:#?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains("hunter2")),
        "the password is masked: {seen:#?}"
    );
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(child.wait().expect("exit").success(), "{seen:#?}");
}
