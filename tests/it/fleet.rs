//! Several clients share a stream: balanced leases, clean handovers without duplicates,
//! a joining client moves only what the assignment says, and leadership fails over.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::support::{self, Deliveries, Env, Member, Producer, TestResult};

/// How many shards each owner holds.
fn loads(owners: &HashMap<String, String>) -> BTreeMap<String, usize> {
    let mut loads = BTreeMap::new();
    for owner in owners.values() {
        *loads.entry(owner.clone()).or_default() += 1;
    }
    loads
}

/// Waits until exactly `ids` own all `shards` shards, matching `assign_shards`.
fn wait_for_assignment(
    env: &Env,
    ids: &[&str],
    shards: usize,
) -> TestResult<HashMap<String, String>> {
    let mut sorted: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    sorted.sort_unstable();
    let mut shard_ids = env.shard_ids()?;
    shard_ids.sort_unstable();
    let expected: HashMap<String, String> = kinsumer::assign_shards(&shard_ids, &sorted)
        .into_iter()
        .zip(&shard_ids)
        .map(|(owner, shard)| (shard.clone(), sorted[owner].clone()))
        .collect();
    support::wait_for(
        Duration::from_secs(30),
        "leases to match the assignment",
        || {
            let owners = env.owners()?;
            Ok(owners.len() == shards && owners == expected)
        },
    )?;
    Ok(expected)
}

#[test]
fn three_clients_share_hand_over_and_rebalance_without_duplicates() -> TestResult {
    support::init_logging();
    let mut env = Env::new(8)?;
    let producer = Producer::start(&env);
    let log: Deliveries = Arc::default();
    let mut members = Vec::new();
    for i in 0..3 {
        let consumer = env.consumer(&format!("member-{i}"), count_only())?;
        members.push(Member::start(i, consumer, Arc::clone(&log))?);
    }
    let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    let owners = wait_for_assignment(&env, &[&ids[0], &ids[1], &ids[2]], 8)?;
    let mut counts: Vec<usize> = loads(&owners).into_values().collect();
    counts.sort_unstable();
    assert_eq!(counts, [2, 3, 3]);

    // Member 2 leaves cleanly: the other two take its shards.
    members.pop().ok_or("no member")?.stop()?;
    let before_join = wait_for_assignment(&env, &[&ids[0], &ids[1]], 8)?;
    assert!(loads(&before_join).values().all(|&n| n == 4));

    // A fourth client joins: only the shards the assignment gives away move.
    let consumer = env.consumer("member-3", count_only())?;
    let joiner = Member::start(3, consumer, Arc::clone(&log))?;
    let after_join = wait_for_assignment(&env, &[&ids[0], &ids[1], &joiner.id], 8)?;
    let moved = before_join
        .iter()
        .filter(|(shard, owner)| after_join.get(*shard) != Some(owner))
        .count();
    let to_joiner = after_join.values().filter(|o| **o == joiner.id).count();
    assert!(to_joiner >= 2, "joiner got {to_joiner} shards");
    assert!(
        moved <= 2 * to_joiner,
        "{moved} shards moved for a joiner taking {to_joiner}"
    );
    members.push(joiner);

    // Everything written is delivered; with only clean handovers, exactly once.
    let written = producer.stop()?;
    support::wait_for(
        Duration::from_secs(60),
        "every record to be delivered",
        || {
            let seen: HashSet<String> = log.lock().iter().map(|(_, d)| d.clone()).collect();
            Ok(seen.len() as u64 >= written)
        },
    )?;
    for m in members {
        m.stop()?;
    }
    let deliveries = log.lock().clone();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for (_, d) in &deliveries {
        *times.entry(d.as_str()).or_default() += 1;
    }
    let expected: HashSet<String> = (0..written).map(|i| i.to_string()).collect();
    let seen: HashSet<String> = times.keys().map(|s| s.to_string()).collect();
    assert_eq!(seen, expected, "records lost");
    let duplicated: Vec<&&str> = times
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(d, _)| d)
        .collect();
    assert!(
        duplicated.is_empty(),
        "{} of {written} records delivered twice across clean handovers, e.g. {:?}",
        duplicated.len(),
        duplicated.first()
    );
    Ok(())
}

#[test]
fn leadership_fails_over_and_the_new_leader_keeps_the_shard_cache_fresh() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let log: Deliveries = Arc::default();
    let a = env.member(0, "a", &log)?;
    let b = env.member(1, "b", &log)?;
    let leader_of = |env: &Env| -> TestResult<Option<String>> {
        Ok(env
            .metadata()?
            .get("Leader")
            .and_then(|item| match item.get("ID") {
                Some(AttributeValue::S(id)) => Some(id.clone()),
                _ => None,
            }))
    };
    let first = a.id.clone().min(b.id.clone());
    support::wait_for(Duration::from_secs(20), "the first client to lead", || {
        Ok(leader_of(&env)?.as_deref() == Some(first.as_str()))
    })?;
    let (leader, follower) = if a.id == first { (a, b) } else { (b, a) };
    leader.stop()?;
    support::wait_for(Duration::from_secs(20), "the other client to lead", || {
        Ok(leader_of(&env)?.as_deref() == Some(follower.id.as_str()))
    })?;

    // New shards appear (a split): the new leader publishes them in the shard cache
    // (and drops the parent once it is read to its end and finished).
    let before: Vec<String> = env.shard_ids()?;
    let shards = env.block_on(env.kinesis.list_shards().stream_name(&env.stream).send())?;
    let parent = shards.shards().first().ok_or("no shard")?;
    let range = parent.hash_key_range().ok_or("no hash range")?;
    let lo: u128 = range.starting_hash_key().parse()?;
    let hi: u128 = range.ending_hash_key().parse()?;
    env.block_on(
        env.kinesis
            .split_shard()
            .stream_name(&env.stream)
            .shard_to_split(parent.shard_id())
            .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
            .send(),
    )?;
    support::wait_for(
        Duration::from_secs(30),
        "the children in the shard cache",
        || {
            let all = env.shard_ids()?;
            let cache: Vec<String> = match env
                .metadata()?
                .get("ShardCache")
                .and_then(|i| i.get("ShardIDs"))
            {
                Some(AttributeValue::L(ids)) => {
                    ids.iter().filter_map(|v| v.as_s().ok().cloned()).collect()
                }
                _ => Vec::new(),
            };
            let children: Vec<&String> = all.iter().filter(|id| !before.contains(id)).collect();
            Ok(children.len() == 2 && children.iter().all(|id| cache.contains(id)))
        },
    )?;
    follower.stop()?;
    // A clean stop gives the leadership up.
    assert_eq!(leader_of(&env)?, None);
    Ok(())
}

/// The test's timings, balancing by count only: ownership is checked against
/// `assign_shards` (the leader's moves by load are `tests/it/balance.rs`'s subject).
fn count_only() -> kinsumer::Config {
    support::fast_config().with_load_balancing(false)
}
