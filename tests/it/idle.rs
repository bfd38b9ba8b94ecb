//! Adaptive polling: an idle shard is polled ever less often, up to the idle poll delay,
//! and goes back to the throttle delay as soon as records come.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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
    let shard = env.shard_ids()?.remove(0);
    // Backs off: 200, 200, 400, 800 ms, then a second between polls.
    support::wait_for(Duration::from_secs(30), "polls a second apart", || {
        let gaps = stats.fetch_gaps(&shard, 0);
        Ok(gaps.len() >= 5
            && gaps[gaps.len() - 2..]
                .iter()
                .all(|g| *g >= Duration::from_millis(800)))
    })?;
    let settled = stats.fetch_gaps(&shard, 0).len() + 1;
    let written = |env: &Env| -> TestResult<Option<i64>> {
        Ok(env
            .checkpoint_rows()?
            .get(&shard)
            .and_then(|row| match row.get("LastUpdate") {
                Some(AttributeValue::N(v)) => v.parse().ok(),
                _ => None,
            }))
    };
    let first_write = written(&env)?;
    // Polling goes on at that pace however slow the machine is: more polls come, none
    // sooner than the back-off allows (at the throttle delay they would be 200 ms apart;
    // an answer's time can move by its latency, hence the margin). Meanwhile the idle
    // lease is heartbeated (twice, past the 5 s lease time), never lost.
    let mut writes = std::collections::BTreeSet::new();
    support::wait_for(
        Duration::from_secs(60),
        "five more polls, two heartbeats",
        || {
            if let Some(w) = written(&env)?.filter(|w| Some(*w) != first_write) {
                writes.insert(w);
            }
            Ok(stats.fetch_gaps(&shard, settled).len() >= 5 && writes.len() >= 2)
        },
    )?;
    let gaps = stats.fetch_gaps(&shard, settled);
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(700)),
        "polled sooner than the idle poll delay: {gaps:?}"
    );
    assert_eq!(Recorder::get(&stats.lost), 0);
    let idle_calls = gaps.len();

    env.put_numbered(0, 10, 3)?;
    let seen = support::collect_until(&consumer, Duration::from_secs(10), |s| s.len() >= 10)?;
    assert_eq!(seen.len(), 10);
    consumer.stop();
    eprintln!("idle: {idle_calls} polls, gaps {gaps:?}");
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
    let shards: Vec<String> = threads.0.lock().keys().cloned().collect();
    let polls_before: Vec<usize> = shards
        .iter()
        .map(|s| stats.fetch_gaps(s, 0).len() + 1)
        .collect();
    support::let_time_pass(Duration::from_secs(5))?;
    for (tid, before) in tids.iter().zip(before) {
        let woke = voluntary_switches(tid)? - before;
        eprintln!("idle shard thread {tid}: blocked {woke} times in 5 s");
        assert!(
            woke <= 5,
            "an idle shard thread blocked {woke} times in 5 s"
        );
    }
    // Still polled meanwhile, at the idle poll delay (500 ms; an answer's time moves by
    // its latency, hence the margin), by the I/O runtime.
    for (shard, before) in shards.iter().zip(polls_before) {
        let gaps = stats.fetch_gaps(shard, before);
        assert!(!gaps.is_empty(), "{shard} not polled while idle");
        assert!(
            gaps.iter().all(|g| *g >= Duration::from_millis(350)),
            "{shard} polled sooner than the idle poll delay: {gaps:?}"
        );
    }

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
