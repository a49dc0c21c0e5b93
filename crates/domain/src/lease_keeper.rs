//! Renewing the leases of an executor's live runs without a task, or a timer, per run.
//!
//! A task per run would be simpler, but spawning it, arming its timer and aborting it again cost more than
//! the rest of the executor's own work on a short run, although almost no run lives long enough to be
//! renewed even once; and on a small virtual machine a pending runtime timer alone slowed the database
//! round trips of the whole process (measured in `docs/performance.md`). So:
//!
//! - registering a run is a map insert;
//! - once the run's flow yields, the run is *armed*: one task per executor renews armed runs, and sleeps on
//!   a runtime timer only while some armed run is live — otherwise it waits, timer-free, to be woken;
//! - a run whose flow has not yielded yet is watched by one plain thread per executor, which sleeps outside
//!   the runtime and hands a due renewal to the runtime. That covers a flow whose first poll blocks its
//!   worker thread (synchronous work before its first `.await`): the renewal runs on another worker, as it
//!   would have with a task per run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::Thread;
use std::time::Duration as StdDuration;

use chrono::TimeDelta;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Span, warn};

use crate::model::RunId;
use crate::ports::{Clock, RunRepository};

/// The live runs of one executor (and its clones), and what renews their leases.
pub(crate) struct LeaseKeeper {
    runs: Arc<dyn RunRepository>,
    clock: Arc<dyn Clock>,
    /// How long a renewed lease lasts.
    length: TimeDelta,
    /// A run's lease is renewed once it was last renewed (or taken) this long ago.
    every: StdDuration,
    state: Mutex<State>,
    /// Wakes the idle task when a run is armed.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    live: HashMap<RunId, Live>,
    task: Option<JoinHandle<()>>,
    watchdog: Option<Thread>,
}

struct Live {
    /// When the lease was taken or last renewed, on the runtime's clock (paused in tests)…
    renewed: Instant,
    /// … and on the system's, for the watchdog thread, which runs outside the runtime.
    renewed_wall: std::time::Instant,
    armed: bool,
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

    /// Keeps `run_id`'s lease, taken at `since`, alive until the returned guard is dropped. Call it from
    /// inside the runtime, before the flow is first polled.
    pub(crate) fn keep(self: &Arc<Self>, run_id: RunId, since: Instant) -> Kept {
        let mut state = self.lock();
        let renewed_wall = std::time::Instant::now()
            .checked_sub(since.elapsed())
            .unwrap_or_else(std::time::Instant::now);
        state.live.insert(
            run_id,
            Live {
                renewed: since,
                renewed_wall,
                armed: false,
                span: Span::current(),
            },
        );
        if state.watchdog.is_none()
            && let Ok(runtime) = Handle::try_current()
        {
            state.watchdog = spawn_watchdog(Arc::downgrade(self), runtime, self.every / 2);
        }
        Kept {
            keeper: Arc::clone(self),
            run_id,
        }
    }

    /// Hands `run_id` to the renewal task: its flow has yielded.
    fn arm(self: &Arc<Self>, run_id: RunId) {
        let mut state = self.lock();
        let Some(live) = state.live.get_mut(&run_id) else {
            return;
        };
        live.armed = true;
        // The task is started on first use, and again if the runtime it ran on has gone away.
        if state.task.as_ref().is_none_or(JoinHandle::is_finished) {
            let task = renew_loop(Arc::downgrade(self), Arc::clone(&self.wake), self.every / 2);
            state.task = Some(tokio::spawn(task));
        }
        // Stored as a permit if the task is not waiting yet, so the wake-up cannot be lost.
        self.wake.notify_one();
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

    /// The armed runs whose lease is due for renewal at `now`.
    fn due_armed(&self, now: Instant) -> Vec<(RunId, Span)> {
        self.lock()
            .live
            .iter()
            .filter(|(_, live)| live.armed && now.duration_since(live.renewed) >= self.every)
            .map(|(id, live)| (*id, live.span.clone()))
            .collect()
    }

    /// The runs not armed yet whose lease is due at `now`, marked as renewed so the next look skips them
    /// while their renewal is under way.
    fn take_due_unarmed(&self, now: std::time::Instant) -> Vec<(RunId, Span)> {
        let mut state = self.lock();
        let mut due = Vec::new();
        for (id, live) in &mut state.live {
            if !live.armed && now.duration_since(live.renewed_wall) >= self.every {
                live.renewed_wall = now;
                due.push((*id, live.span.clone()));
            }
        }
        due
    }

    async fn renew(&self, run_id: RunId, span: &Span) {
        let expires_at = self.clock.now() + self.length;
        let renewed = self.runs.renew_lease(run_id, expires_at).await;
        let mut state = self.lock();
        // A run that ended meanwhile needs no lease, and its finished row rightly refused the renewal.
        let Some(live) = state.live.get_mut(&run_id) else {
            return;
        };
        match renewed {
            Ok(true) => {
                live.renewed = Instant::now();
                live.renewed_wall = std::time::Instant::now();
            }
            Ok(false) => {
                state.live.remove(&run_id);
                span.in_scope(|| {
                    warn!(
                        "the run's lease was lost: it was closed by the reaper; its outcome will be refused"
                    );
                });
            }
            // Retried when next due; the lease outlasts two missed renewals.
            Err(error) => span.in_scope(|| warn!(%error, "could not renew the run's lease")),
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        let mut state = self.lock();
        if let Some(task) = state.task.take() {
            task.abort();
        }
        if let Some(watchdog) = state.watchdog.take() {
            watchdog.unpark();
        }
    }
}

/// While armed runs are live, wakes every `tick` and renews their leases that are due; while none is,
/// waits for `wake` without a timer. Ends when the keeper is dropped.
async fn renew_loop(keeper: Weak<LeaseKeeper>, wake: Arc<Notify>, tick: StdDuration) {
    loop {
        let idle = match keeper.upgrade() {
            Some(keeper) => !keeper.lock().live.values().any(|live| live.armed),
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
        for (run_id, span) in keeper.due_armed(Instant::now()) {
            keeper.renew(run_id, &span).await;
        }
    }
}

/// Starts the thread that renews the leases of runs whose flow has not yielded yet. `None` if the system
/// refuses a thread: such runs then rely on yielding in time, as every well-behaved flow does.
fn spawn_watchdog(keeper: Weak<LeaseKeeper>, runtime: Handle, tick: StdDuration) -> Option<Thread> {
    let spawned = std::thread::Builder::new()
        .name("flowrun-lease-watchdog".to_owned())
        .spawn(move || {
            loop {
                std::thread::park_timeout(tick);
                let Some(strong) = keeper.upgrade() else {
                    return;
                };
                for (run_id, span) in strong.take_due_unarmed(std::time::Instant::now()) {
                    let keeper = Arc::clone(&strong);
                    // Dropped unstarted if the runtime has shut down: its runs are gone with it.
                    drop(runtime.spawn(async move { keeper.renew(run_id, &span).await }));
                }
            }
        });
    match spawned {
        Ok(handle) => Some(handle.thread().clone()),
        Err(error) => {
            warn!(%error, "could not start the lease watchdog thread");
            None
        }
    }
}

/// Keeps a run registered until dropped: when its execution ends or is cancelled, so that an abandoned run
/// can be reaped.
pub(crate) struct Kept {
    keeper: Arc<LeaseKeeper>,
    run_id: RunId,
}

impl Kept {
    /// The flow has yielded: from now on the renewal task looks after the lease.
    pub(crate) fn arm(&self) {
        self.keeper.arm(self.run_id);
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.keeper.lock().live.remove(&self.run_id);
    }
}
