//! This client's membership of the fleet: its row in the clients table, rewritten every
//! fifth of the failover time, and how long its shards may still be delivered after the
//! last write of it that landed.
//!
//! Other clients count a client gone once its row has stayed unchanged for the failover
//! time, and then take its leases at once ([`Liveness`](crate::liveness::Liveness)).
//! So a client must stop handing out records before that can happen, whatever else still
//! works: a client whose lease writes go through but whose row writes do not (a
//! partition, a throttled table, a stalled thread) would otherwise deliver shards that
//! another client has just taken. [`Membership`] holds the deadline — the send time of
//! the last row write that succeeded plus four fifths of the failover time — that every
//! hand-out and every shard thread checks.
//!
//! The row is written by a task on the I/O runtime, not by the coordinator thread, so
//! nothing the coordinator waits on (a slow ListShards, a long scan) can hold it up. Each
//! write is one attempt of at most half the failover time; a failed one is retried a
//! third of an interval later.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::bridge::Bridge;
use crate::checkpoints::Owner;
use crate::clients;
use crate::config::Config;

/// Until when this client is surely still a member, as all its threads see it.
#[derive(Debug)]
pub(crate) struct Membership {
    base: Instant,
    /// Nanoseconds after `base`; 0 until the first write of the row landed.
    valid_until: AtomicU64,
    /// How long a landed write keeps the membership valid.
    margin: Duration,
}

impl Membership {
    /// Not yet valid: [`renewed`](Membership::renewed) starts it.
    pub(crate) fn new(margin: Duration) -> Self {
        Membership {
            base: Instant::now(),
            valid_until: AtomicU64::new(0),
            margin,
        }
    }

    /// Valid for ever (unit tests of code that only checks it).
    #[cfg(test)]
    pub(crate) fn unbounded() -> Self {
        Membership {
            base: Instant::now(),
            valid_until: AtomicU64::new(u64::MAX),
            margin: Duration::MAX,
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A write of the row sent at `sent` landed.
    pub(crate) fn renewed(&self, sent: Instant) {
        let until = self
            .nanos(sent)
            .saturating_add(u64::try_from(self.margin.as_nanos()).unwrap_or(u64::MAX));
        self.valid_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Whether this client may still deliver at `now`.
    pub(crate) fn valid_at(&self, now: Instant) -> bool {
        self.nanos(now) < self.valid_until.load(Ordering::Acquire)
    }

    /// When the membership runs out unless renewed first (`None`: not within
    /// `Instant`'s range — never, in practice).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.base.checked_add(Duration::from_nanos(
            self.valid_until.load(Ordering::Acquire),
        ))
    }

    /// How long ago the last write that landed was sent, if the membership has run out
    /// at `now` (`None` while it is valid).
    pub(crate) fn lapsed(&self, now: Instant) -> Option<Duration> {
        if self.valid_at(now) {
            return None;
        }
        let until = self.valid_until.load(Ordering::Acquire);
        let last = Duration::from_nanos(until).saturating_sub(self.margin);
        Some(now.saturating_duration_since(self.base + last))
    }
}

/// The task writing this client's row; dropping it tells the task to end (after the
/// write in flight, if any), [`Heartbeat::stop`] also waits for that.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    stop: Arc<tokio::sync::Notify>,
    /// Disconnects when the task has ended.
    done: crossbeam_channel::Receiver<()>,
    /// The longest a write may take.
    attempt: Duration,
}

impl Heartbeat {
    /// Ends the task and waits (up to one write's time limit, and at most `within`)
    /// until it has: no write of the row can land after this returns, so the row can be
    /// deleted. (Cut short by `within`, a late write may still land: the row then
    /// expires like a crashed client's.)
    pub(crate) fn stop(self, within: Duration) {
        self.stop.notify_one();
        let _ = self
            .done
            .recv_timeout((self.attempt + Duration::from_secs(1)).min(within));
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// Starts rewriting this client's row every [`Config::membership_interval`], renewing
/// `membership` with each write that lands, until the returned [`Heartbeat`] is dropped
/// (before the row is deleted, on a stop) or the I/O runtime ends.
pub(crate) fn start_heartbeat(
    bridge: &Bridge,
    table: &str,
    owner: &Arc<Owner>,
    config: &Config,
    membership: &Arc<Membership>,
) -> Heartbeat {
    let dynamodb = bridge.dynamodb().clone();
    let (table, owner, membership) = (table.to_owned(), Arc::clone(owner), Arc::clone(membership));
    let every = config.membership_interval();
    let failover = config.failover_time();
    // A slow answer still counts from its send time: wait for it well past the interval
    // (a loaded server must not look like an unreachable one), within the margin.
    let attempt = failover / 2;
    let retry_after = (every / 3).max(Duration::from_millis(100));
    let stop = Arc::new(tokio::sync::Notify::new());
    let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
    let told = Arc::clone(&stop);
    // Not aborted: a write cut off half sent could still land after the row is deleted.
    drop(bridge.spawn(async move {
        let _done = done_tx;
        let mut next = Instant::now() + every;
        let mut failing = 0u32;
        loop {
            // A stop stores its permit if it comes while a write is in flight.
            if tokio::time::timeout_at(next.into(), told.notified())
                .await
                .is_ok()
            {
                return;
            }
            let sent = Instant::now();
            let put = clients::put_row(&dynamodb, &table, &owner, failover)
                .customize()
                .config_override(crate::checkpoints::single_attempt(attempt))
                .send()
                .await;
            match put {
                Ok(_) => {
                    membership.renewed(sent);
                    if failing > 0 {
                        log::info!(
                            "client {}: wrote its row in table {table} again after {failing} \
                             failed tries",
                            owner.name
                        );
                    }
                    failing = 0;
                    next = (sent + every).max(Instant::now());
                }
                Err(e) => {
                    failing += 1;
                    let e = crate::error::Error::aws(
                        format!("writing the row of client {} in table {table}", owner.name),
                        e,
                    );
                    if failing == 1 {
                        log::warn!("{e}; retrying in {retry_after:?}");
                    } else {
                        log::debug!("{e} ({failing} tries in a row)");
                    }
                    next = Instant::now() + retry_after;
                }
            }
        }
    }));
    Heartbeat {
        stop,
        done,
        attempt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_lasts_its_margin_from_the_send_time_of_the_last_write_that_landed() {
        let margin = Duration::from_secs(12);
        let m = Membership::new(margin);
        let t = Instant::now();
        assert!(!m.valid_at(t), "not valid before the first write");
        m.renewed(t);
        assert!(m.valid_at(t + Duration::from_secs(11)));
        assert!(!m.valid_at(t + margin));
        assert_eq!(
            m.lapsed(t + Duration::from_secs(20)),
            Some(Duration::from_secs(20))
        );
        // An older write landing late does not shorten it.
        m.renewed(t + Duration::from_secs(5));
        m.renewed(t + Duration::from_secs(1));
        assert!(m.valid_at(t + Duration::from_secs(16)));
        assert_eq!(m.lapsed(t + Duration::from_secs(16)), None);
        assert!(Membership::unbounded().valid_at(t + Duration::from_secs(3600)));
    }
}
