//! The dashboard's HTML. maud escapes every interpolated value, so text from flows and runs (names,
//! messages, output) can never become markup.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use flowrun_domain::{DataFlow, DataFlowRun, RunRecord, RunStatus, Schedule, format_duration};
use maud::{DOCTYPE, Markup, html};

use super::session::Session;
use super::{CSS_VERSION, FlowRow, JS_VERSION, Notice, PAGE_SIZE, StatusFilter, Ui, flow_url};

/// What every page needs besides its content.
pub(super) struct Page {
    csrf: String,
    /// Whether a login guards the dashboard (then a logout button is shown).
    guarded: bool,
    now: DateTime<Utc>,
}

impl Page {
    pub(super) fn new(ui: &Ui, session: &Session, now: DateTime<Utc>) -> Self {
        Self {
            csrf: ui.key.csrf_token(session),
            guarded: ui.token.is_some(),
            now,
        }
    }
}

/// A rendered page as an answer.
pub(super) struct Rendered(StatusCode, Markup);

impl IntoResponse for Rendered {
    fn into_response(self) -> Response {
        (self.0, Html(self.1.into_string())).into_response()
    }
}

fn document(title: &str, body_class: &str, header: Markup, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · flowrun" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(format!("/ui/assets/app.css?v={CSS_VERSION:x}"));
                script src=(format!("/ui/assets/app.js?v={JS_VERSION:x}")) defer {}
            }
            body class=(body_class) {
                (header)
                main.container { (content) }
            }
        }
    }
}

fn layout(page: &Page, title: &str, content: Markup) -> Markup {
    let header = html! {
        header.topbar {
            div.topbar-inner {
                a.brand href="/ui" { span.brand-mark { "▸" } "flowrun" }
                nav { a href="/ui" { "Flows" } }
                span.spacer {}
                @if page.guarded {
                    form.inline method="post" action="/ui/logout" {
                        input type="hidden" name="csrf" value=(page.csrf);
                        button.link type="submit" { "Log out" }
                    }
                }
            }
        }
    };
    let content = html! {
        (content)
        footer.page-foot.muted.small { span #zone-note { "Times in UTC." } }
    };
    document(title, "", header, content)
}

/// A page that says what went wrong, with its status.
pub(super) fn problem(status: StatusCode, message: &str) -> Rendered {
    let title = status.canonical_reason().unwrap_or("Error");
    let content = html! {
        section.card.problem {
            h1 { (status.as_u16()) " · " (title) }
            p { (message) }
            p { a href="/ui" { "Back to the flows" } }
        }
    };
    let header = html! { header.topbar { div.topbar-inner { a.brand href="/ui" { span.brand-mark { "▸" } "flowrun" } } } };
    Rendered(status, document(title, "", header, content))
}

/// The login page; `error` when a wrong token was typed.
pub(super) fn login(next: &str, error: Option<&str>) -> Rendered {
    let content = html! {
        section.card.login {
            h1 { "Sign in" }
            p.muted { "This dashboard is protected. Enter the token this server was started with." }
            @if let Some(error) = error {
                p.notice.bad role="alert" { (error) }
            }
            form method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button.primary type="submit" { "Sign in" }
            }
        }
    };
    let header = html! {};
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    Rendered(status, document("Sign in", "login-page", header, content))
}

// ----- pieces -----

/// A time in UTC; the script shows it in the viewer's zone and keeps UTC on hover.
fn time(at: DateTime<Utc>) -> Markup {
    let utc = at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) title=(utc) { (utc) }
    }
}

fn maybe_time(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { span.muted { "—" } },
    }
}

/// A duration for people: `850 ms`, `12.3 s`, `4 min 5 s`, `2 h 3 min`.
pub(super) fn duration_text(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1_000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

fn run_duration(run: &DataFlowRun, now: DateTime<Utc>) -> Markup {
    match run.duration() {
        Some(duration) => html! { (duration_text(duration.num_milliseconds())) },
        None => html! { span.muted { (duration_text((now - run.started_at).num_milliseconds())) " so far" } },
    }
}

fn status_class(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Pending => "pending",
        RunStatus::InProgress => "running",
        RunStatus::Success => "success",
        RunStatus::Failed => "failed",
    }
}

fn status_label(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Pending => "pending",
        RunStatus::InProgress => "running",
        RunStatus::Success => "success",
        RunStatus::Failed => "failed",
    }
}

fn badge(status: RunStatus) -> Markup {
    html! { span class={"badge " (status_class(status))} data-status=(status.as_str()) { (status_label(status)) } }
}

fn run_badge(run: &DataFlowRun) -> Markup {
    html! {
        (badge(run.status))
        @if let Some(kind) = run.failure_kind {
            " " span.kind { (kind.as_str()) }
        }
    }
}

