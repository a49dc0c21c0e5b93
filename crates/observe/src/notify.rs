//! Failure and recovery notifications: a JSON POST to a webhook when a run fails and when a flow recovers
//! (its first success after a failure), sent in the background so that a slow or dead receiver never
//! delays a run or changes its record.
//!
//! A notification goes to the process's webhook ([`NOTIFY_URL_ENV`]) and to the flow's own (its
//! configuration's `notify`, see [`flowrun_domain::NOTIFY_KEY`]), once to each distinct URL.
//!
//! Runs put notifications on a bounded queue (never waiting: a full queue drops the notification, logs and
//! counts it); one task sends them in order, each with a timeout and retries with growing pauses.

use std::time::Duration;

use flowrun_domain::{DataFlow, DataFlowRun, LastRunStatus, RunObserver, RunStatus};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use url::Url;

use crate::metrics::{Metrics, NotificationResult};

/// The environment variable naming the webhook.
pub const NOTIFY_URL_ENV: &str = "FLOWRUN_NOTIFY_URL";
/// The environment variable with the base URL of the server's pages, for each notification's `url`.
pub const PUBLIC_URL_ENV: &str = "FLOWRUN_PUBLIC_URL";

/// The longest error message a notification carries, in characters; longer ones are cut.
const MAX_MESSAGE_CHARS: usize = 2_000;
/// The longest message quoted in the one-line `text`, in characters.
const MAX_TEXT_MESSAGE_CHARS: usize = 300;

/// Why the notifier could not be set up.
#[derive(Debug, Error)]
pub enum NotifyError {
    /// The webhook URL is not an http(s) URL.
    #[error("{name} must be an http:// or https:// URL, got `{shown}`")]
    BadUrl {
        /// The setting.
        name: &'static str,
        /// The value, its secrets masked.
        shown: String,
    },
    /// The HTTP client could not be built.
    #[error("could not set up the notification HTTP client: {0}")]
    Client(String),
}

/// How to notify: where, and how patiently.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// The webhook that receives every flow's notifications; `None` leaves only the flows' own webhooks.
    pub url: Option<Url>,
    /// The base URL of the server's pages; each notification links to the run's dashboard page, `<public_url>/ui/runs/<id>`.
    pub public_url: Option<Url>,
    /// The pauses between tries: a notification is tried once more than there are pauses.
    pub retry_delays: Vec<Duration>,
    /// How long one try may take, connection included.
    pub timeout: Duration,
    /// How many notifications may wait to be sent; more are dropped (and counted).
    pub queue: usize,
}

impl NotifySettings {
    /// Three tries, 1 s then 4 s apart.
    pub const DEFAULT_RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(4)];
    /// How long one try may take.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// How many notifications may wait.
    pub const DEFAULT_QUEUE: usize = 256;

    /// Notifications to `url` (and to flows' own webhooks) with the default retries, timeout and queue.
    pub fn new(url: &str) -> Result<Self, NotifyError> {
        Ok(Self {
            url: Some(parse_http_url(NOTIFY_URL_ENV, url)?),
            ..Self::default()
        })
    }

    /// Checks a [`PUBLIC_URL_ENV`] value: an http(s) URL.
    pub fn parse_public_url(raw: &str) -> Result<Url, NotifyError> {
        parse_http_url(PUBLIC_URL_ENV, raw)
    }

    /// The settings [`NOTIFY_URL_ENV`] and [`PUBLIC_URL_ENV`] give (both optional).
    pub fn from_env() -> Result<Self, NotifyError> {
        Ok(Self {
            url: non_empty_env(NOTIFY_URL_ENV)
                .map(|raw| parse_http_url(NOTIFY_URL_ENV, &raw))
                .transpose()?,
            public_url: non_empty_env(PUBLIC_URL_ENV)
                .map(|raw| parse_http_url(PUBLIC_URL_ENV, &raw))
                .transpose()?,
            ..Self::default()
        })
    }
}

