//! The flows file `flowrun apply` reads: one TOML table per flow under `flows`, turned into the domain's
//! [`DesiredFlow`]s. Every problem is reported with its line, all of them at once: TOML syntax, unknown
//! keys, bad durations and schedules here, and the domain's refusals ([`Problem`]s from
//! [`flowrun_domain::FlowManagement::plan`]) mapped back to the line of the key they are about.
//!
//! ```toml
//! [flows.nightly-backup]
//! class = "Command"
//! cron = "0 2 * * *"          # or: every = "1h" | interval = 3600; tz = "Europe/Berlin" with cron
//! timeout = "10m"             # optional; also retries, retry_backoff, enabled, description
//! [flows.nightly-backup.settings]
//! program = "pg_dump"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use flowrun_domain::{ApplyField, CronSchedule, DesiredFlow, Problem, Schedule, parse_duration};
use serde::Deserialize;
use serde_json::Value as Json;
use thiserror::Error;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// The keys a flow's table may have, for the message about an unknown one.
const FLOW_KEYS: [&str; 11] = [
    "class",
    "every",
    "interval",
    "cron",
    "tz",
    "timeout",
    "retries",
    "retry_backoff",
    "enabled",
    "description",
    "settings",
];

/// One problem in a flows file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The file as the user named it.
    pub file: String,
    /// The 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Why a flows file cannot be applied: every problem found, one per line when shown.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct FlowsFileError {
    /// The problems, in the order of the file.
    pub problems: Vec<FileProblem>,
}

/// Where a flow's parts are in the file.
#[derive(Debug, Clone, Default)]
struct FlowLines {
    header: usize,
    fields: BTreeMap<&'static str, usize>,
    settings: BTreeMap<String, usize>,
}

/// A parsed flows file: the flows it declares, and where each part is, to place the domain's problems.
#[derive(Debug, Clone)]
pub struct FlowsFile {
    /// The flows, in the order of the file.
    pub flows: Vec<DesiredFlow>,
    file: String,
    lines: BTreeMap<String, FlowLines>,
}

/// A flow's table as written; unknown keys are found first (all of them), so serde's refusal is the net.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowTable {
    class: Option<Spanned<String>>,
    every: Option<Spanned<toml::Value>>,
    interval: Option<Spanned<i64>>,
    cron: Option<Spanned<String>>,
    tz: Option<Spanned<String>>,
    timeout: Option<Spanned<toml::Value>>,
    retries: Option<Spanned<u32>>,
    retry_backoff: Option<Spanned<toml::Value>>,
    enabled: Option<Spanned<bool>>,
    description: Option<Spanned<String>>,
    settings: Option<Spanned<BTreeMap<Spanned<String>, toml::Value>>>,
}

/// Parses the flows file `text`, named `file` in messages.
pub fn parse_flows_file(file: &str, text: &str) -> Result<FlowsFile, FlowsFileError> {
    let mut parser = Parser {
        file,
        text,
        problems: Vec::new(),
    };
    let (document, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for error in errors {
            let line = error.span().map(|span| parser.line(&span));
            parser.push(line, format!("invalid TOML: {}", error.message()));
        }
        return Err(parser.finish());
    }
    let mut flows = Vec::new();
    let mut lines = BTreeMap::new();
    for (key, value) in document.get_ref() {
        if key.get_ref() != "flows" {
            parser.at(
                key.span(),
                format!(
                    "unknown key `{}`: a flows file holds `[flows.NAME]` tables only",
                    key.get_ref()
                ),
            );
            continue;
        }
        let Some(table) = value.get_ref().as_table() else {
            parser.at(
                value.span(),
                "`flows` must be a table of flows ([flows.NAME])".to_owned(),
            );
            continue;
        };
        for (name, flow) in table {
            if let Some((desired, flow_lines)) = parser.flow(name, flow) {
                lines.insert(desired.name.clone(), flow_lines);
                flows.push(desired);
            }
        }
    }
    // The parser's tables are sorted by key; keep the file's order, which people read the plan in.
    flows.sort_by_key(|flow: &DesiredFlow| lines.get(&flow.name).map_or(0, |l: &FlowLines| l.header));
    if parser.problems.is_empty() && flows.is_empty() {
        parser.push(
            Some(1),
            "the file declares no flows: write one `[flows.NAME]` table per flow".to_owned(),
        );
    }
    if !parser.problems.is_empty() {
        return Err(parser.finish());
    }
    Ok(FlowsFile {
        flows,
        file: file.to_owned(),
        lines,
    })
}

