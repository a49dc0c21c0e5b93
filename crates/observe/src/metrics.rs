//! Prometheus metrics of runs, scheduler cycles and notifications, encoded in the OpenMetrics text format
//! that Prometheus scrapes.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowrun_domain::{DataFlow, DataFlowRun, HeartbeatReport, LastRunStatus, RunObserver};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Run-duration buckets, in seconds: from a no-op's milliseconds to a long batch job's hours.
const RUN_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// Scheduler-cycle buckets, in seconds: a cycle only claims and starts, so it is short unless the
/// database is slow.
const CYCLE_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    flow: String,
    status: String,
    failure_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    flow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CycleLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    event: String,
    result: String,
}

fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}

/// What became of a notification, as counted by `flowrun_notifications_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationResult {
    /// The receiver answered 2xx.
    Sent,
    /// Every try failed (or the receiver refused it with a 4xx).
    Failed,
    /// The queue was full; it was never sent.
    Dropped,
}

impl NotificationResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }
}

struct Inner {
    registry: Registry,
    runs_finished: Family<FinishedLabels, Counter>,
    run_duration: Family<FlowLabels, Histogram, fn() -> Histogram>,
    runs_in_progress: Gauge,
    due_backlog: Gauge,
    cycles: Family<CycleLabels, Counter>,
    cycle_duration: Histogram,
    last_success: Gauge<f64, AtomicU64>,
    runs_reaped: Counter,
    notifications: Family<NotificationLabels, Counter>,
}

/// This process's metrics (a cheap handle: clones share them). As a [`RunObserver`] it counts runs and
/// cycles; the notifier counts its notifications through [`Metrics::count_notification`].
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, every series registered under the `flowrun_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flowrun");
        let runs_finished = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs ended by this process, by flow, status (success, failed, or unrecorded when the end \
             could not be written) and failure kind (none for a success)",
            runs_finished.clone(),
        );
        let run_duration =
            Family::<FlowLabels, Histogram, fn() -> Histogram>::new_with_constructor(run_histogram);
        registry.register_with_unit(
            "run_duration",
            "How long runs took from start to recorded end, by flow",
            Unit::Seconds,
            run_duration.clone(),
        );
        let runs_in_progress = Gauge::default();
        registry.register(
            "runs_in_progress",
            "Runs this process is running now",
            runs_in_progress.clone(),
        );
        let due_backlog = Gauge::default();
        registry.register(
            "due_backlog",
            "Flows found due by the last scheduler cycle that it did not start (no free slot, or \
             claimed elsewhere)",
            due_backlog.clone(),
        );
        let cycles = Family::<CycleLabels, Counter>::default();
        registry.register(
            "scheduler_cycles",
            "Scheduler cycles by result (ok, failed)",
            cycles.clone(),
        );
        let cycle_duration = Histogram::new(CYCLE_BUCKETS);
        registry.register_with_unit(
            "scheduler_cycle_duration",
            "How long a scheduler cycle took to reap, list, claim and start (not to run the flows)",
            Unit::Seconds,
            cycle_duration.clone(),
        );
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "scheduler_last_success_timestamp_seconds",
            "When the last scheduler cycle that completed began (Unix time)",
            last_success.clone(),
        );
        let runs_reaped = Counter::default();
        registry.register(
            "runs_reaped",
            "Abandoned runs (lease expired) this process closed as failed",
            runs_reaped.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Failure/recovery notifications by event (failed, recovered) and result (sent, failed, \
             dropped)",
            notifications.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                runs_finished,
                run_duration,
                runs_in_progress,
                due_backlog,
                cycles,
                cycle_duration,
                last_success,
                runs_reaped,
                notifications,
            }),
        }
    }

    /// Every series in the OpenMetrics text format (serve it with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a label, not input.
        if prometheus_client::encoding::text::encode(&mut text, &self.inner.registry).is_err() {
            tracing::error!("could not encode the metrics");
        }
        text
    }

    /// Counts one notification of `event` (`failed` or `recovered`) that ended as `result`.
    pub fn count_notification(&self, event: &str, result: NotificationResult) {
        self.inner
            .notifications
            .get_or_create(&NotificationLabels {
                event: event.to_owned(),
                result: result.as_str().to_owned(),
            })
            .inc();
    }
}

impl RunObserver for Metrics {
    fn run_started(&self, _flow: &DataFlow, _run: &DataFlowRun) {
        self.inner.runs_in_progress.inc();
    }

    fn run_ended(
        &self,
        flow: &DataFlow,
        run: &DataFlowRun,
        _previous: Option<LastRunStatus>,
        recorded: bool,
    ) {
        let inner = &self.inner;
        inner.runs_in_progress.dec();
        let status = if recorded {
            run.status.as_str()
        } else {
            "unrecorded"
        };
        let failure_kind = run.failure_kind.map_or("none", |kind| kind.as_str());
        inner
            .runs_finished
            .get_or_create(&FinishedLabels {
                flow: flow.name.to_string(),
                status: status.to_owned(),
                failure_kind: failure_kind.to_owned(),
            })
            .inc();
        if let Some(ended_at) = run.ended_at {
            let took = (ended_at - run.started_at).to_std().unwrap_or_default();
            inner
                .run_duration
                .get_or_create(&FlowLabels {
                    flow: flow.name.to_string(),
                })
                .observe(took.as_secs_f64());
        }
    }

    fn cycle_finished(&self, began: DateTime<Utc>, took: Duration, report: Option<&HeartbeatReport>) {
        let inner = &self.inner;
        inner.cycle_duration.observe(took.as_secs_f64());
        let result = match report {
            Some(report) => {
                let backlog = report.flows_due.saturating_sub(report.flows_triggered);
                inner.due_backlog.set(i64::try_from(backlog).unwrap_or(i64::MAX));
                inner.last_success.set(began.timestamp_millis() as f64 / 1000.0);
                "ok"
            }
            None => "failed",
        };
        inner
            .cycles
            .get_or_create(&CycleLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    fn runs_reaped(&self, count: usize) {
        self.inner
            .runs_reaped
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }
}
