//! The dashboard: server-rendered pages under `/ui` (flows, a flow, a run), their few actions as POST
//! forms, and the login that guards them.
//!
//! Pages live under one prefix so that they never collide with the JSON API (`/runs/{id}` is JSON there)
//! and so that the access guard can tell them apart by path alone; `/` redirects to `/ui`.
//!
//! Access: with a UI token (`FLOWRUN_UI_TOKEN`, else `FLOWRUN_HEARTBEAT_TOKEN`) every page but the login
//! page and the static assets needs a signed session cookie, given once the token is typed at
//! `/ui/login`. Without one the pages are open, but a session cookie is still handed out so that every
//! form carries a CSRF token tied to it. Every POST checks that token. The IP allow-list applies as for
//! the API (see [`crate::security::guard`]).

mod chart;
pub mod session;
mod throttle;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Form, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use flowrun_app::App;
use flowrun_domain::{
    CancelOutcome, DataFlow, ManagementError, RepositoryError, RunFilter, RunId, RunRecord, RunStatus,
    Trigger,
};
use serde::Deserialize;
use tracing::{error, info, warn};

use crate::actions::{RunNow, RunNowError};
use crate::security::Security;
use session::{COOKIE_NAME, SESSION_LIFETIME, Session, SessionKey};

/// The prefix of every dashboard path.
pub const PREFIX: &str = "/ui";

/// The Content-Security-Policy of every dashboard answer: scripts and styles only from the server's own
/// files, no framing, forms only back to the server.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Runs shown per page of a flow's history.
const PAGE_SIZE: u64 = 25;
/// The most runs one list reads ([`crate::routes`] allows as many per request); older ones are for the
/// CLI or the API.
const MAX_RUNS: u64 = 1000;
/// Runs drawn on a flow's duration chart.
const CHART_RUNS: u64 = 100;
/// Outcomes in the strip of each row of the flows table.
const STRIP_RUNS: u64 = 20;

/// Whether `path` is one of the dashboard's.
pub fn is_ui_path(path: &str) -> bool {
    path == "/" || path == PREFIX || path.starts_with("/ui/")
}

/// What the dashboard's handlers share.
struct Ui {
    app: Arc<App>,
    security: Arc<Security>,
    key: SessionKey,
    /// The token the login page asks for; `None`: the dashboard is open.
    token: Option<String>,
    /// Addresses that sent wrong tokens.
    throttle: throttle::LoginThrottle,
}

/// The dashboard's routes. `token` is the UI token (`None`: open to whoever passes the allow-list).
pub(crate) fn router(app: Arc<App>, security: Arc<Security>, token: Option<String>) -> Router {
    let key = match &token {
        Some(token) => SessionKey::from_token(token),
        None => match SessionKey::random() {
            Ok(key) => key,
            // Without the OS's randomness no secret can be made; fall back to the one thing every
            // process of this server has in common, so forms keep working, and say so.
            Err(error) => {
                error!(%error, "no randomness for the dashboard's session key; using a fixed one");
                SessionKey::from_token(env!("CARGO_PKG_NAME"))
            }
        },
    };
    let ui = Arc::new(Ui {
        app,
        security,
        key,
        token,
        throttle: throttle::LoginThrottle::default(),
    });
    Router::new()
        .route("/", get(|| async { Redirect::to(PREFIX) }))
        .route(PREFIX, get(flows_page))
        .route("/ui/", get(flows_page))
        .route("/ui/flows/{name}", get(flow_page))
        .route("/ui/flows/{name}/run", post(run_now))
        .route("/ui/flows/{name}/enable", post(enable))
        .route("/ui/flows/{name}/disable", post(disable))
        .route("/ui/runs/{id}", get(run_page))
        .route("/ui/runs/{id}/live", get(run_live))
        .route("/ui/runs/{id}/cancel", post(cancel))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/{file}", get(asset))
        .layer(from_fn_with_state(Arc::clone(&ui), sessions))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(ui)
}

/// An answer for a `/ui` path no route serves: a page, not the API's JSON.
pub(crate) fn not_found_page() -> Response {
    security_headers_on(views::problem(StatusCode::NOT_FOUND, "There is no page here.").into_response())
}

