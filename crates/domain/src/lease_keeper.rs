//! Renewing the leases of an executor's live runs: one background task for all of them, armed only while
//! a run that has yielded is live.
//!
//! A task per run would be simpler, but spawning it, arming its timer and aborting it again cost more than
//! the rest of the executor's own work on a short run, although almost no run lives long enough to be
//! renewed even once; and on a small virtual machine a pending runtime timer alone slowed every database
//! round trip of the process (measured in `docs/performance.md`). So registering a run is a map insert,
//! and the task sleeps on its timer only while some registered run is live; otherwise it waits, timer-free,
//! for the next registration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration as StdDuration;

use chrono::TimeDelta;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Span, warn};

use crate::model::RunId;
use crate::ports::{Clock, RunRepository};

/// The live runs of one executor (and its clones) and the task that renews their leases.
pub(crate) struct LeaseKeeper {
    runs: Arc<dyn RunRepository>,
    clock: Arc<dyn Clock>,
    /// How long a renewed lease lasts.
    length: TimeDelta,
    /// A run's lease is renewed once it was last renewed (or started) this long ago.
    every: StdDuration,
    state: Mutex<State>,
    /// Wakes the idle task when a run is registered.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    live: HashMap<RunId, Live>,
    task: Option<JoinHandle<()>>,
}

struct Live {
    renewed: Instant,
    /// The execution's span, so that a renewal's warnings name the flow and the run.
    span: Span,
}

impl LeaseKeeper {
    pub(crate) fn new(
        runs: Arc<dyn RunRepository>,
        clock: Arc<dyn Clock>,
        length: TimeDelta,
        every: StdDuration,
    ) -> Arc<Self> {
        Arc::new(Self {
            runs,
            clock,
            length,
            every,
            state: Mutex::new(State::default()),
            wake: Arc::new(Notify::new()),
        })
    }

    /// Keeps `run_id`'s lease, taken or last renewed at `since`, alive until the returned guard is dropped.
    pub(crate) fn keep(self: &Arc<Self>, run_id: RunId, since: Instant) -> Kept {
        let mut state = self.lock();
        state.live.insert(
            run_id,
            Live {
                renewed: since,
                span: Span::current(),
            },
        );
        // The task is started on first use, and again if the runtime it ran on has gone away.
        if state.task.as_ref().is_none_or(JoinHandle::is_finished) {
            let task = renew_loop(Arc::downgrade(self), Arc::clone(&self.wake), self.every / 2);
            state.task = Some(tokio::spawn(task));
        }
        if state.live.len() == 1 {
            // Stored as a permit if the task is not waiting yet, so the wake-up cannot be lost.
            self.wake.notify_one();
        }
        Kept {
            keeper: Arc::clone(self),
            run_id,
        }
    }

    /// Whether the renewal task was ever started.
    #[cfg(test)]
    pub(crate) fn started(&self) -> bool {
        self.lock().task.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The map stays consistent whatever panicked while holding the lock: every update is one call.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The runs whose lease is due for renewal at `now`.
    fn due(&self, now: Instant) -> Vec<(RunId, Span)> {
        self.lock()
            .live
            .iter()
            .filter(|(_, live)| now.duration_since(live.renewed) >= self.every)
            .map(|(id, live)| (*id, live.span.clone()))
            .collect()
    }

    async fn renew(&self, run_id: RunId, span: &Span, now: Instant) {
        let expires_at = self.clock.now() + self.length;
        let renewed = self.runs.renew_lease(run_id, expires_at).await;
        let mut state = self.lock();
        // A run that ended meanwhile needs no lease, and its finished row rightly refused the renewal.
        let Some(live) = state.live.get_mut(&run_id) else {
            return;
        };
        match renewed {
            Ok(true) => live.renewed = now,
            Ok(false) => {
                state.live.remove(&run_id);
                span.in_scope(|| {
                    warn!(
                        "the run's lease was lost: it was closed by the reaper; its outcome will be refused"
                    );
                });
            }
            // Retried on the next wake-up; the lease outlasts two missed renewals.
            Err(error) => span.in_scope(|| warn!(%error, "could not renew the run's lease")),
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(task) = self.lock().task.take() {
            task.abort();
        }
    }
}

/// While runs are live, wakes every `tick` and renews the leases that are due; while none is, waits for
/// `wake` without a timer. Ends when the keeper is dropped.
async fn renew_loop(keeper: Weak<LeaseKeeper>, wake: Arc<Notify>, tick: StdDuration) {
    loop {
        let idle = match keeper.upgrade() {
            Some(keeper) => keeper.lock().live.is_empty(),
            None => return,
        };
        if idle {
            wake.notified().await;
            continue;
        }
        tokio::time::sleep(tick).await;
        let Some(keeper) = keeper.upgrade() else {
            return;
        };
        let now = Instant::now();
        for (run_id, span) in keeper.due(now) {
            keeper.renew(run_id, &span, now).await;
        }
    }
}

/// Stops renewing a run's lease when dropped: when its execution ends or is cancelled, so that an
/// abandoned run can be reaped.
pub(crate) struct Kept {
    keeper: Arc<LeaseKeeper>,
    run_id: RunId,
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.keeper.lock().live.remove(&self.run_id);
    }
}
