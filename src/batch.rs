//! A batch: consecutive records of one shard, as one read brought them.

use std::fmt;
use std::iter::FusedIterator;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::consumer::{InHand, Kinsumer, Pulled};
use crate::error::{Error, ErrorKind, Result};
use crate::record::{ProcessedMarker, Record};
use crate::watermark::{HandOut, ShardProgress};

/// Consecutive records of one shard, as one GetRecords answer (or enhanced fan-out event)
/// brought them — KPL aggregates unpacked, at most
/// [`Config::batch_records`](crate::Config::batch_records) records (a larger answer comes
/// as several batches). Delivered by [`Kinsumer::batches`](crate::Kinsumer::batches) and
/// [`Kinsumer::process`](crate::Kinsumer::process). Never empty, but for one case: a
/// closed shard whose last read brought no records ends with a batch without records that
/// says [`is_shard_end`](Batch::is_shard_end).
///
/// A batch travels from its shard thread to the caller whole: one channel message and one
/// wake-up per batch, not per record.
///
/// # Marking
///
/// In [`CheckpointMode::Auto`](crate::CheckpointMode::Auto) a batch counts as processed
/// when the iterator that yielded it is asked for the next item (as records do); in
/// [`CheckpointMode::Manual`](crate::CheckpointMode::Manual) call
/// [`mark_processed`](Batch::mark_processed) (or keep a [`processed_marker`](Batch::processed_marker),
/// or mark records one by one with their own markers).
///
/// # Examples
///
/// ```no_run
/// # fn demo(consumer: &kinsumer::Kinsumer) -> Result<(), kinsumer::Error> {
/// for batch in consumer.batches() {
///     let batch = batch?;
///     let bytes: usize = batch.iter().map(|r| r.data().len()).sum();
///     println!(
///         "{}: {} records, {bytes} bytes, {:?} ms behind",
///         batch.shard_id(),
///         batch.len(),
///         batch.millis_behind_latest()
///     );
/// }
/// # Ok(())
/// # }
/// ```
pub struct Batch {
    records: Vec<Record>,
    progress: Arc<ShardProgress>,
    millis_behind_latest: Option<i64>,
    shard_end: bool,
    /// The bytes it counts for in the buffer's byte bound.
    bytes: usize,
    /// A closed shard's empty last batch handed out in manual mode: dropping it counts
    /// as processing it (it has no records to mark).
    end_on_drop: bool,
    /// Of a closed shard's empty last batch: how many records its shard thread had
    /// numbered when it sent it (tells it from one sent before a retry).
    end_at: u64,
}

/// What a batch says besides its records (kept while `records()` hands them out one by one).
#[derive(Debug)]
pub(crate) struct BatchHead {
    progress: Arc<ShardProgress>,
    millis_behind_latest: Option<i64>,
    shard_end: bool,
}

impl Batch {
    /// A batch of `records`, consecutive records of the lease `progress` tracks (not empty).
    pub(crate) fn new(
        records: Vec<Record>,
        progress: Arc<ShardProgress>,
        millis_behind_latest: Option<i64>,
        shard_end: bool,
    ) -> Self {
        let bytes = records.iter().map(Record::buffered_size).sum();
        Batch {
            records,
            progress,
            millis_behind_latest,
            shard_end,
            bytes,
            end_on_drop: false,
            end_at: 0,
        }
    }

    /// A closed shard's empty last batch, sent when its shard thread had numbered `at`
    /// records.
    pub(crate) fn end_of_shard(
        progress: Arc<ShardProgress>,
        millis_behind_latest: Option<i64>,
        at: u64,
    ) -> Self {
        let mut batch = Batch::new(Vec::new(), progress, millis_behind_latest, true);
        batch.end_at = at;
        batch
    }

    /// Counts a closed shard's empty last batch processed.
    pub(crate) fn mark_end_processed(&self) {
        self.progress.mark_end_processed(self.end_at);
    }

    /// Whether it is a closed shard's empty last batch (it tells the end, no records).
    pub(crate) fn tells_end_only(&self) -> bool {
        self.shard_end && self.records.is_empty()
    }

    /// Makes dropping it count as processing it, if it is a closed shard's empty last
    /// batch (manual mode: it has no record to mark).
    pub(crate) fn end_on_drop(&mut self) {
        self.end_on_drop = self.tells_end_only();
    }

