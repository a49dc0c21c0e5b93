//! `flowrun-server`: serves the heartbeat endpoint and the read API; optionally ticks the scheduler.
//!
//! Start-up retries an unreachable database instead of dying. On SIGTERM or Ctrl-C it stops accepting
//! requests and starting runs, lets running flows finish within the grace period, then interrupts the rest
//! so their runs are recorded as `failed`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use flowrun_app::{
    App, AppError, ConnectError, ConnectProblem, DEFAULT_DATABASE_URL, MigratePolicy, Settings,
    builtin_registry,
};
use flowrun_domain::ShutdownController;
use flowrun_server::routes::Tick;
use flowrun_server::{LimitArgs, Security, parse_networks, router};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Serve flowrun's heartbeat endpoint and read API.
#[derive(Debug, Parser)]
#[command(name = "flowrun-server", version, about)]
struct Args {
    /// Database URL: sqlite://FILE, postgres://… or mysql://…
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// Address to listen on.
    #[arg(long, env = "FLOWRUN_BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Token every route but /healthz requires in X-Heartbeat-Token (off when unset).
    #[arg(long, env = "FLOWRUN_HEARTBEAT_TOKEN", hide_env_values = true)]
    heartbeat_token: Option<String>,
    /// Comma-separated IPs/CIDRs allowed to call the API (everyone when unset).
    #[arg(long, env = "FLOWRUN_ALLOWED_IPS")]
    allowed_ips: Option<String>,
    /// Comma-separated IPs/CIDRs of proxies whose X-Forwarded-For is believed.
    #[arg(long, env = "FLOWRUN_TRUSTED_PROXIES")]
    trusted_proxies: Option<String>,
    /// Run a scheduler cycle every N seconds inside the server (only on heartbeats when unset).
    #[arg(long, env = "FLOWRUN_TICK_SECS")]
    tick_secs: Option<f64>,
    /// Flows this server runs at once; due flows beyond it wait for a free slot.
    #[arg(long, env = "FLOWRUN_CONCURRENCY", default_value_t = flowrun_domain::Scheduler::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Delete finished runs older than this (90s, 15m, 12h, 30d), shortly after start and then hourly.
    #[arg(long, env = "FLOWRUN_RETENTION", value_name = "DURATION")]
    retention: Option<String>,
    /// Seconds running flows get to finish after SIGTERM before they are interrupted.
    #[arg(long, env = "FLOWRUN_SHUTDOWN_GRACE_SECS", default_value_t = 30.0)]
    shutdown_grace_secs: f64,
    /// Log as JSON lines instead of text (1/0, true/false, yes/no, on/off).
    #[arg(long, env = "FLOWRUN_LOG_JSON", action = clap::ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    log_json: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

/// The longest tick or grace period accepted: a day. Longer values mean nothing useful, and timer
/// arithmetic on them (`Instant + period`) would overflow.
const MAX_SECONDS: f64 = 86_400.0;

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    if !value.is_finite() || value <= 0.0 || value > MAX_SECONDS {
        bail!("{name} must be a number of seconds above 0 and at most {MAX_SECONDS}, got {value}");
    }
    Duration::try_from_secs_f64(value).with_context(|| format!("{name} is out of range"))
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // PostgreSQL's notices for every `IF NOT EXISTS` are expected, not news.
    let filter = match flowrun_app::QUIET_NOTICES.parse() {
        Ok(directive) if !filter.to_string().contains("sqlx") => filter.add_directive(directive),
        _ => filter,
    };
    // Escape codes only where a terminal reads them: not in files, pipes or with NO_COLOR.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logging(args.log_json);
    let url = args.database_url.clone();
    match serve(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Scrubbed again: whatever a driver said, the URL's secrets stay out of the log.
            error!("{}", flowrun_app::scrub(&format!("{error:#}"), &url));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let security = Security {
        token: args.heartbeat_token.filter(|t| !t.is_empty()),
        allowed: args
            .allowed_ips
            .as_deref()
            .filter(|raw| !raw.trim().is_empty())
            .map(parse_networks)
            .transpose()
            .map_err(|e| anyhow::anyhow!("FLOWRUN_ALLOWED_IPS: {e}"))?,
        trusted_proxies: parse_networks(args.trusted_proxies.as_deref().unwrap_or(""))
            .map_err(|e| anyhow::anyhow!("FLOWRUN_TRUSTED_PROXIES: {e}"))?,
    };
    let tick = args
        .tick_secs
        .map(|s| seconds("FLOWRUN_TICK_SECS", s))
        .transpose()?;
    let grace = seconds("FLOWRUN_SHUTDOWN_GRACE_SECS", args.shutdown_grace_secs)?;
    let retention = args
        .retention
        .as_deref()
        .map(flowrun_server::retention::parse_retention)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let limits = args.limits.limits()?;
    let mut settings = Settings::new(args.database_url).with_lease_from_env()?;
    settings.concurrency = flowrun_app::parse_concurrency(&args.concurrency.to_string())?;
    // Each attempt waits this long; the retry loop provides the patience.
    settings.connect_timeout = Duration::from_secs(5);

    let (stop_sender, stop) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_sender.send(true);
    });

    let Some(app) = open_with_retry(&settings, stop.clone()).await? else {
        info!("stopped before the database answered");
        return Ok(());
    };
    let (controller, signal) = ShutdownController::new();
    let app = app.with_shutdown(signal.clone());

    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let address = listener
        .local_addr()
        .context("cannot read the listening address")?;
    log_security(&security);
    info!(database = app.masked_url(), "listening on {address}");

    let ticker = tick.map(|every| tokio::spawn(tick_loop(app.clone(), every, stop.clone())));
    if let Some(retention) = retention {
        tokio::spawn(flowrun_server::retention::retention_loop(
            app.management.clone(),
            retention,
            flowrun_server::retention::FIRST_PRUNE_AFTER,
            flowrun_server::retention::PRUNE_EVERY,
            stop.clone(),
        ));
    }
    let scheduler = app.scheduler.clone();
    let mut routes = router(app, security);
    if let Some(every) = tick {
        routes = routes.layer(axum::Extension(Tick {
            every,
            since: std::time::Instant::now(),
        }));
    }
    let controller = Arc::new(controller);
    let shutdown = tokio::spawn(drive_shutdown(Arc::clone(&controller), stop.clone(), grace));

    let mut http_stop = stop.clone();
    let server = flowrun_server::listener::serve(
        listener,
        flowrun_server::with_limits(routes, limits),
        limits,
        async move {
            let _ = http_stop.wait_for(|stopped| *stopped).await;
        },
    );
    let served = async {
        let result = server.await;
        if let Some(ticker) = ticker {
            let _ = ticker.await;
        }
        // Runs started by heartbeats and ticks run on their own tasks: let them end (or be interrupted
        // after the grace period) and record it.
        scheduler.wait_idle().await;
        result
    };
    // Bounded: after the grace period, interrupted flows get a few seconds to record their end.
    let deadline = async {
        let mut stop = stop.clone();
        let _ = stop.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(grace + Duration::from_secs(10)).await;
    };
    tokio::select! {
        result = served => result.context("the HTTP server failed")?,
        () = deadline => warn!("some work did not end after the grace period; exiting anyway (the reaper will close its runs)"),
    }
    shutdown.abort();
    info!(phase = ?signal.phase(), "stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Drain at the signal, abort after the grace period.
async fn drive_shutdown(
    controller: Arc<ShutdownController>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let _ = stop.wait_for(|stopped| *stopped).await;
    info!(
        grace_secs = grace.as_secs_f64(),
        "shutting down: no new runs start; running flows may finish"
    );
    controller.drain();
    tokio::time::sleep(grace).await;
    warn!("grace period over: interrupting running flows and recording them as failed");
    controller.abort();
}

async fn open_with_retry(
    settings: &Settings,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<App>> {
    let mut delay = Duration::from_millis(500);
    loop {
        match App::open(settings, builtin_registry(), MigratePolicy::SqliteOnly).await {
            Ok(app) => return Ok(Some(app)),
            // A missing SQLite directory will not appear by waiting: it is a wrong DATABASE_URL.
            Err(
                error @ AppError::Connect(ConnectError::Connect {
                    problem: ConnectProblem::MissingDirectory { .. },
                    ..
                }),
            ) => return Err(error.into()),
            Err(error @ (AppError::Connect(ConnectError::Connect { .. }) | AppError::NotMigrated { .. })) => {
                warn!(%error, retry_in_secs = delay.as_secs_f64(), "database not ready; retrying");
            }
            Err(error) => return Err(error.into()),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stopped| *stopped) => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Starts a scheduler cycle every `every` until `stop`. A cycle only claims and starts due flows, so a
/// long flow never delays the next tick; a cycle that fails or panics is logged, shows in `/healthz`, and
/// the next tick starts afresh.
async fn tick_loop(app: App, every: Duration, mut stop: watch::Receiver<bool>) {
    info!(
        every_secs = every.as_secs_f64(),
        concurrency = app.scheduler.concurrency(),
        "scheduler tick enabled"
    );
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        match AssertUnwindSafe(app.scheduler.dispatch()).catch_unwind().await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => warn!(%error, "scheduler tick failed"),
            Err(_) => {
                error!("a scheduler cycle panicked; the next tick starts a new one");
                app.scheduler.note_failed_cycle("a scheduler cycle panicked");
            }
        }
    }
}

fn log_security(security: &Security) {
    match &security.token {
        Some(_) => info!("heartbeat token: required in X-Heartbeat-Token on every route but /healthz"),
        None => warn!("heartbeat token: DISABLED (set FLOWRUN_HEARTBEAT_TOKEN to require one)"),
    }
    match &security.allowed {
        Some(nets) => info!(allowed = ?nets, "IP allow-list: enabled"),
        None => warn!("IP allow-list: DISABLED (set FLOWRUN_ALLOWED_IPS to restrict callers)"),
    }
    if !security.trusted_proxies.is_empty() {
        info!(trusted = ?security.trusted_proxies, "X-Forwarded-For believed from these proxies only");
    }
}
