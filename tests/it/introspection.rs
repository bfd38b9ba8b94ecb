//! What a client can say of its shards: `assignment()` (each owned shard's state),
//! `position()` (the last record handed out) and `committed()` (the last durable
//! checkpoint), across a rebalance; `Record::lag`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kinsumer::{CheckpointMode, Kinsumer, Polled, ShardState};

use crate::support::{self, Env, TestResult};

fn owned(consumer: &Kinsumer) -> Vec<String> {
    consumer
        .assignment()
        .into_iter()
        .map(|s| s.shard_id().to_owned())
        .collect()
}

#[test]
fn assignment_position_and_committed_follow_hand_outs_commits_and_a_rebalance() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    env.put_numbered(0, 40, 7)?;
    let manual = || support::fast_config().with_checkpoint_mode(CheckpointMode::Manual);
    let a = env.consumer("a", manual())?;
    assert!(a.assignment().is_empty());
    a.run()?;
    support::wait_for(Duration::from_secs(30), "both shards read", || {
        let shards = a.assignment();
        Ok(shards.len() == 2 && shards.iter().all(|s| s.state() == ShardState::Reading))
    })?;
    // Every record handed out moves its shard's position; marks move `committed`.
    let mut last: HashMap<String, String> = HashMap::new();
    let mut records = a.records();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    while n < 40 {
        assert!(Instant::now() < deadline, "{n} records");
        if let Polled::Record(r) = records.next_timeout(Duration::from_millis(200)) {
            let position = a.position(r.shard_id()).ok_or("no position")?;
            assert_eq!(position.sequence_number, r.sequence_number());
            assert!(
                r.lag().is_some_and(|lag| lag < Duration::from_secs(600)),
                "{r:?}"
            );
            last.insert(r.shard_id().to_owned(), r.sequence_number().to_owned());
            r.mark_processed();
            n += 1;
        }
    }
    drop(records);
    for (shard, seq) in &last {
        support::wait_for(Duration::from_secs(30), "the commit", || {
            Ok(a.committed(shard).map(|p| p.sequence_number).as_ref() == Some(seq))
        })?;
        assert_eq!(env.checkpoint(shard)?.as_ref(), Some(seq));
    }
    // A second client joins: each owns one shard, and the one that moved starts from
    // the checkpoint A committed.
    let b = env.consumer("b", manual())?;
    b.run()?;
    support::wait_for(Duration::from_secs(60), "one shard each", || {
        Ok(owned(&a).len() == 1 && owned(&b).len() == 1)
    })?;
    let moved = owned(&b).remove(0);
    assert!(!owned(&a).contains(&moved));
    support::wait_for(Duration::from_secs(30), "B reading", || {
        Ok(b.assignment()[0].state() == ShardState::Reading)
    })?;
    assert_eq!(
        b.committed(&moved).map(|p| p.sequence_number).as_ref(),
        last.get(&moved)
    );
    assert_eq!(b.position(&moved), None, "nothing handed out by B yet");
    a.stop();
    assert!(a.assignment().is_empty(), "{:?}", a.assignment());
    drop(a);
    b.close()?;
    Ok(())
}

/// `commit()` returns once what was marked is durable (the row says so right after);
/// with checkpoint writes failing it returns their error well before its time is up;
/// once they succeed again, so does it.
#[test]
fn commit_waits_for_durable_checkpoints_and_reports_failed_writes() -> TestResult {
    use crate::support::outage::Outage;
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 30, 5)?;
    let shard = env.shard_ids()?.remove(0);
    let outage = Outage::refused()
        .only("UpdateItem")
        .body_containing(&format!("{}_checkpoints", env.app));
    let dynamodb = outage.dynamodb(&env.dynamodb);
    let kinesis = env.kinesis.clone();
    let consumer = env.consumer_with(
        &kinesis,
        &dynamodb,
        "acker",
        support::fast_config().with_checkpoint_mode(CheckpointMode::Manual),
    )?;
    consumer.run()?;
    let mut records = consumer.records();
    let mut take = |n: usize| -> TestResult<String> {
        let mut last = String::new();
        for _ in 0..n {
            match records.next_timeout(Duration::from_secs(30)) {
                Polled::Record(r) => {
                    last = r.sequence_number().to_owned();
                    r.mark_processed();
                }
                other => return Err(format!("expected a record, got {other:?}").into()),
            }
        }
        Ok(last)
    };
    let first = take(10)?;
    consumer.commit(Duration::from_secs(30))?;
    assert_eq!(env.checkpoint(&shard)?, Some(first.clone()));
    // Checkpoint writes refused: the failure comes back, not a time-out.
    outage.arm(true);
    let second = take(10)?;
    let err = consumer
        .commit(Duration::from_secs(30))
        .err()
        .ok_or("a commit succeeded with writes refused")?;
    assert_eq!(err.kind(), kinsumer::ErrorKind::CommitFailed, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&shard) && !text.contains("timed out"),
        "{text}"
    );
    assert_eq!(env.checkpoint(&shard)?, Some(first));
    // Healed: a commit makes it durable (one may still see a write refused before).
    outage.arm(false);
    support::wait_for(Duration::from_secs(30), "a commit that succeeds", || {
        Ok(consumer.commit(Duration::from_secs(10)).is_ok())
    })?;
    assert_eq!(env.checkpoint(&shard)?, Some(second));
    drop(records);
    consumer.close()?;
    Ok(())
}
