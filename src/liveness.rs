//! Whether a row's writer is gone, judged on this client's own monotonic clock.
//!
//! Lease rows, client rows and the leader row carry `LastUpdate`, their writer's wall
//! clock. Comparing it with the local wall clock makes staleness depend on both hosts'
//! clocks: a host running minutes fast sees every other client as dead and takes their
//! leases; one running slow has its own leases taken. Instead, as the Amazon KCL does, a
//! row is stale when its version — `(owner, LastUpdate)` — has not changed for the stale
//! time *as observed here*: only durations measured on one host's monotonic clock are
//! compared. Taking a stale row is then conditional on that very version still being in
//! the table, so a writer that came back in between wins.
//!
//! Two shortcuts keep failover as fast as before: a lease whose owner's client row is
//! itself observed stale is stale too (its client is gone, so the lease need not be
//! watched for another stale time), and a row last written more than the stale time plus
//! [`SKEW_ALLOWANCE`] ago by the local clock is stale at first sight (a fleet restarted
//! after a long outage does not wait). Clocks may thus differ by up to the allowance.
//! The tables keep their Go format: `LastUpdate` is still written, in Unix nanoseconds.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::clock;

/// How far apart two hosts' clocks may be.
pub(crate) const SKEW_ALLOWANCE: Duration = Duration::from_secs(15 * 60);

/// One consumer's observations; shared by its coordinator and shard threads.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    seen: Mutex<HashMap<String, Seen>>,
    /// Client ids whose rows were stale at the last scan of the clients table.
    dead: Mutex<HashSet<String>>,
}

#[derive(Debug)]
struct Seen {
    owner: Option<String>,
    last_update: i64,
    /// When this version was first seen.
    since: Instant,
    /// When the row was last looked at.
    observed: Instant,
}

/// A row's version: the owner (or client id) and `LastUpdate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) owner: String,
    pub(crate) last_update: i64,
}

impl Liveness {
    /// How long, as seen here, row `key` has had this version (zero if it just changed
    /// or was never seen).
    pub(crate) fn unchanged_for(
        &self,
        key: &str,
        owner: Option<&str>,
        last_update: i64,
    ) -> Duration {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        match seen.get_mut(key) {
            Some(s) if s.owner.as_deref() == owner && s.last_update == last_update => {
                s.observed = now;
                now.duration_since(s.since)
            }
            _ => {
                seen.insert(
                    key.to_owned(),
                    Seen {
                        owner: owner.map(str::to_owned),
                        last_update,
                        since: now,
                        observed: now,
                    },
                );
                Duration::ZERO
            }
        }
    }

    /// Whether row `key`, now at this version, is stale: unchanged here for `ttl`, or
    /// written longer ago than `ttl` plus the skew allowance.
    pub(crate) fn is_stale(
        &self,
        key: &str,
        owner: Option<&str>,
        last_update: i64,
        ttl: Duration,
    ) -> bool {
        let unchanged = self.unchanged_for(key, owner, last_update);
        unchanged >= ttl || last_update < ancient_cutoff(ttl)
    }

    /// Whether a lease held by `version` may be taken: stale itself, or held by a client
    /// whose row is stale.
    pub(crate) fn lease_is_stale(&self, shard: &str, version: &Version, ttl: Duration) -> bool {
        let stale = self.is_stale(
            &format!("lease/{shard}"),
            Some(&version.owner),
            version.last_update,
            ttl,
        );
        stale || self.is_dead(&version.owner)
    }

    /// Whether the last scan of the clients table found client `id` stale.
    pub(crate) fn is_dead(&self, id: &str) -> bool {
        self.dead.lock().contains(id)
    }

    /// Records which clients the last scan of the clients table found stale.
    pub(crate) fn set_dead_clients(&self, dead: HashSet<String>) {
        *self.dead.lock() = dead;
    }

    /// Forgets rows not looked at for `age` (shards long gone, clients deleted).
    pub(crate) fn forget_unobserved(&self, age: Duration) {
        let now = Instant::now();
        self.seen
            .lock()
            .retain(|_, s| now.duration_since(s.observed) < age);
    }
}

/// Rows last written before this (by the local clock) are stale at first sight.
pub(crate) fn ancient_cutoff(ttl: Duration) -> i64 {
    clock::cutoff_nanos(ttl.saturating_add(SKEW_ALLOWANCE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_stale_only_after_staying_unchanged_for_the_ttl_as_seen_here() {
        let l = Liveness::default();
        let ttl = Duration::from_millis(50);
        // Written "10 minutes in the future" by a fast clock: not stale while it changes.
        let future = clock::now_nanos() + 600_000_000_000;
        assert!(!l.is_stale("k", Some("a"), future, ttl));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!l.is_stale("k", Some("a"), future + 1, ttl));
        std::thread::sleep(Duration::from_millis(30));
        // Changed 30 ms ago: still fresh.
        assert!(!l.is_stale("k", Some("a"), future + 1, ttl));
        std::thread::sleep(Duration::from_millis(30));
        assert!(l.is_stale("k", Some("a"), future + 1, ttl));
        // A new owner is a new version.
        assert!(!l.is_stale("k", Some("b"), future + 1, ttl));
        // Written "10 minutes ago" by a slow clock: fresh at first sight.
        let past = clock::now_nanos() - 600_000_000_000;
        assert!(!l.is_stale("p", Some("a"), past, Duration::from_secs(60)));
        // Older than the ttl plus the allowance: stale at once.
        let ancient = clock::now_nanos() - 20 * 60 * 1_000_000_000;
        assert!(l.is_stale("q", Some("a"), ancient, Duration::from_secs(60)));
    }

    #[test]
    fn a_lease_of_a_dead_client_is_stale_at_once() {
        let l = Liveness::default();
        let v = Version {
            owner: "gone".into(),
            last_update: clock::now_nanos(),
        };
        let ttl = Duration::from_secs(60);
        assert!(!l.lease_is_stale("s", &v, ttl));
        l.set_dead_clients(HashSet::from(["gone".to_owned()]));
        assert!(l.lease_is_stale("s", &v, ttl));
    }
}
