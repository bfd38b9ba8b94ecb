//! The sync–async bridge does not stall: eight shard threads, sharing the consumer's I/O
//! runtime and connection pool, read bursts separated by idle gaps (when pooled
//! connections sit idle and the shard threads are parked), and every call completes
//! promptly, with no failure or retry.

use kinsumer::Polled;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{self, Env, Recorder, TestResult};

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

#[test]
fn eight_shard_threads_with_idle_gaps_never_stall_or_fail() -> TestResult {
    support::init_logging();
    let mut env = Env::new(8)?;
    let stats = Arc::new(Recorder::default());
    let consumer = env.consumer(
        "idle-gaps",
        support::fast_config().with_stats(stats.clone()),
    )?;
    consumer.run()?;
    let mut worst = Duration::ZERO;
    let mut records = consumer.records();
    for round in 0..4u64 {
        // Idle gap: every shard thread polls empty shards, runtimes idle in between.
        support::let_time_pass(Duration::from_millis(1_200))?;
        let batch: Vec<(String, String)> = (0..64)
            .map(|i| (format!("k{round}-{i}"), format!("{}", now_micros())))
            .collect();
        env.put(&batch)?;
        for _ in 0..batch.len() {
            match records.next_timeout(Duration::from_secs(30)) {
                Polled::Record(r) => {
                    let sent: u128 = std::str::from_utf8(r.data())?.parse()?;
                    let latency = Duration::from_micros((now_micros() - sent) as u64);
                    worst = worst.max(latency);
                }
                other => return Err(format!("round {round}: {other:?}").into()),
            }
        }
    }
    consumer.stop();
    eprintln!("worst put-to-delivery latency over 8 shards: {worst:?}");
    assert_eq!(
        Recorder::get(&stats.retried),
        0,
        "some call failed and was retried"
    );
    assert_eq!(Recorder::get(&stats.acquired), 8);
    assert_eq!(Recorder::get(&stats.released), 8);
    // A stalled pooled connection waits for another thread's runtime: seconds, not the
    // throttle delay. Generous bound; the figure itself is printed above.
    assert!(worst < Duration::from_secs(8), "a call stalled: {worst:?}");
    Ok(())
}

/// Clients the caller already used on its own runtime — whose pooled connections that
/// runtime drives, and which then sits idle — must not stall the consumer built from
/// them (`from_clients` gives the consumer a connection pool of its own).
#[test]
fn clients_used_on_the_callers_runtime_first_do_not_stall_the_consumer() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    env.put_numbered(0, 50, 7)?;
    let kinesis = aws_sdk_kinesis::Client::from_conf(env.kinesis.config().clone());
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(env.dynamodb.config().clone());
    let callers = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Open pooled connections on the caller's runtime, then leave it idle (not dropped).
    for _ in 0..4 {
        callers.block_on(kinesis.list_shards().stream_name(&env.stream).send())?;
        callers.block_on(dynamodb.list_tables().send())?;
    }
    let consumer = env.consumer_with(&kinesis, &dynamodb, "borrowed", support::fast_config())?;
    consumer.run()?;
    let started = std::time::Instant::now();
    let seen = support::collect_until(&consumer, Duration::from_secs(60), |s| s.len() >= 50)?;
    let took = started.elapsed();
    consumer.stop();
    assert_eq!(seen.len(), 50);
    eprintln!("consumed 50 records in {took:?} through clients first used elsewhere");
    drop(callers);
    Ok(())
}
