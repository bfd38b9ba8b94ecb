//! The read side of a shard thread ([`Reader`]): its source, the batch being handed
//! over, at most one prefetched batch, the fetch schedule and the fetch sizes.

use crate::bridge::Bridge;
use crate::error::Result;
use crate::health::HealthState;
use crate::source::{Batch, RecordSource, SourceError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The read side of a shard: its source, the batch being handed over, at most one
/// prefetched batch, and the fetch schedule.
///
/// Memory stays within one batch's worth of records per shard: a prefetch happens only
/// once the current batch is at most half delivered, and asks for no more records than
/// `max_records` minus those still waiting to be handed over.
pub(super) struct Reader<'s> {
    pub(super) source: &'s mut dyn RecordSource,
    pub(super) shard: Arc<str>,
    pub(super) stats: Arc<dyn crate::stats::Stats>,
    pub(super) current: std::vec::IntoIter<aws_sdk_kinesis::types::Record>,
    /// The current batch ends the shard: nothing follows it.
    pub(super) current_is_last: bool,
    /// What the current batch said of its lag.
    pub(super) current_millis: Option<i64>,
    pub(super) next: Option<Batch>,
    /// No GetRecords before this (the throttle delay after the previous one).
    pub(super) next_fetch: Instant,
    pub(super) max_records: i32,
    pub(super) throttle: Duration,
    /// Polling an idle shard slows down to this ([`idle_delay`]).
    pub(super) idle_poll: Duration,
    /// Consecutive empty responses with nothing behind the tip.
    pub(super) idle_streak: u32,
    /// Bytes (data and key) per Kinesis record fetched, smoothed; `None` before the
    /// first record: sizes the fetches ([`Reader::limit`]).
    pub(super) bytes_per_record: Option<usize>,
    /// Kinesis records and their bytes fetched since the worker last took them
    /// ([`Reader::take_fetched`]), for the shard's load.
    fetched: (usize, usize),
    /// [`Config::fetch_bytes`], shared among the shards this client reads (counted in
    /// `health`).
    pub(super) fetch_bytes: usize,
    /// After a retry, until the first record read again is processed: at most this many
    /// records a fetch, so that a record failing again wastes little of what was read.
    pub(super) probe_cap: Option<i32>,
    pub(super) health: Arc<HealthState>,
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

impl<'s> Reader<'s> {
    /// A reader of `source` with nothing fetched yet, sized and paced by `ctx`'s config.
    pub(super) fn new(
        source: &'s mut dyn RecordSource,
        ctx: &super::ShardContext,
        throttle: Duration,
        health: Arc<HealthState>,
    ) -> Self {
        Reader {
            source,
            shard: Arc::clone(&ctx.shard_id),
            stats: Arc::clone(ctx.config.stats()),
            current: Vec::new().into_iter(),
            current_is_last: false,
            current_millis: None,
            next: None,
            next_fetch: Instant::now(),
            max_records: ctx.config.max_records(),
            throttle,
            idle_poll: ctx.config.idle_poll_delay(),
            idle_streak: 0,
            bytes_per_record: None,
            fetched: (0, 0),
            fetch_bytes: ctx.config.fetch_bytes(),
            probe_cap: None,
            health,
        }
    }

    /// How many records the next call may ask for, with `waiting` records fetched and
    /// not yet handed over: as many as fit in this shard's share of
    /// [`Config::fetch_bytes`] at the bytes per record seen so far (one, to learn the
    /// size, before any), at least one and at most `max_records`.
    pub(super) fn limit(&self, waiting: usize) -> i32 {
        let share = self.fetch_bytes / self.health.owned_shards().max(1);
        let limit = fetch_limit(self.bytes_per_record, share, waiting, self.max_records);
        self.probe_cap.map_or(limit, |cap| limit.min(cap))
    }

    /// Learns the bytes per record from a fetched batch.
    pub(super) fn learn_size(&mut self, batch: &Batch) {
        if batch.records.is_empty() {
            return;
        }
        let bytes: usize = batch
            .records
            .iter()
            .map(|r| r.data.as_ref().len() + r.partition_key.len())
            .sum();
        self.fetched.0 += batch.records.len();
        self.fetched.1 += bytes;
        self.bytes_per_record = Some(smoothed_size(
            self.bytes_per_record,
            bytes / batch.records.len(),
        ));
    }

    /// The records and bytes fetched since the last call.
    pub(super) fn take_fetched(&mut self) -> (usize, usize) {
        std::mem::take(&mut self.fetched)
    }

    /// The polling interval, once the shard has answered empty at the tip often enough
    /// for it to have backed off all the way (`None` before that).
    pub(super) fn settled_idle(&self) -> Option<Duration> {
        let ceiling = self.idle_poll.max(self.throttle);
        (self.idle_streak > 0
            && idle_delay(self.throttle, self.idle_poll, self.idle_streak) >= ceiling)
            .then_some(ceiling)
    }

    pub(super) fn fetch(
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
            self.polled(batch, started, probe);
        }
        result
    }

    /// After a poll sent at `started` answered `batch`: the next one's time (backing
    /// off while idle at the tip; at once after the call that learned the record size,
    /// `probe`), and the report to `Stats`.
    fn polled(&mut self, batch: &Batch, started: Instant, probe: bool) {
        let idle = batch.records.is_empty() && batch.millis_behind_latest == Some(0);
        self.idle_streak = if idle {
            self.idle_streak.saturating_add(1)
        } else {
            0
        };
        self.next_fetch = started + idle_delay(self.throttle, self.idle_poll, self.idle_streak);
        if probe && !batch.records.is_empty() {
            // The sized call follows at once (two calls in a throttle delay, within
            // Kinesis' five a second).
            self.next_fetch = started;
        }
        self.stats
            .records_fetched(&self.shard, batch.records.len(), batch.millis_behind_latest);
        log::debug!(
            "shard {}: fetched {} records ({:?} ms behind)",
            self.shard,
            batch.records.len(),
            batch.millis_behind_latest
        );
    }

    /// When a prefetch may run, if one is useful at all.
    pub(super) fn prefetch_at(&self) -> Option<Instant> {
        let remaining = self.current.len();
        let half = usize::try_from(self.max_records / 2).unwrap_or(0);
        // A pushing source already holds the next batch ready (its hand-off): a
        // prefetch would only hold a third one.
        (self.next.is_none() && !self.current_is_last && remaining <= half && !self.source.pushes())
            .then_some(self.next_fetch)
    }

    /// Fetches the next batch ahead. A failure is left for the main path to meet
    /// again, with its retries and reporting.
    pub(super) fn prefetch(&mut self, bridge: &Bridge, tick: crate::source::Tick<'_>) {
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
