//! What `flowrun-server` is configured with: [`ServerArgs`] are its flags and environment variables,
//! [`ServerSettings`] the checked values that [`crate::serve`] runs with.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use flowrun_app::{DEFAULT_DATABASE_URL, Settings};
use flowrun_observe::NotifySettings;

use crate::listener::{ConnectionLimits, LimitArgs};
use crate::security::{Security, parse_networks};

/// The address the server listens on by default.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";

/// The seconds running flows get to finish after SIGTERM by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The longest tick or grace period accepted: a day. Longer values mean nothing useful, and timer
/// arithmetic on them (`Instant + period`) would overflow.
const MAX_SECONDS: f64 = 86_400.0;

/// Serve flowrun's heartbeat endpoint and read API.
///
/// Every flag has an environment variable of the same meaning; flatten these into an application's own
/// clap parser, or use [`ServerSettings::from_env`].
#[derive(Clone, Parser)]
#[command(name = "flowrun-server", version, about)]
pub struct ServerArgs {
    /// Database URL: sqlite://FILE, postgres://…, mysql://… or memory: (nothing kept)
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Address to listen on.
    #[arg(long, env = "FLOWRUN_BIND", default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,
    /// Token every route but /healthz requires in X-Heartbeat-Token (off when unset).
    #[arg(long, env = "FLOWRUN_HEARTBEAT_TOKEN", hide_env_values = true)]
    pub heartbeat_token: Option<String>,
    /// Token the dashboard's login page asks for (the heartbeat token when unset; open when both are).
    #[arg(long, env = "FLOWRUN_UI_TOKEN", hide_env_values = true)]
    pub ui_token: Option<String>,
    /// Comma-separated IPs/CIDRs allowed to call the API (everyone when unset).
    #[arg(long, env = "FLOWRUN_ALLOWED_IPS")]
    pub allowed_ips: Option<String>,
    /// Comma-separated IPs/CIDRs of proxies whose X-Forwarded-For is believed.
    #[arg(long, env = "FLOWRUN_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Run a scheduler cycle every N seconds inside the server (only on heartbeats when unset).
    #[arg(long, env = "FLOWRUN_TICK_SECS")]
    pub tick_secs: Option<f64>,
    /// Flows this server runs at once; due flows beyond it wait for a free slot.
    #[arg(long, env = "FLOWRUN_CONCURRENCY", default_value_t = flowrun_domain::Scheduler::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Delete finished runs older than this (90s, 15m, 12h, 30d), shortly after start and then hourly.
    #[arg(long, env = "FLOWRUN_RETENTION", value_name = "DURATION")]
    pub retention: Option<String>,
    /// Seconds running flows get to finish after SIGTERM before they are interrupted.
    #[arg(long, env = "FLOWRUN_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE.as_secs_f64())]
    pub shutdown_grace_secs: f64,
    /// Log as JSON lines instead of text (1/0, true/false, yes/no, on/off).
    #[arg(long, env = "FLOWRUN_LOG_JSON", action = clap::ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub log_json: bool,
    /// Webhook that gets a JSON POST when a run fails and when a flow recovers (off when unset).
    #[arg(long, env = "FLOWRUN_NOTIFY_URL", hide_env_values = true)]
    pub notify_url: Option<String>,
    /// Base URL of this server's pages, for the link to the run in each notification.
    #[arg(long, env = "FLOWRUN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Also serve GET /metrics on this address, open to whoever reaches it (no token, no allow-list).
    #[arg(long, env = "FLOWRUN_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
    /// Connection and request-size limits.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The flags hold tokens, and arguments end up in `{:?}` output: only the non-secret ones are shown.
impl std::fmt::Debug for ServerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerArgs")
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

/// A setting that cannot be used; [`SettingsError::Usage`] also carries `--help` and `--version`.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The command line did not parse (or asked for help or the version): print it with
    /// [`clap::Error::print`] and exit with [`clap::Error::exit_code`].
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// A value parsed but is out of range or malformed; the message names the variable.
    #[error("{0}")]
    Invalid(String),
}

