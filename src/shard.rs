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

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender, TryRecvError, TrySendError};

use crate::aggregate;
use crate::bridge::Bridge;
use crate::checkpoints::{Capture, LeaseState, Leases, Owner, WriteError};
use crate::config::{Config, InitialPosition};
use crate::error::{Error, ErrorKind, Result};
use crate::fanout::FanOut;
use crate::health::HealthState;
use crate::record::{Record, RecordParts};
use crate::retry::Backoff;
use crate::source::{Batch, Polling, RecordSource, ShardRef, SourceError, StartAt, Waited};
use crate::tables::Names;
use crate::watermark::{AggregatePart, Checkpoint, Partial, ShardProgress};

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

/// Where the library's threads report errors. A fatal error goes to the caller's
/// iterator through a channel of its own (the first one wins: it ends consumption);
/// anything else is counted in [`HealthState`] and passed to
/// [`Stats::error_reported`](crate::Stats::error_reported), never to the iterator.
#[derive(Debug, Clone)]
pub(crate) struct Notices {
    fatal: Sender<Error>,
    stats: Arc<dyn crate::stats::Stats>,
    health: Arc<HealthState>,
}

impl Notices {
    pub(crate) fn new(
        fatal: Sender<Error>,
        stats: Arc<dyn crate::stats::Stats>,
        health: Arc<HealthState>,
    ) -> Self {
        Notices {
            fatal,
            stats,
            health,
        }
    }

    pub(crate) fn report(&self, error: Error) {
        // STS refusing the role, or the fan-out consumer gone or forbidden, stops every
        // shard of this client: it ends the consumer at once, in its own words, rather
        // than after shards fail in turn.
        let error = if matches!(
            error.kind(),
            ErrorKind::AssumeRoleFailed
                | ErrorKind::NoSuchConsumer
                | ErrorKind::ConsumerNotActive
                | ErrorKind::ConsumerAccessDenied
        ) {
            error.fatal()
        } else {
            error
        };
        if error.is_fatal() {
            self.health.set_running(false);
            if let Err(e) = self.fatal.try_send(error) {
                log::debug!("a fatal error is already pending; also: {}", e.into_inner());
            }
        } else {
            self.health.record(&error);
            self.stats.error_reported(&error);
        }
    }

    pub(crate) fn health(&self) -> &HealthState {
        &self.health
    }

    pub(crate) fn shared_health(&self) -> Arc<HealthState> {
        Arc::clone(&self.health)
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
    pub(crate) records: Sender<Record>,
    /// The byte bound on the records channel.
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
}

/// The read side of a shard: its source, the batch being handed over, at most one
/// prefetched batch, and the fetch schedule.
///
/// Memory stays within one batch's worth of records per shard: a prefetch happens only
/// once the current batch is at most half delivered, and asks for no more records than
/// `max_records` minus those still waiting to be handed over.
struct Reader<'s> {
    source: &'s mut dyn RecordSource,
    shard: Arc<str>,
    stats: Arc<dyn crate::stats::Stats>,
    current: std::vec::IntoIter<aws_sdk_kinesis::types::Record>,
    /// The current batch ends the shard: nothing follows it.
    current_is_last: bool,
    next: Option<Batch>,
    /// No GetRecords before this (the throttle delay after the previous one).
    next_fetch: Instant,
    max_records: i32,
    throttle: Duration,
    /// Polling an idle shard slows down to this ([`idle_delay`]).
    idle_poll: Duration,
    /// Consecutive empty responses with nothing behind the tip.
    idle_streak: u32,
    /// Bytes (data and key) per Kinesis record fetched, smoothed; `None` before the
    /// first record: sizes the fetches ([`Reader::limit`]).
    bytes_per_record: Option<usize>,
    /// [`Config::fetch_bytes`], shared among the shards this client reads (counted in
    /// `health`).
    fetch_bytes: usize,
    health: Arc<HealthState>,
}

/// How many records a fetch may ask for: as many as fit in `share` bytes besides the
/// `waiting` records already held, at `per_record` bytes each (one, to learn the size,
/// before any is known); at least one, at most `max`.
pub(crate) fn fetch_limit(
    per_record: Option<usize>,
    share: usize,
    waiting: usize,
    max: i32,
) -> i32 {
    let Some(per) = per_record else {
        return 1;
    };
    let per = per.max(1);
    let room = share.saturating_sub(waiting.saturating_mul(per));
    i32::try_from(room / per)
        .unwrap_or(i32::MAX)
        .clamp(1, max.max(1))
}

/// The bytes per record after a batch averaging `batch` bytes: quick to grow (a run of
/// large records must not be fetched at the small ones' count), halfway back when
/// smaller.
pub(crate) fn smoothed_size(old: Option<usize>, batch: usize) -> usize {
    match old {
        None => batch,
        Some(old) => batch.max(old / 2 + batch / 2),
    }
}

/// The pause before the next GetRecords on a shard whose last `streak` responses were
/// empty and at the tip: the throttle delay for the first, then doubling up to
/// `idle_poll`. A response with records or lag (`streak` 0) goes back to the throttle.
pub(crate) fn idle_delay(throttle: Duration, idle_poll: Duration, streak: u32) -> Duration {
    if streak <= 1 {
        return throttle;
    }
    throttle
        .saturating_mul(1 << (streak - 1).min(16))
        .min(idle_poll)
        .max(throttle)
}

