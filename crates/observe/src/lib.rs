//! flowrun's run observers: Prometheus [`Metrics`] and the failure/recovery [`Notifier`], and
//! [`Observers`], which hands every event to both. Binaries build them from the environment with
//! [`Observers::from_env`] and give them to the executor (`App::with_observer`).

pub mod metrics;
pub mod notify;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowrun_domain::{DataFlow, DataFlowRun, HeartbeatReport, LastRunStatus, RunObserver};

pub use metrics::{CONTENT_TYPE, Metrics, NotificationResult};
pub use notify::{Event, Notification, Notifier, NotifyError, NotifySettings, mask_url};

/// The process's observers: its metrics, and its notifier when a webhook is configured.
#[derive(Debug, Clone, Default)]
pub struct Observers {
    /// The metrics every run and cycle updates.
    pub metrics: Metrics,
    /// Sends failure/recovery notifications; `None` turns them off (even for flows that name a webhook).
    pub notifier: Option<Arc<Notifier>>,
}

impl Observers {
    /// Fresh metrics, and a notifier with the settings of [`NotifySettings::from_env`]; it is started
    /// whether or not `FLOWRUN_NOTIFY_URL` is set, because any flow may name its own webhook. Must be called
    /// inside a Tokio runtime.
    pub fn from_env() -> Result<Self, NotifyError> {
        let metrics = Metrics::new();
        let notifier = Notifier::start(NotifySettings::from_env()?, Some(metrics.clone()))?;
        Ok(Self {
            metrics,
            notifier: Some(Arc::new(notifier)),
        })
    }

    /// Waits until the notifications queued so far have been sent or given up.
    pub async fn flush(&self) {
        if let Some(notifier) = &self.notifier {
            notifier.flush().await;
        }
    }
}

impl RunObserver for Observers {
    fn run_started(&self, flow: &DataFlow, run: &DataFlowRun) {
        self.metrics.run_started(flow, run);
    }

    fn run_ended(&self, flow: &DataFlow, run: &DataFlowRun, previous: Option<LastRunStatus>, recorded: bool) {
        self.metrics.run_ended(flow, run, previous, recorded);
        if let Some(notifier) = &self.notifier {
            notifier.run_ended(flow, run, previous, recorded);
        }
    }

    fn cycle_finished(&self, began: DateTime<Utc>, took: Duration, report: Option<&HeartbeatReport>) {
        self.metrics.cycle_finished(began, took, report);
    }

    fn runs_reaped(&self, count: usize) {
        self.metrics.runs_reaped(count);
    }
}
