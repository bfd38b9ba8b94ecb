//! [`Kinsumer::process`]: a pool of worker threads that processes batches in parallel
//! while each shard's batches are processed one at a time, in order.
//!
//! The work runs on a pool fed by per-shard lanes (the rdkafka model), not on the shard
//! threads (the KCL model): a shard thread keeps renewing its lease and prefetching while
//! its batch is at work, however long the work takes, and the number of CPU-bound threads
//! is the caller's choice, not the number of shards (32 shards on 2 cores run 2 workers,
//! not 32). A worker that takes a batch of a shard another worker is at work on queues it
//! in that shard's lane; the worker on the shard takes it next. Taking a batch off the
//! channel and looking up its lane happen under one lock, so a shard's batches start in
//! the order its thread sent them. A batch queued in a lane gives its room in the buffer
//! back at once, so the other shards go on (a batch of a busy shard must not hold the
//! whole buffer), and its shard thread sends nothing more until it starts: the lanes
//! hold at most what the channel held, and memory stays within twice `buffer_size` and
//! `buffer_bytes`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::Mutex;

use crate::batch::Batch;
use crate::consumer::{Kinsumer, Pulled};
use crate::error::{Error, ErrorKind};

/// Why [`Kinsumer::process`] returned an error.
#[derive(Debug)]
pub enum ProcessError<E> {
    /// The consumer ended with a fatal error (as [`Kinsumer::records`] would yield it).
    Consumer(Error),
    /// The handler failed on a batch. The consumer was stopped: what was processed is
    /// committed, every lease released; this batch was not marked, so it is delivered
    /// again (to whoever reads the shard next).
    Handler {
        /// The shard of the batch.
        shard_id: String,
        /// The sequence number of the batch's first record.
        sequence_number: String,
        /// What the handler returned.
        error: E,
    },
}

impl<E> ProcessError<E> {
    /// The handler's error, if that is what ended processing.
    pub fn handler_error(&self) -> Option<&E> {
        match self {
            ProcessError::Handler { error, .. } => Some(error),
            ProcessError::Consumer(_) => None,
        }
    }

    /// The consumer's error, if that is what ended processing.
    pub fn consumer_error(&self) -> Option<&Error> {
        match self {
            ProcessError::Consumer(e) => Some(e),
            ProcessError::Handler { .. } => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for ProcessError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Consumer(e) => e.fmt(f),
            ProcessError::Handler {
                shard_id,
                sequence_number,
                error,
            } => write!(
                f,
                "processing the batch of shard {shard_id} from {sequence_number} failed: {error}"
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ProcessError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcessError::Consumer(e) => Some(e),
            ProcessError::Handler { error, .. } => Some(error),
        }
    }
}

impl<E> From<Error> for ProcessError<E> {
    fn from(e: Error) -> Self {
        ProcessError::Consumer(e)
    }
}

/// The most worker threads [`Kinsumer::process`] starts.
const MAX_WORKERS: usize = 1024;

/// The shards a worker is at work on, each with the batches that came for it meanwhile.
#[derive(Debug, Default)]
struct Lanes {
    busy: Mutex<HashMap<Arc<str>, VecDeque<Batch>>>,
}

/// How processing ended, as the first worker to end it saw it.
enum Ending<E> {
    Failed(ProcessError<E>),
    Panicked(Box<dyn std::any::Any + Send>),
}

/// What the workers share.
struct Pool<'c, E> {
    consumer: &'c Kinsumer,
    lanes: Lanes,
    /// Dropped when a worker ends processing: wakes the others.
    abort_tx: Mutex<Option<Sender<()>>>,
    abort_rx: Receiver<()>,
    ending: Mutex<Option<Ending<E>>>,
}