impl Reader<'_> {
    /// How many records the next call may ask for, with `waiting` records fetched and
    /// not yet handed over: as many as fit in this shard's share of
    /// [`Config::fetch_bytes`] at the bytes per record seen so far (one, to learn the
    /// size, before any), at least one and at most `max_records`.
    fn limit(&self, waiting: usize) -> i32 {
        let share = self.fetch_bytes / self.health.owned_shards().max(1);
        fetch_limit(self.bytes_per_record, share, waiting, self.max_records)
    }

    /// Learns the bytes per record from a fetched batch.
    fn learn_size(&mut self, batch: &Batch) {
        if batch.records.is_empty() {
            return;
        }
        let bytes: usize = batch
            .records
            .iter()
            .map(|r| r.data.as_ref().len() + r.partition_key.len())
            .sum();
        self.bytes_per_record = Some(smoothed_size(
            self.bytes_per_record,
            bytes / batch.records.len(),
        ));
    }

    /// The polling interval, once the shard has answered empty at the tip often enough
    /// for it to have backed off all the way (`None` before that).
    fn settled_idle(&self) -> Option<Duration> {
        let ceiling = self.idle_poll.max(self.throttle);
        (self.idle_streak > 0
            && idle_delay(self.throttle, self.idle_poll, self.idle_streak) >= ceiling)
            .then_some(ceiling)
    }

    fn fetch(
        &mut self,
        bridge: &Bridge,
        limit: i32,
        tick: crate::source::Tick<'_>,
    ) -> Result<Batch, SourceError> {
        if self.current.len() == 0 {
            // Free the spent batch's buffer before the next one arrives.
            self.current = Vec::new().into_iter();
        }
        let started = Instant::now();
        let probe = self.bytes_per_record.is_none();
        let result = self
            .source
            .next_batch(bridge, limit.clamp(1, self.max_records), tick);
        self.next_fetch = started + self.throttle;
        if let Ok(batch) = &result {
            self.learn_size(batch);
        }
        if self.source.pushes() {
            // Pushed records arrive when they arrive: nothing to pace.
            self.next_fetch = started;
            // An event arrived (possibly empty): not just "nothing yet".
            if let Ok(batch) = &result
                && (batch.millis_behind_latest.is_some() || batch.end_of_shard)
            {
                self.stats.records_fetched(
                    &self.shard,
                    batch.records.len(),
                    batch.millis_behind_latest,
                );
            }
            return result;
        }
        if let Ok(batch) = &result {
            let idle = batch.records.is_empty() && batch.millis_behind_latest == Some(0);
            self.idle_streak = if idle {
                self.idle_streak.saturating_add(1)
            } else {
                0
            };
            self.next_fetch = started + idle_delay(self.throttle, self.idle_poll, self.idle_streak);
            if probe && !batch.records.is_empty() {
                // The one-record call that learned the size: the sized one follows at
                // once (two calls in a throttle delay, within Kinesis' five a second).
                self.next_fetch = started;
            }
            self.stats.records_fetched(
                &self.shard,
                batch.records.len(),
                batch.millis_behind_latest,
            );
            log::debug!(
                "shard {}: fetched {} records ({:?} ms behind)",
                self.shard,
                batch.records.len(),
                batch.millis_behind_latest
            );
        }
        result
    }

    /// When a prefetch may run, if one is useful at all.
    fn prefetch_at(&self) -> Option<Instant> {
        let remaining = self.current.len();
        let half = usize::try_from(self.max_records / 2).unwrap_or(0);
        // A pushing source already holds the next batch ready (its hand-off): a
        // prefetch would only hold a third one.
        (self.next.is_none() && !self.current_is_last && remaining <= half && !self.source.pushes())
            .then_some(self.next_fetch)
    }

    /// Fetches the next batch ahead. A failure is left for the main path to meet
    /// again, with its retries and reporting.
    fn prefetch(&mut self, bridge: &Bridge, tick: crate::source::Tick<'_>) {
        let waiting = self.current.len();
        let remaining = i32::try_from(waiting).unwrap_or(self.max_records);
        let limit = (self.max_records - remaining).min(self.limit(waiting));
        match self.fetch(bridge, limit, tick) {
            Ok(batch) => self.next = Some(batch),
            Err(_) => log::debug!(
                "shard {}: prefetch failed; fetching again later",
                self.shard
            ),
        }
    }
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
        let progress = Arc::new(ShardProgress::new(
            Arc::clone(&self.ctx.shard_id),
            Arc::clone(&self.ctx.membership),
        ));
        progress.renew(self.last_write + self.lease_margin());
        let mut source: Box<dyn RecordSource> = match &self.ctx.consumer {
            Some(consumer) => Box::new(FanOut::new(
                ShardRef {
                    stream: Arc::clone(&self.ctx.stream),
                    shard: Arc::clone(&self.ctx.shard_id),
                },
                Arc::clone(consumer),
                start,
                self.ctx.config.subscription_timeout(),
            )),
            None => Box::new(Polling::new(
                Arc::clone(&self.ctx.stream),
                Arc::clone(&self.ctx.shard_id),
                start,
                Arc::clone(self.ctx.config.stats()),
            )),
        };
        let interrupt = self.consume(&progress, source.as_mut());
        // A fan-out subscription ends here, before the lease is released.
        drop(source);
        if self.ctx.abandon.load(Ordering::Acquire) {
            progress.seal();
            return ShardExit::Abandoned;
        }
        match interrupt {
            Interrupt::LeaseLost | Interrupt::LeaseExpired => {
                // Records of this lease still in the channel are dropped from here on.
                progress.stop_handing_out();
                if matches!(interrupt, Interrupt::LeaseExpired) {
                    self.hand_back_expired(&progress);
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
            // A failed release is recorded in `left_behind`, for `close()`.
            Interrupt::Stop => {
                let _ = self.release(&progress);
                ShardExit::Stopped
            }
            // Best effort: the failure is what gets reported.
            Interrupt::Failed(why) => {
                let _ = self.release(&progress);
                ShardExit::Failed(why)
            }
            Interrupt::NoSuchStream => {
                let _ = self.release(&progress);
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
                let _ = self.release(&progress);
                ShardExit::LeaseLost
            }
        }
    }

    /// Captures the lease, retrying while another client holds it. `None` if told to
    /// stop first; `Err` if the shard needs no reading or capture cannot work.
    fn capture(&mut self) -> Option<Result<StartAt, ShardExit>> {
        let ttl = self.ctx.config.lease_ttl();
        let mut backoff =
            Backoff::new(self.throttle(), Duration::from_secs(2).max(self.throttle()));
        // A version of the row this client saw go stale: the capture may take it.
        let mut stale: Option<crate::liveness::Version> = None;
        loop {
            // A client that may be counted gone takes nothing: it would only be taken
            // from it.
            if !self.ctx.membership.valid_at(Instant::now()) {
                if self.stop_within(self.throttle()) {
                    return None;
                }
                continue;
            }
            match self.leases().capture(self.shard(), ttl, stale.as_ref()) {
                Ok(Capture::Captured(found)) => {
                    log::info!(
                        "client {}: acquired the lease of shard {} (checkpoint {:?})",
                        self.ctx.owner.name,
                        self.shard(),
                        found.checkpoint
                    );
                    if let Some(wrong) = &found.repaired {
                        let e = Error::new(ErrorKind::InvalidCheckpoint).with_context(format!(
                            "shard {}: repaired its checkpoint row ({wrong})",
                            self.shard()
                        ));
                        log::warn!("{e}");
                        self.ctx.notices.report(e);
                    }
                    if let (Some(mark), false) = (&found.parked, found.finished) {
                        // Parked and not repaired since: reading it would only fail again.
                        let _ = self.leases().release(self.shard(), None);
                        return Some(Err(ShardExit::Parked(mark.clone())));
                    }
                    self.ctx.config.stats().lease_acquired(self.shard());
                    self.tell_listener("assigned", |l, shard| l.assigned(shard));
                    if found.finished {
                        // Already read to its end by some client: nothing to do.
                        let _ = self.leases().release(self.shard(), None);
                        return Some(Err(ShardExit::Finished));
                    }
                    // The row says the lease was renewed when the write was sent: a
                    // slow or retried answer must not stretch the lease past its margin.
                    self.last_write = found.sent;
                    self.next_commit = Instant::now() + self.ctx.config.commit_frequency();
                    let start = found.start;
                    let checkpoint = self.resume_unwritten(found.checkpoint, found.was_ours);
                    return Some(Ok(self.start_from(checkpoint, start)));
                }
                Ok(Capture::HeldBy {
                    holder,
                    version,
                    asked,
                }) => {
                    log::debug!(
                        "client {}: shard {} is leased by {}; waiting",
                        self.ctx.owner.name,
                        self.shard(),
                        holder.as_deref().unwrap_or("another client")
                    );
                    let liveness = Arc::clone(&self.ctx.liveness);
                    stale =
                        version.filter(|v| liveness.lease_is_stale(self.shard(), v, ttl, asked));
                    if stale.is_some() {
                        continue;
                    }
                    // Wait by reading, and write again only once the row is free or
                    // stale. A live holder told of a join releases within about a
                    // second (the fleet-change poll), else at its next shard check:
                    // poll from the throttle delay, every half second at most while a
                    // prompt handover is likely, then slowing to 2 s (or the shard
                    // check).
                    let most = self
                        .ctx
                        .config
                        .shard_check_frequency()
                        .min(Duration::from_secs(2))
                        .max(self.throttle());
                    let prompt = HANDOVER_POLL.max(self.throttle()).min(most);
                    let waiting = Instant::now();
                    let mut delay = self.throttle();
                    stale = loop {
                        if self.stop_within(delay) {
                            return None;
                        }
                        match self.leases().capturable(self.shard(), ttl, &liveness) {
                            Ok(LeaseState::Held) => {
                                let cap = if waiting.elapsed() < HANDOVER_WATCH {
                                    prompt
                                } else {
                                    most
                                };
                                delay = (delay * 2).min(cap);
                            }
                            Ok(LeaseState::Stale(v)) => break Some(v),
                            Ok(LeaseState::Free) => break None,
                            Err(WriteError::Other {
                                error,
                                transient: true,
                            }) => {
                                // Read again after a back-off; the holder's lease goes on.
                                log::warn!("{error}; retrying");
                                self.ctx.notices.report(error);
                                delay = backoff.next_delay();
                            }
                            Err(WriteError::Other { error, .. }) => {
                                let why = Failure::of(&error);
                                self.ctx.notices.report(error);
                                return Some(Err(ShardExit::Failed(why)));
                            }
                            Err(WriteError::LeaseLost) => break None,
                        }
                    };
                    continue;
                }
                Err(WriteError::Other {
                    error,
                    transient: false,
                }) => {
                    let why = Failure::of(&error);
                    self.ctx.notices.report(error);
                    return Some(Err(ShardExit::Failed(why)));
                }
                Err(WriteError::Other { error, .. }) => {
                    log::warn!("{error}; retrying");
                    // The write may have reached the table all the same (a timed-out
                    // answer): the lease may be ours.
                    if self.stop_within(backoff.next_delay()) {
                        self.give_up_uncertain_capture();
                        return None;
                    }
                    continue;
                }
                Err(WriteError::LeaseLost) => {}
            }
            if self.stop_within(backoff.next_delay()) {
                return None;
            }
        }
    }

    /// The checkpoint to start from after a capture that found `in_row`: what this
    /// client had processed when its last lease of the shard ran out unwritten, if the
    /// row is still as this client last wrote it (`was_ours`); it is written at once.
    fn resume_unwritten(&mut self, in_row: Checkpoint, was_ours: bool) -> Checkpoint {
        let Some(processed) = self.ctx.unwritten.lock().remove(self.shard()) else {
            return in_row;
        };
        if !was_ours {
            return in_row;
        }
        log::info!(
            "client {}: shard {}: the row is as this client last wrote it; going on from \
             what it had processed ({processed:?}) rather than from the row's {in_row:?}",
            self.ctx.owner.name,
            self.shard()
        );
        match self.leases().commit(self.shard(), &processed) {
            Ok(()) => self.report_commit(&processed),
            // The next commit writes a later checkpoint; until then a crash re-delivers
            // from the row's, as ever.
            Err(e) => log::warn!(
                "client {}: shard {}: writing the checkpoint {processed:?}: {e:?}",
                self.ctx.owner.name,
                self.shard()
            ),
        }
        processed
    }

    /// Told to stop after a capture whose outcome is unknown: releases the lease in case
    /// the capture took it (a no-op if it did not, the write being conditional on this
    /// client owning the row), and records a failure for `close()`.
    fn give_up_uncertain_capture(&mut self) {
        let shard = Arc::clone(&self.ctx.shard_id);
        match self.final_write(|leases| leases.release(&shard, None)) {
            Ok(()) => {
                log::info!(
                    "client {}: released the lease of shard {} (taken as the stop came)",
                    self.ctx.owner.name,
                    self.shard()
                );
                self.ctx.left_behind.lock().remove(self.shard());
            }
            Err(WriteError::LeaseLost) => {
                self.ctx.left_behind.lock().remove(self.shard());
            }
            Err(WriteError::Other { error, .. }) => {
                log::warn!("{error}; the lease, if taken, is left to expire");
                self.ctx
                    .left_behind
                    .lock()
                    .insert(Arc::clone(&self.ctx.shard_id), error.to_string());
            }
        }
    }

    /// Where reading starts for a lease whose row holds `found`, remembering what the
    /// unpacking of records needs from it.
    fn start_from(&mut self, found: Checkpoint, rewound: Option<InitialPosition>) -> StartAt {
        self.last_read.clone_from(&found.sequence_number);
        let start = match (&found.partial, &found.sequence_number) {
            // Inside an aggregate: read it again and skip what was processed.
            (Some(p), _) if self.ctx.config.deaggregation() => {
                self.skip = Some(p.clone());
                StartAt::At(p.aggregate.clone())
            }
            (_, Some(seq)) => StartAt::After(seq.clone()),
            // Not unpacking: deliver the partly processed aggregate again, whole.
            (Some(p), None) => StartAt::At(p.aggregate.clone()),
            (None, None) => {
                let position = rewound.unwrap_or_else(|| self.ctx.config.initial_position());
                if position == InitialPosition::Latest {
                    // Taken before the first iterator or subscription: the next owner
                    // may read a little more than this one did, never less.
                    self.began = Some(crate::checkpoints::start_position_value(
                        InitialPosition::AtTimestamp(SystemTime::now()),
                    ));
                }
                StartAt::Initial(position)
            }
        };
        self.checkpoint = Some(found);
        start
    }

    /// Turns one Kinesis record into the records to deliver: its user records if it is
    /// a KPL aggregate (less those processed before a restart), else itself.
    fn unpack(&mut self, r: aws_sdk_kinesis::types::Record, progress: &Arc<ShardProgress>) {
        let arrival = r
            .approximate_arrival_timestamp
            .and_then(|t| SystemTime::try_from(t).ok());
        let seq = r.sequence_number;
        // Only the first record read can be the aggregate a resumed checkpoint is in.
        let skip_through = self
            .skip
            .take()
            .filter(|p| p.aggregate == seq)
            .map(|p| p.sub_sequence_number);
        let data = r.data.into_inner();
        if self.ctx.config.deaggregation() && aggregate::is_aggregated(&data) {
            match aggregate::deaggregate(&data) {
                Ok(users) => {
                    let before: Option<Arc<str>> = self.last_read.as_deref().map(Arc::from);
                    let last = users.len() - 1;
                    for (i, user) in users.into_iter().enumerate() {
                        let sub = i as u64;
                        if skip_through.is_some_and(|k| sub <= k) {
                            continue;
                        }
                        let parts = RecordParts {
                            data: user.data,
                            partition_key: user.partition_key,
                            explicit_hash_key: user.explicit_hash_key,
                            sequence_number: seq.clone(),
                            arrival,
                            part: Some(AggregatePart {
                                sub_sequence_number: sub,
                                last: i == last,
                                before: before.clone(),
                            }),
                        };
                        self.push(parts, progress);
                    }
                    self.last_read = Some(seq);
                    return;
                }
                Err(reason) => {
                    log::warn!(
                        "shard {}: record {seq} looks like a KPL aggregate but is corrupt \
                         ({reason}); delivering it as it is",
                        self.shard()
                    );
                    self.ctx.config.stats().aggregate_corrupt(
                        self.shard(),
                        &seq,
                        &reason.to_string(),
                    );
                }
            }
        }
        let buf = self.last_read.get_or_insert_with(String::new);
        buf.clear();
        buf.push_str(&seq);
        let parts = RecordParts {
            data,
            partition_key: r.partition_key,
            explicit_hash_key: None,
            sequence_number: seq,
            arrival,
            part: None,
        };
        self.push(parts, progress);
    }

    fn push(&mut self, parts: RecordParts, progress: &Arc<ShardProgress>) {
        let record = Record::new(parts, Arc::clone(progress), self.next_index);
        self.next_index += 1;
        self.unpacked.push_back(record);
    }

    fn consume(
        &mut self,
        progress: &Arc<ShardProgress>,
        source: &mut dyn RecordSource,
    ) -> Interrupt {
        let mut reader = Reader {
            source,
            shard: Arc::clone(&self.ctx.shard_id),
            stats: Arc::clone(self.ctx.config.stats()),
            current: Vec::new().into_iter(),
            current_is_last: false,
            next: None,
            next_fetch: Instant::now(),
            max_records: self.ctx.config.max_records(),
            throttle: self.throttle(),
            idle_poll: self.ctx.config.idle_poll_delay(),
            idle_streak: 0,
            bytes_per_record: None,
            fetch_bytes: self.ctx.config.fetch_bytes(),
            health: self.ctx.notices.shared_health(),
        };
        let mut backoff = Backoff::new(
            self.throttle(),
            Duration::from_secs(10).max(self.throttle()),
        );
        loop {
            if let Some(record) = self.unpacked.pop_front() {
                if let Err(i) = self.send(record, progress, &mut reader) {
                    return i;
                }
                self.delivered += 1;
                continue;
            }
            if let Some(r) = reader.current.next() {
                self.unpack(r, progress);
                continue;
            }
            if reader.current_is_last {
                // Closed shard: finish once the caller has processed its last record.
                if progress.processed_since(0).0 == self.delivered {
                    return self.finish(progress);
                }
                if let Err(i) = self.wait_until(Instant::now() + self.throttle(), progress) {
                    return i;
                }
                continue;
            }
            let batch = match reader.next.take() {
                Some(batch) => batch,
                None => {
                    // A shard settled at the tip is polled by the I/O runtime while this
                    // thread sleeps (see `RecordSource::watch`).
                    if let Some(period) = reader.settled_idle()
                        && !reader.source.pushes()
                    {
                        let first = reader.next_fetch;
                        let limit = reader.limit(0);
                        reader.source.watch(self.bridge, limit, first, period);
                    }
                    let waited = if reader.source.pushes() || reader.source.watching() {
                        self.wait_for_source(&*reader.source, progress)
                    } else {
                        self.wait_until(reader.next_fetch, progress)
                    };
                    if let Err(i) = waited {
                        return i;
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
                            batch
                        }
                        Err(SourceError::Interrupted) => {
                            return interrupted.unwrap_or(Interrupt::Stop);
                        }
                        Err(SourceError::Transient(error)) => {
                            let delay = backoff.next_delay();
                            reader.stats.retried("GetRecords", delay);
                            log::warn!("{error}; retrying in {delay:?}");
                            self.ctx.notices.report(error);
                            reader.next_fetch = Instant::now() + delay;
                            continue;
                        }
                        Err(SourceError::Fatal(error)) => {
                            log::error!("{error}");
                            let gone = error.kind() == ErrorKind::NoSuchStream;
                            let why = Failure::of(&error);
                            self.ctx.notices.report(error);
                            return if gone {
                                Interrupt::NoSuchStream
                            } else {
                                Interrupt::Failed(why)
                            };
                        }
                    }
                }
            };
            if batch.end_of_shard {
                log::info!("shard {} read to its end", self.shard());
            }
            reader.current_is_last = batch.end_of_shard;
            reader.current = batch.records.into_iter();
        }
    }

    /// Hands one record to the caller. While the channel is full it commits on
    /// schedule and, when due, prefetches the next batch, so the server's time and the
    /// decoding overlap the caller's work.
    fn send(
        &mut self,
        record: Record,
        progress: &ShardProgress,
        reader: &mut Reader<'_>,
    ) -> Result<(), Interrupt> {
        self.wait_for_marks(progress)?;
        let size = record.buffered_size();
        self.wait_for_room(size, progress)?;
        let sent = self.send_counted(record, progress, reader);
        if sent.is_err() {
            self.ctx.budget.release(size);
        }
        sent
    }

    /// Waits (committing on schedule) while `max_unmarked` records of this shard are
    /// handed out past the oldest one not yet processed.
    fn wait_for_marks(&mut self, progress: &ShardProgress) -> Result<(), Interrupt> {
        let max = self.ctx.config.max_unmarked();
        // The processed count only grows: a count read earlier is a lower bound, and the
        // progress lock is taken only when that bound alone would reach the limit.
        if self.delivered.saturating_sub(self.processed_seen) < max {
            return Ok(());
        }
        let mut warned = false;
        loop {
            self.processed_seen = progress.processed_since(u64::MAX).0;
            let outstanding = self.delivered.saturating_sub(self.processed_seen);
            if outstanding < max {
                return Ok(());
            }
            if !warned {
                log::warn!(
                    "shard {}: {outstanding} records handed out past the oldest one not yet \
                     marked processed (the bound, max_unmarked); pausing the shard until it is",
                    self.shard()
                );
                warned = true;
            }
            let deadline = self.between_waits(progress)?;
            progress.wait_for_mark(deadline);
        }
    }

    /// Between two short waits for the caller: commits on schedule, checks for a stop,
    /// and says how long the next wait may be (the stop is checked every 100 ms).
    fn between_waits(&mut self, progress: &ShardProgress) -> Result<Instant, Interrupt> {
        self.commit_if_due(progress)?;
        if !matches!(self.stop.try_recv(), Err(TryRecvError::Empty)) {
            return Err(Interrupt::Stop);
        }
        Ok(self
            .next_commit
            .min(Instant::now() + Duration::from_millis(100)))
    }

    /// Reserves `size` bytes of the buffer's byte bound, waiting (and committing on
    /// schedule) while the caller has too many bytes of records waiting.
    fn wait_for_room(&mut self, size: usize, progress: &ShardProgress) -> Result<(), Interrupt> {
        loop {
            if self.ctx.budget.try_reserve(size) {
                return Ok(());
            }
            // Woken by the caller taking records.
            let deadline = self.between_waits(progress)?;
            self.ctx.budget.wait(deadline);
        }
    }

    /// Hands one record over within the channel's record-count bound.
    fn send_counted(
        &mut self,
        record: Record,
        progress: &ShardProgress,
        reader: &mut Reader<'_>,
    ) -> Result<(), Interrupt> {
        let mut record = match self.ctx.records.try_send(record) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(_)) => return Err(Interrupt::Stop),
            Err(TrySendError::Full(r)) => r,
        };
        loop {
            self.commit_if_due(progress)?;
            let mut deadline = self.next_commit;
            if let Some(at) = reader.prefetch_at() {
                if Instant::now() >= at {
                    let bridge = self.bridge;
                    let mut interrupted = None;
                    {
                        let mut tick = || self.tick(progress, &mut interrupted);
                        reader.prefetch(bridge, &mut tick);
                    }
                    if let Some(i) = interrupted {
                        return Err(i);
                    }
                    continue;
                }
                deadline = deadline.min(at);
            }
            let mut sel = Select::new();
            let send_op = sel.send(&self.ctx.records);
            sel.recv(&self.stop);
            match sel.select_deadline(deadline) {
                Ok(op) if op.index() == send_op => {
                    return op
                        .send(&self.ctx.records, record)
                        .map_err(|_| Interrupt::Stop);
                }
                Ok(op) => {
                    let _ = op.recv(&self.stop);
                    return Err(Interrupt::Stop);
                }
                Err(_) => {
                    // Re-offer on the next round.
                    record = match self.ctx.records.try_send(record) {
                        Ok(()) => return Ok(()),
                        Err(TrySendError::Disconnected(_)) => return Err(Interrupt::Stop),
                        Err(TrySendError::Full(r)) => r,
                    };
                }
            }
        }
    }

    /// Sleeps until `deadline`, committing on schedule; `Err` on stop or a lost lease.
    fn wait_until(&mut self, deadline: Instant, progress: &ShardProgress) -> Result<(), Interrupt> {
        loop {
            self.commit_if_due(progress)?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            if self.stop_within(
                deadline
                    .min(self.next_commit)
                    .saturating_duration_since(now),
            ) {
                return Err(Interrupt::Stop);
            }
        }
    }

    /// What a source waiting on a slow Kinesis call does every [`TICK`](crate::source::TICK):
    /// commit on schedule (so a stalled read never stalls the lease) and watch for a stop.
    /// `false`, with the reason in `interrupted`, ends the wait.
    fn tick(&mut self, progress: &ShardProgress, interrupted: &mut Option<Interrupt>) -> bool {
        match self.between_waits(progress) {
            Ok(_) => true,
            Err(i) => {
                *interrupted = Some(i);
                false
            }
        }
    }

    /// Waits until a pushing or watching source has something, committing on schedule;
    /// `Err` on stop or a lost lease.
    fn wait_for_source(
        &mut self,
        source: &dyn RecordSource,
        progress: &ShardProgress,
    ) -> Result<(), Interrupt> {
        loop {
            self.commit_if_due(progress)?;
            match source.wait_ready(&self.stop, self.wake_deadline(progress)) {
                Waited::Ready => return Ok(()),
                Waited::Stop => return Err(Interrupt::Stop),
                Waited::Timeout => {}
            }
        }
    }

    /// When a thread waiting for records must next see to its lease: at the next commit
    /// slot while a write is in flight or anything handed out is unprocessed or
    /// uncommitted; otherwise — all committed, so nothing can change until records come —
    /// when the lease's heartbeat falls due or this client's membership would run out
    /// (either makes [`commit_if_due`](Worker::commit_if_due) act), never before the next
    /// commit slot.
    fn wake_deadline(&self, progress: &ShardProgress) -> Instant {
        if self.in_flight.is_some() {
            return self.next_commit;
        }
        let (processed, moved) = progress.processed_since(self.committed);
        if moved.is_some() || processed != self.delivered {
            return self.next_commit;
        }
        let heartbeat = self.last_write + self.ctx.config.shard_check_frequency();
        let until = self
            .ctx
            .membership
            .deadline()
            .map_or(heartbeat, |m| m.min(heartbeat));
        until.max(self.next_commit)
    }

    /// Commits the processed prefix if it moved, or heartbeats if the lease has not been
    /// written for a shard-check interval — without waiting for the write: reading goes
    /// on while it is in flight (one at a time), and its outcome is taken on a later call.
    /// A lease that has not been renewed for the lease time less a shard check is given
    /// up here (`Interrupt::LeaseExpired`): by then another client may own the shard, and
    /// delivering it on both would duplicate records.
    fn commit_if_due(&mut self, progress: &ShardProgress) -> Result<(), Interrupt> {
        if let Some(outcome) = self.in_flight.as_ref().and_then(|f| f.write.outcome())
            && let Some(done) = self.in_flight.take()
        {
            self.settle(done, outcome, progress)?;
        }
        let now = Instant::now();
        let unrenewed = now.duration_since(self.last_write);
        // Still lapsed, the checks below hand the lease back without waiting.
        if progress.refused()
            && self.ctx.membership.lapsed(now).is_none()
            && unrenewed < self.lease_margin()
        {
            return Err(Interrupt::Refused);
        }
        if now < self.next_commit {
            return Ok(());
        }
        self.next_commit = now + self.ctx.config.commit_frequency();
        self.report_held_back(progress, now);
        if let Some(silent) = self.ctx.membership.lapsed(now) {
            let e = Error::new(ErrorKind::LeaseLost).with_context(format!(
                "shard {}: this client's row was not written for {silent:?} (DynamoDB \
                 unreachable?); stopped delivering the shard before another client may \
                 count this one gone",
                self.shard()
            ));
            log::warn!("{e}");
            self.ctx.notices.report(e);
            return Err(Interrupt::LeaseExpired);
        }
        if unrenewed >= self.lease_margin() {
            let e = Error::new(ErrorKind::LeaseLost).with_context(format!(
                "shard {}: the lease was not renewed for {unrenewed:?} (DynamoDB unreachable?); \
                 stopped delivering the shard before another client may take it",
                self.shard()
            ));
            log::warn!("{e}");
            self.ctx.notices.report(e);
            return Err(Interrupt::LeaseExpired);
        }
        if let Some(f) = &mut self.in_flight {
            let age = now.duration_since(f.sent);
            if age
                >= self
                    .ctx
                    .config
                    .commit_frequency()
                    .max(Duration::from_secs(1))
            {
                if !std::mem::replace(&mut f.warned, true) {
                    log::warn!(
                        "shard {}: a checkpoint write has been in flight for {age:?} (lease \
                         last renewed {unrenewed:?} ago); reading goes on",
                        self.ctx.shard_id
                    );
                }
                self.ctx
                    .config
                    .stats()
                    .commit_lagging(&self.ctx.shard_id, age);
            }
            return Ok(());
        }
        let (count, checkpoint) = progress.processed_since(self.committed);
        let heartbeat_due = unrenewed >= self.ctx.config.shard_check_frequency();
        if checkpoint.is_none() && !heartbeat_due {
            return Ok(());
        }
        self.in_flight = Some(InFlight {
            write: self.leases().start_commit(
                self.shard(),
                checkpoint.as_ref(),
                self.commit_attempt(now),
            ),
            count,
            checkpoint,
            sent: now,
            warned: false,
        });
        Ok(())
    }

    /// Once per shard check, says so if a record handed out a shard check ago or more
    /// still holds the checkpoint back.
    fn report_held_back(&mut self, progress: &ShardProgress, now: Instant) {
        let check = self.ctx.config.shard_check_frequency();
        let Some(age) = progress.held_back_for().filter(|a| *a >= check) else {
            return;
        };
        if now < self.next_held_back_report {
            return;
        }
        self.next_held_back_report = now + check;
        let outstanding = self
            .delivered
            .saturating_sub(progress.processed_since(u64::MAX).0);
        log::warn!(
            "shard {}: the oldest of {outstanding} records handed out has not been processed \
             for {age:?}; the checkpoint waits for it",
            self.shard()
        );
        self.ctx
            .config
            .stats()
            .records_held_back(self.shard(), outstanding, age);
    }

    /// A commit's one attempt, sent at `now`: as long as the lease is surely still this
    /// client's. A slow DynamoDB (answers taking seconds) still renews the lease — the
    /// renewal counts from the send, however late the answer — and a write that hangs is
    /// given up in time to hand the lease back. While it is in flight the next commit
    /// slots send nothing (one write per shard at a time: they land in order).
    fn commit_attempt(&self, now: Instant) -> Duration {
        (self.last_write + self.lease_margin())
            .saturating_duration_since(now)
            .max(MIN_ATTEMPT)
    }

    /// The one attempt at handing back a lease that ran out here: short, since nothing
    /// waits on it but the shard's exit.
    fn hand_back_attempt(&self) -> Duration {
        Duration::from_secs(2)
            .max(self.ctx.config.commit_frequency())
            .min(self.ctx.config.lease_ttl() / 4)
    }

    /// How long after its last renewal a lease is still surely this client's: the lease
    /// time less one shard check.
    fn lease_margin(&self) -> Duration {
        self.ctx
            .config
            .lease_ttl()
            .saturating_sub(self.ctx.config.shard_check_frequency())
    }

    /// Takes a finished commit's outcome.
    fn settle(
        &mut self,
        done: InFlight,
        outcome: std::result::Result<(), WriteError>,
        progress: &ShardProgress,
    ) -> Result<(), Interrupt> {
        match outcome {
            Ok(()) => {
                self.committed = self.committed.max(done.count);
                // The row says the lease was renewed when the write was sent.
                self.last_write = self.last_write.max(done.sent);
                progress.renew(self.last_write + self.lease_margin());
                if let Some(c) = done.checkpoint {
                    log::debug!("shard {}: checkpoint {c:?}", self.shard());
                    self.report_commit(&c);
                    self.checkpoint = Some(c);
                }
                Ok(())
            }
            Err(WriteError::LeaseLost) => Err(Interrupt::LeaseLost),
            Err(WriteError::Other {
                error,
                transient: false,
            }) => {
                // Access denied, a wrongly keyed table, …: retrying the same write will
                // not help. The shard fails (and, failing again, ends the consumer).
                log::error!("{error}");
                let why = Failure::of(&error);
                self.ctx.notices.report(error);
                Err(Interrupt::Failed(why))
            }
            Err(WriteError::Other { error, .. }) => {
                // The lease is still ours until someone else captures it; the next
                // interval tries again.
                log::warn!("{error}");
                self.ctx.notices.report(error);
                Ok(())
            }
        }
    }

    /// Tells the stats hook about a written checkpoint.
    fn report_commit(&self, c: &Checkpoint) {
        let stats = self.ctx.config.stats();
        match (&c.partial, &c.sequence_number) {
            (Some(p), _) => {
                stats.aggregate_checkpoint_committed(
                    self.shard(),
                    &p.aggregate,
                    p.sub_sequence_number,
                );
            }
            (None, Some(seq)) => stats.checkpoint_committed(self.shard(), seq),
            (None, None) => {}
        }
    }

    fn finish(&mut self, progress: &ShardProgress) -> Interrupt {
        // Everything delivered is processed: sealing waits for nothing.
        let (_, checkpoint) = progress.drain_and_seal(Instant::now(), self.committed);
        let shard = Arc::clone(&self.ctx.shard_id);
        match self.final_write(|leases| leases.finish(&shard, checkpoint.as_ref())) {
            Ok(()) => {
                log::info!(
                    "client {}: shard {} finished and released",
                    self.ctx.owner.name,
                    self.shard()
                );
                self.ctx.config.stats().lease_released(self.shard());
                self.ctx.left_behind.lock().remove(self.shard());
                self.tell_listener("ended", |l, shard| l.ended(shard));
                Interrupt::Finished
            }
            Err(WriteError::LeaseLost) => Interrupt::LeaseLost,
            Err(WriteError::Other { error, .. }) => {
                let why = Failure::of(&error);
                self.ctx.notices.report(error);
                Interrupt::Failed(why)
            }
        }
    }

    /// A lease's last write (release or finish): transient failures are retried with
    /// back-off for up to [`FINAL_WRITE_PATIENCE`], and never once the lease may have
    /// run out. Giving up leaves the lease to go stale, and the next owner re-reads what
    /// was processed since the last commit: worth a few seconds of a DynamoDB blip.
    fn final_write(
        &mut self,
        write: impl Fn(&Leases<'_>) -> std::result::Result<(), WriteError>,
    ) -> std::result::Result<(), WriteError> {
        let deadline =
            (Instant::now() + FINAL_WRITE_PATIENCE).min(self.last_write + self.lease_margin());
        let mut backoff =
            Backoff::new(self.throttle(), Duration::from_secs(2).max(self.throttle()));
        // Each attempt, SDK retries included, ends by the deadline too: a stop during a
        // DynamoDB blackhole ends in time to say which leases it left behind.
        let bounded = self.bridge.until(deadline);
        loop {
            let leases = Leases {
                bridge: &bounded,
                ..self.leases()
            };
            match write(&leases) {
                Err(WriteError::Other {
                    error,
                    transient: true,
                }) if Instant::now() + self.throttle() < deadline => {
                    let delay = backoff
                        .next_delay()
                        .min(deadline.saturating_duration_since(Instant::now()));
                    log::warn!("{error}; retrying in {delay:?}");
                    std::thread::sleep(delay);
                }
                outcome => return outcome,
            }
        }
    }

    /// After the lease ran out here: one attempt to commit what was processed and release
    /// the lease, without waiting for the caller. Safe whoever holds the lease now: the
    /// write is conditional on this client still owning it, and if it does, no other
    /// client has started on the shard. When DynamoDB answers again (or only this
    /// client's row could not be written), the next owner then starts where this client
    /// stopped, re-delivering nothing.
    fn hand_back_expired(&mut self, progress: &ShardProgress) {
        let (_, checkpoint) = progress.drain_and_seal(Instant::now(), self.committed);
        match self.leases().release_once(
            self.shard(),
            checkpoint.as_ref(),
            self.hand_back_attempt(),
        ) {
            // Processed beyond what surely landed: kept in case this client captures
            // the shard again before anyone else writes its row.
            Err(_) if checkpoint.is_some() => {
                log::info!(
                    "client {}: could not hand back the lease of shard {}; keeping what \
                     was processed ({checkpoint:?}) in case it is captured here again",
                    self.ctx.owner.name,
                    self.shard()
                );
                if let Some(c) = checkpoint {
                    self.ctx
                        .unwritten
                        .lock()
                        .insert(Arc::clone(&self.ctx.shard_id), c);
                }
            }
            Ok(()) => log::info!(
                "client {}: handed back the lease of shard {} it could no longer renew \
                 (checkpoint {:?})",
                self.ctx.owner.name,
                self.shard(),
                checkpoint.as_ref().or(self.checkpoint.as_ref())
            ),
            Err(e) => log::debug!(
                "client {}: could not hand back the lease of shard {}: {e:?}",
                self.ctx.owner.name,
                self.shard()
            ),
        }
    }

    /// Final commit and release. Stops handing out this shard's records, gives the
    /// caller a moment to finish the ones it holds (so a clean handover re-delivers
    /// nothing), then writes ([`final_write`](Worker::final_write)).
    /// `Err` with the last failure if the lease could not be released (it then expires on
    /// its own, delaying the next owner).
    fn release(&mut self, progress: &ShardProgress) -> Result<(), String> {
        progress.stop_handing_out();
        self.tell_listener("revoking", |l, shard| l.revoking(shard));
        let deadline = Instant::now() + self.ctx.config.handover_grace();
        let (_, checkpoint) = progress.drain_and_seal(deadline, self.committed);
        self.tell_listener("revoked", |l, shard| l.revoked(shard));
        let shard = Arc::clone(&self.ctx.shard_id);
        match self.final_write(|leases| leases.release(&shard, checkpoint.as_ref())) {
            Ok(()) => {
                log::info!(
                    "client {}: released the lease of shard {} (checkpoint {:?})",
                    self.ctx.owner.name,
                    self.shard(),
                    checkpoint.as_ref().or(self.checkpoint.as_ref())
                );
                if let Some(c) = &checkpoint {
                    self.report_commit(c);
                }
                self.ctx.config.stats().lease_released(self.shard());
                self.ctx.left_behind.lock().remove(self.shard());
                Ok(())
            }
            Err(WriteError::LeaseLost) => {
                self.ctx.config.stats().lease_lost(self.shard());
                self.ctx.left_behind.lock().remove(self.shard());
                Ok(())
            }
            Err(WriteError::Other { error, .. }) => {
                log::warn!("{error}; leaving the lease to expire");
                if let Some(c) = checkpoint {
                    // Kept in case this client captures the shard again first.
                    self.ctx
                        .unwritten
                        .lock()
                        .insert(Arc::clone(&self.ctx.shard_id), c);
                }
                let last = error.to_string();
                self.ctx
                    .left_behind
                    .lock()
                    .insert(Arc::clone(&self.ctx.shard_id), last.clone());
                Err(last)
            }
        }
    }
}

