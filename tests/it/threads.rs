//! Auto mode with several threads: a record counts as processed only when the iterator
//! that yielded it moves on, never because another thread pulled.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use kinsumer::Polled;

use crate::support::{self, Env, TestResult};

/// The row's `LastUpdate`, as written by the lease's last write.
fn last_update(env: &Env, shard: &str) -> TestResult<i64> {
    let rows = env.checkpoint_rows()?;
    match rows.get(shard).and_then(|r| r.get("LastUpdate")) {
        Some(AttributeValue::N(n)) => Ok(n.parse()?),
        _ => Ok(0),
    }
}

/// Waits until the lease row has been written `writes` more times: any commit the shard
/// thread was going to make of what is processed now has been made by then.
fn wait_for_writes(env: &Env, shard: &str, writes: usize) -> TestResult {
    for _ in 0..writes {
        let seen = last_update(env, shard)?;
        support::wait_for(Duration::from_secs(10), "a lease write", || {
            Ok(last_update(env, shard)? > seen)
        })?;
    }
    Ok(())
}

#[test]
fn another_threads_pull_does_not_checkpoint_a_record_still_in_hand() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 3, 1)?;
    let shard = env.shard_ids()?.remove(0);
    let consumer = env.consumer("threads", support::fast_config())?;
    consumer.run()?;

    let mut a = consumer.records();
    let first = match a.next_timeout(Duration::from_secs(30)) {
        Polled::Record(r) => r,
        other => return Err(format!("expected a record, got {other:?}").into()),
    };
    assert_eq!(first.data(), b"0");
    // Thread B pulls the other two and moves on past both, while A still holds the first.
    let third_seq = std::thread::scope(|s| {
        s.spawn(|| -> TestResult<String> {
            let mut b = consumer.records();
            let mut last = String::new();
            for expected in ["1", "2"] {
                match b.next_timeout(Duration::from_secs(30)) {
                    Polled::Record(r) => {
                        assert_eq!(r.data(), expected.as_bytes());
                        last = r.sequence_number().to_owned();
                    }
                    other => return Err(format!("expected a record, got {other:?}").into()),
                }
            }
            // Moving on marks the third.
            assert!(b.next_timeout(Duration::from_millis(50)).is_timed_out());
            Ok(last)
        })
        .join()
        .map_err(|_| "thread B panicked")?
    })?;
    wait_for_writes(&env, &shard, 2)?;
    assert_eq!(
        env.checkpoint(&shard)?,
        None,
        "the checkpoint moved past a record thread A still holds"
    );
    // A moves on: everything is processed.
    assert!(a.next_timeout(Duration::from_millis(50)).is_timed_out());
    support::wait_for(
        Duration::from_secs(10),
        "the checkpoint on the third",
        || Ok(env.checkpoint(&shard)?.as_deref() == Some(third_seq.as_str())),
    )?;
    drop(first);
    consumer.stop();
    Ok(())
}

/// A thread's iterator dropped with a record in hand (a `break` out of the loop) leaves it
/// unprocessed until that thread moves on; a stop from another thread does not count it.
#[test]
fn a_record_left_in_a_dropped_iterator_waits_for_its_own_thread() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 2, 1)?;
    let shard = env.shard_ids()?.remove(0);
    let consumer = env.consumer("threads", support::fast_config())?;
    consumer.run()?;
    let seqs = std::thread::scope(|s| {
        s.spawn(|| -> TestResult<Vec<String>> {
            let mut seqs = Vec::new();
            for record in consumer.records() {
                seqs.push(record?.sequence_number().to_owned());
                if seqs.len() == 2 {
                    break;
                }
            }
            Ok(seqs)
        })
        .join()
        .map_err(|_| "the worker thread panicked")?
    })?;
    // The first is processed (its iterator moved on), the second not: its thread ended
    // without moving on, and this thread's pulls are not that thread's.
    support::wait_for(
        Duration::from_secs(10),
        "the checkpoint on the first",
        || Ok(env.checkpoint(&shard)?.as_deref() == Some(seqs[0].as_str())),
    )?;
    assert!(
        consumer
            .records()
            .next_timeout(Duration::from_millis(50))
            .is_timed_out()
    );
    consumer.stop();
    assert_eq!(env.checkpoint(&shard)?.as_deref(), Some(seqs[0].as_str()));
    Ok(())
}

/// `stop()` on the thread that pulled counts the record its iterator still holds, as a
/// `for` loop's `break` followed by `stop()` would: the loop is done with it. (The
/// iterator here stays alive past the stop, as in a `while let` over a named iterator.)
#[test]
fn a_stop_on_the_pulling_thread_counts_the_record_its_live_iterator_holds() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 2, 1)?;
    let shard = env.shard_ids()?.remove(0);
    let consumer = env.consumer("threads", support::fast_config())?;
    consumer.run()?;
    let mut records = consumer.records();
    let mut last = String::new();
    for expected in ["0", "1"] {
        match records.next_timeout(Duration::from_secs(30)) {
            Polled::Record(r) => {
                assert_eq!(r.data(), expected.as_bytes());
                last = r.sequence_number().to_owned();
            }
            other => return Err(format!("expected a record, got {other:?}").into()),
        }
    }
    consumer.stop();
    assert_eq!(
        env.checkpoint(&shard)?.as_deref(),
        Some(last.as_str()),
        "the stop left the record in hand unprocessed"
    );
    drop(records);
    Ok(())
}
