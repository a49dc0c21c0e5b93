//! When a flow runs: every fixed interval, or on a cron expression in an IANA time zone.
//!
//! # Intervals
//!
//! [`Schedule::Every`] holds a whole number of seconds from 1 to [`MAX_INTERVAL_SECS`] (100 years). A flow is
//! due as soon as it is created, and after each claimed run the next slot is the first `slot + k × interval`
//! (k ≥ 1) later than the claim, so slots never drift with the scheduler's tick, and a flow that missed
//! several slots (downtime) runs once, not once per missed slot.
//!
//! # Cron expressions
//!
//! Expressions are parsed and evaluated by the `croner` crate, with these rules:
//!
//! - **Fields**: 5 fields `minute hour day-of-month month day-of-week`, or 6 with a leading `second`
//!   field (0–59; with 5 fields the second is 0). Anything else (including croner's 7-field form with a year)
//!   is refused. Fields are separated by whitespace; surrounding whitespace is ignored.
//! - **Values**: minute 0–59, hour 0–23, day-of-month 1–31, month 1–12 or `JAN`–`DEC`, day-of-week 0–7 or
//!   `SUN`–`SAT` (0 and 7 are both Sunday). Names are case-insensitive and refused outside their own field.
//! - **Syntax**: `*`, lists `1,15`, ranges `1-5`, steps `*/15` and `10-50/20`; `?` is the same as `*` in
//!   the two day fields. A step needs a range or `*` before it (`0/10` is refused).
//! - **Nicknames**: `@yearly` and `@annually` (`0 0 1 1 *`), `@monthly` (`0 0 1 * *`), `@weekly`
//!   (`0 0 * * SUN`), `@daily` (`0 0 * * *`), `@hourly` (`0 * * * *`); `@reboot` and others are refused.
//! - **Day-of-month and day-of-week** (Vixie/ISC cron rule): when both are restricted (neither is `*`), a day
//!   matching EITHER fires: `0 0 13 * 5` fires at midnight on every Friday and on every 13th. When one of them
//!   is `*` (or `?`), only the other one restricts. Only a field that is exactly `*` counts as unrestricted:
//!   `0 0 */10 * 1` fires on the 1st, 11th, 21st and 31st AND on every Monday (Vixie cron would read `*/10`
//!   as unrestricted and fire only on Mondays that are one of those days). croner's extension `+` in front of the day-of-week field asks for
//!   both instead (`0 0 13 * +5`: only Friday the 13th).
//! - **Other croner extensions** also accepted: `L` (last day of the month; `5L` last Friday), `W` (nearest
//!   weekday, `15W`), `#` (`5#2` second Friday).
//! - **Time zone**: fields are matched against the wall clock of the schedule's zone (UTC when none is given);
//!   times are returned in UTC.
//!
//! ## Daylight saving time
//!
//! As in Vixie cron, a job whose second (if given), minute and hour fields contain no `*` (single values,
//! lists or ranges: `30 2 * * *`, `30 2,14 * * *`, `0,30 1-2 * * *`) runs once per DST change, while a job
//! with `*` in one of those fields (`0 * * * *`, `*/30 2 * * *`) follows the real clock. Nicknames other than
//! `@hourly` are of the first kind.
//!
//! - **Spring forward** (a wall-clock hour is skipped): a job of the first kind whose times fall in the gap
//!   runs once that day, at the first instant after the gap, however many of its times the gap holds.
//!   Europe/Berlin on 2026-03-29, `30 2 * * *` runs at 03:00 CEST = 01:00 UTC (02:30 CET the day before is
//!   01:30 UTC, 02:30 CEST the day after 00:30 UTC); America/New_York on 2026-03-08 it runs at 03:00 EDT =
//!   07:00 UTC. A job with `*` has no run at the times that do not exist: `0 * * * *` skips 02:00, which is
//!   still one run per real hour, and `*/30 2 * * *` does not run at all that day.
//! - **Fall back** (a wall-clock hour repeats): a job of the first kind runs only on the first pass through the
//!   repeated hour: Europe/Berlin on 2026-10-25, `30 2 * * *` runs at 02:30 CEST = 00:30 UTC, not at 02:30 CET
//!   = 01:30 UTC; America/New_York on 2026-11-01, `30 1 * * *` runs at 01:30 EDT = 05:30 UTC, not at
//!   06:30 UTC. A job with `*` runs on both passes: `0 * * * *` fires once per real hour (Berlin 00:00 and
//!   01:00 UTC, both 02:00 local), `*/30 2 * * *` four times (00:00, 00:30, 01:00, 01:30 UTC).
//!
//! ## Range
//!
//! Fire times are searched from year 1 to year 4999 (croner's limits): an instant outside that range gives
//! no next time. An expression that can never fire is refused when parsed: one with a field that selects
//! nothing (`, * * * *`, or `L` alone in day-of-week) or a date that does not exist (`0 0 30 2 *`).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, CronComponent, JobType};