/// The answer to a dashboard request from an address the allow-list refuses.
pub(crate) fn forbidden_page() -> Response {
    security_headers_on(views::problem(StatusCode::FORBIDDEN, "Forbidden").into_response())
}

// ----- access -----

/// Paths served without a session: the login page itself and what it is drawn with.
fn is_public(path: &str) -> bool {
    path == "/ui/login" || path.starts_with("/ui/assets/")
}

/// Middleware: finds the request's session (its cookie, checked) and puts it in the request's extensions.
/// Without one, a page asks to log in, the live endpoint answers 401 and a POST is refused; an open
/// dashboard mints one instead and sets its cookie on the answer.
async fn sessions(
    State(ui): State<Arc<Ui>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let now = ui.app.clock.now();
    let path = request.uri().path().to_owned();
    let found = cookie_values(request.headers()).find_map(|value| ui.key.verify(value, now));
    if let Some(session) = found {
        request.extensions_mut().insert(session);
        return next.run(request).await;
    }
    if is_public(&path) || path == "/" {
        return next.run(request).await;
    }
    if ui.token.is_none() {
        let session = match ui.key.mint(session_end(now)) {
            Ok(session) => session,
            Err(error) => {
                error!(%error, "cannot make a dashboard session");
                return views::problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
            }
        };
        let cookie = session_cookie(&session, ui.is_https(peer, request.headers()));
        request.extensions_mut().insert(session);
        let mut response = next.run(request).await;
        response.headers_mut().append(header::SET_COOKIE, cookie);
        return response;
    }
    if is_live_path(&path) {
        return (
            StatusCode::UNAUTHORIZED,
            crate::routes::error_body("Unauthorized"),
        )
            .into_response();
    }
    if request.method() != axum::http::Method::GET && request.method() != axum::http::Method::HEAD {
        return views::problem(
            StatusCode::FORBIDDEN,
            "Your session has ended. Log in again, then repeat what you did.",
        )
        .into_response();
    }
    let next_page = request
        .uri()
        .path_and_query()
        .map_or(PREFIX, |target| target.as_str())
        .to_owned();
    Redirect::to(&format!("/ui/login?next={}", encode_query(&next_page))).into_response()
}

impl Ui {
    /// Whether the browser reached us over https: only a trusted proxy can say so.
    fn is_https(&self, peer: SocketAddr, headers: &HeaderMap) -> bool {
        self.security.forwarded_https(peer.ip(), headers)
    }

    /// Whether `form` carries the CSRF token of `session`.
    fn csrf_ok(&self, session: &Session, form: &Result<Form<ActionForm>, FormRejection>) -> bool {
        match form {
            Ok(Form(ActionForm { csrf: Some(csrf), .. })) => self.key.csrf_matches(session, csrf),
            _ => false,
        }
    }
}

/// When a session started at `now` ends (the far end of the calendar if that is past it).
fn session_end(now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    now.checked_add_signed(SESSION_LIFETIME)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// The values of every cookie named [`COOKIE_NAME`] in the request.
fn cookie_values(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
}

/// `Set-Cookie` for `session`: only for this server's pages' scripts to never see (HttpOnly), only sent
/// with requests from its own pages (SameSite=Strict), and over https only when it came over https.
fn session_cookie(session: &Session, secure: bool) -> HeaderValue {
    let max_age = SESSION_LIFETIME.num_seconds();
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{COOKIE_NAME}={}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        session.value()
    );
    // The value is hex, digits and dots; nothing in it can make an invalid header.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn cleared_cookie(secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn security_headers(response: Response) -> Response {
    security_headers_on(response)
}

fn security_headers_on(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "same-origin");
    if !headers.contains_key(header::CACHE_CONTROL) {
        // Pages carry CSRF tokens and live data: never from a cache.
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

// ----- login -----

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: Option<String>,
    next: Option<String>,
}

