//! What a running consumer can say about itself between records: [`Health`].
//!
//! Transient trouble — a throttled call, a DynamoDB blip, a shard that is being retried —
//! never reaches the record iterator (only errors that end consumption do). It is logged,
//! passed to [`Stats::error_reported`](crate::Stats::error_reported) and counted here, so a
//! supervisor can see it without the `for` loop having to handle it.

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
}

impl HealthState {
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
