//! An iterator that expires while the caller is slow is renewed right after the last
//! delivered record: nothing lost, nothing repeated.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{self, Env, KinesisOptions, Recorder, TestResult};

#[test]
fn expired_iterator_is_renewed_from_the_last_delivered_record() -> TestResult {
    support::init_logging();
    let mut env = Env::with_options(
        1,
        KinesisOptions::default().with_iterator_ttl(std::time::Duration::from_secs(1)),
    )?;
    env.put_numbered(0, 30, 4)?;
    let stats = Arc::new(Recorder::default());
    // A one-record buffer: the shard thread holds its next iterator while it waits.
    let config = support::fast_config()
        .with_buffer_size(1)
        .with_stats(stats.clone());
    let consumer = env.consumer("slow", config)?;
    consumer.run()?;
    let mut seen = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 5)?;
    // The caller dawdles past the iterator's lifetime.
    support::let_time_pass(Duration::from_millis(2_500))?;
    env.put_numbered(30, 40, 4)?;
    seen.extend(support::collect_until(
        &consumer,
        Duration::from_secs(30),
        |s| s.len() >= 35,
    )?);
    consumer.stop();
    let expected: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected);
    assert!(
        Recorder::get(&stats.renewed) >= 1,
        "no iterator was renewed"
    );
    Ok(())
}

/// Starting at LATEST, an iterator that expires before the first record (here: while
/// GetRecords fails) is renewed from the time reading started, not from the tip again:
/// the records that arrived meanwhile are not skipped.
#[test]
fn an_expired_latest_iterator_does_not_skip_what_arrived_meanwhile() -> TestResult {
    use kinsumer::testing::AlwaysFail;
    use std::sync::atomic::{AtomicBool, Ordering};

    support::init_logging();
    let mut env = Env::with_options(
        1,
        KinesisOptions::default().with_iterator_ttl(std::time::Duration::from_secs(1)),
    )?;
    let stats = Arc::new(Recorder::default());
    let failing = Arc::new(AtomicBool::new(false));
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        env.kinesis
            .config()
            .to_builder()
            .interceptor(
                AlwaysFail::new("GetRecords", 500, "InternalFailure").when(Arc::clone(&failing)),
            )
            .build(),
    );
    let dynamodb = env.dynamodb.clone();
    let config = support::fast_config()
        .with_initial_position(kinsumer::InitialPosition::Latest)
        .with_stats(stats.clone());
    let consumer = env.consumer_with(&kinesis, &dynamodb, "latest", config)?;
    consumer.run()?;
    support::wait_for(
        std::time::Duration::from_secs(10),
        "reading at the tip",
        || Ok(Recorder::get(&stats.fetch_calls) >= 2),
    )?;
    failing.store(true, Ordering::SeqCst);
    env.put_numbered(0, 5, 1)?;
    // Longer than the iterator's 1 s life.
    support::let_time_pass(std::time::Duration::from_millis(2500))?;
    failing.store(false, Ordering::SeqCst);
    let seen = support::collect_until(&consumer, std::time::Duration::from_secs(30), |s| {
        s.len() >= 5
    })?;
    assert_eq!(seen, ["0", "1", "2", "3", "4"]);
    assert!(
        Recorder::get(&stats.renewed) >= 1,
        "the iterator did not expire"
    );
    consumer.stop();
    Ok(())
}