fn schedule_text(schedule: &Schedule) -> Markup {
    match schedule {
        Schedule::Every(every) => html! { "every " (format_duration(*every)) },
        Schedule::Cron(cron) => html! {
            code { (cron.expression()) }
            @if cron.time_zone() != "UTC" { " " span.muted { (cron.time_zone()) } }
        },
    }
}

fn class_of(flow: &DataFlow) -> String {
    flow.flow_class().map_or_else(|_| "?".to_owned(), str::to_owned)
}

fn enabled_badge(flow: &DataFlow) -> Markup {
    if flow.enabled {
        html! { span.pill.on { "enabled" } }
    } else {
        html! { span.pill.off { "disabled" } }
    }
}

fn action_button(page: &Page, action: &str, back: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="csrf" value=(page.csrf);
            input type="hidden" name="back" value=(back);
            button type="submit" class=(class) { (label) }
        }
    }
}

fn notice_banner(notice: Option<&Notice>) -> Markup {
    html! {
        @if let Some(notice) = notice {
            div class={"notice " (if notice.ok { "ok" } else { "bad" })} role="status" {
                (notice.text)
                @if let Some(run) = notice.run {
                    " " a href=(format!("/ui/runs/{run}")) { "Run #" (run) " →" }
                }
            }
        }
    }
}

/// The run is still going: the script follows it through the live endpoint.
fn live_attributes(run: &DataFlowRun) -> Option<String> {
    (!run.status.is_terminal()).then(|| format!("/ui/runs/{}/live", run.id.0))
}

// ----- the flows page -----

pub(super) fn flows(
    page: &Page,
    rows: &[FlowRow],
    q: &str,
    filter: StatusFilter,
    back: &str,
    notice: Option<&Notice>,
) -> Rendered {
    let filtered = !q.is_empty() || filter != StatusFilter::Any;
    let content = html! {
        (notice_banner(notice))
        div.page-head {
            h1 { "Flows" }
            form.filters method="get" action="/ui" role="search" {
                input type="search" name="q" value=(q) placeholder="Filter by name" aria-label="Filter by name";
                select name="status" aria-label="Filter by status" {
                    @for (option, value, label) in StatusFilter::ALL {
                        option value=(value) selected[option == filter] { (label) }
                    }
                }
                button type="submit" { "Filter" }
                @if filtered { a.clear href="/ui" { "Clear" } }
            }
        }
        @if rows.is_empty() {
            section.card.empty {
                @if filtered {
                    p { "No flow matches this filter." }
                } @else {
                    p { "No flows yet." }
                    p.muted { "Create one with " code { "flowrun flow create NAME --class Noop --every 15m" } " or " code { "flowrun apply flows.toml" } "." }
                }
            }
        } @else {
            div.table-wrap {
                table.flows {
                    thead {
                        tr {
                            th { "Name" }
                            th.hide-sm { "Class" }
                            th.hide-sm { "Schedule" }
                            th { "Last run" }
                            th.hide-sm { "Next run" }
                            th.hide-md { "Recent" }
                            th.actions { span.sr-only { "Actions" } }
                        }
                    }
                    tbody {
                        @for row in rows { (flow_row(page, row, back)) }
                    }
                }
            }
            p.muted.small { (rows.len()) @if rows.len() == 1 { " flow" } @else { " flows" } }
        }
    };
    Rendered(StatusCode::OK, layout(page, "Flows", content))
}

fn flow_row(page: &Page, row: &FlowRow, back: &str) -> Markup {
    let flow = &row.flow;
    let url = flow_url(flow.name.as_str());
    let latest = row.recent.first().map(|record| &record.run);
    html! {
        tr data-live=[latest.and_then(live_attributes)] {
            td.name {
                a href=(url) { (flow.name.as_str()) }
                @if !flow.enabled { " " span.pill.off { "disabled" } }
                @if !flow.description.is_empty() { div.muted.small.desc { (flow.description) } }
            }
            td.hide-sm { code { (class_of(flow)) } }
            td.hide-sm.nowrap { (schedule_text(&flow.schedule)) }
            td.last {
                @match latest {
                    Some(run) => {
                        a.run-link href=(format!("/ui/runs/{}", run.id.0)) { (run_badge(run)) }
                        div.small { (time(run.started_at)) }
                        div.small.muted { (run_duration(run, page.now)) }
                    }
                    None => { span.muted { "never run" } }
                }
            }
            td.hide-sm.small {
                @if !flow.enabled { span.muted { "—" } }
                @else if let Some(retry) = flow.pending_retry { "retry at " (time(retry.at)) }
                @else if let Some(next) = flow.next_run_at.filter(|next| *next <= page.now) {
                    span.due { "due" } div { (time(next)) }
                }
                @else { (maybe_time(flow.next_run_at)) }
            }
            td.hide-md { (strip(&row.recent)) }
            td.actions { (action_button(page, &format!("{url}/run"), back, "Run now", "small")) }
        }
    }
}

