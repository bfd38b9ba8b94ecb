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
