//! Hooks for metrics: the [`Stats`] trait, every method a no-op by default.

use std::fmt;
use std::time::Duration;

/// Receives the consumer's events, for metrics.
///
/// Every method has an empty default, so implement only what you need. Methods are called
/// from the library's threads (shard threads, the coordinator, the thread iterating
/// records, and the I/O thread, which polls idle shards and reports those calls): keep
/// them cheap and never block in them — a blocked I/O thread holds up every call.
///
/// # Examples
///
/// ```
/// use kinsumer::{Config, Stats};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// #[derive(Debug, Default)]
/// struct Delivered(AtomicU64);
///
/// impl Stats for Delivered {
///     fn records_delivered(&self, _shard_id: &str, count: usize) {
///         self.0.fetch_add(count as u64, Ordering::Relaxed);
///     }
/// }
///
/// let delivered = Arc::new(Delivered::default());
/// let config = Config::default().with_stats(delivered.clone());
/// assert_eq!(delivered.0.load(Ordering::Relaxed), 0);
/// # drop(config);
/// ```
pub trait Stats: Send + Sync + fmt::Debug {
    /// A GetRecords call returned `count` records; `millis_behind_latest` as Kinesis
    /// reported it.
    fn records_fetched(&self, shard_id: &str, count: usize, millis_behind_latest: Option<i64>) {
        let _ = (shard_id, count, millis_behind_latest);
    }

    /// A `GetRecords` or `SubscribeToShard` request (`operation`) was sent for the shard.
    fn request_sent(&self, shard_id: &str, operation: &str) {
        let _ = (shard_id, operation);
    }

    /// Kinesis throttled a `GetRecords` or `SubscribeToShard` request (`operation`) for
    /// the shard; it is tried again after a backoff.
    fn throttled(&self, shard_id: &str, operation: &str) {
        let _ = (shard_id, operation);
    }

    /// `count` records were handed to the caller.
    fn records_delivered(&self, shard_id: &str, count: usize) {
        let _ = (shard_id, count);
    }

    /// A checkpoint was written for the shard.
    fn checkpoint_committed(&self, shard_id: &str, sequence_number: &str) {
        let _ = (shard_id, sequence_number);
    }

    /// A checkpoint write for the shard failed (`error`); the next commit tries again.
    fn commit_failed(&self, shard_id: &str, error: &str) {
        let _ = (shard_id, error);
    }

    /// A checkpoint was written in the middle of a KPL aggregate: its user records up to
    /// `sub_sequence_number` are processed. (Once its last user record is processed,
    /// [`checkpoint_committed`](Stats::checkpoint_committed) reports the aggregate.)
    fn aggregate_checkpoint_committed(
        &self,
        shard_id: &str,
        aggregate_sequence_number: &str,
        sub_sequence_number: u64,
    ) {
        let _ = (shard_id, aggregate_sequence_number, sub_sequence_number);
    }

    /// A record that starts like a KPL aggregate could not be unpacked (`reason`); it is
    /// delivered as it is, as one record.
    fn aggregate_corrupt(&self, shard_id: &str, sequence_number: &str, reason: &str) {
        let _ = (shard_id, sequence_number, reason);
    }

    /// This client captured the shard's lease.
    fn lease_acquired(&self, shard_id: &str) {
        let _ = shard_id;
    }

    /// This client released the shard's lease (on stop or rebalance).
    fn lease_released(&self, shard_id: &str) {
        let _ = shard_id;
    }

    /// Another client took the shard's lease; this client stopped reading it.
    fn lease_lost(&self, shard_id: &str) {
        let _ = shard_id;
    }

    /// The shard kept failing the same way (`reason`: the last failure) and is parked:
    /// this client owns it but does not read it until its row is repaired (see
    /// [`ParkedShard`](crate::ParkedShard)). Called when it is parked and again at every
    /// shard check while it stays parked.
    fn shard_parked(&self, shard_id: &str, reason: &str) {
        let _ = (shard_id, reason);
    }

    /// A parked shard's row was repaired: this client reads the shard again.
    fn shard_unparked(&self, shard_id: &str) {
        let _ = shard_id;
    }

    /// This client became (`true`) or stopped being (`false`) the fleet's leader.
    fn leadership_changed(&self, leader: bool) {
        let _ = leader;
    }

    /// This client changed its assignment scheme (at start, and when Go clients of the
    /// same application come or go).
    fn assignment_mode_changed(&self, mode: crate::AssignmentMode) {
        let _ = mode;
    }

    /// The shard's iterator expired or was rejected and was renewed.
    fn iterator_renewed(&self, shard_id: &str) {
        let _ = shard_id;
    }

