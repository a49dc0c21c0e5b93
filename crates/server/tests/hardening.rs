//! `flowrun-server` against hostile or unlucky input, through the real binary on 127.0.0.1: secrets in
//! database URLs, idle and slow connections, oversized requests, driver text in answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flowrun_test_support::{Kind, configured_kinds, fresh_database};

/// A running server binary whose stderr lines are collected by a thread.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    fn start(database_url: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flowrun-server"));
        command
            .env("DATABASE_URL", database_url)
            .env("FLOWRUN_BIND", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .env_remove("FLOWRUN_HEARTBEAT_TOKEN")
            .env_remove("FLOWRUN_UI_TOKEN")
            .env_remove("FLOWRUN_ALLOWED_IPS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn the server");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line containing `needle`, waiting at most `within`.
    fn wait_for(&mut self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// The address from the `listening on …` line.
    fn address(&mut self) -> SocketAddr {
        let line = self
            .wait_for("listening on", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("the server never listened: {:#?}", self.seen));
        let plain = strip_ansi(&line);
        let after = plain.split("listening on ").nth(1).expect("an address");
        after
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Everything the server wrote to stderr until it exited (killed after `within`), and its exit code.
    fn finish(mut self, within: Duration) -> (Option<i32>, Vec<String>) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("status") {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("exit").code();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn skip(what: &str, kind: Kind) -> bool {
    if configured_kinds().contains(&kind) {
        return false;
    }
    eprintln!("skipped {what}: no {} URL configured", kind.name());
    true
}

/// Sends raw bytes and reads the whole answer (the connection is closed by `Connection: close`).
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(request).expect("send");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn an_unparsable_url_stops_the_server_with_one_clear_line_and_no_password() {
    for url in [
        "postgres://app:s3cr#tPW@127.0.0.1:5432/db",
        "postgres://app:s3cr/tPW@127.0.0.1:5432/db",
        "postgres://app:s3cr?tPW@127.0.0.1:5432/db",
    ] {
        let server = Server::start(url, &[]);
        let (code, seen) = server.finish(Duration::from_secs(20));
        assert_eq!(code, Some(1), "{url} exits at once: {seen:#?}");
        assert!(
            seen.iter().all(|l| !l.contains("tPW")),
            "{url}: the password is masked: {seen:#?}"
        );
        assert!(
            seen.iter().any(|l| l.contains("invalid database URL")),
            "{url}: says why: {seen:#?}"
        );
        assert!(
            seen.iter().all(|l| !l.contains("retrying")),
            "{url}: bad input is not retried: {seen:#?}"
        );
    }
}

#[test]
fn a_query_string_password_is_masked_while_retrying() {
    let mut server = Server::start("postgres://app@127.0.0.1:1/db?password=HUNTER2", &[]);
    assert!(
        server.wait_for("retrying", Duration::from_secs(30)).is_some(),
        "{:#?}",
        server.seen
    );
    let (_, seen) = server.finish(Duration::ZERO);
    assert!(seen.iter().all(|l| !l.contains("HUNTER2")), "{seen:#?}");
    assert!(seen.iter().any(|l| l.contains("password=<masked>")), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listening_line_masks_a_query_string_password() {
    if skip("the listening line on PostgreSQL", Kind::Postgres) {
        return;
    }
    let db = fresh_database(Kind::Postgres).await;
    let url = format!("{}?password=HUNTER2", db.url);
    flowrun_app::App::open(
        &flowrun_app::Settings::new(url.clone()),
        flowrun_app::builtin_registry(),
        flowrun_app::MigratePolicy::Always,
    )
    .await
    .expect("migrated");
    let mut server = Server::start(&url, &[]);
    let _ = server.address();
    let (_, seen) = server.finish(Duration::ZERO);
    assert!(seen.iter().all(|l| !l.contains("HUNTER2")), "{seen:#?}");
    assert!(seen.iter().any(|l| l.contains("password=<masked>")), "{seen:#?}");
}

/// A server binary on a fresh SQLite database with short connection timeouts.
async fn server_with_short_timeouts(
    extra: &[(&str, &str)],
) -> (Server, SocketAddr, flowrun_test_support::TestDatabase) {
    let db = fresh_database(Kind::Sqlite).await;
    let mut env = vec![
        ("FLOWRUN_HEADER_TIMEOUT_SECS", "1"),
        ("FLOWRUN_IDLE_TIMEOUT_SECS", "2"),
    ];
    env.extend_from_slice(extra);
    let mut server = Server::start(&db.url, &env);
    let addr = server.address();
    (server, addr, db)
}

/// Whether the server closes `stream` (EOF or reset) within `within`, and how long that took.
fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            // Whatever the server answers first (hyper may send nothing), the end is what counts.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_connections_neither_block_others_nor_stay_open() {
    let (server, addr, _db) = server_with_short_timeouts(&[]).await;
    let (idle, took, slow, slow_closed) = tokio::task::spawn_blocking(move || {
        let mut idle: Vec<TcpStream> = (0..200)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let started = Instant::now();
        let answer = raw_exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let took = started.elapsed();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut slow = TcpStream::connect(addr).expect("connect");
        slow.write_all(b"GET /heal").expect("send a partial request line");
        let slow_closed = closed_within(&mut slow, Duration::from_secs(10));
        let idle_closed = closed_within(&mut idle[199], Duration::from_secs(10));
        (idle_closed, took, slow, slow_closed)
    })
    .await
    .expect("client thread");
    drop(slow);
    let (_, seen) = server.finish(Duration::ZERO);
    assert!(
        took < Duration::from_secs(2),
        "/healthz answered in {took:?} beside 200 idle connections: {seen:#?}"
    );
    let slow_closed = slow_closed.expect("a partial request line is cut off after the header timeout");
    assert!(slow_closed < Duration::from_secs(5), "{slow_closed:?}");
    assert!(idle.is_some(), "an idle connection is closed too");
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_connection_cap_clients_wait_until_a_slot_frees() {
    let (server, addr, _db) = server_with_short_timeouts(&[("FLOWRUN_MAX_CONNECTIONS", "5")]).await;
    let took = tokio::task::spawn_blocking(move || {
        let _idle: Vec<TcpStream> = (0..5)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let started = Instant::now();
        let answer = raw_exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        started.elapsed()
    })
    .await
    .expect("client thread");
    let (_, seen) = server.finish(Duration::ZERO);
    // Served once the idle connections hit the 1 s header timeout, not never.
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}: {seen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_is_refused_as_json() {
    let (server, addr, _db) = server_with_short_timeouts(&[("FLOWRUN_MAX_BODY_BYTES", "1024")]).await;
    let answer = tokio::task::spawn_blocking(move || {
        let body = "x".repeat(4096);
        raw_exchange(
            addr,
            format!(
                "POST /data_flows/heartbeat HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    })
    .await
    .expect("client thread");
    drop(server);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.ends_with(r#"{"error":"Payload Too Large"}"#), "{answer}");
}

/// The status code and body of a raw HTTP answer.
fn status_and_body(answer: &str) -> (u16, &str) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_the_framework_makes_are_json_too() {
    let (server, addr, _db) = server_with_short_timeouts(&[]).await;
    let answers = tokio::task::spawn_blocking(move || {
        let long_path = format!("/data_flows/{}", "a".repeat(20 * 1024));
        let huge_path = format!("/data_flows/{}", "a".repeat(70 * 1024));
        let big_header = format!("X-Filler: {}\r\n", "b".repeat(20 * 1024));
        let huge_header: String = (0..40)
            .map(|i| format!("X-Filler-{i}: {}\r\n", "c".repeat(8 * 1024)))
            .collect();
        [
            (
                414,
                format!("GET {long_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            ),
            (
                414,
                format!("GET {huge_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            ),
            (
                431,
                format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{big_header}Connection: close\r\n\r\n"),
            ),
            (
                431,
                format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{huge_header}Connection: close\r\n\r\n"),
            ),
            (400, "G\u{1}T / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned()),
        ]
        .map(|(expected, request)| (expected, raw_exchange(addr, request.as_bytes())))
    })
    .await
    .expect("client thread");
    drop(server);
    for (expected, answer) in &answers {
        let (status, body) = status_and_body(answer);
        assert_eq!(status, *expected, "{answer}");
        let json: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{expected}: body is not JSON ({e}): {answer}"));
        assert!(json["error"].is_string(), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_error_is_logged_and_answered_without_driver_text() {
    use sea_orm::ConnectionTrait;
    let (mut server, addr, db) = server_with_short_timeouts(&[]).await;
    let admin = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("connect");
    admin
        .execute_unprepared("DROP TABLE data_flow_runs; DROP TABLE data_flows;")
        .await
        .expect("break the schema");
    let answer = tokio::task::spawn_blocking(move || {
        raw_exchange(
            addr,
            b"GET /data_flows HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .expect("client thread");
    let (status, body) = status_and_body(&answer);
    assert_eq!(status, 500, "{answer}");
    assert_eq!(body, r#"{"error":"database error"}"#, "{answer}");
    assert!(
        server
            .wait_for("no such table", Duration::from_secs(10))
            .is_some(),
        "the detail is logged: {:#?}",
        server.seen
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_starts_with_a_role_that_may_only_read_and_write_rows() {
    use sea_orm::ConnectionTrait;
    if skip("the least-privilege role on PostgreSQL", Kind::Postgres) {
        return;
    }
    let db = fresh_database(Kind::Postgres).await;
    flowrun_app::App::open(
        &flowrun_app::Settings::new(db.url.clone()),
        flowrun_app::builtin_registry(),
        flowrun_app::MigratePolicy::Always,
    )
    .await
    .expect("migrated");
    let role = format!("flowrun_srv_{}", std::process::id());
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
    let (scheme_and_user, host) = db.url.split_once('@').expect("a URL with a user");
    let scheme = scheme_and_user.split("://").next().expect("a scheme");
    let mut server = Server::start(&format!("{scheme}://{role}@{host}"), &[]);
    let listening = server.wait_for("listening on", Duration::from_secs(30));
    let (_, seen) = server.finish(Duration::ZERO);
    let _ = admin.execute_unprepared(&format!("DROP OWNED BY {role}")).await;
    let _ = admin.execute_unprepared(&format!("DROP ROLE {role}")).await;
    assert!(listening.is_some(), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runs_limit_query_is_bounded_with_a_json_400() {
    let db = fresh_database(Kind::Sqlite).await;
    let app = flowrun_app::App::open(
        &flowrun_app::Settings::new(db.url.clone()),
        flowrun_app::builtin_registry(),
        flowrun_app::MigratePolicy::Always,
    )
    .await
    .expect("open");
    let new = flowrun_domain::NewDataFlow::new(
        flowrun_domain::FlowName::parse("a").expect("name"),
        "",
        true,
        serde_json::json!("Noop"),
        flowrun_domain::RunInterval::DEFAULT.schedule(),
    )
    .expect("valid");
    app.flows.create(new, app.clock.now()).await.expect("created");
    let mut server = Server::start(&db.url, &[]);
    let addr = server.address();
    let answers = tokio::task::spawn_blocking(move || {
        [
            "1001",
            "0",
            "9223372036854775808",
            "99999999999999999999",
            "-1",
            "x",
            "1000",
        ]
        .map(|limit| {
            let request = format!(
                "GET /data_flows/a/runs?limit={limit} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            (limit, raw_exchange(addr, request.as_bytes()))
        })
    })
    .await
    .expect("client thread");
    drop(server);
    for (limit, answer) in &answers {
        let (status, body) = status_and_body(answer);
        let expected = if *limit == "1000" { 200 } else { 400 };
        assert_eq!(status, expected, "limit={limit}: {answer}");
        let json: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{limit}: {e}: {answer}"));
        if expected == 400 {
            assert!(json["error"].is_string(), "{answer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_to_a_pipe_have_no_colour_codes_and_log_json_takes_the_usual_booleans() {
    let db = fresh_database(Kind::Sqlite).await;
    for (value, json) in [
        ("1", true),
        ("TRUE", true),
        ("on", true),
        ("yes", true),
        ("0", false),
        ("off", false),
    ] {
        let mut server = Server::start(&db.url, &[("FLOWRUN_LOG_JSON", value)]);
        let line = server.wait_for("listening on", Duration::from_secs(30));
        let (_, seen) = server.finish(Duration::ZERO);
        let line = line.unwrap_or_else(|| panic!("FLOWRUN_LOG_JSON={value}: {seen:#?}"));
        assert_eq!(line.starts_with('{'), json, "FLOWRUN_LOG_JSON={value}: {line}");
        assert!(seen.iter().all(|l| !l.contains('\u{1b}')), "{seen:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_start_up_log_says_whether_the_dashboard_asks_for_a_login_and_never_the_token() {
    let db = fresh_database(Kind::Sqlite).await;
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[], "dashboard (/ui): OPEN"),
        (
            &[("FLOWRUN_HEARTBEAT_TOKEN", "heartbeat-secret-1")],
            "login with the heartbeat token required",
        ),
        (
            &[
                ("FLOWRUN_HEARTBEAT_TOKEN", "heartbeat-secret-1"),
                ("FLOWRUN_UI_TOKEN", "ui-secret-2"),
            ],
            "login with FLOWRUN_UI_TOKEN required",
        ),
    ];
    for (env, expected) in cases {
        let mut server = Server::start(&db.url, env);
        let line = server.wait_for("dashboard (/ui)", Duration::from_secs(30));
        let _ = server.address();
        let (_, seen) = server.finish(Duration::ZERO);
        let line = line.unwrap_or_else(|| panic!("no dashboard line: {seen:#?}"));
        assert!(line.contains(expected), "{env:?}: {line}");
        assert!(
            seen.iter().all(|l| !l.contains("secret-")) && !line.contains("secret-"),
            "a token was logged: {seen:#?}"
        );
    }
}

#[test]
fn a_missing_sqlite_directory_stops_the_server_at_once() {
    let dir = std::env::temp_dir().join(format!("flowrun-missing-{}", std::process::id()));
    let url = format!("sqlite://{}/no/such/dir/flowrun.db", dir.display());
    let server = Server::start(&url, &[]);
    let (code, seen) = server.finish(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{seen:#?}");
    assert!(seen.iter().any(|l| l.contains("does not exist")), "{seen:#?}");
    assert!(!dir.exists(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_its_answer_is_cut_off_after_the_idle_timeout() {
    let db = fresh_database(Kind::Sqlite).await;
    let app = flowrun_app::App::open(
        &flowrun_app::Settings::new(db.url.clone()),
        flowrun_app::builtin_registry(),
        flowrun_app::MigratePolicy::Always,
    )
    .await
    .expect("open");
    // About 24 MB of answer: more than the loopback socket buffers hold, so the writer stalls.
    let padding = "p".repeat(4 * 1024 * 1024);
    for i in 0..6 {
        let new = flowrun_domain::NewDataFlow::new(
            flowrun_domain::FlowName::parse(&format!("big-{i}")).expect("name"),
            "",
            true,
            serde_json::json!({"class_name": "Noop", "padding": padding}),
            flowrun_domain::RunInterval::DEFAULT.schedule(),
        )
        .expect("valid");
        app.flows.create(new, app.clock.now()).await.expect("created");
    }
    let mut server = Server::start(
        &db.url,
        &[
            ("FLOWRUN_HEADER_TIMEOUT_SECS", "1"),
            ("FLOWRUN_IDLE_TIMEOUT_SECS", "2"),
        ],
    );
    let addr = server.address();
    let received = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .write_all(b"GET /data_flows HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        // Wait for the answer to start (building 24 MB of JSON takes a debug build seconds), then read
        // nothing for longer than the idle timeout, then take what is there.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut buf = vec![0u8; 1 << 16];
        let mut received = stream.read(&mut buf).expect("the answer starts");
        std::thread::sleep(Duration::from_secs(5));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break received,
                Ok(n) => received += n,
            }
        }
    })
    .await
    .expect("client thread");
    drop(server);
    assert!(
        received < 6 * 4 * 1024 * 1024,
        "the stalled answer was cut off, not completed: {received} bytes"
    );
}

/// Sends a request whose body never fully arrives and returns how long the server kept the connection.
fn stalled_body(addr: SocketAddr) -> (String, Option<Duration>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .write_all(
            b"POST /data_flows/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
        )
        .expect("send");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut first = [0u8; 4096];
    let n = stream.read(&mut first).unwrap_or(0);
    let answer = String::from_utf8_lossy(&first[..n]).into_owned();
    (answer, closed_within(&mut stream, Duration::from_secs(8)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_whose_body_stalls_does_not_stay_open() {
    let (server, addr, _db) = server_with_short_timeouts(&[]).await;
    let (answer, closed) = tokio::task::spawn_blocking(move || stalled_body(addr))
        .await
        .expect("client thread");
    let (_, seen) = server.finish(Duration::ZERO);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}: {seen:#?}");
    let closed = closed.expect("the stalled connection is closed");
    assert!(closed < Duration::from_secs(5), "{closed:?}");
}

#[test]
fn a_tick_or_grace_beyond_a_day_stops_the_server_with_one_clear_line() {
    // A huge tick was accepted, and timer arithmetic on it would overflow inside the scheduler's task.
    // Refused before the database is opened, so none is created.
    let url = format!(
        "sqlite://{}/flowrun-never-opened.db",
        std::env::temp_dir().display()
    );
    for (name, value) in [
        ("FLOWRUN_TICK_SECS", "1e18"),
        ("FLOWRUN_SHUTDOWN_GRACE_SECS", "1e18"),
    ] {
        let server = Server::start(&url, &[(name, value)]);
        let (code, seen) = server.finish(Duration::from_secs(20));
        assert_eq!(code, Some(1), "{name}: {seen:#?}");
        assert!(
            seen.iter().any(|l| l.contains(name) && l.contains("at most")),
            "{name}: says why: {seen:#?}"
        );
        assert!(seen.iter().all(|l| !l.contains("panicked")), "{seen:#?}");
    }
}
