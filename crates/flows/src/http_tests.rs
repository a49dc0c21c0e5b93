//! The `Http` class run directly with a detached context, against tiny servers on 127.0.0.1.

use flowrun_domain::{ClassRegistry, FlowError, FlowName, FlowRegistry, RunContext};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{HttpError, register_builtins};

fn registry() -> ClassRegistry {
    let mut registry = ClassRegistry::new();
    register_builtins(&mut registry);
    registry
}

fn context() -> RunContext {
    RunContext::detached(FlowName::parse("http-test").expect("name"))
}

async fn run(settings: Value) -> (Result<(), FlowError>, String) {
    let mut flow = registry().build("Http", &settings).expect("builds");
    let mut context = context();
    let result = flow.run(&mut context).await;
    (result, context.output().text())
}

fn http_error(result: Result<(), FlowError>) -> (HttpError, String) {
    let error = result.expect_err("fails");
    let message = error.to_string();
    let error = error
        .downcast::<HttpError>()
        .unwrap_or_else(|e| panic!("not an HttpError: {e:?}"));
    (error, message)
}

/// A server answering one request with `status` and `body`; the task returns the request it got.
async fn serve_once(status: &'static str, body: String) -> (String, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let request = read_request(&mut socket).await;
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.expect("answer");
        request
    });
    (url, task)
}

/// The request's head and its body (by Content-Length).
async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut request = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let n = socket.read(&mut buffer).await.expect("read");
        request.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&request).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        if n == 0 {
            return text;
        }
    }
}

/// A server that accepts connections and never answers.
async fn silent_server() -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/slow", listener.local_addr().expect("address"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_200_records_the_status_and_the_body_head() {
    let (url, server) = serve_once("200 OK", "hello\nworld\n".into()).await;
    let (result, output) = run(json!({"url": format!("{url}/ok")})).await;
    result.expect("succeeds");
    assert_eq!(output, format!("GET {url}/ok -> 200 OK\nhello\nworld\n"));
    let request = server.await.expect("server");
    assert!(request.starts_with("GET /ok HTTP/1.1\r\n"), "{request}");
}

#[tokio::test]
async fn only_the_head_of_a_large_body_is_recorded() {
    let (url, _server) = serve_once("200 OK", "é".repeat(10_000)).await;
    let (result, output) = run(json!({"url": url})).await;
    result.expect("succeeds");
    assert!(
        output.len() < crate::http::BODY_HEAD_BYTES + 200,
        "{}",
        output.len()
    );
    assert!(output.ends_with("… (body cut at 4096 bytes)\n"), "{output}");
}

#[tokio::test]
async fn a_500_fails_saying_so() {
    let (url, _server) = serve_once("500 Internal Server Error", "database down".into()).await;
    let (result, output) = run(json!({"url": url})).await;
    let (error, message) = http_error(result);
    assert!(matches!(error, HttpError::UnexpectedStatus { .. }));
    assert_eq!(
        message,
        format!("unexpected status 500 Internal Server Error (expected 2xx) from GET {url}/")
    );
    assert!(
        output.ends_with("-> 500 Internal Server Error\ndatabase down\n"),
        "{output}"
    );
}

#[tokio::test]
async fn expected_statuses_replace_2xx() {
    let (url, _server) = serve_once("200 OK", String::new()).await;
    let (result, _) = run(json!({"url": url, "expect_status": [201, 204]})).await;
    let (_, message) = http_error(result);
    assert!(message.contains("(expected 201, 204)"), "{message}");

    let (url, _server) = serve_once("404 Not Found", String::new()).await;
    let (result, _) = run(json!({"url": url, "expect_status": [404]})).await;
    result.expect("404 was expected");
}

#[tokio::test]
async fn method_headers_and_json_body_are_sent() {
    let (url, server) = serve_once("201 Created", String::new()).await;
    let (result, output) = run(json!({
        "method": "post",
        "url": format!("{url}/items"),
        "headers": {"X-Token": "t0ken"},
        "body": {"name": "x"},
    }))
    .await;
    result.expect("succeeds");
    assert_eq!(output, format!("POST {url}/items -> 201 Created\n"));
    let request = server.await.expect("server").to_ascii_lowercase();
    assert!(request.starts_with("post /items http/1.1\r\n"), "{request}");
    assert!(request.contains("\r\nx-token: t0ken\r\n"), "{request}");
    assert!(
        request.contains("\r\ncontent-type: application/json\r\n"),
        "{request}"
    );
    assert!(request.ends_with("\r\n\r\n{\"name\":\"x\"}"), "{request}");
}

