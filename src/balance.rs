//! Balancing by load: which shards move off the count-balanced assignment so that no
//! client carries much more than its share of the bytes. Pure logic, no I/O.
//!
//! # The rule
//!
//! The base is [`assign_shards`]: balanced by count, few shards moved when clients come
//! and go. On top of it the fleet's leader keeps a short list of *moves* (shard → client)
//! in the metadata table, and every client owns what the base gives it, minus the shards
//! moved away, plus the shards moved to it. Only the leader changes the list, at its
//! shard checks, from the loads the owners publish on their lease rows, and the list is
//! read back each time, so a new leader carries on from its predecessor's:
//!
//! 1. Moves of shards no longer listed, or to clients no longer live, are dropped; so are
//!    moves to a client that would own more than [`Rules::max_count`], in shard order.
//! 2. While the fleet carries less than [`Rules::quiet`] in all, nothing else changes: quiet
//!    shards never move.
//! 3. Then, at most [`Rules::moves_per_check`] times: the busiest client (by load, ties by
//!    id) gives up the one shard whose move to the least busy client with room lowers the
//!    busier of the two the most, if the busiest client is above [`Rules::trigger`] × the
//!    mean (for the check's first move; [`Rules::settle`] × the mean for the next ones,
//!    and for the first one too when the last check ran out of moves above it:
//!    [`Plan::settling`]) and the move lowers it by at least [`Rules::gain`] × the mean.
//!    Otherwise the check is done.
//!
//! The thresholds are the hysteresis: once balanced, small changes in load move nothing,
//! and a shard moved one way cannot gain enough to move straight back. With steady load
//! the list, and so the assignment, stays as it is.
//!
//! A shard's load is `bytes/s + RECORD_WEIGHT × records/s` of what its owner fetched,
//! smoothed over about a minute (an exponential average; a new owner starts from the
//! load the row last published), published as the row attribute `FetchLoad` with each
//! commit. A shard with no published load counts 0.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::assignment::assign_shards;

/// Bytes a record counts for besides its own: decoding and handing out a record costs
/// about as much as half a kilobyte of payload (see `BENCHMARKS.md`).
pub const RECORD_WEIGHT: f64 = 512.0;

/// The default [`Rules::max_moves`]: 4,000 entries, ~240 KB.
pub const MAX_MOVES: usize = 4_000;

/// The thresholds of [the rule](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// A check starts moving shards only while the busiest client is above this
    /// multiple of the mean load.
    pub trigger: f64,
    /// Once started, a check goes on while the busiest client is above this multiple
    /// (below `trigger`, so a balanced fleet sits well inside the band).
    pub settle: f64,
    /// A move must lower the busier client by at least this fraction of the mean load.
    pub gain: f64,
    /// Below this total load (bytes/s, records weighted) nothing moves.
    pub quiet: f64,
    /// Most moves made per check: a lease hand-off each, so a few at a time.
    pub moves_per_check: usize,
    /// Most shards off the count-balanced assignment at once: the list is one DynamoDB
    /// item, whose size limit is 400 KB (an entry takes ~60 bytes with 20-character
    /// shard ids and 36-character client ids). Moving a shard back to its base owner is
    /// always allowed.
    pub max_moves: usize,
}

impl Rules {
    /// The defaults for `clients` live clients: trigger 1.10, settle 1.05, gain 0.005,
    /// quiet 512 KiB/s (about 1,000 records/s of 1 KiB),
    /// and `max(4, clients / 8)` moves per check.
    pub fn for_clients(clients: usize) -> Rules {
        Rules {
            trigger: 1.10,
            settle: 1.05,
            gain: 0.005,
            quiet: 512.0 * 1024.0,
            moves_per_check: (clients / 8).max(4),
            max_moves: MAX_MOVES,
        }
    }

    /// The most shards a client may own: twice its count share, and at least one more
    /// than it (a client with a hot shard may own little else, others more).
    pub fn max_count(shards: usize, clients: usize) -> usize {
        if clients == 0 {
            return 0;
        }
        let share = shards.div_ceil(clients);
        (2 * shards).div_ceil(clients).max(share + 1)
    }
}

/// The leader's list of moves off the base assignment: shard id → client id. Sorted, so
/// it is stored and compared the same on every client.
pub type Moves = BTreeMap<String, String>;

