//! Delivery from a shard thread: unpacking KPL aggregates, handing records to the
//! bounded channel, and the waits in between (for room, for marks, for the source),
//! during which the lease is still committed on schedule.

use crate::aggregate;
use crate::batch::Batch;
use crate::error::Result;
use crate::record::{Record, RecordParts};
use crate::source::{RecordSource, Waited};
use crate::watermark::{AggregatePart, ShardProgress};
use crossbeam_channel::{Select, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Interrupt, Reader, Worker};

impl Worker<'_> {
    /// Turns one Kinesis record into the records to deliver: its user records if it is
    /// a KPL aggregate (less those processed before a restart), else itself.
    pub(super) fn unpack(
        &mut self,
        r: aws_sdk_kinesis::types::Record,
        progress: &Arc<ShardProgress>,
    ) -> Result<(), Interrupt> {
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
                    return self.push_users(users, seq, arrival, skip_through, progress);
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
        self.push(parts, progress)
    }

    /// Pushes the user records of aggregate `seq`, less those up to `skip_through`
    /// (processed before a restart).
    fn push_users(
        &mut self,
        users: Vec<aggregate::UserRecord>,
        seq: String,
        arrival: Option<SystemTime>,
        skip_through: Option<u64>,
        progress: &Arc<ShardProgress>,
    ) -> Result<(), Interrupt> {
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
            self.push(parts, progress)?;
        }
        self.last_read = Some(seq);
        Ok(())
    }

    /// Numbers a record and queues it for the caller — or, if it is past its last
    /// allowed attempt, gives it to the dead-letter handler.
    pub(super) fn push(
        &mut self,
        parts: RecordParts,
        progress: &Arc<ShardProgress>,
    ) -> Result<(), Interrupt> {
        let record = Record::new(parts, Arc::clone(progress), self.next_index);
        self.next_index += 1;
        if self.failures.is_empty() {
            self.unpacked.push_back(record);
            return Ok(());
        }
        match self.attempt_of(record) {
            super::retry::Attempt::Deliver(record) => {
                self.unpacked.push_back(record);
                Ok(())
            }
            super::retry::Attempt::SetAside {
                record,
                attempts,
                error,
            } => self.dead_letter(record, attempts, error, progress),
        }
    }

    /// Hands the next batch of unpacked records to the caller (at most `cap` of them),
    /// once `max_unmarked` and the buffer's bounds allow at least one; says how many it
    /// handed over. While the channel is full it commits on schedule and, when due,
    /// prefetches the next fetch, so the server's time and the decoding overlap the
    /// caller's work.
    pub(super) fn send(
        &mut self,
        cap: usize,
        progress: &Arc<ShardProgress>,
        reader: &mut Reader<'_>,
    ) -> Result<u64, Interrupt> {
        let room = self.wait_for_marks(progress)?;
        self.wait_for_lane(progress)?;
        let (records, bytes) = self.wait_for_room(cap.min(room), progress)?;
        let taken: Vec<Record> = self.unpacked.drain(..records).collect();
        let shard_end =
            reader.current_is_last && reader.current.len() == 0 && self.unpacked.is_empty();
        let batch = Batch::new(
            taken,
            Arc::clone(progress),
            reader.current_millis,
            shard_end,
        );
        let sent = self.send_counted(batch, progress, reader);
        if sent.is_err() {
            self.ctx.budget.release(records, bytes);
        } else if shard_end {
            self.end_told = super::EndTold::WithRecords;
        }
        sent.map(|()| records as u64)
    }

    /// How many of the unpacked records (at most `cap`, at least one) fit in `room`
    /// (records, bytes; `None`: an empty buffer, where any batch fits), and their bytes.
    /// `None` if not even one does.
    fn fitting(&self, cap: usize, room: Option<(usize, usize)>) -> Option<(usize, usize)> {
        let (records_room, bytes_room) = room.unwrap_or((cap, self.ctx.config.buffer_bytes()));
        let mut bytes = 0usize;
        let mut n = 0usize;
        for r in self.unpacked.iter().take(cap.min(records_room)) {
            let size = r.buffered_size();
            if bytes.saturating_add(size) > bytes_room {
                break;
            }
            bytes += size;
            n += 1;
        }
        if n == 0 && room.is_none() {
            // Larger than the whole buffer: it goes alone.
            return self.unpacked.front().map(|r| (1, r.buffered_size()));
        }
        (n > 0).then_some((n, bytes))
    }

    /// Waits (committing on schedule) while `max_unmarked` records of this shard are
    /// handed out past the oldest one not yet processed; then says how many more may be.
    pub(super) fn wait_for_marks(&mut self, progress: &ShardProgress) -> Result<usize, Interrupt> {
        let max = self.ctx.config.max_unmarked();
        let room = |outstanding: u64| usize::try_from(max - outstanding).unwrap_or(usize::MAX);
        // The processed count only grows: a count read earlier is a lower bound, and the
        // progress lock is taken only when that bound alone would reach the limit.
        let outstanding = self.delivered.saturating_sub(self.processed_seen);
        if outstanding < max {
            return Ok(room(outstanding));
        }
        let mut warned = false;
        loop {
            self.processed_seen = progress.processed_since(u64::MAX).0;
            let outstanding = self.delivered.saturating_sub(self.processed_seen);
            if outstanding < max {
                return Ok(room(outstanding));
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

    /// Waits (committing on schedule) while a batch of this shard waits in a lane of
    /// `Kinsumer::process` for the worker at work on the shard: the lane gave that batch's
    /// room in the buffer back so that other shards go on, and this shard sends nothing
    /// more until it starts (lanes then hold at most what the channel held).
    fn wait_for_lane(&mut self, progress: &ShardProgress) -> Result<(), Interrupt> {
        loop {
            if progress.wait_while_queued(Instant::now()) {
                return Ok(());
            }
            let deadline = self.between_waits(progress)?;
            progress.wait_while_queued(deadline);
        }
    }

    /// What every wait of the shard thread does between its naps: commits on schedule,
    /// and ends the wait when the caller asked for a record again.
    fn tend(&mut self, progress: &ShardProgress) -> Result<(), Interrupt> {
        self.commit_if_due(progress)?;
        if progress.retry_pending() {
            return Err(Interrupt::Retry);
        }
        Ok(())
    }

    /// Between two short waits for the caller: commits on schedule, checks for a stop,
    /// and says how long the next wait may be (the stop is checked every 100 ms).
    pub(super) fn between_waits(&mut self, progress: &ShardProgress) -> Result<Instant, Interrupt> {
        self.tend(progress)?;
        if !matches!(self.stop.try_recv(), Err(TryRecvError::Empty)) {
            return Err(Interrupt::Stop);
        }
        Ok(self
            .next_commit
            .min(Instant::now() + Duration::from_millis(100)))
    }

    /// Reserves room in the buffer's bounds for as many of the next unpacked records as
    /// fit (at most `cap`, at least one), waiting (and committing on schedule) while
    /// none does; says how many, and their bytes.
    pub(super) fn wait_for_room(
        &mut self,
        cap: usize,
        progress: &ShardProgress,
    ) -> Result<(usize, usize), Interrupt> {
        loop {
            if let Some((records, bytes)) = self.fitting(cap, self.ctx.budget.room())
                && self.ctx.budget.try_reserve(records, bytes)
            {
                return Ok((records, bytes));
            }
            // Woken by the caller taking batches.
            let deadline = self.between_waits(progress)?;
            self.ctx.budget.wait(deadline);
        }
    }

    /// Hands one batch over within the channel's bound.
    pub(super) fn send_counted(
        &mut self,
        batch: Batch,
        progress: &ShardProgress,
        reader: &mut Reader<'_>,
    ) -> Result<(), Interrupt> {
        let mut batch = match self.ctx.records.try_send(batch) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(_)) => return Err(Interrupt::Stop),
            Err(TrySendError::Full(r)) => r,
        };
        loop {
            // On a retry the batch is dropped: its records are read again.
            self.tend(progress)?;
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
                        .send(&self.ctx.records, batch)
                        .map_err(|_| Interrupt::Stop);
                }
                Ok(op) => {
                    let _ = op.recv(&self.stop);
                    return Err(Interrupt::Stop);
                }
                Err(_) => {
                    // Re-offer on the next round.
                    batch = match self.ctx.records.try_send(batch) {
                        Ok(()) => return Ok(()),
                        Err(TrySendError::Disconnected(_)) => return Err(Interrupt::Stop),
                        Err(TrySendError::Full(r)) => r,
                    };
                }
            }
        }
    }

    /// Sleeps until `deadline`, committing on schedule; `Err` on stop or a lost lease.
    pub(super) fn wait_until(
        &mut self,
        deadline: Instant,
        progress: &ShardProgress,
    ) -> Result<(), Interrupt> {
        loop {
            self.tend(progress)?;
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
    pub(super) fn tick(
        &mut self,
        progress: &ShardProgress,
        interrupted: &mut Option<Interrupt>,
    ) -> bool {
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
    pub(super) fn wait_for_source(
        &mut self,
        source: &dyn RecordSource,
        progress: &ShardProgress,
    ) -> Result<(), Interrupt> {
        loop {
            self.tend(progress)?;
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
    pub(super) fn wake_deadline(&self, progress: &ShardProgress) -> Instant {
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
}
