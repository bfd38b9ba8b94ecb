//! The checkpoint watermark: which of a shard's delivered records are processed.
//!
//! A shard thread numbers the records it delivers 0, 1, 2, … . The caller marks them
//! processed in any order; the checkpoint may only cover the contiguous prefix of
//! processed records, so a crash never skips a record that was handed out but not
//! finished. [`Watermark`] is that bookkeeping, free of I/O; [`ShardProgress`] shares it
//! between the shard thread (which commits) and the caller's threads (which mark).
//!
//! A record unpacked from a KPL aggregate checkpoints as a [`Checkpoint`] with a
//! [`Partial`] part until the aggregate's last user record is processed: the row's
//! `SequenceNumber` stays at the last Kinesis record before the aggregate (so a client
//! that knows nothing of aggregates — the Go library — re-reads the whole aggregate rather
//! than skipping its unprocessed tail), and the extra attributes say how far into the
//! aggregate this client got.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::membership::Membership;

/// A user record's place in its KPL aggregate.
#[derive(Debug, Clone)]
pub(crate) struct AggregatePart {
    /// Its index among the aggregate's user records.
    pub(crate) sub_sequence_number: u64,
    /// Whether it is the aggregate's last user record.
    pub(crate) last: bool,
    /// The last Kinesis record before the aggregate (`None`: none was checkpointed yet).
    pub(crate) before: Option<Arc<str>>,
}

/// Progress inside a partly processed aggregate: its user records up to and including
/// `sub_sequence_number` are processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Partial {
    /// The aggregate's (Kinesis) sequence number.
    pub(crate) aggregate: String,
    pub(crate) sub_sequence_number: u64,
}

/// A checkpoint: what a shard's row says has been processed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The last Kinesis record processed in full (`SequenceNumber`).
    pub(crate) sequence_number: Option<String>,
    /// How far into the aggregate that follows it, if that is partly processed.
    pub(crate) partial: Option<Partial>,
}

/// For messages: "none", "4968…", or "4968…, then sub-record 3 of 4969…".
impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.sequence_number, &self.partial) {
            (None, None) => f.write_str("none"),
            (Some(seq), None) => f.write_str(seq),
            (seq, Some(p)) => {
                if let Some(seq) = seq {
                    write!(f, "{seq}, then ")?;
                }
                write!(
                    f,
                    "the aggregate {} up to its sub-record {}",
                    p.aggregate, p.sub_sequence_number
                )
            }
        }
    }
}

impl Checkpoint {
    /// The checkpoint once the record `seq` (a user record of an aggregate if `part`) is
    /// processed, written into `self` reusing its buffers: this runs once per record.
    fn set_after(&mut self, seq: &str, part: Option<&AggregatePart>) {
        match part {
            Some(p) if !p.last => {
                match &p.before {
                    Some(before) => replace(&mut self.sequence_number, before),
                    None => self.sequence_number = None,
                }
                let partial = self.partial.get_or_insert_with(|| Partial {
                    aggregate: String::new(),
                    sub_sequence_number: 0,
                });
                partial.aggregate.clear();
                partial.aggregate.push_str(seq);
                partial.sub_sequence_number = p.sub_sequence_number;
            }
            _ => {
                replace(&mut self.sequence_number, seq);
                self.partial = None;
            }
        }
    }

    /// For messages, a checkpoint that may be missing ("none").
    pub(crate) fn show(c: Option<&Checkpoint>) -> String {
        c.map_or_else(|| "none".to_owned(), Checkpoint::to_string)
    }

    /// Whether it names no position at all (a row never checkpointed).
    pub(crate) fn is_empty(&self) -> bool {
        self.sequence_number.is_none() && self.partial.is_none()
    }

    fn after(seq: &str, part: Option<&AggregatePart>) -> Self {
        let mut c = Checkpoint::default();
        c.set_after(seq, part);
        c
    }

    /// The checkpoint a row holds: its `SequenceNumber` and, if present, the aggregate
    /// progress attributes. The progress counts only if it lies after `SequenceNumber`:
    /// a client that does not know the attributes (the Go library) moves
    /// `SequenceNumber` on and leaves them behind, stale.
    pub(crate) fn from_row(sequence_number: Option<String>, partial: Option<Partial>) -> Self {
        let partial = partial.filter(|p| match &sequence_number {
            Some(seq) => compare_sequence_numbers(&p.aggregate, seq) == Ordering::Greater,
            None => true,
        });
        Checkpoint {
            sequence_number,
            partial,
        }
    }
}

fn replace(buf: &mut Option<String>, value: &str) {
    let b = buf.get_or_insert_with(String::new);
    b.clear();
    b.push_str(value);
}

/// Orders two Kinesis sequence numbers of one shard (decimal strings of up to 128 bits:
/// a longer one is larger; equally long ones compare as text).
pub(crate) fn compare_sequence_numbers(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Contiguous-prefix tracker of processed record indices.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    /// Lowest index not yet processed; everything below is.
    next: u64,
    /// The checkpoint after record `next - 1`, if any record was processed.
    processed: Option<Checkpoint>,
    /// Runs of records processed out of order, by their first index: the last index of
    /// the run and the checkpoint after it, waiting for the gap below them to close.
    ahead: BTreeMap<u64, (u64, Checkpoint)>,
}