impl Default for NotifySettings {
    /// No process-wide webhook (flows' own still get theirs), default retries, timeout and queue.
    fn default() -> Self {
        Self {
            url: None,
            public_url: None,
            retry_delays: Self::DEFAULT_RETRY_DELAYS.to_vec(),
            timeout: Self::DEFAULT_TIMEOUT,
            queue: Self::DEFAULT_QUEUE,
        }
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_http_url(name: &'static str, raw: &str) -> Result<Url, NotifyError> {
    match Url::parse(raw.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        Ok(url) => Err(NotifyError::BadUrl {
            name,
            shown: mask_url(&url),
        }),
        Err(_) => Err(NotifyError::BadUrl {
            name,
            shown: "<unparsable>".to_owned(),
        }),
    }
}

/// A webhook URL fit for a log: scheme, host and port only. Incoming-webhook URLs carry their secret in
/// the path or query (and some in the user part), so all of those are masked.
pub fn mask_url(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = if url.path() == "/" && url.query().is_none() {
        ""
    } else {
        "/<masked>"
    };
    format!("{}://{host}{port}{rest}", url.scheme())
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// A run failed.
    Failed,
    /// A run succeeded after the flow's previous run had failed.
    Recovered,
}

impl Event {
    /// `failed` or `recovered`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Recovered => "recovered",
        }
    }

    /// The event a run's end is, if any: a recorded failure, or a success right after a failure.
    pub fn of(run: &DataFlowRun, previous: Option<LastRunStatus>) -> Option<Self> {
        match run.status {
            RunStatus::Failed => Some(Self::Failed),
            RunStatus::Success if previous == Some(LastRunStatus::Failed) => Some(Self::Recovered),
            _ => None,
        }
    }
}

/// The JSON body of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// `failed` or `recovered`.
    pub event: Event,
    /// The flow's name.
    pub flow: String,
    /// The run.
    pub run_id: i64,
    /// The run's status: `failed` or `success`.
    pub status: String,
    /// Why it failed (`error`, `panic`, `timeout`, …); null for a recovery.
    pub failure_kind: Option<String>,
    /// The run's error message (cut at 2,000 characters); null for a recovery.
    pub message: Option<String>,
    /// Which attempt at its slot the run was.
    pub attempt: u32,
    /// `<FLOWRUN_PUBLIC_URL>/ui/runs/<id>` (the run's dashboard page), when that is set.
    pub url: Option<String>,
    /// One line for Slack/Mattermost-style incoming webhooks, which show this field.
    pub text: String,
}

impl Notification {
    /// The notification of `run`'s end, if that end is an [`Event`].
    pub fn of(
        flow: &DataFlow,
        run: &DataFlowRun,
        previous: Option<LastRunStatus>,
        public_url: Option<&Url>,
    ) -> Option<Self> {
        let event = Event::of(run, previous)?;
        let url =
            public_url.map(|base| format!("{}/ui/runs/{}", base.as_str().trim_end_matches('/'), run.id.0));
        let failure_kind = run.failure_kind.map(|kind| kind.as_str().to_owned());
        let message = match event {
            Event::Failed => run.error_message.as_deref().map(|m| cut(m, MAX_MESSAGE_CHARS)),
            Event::Recovered => None,
        };
        let mut text = match event {
            Event::Failed => format!(
                "flowrun: flow `{}` failed ({}), run {} attempt {}: {}",
                flow.name,
                failure_kind.as_deref().unwrap_or("error"),
                run.id.0,
                run.attempt,
                one_line(&cut(
                    message.as_deref().unwrap_or("no message"),
                    MAX_TEXT_MESSAGE_CHARS
                )),
            ),
            Event::Recovered => format!(
                "flowrun: flow `{}` recovered: run {} succeeded",
                flow.name, run.id.0
            ),
        };
        if let Some(url) = &url {
            text.push_str(" — ");
            text.push_str(url);
        }
        Some(Self {
            event,
            flow: flow.name.to_string(),
            run_id: run.id.0,
            status: run.status.as_str().to_owned(),
            failure_kind,
            message,
            attempt: run.attempt,
            url,
            text,
        })
    }
}

fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

enum Job {
    Send(Box<(Notification, Url)>),
    /// Answered once every notification queued before it has been sent or given up.
    Flush(oneshot::Sender<()>),
}

/// Sends failure and recovery notifications in the background. As a [`RunObserver`] it queues one for
/// every recorded failed run and every recorded success that follows a failure.
///
/// Must be started inside a Tokio runtime; its sending task ends when the notifier is dropped.
#[derive(Debug)]
pub struct Notifier {
    queue: mpsc::Sender<Job>,
    url: Option<Url>,
    public_url: Option<Url>,
    metrics: Option<Metrics>,
}

impl Notifier {
    /// Starts the sending task. `metrics`, when given, counts every notification's result.
    pub fn start(settings: NotifySettings, metrics: Option<Metrics>) -> Result<Self, NotifyError> {
        // reqwest is built without a default TLS provider (see the workspace's Cargo.toml); ring is the
        // one sqlx already builds. An error only means another part of the process installed one first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .map_err(|e| NotifyError::Client(e.without_url().to_string()))?;
        let (queue, jobs) = mpsc::channel(settings.queue.max(1));
        let public_url = settings.public_url.clone();
        match &settings.url {
            Some(url) => info!(webhook = %mask_url(url), "failure/recovery notifications enabled"),
            None => tracing::debug!("failure/recovery notifications only to flows that name a webhook"),
        }
        tokio::spawn(
            Sender {
                client,
                retry_delays: settings.retry_delays,
                metrics: metrics.clone(),
            }
            .run(jobs),
        );
        Ok(Self {
            queue,
            url: settings.url,
            public_url,
            metrics,
        })
    }

    /// Queues `notification` for `to` without waiting; when the queue is full it is dropped, logged and
    /// counted.
    pub fn queue(&self, notification: Notification, to: Url) {
        let event = notification.event;
        if let Err(error) = self.queue.try_send(Job::Send(Box::new((notification, to)))) {
            let why = match error {
                mpsc::error::TrySendError::Full(_) => "the queue is full",
                mpsc::error::TrySendError::Closed(_) => "the sender has stopped",
            };
            warn!(event = event.as_str(), "notification dropped: {why}");
            if let Some(metrics) = &self.metrics {
                metrics.count_notification(event.as_str(), NotificationResult::Dropped);
            }
        }
    }

