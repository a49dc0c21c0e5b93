//! Metrics and notifications through the real server binary: `GET /metrics` needs the token, its run
//! counters grow as runs happen, and the webhook receives a POST for each failed run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flowrun_app::{App, MigratePolicy, Settings, builtin_registry};
use flowrun_domain::{FlowName, NewDataFlow, Schedule};
use flowrun_test_support::{Kind, fresh_database};
use serde_json::{Value, json};

const TOKEN: &str = "observe-token";

/// One request on its own connection; the status and the body as text.
fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("X-Heartbeat-Token: {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n"
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
    (status, body.to_owned())
}

/// A webhook receiver on 127.0.0.1 answering 200; every body it gets arrives on the channel.
fn receiver() -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let (bodies, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(body) = serde_json::from_slice(&body)
            {
                let _ = bodies.send(body);
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (format!("http://{address}/hooks/very-secret"), received)
}

fn start_server(url: &str, notify_url: &str) -> (Child, SocketAddr, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowrun-server"))
        .env("DATABASE_URL", url)
        .env("FLOWRUN_BIND", "127.0.0.1:0")
        .env("FLOWRUN_HEARTBEAT_TOKEN", TOKEN)
        .env("FLOWRUN_NOTIFY_URL", notify_url)
        .env("FLOWRUN_PUBLIC_URL", "https://flowrun.example.com")
        .env("FLOWRUN_SHUTDOWN_GRACE_SECS", "1")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
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
    // The rest of the log, to check what it says (and so the server never blocks on a full pipe).
    let (log, logged) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = log.send(line);
        }
    });
    (child, addr, logged)
}

fn stop(mut child: Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = child.wait();
}

/// The value of the series `series` (name and labels, exactly) in a metrics text; 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

const FAILED: &str = r#"flowrun_runs_finished_total{flow="observed",status="failed",failure_kind="error"}"#;

/// Waits (bounded) until the server's metrics show `count` failed runs of `observed`.
fn wait_for_failed(addr: SocketAddr, count: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, text) = request(addr, "GET", "/metrics", Some(TOKEN));
        assert_eq!(status, 200, "{text}");
        if value(&text, FAILED) >= count {
            return text;
        }
        assert!(Instant::now() < deadline, "no {count} failed runs in:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_runs_behind_the_token_and_the_webhook_hears_of_each_failure() {
    let db = fresh_database(Kind::Sqlite).await;
    let app = App::open(
        &Settings::new(db.url.clone()),
        builtin_registry(),
        MigratePolicy::Always,
    )
    .await
    .expect("open");
    let new = NewDataFlow::new(
        FlowName::parse("observed").expect("name"),
        "",
        true,
        json!({"class_name": "Fail", "message": "the source table is missing"}),
        Schedule::every_secs(3600).expect("interval"),
    )
    .expect("valid");
    app.flows.create(new, app.clock.now()).await.expect("created");
    let (notify_url, received) = receiver();
    let (server, addr, logged) = start_server(&db.url, &notify_url);

    let checks = tokio::task::spawn_blocking(move || {
        let (status, body) = request(addr, "GET", "/metrics", None);
        assert_eq!(status, 401, "the token is needed: {body}");
        let (status, text) = request(addr, "GET", "/metrics", Some(TOKEN));
        assert_eq!(status, 200, "{text}");
        assert_eq!(value(&text, FAILED), 0.0, "{text}");
        assert!(text.contains("# TYPE flowrun_runs_reaped counter"), "{text}");

        let (status, body) = request(addr, "POST", "/data_flows/observed/run", Some(TOKEN));
        assert_eq!(status, 202, "{body}");
        wait_for_failed(addr, 1.0);
        let (status, body) = request(addr, "POST", "/data_flows/observed/run", Some(TOKEN));
        assert_eq!(status, 202, "{body}");
        let text = wait_for_failed(addr, 2.0);
        assert_eq!(value(&text, "flowrun_runs_in_progress"), 0.0, "{text}");
        assert_eq!(
            value(&text, r#"flowrun_run_duration_seconds_count{flow="observed"}"#),
            2.0,
            "{text}"
        );

        let bodies: Vec<Value> = (0..2)
            .map(|_| {
                received
                    .recv_timeout(Duration::from_secs(60))
                    .expect("a notification")
            })
            .collect();
        bodies
    })
    .await
    .expect("the checks");
    stop(server);
    for body in &checks {
        assert_eq!(body["event"], "failed", "{body}");
        assert_eq!(body["flow"], "observed");
        assert_eq!(body["failure_kind"], "error");
        assert_eq!(body["message"], "the source table is missing");
        let link = format!("https://flowrun.example.com/ui/runs/{}", body["run_id"]);
        assert_eq!(body["url"], json!(link));
    }
    assert_ne!(checks[0]["run_id"], checks[1]["run_id"]);
    let log: Vec<String> = logged.try_iter().collect();
    assert!(
        log.iter().any(|line| line.contains("notification sent")),
        "sends are logged: {log:#?}"
    );
    assert!(
        !log.iter().any(|line| line.contains("very-secret")),
        "the webhook's secret never reaches the log: {log:#?}"
    );
}
