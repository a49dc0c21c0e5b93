//! Group commit of run finishes on PostgreSQL: finishes that arrive together are written by one statement,
//! in one transaction, so they share one commit (one WAL flush) instead of paying one each.
//!
//! A run's finish on PostgreSQL is one call of `flowrun_finish_run` (see [`crate::hot_path::Steps::Calls`]),
//! and each call used to be its own implicit transaction. With many short runs the server spent its time
//! flushing the WAL for each commit (`LWLock:WALWrite` was the commonest wait; see `docs/performance.md`).
//!
//! [`GroupCommit`] hands every finish to one committer task through a channel. The task takes whatever is
//! queued as one batch as soon as a writer is free (at most [`MAX_IN_FLIGHT`] batches are written at
//! once): a lone finish on a quiet system goes at once, alone, with the single call (no timer ever holds a
//! finish back); finishes that arrived while the writers were busy go together in the next batch (at most
//! [`MAX_BATCH`]), as one `SELECT … flowrun_finish_run(…) FROM unnest(…)`. Every run is still guarded by
//! the function, which answers per run whether the run was still in progress.
//!
//! The committer task owns the queue and each batch is written by a task that owns it, so a finish is
//! written once queued even if its caller stops waiting. If a batch's statement fails, nothing of it was
//! written, and each of its finishes is written again alone, so one bad row cannot fail the others and
//! each caller gets its own answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use sea_orm::sqlx::{self, Row};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, RuntimeErr, Statement, Value};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::debug;

use crate::mapping::repository_error;
use flowrun_domain::RepositoryError;

/// The most finishes one statement writes. It bounds how long a batch runs, and so how long a finish that
/// arrives meanwhile waits for a free writer: a batch of 256 took ~32 ms of server time on the benchmark
/// VM (≈ 0.13 ms a finish), so 64 keeps it near 8 ms, while still writing 64 finishes per commit.
pub const MAX_BATCH: usize = 64;

/// How many batches are written at once. With one, the next batch waits idle for the whole of the last
/// one — its function calls on one server backend, then its WAL flush; with two, one batch's calls run
/// while the other's commit is flushed. More only makes batches smaller (on the benchmark VM, 1, 2 and 4
/// measured alike within the noise of a loaded machine; see `docs/performance.md`).
pub const MAX_IN_FLIGHT: usize = 2;

/// The batch statement: each row of the parameter arrays is one finish, passed to `flowrun_finish_run`
/// exactly as the single call passes it. Rows are sent sorted by flow id and evaluated in that order
/// (`ORDER BY r.ord`), so concurrent transactions lock flows in one order. Each row's position comes back
/// with its answer.
const PG_FINISH_BATCH: &str = "SELECT r.ord, flowrun_finish_run(r.run, r.flow, r.status, r.ended_at, \
     r.message, r.backtrace, r.failure_kind, r.retry_at, r.retry_attempt, r.output, r.state) \
     FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], \
     $7::text[], $8::timestamptz[], $9::integer[], $10::text[], $11::text[]) \
     WITH ORDINALITY AS r(run, flow, status, ended_at, message, backtrace, failure_kind, retry_at, \
     retry_attempt, output, state, ord) \
     ORDER BY r.ord";

/// One run's finish as `flowrun_finish_run` takes it, already bounded as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// The run.
    pub run_id: i64,
    /// Its flow.
    pub flow_id: i64,
    /// The status it ends with.
    pub status: &'static str,
    /// When it ended.
    pub ended_at: DateTime<Utc>,
    /// Its error message, if it failed.
    pub message: Option<String>,
    /// Its failure trace, if it failed.
    pub backtrace: Option<String>,
    /// How it failed, if it did.
    pub failure_kind: Option<&'static str>,
    /// When the flow's pending retry is due, if one is.
    pub retry_at: Option<DateTime<Utc>>,
    /// That retry's attempt.
    pub retry_attempt: Option<i32>,
    /// The run's output; `None` leaves it.
    pub output: Option<String>,
    /// The flow's new state; `None` leaves it.
    pub state: Option<String>,
}

impl Finish {
    /// The single call's values, in its binding order.
    fn values(&self) -> [Value; 11] {
        [
            self.run_id.into(),
            self.flow_id.into(),
            self.status.into(),
            self.ended_at.into(),
            self.message.clone().into(),
            self.backtrace.clone().into(),
            self.failure_kind.into(),
            self.retry_at.into(),
            self.retry_attempt.into(),
            self.output.clone().into(),
            self.state.clone().into(),
        ]
    }
}