#[tokio::test]
async fn a_refused_connection_fails_saying_so_with_the_password_masked() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let (result, output) = run(json!({"url": format!("http://user:s3cret@127.0.0.1:{port}/x")})).await;
    let (error, message) = http_error(result);
    assert!(matches!(error, HttpError::ConnectionRefused { .. }), "{error:?}");
    assert_eq!(
        message,
        format!("connection refused to http://user:<masked>@127.0.0.1:{port}/x")
    );
    assert!(!format!("{error:?}{output}").contains("s3cret"));
}

#[tokio::test]
async fn a_server_that_does_not_answer_times_out() {
    let (url, _server) = silent_server().await;
    let (result, _) = run(json!({"url": url, "timeout_secs": 0.3})).await;
    let (error, message) = http_error(result);
    assert!(matches!(error, HttpError::Timeout { .. }), "{error:?}");
    assert_eq!(message, format!("timed out after 0.3 s: GET {url}"));
}

#[tokio::test]
async fn a_cancelled_run_stops_waiting() {
    let (url, _server) = silent_server().await;
    let mut flow = registry().build("Http", &json!({"url": url})).expect("builds");
    let mut context = context();
    context.cancellation().cancel();
    let (error, message) = http_error(flow.run(&mut context).await);
    assert!(matches!(error, HttpError::Stopped { .. }), "{error:?}");
    assert_eq!(message, format!("stopped before GET {url} was answered"));
}

#[test]
fn bad_settings_are_refused() {
    let registry = registry();
    let refused = |settings: Value| {
        registry
            .build("Http", &settings)
            .err()
            .expect("refused")
            .to_string()
    };
    assert_eq!(
        refused(json!({"url": "http://127.0.0.1/", "timeout": 3})),
        "invalid configuration for flow class `Http`: unknown setting `timeout`"
    );
    assert!(refused(json!({"method": "GET"})).contains("url"));
    assert!(refused(json!({"url": "ftp://127.0.0.1/"})).contains("scheme `ftp`"));
    assert!(refused(json!({"url": "http://127.0.0.1/", "method": "GE T"})).contains("method"));
    assert!(refused(json!({"url": "http://127.0.0.1/", "expect_status": [1000]})).contains("1000"));
    assert!(refused(json!({"url": "http://127.0.0.1/", "timeout_secs": 0})).contains("positive"));
    assert!(refused(json!({"url": "http://127.0.0.1/", "headers": {"X": "a\nb"}})).contains("headers"));
    // An unresolved reference (the variable is only where the flow runs) passes the check.
    let unresolved = json!({"url": "https://${env:FLOWRUN_TEST_NO_SUCH_VAR}/x"});
    assert!(registry.check("Http", &unresolved).is_ok());
}

#[tokio::test]
async fn a_tls_failure_fails_saying_so() {
    // A server that answers the handshake with plain HTTP.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("address"));
    let _server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        let _ = socket.read(&mut [0; 1024]).await;
    });
    let (result, _) = run(json!({"url": url})).await;
    let (error, message) = http_error(result);
    assert!(matches!(error, HttpError::Tls { .. }), "{message}");
    assert!(
        message.starts_with(&format!("TLS error with {url}/: ")),
        "{message}"
    );
}

#[tokio::test]
async fn a_name_that_does_not_resolve_fails_saying_so() {
    // `.invalid` never resolves (RFC 2606).
    let (result, _) = run(json!({"url": "http://flowrun-test.invalid/"})).await;
    let (error, message) = http_error(result);
    assert!(matches!(error, HttpError::Dns { .. }), "{message}");
    assert!(
        message.starts_with("DNS lookup failed for http://flowrun-test.invalid/"),
        "{message}"
    );
}