impl<E> Pool<'_, E> {
    fn end(&self, ending: Ending<E>) {
        let mut first = self.ending.lock();
        if first.is_none() {
            *first = Some(ending);
        }
        drop(first);
        self.abort_tx.lock().take();
    }

    fn aborted(&self) -> bool {
        self.abort_tx.lock().is_none()
    }

    /// The next batch this worker may start: off the channel, unless its shard is at
    /// work on another worker (then it joins that shard's lane and the pull goes on).
    fn take(&self) -> std::result::Result<Option<Batch>, TryRecvError> {
        let mut busy = self.lanes.busy.lock();
        let batch = self.consumer.receiver().try_recv()?;
        match busy.get_mut(batch.shard_id()) {
            Some(lane) => {
                self.consumer.release(&batch);
                batch.progress().queue();
                lane.push_back(batch);
                Ok(None)
            }
            None => {
                busy.insert(Arc::clone(batch.progress().shard_id()), VecDeque::new());
                self.consumer.release(&batch);
                Ok(Some(batch))
            }
        }
    }

    /// After a batch of `shard`: the next one in its lane, or `None`, with the shard
    /// free for any worker.
    fn next_in_lane(&self, shard: &str) -> Option<Batch> {
        let mut busy = self.lanes.busy.lock();
        let next = busy.get_mut(shard).and_then(VecDeque::pop_front);
        match &next {
            Some(batch) => batch.progress().unqueue(),
            None => {
                busy.remove(shard);
            }
        }
        next
    }

    /// Frees `shard` for any worker, dropping what waits in its lane (processing ends).
    fn drop_lane(&self, shard: &str) {
        if let Some(lane) = self.lanes.busy.lock().remove(shard) {
            for batch in lane {
                batch.progress().unqueue();
            }
        }
    }

    /// Drops every batch still queued (processing is over).
    fn clear(&self) {
        for (_, lane) in self.lanes.busy.lock().drain() {
            for batch in lane {
                batch.progress().unqueue();
            }
        }
    }
}

