//! Renewing the leases of an executor's live runs without a task, or a timer, per run.
//!
//! A task per run would be simpler, but spawning it, arming its timer and aborting it again cost more than
//! the rest of the executor's own work on a short run, although almost no run lives long enough to be
//! renewed even once; and on a small virtual machine a pending runtime timer alone slowed the database
//! round trips of the whole process (measured in `docs/performance.md`). So:
//!
//! - registering a run is a map insert;
//! - once the run's flow yields, the run is *armed*: one task per executor schedules the renewals of armed
//!   runs, and sleeps on a runtime timer only while some armed run is live — otherwise it waits, timer-free,
//!   to be woken;
//! - a run whose flow has not yielded yet is watched by one plain thread per executor, which sleeps outside
//!   the runtime. That covers a flow whose first poll blocks its worker thread (synchronous work before its
//!   first `.await`), as a task per run would have.
//!
//! Each renewal is a task of its own, started when the run is due and bounded by a timeout, so a slow or
//! panicking renewal holds up neither the schedule nor the other runs' renewals. A run is due once a third
//! of the lease has passed since its last renewal *started* (the new expiry is computed at the start), and
//! the schedule looks at least every twelfth, so a live run always has more than half its lease left when a
//! renewal begins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::Thread;
use std::time::Duration as StdDuration;

use chrono::TimeDelta;
use futures::future::select;
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
    /// A run's lease is renewed once its last renewal started (or it was taken) this long ago.
    every: StdDuration,
    state: Mutex<State>,
    /// Wakes the scheduling task when a run is armed or a renewal ends.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    live: HashMap<RunId, Live>,
    task: Option<JoinHandle<()>>,
    watchdog: Option<Thread>,
}

struct Live {
    /// When the lease was taken or its last renewal started, on the runtime's clock (paused in tests)…
    renewed: Instant,
    /// … and on the system's, for the watchdog thread, which runs outside the runtime.
    renewed_wall: std::time::Instant,
    armed: bool,
    renewing: bool,
    /// The runtime the run executes on, where its renewals run.
    runtime: Handle,
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

    /// How often the schedule looks for due runs at most: a twelfth of the lease.
    fn tick(&self) -> StdDuration {
        self.every / 4
    }

    /// Keeps `run_id`'s lease, taken at `since`, alive until the returned guard is dropped. Call it from
    /// inside the runtime, before the flow is first polled.
    pub(crate) fn keep(self: &Arc<Self>, run_id: RunId, since: Instant) -> Kept {
        let kept = Kept {
            keeper: Arc::clone(self),
            run_id,
        };
        // Outside a runtime there is nothing to run a renewal on, and no flow to run either.
        let Ok(runtime) = Handle::try_current() else {
            return kept;
        };
        let renewed_wall = std::time::Instant::now()
            .checked_sub(since.elapsed())
            .unwrap_or_else(std::time::Instant::now);
        let mut state = self.lock();
        state.live.insert(
            run_id,
            Live {
                renewed: since,
                renewed_wall,
                armed: false,
                renewing: false,
                runtime,
                span: Span::current(),
            },
        );
        if state.watchdog.is_none() {
            state.watchdog = spawn_watchdog(Arc::downgrade(self), self.tick());
        }
        kept
    }

    /// Hands `run_id` to the scheduling task: its flow has yielded.
    fn arm(self: &Arc<Self>, run_id: RunId) {
        let mut state = self.lock();
        let Some(live) = state.live.get_mut(&run_id) else {
            return;
        };
        live.armed = true;
        // The task is started on first use, and again if the runtime it ran on has gone away.
        if state.task.as_ref().is_none_or(JoinHandle::is_finished) {
            let task = schedule(Arc::downgrade(self), Arc::clone(&self.wake), self.tick());
            state.task = Some(tokio::spawn(task));
        }
        // Stored as a permit if the task is not waiting yet, so the wake-up cannot be lost.
        self.wake.notify_one();
    }