    /// Splits off its records, for handing them out one by one.
    pub(crate) fn into_parts(mut self) -> (BatchHead, std::vec::IntoIter<Record>) {
        let head = BatchHead {
            progress: Arc::clone(&self.progress),
            millis_behind_latest: self.millis_behind_latest,
            shard_end: self.shard_end,
        };
        (head, std::mem::take(&mut self.records).into_iter())
    }

    /// The batch of the records of `head` not yet handed out (`None` if none is left).
    pub(crate) fn from_parts(head: BatchHead, rest: std::vec::IntoIter<Record>) -> Option<Self> {
        let records: Vec<Record> = rest.collect();
        if records.is_empty() {
            return None;
        }
        Some(Batch::new(
            records,
            head.progress,
            head.millis_behind_latest,
            head.shard_end,
        ))
    }

    /// The bytes it counts for in the buffer's byte bound.
    pub(crate) fn buffered_size(&self) -> usize {
        self.bytes
    }

    pub(crate) fn progress(&self) -> &Arc<ShardProgress> {
        &self.progress
    }

    /// Records that the batch goes to the caller now; `false` if its lease is ending
    /// and it must be dropped instead (the next owner delivers its records).
    pub(crate) fn hand_out(&self) -> bool {
        match self.records.last() {
            Some(last) => last.hand_out_with(HandOut {
                records: self.records.len() as u64,
                bytes: self.bytes as u64,
                arrival: self
                    .records
                    .first()
                    .and_then(Record::approximate_arrival_timestamp),
            }),
            // A shard's empty last batch carries no records, only the news that it
            // ended: it goes out even once the shard thread has finished.
            None => self.progress.hand_out_end(self.end_at),
        }
    }

    /// The id of the shard its records were read from.
    pub fn shard_id(&self) -> &str {
        self.progress.shard_id()
    }

    /// How far the read that brought it was behind the tip of the shard, as Kinesis said
    /// (`MillisBehindLatest`; `None` if it did not say).
    pub fn millis_behind_latest(&self) -> Option<i64> {
        self.millis_behind_latest
    }

    /// Whether this is the last batch of a closed shard (after a split or merge): once
    /// it is processed, its children are read. Every closed shard read to its end has
    /// exactly one such batch — its last records, or, when the read that found the end
    /// brought none, a batch without records (the only empty batch there is; the shard's
    /// records before it are all processed when it comes). The children wait for it as
    /// for any batch: in auto mode until the iterator moves on, in
    /// [`process`](crate::Kinsumer::process) until the handler returns `Ok`, in manual
    /// mode until it is [marked](Batch::mark_processed) or dropped (an empty one has no
    /// records to mark) — so per-shard state can be flushed on it before any record of
    /// the children is handed out.
    pub fn is_shard_end(&self) -> bool {
        self.shard_end
    }

    /// How many records it holds (at least one, but in a shard's empty last batch).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no records (only a closed shard's last batch may; see
    /// [`is_shard_end`](Batch::is_shard_end)).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Its records, in shard order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Its records, mutably (e.g. to [`take_data`](Record::take_data) out of them).
    pub fn records_mut(&mut self) -> &mut [Record] {
        &mut self.records
    }

