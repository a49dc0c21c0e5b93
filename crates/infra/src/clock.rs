//! The system clock adapter.

use chrono::{DateTime, SubsecRound, Utc};
use flowrun_domain::Clock;

/// The [`Clock`] on the system's time, truncated to microseconds so every timestamp round-trips exactly
/// through PostgreSQL and MariaDB (both keep microseconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}
