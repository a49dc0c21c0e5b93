//! Running the server: [`serve`] for an application's own `main`, [`main_with`] for all of the stock
//! binary's `main`.
//!
//! Start-up retries an unreachable database instead of dying. On SIGTERM or Ctrl-C the server stops
//! accepting requests and starting runs, lets running flows finish within the grace period, then
//! interrupts the rest so their runs are recorded as `failed`.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use flowrun_app::{App, AppError, ConnectError, ConnectProblem, MigratePolicy, Settings};
use flowrun_domain::{ClassRegistry, ShutdownController};
use futures::FutureExt;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::routes::Tick;
use crate::security::Security;
use crate::settings::{ServerArgs, ServerSettings, SettingsError};
use crate::{router, with_limits};
use flowrun_observe::{Metrics, Notifier, Observers};

/// How long a stopping server waits for its queued notifications to be sent.
const NOTIFY_FLUSH_ON_EXIT: Duration = Duration::from_secs(10);

/// Why [`serve`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened for good: a wrong URL, a missing SQLite directory, a server
    /// database without the schema… (an unreachable one is retried, not reported).
    #[error(transparent)]
    Open(#[from] AppError),
    /// The address could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The bound socket did not say its address.
    #[error("cannot read the listening address")]
    LocalAddress(#[source] std::io::Error),
    /// Accepting connections failed.
    #[error("the HTTP server failed")]
    Http(#[source] std::io::Error),
    /// The notifier could not be started.
    #[error(transparent)]
    Notify(#[from] flowrun_observe::NotifyError),
}

/// Serves the heartbeat endpoint and the read API with the flow classes of `registry` until SIGTERM or
/// Ctrl-C, then shuts down gracefully (see the module documentation). Logging is the caller's to set up
/// ([`init_logging`] does it as the stock binary does).
///
/// ```no_run
/// # async fn example() -> Result<(), flowrun_server::ServeError> {
/// let mut registry = flowrun_app::builtin_registry();
/// // registry.register(…) your own classes here.
/// let mut settings = flowrun_server::ServerSettings::new("sqlite://flowrun.db");
/// settings.tick = Some(std::time::Duration::from_secs(10));
/// flowrun_server::serve(registry, settings).await
/// # }
/// ```
pub async fn serve(registry: ClassRegistry, settings: ServerSettings) -> Result<(), ServeError> {
    serve_until(registry, settings, wait_for_signal()).await
}

/// [`serve`], stopping when `shutdown` completes instead of on a signal (for an application that handles
/// signals itself, or a test).
pub async fn serve_until(
    registry: ClassRegistry,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let ServerSettings {
        database,
        bind,
        security,
        tick,
        retention,
        shutdown_grace: grace,
        limits,
        notify,
        metrics_bind,
        log_json: _,
    } = settings;

    let (stop_sender, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_sender.send(true);
    });

    let Some(app) = open_with_retry(&database, registry, stop.clone()).await? else {
        info!("stopped before the database answered");
        return Ok(());
    };
    let metrics = Metrics::new();
    let notifier = Some(Arc::new(Notifier::start(notify, Some(metrics.clone()))?));
    let observers = Observers {
        metrics: metrics.clone(),
        notifier,
    };
    let (controller, signal) = ShutdownController::new();
    let app = app
        .with_observer(Arc::new(observers.clone()))
        .with_shutdown(signal.clone());

    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|source| ServeError::Bind {
            address: bind,
            source,
        })?;
    let address = listener.local_addr().map_err(ServeError::LocalAddress)?;
    log_security(&security);
    info!(database = app.masked_url(), "listening on {address}");

    let ticker = tick.map(|every| tokio::spawn(tick_loop(app.clone(), every, stop.clone())));
    if let Some(retention) = retention {
        tokio::spawn(crate::retention::retention_loop(
            app.management.clone(),
            retention,
            crate::retention::FIRST_PRUNE_AFTER,
            crate::retention::PRUNE_EVERY,
            stop.clone(),
        ));
    }
    if let Some(metrics_bind) = metrics_bind {
        let metrics_listener = tokio::net::TcpListener::bind(metrics_bind)
            .await
            .map_err(|source| ServeError::Bind {
                address: metrics_bind,
                source,
            })?;
        let address = metrics_listener.local_addr().map_err(ServeError::LocalAddress)?;
        warn!("metrics: GET /metrics on {address}, open to whoever reaches it (FLOWRUN_METRICS_BIND)");
        let metrics_routes = axum::Router::new()
            .route("/metrics", axum::routing::get(crate::routes::metrics))
            .layer(axum::Extension(metrics.clone()));
        let mut metrics_stop = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(metrics_listener, metrics_routes)
                .with_graceful_shutdown(async move {
                    let _ = metrics_stop.wait_for(|stopped| *stopped).await;
                })
                .await;
            if let Err(error) = served {
                error!(%error, "the metrics listener failed");
            }
        });
    }
    let scheduler = app.scheduler.clone();
    let mut routes = router(app, security).layer(axum::Extension(metrics));
    if let Some(every) = tick {
        routes = routes.layer(axum::Extension(Tick {
            every,
            since: std::time::Instant::now(),
        }));
    }
    let controller = Arc::new(controller);
    let shutdown = tokio::spawn(drive_shutdown(Arc::clone(&controller), stop.clone(), grace));

    let mut http_stop = stop.clone();
    let server = crate::listener::serve(listener, with_limits(routes, limits), limits, async move {
        let _ = http_stop.wait_for(|stopped| *stopped).await;
    });
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
        result = served => result.map_err(ServeError::Http)?,
        () = deadline => warn!("some work did not end after the grace period; exiting anyway (the reaper will close its runs)"),
    }
    // The last runs' notifications, within a bound: a dead receiver must not hold the exit.
    if tokio::time::timeout(NOTIFY_FLUSH_ON_EXIT, observers.flush())
        .await
        .is_err()
    {
        warn!("some notifications were not sent before exiting");
    }
    shutdown.abort();
    info!(phase = ?signal.phase(), "stopped");
    Ok(())
}

