//! flowrun's in-memory storage adapter: [`MemoryStore`] implements every repository port of
//! `flowrun-domain` ([`DataFlowRepository`], [`RunRepository`]) and the [`Storage`] port, with the same
//! contract as the SQL adapters of `flowrun-infra` — unique names, claims that never let one flow run
//! twice at once nor one schedule slot start twice, leases and their renewal, guarded finishes, reaping,
//! pending retries, cancel requests and pruning. The repository conformance suite (`tests/` in the
//! workspace) runs the same tests on it as on SQLite, PostgreSQL and MariaDB.
//!
//! It is meant for tests (of the domain, or of an embedder's own flows and use cases) and for demos
//! (`--database-url memory:`). Nothing persists: the data lives as long as the process. A `MemoryStore` is
//! cheap to clone and every clone shares the same data, so several executors and schedulers in one process
//! can share one store, as several processes share one database.
//!
//! ```
//! use std::sync::Arc;
//! use flowrun_domain::{DataFlowRepository, RunRepository};
//! use flowrun_memory::MemoryStore;
//!
//! let store = MemoryStore::new();
//! let flows: Arc<dyn DataFlowRepository> = Arc::new(store.clone());
//! let runs: Arc<dyn RunRepository> = Arc::new(store);
//! # let _ = (flows, runs);
//! ```
//!
//! Every call takes one lock over the whole state and releases it before returning, so each port method is
//! atomic, as each is one transaction in the SQL adapters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowrun_domain::ports::abandoned_message;
use flowrun_domain::text::{
    MAX_ERROR_BACKTRACE_BYTES, MAX_ERROR_MESSAGE_BYTES, MAX_LEASE_OWNER_BYTES, storable,
};
use flowrun_domain::{
    ActiveRun, CancelOutcome, CancelRequest, Claim, CreateDataFlowError, DataFlow, DataFlowId,
    DataFlowRepository, DataFlowRun, DueBatch, FailureKind, FinishRunError, FlowChanges, LastRunStatus,
    NewDataFlow, PruneRuns, RepositoryError, RunFilter, RunId, RunOutcome, RunRecord, RunRepository,
    RunStatus, StartRun, StartRunError, Storage, StoreKind, Trigger,
};
use thiserror::Error;

/// The URL that selects the in-memory store (`--database-url memory:`).
pub const MEMORY_URL: &str = "memory:";

/// Why the in-memory store refused a call: only ever because a test switched it off.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// [`MemoryStore::set_unavailable`] made the store behave as a database that is down.
    #[error("the in-memory store is unavailable (switched off by a test)")]
    Unavailable,
}

/// A flow as stored, with what the domain's [`DataFlow`] does not show: the run that holds it.
///
/// A new stored field goes here (or on [`DataFlow`]/[`DataFlowRun`] themselves, which are stored whole),
/// written by the port method whose SQL statement writes its column.
#[derive(Debug, Clone)]
struct StoredFlow {
    flow: DataFlow,
    /// The run that holds the flow (the SQL `active_run_id`): set by a start, cleared by its finish or reap.
    active_run_id: Option<RunId>,
}

#[derive(Debug, Default)]
struct State {
    flows: BTreeMap<i64, StoredFlow>,
    runs: BTreeMap<i64, DataFlowRun>,
    last_flow_id: i64,
    last_run_id: i64,
    unavailable: bool,
}

impl State {
    fn flow_by_name(&self, name: &str) -> Option<&StoredFlow> {
        self.flows
            .values()
            .find(|stored| stored.flow.name.as_str() == name)
    }

    fn record(&self, run: &DataFlowRun) -> Option<RunRecord> {
        self.flows.get(&run.data_flow_id.0).map(|stored| RunRecord {
            run: run.clone(),
            flow_name: stored.flow.name.to_string(),
        })
    }

    /// Whether some flow holds this run as its active run (such a run is never pruned).
    fn is_active(&self, run: RunId) -> bool {
        self.flows
            .values()
            .any(|stored| stored.active_run_id == Some(run))
    }

