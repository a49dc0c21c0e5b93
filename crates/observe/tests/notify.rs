//! The notifier and the metrics against a real executor on the in-memory store and a local test receiver:
//! one notification per failed run and per recovery, retries after a 500, and a receiver that never
//! answers does not hold up runs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowrun_domain::{
    ClassRegistry, Clock, DataFlow, DataFlowRepository, ExecuteError, Flow, FlowError, FlowExecutor,
    FlowName, LeaseOwner, LeaseSettings, NewDataFlow, RunContext, RunInterval, RunObserver, RunStatus,
};
use flowrun_memory::MemoryStore;
use flowrun_observe::{Metrics, Notifier, NotifySettings, Observers};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How the test receiver answers.
#[derive(Clone, Copy)]
enum Answer {
    /// 200 to everything.
    Ok,
    /// 500 to the first request, 200 afterwards.
    FailOnce,
    /// Reads the request and never answers.
    Hang,
}

/// A local HTTP receiver: every request body it reads arrives on the returned channel.
async fn receiver(answer: Answer) -> (String, mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (bodies, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut served = 0;
        let mut held = Vec::new();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let Some(body) = read_request(&mut stream).await else {
                continue;
            };
            let _ = bodies.send(body);
            served += 1;
            let status = match answer {
                Answer::Ok => "200 OK",
                Answer::FailOnce if served == 1 => "500 Internal Server Error",
                Answer::FailOnce => "200 OK",
                Answer::Hang => {
                    held.push(stream);
                    continue;
                }
            };
            let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (format!("http://{address}/hooks/secret-token"), received)
}

/// Reads one request's head and body; the body parsed as JSON.
async fn read_request(stream: &mut TcpStream) -> Option<Value> {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        raw.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        if body.len() >= length {
            return serde_json::from_str(&body[..length]).ok();
        }
    }
}

struct Now;

impl Clock for Now {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A flow that fails or succeeds as its script says, run after run.
struct Scripted(Arc<Mutex<VecDeque<bool>>>);

#[async_trait]
impl Flow for Scripted {
    async fn run(&mut self, _context: &mut RunContext) -> Result<(), FlowError> {
        let succeed = self.0.lock().expect("lock").pop_front().unwrap_or(true);
        if succeed {
            Ok(())
        } else {
            Err(FlowError::msg("the source table is missing"))
        }
    }
}

struct Setup {
    flows: Arc<dyn DataFlowRepository>,
    executor: FlowExecutor,
    script: Arc<Mutex<VecDeque<bool>>>,
}

async fn setup(observer: Arc<dyn RunObserver>) -> Setup {
    setup_with(observer, json!("Scripted")).await
}

/// The flow `nightly` of class `Scripted` with `configuration`.
async fn setup_with(observer: Arc<dyn RunObserver>, configuration: Value) -> Setup {
    let store = MemoryStore::new();
    let flows = store.flows();
    let script = Arc::new(Mutex::new(VecDeque::new()));
    let mut registry = ClassRegistry::new();
    let shared = Arc::clone(&script);
    registry.register_fn("Scripted", move |_| Ok(Box::new(Scripted(Arc::clone(&shared)))));
    let new = NewDataFlow::new(
        FlowName::parse("nightly").expect("name"),
        "",
        true,
        configuration,
        RunInterval::DEFAULT.schedule(),
    )
    .expect("valid flow");
    flows.create(new, Utc::now()).await.expect("created");
    let executor = FlowExecutor::new(
        store.runs(),
        Arc::new(registry),
        Arc::new(Now),
        LeaseSettings::new(LeaseOwner::new("test:1")),
    )
    .with_observer(observer);
    Setup {
        flows,
        executor,
        script,
    }
}

impl Setup {
    /// Runs the flow (read afresh, as every caller does) once, succeeding or failing as told.
    async fn run(&self, succeed: bool) -> Result<flowrun_domain::DataFlowRun, ExecuteError> {
        self.script.lock().expect("lock").push_back(succeed);
        let flow: DataFlow = self
            .flows
            .find_by_name("nightly")
            .await
            .expect("read")
            .expect("exists");
        self.executor.execute(&flow).await
    }
}

fn fast(url: &str) -> NotifySettings {
    let mut settings = NotifySettings::new(url).expect("url");
    settings.retry_delays = vec![Duration::from_millis(10), Duration::from_millis(40)];
    settings
}

fn drain(received: &mut mpsc::UnboundedReceiver<Value>) -> Vec<Value> {
    let mut bodies = Vec::new();
    while let Ok(body) = received.try_recv() {
        bodies.push(body);
    }
    bodies
}

#[tokio::test]
async fn one_notification_per_failed_run_and_one_per_recovery() {
    let (url, mut received) = receiver(Answer::Ok).await;
    let metrics = Metrics::new();
    let mut settings = fast(&url);
    settings.public_url = Some("https://flowrun.example.com/".parse().expect("url"));
    let notifier = Arc::new(Notifier::start(settings, Some(metrics.clone())).expect("notifier"));
    let observers = Observers {
        metrics: metrics.clone(),
        notifier: Some(Arc::clone(&notifier)),
    };
    let setup = setup(Arc::new(observers)).await;

    assert!(setup.run(false).await.is_err());
    let second = setup.run(false).await.expect_err("fails");
    let recovered = setup.run(true).await.expect("succeeds");
    setup.run(true).await.expect("succeeds");
    notifier.flush().await;

    let bodies = drain(&mut received);
    let events: Vec<&str> = bodies
        .iter()
        .map(|body| body["event"].as_str().expect("event"))
        .collect();
    assert_eq!(events, ["failed", "failed", "recovered"], "{bodies:#?}");
    let failed = &bodies[1];
    assert_eq!(failed["flow"], "nightly");
    assert_eq!(failed["run_id"], json!(second.run_id().expect("a run").0));
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["failure_kind"], "error");
    assert_eq!(failed["message"], "the source table is missing");
    assert_eq!(failed["attempt"], 1);
    let link = format!(
        "https://flowrun.example.com/ui/runs/{}",
        second.run_id().expect("a run").0
    );
    assert_eq!(failed["url"], json!(link));
    let text = failed["text"].as_str().expect("text");
    assert!(
        text.contains("nightly") && text.contains("the source table is missing"),
        "{text}"
    );
    assert_eq!(bodies[2]["run_id"], json!(recovered.id.0));
    assert_eq!(bodies[2]["status"], "success");
    assert_eq!(bodies[2]["failure_kind"], Value::Null);