/// While a held lease is likely to be handed over promptly (a join announced, the holder
/// polling for it every second), it is read this often...
const HANDOVER_POLL: Duration = Duration::from_millis(500);
/// ...for this long; then less often.
const HANDOVER_WATCH: Duration = Duration::from_secs(4);

/// The shortest attempt a write is given.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// How long a lease's last write retries transient failures.
const FINAL_WRITE_PATIENCE: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_are_sized_to_the_share_of_bytes_from_the_sizes_seen() {
        const MIB: usize = 1 << 20;
        // Before any record: one, to learn the size.
        assert_eq!(fetch_limit(None, 2 * MIB, 0, 10_000), 1);
        // 1 MiB records, a 2 MiB share: two at a time, one while one waits, never zero.
        assert_eq!(fetch_limit(Some(MIB), 2 * MIB, 0, 10_000), 2);
        assert_eq!(fetch_limit(Some(MIB), 2 * MIB, 1, 10_000), 1);
        assert_eq!(fetch_limit(Some(MIB), 2 * MIB, 5, 10_000), 1);
        // A record larger than the share still comes, alone.
        assert_eq!(fetch_limit(Some(10 * MIB), 2 * MIB, 0, 10_000), 1);
        // Small records: the record bound, not the bytes.
        assert_eq!(fetch_limit(Some(100), 2 * MIB, 0, 10_000), 10_000);
        assert_eq!(fetch_limit(Some(0), 2 * MIB, 0, 500), 500);
        // Sizes grow at once and shrink by halves.
        assert_eq!(smoothed_size(None, 100), 100);
        assert_eq!(smoothed_size(Some(100), MIB), MIB);
        assert_eq!(smoothed_size(Some(MIB), 100), MIB / 2 + 50);
    }

    #[test]
    fn idle_polling_backs_off_step_by_step_and_no_further_than_asked() {
        let ms = Duration::from_millis;
        let delays: Vec<Duration> = (0..6).map(|n| idle_delay(ms(250), ms(1000), n)).collect();
        assert_eq!(
            delays,
            [ms(250), ms(250), ms(500), ms(1000), ms(1000), ms(1000)]
        );
        // Off when the idle delay equals the throttle delay.
        assert_eq!(idle_delay(ms(250), ms(250), 9), ms(250));
        // A huge streak does not overflow.
        assert_eq!(idle_delay(ms(250), ms(1000), u32::MAX), ms(1000));
    }
}