async fn login_page(State(ui): State<Arc<Ui>>, query: Result<Query<LoginQuery>, QueryRejection>) -> Response {
    let next = query.ok().and_then(|Query(q)| q.next);
    let next = local_target(next.as_deref());
    if ui.token.is_none() {
        return Redirect::to(next).into_response();
    }
    views::login(next, None).into_response()
}

async fn login(
    State(ui): State<Arc<Ui>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Some(token) = &ui.token else {
        return Redirect::to(PREFIX).into_response();
    };
    let (given, next) = match form {
        Ok(Form(form)) => (form.token.unwrap_or_default(), form.next),
        Err(_) => (String::new(), None),
    };
    let next = local_target(next.as_deref());
    let source_ip = ui.security.client_ip(peer.ip(), &headers).unwrap_or(peer.ip());
    let source = source_ip.to_string();
    if let Some(wait) = ui.throttle.refused_for(source_ip, std::time::Instant::now()) {
        warn!(source_ip = %source, "dashboard login refused: too many wrong tokens from this address");
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let message = format!(
            "Too many wrong tokens from this address. Try again in {minutes} minute{}.",
            if minutes == 1 { "" } else { "s" }
        );
        return (StatusCode::TOO_MANY_REQUESTS, views::login(next, Some(&message))).into_response();
    }
    if !session::token_matches(token, &given) {
        ui.throttle.failed(source_ip, std::time::Instant::now());
        warn!(source_ip = %source, "dashboard login refused: wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            views::login(
                next,
                Some("That token is not the one this server was started with."),
            ),
        )
            .into_response();
    }
    let session = match ui.key.mint(session_end(ui.app.clock.now())) {
        Ok(session) => session,
        Err(error) => {
            error!(%error, "cannot make a dashboard session");
            return views::problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    ui.throttle.succeeded(source_ip);
    info!(source_ip = %source, "dashboard login");
    let mut response = Redirect::to(next).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        session_cookie(&session, ui.is_https(peer, &headers)),
    );
    response
}

async fn logout(
    State(ui): State<Arc<Ui>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    session: Option<axum::Extension<Session>>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let Some(axum::Extension(session)) = session else {
        return forbidden();
    };
    if !ui.csrf_ok(&session, &form) {
        return forbidden();
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, cleared_cookie(ui.is_https(peer, &headers)));
    response
}

/// `raw` if it is a dashboard path on this server, else the flows page: a login link must not send the
/// browser elsewhere.
/// Whether `path` is a run's live endpoint (`/ui/runs/<id>/live`), which scripts poll and which answers 401
/// instead of redirecting to the login page. A flow may be named `live`, so the whole shape is checked.
fn is_live_path(path: &str) -> bool {
    path.strip_prefix("/ui/runs/")
        .and_then(|rest| rest.strip_suffix("/live"))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

fn local_target(raw: Option<&str>) -> &str {
    match raw {
        Some(target)
            if (target == PREFIX || target.starts_with("/ui/") || target.starts_with("/ui?"))
                && !target.contains(['\\', '#'])
                && target.chars().all(|c| c.is_ascii_graphic()) =>
        {
            target
        }
        _ => PREFIX,
    }
}

// ----- pages -----

/// The filter of the flows table.
#[derive(Debug, Default, Deserialize)]
struct FlowsQuery {
    q: Option<String>,
    status: Option<String>,
    notice: Option<String>,
    run: Option<i64>,
}

/// Which flows the flows table shows, by the state of their latest run or their switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusFilter {
    Any,
    Running,
    Failed,
    Success,
    Never,
    Disabled,
}

impl StatusFilter {
    const ALL: [(Self, &'static str, &'static str); 6] = [
        (Self::Any, "", "Any status"),
        (Self::Running, "running", "Running"),
        (Self::Failed, "failed", "Last run failed"),
        (Self::Success, "success", "Last run succeeded"),
        (Self::Never, "never", "Never run"),
        (Self::Disabled, "disabled", "Disabled"),
    ];

    fn parse(raw: Option<&str>) -> Result<Self, String> {
        let raw = raw.unwrap_or("");
        Self::ALL
            .iter()
            .find(|(_, value, _)| *value == raw)
            .map(|(filter, _, _)| *filter)
            .ok_or_else(|| format!("unknown status filter `{raw}`"))
    }