use crate::duration::format_duration;

/// Seconds between runs, bounded: 1 ..= MAX_INTERVAL_SECS.
pub const MAX_INTERVAL_SECS: i64 = 100 * 365 * 86_400;

/// The most fire times [`Schedule::upcoming`] returns, whatever count is asked for, so that a huge count
/// cannot exhaust memory.
pub const MAX_UPCOMING: usize = 1_000;

/// croner searches fire times only within these years; outside them it may fail, and chrono panics when
/// converting its extreme instants to a local time.
const SEARCH_YEARS: std::ops::Range<i32> = 1..croner::YEAR_UPPER_LIMIT;

/// The nicknames croner translates; others would reach croner's field parser and fail with a confusing
/// message.
const NICKNAMES: [&str; 6] = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"];

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// What is expected of an expression, for error messages.
const EXPECTED_FIELDS: &str = "expected 5 fields (minute hour day-of-month month day-of-week), 6 with a leading second, or a nickname such as @daily";

/// When a flow runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every fixed interval: whole seconds, 1 ..= [`MAX_INTERVAL_SECS`] (build it with
    /// [`Schedule::every_secs`]). Sub-second parts are ignored, and an interval outside the bounds has no run
    /// times.
    Every(Duration),
    /// At the fire times of a cron expression in a time zone.
    Cron(CronSchedule),
}

/// A parsed cron expression with its time zone; see the [module documentation](self) for its semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    expression: String,
    tz: Tz,
    // Boxed because croner's parsed pattern is several hundred bytes, which would bloat every `Schedule`.
    cron: Box<Cron>,
    /// Vixie cron runs a job whose second, minute and hour fields hold no `*` once per DST change, like a
    /// single fixed time; croner does so only for single values, so lists and ranges get the rule here.
    collapse_dst: bool,
}

/// Why a schedule was refused. Each message is one line naming the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// An interval outside 1 ..= [`MAX_INTERVAL_SECS`] seconds.
    #[error("invalid interval of {0} seconds: expected 1 to {MAX_INTERVAL_SECS} seconds (100 years)")]
    IntervalOutOfRange(i64),
    /// A cron expression with the wrong number of fields.
    #[error("invalid cron expression `{}`: found {found} fields; {EXPECTED_FIELDS}", .expression.escape_debug())]
    WrongFieldCount {
        /// The expression, trimmed.
        expression: String,
        /// How many whitespace-separated fields it has.
        found: usize,
    },
    /// A cron expression that does not parse, or that can never fire.
    #[error("invalid cron expression `{}`: {}", .expression.escape_debug(), .reason.escape_debug())]
    InvalidCron {
        /// The expression, trimmed.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A time zone that is not in the IANA database.
    #[error("unknown time zone `{}`: expected an IANA name such as UTC, Europe/Berlin or America/New_York", .0.escape_debug())]
    UnknownTimeZone(String),
}