    /// Why a claim was refused, in the SQL adapters' order: gone, held by a run, or not due.
    /// [`RunRepository::start_run`] under the store's lock.
    fn start(&mut self, request: StartRun) -> Result<DataFlowRun, StartRunError> {
        let flow_id = request.data_flow_id;
        let claimable = self.flows.get(&flow_id.0).is_some_and(|stored| {
            let flow = &stored.flow;
            stored.active_run_id.is_none()
                && match request.claim {
                    Claim::Manual => true,
                    Claim::Due { .. } => {
                        flow.enabled && flow.next_run_at.is_some_and(|next| next <= request.started_at)
                    }
                    Claim::Retry => {
                        flow.enabled
                            && flow
                                .pending_retry
                                .is_some_and(|retry| retry.at <= request.started_at)
                    }
                }
        });
        if !claimable {
            return Err(self.why_not_claimed(flow_id));
        }
        self.last_run_id += 1;
        let id = RunId(self.last_run_id);
        let started = request.started_at;
        // Inserted `pending` and moved to `in_progress` under the same lock: no one sees the first step.
        let run = DataFlowRun {
            id,
            data_flow_id: flow_id,
            status: RunStatus::InProgress,
            started_at: started,
            ended_at: None,
            error_message: None,
            error_backtrace: None,
            lease_owner: Some(storable(request.lease_owner.as_str(), MAX_LEASE_OWNER_BYTES).into_owned()),
            lease_expires_at: Some(request.lease_expires_at),
            attempt: request.attempt,
            trigger: request.trigger,
            failure_kind: None,
            cancel_requested: None,
            output: String::new(),
            created_at: started,
            updated_at: started,
        };
        if let Some(stored) = self.flows.get_mut(&flow_id.0) {
            match request.claim {
                Claim::Manual => {}
                Claim::Due { next_run_at } => stored.flow.next_run_at = next_run_at,
                Claim::Retry => stored.flow.pending_retry = None,
            }
            stored.active_run_id = Some(id);
        }
        self.runs.insert(id.0, run.clone());
        Ok(run)
    }

    fn why_not_claimed(&self, data_flow_id: DataFlowId) -> StartRunError {
        let Some(stored) = self.flows.get(&data_flow_id.0) else {
            return StartRunError::FlowNotFound;
        };
        let Some(active_id) = stored.active_run_id else {
            return StartRunError::NotDue;
        };
        let active = self.runs.get(&active_id.0);
        StartRunError::Busy(ActiveRun {
            run_id: active_id,
            started_at: active.map_or(stored.flow.updated_at, |run| run.started_at),
            lease_expires_at: active.and_then(|run| run.lease_expires_at),
        })
    }
}

