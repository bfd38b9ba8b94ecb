//! Each initial position, for shards that have no checkpoint yet.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kinsumer::InitialPosition;

use crate::support::{self, Env, Recorder, TestResult};

fn numbers(from: u64, to: u64) -> Vec<String> {
    (from..to).map(|i| i.to_string()).collect()
}

#[test]
fn trim_horizon_reads_from_the_oldest_record() -> TestResult {
    let mut env = Env::new(1)?;
    env.put_numbered(0, 10, 3)?;
    let config = support::fast_config().with_initial_position(InitialPosition::TrimHorizon);
    let consumer = env.consumer("th", config)?;
    consumer.run()?;
    let seen = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 10)?;
    assert_eq!(seen, numbers(0, 10));
    Ok(())
}

#[test]
fn latest_skips_what_was_written_before() -> TestResult {
    let mut env = Env::new(1)?;
    env.put_numbered(0, 10, 3)?;
    let stats = Arc::new(Recorder::default());
    let config = support::fast_config()
        .with_initial_position(InitialPosition::Latest)
        .with_stats(stats.clone());
    let consumer = env.consumer("latest", config)?;
    consumer.run()?;
    // Once the shard has been polled, its LATEST iterator exists; write after that.
    support::wait_for(Duration::from_secs(10), "the first poll", || {
        Ok(Recorder::get(&stats.fetch_calls) > 0)
    })?;
    env.put_numbered(10, 20, 3)?;
    let seen = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 10)?;
    assert_eq!(seen, numbers(10, 20));
    Ok(())
}

#[test]
fn at_timestamp_starts_at_the_given_time() -> TestResult {
    let mut env = Env::new(1)?;
    env.put_numbered(0, 10, 3)?;
    // Emulators may resolve timestamps to the second: keep a clear second between.
    support::let_time_pass(Duration::from_millis(1_100))?;
    let start = SystemTime::now();
    support::let_time_pass(Duration::from_millis(1_100))?;
    env.put_numbered(10, 20, 3)?;
    let config = support::fast_config().with_initial_position(InitialPosition::AtTimestamp(start));
    let consumer = env.consumer("ts", config)?;
    consumer.run()?;
    let seen = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 10)?;
    assert_eq!(seen, numbers(10, 20));
    // Nothing older follows.
    assert!(
        consumer
            .records()
            .next_timeout(Duration::from_millis(500))
            .is_timed_out()
    );
    Ok(())
}

#[test]
fn a_checkpoint_wins_over_the_initial_position() -> TestResult {
    let mut env = Env::new(1)?;
    env.put_numbered(0, 10, 3)?;
    let first = env.consumer("first", support::fast_config())?;
    first.run()?;
    support::collect_until(&first, Duration::from_secs(30), |s| s.len() >= 5)?;
    first.stop();
    let config = support::fast_config().with_initial_position(InitialPosition::Latest);
    let second = env.consumer("second", config)?;
    second.run()?;
    let seen = support::collect_until(&second, Duration::from_secs(30), |s| s.len() >= 5)?;
    assert_eq!(seen, numbers(5, 10));
    Ok(())
}

/// A shard read from LATEST and released before anything of it was processed: the next
/// owner starts where reading began (the row's `StartPosition`), not at a later tip, so
/// the records the first owner fetched but never handed out are delivered.
#[test]
fn latest_then_a_clean_handover_loses_nothing() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let shard = env.shard_ids()?.remove(0);
    let stats = Arc::new(Recorder::default());
    let config = support::fast_config()
        .with_initial_position(InitialPosition::Latest)
        .with_stats(stats.clone());
    let first = env.consumer("first", config)?;
    first.run()?;
    support::wait_for(Duration::from_secs(10), "the first poll", || {
        Ok(Recorder::get(&stats.fetch_calls) > 0)
    })?;
    env.put_numbered(0, 5, 1)?;
    support::wait_for(Duration::from_secs(10), "the records fetched", || {
        Ok(Recorder::get(&stats.fetched) >= 5)
    })?;
    // Released with nothing handed out.
    first.stop();
    let rows = env.checkpoint_rows()?;
    let row = rows.get(&shard).ok_or("no checkpoint row")?;
    assert!(
        matches!(row.get("StartPosition"),
            Some(aws_sdk_dynamodb::types::AttributeValue::S(v)) if v.starts_with("AT_TIMESTAMP ")),
        "the row does not say where reading began: {row:?}"
    );
    let config = support::fast_config().with_initial_position(InitialPosition::Latest);
    let second = env.consumer("second", config)?;
    second.run()?;
    let seen = support::collect_until(&second, Duration::from_secs(30), |s| s.len() >= 5)?;
    assert_eq!(seen, numbers(0, 5));
    second.stop();
    // Once a checkpoint is written, the start position goes.
    let rows = env.checkpoint_rows()?;
    let row = rows.get(&shard).ok_or("no checkpoint row")?;
    assert!(row.get("StartPosition").is_none(), "{row:?}");
    Ok(())
}
