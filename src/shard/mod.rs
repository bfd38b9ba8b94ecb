//! The shard worker: one named thread per owned shard.
//!
//! It captures the shard's lease, reads batches from a [`RecordSource`], hands records to
//! the caller through the bounded channel (blocking when it is full: backpressure), and
//! keeps the lease alive: every commit interval it writes the processed prefix's sequence
//! number, and at least every shard-check interval it heartbeats even when nothing new
//! was processed. Everything it owns — lease, iterator, timers — lives on its own
//! thread; it shares only the [`ShardProgress`] with the caller's threads, and makes its
//! SDK calls through the consumer's [`Bridge`].
//!
//! It never ends silently: every exit (a panic included) is reported to the coordinator,
//! and failures to [`Notices`] (the health query and `Stats`; fatal ones to the caller). On a stop it hands out nothing more, waits briefly for the
//! records the caller holds, commits what was processed and releases the lease; on a
//! lost lease it stops delivering at once and writes nothing more.
//!
//! This file has the thread (spawn, handle, exit) and its loop; [`lease`] the lease
//! (capture, commits, deadlines, the last writes), [`delivery`] the hand-out to the
//! channel and the waits in between, [`reader`] the fetches and their sizes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::balance::LoadMeter;
use crate::batch::Batch;
use crate::bridge::Bridge;
use crate::checkpoints::{Leases, Owner};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::fanout::FanOut;
use crate::record::Record;
use crate::retry::Backoff;
use crate::source::{Batch as Fetched, Polling, RecordSource, ShardRef, SourceError};
use crate::tables::Names;
use crate::watermark::{Checkpoint, Partial, ShardProgress};

mod delivery;
mod lease;
mod reader;
mod retry;

use crate::notices::Notices;
use reader::Reader;

/// How a shard thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ShardExit {
    /// Told to stop; the lease was released, never captured, or (if the release failed)
    /// recorded as left behind.
    Stopped,
    /// Another client owns the shard now.
    LeaseLost,
    /// Read to its end and fully processed; marked `Finished`.
    Finished,
    /// Could not go on, with an error that retrying the same call will not fix;
    /// reported, lease released if possible.
    Failed(Failure),
    /// Its row carries a failure mark still in effect (another client, or this one, parked
    /// the shard and the row was not repaired since): released without reading.
    Parked(crate::checkpoints::FailureMark),
    /// The stream (or this shard) does not exist any more.
    NoSuchStream,
    /// Simulated crash: left without writing anything.
    Abandoned,
}

/// Why a shard thread failed, for the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The error, in its one-line form.
    pub(crate) why: String,
    /// Whether it concerns the whole client ([`Error::concerns_whole_client`]), not just
    /// this shard.
    pub(crate) client_wide: bool,
}

impl Failure {
    pub(crate) fn of(error: &Error) -> Self {
        Failure {
            why: error.to_string(),
            client_wide: error.concerns_whole_client(),
        }
    }

    /// A failure of this shard only (a panic while handling it).
    pub(crate) fn local(why: String) -> Self {
        Failure {
            why,
            client_wide: false,
        }
    }
}

/// What the coordinator hands a new shard thread.
#[derive(Debug)]
pub(crate) struct ShardContext {
    pub(crate) shard_id: Arc<str>,
    pub(crate) stream: Arc<str>,
    pub(crate) names: Arc<Names>,
    pub(crate) owner: Arc<Owner>,
    pub(crate) config: Config,
    pub(crate) bridge: Bridge,
    pub(crate) records: Sender<Batch>,
    /// The record and byte bound on the records channel.
    pub(crate) budget: Arc<crate::budget::Budget>,
    /// What this client has seen of the fleet's rows.
    pub(crate) liveness: Arc<crate::liveness::Liveness>,
    /// Until when this client is surely still counted in the fleet.
    pub(crate) membership: Arc<crate::membership::Membership>,
    pub(crate) notices: Notices,
    pub(crate) exits: Sender<(Arc<str>, ShardExit)>,
    /// Set before a simulated crash: exit without releasing or committing.
    pub(crate) abandon: Arc<AtomicBool>,
    /// Leases this client failed to release, and why (for `close`); an entry goes when
    /// the shard is released or finished later, or lost.
    pub(crate) left_behind: Arc<parking_lot::Mutex<std::collections::HashMap<Arc<str>, String>>>,
    /// The enhanced fan-out consumer to read through (polling if `None`).
    pub(crate) consumer: Option<Arc<str>>,
    /// What was processed of leases that ran out here before it could be written (a
    /// DynamoDB outage): if this client captures the shard again and the row is still
    /// as it last wrote it, reading goes on from there instead of re-delivering it.
    pub(crate) unwritten: Arc<parking_lot::Mutex<std::collections::HashMap<Arc<str>, Checkpoint>>>,
}

