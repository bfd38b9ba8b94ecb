//! Which assignment scheme this client uses, and when it switches: pure logic.
//!
//! While any live client is a Go client (its row lacks the scheme mark), every Rust
//! client uses the Go library's scheme, so both kinds agree on who reads what. Once none
//! is live, the leader writes its word (`rendezvous`) and each client, when it reads the
//! word, keeps the shards of *both* schemes for a window of two shard checks before using
//! [`assign_shards`](crate::assign_shards) alone. Clients read the word at different
//! moments, but all within one shard check of each other, so when the first client drops
//! the Go scheme every other one already holds its new shards or is waiting to capture
//! them — no shard goes unread, and leases keep any shard from being read twice. The
//! window runs on each client's own monotonic clock: no clocks are compared across hosts.
//!
//! Going back (a Go client joins) needs no word: every Rust client sees the unmarked row
//! at its next shard check and uses the Go scheme at once, as the Go client does.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::assignment::{self, AssignmentMode};
use crate::balance::{self, Moves};
use crate::metadata::SchemeWord;

/// Where this client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Go,
    /// Keeping the shards of both schemes until `until`.
    Switching {
        until: Instant,
    },
    Rendezvous,
}

impl Phase {
    /// The phase of a client starting up.
    pub(crate) fn initial(go_live: bool, word: Option<SchemeWord>) -> Phase {
        if go_live || word == Some(SchemeWord::Go) {
            Phase::Go
        } else {
            Phase::Rendezvous
        }
    }

    /// The phase after a shard check that saw `go_live` and read `word`.
    pub(crate) fn next(
        self,
        go_live: bool,
        word: Option<SchemeWord>,
        now: Instant,
        window: Duration,
    ) -> Phase {
        if go_live {
            return Phase::Go;
        }
        match self {
            // The leader has not said yet that the Go clients are gone.
            Phase::Go if word == Some(SchemeWord::Go) => Phase::Go,
            Phase::Go => Phase::Switching {
                until: now + window,
            },
            Phase::Switching { until } if now >= until => Phase::Rendezvous,
            other => other,
        }
    }

    pub(crate) fn mode(self) -> AssignmentMode {
        match self {
            Phase::Go => AssignmentMode::GoCompatible,
            Phase::Switching { .. } => AssignmentMode::Switching,
            Phase::Rendezvous => AssignmentMode::Rendezvous,
        }
    }

    /// The shards `me` owns. `listed` is the shard list as Go clients see it (the shard
    /// cache, in its stored order); `ready` the list this crate assigns from (unfinished,
    /// parents finished); `moves` the leader's load balancing on top of
    /// [`assign_shards`](crate::assign_shards) ([`balance`](crate::balance)), which the Go
    /// scheme ignores.
    pub(crate) fn owned(
        self,
        listed: &[String],
        ready: &[String],
        live: &[String],
        moves: &Moves,
        me: &str,
    ) -> HashSet<String> {
        let go = || assignment::go_owned_by(listed, live, me);
        let ours = || balance::owned_by(ready, live, moves, me);
        let owned: Vec<&str> = match self {
            Phase::Go => go(),
            Phase::Rendezvous => ours(),
            Phase::Switching { .. } => go().into_iter().chain(ours()).collect(),
        };
        owned.into_iter().map(str::to_owned).collect()
    }
}

/// The word this client writes, if any: any client announces a live Go client; the
/// leader alone says when the fleet may switch to rendezvous.
pub(crate) fn word_to_write(
    leader: bool,
    go_live: bool,
    word: Option<SchemeWord>,
) -> Option<SchemeWord> {
    if go_live {
        (word != Some(SchemeWord::Go)).then_some(SchemeWord::Go)
    } else {
        (leader && word != Some(SchemeWord::Rendezvous)).then_some(SchemeWord::Rendezvous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(2);

    #[test]
    fn a_fresh_rust_fleet_starts_in_rendezvous_and_a_mixed_one_in_go() {
        assert_eq!(Phase::initial(false, None), Phase::Rendezvous);
        assert_eq!(
            Phase::initial(false, Some(SchemeWord::Rendezvous)),
            Phase::Rendezvous
        );
        assert_eq!(
            Phase::initial(true, Some(SchemeWord::Rendezvous)),
            Phase::Go
        );
        assert_eq!(Phase::initial(false, Some(SchemeWord::Go)), Phase::Go);
    }

    #[test]
    fn switching_waits_for_the_word_then_keeps_both_for_the_window() {
        let t0 = Instant::now();
        let go = Phase::Go;
        // Go client gone, but the leader has not spoken: stay.
        assert_eq!(go.next(false, Some(SchemeWord::Go), t0, WINDOW), Phase::Go);
        let switching = go.next(false, Some(SchemeWord::Rendezvous), t0, WINDOW);
        assert_eq!(switching, Phase::Switching { until: t0 + WINDOW });
        assert_eq!(switching.mode(), AssignmentMode::Switching);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            switching.next(false, Some(SchemeWord::Rendezvous), t1, WINDOW),
            switching
        );
        let t2 = t0 + WINDOW;
        assert_eq!(
            switching.next(false, Some(SchemeWord::Rendezvous), t2, WINDOW),
            Phase::Rendezvous
        );
        // A Go client appearing sends everyone back at once, in any phase.
        assert_eq!(switching.next(true, None, t1, WINDOW), Phase::Go);
        assert_eq!(Phase::Rendezvous.next(true, None, t1, WINDOW), Phase::Go);
    }

    #[test]
    fn only_the_leader_says_rendezvous_anyone_says_go() {
        use SchemeWord::*;
        assert_eq!(word_to_write(false, true, None), Some(Go));
        assert_eq!(word_to_write(false, true, Some(Rendezvous)), Some(Go));
        assert_eq!(word_to_write(true, true, Some(Go)), None);
        assert_eq!(word_to_write(false, false, Some(Go)), None);
        assert_eq!(word_to_write(true, false, Some(Go)), Some(Rendezvous));
        assert_eq!(word_to_write(true, false, None), Some(Rendezvous));
        assert_eq!(word_to_write(true, false, Some(Rendezvous)), None);
    }

    #[test]
    fn switching_owns_the_union_of_both_schemes() {
        let shards: Vec<String> = (0..8).map(|i| format!("shardId-{i:012}")).collect();
        let live: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        for me in &live {
            let go = Phase::Go.owned(&shards, &shards, &live, &Moves::new(), me);
            let ours = Phase::Rendezvous.owned(&shards, &shards, &live, &Moves::new(), me);
            let both = Phase::Switching {
                until: Instant::now(),
            }
            .owned(&shards, &shards, &live, &Moves::new(), me);
            assert_eq!(both, go.union(&ours).cloned().collect());
        }
    }

    #[test]
    fn the_go_scheme_ignores_the_leaders_moves_and_rendezvous_applies_them() {
        let shards: Vec<String> = (0..8).map(|i| format!("shardId-{i:012}")).collect();
        let live: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        // Every shard moved to "c".
        let moves: Moves = shards.iter().map(|s| (s.clone(), "c".to_owned())).collect();
        for me in &live {
            assert_eq!(
                Phase::Go.owned(&shards, &shards, &live, &moves, me),
                Phase::Go.owned(&shards, &shards, &live, &Moves::new(), me),
            );
        }
        assert_eq!(
            Phase::Rendezvous
                .owned(&shards, &shards, &live, &moves, "c")
                .len(),
            8
        );
        assert!(
            Phase::Rendezvous
                .owned(&shards, &shards, &live, &moves, "a")
                .is_empty()
        );
    }
}
