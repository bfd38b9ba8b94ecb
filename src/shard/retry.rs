//! Records that failed ([`Record::retry_later`](crate::Record::retry_later)): the shard is
//! read again from its first unprocessed record after a growing delay, and a record past
//! its last allowed attempt goes to the dead-letter handler instead of the caller.
//!
//! Attempts are counted by this lease's thread (a new owner counts from 1 again: the
//! checkpoint row does not carry them). A crash or a hand-over during the delay loses
//! nothing: the checkpoint is before the failed record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dead_letter::Letter;
use crate::health::ShardState;
use crate::record::Record;
use crate::retry::Backoff;
use crate::source::StartAt;
use crate::watermark::{Checkpoint, RetryRequest, ShardProgress, compare_sequence_numbers};

use super::{Interrupt, Worker};

/// The longest delay before a record is delivered again, or the dead-letter handler is
/// called again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// After a retry, the most records a fetch asks for until the first record read again
/// is processed: a record that fails again then costs a small read, not a full one.
pub(super) const PROBE_RECORDS: i32 = 100;

/// A record of this lease that failed, and how often.
#[derive(Debug)]
pub(super) struct Failed {
    sequence_number: String,
    sub_sequence_number: Option<u64>,
    attempts: u32,
    error: String,
}

/// What becomes of a record read again ([`Worker::attempt_of`]).
pub(super) enum Attempt {
    Deliver(Record),
    /// To the dead-letter handler: it failed `attempts` times, last with `error`.
    SetAside {
        record: Record,
        attempts: u32,
        error: String,
    },
}

