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