    fn keeps(self, row: &FlowRow) -> bool {
        let latest = row.recent.first().map(|record| record.run.status);
        match self {
            Self::Any => true,
            Self::Running => latest.is_some_and(|s| !s.is_terminal()),
            Self::Failed => row
                .flow
                .last_run_status
                .is_some_and(|s| RunStatus::from(s) == RunStatus::Failed),
            Self::Success => row
                .flow
                .last_run_status
                .is_some_and(|s| RunStatus::from(s) == RunStatus::Success),
            Self::Never => row.recent.is_empty(),
            Self::Disabled => !row.flow.enabled,
        }
    }
}

/// A flow with its latest runs, newest first.
struct FlowRow {
    flow: DataFlow,
    recent: Vec<RunRecord>,
}

/// A message shown once at the top of a page, after an action redirected to it.
struct Notice {
    ok: bool,
    text: String,
    run: Option<i64>,
}

/// The message an action's redirect asked for, from a fixed list (never text from the URL).
fn notice(code: Option<&str>, run: Option<i64>) -> Option<Notice> {
    let (ok, text) = match code? {
        "started" => (true, "Run started."),
        "already-running" => (false, "The flow is already running; it was not started again."),
        "unavailable" => (
            false,
            "The server cannot start a run right now (all slots busy or shutting down).",
        ),
        "enabled" => (true, "Flow enabled: the scheduler runs it when it is due."),
        "disabled" => (true, "Flow disabled: the scheduler skips it until it is enabled."),
        "cancel-requested" => (
            true,
            "Cancellation requested; the run stops within a few seconds.",
        ),
        "already-ended" => (false, "The run had already ended; nothing to cancel."),
        _ => return None,
    };
    Some(Notice {
        ok,
        text: text.to_owned(),
        run,
    })
}

async fn flows_page(
    State(ui): State<Arc<Ui>>,
    axum::Extension(session): axum::Extension<Session>,
    query: Result<Query<FlowsQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_request(&rejection.body_text()),
    };
    let filter = match StatusFilter::parse(query.status.as_deref()) {
        Ok(filter) => filter,
        Err(message) => return bad_request(&message),
    };
    let flows = match ui.app.flows.list().await {
        Ok(flows) => flows,
        Err(error) => return database_error(&error),
    };
    let needle = query
        .q
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_lowercase();
    let flows: Vec<DataFlow> = flows
        .into_iter()
        .filter(|flow| needle.is_empty() || flow.name.as_str().to_lowercase().contains(&needle))
        .collect();
    // One read per flow through the existing port (runs of one flow, newest first); a port method that
    // reads every flow's latest runs at once is the step to take if a dashboard with many flows is slow.
    let mut rows = Vec::with_capacity(flows.len());
    for flow in flows {
        let recent = match ui
            .app
            .runs
            .list_runs(RunFilter {
                data_flow_id: Some(flow.id),
                limit: STRIP_RUNS,
                ..RunFilter::default()
            })
            .await
        {
            Ok(recent) => recent,
            Err(error) => return database_error(&error),
        };
        let row = FlowRow { flow, recent };
        if filter.keeps(&row) {
            rows.push(row);
        }
    }
    let page = views::Page::new(&ui, &session, ui.app.clock.now());
    let back = flows_url(query.q.as_deref(), query.status.as_deref());
    views::flows(
        &page,
        &rows,
        query.q.as_deref().unwrap_or_default(),
        filter,
        &back,
        notice(query.notice.as_deref(), query.run).as_ref(),
    )
    .into_response()
}

/// The flows page with its filter, as a link.
fn flows_url(q: Option<&str>, status: Option<&str>) -> String {
    let mut params = Vec::new();
    if let Some(q) = q.filter(|q| !q.is_empty()) {
        params.push(format!("q={}", encode_query(q)));
    }
    if let Some(status) = status.filter(|s| !s.is_empty()) {
        params.push(format!("status={}", encode_query(status)));
    }
    if params.is_empty() {
        PREFIX.to_owned()
    } else {
        format!("{PREFIX}?{}", params.join("&"))
    }
}