/// The delay before delivery `attempt + 1` of a record that failed `attempt` times:
/// `first`, doubling per attempt, at most [`MAX_RETRY_DELAY`].
pub(super) fn retry_delay(first: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    first.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

impl Worker<'_> {
    /// Acts on the retry the caller asked for: every record read so far is dropped (the
    /// ones still on their way are not handed out), reading starts again after the
    /// processed prefix once the delay for the failed record's attempt has passed.
    pub(super) fn rewind(&mut self, progress: &Arc<ShardProgress>) -> Result<StartAt, Interrupt> {
        let crate::watermark::Rewind {
            request,
            checkpoint,
        } = progress.take_retry(self.next_index);
        // Numbering goes on from one past (see `take_retry`).
        self.next_index += 1;
        self.probe = Some(self.next_index);
        self.unpacked.clear();
        self.delivered = self.next_index;
        self.processed_seen = self.next_index;
        self.end_told = super::EndTold::NotYet;
        self.skip = None;
        let at = self.resume_at(checkpoint);
        if let Some(request) = request {
            let (attempt, seq, error) = self.count_failure(request, &at);
            let last = self.ctx.config.max_attempts().is_some_and(|m| attempt >= m)
                && self.ctx.config.dead_letter().is_some();
            if last {
                // Read again at once, for the dead-letter handler.
                log::warn!(
                    "shard {}: record {seq} failed its last attempt ({attempt}): {error}; it \
                     goes to the dead-letter handler",
                    self.shard(),
                );
                return Ok(at);
            }
            let delay = retry_delay(self.throttle(), attempt);
            log::warn!(
                "shard {}: record {seq} failed (attempt {attempt}{}): {error}; reading the \
                 shard again {at} in {delay:?}",
                self.shard(),
                self.ctx
                    .config
                    .max_attempts()
                    .map_or_else(String::new, |m| format!(" of {m}")),
            );
            self.ctx
                .config
                .stats()
                .record_retried(self.shard(), &seq, attempt + 1, delay);
            let health = self.ctx.notices.health();
            health.record_retried();
            health.set_shard_state(self.shard(), ShardState::Retrying);
            self.wait_until(Instant::now() + delay, progress)?;
            self.ctx
                .notices
                .health()
                .set_shard_state(self.shard(), ShardState::Reading);
        }
        Ok(at)
    }

    /// Ends the small fetches of after a retry once the first record read again is
    /// processed.
    pub(super) fn end_probe(&mut self, progress: &ShardProgress, reader: &mut super::Reader<'_>) {
        if let Some(first) = self.probe
            && progress.processed_since(u64::MAX).0 > first
        {
            self.probe = None;
            reader.probe_cap = None;
        }
    }

    /// Counts a failure of the request's record; forgets records before `at` (processed,
    /// since reading starts after them). Returns how many times it failed, its sequence
    /// number and the error.
    fn count_failure(&mut self, request: RetryRequest, at: &StartAt) -> (u32, String, String) {
        let from = match at {
            StartAt::After(seq) | StartAt::At(seq) => Some(seq.as_str()),
            StartAt::Initial(_) => None,
        };
        self.failures.retain(|f| {
            from.is_none_or(|seq| compare_sequence_numbers(&f.sequence_number, seq).is_ge())
        });
        let same = |f: &&mut Failed| {
            f.sequence_number == request.sequence_number
                && f.sub_sequence_number == request.sub_sequence_number
        };
        if let Some(f) = self.failures.iter_mut().find(same) {
            f.attempts += 1;
            f.error.clone_from(&request.error);
            return (f.attempts, request.sequence_number, request.error);
        }
        self.failures.push(Failed {
            sequence_number: request.sequence_number.clone(),
            sub_sequence_number: request.sub_sequence_number,
            attempts: 1,
            error: request.error.clone(),
        });
        (1, request.sequence_number, request.error)
    }

    /// Where reading starts again: after `checkpoint` (the processed prefix), or where
    /// the lease started if nothing of it was processed.
    fn resume_at(&mut self, checkpoint: Option<Checkpoint>) -> StartAt {
        match checkpoint.filter(|c| !c.is_empty()) {
            Some(c) => self.position_after(&c, None),
            None => {
                let (found, rewound) = self.lease_start.clone().unwrap_or_default();
                match self.position_after(&found, rewound) {
                    // Not the tip of now: where this lease began reading.
                    StartAt::Initial(crate::InitialPosition::Latest) => self
                        .began
                        .as_deref()
                        .and_then(crate::checkpoints::parse_start_position)
                        .map_or(StartAt::Initial(crate::InitialPosition::Latest), |p| {
                            StartAt::Initial(p)
                        }),
                    at => at,
                }
            }
        }
    }

    /// What becomes of a record read again: delivered, told which attempt it is, or —
    /// its last allowed attempt failed — set aside.
    pub(super) fn attempt_of(&self, mut record: Record) -> Attempt {
        let found = self.failures.iter().find(|f| {
            f.sequence_number == record.sequence_number()
                && f.sub_sequence_number == record.sub_sequence_number()
        });
        let Some(f) = found else {
            return Attempt::Deliver(record);
        };
        let max = self.ctx.config.max_attempts();
        if max.is_some_and(|m| f.attempts >= m) && self.ctx.config.dead_letter().is_some() {
            return Attempt::SetAside {
                record,
                attempts: f.attempts,
                error: f.error.clone(),
            };
        }
        record.set_attempt(f.attempts.saturating_add(1));
        Attempt::Deliver(record)
    }

    /// Gives `record` (failed `attempts` times, last with `error`) to the dead-letter
    /// handler, again and again after a growing delay until it takes it; then counts it
    /// processed. The shard reads nothing meanwhile; its lease stays renewed.
    pub(super) fn dead_letter(
        &mut self,
        record: Record,
        attempts: u32,
        error: String,
        progress: &ShardProgress,
    ) -> Result<(), Interrupt> {
        let Some(handler) = self.ctx.config.dead_letter().cloned() else {
            return Ok(());
        };
        let mut backoff = Backoff::new(self.throttle(), MAX_RETRY_DELAY);
        loop {
            let letter = Letter {
                record: &record,
                attempts,
                error: &error,
                bridge: self.bridge,
            };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handler.dead_letter(&letter)
            }));
            let why = match outcome {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e.to_string(),
                Err(panic) => format!("it panicked: {}", super::panic_message(&*panic)),
            };
            let delay = backoff.next_delay();
            log::warn!(
                "shard {}: the dead-letter handler did not take record {}: {why}; trying \
                 again in {delay:?}",
                self.shard(),
                record.sequence_number()
            );
            self.wait_until(Instant::now() + delay, progress)?;
        }
        log::warn!(
            "shard {}: record {} set aside after {attempts} failed attempts (the dead-letter \
             handler took it): {error}",
            self.shard(),
            record.sequence_number()
        );
        self.ctx.config.stats().record_dead_lettered(
            self.shard(),
            record.sequence_number(),
            attempts,
        );
        self.ctx.notices.health().record_dead_lettered();
        self.failures.retain(|f| {
            f.sequence_number != record.sequence_number()
                || f.sub_sequence_number != record.sub_sequence_number()
        });
        record.mark_processed();
        // Counted as handed over: the shard's end waits for it like any record.
        self.delivered += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_per_attempt_up_to_its_cap() {
        let first = Duration::from_millis(250);
        assert_eq!(retry_delay(first, 1), first);
        assert_eq!(retry_delay(first, 2), first * 2);
        assert_eq!(retry_delay(first, 3), first * 4);
        assert_eq!(retry_delay(first, 40), MAX_RETRY_DELAY);
    }
}
