//! What a running consumer can say about itself between records: [`Health`].
//!
//! Transient trouble — a throttled call, a DynamoDB blip, a shard that is being retried —
//! never reaches the record iterator (only errors that end consumption do). It is logged,
//! passed to [`Stats::error_reported`](crate::Stats::error_reported) and counted here, so a
//! supervisor can see it without the `for` loop having to handle it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::error::Error;

/// A snapshot of a consumer's state; see [`Kinsumer::health`](crate::Kinsumer::health).
///
/// # Examples
///
/// ```no_run
/// # fn demo(consumer: &kinsumer::Kinsumer) {
/// let health = consumer.health();
/// if let Some(error) = health.last_error() {
///     eprintln!("{} shards, {} errors retried, last: {error}", health.owned_shards(), health.errors());
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Health {
    running: bool,
    stopping: bool,
    owned_shards: usize,
    errors: u64,
    last_error: Option<(SystemTime, String)>,
    buffered_bytes: usize,
    parked: Vec<ParkedShard>,
    retried: u64,
    dead_lettered: u64,
}

/// A shard this client parked: it failed the same way three times in a row (or its row
/// says another client parked it), so it is not read until its row is repaired — by
/// `kinsumer-ctl rewind` ([`Fleet::apply_rewind`](crate::Fleet::apply_rewind)), a fixed
/// `SequenceNumber`, or removing the row's `Failure` attribute. The client notices the
/// repair at its next shard check and reads the shard again, without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedShard {
    shard_id: String,
    reason: String,
    since: SystemTime,
}

impl ParkedShard {
    pub(crate) fn new(shard_id: String, reason: String, since: SystemTime) -> Self {
        ParkedShard {
            shard_id,
            reason,
            since,
        }
    }

    /// The shard's id.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// Why it was parked: the last failure, in its one-line form.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// When this client parked it.
    pub fn since(&self) -> SystemTime {
        self.since
    }
}

impl Health {
    /// Bytes of records (data and partition keys) fetched and waiting for the caller;
    /// at most [`Config::buffer_bytes`](crate::Config::buffer_bytes) (or one record, if
    /// larger).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Whether the consumer is running: [`run`](crate::Kinsumer::run) succeeded and it has
    /// neither been stopped (by [`Kinsumer::stop`](crate::Kinsumer::stop) or a
    /// [`StopHandle`](crate::StopHandle)) nor ended with a fatal error.
    pub fn is_running(&self) -> bool {
        self.running && !self.stopping
    }

    /// Whether a [`StopHandle::stop`](crate::StopHandle::stop) ended iteration and the
    /// consumer still holds its leases ([`owned_shards`](Health::owned_shards)): they are
    /// committed and released by [`Kinsumer::stop`](crate::Kinsumer::stop),
    /// [`close`](crate::Kinsumer::close) or dropping the consumer, normally right after
    /// the loop.
    pub fn is_stopping(&self) -> bool {
        self.running && self.stopping
    }

    /// How many shards this client holds leases on now (read, or — once a stop was
    /// asked for — waiting to be released).
    pub fn owned_shards(&self) -> usize {
        self.owned_shards
    }

    /// The shards this client owns but does not read, because they keep failing (see
    /// [`ParkedShard`]). Each is also logged at every shard check and reported to
    /// [`Stats::shard_parked`](crate::Stats::shard_parked).
    pub fn parked_shards(&self) -> &[ParkedShard] {
        &self.parked
    }

    /// How many times a record was delivered again after
    /// [`retry_later`](crate::Record::retry_later) so far.
    pub fn retried_records(&self) -> u64 {
        self.retried
    }

    /// How many records went to the dead-letter handler so far.
    pub fn dead_lettered_records(&self) -> u64 {
        self.dead_lettered
    }

    /// How many errors were met and retried (or worked around) so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The last such error, in its one-line form.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_ref().map(|(_, e)| e.as_str())
    }

    /// When the last error happened.
    pub fn last_error_at(&self) -> Option<SystemTime> {
        self.last_error.as_ref().map(|(t, _)| *t)
    }
}

/// What a shard this client owns is doing; see [`Kinsumer::assignment`](crate::Kinsumer::assignment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardState {
    /// Its thread is capturing the lease (or waiting for the previous owner's grace).
    Starting,
    /// Read and handed out.
    Reading,
    /// A record of it failed ([`Record::retry_later`](crate::Record::retry_later)): it is
    /// waiting out the delay before it is read again.
    Retrying,
    /// Its lease is ending (a stop, a rebalance, the shard's end): what was handed out
    /// is being processed and committed.
    Draining,
    /// Owned but not read: it kept failing (see [`ParkedShard`]).
    Parked,
}

/// A place in a shard: a record's sequence number and, for a user record of a KPL
/// aggregate, its sub-sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Position {
    /// The (Kinesis) sequence number.
    pub sequence_number: String,
    /// The index within its aggregate, for a KPL user record.
    pub sub_sequence_number: Option<u64>,
}

impl Position {
    pub(crate) fn new(sequence_number: String, sub_sequence_number: Option<u64>) -> Self {
        Position {
            sequence_number,
            sub_sequence_number,
        }
    }

    /// The last record a checkpoint covers, if it covers one.
    pub(crate) fn of_checkpoint(c: &crate::watermark::Checkpoint) -> Option<Self> {
        match (&c.partial, &c.sequence_number) {
            (Some(p), _) => Some(Position::new(
                p.aggregate.clone(),
                Some(p.sub_sequence_number),
            )),
            (None, Some(seq)) => Some(Position::new(seq.clone(), None)),
            (None, None) => None,
        }
    }
}