impl CronSchedule {
    /// Parses a 5-field (min hour dom mon dow) or 6-field (with leading seconds) expression; tz None = UTC.
    pub fn parse(expression: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let expression = expression.trim();
        let tz = match time_zone {
            None => Tz::UTC,
            Some(name) => {
                let name = name.trim();
                name.parse::<Tz>()
                    .map_err(|_| ScheduleError::UnknownTimeZone(name.to_owned()))?
            }
        };
        let invalid = |reason: String| ScheduleError::InvalidCron {
            expression: expression.to_owned(),
            reason,
        };
        let found = expression.split_whitespace().count();
        if found == 1 && expression.starts_with('@') {
            if !NICKNAMES.iter().any(|n| n.eq_ignore_ascii_case(expression)) {
                return Err(invalid(format!(
                    "unknown nickname; use one of {}",
                    NICKNAMES.join(", ")
                )));
            }
        } else if !(5..=6).contains(&found) {
            return Err(ScheduleError::WrongFieldCount {
                expression: expression.to_owned(),
                found,
            });
        } else {
            // croner replaces names wherever they appear, so `MON` in the month field would silently mean January.
            let (month, weekday) = (found - 2, found - 1);
            for (i, field) in expression.split_whitespace().enumerate() {
                let upper = field.to_ascii_uppercase();
                let has = |names: &[&str]| names.iter().any(|name| upper.contains(name));
                if (i != month && has(&MONTH_NAMES)) || (i != weekday && has(&DAY_NAMES)) {
                    return Err(invalid(format!(
                        "`{}` is not in its field: month names (JAN-DEC) go in the month field, day names \
                         (SUN-SAT) in the day-of-week field",
                        field.escape_debug()
                    )));
                }
            }
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| invalid(e.to_string()))?;
        // croner accepts fields such as `,` that select nothing; searching them would spin through millions of
        // seconds before giving up, on every scheduler tick.
        let selects_nothing = |c: &CronComponent| c.values().is_empty() && !c.has_modifiers();
        let p = &cron.pattern;
        let fields = [
            &p.seconds,
            &p.minutes,
            &p.hours,
            &p.days,
            &p.months,
            &p.days_of_week,
        ];
        if fields.into_iter().any(selects_nothing) {
            return Err(invalid("a field selects no value (is a list empty?)".to_owned()));
        }
        let time_fields = if found == 6 { 3 } else { 2 };
        let no_wildcard_time = !expression.starts_with('@')
            && expression
                .split_whitespace()
                .take(time_fields)
                .all(|field| !field.contains(['*', '?']));
        let collapse_dst = no_wildcard_time && cron.determine_job_type() == JobType::IntervalWildcard;
        let schedule = Self {
            expression: expression.to_owned(),
            tz,
            cron: Box::new(cron),
            collapse_dst,
        };
        // Fire times repeat with the 400-year Gregorian cycle, so an expression with none in the centuries
        // after 1970 has none at all: refuse it now rather than search to year 5000 on every tick.
        if schedule.next_after(DateTime::UNIX_EPOCH).is_none() {
            return Err(invalid(
                "it never fires (such as `0 0 30 2 *`, February 30th)".to_owned(),
            ));
        }
        Ok(schedule)
    }

    /// The expression as given, trimmed.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA name of the time zone, `"UTC"` by default.
    pub fn time_zone(&self) -> &str {
        self.tz.name()
    }

    /// First fire time strictly after `after`, or None if there is none (or it is out of range).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !SEARCH_YEARS.contains(&after.year()) {
            return None;
        }
        let local = after.with_timezone(&self.tz);
        let mut next = self.cron.find_next_occurrence(&local, false).ok()?;
        if self.collapse_dst {
            // Fall back: the second pass through the repeated hour already ran on the first.
            while let LocalResult::Ambiguous(_, later) = self.tz.from_local_datetime(&next.naive_local()) {
                if next != later {
                    break;
                }
                next = self.cron.find_next_occurrence(&next, false).ok()?;
            }
        }
        let mut next = next.with_timezone(&Utc);
        if self.collapse_dst {
            // Spring forward: croner skips a scheduled wall-clock time inside the gap; run it once, right
            // after the gap.
            let after_gap = self
                .cron
                .find_next_occurrence(&local.naive_local(), false)
                .ok()
                .filter(|civil| self.tz.from_local_datetime(civil) == LocalResult::None)
                .and_then(|civil| first_instant_reaching(self.tz, civil));
            if let Some(after_gap) = after_gap.filter(|t| *t > after && *t < next) {
                next = after_gap;
            }
        }
        // croner works in whole seconds; never hand back a time that is not strictly later.
        (next > after).then_some(next)
    }
}

