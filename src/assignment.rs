//! Which client owns which shard: a pure function of the sorted shard ids and the sorted
//! live client ids, so every client computes the same answer without talking.
//!
//! Rendezvous hashing with a capacity bound. Every (shard, client) pair gets a stable
//! score; pairs are taken best-first, and a shard goes to the client of its best pair
//! that still has room. Room is `shards / clients` per client, plus one for the
//! `shards % clients` clients ranked highest by a per-client score, so owned counts
//! differ by at most one. Scores do not depend on the other members, so a join or leave
//! mostly moves the shards the joining or leaving client gains or loses (the sweep test
//! below measures it against the Go library's scheme).

/// A stable 64-bit key of an id: FNV-1a, then the splitmix64 finalizer.
fn key(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The splitmix64 finalizer.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Stable 64-bit score of a (shard, client) pair, from their [`key`]s: every client of
/// a fleet must compute the same, so it must not change once released. Keys are hashed
/// once per id and pairs combined with one multiply and a finalizer, so 10,000 shards ×
/// 100 clients take a few milliseconds, not the ~100 ms of hashing every pair's bytes.
fn pair(shard: u64, client: u64) -> u64 {
    mix(shard.wrapping_add(client.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// [`key`], for other modules' tests.
#[cfg(test)]
pub(crate) fn tests_key(id: &str) -> u64 {
    key(id)
}

/// The score of a (shard, client) pair by ids.
#[cfg(test)]
fn score(shard: &str, client: &str) -> u64 {
    pair(key(shard), key(client))
}

/// Which client owns which shard: the owner (an index into `clients`) of each shard, in
/// `shards` order; empty if there are no clients.
///
/// Every client of an application computes this from the same inputs — the shard ids
/// and the live client ids ([`Kinsumer::client_id`](crate::Kinsumer::client_id)), both
/// sorted — so they agree without talking. Owned counts differ by at most one, and a
/// client joining or leaving moves few shards. Exposed so operators and tests can see
/// where shards should be.
///
/// # Examples
///
/// ```
/// let shards: Vec<String> = (0..5).map(|i| format!("shardId-{i:012}")).collect();
/// let clients = vec!["client-a".to_string(), "client-b".to_string()];
/// let owners = kinsumer::assign_shards(&shards, &clients);
/// assert_eq!(owners.len(), 5);
/// let a = owners.iter().filter(|&&o| o == 0).count();
/// assert!(a == 2 || a == 3);
/// ```
pub fn assign_shards(shards: &[String], clients: &[String]) -> Vec<usize> {
    if clients.is_empty() {
        return Vec::new();
    }
    // Room per client: `floor`, plus one for the `extra` clients that rank highest by a
    // per-client score. That ranking does not depend on the other members, so across a
    // join or leave the same clients keep their extra slot and fewer shards move.
    let floor = shards.len() / clients.len();
    let extra = shards.len() % clients.len();
    let mut by_rank: Vec<usize> = (0..clients.len()).collect();
    let client_keys: Vec<u64> = clients.iter().map(|c| key(c)).collect();
    let none = key("");
    by_rank.sort_unstable_by_key(|&c| std::cmp::Reverse((pair(none, client_keys[c]), c)));
    let mut room = vec![floor; clients.len()];
    for &c in &by_rank[..extra] {
        room[c] += 1;
    }
    // Pairs are taken best-first over all shards. Equivalently, and without sorting
    // every pair: each shard's clients sorted best-first, and a heap of each unassigned
    // shard's next candidate; a shard whose candidate is full moves on to its next one.
    // Same order (score, then shard, then client position, all descending), same answer.
    let n = clients.len();
    // Each shard's pairs, unsorted until the shard first misses its best client (most
    // shards never do): then sorted best-first, and walked down.
    let mut ranked: Vec<(u64, usize)> = Vec::with_capacity(shards.len() * n);
    for shard in shards {
        let k = key(shard);
        ranked.extend(
            client_keys
                .iter()
                .enumerate()
                .map(|(c, &ck)| (pair(k, ck), c)),
        );
    }
    let mut next = vec![0usize; shards.len()];
    let mut heap: std::collections::BinaryHeap<(u64, usize, usize)> = ranked
        .chunks(n)
        .enumerate()
        .filter_map(|(s, pairs)| pairs.iter().max().map(|&(score, c)| (score, s, c)))
        .collect();
    let mut owner = vec![usize::MAX; shards.len()];
    while let Some((_, s, c)) = heap.pop() {
        if room[c] > 0 {
            room[c] -= 1;
            owner[s] = c;
            continue;
        }
        // Total room equals the shard count, so some client further down has room.
        let pairs = &mut ranked[s * n..(s + 1) * n];
        if next[s] == 0 {
            pairs.sort_unstable_by(|a, b| b.cmp(a));
        }
        next[s] += 1;
        if let Some(&(score, c)) = pairs.get(next[s]) {
            heap.push((score, s, c));
        }
    }
    owner
}

/// The reference form of [`assign_shards`]: every pair sorted best-first.
#[cfg(test)]
fn assign_shards_by_sorting(shards: &[String], clients: &[String]) -> Vec<usize> {
    if clients.is_empty() {
        return Vec::new();
    }
    let floor = shards.len() / clients.len();
    let extra = shards.len() % clients.len();
    let mut by_rank: Vec<usize> = (0..clients.len()).collect();
    by_rank.sort_unstable_by_key(|&c| std::cmp::Reverse((score("", &clients[c]), c)));
    let mut room = vec![floor; clients.len()];
    for &c in &by_rank[..extra] {
        room[c] += 1;
    }
    let mut pairs: Vec<(u64, usize, usize)> = Vec::with_capacity(shards.len() * clients.len());
    for (s, shard) in shards.iter().enumerate() {
        for (c, client) in clients.iter().enumerate() {
            pairs.push((score(shard, client), s, c));
        }
    }
    // Best score first; ties (astronomically rare) broken by position, deterministically.
    pairs.sort_unstable_by(|a, b| b.cmp(a));
    let mut owner = vec![usize::MAX; shards.len()];
    let mut left = shards.len();
    for (_, s, c) in pairs {
        if left == 0 {
            break;
        }
        if owner[s] == usize::MAX && room[c] > 0 {
            room[c] -= 1;
            owner[s] = c;
            left -= 1;
        }
    }
    owner
}

/// The shards `me` owns under the Go library's scheme: the shard at position `i` of
/// `shards` (the `ShardCache` list, in its stored order) goes to the client at position
/// `i mod n` of `clients` (the live client ids, sorted). A client whose position is not
/// below the shard count gets none. Empty if `me` is not among `clients`.
///
/// Used while Go clients share the application (see [`AssignmentMode`]), so that Go and
/// Rust clients agree on who reads what.
pub(crate) fn go_owned_by<'a>(shards: &'a [String], clients: &[String], me: &str) -> Vec<&'a str> {
    let Some(me) = clients.iter().position(|c| c == me) else {
        return Vec::new();
    };
    shards
        .iter()
        .skip(me)
        .step_by(clients.len())
        .map(String::as_str)
        .collect()
}

/// How a client decides which shards it owns. Reported to
/// [`Stats::assignment_mode_changed`](crate::Stats::assignment_mode_changed).
///
/// The clients of an application agree on a scheme without configuration: each Rust
/// client marks its row in the clients table; while any live client lacks the mark (a
/// client of the Go library), every Rust client uses the Go library's scheme, so both
/// kinds agree. Once no Go client is live, the fleet's leader says so in the metadata
/// table and every client moves to [`assign_shards`] through a short
/// [`Switching`](AssignmentMode::Switching) phase in which it keeps the shards of both
/// schemes, so no shard is left unread while clients switch at different moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AssignmentMode {
    /// The Go library's scheme (shard list position modulo the number of clients).
    GoCompatible,
    /// Moving from the Go scheme to [`assign_shards`]: shards of either scheme are kept.
    Switching,
    /// [`assign_shards`]: balanced, and few shards move when clients come and go.
    Rendezvous,
}

impl std::fmt::Display for AssignmentMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AssignmentMode::GoCompatible => "Go-compatible",
            AssignmentMode::Switching => "switching to rendezvous",
            AssignmentMode::Rendezvous => "rendezvous",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned_by<'a>(shards: &'a [String], clients: &[String], me: &str) -> Vec<&'a str> {
        crate::balance::owned_by(shards, clients, &crate::balance::Moves::new(), me)
    }

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
    }

    #[test]
    fn every_shard_has_one_owner_and_counts_differ_by_at_most_one() {
        for n_shards in [0, 1, 2, 3, 7, 8, 31, 64, 100] {
            for n_clients in 1..=9 {
                let shards = ids("shardId", n_shards);
                let clients = ids("client", n_clients);
                let owners = assign_shards(&shards, &clients);
                assert_eq!(owners.len(), n_shards);
                let mut load = vec![0; n_clients];
                for o in owners {
                    load[o] += 1;
                }
                let (min, max) = (load.iter().min(), load.iter().max());
                assert!(
                    max.unwrap() - min.unwrap() <= 1,
                    "{n_shards}/{n_clients}: {load:?}"
                );
            }
        }
    }

    /// The Go library's scheme, pinned: (shards, clients, client, expected shards).
    #[test]
    fn go_scheme_is_list_position_modulo_client_count() {
        let shards: Vec<String> = ["s0", "s1", "s2", "s3", "s4"].map(String::from).to_vec();
        let clients: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let seven: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
        type Case<'a> = (&'a [String], &'a [String], &'a str, &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (&shards, &clients, "a", &["s0", "s2", "s4"]),
            (&shards, &clients, "b", &["s1", "s3"]),
            (&shards, &three, "a", &["s0", "s3"]),
            (&shards, &three, "b", &["s1", "s4"]),
            (&shards, &three, "c", &["s2"]),
            // More clients than shards: positions 5 and 6 get none.
            (&shards, &seven, "c4", &["s4"]),
            (&shards, &seven, "c5", &[]),
            (&shards, &seven, "c6", &[]),
            // Not a live client: nothing.
            (&shards, &clients, "z", &[]),
            (&[], &clients, "a", &[]),
        ];
        for (shards, clients, me, expected) in cases {
            assert_eq!(
                go_owned_by(shards, clients, me),
                expected.to_vec(),
                "{me} of {clients:?}"
            );
        }
        // The list's own order counts, not sorted order (Go reads the cache as stored).
        let unsorted: Vec<String> = ["s2", "s0", "s1"].map(String::from).to_vec();
        assert_eq!(go_owned_by(&unsorted, &clients, "a"), ["s2", "s1"]);
    }

    #[test]
    fn deterministic_and_owned_by_agrees() {
        let shards = ids("shardId", 10);
        let clients = ids("c", 3);
        assert_eq!(
            assign_shards(&shards, &clients),
            assign_shards(&shards, &clients)
        );
        let mut all: Vec<&str> = clients
            .iter()
            .flat_map(|c| owned_by(&shards, &clients, c))
            .collect();
        all.sort_unstable();
        let expected: Vec<&str> = shards.iter().map(String::as_str).collect();
        assert_eq!(all, expected);
        assert!(owned_by(&shards, &clients, "stranger").is_empty());
        assert!(assign_shards(&shards, &[]).is_empty());
    }

    #[test]
    fn the_heap_form_answers_as_sorting_every_pair_does() {
        for n_shards in [0, 1, 2, 5, 16, 33, 100, 257] {
            for n_clients in [1, 2, 3, 4, 7, 12, 31, 50] {
                let shards = ids("shardId", n_shards);
                let clients: Vec<String> = (0..n_clients)
                    .map(|i| format!("{:016x}", score("c", &i.to_string())))
                    .collect();
                assert_eq!(
                    assign_shards(&shards, &clients),
                    assign_shards_by_sorting(&shards, &clients),
                    "{n_shards}/{n_clients}"
                );
            }
        }
    }

    #[test]
    fn single_client_owns_everything() {
        let shards = ids("shardId", 5);
        assert_eq!(owned_by(&shards, &ids("c", 1), "c-0000").len(), 5);
    }
}