/// What the leader keeps between checks: the moves, and whether the last check stopped at
/// [`Rules::moves_per_check`] with the busiest client still above [`Rules::settle`] — then
/// the next check goes on from the lower band instead of waiting for [`Rules::trigger`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Shard id → client id, off the count-balanced assignment.
    pub moves: Moves,
    /// A check ran out of moves before the fleet was within [`Rules::settle`].
    pub settling: bool,
}

/// The owner (an index into `clients`) of each shard, in `shards` order: the base
/// assignment with `moves` applied where the shard is listed and the client live.
/// Empty if there are no clients.
pub fn owners(shards: &[String], clients: &[String], moves: &Moves) -> Vec<usize> {
    let mut owner = assign_shards(shards, clients);
    if moves.is_empty() || owner.is_empty() {
        return owner;
    }
    let index: HashMap<&str, usize> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    for (s, shard) in shards.iter().enumerate() {
        if let Some(&c) = moves.get(shard).and_then(|c| index.get(c.as_str())) {
            owner[s] = c;
        }
    }
    owner
}

/// The shards `me` owns under the base assignment with `moves` applied.
pub(crate) fn owned_by<'a>(
    shards: &'a [String],
    clients: &[String],
    moves: &Moves,
    me: &str,
) -> Vec<&'a str> {
    let Some(me) = clients.iter().position(|c| c == me) else {
        return Vec::new();
    };
    owners(shards, clients, moves)
        .into_iter()
        .zip(shards)
        .filter(|(owner, _)| *owner == me)
        .map(|(_, shard)| shard.as_str())
        .collect()
}