/// A shard this client owns, as [`Kinsumer::assignment`](crate::Kinsumer::assignment)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedShard {
    shard_id: String,
    state: ShardState,
    pub(crate) position: Option<Position>,
    pub(crate) committed: Option<Position>,
}

impl OwnedShard {
    /// The shard's id.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// What it is doing.
    pub fn state(&self) -> ShardState {
        self.state
    }

    /// The last record of it handed out under the current lease, if any.
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// The last record its durable checkpoint covers (in the checkpoint row: as read when
    /// the lease was captured, then as each commit wrote it); `None` before any.
    pub fn committed(&self) -> Option<&Position> {
        self.committed.as_ref()
    }
}

/// What the shared state knows of one owned shard.
#[derive(Debug)]
struct ShardView {
    state: ShardState,
    /// The current lease's delivery state (its last hand-out).
    progress: Option<Arc<crate::watermark::ShardProgress>>,
    committed: Option<Position>,
}

impl ShardView {
    fn new(state: ShardState) -> Self {
        ShardView {
            state,
            progress: None,
            committed: None,
        }
    }

    fn owned(&self, id: &str) -> OwnedShard {
        OwnedShard {
            shard_id: id.to_owned(),
            state: self.state,
            position: self
                .progress
                .as_ref()
                .and_then(|p| p.position())
                .map(|(seq, sub)| Position::new(seq, sub)),
            committed: self.committed.clone(),
        }
    }
}

/// The shared counters behind [`Health`], written by the library's threads.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    running: AtomicBool,
    owned_shards: AtomicUsize,
    errors: AtomicU64,
    last_error: Mutex<Option<(SystemTime, String)>>,
    parked: Mutex<Vec<ParkedShard>>,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    /// The shards this client owns (running or parked), by id.
    shards: Mutex<BTreeMap<Arc<str>, ShardView>>,
}

impl HealthState {
    /// The coordinator's view: the shards with a thread, and those parked. Shards no
    /// longer owned go; new ones start as [`ShardState::Starting`].
    pub(crate) fn sync_shards<'a>(
        &self,
        running: impl Iterator<Item = &'a Arc<str>>,
        parked: impl Iterator<Item = &'a Arc<str>>,
    ) {
        let mut shards = self.shards.lock();
        let mut keep = HashSet::new();
        for shard in running {
            keep.insert(Arc::clone(shard));
            let view = shards
                .entry(Arc::clone(shard))
                .or_insert_with(|| ShardView::new(ShardState::Starting));
            if view.state == ShardState::Parked {
                view.state = ShardState::Starting;
            }
        }
        for shard in parked {
            keep.insert(Arc::clone(shard));
            let view = shards
                .entry(Arc::clone(shard))
                .or_insert_with(|| ShardView::new(ShardState::Parked));
            view.state = ShardState::Parked;
            view.progress = None;
        }
        shards.retain(|shard, _| keep.contains(shard));
    }

    /// A shard thread captured its lease: it reads from `committed` on.
    pub(crate) fn shard_reading(
        &self,
        shard: &Arc<str>,
        progress: &Arc<crate::watermark::ShardProgress>,
        committed: Option<Position>,
    ) {
        let mut shards = self.shards.lock();
        let view = shards
            .entry(Arc::clone(shard))
            .or_insert_with(|| ShardView::new(ShardState::Reading));
        view.state = ShardState::Reading;
        view.progress = Some(Arc::clone(progress));
        view.committed = committed;
    }

    /// A shard thread's lease is now in `state`.
    pub(crate) fn set_shard_state(&self, shard: &str, state: ShardState) {
        if let Some(view) = self.shards.lock().get_mut(shard) {
            view.state = state;
        }
    }

    /// A commit of `shard` landed.
    pub(crate) fn shard_committed(&self, shard: &str, committed: Option<Position>) {
        if let Some(view) = self.shards.lock().get_mut(shard)
            && committed.is_some()
        {
            view.committed = committed;
        }
    }

    /// The current leases' delivery states, by shard.
    pub(crate) fn leases(&self) -> Vec<(String, Arc<crate::watermark::ShardProgress>)> {
        self.shards
            .lock()
            .iter()
            .filter_map(|(id, v)| v.progress.as_ref().map(|p| (id.to_string(), Arc::clone(p))))
            .collect()
    }

    /// The shards this client owns, by id.
    pub(crate) fn owned(&self) -> Vec<OwnedShard> {
        let shards = self.shards.lock();
        shards.iter().map(|(id, view)| view.owned(id)).collect()
    }

    /// The shard `shard`, if this client owns it.
    pub(crate) fn owned_one(&self, shard: &str) -> Option<OwnedShard> {
        let shards = self.shards.lock();
        shards.get_key_value(shard).map(|(id, view)| view.owned(id))
    }

    pub(crate) fn record_retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, error: &Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some((SystemTime::now(), error.to_string()));
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Release);
    }

    pub(crate) fn set_owned_shards(&self, n: usize) {
        self.owned_shards.store(n, Ordering::Relaxed);
    }

    /// How many shards this client reads now.
    pub(crate) fn owned_shards(&self) -> usize {
        self.owned_shards.load(Ordering::Relaxed)
    }

    /// Replaces the list of parked shards (the coordinator's, sorted by shard id).
    pub(crate) fn set_parked(&self, parked: Vec<ParkedShard>) {
        *self.parked.lock() = parked;
    }

    /// What the consumer's state says now; `stopping`: a stop was asked for.
    pub(crate) fn snapshot(&self, buffered_bytes: usize, stopping: bool) -> Health {
        Health {
            buffered_bytes,
            running: self.running.load(Ordering::Acquire),
            stopping,
            owned_shards: self.owned_shards.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
            parked: self.parked.lock().clone(),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}
