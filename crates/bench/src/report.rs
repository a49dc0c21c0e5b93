//! The one JSON line a benchmark prints.

use std::time::Duration;

use serde::Serialize;

use crate::{Class, Mode};

/// The keys the benchmark contract requires, in the order they are printed.
pub const CONTRACT_KEYS: [&str; 8] = [
    "backend",
    "class",
    "runs",
    "concurrency",
    "seconds",
    "runs_per_sec",
    "p50_ms",
    "p99_ms",
];

/// The keys printed after the contract's, always.
pub const EXTRA_KEYS: [&str; 4] = ["mode", "history", "peak_rss_mb", "errors"];

/// The keys printed only with `--count`.
pub const COUNT_KEYS: [&str; 2] = ["statements_per_run", "commits_per_run"];

/// The result of one invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `sqlite`, `postgres` or `mysql` (MySQL and MariaDB).
    pub backend: &'static str,
    /// `Noop` or `Fail`.
    pub class: &'static str,
    /// Runs completed in the timed phase.
    pub runs: u64,
    /// Tasks running at once.
    pub concurrency: u32,
    /// Wall-clock length of the timed phase.
    pub seconds: f64,
    /// `runs / seconds`.
    pub runs_per_sec: f64,
    /// Median latency of one run (start to recorded end), in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile latency of one run, in milliseconds.
    pub p99_ms: f64,
    /// `flowrun` or `raw`.
    pub mode: &'static str,
    /// Past runs in the table before timing.
    pub history: u64,
    /// The process's peak resident set size (`VmHWM`), in MiB; `null` where `/proc` is missing.
    pub peak_rss_mb: Option<f64>,
    /// Runs that did not end as expected (the process then exits non-zero).
    pub errors: u64,
    /// Statements sent per run, without `BEGIN`/`COMMIT` (with `--count`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statements_per_run: Option<f64>,
    /// Commits per run as the server counts them (with `--count`, PostgreSQL and MySQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits_per_run: Option<f64>,
}

impl Report {
    /// A report from the timed phase's length and each run's latency.
    pub fn new(
        backend: &'static str,
        class: Class,
        mode: Mode,
        concurrency: u32,
        history: u64,
        elapsed: Duration,
        mut latencies: Vec<Duration>,
    ) -> Self {
        latencies.sort_unstable();
        let runs = latencies.len() as u64;
        let seconds = elapsed.as_secs_f64();
        Self {
            backend,
            class: class.name(),
            runs,
            concurrency,
            seconds: round(seconds, 3),
            runs_per_sec: if seconds > 0.0 {
                round(runs as f64 / seconds, 1)
            } else {
                0.0
            },
            p50_ms: round(percentile_ms(&latencies, 50.0), 3),
            p99_ms: round(percentile_ms(&latencies, 99.0), 3),
            mode: mode.name(),
            history,
            peak_rss_mb: peak_rss_mb().map(|mb| round(mb, 1)),
            errors: 0,
            statements_per_run: None,
            commits_per_run: None,
        }
    }

    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

/// The nearest-rank percentile of sorted latencies, in milliseconds; 0 when there are none.
pub fn percentile_ms(sorted: &[Duration], percent: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

/// The process's peak resident set size in MiB, from `VmHWM` in `/proc/self/status`.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile_ms(&sorted, 50.0), 50.0);
        assert_eq!(percentile_ms(&sorted, 99.0), 99.0);
        assert_eq!(percentile_ms(&ms(&[7]), 99.0), 7.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }

    #[test]
    fn the_json_line_has_the_contract_keys_then_the_extras() {
        let report = Report::new(
            "sqlite",
            Class::Fail,
            Mode::Raw,
            8,
            0,
            Duration::from_secs(2),
            ms(&[3, 1, 2, 4]),
        );
        let line = report.to_json_line().expect("serializes");
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        let keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected: Vec<&str> = CONTRACT_KEYS.iter().chain(EXTRA_KEYS.iter()).copied().collect();
        expected.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected);
        assert!(line.starts_with("{\"backend\":\"sqlite\",\"class\":\"Fail\",\"runs\":4,"));
        assert_eq!(value["runs_per_sec"], 2.0);
        assert_eq!(value["p50_ms"], 2.0);
        assert_eq!(value["mode"], "raw");
    }
}
