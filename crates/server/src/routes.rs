//! The HTTP routes of the contract. Every answer is JSON, errors included.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flowrun_app::App;
use flowrun_app::json::{flow_json, heartbeat_json, run_json};
use flowrun_domain::{
    CancelOutcome, DataFlow, FailureKind, RepositoryError, RunFilter, RunId, RunStatus, Trigger,
};
use futures::FutureExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::error;

use crate::actions::{RunNow, RunNowError};

/// `{"error": message}`.
pub fn error_body(message: &str) -> Json<Value> {
    Json(json!({ "error": message }))
}

/// An error answer: a status and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The messages a 500 answer may carry; anything else in one is detail for the log. (Other 5xx answers,
/// such as /healthz's 503, carry messages written for the caller.)
const STABLE_SERVER_ERRORS: [&str; 2] = [DATABASE_ERROR, "internal error"];
const DATABASE_ERROR: &str = "database error";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Driver text names tables, columns and hosts: it is for the log, not for whoever called.
        if self.status == StatusCode::INTERNAL_SERVER_ERROR
            && !STABLE_SERVER_ERRORS.contains(&self.message.as_str())
        {
            error!(detail = %self.message, status = %self.status, "request failed");
            return (self.status, error_body("internal error")).into_response();
        }
        (self.status, error_body(&self.message)).into_response()
    }
}

impl From<RepositoryError> for ApiError {
    fn from(error: RepositoryError) -> Self {
        error!(%error, "request failed on the database");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, DATABASE_ERROR)
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// `POST /data_flows/heartbeat`: claims the due flows and starts them on the server's scheduler, then
/// answers without waiting for them.
///
/// The cycle runs on a task of its own: axum drops a handler's future when the client hangs up, and a
/// cycle dropped between a claim and the start of its run would leave that run to be reaped as abandoned.
pub async fn heartbeat(State(app): State<Arc<App>>) -> ApiResult {
    let scheduler = app.scheduler.clone();
    let cycle = tokio::spawn(async move { scheduler.dispatch().await.map(|dispatch| dispatch.report) });
    let report = match cycle.await {
        Ok(Ok(report)) => report,
        Ok(Err(error)) => {
            error!(%error, "heartbeat failed");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the scheduler cycle failed; see the server log",
            ));
        }
        Err(join) => {
            error!(error = %join, "heartbeat cycle panicked");
            app.scheduler
                .note_failed_cycle(format!("a heartbeat cycle panicked: {join}"));
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"));
        }
    };
    Ok(Json(heartbeat_json(&report)))
}

/// `GET /data_flows`.
pub async fn list_flows(State(app): State<Arc<App>>) -> ApiResult {
    let flows = app.flows.list().await?;
    Ok(Json(Value::Array(flows.iter().map(flow_json).collect())))
}

async fn find_flow(app: &App, name: &str) -> Result<DataFlow, ApiError> {
    app.flows
        .find_by_name(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no data flow named `{name}`")))
}

/// `GET /data_flows/{name}`.
pub async fn show_flow(State(app): State<Arc<App>>, name: Result<Path<String>, PathRejection>) -> ApiResult {
    let Path(name) = name?;
    Ok(Json(flow_json(&find_flow(&app, &name).await?)))
}

/// Query of `GET /data_flows/{name}/runs`.
#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    limit: Option<u64>,
    status: Option<String>,
    failure_kind: Option<String>,
}

/// Most runs one request returns.
const MAX_LIMIT: u64 = 1000;

