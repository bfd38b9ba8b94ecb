//! Resharding while consuming: splits and merges keep every partition key's records in
//! order (a child is read only after its parents are read to the end), lose nothing and
//! repeat nothing.

use kinsumer::Polled;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::support::{self, Deliveries, Env, Member, Producer, TestResult};

/// One consumer on this thread: records (data, shard, delivered at) until `written`
/// distinct records arrived, or fails after `timeout`.
fn consume_all(
    consumer: &kinsumer::Kinsumer,
    until: impl Fn(usize) -> bool,
    log: &mut Vec<(String, String, SystemTime)>,
    timeout: Duration,
) -> TestResult {
    let deadline = Instant::now() + timeout;
    let mut records = consumer.records();
    while !until(log.len()) {
        if Instant::now() > deadline {
            return Err(format!("only {} records after {timeout:?}", log.len()).into());
        }
        match records.next_timeout(Duration::from_millis(200)) {
            Polled::Record(r) => log.push((
                String::from_utf8_lossy(r.data()).into_owned(),
                r.shard_id().to_owned(),
                SystemTime::now(),
            )),
            Polled::TimedOut => {}
            Polled::Failed(e) => return Err(format!("error item: {e}").into()),
            Polled::Ended => return Err("iteration ended".into()),
        }
    }
    Ok(())
}

/// When each finished shard's row says it finished.
fn finished_at(env: &Env) -> TestResult<HashMap<String, SystemTime>> {
    Ok(env
        .checkpoint_rows()?
        .into_iter()
        .filter_map(|(shard, row)| match row.get("Finished") {
            Some(AttributeValue::N(n)) => n
                .parse::<u64>()
                .ok()
                .map(|ns| (shard, UNIX_EPOCH + Duration::from_nanos(ns))),
            _ => None,
        })
        .collect())
}

/// Reshards with `reshard` after 200 records, keeps writing, then checks order and
/// completeness; prints how soon the children started after their parents finished.
fn reshard_while_consuming(
    shards: i32,
    reshard: impl FnOnce(&Env) -> TestResult<Vec<String>>,
) -> TestResult {
    support::init_logging();
    let mut env = Env::new(shards)?;
    let consumer = env.consumer("resharder", support::fast_config())?;
    consumer.run()?;
    let producer = Producer::start(&env);
    let mut log = Vec::new();
    consume_all(&consumer, |n| n >= 200, &mut log, Duration::from_secs(30))?;
    let parents = reshard(&env)?;
    consume_all(&consumer, |n| n >= 500, &mut log, Duration::from_secs(30))?;
    let written = producer.stop()?;
    consume_all(
        &consumer,
        |n| n as u64 >= written,
        &mut log,
        Duration::from_secs(30),
    )?;
    consumer.stop();

    let data: Vec<String> = log.iter().map(|(d, _, _)| d.clone()).collect();
    support::check_per_key_order(&data, written)?;
    let finished = finished_at(&env)?;
    for parent in &parents {
        assert!(
            finished.contains_key(parent),
            "parent {parent} not marked finished"
        );
    }
    let parents_done = parents
        .iter()
        .filter_map(|p| finished.get(p))
        .max()
        .copied();
    let listed = env.block_on(env.kinesis.list_shards().stream_name(&env.stream).send())?;
    let children: Vec<&str> = listed
        .shards()
        .iter()
        .filter(|s| {
            [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .any(|p| parents.iter().any(|q| q == p))
        })
        .map(|s| s.shard_id())
        .collect();
    assert!(!children.is_empty(), "no children listed");
    let first_child = log
        .iter()
        .filter(|(_, shard, _)| children.contains(&shard.as_str()))
        .map(|(_, _, at)| *at)
        .min();
    // Per-key order implies it, but check directly: no child record before the parents
    // were finished.
    if let (Some(done), Some(child)) = (parents_done, first_child) {
        assert!(
            child >= done,
            "a child was read before its parents finished"
        );
    }
    if let (Some(done), Some(child)) = (parents_done, first_child) {
        let gap = child.duration_since(done).unwrap_or_default();
        eprintln!("children started {gap:?} after their parents finished (shard check 1 s)");
    }
    Ok(())
}

#[test]
fn split_mid_stream_keeps_per_key_order() -> TestResult {
    reshard_while_consuming(2, |env| {
        let parent = env.open_shards()?.remove(0);
        env.split(&parent)?;
        Ok(vec![parent])
    })
}

#[test]
fn merge_mid_stream_keeps_per_key_order() -> TestResult {
    reshard_while_consuming(3, |env| {
        let open = env.open_shards()?;
        env.merge(&open[0], &open[1])?;
        Ok(vec![open[0].clone(), open[1].clone()])
    })
}

#[test]
fn split_then_merge_with_two_clients_and_a_restart() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let log: Deliveries = Arc::default();
    let a = env.member(0, "a", &log)?;
    let b = env.member(1, "b", &log)?;
    let producer = Producer::start(&env);
    let wait_for_deliveries = |n: usize| {
        support::wait_for(Duration::from_secs(30), "deliveries", || {
            Ok(log.lock().len() >= n)
        })
    };
    wait_for_deliveries(200)?;
    let parent = env.open_shards()?.remove(0);
    env.split(&parent)?;
    wait_for_deliveries(400)?;
    // Restart one client in the middle of it.
    b.stop()?;
    let b = Member::start(
        2,
        env.consumer("b-again", support::fast_config())?,
        Arc::clone(&log),
    )?;
    wait_for_deliveries(600)?;
    // Merge the two children back.
    let open = env.open_shards()?;
    let children: Vec<&String> = open.iter().take(2).collect();
    env.merge(children[0], children[1])?;
    wait_for_deliveries(800)?;
    let written = producer.stop()?;
    support::wait_for(Duration::from_secs(60), "every record", || {
        Ok(log.lock().len() as u64 >= written)
    })?;
    a.stop()?;
    b.stop()?;
    let data: Vec<String> = log.lock().iter().map(|(_, d)| d.clone()).collect();
    support::check_per_key_order(&data, written)?;
    Ok(())
}
