//! What the `metrics` feature measures, collected without ever waiting on an exporter.
//!
//! The library's threads only add to plain numbers: the per-record figures (records and
//! bytes handed out, delivery lag, processing time) go into the lease's
//! [`ShardProgress`](crate::watermark::ShardProgress) under the lock a hand-out or a mark
//! takes anyway, as a [`Flow`]; the rarer events (reads, throttles, commits, lease moves,
//! errors) into a [`ShardMeter`]'s atomics through the [`Stats`] hooks. One thread per
//! consumer, [`export`], takes these every [`EXPORT_PERIOD`] and passes them to the
//! `metrics` facade — so an exporter that is slow, or blocks, holds up only that thread,
//! never a shard thread, the caller or the I/O thread. Time histograms are kept in
//! [`LogHistogram`] buckets (within 12 % of the value) and handed over as one
//! `record_many` per bucket.

pub(crate) mod export;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::ErrorKind;
use crate::stats::Stats;
use crate::watermark::ShardProgress;

/// How often the export thread passes what was measured to the `metrics` facade.
pub(crate) const EXPORT_PERIOD: Duration = Duration::from_secs(1);

/// Samples per histogram and shard handed to the recorder per export, at most.
pub(crate) const SAMPLES_PER_EXPORT: u32 = 256;

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 2;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two kept apart; larger values share the last (2^40 µs is 12 days).
const OCTAVES: u32 = 41;
/// Bucket 0 holds zeros.
const BUCKETS: usize = 1 + (OCTAVES as usize) * (SUB as usize);

/// The bucket of `value`: zero alone, then four per power of two.
fn bucket_of(value: u64) -> usize {
    if value == 0 {
        return 0;
    }
    let octave = (63 - value.leading_zeros()).min(OCTAVES - 1);
    let value = value.min((1 << OCTAVES) - 1);
    let sub = ((value << SUB_BITS) >> octave) & (SUB - 1);
    1 + (octave as usize) * (SUB as usize) + sub as usize
}

/// The value a bucket stands for: exact below 4, else the middle of its range.
fn value_of(bucket: usize) -> f64 {
    if bucket == 0 {
        return 0.0;
    }
    let octave = ((bucket - 1) / SUB as usize) as i32;
    let sub = ((bucket - 1) % SUB as usize) as f64;
    let low = (SUB as f64 + sub) * 2f64.powi(octave) / SUB as f64;
    if octave < SUB_BITS as i32 {
        low
    } else {
        low + 2f64.powi(octave) / SUB as f64 / 2.0
    }
}

/// Counts per logarithmic bucket, filled under a lock its owner already holds.
#[derive(Debug, Clone)]
pub(crate) struct LogHistogram {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl LogHistogram {
    pub(crate) fn record(&mut self, value: u64) {
        let b = bucket_of(value);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.total += 1;
    }

    pub(crate) fn merge(&mut self, other: &LogHistogram) {
        if other.total == 0 {
            return;
        }
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total += other.total;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Each non-empty bucket: the value it stands for and its count.
    pub(crate) fn buckets(&self) -> impl Iterator<Item = (f64, u32)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(b, n)| (value_of(b), *n))
    }

    /// At most `limit` samples standing for all of them (every one when there are no
    /// more): each bucket's count scaled by the same factor, the fractions carried from
    /// bucket to bucket (systematic sampling, so the mean and the quantiles hold). A
    /// recorder's histogram takes each sample one by one, so what it is given per export
    /// must not grow with the record rate.
    pub(crate) fn sampled(&self, limit: u32) -> Vec<(f64, u32)> {
        let total = self.total;
        if total <= u64::from(limit) {
            return self.buckets().collect();
        }
        let scale = f64::from(limit) / total as f64;
        let mut carry = 0.5;
        let mut out = Vec::new();
        for (value, n) in self.buckets() {
            carry += f64::from(n) * scale;
            let take = carry.floor();
            carry -= take;
            if take >= 1.0 {
                out.push((value, take as u32));
            }
        }
        out
    }
}

