//! A delivered Kinesis record, and the handle that marks it processed.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::watermark::{AggregatePart, HandOut, ShardProgress};

/// One Kinesis record, as delivered by [`Kinsumer::records`](crate::Kinsumer::records).
///
/// A Kinesis record written by the Kinesis Producer Library (or another aggregator of its
/// format) is delivered as one `Record` per user record packed in it, each with its own
/// partition key and [`explicit_hash_key`](Record::explicit_hash_key), the aggregate's
/// sequence number, and a [`sub_sequence_number`](Record::sub_sequence_number); see
/// [`Config::with_deaggregation`](crate::Config::with_deaggregation).
///
/// In [`CheckpointMode::Manual`](crate::CheckpointMode::Manual), call
/// [`mark_processed`](Record::mark_processed) (or keep a [`ProcessedMarker`]) once the
/// record's effects are durable; until then its shard's checkpoint stays before it.
pub struct Record {
    data: Vec<u8>,
    partition_key: String,
    explicit_hash_key: Option<String>,
    sequence_number: String,
    arrival: Option<SystemTime>,
    /// Set for a user record unpacked from an aggregate.
    part: Option<AggregatePart>,
    progress: Arc<ShardProgress>,
    index: u64,
    /// Which delivery of the record this is (1 for the first).
    attempt: u32,
}

/// What a shard thread knows of a record before numbering it.
#[derive(Debug)]
pub(crate) struct RecordParts {
    pub(crate) data: Vec<u8>,
    pub(crate) partition_key: String,
    pub(crate) explicit_hash_key: Option<String>,
    pub(crate) sequence_number: String,
    pub(crate) arrival: Option<SystemTime>,
    pub(crate) part: Option<AggregatePart>,
}

impl Record {
    pub(crate) fn new(parts: RecordParts, progress: Arc<ShardProgress>, index: u64) -> Self {
        Record {
            data: parts.data,
            partition_key: parts.partition_key,
            explicit_hash_key: parts.explicit_hash_key,
            sequence_number: parts.sequence_number,
            arrival: parts.arrival,
            part: parts.part,
            progress,
            index,
            attempt: 1,
        }
    }

    /// Records that it goes to the caller now; `false` if its lease is ending (or it
    /// was read before a retry) and it must be dropped instead.
    pub(crate) fn hand_out(&self) -> bool {
        self.hand_out_with(HandOut {
            records: 1,
            bytes: self.buffered_size() as u64,
            arrival: self.arrival,
        })
    }

    /// [`hand_out`](Record::hand_out), counting `what` as handed out with it (a batch
    /// hands out through its last record).
    pub(crate) fn hand_out_with(&self, what: HandOut) -> bool {
        self.progress.hand_out_at(
            self.index,
            &self.sequence_number,
            self.sub_sequence_number(),
            what,
        )
    }

    pub(crate) fn set_attempt(&mut self, attempt: u32) {
        self.attempt = attempt;
    }

