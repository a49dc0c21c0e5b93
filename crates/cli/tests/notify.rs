//! Failure notifications from the `flowrun` binary: a run started by `flowrun run` (or a heartbeat) tells
//! the process's webhook and the flow's own, before the command exits, and a flow's webhook is checked
//! when it is stored and shown masked.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use common::{flowrun, json, refused};
use serde_json::Value;

/// A local receiver answering 200 to every POST; each request's path and JSON body arrive on the channel.
fn receiver() -> (String, mpsc::Receiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let _ = sender.send((path, body));
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (base, received)
}

#[test]
fn a_failed_run_from_the_cli_notifies_the_process_webhook_and_the_flows_own_before_exiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (base, received) = receiver();
    let config = format!(r#"{{"message": "the export is empty", "notify": "{base}/own/SECRET-PATH"}}"#);
    json(
        d,
        &[
            "flow", "create", "nightly", "--class", "Fail", "--config", &config, "--json",
        ],
    );

    let shown = json(d, &["flow", "show", "nightly", "--json"]);
    let notify = shown["configuration"]["notify"].as_str().expect("notify shown");
    assert!(
        !notify.contains("SECRET-PATH") && notify.ends_with("/<masked>"),
        "{notify}"
    );

    let output = flowrun(d)
        .env("FLOWRUN_NOTIFY_URL", format!("{base}/everyone"))
        .args(["run", "nightly"])
        .output()
        .expect("runs");
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The command waited for both before exiting, so they are here already.
    let mut got: Vec<(String, Value)> = received.try_iter().collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let paths: Vec<&str> = got.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(paths, ["/everyone", "/own/SECRET-PATH"], "{got:#?}");
    for (_, body) in &got {
        assert_eq!(body["event"], "failed");
        assert_eq!(body["flow"], "nightly");
        assert_eq!(body["message"], "the export is empty");
    }
}

#[test]
fn a_heartbeat_from_the_cli_notifies_a_flow_that_names_its_own_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (base, received) = receiver();
    let config = format!(r#"{{"message": "no rows", "notify": "{base}/team"}}"#);
    json(
        d,
        &[
            "flow", "create", "hourly", "--class", "Fail", "--config", &config, "--json",
        ],
    );
    let output = flowrun(d).args(["heartbeat"]).output().expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (path, body) = received
        .recv_timeout(Duration::from_secs(5))
        .expect("one notification");
    assert_eq!(path, "/team");
    assert_eq!(body["flow"], "hourly");
    assert!(received.try_recv().is_err(), "exactly one");
}

#[test]
fn a_flow_webhook_that_is_not_an_http_url_is_refused_when_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    refused(
        dir.path(),
        &[
            "flow",
            "create",
            "nightly",
            "--class",
            "Noop",
            "--config",
            r#"{"notify": "ftp://files.example/x"}"#,
        ],
        "`notify`: must be an http:// or https:// URL",
    );
}

#[test]
fn a_bad_process_webhook_is_a_usage_error_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    json(d, &["flow", "create", "nightly", "--class", "Noop", "--json"]);
    let output = flowrun(d)
        .env("FLOWRUN_NOTIFY_URL", "mailto:ops@example.com")
        .args(["run", "nightly"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("FLOWRUN_NOTIFY_URL"), "{stderr}");
    let runs = json(d, &["runs", "--flow", "nightly", "--json"]);
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs}");
}