impl Watermark {
    /// Marks record `index` (with sequence number `seq`, and its place in an aggregate
    /// if it came from one) processed. Marking twice, or marking a record below the
    /// watermark, changes nothing.
    #[cfg(test)]
    pub(crate) fn mark(&mut self, index: u64, seq: &str, part: Option<&AggregatePart>) {
        self.mark_run(index, index, seq, part);
    }

    /// Marks records `first..=last` processed at once (a batch), where `seq` and `part`
    /// are those of record `last`. Runs may overlap; marking what is already processed
    /// changes nothing.
    pub(crate) fn mark_run(
        &mut self,
        first: u64,
        last: u64,
        seq: &str,
        part: Option<&AggregatePart>,
    ) {
        if last < self.next || last < first {
            return;
        }
        if first > self.next {
            let run = self
                .ahead
                .entry(first)
                .or_insert_with(|| (last, Checkpoint::after(seq, part)));
            if run.0 < last {
                *run = (last, Checkpoint::after(seq, part));
            }
            return;
        }
        // In order: reuse the buffers rather than allocate per record.
        self.processed
            .get_or_insert_with(Checkpoint::default)
            .set_after(seq, part);
        self.next = last + 1;
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let (end, checkpoint) = entry.remove();
            if end >= self.next {
                self.processed = Some(checkpoint);
                self.next = end + 1;
            }
        }
    }

    /// Counts every record below `end` as done without moving the checkpoint: records
    /// of the shard that are read again (a retry re-reads from the processed prefix), so
    /// their first delivery must neither hold the prefix back nor move it. Marks of them
    /// made out of order are dropped.
    pub(crate) fn skip_to(&mut self, end: u64) {
        if end > self.next {
            self.next = end;
        }
        self.ahead.retain(|first, _| *first >= end);
    }

    /// How many records, from index 0, are processed.
    pub(crate) fn processed_count(&self) -> u64 {
        self.next
    }

    /// The checkpoint after the last record of the processed prefix.
    pub(crate) fn processed(&self) -> Option<&Checkpoint> {
        self.processed.as_ref()
    }
}

/// Where a lease's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Records are handed to the caller and marks count.
    Delivering,
    /// The lease is ending: nothing more is handed out, but marks of records already
    /// handed out still count, so the final checkpoint can include them.
    Draining,
    /// The final checkpoint was taken: marks are ignored.
    Sealed,
}

#[derive(Debug)]
struct ProgressState {
    watermark: Watermark,
    /// One past the highest index handed to the caller.
    handed_out: u64,
    phase: Phase,
    /// Since when the oldest record handed out and not yet processed has held the
    /// checkpoint back (`None` when every record handed out is processed).
    held_back_since: Option<Instant>,
    /// Past this the lease may belong to another client: nothing is handed out (the
    /// shard thread renews it on every successful commit).
    valid_until: Option<Instant>,
    /// A record the caller asked to have again ([`Record::retry_later`](crate::Record::retry_later)),
    /// not yet acted on by the shard thread: it and every record after it are neither
    /// handed out nor counted processed meanwhile.
    retry: Option<RetryRequest>,
    /// Records below this index were read before the last retry and are read again:
    /// any of them still on its way to the caller is dropped.
    stale_below: u64,
    /// The last record handed out (sequence number, sub-sequence number), for
    /// [`Kinsumer::position`](crate::Kinsumer::position); the buffer is reused.
    position: Option<(String, Option<u64>)>,
    /// What the `metrics` feature measures of this lease, taken by its export thread.
    #[cfg(feature = "metrics")]
    flow: crate::meter::Flow,
    /// The wall clock at a monotonic instant, for the delivery lag.
    #[cfg(feature = "metrics")]
    clock: (std::time::SystemTime, Instant),
}

/// What a hand-out gives the caller, as the `metrics` feature counts it: how many
/// records, their bytes, and the oldest one's approximate arrival.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct HandOut {
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) arrival: Option<std::time::SystemTime>,
}

#[cfg(feature = "metrics")]
fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(feature = "metrics")]
impl Drop for ShardProgress {
    fn drop(&mut self) {
        if let Some(meter) = &self.meter {
            meter.spill(&self.state.get_mut().flow);
        }
    }
}

/// What the caller asked for in a retry.
#[derive(Debug, Clone)]
pub(crate) struct RetryRequest {
    /// The failed record's index, sequence number and place in its aggregate.
    pub(crate) index: u64,
    pub(crate) sequence_number: String,
    pub(crate) sub_sequence_number: Option<u64>,
    /// What the caller said went wrong.
    pub(crate) error: String,
}

/// What the shard thread does when it acts on a retry: read again after `checkpoint`
/// (`None`: nothing of this lease was processed) — the first unprocessed record on.
#[derive(Debug)]
pub(crate) struct Rewind {
    pub(crate) request: Option<RetryRequest>,
    pub(crate) checkpoint: Option<Checkpoint>,
}