    /// Waits until every notification queued so far has been sent or given up (for a process about to
    /// exit, such as the CLI after a run).
    pub async fn flush(&self) {
        let (done, finished) = oneshot::channel();
        if self.queue.send(Job::Flush(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

impl RunObserver for Notifier {
    fn run_ended(&self, flow: &DataFlow, run: &DataFlowRun, previous: Option<LastRunStatus>, recorded: bool) {
        // An unrecorded end is not what the run says (it will be reaped and say "abandoned"): telling
        // someone about it would contradict the record.
        if !recorded {
            return;
        }
        let Some(notification) = Notification::of(flow, run, previous, self.public_url.as_ref()) else {
            return;
        };
        let own = match flowrun_domain::notify_url(&flow.configuration) {
            None => None,
            Some(Ok(raw)) => match parse_http_url("notify", &raw) {
                Ok(url) => Some(url),
                Err(error) => {
                    self.unusable(&notification, &error.to_string());
                    None
                }
            },
            // Checked when the flow was stored; what remains is a variable this process lacks.
            Some(Err(reason)) => {
                self.unusable(&notification, &reason);
                None
            }
        };
        match (self.url.clone(), own) {
            (Some(all), Some(own)) if own != all => {
                self.queue(notification.clone(), all);
                self.queue(notification, own);
            }
            (Some(url), _) | (None, Some(url)) => self.queue(notification, url),
            (None, None) => {}
        }
    }
}

impl Notifier {
    fn unusable(&self, notification: &Notification, reason: &str) {
        let event = notification.event.as_str();
        warn!(event, flow = %notification.flow, run_id = notification.run_id,
            "the flow's own notification webhook is unusable: {reason}");
        if let Some(metrics) = &self.metrics {
            metrics.count_notification(event, NotificationResult::Failed);
        }
    }
}

/// The background half: sends queued notifications one after another.
struct Sender {
    client: reqwest::Client,
    retry_delays: Vec<Duration>,
    metrics: Option<Metrics>,
}

/// Why one try failed, and whether trying again could help.
struct TryFailed {
    reason: String,
    retry: bool,
}

impl Sender {
    async fn run(self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            match job {
                Job::Send(job) => self.send(&job.0, &job.1).await,
                Job::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    async fn send(&self, notification: &Notification, to: &Url) {
        let event = notification.event.as_str();
        let webhook = mask_url(to);
        let body = match serde_json::to_vec(notification) {
            Ok(body) => body,
            Err(error) => {
                warn!(%error, event, "could not encode a notification");
                self.count(event, NotificationResult::Failed);
                return;
            }
        };
        let mut delays = self.retry_delays.iter();
        let mut tries = 0;
        loop {
            tries += 1;
            let failed = match self.try_once(to, body.clone()).await {
                Ok(()) => {
                    info!(event, flow = %notification.flow, run_id = notification.run_id, %webhook, tries,
                        "notification sent");
                    self.count(event, NotificationResult::Sent);
                    return;
                }
                Err(failed) => failed,
            };
            match delays.next() {
                Some(delay) if failed.retry => {
                    warn!(event, flow = %notification.flow, run_id = notification.run_id, %webhook, tries,
                        reason = %failed.reason, retry_in_ms = delay.as_millis() as u64,
                        "notification not delivered; trying again");
                    tokio::time::sleep(*delay).await;
                }
                _ => {
                    warn!(event, flow = %notification.flow, run_id = notification.run_id, %webhook, tries,
                        reason = %failed.reason, "notification given up");
                    self.count(event, NotificationResult::Failed);
                    return;
                }
            }
        }
    }

    async fn try_once(&self, to: &Url, body: Vec<u8>) -> Result<(), TryFailed> {
        let answer = self
            .client
            .post(to.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            // The error's text would include the URL, and with it the webhook's secret.
            .map_err(|error| TryFailed {
                reason: error.without_url().to_string(),
                retry: true,
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        Err(TryFailed {
            reason: format!("the receiver answered {status}"),
            // Other 4xx answers say the request itself is wrong: the same body will not fare better.
            retry: status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408,
        })
    }

    fn count(&self, event: &str, result: NotificationResult) {
        if let Some(metrics) = &self.metrics {
            metrics.count_notification(event, result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_secrets_never_reach_the_log() {
        let url =
            Url::parse("https://user:pw@hooks.example.com:8443/services/T0/B0/XXXX?token=1").expect("url");
        assert_eq!(mask_url(&url), "https://hooks.example.com:8443/<masked>");
        let bare = Url::parse("http://127.0.0.1:9000/").expect("url");
        assert_eq!(mask_url(&bare), "http://127.0.0.1:9000");
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(NotifySettings::new("ftp://example.com/x").is_err());
        assert!(NotifySettings::new("not a url").is_err());
        let error = NotifySettings::new("file:///etc/secret").expect_err("refused");
        assert!(!error.to_string().contains("secret"), "{error}");
        assert!(NotifySettings::new("https://hooks.example.com/x").is_ok());
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_CHARS + 5);
        let cut = cut(&long, MAX_MESSAGE_CHARS);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