/// The latest outcomes, oldest on the left, each a link to its run.
fn strip(recent: &[RunRecord]) -> Markup {
    html! {
        span.strip aria-label="Recent runs, oldest first" {
            @for record in recent.iter().rev() {
                @let run = &record.run;
                a class={"tick " (status_class(run.status))}
                    href=(format!("/ui/runs/{}", run.id.0))
                    title=(format!("#{} {} · {}", run.id.0, status_label(run.status), run.started_at.format("%Y-%m-%d %H:%M:%S UTC"))) {}
            }
        }
    }
}

// ----- a flow's page -----

/// What a flow's page shows.
pub(super) struct FlowView<'a> {
    pub(super) flow: &'a DataFlow,
    pub(super) history: &'a [&'a RunRecord],
    pub(super) chart: &'a [&'a RunRecord],
    pub(super) upcoming: &'a [DateTime<Utc>],
    pub(super) page: u64,
    pub(super) has_older: bool,
    pub(super) notice: Option<Notice>,
}

pub(super) fn flow(page: &Page, view: &FlowView<'_>) -> Rendered {
    let flow = view.flow;
    let url = flow_url(flow.name.as_str());
    let back = if view.page > 1 {
        format!("{url}?page={}", view.page)
    } else {
        url.clone()
    };
    let configuration = serde_json::to_string_pretty(&flowrun_app::json::masked(&flow.configuration))
        .unwrap_or_else(|_| "(unprintable)".to_owned());
    let live = view
        .history
        .first()
        .and_then(|record| live_attributes(&record.run));
    let content = html! {
        (notice_banner(view.notice.as_ref()))
        nav.crumbs { a href="/ui" { "Flows" } " / " }
        div.page-head {
            div {
                h1 { (flow.name.as_str()) " " (enabled_badge(flow)) }
                @if !flow.description.is_empty() { p.muted { (flow.description) } }
            }
            div.buttons {
                (action_button(page, &format!("{url}/run"), &back, "Run now", "primary"))
                @if flow.enabled {
                    (action_button(page, &format!("{url}/disable"), &back, "Disable", ""))
                } @else {
                    (action_button(page, &format!("{url}/enable"), &back, "Enable", ""))
                }
            }
        }
        div.grid {
            section.card {
                h2 { "Schedule" }
                dl {
                    dt { "Runs" } dd { (schedule_text(&flow.schedule)) }
                    @if let Some(retry) = flow.pending_retry {
                        dt { "Retry" } dd { "attempt " (retry.attempt) " at " (time(retry.at)) }
                    }
                    dt { "Next" }
                    dd {
                        @if !flow.enabled { span.muted { "disabled: the scheduler skips it" } }
                        @else if view.upcoming.is_empty() { span.muted { "no next time" } }
                        @else {
                            ol.upcoming { @for at in view.upcoming { li { (time(*at)) } } }
                        }
                    }
                }
            }
            section.card {
                h2 { "Settings" }
                dl {
                    dt { "Class" } dd { code { (class_of(flow)) } }
                    dt { "Timeout" } dd { @match flow.timeout { Some(t) => { (format_duration(t.as_duration())) }, None => { span.muted { "none" } } } }
                    dt { "Retries" } dd { (flow.retry.retries()) @if flow.retry.retries() > 0 { span.muted { ", first after " (format_duration(flow.retry.backoff())) ", doubling" } } }
                    dt { "Last run" } dd { (maybe_time(flow.last_run_at)) }
                    dt { "Created" } dd { (time(flow.created_at)) }
                    dt { "Updated" } dd { (time(flow.updated_at)) }
                }
                @if let Some(state) = &flow.state {
                    h3 { "State" }
                    pre.code { (serde_json::to_string_pretty(state).unwrap_or_default()) }
                }
            }
        }
        section.card {
            h2 { "Run durations" span.muted.small { " · last " (view.chart.len()) " runs" } }
            (super::chart::durations(view.chart))
        }
        section.card.flush {
            h2 { "History" span.muted.small { " · newest first" } }
            @if view.history.is_empty() {
                p.muted.pad { @if view.page == 1 { "No runs yet." } @else { "No runs on this page." } }
            } @else {
                div.table-wrap {
                    table.runs data-live=[live] {
                        thead { tr {
                            th { "Run" } th { "Status" } th.hide-sm { "Trigger" } th { "Started" } th { "Duration" } th.hide-md { "Error" }
                        } }
                        tbody {
                            @for record in view.history {
                                @let run = &record.run;
                                tr {
                                    td { a href=(format!("/ui/runs/{}", run.id.0)) { "#" (run.id.0) } }
                                    td { (run_badge(run)) }
                                    td.hide-sm { (run.trigger.as_str()) @if run.attempt > 1 { span.muted { " · attempt " (run.attempt) } } }
                                    td.small { (time(run.started_at)) }
                                    td.small { (run_duration(run, page.now)) }
                                    td.hide-md.small.error-cell { (first_line(run.error_message.as_deref().unwrap_or(""))) }
                                }
                            }
                        }
                    }
                }
            }
            nav.pager {
                @if view.page > 1 {
                    a href=(if view.page == 2 { url.clone() } else { format!("{url}?page={}", view.page - 1) }) { "← Newer" }
                }
                span.muted.small { "Page " (view.page) " · " (PAGE_SIZE) " runs a page" }
                @if view.has_older {
                    a href=(format!("{url}?page={}", view.page + 1)) { "Older →" }
                }
            }
        }
        section.card {
            h2 { "Configuration" span.muted.small { " · secrets masked" } }
            pre.code { (configuration) }
        }
    };
    Rendered(StatusCode::OK, layout(page, flow.name.as_str(), content))
}