/// One lease's delivery state, shared by its shard thread and the caller's threads.
///
/// A new `ShardProgress` is made each time a shard's lease is captured, so marks for
/// records of an earlier lease never count toward a later one.
#[derive(Debug)]
pub(crate) struct ShardProgress {
    shard_id: Arc<str>,
    /// This client's membership of the fleet: past it, nothing is handed out either.
    membership: Arc<Membership>,
    state: Mutex<ProgressState>,
    /// Signalled on every mark, for a draining shard thread.
    marked: Condvar,
    /// A hand-out was refused because the lease or the membership had lapsed: this
    /// lease delivers nothing more, even if renewed later (a record was dropped, so
    /// handing out the ones after it would break per-key order and stick the
    /// watermark). The shard thread then drains and gives the lease up. Outside the
    /// lock: the shard thread looks at it on every wake-up, and the callers' hand-outs
    /// must not wait for that look.
    refused: AtomicBool,
    /// Batches of this lease waiting in a lane of [`Kinsumer::process`](crate::Kinsumer::process)
    /// (another worker is at work on the shard): the shard thread sends no more meanwhile.
    queued: AtomicUsize,
    /// The batch that told a closed shard's end without records was processed (see
    /// [`Batch::is_shard_end`](crate::Batch::is_shard_end)): the shard may finish, and
    /// its children be read, only after.
    end_processed: AtomicBool,
    /// A retry was asked for and the shard thread has not acted on it yet (looked at on
    /// every wake-up of the shard thread, outside the lock).
    retry_pending: AtomicBool,
    /// What of this lease is durable, for [`Kinsumer::commit`](crate::Kinsumer::commit).
    durable: Mutex<Durable>,
    durable_changed: Condvar,
    /// The shard's meter, if the `metrics` feature measures this consumer: what this
    /// lease measured and no export took goes to it when the lease's progress is dropped.
    #[cfg(feature = "metrics")]
    meter: Option<Arc<crate::meter::ShardMeter>>,
}

/// How far this lease's commits got.
#[derive(Debug, Default)]
struct Durable {
    /// The processed-prefix length the last successful write covers.
    count: u64,
    /// Failed writes so far, and the last one's error.
    failures: u64,
    last_failure: Option<String>,
    /// The lease is over (released, lost or given up): nothing more will be written.
    over: bool,
}

/// Where a wait for a commit of this lease begins: the processed prefix to be covered,
/// and the failures counted so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommitTarget {
    count: u64,
    failures: u64,
}

impl ShardProgress {
    pub(crate) fn new(shard_id: Arc<str>, membership: Arc<Membership>) -> Self {
        ShardProgress {
            shard_id,
            membership,
            state: Mutex::new(ProgressState {
                watermark: Watermark::default(),
                handed_out: 0,
                phase: Phase::Delivering,
                held_back_since: None,
                valid_until: None,
                retry: None,
                stale_below: 0,
                position: None,
                #[cfg(feature = "metrics")]
                flow: crate::meter::Flow::default(),
                #[cfg(feature = "metrics")]
                clock: (std::time::SystemTime::now(), Instant::now()),
            }),
            marked: Condvar::new(),
            refused: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            end_processed: AtomicBool::new(false),
            retry_pending: AtomicBool::new(false),
            durable: Mutex::new(Durable::default()),
            durable_changed: Condvar::new(),
            #[cfg(feature = "metrics")]
            meter: None,
        }
    }

    /// Measures this lease into `meter` (the `metrics` feature); before it is shared.
    #[cfg(feature = "metrics")]
    pub(crate) fn with_meter(mut self, meter: Option<Arc<crate::meter::ShardMeter>>) -> Self {
        self.meter = meter;
        self
    }

    /// What was measured of this lease since the last take.
    #[cfg(feature = "metrics")]
    pub(crate) fn take_flow(&self) -> crate::meter::Flow {
        std::mem::take(&mut self.state.lock().flow)
    }

    pub(crate) fn shard_id(&self) -> &Arc<str> {
        &self.shard_id
    }

    /// Records that record `index` goes to the caller now; `false` if the lease is
    /// ending and the record must be dropped instead (the next owner delivers it).
    #[cfg(test)]
    pub(crate) fn hand_out(&self, index: u64) -> bool {
        self.hand_out_at(index, "", None, HandOut::default())
    }