/// Flows and runs in one process's memory, behind one lock. Clones share the data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The store as a [`DataFlowRepository`].
    pub fn flows(&self) -> Arc<dyn DataFlowRepository> {
        Arc::new(self.clone())
    }

    /// The store as a [`RunRepository`].
    pub fn runs(&self) -> Arc<dyn RunRepository> {
        Arc::new(self.clone())
    }

    /// The store as a [`Storage`].
    pub fn storage(&self) -> Arc<dyn Storage> {
        Arc::new(self.clone())
    }

    /// For tests: while `unavailable`, every port method fails with [`RepositoryError::Unavailable`] and
    /// [`Storage::ping`] answers `false`, as a database that is down.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock_unchecked().unavailable = unavailable;
    }

    /// For tests: makes the lease of run `id` expire at `at` whatever its status, as if its process had
    /// stopped renewing it (what an operator's `UPDATE … SET lease_expires_at` does on SQL). Returns whether
    /// the run exists.
    pub fn set_lease_expiry(&self, id: RunId, at: DateTime<Utc>) -> bool {
        let mut state = self.lock_unchecked();
        state
            .runs
            .get_mut(&id.0)
            .map(|run| run.lease_expires_at = Some(at))
            .is_some()
    }

    /// For tests: stores `run` as given (its id is replaced by a new one, which is returned), without
    /// claiming its flow — a quick way to make a long history. Returns `None` when its flow does not exist.
    pub fn insert_run(&self, mut run: DataFlowRun) -> Option<RunId> {
        let mut state = self.lock_unchecked();
        if !state.flows.contains_key(&run.data_flow_id.0) {
            return None;
        }
        state.last_run_id += 1;
        run.id = RunId(state.last_run_id);
        let id = run.id;
        state.runs.insert(id.0, run);
        Some(id)
    }

    /// The state for one port method: refused while the store is switched off.
    fn lock(&self) -> Result<MutexGuard<'_, State>, RepositoryError> {
        let state = self.lock_unchecked();
        if state.unavailable {
            return Err(RepositoryError::Unavailable(Box::new(MemoryError::Unavailable)));
        }
        Ok(state)
    }

    fn lock_unchecked(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written change: every method checks first and
        // writes after, without a panic in between. The data stays usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Storage for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn masked_url(&self) -> &str {
        MEMORY_URL
    }

    async fn ping(&self) -> bool {
        self.lock().is_ok()
    }

    async fn close(&self) {}
}

/// A flow's description as stored: NUL cannot be stored in PostgreSQL text, so every adapter replaces it.
fn storable_description(description: &str) -> String {
    description.replace('\0', "\u{FFFD}")
}

#[async_trait]
impl DataFlowRepository for MemoryStore {
    async fn create(&self, flow: NewDataFlow, now: DateTime<Utc>) -> Result<DataFlow, CreateDataFlowError> {
        let mut state = self.lock()?;
        if state.flow_by_name(flow.name.as_str()).is_some() {
            return Err(CreateDataFlowError::Duplicate(flow.name));
        }
        state.last_flow_id += 1;
        let id = DataFlowId(state.last_flow_id);
        let next_run_at = flow.schedule.first_run_at(now);
        let stored = DataFlow {
            id,
            name: flow.name,
            description: storable_description(&flow.description),
            enabled: flow.enabled,
            configuration: flow.configuration,
            schedule: flow.schedule,
            next_run_at,
            timeout: flow.timeout,
            retry: flow.retry,
            pending_retry: None,
            state: None,
            last_run_at: None,
            last_run_status: None,
            created_at: now,
            updated_at: now,
        };
        state.flows.insert(
            id.0,
            StoredFlow {
                flow: stored.clone(),
                active_run_id: None,
            },
        );
        Ok(stored)
    }

    async fn find_by_name(&self, name: &str) -> Result<Option<DataFlow>, RepositoryError> {
        Ok(self.lock()?.flow_by_name(name).map(|stored| stored.flow.clone()))
    }

    async fn find_by_id(&self, id: DataFlowId) -> Result<Option<DataFlow>, RepositoryError> {
        Ok(self.lock()?.flows.get(&id.0).map(|stored| stored.flow.clone()))
    }

    async fn list(&self) -> Result<Vec<DataFlow>, RepositoryError> {
        let mut flows: Vec<DataFlow> = self.lock()?.flows.values().map(|s| s.flow.clone()).collect();
        flows.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(flows)
    }

    async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<DataFlow>, RepositoryError> {
        let mut state = self.lock()?;
        Ok(state
            .flows
            .values_mut()
            .find(|stored| stored.flow.name.as_str() == name)
            .map(|stored| {
                stored.flow.enabled = enabled;
                stored.flow.updated_at = now;
                stored.flow.clone()
            }))
    }

    async fn delete(&self, name: &str) -> Result<bool, RepositoryError> {
        let mut state = self.lock()?;
        let Some(id) = state
            .flow_by_name(name)
            .filter(|stored| stored.active_run_id.is_none())
            .map(|stored| stored.flow.id)
        else {
            return Ok(false);
        };
        state.flows.remove(&id.0);
        // The SQL foreign key cascades to the runs.
        state.runs.retain(|_, run| run.data_flow_id != id);
        Ok(true)
    }

