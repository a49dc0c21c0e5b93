//! The domain's values: data flows, their runs and the statuses they move through.
//!
//! Values are built by parsing (`FlowName::parse`, `RunInterval::from_secs`, `NewDataFlow::new`), so a value
//! that exists is valid and the rest of the code does not check again.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};

use crate::schedule::Schedule;
use serde_json::Value;
use thiserror::Error;

/// Longest accepted flow name, in characters. Names appear in URLs, tables and logs.
pub const MAX_NAME_CHARS: usize = 200;

/// Database identity of a [`DataFlow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataFlowId(pub i64);

impl fmt::Display for DataFlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Database identity of a [`DataFlowRun`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub i64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a value given to the domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    /// The name is empty or only whitespace.
    #[error("the flow name must not be empty")]
    EmptyName,
    /// The name is longer than [`MAX_NAME_CHARS`].
    #[error("the flow name is {0} characters long; at most {MAX_NAME_CHARS} are allowed")]
    NameTooLong(usize),
    /// The name contains a control character, which would break tables, logs and URLs.
    #[error("the flow name must not contain control characters")]
    NameHasControlCharacter,
    /// The run interval is zero or negative.
    #[error("the run interval must be a positive number of seconds, got {0}")]
    NonPositiveInterval(i64),
    /// The run interval is longer than a hundred years.
    #[error(
        "the run interval of {0} seconds is too long; at most {max} seconds (100 years) are allowed",
        max = crate::schedule::MAX_INTERVAL_SECS
    )]
    IntervalTooLong(i64),
    /// The configuration names no flow class.
    #[error("{0}")]
    Configuration(#[from] ConfigurationError),
    /// A status string is not one of the known values.
    #[error("unknown run status `{0}` (expected one of: pending, in_progress, success, failed)")]
    UnknownStatus(String),
    /// A trigger string is not one of the known values.
    #[error("unknown run trigger `{0}` (expected one of: schedule, manual, retry, api)")]
    UnknownTrigger(String),
    /// A failure kind string is not one of the known values.
    #[error(
        "unknown failure kind `{0}` (expected one of: error, panic, timeout, cancelled, interrupted, abandoned)"
    )]
    UnknownFailureKind(String),
    /// More retries than [`RetryPolicy::MAX_RETRIES`].
    #[error("at most {max} retries are allowed, got {0}", max = RetryPolicy::MAX_RETRIES)]
    TooManyRetries(u32),
    /// A retry backoff under a second or over a day.
    #[error("a retry backoff must be between 1 second and 1 day, got {0} seconds")]
    BackoffOutOfRange(u64),
    /// A timeout is zero or longer than a hundred years.
    #[error("a timeout must be between 1 second and 100 years, got {0} seconds")]
    TimeoutOutOfRange(u64),
}

/// Why a configuration names no usable flow class.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigurationError {
    /// The configuration is an object without a `class_name` key.
    #[error("the configuration has no `class_name`")]
    MissingClassName,
    /// `class_name` is present but not a non-empty string.
    #[error("the configuration's `class_name` must be a non-empty string")]
    ClassNameNotAString,
    /// The configuration is neither an object nor a string.
    #[error("the configuration must be a JSON object with a `class_name`, or a class name string; got {0}")]
    NotAnObject(&'static str),
}

/// A flow's unique name: non-empty, trimmed, at most [`MAX_NAME_CHARS`] characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowName(String);