    /// [`hand_out`](ShardProgress::hand_out) of record `index`, whose sequence number and
    /// sub-sequence number are `seq` and `sub`: the shard's position from now. `what`
    /// is what goes out with it (the whole batch when it is a batch's last record).
    pub(crate) fn hand_out_at(
        &self,
        index: u64,
        seq: &str,
        sub: Option<u64>,
        #[cfg_attr(not(feature = "metrics"), allow(unused_variables))] what: HandOut,
    ) -> bool {
        let mut st = self.state.lock();
        if st.phase != Phase::Delivering {
            return false;
        }
        if index < st.stale_below || st.retry.as_ref().is_some_and(|r| index >= r.index) {
            // Read before a retry (it comes again), or after a record that failed.
            return false;
        }
        // A process that was suspended (SIGSTOP, a VM pause) past its lease must not hand
        // out a single record before its shard thread notices.
        let now = Instant::now();
        if st.valid_until.is_some_and(|t| now > t) || !self.membership.valid_at(now) {
            // The record is dropped (the next owner delivers it): so is every later one.
            st.phase = Phase::Draining;
            self.refused.store(true, AtomicOrdering::Release);
            return false;
        }
        st.handed_out = st.handed_out.max(index + 1);
        st.held_back_since.get_or_insert(now);
        let (buf, at) = st.position.get_or_insert_with(|| (String::new(), None));
        buf.clear();
        buf.push_str(seq);
        *at = sub;
        #[cfg(feature = "metrics")]
        if self.meter.is_some() {
            st.flow.records += what.records;
            st.flow.bytes += what.bytes;
            if let Some(arrival) = what.arrival {
                // The wall clock from the monotonic reading taken anyway, re-anchored
                // every second (arrival times are whole milliseconds).
                if now.saturating_duration_since(st.clock.1) >= std::time::Duration::from_secs(1) {
                    st.clock = (std::time::SystemTime::now(), now);
                }
                let wall = st.clock.0 + now.saturating_duration_since(st.clock.1);
                let waited = wall.duration_since(arrival).unwrap_or_default();
                st.flow.lag_us.record(micros(waited));
            }
        }
        true
    }

    /// The last record handed out, if one was (sequence number, sub-sequence number).
    pub(crate) fn position(&self) -> Option<(String, Option<u64>)> {
        self.state.lock().position.clone()
    }

    /// Marks records `first..=last` processed (`seq` and `part`: those of `last`).
    pub(crate) fn mark(&self, first: u64, last: u64, seq: &str, part: Option<&AggregatePart>) {
        let mut st = self.state.lock();
        if st.retry.as_ref().is_some_and(|r| last >= r.index) {
            // At or after a record that failed: read and delivered again.
            return;
        }
        if st.phase != Phase::Sealed {
            let before = st.watermark.processed_count();
            st.watermark.mark_run(first, last, seq, part);
            let after = st.watermark.processed_count();
            if after != before {
                #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
                let mut now = None;
                #[cfg(feature = "metrics")]
                if let (Some(_), Some(since)) = (&self.meter, st.held_back_since) {
                    let at = *now.insert(Instant::now());
                    st.flow
                        .processing_us
                        .record(micros(at.saturating_duration_since(since)));
                }
                st.held_back_since =
                    (st.handed_out > after).then(|| now.unwrap_or_else(Instant::now));
            }
            drop(st);
            self.marked.notify_all();
        }
    }

    /// Asks for record `request.index` and every later one to be delivered again (the
    /// earliest such request wins until the shard thread acts on it); wakes the shard
    /// thread. Ignored for a record read before an earlier retry, or once the lease is
    /// ending (the next owner reads it again anyway).
    pub(crate) fn request_retry(&self, request: RetryRequest) {
        let mut st = self.state.lock();
        if st.phase != Phase::Delivering
            || request.index < st.stale_below
            || request.index < st.watermark.processed_count()
        {
            return;
        }
        if st.retry.as_ref().is_none_or(|r| request.index < r.index) {
            st.retry = Some(request);
        }
        self.retry_pending.store(true, AtomicOrdering::Release);
        drop(st);
        self.marked.notify_all();
    }

    /// Whether a retry waits for the shard thread.
    pub(crate) fn retry_pending(&self) -> bool {
        self.retry_pending.load(AtomicOrdering::Acquire)
    }

    /// The shard thread acts on the retry asked for (if one still is): every record it
    /// numbered so far (below `end`) counts as done without moving the checkpoint, and is
    /// dropped if it is still on its way; reading starts again after the processed
    /// prefix, numbering records from `end + 1` (index `end` stays unused, so that an end
    /// batch sent at `end` is known to be from before the retry).
    pub(crate) fn take_retry(&self, end: u64) -> Rewind {
        let end = end + 1;
        let mut st = self.state.lock();
        let request = st.retry.take();
        self.retry_pending.store(false, AtomicOrdering::Release);
        let checkpoint = st.watermark.processed().cloned();
        st.watermark.skip_to(end);
        st.stale_below = end;
        st.handed_out = st.handed_out.max(end);
        st.held_back_since = None;
        self.end_processed.store(false, AtomicOrdering::Release);
        Rewind {
            request,
            checkpoint,
        }
    }

    /// A write covering the first `count` records landed.
    pub(crate) fn committed(&self, count: u64) {
        let mut d = self.durable.lock();
        d.count = d.count.max(count);
        drop(d);
        self.durable_changed.notify_all();
    }

    /// A checkpoint write failed with `error` (it is tried again at the next slot).
    pub(crate) fn commit_failed(&self, error: &str) {
        let mut d = self.durable.lock();
        d.failures += 1;
        d.last_failure = Some(error.to_owned());
        drop(d);
        self.durable_changed.notify_all();
    }

