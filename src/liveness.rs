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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::clock;

/// How far apart two hosts' clocks may be.
pub(crate) const SKEW_ALLOWANCE: Duration = Duration::from_secs(15 * 60);

/// One consumer's observations; shared by its coordinator and shard threads.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    seen: Mutex<HashMap<String, Seen>>,
    /// Clients whose rows were stale at the last scan of the clients table, or found
    /// stale earlier and deleted since (by the leader), with when they were first found.
    dead: Mutex<HashMap<String, (DeadClient, Instant)>>,
}

#[derive(Debug)]
struct Seen {
    owner: Option<String>,
    last_update: i64,
    /// When this version was first seen: after the answer that carried it came back.
    since: Instant,
    /// When the row was last looked at.
    observed: Instant,
}

/// A client found stale: what its row said last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeadClient {
    /// The row's `LastUpdate` (the client's own clock).
    pub(crate) last_update: i64,
    /// How long after that row was written the client may still have delivered: its
    /// leases written later than this were written after it came back.
    pub(crate) grace: Duration,
}

/// A row's version: the owner (or client id) and `LastUpdate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) owner: String,
    pub(crate) last_update: i64,
}

impl Liveness {
    /// How long, as seen here, row `key` has had this version (zero if it just changed
    /// or was never seen). `asked` is when the read that returned this version was
    /// sent: the row is known unchanged only from the first sighting's answer to this
    /// read's request, so a process suspended between sending a read and looking at
    /// its answer does not count the suspension as silence of the writer.
    pub(crate) fn unchanged_for(
        &self,
        key: &str,
        owner: Option<&str>,
        last_update: i64,
        asked: Instant,
    ) -> Duration {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        match seen.get_mut(key) {
            Some(s) if s.owner.as_deref() == owner && s.last_update == last_update => {
                s.observed = now;
                asked.saturating_duration_since(s.since)
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

    /// Whether row `key`, now at this version (read by a request sent at `asked`), is
    /// stale: unchanged here for `ttl`, or written longer ago than `ttl` plus the skew
    /// allowance.
    pub(crate) fn is_stale(
        &self,
        key: &str,
        owner: Option<&str>,
        last_update: i64,
        ttl: Duration,
        asked: Instant,
    ) -> bool {
        let unchanged = self.unchanged_for(key, owner, last_update, asked);
        unchanged >= ttl || last_update < ancient_cutoff(ttl)
    }

    /// Whether a lease held by `version` (read by a request sent at `asked`) may be
    /// taken: stale itself, or held by a client whose row is stale and written by it
    /// before it could have noticed (a client that came back since and wrote the lease
    /// again is not dead, whatever the last scan said).
    pub(crate) fn lease_is_stale(
        &self,
        shard: &str,
        version: &Version,
        ttl: Duration,
        asked: Instant,
    ) -> bool {
        let stale = self.is_stale(
            &format!("lease/{shard}"),
            Some(&version.owner),
            version.last_update,
            ttl,
            asked,
        );
        stale
            || self.dead_client(&version.owner).is_some_and(|d| {
                let grace = i64::try_from(d.grace.as_nanos()).unwrap_or(i64::MAX);
                version.last_update <= d.last_update.saturating_add(grace)
            })
    }

    /// Whether the last scan of the clients table found client `id` stale.
    pub(crate) fn is_dead(&self, id: &str) -> bool {
        self.dead.lock().contains_key(id)
    }

    fn dead_client(&self, id: &str) -> Option<DeadClient> {
        self.dead.lock().get(id).map(|(d, _)| *d)
    }

    /// Records which clients a scan of the clients table found stale. Clients found
    /// stale before whose rows are gone now (`present` lists every row the scan saw) stay
    /// dead for `remember` — the leader deletes the rows of dead clients, and their
    /// leases may not have moved yet; a row seen again, live, clears its client.
    pub(crate) fn set_dead_clients(
        &self,
        found: HashMap<String, DeadClient>,
        present: &std::collections::HashSet<String>,
        remember: Duration,
    ) {
        let now = Instant::now();
        let mut dead = self.dead.lock();
        dead.retain(|id, (_, since)| {
            !present.contains(id) && now.duration_since(*since) < remember
        });
        for (id, d) in found {
            let since = dead.get(&id).map_or(now, |(_, since)| *since);
            dead.insert(id, (d, since));
        }
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

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_row_is_stale_only_after_staying_unchanged_for_the_ttl_as_seen_here() {
        let l = Liveness::default();
        let ttl = 50 * MS;
        // Written "10 minutes in the future" by a fast clock: not stale while it changes.
        let future = clock::now_nanos() + 600_000_000_000;
        let t = Instant::now();
        assert!(!l.is_stale("k", Some("a"), future, ttl, t));
        assert!(!l.is_stale("k", Some("a"), future, ttl, t + 30 * MS));
        let t = Instant::now();
        assert!(!l.is_stale("k", Some("a"), future + 1, ttl, t + 60 * MS));
        // Unchanged from its first sighting to a read sent the ttl later: stale.
        assert!(!l.is_stale("k", Some("a"), future + 1, ttl, t + 40 * MS));
        assert!(l.is_stale("k", Some("a"), future + 1, ttl, t + 60 * MS));
        // A new owner is a new version.
        assert!(!l.is_stale("k", Some("b"), future + 1, ttl, t + 60 * MS));
        // Written "10 minutes ago" by a slow clock: fresh at first sight.
        let past = clock::now_nanos() - 600_000_000_000;
        let hour = Duration::from_secs(60);
        assert!(!l.is_stale("p", Some("a"), past, hour, Instant::now()));
        // Older than the ttl plus the allowance: stale at once.
        let ancient = clock::now_nanos() - 20 * 60 * 1_000_000_000;
        assert!(l.is_stale("q", Some("a"), ancient, hour, Instant::now()));
    }

    #[test]
    fn a_suspension_between_a_read_and_its_answer_is_not_the_writers_silence() {
        let l = Liveness::default();
        let ttl = 50 * MS;
        let v = clock::now_nanos();
        assert!(!l.is_stale("k", Some("a"), v, ttl, Instant::now()));
        // A read sent now, its answer looked at after a suspension longer than the ttl
        // (SIGSTOP, a VM pause): the row was seen unchanged only up to the request.
        let asked = Instant::now();
        std::thread::sleep(2 * ttl);
        assert!(!l.is_stale("k", Some("a"), v, ttl, asked));
        // A read sent after that time, still finding the same version, does go stale.
        assert!(l.is_stale("k", Some("a"), v, ttl, Instant::now()));
    }

    #[test]
    fn a_lease_of_a_dead_client_is_stale_at_once_unless_written_after_it_came_back() {
        let l = Liveness::default();
        let row = clock::now_nanos();
        let lease = |after: Duration| Version {
            owner: "gone".into(),
            last_update: row + i64::try_from(after.as_nanos()).unwrap_or(0),
        };
        let ttl = Duration::from_secs(60);
        let now = Instant::now();
        assert!(!l.lease_is_stale("s", &lease(Duration::from_secs(5)), ttl, now));
        let present = std::collections::HashSet::from(["gone".to_owned()]);
        let hour = Duration::from_secs(3600);
        l.set_dead_clients(
            HashMap::from([(
                "gone".to_owned(),
                DeadClient {
                    last_update: row,
                    grace: Duration::from_secs(12),
                },
            )]),
            &present,
            hour,
        );
        assert!(l.is_dead("gone"));
        // Written within its grace after the row: it stopped delivering since.
        assert!(l.lease_is_stale("s", &lease(Duration::from_secs(5)), ttl, now));
        // Written later: the client was back (a pause, a partition) when it wrote it.
        assert!(!l.lease_is_stale("t", &lease(Duration::from_secs(30)), ttl, now));
        // Its row deleted (by the leader): still dead.
        l.set_dead_clients(HashMap::new(), &std::collections::HashSet::new(), hour);
        assert!(l.is_dead("gone"));
        // Its row back and live: alive.
        l.set_dead_clients(HashMap::new(), &present, hour);
        assert!(!l.is_dead("gone"));
        // Forgotten after the time given.
        l.set_dead_clients(
            HashMap::from([(
                "gone".to_owned(),
                DeadClient {
                    last_update: row,
                    grace: Duration::ZERO,
                },
            )]),
            &present,
            hour,
        );
        l.set_dead_clients(
            HashMap::new(),
            &std::collections::HashSet::new(),
            Duration::ZERO,
        );
        assert!(!l.is_dead("gone"));
    }
}
