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
//! The row is written by a task on the I/O runtime ([`heartbeat`](crate::io::heartbeat)),
//! not by the coordinator thread, so
//! nothing the coordinator waits on (a slow ListShards, a long scan) can hold it up. Each
//! write is one attempt of at most half the failover time; a failed one is retried a
//! third of an interval later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