/// A histogram its writers reach through shared references (rare events: one sample per
/// read), one atomic count per bucket.
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    counts: Box<[AtomicU32; BUCKETS]>,
    total: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            counts: Box::new(std::array::from_fn(|_| AtomicU32::new(0))),
            total: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    fn record(&self, value: u64) {
        self.counts[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// What was recorded since the last take.
    fn take(&self) -> LogHistogram {
        let mut out = LogHistogram::default();
        if self.total.swap(0, Ordering::Relaxed) == 0 {
            return out;
        }
        for (o, c) in out.counts.iter_mut().zip(self.counts.iter()) {
            *o = c.swap(0, Ordering::Relaxed);
            out.total += u64::from(*o);
        }
        out
    }
}

/// What a lease's hand-outs and marks measured since the export thread last took it
/// (kept in the lease's progress state, under its lock).
#[derive(Debug, Clone, Default)]
pub(crate) struct Flow {
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    /// Approximate arrival to hand-out, in microseconds: one sample per hand-out (a record
    /// from `records()`, a batch from `batches()` and `process`, taken at its first
    /// record, the oldest).
    pub(crate) lag_us: LogHistogram,
    /// Hand-out to processed, in microseconds: one sample per mark that moves the
    /// processed prefix, from the hand-out of the oldest record it completes.
    pub(crate) processing_us: LogHistogram,
}

impl Flow {
    fn merge(&mut self, other: &Flow) {
        self.records += other.records;
        self.bytes += other.bytes;
        self.lag_us.merge(&other.lag_us);
        self.processing_us.merge(&other.processing_us);
    }
}

/// One shard's figures in this client, kept across its leases.
#[derive(Debug, Default)]
pub(crate) struct ShardMeter {
    /// The current lease's progress, whose [`Flow`] the export thread takes.
    live: Mutex<Option<Weak<ShardProgress>>>,
    /// Flows of leases whose progress is gone, not yet exported.
    spilled: Mutex<Flow>,
    owned: AtomicBool,
    /// `millis_behind_latest` of the last read that told it; -1 before one did.
    behind_ms: AtomicI64,
    /// The load last published (`f64` bits); `u64::MAX` before one was.
    load: AtomicU64,
    pub(crate) counts: Counts,
    batch_records: AtomicHistogram,
}

/// Event counts since the export thread last took them.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) fetched: AtomicU64,
    /// Reads answered: GetRecords responses and fan-out events.
    pub(crate) reads: AtomicU64,
    pub(crate) get_records: AtomicU64,
    pub(crate) subscribe: AtomicU64,
    pub(crate) throttles: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
    pub(crate) commits_lagging: AtomicU64,
    pub(crate) acquired: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) iterators_renewed: AtomicU64,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn take(counter: &AtomicU64) -> u64 {
    counter.swap(0, Ordering::Relaxed)
}

impl ShardMeter {
    pub(crate) fn new() -> Self {
        ShardMeter {
            behind_ms: AtomicI64::new(-1),
            load: AtomicU64::new(u64::MAX),
            ..ShardMeter::default()
        }
    }

    /// `progress` is the shard's new lease.
    pub(crate) fn attach(&self, progress: &Arc<ShardProgress>) {
        *self.live.lock() = Some(Arc::downgrade(progress));
    }

    /// A lease's progress is dropped: keep what it measured for the next export.
    pub(crate) fn spill(&self, flow: &Flow) {
        if flow.records > 0 || !flow.lag_us.is_empty() || !flow.processing_us.is_empty() {
            self.spilled.lock().merge(flow);
        }
    }

    /// What the shard's leases measured since the last take.
    fn take_flow(&self) -> Flow {
        let live = self.live.lock().as_ref().and_then(Weak::upgrade);
        let mut flow = live.map(|p| p.take_flow()).unwrap_or_default();
        flow.merge(&std::mem::take(&mut *self.spilled.lock()));
        flow
    }
}

/// Every figure of one consumer: its shards' meters and the client-wide error counts.
#[derive(Debug)]
pub(crate) struct Meters {
    pub(crate) stream: String,
    pub(crate) application: String,
    shards: Mutex<HashMap<Arc<str>, Arc<ShardMeter>>>,
    /// Errors reported (retried or worked around), by kind and AWS error code.
    errors: Mutex<HashMap<(ErrorKind, Option<String>), u64>>,
    /// Shards this client moved by load as the leader, since the last export.
    pub(crate) moved_by_load: AtomicU64,
}

impl Meters {
    pub(crate) fn new(stream: &str, application: &str) -> Self {
        Meters {
            stream: crate::stream::name_of(stream).to_owned(),
            application: application.to_owned(),
            shards: Mutex::default(),
            errors: Mutex::default(),
            moved_by_load: AtomicU64::new(0),
        }
    }

