//! Human and JSON output: aligned tables, status words, durations and relative times, a spinner.

use std::io::{IsTerminal, Write};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use flowrun_domain::duration::format_duration;
use flowrun_domain::{
    DataFlow, HeartbeatReport, Progress, RunEnd, RunProgress, RunRecord, RunStatus, Schedule,
};
use serde_json::Value;

/// Writes to stdout. Once the reader is gone (a closed pipe), the rest of the output is dropped and the
/// command ends as it would have, with its own exit code: the reader asked for no more, which is not an
/// error of the command. Any other write error is reported once on stderr.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static CLOSED: AtomicBool = AtomicBool::new(false);
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_fmt(args).and_then(|()| out.flush()) {
        CLOSED.store(true, Ordering::Relaxed);
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to stdout: {error}");
        }
    }
}

/// Prints one JSON document on stdout.
pub fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("error: cannot print JSON: {error}"),
    }
}

/// `text` safe to show on a terminal: control characters a stored error (or any other stored text) may
/// hold are written as visible escapes (`\e`, `\r`, `\u{7}`), so it cannot clear the screen, set the window
/// title, overwrite what was printed or reorder text with bidirectional overrides. With `multi_line`, line
/// breaks and tabs are kept as they are (a backtrace stays readable); otherwise they are escaped too.
pub fn visible(text: &str, multi_line: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' if multi_line => out.push(c),
            '\x1b' => out.push_str("\\e"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_bidi_control(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Unicode's bidirectional embedding, override and isolate characters (they reorder what follows).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// Colour on a terminal only, and never with `NO_COLOR` set.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    colour: bool,
}

impl Style {
    fn new(terminal: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            colour: terminal && !no_color,
        }
    }

    /// For text on stdout.
    pub fn stdout() -> Self {
        Self::new(std::io::stdout().is_terminal())
    }

    /// For text on stderr.
    pub fn stderr() -> Self {
        Self::new(std::io::stderr().is_terminal())
    }

    /// Whether this style colours its text.
    pub fn coloured(&self) -> bool {
        self.colour
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Bold text.
    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// Red bold text for errors.
    pub fn error(&self, text: &str) -> String {
        self.paint("1;31", text)
    }

    /// A run status as a word, coloured by meaning.
    pub fn status(&self, status: RunStatus) -> String {
        let code = match status {
            RunStatus::Success => "32",
            RunStatus::Failed => "31",
            RunStatus::InProgress => "33",
            RunStatus::Pending => "2",
        };
        self.paint(code, status.as_str())
    }

    /// Faint text for what matters less.
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// `1.2s`, `340ms`, `3m 05s`, `2h 10m`.
pub fn human_duration(duration: Duration) -> String {
    let ms = duration.num_milliseconds().max(0);
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// `just now`, `5 min ago`, `3 h ago`, `2 days ago`, or `in 5 min` for the future.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds();
    let (amount, future) = (secs.unsigned_abs(), secs < 0);
    let text = match amount {
        0..=4 => return "just now".to_owned(),
        5..=59 => format!("{amount} s"),
        60..=3599 => format!("{} min", amount / 60),
        3600..=86_399 => format!("{} h", amount / 3600),
        _ => format!("{} days", amount / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// Prints rows as columns aligned to their widest cell (measured without colour codes).
fn print_table(headers: &[&str], rows: &[Vec<(String, usize)>], style: &Style) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, (_, width)) in row.iter().enumerate() {
            widths[i] = widths[i].max(*width);
        }
    }
    let header: Vec<String> = headers
        .iter()
        .zip(&widths)
        .map(|(h, w)| format!("{h:<w$}"))
        .collect();
    println!("{}", style.bold(header.join("  ").trim_end()));
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|((cell, width), w)| format!("{cell}{}", " ".repeat(w - width)))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn cell(text: impl Into<String>) -> (String, usize) {
    let text = text.into();
    let width = text.chars().count();
    (text, width)
}

fn styled(text: String, plain_width: usize) -> (String, usize) {
    (text, plain_width)
}

fn status_cell(status: Option<RunStatus>, style: &Style) -> (String, usize) {
    match status {
        Some(status) => styled(style.status(status), status.as_str().len()),
        None => cell("-"),
    }
}

/// The `flow list` table; `database` names where the flows were looked for.
pub fn print_flows(flows: &[DataFlow], now: DateTime<Utc>, style: &Style, database: &str) {
    if flows.is_empty() {
        println!("no data flows yet in {database}: create one with `flowrun flow create NAME --class Noop`");
        return;
    }
    let rows: Vec<Vec<(String, usize)>> = flows
        .iter()
        .map(|flow| {
            vec![
                cell(flow.id.to_string()),
                cell(flow.name.as_str()),
                cell(flow.flow_class().unwrap_or("?")),
                cell(if flow.enabled { "yes" } else { "no" }),
                cell(schedule_text(&flow.schedule)),
                cell(next_run_text(flow, now)),
                status_cell(flow.last_run_status.map(Into::into), style),
                cell(
                    flow.last_run_at
                        .map_or_else(|| "never".to_owned(), |at| relative(at, now)),
                ),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "NAME",
            "CLASS",
            "ENABLED",
            "SCHEDULE",
            "NEXT RUN",
            "LAST STATUS",
            "LAST RUN",
        ],
        &rows,
        style,
    );
}

/// A schedule as people write it: `every 1h30m`, `cron 0 2 * * * Europe/Berlin`.
pub fn schedule_text(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Every(every) => format!("every {}", format_duration(*every)),
        Schedule::Cron(cron) if cron.time_zone() == "UTC" => format!("cron {}", cron.expression()),
        Schedule::Cron(cron) => format!("cron {} {}", cron.expression(), cron.time_zone()),
    }
}

/// When a flow runs next, relative to `now`: `in 5m`, `due now`, `never`, `disabled`.
fn next_run_text(flow: &DataFlow, now: DateTime<Utc>) -> String {
    match flow.next_run_at {
        _ if !flow.enabled => "disabled".to_owned(),
        None => "never".to_owned(),
        Some(at) if at <= now => "due now".to_owned(),
        Some(at) => relative(at, now),
    }
}

/// What `flowrun heartbeat` did: the counts, then each run it started and how it ended.
pub fn print_heartbeat(report: &HeartbeatReport, style: &Style) {
    let reaped = if report.runs_reaped > 0 {
        format!(", {} abandoned runs closed", report.runs_reaped)
    } else {
        String::new()
    };
    println!(
        "{} due, {} triggered, {} failed{reaped}",
        report.flows_due, report.flows_triggered, report.flows_failed
    );
    for run in &report.triggered {
        let (status, detail) = match &run.end {
            Some(RunEnd::Succeeded) => (style.status(RunStatus::Success), String::new()),
            Some(RunEnd::Failed(message)) => (
                style.status(RunStatus::Failed),
                format!(": {}", visible(message.lines().next().unwrap_or_default(), false)),
            ),
            None => (style.status(RunStatus::InProgress), String::new()),
        };
        println!(
            "  {} run {} {status}{detail}",
            visible(run.flow.as_str(), false),
            run.run_id
        );
    }
}

/// The `flow show` view.
pub fn print_flow(flow: &DataFlow, now: DateTime<Utc>, style: &Style) {
    let last_run = flow.last_run_at.map_or_else(
        || "never".to_owned(),
        |at| format!("{} ({})", at.to_rfc3339(), relative(at, now)),
    );
    let status = flow
        .last_run_status
        .map_or_else(|| "-".to_owned(), |s| style.status(s.into()));
    println!("{}  {}", style.bold("name:       "), flow.name);
    println!("{}  {}", style.bold("id:         "), flow.id);
    println!(
        "{}  {}",
        style.bold("class:      "),
        flow.flow_class().unwrap_or("(none)")
    );
    println!(
        "{}  {}",
        style.bold("enabled:    "),
        if flow.enabled { "yes" } else { "no" }
    );
    println!(
        "{}  {}",
        style.bold("schedule:   "),
        schedule_text(&flow.schedule)
    );
    let next_run = match flow.next_run_at {
        Some(at) => format!("{} ({})", at.to_rfc3339(), next_run_text(flow, now)),
        None => next_run_text(flow, now),
    };
    println!("{}  {next_run}", style.bold("next run:   "));
    println!("{}  {last_run}", style.bold("last run:   "));
    println!("{}  {status}", style.bold("last status:"));
    if !flow.description.is_empty() {
        println!(
            "{}  {}",
            style.bold("description:"),
            visible(&flow.description, false)
        );
    }
    println!(
        "{}  {}",
        style.bold("config:     "),
        flowrun_app::json::masked(&flow.configuration)
    );
    if let Some(state) = &flow.state {
        println!("{}  {state}", style.bold("state:      "));
    }
}

/// The `runs` table.
pub fn print_runs(records: &[RunRecord], now: DateTime<Utc>, style: &Style) {
    if records.is_empty() {
        println!("no runs match");
        return;
    }
    let rows: Vec<Vec<(String, usize)>> = records
        .iter()
        .map(|record| {
            let run = &record.run;
            let error = run
                .error_message
                .as_deref()
                .map(|m| visible(&first_line(m, 60), false))
                .unwrap_or_default();
            vec![
                cell(run.id.to_string()),
                cell(record.flow_name.as_str()),
                status_cell(Some(run.status), style),
                cell(relative(run.started_at, now)),
                cell(run.duration().map_or_else(|| "-".to_owned(), human_duration)),
                cell(error),
            ]
        })
        .collect();
    print_table(
        &["ID", "FLOW", "STATUS", "STARTED", "TOOK", "ERROR"],
        &rows,
        style,
    );
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max - 1).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// The `runs show` view, with the full error and backtrace.
pub fn print_run(record: &RunRecord, now: DateTime<Utc>, style: &Style) {
    let run = &record.run;
    println!("{}  {}", style.bold("run:     "), run.id);
    println!(
        "{}  {} (id {})",
        style.bold("flow:    "),
        record.flow_name,
        run.data_flow_id
    );
    println!("{}  {}", style.bold("status:  "), style.status(run.status));
    println!(
        "{}  {} ({})",
        style.bold("started: "),
        run.started_at.to_rfc3339(),
        relative(run.started_at, now)
    );
    if let Some(ended) = run.ended_at {
        println!("{}  {}", style.bold("ended:   "), ended.to_rfc3339());
        println!(
            "{}  {}",
            style.bold("took:    "),
            human_duration(ended - run.started_at)
        );
    }
    if run.status == RunStatus::InProgress {
        if let Some(owner) = &run.lease_owner {
            println!("{}  {owner}", style.bold("held by: "));
        }
        if let Some(expires) = run.lease_expires_at {
            let state = if expires < now { "expired" } else { "expires" };
            println!("{}  {state} {}", style.bold("lease:   "), relative(expires, now));
        }
    }
    if !run.output.is_empty() {
        println!(
            "\n{}\n{}",
            style.bold("output:"),
            visible(run.output.trim_end(), true)
        );
    }
    if let Some(message) = &run.error_message {
        println!("\n{}\n{}", style.bold("error:"), visible(message, true));
    }
    if let Some(backtrace) = &run.error_backtrace {
        println!(
            "\n{}\n{}",
            style.bold("backtrace:"),
            style.dim(&visible(backtrace, true))
        );
    }
}

/// A spinner with the elapsed time on stderr, shown only after the run has taken a moment, and the run's
/// progress when its flow reports any (SqlCopy: rows and rows/s). The line is rewritten in place and
/// cleared at the end.
pub struct Spinner {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Spinner {
    /// Starts spinning for the flow `name`, showing what `progress` holds.
    pub fn start(name: String, progress: RunProgress) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(StdDuration::from_millis(100));
            let mut shown = false;
            for frame in FRAMES.iter().cycle() {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let elapsed = started.elapsed();
                if elapsed < StdDuration::from_millis(300) {
                    continue;
                }
                shown = true;
                let line = spinner_line(*frame, &name, elapsed, progress.get());
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
            }
            if shown {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K");
                let _ = err.flush();
            }
        });
        Self { stop, task }
    }

    /// Stops and clears the spinner line.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The spinner's line: `⠋ running NAME (12.3s)`, then `: 120000 rows, 9756 rows/s` once the flow reports
/// progress.
pub fn spinner_line(frame: char, name: &str, elapsed: StdDuration, progress: Option<Progress>) -> String {
    let seconds = elapsed.as_secs_f64();
    let mut line = format!("{frame} running {name} ({seconds:.1}s)");
    if let Some(Progress { done, unit }) = progress {
        let rate = if seconds > 0.0 { done as f64 / seconds } else { 0.0 };
        line.push_str(&format!(": {done} {unit}, {rate:.0} {unit}/s"));
    }
    line
}

/// `n thing`, `n things`.
pub fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("{n} {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spinner_line_adds_progress_and_its_rate_once_reported() {
        let elapsed = StdDuration::from_millis(2500);
        assert_eq!(spinner_line('⠋', "copy", elapsed, None), "⠋ running copy (2.5s)");
        assert_eq!(
            spinner_line(
                '⠙',
                "copy",
                elapsed,
                Some(Progress {
                    done: 25_000,
                    unit: "rows"
                })
            ),
            "⠙ running copy (2.5s): 25000 rows, 10000 rows/s"
        );
    }

    #[test]
    fn counts_read_naturally() {
        assert_eq!(plural(1, "run"), "1 run");
        assert_eq!(plural(0, "run"), "0 runs");
        assert_eq!(plural(3, "run"), "3 runs");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::milliseconds(340)), "340ms");
        assert_eq!(human_duration(Duration::milliseconds(1234)), "1.2s");
        assert_eq!(human_duration(Duration::seconds(185)), "3m 05s");
        assert_eq!(human_duration(Duration::seconds(7800)), "2h 10m");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        let hostile = "\u{1b}[2J\u{1b}]0;TITLE\u{7}cleared\rfake: success\u{202e}";
        assert_eq!(
            visible(hostile, false),
            "\\e[2J\\e]0;TITLE\\u{7}cleared\\rfake: success\\u{202e}"
        );
        assert_eq!(visible("a\n\tb\r\n", true), "a\n\tb\\r\n");
        assert_eq!(visible("a\nb", false), "a\\nb");
        assert_eq!(visible("ünïcode ✓", false), "ünïcode ✓");
    }

    #[test]
    fn relative_times_read_naturally() {
        let now = DateTime::<Utc>::UNIX_EPOCH + Duration::days(1000);
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now - Duration::seconds(300), now), "5 min ago");
        assert_eq!(relative(now + Duration::seconds(7200), now), "in 2 h");
    }
}