    /// The lease is over: nothing more of it will be written.
    pub(crate) fn lease_over(&self) {
        self.durable.lock().over = true;
        self.durable_changed.notify_all();
    }

    /// What a commit asked for now must cover: every record processed so far.
    pub(crate) fn commit_target(&self) -> CommitTarget {
        let count = self.processed_since(u64::MAX).0;
        CommitTarget {
            count,
            failures: self.durable.lock().failures,
        }
    }

    /// Waits until a write covering `target` landed (`Ok`), or one failed since the
    /// target was taken, the lease ended short of it, or `deadline` passed (`Err`, why).
    pub(crate) fn wait_committed(
        &self,
        target: CommitTarget,
        deadline: Instant,
    ) -> std::result::Result<(), String> {
        let mut d = self.durable.lock();
        loop {
            if d.count >= target.count {
                return Ok(());
            }
            if d.failures > target.failures {
                return Err(d
                    .last_failure
                    .clone()
                    .unwrap_or_else(|| "a checkpoint write failed".to_owned()));
            }
            if d.over {
                return Err(
                    "the lease ended before its checkpoint covered every processed \
                            record (the next owner delivers the rest again)"
                        .to_owned(),
                );
            }
            if self
                .durable_changed
                .wait_until(&mut d, deadline)
                .timed_out()
            {
                return if d.count >= target.count {
                    Ok(())
                } else {
                    Err("timed out waiting for the checkpoint write".to_owned())
                };
            }
        }
    }

    /// A batch of this lease went into a lane to wait for its shard's worker.
    pub(crate) fn queue(&self) {
        self.queued.fetch_add(1, AtomicOrdering::AcqRel);
    }

    /// A batch of this lease left its lane (started, or dropped); wakes the shard thread.
    pub(crate) fn unqueue(&self) {
        self.queued.fetch_sub(1, AtomicOrdering::AcqRel);
        let _st = self.state.lock();
        self.marked.notify_all();
    }

    /// Waits while a batch of this lease waits in a lane, until `deadline`; `true` if
    /// none does (any more).
    pub(crate) fn wait_while_queued(&self, deadline: Instant) -> bool {
        let mut st = self.state.lock();
        while self.queued.load(AtomicOrdering::Acquire) > 0 {
            if self.marked.wait_until(&mut st, deadline).timed_out() {
                return self.queued.load(AtomicOrdering::Acquire) == 0;
            }
        }
        true
    }

    /// The empty batch that told the shard's end (sent when the shard thread had
    /// numbered `at` records) was processed; wakes the shard thread. Ignored for one sent
    /// before a retry: the shard is read again and tells its end again.
    pub(crate) fn mark_end_processed(&self, at: u64) {
        let st = self.state.lock();
        if at < st.stale_below || st.retry.is_some() {
            return;
        }
        self.end_processed.store(true, AtomicOrdering::Release);
        drop(st);
        self.marked.notify_all();
    }

    /// Whether the empty batch that tells the shard's end, sent at `at` (see
    /// [`mark_end_processed`](ShardProgress::mark_end_processed)), still goes to the
    /// caller: not if a retry came since. (It goes out even once the shard thread has
    /// finished: it carries no records, only the news.)
    pub(crate) fn hand_out_end(&self, at: u64) -> bool {
        let st = self.state.lock();
        at >= st.stale_below && st.retry.is_none()
    }

    /// Whether the empty batch that told the shard's end was processed.
    pub(crate) fn end_processed(&self) -> bool {
        self.end_processed.load(AtomicOrdering::Acquire)
    }

    /// Whether a hand-out was refused for a lapsed lease or membership: this lease's
    /// delivery is over, and the shard thread must give the lease up.
    pub(crate) fn refused(&self) -> bool {
        self.refused.load(AtomicOrdering::Acquire)
    }

    /// Records that the lease is safe to deliver from until `until`.
    pub(crate) fn renew(&self, until: Instant) {
        let mut st = self.state.lock();
        st.valid_until = Some(st.valid_until.map_or(until, |t| t.max(until)));
    }

    /// How long the oldest record handed out and not yet processed has held the
    /// checkpoint back, if one does, and how many records were handed out from it on
    /// (records still in the buffer are not counted: the caller has not seen them).
    pub(crate) fn held_back(&self) -> Option<(std::time::Duration, u64)> {
        let st = self.state.lock();
        let since = st.held_back_since?;
        let count = st.handed_out.saturating_sub(st.watermark.processed_count());
        Some((since.elapsed(), count))
    }

    /// Waits until a record is marked or `deadline` passes.
    pub(crate) fn wait_for_mark(&self, deadline: Instant) {
        let mut st = self.state.lock();
        let _ = self.marked.wait_until(&mut st, deadline);
    }

    /// Stops hand-outs (records still in the channel are dropped), keeping marks.
    pub(crate) fn stop_handing_out(&self) {
        let mut st = self.state.lock();
        if st.phase == Phase::Delivering {
            st.phase = Phase::Draining;
        }
    }