impl FlowName {
    /// Parses a name, trimming surrounding whitespace.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(ValidationError::EmptyName);
        }
        let chars = name.chars().count();
        if chars > MAX_NAME_CHARS {
            return Err(ValidationError::NameTooLong(chars));
        }
        if name.chars().any(char::is_control) {
            return Err(ValidationError::NameHasControlCharacter);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FlowName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Seconds between a flow's scheduled runs: at least one second, at most
/// [`MAX_INTERVAL_SECS`](crate::schedule::MAX_INTERVAL_SECS) (a hundred years), so every time computed
/// from it stays within the calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunInterval(i64);

impl RunInterval {
    /// The interval a flow gets when none is given: one hour.
    pub const DEFAULT: RunInterval = RunInterval(3600);

    /// Parses a number of seconds; zero, negative and out-of-range values are refused.
    pub fn from_secs(secs: i64) -> Result<Self, ValidationError> {
        if secs <= 0 {
            Err(ValidationError::NonPositiveInterval(secs))
        } else if secs > crate::schedule::MAX_INTERVAL_SECS {
            Err(ValidationError::IntervalTooLong(secs))
        } else {
            Ok(Self(secs))
        }
    }

    /// The interval in seconds.
    pub fn as_secs(self) -> i64 {
        self.0
    }

    /// The schedule that runs a flow every this many seconds.
    pub fn schedule(self) -> Schedule {
        // In range by construction, and positive, so the conversion is exact.
        Schedule::Every(std::time::Duration::from_secs(self.0.unsigned_abs()))
    }
}

/// How long one run of a flow may take: 1 second to 100 years, whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timeout(u64);

impl Timeout {
    /// Parses a number of seconds; zero and more than a hundred years are refused.
    pub fn from_secs(secs: u64) -> Result<Self, ValidationError> {
        if secs == 0 || secs > crate::schedule::MAX_INTERVAL_SECS.unsigned_abs() {
            Err(ValidationError::TimeoutOutOfRange(secs))
        } else {
            Ok(Self(secs))
        }
    }

    /// The timeout in seconds.
    pub fn as_secs(self) -> u64 {
        self.0
    }

    /// The timeout as a duration.
    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

/// How a flow's failed runs are retried: up to `retries` more attempts, the first `backoff` after the
/// failure, each following one twice as long after its own (capped at [`RetryPolicy::MAX_BACKOFF`]), plus up
/// to a tenth more so that flows failing together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryPolicy {
    retries: u32,
    backoff: std::time::Duration,
}

impl RetryPolicy {
    /// No retries.
    pub const NONE: RetryPolicy = RetryPolicy {
        retries: 0,
        backoff: Self::DEFAULT_BACKOFF,
    };
    /// The most retries a flow may have.
    pub const MAX_RETRIES: u32 = 100;
    /// The first backoff when none is given.
    pub const DEFAULT_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);
    /// The longest wait before one retry.
    pub const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(86_400);

    /// A policy of `retries` retries (at most [`RetryPolicy::MAX_RETRIES`]) starting at `backoff` (1 s to
    /// [`RetryPolicy::MAX_BACKOFF`]; [`RetryPolicy::DEFAULT_BACKOFF`] when `None`).
    pub fn new(retries: u32, backoff: Option<std::time::Duration>) -> Result<Self, ValidationError> {
        if retries > Self::MAX_RETRIES {
            return Err(ValidationError::TooManyRetries(retries));
        }
        let backoff = backoff.unwrap_or(Self::DEFAULT_BACKOFF);
        if backoff < std::time::Duration::from_secs(1) || backoff > Self::MAX_BACKOFF {
            return Err(ValidationError::BackoffOutOfRange(backoff.as_secs()));
        }
        Ok(Self { retries, backoff })
    }

    /// How many retries a failed run gets.
    pub fn retries(self) -> u32 {
        self.retries
    }

    /// The wait before the first retry.
    pub fn backoff(self) -> std::time::Duration {
        self.backoff
    }

    /// The retry to schedule after attempt `attempt` failed at `ended_at`, if the policy allows one more.
    /// `spread` (any number, e.g. the run id) picks the jitter, so the same run always gets the same wait.
    pub fn after_failure(self, attempt: u32, ended_at: DateTime<Utc>, spread: u64) -> Option<PendingRetry> {
        if attempt > self.retries {
            return None;
        }
        let doublings = attempt.saturating_sub(1).min(30);
        let wait = self.backoff.saturating_mul(1 << doublings).min(Self::MAX_BACKOFF);
        let jitter = wait.mul_f64((spread.wrapping_mul(2_654_435_761) % 1000) as f64 / 10_000.0);
        let at = ended_at.checked_add_signed(Duration::from_std(wait + jitter).ok()?)?;
        Some(PendingRetry {
            at,
            attempt: attempt + 1,
        })
    }
}

