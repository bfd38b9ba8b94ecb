//! Which client owns which shard: a pure function of the sorted shard ids and the sorted
//! live client ids, so every client computes the same answer without talking.
//!
//! Rendezvous hashing with a capacity bound. Every (shard, client) pair gets a stable
//! score; pairs are taken best-first, and a shard goes to the client of its best pair
//! that still has room. Room is `shards / clients` per client, plus one for the first
//! `shards % clients` clients to fill up, so owned counts differ by at most one. Scores
//! do not depend on the other members, so a join or leave mostly moves the shards the
//! joining or leaving client gains or loses.

/// Stable 64-bit score of a (shard, client) pair: FNV-1a, then a splitmix64 finalizer.
/// Must never change: clients of different versions compare answers.
fn score(shard: &str, client: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in shard.bytes().chain([0xff]).chain(client.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The owner (an index into `clients`) of each shard, in `shards` order. Empty if there
/// are no clients.
pub(crate) fn assign(shards: &[String], clients: &[String]) -> Vec<usize> {
    if clients.is_empty() {
        return Vec::new();
    }
    let floor = shards.len() / clients.len();
    let mut extra = shards.len() % clients.len();
    let mut pairs: Vec<(u64, usize, usize)> = Vec::with_capacity(shards.len() * clients.len());
    for (s, shard) in shards.iter().enumerate() {
        for (c, client) in clients.iter().enumerate() {
            pairs.push((score(shard, client), s, c));
        }
    }
    // Best score first; ties (astronomically rare) broken by position, deterministically.
    pairs.sort_unstable_by(|a, b| b.cmp(a));
    let mut owner = vec![usize::MAX; shards.len()];
    let mut load = vec![0usize; clients.len()];
    let mut left = shards.len();
    for (_, s, c) in pairs {
        if left == 0 {
            break;
        }
        if owner[s] != usize::MAX {
            continue;
        }
        if load[c] < floor || (load[c] == floor && extra > 0) {
            if load[c] == floor {
                extra -= 1;
            }
            load[c] += 1;
            owner[s] = c;
            left -= 1;
        }
    }
    owner
}

/// The shards `me` owns under [`assign`]; empty if `me` is not among `clients`.
pub(crate) fn owned_by<'a>(shards: &'a [String], clients: &[String], me: &str) -> Vec<&'a str> {
    let Some(me) = clients.iter().position(|c| c == me) else {
        return Vec::new();
    };
    assign(shards, clients)
        .into_iter()
        .zip(shards)
        .filter(|(owner, _)| *owner == me)
        .map(|(_, shard)| shard.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
    }

    #[test]
    fn every_shard_has_one_owner_and_counts_differ_by_at_most_one() {
        for n_shards in [0, 1, 2, 3, 7, 8, 31, 64, 100] {
            for n_clients in 1..=9 {
                let shards = ids("shardId", n_shards);
                let clients = ids("client", n_clients);
                let owners = assign(&shards, &clients);
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

    #[test]
    fn deterministic_and_owned_by_agrees() {
        let shards = ids("shardId", 10);
        let clients = ids("c", 3);
        assert_eq!(assign(&shards, &clients), assign(&shards, &clients));
        let mut all: Vec<&str> = clients
            .iter()
            .flat_map(|c| owned_by(&shards, &clients, c))
            .collect();
        all.sort_unstable();
        let expected: Vec<&str> = shards.iter().map(String::as_str).collect();
        assert_eq!(all, expected);
        assert!(owned_by(&shards, &clients, "stranger").is_empty());
        assert!(assign(&shards, &[]).is_empty());
    }

    #[test]
    fn single_client_owns_everything() {
        let shards = ids("shardId", 5);
        assert_eq!(owned_by(&shards, &ids("c", 1), "c-0000").len(), 5);
    }
}