/// What a finish's caller gets back: whether the run was still in progress (and is now ended).
type Answer = Result<bool, RepositoryError>;

/// A finish waiting for the committer, with where its answer goes.
struct Queued {
    finish: Finish,
    reply: oneshot::Sender<Answer>,
}

/// Gathers concurrent finishes on one PostgreSQL pool and writes them in batches (see the module docs).
/// Clones of a repository share one.
pub struct GroupCommit {
    pool: DatabaseConnection,
    /// `flowrun_finish_run` called once, for a batch of one and for a failed batch's finishes.
    single: Arc<str>,
    /// The committer's queue; started on the first finish (a runtime exists then), and again if the
    /// committer is gone (its runtime ended).
    queue: Mutex<Option<mpsc::UnboundedSender<Vec<Queued>>>>,
    /// Finishes written by a batch statement of more than one.
    grouped: Arc<AtomicU64>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("grouped", &self.grouped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Group commit on `pool` (a PostgreSQL pool), calling `single` (the single finish call,
    /// `crate::hot_path::Steps::Calls::finish`) for lone finishes.
    pub fn new(pool: DatabaseConnection, single: &str) -> Self {
        Self {
            pool,
            single: single.into(),
            queue: Mutex::new(None),
            grouped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many finishes so far were written by a batch of more than one.
    pub fn grouped(&self) -> u64 {
        self.grouped.load(Ordering::Relaxed)
    }

    /// Writes `finish`, with others queued meanwhile; whether the run was still in progress.
    pub async fn finish(&self, finish: Finish) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.enqueue(vec![Queued { finish, reply }]);
        answer.await.unwrap_or_else(|_| Err(committer_gone()))
    }

    /// Writes `finishes` together (in batches of at most [`MAX_BATCH`]); each one's answer, in order.
    pub async fn finish_all(&self, finishes: Vec<Finish>) -> Vec<Answer> {
        let mut answers = Vec::with_capacity(finishes.len());
        let mut finishes = finishes.into_iter().peekable();
        while finishes.peek().is_some() {
            let mut group = Vec::with_capacity(MAX_BATCH);
            for finish in finishes.by_ref().take(MAX_BATCH) {
                let (reply, answer) = oneshot::channel();
                group.push(Queued { finish, reply });
                answers.push(answer);
            }
            // One message per batch, so the committer takes the whole group at once.
            self.enqueue(group);
        }
        join_all(
            answers
                .into_iter()
                .map(|answer| async { answer.await.unwrap_or_else(|_| Err(committer_gone())) }),
        )
        .await
    }

    /// Hands `group` to the committer, starting one if there is none (or the one there was has ended).
    fn enqueue(&self, group: Vec<Queued>) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let group = match queue.as_ref() {
            Some(sender) => match sender.send(group) {
                Ok(()) => return,
                Err(mpsc::error::SendError(group)) => group,
            },
            None => group,
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(commit(
            receiver,
            self.pool.clone(),
            self.single.clone(),
            self.grouped.clone(),
        ));
        // The receiver was made just above and lives in the task, so this send cannot fail; if it somehow
        // did, dropping the group drops its reply senders and each caller gets `committer_gone`.
        let _ = sender.send(group);
        *queue = Some(sender);
    }
}

/// The error of a finish whose committer ended before answering (its runtime shut down).
fn committer_gone() -> RepositoryError {
    RepositoryError::Unavailable("the group commit task ended before the finish was answered".into())
}

/// The committer task: takes everything queued as one batch whenever fewer than [`MAX_IN_FLIGHT`] batches
/// are being written, until every sender is gone. Each batch is written on a task of its own, which owns it:
/// it is written to the end whoever still waits for it.
async fn commit(
    mut queue: mpsc::UnboundedReceiver<Vec<Queued>>,
    pool: DatabaseConnection,
    single: Arc<str>,
    grouped: Arc<AtomicU64>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut next: Option<Vec<Queued>> = None;
    loop {
        let mut batch = match next.take() {
            Some(group) => group,
            None => match queue.recv().await {
                Some(group) => group,
                None => return,
            },
        };
        // Wait for a free writer only now, so what arrives meanwhile joins this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Everything that arrived while the writers were busy joins this batch, up to the cap; a group
        // that would overflow it waits for the next batch whole.
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(group) if batch.len() + group.len() <= MAX_BATCH => batch.extend(group),
                Ok(group) => {
                    next = Some(group);
                    break;
                }
                Err(_) => break,
            }
        }
        if batch.len() > 1 {
            grouped.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        let (pool, single) = (pool.clone(), single.clone());
        tokio::spawn(async move {
            write(&pool, &single, batch).await;
            drop(permit);
        });
    }
}

/// Writes `batch` and answers each of its callers: alone by the single call, else by the batch statement,
/// falling back to single calls if that fails.
async fn write(pool: &DatabaseConnection, single: &str, mut batch: Vec<Queued>) {
    if let [_] = batch.as_slice() {
        if let Some(queued) = batch.pop() {
            let answer = write_one(pool, single, &queued.finish).await;
            // The caller may have stopped waiting; the finish is written all the same.
            let _ = queued.reply.send(answer);
        }
        return;
    }
    // Flow order, so concurrent batches (other processes) lock flows in the same order.
    batch.sort_by_key(|queued| (queued.finish.flow_id, queued.finish.run_id));
    match write_batch(pool, &batch).await {
        Ok(ended) => {
            for (queued, ended) in batch.into_iter().zip(ended) {
                let _ = queued.reply.send(ended);
            }
        }
        Err(e) => {
            // One statement, one transaction: nothing of the batch was written, so writing each finish
            // alone cannot end a run twice, and a finish the database refuses fails only its own caller.
            debug!(size = batch.len(), error = %e, "a batch of finishes failed; writing them one by one");
            join_all(batch.into_iter().map(|queued| async move {
                let answer = write_one(pool, single, &queued.finish).await;
                let _ = queued.reply.send(answer);
            }))
            .await;
        }
    }
}

/// One finish by the single call of `flowrun_finish_run`, one implicit transaction.
async fn write_one(pool: &DatabaseConnection, single: &str, finish: &Finish) -> Answer {
    let statement = Statement::from_sql_and_values(DatabaseBackend::Postgres, single, finish.values());
    let row = pool
        .query_one_raw(statement)
        .await
        .map_err(repository_error)?
        .ok_or_else(|| {
            repository_error(DbErr::RecordNotFound("flowrun_finish_run returned no row".into()))
        })?;
    row.try_get_by_index::<bool>(0).map_err(repository_error)
}

/// `batch` by one statement ([`PG_FINISH_BATCH`]), one implicit transaction; each finish's answer in the
/// batch's order. The values travel as array parameters, never as SQL text.
async fn write_batch(pool: &DatabaseConnection, batch: &[Queued]) -> Result<Vec<Answer>, RepositoryError> {
    fn column<T>(batch: &[Queued], field: impl Fn(&Finish) -> T) -> Vec<T> {
        batch.iter().map(|queued| field(&queued.finish)).collect()
    }
    let query = sqlx::query(PG_FINISH_BATCH)
        .bind(column(batch, |f| f.run_id))
        .bind(column(batch, |f| f.flow_id))
        .bind(column(batch, |f| f.status))
        .bind(column(batch, |f| f.ended_at))
        .bind(column(batch, |f| f.message.clone()))
        .bind(column(batch, |f| f.backtrace.clone()))
        .bind(column(batch, |f| f.failure_kind))
        .bind(column(batch, |f| f.retry_at))
        .bind(column(batch, |f| f.retry_attempt))
        .bind(column(batch, |f| f.output.clone()))
        .bind(column(batch, |f| f.state.clone()));
    let rows = query
        .fetch_all(pool.get_postgres_connection_pool())
        .await
        .map_err(driver_error)?;
    // The statement has committed by now: nothing below may fail the batch (its finishes would be written
    // again, and each answered "not in progress"), so a row that cannot be read fails only its finish.
    let mut answers: Vec<Option<bool>> = vec![None; batch.len()];
    for row in rows {
        let (Ok(ord), Ok(ended)) = (row.try_get::<i64, _>(0), row.try_get::<bool, _>(1)) else {
            continue;
        };
        let slot = usize::try_from(ord)
            .ok()
            .and_then(|ord| ord.checked_sub(1))
            .and_then(|index| answers.get_mut(index));
        if let Some(slot) = slot {
            *slot = Some(ended);
        }
    }
    Ok(answers
        .into_iter()
        .map(|ended| {
            ended.ok_or_else(|| {
                repository_error(DbErr::RecordNotFound(
                    "the batch of finishes returned no readable row for this run".into(),
                ))
            })
        })
        .collect())
}

/// A sqlx error as SeaORM reports it, so it is classified as every other.
fn driver_error(error: sqlx::Error) -> RepositoryError {
    repository_error(DbErr::Query(RuntimeErr::SqlxError(Arc::new(error))))
}