/// The coordinator's handle on a running shard thread.
#[derive(Debug)]
pub(crate) struct ShardHandle {
    /// Dropping it tells the thread to stop.
    stop: Option<Sender<()>>,
    join: JoinHandle<()>,
}

impl ShardHandle {
    /// Asks the thread to stop; it releases its lease and reports its exit.
    pub(crate) fn request_stop(&mut self) {
        self.stop = None;
    }

    pub(crate) fn join(self) {
        if self.join.join().is_err() {
            log::error!("a shard thread panicked");
        }
    }
}

/// Starts the shard's thread.
pub(crate) fn spawn(ctx: ShardContext) -> Result<ShardHandle> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let name = format!("kinsumer-shard-{}", ctx.shard_id);
    let join = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let bridge = ctx.bridge.clone();
            let shard = Arc::clone(&ctx.shard_id);
            let exits = ctx.exits.clone();
            let notices = ctx.notices.clone();
            // A panic (in a user's `Stats` method, say) must not leave the shard unread:
            // it is reported as a failure, and the coordinator restarts the shard.
            let run = std::panic::AssertUnwindSafe(|| Worker::new(ctx, &bridge, stop_rx).run());
            let exit = std::panic::catch_unwind(run).unwrap_or_else(|panic| {
                let why = format!(
                    "the thread of shard {shard} panicked: {}",
                    panic_message(&*panic)
                );
                log::error!("{why}");
                notices.report(Error::new(ErrorKind::Internal).with_context(why.clone()));
                ShardExit::Failed(Failure::local(why))
            });
            let _ = exits.send((shard, exit));
        })
        .map_err(|e| {
            Error::new(ErrorKind::Internal)
                .with_context(format!("starting thread {name}"))
                .with_source(e)
        })?;
    Ok(ShardHandle {
        stop: Some(stop_tx),
        join,
    })
}

/// The text of a panic's payload, if it has one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Why the consume loop ended.
enum Interrupt {
    Stop,
    LeaseLost,
    /// Not renewed for nearly the lease time, or this client's row not for nearly the
    /// failover time: given up locally.
    LeaseExpired,
    Finished,
    Failed(Failure),
    NoSuchStream,
    /// A record was refused hand-out (the lease or the membership had lapsed) and both
    /// were renewed since: this lease's delivery is over; it is drained and given up.
    Refused,
    /// The caller asked for a record again ([`Record::retry_later`]): the shard is read
    /// again from its processed prefix.
    Retry,
}

struct Worker<'a> {
    ctx: ShardContext,
    bridge: &'a Bridge,
    stop: Receiver<()>,
    /// Records handed to the channel so far.
    delivered: u64,
    /// Records unpacked but not yet handed over (the rest of an aggregate).
    unpacked: VecDeque<Record>,
    /// Index the next unpacked record gets.
    next_index: u64,
    /// On resuming inside an aggregate: its user records already processed.
    skip: Option<Partial>,
    /// The last Kinesis record read (or the checkpoint the lease started from): what an
    /// aggregate read next checkpoints at until it is processed in full.
    last_read: Option<String>,
    /// Processed-prefix length covered by the last successful commit.
    committed: u64,
    /// The checkpoint in the table (for logs).
    checkpoint: Option<Checkpoint>,
    next_commit: Instant,
    /// When the last successful write to the lease (capture or commit) was sent.
    last_write: Instant,
    /// The commit in flight, if any.
    in_flight: Option<InFlight>,
    /// No report of held-back records before this.
    next_held_back_report: Instant,
    /// The processed-prefix length last read (a lower bound of the current one).
    processed_seen: u64,
    /// For a lease that started at LATEST without a checkpoint: when reading began, as
    /// the row's `StartPosition` (AT_TIMESTAMP), kept there until a checkpoint is.
    began: Option<String>,
    /// Whether a batch saying the shard ended was handed over, and how.
    end_told: EndTold,
    /// Records of this lease that failed and are read again, with their attempts.
    failures: Vec<retry::Failed>,
    /// After a retry: the index of the first record read again, until it is processed
    /// (fetches are small meanwhile).
    probe: Option<u64>,
    /// The row's checkpoint when the lease was captured, and the position a rewind left
    /// in it: where a retry reads again if nothing of the lease was processed.
    lease_start: Option<(Checkpoint, Option<crate::InitialPosition>)>,
    /// This shard's load, published with each commit for the leader's balancing.
    load: LoadMeter,
}