impl FlowsFile {
    /// The domain's problems with the lines of the keys they are about.
    pub fn locate(&self, problems: &[Problem]) -> FlowsFileError {
        let problems = problems
            .iter()
            .map(|problem| FileProblem {
                file: self.file.clone(),
                line: self.lines.get(&problem.flow).map(|lines| lines.of(problem)),
                message: problem.to_string(),
            })
            .collect();
        FlowsFileError { problems }
    }
}

impl FlowLines {
    /// The line `problem` is about: its key's, or the flow's header.
    fn of(&self, problem: &Problem) -> usize {
        let field = |names: &[&str]| names.iter().find_map(|name| self.fields.get(name).copied());
        let line = match problem.field {
            None | Some(ApplyField::Name) => None,
            Some(ApplyField::Class) => field(&["class"]),
            Some(ApplyField::Schedule) => field(&["every", "interval", "cron"]),
            Some(ApplyField::Timeout) => field(&["timeout"]),
            Some(ApplyField::Retries) => field(&["retries"]),
            Some(ApplyField::RetryBackoff) => field(&["retry_backoff", "retries"]),
            Some(ApplyField::Settings) => backticked(&problem.message)
                .find_map(|path| {
                    let root = path.split(['.', '[']).next().unwrap_or(path);
                    self.settings.get(root).copied()
                })
                .or_else(|| field(&["settings", "class"])),
        };
        line.unwrap_or(self.header)
    }
}

/// The `quoted` parts of a message, in order.
fn backticked(message: &str) -> impl Iterator<Item = &str> {
    message.split('`').skip(1).step_by(2)
}

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
    problems: Vec<FileProblem>,
}

