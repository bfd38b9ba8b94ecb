//! Balancing by load: three clients over six shards, two of them hot and placed on one
//! client by the count-balanced assignment. The leader moves one of them off it from the
//! loads the owners publish, the fleet settles (no further moves), the `metrics` feature
//! exports the loads and the leader's moves, and with balancing turned off nothing moves
//! at all.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kinsumer::{Config, Kinsumer};

use crate::support::{self, Env, TestResult};

/// Shard id → the client (index) that holds it now; `None` while a shard is held twice.
fn holders(consumers: &[Arc<Kinsumer>]) -> Option<HashMap<String, usize>> {
    let mut held = HashMap::new();
    for (i, c) in consumers.iter().enumerate() {
        for shard in c.assignment() {
            if held.insert(shard.shard_id().to_owned(), i).is_some() {
                return None;
            }
        }
    }
    Some(held)
}

/// Writes ~500 records of 1 KiB a second to each shard whose hash range starts at one of
/// `hash_keys`, until `stop`.
fn write_hot(env: &Env, hash_keys: Vec<String>, stop: Arc<AtomicBool>) -> JoinHandle<TestResult> {
    let kinesis = env.kinesis.clone();
    let stream = env.stream.clone();
    std::thread::spawn(move || -> TestResult {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let data = vec![b'x'; 1024];
        while !stop.load(Ordering::Relaxed) {
            let mut entries = Vec::new();
            for (k, hash) in hash_keys.iter().enumerate() {
                for i in 0..50 {
                    entries.push(
                        PutRecordsRequestEntry::builder()
                            .partition_key(format!("hot-{k}-{i}"))
                            .explicit_hash_key(hash)
                            .data(Blob::new(data.clone()))
                            .build()?,
                    );
                }
            }
            rt.block_on(
                kinesis
                    .put_records()
                    .stream_name(&stream)
                    .set_records(Some(entries))
                    .send(),
            )?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
}

/// Three running clients, the two hot shards, and their hash keys.
type Fleet = (Vec<Arc<Kinsumer>>, Vec<String>, Vec<String>);

/// Starts three draining clients, waits for all six shards to be held once, and returns
/// the two shards of one client (the hot ones) with their hash keys.
fn fleet(env: &mut Env, config: &Config) -> TestResult<Fleet> {
    let mut consumers = Vec::new();
    for i in 0..3 {
        let c = Arc::new(env.consumer(&format!("balance-{i}"), config.clone())?);
        c.run()?;
        let reader = Arc::clone(&c);
        // Ends when the consumer stops.
        std::thread::spawn(move || for _ in reader.records() {});
        consumers.push(c);
    }
    let mut pair = Vec::new();
    support::wait_for(Duration::from_secs(60), "six shards held, two each", || {
        let Some(held) = holders(&consumers) else {
            return Ok(false);
        };
        let on_first: Vec<String> = held
            .iter()
            .filter(|(_, c)| **c == 0)
            .map(|(s, _)| s.clone())
            .collect();
        pair = on_first;
        pair.sort();
        Ok(held.len() == 6 && pair.len() == 2)
    })?;
    let out = env.block_on(env.kinesis.list_shards().stream_name(&env.stream).send())?;
    let hash_keys = pair
        .iter()
        .map(|id| {
            out.shards()
                .iter()
                .find(|s| s.shard_id() == id)
                .and_then(|s| s.hash_key_range())
                .map(|r| r.starting_hash_key().to_owned())
                .ok_or_else(|| format!("no hash range for {id}").into())
        })
        .collect::<TestResult<Vec<String>>>()?;
    Ok((consumers, pair, hash_keys))
}

#[test]
fn two_hot_shards_on_one_client_end_on_two_and_the_fleet_settles() -> TestResult {
    support::init_logging();
    let mut env = Env::new(6)?;
    let config = support::fast_config();
    let figures = crate::metrics::Figures::new(&env)?;
    let (consumers, hot, hash_keys) = fleet(&mut env, &config)?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = write_hot(&env, hash_keys, Arc::clone(&stop));
    let mut settled = HashMap::new();
    let apart = support::wait_for(Duration::from_secs(90), "the hot shards apart", || {
        let Some(held) = holders(&consumers) else {
            return Ok(false);
        };
        let (a, b) = (held.get(&hot[0]), held.get(&hot[1]));
        let done = held.len() == 6 && a.is_some() && b.is_some() && a != b;
        if done {
            settled = held;
        }
        Ok(done)
    });
    // Settled: over five more shard checks under the same load, nothing moves.
    let steady = apart.and_then(|()| {
        support::let_time_pass(Duration::from_secs(5))?;
        let now = holders(&consumers);
        if now.as_ref() != Some(&settled) {
            return Err(format!("moved again: {settled:?} -> {now:?}").into());
        }
        Ok(())
    });
    // The `metrics` feature: the hot shards' load gauges above the others', and the
    // leader counted its moves.
    let loads = steady.as_ref().map_or(Ok(()), |()| {
        support::wait_for(Duration::from_secs(10), "load gauges exported", || {
            let gauges = figures.gauges("kinsumer_shard_load");
            let per_shard: HashMap<String, f64> = gauges
                .iter()
                .filter_map(|(l, v)| Some((crate::metrics::shard_of(l)?, *v)))
                .collect();
            let cold = per_shard
                .iter()
                .filter(|(s, _)| !hot.contains(s))
                .map(|(_, v)| *v)
                .fold(0.0, f64::max);
            Ok(per_shard.len() == 6
                && hot
                    .iter()
                    .all(|h| per_shard.get(h).is_some_and(|v| *v > 10.0 * cold.max(1.0))))
        })
    });
    let moved = figures.total("kinsumer_shards_moved_by_load_total");
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().map_err(|_| "writer panicked")?;
    for c in &consumers {
        c.stop();
    }
    steady?;
    written?;
    loads?;
    assert!(moved >= 1, "moves counted: {moved}");
    // The client that had both keeps one; the other went to a client of its own.
    let counts = settled.values().fold([0; 3], |mut n, &c| {
        n[c] += 1;
        n
    });
    assert!(
        counts.iter().all(|&n| n <= 4),
        "{counts:?}: over the count bound"
    );
    Ok(())
}

#[test]
fn count_only_moves_nothing_under_the_same_load() -> TestResult {
    support::init_logging();
    let mut env = Env::new(6)?;
    let config = support::fast_config().with_load_balancing(false);
    let (consumers, _, hash_keys) = fleet(&mut env, &config)?;
    let before = holders(&consumers);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = write_hot(&env, hash_keys, Arc::clone(&stop));
    // Eight shard checks with loads published: balancing by load would move a hot
    // shard within two or three.
    let waited = support::let_time_pass(Duration::from_secs(8));
    let after = holders(&consumers);
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().map_err(|_| "writer panicked")?;
    for c in &consumers {
        c.stop();
    }
    waited?;
    written?;
    assert!(before.is_some());
    assert_eq!(before, after, "a shard moved with load balancing off");
    Ok(())
}
