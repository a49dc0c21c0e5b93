//! `flowrun-server`: the heartbeat endpoint and the read API over HTTP (axum), protected by an optional
//! token and IP allow-list, with an optional in-process scheduler tick.
//!
//! As a library it lets an application with flow classes of its own serve them with every route,
//! environment variable and exit code of the stock `flowrun-server`, which is exactly [`main_with`] and
//! the built-in classes:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let registry = flowrun_app::builtin_registry();
//!     // registry.register(…) your own classes here.
//!     flowrun_server::main_with(registry)
//! }
//! ```
//!
//! [`serve`] is the same without the flag parsing, logging set-up and runtime, for an application that
//! does those itself; [`router`] is the bare axum router.

mod actions;
pub mod listener;
pub mod retention;
pub mod routes;
pub mod security;
mod serve;
mod settings;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use flowrun_app::App;

pub use listener::{ConnectionLimits, LimitArgs, with_limits};
pub use security::{Security, parse_networks};
pub use serve::{ServeError, init_logging, main_with, serve, serve_until};
pub use settings::{DEFAULT_BIND, DEFAULT_SHUTDOWN_GRACE, ServerArgs, ServerSettings, SettingsError};

/// The application's routes (the JSON API and the dashboard) with the access rules applied.
pub fn router(app: App, security: Security) -> Router {
    let app = Arc::new(app);
    let security = Arc::new(security);
    let dashboard = ui::router(
        Arc::clone(&app),
        Arc::clone(&security),
        security.dashboard_token().map(str::to_owned),
    );
    Router::new()
        .route("/data_flows/heartbeat", post(routes::heartbeat))
        .route("/data_flows", get(routes::list_flows))
        .route("/data_flows/{name}", get(routes::show_flow))
        .route("/data_flows/{name}/runs", get(routes::flow_runs))
        .route("/data_flows/{name}/run", post(routes::run_flow))
        .route("/runs/{id}", get(routes::show_run))
        .route("/runs/{id}/cancel", post(routes::cancel_run))
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(app)
        .merge(dashboard)
        .layer(from_fn_with_state(security, security::guard))
        .layer(from_fn(routes::catch_panics))
}