    /// Stops hand-outs, waits until every handed-out record is processed or `deadline`
    /// passes, then seals: returns the processed prefix length and, if it moved past
    /// `since`, the checkpoint after it — the final checkpoint.
    pub(crate) fn drain_and_seal(
        &self,
        deadline: Instant,
        since: u64,
    ) -> (u64, Option<Checkpoint>) {
        let mut st = self.state.lock();
        if st.phase == Phase::Delivering {
            st.phase = Phase::Draining;
        }
        // A record that failed is never processed here: nothing to wait for past it.
        while st.phase == Phase::Draining
            && st.retry.is_none()
            && st.watermark.processed_count() < st.handed_out
        {
            if self.marked.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        st.phase = Phase::Sealed;
        Self::since(&st.watermark, since)
    }

    #[cfg(test)]
    fn is_delivering(&self) -> bool {
        self.state.lock().phase == Phase::Delivering
    }

    /// Seals at once (the lease is lost or abandoned: nothing more will be written).
    pub(crate) fn seal(&self) {
        self.state.lock().phase = Phase::Sealed;
    }

    /// The processed prefix length and, if it moved past `since`, the checkpoint after
    /// it.
    pub(crate) fn processed_since(&self, since: u64) -> (u64, Option<Checkpoint>) {
        Self::since(&self.state.lock().watermark, since)
    }

    fn since(wm: &Watermark, since: u64) -> (u64, Option<Checkpoint>) {
        let count = wm.processed_count();
        if count > since {
            (count, wm.processed().cloned())
        } else {
            (count, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(wm: &Watermark) -> Option<&str> {
        wm.processed()?.sequence_number.as_deref()
    }

    #[test]
    fn checkpoints_read_as_words_in_messages() {
        assert_eq!(Checkpoint::show(None), "none");
        assert_eq!(Checkpoint::default().to_string(), "none");
        let plain = Checkpoint::from_row(Some("49".into()), None);
        assert_eq!(plain.to_string(), "49");
        let partial = Checkpoint::from_row(
            Some("49".into()),
            Some(Partial {
                aggregate: "51".into(),
                sub_sequence_number: 3,
            }),
        );
        assert_eq!(
            partial.to_string(),
            "49, then the aggregate 51 up to its sub-record 3"
        );
        assert!(!format!("{partial}").contains("Some("));
    }

    fn cp(seq: &str) -> Checkpoint {
        Checkpoint::after(seq, None)
    }

    #[test]
    fn in_order_marks_advance() {
        let mut wm = Watermark::default();
        assert_eq!(seq(&wm), None);
        wm.mark(0, "a", None);
        wm.mark(1, "b", None);
        assert_eq!(wm.processed_count(), 2);
        assert_eq!(seq(&wm), Some("b"));
    }

    #[test]
    fn out_of_order_marks_wait_for_the_gap() {
        let mut wm = Watermark::default();
        wm.mark(2, "c", None);
        wm.mark(1, "b", None);
        assert_eq!(wm.processed_count(), 0);
        assert_eq!(seq(&wm), None);
        wm.mark(0, "a", None);
        assert_eq!(wm.processed_count(), 3);
        assert_eq!(seq(&wm), Some("c"));
        wm.mark(4, "e", None);
        assert_eq!(seq(&wm), Some("c"));
        wm.mark(3, "d", None);
        assert_eq!(seq(&wm), Some("e"));
        assert_eq!(wm.processed_count(), 5);
    }

    #[test]
    fn repeated_and_stale_marks_are_ignored() {
        let mut wm = Watermark::default();
        wm.mark(0, "a", None);
        wm.mark(0, "a", None);
        wm.mark(2, "c", None);
        wm.mark(2, "X", None);
        wm.mark(1, "b", None);
        assert_eq!(wm.processed_count(), 3);
        assert_eq!(seq(&wm), Some("c"));
    }

    #[test]
    fn runs_of_records_marked_at_once_join_the_prefix_in_any_order() {
        let mut wm = Watermark::default();
        // A batch 5..=9 processed before the batch 0..=4.
        wm.mark_run(5, 9, "j", None);
        assert_eq!(wm.processed_count(), 0);
        // One record of the later batch marked again on its own: no change.
        wm.mark(7, "h", None);
        wm.mark_run(0, 4, "e", None);
        assert_eq!(wm.processed_count(), 10);
        assert_eq!(seq(&wm), Some("j"));
        assert!(wm.ahead.is_empty());
        // A record marked alone ahead, then a run that covers it and more.
        wm.mark(12, "m", None);
        wm.mark_run(10, 14, "o", None);
        assert_eq!(wm.processed_count(), 15);
        assert_eq!(seq(&wm), Some("o"));
        assert!(wm.ahead.is_empty());
        // A run that reaches back below the prefix moves it to its end.
        wm.mark_run(13, 16, "q", None);
        assert_eq!(wm.processed_count(), 17);
        assert_eq!(seq(&wm), Some("q"));
        // A run entirely below it changes nothing.
        wm.mark_run(2, 8, "z", None);
        assert_eq!(seq(&wm), Some("q"));
    }

    #[test]
    fn shuffled_marks_reach_the_full_prefix() {
        // A fixed permutation of 0..100 (multiplication by a unit mod 101, minus one).
        let mut wm = Watermark::default();
        for i in 1..=100u64 {
            let idx = (i * 37) % 101 - 1;
            wm.mark(idx, &idx.to_string(), None);
        }
        assert_eq!(wm.processed_count(), 100);
        assert_eq!(seq(&wm), Some("99"));
        assert!(wm.ahead.is_empty());
    }

    #[test]
    fn draining_waits_for_handed_out_records_then_seals() {
        let p = Arc::new(ShardProgress::new(
            Arc::from("shard-1"),
            Arc::new(Membership::unbounded()),
        ));
        assert!(p.hand_out(0));
        p.mark(0, 0, "a", None);
        assert!(p.hand_out(1));
        assert_eq!(p.processed_since(0), (1, Some(cp("a"))));
        // Record 1 is with the caller; it is marked while the shard thread drains.
        let marker = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                while p.is_delivering() {
                    std::thread::yield_now();
                }
                p.mark(1, 1, "b", None);
            })
        };
        let far = Instant::now() + std::time::Duration::from_secs(30);
        assert_eq!(p.drain_and_seal(far, 1), (2, Some(cp("b"))));
        marker.join().unwrap();
        // Sealed: no hand-outs, marks ignored.
        assert!(!p.hand_out(3));
        p.mark(2, 2, "c", None);
        assert_eq!(p.processed_since(0), (2, Some(cp("b"))));
    }

    fn request(index: u64, seq: &str) -> RetryRequest {
        RetryRequest {
            index,
            sequence_number: seq.into(),
            sub_sequence_number: None,
            error: "failed".into(),
        }
    }

    #[test]
    fn a_retry_stops_hand_outs_from_its_record_and_rewinds_to_the_processed_prefix() {
        let p = ShardProgress::new(Arc::from("shard-1"), Arc::new(Membership::unbounded()));
        for i in 0..4 {
            assert!(p.hand_out(i));
        }
        p.mark(0, 0, "a", None);
        p.mark(3, 3, "d", None); // out of order, after the one that fails
        p.request_retry(request(2, "c"));
        assert!(p.retry_pending());
        // Nothing from the failed record on goes out or counts; before it, it does.
        assert!(!p.hand_out(4));
        p.mark(2, 2, "c", None);
        p.mark(1, 1, "b", None);
        assert_eq!(p.processed_since(0), (2, Some(cp("b"))));
        // The shard thread had numbered 6 records: all are done, the checkpoint stays.
        let rewind = p.take_retry(6);
        assert!(!p.retry_pending());
        assert_eq!(rewind.request.map(|r| r.index), Some(2));
        assert_eq!(rewind.checkpoint, Some(cp("b")));
        assert_eq!(p.processed_since(0), (7, Some(cp("b"))));
        // Records of before the retry never go out; late marks of them do not count.
        assert!(!p.hand_out(5));
        p.mark(3, 3, "d", None);
        assert_eq!(p.processed_since(0), (7, Some(cp("b"))));
        // Records read again go out and count.
        assert!(p.hand_out(7));
        p.mark(7, 7, "c", None);
        assert_eq!(p.processed_since(0), (8, Some(cp("c"))));
    }

    #[test]
    fn a_retry_of_a_processed_or_stale_record_is_ignored_and_an_old_end_batch_is_stale() {
        let p = ShardProgress::new(Arc::from("shard-1"), Arc::new(Membership::unbounded()));
        assert!(p.hand_out(0));
        p.mark(0, 0, "a", None);
        p.request_retry(request(0, "a"));
        assert!(!p.retry_pending());
        // An end batch sent with 1 record numbered; then a retry of a later record.
        assert!(p.hand_out_end(1));
        assert!(p.hand_out(1));
        p.request_retry(request(1, "b"));
        assert!(!p.hand_out_end(1));
        let _ = p.take_retry(2);
        p.mark_end_processed(1);
        assert!(!p.end_processed());
        assert!(!p.hand_out_end(2));
        p.request_retry(request(1, "b"));
        assert!(!p.retry_pending());
        // An end batch of after the retry counts.
        assert!(p.hand_out_end(3));
        p.mark_end_processed(3);
        assert!(p.end_processed());
    }

    #[test]
    fn nothing_is_handed_out_past_the_lease_or_the_membership() {
        let lapsed = Arc::new(Membership::new(std::time::Duration::from_secs(12)));
        let p = ShardProgress::new(Arc::from("shard-1"), Arc::clone(&lapsed));
        assert!(!p.hand_out(0), "a membership never renewed is not valid");
        lapsed.renewed(Instant::now());
        // That lease's delivery is over; the next lease's goes on.
        let p = ShardProgress::new(Arc::from("shard-1"), Arc::clone(&lapsed));
        assert!(p.hand_out(0));
        let q = ShardProgress::new(Arc::from("shard-2"), Arc::new(Membership::unbounded()));
        q.renew(Instant::now() - std::time::Duration::from_millis(1));
        assert!(!q.hand_out(0), "a lease past its renewal deadline");
    }

    #[test]
    fn a_refused_hand_out_ends_the_leases_delivery_even_once_renewed() {
        let margin = std::time::Duration::from_secs(12);
        let now = Instant::now();
        // A membership not valid (as after its last landed write's margin ran out)...
        let membership = Arc::new(Membership::new(margin));
        let p = ShardProgress::new(Arc::from("shard-1"), Arc::clone(&membership));
        p.renew(now + margin);
        assert!(!p.refused());
        assert!(!p.hand_out(0));
        assert!(p.refused());
        // ...revived by a late write: the lease's delivery stays over.
        membership.renewed(Instant::now());
        assert!(
            !p.hand_out(1),
            "a record after a dropped one was handed out"
        );
        // The same for a lease deadline that lapsed and was then renewed.
        let q = ShardProgress::new(Arc::from("shard-2"), Arc::new(Membership::unbounded()));
        assert!(q.hand_out(0));
        q.mark(0, 0, "a", None);
        q.renew(Instant::now() - std::time::Duration::from_millis(1));
        assert!(!q.hand_out(1));
        q.renew(Instant::now() + margin);
        assert!(!q.hand_out(2));
        assert!(q.refused());
        // What was processed before still makes the final checkpoint.
        assert_eq!(q.drain_and_seal(Instant::now(), 0), (1, Some(cp("a"))));
    }

    #[test]
    fn draining_gives_up_at_the_deadline() {
        let p = ShardProgress::new(Arc::from("shard-1"), Arc::new(Membership::unbounded()));
        assert!(p.hand_out(0));
        assert!(p.hand_out(1));
        p.mark(0, 0, "a", None);
        assert_eq!(p.drain_and_seal(Instant::now(), 0), (1, Some(cp("a"))));
        p.mark(1, 1, "b", None);
        assert_eq!(p.processed_since(1), (1, None));
    }

    fn part(sub: u64, last: bool, before: Option<&str>) -> AggregatePart {
        AggregatePart {
            sub_sequence_number: sub,
            last,
            before: before.map(Arc::from),
        }
    }

    #[test]
    fn inside_an_aggregate_the_checkpoint_stays_before_it() {
        let mut wm = Watermark::default();
        wm.mark(0, "10", None);
        let before = Some("10");
        wm.mark(1, "20", Some(&part(0, false, before)));
        assert_eq!(
            wm.processed(),
            Some(&Checkpoint {
                sequence_number: Some("10".into()),
                partial: Some(Partial {
                    aggregate: "20".into(),
                    sub_sequence_number: 0
                }),
            })
        );
        wm.mark(3, "20", Some(&part(2, true, before)));
        assert_eq!(
            wm.processed()
                .unwrap()
                .partial
                .as_ref()
                .unwrap()
                .sub_sequence_number,
            0
        );
        wm.mark(2, "20", Some(&part(1, false, before)));
        // The aggregate's last user record completes it: a plain checkpoint on it.
        assert_eq!(wm.processed(), Some(&cp("20")));
        wm.mark(4, "30", Some(&part(0, false, Some("20"))));
        assert_eq!(seq(&wm), Some("20"));
        assert_eq!(
            wm.processed().unwrap().partial.as_ref().unwrap().aggregate,
            "30"
        );
        wm.mark(5, "40", None);
        assert_eq!(wm.processed(), Some(&cp("40")));
    }

    #[test]
    fn an_aggregate_first_in_the_shard_has_no_sequence_number_before_it() {
        let mut wm = Watermark::default();
        wm.mark(0, "5", Some(&part(0, false, None)));
        let c = wm.processed().unwrap();
        assert_eq!(c.sequence_number, None);
        assert_eq!(c.partial.as_ref().unwrap().aggregate, "5");
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_sequence_numbers("9", "10"), Less);
        assert_eq!(compare_sequence_numbers("10", "9"), Greater);
        assert_eq!(compare_sequence_numbers("123", "123"), Equal);
        assert_eq!(compare_sequence_numbers("0123", "123"), Equal);
        assert_eq!(
            compare_sequence_numbers(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692540925702759324208523137515618"
            ),
            Less
        );
    }

    #[test]
    fn row_progress_counts_only_after_its_sequence_number() {
        let p = |agg: &str| {
            Some(Partial {
                aggregate: agg.into(),
                sub_sequence_number: 3,
            })
        };
        // Written by this crate: the aggregate follows SequenceNumber.
        assert!(
            Checkpoint::from_row(Some("10".into()), p("20"))
                .partial
                .is_some()
        );
        assert!(Checkpoint::from_row(None, p("20")).partial.is_some());
        // Left behind when a Go client moved SequenceNumber on to (or past) the aggregate.
        assert!(
            Checkpoint::from_row(Some("20".into()), p("20"))
                .partial
                .is_none()
        );
        assert!(
            Checkpoint::from_row(Some("30".into()), p("20"))
                .partial
                .is_none()
        );
        assert_eq!(Checkpoint::from_row(Some("30".into()), None), cp("30"));
    }
}
