//! Graceful shutdown as the use cases see it: first stop claiming new work, then, after a grace period,
//! interrupt the flows still running so their runs are recorded as `failed` instead of being left to the
//! reaper.

use tokio::sync::watch;

/// Where the process is in its shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Working normally.
    Running,
    /// No new executions start; running ones go on.
    Draining,
    /// Running flows are interrupted and recorded as failed.
    Aborting,
}

/// Drives the shutdown phases; held by the binary.
#[derive(Debug)]
pub struct ShutdownController {
    sender: watch::Sender<Phase>,
}

/// Observes the shutdown phase; held by the executor.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    receiver: watch::Receiver<Phase>,
}

impl ShutdownController {
    /// A controller in [`Phase::Running`] and the signal it drives.
    pub fn new() -> (Self, ShutdownSignal) {
        let (sender, receiver) = watch::channel(Phase::Running);
        (Self { sender }, ShutdownSignal { receiver })
    }

    /// Stop starting new executions.
    pub fn drain(&self) {
        self.sender
            .send_if_modified(|phase| advance(phase, Phase::Draining));
    }

    /// Interrupt the executions still running.
    pub fn abort(&self) {
        self.sender
            .send_if_modified(|phase| advance(phase, Phase::Aborting));
    }
}

fn advance(phase: &mut Phase, to: Phase) -> bool {
    if *phase < to {
        *phase = to;
        true
    } else {
        false
    }
}

impl ShutdownSignal {
    /// A signal that never leaves [`Phase::Running`].
    pub fn never() -> Self {
        let (sender, receiver) = watch::channel(Phase::Running);
        // Keep the channel open for the life of the process: a closed channel would read as "no news".
        std::mem::forget(sender);
        Self { receiver }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.receiver.borrow()
    }

    /// Completes when the phase reaches `Aborting`; never, if the controller is dropped before.
    pub async fn aborted(&self) {
        let mut receiver = self.receiver.clone();
        if receiver
            .wait_for(|phase| *phase == Phase::Aborting)
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }
}