#[derive(Debug, Default, Deserialize)]
struct FlowQuery {
    page: Option<u64>,
    notice: Option<String>,
    run: Option<i64>,
}

async fn flow_page(
    State(ui): State<Arc<Ui>>,
    axum::Extension(session): axum::Extension<Session>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<FlowQuery>, QueryRejection>,
) -> Response {
    let Path(name) = match name {
        Ok(name) => name,
        Err(rejection) => return bad_request(&rejection.body_text()),
    };
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_request(&rejection.body_text()),
    };
    let page_number = query.page.unwrap_or(1);
    let last_page = MAX_RUNS / PAGE_SIZE;
    if page_number == 0 || page_number > last_page {
        return bad_request(&format!("page must be between 1 and {last_page}"));
    }
    let flow = match ui.app.flows.find_by_name(&name).await {
        Ok(Some(flow)) => flow,
        Ok(None) => return not_found(&format!("No data flow is named “{name}”.")),
        Err(error) => return database_error(&error),
    };
    // The history has no offset in the port: read up to the end of the page asked for, plus one to know
    // whether an older page exists.
    let wanted = (page_number * PAGE_SIZE + 1).clamp(CHART_RUNS, MAX_RUNS);
    let runs = match ui
        .app
        .runs
        .list_runs(RunFilter {
            data_flow_id: Some(flow.id),
            limit: wanted,
            ..RunFilter::default()
        })
        .await
    {
        Ok(runs) => runs,
        Err(error) => return database_error(&error),
    };
    let now = ui.app.clock.now();
    let start = usize::try_from((page_number - 1) * PAGE_SIZE).unwrap_or(usize::MAX);
    let history: Vec<&RunRecord> = runs.iter().skip(start).take(PAGE_SIZE as usize).collect();
    let has_older = runs.len() > start + history.len() && page_number < last_page;
    let chart: Vec<&RunRecord> = runs.iter().take(CHART_RUNS as usize).collect();
    let upcoming = upcoming(&flow, 5);
    let page = views::Page::new(&ui, &session, now);
    views::flow(
        &page,
        &views::FlowView {
            flow: &flow,
            history: &history,
            chart: &chart,
            upcoming: &upcoming,
            page: page_number,
            has_older,
            notice: notice(query.notice.as_deref(), query.run),
        },
    )
    .into_response()
}