impl Schedule {
    /// An interval of `secs` seconds, refused outside 1 ..= [`MAX_INTERVAL_SECS`].
    pub fn every_secs(secs: i64) -> Result<Self, ScheduleError> {
        match u64::try_from(secs) {
            Ok(s) if (1..=MAX_INTERVAL_SECS).contains(&secs) => Ok(Self::Every(Duration::from_secs(s))),
            _ => Err(ScheduleError::IntervalOutOfRange(secs)),
        }
    }

    /// When a flow created at `now` first becomes due: Every → now; Cron → next_after(now).
    pub fn first_run_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every(interval) => interval_secs(*interval).map(|_| now),
            Self::Cron(cron) => cron.next_after(now),
        }
    }

    /// The next slot once the run due at `slot` is claimed at `now` (now >= slot usually, but handle now < slot):
    /// Every → the smallest slot + k*interval (k >= 1) that is > now — so a 5 s interval checked by a 1 s tick
    /// fires every 5 s without drift, and after downtime the flow runs once, not once per missed slot; computed
    /// in O(1) with checked arithmetic. Cron → next_after(max(now, slot)). None when out of range.
    pub fn next_run_after(&self, slot: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every(interval) => {
                let secs = interval_secs(*interval)?;
                // k*secs > elapsed ⇔ k > elapsed/secs, and flooring the elapsed time to whole seconds first
                // does not change floor(elapsed/secs) because secs is whole.
                let k = if now < slot {
                    1
                } else {
                    now.signed_duration_since(slot).num_seconds() / secs + 1
                };
                slot.checked_add_signed(TimeDelta::try_seconds(k.checked_mul(secs)?)?)
            }
            Self::Cron(cron) => cron.next_after(now.max(slot)),
        }
    }

    /// The next `count` fire times strictly after `from` (for `flowrun schedule`); Every → from+i, from+2i, …
    ///
    /// At most [`MAX_UPCOMING`] times are returned, and fewer when the schedule runs out of range.
    pub fn upcoming(&self, from: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let count = count.min(MAX_UPCOMING);
        match self {
            Self::Every(interval) => {
                let Some(secs) = interval_secs(*interval) else {
                    return Vec::new();
                };
                (1..)
                    .map_while(|n: i64| {
                        from.checked_add_signed(TimeDelta::try_seconds(n.checked_mul(secs)?)?)
                    })
                    .take(count)
                    .collect()
            }
            Self::Cron(cron) => std::iter::successors(cron.next_after(from), |t| cron.next_after(*t))
                .take(count)
                .collect(),
        }
    }
}

/// The first instant whose wall clock in `tz` reads `civil` or later: for a time inside a DST gap, the end
/// of the gap.
fn first_instant_reaching(tz: Tz, civil: NaiveDateTime) -> Option<DateTime<Utc>> {
    // Offsets stay within a day of UTC, and the wall clock only moves forward around a gap, so bisection
    // over two days either side finds the edge.
    let reaches =
        |secs: i64| DateTime::from_timestamp(secs, 0).map(|t| t.with_timezone(&tz).naive_local() >= civil);
    let centre = civil.and_utc().timestamp();
    let (mut before, mut reached) = (centre.checked_sub(2 * 86_400)?, centre.checked_add(2 * 86_400)?);
    if reaches(before)? || !reaches(reached)? {
        return None;
    }
    while reached - before > 1 {
        let mid = before + (reached - before) / 2;
        if reaches(mid)? {
            reached = mid;
        } else {
            before = mid;
        }
    }
    DateTime::from_timestamp(reached, 0)
}

/// The interval in whole seconds, or None when it is outside 1 ..= [`MAX_INTERVAL_SECS`].
fn interval_secs(interval: Duration) -> Option<i64> {
    i64::try_from(interval.as_secs())
        .ok()
        .filter(|s| (1..=MAX_INTERVAL_SECS).contains(s))
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Every(interval) => write!(f, "every {}", format_duration(*interval)),
            Self::Cron(cron) => write!(
                f,
                "cron `{}` ({})",
                cron.expression().escape_debug(),
                cron.time_zone()
            ),
        }
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