/// One leader check of [the rule](self): the plan to publish, given the last one, the
/// listed shards, the live clients (sorted) and the shards' loads.
///
/// ```
/// use std::collections::HashMap;
/// use kinsumer::balance::{self, Plan, Rules};
///
/// let shards: Vec<String> = (0..4).map(|i| format!("shardId-{i:012}")).collect();
/// let clients = vec!["a".to_string(), "b".to_string()];
/// // The count-balanced assignment gives each client two shards; make one client's
/// // two shards hot.
/// let base = kinsumer::assign_shards(&shards, &clients);
/// let load: HashMap<String, f64> = shards
///     .iter()
///     .zip(&base)
///     .map(|(s, &c)| (s.clone(), if c == 0 { 1e6 } else { 1e3 }))
///     .collect();
/// let plan = balance::rebalance(&shards, &clients, &load, &Plan::default(), &Rules::for_clients(2));
/// let owners = balance::owners(&shards, &clients, &plan.moves);
/// // One hot shard moved: each client now carries one.
/// let hot_on_a = (0..4).filter(|&i| base[i] == 0 && owners[i] == 0).count();
/// assert_eq!(hot_on_a, 1);
/// ```
pub fn rebalance(
    shards: &[String],
    clients: &[String],
    load: &HashMap<String, f64>,
    last_plan: &Plan,
    rules: &Rules,
) -> Plan {
    let n = clients.len();
    if n == 0 {
        return Plan::default();
    }
    let last = &last_plan.moves;
    let mut settling = false;
    let base = assign_shards(shards, clients);
    let index: HashMap<&str, usize> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    // 1. The last moves that still apply.
    let mut owner = base.clone();
    for (s, shard) in shards.iter().enumerate() {
        if let Some(&c) = last.get(shard).and_then(|c| index.get(c.as_str())) {
            owner[s] = c;
        }
    }
    let max_count = Rules::max_count(shards.len(), n);
    let mut count = vec![0usize; n];
    owner.iter().for_each(|&c| count[c] += 1);
    for s in 0..shards.len() {
        let c = owner[s];
        if c != base[s] && count[c] > max_count {
            count[c] -= 1;
            owner[s] = base[s];
            count[base[s]] += 1;
        }
    }
    let weight: Vec<f64> = shards
        .iter()
        .map(|s| {
            load.get(s)
                .copied()
                .filter(|l| l.is_finite() && *l > 0.0)
                .unwrap_or(0.0)
        })
        .collect();
    let mut carried = vec![0.0f64; n];
    for (s, &c) in owner.iter().enumerate() {
        carried[c] += weight[s];
    }
    let total: f64 = carried.iter().sum();
    let mean = total / n as f64;
    // 2. Quiet: nothing more moves.
    if total >= rules.quiet && n > 1 {
        let mut made_all = true;
        // 3. A few moves off the busiest client.
        let mut by_client: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (s, &c) in owner.iter().enumerate() {
            by_client[c].push(s);
        }
        for made in 0..rules.moves_per_check {
            let busiest = (0..n)
                .max_by(|&a, &b| carried[a].total_cmp(&carried[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            let band = if made == 0 && !last_plan.settling {
                rules.trigger
            } else {
                rules.settle
            };
            if carried[busiest] <= band * mean {
                made_all = false;
                break;
            }
            let Some(lightest) = (0..n)
                .filter(|&c| c != busiest && count[c] < max_count)
                .min_by(|&a, &b| carried[a].total_cmp(&carried[b]).then(a.cmp(&b)))
            else {
                made_all = false;
                break;
            };
            // The move that lowers the busier of the two the most; ties to the lower
            // shard position.
            let off = owner.iter().zip(&base).filter(|(o, b)| o != b).count();
            let full = off >= rules.max_moves;
            let best = by_client[busiest]
                .iter()
                // At the cap, only moves back to the base owner.
                .filter(|&&s| !full || base[s] == lightest)
                .map(|&s| {
                    let after = (carried[busiest] - weight[s]).max(carried[lightest] + weight[s]);
                    (carried[busiest] - after, s)
                })
                .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
            let Some((gained, s)) = best else {
                made_all = false;
                break;
            };
            if gained < rules.gain * mean {
                made_all = false;
                break;
            }
            owner[s] = lightest;
            carried[busiest] -= weight[s];
            carried[lightest] += weight[s];
            count[busiest] -= 1;
            count[lightest] += 1;
            by_client[busiest].retain(|&x| x != s);
            by_client[lightest].push(s);
        }
        // Out of moves with the busiest still above the lower band: go on next check.
        let busiest = carried.iter().copied().fold(0.0, f64::max);
        settling = made_all && busiest > rules.settle * mean;
    }
    Plan {
        moves: shards
            .iter()
            .enumerate()
            .filter(|&(s, _)| owner[s] != base[s])
            .map(|(s, shard)| (shard.clone(), clients[owner[s]].clone()))
            .collect(),
        settling,
    }
}

/// Time over which a shard's published load follows a change (an exponential average).
pub(crate) const SMOOTHING: Duration = Duration::from_secs(60);

/// A shard's load as its owner measures it: what it fetched, weighted
/// ([`load_of`]), as an exponentially weighted average over about [`SMOOTHING`]. Lives
/// in the shard's thread; a new owner starts from the load the row last published, so a
/// hot shard does not look cold for a minute after it moves.
#[derive(Debug)]
pub(crate) struct LoadMeter {
    since: Instant,
    amount: f64,
    /// The smoothed load; `None` before the first reading of an unseeded meter.
    rate: Option<f64>,
}

impl LoadMeter {
    pub(crate) fn new(now: Instant, seed: Option<f64>) -> LoadMeter {
        LoadMeter {
            since: now,
            amount: 0.0,
            rate: seed.filter(|l| l.is_finite() && *l >= 0.0),
        }
    }

    /// Counts a fetched batch.
    pub(crate) fn fetched(&mut self, records: usize, bytes: usize) {
        self.amount += load_of(bytes as f64, records as f64);
    }

    /// The smoothed load at `now`, folding in what was fetched since the last reading.
    /// Readings less than a second apart return the last figure.
    pub(crate) fn read(&mut self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.since).as_secs_f64();
        if dt < 1.0 {
            return self.rate.unwrap_or(0.0);
        }
        let current = self.amount / dt;
        let rate = match self.rate {
            None => current,
            Some(r) => r + (1.0 - (-dt / SMOOTHING.as_secs_f64()).exp()) * (current - r),
        };
        self.rate = Some(rate);
        self.since = now;
        self.amount = 0.0;
        rate
    }
}

/// The load of `bytes` and `records` (per second, or in all):
/// `bytes + RECORD_WEIGHT × records`.
pub(crate) fn load_of(bytes: f64, records: f64) -> f64 {
    bytes + RECORD_WEIGHT * records
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each shard's load by its position.
    fn loads(shards: &[String], load: impl Fn(usize) -> f64) -> HashMap<String, f64> {
        shards
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), load(i)))
            .collect()
    }

    /// Zipf-like loads: the shard of rank r carries 1/r^skew, ranks scattered over the ids.
    fn zipf(shards: &[String], skew: f64) -> HashMap<String, f64> {
        let n = shards.len();
        loads(shards, |i| 1e6 / (((i * 7919) % n + 1) as f64).powf(skew))
    }

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
    }

    fn client_loads(owner: &[usize], weight: &[f64], n: usize) -> Vec<f64> {
        let mut carried = vec![0.0; n];
        for (s, &c) in owner.iter().enumerate() {
            carried[c] += weight[s];
        }
        carried
    }

    fn max_over_mean(carried: &[f64]) -> f64 {
        let mean = carried.iter().sum::<f64>() / carried.len() as f64;
        carried.iter().copied().fold(0.0, f64::max) / mean
    }

    /// Runs checks until the moves stop changing (at most `checks`); returns the moves
    /// and how many checks changed them.
    fn settle(
        shards: &[String],
        clients: &[String],
        load: &HashMap<String, f64>,
        mut plan: Plan,
        checks: usize,
    ) -> (Plan, usize) {
        let rules = Rules::for_clients(clients.len());
        for i in 0..checks {
            let next = rebalance(shards, clients, load, &plan, &rules);
            if next == plan {
                return (plan, i);
            }
            plan = next;
        }
        (plan, checks)
    }

    #[test]
    fn two_hot_shards_of_sixteen_on_four_clients_end_apart_within_the_bound() {
        let shards = ids("shardId", 16);
        let clients = ids("client", 4);
        // Every pair of hot shards, so the base puts some pairs on one client.
        for a in 0..16 {
            for b in a + 1..16 {
                let load = loads(&shards, |i| if i == a || i == b { 1e7 } else { 1e6 });
                let (moves, _) = settle(&shards, &clients, &load, Plan::default(), 20);
                let owner = owners(&shards, &clients, &moves.moves);
                assert_ne!(owner[a], owner[b], "hot shards {a} and {b} share a client");
                let weight: Vec<f64> = shards.iter().map(|s| load[s]).collect();
                let ratio = max_over_mean(&client_loads(&owner, &weight, 4));
                assert!(ratio <= 1.25, "{a},{b}: max/mean {ratio:.2}");
                // Settled: one more check changes nothing.
                let rules = Rules::for_clients(4);
                assert_eq!(rebalance(&shards, &clients, &load, &moves, &rules), moves);
            }
        }
    }

    #[test]
    fn even_or_quiet_load_moves_nothing() {
        for (n_shards, n_clients) in [(16, 4), (100, 7), (64, 3), (10, 10), (3, 5)] {
            let shards = ids("shardId", n_shards);
            let clients = ids("client", n_clients);
            let even = loads(&shards, |_| 1e6);
            let rules = Rules::for_clients(n_clients);
            assert!(
                rebalance(&shards, &clients, &even, &Plan::default(), &rules)
                    .moves
                    .is_empty(),
                "{n_shards}/{n_clients} even"
            );
            // Skewed but quiet: a few bytes a second in all.
            let quiet = loads(&shards, |i| if i == 0 { 500.0 } else { 1.0 });
            assert!(
                rebalance(&shards, &clients, &quiet, &Plan::default(), &rules)
                    .moves
                    .is_empty()
            );
            // No loads known at all.
            assert!(
                rebalance(&shards, &clients, &HashMap::new(), &Plan::default(), &rules)
                    .moves
                    .is_empty()
            );
        }
    }

    /// Over a sweep of fleet sizes and skews: every shard has one live owner, counts stay
    /// within the bound, checks settle, settled moves are stable, the result is the same
    /// from the same inputs, and balance never gets worse than the base.
    #[test]
    fn sweep_of_sizes_and_skews() {
        for n_shards in [1, 2, 5, 16, 33, 64, 200] {
            for n_clients in [1, 2, 3, 4, 7, 12] {
                for skew in [0.0, 0.5, 1.0, 1.5] {
                    let shards = ids("shardId", n_shards);
                    let clients = ids("client", n_clients);
                    let load = zipf(&shards, skew);
                    let (moves, checks) = settle(&shards, &clients, &load, Plan::default(), 200);
                    let case = format!("{n_shards}/{n_clients} skew {skew}");
                    assert!(checks < 200, "{case}: did not settle");
                    let rules = Rules::for_clients(n_clients);
                    assert_eq!(rebalance(&shards, &clients, &load, &moves, &rules), moves);
                    let owner = owners(&shards, &clients, &moves.moves);
                    assert_eq!(owner.len(), n_shards);
                    let mut count = vec![0; n_clients];
                    owner.iter().for_each(|&c| count[c] += 1);
                    let max = Rules::max_count(n_shards, n_clients);
                    assert!(count.iter().all(|&c| c <= max), "{case}: {count:?} > {max}");
                    let weight: Vec<f64> = shards.iter().map(|s| load[s]).collect();
                    let base = assign_shards(&shards, &clients);
                    let before = max_over_mean(&client_loads(&base, &weight, n_clients));
                    let after = max_over_mean(&client_loads(&owner, &weight, n_clients));
                    assert!(after <= before + 1e-9, "{case}: {before:.3} -> {after:.3}");
                    // Within the mean plus one shard: shards do not split.
                    let hottest = weight.iter().copied().fold(0.0, f64::max);
                    let mean = weight.iter().sum::<f64>() / n_clients as f64;
                    let bound = (1.0 + hottest / mean).max(1.25);
                    assert!(
                        after <= bound + 1e-9,
                        "{case}: max/mean {after:.3} above {bound:.3}"
                    );
                }
            }
        }
    }

    /// The loads with up to ±`noise` (a fraction) of deterministic jitter per shard.
    fn jittered(load: &HashMap<String, f64>, noise: f64, round: u64) -> HashMap<String, f64> {
        load.iter()
            .map(|(id, l)| {
                let h = crate::assignment::tests_key(&format!("{id}/{round}"));
                let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
                (id.clone(), l * (1.0 + noise * (2.0 * unit - 1.0)))
            })
            .collect()
    }

    /// Hysteresis: once settled, ten checks of the same load measured with ±5 % noise
    /// move nothing; and the same inputs always give the same plan.
    #[test]
    fn settled_fleets_stay_put_under_noisy_steady_load() {
        for (n_shards, n_clients, skew) in
            [(16, 4, 9.0), (200, 7, 0.5), (64, 3, 1.0), (500, 20, 0.7)]
        {
            let shards = ids("shardId", n_shards);
            let clients = ids("client", n_clients);
            let load = if skew > 5.0 {
                // Two shards at 10x the others.
                loads(&shards, |i| if i == 1 || i == 2 { 1e7 } else { 1e6 })
            } else {
                zipf(&shards, skew)
            };
            let (settled, _) = settle(&shards, &clients, &load, Plan::default(), 500);
            let (again, _) = settle(&shards, &clients, &load, Plan::default(), 500);
            assert_eq!(settled, again, "not deterministic");
            let rules = Rules::for_clients(n_clients);
            let mut plan = settled.clone();
            for round in 0..10 {
                plan = rebalance(
                    &shards,
                    &clients,
                    &jittered(&load, 0.05, round),
                    &plan,
                    &rules,
                );
            }
            assert_eq!(
                owners(&shards, &clients, &plan.moves),
                owners(&shards, &clients, &settled.moves),
                "{n_shards}/{n_clients} skew {skew}: moved under steady load"
            );
        }
    }

    /// Joins and leaves over a sweep: balancing by load moves, in all, no more than
    /// twice what the count-based assignment alone moves.
    #[test]
    fn joins_and_leaves_move_within_twice_the_count_based_movement() {
        let (mut by_count, mut by_load) = (0usize, 0usize);
        for n_shards in [16, 33, 64, 200] {
            for n_clients in [2, 3, 4, 7] {
                let shards = ids("shardId", n_shards);
                let before = ids("client", n_clients);
                let mut after = before.clone();
                after.push("client-new".into());
                after.sort();
                let load = zipf(&shards, 1.0);
                let moved = |a: (&[String], &[usize]), b: (&[String], &[usize])| {
                    a.1.iter()
                        .zip(b.1)
                        .filter(|(x, y)| a.0[**x] != b.0[**y])
                        .count()
                };
                for (from, to) in [(&before, &after), (&after, &before)] {
                    let (start, _) = settle(&shards, from, &load, Plan::default(), 500);
                    let (end, _) = settle(&shards, to, &load, start.clone(), 500);
                    by_count += moved(
                        (from, &assign_shards(&shards, from)),
                        (to, &assign_shards(&shards, to)),
                    );
                    by_load += moved(
                        (from, &owners(&shards, from, &start.moves)),
                        (to, &owners(&shards, to, &end.moves)),
                    );
                }
            }
        }
        eprintln!("joins and leaves: by load {by_load} shards moved, count-based {by_count}");
        assert!(by_count > 0);
        assert!(
            by_load <= 2 * by_count,
            "by load {by_load} shards, count-based {by_count}"
        );
    }

    #[test]
    fn moves_to_a_gone_client_or_of_a_gone_shard_are_dropped() {
        let shards = ids("shardId", 8);
        let clients = ids("client", 3);
        let mut last = Plan::default();
        last.moves
            .insert("shardId-0000".into(), "client-gone".into());
        last.moves
            .insert("shardId-9999".into(), "client-0001".into());
        let even = loads(&shards, |_| 1e6);
        let next = rebalance(&shards, &clients, &even, &last, &Rules::for_clients(3));
        assert!(next.moves.is_empty(), "{next:?}");
        // Owners ignore such moves too.
        assert_eq!(
            owners(&shards, &clients, &last.moves),
            assign_shards(&shards, &clients)
        );
    }

    #[test]
    fn at_most_a_few_moves_per_check() {
        let shards = ids("shardId", 64);
        let clients = ids("client", 4);
        // All the load on the shards of one client of the base.
        let base = assign_shards(&shards, &clients);
        let load = loads(&shards, |i| if base[i] == 0 { 1e6 } else { 1.0 });
        let rules = Rules::for_clients(4);
        let first = rebalance(&shards, &clients, &load, &Plan::default(), &rules);
        assert_eq!(first.moves.len(), rules.moves_per_check);
        assert!(first.settling);
        let (settled, checks) = settle(&shards, &clients, &load, Plan::default(), 50);
        assert!(checks > 1 && checks < 50, "{checks}");
        let owner = owners(&shards, &clients, &settled.moves);
        assert!(!settled.settling);
        let weight: Vec<f64> = shards.iter().map(|s| load[s]).collect();
        assert!(max_over_mean(&client_loads(&owner, &weight, 4)) <= 1.25);
    }

    #[test]
    fn the_list_of_moves_stays_under_its_cap() {
        let shards = ids("shardId", 400);
        let clients = ids("client", 10);
        let base = assign_shards(&shards, &clients);
        let load = loads(&shards, |i| if base[i] < 3 { 1e6 } else { 1e3 });
        let mut rules = Rules::for_clients(10);
        rules.max_moves = 7;
        let mut plan = Plan::default();
        for _ in 0..50 {
            plan = rebalance(&shards, &clients, &load, &plan, &rules);
            assert!(plan.moves.len() <= 7, "{}", plan.moves.len());
        }
        assert_eq!(plan.moves.len(), 7);
    }

    #[test]
    fn load_meter_smooths_towards_the_rate() {
        let t0 = Instant::now();
        let mut m = LoadMeter::new(t0, None);
        m.fetched(10, 100_000);
        let first = m.read(t0 + Duration::from_secs(10));
        assert!((first - load_of(10_000.0, 1.0)).abs() < 1e-6, "{first}");
        // Nothing more for a minute: about 1/e of it left.
        let later = m.read(t0 + Duration::from_secs(70));
        assert!((later - first / std::f64::consts::E).abs() < 1.0, "{later}");
        // Read again at once: the same figure.
        assert_eq!(m.read(t0 + Duration::from_secs(70)), later);
        // Seeded: starts from the published load, not from zero.
        let mut seeded = LoadMeter::new(t0, Some(5e6));
        seeded.fetched(0, 5_000_000);
        assert!((seeded.read(t0 + Duration::from_secs(1)) - 5e6).abs() < 1.0);
        assert_eq!(LoadMeter::new(t0, Some(f64::NAN)).read(t0), 0.0);
    }
}