/// The flow's next fire times: its stored next run, then the schedule's slots after it.
fn upcoming(flow: &DataFlow, count: usize) -> Vec<chrono::DateTime<chrono::Utc>> {
    match flow.next_run_at {
        Some(next) => std::iter::successors(Some(next), |at| flow.schedule.next_run_after(*at, *at))
            .take(count)
            .collect(),
        None => Vec::new(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct RunQuery {
    notice: Option<String>,
}

async fn run_page(
    State(ui): State<Arc<Ui>>,
    axum::Extension(session): axum::Extension<Session>,
    id: Result<Path<i64>, PathRejection>,
    query: Result<Query<RunQuery>, QueryRejection>,
) -> Response {
    let Path(id) = match id {
        Ok(id) => id,
        Err(rejection) => return bad_request(&rejection.body_text()),
    };
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_request(&rejection.body_text()),
    };
    let record = match ui.app.runs.find_run(RunId(id)).await {
        Ok(Some(record)) => record,
        Ok(None) => return not_found(&format!("There is no run {id}.")),
        Err(error) => return database_error(&error),
    };
    let page = views::Page::new(&ui, &session, ui.app.clock.now());
    views::run(&page, &record, notice(query.notice.as_deref(), None).as_ref()).into_response()
}

/// `GET /ui/runs/{id}/live`: the run's JSON (the API's shape), for the run page's script to follow a run
/// with the session cookie rather than the API token.
async fn run_live(State(ui): State<Arc<Ui>>, id: Result<Path<i64>, PathRejection>) -> Response {
    let Ok(Path(id)) = id else {
        return (
            StatusCode::BAD_REQUEST,
            crate::routes::error_body("run ids are whole numbers"),
        )
            .into_response();
    };
    match ui.app.runs.find_run(RunId(id)).await {
        Ok(Some(record)) => {
            axum::Json(flowrun_app::json::run_json(&record.run, &record.flow_name)).into_response()
        }
        Ok(None) => (
            StatusCode::NOT_FOUND,
            crate::routes::error_body(&format!("no run with id {id}")),
        )
            .into_response(),
        Err(error) => {
            error!(%error, "request failed on the database");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                crate::routes::error_body("database error"),
            )
                .into_response()
        }
    }
}

// ----- actions -----

/// The fields every action form posts.
#[derive(Debug, Deserialize)]
struct ActionForm {
    csrf: Option<String>,
    /// The page to return to.
    back: Option<String>,
}

fn back_of(form: &Result<Form<ActionForm>, FormRejection>, default: &str) -> String {
    let back = match form {
        Ok(Form(ActionForm { back: Some(back), .. })) => Some(back.as_str()),
        _ => None,
    };
    match back {
        Some(back) if local_target(Some(back)) == back => back.to_owned(),
        _ => default.to_owned(),
    }
}

/// A redirect (303: the browser GETs it) to `back` with a notice.
fn see_other(back: &str, code: &str, run: Option<i64>) -> Response {
    let separator = if back.contains('?') { '&' } else { '?' };
    let run = run.map(|id| format!("&run={id}")).unwrap_or_default();
    Redirect::to(&format!("{back}{separator}notice={code}{run}")).into_response()
}

async fn run_now(
    State(ui): State<Arc<Ui>>,
    axum::Extension(session): axum::Extension<Session>,
    name: Result<Path<String>, PathRejection>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    if !ui.csrf_ok(&session, &form) {
        return forbidden();
    }
    let Ok(Path(name)) = name else {
        return bad_request("unreadable flow name");
    };
    let back = back_of(&form, &flow_url(&name));
    match crate::actions::run_now(&ui.app, &name, Trigger::Manual).await {
        Ok((_, RunNow::Started(run))) => see_other(&back, "started", Some(run.id.0)),
        Ok((_, RunNow::AlreadyRunning { run_id, .. })) => see_other(&back, "already-running", Some(run_id.0)),
        Err(RunNowError::NotFound(_)) => not_found(&format!("No data flow is named “{name}”.")),
        Err(RunNowError::Unavailable(_)) => see_other(&back, "unavailable", None),
        Err(RunNowError::Database | RunNowError::Internal) => views::problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The run could not be started; see the server log.",
        )
        .into_response(),
    }
}

async fn enable(
    state: State<Arc<Ui>>,
    session: axum::Extension<Session>,
    name: Result<Path<String>, PathRejection>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    set_enabled(state, session, name, form, true).await
}

async fn disable(
    state: State<Arc<Ui>>,
    session: axum::Extension<Session>,
    name: Result<Path<String>, PathRejection>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    set_enabled(state, session, name, form, false).await
}

async fn set_enabled(
    State(ui): State<Arc<Ui>>,
    axum::Extension(session): axum::Extension<Session>,
    name: Result<Path<String>, PathRejection>,
    form: Result<Form<ActionForm>, FormRejection>,
    enabled: bool,
) -> Response {
    if !ui.csrf_ok(&session, &form) {
        return forbidden();
    }
    let Ok(Path(name)) = name else {
        return bad_request("unreadable flow name");
    };
    let back = back_of(&form, &flow_url(&name));
    match ui.app.management.set_enabled(&name, enabled).await {
        Ok(_) => see_other(&back, if enabled { "enabled" } else { "disabled" }, None),
        Err(ManagementError::NotFound(_)) => not_found(&format!("No data flow is named “{name}”.")),
        Err(ManagementError::Repository(error)) => database_error(&error),
        Err(error) => bad_request(&error.to_string()),
    }
}