/// The first line of `text`, cut to a readable length.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut cut: String = line.chars().take(120).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    cut
}

// ----- a run's page -----

pub(super) fn run(page: &Page, record: &RunRecord, notice: Option<&Notice>) -> Rendered {
    let run = &record.run;
    let flow_link = flow_url(&record.flow_name);
    let back = format!("/ui/runs/{}", run.id.0);
    let content = html! {
        (notice_banner(notice))
        nav.crumbs { a href="/ui" { "Flows" } " / " a href=(flow_link) { (record.flow_name) } " / " }
        div.page-head {
            h1 { "Run #" (run.id.0) " " span #run-status { (run_badge(run)) } }
            @if !run.status.is_terminal() {
                div.buttons { (action_button(page, &format!("/ui/runs/{}/cancel", run.id.0), &back, "Cancel run", "danger")) }
            }
        }
        section.card #run data-live=[live_attributes(run)] {
            dl.wide {
                dt { "Flow" } dd { a href=(flow_link) { (record.flow_name) } }
                dt { "Status" } dd { (run_badge(run)) }
                dt { "Attempt" } dd { (run.attempt) }
                dt { "Trigger" } dd { (run.trigger.as_str()) }
                dt { "Started" } dd { (time(run.started_at)) }
                dt { "Ended" } dd { (maybe_time(run.ended_at)) }
                dt { "Duration" } dd #run-duration { (run_duration(run, page.now)) }
                @if let Some(kind) = run.failure_kind {
                    dt { "Failure kind" } dd { span.kind { (kind.as_str()) } }
                }
                @if let Some(request) = &run.cancel_requested {
                    dt { "Cancel requested" } dd { (time(request.at)) span.muted { " by " (request.by) } }
                }
                @if !run.status.is_terminal() {
                    @if let Some(owner) = &run.lease_owner { dt { "Running on" } dd { code { (owner) } } }
                }
            }
        }
        @if let Some(message) = &run.error_message {
            section.card.error {
                h2 { "Error" }
                pre.code.message { (message) }
            }
        }
        @if let Some(backtrace) = &run.error_backtrace {
            section.card {
                h2 { "Backtrace" }
                pre.code.backtrace #backtrace { (backtrace) }
            }
        }
        section.card {
            h2 { "Output" }
            @if run.output.is_empty() && run.status.is_terminal() {
                p.muted #output-empty { "The flow wrote no output." }
            } @else {
                pre.code.output #output { (run.output) }
            }
        }
    };
    Rendered(
        StatusCode::OK,
        layout(
            page,
            &format!("Run #{} · {}", run.id.0, record.flow_name),
            content,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally_at_every_scale() {
        assert_eq!(duration_text(850), "850 ms");
        assert_eq!(duration_text(12_345), "12.3 s");
        assert_eq!(duration_text(245_000), "4 min 5 s");
        assert_eq!(duration_text(7_380_000), "2 h 3 min");
        assert_eq!(duration_text(-5), "0 ms");
    }

    #[test]
    fn text_from_runs_is_escaped() {
        let markup = problem(StatusCode::BAD_REQUEST, "<script>alert(1)</script>")
            .1
            .into_string();
        assert!(markup.contains("&lt;script&gt;"));
        assert!(!markup.contains("<script>alert"));
    }

    #[test]
    fn error_lines_are_cut_to_one_line() {
        assert_eq!(first_line("boom\nat line 2"), "boom");
        assert_eq!(first_line(&"x".repeat(200)).chars().count(), 121);
    }
}