    async fn update(
        &self,
        id: DataFlowId,
        changes: FlowChanges,
        now: DateTime<Utc>,
    ) -> Result<Option<DataFlow>, RepositoryError> {
        let mut state = self.lock()?;
        let Some(stored) = state.flows.get_mut(&id.0) else {
            return Ok(None);
        };
        let flow = &mut stored.flow;
        if let Some(description) = changes.description {
            flow.description = storable_description(&description);
        }
        if let Some(configuration) = changes.configuration {
            flow.configuration = configuration;
        }
        if let Some(change) = changes.schedule {
            flow.schedule = change.schedule;
            flow.next_run_at = change.next_run_at;
        }
        if let Some(timeout) = changes.timeout {
            flow.timeout = timeout;
        }
        if let Some(retry) = changes.retry {
            flow.retry = retry;
        }
        flow.updated_at = now;
        Ok(Some(flow.clone()))
    }

    async fn list_due(&self, now: DateTime<Utc>) -> Result<Vec<DataFlow>, RepositoryError> {
        let state = self.lock()?;
        let mut due: Vec<DataFlow> = state
            .flows
            .values()
            .filter(|stored| stored.active_run_id.is_none() && stored.flow.enabled)
            .filter(|stored| {
                stored.flow.next_run_at.is_some_and(|next| next <= now)
                    || stored.flow.pending_retry.is_some_and(|retry| retry.at <= now)
            })
            .map(|stored| stored.flow.clone())
            .collect();
        // Soonest slot first, then oldest flow; a flow due only for a retry (no next run time) comes last,
        // as PostgreSQL sorts NULL.
        due.sort_by_key(|flow| (flow.next_run_at.is_none(), flow.next_run_at, flow.id));
        Ok(due)
    }
}

#[async_trait]
impl RunRepository for MemoryStore {
    async fn start_run(&self, request: StartRun) -> Result<DataFlowRun, StartRunError> {
        self.lock()?.start(request)
    }

    async fn start_due_runs(&self, batch: DueBatch) -> Result<Vec<DataFlowRun>, RepositoryError> {
        // Under one lock, so the batch is atomic as one transaction is.
        let mut state = self.lock()?;
        let mut started = Vec::with_capacity(batch.flows.len());
        for flow in &batch.flows {
            let request = StartRun {
                data_flow_id: flow.data_flow_id,
                started_at: batch.started_at,
                lease_owner: batch.lease_owner.clone(),
                lease_expires_at: batch.lease_expires_at,
                claim: Claim::Due {
                    next_run_at: flow.next_run_at,
                },
                trigger: Trigger::Schedule,
                attempt: 1,
            };
            match state.start(request) {
                Ok(run) => started.push(run),
                Err(StartRunError::Repository(error)) => return Err(error),
                Err(StartRunError::Busy(_) | StartRunError::NotDue | StartRunError::FlowNotFound) => {}
            }
        }
        Ok(started)
    }

    async fn finish_run(
        &self,
        run_id: RunId,
        data_flow_id: DataFlowId,
        outcome: RunOutcome,
    ) -> Result<(), FinishRunError> {
        let mut state = self.lock()?;
        let Some(run) = state
            .runs
            .get_mut(&run_id.0)
            .filter(|run| run.status == RunStatus::InProgress)
        else {
            let status = state
                .runs
                .get(&run_id.0)
                .map_or_else(|| "deleted".to_owned(), |run| run.status.as_str().to_owned());
            return Err(FinishRunError::NotInProgress { run_id, status });
        };
        let ended = outcome.ended_at;
        run.status = outcome.status.into();
        run.ended_at = Some(ended);
        run.error_message = outcome
            .error_message
            .as_deref()
            .map(|m| storable(m, MAX_ERROR_MESSAGE_BYTES).into_owned());
        run.error_backtrace = outcome
            .error_backtrace
            .as_deref()
            .map(|b| storable(b, MAX_ERROR_BACKTRACE_BYTES).into_owned());
        run.failure_kind = outcome.failure_kind;
        if !outcome.output.is_empty() {
            run.output = storable(&outcome.output, MAX_ERROR_BACKTRACE_BYTES).into_owned();
        }
        run.updated_at = ended;
        if let Some(stored) = state.flows.get_mut(&data_flow_id.0) {
            if let Some(new_state) = outcome.state {
                stored.flow.state = Some(new_state);
            }
            stored.flow.last_run_at = Some(ended);
            stored.flow.last_run_status = Some(outcome.status);
            stored.flow.pending_retry = outcome.retry;
            stored.flow.updated_at = ended;
            stored.active_run_id = None;
        }
        Ok(())
    }