    /// Iterates its records, in shard order.
    pub fn iter(&self) -> std::slice::Iter<'_, Record> {
        self.records.iter()
    }

    /// Its records, taking them out of the batch. In manual mode, take a
    /// [`processed_marker`](Batch::processed_marker) first to mark them all at once.
    pub fn into_records(mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    /// Marks every record of the batch processed (see [`Record::mark_processed`]): one
    /// step, whatever its size. Idempotent.
    pub fn mark_processed(&self) {
        self.processed_marker().mark();
    }

    /// Says that processing the batch failed and its records should come again later,
    /// from its first: see [`Record::retry_later`]. In
    /// [`process`](crate::Kinsumer::process), call it and return `Ok(())` to retry the
    /// batch rather than end processing.
    pub fn retry_later(&self, error: impl fmt::Display) {
        if let Some(first) = self.records.first() {
            first.retry_later(error);
        }
    }

    /// A handle that marks every record of the batch processed later, from any thread.
    pub fn processed_marker(&self) -> ProcessedMarker {
        let first = self.records.first().map_or(0, Record::index);
        match self.records.last() {
            Some(last) => last.marker_from(first),
            // A closed shard's empty last batch: its mark lets the shard finish.
            None => ProcessedMarker::end(Arc::clone(&self.progress), self.end_at),
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if self.end_on_drop {
            self.progress.mark_end_processed(self.end_at);
        }
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a Record;
    type IntoIter = std::slice::Iter<'a, Record>;

    fn into_iter(self) -> Self::IntoIter {
        self.records.iter()
    }
}

impl IntoIterator for Batch {
    type Item = Record;
    type IntoIter = std::vec::IntoIter<Record>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_records().into_iter()
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("shard_id", &self.shard_id())
            .field("records", &self.records.len())
            .field(
                "first_sequence_number",
                &self.records.first().map(Record::sequence_number),
            )
            .field(
                "last_sequence_number",
                &self.records.last().map(Record::sequence_number),
            )
            .field("millis_behind_latest", &self.millis_behind_latest)
            .field("shard_end", &self.shard_end)
            .finish()
    }
}

/// Iterator over a consumer's batches; see [`Kinsumer::batches`].
#[derive(Debug)]
pub struct Batches<'a> {
    pub(crate) consumer: &'a Kinsumer,
    /// This iterator yielded its last item (the consumer was not running).
    pub(crate) ended: bool,
    /// Auto mode: the batch this iterator yielded last, processed when it moves on.
    pub(crate) in_hand: InHand,
}

/// What [`Batches::next_timeout`] and [`Batches::try_next`] found: the batch
/// counterpart of [`Polled`](crate::Polled).
#[derive(Debug)]
pub enum PolledBatch {
    /// The next batch.
    Batch(Batch),
    /// The error that ended the consumer (always [fatal](Error::is_fatal)); iteration is
    /// over.
    Failed(Error),
    /// Nothing came in time; iteration goes on.
    TimedOut,
    /// Iteration has ended: after a stop, or after the fatal error was yielded.
    Ended,
}

impl PolledBatch {
    /// The item [`Iterator::next`] would have returned; `None` for both
    /// [`TimedOut`](PolledBatch::TimedOut) and [`Ended`](PolledBatch::Ended).
    pub fn into_item(self) -> Option<Result<Batch>> {
        match self {
            PolledBatch::Batch(b) => Some(Ok(b)),
            PolledBatch::Failed(e) => Some(Err(e)),
            PolledBatch::TimedOut | PolledBatch::Ended => None,
        }
    }

    /// Whether nothing came in time.
    pub fn is_timed_out(&self) -> bool {
        matches!(self, PolledBatch::TimedOut)
    }
}

impl Batches<'_> {
    /// Like [`next`](Iterator::next), but waits at most `timeout` (see
    /// [`Records::next_timeout`](crate::Records::next_timeout)): for a processor that
    /// must also act when nothing comes, e.g. flush what it aggregated.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn demo(consumer: &kinsumer::Kinsumer) -> Result<(), kinsumer::Error> {
    /// use kinsumer::PolledBatch;
    /// use std::time::Duration;
    ///
    /// let mut batches = consumer.batches();
    /// loop {
    ///     match batches.next_timeout(Duration::from_secs(1)) {
    ///         PolledBatch::Batch(batch) => println!("{} records", batch.len()),
    ///         PolledBatch::TimedOut => println!("idle"),
    ///         PolledBatch::Failed(e) => return Err(e),
    ///         PolledBatch::Ended => return Ok(()),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> PolledBatch {
        self.poll(Instant::now().checked_add(timeout))
    }

    /// Like [`next_timeout`](Batches::next_timeout) without waiting: a batch or error
    /// already there, else [`PolledBatch::TimedOut`].
    pub fn try_next(&mut self) -> PolledBatch {
        self.next_timeout(Duration::ZERO)
    }

    fn poll(&mut self, deadline: Option<Instant>) -> PolledBatch {
        if self.ended {
            return PolledBatch::Ended;
        }
        match self.consumer.next_batch(&mut self.in_hand, deadline) {
            Pulled::Got(b) => PolledBatch::Batch(b),
            Pulled::Failed(e) => {
                if e.kind() == ErrorKind::NotRunning {
                    self.ended = true;
                }
                PolledBatch::Failed(e)
            }
            Pulled::TimedOut => PolledBatch::TimedOut,
            Pulled::Ended => PolledBatch::Ended,
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        // Without a deadline there is no TimedOut.
        self.poll(None).into_item()
    }
}

impl FusedIterator for Batches<'_> {}
