//! Slowing down token guessing on the login page: an address that gave the wrong token too often is
//! refused for a while, whatever it sends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens an address may send within [`WINDOW`] before it is refused.
const MAX_FAILURES: u32 = 10;
/// How long failures are remembered, counted from an address's first one.
const WINDOW: Duration = Duration::from_secs(10 * 60);
/// Addresses remembered at most; past it, expired entries go first and, if none have, the map is cleared
/// (an attacker with that many addresses is not slowed by a per-address limit anyway).
const MAX_TRACKED: usize = 10_000;

/// Failed logins per source address (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct LoginThrottle {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

impl LoginThrottle {
    /// How long `source` must still wait before it may try again; `None` when it may try now.
    pub(crate) fn refused_for(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = failures.get(&source)?;
        let ends = entry.since + WINDOW;
        (entry.count >= MAX_FAILURES && now < ends).then(|| ends - now)
    }

    /// Notes a wrong token from `source`.
    pub(crate) fn failed(&self, source: IpAddr, now: Instant) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&source) {
            failures.retain(|_, entry| now < entry.since + WINDOW);
            if failures.len() >= MAX_TRACKED {
                failures.clear();
            }
        }
        let entry = failures
            .entry(source)
            .or_insert(Failures { count: 0, since: now });
        if now >= entry.since + WINDOW {
            *entry = Failures { count: 0, since: now };
        }
        entry.count = entry.count.saturating_add(1);
    }

    /// Forgets `source`'s failures after it logged in.
    pub(crate) fn succeeded(&self, source: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn an_address_is_refused_after_too_many_wrong_tokens_until_its_window_passes() {
        let throttle = LoginThrottle::default();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            throttle.failed(A, start);
        }
        assert_eq!(throttle.refused_for(A, start), None, "still below the limit");
        throttle.failed(A, start);
        assert_eq!(throttle.refused_for(A, start), Some(WINDOW));
        assert_eq!(
            throttle.refused_for(B, start),
            None,
            "other addresses are not affected"
        );
        let later = start + WINDOW;
        assert_eq!(throttle.refused_for(A, later), None);
        throttle.failed(A, later);
        assert_eq!(
            throttle.refused_for(A, later),
            None,
            "a new window starts from one failure"
        );
    }

    #[test]
    fn a_login_forgets_the_addresss_failures() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            throttle.failed(A, now);
        }
        throttle.succeeded(A);
        throttle.failed(A, now);
        assert_eq!(throttle.refused_for(A, now), None);
    }

    #[test]
    fn the_remembered_addresses_stay_bounded() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 5) {
            throttle.failed(IpAddr::V4(std::net::Ipv4Addr::from(i)), now);
        }
        let tracked = throttle.failures.lock().expect("lock").len();
        assert!(tracked <= MAX_TRACKED, "{tracked}");
    }
}
