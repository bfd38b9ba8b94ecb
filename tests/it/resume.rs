//! Stopping mid-stream and resuming with a new consumer loses nothing and repeats
//! nothing: the stop commits exactly what was processed.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::{self, Env, TestResult};

const N: u64 = 1_200;
const FIRST: usize = 500;

fn resume_after(stop: impl FnOnce(kinsumer::Kinsumer, &mut Vec<String>)) -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    env.put_numbered(0, N, 31)?;

    let first = env.consumer("first", support::fast_config())?;
    first.run()?;
    let mut seen_first = Vec::new();
    stop_first(first, &mut seen_first, stop)?;
    assert!(seen_first.len() >= FIRST);

    let second = env.consumer("second", support::fast_config())?;
    second.run()?;
    let remaining = N as usize - seen_first.len();
    let seen_second =
        support::collect_until(&second, Duration::from_secs(60), |s| s.len() >= remaining)?;
    second.stop();

    let a: HashSet<&String> = seen_first.iter().collect();
    let b: HashSet<&String> = seen_second.iter().collect();
    assert_eq!(
        a.len(),
        seen_first.len(),
        "duplicates within the first consumer"
    );
    assert_eq!(
        b.len(),
        seen_second.len(),
        "duplicates within the second consumer"
    );
    let both: Vec<&&String> = a.intersection(&b).collect();
    assert!(
        both.is_empty(),
        "{} records delivered twice, e.g. {:?}",
        both.len(),
        both.first()
    );
    let all: HashSet<String> = a.union(&b).map(|s| (*s).clone()).collect();
    let expected: HashSet<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(all, expected, "records lost");
    Ok(())
}

fn stop_first(
    consumer: kinsumer::Kinsumer,
    seen: &mut Vec<String>,
    stop: impl FnOnce(kinsumer::Kinsumer, &mut Vec<String>),
) -> TestResult {
    let got = support::collect_until(&consumer, Duration::from_secs(60), |s| s.len() >= FIRST)?;
    seen.extend(got);
    stop(consumer, seen);
    Ok(())
}

#[test]
fn stop_after_the_loop_then_resume() -> TestResult {
    resume_after(|consumer, _| consumer.stop())
}

#[test]
fn stop_handle_ends_iteration_and_drop_commits() -> TestResult {
    resume_after(|consumer, seen| {
        let handle = consumer.stop_handle();
        let mut records = consumer.records();
        // One more record, then a stop request from "elsewhere": the next pull ends
        // the iteration (and counts this record processed).
        if let Some(Ok(r)) = records.next() {
            seen.push(String::from_utf8_lossy(r.data()).into_owned());
        }
        handle.stop();
        assert!(
            records.next().is_none(),
            "iteration goes on after a stop request"
        );
        assert!(records.next().is_none(), "iterator is not fused");
        drop(records);
        // Not running any more, but holding its leases until it is stopped or dropped.
        let health = consumer.health();
        assert!(!health.is_running() && !consumer.is_running(), "{health:?}");
        assert!(health.is_stopping(), "{health:?}");
        assert!(health.owned_shards() > 0, "{health:?}");
        drop(consumer);
    })
}

/// In auto mode, `stop()` from another thread does not count the record the loop body
/// is still processing: the next consumer delivers it again.
#[test]
fn stop_from_another_thread_leaves_the_record_in_hand_unprocessed() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 5, 1)?;
    let shard = env.shard_ids()?.remove(0);
    let first = env.consumer("first", support::fast_config())?;
    first.run()?;
    let mut records = first.records();
    let mut in_hand = None;
    for _ in 0..3 {
        match records.next_timeout(Duration::from_secs(30)) {
            kinsumer::Polled::Record(r) => in_hand = Some(r),
            other => return Err(format!("expected a record, got {other:?}").into()),
        }
    }
    let in_hand = in_hand.ok_or("no record")?;
    assert_eq!(in_hand.data(), b"2");
    // "Elsewhere": a supervisor thread stops the consumer while record 2 is in hand.
    std::thread::scope(|scope| scope.spawn(|| first.stop()).join()).map_err(|_| "stop panicked")?;
    // Records 0 and 1 were processed (each followed by a pull); 2 was not.
    let second = env.consumer("second", support::fast_config())?;
    second.run()?;
    let rest = support::collect_until(&second, Duration::from_secs(30), |s| s.len() >= 3)?;
    assert_eq!(rest, ["2", "3", "4"]);
    second.stop();
    assert!(env.checkpoint(&shard)?.is_some());
    Ok(())
}