/// Movement of this scheme against the Go library's, over a sweep of fleet sizes.
#[cfg(test)]
mod movement {
    use super::*;

    /// The Go library's scheme: shard `i` (sorted) goes to client `i % n` (sorted ids).
    fn go_assign(shards: &[String], clients: &[String]) -> Vec<usize> {
        (0..shards.len()).map(|i| i % clients.len()).collect()
    }

    /// Client ids that sort in no particular relation to their creation order, like the
    /// random UUIDs real clients use.
    fn client_id(n: usize) -> String {
        format!("{:016x}", score("client", &n.to_string()))
    }

    /// Shards whose owner (by id) differs between two assignments.
    fn moved(
        shards: &[String],
        before: (&[String], &[usize]),
        after: (&[String], &[usize]),
    ) -> usize {
        (0..shards.len())
            .filter(|&s| before.0[before.1[s]] != after.0[after.1[s]])
            .count()
    }

    /// Average of moved / unavoidable over joins and leaves, for one scheme.
    fn sweep(scheme: fn(&[String], &[String]) -> Vec<usize>) -> (f64, usize) {
        let shard_counts = [
            1, 2, 3, 4, 5, 7, 8, 12, 16, 31, 32, 50, 64, 100, 128, 200, 256,
        ];
        let mut ratio_sum = 0.0;
        let mut cases = 0u32;
        let mut unbalanced = 0;
        for &n_shards in &shard_counts {
            let shards: Vec<String> = (0..n_shards).map(|i| format!("shardId-{i:012}")).collect();
            for n_clients in 1..32 {
                let mut before: Vec<String> = (0..n_clients).map(client_id).collect();
                before.sort_unstable();
                let mut after = before.clone();
                after.push(client_id(n_clients));
                after.sort_unstable();
                let a = scheme(&shards, &before);
                let b = scheme(&shards, &after);
                if !balanced(&a, before.len()) || !balanced(&b, after.len()) {
                    unbalanced += 1;
                }
                // A join (before -> after) and a leave (after -> before) move the same
                // shards; at the very least the newcomer's share must move:
                // shards / larger client count.
                let minimum = n_shards as f64 / after.len() as f64;
                if minimum >= 1.0 {
                    ratio_sum += moved(&shards, (&before, &a), (&after, &b)) as f64 / minimum;
                    cases += 1;
                }
            }
        }
        (ratio_sum / f64::from(cases), unbalanced)
    }

    fn balanced(owners: &[usize], clients: usize) -> bool {
        let mut load = vec![0usize; clients];
        owners.iter().for_each(|&o| load[o] += 1);
        load.iter().max().unwrap_or(&0) - load.iter().min().unwrap_or(&0) <= 1
    }

    #[test]
    fn balanced_everywhere_and_moves_fewer_shards_than_go() {
        let (ours, ours_unbalanced) = sweep(assign_shards);
        let (go, _) = sweep(go_assign);
        eprintln!(
            "average shards moved per join/leave, as a multiple of the minimum: \
             kinsumer {ours:.2}x, Go kinsumer {go:.2}x"
        );
        assert_eq!(ours_unbalanced, 0, "some assignment was unbalanced");
        assert!(ours < go, "ours {ours:.2}x is not below Go's {go:.2}x");
        assert!(ours <= 2.0, "ours {ours:.2}x misses the 2x target");
    }
}