    /// Whether the scheduling task was ever started.
    #[cfg(test)]
    pub(crate) fn started(&self) -> bool {
        self.lock().task.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The map stays consistent whatever panicked while holding the lock: every update is one call.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the renewal of every armed run due at `now`, and says when the next one falls due.
    fn renew_due_armed(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        let mut next: Option<Instant> = None;
        for (id, live) in &mut state.live {
            if !live.armed || live.renewing {
                continue;
            }
            let due_at = live.renewed + self.every;
            if due_at <= now {
                live.renewing = true;
                live.renewed = now;
                live.renewed_wall = std::time::Instant::now();
                self.start_renewal(*id, live);
                next = Some(next.map_or(now + self.every, |at| at.min(now + self.every)));
            } else {
                next = Some(next.map_or(due_at, |at| at.min(due_at)));
            }
        }
        next
    }

    /// Starts the renewal of every run not armed yet that is due at `now` (the system's clock).
    fn renew_due_unarmed(self: &Arc<Self>, now: std::time::Instant) {
        let mut state = self.lock();
        for (id, live) in &mut state.live {
            if !live.armed && !live.renewing && now.duration_since(live.renewed_wall) >= self.every {
                live.renewing = true;
                live.renewed_wall = now;
                live.renewed = Instant::now();
                self.start_renewal(*id, live);
            }
        }
    }

    /// Renews `run_id`'s lease in a task of its own on the run's runtime. Its `renewing` mark is cleared
    /// when the task ends, however it ends.
    fn start_renewal(self: &Arc<Self>, run_id: RunId, live: &Live) {
        let keeper = Arc::clone(self);
        let span = live.span.clone();
        // Dropped unstarted if the runtime is shutting down: its runs end with it.
        drop(live.runtime.spawn(async move {
            let _renewing = Renewing {
                keeper: Arc::clone(&keeper),
                run_id,
            };
            let renewal = keeper.renew(run_id);
            match tokio::time::timeout(keeper.every, renewal).await {
                Ok(Ok(())) => {}
                Ok(Err(message)) => span.in_scope(|| warn!("{message}")),
                Err(_) => span.in_scope(|| {
                    warn!(timeout = ?keeper.every, "renewing the run's lease timed out; it is tried again when next due");
                }),
            }
        }));
    }

    /// One renewal; `Err` holds what to warn about.
    async fn renew(&self, run_id: RunId) -> Result<(), String> {
        let expires_at = self.clock.now() + self.length;
        match self.runs.renew_lease(run_id, expires_at).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                // A run that ended meanwhile needs no lease, and its finished row rightly refused it.
                if self.lock().live.remove(&run_id).is_none() {
                    return Ok(());
                }
                Err(
                    "the run's lease was lost: it was closed by the reaper; its outcome will be refused"
                        .to_owned(),
                )
            }
            Err(error) => Err(format!(
                "could not renew the run's lease: {error}; it is tried again when next due"
            )),
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

/// Clears a run's `renewing` mark when its renewal task ends (also by panic or cancellation), and wakes
/// the schedule to plan its next renewal.
struct Renewing {
    keeper: Arc<LeaseKeeper>,
    run_id: RunId,
}

impl Drop for Renewing {
    fn drop(&mut self) {
        if let Some(live) = self.keeper.lock().live.get_mut(&self.run_id) {
            live.renewing = false;
        }
        self.keeper.wake.notify_one();
    }
}

/// While armed runs are live, starts their renewals when due, waking at the earliest due time or when
/// woken; while none is, waits for `wake` without a timer. Ends when the keeper is dropped.
async fn schedule(keeper: Weak<LeaseKeeper>, wake: Arc<Notify>, tick: StdDuration) {
    loop {
        let next = match keeper.upgrade() {
            Some(keeper) => keeper.renew_due_armed(Instant::now()),
            None => return,
        };
        let woken = wake.notified();
        match next {
            None => woken.await,
            Some(at) => {
                let sleep = tokio::time::sleep_until(at.min(Instant::now() + tick));
                // Whichever comes first, the next round looks again.
                let _ = select(std::pin::pin!(sleep), std::pin::pin!(woken)).await;
            }
        }
    }
}

/// Starts the thread that renews the leases of runs whose flow has not yielded yet. `None` if the system
/// refuses a thread: such runs then rely on yielding in time, as every well-behaved flow does.
fn spawn_watchdog(keeper: Weak<LeaseKeeper>, tick: StdDuration) -> Option<Thread> {
    let spawned = std::thread::Builder::new()
        .name("flowrun-lease-watchdog".to_owned())
        .spawn(move || {
            loop {
                std::thread::park_timeout(tick);
                let Some(keeper) = keeper.upgrade() else {
                    return;
                };
                keeper.renew_due_unarmed(std::time::Instant::now());
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
    /// The flow has yielded: from now on the scheduling task looks after the lease.
    pub(crate) fn arm(&self) {
        self.keeper.arm(self.run_id);
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.keeper.lock().live.remove(&self.run_id);
    }
}