    /// The bytes it counts for in the buffer's byte bound.
    pub(crate) fn buffered_size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// The record's payload.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Takes the payload out of the record, without copying.
    pub fn take_data(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data)
    }

    /// The partition key the record was written with.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The explicit hash key of a user record unpacked from an aggregate, if its producer
    /// set one. Always `None` for records that were not aggregated (Kinesis does not
    /// return the explicit hash key of a plain record).
    pub fn explicit_hash_key(&self) -> Option<&str> {
        self.explicit_hash_key.as_deref()
    }

    /// The record's sequence number, unique within its shard. The user records of one
    /// aggregate share the aggregate's sequence number and differ in
    /// [`sub_sequence_number`](Record::sub_sequence_number).
    pub fn sequence_number(&self) -> &str {
        &self.sequence_number
    }

    /// The record's index within its KPL aggregate (0, 1, 2, …), or `None` if it was not
    /// aggregated (also when de-aggregation is turned off, or the aggregate was corrupt and
    /// is delivered as it was). Records of a shard are ordered by
    /// (`sequence_number`, `sub_sequence_number`).
    pub fn sub_sequence_number(&self) -> Option<u64> {
        self.part.as_ref().map(|p| p.sub_sequence_number)
    }

    /// The id of the shard the record was read from.
    pub fn shard_id(&self) -> &str {
        self.progress.shard_id()
    }

    /// When Kinesis accepted the record, if it said.
    pub fn approximate_arrival_timestamp(&self) -> Option<SystemTime> {
        self.arrival
    }

    /// How long ago Kinesis accepted the record (now less its
    /// [approximate arrival](Record::approximate_arrival_timestamp)): the delivery lag
    /// a caller can log or alert on. `None` if the server gave no arrival time; zero if
    /// this machine's clock is behind the server's.
    ///
    /// ```no_run
    /// # fn demo(consumer: &kinsumer::Kinsumer) -> Result<(), kinsumer::Error> {
    /// for record in consumer.records() {
    ///     let record = record?;
    ///     if record.lag().is_some_and(|lag| lag.as_secs() > 60) {
    ///         eprintln!("{} is a minute behind", record.shard_id());
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn lag(&self) -> Option<std::time::Duration> {
        let arrival = self.arrival?;
        Some(
            SystemTime::now()
                .duration_since(arrival)
                .unwrap_or_default(),
        )
    }

    /// Marks the record processed: its shard's checkpoint may now move past it (once
    /// every earlier record of the shard is processed too). Idempotent. Has no effect
    /// if this client has meanwhile lost or released the shard.
    pub fn mark_processed(&self) {
        self.progress.mark(
            self.index,
            self.index,
            &self.sequence_number,
            self.part.as_ref(),
        );
    }

    /// Which delivery of this record this is: 1, or more after
    /// [`retry_later`](Record::retry_later) (counted by this client's lease of the shard:
    /// a new owner starts at 1 again).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Says that processing the record failed and it should come again later: its shard
    /// is read again from the first record not yet processed (this one, when the records
    /// before it are processed), after a delay that doubles with each attempt (from the
    /// [throttle delay](crate::Config::with_throttle_delay) up to 30 s). Meanwhile
    /// nothing after it on its shard is handed out, so per-key order holds, and every
    /// other shard goes on. Records of the shard already handed out after it are
    /// delivered again too; marks of them no longer count.
    ///
    /// With [`Config::with_max_attempts`](crate::Config::with_max_attempts), the
    /// record's last failure goes to the dead-letter handler instead of another delivery;
    /// without, it is retried for as long as it fails. `error` says why, in the warning
    /// logged for each attempt and to the dead-letter handler.
    ///
    /// In auto mode the iterator moving on then does not count the record processed.
    /// Has no effect on a record already marked processed, or once this client is
    /// giving the shard up (the next owner delivers it again anyway).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn store(_: &[u8]) -> Result<(), std::io::Error> { Ok(()) }
    /// # fn demo(consumer: &kinsumer::Kinsumer) -> Result<(), kinsumer::Error> {
    /// for record in consumer.records() {
    ///     let record = record?;
    ///     if let Err(e) = store(record.data()) {
    ///         record.retry_later(&e); // its shard waits; the others go on
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn retry_later(&self, error: impl fmt::Display) {
        self.progress.request_retry(crate::watermark::RetryRequest {
            index: self.index,
            sequence_number: self.sequence_number.clone(),
            sub_sequence_number: self.sub_sequence_number(),
            error: error.to_string(),
        });
    }

    /// A handle that marks this record processed later, e.g. from a worker thread after
    /// the record's data was moved out.
    pub fn processed_marker(&self) -> ProcessedMarker {
        self.marker_from(self.index)
    }

    /// A marker for the records of this one's lease from index `first` through this one
    /// (a batch ending with it).
    pub(crate) fn marker_from(&self, first: u64) -> ProcessedMarker {
        ProcessedMarker {
            progress: Arc::clone(&self.progress),
            first,
            index: self.index,
            sequence_number: self.sequence_number.clone(),
            part: self.part.clone(),
            end: None,
        }
    }

    pub(crate) fn index(&self) -> u64 {
        self.index
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("shard_id", &self.shard_id())
            .field("sequence_number", &self.sequence_number)
            .field("sub_sequence_number", &self.sub_sequence_number())
            .field("partition_key", &self.partition_key)
            .field("data_len", &self.data.len())
            .field("approximate_arrival_timestamp", &self.arrival)
            .finish()
    }
}

/// Marks one [`Record`] (or every record of a [`Batch`](crate::Batch)) processed when
/// [`mark`](ProcessedMarker::mark) is called. `Send`, so it can travel to the thread that
/// finishes the work.
///
/// # Examples
///
/// ```no_run
/// # fn demo(consumer: &kinsumer::Kinsumer) {
/// for record in consumer.records() {
///     let Ok(mut record) = record else { continue };
///     let marker = record.processed_marker();
///     let data = record.take_data();
///     std::thread::spawn(move || {
///         // ... write `data` somewhere durable ...
///         # drop(data);
///         marker.mark();
///     });
/// }
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a marker does nothing until `mark` is called"]
pub struct ProcessedMarker {
    progress: Arc<ShardProgress>,
    /// The first record it marks (a batch's first; else `index`).
    first: u64,
    /// The last record it marks.
    index: u64,
    sequence_number: String,
    part: Option<AggregatePart>,
    /// The marker of a closed shard's empty last batch (sent when this many records were
    /// numbered): it marks no record, only that the batch was processed.
    end: Option<u64>,
}

impl ProcessedMarker {
    /// The marker of a closed shard's empty last batch.
    pub(crate) fn end(progress: Arc<ShardProgress>, at: u64) -> Self {
        ProcessedMarker {
            progress,
            first: 1,
            index: 0,
            sequence_number: String::new(),
            part: None,
            end: Some(at),
        }
    }

    /// Marks the record processed (see [`Record::mark_processed`]).
    pub fn mark(self) {
        if let Some(at) = self.end {
            self.progress.mark_end_processed(at);
            return;
        }
        self.progress.mark(
            self.first,
            self.index,
            &self.sequence_number,
            self.part.as_ref(),
        );
    }

    /// The id of the record's shard.
    pub fn shard_id(&self) -> &str {
        self.progress.shard_id()
    }

    /// The record's sequence number (of a batch's marker: its last record's).
    pub fn sequence_number(&self) -> &str {
        &self.sequence_number
    }

    /// The record's sub-sequence number (see [`Record::sub_sequence_number`]).
    pub fn sub_sequence_number(&self) -> Option<u64> {
        self.part.as_ref().map(|p| p.sub_sequence_number)
    }
}
