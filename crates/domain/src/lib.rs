//! flowrun's domain: data flows, their runs, the [`FlowExecutor`] and [`Scheduler`] use cases, and the
//! ports they need ([`RunRepository`], [`DataFlowRepository`], [`Storage`], [`Clock`], [`FlowRegistry`]).
//!
//! Nothing here knows about databases, HTTP or the command line; adapters implement the ports in
//! `flowrun-infra` (SQL) and `flowrun-memory` (one process's memory). With the `mock` feature the ports come
//! with mockall mocks (`MockRunRepository`, …).

pub mod apply;
pub mod context;
pub mod duration;
pub mod executor;
pub mod flow;
mod lease_keeper;
pub mod management;
pub mod model;
pub mod observer;
mod panic;
pub mod ports;
pub mod registry;
pub mod schedule;
pub mod scheduler;
pub mod shutdown;
pub mod storage;
pub mod text;
pub mod trace;

pub use apply::{ApplyError, ApplyField, ApplyPlan, ApplyReport, DesiredFlow, PlannedChange, Problem};
pub use context::{Cancellation, MAX_OUTPUT_BYTES, Progress, RunContext, RunOutput, RunProgress};
pub use duration::{DurationError, MAX_DURATION_SECS, format_duration, parse_duration};
pub use executor::{
    ClaimBatchError, ClaimedRun, ExecuteError, FlowExecutor, FlowFailure, FlowPanic, LeaseSettings,
};
pub use flow::{Flow, FlowError, FlowMessage};
pub use management::{CreateFlow, DeletedFlow, FlowManagement, FlowUpdate, ManagementError, PruneRequest};
pub use model::{
    CancelRequest, ConfigurationError, DataFlow, DataFlowId, DataFlowRun, FailureKind, FlowName,
    LastRunStatus, LeaseOwner, NewDataFlow, PendingRetry, RetryPolicy, RunId, RunInterval, RunOutcome,
    RunStatus, Timeout, Trigger, ValidationError,
};
pub use observer::{NoopObserver, RunObserver};
pub use ports::{
    ActiveRun, CancelOutcome, Claim, Clock, CreateDataFlowError, DataFlowRepository, FinishRunError,
    RepositoryError, RunFilter, RunRecord, RunRepository, StartRun, StartRunError,
};
pub use ports::{DueBatch, DueStart, FlowChanges, PruneRuns, ScheduleChange};
pub use registry::{
    BuildFlowError, ClassInfo, ClassRegistry, FlowClass, FlowRegistry, NOTIFY_KEY, SettingInfo, notify_url,
    settings_of,
};
pub use schedule::{CronSchedule, MAX_INTERVAL_SECS, MAX_UPCOMING, Schedule, ScheduleError};
pub use scheduler::{
    CycleError, CycleHealth, Dispatch, HeartbeatReport, RunEnd, Scheduler, StartNowError, TriggeredRun,
};
pub use shutdown::{Phase, ShutdownController, ShutdownSignal};
pub use storage::{Storage, StoreKind};
pub use trace::{FlowTrace, TraceEnd, TraceFrame};

#[cfg(any(test, feature = "mock"))]
pub use ports::{MockClock, MockDataFlowRepository, MockRunRepository};
#[cfg(any(test, feature = "mock"))]
pub use registry::MockFlowRegistry;
#[cfg(any(test, feature = "mock"))]
pub use storage::MockStorage;

#[cfg(test)]
mod executor_tests;
