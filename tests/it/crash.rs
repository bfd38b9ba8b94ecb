//! A consumer that dies without stopping: its checkpoint covers exactly what the caller
//! had processed (auto mode never checkpoints the record still being processed), and a
//! new consumer re-delivers exactly the unprocessed tail once the lease goes stale.

use kinsumer::Polled;
use std::sync::Arc;
use std::time::Duration;

use kinsumer::Record;

use crate::support::{self, Env, Recorder, TestResult};

#[test]
fn crash_redelivers_exactly_the_unprocessed_tail() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    const N: u64 = 100;
    const TAKEN: usize = 40;
    env.put_numbered(0, N, 7)?;
    let shard = env.shard_ids()?.remove(0);

    let stats = Arc::new(Recorder::default());
    let first = env.consumer("doomed", support::fast_config().with_stats(stats.clone()))?;
    first.run()?;
    let mut taken: Vec<Record> = Vec::new();
    {
        let mut records = first.records();
        while taken.len() < TAKEN {
            match records.next_timeout(Duration::from_secs(30)) {
                Polled::Record(r) => taken.push(r),
                other => return Err(format!("expected a record, got {other:?}").into()),
            }
        }
    }
    // Records 0..39 are processed (each was followed by a pull); record 39 is in hand.
    let last_processed = taken[TAKEN - 2].sequence_number().to_owned();
    let in_hand = taken[TAKEN - 1].sequence_number().to_owned();
    support::wait_for(
        Duration::from_secs(10),
        "checkpoint of the processed prefix",
        || Ok(env.checkpoint(&shard)?.as_deref() == Some(last_processed.as_str())),
    )?;
    // Several commit intervals later it still has not moved onto the record in hand.
    support::let_time_pass(Duration::from_millis(800))?;
    assert_eq!(
        env.checkpoint(&shard)?.as_deref(),
        Some(last_processed.as_str())
    );
    assert_ne!(last_processed, in_hand);
    assert!(Recorder::get(&stats.commits) > 0);

    first.abandon_for_tests();

    // The next consumer waits out the stale lease (5 x 1 s), then resumes after the
    // checkpoint: the record that was in hand comes first, and nothing is lost.
    let second = env.consumer("heir", support::fast_config())?;
    second.run()?;
    let rest = support::collect_until(&second, Duration::from_secs(60), |s| {
        s.len() >= N as usize - (TAKEN - 1)
    })?;
    second.stop();
    let expected: Vec<String> = ((TAKEN as u64 - 1)..N).map(|i| i.to_string()).collect();
    assert_eq!(rest, expected);
    Ok(())
}

/// A crashed client's row is removed by the leader once the client is found gone, so a
/// client starting later never counts it live (it would wait a failover time to).
#[test]
fn a_crashed_clients_row_is_removed_once_it_is_found_gone() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let doomed = env.consumer("doomed", support::fast_config())?;
    let doomed_id = doomed.client_id().to_owned();
    doomed.run()?;
    let survivor = env.consumer("survivor", support::fast_config())?;
    let survivor_id = survivor.client_id().to_owned();
    survivor.run()?;
    support::wait_for(Duration::from_secs(30), "one shard each", || {
        let owners = env.owners()?;
        Ok(owners.len() == 2 && owners.values().any(|o| *o == doomed_id))
    })?;
    doomed.abandon_for_tests();
    support::wait_for(Duration::from_secs(60), "the survivor owning both", || {
        Ok(env
            .owners()?
            .values()
            .filter(|o| **o == survivor_id)
            .count()
            == 2)
    })?;
    support::wait_for(
        Duration::from_secs(30),
        "the crashed client's row gone",
        || Ok(!env.client_ids()?.contains(&doomed_id)),
    )?;
    assert!(env.client_ids()?.contains(&survivor_id));
    // A client starting now shares the shards with the survivor alone.
    let late = env.consumer("late", support::fast_config())?;
    let late_id = late.client_id().to_owned();
    late.run()?;
    support::wait_for(Duration::from_secs(30), "one shard each again", || {
        let owners = env.owners()?;
        Ok(owners.values().filter(|o| **o == late_id).count() == 1
            && owners.values().filter(|o| **o == survivor_id).count() == 1)
    })?;
    late.close()?;
    survivor.close()?;
    Ok(())
}

/// A client row the leader cannot date (no numeric `LastUpdate`: hand-edited, or another
/// tool's) never counts as live, and is removed as well.
#[test]
fn an_undated_client_row_is_removed() -> TestResult {
    use aws_sdk_dynamodb::types::AttributeValue;
    support::init_logging();
    let mut env = Env::new(1)?;
    let consumer = env.consumer("leader", support::fast_config())?;
    let id = consumer.client_id().to_owned();
    for (stray, last_update) in [
        ("undated", None),
        ("text-dated", Some(AttributeValue::S("yesterday".into()))),
    ] {
        let mut req = env
            .dynamodb
            .put_item()
            .table_name(format!("{}_clients", env.app))
            .item("ID", AttributeValue::S(stray.into()))
            .item("Name", AttributeValue::S(stray.into()));
        if let Some(v) = last_update {
            req = req.item("LastUpdate", v);
        }
        env.block_on(req.send())?;
    }
    consumer.run()?;
    support::wait_for(Duration::from_secs(30), "the stray rows removed", || {
        let ids = env.client_ids()?;
        Ok(!ids.iter().any(|i| i == "undated" || i == "text-dated"))
    })?;
    assert_eq!(env.client_ids()?, vec![id]);
    consumer.close()?;
    Ok(())
}