/// A retry waiting for its time: the flow is due for it at `at`, as attempt number `attempt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PendingRetry {
    /// When the retry is due.
    pub at: DateTime<Utc>,
    /// The attempt number the retry's run gets (2 for the first retry).
    pub attempt: u32,
}

/// Where a run is in its lifecycle: `pending` → `in_progress` → `success` | `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// The run row exists; the flow has not started.
    Pending,
    /// The flow is running.
    InProgress,
    /// The flow finished without error.
    Success,
    /// The flow, its construction or its process failed.
    Failed,
}

impl RunStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [RunStatus; 4] = [Self::Pending, Self::InProgress, Self::Success, Self::Failed];

    /// The exact string stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Success => "success",
            Self::Failed => "failed",
        }
    }

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Success | Self::Failed)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ValidationError::UnknownStatus(s.to_owned()))
    }
}

/// The outcome of a flow's last finished run, kept on the flow itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LastRunStatus {
    /// The last run succeeded.
    Success,
    /// The last run failed.
    Failed,
}

impl LastRunStatus {
    /// The exact string stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failed => "failed",
        }
    }
}

impl From<LastRunStatus> for RunStatus {
    fn from(status: LastRunStatus) -> Self {
        match status {
            LastRunStatus::Success => RunStatus::Success,
            LastRunStatus::Failed => RunStatus::Failed,
        }
    }
}

impl fmt::Display for LastRunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LastRunStatus {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(Self::Success),
            "failed" => Ok(Self::Failed),
            other => Err(ValidationError::UnknownStatus(other.to_owned())),
        }
    }
}

/// Returns the flow class named by a configuration: `configuration["class_name"]` for an object, the
/// string itself for a JSON string.
pub fn class_name_of(configuration: &Value) -> Result<&str, ConfigurationError> {
    let name = match configuration {
        Value::Object(map) => match map.get("class_name") {
            None | Some(Value::Null) => return Err(ConfigurationError::MissingClassName),
            Some(Value::String(name)) => name.as_str(),
            Some(_) => return Err(ConfigurationError::ClassNameNotAString),
        },
        Value::String(name) => name.as_str(),
        Value::Null => return Err(ConfigurationError::NotAnObject("null")),
        Value::Bool(_) => return Err(ConfigurationError::NotAnObject("a boolean")),
        Value::Number(_) => return Err(ConfigurationError::NotAnObject("a number")),
        Value::Array(_) => return Err(ConfigurationError::NotAnObject("an array")),
    };
    if name.trim().is_empty() {
        return Err(ConfigurationError::ClassNameNotAString);
    }
    Ok(name)
}

/// A flow to be created: validated, not yet stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDataFlow {
    /// Unique name.
    pub name: FlowName,
    /// Free text for people.
    pub description: String,
    /// Whether the scheduler runs it.
    pub enabled: bool,
    /// The flow's configuration, naming its class.
    pub configuration: Value,
    /// When the scheduler runs it.
    pub schedule: Schedule,
    /// How long one run may take; `None`: no limit. Set it with [`NewDataFlow::with_timeout`].
    pub timeout: Option<Timeout>,
    /// How a failed run is retried (not at all by default). Set it with [`NewDataFlow::with_retry`].
    pub retry: RetryPolicy,
}

