//! `flowrun schedule`: the next fire times of a flow's schedule or of one given on the command line; and
//! the schedule options that `flow create` and `flow update` share.

use chrono::{DateTime, Utc};
use clap::Args;
use flowrun_app::MigratePolicy;
use flowrun_domain::duration::parse_duration;
use flowrun_domain::schedule::MAX_UPCOMING;
use flowrun_domain::{ClassRegistry, CronSchedule, RunInterval, Schedule};
use serde_json::Value;

use crate::database::{find_flow, open, require_existing_database};
use crate::exit::{Failure, Outcome};
use crate::output::print_json;

/// When a flow runs: every interval (default: every hour) or on a cron expression.
#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    /// Run every DURATION: 90, 90s, 15m, 1h30m, 7d.
    #[arg(long, value_name = "DURATION", conflicts_with_all = ["interval", "cron"])]
    every: Option<String>,
    /// Seconds between runs (the same as --every SECS).
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        conflicts_with = "cron"
    )]
    interval: Option<i64>,
    /// Run on a cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds
    /// first, e.g. "0 2 * * *".
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// The IANA time zone --cron is read in (default UTC), e.g. Europe/Berlin.
    #[arg(long, value_name = "ZONE", requires = "cron")]
    tz: Option<String>,
}

impl ScheduleArgs {
    /// The schedule given, if any; bad values are usage errors.
    pub(crate) fn parse(&self) -> Result<Option<Schedule>, Failure> {
        let usage = |e: &dyn std::fmt::Display| Failure::Usage(e.to_string());
        if let Some(expression) = &self.cron {
            let cron = CronSchedule::parse(expression, self.tz.as_deref()).map_err(|e| usage(&e))?;
            return Ok(Some(Schedule::Cron(cron)));
        }
        let secs = match (&self.every, self.interval) {
            (Some(every), _) => {
                let every = parse_duration(every).map_err(|e| usage(&e))?;
                i64::try_from(every.as_secs()).unwrap_or(i64::MAX)
            }
            (None, Some(secs)) => secs,
            (None, None) => return Ok(None),
        };
        let interval = RunInterval::from_secs(secs).map_err(|e| usage(&e))?;
        Ok(Some(interval.schedule()))
    }
}

/// `flowrun schedule`: the next fire times of a flow's schedule or of one given on the command line.
pub(crate) async fn schedule_command(
    url: &str,
    registry: ClassRegistry,
    name: Option<String>,
    schedule: &ScheduleArgs,
    from: Option<&str>,
    count: usize,
    json: bool,
) -> Outcome {
    if count == 0 || count > MAX_UPCOMING {
        return Err(Failure::Usage(format!(
            "--count must be between 1 and {MAX_UPCOMING}, got {count}"
        )));
    }
    let from = from
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw.trim())
                .map(|at| at.with_timezone(&Utc))
                .map_err(|e| Failure::Usage(format!("--from `{raw}` is not an RFC 3339 time: {e}")))
        })
        .transpose()?;
    let times = match name {
        Some(name) => {
            require_existing_database(url)?;
            let app = open(url, MigratePolicy::SqliteOnly, registry).await?;
            let flow = find_flow(&app, &name).await?;
            match (from, flow.next_run_at) {
                // The flow's own next times: its stored next run, then the schedule's slots after it.
                (None, Some(next)) => {
                    std::iter::successors(Some(next), |at| flow.schedule.next_run_after(*at, *at))
                        .take(count)
                        .collect()
                }
                (None, None) => Vec::new(),
                (Some(from), _) => flow.schedule.upcoming(from, count),
            }
        }
        None => {
            let schedule = schedule.parse()?.ok_or_else(|| {
                Failure::Usage("give a flow name, --cron EXPR or --every DURATION".to_owned())
            })?;
            schedule.upcoming(from.unwrap_or_else(Utc::now), count)
        }
    };
    if json {
        print_json(&Value::Array(
            times
                .iter()
                .map(|at| flowrun_app::json::timestamp(Some(*at)))
                .collect(),
        ));
    } else if times.is_empty() {
        println!("this schedule has no future fire time");
    } else {
        for at in times {
            println!("{}", at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        }
    }
    Ok(())
}
