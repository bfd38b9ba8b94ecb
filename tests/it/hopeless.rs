//! An answer that cannot change is not retried forever: a shard that keeps failing with
//! an error retrying does not fix (here: access denied on every GetShardIterator) ends the
//! consumer with one fatal, clearly worded error.

use kinsumer::Polled;
use std::time::{Duration, Instant};

use kinsumer::{ErrorKind, Kinsumer};

use crate::support::{self, Env, TestResult};
use kinsumer::testing::AlwaysFail;

#[test]
fn a_shard_that_keeps_failing_the_same_way_ends_the_consumer() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    drop(env.consumer("creator", support::fast_config())?); // tables
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        env.kinesis
            .config()
            .to_builder()
            .interceptor(AlwaysFail::new(
                "GetShardIterator",
                400,
                "AccessDeniedException",
            ))
            .build(),
    );
    let consumer = Kinsumer::from_clients(
        &kinesis,
        &env.dynamodb,
        &env.stream,
        &env.app,
        "denied",
        support::fast_config(),
    )?;
    consumer.run()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = consumer.records();
    let fatal = loop {
        if Instant::now() >= deadline {
            return Err("no fatal error within 60 s".into());
        }
        match records.next_timeout(Duration::from_millis(500)) {
            Polled::Failed(e) => break e,
            Polled::TimedOut => {}
            Polled::Record(r) => return Err(format!("unexpected record {r:?}").into()),
            Polled::Ended => return Err("iteration ended without a fatal error".into()),
        }
    };
    assert!(fatal.is_fatal());
    assert_eq!(fatal.kind(), ErrorKind::ShardFailed);
    let text = fatal.to_string();
    assert!(text.contains("AccessDeniedException"), "{text}");
    assert!(text.contains("3 times in a row"), "{text}");
    // Each failure was reported as it happened, to the health query (and `Stats`).
    let health = consumer.health();
    assert!(health.errors() >= 3, "{health:?}");
    assert!(!health.is_running());
    assert!(
        health
            .last_error()
            .is_some_and(|e| e.contains("AccessDeniedException")),
        "{health:?}"
    );
    assert!(
        records.next().is_none(),
        "iteration goes on after a fatal error"
    );
    Ok(())
}
