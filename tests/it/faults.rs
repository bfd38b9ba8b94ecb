//! Under injected faults (throttling, 5xx, timeouts on 10 % of calls, on both services)
//! a drain completes with no record lost and none repeated, and the caller never sees an
//! error item: failures are retried (by the SDK, then by the consumer) and reported to
//! `Stats::error_reported` and `Kinsumer::health`, so `let record = record?;` is safe.

use kinsumer::Polled;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::timeout::TimeoutConfig;

use crate::support::{self, Env, TestResult};
use kinsumer::testing::{FaultCounts, FaultInjector};

#[test]
fn drain_under_ten_percent_faults_loses_nothing() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    const N: usize = 1_500;
    env.put_numbered(0, N as u64, 41)?;

    let counts = Arc::new(FaultCounts::default());
    let timeouts = TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_secs(1))
        .operation_timeout(Duration::from_secs(10))
        .build();
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        env.kinesis
            .config()
            .to_builder()
            .interceptor(FaultInjector::new(10, counts.clone())?)
            .timeout_config(timeouts.clone())
            .build(),
    );
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        env.dynamodb
            .config()
            .to_builder()
            .interceptor(FaultInjector::new(10, counts.clone())?)
            .timeout_config(timeouts)
            .build(),
    );
    // Small batches: many GetRecords and commit calls for the faults to hit.
    let config = support::fast_config().with_max_records(20);
    let consumer = env.consumer_with(&kinesis, &dynamodb, "faulty", config)?;
    consumer.run()?;

    let mut seen: HashSet<String> = HashSet::new();
    let mut duplicates = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut records = consumer.records();
    while seen.len() < N {
        if Instant::now() > deadline {
            return Err(format!("only {} of {N} records after 120 s", seen.len()).into());
        }
        match records.next_timeout(Duration::from_secs(1)) {
            Polled::Record(r) => {
                if !seen.insert(String::from_utf8(r.data().to_vec())?) {
                    duplicates += 1;
                }
            }
            Polled::TimedOut => {}
            // `let record = record?;` must not quit on a blip: transient trouble is
            // retried and reported elsewhere, never yielded.
            Polled::Failed(e) => {
                return Err(format!("error item under transient faults: {e}").into());
            }
            Polled::Ended => return Err("iteration ended".into()),
        }
    }
    let health = consumer.health();
    consumer.stop();
    let reported = health.errors();
    eprintln!(
        "calls {}, injected: throttled {}, 5xx {}, timeouts {}; reported to Stats/health {reported} (last: {:?})",
        counts.calls(),
        counts.throttled(),
        counts.server_errors(),
        counts.timeouts(),
        health.last_error(),
    );
    assert!(
        counts.injected() >= 20,
        "too few faults injected to mean anything"
    );
    assert_eq!(duplicates, 0);
    let expected: HashSet<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected);
    Ok(())
}
