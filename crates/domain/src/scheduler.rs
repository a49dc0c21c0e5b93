//! The scheduler use case: one heartbeat cycle runs every due flow once.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use thiserror::Error;
use tracing::{info, warn};

use crate::executor::{ExecuteError, FlowExecutor};
use crate::ports::{Clock, DataFlowRepository, RepositoryError, RunRepository};

/// What one cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReport {
    /// Flows found due when the cycle began.
    pub flows_due: usize,
    /// Runs this cycle started (a due flow another process claimed first is not counted).
    pub flows_triggered: usize,
    /// Of those, runs that failed.
    pub flows_failed: usize,
    /// Abandoned runs closed at the start of the cycle.
    pub runs_reaped: usize,
    /// When the cycle began.
    pub timestamp: DateTime<Utc>,
}

/// Why a cycle could not run at all. A single flow's failure is never one of these.
#[derive(Debug, Error)]
pub enum CycleError {
    /// Reaping or listing the due flows failed.
    #[error("the scheduler cycle could not read the due flows: {0}")]
    Repository(#[from] RepositoryError),
}

/// Runs due flows through the [`FlowExecutor`], never one flow twice at once nor twice in one interval,
/// however many schedulers share the database: each start is claimed atomically by the run repository.
#[derive(Clone)]
pub struct Scheduler {
    flows: Arc<dyn DataFlowRepository>,
    runs: Arc<dyn RunRepository>,
    executor: FlowExecutor,
    clock: Arc<dyn Clock>,
    max_concurrent: usize,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("max_concurrent", &self.max_concurrent)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Flows run at once by one cycle when not configured.
    pub const DEFAULT_MAX_CONCURRENT: usize = 4;

    /// A scheduler over these ports.
    pub fn new(
        flows: Arc<dyn DataFlowRepository>,
        runs: Arc<dyn RunRepository>,
        executor: FlowExecutor,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            flows,
            runs,
            executor,
            clock,
            max_concurrent: Self::DEFAULT_MAX_CONCURRENT,
        }
    }

    /// Sets how many flows one cycle runs at once (at least one).
    pub fn with_max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.max_concurrent = max_concurrent.max(1);
        self
    }

    /// One cycle: close abandoned runs, find the due flows, execute each one that is still due when
    /// claimed. One flow's failure never stops the others.
    #[tracing::instrument(skip(self))]
    pub async fn run_cycle(&self) -> Result<HeartbeatReport, CycleError> {
        let now = self.clock.now();
        let reaped = self.runs.reap_expired(now, None).await?;
        for run in &reaped {
            warn!(
                run_id = run.id.0,
                flow_id = run.data_flow_id.0,
                "closed an abandoned run"
            );
        }
        let due = self.flows.list_due(now).await?;
        let flows_due = due.len();
        let outcomes: Vec<Outcome> = futures::stream::iter(due)
            .map(|flow| async move {
                match self.executor.execute_if_due(&flow, now).await {
                    Ok(_) => Outcome::Succeeded,
                    Err(
                        ExecuteError::AlreadyRunning { .. }
                        | ExecuteError::NotDue { .. }
                        | ExecuteError::FlowNotFound { .. }
                        | ExecuteError::ShuttingDown { .. },
                    ) => Outcome::Skipped,
                    Err(error @ ExecuteError::Start { .. }) => {
                        warn!(flow = %flow.name, %error, "could not start a due flow");
                        Outcome::Skipped
                    }
                    Err(error) => {
                        warn!(flow = %flow.name, %error, "due flow failed");
                        Outcome::Failed
                    }
                }
            })
            .buffer_unordered(self.max_concurrent)
            .collect()
            .await;
        let flows_triggered = outcomes.iter().filter(|o| **o != Outcome::Skipped).count();
        let flows_failed = outcomes.iter().filter(|o| **o == Outcome::Failed).count();
        info!(
            flows_due,
            flows_triggered,
            flows_failed,
            runs_reaped = reaped.len(),
            "scheduler cycle done"
        );
        Ok(HeartbeatReport {
            flows_due,
            flows_triggered,
            flows_failed,
            runs_reaped: reaped.len(),
            timestamp: now,
        })
    }

    /// Closes abandoned runs now; returns how many.
    pub async fn reap(&self) -> Result<usize, RepositoryError> {
        Ok(self.runs.reap_expired(self.clock.now(), None).await?.len())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    Skipped,
}