/// `GET /data_flows/{name}/runs?limit=N&status=S`, newest first.
pub async fn flow_runs(
    State(app): State<Arc<App>>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> ApiResult {
    let Path(name) = name?;
    let Query(query) = query?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let failure_kind = query
        .failure_kind
        .as_deref()
        .map(str::parse::<FailureKind>)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let limit = query.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let flow = find_flow(&app, &name).await?;
    let records = app
        .runs
        .list_runs(RunFilter {
            data_flow_id: Some(flow.id),
            status,
            failure_kind,
            limit,
        })
        .await?;
    Ok(Json(Value::Array(
        records.iter().map(|r| run_json(&r.run, &r.flow_name)).collect(),
    )))
}

/// `GET /runs/{id}`.
pub async fn show_run(State(app): State<Arc<App>>, id: Result<Path<i64>, PathRejection>) -> ApiResult {
    let Path(id) = id?;
    let record = app
        .runs
        .find_run(RunId(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run with id {id}")))?;
    Ok(Json(run_json(&record.run, &record.flow_name)))
}

/// Who a request came from, as recorded on what it changes: `http` and the peer's address.
fn requester(extensions: &axum::http::Extensions) -> String {
    match extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        Some(axum::extract::ConnectInfo(peer)) => format!("http {}", peer.ip()),
        None => "http".to_owned(),
    }
}

/// `POST /data_flows/{name}/run`: starts the flow now on this server → 202 `{"run_id"}`; 409 while a run
/// holds it (with that run's id), 404 for an unknown flow, 503 when every slot is busy.
pub async fn run_flow(State(app): State<Arc<App>>, name: Result<Path<String>, PathRejection>) -> Response {
    let result = async {
        let Path(name) = name?;
        match crate::actions::run_now(&app, &name, Trigger::Api).await {
            Ok((flow, RunNow::Started(run))) => Ok((
                StatusCode::ACCEPTED,
                Json(
                    json!({ "run_id": run.id.0, "flow": flow.name.as_str(), "status": run.status.as_str() }),
                ),
            )
                .into_response()),
            Ok((flow, RunNow::AlreadyRunning { run_id, since })) => Ok((
                StatusCode::CONFLICT,
                Json(json!({
                    "error": format!("data flow `{}` is already running", flow.name),
                    "run_id": run_id.0,
                    "since": flowrun_app::json::timestamp(Some(since)),
                })),
            )
                .into_response()),
            Err(error) => Err(ApiError::from(error)),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

impl From<RunNowError> for ApiError {
    fn from(error: RunNowError) -> Self {
        let status = match &error {
            RunNowError::NotFound(_) => StatusCode::NOT_FOUND,
            RunNowError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RunNowError::Database | RunNowError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, error.to_string())
    }
}

/// `POST /runs/{id}/cancel` → 202 `{"run_id","cancel_requested_at","cancel_requested_by"}`: the process
/// running it stops it within a few seconds and records it `failed` (`cancelled`); 409 when it has ended,
/// 404 for an unknown run.
pub async fn cancel_run(
    State(app): State<Arc<App>>,
    id: Result<Path<i64>, PathRejection>,
    extensions: axum::http::Extensions,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    match crate::actions::cancel(&app, RunId(id), requester(&extensions)).await? {
        CancelOutcome::Requested(request) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "run_id": id,
                "cancel_requested_at": flowrun_app::json::timestamp(Some(request.at)),
                "cancel_requested_by": request.by,
            })),
        )
            .into_response()),
        CancelOutcome::AlreadyEnded(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {id} has already ended ({status})"),
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found(format!("no run with id {id}"))),
    }
}

/// The in-process scheduler tick, when the server runs one: `/healthz` judges the scheduler by it.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// How often a cycle starts.
    pub every: std::time::Duration,
    /// When the server started ticking.
    pub since: std::time::Instant,
}

impl Tick {
    /// How long without a completed cycle makes the scheduler unhealthy: three ticks, and never less than
    /// ten seconds more than one, so a single slow cycle or database blip is not an outage.
    pub fn stale_after(&self) -> std::time::Duration {
        self.every
            .saturating_mul(3)
            .max(self.every.saturating_add(std::time::Duration::from_secs(10)))
    }
}

/// `GET /metrics`: every series in the Prometheus (OpenMetrics) text format; 404 when the router was
/// built without metrics (a bare [`crate::router`] outside [`crate::serve`]).
pub async fn metrics(metrics: Option<axum::Extension<flowrun_observe::Metrics>>) -> Response {
    match metrics {
        Some(axum::Extension(metrics)) => (
            [(axum::http::header::CONTENT_TYPE, flowrun_observe::CONTENT_TYPE)],
            metrics.encode(),
        )
            .into_response(),
        None => ApiError::not_found("metrics are not enabled").into_response(),
    }
}

/// `GET /healthz`: 200 when the database answers and, with a tick, the scheduler completed a cycle
/// recently; 503 otherwise. The body says which part is unhealthy.
pub async fn healthz(State(app): State<Arc<App>>, tick: Option<axum::Extension<Tick>>) -> Response {
    let database = app.ping().await;
    let health = app.scheduler.health();
    let now = chrono::Utc::now();
    let scheduler_state = match tick {
        None => "heartbeat-only",
        Some(axum::Extension(tick)) => {
            let stale_after =
                chrono::TimeDelta::from_std(tick.stale_after()).unwrap_or(chrono::TimeDelta::MAX);
            match health.last_success {
                Some(at) if now.signed_duration_since(at) <= stale_after => "ok",
                None if tick.since.elapsed() <= tick.stale_after() => "starting",
                _ => "stale",
            }
        }
    };
    let healthy = database && scheduler_state != "stale";
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "database": if database { "ok" } else { "unreachable" },
        "scheduler": {
            "state": scheduler_state,
            "last_cycle_at": flowrun_app::json::timestamp(health.last_success),
            "last_failure_at": flowrun_app::json::timestamp(health.last_failure.as_ref().map(|(at, _)| *at)),
            "consecutive_failures": health.consecutive_failures,
            "running": app.scheduler.running(),
            "concurrency": app.scheduler.concurrency(),
        },
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Unknown routes: JSON, or a page under the dashboard's prefix.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    if crate::ui::is_ui_path(uri.path()) {
        return crate::ui::not_found_page();
    }
    ApiError::not_found("Not Found").into_response()
}

/// Known routes with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

/// Middleware: a panic in a handler becomes a JSON 500 instead of a dropped connection.
pub async fn catch_panics(request: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            error!("a request handler panicked");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}