/// How a closed shard's end was told to the caller.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum EndTold {
    NotYet,
    /// With its last records: their marks say it was processed.
    WithRecords,
    /// In a batch of its own, without records: its own mark says it was processed.
    Alone,
}

/// A commit sent and not yet answered.
struct InFlight {
    write: crate::checkpoints::PendingWrite,
    /// The processed-prefix length it covers.
    count: u64,
    checkpoint: Option<Checkpoint>,
    sent: Instant,
    /// Its lag was logged.
    warned: bool,
}

impl<'a> Worker<'a> {
    fn new(ctx: ShardContext, bridge: &'a Bridge, stop: Receiver<()>) -> Self {
        let now = Instant::now();
        Worker {
            next_commit: now + ctx.config.commit_frequency(),
            ctx,
            bridge,
            stop,
            delivered: 0,
            unpacked: VecDeque::new(),
            next_index: 0,
            skip: None,
            last_read: None,
            committed: 0,
            checkpoint: None,
            last_write: now,
            in_flight: None,
            next_held_back_report: now,
            processed_seen: 0,
            began: None,
            end_told: EndTold::NotYet,
            failures: Vec::new(),
            probe: None,
            lease_start: None,
            load: LoadMeter::new(now, None),
        }
    }

    fn leases(&self) -> Leases<'_> {
        Leases {
            bridge: self.bridge,
            table: &self.ctx.names.checkpoints,
            owner: &self.ctx.owner,
            began: self
                .began
                .as_deref()
                .filter(|_| self.checkpoint.as_ref().is_none_or(Checkpoint::is_empty)),
        }
    }

    /// Calls the user's [`ShardListener`](crate::ShardListener): a panic in it is
    /// reported and does not end the shard's thread, so a lease is still released (a
    /// hand-over does not wait for it to expire).
    fn tell_listener(&self, event: &str, call: impl FnOnce(&dyn crate::ShardListener, &str)) {
        let listener = self.ctx.config.listener().as_ref();
        let shard = self.shard();
        let called =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(listener, shard)));
        if let Err(panic) = called {
            let e = Error::new(ErrorKind::Internal).with_context(format!(
                "shard {shard}: the shard listener panicked in `{event}`: {}",
                panic_message(&*panic)
            ));
            log::error!("{e}");
            self.ctx.notices.report(e);
        }
    }

    fn shard(&self) -> &str {
        &self.ctx.shard_id
    }

    fn throttle(&self) -> Duration {
        self.ctx.config.throttle_delay()
    }

    /// Waits up to `d`; `true` if told to stop meanwhile.
    fn stop_within(&self, d: Duration) -> bool {
        !matches!(self.stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
    }

    fn run(mut self) -> ShardExit {
        let Some(start) = self.capture() else {
            return ShardExit::Stopped;
        };
        let start = match start {
            Ok(start) => start,
            Err(exit) => return exit,
        };
        let progress = ShardProgress::new(
            Arc::clone(&self.ctx.shard_id),
            Arc::clone(&self.ctx.membership),
        );
        #[cfg(feature = "metrics")]
        let meter = self
            .ctx
            .config
            .meters()
            .map(|m| m.shard(&self.ctx.shard_id));
        #[cfg(feature = "metrics")]
        let progress = progress.with_meter(meter.clone());
        let progress = Arc::new(progress);
        #[cfg(feature = "metrics")]
        if let Some(meter) = &meter {
            meter.attach(&progress);
        }
        progress.renew(self.last_write + self.lease_margin());
        self.ctx.notices.health().shard_reading(
            &self.ctx.shard_id,
            &progress,
            self.checkpoint
                .as_ref()
                .and_then(crate::health::Position::of_checkpoint),
        );
        let mut source = self.source_from(start);
        let interrupt = loop {
            match self.consume(&progress, source.as_mut()) {
                // A record failed: read again from the processed prefix, with a new
                // source (a fan-out subscription ends first).
                Interrupt::Retry => {
                    drop(source);
                    match self.rewind(&progress) {
                        Ok(at) => source = self.source_from(at),
                        Err(interrupt) => break interrupt,
                    }
                }
                interrupt => {
                    // A fan-out subscription ends here, before the lease is released.
                    drop(source);
                    break interrupt;
                }
            }
        };
        let exit = self.end(interrupt, &progress);
        progress.lease_over();
        exit
    }

    /// The source that reads the shard from `start`: a fan-out subscription, or polling.
    fn source_from(&self, start: crate::source::StartAt) -> Box<dyn RecordSource> {
        match &self.ctx.consumer {
            Some(consumer) => Box::new(FanOut::new(
                ShardRef {
                    stream: Arc::clone(&self.ctx.stream),
                    shard: Arc::clone(&self.ctx.shard_id),
                },
                Arc::clone(consumer),
                start,
                self.ctx.config.subscription_timeout(),
                Arc::clone(self.ctx.config.stats()),
            )),
            None => Box::new(Polling::new(
                Arc::clone(&self.ctx.stream),
                Arc::clone(&self.ctx.shard_id),
                start,
                Arc::clone(self.ctx.config.stats()),
            )),
        }
    }

    /// Ends the lease the way `interrupt` says: released (after a stop, a failure, a
    /// refused hand-out), handed back or let go (lost, expired), or left as a crash
    /// leaves it.
    fn end(&mut self, interrupt: Interrupt, progress: &Arc<ShardProgress>) -> ShardExit {
        self.ctx
            .notices
            .health()
            .set_shard_state(self.shard(), crate::health::ShardState::Draining);
        if self.ctx.abandon.load(Ordering::Acquire) {
            progress.seal();
            return ShardExit::Abandoned;
        }
        match interrupt {
            Interrupt::LeaseLost | Interrupt::LeaseExpired => {
                // Records of this lease still in the channel are dropped from here on.
                progress.stop_handing_out();
                if matches!(interrupt, Interrupt::LeaseExpired) {
                    self.hand_back_expired(progress);
                }
                progress.seal();
                self.ctx.left_behind.lock().remove(self.shard());
                log::info!(
                    "client {}: lost the lease of shard {}",
                    self.ctx.owner.name,
                    self.shard()
                );
                self.ctx.config.stats().lease_lost(self.shard());
                self.tell_listener("lost", |l, shard| l.lost(shard));
                ShardExit::LeaseLost
            }
            Interrupt::Finished => ShardExit::Finished,
            // A failed release is recorded in `left_behind`, for `close()`. (A retry is
            // acted on in `run`; it never ends a lease.)
            Interrupt::Stop | Interrupt::Retry => {
                let _ = self.release(progress);
                ShardExit::Stopped
            }
            // Best effort: the failure is what gets reported.
            Interrupt::Failed(why) => {
                let _ = self.release(progress);
                ShardExit::Failed(why)
            }
            Interrupt::NoSuchStream => {
                let _ = self.release(progress);
                ShardExit::NoSuchStream
            }
            Interrupt::Refused => {
                log::warn!(
                    "client {}: shard {}: a record was not handed out because the lease or \
                     this client's membership had lapsed (renewed since, too late); giving \
                     the lease up: whoever captures it next delivers from the checkpoint",
                    self.ctx.owner.name,
                    self.shard()
                );
                let _ = self.release(progress);
                ShardExit::LeaseLost
            }
        }
    }

    fn consume(
        &mut self,
        progress: &Arc<ShardProgress>,
        source: &mut dyn RecordSource,
    ) -> Interrupt {
        let mut reader = Reader::new(
            source,
            &self.ctx,
            self.throttle(),
            self.ctx.notices.shared_health(),
        );
        let mut backoff = Backoff::new(
            self.throttle(),
            Duration::from_secs(10).max(self.throttle()),
        );
        let cap = self.ctx.config.batch_records();
        if self.probe.is_some() {
            reader.probe_cap = Some(retry::PROBE_RECORDS);
        }
        loop {
            if progress.retry_pending() {
                return Interrupt::Retry;
            }
            self.end_probe(progress, &mut reader);
            while self.unpacked.len() < cap
                && let Some(r) = reader.current.next()
            {
                if let Err(i) = self.unpack(r, progress) {
                    return i;
                }
            }
            if !self.unpacked.is_empty() {
                match self.send(cap, progress, &mut reader) {
                    Ok(n) => self.delivered += n,
                    Err(i) => return i,
                }
                continue;
            }
            if reader.current_is_last {
                // The read that found the end brought no records: a batch without
                // records tells `batches()` and `process()` (`records()` skips it).
                if self.end_told == EndTold::NotYet {
                    self.end_told = EndTold::Alone;
                    let end = Batch::end_of_shard(
                        Arc::clone(progress),
                        reader.current_millis,
                        self.next_index,
                    );
                    if let Err(i) = self.send_counted(end, progress, &mut reader) {
                        return i;
                    }
                }
                // Closed shard: finish once the caller has processed its last record,
                // and the batch that told the end (if it came without records).
                if progress.processed_since(0).0 == self.delivered
                    && (self.end_told == EndTold::WithRecords || progress.end_processed())
                {
                    return self.finish(progress);
                }
                if let Err(i) = self.wait_until(Instant::now() + self.throttle(), progress) {
                    return i;
                }
                continue;
            }
            let batch = match reader.next.take() {
                Some(batch) => batch,
                None => match self.fetch_next(&mut reader, progress, &mut backoff) {
                    Ok(Some(batch)) => batch,
                    Ok(None) => continue,
                    Err(i) => return i,
                },
            };
            if batch.end_of_shard {
                log::info!("shard {} read to its end", self.shard());
            }
            let (records, bytes) = reader.take_fetched();
            self.load.fetched(records, bytes);
            reader.current_is_last = batch.end_of_shard;
            reader.current_millis = batch.millis_behind_latest;
            reader.current = batch.records.into_iter();
        }
    }

    /// Waits until the next fetch is due (or the source has records), then fetches.
    /// `Ok(None)`: a transient failure, reported, with the next try scheduled.
    fn fetch_next(
        &mut self,
        reader: &mut Reader<'_>,
        progress: &ShardProgress,
        backoff: &mut Backoff,
    ) -> Result<Option<Fetched>, Interrupt> {
        // A shard settled at the tip is polled by the I/O runtime while this thread
        // sleeps (see `RecordSource::watch`).
        if let Some(period) = reader.settled_idle()
            && !reader.source.pushes()
        {
            let first = reader.next_fetch;
            let limit = reader.limit(0);
            reader.source.watch(self.bridge, limit, first, period);
        }
        if reader.source.pushes() || reader.source.watching() {
            self.wait_for_source(&*reader.source, progress)?;
        } else {
            self.wait_until(reader.next_fetch, progress)?;
        }
        let (bridge, limit) = (self.bridge, reader.limit(0));
        let mut interrupted = None;
        let fetched = {
            let mut tick = || self.tick(progress, &mut interrupted);
            reader.fetch(bridge, limit, &mut tick)
        };
        match fetched {
            Ok(batch) => {
                backoff.reset();
                Ok(Some(batch))
            }
            Err(SourceError::Interrupted) => Err(interrupted.unwrap_or(Interrupt::Stop)),
            Err(SourceError::Transient(error)) => {
                let delay = backoff.next_delay();
                let operation = if reader.source.pushes() {
                    "SubscribeToShard"
                } else {
                    "GetRecords"
                };
                if error.aws_code().is_some_and(crate::retry::is_throttling) {
                    reader.stats.throttled(self.shard(), operation);
                }
                reader.stats.retried(operation, delay);
                log::warn!("{error}; retrying in {delay:?}");
                self.ctx.notices.report(error);
                reader.next_fetch = Instant::now() + delay;
                Ok(None)
            }
            Err(SourceError::Fatal(error)) => {
                log::error!("{error}");
                let gone = error.kind() == ErrorKind::NoSuchStream;
                let why = Failure::of(&error);
                self.ctx.notices.report(error);
                Err(if gone {
                    Interrupt::NoSuchStream
                } else {
                    Interrupt::Failed(why)
                })
            }
        }
    }
}