async fn cancel(
    State(ui): State<Arc<Ui>>,
    axum::Extension(session): axum::Extension<Session>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    if !ui.csrf_ok(&session, &form) {
        return forbidden();
    }
    let Ok(Path(id)) = id else {
        return bad_request("run ids are whole numbers");
    };
    let back = back_of(&form, &format!("/ui/runs/{id}"));
    let who = ui
        .security
        .client_ip(peer.ip(), &headers)
        .map_or_else(|| peer.ip().to_string(), |ip| ip.to_string());
    match crate::actions::cancel(&ui.app, RunId(id), format!("dashboard {who}")).await {
        Ok(CancelOutcome::Requested(_)) => see_other(&back, "cancel-requested", Some(id)),
        Ok(CancelOutcome::AlreadyEnded(_)) => see_other(&back, "already-ended", Some(id)),
        Ok(CancelOutcome::NotFound) => not_found(&format!("There is no run {id}.")),
        Err(error) => database_error(&error),
    }
}

// ----- assets and answers -----

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// A fingerprint of `bytes` (FNV-1a), so an asset's URL changes with its content and browsers may cache
/// it for good.
const fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const CSS_VERSION: u64 = fingerprint(CSS.as_bytes());
const JS_VERSION: u64 = fingerprint(JS.as_bytes());

async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return not_found("There is no such file."),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// The link to a flow's page (its name percent-encoded: names may hold `/`, `?`, spaces…).
fn flow_url(name: &str) -> String {
    format!("/ui/flows/{}", encode_segment(name))
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

fn encode_query(text: &str) -> String {
    encode_segment(text)
}

fn forbidden() -> Response {
    views::problem(
        StatusCode::FORBIDDEN,
        "This form has expired or did not come from this dashboard. Go back, reload the page and try again.",
    )
    .into_response()
}

fn bad_request(message: &str) -> Response {
    views::problem(StatusCode::BAD_REQUEST, message).into_response()
}

fn not_found(message: &str) -> Response {
    views::problem(StatusCode::NOT_FOUND, message).into_response()
}

fn database_error(error: &RepositoryError) -> Response {
    error!(%error, "dashboard request failed on the database");
    views::problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The database did not answer as expected; see the server log.",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dashboard_paths_are_accepted_as_login_targets() {
        assert_eq!(local_target(Some("/ui/flows/a")), "/ui/flows/a");
        assert_eq!(local_target(Some("/ui?q=x")), "/ui?q=x");
        assert_eq!(local_target(Some("//evil.example/ui")), PREFIX);
        assert_eq!(local_target(Some("https://evil.example/ui/")), PREFIX);
        assert_eq!(local_target(Some("/ui/\\evil")), PREFIX);
        assert_eq!(local_target(Some("/uix")), PREFIX);
        assert_eq!(local_target(Some("/ui/flows/a#x")), PREFIX);
        assert_eq!(local_target(None), PREFIX);
    }

    #[test]
    fn only_a_runs_live_endpoint_answers_401_instead_of_the_login_page() {
        assert!(is_live_path("/ui/runs/42/live"));
        assert!(!is_live_path("/ui/flows/live"));
        assert!(!is_live_path("/ui/runs//live"));
        assert!(!is_live_path("/ui/runs/4x/live"));
    }

    #[test]
    fn flow_names_are_encoded_into_one_path_segment() {
        assert_eq!(flow_url("a/b c?d#e"), "/ui/flows/a%2Fb%20c%3Fd%23e");
        assert_eq!(flow_url("nightly-dump_1.x"), "/ui/flows/nightly-dump_1.x");
    }

    #[test]
    fn notices_come_from_a_fixed_list() {
        assert!(notice(Some("started"), Some(3)).is_some_and(|n| n.ok && n.run == Some(3)));
        assert!(notice(Some("<script>"), None).is_none());
        assert!(notice(None, None).is_none());
    }

    #[test]
    fn the_status_filter_refuses_unknown_values() {
        assert_eq!(StatusFilter::parse(None), Ok(StatusFilter::Any));
        assert_eq!(StatusFilter::parse(Some("failed")), Ok(StatusFilter::Failed));
        assert!(StatusFilter::parse(Some("bogus")).is_err());
    }
}