    /// The shard's load, as published on its row with a commit: fetched bytes per second
    /// plus [`RECORD_WEIGHT`](crate::balance::RECORD_WEIGHT) per record, smoothed over
    /// about a minute ([`balance`](crate::balance)).
    fn load_published(&self, shard_id: &str, bytes_per_second: f64) {
        let _ = (shard_id, bytes_per_second);
    }

    /// As the fleet's leader: a shard check moved `count` shards by load
    /// ([`balance`](crate::balance)).
    fn shards_moved_by_load(&self, count: usize) {
        let _ = count;
    }

    /// A checkpoint write has been in flight for `in_flight_for` (called once per commit
    /// interval while it lasts; DynamoDB is slow or unreachable). Reading goes on
    /// meanwhile; a lease not renewed for the lease time less a shard check is given up
    /// ([`lease_lost`](Stats::lease_lost)) so that the shard is never read by two clients.
    fn commit_lagging(&self, shard_id: &str, in_flight_for: Duration) {
        let _ = (shard_id, in_flight_for);
    }

    /// `count` records of a shard were handed out and the oldest of them has held the
    /// checkpoint back for `age` without being processed (called once per shard check
    /// while it lasts, from one shard check on). In manual mode, a record that is never
    /// marked; see [`Config::with_max_unmarked`](crate::Config::with_max_unmarked).
    fn records_held_back(&self, shard_id: &str, count: u64, age: Duration) {
        let _ = (shard_id, count, age);
    }

    /// A record whose processing failed ([`Record::retry_later`](crate::Record::retry_later))
    /// is delivered again (as its `attempt`-th delivery) after `delay`; its shard waits.
    fn record_retried(&self, shard_id: &str, sequence_number: &str, attempt: u32, delay: Duration) {
        let _ = (shard_id, sequence_number, attempt, delay);
    }

    /// A record that failed `attempts` times went to the dead-letter handler, which took
    /// it; the checkpoint may now move past it.
    fn record_dead_lettered(&self, shard_id: &str, sequence_number: &str, attempts: u32) {
        let _ = (shard_id, sequence_number, attempts);
    }

    /// Something went wrong that the consumer retries or works around (a failed call, a
    /// shard that will be restarted, a commit that will be tried again). Such errors never
    /// reach the record iterator, which yields only errors that end consumption; see also
    /// [`Kinsumer::health`](crate::Kinsumer::health).
    fn error_reported(&self, error: &crate::Error) {
        let _ = error;
    }

    /// A request failed and will be retried after `backoff`.
    fn retried(&self, operation: &str, backoff: Duration) {
        let _ = (operation, backoff);
    }
}

/// The default [`Stats`]: ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStats;

impl Stats for NoStats {}

/// Tells a caller that keeps per-shard state (running totals, open files) when shards
/// come and go, as rdkafka's rebalance callbacks and the KCL's `leaseLost`/`shardEnded`
/// do — without giving up the record iterator. Set it with
/// [`Config::with_shard_listener`](crate::Config::with_shard_listener).
///
/// Methods run on the shard's own thread; every one has an empty default. In
/// [`revoking`](ShardListener::revoking) flush what belongs to the shard and mark its
/// records processed: the lease is released once every record handed out is processed,
/// or when the handover grace ends
/// ([`Config::with_handover_grace`](crate::Config::with_handover_grace)), whichever comes
/// first; records not processed by then are delivered again by the next owner.
///
/// # Examples
///
/// ```
/// use kinsumer::{Config, ShardListener};
/// use std::sync::Arc;
///
/// #[derive(Debug, Default)]
/// struct Flusher;
///
/// impl ShardListener for Flusher {
///     fn revoking(&self, shard_id: &str) {
///         // write this shard's pending totals, then mark their records processed
///         let _ = shard_id;
///     }
/// }
///
/// let config = Config::default().with_shard_listener(Arc::new(Flusher));
/// # drop(config);
/// ```
pub trait ShardListener: Send + Sync + fmt::Debug {
    /// This client now reads `shard_id`: its records follow.
    fn assigned(&self, shard_id: &str) {
        let _ = shard_id;
    }

    /// `shard_id` is about to be handed over (a rebalance, or this client stopping): no
    /// more of its records are handed out, and the lease is released once the records
    /// already handed out are processed or the handover grace ends. Flush and mark now.
    fn revoking(&self, shard_id: &str) {
        let _ = shard_id;
    }

    /// `shard_id` was released: records of it still held count for nothing more.
    fn revoked(&self, shard_id: &str) {
        let _ = shard_id;
    }

    /// `shard_id` was read to its end and every record processed (resharding).
    fn ended(&self, shard_id: &str) {
        let _ = shard_id;
    }

    /// Another client took `shard_id` (this client was cut off or paused past its
    /// lease): there was no grace, and its unprocessed records go to the new owner.
    fn lost(&self, shard_id: &str) {
        let _ = shard_id;
    }
}

/// The default [`ShardListener`]: ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoListener;

impl ShardListener for NoListener {}
