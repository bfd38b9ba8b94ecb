//! The lease of a shard thread: capture (waiting for a holder, taking a stale lease),
//! commits on schedule and their outcome, the deadlines that end a lease here, and the
//! last writes (release, finish, handing back a lease that ran out).

use crate::balance::LoadMeter;
use crate::checkpoints::{Capture, Captured, LeaseState, Leases, WriteError};
use crate::config::InitialPosition;
use crate::error::{Error, ErrorKind, Result};
use crate::retry::Backoff;
use crate::source::StartAt;
use crate::watermark::{Checkpoint, ShardProgress};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Failure, InFlight, Interrupt, ShardExit, Worker};

/// How waiting for a lease's holder ended ([`Worker::wait_for_holder`]).
enum HolderWait {
    /// Capture now, conditional on this stale version if any.
    Capture(Option<crate::liveness::Version>),
    Stop,
    Fail(ShardExit),
}

impl Worker<'_> {
    /// Captures the lease, retrying while another client holds it. `None` if told to
    /// stop first; `Err` if the shard needs no reading or capture cannot work.
    pub(super) fn capture(&mut self) -> Option<Result<StartAt, ShardExit>> {
        let ttl = self.ctx.config.lease_ttl();
        let mut backoff =
            Backoff::new(self.throttle(), Duration::from_secs(2).max(self.throttle()));
        // A version of the row this client saw go stale: the capture may take it.
        let mut stale: Option<crate::liveness::Version> = None;
        loop {
            // A client that may be counted gone takes nothing: it would only be taken
            // from it.
            if !self.ctx.membership.valid_at(Instant::now()) {
                if self.stop_within(self.throttle()) {
                    return None;
                }
                continue;
            }
            match self.leases().capture(self.shard(), ttl, stale.as_ref()) {
                Ok(Capture::Captured(found)) => return Some(self.took(found)),
                Ok(Capture::HeldBy {
                    holder,
                    version,
                    asked,
                }) => {
                    log::debug!(
                        "client {}: shard {} is leased by {}; waiting",
                        self.ctx.owner.name,
                        self.shard(),
                        holder.as_deref().unwrap_or("another client")
                    );
                    stale = match self.wait_for_holder(version, asked, &mut backoff) {
                        HolderWait::Capture(v) => v,
                        HolderWait::Stop => return None,
                        HolderWait::Fail(exit) => return Some(Err(exit)),
                    };
                    continue;
                }
                Err(WriteError::Other {
                    error,
                    transient: false,
                }) => {
                    let why = Failure::of(&error);
                    self.ctx.notices.report(error);
                    return Some(Err(ShardExit::Failed(why)));
                }
                Err(WriteError::Other { error, .. }) => {
                    log::warn!("{error}; retrying");
                    // The write may have reached the table all the same (a timed-out
                    // answer): the lease may be ours.
                    if self.stop_within(backoff.next_delay()) {
                        self.give_up_uncertain_capture();
                        return None;
                    }
                    continue;
                }
                Err(WriteError::LeaseLost) => {}
            }
            if self.stop_within(backoff.next_delay()) {
                return None;
            }
        }
    }

    /// What a capture that took the row does with what it found: reports a repaired row,
    /// gives a parked or finished shard back at once, else starts the lease.
    fn took(&mut self, found: Captured) -> Result<StartAt, ShardExit> {
        log::info!(
            "client {}: acquired the lease of shard {} (checkpoint {})",
            self.ctx.owner.name,
            self.shard(),
            found.checkpoint
        );
        if let Some(wrong) = &found.repaired {
            let e = Error::new(ErrorKind::InvalidCheckpoint).with_context(format!(
                "shard {}: repaired its checkpoint row ({wrong})",
                self.shard()
            ));
            log::warn!("{e}");
            self.ctx.notices.report(e);
        }
        if let (Some(mark), false) = (&found.parked, found.finished) {
            // Parked and not repaired since: reading it would only fail again.
            let _ = self.leases().release(self.shard(), None);
            return Err(ShardExit::Parked(mark.clone()));
        }
        self.ctx.config.stats().lease_acquired(self.shard());
        self.tell_listener("assigned", |l, shard| l.assigned(shard));
        if found.finished {
            // Already read to its end by some client: nothing to do.
            let _ = self.leases().release(self.shard(), None);
            return Err(ShardExit::Finished);
        }
        // The row says the lease was renewed when the write was sent: a slow or retried
        // answer must not stretch the lease past its margin.
        self.last_write = found.sent;
        self.load = LoadMeter::new(Instant::now(), found.load);
        self.next_commit = Instant::now() + self.ctx.config.commit_frequency();
        let start = found.start;
        let checkpoint = self.resume_unwritten(found.checkpoint, found.was_ours);
        Ok(self.start_from(checkpoint, start))
    }

    /// Waits for a lease held at `version` (as the capture sent at `asked` found it) by
    /// reading the row, writing again only once it is free or stale. A live holder told of a join releases within about a second (the
    /// fleet-change poll), else at its next shard check: reads from the throttle delay,
    /// every half second at most while a prompt handover is likely, then slowing to 2 s
    /// (or the shard check).
    fn wait_for_holder(
        &mut self,
        version: Option<crate::liveness::Version>,
        asked: Instant,
        backoff: &mut Backoff,
    ) -> HolderWait {
        let ttl = self.ctx.config.lease_ttl();
        let liveness = Arc::clone(&self.ctx.liveness);
        // Seen stale already (unchanged for the lease time, as this client observed it):
        // capture it now, conditional on that version.
        if let Some(v) = version.filter(|v| liveness.lease_is_stale(self.shard(), v, ttl, asked)) {
            return HolderWait::Capture(Some(v));
        }
        let most = self
            .ctx
            .config
            .shard_check_frequency()
            .min(Duration::from_secs(2))
            .max(self.throttle());
        let prompt = HANDOVER_POLL.max(self.throttle()).min(most);
        let waiting = Instant::now();
        let mut delay = self.throttle();
        loop {
            if self.stop_within(delay) {
                return HolderWait::Stop;
            }
            match self.leases().capturable(self.shard(), ttl, &liveness) {
                Ok(LeaseState::Held) => {
                    let cap = if waiting.elapsed() < HANDOVER_WATCH {
                        prompt
                    } else {
                        most
                    };
                    delay = (delay * 2).min(cap);
                }
                Ok(LeaseState::Stale(v)) => return HolderWait::Capture(Some(v)),
                Ok(LeaseState::Free) | Err(WriteError::LeaseLost) => {
                    return HolderWait::Capture(None);
                }
                Err(WriteError::Other {
                    error,
                    transient: true,
                }) => {
                    // Read again after a back-off; the holder's lease goes on.
                    log::warn!("{error}; retrying");
                    self.ctx.notices.report(error);
                    delay = backoff.next_delay();
                }
                Err(WriteError::Other { error, .. }) => {
                    let why = Failure::of(&error);
                    self.ctx.notices.report(error);
                    return HolderWait::Fail(ShardExit::Failed(why));
                }
            }
        }
    }

    /// The checkpoint to start from after a capture that found `in_row`: what this
    /// client had processed when its last lease of the shard ran out unwritten, if the
    /// row is still as this client last wrote it (`was_ours`); it is written at once.
    pub(super) fn resume_unwritten(&mut self, in_row: Checkpoint, was_ours: bool) -> Checkpoint {
        let Some(processed) = self.ctx.unwritten.lock().remove(self.shard()) else {
            return in_row;
        };
        if !was_ours {
            return in_row;
        }
        log::info!(
            "client {}: shard {}: the row is as this client last wrote it; going on from \
             what it had processed ({processed}) rather than from the row's ({in_row})",
            self.ctx.owner.name,
            self.shard()
        );
        match self.leases().commit(self.shard(), &processed) {
            Ok(()) => self.report_commit(&processed),
            // The next commit writes a later checkpoint; until then a crash re-delivers
            // from the row's, as ever.
            Err(e) => log::warn!(
                "client {}: shard {}: writing the checkpoint {processed}: {e}",
                self.ctx.owner.name,
                self.shard()
            ),
        }
        processed
    }

    /// Told to stop after a capture whose outcome is unknown: releases the lease in case
    /// the capture took it (a no-op if it did not, the write being conditional on this
    /// client owning the row), and records a failure for `close()`.
    pub(super) fn give_up_uncertain_capture(&mut self) {
        let shard = Arc::clone(&self.ctx.shard_id);
        match self.final_write(|leases| leases.release(&shard, None)) {
            Ok(()) => {
                log::info!(
                    "client {}: released the lease of shard {} (taken as the stop came)",
                    self.ctx.owner.name,
                    self.shard()
                );
                self.ctx.left_behind.lock().remove(self.shard());
            }
            Err(WriteError::LeaseLost) => {
                self.ctx.left_behind.lock().remove(self.shard());
            }
            Err(WriteError::Other { error, .. }) => {
                log::warn!("{error}; the lease, if taken, is left to expire");
                self.ctx
                    .left_behind
                    .lock()
                    .insert(Arc::clone(&self.ctx.shard_id), error.to_string());
            }
        }
    }

    /// Where reading starts for a lease whose row holds `found`, remembering what the
    /// unpacking of records needs from it.
    pub(super) fn start_from(
        &mut self,
        found: Checkpoint,
        rewound: Option<InitialPosition>,
    ) -> StartAt {
        let start = self.position_after(&found, rewound);
        if matches!(start, StartAt::Initial(InitialPosition::Latest)) {
            // Taken before the first iterator or subscription: the next owner may read a
            // little more than this one did, never less.
            self.began = Some(crate::checkpoints::start_position_value(
                InitialPosition::AtTimestamp(SystemTime::now()),
            ));
        }
        self.lease_start = Some((found.clone(), rewound));
        self.checkpoint = Some(found);
        start
    }

    /// Where reading starts after `found` (a row's checkpoint, or the processed prefix),
    /// remembering what unpacking needs from it; `rewound` (else the configured initial
    /// position) when it names no record.
    pub(super) fn position_after(
        &mut self,
        found: &Checkpoint,
        rewound: Option<InitialPosition>,
    ) -> StartAt {
        self.last_read.clone_from(&found.sequence_number);
        match (&found.partial, &found.sequence_number) {
            // Inside an aggregate: read it again and skip what was processed.
            (Some(p), _) if self.ctx.config.deaggregation() => {
                self.skip = Some(p.clone());
                StartAt::At(p.aggregate.clone())
            }
            (_, Some(seq)) => StartAt::After(seq.clone()),
            // Not unpacking: deliver the partly processed aggregate again, whole.
            (Some(p), None) => StartAt::At(p.aggregate.clone()),
            (None, None) => {
                StartAt::Initial(rewound.unwrap_or_else(|| self.ctx.config.initial_position()))
            }
        }
    }

    /// Commits the processed prefix if it moved, or heartbeats if the lease has not been
    /// written for a shard-check interval — without waiting for the write: reading goes
    /// on while it is in flight (one at a time), and its outcome is taken on a later call.
    /// A lease that has not been renewed for the lease time less a shard check is given
    /// up here (`Interrupt::LeaseExpired`): by then another client may own the shard, and
    /// delivering it on both would duplicate records.
    pub(super) fn commit_if_due(&mut self, progress: &ShardProgress) -> Result<(), Interrupt> {
        if let Some(outcome) = self.in_flight.as_ref().and_then(|f| f.write.outcome())
            && let Some(done) = self.in_flight.take()
        {
            self.settle(done, outcome, progress)?;
        }
        let now = Instant::now();
        let unrenewed = now.duration_since(self.last_write);
        // Still lapsed, the checks below hand the lease back without waiting.
        if progress.refused()
            && self.ctx.membership.lapsed(now).is_none()
            && unrenewed < self.lease_margin()
        {
            return Err(Interrupt::Refused);
        }
        if now < self.next_commit {
            return Ok(());
        }
        self.next_commit = now + self.ctx.config.commit_frequency();
        self.report_held_back(progress, now);
        self.check_deadlines(now, unrenewed)?;
        if self.in_flight.is_some() {
            // One write in flight per shard: they land in order.
            self.report_lagging(now, unrenewed);
            return Ok(());
        }
        let (count, checkpoint) = progress.processed_since(self.committed);
        let heartbeat_due = unrenewed >= self.ctx.config.shard_check_frequency();
        if checkpoint.is_none() && !heartbeat_due {
            return Ok(());
        }
        let load = self.load.read(now);
        self.ctx.config.stats().load_published(self.shard(), load);
        self.in_flight = Some(InFlight {
            write: self.leases().start_commit(
                self.shard(),
                checkpoint.as_ref(),
                self.commit_attempt(now),
                Some(load),
            ),
            count,
            checkpoint,
            sent: now,
            warned: false,
        });
        Ok(())
    }

    /// Says so (once in the log, every commit slot to `Stats`) while the write in flight
    /// has been so for more than a commit interval.
    fn report_lagging(&mut self, now: Instant, unrenewed: Duration) {
        let slow = self
            .ctx
            .config
            .commit_frequency()
            .max(Duration::from_secs(1));
        let Some(f) = self.in_flight.as_mut() else {
            return;
        };
        let age = now.duration_since(f.sent);
        if age < slow {
            return;
        }
        if !std::mem::replace(&mut f.warned, true) {
            log::warn!(
                "shard {}: a checkpoint write has been in flight for {age:?} (lease last \
                 renewed {unrenewed:?} ago); reading goes on",
                self.ctx.shard_id
            );
        }
        self.ctx
            .config
            .stats()
            .commit_lagging(&self.ctx.shard_id, age);
    }

    /// Gives the lease up locally (`LeaseExpired`) once this client's membership has
    /// lapsed, or the lease was not renewed for `lease_margin`: before any other client
    /// may take it.
    fn check_deadlines(&mut self, now: Instant, unrenewed: Duration) -> Result<(), Interrupt> {
        if let Some(silent) = self.ctx.membership.lapsed(now) {
            let e = Error::new(ErrorKind::LeaseLost).with_context(format!(
                "shard {}: this client's row was not written for {silent:?} (DynamoDB \
                 unreachable?); stopped delivering the shard before another client may \
                 count this one gone",
                self.shard()
            ));
            log::warn!("{e}");
            self.ctx.notices.report(e);
            return Err(Interrupt::LeaseExpired);
        }
        if unrenewed >= self.lease_margin() {
            let e = Error::new(ErrorKind::LeaseLost).with_context(format!(
                "shard {}: the lease was not renewed for {unrenewed:?} (DynamoDB unreachable?); \
                 stopped delivering the shard before another client may take it",
                self.shard()
            ));
            log::warn!("{e}");
            self.ctx.notices.report(e);
            return Err(Interrupt::LeaseExpired);
        }
        Ok(())
    }

    /// A checkpoint write failed: for [`Kinsumer::commit`](crate::Kinsumer::commit)'s
    /// waiters, and for `Stats`.
    fn commit_failed(&self, progress: &ShardProgress, error: &Error) {
        let error = error.to_string();
        progress.commit_failed(&error);
        self.ctx.config.stats().commit_failed(self.shard(), &error);
    }

    /// Once per shard check, says so if a record handed out a shard check ago or more
    /// still holds the checkpoint back.
    pub(super) fn report_held_back(&mut self, progress: &ShardProgress, now: Instant) {
        let check = self.ctx.config.shard_check_frequency();
        let Some((age, outstanding)) = progress.held_back().filter(|(a, _)| *a >= check) else {
            return;
        };
        if now < self.next_held_back_report {
            return;
        }
        self.next_held_back_report = now + check;
        log::warn!(
            "shard {}: the oldest of {outstanding} records handed out has not been processed \
             for {age:?}; the checkpoint waits for it",
            self.shard()
        );
        self.ctx
            .config
            .stats()
            .records_held_back(self.shard(), outstanding, age);
    }

    /// A commit's one attempt, sent at `now`: as long as the lease is surely still this
    /// client's. A slow DynamoDB (answers taking seconds) still renews the lease — the
    /// renewal counts from the send, however late the answer — and a write that hangs is
    /// given up in time to hand the lease back. While it is in flight the next commit
    /// slots send nothing (one write per shard at a time: they land in order).
    pub(super) fn commit_attempt(&self, now: Instant) -> Duration {
        (self.last_write + self.lease_margin())
            .saturating_duration_since(now)
            .max(MIN_ATTEMPT)
    }

    /// The one attempt at handing back a lease that ran out here: short, since nothing
    /// waits on it but the shard's exit.
    pub(super) fn hand_back_attempt(&self) -> Duration {
        Duration::from_secs(2)
            .max(self.ctx.config.commit_frequency())
            .min(self.ctx.config.lease_ttl() / 4)
    }

    /// How long after its last renewal a lease is still surely this client's: the lease
    /// time less one shard check.
    pub(super) fn lease_margin(&self) -> Duration {
        self.ctx
            .config
            .lease_ttl()
            .saturating_sub(self.ctx.config.shard_check_frequency())
    }

    /// Takes a finished commit's outcome.
    pub(super) fn settle(
        &mut self,
        done: InFlight,
        outcome: std::result::Result<(), WriteError>,
        progress: &ShardProgress,
    ) -> Result<(), Interrupt> {
        match outcome {
            Ok(()) => {
                self.committed = self.committed.max(done.count);
                progress.committed(done.count);
                // The row says the lease was renewed when the write was sent.
                self.last_write = self.last_write.max(done.sent);
                progress.renew(self.last_write + self.lease_margin());
                if let Some(c) = done.checkpoint {
                    log::debug!("shard {}: checkpoint {c}", self.shard());
                    self.report_commit(&c);
                    self.checkpoint = Some(c);
                }
                Ok(())
            }
            Err(WriteError::LeaseLost) => Err(Interrupt::LeaseLost),
            Err(WriteError::Other {
                error,
                transient: false,
            }) => {
                // Access denied, a wrongly keyed table, …: retrying the same write will
                // not help. The shard fails (and, failing again, ends the consumer).
                log::error!("{error}");
                self.commit_failed(progress, &error);
                let why = Failure::of(&error);
                self.ctx.notices.report(error);
                Err(Interrupt::Failed(why))
            }
            Err(WriteError::Other { error, .. }) => {
                // The lease is still ours until someone else captures it; the next
                // interval tries again.
                log::warn!("{error}");
                self.commit_failed(progress, &error);
                self.ctx.notices.report(error);
                Ok(())
            }
        }
    }

    /// Tells the stats hook about a written checkpoint.
    pub(super) fn report_commit(&self, c: &Checkpoint) {
        self.ctx
            .notices
            .health()
            .shard_committed(self.shard(), crate::health::Position::of_checkpoint(c));
        let stats = self.ctx.config.stats();
        match (&c.partial, &c.sequence_number) {
            (Some(p), _) => {
                stats.aggregate_checkpoint_committed(
                    self.shard(),
                    &p.aggregate,
                    p.sub_sequence_number,
                );
            }
            (None, Some(seq)) => stats.checkpoint_committed(self.shard(), seq),
            (None, None) => {}
        }
    }

    pub(super) fn finish(&mut self, progress: &ShardProgress) -> Interrupt {
        // Everything delivered is processed: sealing waits for nothing.
        let (count, checkpoint) = progress.drain_and_seal(Instant::now(), self.committed);
        let shard = Arc::clone(&self.ctx.shard_id);
        match self.final_write(|leases| leases.finish(&shard, checkpoint.as_ref())) {
            Ok(()) => {
                progress.committed(count);
                log::info!(
                    "client {}: shard {} finished and released",
                    self.ctx.owner.name,
                    self.shard()
                );
                self.ctx.config.stats().lease_released(self.shard());
                self.ctx.left_behind.lock().remove(self.shard());
                self.tell_listener("ended", |l, shard| l.ended(shard));
                Interrupt::Finished
            }
            Err(WriteError::LeaseLost) => Interrupt::LeaseLost,
            Err(WriteError::Other { error, .. }) => {
                let why = Failure::of(&error);
                self.ctx.notices.report(error);
                Interrupt::Failed(why)
            }
        }
    }

    /// A lease's last write (release or finish): transient failures are retried with
    /// back-off for up to [`FINAL_WRITE_PATIENCE`], and never once the lease may have
    /// run out. Giving up leaves the lease to go stale, and the next owner re-reads what
    /// was processed since the last commit: worth a few seconds of a DynamoDB blip.
    pub(super) fn final_write(
        &mut self,
        write: impl Fn(&Leases<'_>) -> std::result::Result<(), WriteError>,
    ) -> std::result::Result<(), WriteError> {
        let deadline =
            (Instant::now() + FINAL_WRITE_PATIENCE).min(self.last_write + self.lease_margin());
        let mut backoff =
            Backoff::new(self.throttle(), Duration::from_secs(2).max(self.throttle()));
        // Each attempt, SDK retries included, ends by the deadline too: a stop during a
        // DynamoDB blackhole ends in time to say which leases it left behind.
        let bounded = self.bridge.until(deadline);
        loop {
            let leases = Leases {
                bridge: &bounded,
                ..self.leases()
            };
            match write(&leases) {
                Err(WriteError::Other {
                    error,
                    transient: true,
                }) if Instant::now() + self.throttle() < deadline => {
                    let delay = backoff
                        .next_delay()
                        .min(deadline.saturating_duration_since(Instant::now()));
                    log::warn!("{error}; retrying in {delay:?}");
                    std::thread::sleep(delay);
                }
                outcome => return outcome,
            }
        }
    }

    /// After the lease ran out here: one attempt to commit what was processed and release
    /// the lease, without waiting for the caller. Safe whoever holds the lease now: the
    /// write is conditional on this client still owning it, and if it does, no other
    /// client has started on the shard. When DynamoDB answers again (or only this
    /// client's row could not be written), the next owner then starts where this client
    /// stopped, re-delivering nothing.
    pub(super) fn hand_back_expired(&mut self, progress: &ShardProgress) {
        let (_, checkpoint) = progress.drain_and_seal(Instant::now(), self.committed);
        match self.leases().release_once(
            self.shard(),
            checkpoint.as_ref(),
            self.hand_back_attempt(),
        ) {
            // Processed beyond what surely landed: kept in case this client captures
            // the shard again before anyone else writes its row.
            Err(_) if checkpoint.is_some() => {
                log::info!(
                    "client {}: could not hand back the lease of shard {}; keeping what \
                     was processed ({}) in case it is captured here again",
                    self.ctx.owner.name,
                    self.shard(),
                    Checkpoint::show(checkpoint.as_ref())
                );
                if let Some(c) = checkpoint {
                    self.ctx
                        .unwritten
                        .lock()
                        .insert(Arc::clone(&self.ctx.shard_id), c);
                }
            }
            Ok(()) => log::info!(
                "client {}: handed back the lease of shard {} it could no longer renew \
                 (checkpoint {})",
                self.ctx.owner.name,
                self.shard(),
                Checkpoint::show(checkpoint.as_ref().or(self.checkpoint.as_ref()))
            ),
            Err(e) => log::debug!(
                "client {}: could not hand back the lease of shard {}: {e}",
                self.ctx.owner.name,
                self.shard()
            ),
        }
    }

    /// Final commit and release. Stops handing out this shard's records, gives the
    /// caller a moment to finish the ones it holds (so a clean handover re-delivers
    /// nothing), then writes ([`final_write`](Worker::final_write)).
    /// `Err` with the last failure if the lease could not be released (it then expires on
    /// its own, delaying the next owner).
    pub(super) fn release(&mut self, progress: &ShardProgress) -> Result<(), String> {
        progress.stop_handing_out();
        self.tell_listener("revoking", |l, shard| l.revoking(shard));
        let deadline = Instant::now() + self.ctx.config.handover_grace();
        let (count, checkpoint) = progress.drain_and_seal(deadline, self.committed);
        self.tell_listener("revoked", |l, shard| l.revoked(shard));
        let shard = Arc::clone(&self.ctx.shard_id);
        match self.final_write(|leases| leases.release(&shard, checkpoint.as_ref())) {
            Ok(()) => {
                progress.committed(count);
                log::info!(
                    "client {}: released the lease of shard {} (checkpoint {})",
                    self.ctx.owner.name,
                    self.shard(),
                    Checkpoint::show(checkpoint.as_ref().or(self.checkpoint.as_ref()))
                );
                if let Some(c) = &checkpoint {
                    self.report_commit(c);
                }
                self.ctx.config.stats().lease_released(self.shard());
                self.ctx.left_behind.lock().remove(self.shard());
                Ok(())
            }
            Err(WriteError::LeaseLost) => {
                self.ctx.config.stats().lease_lost(self.shard());
                self.ctx.left_behind.lock().remove(self.shard());
                Ok(())
            }
            Err(WriteError::Other { error, .. }) => {
                log::warn!("{error}; leaving the lease to expire");
                self.commit_failed(progress, &error);
                if let Some(c) = checkpoint {
                    // Kept in case this client captures the shard again first.
                    self.ctx
                        .unwritten
                        .lock()
                        .insert(Arc::clone(&self.ctx.shard_id), c);
                }
                let last = error.to_string();
                self.ctx
                    .left_behind
                    .lock()
                    .insert(Arc::clone(&self.ctx.shard_id), last.clone());
                Err(last)
            }
        }
    }
}

/// While a held lease is likely to be handed over promptly (a join announced, the holder
/// polling for it every second), it is read this often...
const HANDOVER_POLL: Duration = Duration::from_millis(500);

/// ...for this long; then less often.
const HANDOVER_WATCH: Duration = Duration::from_secs(4);

/// The shortest attempt a write is given.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// How long a lease's last write retries transient failures.
const FINAL_WRITE_PATIENCE: Duration = Duration::from_secs(15);