/// All of the stock `flowrun-server`'s `main` with the flow classes of `registry`: reads the flags and
/// environment ([`ServerSettings::from_env`]), sets up logging, builds a tokio runtime and [`serve`]s.
/// Exit codes: 0 after a graceful shutdown, 2 for a command line that does not parse, 1 for any other
/// error (logged, with the database URL's secrets scrubbed).
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     let registry = flowrun_app::builtin_registry();
///     // registry.register(…) your own classes here.
///     flowrun_server::main_with(registry)
/// }
/// ```
pub fn main_with(registry: ClassRegistry) -> ExitCode {
    let args = match <ServerArgs as clap::Parser>::try_parse() {
        Ok(args) => args,
        // `--help` and `--version` end here too, on stdout with 0; usage errors on stderr with 2.
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    init_logging(args.log_json);
    let url = args.database_url.clone();
    // Whatever a driver said, the URL's secrets stay out of the log.
    let fail = |message: String| {
        error!("{}", flowrun_app::scrub(&message, &url));
        ExitCode::FAILURE
    };
    let settings = match args.settings() {
        Ok(settings) => settings,
        Err(SettingsError::Usage(error)) => {
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
        Err(error) => return fail(chain(&error)),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("cannot start the async runtime: {error}")),
    };
    match runtime.block_on(serve(registry, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(chain(&error)),
    }
}

/// `error` and its causes, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Logs to stderr as the stock binary does: `RUST_LOG` (default `info`), text or JSON lines, colour only
/// on a terminal without `NO_COLOR`. Does nothing if a subscriber is already set.
pub fn init_logging(json: bool) {
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

/// Waits for Ctrl-C or SIGTERM.
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

/// Opens the database, retrying while it is unreachable or not yet migrated; `None` if `stop` came first.
async fn open_with_retry(
    settings: &Settings,
    registry: ClassRegistry,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<App>, ServeError> {
    let mut delay = Duration::from_millis(500);
    loop {
        match App::open(settings, registry.clone(), MigratePolicy::SqliteOnly).await {
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

/// Says at start-up which access rules are on, and warns about those that are off.
fn log_security(security: &Security) {
    match &security.token {
        Some(_) => info!("heartbeat token: required in X-Heartbeat-Token on every API route but /healthz"),
        None => warn!("heartbeat token: DISABLED (set FLOWRUN_HEARTBEAT_TOKEN to require one)"),
    }
    match (&security.ui_token, &security.token) {
        (Some(_), _) => info!("dashboard (/ui): login with FLOWRUN_UI_TOKEN required"),
        (None, Some(_)) => info!("dashboard (/ui): login with the heartbeat token required"),
        (None, None) => warn!(
            "dashboard (/ui): OPEN to every allowed address (set FLOWRUN_UI_TOKEN or FLOWRUN_HEARTBEAT_TOKEN to require a login)"
        ),
    }
    match &security.allowed {
        Some(nets) => info!(allowed = ?nets, "IP allow-list: enabled"),
        None => warn!("IP allow-list: DISABLED (set FLOWRUN_ALLOWED_IPS to restrict callers)"),
    }
    if !security.trusted_proxies.is_empty() {
        info!(trusted = ?security.trusted_proxies, "X-Forwarded-For believed from these proxies only");
    }
}
