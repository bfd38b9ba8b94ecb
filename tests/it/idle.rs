//! Adaptive polling: an idle shard is polled ever less often, up to the idle poll delay,
//! and goes back to the throttle delay as soon as records come.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

use kinsumer::ShardListener;
use parking_lot::Mutex;

use crate::support::outage::Outage;
use crate::support::{self, Env, Recorder, TestResult};

#[test]
fn an_idle_shard_is_polled_less_and_wakes_up_for_records() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let stats = Arc::new(Recorder::default());
    let config = support::fast_config()
        .with_idle_poll_delay(Duration::from_secs(1))
        .with_stats(stats.clone());
    let consumer = env.consumer("idler", config)?;
    consumer.run()?;
    support::wait_for(Duration::from_secs(10), "the first poll", || {
        Ok(Recorder::get(&stats.fetch_calls) >= 3)
    })?;
    // Backed off to 1 s by now (200, 200, 400, 800, 1000 ms…).
    support::let_time_pass(Duration::from_secs(2))?;
    let before = Recorder::get(&stats.fetch_calls);
    support::let_time_pass(Duration::from_secs(5))?;
    let idle_calls = Recorder::get(&stats.fetch_calls) - before;
    // At the throttle delay it would be 25; at 1 s, 5 (6 with rounding).
    assert!(idle_calls <= 7, "{idle_calls} GetRecords in 5 idle seconds");
    assert!(idle_calls >= 3, "{idle_calls} GetRecords in 5 idle seconds");
    // 7 s idle is past the 5 s lease time: the idle lease was heartbeated all along
    // (at most a shard check and a write old), never lost.
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    for (shard, row) in env.checkpoint_rows()? {
        let written = match row.get("LastUpdate") {
            Some(AttributeValue::N(v)) => v.parse::<i64>()? / 1_000_000,
            other => return Err(format!("{shard}: LastUpdate {other:?}").into()),
        };
        assert!(
            now_ms - written < 2_500,
            "{shard}'s lease written {} ms ago",
            now_ms - written
        );
    }
    assert_eq!(Recorder::get(&stats.lost), 0);

    env.put_numbered(0, 10, 3)?;
    let seen = support::collect_until(&consumer, Duration::from_secs(10), |s| s.len() >= 10)?;
    assert_eq!(seen.len(), 10);
    consumer.stop();
    eprintln!("idle: {idle_calls} GetRecords in 5 s");
    Ok(())
}

/// Notes the thread id of each shard's thread (`assigned` runs on it).
#[derive(Debug, Default)]
struct ShardThreads(Mutex<HashMap<String, String>>);

impl ShardListener for ShardThreads {
    fn assigned(&self, shard_id: &str) {
        // "/proc/thread-self" links to "<pid>/task/<tid>".
        if let Ok(link) = std::fs::read_link("/proc/thread-self") {
            let tid = link
                .to_string_lossy()
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_owned();
            self.0.lock().insert(shard_id.to_owned(), tid);
        }
    }
}

/// Times a thread of this process has blocked so far.
fn voluntary_switches(tid: &str) -> TestResult<u64> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .ok_or("no voluntary_ctxt_switches in /proc status")?;
    Ok(line.trim().parse()?)
}

/// Once a shard has backed off to the idle poll delay, the I/O runtime polls it and the
/// shard's thread sleeps until records come or its lease needs it: it no longer wakes
/// for every GetRecords and every commit interval (three times a second here before).
#[test]
fn an_idle_shards_thread_sleeps_while_its_shard_is_polled() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let stats = Arc::new(Recorder::default());
    let threads = Arc::new(ShardThreads::default());
    // Heartbeats every 10 s and a membership deadline ~12 s out: the only reasons left
    // to wake, each rarer than the window below.
    let config = support::fast_config()
        .with_shard_check_frequency(Duration::from_secs(10))
        .with_leader_action_frequency(Duration::from_secs(10))
        .with_commit_frequency(Duration::from_secs(1))
        .with_idle_poll_delay(Duration::from_millis(500))
        .with_stats(stats.clone())
        .with_shard_listener(threads.clone());
    let consumer = env.consumer("sleeper", config)?;
    consumer.run()?;
    support::wait_for(Duration::from_secs(30), "both shards polled", || {
        Ok(threads.0.lock().len() == 2 && Recorder::get(&stats.fetch_calls) >= 10)
    })?;
    // Settled at 500 ms (200, 200, 400, 500 ms…) by now.
    support::let_time_pass(Duration::from_secs(2))?;
    let tids: Vec<String> = threads.0.lock().values().cloned().collect();
    let before: Vec<u64> = tids
        .iter()
        .map(|t| voluntary_switches(t))
        .collect::<TestResult<_>>()?;
    let calls_before = Recorder::get(&stats.fetch_calls);
    support::let_time_pass(Duration::from_secs(5))?;
    let calls = Recorder::get(&stats.fetch_calls) - calls_before;
    for (tid, before) in tids.iter().zip(before) {
        let woke = voluntary_switches(tid)? - before;
        eprintln!("idle shard thread {tid}: blocked {woke} times in 5 s");
        assert!(
            woke <= 5,
            "an idle shard thread blocked {woke} times in 5 s"
        );
    }
    // Still polled at the idle poll delay: ~10 calls per shard.
    assert!(
        (12..=26).contains(&calls),
        "{calls} GetRecords in 5 s on 2 idle shards"
    );

    env.put_numbered(0, 10, 3)?;
    let seen = support::collect_until(&consumer, Duration::from_secs(10), |s| s.len() >= 10)?;
    assert_eq!(seen.len(), 10);
    consumer.stop();
    assert!(
        env.owners()?.is_empty(),
        "leases left after stop: {:?}",
        env.owners()?
    );
    Ok(())
}

/// A failure while the I/O runtime polls an idle shard goes back to the shard's thread,
/// which retries as for any failed read; records written meanwhile are delivered once.
#[test]
fn a_failing_idle_poll_is_retried_and_loses_nothing() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let outage = Outage::refused().only("GetRecords");
    let kinesis = outage.kinesis(&env.kinesis);
    let dynamodb = env.dynamodb.clone();
    let stats = Arc::new(Recorder::default());
    let config = support::fast_config()
        .with_idle_poll_delay(Duration::from_millis(500))
        .with_stats(stats.clone());
    let consumer = env.consumer_with(&kinesis, &dynamodb, "flaky-idle", config)?;
    consumer.run()?;
    // Settled after the fourth empty answer (200, 200, 400, 500 ms).
    support::wait_for(Duration::from_secs(30), "the idle poll delay", || {
        Ok(Recorder::get(&stats.fetch_calls) >= 6)
    })?;
    outage.arm(true);
    support::wait_for(Duration::from_secs(30), "failed polls retried", || {
        Ok(Recorder::get(&stats.retried) >= 2)
    })?;
    env.put_numbered(0, 20, 3)?;
    outage.arm(false);
    let seen = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 20)?;
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (20, 20), "{seen:?}");
    // Idle again afterwards: the polling went back to the I/O runtime and still works.
    env.put_numbered(20, 25, 3)?;
    let more = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 5)?;
    assert_eq!(more, ["20", "21", "22", "23", "24"]);
    consumer.stop();
    Ok(())
}