impl NewDataFlow {
    /// The same flow with a retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same flow with a run timeout.
    pub fn with_timeout(mut self, timeout: Option<Timeout>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Validates a flow to create. The configuration must name a class (see [`class_name_of`]).
    pub fn new(
        name: FlowName,
        description: impl Into<String>,
        enabled: bool,
        configuration: Value,
        schedule: Schedule,
    ) -> Result<Self, ValidationError> {
        class_name_of(&configuration)?;
        Ok(Self {
            name,
            description: description.into(),
            enabled,
            configuration,
            schedule,
            timeout: None,
            retry: RetryPolicy::NONE,
        })
    }
}

/// A stored data flow.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFlow {
    /// Identity.
    pub id: DataFlowId,
    /// Unique name.
    pub name: FlowName,
    /// Free text for people.
    pub description: String,
    /// Whether the scheduler runs it.
    pub enabled: bool,
    /// The flow's configuration: an object with `class_name` and the class's settings, or a class name.
    pub configuration: Value,
    /// When the scheduler runs it.
    pub schedule: Schedule,
    /// When it is next due; `None` when its schedule has no next time (never due until it is changed).
    pub next_run_at: Option<DateTime<Utc>>,
    /// How long one run may take before it is stopped and recorded as failed (`timeout`); `None`: no limit.
    pub timeout: Option<Timeout>,
    /// How a failed run is retried.
    pub retry: RetryPolicy,
    /// The retry of a failed run waiting for its time, if any.
    pub pending_retry: Option<PendingRetry>,
    /// What the flow's last successful run saved with [`crate::RunContext::set_state`] (an incremental
    /// copy's cursor, say); `None` until one did.
    pub state: Option<Value>,
    /// When its last run ended.
    pub last_run_at: Option<DateTime<Utc>>,
    /// How its last run ended.
    pub last_run_status: Option<LastRunStatus>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl DataFlow {
    /// The class that implements this flow: `configuration["class_name"]`, or the configuration itself
    /// when it is a string.
    pub fn flow_class(&self) -> Result<&str, ConfigurationError> {
        class_name_of(&self.configuration)
    }

    /// Whether the scheduler should run this flow at `now`: enabled, and its next run time has come.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.enabled && self.next_run_at.is_some_and(|next| next <= now)
    }
}

/// Who holds a run's lease, for the operator: host name and process id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOwner(String);

impl LeaseOwner {
    /// An owner from free text (truncated by the store if very long).
    pub fn new(owner: impl Into<String>) -> Self {
        Self(owner.into())
    }

    /// The owner as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One execution of a data flow.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFlowRun {
    /// Identity.
    pub id: RunId,
    /// The flow this run executed.
    pub data_flow_id: DataFlowId,
    /// Where the run is in its lifecycle.
    pub status: RunStatus,
    /// When the run was created.
    pub started_at: DateTime<Utc>,
    /// When it ended; `None` while it runs.
    pub ended_at: Option<DateTime<Utc>>,
    /// The error's message, for a failed run.
    pub error_message: Option<String>,
    /// The error's cause chain and backtrace, for a failed run.
    pub error_backtrace: Option<String>,
    /// Who runs it (host and pid), while it holds a lease.
    pub lease_owner: Option<String>,
    /// Until when the run is considered alive unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Which attempt at its slot this run is: 1, then 2, 3, … for retries.
    pub attempt: u32,
    /// What started it.
    pub trigger: Trigger,
    /// Why it failed, for a failed run.
    pub failure_kind: Option<FailureKind>,
    /// When someone asked to cancel it, and who.
    pub cancel_requested: Option<CancelRequest>,
    /// What the flow wrote into the run's output (bounded, see [`crate::MAX_OUTPUT_BYTES`]); empty when it
    /// wrote nothing. Written in batches while the run is in progress, and whole with its end.
    pub output: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A request to cancel a running run, as recorded on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest {
    /// When it was asked.
    pub at: DateTime<Utc>,
    /// Who asked (for example `cli host:pid` or `http 10.0.0.7`).
    pub by: String,
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The scheduler, because the flow was due.
    Schedule,
    /// A person, with `flowrun run`.
    Manual,
    /// The scheduler, retrying a failed run.
    Retry,
    /// A client of the HTTP API (`POST /data_flows/{name}/run`).
    Api,
}

impl Trigger {
    /// Every trigger.
    pub const ALL: [Trigger; 4] = [Self::Schedule, Self::Manual, Self::Retry, Self::Api];

    /// The exact string stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Retry => "retry",
            Self::Api => "api",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Trigger {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|trigger| trigger.as_str() == s)
            .ok_or_else(|| ValidationError::UnknownTrigger(s.to_owned()))
    }
}

