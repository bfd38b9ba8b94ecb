//! Adaptive polling: an idle shard is polled ever less often, up to the idle poll delay,
//! and goes back to the throttle delay as soon as records come.

use std::sync::Arc;
use std::time::Duration;

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

    env.put_numbered(0, 10, 3)?;
    let seen = support::collect_until(&consumer, Duration::from_secs(10), |s| s.len() >= 10)?;
    assert_eq!(seen.len(), 10);
    consumer.stop();
    eprintln!("idle: {idle_calls} GetRecords in 5 s");
    Ok(())
}
