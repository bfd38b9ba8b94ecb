//! Draining a multi-shard stream delivers every record exactly once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{self, Env, Recorder, TestResult};

#[test]
fn drains_a_four_shard_stream_without_loss_or_duplicates() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    const N: u64 = 2_000;
    env.put_numbered(0, N, 97)?;
    let stats = Arc::new(Recorder::default());
    let consumer = env.consumer("drainer", support::fast_config().with_stats(stats.clone()))?;
    consumer.run()?;
    let seen = support::collect_until(&consumer, Duration::from_secs(60), |s| s.len() as u64 >= N)?;
    consumer.stop();
    assert_eq!(Recorder::get(&stats.delivered), N);
    assert_eq!(Recorder::get(&stats.fetched), N);
    assert_eq!(Recorder::get(&stats.acquired), 4);
    assert_eq!(Recorder::get(&stats.released), 4);
    assert_eq!(Recorder::get(&stats.lost), 0);
    assert!(Recorder::get(&stats.commits) >= 4);
    // The client deregistered on stop.
    assert!(env.client_ids()?.is_empty());

    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates delivered");
    let expected: HashSet<String> = (0..N).map(|i| i.to_string()).collect();
    let got: HashSet<String> = seen.into_iter().collect();
    assert_eq!(got, expected);
    // Records come from all four shards, and each shard's checkpoint was written.
    let rows = env.checkpoint_rows()?;
    assert_eq!(rows.len(), 4);
    for shard in env.shard_ids()? {
        assert!(
            env.checkpoint(&shard)?.is_some(),
            "no checkpoint for {shard}"
        );
    }
    Ok(())
}

#[test]
fn drains_with_two_io_threads() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    const N: u64 = 1_000;
    env.put_numbered(0, N, 37)?;
    let consumer = env.consumer("wide", support::fast_config().with_io_threads(2))?;
    consumer.run()?;
    let seen = support::collect_until(&consumer, Duration::from_secs(60), |s| s.len() as u64 >= N)?;
    // The runtime has its two workers (named so; only this test asks for them).
    let workers = std::fs::read_dir("/proc/self/task")?
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("kinsumer-io-wor"))
        })
        .count();
    assert_eq!(workers, 2);
    consumer.close()?;
    support::check_per_key_order(&seen, N)?;
    Ok(())
}