/// Why a run failed, for machines: filter and count by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The flow returned an error, or could not be built.
    Error,
    /// The flow panicked.
    Panic,
    /// The flow ran past its timeout and was stopped.
    Timeout,
    /// Someone cancelled the run.
    Cancelled,
    /// The process running it was shut down (or interrupted with Ctrl-C) before it finished.
    Interrupted,
    /// The process running it died or stalled: its lease expired and the reaper closed it.
    Abandoned,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 6] = [
        Self::Error,
        Self::Panic,
        Self::Timeout,
        Self::Cancelled,
        Self::Interrupted,
        Self::Abandoned,
    ];

    /// The exact string stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Panic => "panic",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
            Self::Abandoned => "abandoned",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureKind {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| ValidationError::UnknownFailureKind(s.to_owned()))
    }
}

impl DataFlowRun {
    /// How long the run took, once it has ended.
    pub fn duration(&self) -> Option<Duration> {
        self.ended_at.map(|end| end - self.started_at)
    }

    /// The run as it is after [`RunOutcome`] has been recorded.
    pub fn finished(mut self, outcome: &RunOutcome) -> Self {
        self.status = outcome.status.into();
        self.ended_at = Some(outcome.ended_at);
        self.updated_at = outcome.ended_at;
        self.error_message.clone_from(&outcome.error_message);
        self.error_backtrace.clone_from(&outcome.error_backtrace);
        self.failure_kind = outcome.failure_kind;
        self.output.clone_from(&outcome.output);
        self
    }
}

/// How a run ended, as recorded on the run and on its flow.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// `success` or `failed`.
    pub status: LastRunStatus,
    /// When the run ended (also the flow's new `last_run_at`).
    pub ended_at: DateTime<Utc>,
    /// The error's message, for a failure.
    pub error_message: Option<String>,
    /// The error's cause chain and backtrace, for a failure.
    pub error_backtrace: Option<String>,
    /// Why it failed, for a failure.
    pub failure_kind: Option<FailureKind>,
    /// The retry this failure schedules on the flow, if its policy allows one; recorded with the end.
    pub retry: Option<PendingRetry>,
    /// The run's whole output, recorded with the end.
    pub output: String,
    /// The state to save on the flow with a success; `None` keeps the stored state.
    pub state: Option<Value>,
}

impl RunOutcome {
    /// A successful end at `ended_at`.
    pub fn success(ended_at: DateTime<Utc>) -> Self {
        Self {
            status: LastRunStatus::Success,
            ended_at,
            error_message: None,
            error_backtrace: None,
            failure_kind: None,
            retry: None,
            output: String::new(),
            state: None,
        }
    }

    /// A failed end at `ended_at` with the error's message and backtrace, of kind
    /// [`FailureKind::Error`] unless changed with [`RunOutcome::of_kind`].
    pub fn failure(ended_at: DateTime<Utc>, message: String, backtrace: String) -> Self {
        Self {
            status: LastRunStatus::Failed,
            ended_at,
            error_message: Some(message),
            error_backtrace: Some(backtrace),
            failure_kind: Some(FailureKind::Error),
            retry: None,
            output: String::new(),
            state: None,
        }
    }

    /// The same outcome with the run's output.
    pub fn with_output(mut self, output: String) -> Self {
        self.output = output;
        self
    }

    /// The same success, saving `state` on the flow (a failure never saves state).
    pub fn with_state(mut self, state: Option<Value>) -> Self {
        if self.status == LastRunStatus::Success {
            self.state = state;
        }
        self
    }

    /// The same failure, scheduling `retry`.
    pub fn retried(mut self, retry: Option<PendingRetry>) -> Self {
        self.retry = retry;
        self
    }