    let text = metrics.encode();
    for line in [
        r#"flowrun_runs_finished_total{flow="nightly",status="failed",failure_kind="error"} 2"#,
        r#"flowrun_runs_finished_total{flow="nightly",status="success",failure_kind="none"} 2"#,
        r#"flowrun_notifications_total{event="failed",result="sent"} 2"#,
        r#"flowrun_notifications_total{event="recovered",result="sent"} 1"#,
        "flowrun_runs_in_progress 0",
        r#"flowrun_run_duration_seconds_count{flow="nightly"} 4"#,
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
}

#[tokio::test]
async fn successes_alone_notify_nobody() {
    let (url, mut received) = receiver(Answer::Ok).await;
    let notifier = Arc::new(Notifier::start(fast(&url), None).expect("notifier"));
    let setup = setup(notifier.clone()).await;
    setup.run(true).await.expect("succeeds");
    setup.run(true).await.expect("succeeds");
    notifier.flush().await;
    assert!(drain(&mut received).is_empty());
}

#[tokio::test]
async fn a_receiver_that_answers_500_gets_the_notification_again() {
    let (url, mut received) = receiver(Answer::FailOnce).await;
    let metrics = Metrics::new();
    let notifier = Arc::new(Notifier::start(fast(&url), Some(metrics.clone())).expect("notifier"));
    let setup = setup(notifier.clone()).await;
    assert!(setup.run(false).await.is_err());
    notifier.flush().await;
    let bodies = drain(&mut received);
    assert_eq!(bodies.len(), 2, "one 500, then the retry: {bodies:#?}");
    assert_eq!(bodies[0], bodies[1], "the retry sends the same notification");
    let text = metrics.encode();
    assert!(
        text.contains(r#"flowrun_notifications_total{event="failed",result="sent"} 1"#),
        "{text}"
    );
    assert!(!text.contains(r#"result="failed""#), "{text}");
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_hold_up_runs() {
    let (url, mut received) = receiver(Answer::Hang).await;
    let metrics = Metrics::new();
    let mut settings = fast(&url);
    settings.timeout = Duration::from_millis(300);
    let notifier = Arc::new(Notifier::start(settings, Some(metrics.clone())).expect("notifier"));
    let setup = setup(notifier.clone()).await;

    let first = setup.run(false).await.expect_err("fails");
    // The receiver now holds the first notification's request unanswered; the runs go on regardless.
    let hung = received.recv().await.expect("the receiver got the first POST");
    assert_eq!(hung["event"], "failed");
    let second = setup.run(false).await.expect_err("fails");
    let third = setup.run(true).await.expect("succeeds");
    for error in [&first, &second] {
        let ExecuteError::Failed { run, .. } = error else {
            panic!("recorded as failed: {error}");
        };
        assert_eq!(run.status, RunStatus::Failed);
    }
    assert_eq!(third.status, RunStatus::Success);
    let flow = setup
        .flows
        .find_by_name("nightly")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        flow.last_run_status.map(|s| s.as_str()),
        Some("success"),
        "every run's end was recorded while the receiver hung"
    );

    notifier.flush().await;
    let text = metrics.encode();
    assert!(
        text.contains(r#"flowrun_notifications_total{event="failed",result="failed"} 2"#),
        "each notification was given up after its tries: {text}"
    );
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let (url, _received) = receiver(Answer::Hang).await;
    let metrics = Metrics::new();
    let mut settings = fast(&url);
    settings.queue = 1;
    settings.timeout = Duration::from_secs(60);
    let notifier = Arc::new(Notifier::start(settings, Some(metrics.clone())).expect("notifier"));
    let setup = setup(notifier.clone()).await;
    for _ in 0..4 {
        assert!(setup.run(false).await.is_err());
    }
    let text = metrics.encode();
    assert!(
        text.contains(r#"flowrun_notifications_total{event="failed",result="dropped"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_flow_that_names_its_own_webhook_is_notified_there_as_well() {
    let (everyone, mut to_everyone) = receiver(Answer::Ok).await;
    let (own, mut to_own) = receiver(Answer::Ok).await;
    let notifier = Arc::new(Notifier::start(fast(&everyone), None).expect("notifier"));
    let setup = setup_with(notifier.clone(), json!({"class_name": "Scripted", "notify": own})).await;
    assert!(setup.run(false).await.is_err());
    setup.run(true).await.expect("succeeds");
    notifier.flush().await;
    for bodies in [drain(&mut to_everyone), drain(&mut to_own)] {
        let events: Vec<&str> = bodies.iter().filter_map(|body| body["event"].as_str()).collect();
        assert_eq!(events, ["failed", "recovered"], "{bodies:#?}");
    }
}

#[tokio::test]
async fn without_a_process_webhook_only_flows_that_name_one_are_notified() {
    let (own, mut to_own) = receiver(Answer::Ok).await;
    let metrics = Metrics::new();
    let notifier =
        Arc::new(Notifier::start(NotifySettings::default(), Some(metrics.clone())).expect("notifier"));
    let named = setup_with(notifier.clone(), json!({"class_name": "Scripted", "notify": own})).await;
    assert!(named.run(false).await.is_err());
    let silent = setup(notifier.clone()).await;
    assert!(silent.run(false).await.is_err());
    notifier.flush().await;
    assert_eq!(drain(&mut to_own).len(), 1);
    assert!(
        metrics
            .encode()
            .contains(r#"flowrun_notifications_total{event="failed",result="sent"} 1"#),
        "{}",
        metrics.encode()
    );
}

#[tokio::test]
async fn a_flow_webhook_from_a_variable_this_process_lacks_is_counted_as_failed_and_the_run_is_unchanged() {
    let metrics = Metrics::new();
    let notifier =
        Arc::new(Notifier::start(NotifySettings::default(), Some(metrics.clone())).expect("notifier"));
    let configuration = json!({"class_name": "Scripted", "notify": "${env:FLOWRUN_TEST_SURELY_UNSET_HOOK}"});
    let setup = setup_with(notifier.clone(), configuration).await;
    match setup.run(false).await {
        Err(ExecuteError::Failed { run, .. }) => assert_eq!(run.status, RunStatus::Failed),
        other => panic!("expected a recorded failure, got {other:?}"),
    }
    notifier.flush().await;
    let text = metrics.encode();
    assert!(
        text.contains(r#"flowrun_notifications_total{event="failed",result="failed"} 1"#),
        "{text}"
    );
}
