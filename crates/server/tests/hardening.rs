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

#[allow(dead_code)] // used by the connection-limit tests
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
