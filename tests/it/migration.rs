//! Rolling migration from the Go library: a Go-like client (rows without the scheme
//! mark, Go's assignment) and two Rust clients of one application under continuous
//! writes. While mixed, the Rust clients use Go's scheme, so every shard is read; when
//! the Go-like client leaves, the fleet switches to `assign_shards` on the leader's word.
//! Throughout: no shard idle longer than a shard check plus the throttle (and the commit
//! and polling that measuring adds), nothing lost, nothing delivered twice, per-key order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use kinsumer::AssignmentMode;

use crate::support::golike::GoLike;
use crate::support::{self, Deliveries, Env, Member, Producer, Recorder, TestResult};

/// Polls the checkpoint rows for `how_long`; returns the longest time any shard's
/// checkpoint stood still.
fn longest_idle(env: &Env, how_long: Duration) -> TestResult<(Duration, String)> {
    let mut last: HashMap<String, (Option<String>, Instant)> = HashMap::new();
    let mut worst = (Duration::ZERO, String::new());
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        let now = Instant::now();
        for (shard, row) in env.checkpoint_rows()? {
            let seq = match row.get("SequenceNumber") {
                Some(AttributeValue::S(s)) => Some(s.clone()),
                _ => None,
            };
            let entry = last.entry(shard.clone()).or_insert((seq.clone(), now));
            if entry.0 != seq {
                *entry = (seq, now);
            }
            let idle = now - entry.1;
            if idle > worst.0 {
                worst = (idle, shard);
            }
        }
        support::let_time_pass(Duration::from_millis(100))?;
    }
    Ok(worst)
}

/// The Go assignment over the shard cache, by shard: the owner's id.
fn go_owners(env: &Env, live: &[String]) -> TestResult<HashMap<String, String>> {
    let metadata = env.metadata()?;
    let Some(AttributeValue::L(list)) = metadata.get("ShardCache").and_then(|i| i.get("ShardIDs"))
    else {
        return Err("no shard cache".into());
    };
    let mut live = live.to_vec();
    live.sort_unstable();
    Ok(list
        .iter()
        .enumerate()
        .filter_map(|(i, v)| Some((v.as_s().ok()?.clone(), live[i % live.len()].clone())))
        .collect())
}

fn rendezvous_owners(env: &Env, live: &[String]) -> TestResult<HashMap<String, String>> {
    let mut shards = env.shard_ids()?;
    shards.sort_unstable();
    let mut live = live.to_vec();
    live.sort_unstable();
    let owners = kinsumer::assign_shards(&shards, &live);
    Ok(shards
        .into_iter()
        .zip(owners)
        .map(|(s, o)| (s, live[o].clone()))
        .collect())
}

fn mode(env: &Env) -> TestResult<Option<String>> {
    Ok(env
        .metadata()?
        .get("AssignmentMode")
        .and_then(|i| i.get("Mode"))
        .and_then(|m| m.as_s().ok().cloned()))
}

#[test]
fn go_and_rust_clients_share_a_stream_then_the_fleet_switches() -> TestResult {
    support::init_logging();
    let mut env = Env::new(8)?;
    let check = Duration::from_secs(1);
    // Idle budget: a shard check plus the throttle, plus a commit interval and the
    // polling granularity that measuring through checkpoints adds.
    let budget = check + Duration::from_millis(200 + 200 + 300);
    let log: Deliveries = Default::default();
    let producer = Producer::start(&env);
    let stats = Arc::new(Recorder::default());
    let a = Member::start(
        0,
        env.consumer("rust-a", count_only().with_stats(stats.clone()))?,
        log.clone(),
    )?;
    let b = Member::start(1, env.consumer("rust-b", count_only())?, log.clone())?;
    let go = GoLike::start(&env, 2, "0-go-like", check, log.clone());
    let all = vec![a.id.clone(), b.id.clone(), go.id.clone()];

    // Mixed: the Rust clients follow Go's scheme, so the three agree.
    support::wait_for(Duration::from_secs(30), "Go-scheme ownership", || {
        Ok(env.owners()? == go_owners(&env, &all)?)
    })?;
    assert_eq!(mode(&env)?.as_deref(), Some("go"));
    let (idle, shard) = longest_idle(&env, Duration::from_secs(6))?;
    eprintln!("mixed fleet: longest idle shard {shard}: {idle:?}");
    assert!(
        idle <= budget,
        "shard {shard} idle for {idle:?} while mixed"
    );
    assert_eq!(
        env.owners()?,
        go_owners(&env, &all)?,
        "ownership moved while mixed"
    );

    // The Go-like client leaves cleanly; the fleet switches to rendezvous.
    go.stop()?;
    let rust = vec![a.id.clone(), b.id.clone()];
    let switch_started = Instant::now();
    let (idle, shard) = longest_idle(&env, Duration::from_secs(7))?;
    eprintln!("leave and switch: longest idle shard {shard}: {idle:?}");
    assert!(
        idle <= budget,
        "shard {shard} idle for {idle:?} during the switch"
    );
    support::wait_for(Duration::from_secs(20), "rendezvous ownership", || {
        Ok(env.owners()? == rendezvous_owners(&env, &rust)?)
    })?;
    eprintln!("switched within {:?}", switch_started.elapsed());
    assert_eq!(mode(&env)?.as_deref(), Some("rendezvous"));
    let (idle, shard) = longest_idle(&env, Duration::from_secs(3))?;
    assert!(
        idle <= budget,
        "shard {shard} idle for {idle:?} after the switch"
    );

    // The first Rust client started alone, went Go-compatible when the Go-like client
    // joined, and switched through the union phase when it left; each change reported.
    assert_eq!(
        *stats.modes.lock(),
        [
            AssignmentMode::Rendezvous,
            AssignmentMode::GoCompatible,
            AssignmentMode::Switching,
            AssignmentMode::Rendezvous
        ]
    );

    let written = producer.stop()?;
    support::wait_for(Duration::from_secs(30), "every record delivered", || {
        Ok(log.lock().len() as u64 >= written)
    })?;
    a.stop()?;
    b.stop()?;
    let deliveries: Vec<String> = log.lock().iter().map(|(_, d)| d.clone()).collect();
    let count = support::check_per_key_order(&deliveries, written)?;
    eprintln!("{written} records written, {count} delivered, none twice, none lost");
    Ok(())
}

/// The test's timings, balancing by count only: ownership is checked against
/// `assign_shards` (the leader's moves by load are `tests/it/balance.rs`'s subject).
fn count_only() -> kinsumer::Config {
    support::fast_config().with_load_balancing(false)
}
