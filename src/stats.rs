//! Hooks for metrics: the [`Stats`] trait, every method a no-op by default.

use std::fmt;
use std::time::Duration;

/// Receives the consumer's events, for metrics.
///
/// Every method has an empty default, so implement only what you need. Methods are called
/// from the library's threads (shard threads, the coordinator, the thread iterating
/// records): keep them cheap and never block in them.
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

    /// `count` records were handed to the caller.
    fn records_delivered(&self, shard_id: &str, count: usize) {
        let _ = (shard_id, count);
    }

    /// A checkpoint was written for the shard.
    fn checkpoint_committed(&self, shard_id: &str, sequence_number: &str) {
        let _ = (shard_id, sequence_number);
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
