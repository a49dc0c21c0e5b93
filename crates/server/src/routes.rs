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
use flowrun_domain::{DataFlow, RepositoryError, RunFilter, RunId, RunStatus};
use futures::FutureExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::error;

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

/// `POST /data_flows/heartbeat`: one scheduler cycle.
pub async fn heartbeat(State(app): State<Arc<App>>) -> ApiResult {
    let report = app.scheduler.run_cycle().await.map_err(|error| {
        error!(%error, "heartbeat failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    })?;
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

/// `GET /healthz`: 200 when the database answers, 503 otherwise.
pub async fn healthz(State(app): State<Arc<App>>) -> Response {
    if app.ping().await {
        (StatusCode::OK, Json(json!({ "status": "ok", "database": "ok" }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "database": "unreachable" })),
        )
            .into_response()
    }
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
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
