//! What a person or a client can ask the server to do to flows and runs, shared by the JSON routes and
//! the dashboard so both behave alike.

use chrono::{DateTime, Utc};
use flowrun_app::App;
use flowrun_domain::{
    CancelOutcome, DataFlow, DataFlowRun, ExecuteError, RepositoryError, RunId, StartNowError, Trigger,
};
use tracing::error;

/// How a request to run a flow now ended, when it was not an error.
#[derive(Debug)]
pub(crate) enum RunNow {
    /// The run is recorded and running on this server.
    Started(Box<DataFlowRun>),
    /// Another run holds the flow.
    AlreadyRunning {
        /// That run.
        run_id: RunId,
        /// Since when.
        since: DateTime<Utc>,
    },
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunNowError {
    /// There is no flow of that name.
    #[error("no data flow named `{0}`")]
    NotFound(String),
    /// Every slot is busy, or the server is shutting down; worth trying again later.
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed (logged).
    #[error("database error")]
    Database,
    /// Starting the run panicked (logged).
    #[error("internal error")]
    Internal,
}

impl From<RepositoryError> for RunNowError {
    fn from(error: RepositoryError) -> Self {
        error!(%error, "could not read the flow to run");
        Self::Database
    }
}

/// Starts the flow `name` now on this server, recorded with `trigger`.
pub(crate) async fn run_now(
    app: &App,
    name: &str,
    trigger: Trigger,
) -> Result<(DataFlow, RunNow), RunNowError> {
    let flow = app
        .flows
        .find_by_name(name)
        .await?
        .ok_or_else(|| RunNowError::NotFound(name.to_owned()))?;
    // On a task of its own, like the heartbeat's cycle: a client that hangs up between the claim and the
    // start of the run must not leave the run to be reaped as abandoned.
    let scheduler = app.scheduler.clone();
    let claimed = flow.clone();
    let started = tokio::spawn(async move { scheduler.start_now(&claimed, trigger).await })
        .await
        .map_err(|join| {
            error!(error = %join, "starting a run panicked");
            RunNowError::Internal
        })?;
    match started {
        Ok(run) => Ok((flow, RunNow::Started(Box::new(run)))),
        Err(StartNowError::Execute(ExecuteError::AlreadyRunning { run_id, since, .. })) => {
            Ok((flow, RunNow::AlreadyRunning { run_id, since }))
        }
        Err(StartNowError::Execute(ExecuteError::FlowNotFound { .. })) => {
            Err(RunNowError::NotFound(name.to_owned()))
        }
        Err(
            error
            @ (StartNowError::NoFreeSlot(_) | StartNowError::Execute(ExecuteError::ShuttingDown { .. })),
        ) => Err(RunNowError::Unavailable(error.to_string())),
        Err(StartNowError::Execute(error)) => {
            error!(%error, "could not start a run");
            Err(RunNowError::Database)
        }
    }
}

/// Asks the process running run `id` to stop it, recording `by` as who asked.
pub(crate) async fn cancel(app: &App, id: RunId, by: String) -> Result<CancelOutcome, RepositoryError> {
    app.runs.request_cancel(id, by, app.clock.now()).await
}
