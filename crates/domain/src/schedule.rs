//! TEMPORARY stub of the schedule module (replaced by the real one from the `schedule` branch).
#![allow(missing_docs)]

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use thiserror::Error;

pub const MAX_INTERVAL_SECS: i64 = 100 * 365 * 86_400;
pub const MAX_UPCOMING: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Every(Duration),
    Cron(CronSchedule),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    expression: String,
    tz: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScheduleError {
    #[error("interval out of range: {0}")]
    IntervalOutOfRange(i64),
    #[error("invalid cron expression `{expression}`: {reason}")]
    InvalidCron { expression: String, reason: String },
}

impl CronSchedule {
    pub fn parse(expression: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let _ = time_zone;
        Err(ScheduleError::InvalidCron {
            expression: expression.to_owned(),
            reason: "stub".to_owned(),
        })
    }
    pub fn expression(&self) -> &str {
        &self.expression
    }
    pub fn time_zone(&self) -> &str {
        &self.tz
    }
    pub fn next_after(&self, _after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        None
    }
}

impl Schedule {
    pub fn every_secs(secs: i64) -> Result<Self, ScheduleError> {
        if (1..=MAX_INTERVAL_SECS).contains(&secs) {
            Ok(Self::Every(Duration::from_secs(secs as u64)))
        } else {
            Err(ScheduleError::IntervalOutOfRange(secs))
        }
    }
    pub fn first_run_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every(_) => Some(now),
            Self::Cron(cron) => cron.next_after(now),
        }
    }
    pub fn next_run_after(&self, slot: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every(every) => {
                let step = TimeDelta::from_std(*every).ok()?;
                let mut next = slot.checked_add_signed(step)?;
                if next <= now {
                    let behind = (now - next).num_seconds() / step.num_seconds().max(1) + 1;
                    next = next.checked_add_signed(step.checked_mul(behind as i32)?)?;
                }
                Some(next)
            }
            Self::Cron(cron) => cron.next_after(now.max(slot)),
        }
    }
    pub fn upcoming(&self, from: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut at = from;
        while out.len() < count {
            match self.next_run_after(at, at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Every(every) => write!(f, "every {}s", every.as_secs()),
            Self::Cron(cron) => write!(f, "cron `{}` ({})", cron.expression, cron.tz),
        }
    }
}