    /// The same failure with another kind.
    pub fn of_kind(mut self, kind: FailureKind) -> Self {
        self.failure_kind = Some(kind);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flow_names_are_trimmed_and_validated() {
        assert_eq!(
            FlowName::parse("  daily ").map(|n| n.to_string()),
            Ok("daily".into())
        );
        assert_eq!(FlowName::parse("   "), Err(ValidationError::EmptyName));
        assert_eq!(
            FlowName::parse("a\nb"),
            Err(ValidationError::NameHasControlCharacter)
        );
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        assert_eq!(
            FlowName::parse(&long),
            Err(ValidationError::NameTooLong(MAX_NAME_CHARS + 1))
        );
    }

    #[test]
    fn run_intervals_must_be_positive() {
        assert_eq!(
            RunInterval::from_secs(0),
            Err(ValidationError::NonPositiveInterval(0))
        );
        assert_eq!(
            RunInterval::from_secs(-5),
            Err(ValidationError::NonPositiveInterval(-5))
        );
        assert_eq!(RunInterval::from_secs(60).map(RunInterval::as_secs), Ok(60));
    }

    #[test]
    fn a_retry_policy_waits_longer_each_time_and_stops_after_its_retries() {
        let ended = DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_000);
        let policy = RetryPolicy::new(2, Some(std::time::Duration::from_secs(10))).expect("valid");
        let first = policy.after_failure(1, ended, 7).expect("a first retry");
        assert_eq!(first.attempt, 2);
        let waited = (first.at - ended).num_milliseconds();
        assert!(
            (10_000..=11_000).contains(&waited),
            "10 s plus at most a tenth: {waited} ms"
        );
        let second = policy.after_failure(2, ended, 7).expect("a second retry");
        let waited = (second.at - ended).num_milliseconds();
        assert!((20_000..=22_000).contains(&waited), "doubled: {waited} ms");
        assert_eq!(
            policy.after_failure(3, ended, 7),
            None,
            "two retries, three attempts"
        );
        assert_eq!(RetryPolicy::NONE.after_failure(1, ended, 7), None);
        let many = RetryPolicy::new(100, Some(RetryPolicy::MAX_BACKOFF)).expect("valid");
        let late = many.after_failure(60, ended, u64::MAX).expect("a retry");
        assert!(
            late.at - ended <= Duration::days(1) + Duration::hours(3),
            "capped at a day: {late:?}"
        );
        assert!(RetryPolicy::new(101, None).is_err());
        assert!(RetryPolicy::new(1, Some(std::time::Duration::from_millis(500))).is_err());
        assert!(RetryPolicy::new(1, Some(std::time::Duration::from_secs(86_401))).is_err());
    }

    #[test]
    fn run_intervals_beyond_a_hundred_years_are_refused() {
        // Seen in the wild: 10^13 s was accepted, then every scheduler cycle panicked on date arithmetic.
        assert_eq!(
            RunInterval::from_secs(10_000_000_000_000),
            Err(ValidationError::IntervalTooLong(10_000_000_000_000))
        );
        assert!(RunInterval::from_secs(i64::MAX).is_err());
        assert!(RunInterval::from_secs(crate::schedule::MAX_INTERVAL_SECS).is_ok());
    }

    #[test]
    fn statuses_have_exact_string_forms_both_ways() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
        }
        assert_eq!(RunStatus::InProgress.as_str(), "in_progress");
        assert!("running".parse::<RunStatus>().is_err());
        assert_eq!("failed".parse::<LastRunStatus>(), Ok(LastRunStatus::Failed));
        assert!("pending".parse::<LastRunStatus>().is_err());
    }

    #[test]
    fn class_name_comes_from_object_or_string_configuration() {
        assert_eq!(class_name_of(&json!({"class_name": "Noop", "x": 1})), Ok("Noop"));
        assert_eq!(class_name_of(&json!("Noop")), Ok("Noop"));
        assert_eq!(
            class_name_of(&json!({"x": 1})),
            Err(ConfigurationError::MissingClassName)
        );
        assert_eq!(
            class_name_of(&json!({"class_name": 3})),
            Err(ConfigurationError::ClassNameNotAString)
        );
        assert_eq!(
            class_name_of(&json!("")),
            Err(ConfigurationError::ClassNameNotAString)
        );
        assert_eq!(
            class_name_of(&json!([1])),
            Err(ConfigurationError::NotAnObject("an array"))
        );
    }

    #[test]
    fn new_flows_refuse_configurations_without_a_class() {
        let name = FlowName::parse("f").expect("valid name");
        let err = NewDataFlow::new(name, "", true, json!(42), RunInterval::DEFAULT.schedule());
        assert_eq!(
            err,
            Err(ValidationError::Configuration(ConfigurationError::NotAnObject(
                "a number"
            )))
        );
    }
}