impl Parser<'_> {
    /// The 1-based line of the start of `span`.
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn push(&mut self, line: Option<usize>, message: String) {
        self.problems.push(FileProblem {
            file: self.file.to_owned(),
            line,
            message,
        });
    }

    fn at(&mut self, span: Range<usize>, message: String) {
        let line = self.line(&span);
        self.push(Some(line), message);
    }

    fn finish(mut self) -> FlowsFileError {
        // Stable: problems of one line keep their order.
        self.problems.sort_by_key(|problem| problem.line);
        FlowsFileError {
            problems: self.problems,
        }
    }

    /// One `[flows.NAME]` table as a desired flow, or `None` with its problems recorded.
    fn flow(
        &mut self,
        name: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<(DesiredFlow, FlowLines)> {
        let flow_name = name.get_ref().to_string();
        let before = self.problems.len();
        let header = self.line(&name.span());
        let at = |parser: &mut Self, span: Range<usize>, message: String| {
            parser.at(span, format!("flow `{flow_name}`: {message}"));
        };
        let Some(table) = value.get_ref().as_table() else {
            at(
                self,
                value.span(),
                format!(
                    "expected a table of the flow's keys ([flows.{flow_name}]), got {}",
                    value.get_ref().type_str()
                ),
            );
            return None;
        };
        for key in table.keys() {
            if !FLOW_KEYS.contains(&key.get_ref().as_ref()) {
                at(
                    self,
                    key.span(),
                    format!(
                        "unknown key `{}` (expected one of: {})",
                        key.get_ref(),
                        FLOW_KEYS.join(", ")
                    ),
                );
            }
        }
        if self.problems.len() > before {
            return None;
        }
        let parsed = FlowTable::deserialize(ValueDeserializer::from(value.clone()));
        let table = match parsed {
            Ok(table) => table,
            Err(error) => {
                let span = error.span().unwrap_or_else(|| value.span());
                // Name the key whose value was refused: serde's message names the type only.
                let key = table
                    .iter()
                    .find(|(_, value)| value.span().contains(&span.start))
                    .map(|(key, _)| format!("`{}`: ", key.get_ref()))
                    .unwrap_or_default();
                at(self, span, format!("{key}{}", error.message()));
                return None;
            }
        };

        let mut lines = FlowLines {
            header,
            ..FlowLines::default()
        };
        let mark = |lines: &mut FlowLines, key: &'static str, span: Range<usize>| {
            lines.fields.insert(key, self.line(&span));
        };
        for (key, span) in [
            ("class", table.class.as_ref().map(Spanned::span)),
            ("every", table.every.as_ref().map(Spanned::span)),
            ("interval", table.interval.as_ref().map(Spanned::span)),
            ("cron", table.cron.as_ref().map(Spanned::span)),
            ("timeout", table.timeout.as_ref().map(Spanned::span)),
            ("retries", table.retries.as_ref().map(Spanned::span)),
            ("retry_backoff", table.retry_backoff.as_ref().map(Spanned::span)),
            ("settings", table.settings.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span {
                mark(&mut lines, key, span);
            }
        }
        if let Some(settings) = &table.settings {
            for key in settings.get_ref().keys() {
                lines
                    .settings
                    .insert(key.get_ref().clone(), self.line(&key.span()));
            }
        }

        let class = match &table.class {
            Some(class) => class.get_ref().clone(),
            None => {
                at(
                    self,
                    name.span(),
                    "missing `class` (the flow class, see `flowrun classes`)".to_owned(),
                );
                String::new()
            }
        };
        let schedule = self.schedule(&flow_name, &table);
        let timeout_secs = table
            .timeout
            .as_ref()
            .and_then(|timeout| self.duration(&flow_name, "timeout", timeout).map(|d| d.as_secs()));
        let retry_backoff = table
            .retry_backoff
            .as_ref()
            .and_then(|backoff| self.duration(&flow_name, "retry_backoff", backoff));
        let settings = table.settings.as_ref().and_then(|settings| {
            let mut object = serde_json::Map::new();
            let mut ok = true;
            for (key, value) in settings.get_ref() {
                match to_json(value) {
                    Ok(json) => {
                        object.insert(key.get_ref().clone(), json);
                    }
                    Err(reason) => {
                        ok = false;
                        self.at(
                            key.span(),
                            format!("flow `{flow_name}`: setting `{}`: {reason}", key.get_ref()),
                        );
                    }
                }
            }
            ok.then_some(Json::Object(object))
        });
        if self.problems.len() > before {
            return None;
        }
        Some((
            DesiredFlow {
                name: flow_name,
                class,
                settings,
                schedule: schedule.flatten(),
                description: table.description.map(Spanned::into_inner).unwrap_or_default(),
                enabled: table.enabled.is_none_or(|enabled| *enabled.get_ref()),
                timeout_secs,
                retries: table.retries.map_or(0, Spanned::into_inner),
                retry_backoff,
            },
            lines,
        ))
    }

    /// The flow's schedule: `Some(None)` for none given, `None` after recording a problem.
    fn schedule(&mut self, flow: &str, table: &FlowTable) -> Option<Option<Schedule>> {
        let given: Vec<(&str, Range<usize>)> = [
            ("every", table.every.as_ref().map(Spanned::span)),
            ("interval", table.interval.as_ref().map(Spanned::span)),
            ("cron", table.cron.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(key, span)| span.map(|span| (key, span)))
        .collect();
        if let [(first, _), (second, span), ..] = given.as_slice() {
            self.at(
                span.clone(),
                format!("flow `{flow}`: `{first}` and `{second}` both given; a flow has one schedule"),
            );
            return None;
        }
        if let (Some(tz), None) = (&table.tz, &table.cron) {
            self.at(
                tz.span(),
                format!("flow `{flow}`: `tz` is the time zone of `cron`, which is not given"),
            );
            return None;
        }
        if let Some(cron) = &table.cron {
            return match CronSchedule::parse(
                cron.get_ref(),
                table.tz.as_ref().map(|tz| tz.get_ref().as_str()),
            ) {
                Ok(cron) => Some(Some(Schedule::Cron(cron))),
                Err(error) => {
                    let span = match (&error, &table.tz) {
                        (flowrun_domain::ScheduleError::UnknownTimeZone(_), Some(tz)) => tz.span(),
                        _ => cron.span(),
                    };
                    self.at(span, format!("flow `{flow}`: {error}"));
                    None
                }
            };
        }
        let secs = match (&table.every, &table.interval) {
            (Some(every), _) => {
                let every = self.duration(flow, "every", every)?;
                i64::try_from(every.as_secs()).unwrap_or(i64::MAX)
            }
            (None, Some(interval)) => *interval.get_ref(),
            (None, None) => return Some(None),
        };
        match Schedule::every_secs(secs) {
            Ok(schedule) => Some(Some(schedule)),
            Err(error) => {
                let span = table
                    .interval
                    .as_ref()
                    .map(Spanned::span)
                    .or_else(|| table.every.as_ref().map(Spanned::span))
                    .unwrap_or_default();
                self.at(span, format!("flow `{flow}`: `interval`: {error}"));
                None
            }
        }
    }

    /// A duration key: a string such as `"15m"`, or a whole number of seconds.
    fn duration(
        &mut self,
        flow: &str,
        key: &str,
        value: &Spanned<toml::Value>,
    ) -> Option<std::time::Duration> {
        let parsed = match value.get_ref() {
            toml::Value::String(text) => parse_duration(text).map_err(|e| e.to_string()),
            toml::Value::Integer(secs) => parse_duration(&secs.to_string()).map_err(|e| e.to_string()),
            other => Err(format!(
                "expected a duration such as \"90s\", \"15m\" or \"1h30m\", or a number of seconds; got {}",
                other.type_str()
            )),
        };
        match parsed {
            Ok(duration) => Some(duration),
            Err(reason) => {
                self.at(value.span(), format!("flow `{flow}`: `{key}`: {reason}"));
                None
            }
        }
    }
}

/// A settings value as JSON: datetimes become their RFC 3339 text.
fn to_json(value: &toml::Value) -> Result<Json, String> {
    Ok(match value {
        toml::Value::String(text) => Json::String(text.clone()),
        toml::Value::Integer(n) => Json::from(*n),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .ok_or_else(|| format!("{f} is not a number JSON can hold"))?,
        toml::Value::Boolean(b) => Json::Bool(*b),
        toml::Value::Datetime(at) => Json::String(at.to_string()),
        toml::Value::Array(items) => Json::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(table) => Json::Object(
            table
                .iter()
                .map(|(key, value)| Ok((key.clone(), to_json(value)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(text: &str) -> Vec<String> {
        parse_flows_file("flows.toml", text)
            .expect_err("refused")
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_full_file_becomes_desired_flows() {
        let file = parse_flows_file(
            "flows.toml",
            r#"
[flows.nightly-backup]
class = "Command"
cron = "0 2 * * *"
tz = "Europe/Berlin"
timeout = "10m"
retries = 2
retry_backoff = 45
description = "the nightly dump"
[flows.nightly-backup.settings]
program = "pg_dump"
args = ["--file", "/backups/nightly.sql"]
env = { PGHOST = "db" }
since = 2026-01-02T03:04:05Z
ratio = 0.5

[flows.ping]
class = "Noop"
every = "5m"
enabled = false

[flows.hourly]
class = "Noop"
interval = 3600
"#,
        )
        .expect("parsed");
        let [backup, ping, hourly] = file.flows.as_slice() else {
            panic!("three flows: {:?}", file.flows);
        };
        assert_eq!(backup.name, "nightly-backup");
        assert_eq!(backup.class, "Command");
        assert_eq!(
            backup.schedule,
            Some(Schedule::Cron(
                CronSchedule::parse("0 2 * * *", Some("Europe/Berlin")).expect("cron")
            ))
        );
        assert_eq!(backup.timeout_secs, Some(600));
        assert_eq!(backup.retries, 2);
        assert_eq!(backup.retry_backoff, Some(std::time::Duration::from_secs(45)));
        assert_eq!(backup.description, "the nightly dump");
        assert!(backup.enabled);
        assert_eq!(
            backup.settings,
            Some(json!({
                "program": "pg_dump",
                "args": ["--file", "/backups/nightly.sql"],
                "env": {"PGHOST": "db"},
                "since": "2026-01-02T03:04:05Z",
                "ratio": 0.5,
            }))
        );
        assert_eq!(ping.schedule, Some(Schedule::every_secs(300).expect("every")));
        assert!(!ping.enabled);
        assert_eq!(ping.settings, None);
        assert_eq!(hourly.schedule, Some(Schedule::every_secs(3600).expect("every")));
        assert_eq!(hourly.retries, 0);
        assert_eq!(hourly.description, "");
    }

    #[test]
    fn every_problem_is_named_with_its_line() {
        let found = problems(
            r#"[flows.a]
class = "Noop"
evry = "5m"
colour = "red"

[flows.b]
class = "Noop"
every = "5 minutes"
timeout = "0s"

[flows.c]
class = "Noop"
every = "1h"
cron = "0 2 * * *"

[flows.d]
class = "Noop"
cron = "61 * * * *"

[flows.e]
every = "1h"

[flows.f]
class = "Noop"
retries = "two"
"#,
        );
        let expected = [
            "flows.toml:3: flow `a`: unknown key `evry`",
            "flows.toml:4: flow `a`: unknown key `colour`",
            "flows.toml:8: flow `b`: `every`: invalid duration `5 minutes`",
            "flows.toml:9: flow `b`: `timeout`: invalid duration `0s`",
            "flows.toml:14: flow `c`: `every` and `cron` both given",
            "flows.toml:18: flow `d`: invalid cron expression `61 * * * *`",
            "flows.toml:20: flow `e`: missing `class`",
            "flows.toml:25: flow `f`: `retries`: invalid type",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (found, expected) in found.iter().zip(expected) {
            assert!(found.starts_with(expected), "{found} / {expected}");
        }
    }

    #[test]
    fn syntax_errors_and_empty_files_are_refused_with_a_line() {
        let found = problems("[flows.a]\nclass = \"Noop\nevery = 3\n");
        assert!(found[0].starts_with("flows.toml:2: invalid TOML"), "{found:?}");
        let found = problems("# nothing yet\n");
        assert_eq!(
            found,
            ["flows.toml:1: the file declares no flows: write one `[flows.NAME]` table per flow"]
        );
        let found = problems("title = \"x\"\n[flows.a]\nclass = \"Noop\"\n");
        assert!(
            found[0].starts_with("flows.toml:1: unknown key `title`"),
            "{found:?}"
        );
        let found = problems("[flows.a]\nclass = \"Noop\"\ntz = \"UTC\"\n");
        assert!(found[0].starts_with("flows.toml:3: flow `a`: `tz`"), "{found:?}");
    }

    #[test]
    fn the_domains_problems_get_the_line_of_their_key() {
        let file = parse_flows_file(
            "flows.toml",
            "[flows.backup]\nclass = \"Command\"\ntimeout = 30\n\n[flows.backup.settings]\nprogram = \"x\"\nprogam = \"y\"\n",
        )
        .expect("parsed");
        let problem = |field, message: &str| Problem {
            flow: "backup".into(),
            field,
            message: message.into(),
        };
        let located = file.locate(&[
            problem(
                Some(ApplyField::Settings),
                "invalid configuration for flow class `Command`: unknown setting `progam`",
            ),
            problem(Some(ApplyField::Class), "unknown flow class `Command`"),
            problem(Some(ApplyField::Timeout), "a timeout must be …"),
            problem(Some(ApplyField::Name), "declared twice"),
            Problem {
                flow: "elsewhere".into(),
                field: None,
                message: "running".into(),
            },
        ]);
        let lines: Vec<_> = located.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(7), Some(2), Some(3), Some(1), None]);
        assert_eq!(
            located.problems[0].to_string(),
            "flows.toml:7: flow `backup`: invalid configuration for flow class `Command`: unknown setting `progam`"
        );
        assert_eq!(
            located.problems[4].to_string(),
            "flows.toml: flow `elsewhere`: running"
        );
    }
}