impl ServerArgs {
    /// The checked settings. The database's lease length comes from `FLOWRUN_RUN_LEASE_SECS`, as for every
    /// flowrun binary.
    pub fn settings(self) -> Result<ServerSettings, SettingsError> {
        let invalid = |message: String| SettingsError::Invalid(message);
        let security = Security {
            token: self.heartbeat_token.filter(|t| !t.is_empty()),
            ui_token: self.ui_token.filter(|t| !t.is_empty()),
            allowed: self
                .allowed_ips
                .as_deref()
                .filter(|raw| !raw.trim().is_empty())
                .map(parse_networks)
                .transpose()
                .map_err(|e| invalid(format!("FLOWRUN_ALLOWED_IPS: {e}")))?,
            trusted_proxies: parse_networks(self.trusted_proxies.as_deref().unwrap_or(""))
                .map_err(|e| invalid(format!("FLOWRUN_TRUSTED_PROXIES: {e}")))?,
        };
        let tick = self
            .tick_secs
            .map(|s| seconds("FLOWRUN_TICK_SECS", s))
            .transpose()?;
        let shutdown_grace = seconds("FLOWRUN_SHUTDOWN_GRACE_SECS", self.shutdown_grace_secs)?;
        let retention = self
            .retention
            .as_deref()
            .map(crate::retention::parse_retention)
            .transpose()
            .map_err(invalid)?;
        let limits = self.limits.limits().map_err(|e| invalid(e.to_string()))?;
        let mut database = Settings::new(self.database_url)
            .with_lease_from_env()
            .map_err(|e| invalid(e.to_string()))?;
        database.connect_timeout = CONNECT_ATTEMPT_TIMEOUT;
        database.concurrency = flowrun_app::parse_concurrency(&self.concurrency.to_string())
            .map_err(|e| invalid(e.to_string()))?;
        let mut notify = match self.notify_url.as_deref().filter(|raw| !raw.trim().is_empty()) {
            Some(url) => NotifySettings::new(url).map_err(|e| invalid(e.to_string()))?,
            None => NotifySettings::default(),
        };
        notify.public_url = self
            .public_url
            .as_deref()
            .filter(|raw| !raw.trim().is_empty())
            .map(|raw| NotifySettings::parse_public_url(raw).map_err(|e| invalid(e.to_string())))
            .transpose()?;
        Ok(ServerSettings {
            database,
            notify,
            metrics_bind: self.metrics_bind,
            bind: self.bind,
            security,
            tick,
            retention,
            shutdown_grace,
            limits,
            log_json: self.log_json,
        })
    }
}

/// `value` seconds as a duration, if above 0 and at most a day.
fn seconds(name: &str, value: f64) -> Result<Duration, SettingsError> {
    if !value.is_finite() || value <= 0.0 || value > MAX_SECONDS {
        return Err(SettingsError::Invalid(format!(
            "{name} must be a number of seconds above 0 and at most {MAX_SECONDS}, got {value}"
        )));
    }
    Duration::try_from_secs_f64(value).map_err(|_| SettingsError::Invalid(format!("{name} is out of range")))
}

/// Everything [`crate::serve`] needs besides the flow classes, checked.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The database, the runs' lease length and how many flows run at once (`DATABASE_URL`,
    /// `FLOWRUN_RUN_LEASE_SECS`, `FLOWRUN_CONCURRENCY`). Its connect timeout bounds each start-up
    /// attempt; [`crate::serve`] retries an unreachable database until it answers or a signal comes.
    pub database: Settings,
    /// Where to listen (`FLOWRUN_BIND`); port 0 picks a free port, logged as `listening on …`.
    pub bind: SocketAddr,
    /// Tokens, allow-list and trusted proxies (`FLOWRUN_HEARTBEAT_TOKEN`, `FLOWRUN_UI_TOKEN`,
    /// `FLOWRUN_ALLOWED_IPS`, `FLOWRUN_TRUSTED_PROXIES`).
    pub security: Security,
    /// A scheduler cycle this often inside the server (`FLOWRUN_TICK_SECS`); `None`: only on heartbeats.
    pub tick: Option<Duration>,
    /// Finished runs older than this are deleted about hourly (`FLOWRUN_RETENTION`).
    pub retention: Option<Duration>,
    /// How long running flows may finish after a signal before they are interrupted
    /// (`FLOWRUN_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// Connection and request-size limits (`FLOWRUN_MAX_CONNECTIONS`, …).
    pub limits: ConnectionLimits,
    /// Failure/recovery notifications: the process's webhook (`FLOWRUN_NOTIFY_URL`, optional) and the
    /// pages' base URL (`FLOWRUN_PUBLIC_URL`); flows that name their own webhook get notified either way.
    pub notify: NotifySettings,
    /// A second listener serving only `GET /metrics`, without token or allow-list
    /// (`FLOWRUN_METRICS_BIND`); `/metrics` on the main listener is there either way, guarded.
    pub metrics_bind: Option<SocketAddr>,
    /// Whether [`crate::init_logging`] writes JSON lines (`FLOWRUN_LOG_JSON`); [`crate::serve`] itself
    /// sets up no logging.
    pub log_json: bool,
}

impl ServerSettings {
    /// The stock binary's defaults for `database_url`: listening on 127.0.0.1:8080, no token or
    /// allow-list, no tick, no retention, a 30 s grace period, the default limits.
    pub fn new(database_url: impl Into<String>) -> Self {
        let mut database = Settings::new(database_url);
        database.connect_timeout = CONNECT_ATTEMPT_TIMEOUT;
        Self {
            database,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            security: Security::default(),
            tick: None,
            retention: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            limits: ConnectionLimits::default(),
            notify: NotifySettings::default(),
            metrics_bind: None,
            log_json: false,
        }
    }

    /// The settings of this process's flags and environment, exactly as the stock `flowrun-server` reads
    /// them.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_args(std::env::args_os())
    }

    /// The settings of `args` (the first one is the program's name) and the environment.
    pub fn from_args<I, T>(args: I) -> Result<Self, SettingsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        ServerArgs::try_parse_from(args)?.settings()
    }
}

/// Each start-up attempt to reach the database waits this long; the retry loop provides the patience.
pub(crate) const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