    async fn renew_lease(&self, run_id: RunId, expires_at: DateTime<Utc>) -> Result<bool, RepositoryError> {
        let mut state = self.lock()?;
        Ok(state
            .runs
            .get_mut(&run_id.0)
            .filter(|run| run.status == RunStatus::InProgress)
            .map(|run| run.lease_expires_at = Some(expires_at))
            .is_some())
    }

    async fn reap_expired(
        &self,
        now: DateTime<Utc>,
        data_flow_id: Option<DataFlowId>,
    ) -> Result<Vec<DataFlowRun>, RepositoryError> {
        let mut state = self.lock()?;
        let expired: Vec<i64> = state
            .runs
            .values()
            .filter(|run| run.status == RunStatus::InProgress)
            .filter(|run| run.lease_expires_at.is_some_and(|at| at < now))
            .filter(|run| data_flow_id.is_none_or(|id| run.data_flow_id == id))
            .map(|run| run.id.0)
            .collect();
        let mut reaped = Vec::with_capacity(expired.len());
        for id in expired {
            let Some(run) = state.runs.get_mut(&id) else {
                continue;
            };
            let message = abandoned_message(run.lease_owner.as_deref(), run.lease_expires_at, now);
            run.status = RunStatus::Failed;
            run.ended_at = Some(now);
            run.error_message = Some(message.clone());
            run.error_backtrace = Some(message);
            run.failure_kind = Some(FailureKind::Abandoned);
            run.updated_at = now;
            let run = run.clone();
            if let Some(stored) = state
                .flows
                .get_mut(&run.data_flow_id.0)
                .filter(|stored| stored.active_run_id == Some(run.id))
            {
                stored.flow.last_run_at = Some(now);
                stored.flow.last_run_status = Some(LastRunStatus::Failed);
                stored.flow.updated_at = now;
                stored.active_run_id = None;
            }
            reaped.push(run);
        }
        Ok(reaped)
    }

    async fn request_cancel(
        &self,
        run_id: RunId,
        by: String,
        at: DateTime<Utc>,
    ) -> Result<CancelOutcome, RepositoryError> {
        let mut state = self.lock()?;
        let Some(run) = state.runs.get_mut(&run_id.0) else {
            return Ok(CancelOutcome::NotFound);
        };
        if run.status.is_terminal() {
            return Ok(CancelOutcome::AlreadyEnded(run.status));
        }
        let request = run.cancel_requested.get_or_insert_with(|| CancelRequest {
            at,
            by: storable(&by, MAX_LEASE_OWNER_BYTES).into_owned(),
        });
        Ok(CancelOutcome::Requested(request.clone()))
    }

    async fn cancel_request(&self, run_id: RunId) -> Result<Option<CancelRequest>, RepositoryError> {
        Ok(self
            .lock()?
            .runs
            .get(&run_id.0)
            .and_then(|run| run.cancel_requested.clone()))
    }

    async fn record_output(&self, run_id: RunId, output: &str) -> Result<bool, RepositoryError> {
        let mut state = self.lock()?;
        Ok(state
            .runs
            .get_mut(&run_id.0)
            .filter(|run| run.status == RunStatus::InProgress)
            .map(|run| run.output = storable(output, MAX_ERROR_BACKTRACE_BYTES).into_owned())
            .is_some())
    }