    /// The shard's meter, made on first use.
    pub(crate) fn shard(&self, shard_id: &str) -> Arc<ShardMeter> {
        let mut shards = self.shards.lock();
        if let Some(m) = shards.get(shard_id) {
            return Arc::clone(m);
        }
        let m = Arc::new(ShardMeter::new());
        shards.insert(Arc::from(shard_id), Arc::clone(&m));
        m
    }

    fn with_shard(&self, shard_id: &str, f: impl FnOnce(&ShardMeter)) {
        let m = self.shard(shard_id);
        f(&m);
    }

    fn snapshot(&self) -> Vec<(Arc<str>, Arc<ShardMeter>)> {
        self.shards
            .lock()
            .iter()
            .map(|(k, v)| (Arc::clone(k), Arc::clone(v)))
            .collect()
    }

    fn take_errors(&self) -> Vec<((ErrorKind, Option<String>), u64)> {
        self.errors.lock().drain().collect()
    }
}

/// The rare events, counted from the library's [`Stats`] hooks.
impl Stats for Meters {
    fn records_fetched(&self, shard_id: &str, count: usize, millis_behind_latest: Option<i64>) {
        self.with_shard(shard_id, |m| {
            m.counts.fetched.fetch_add(count as u64, Ordering::Relaxed);
            add(&m.counts.reads);
            if count > 0 {
                m.batch_records.record(count as u64);
            }
            if let Some(ms) = millis_behind_latest {
                m.behind_ms.store(ms.max(0), Ordering::Relaxed);
            }
        });
    }

    fn request_sent(&self, shard_id: &str, operation: &str) {
        self.with_shard(shard_id, |m| match operation {
            "SubscribeToShard" => add(&m.counts.subscribe),
            _ => add(&m.counts.get_records),
        });
    }

    fn throttled(&self, shard_id: &str, _operation: &str) {
        self.with_shard(shard_id, |m| add(&m.counts.throttles));
    }

    fn checkpoint_committed(&self, shard_id: &str, _sequence_number: &str) {
        self.with_shard(shard_id, |m| add(&m.counts.commits));
    }

    fn aggregate_checkpoint_committed(&self, shard_id: &str, _: &str, _: u64) {
        self.with_shard(shard_id, |m| add(&m.counts.commits));
    }

    fn commit_failed(&self, shard_id: &str, _error: &str) {
        self.with_shard(shard_id, |m| add(&m.counts.commit_failures));
    }

    fn commit_lagging(&self, shard_id: &str, _in_flight_for: Duration) {
        self.with_shard(shard_id, |m| add(&m.counts.commits_lagging));
    }

    fn load_published(&self, shard_id: &str, bytes_per_second: f64) {
        self.with_shard(shard_id, |m| {
            m.load.store(bytes_per_second.to_bits(), Ordering::Relaxed);
        });
    }