impl Kinsumer {
    /// Processes batches on `workers` threads until the consumer is stopped, or fails,
    /// or `handler` fails. No two batches of one shard are ever at work at once, and each
    /// shard's batches are processed in order, so per-shard and per-key order hold; every
    /// other shard's batches go on meanwhile.
    ///
    /// A batch counts as processed (in both [checkpoint modes](crate::CheckpointMode))
    /// when `handler` returns `Ok` for it, and its shard's checkpoint moves past it once
    /// every earlier batch of the shard is processed too. Rebalances, a lost lease, a
    /// shard's end and [`stop`](Kinsumer::stop) behave as for
    /// [`records`](Kinsumer::records): a shard handed over waits up to
    /// [`handover_grace`](crate::Config::with_handover_grace) for the batch at work, then
    /// commits what was processed; a closed shard's children are read once its last batch
    /// is processed.
    ///
    /// One `process` call at a time per consumer, and no `records()` or `batches()`
    /// iterator pulling meanwhile: batches they took would go past the lanes.
    ///
    /// Returns `Ok(())` after a [`StopHandle::stop`](crate::StopHandle::stop) (each worker
    /// finishes the batch it is at work on first; then stop or close the consumer, as
    /// after a `for` loop). If `handler` returns `Err` (or panics), the other workers
    /// finish their batches, the consumer is stopped (what was processed is committed,
    /// every lease released), and the error is returned (the panic resumed); the failed
    /// batch is not marked, so it is delivered again.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Handler`] with the handler's error; [`ProcessError::Consumer`] with
    /// the consumer's fatal error, [`ErrorKind::NotRunning`] before
    /// [`run`](Kinsumer::run), or [`ErrorKind::InvalidWorkers`] for 0 or more than 1,024
    /// workers.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn demo(consumer: &kinsumer::Kinsumer) -> Result<(), Box<dyn std::error::Error>> {
    /// use kinsumer::{Batch, ProcessError};
    ///
    /// let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    /// consumer.process(workers, |batch: Batch| -> Result<(), std::io::Error> {
    ///     for record in &batch {
    ///         // CPU-heavy work on the record; per-key order holds.
    ///         let _ = record.data();
    ///     }
    ///     Ok(())
    /// })?;
    /// consumer.stop();
    /// # Ok(())
    /// # }
    /// ```
    pub fn process<E, F>(&self, workers: usize, handler: F) -> Result<(), ProcessError<E>>
    where
        F: Fn(Batch) -> Result<(), E> + Sync,
        E: Send,
    {
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(ProcessError::Consumer(
                Error::new(ErrorKind::InvalidWorkers)
                    .with_context(format!("Kinsumer::process with {workers} workers")),
            ));
        }
        let (abort_tx, abort_rx) = crossbeam_channel::bounded(0);
        let pool = Pool {
            consumer: self,
            lanes: Lanes::default(),
            abort_tx: Mutex::new(Some(abort_tx)),
            abort_rx,
            ending: Mutex::new(None),
        };
        std::thread::scope(|s| {
            let (pool, handler) = (&pool, &handler);
            let spawned: Vec<_> = (0..workers)
                .map(|i| {
                    std::thread::Builder::new()
                        .name(format!("kinsumer-worker-{i}"))
                        .spawn_scoped(s, move || work(pool, handler))
                })
                .collect();
            if let Some(Err(e)) = spawned.into_iter().find(Result::is_err) {
                pool.end(Ending::Failed(ProcessError::Consumer(
                    Error::new(ErrorKind::Internal)
                        .with_context("starting a worker thread")
                        .with_source(e),
                )));
            }
        });
        pool.clear();
        match pool.ending.into_inner() {
            None => Ok(()),
            Some(Ending::Failed(e)) => {
                if matches!(e, ProcessError::Handler { .. }) {
                    self.stop();
                }
                Err(e)
            }
            Some(Ending::Panicked(panic)) => {
                self.stop();
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// One worker's loop: a batch, its handler call, its mark; then the next batch of the
/// same shard if one waits in its lane, else any batch.
fn work<E, F>(pool: &Pool<'_, E>, handler: &F)
where
    F: Fn(Batch) -> Result<(), E> + Sync,
{
    let consumer = pool.consumer;
    let mut next: Option<Batch> = None;
    loop {
        if pool.aborted() || consumer.stop_requested() {
            if let Some(batch) = next.take() {
                // Not started (the next owner delivers it): its lane goes with it.
                pool.drop_lane(batch.shard_id());
            }
            return;
        }
        let batch = match next.take() {
            Some(batch) => batch,
            None => match consumer.pull(None, Some(&pool.abort_rx), &mut || pool.take()) {
                Pulled::Got(batch) => batch,
                Pulled::Failed(e) => {
                    pool.end(Ending::Failed(ProcessError::Consumer(e)));
                    return;
                }
                Pulled::Ended | Pulled::TimedOut => return,
            },
        };
        let shard = Arc::clone(batch.progress().shard_id());
        if !batch.hand_out() {
            // Its lease is ending: the next owner delivers it.
            next = pool.next_in_lane(&shard);
            continue;
        }
        if !batch.is_empty() {
            consumer
                .config()
                .stats()
                .records_delivered(&shard, batch.len());
        }
        let marker = batch.processed_marker();
        let first = batch
            .records()
            .first()
            .map(|r| r.sequence_number().to_owned())
            .unwrap_or_default();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(batch)));
        match outcome {
            Ok(Ok(())) => marker.mark(),
            Ok(Err(error)) => {
                pool.drop_lane(&shard);
                pool.end(Ending::Failed(ProcessError::Handler {
                    shard_id: shard.to_string(),
                    sequence_number: first,
                    error,
                }));
                return;
            }
            Err(panic) => {
                pool.drop_lane(&shard);
                pool.end(Ending::Panicked(panic));
                return;
            }
        }
        next = pool.next_in_lane(&shard);
    }
}