    async fn find_run(&self, id: RunId) -> Result<Option<RunRecord>, RepositoryError> {
        let state = self.lock()?;
        Ok(state.runs.get(&id.0).and_then(|run| state.record(run)))
    }

    async fn list_runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>, RepositoryError> {
        let state = self.lock()?;
        let limit = usize::try_from(filter.limit).unwrap_or(usize::MAX);
        Ok(state
            .runs
            .values()
            .rev()
            .filter(|run| filter.data_flow_id.is_none_or(|id| run.data_flow_id == id))
            .filter(|run| filter.status.is_none_or(|status| run.status == status))
            .filter(|run| {
                filter
                    .failure_kind
                    .is_none_or(|kind| run.failure_kind == Some(kind))
            })
            .filter_map(|run| state.record(run))
            .take(limit)
            .collect())
    }

    async fn count_runs(&self, data_flow_id: DataFlowId) -> Result<u64, RepositoryError> {
        let state = self.lock()?;
        Ok(state
            .runs
            .values()
            .filter(|run| run.data_flow_id == data_flow_id)
            .count() as u64)
    }

    async fn prune(&self, request: PruneRuns) -> Result<u64, RepositoryError> {
        let mut state = self.lock()?;
        let flows: Vec<DataFlowId> = match request.data_flow_id {
            Some(id) => vec![id],
            None => state.flows.values().map(|stored| stored.flow.id).collect(),
        };
        let keep = request.keep_last.filter(|keep| *keep > 0);
        let mut doomed = Vec::new();
        for flow in flows {
            let mut finished: Vec<&DataFlowRun> = state
                .runs
                .values()
                .filter(|run| run.data_flow_id == flow && run.status.is_terminal())
                .collect();
            // Newest first by (started_at, id), as the SQL adapters count the runs they keep.
            finished.sort_by_key(|run| std::cmp::Reverse((run.started_at, run.id)));
            let skip = keep.map_or(0, |keep| usize::try_from(keep).unwrap_or(usize::MAX));
            doomed.extend(
                finished
                    .into_iter()
                    .skip(skip)
                    .filter(|run| run.started_at < request.started_before)
                    .filter(|run| !state.is_active(run.id))
                    .map(|run| run.id.0),
            );
        }
        for id in &doomed {
            state.runs.remove(id);
        }
        Ok(doomed.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use flowrun_domain::{FlowName, LeaseOwner, RunInterval};
    use serde_json::json;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .expect("valid")
    }

    #[tokio::test]
    async fn clones_share_one_state() {
        let store = MemoryStore::new();
        let other = store.clone();
        let new = NewDataFlow::new(
            FlowName::parse("f").expect("name"),
            "",
            true,
            json!("Noop"),
            RunInterval::DEFAULT.schedule(),
        )
        .expect("valid");
        let flow = store.create(new, t(0)).await.expect("created");
        let run = other
            .start_run(StartRun {
                data_flow_id: flow.id,
                started_at: t(1),
                lease_owner: LeaseOwner::new("a:1"),
                lease_expires_at: t(61),
                claim: Claim::Manual,
                trigger: Trigger::Manual,
                attempt: 1,
            })
            .await
            .expect("started");
        assert!(store.find_run(run.id).await.expect("query").is_some());
    }

    #[tokio::test]
    async fn a_switched_off_store_fails_every_call_and_its_ping() {
        let store = MemoryStore::new();
        store.set_unavailable(true);
        assert!(!store.ping().await);
        let error = store.list_due(t(0)).await.expect_err("unavailable");
        assert!(error.is_transient(), "{error}");
        store.set_unavailable(false);
        assert!(store.ping().await);
        assert_eq!(store.kind(), StoreKind::Memory);
        assert_eq!(store.masked_url(), MEMORY_URL);
    }
}