    fn shards_moved_by_load(&self, count: usize) {
        self.moved_by_load
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    fn lease_acquired(&self, shard_id: &str) {
        self.with_shard(shard_id, |m| {
            add(&m.counts.acquired);
            m.owned.store(true, Ordering::Relaxed);
        });
    }

    fn lease_released(&self, shard_id: &str) {
        self.with_shard(shard_id, |m| {
            add(&m.counts.released);
            m.owned.store(false, Ordering::Relaxed);
        });
    }

    fn lease_lost(&self, shard_id: &str) {
        self.with_shard(shard_id, |m| {
            add(&m.counts.lost);
            m.owned.store(false, Ordering::Relaxed);
        });
    }

    fn iterator_renewed(&self, shard_id: &str) {
        self.with_shard(shard_id, |m| add(&m.counts.iterators_renewed));
    }

    fn record_retried(&self, shard_id: &str, _: &str, _: u32, _: Duration) {
        self.with_shard(shard_id, |m| add(&m.counts.retried));
    }

    fn record_dead_lettered(&self, shard_id: &str, _: &str, _: u32) {
        self.with_shard(shard_id, |m| add(&m.counts.dead_lettered));
    }

    fn error_reported(&self, error: &crate::Error) {
        let key = (error.kind(), error.aws_code().map(str::to_owned));
        *self.errors.lock().entry(key).or_default() += 1;
    }
}

/// The user's [`Stats`] and the meters, both told everything.
#[derive(Debug)]
pub(crate) struct Both {
    pub(crate) user: Arc<dyn Stats>,
    pub(crate) meters: Arc<Meters>,
}

macro_rules! both {
    ($( fn $name:ident(&self $(, $arg:ident: $ty:ty)*); )*) => {
        impl Stats for Both {
            $(
                fn $name(&self $(, $arg: $ty)*) {
                    self.user.$name($($arg),*);
                    self.meters.$name($($arg),*);
                }
            )*
        }
    };
}

both! {
    fn records_fetched(&self, shard_id: &str, count: usize, millis_behind_latest: Option<i64>);
    fn records_delivered(&self, shard_id: &str, count: usize);
    fn request_sent(&self, shard_id: &str, operation: &str);
    fn throttled(&self, shard_id: &str, operation: &str);
    fn checkpoint_committed(&self, shard_id: &str, sequence_number: &str);
    fn aggregate_checkpoint_committed(&self, shard_id: &str, aggregate_sequence_number: &str, sub_sequence_number: u64);
    fn aggregate_corrupt(&self, shard_id: &str, sequence_number: &str, reason: &str);
    fn commit_failed(&self, shard_id: &str, error: &str);
    fn lease_acquired(&self, shard_id: &str);
    fn lease_released(&self, shard_id: &str);
    fn lease_lost(&self, shard_id: &str);
    fn shard_parked(&self, shard_id: &str, reason: &str);
    fn shard_unparked(&self, shard_id: &str);
    fn leadership_changed(&self, leader: bool);
    fn assignment_mode_changed(&self, mode: crate::AssignmentMode);
    fn iterator_renewed(&self, shard_id: &str);
    fn commit_lagging(&self, shard_id: &str, in_flight_for: Duration);
    fn load_published(&self, shard_id: &str, bytes_per_second: f64);
    fn shards_moved_by_load(&self, count: usize);
    fn records_held_back(&self, shard_id: &str, count: u64, age: Duration);
    fn record_retried(&self, shard_id: &str, sequence_number: &str, attempt: u32, delay: Duration);
    fn record_dead_lettered(&self, shard_id: &str, sequence_number: &str, attempts: u32);
    fn error_reported(&self, error: &crate::Error);
    fn retried(&self, operation: &str, backoff: Duration);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_keeps_the_proportions_within_the_limit() {
        let mut h = LogHistogram::default();
        for _ in 0..9_000 {
            h.record(10);
        }
        for _ in 0..1_000 {
            h.record(1_000);
        }
        h.record(100_000);
        let s = h.sampled(256);
        let n: u32 = s.iter().map(|(_, n)| n).sum();
        assert!((255..=256).contains(&n), "{s:?}");
        let at = |v: f64| {
            s.iter()
                .find(|(x, _)| (x / v - 1.0).abs() < 0.13)
                .map(|p| p.1)
        };
        assert_eq!(at(10.0), Some(230));
        assert!(at(1_000.0).is_some_and(|k| (25..=26).contains(&k)), "{s:?}");
        // Few enough: all of them, as they are.
        let mut small = LogHistogram::default();
        small.record(3);
        small.record(3);
        assert_eq!(small.sampled(256), vec![(3.0, 2)]);
        assert!(LogHistogram::default().sampled(256).is_empty());
    }

    #[test]
    fn buckets_hold_values_within_an_eighth_and_small_ones_exactly() {
        for v in [0u64, 1, 2, 3] {
            assert_eq!(value_of(bucket_of(v)), v as f64);
        }
        for v in (4u64..100_000).step_by(7).chain([1 << 20, 123_456_789]) {
            let got = value_of(bucket_of(v));
            let err = (got - v as f64).abs() / v as f64;
            assert!(err <= 0.125, "{v} stood for by {got}");
        }
        // Buckets are in value order.
        let values: Vec<f64> = (0..BUCKETS).map(value_of).collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
        // Past the last octave, values share the last bucket rather than overflow.
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn histograms_count_and_merge_and_take() {
        let mut h = LogHistogram::default();
        assert!(h.is_empty());
        for v in [5, 5, 1000] {
            h.record(v);
        }
        let mut g = LogHistogram::default();
        g.record(5);
        g.merge(&h);
        let got: Vec<(f64, u32)> = g.buckets().collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, 3);
        assert_eq!(got[1].1, 1);

        let a = AtomicHistogram::default();
        a.record(3);
        a.record(3);
        let taken = a.take();
        assert_eq!(taken.buckets().collect::<Vec<_>>(), vec![(3.0, 2)]);
        assert!(a.take().is_empty(), "a take empties it");
    }
}
