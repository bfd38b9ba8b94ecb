//! Dead letters: a record that keeps failing is retried in place, then set aside in
//! another stream, while everything else goes on.
//!
//! Delivery guarantee shown here: a record whose processing fails
//! (`Record::retry_later`) is delivered again after a delay that doubles per attempt;
//! its shard hands out nothing after it meanwhile, so per-key order holds, and the other
//! shards go on. After `max_attempts` failures it goes to the dead-letter handler — here
//! the ready `DeadLetterStream`, which puts it, as JSON with its shard, sequence number,
//! attempts and error, into a second stream — and only then does the checkpoint move past
//! it. Nothing is lost: a crash during the delays delivers it again from the checkpoint.
//!
//! Starts embedded emulators (or uses `AWS_ENDPOINT_URL_KINESIS` /
//! `AWS_ENDPOINT_URL_DYNAMODB`), writes 1,000 records over 4 shards of which two cannot
//! be parsed, consumes them with 3 attempts each, then reads the dead-letter stream.
//!
//! Run with `cargo run --example dead_letter`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kinsumer::testing::Emulators;
use kinsumer::{Config, DeadLetterStream, Polled};

const RECORDS: u64 = 1_000;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> BoxResult<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let emulators = Emulators::start()?;
    let suffix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let (stream, app) = (format!("orders-{suffix}"), format!("billing-{suffix}"));
    let dead = format!("{stream}-dead-letters");
    emulators.create_stream(&stream, 4)?;
    emulators.create_stream(&dead, 1)?;
    // Every record is a number, but two.
    emulators.put(
        &stream,
        (0..RECORDS).map(|i| {
            let data = match i {
                300 | 700 => format!("garbage-{i}"),
                _ => i.to_string(),
            };
            (format!("customer-{}", i % 50), data.into_bytes())
        }),
    )?;
    println!("stream {stream}: {RECORDS} records over 4 shards, 2 of them unparsable");

    let config = Config::default()
        .with_throttle_delay(Duration::from_millis(200))
        .with_commit_frequency(Duration::from_millis(200))
        .with_shard_check_frequency(Duration::from_secs(1))
        .with_leader_action_frequency(Duration::from_secs(1))
        .with_max_attempts(3)
        .with_dead_letter(Arc::new(DeadLetterStream::new(dead.clone())));
    let consumer = emulators.consumer(&stream, &app, "billing", config)?;
    consumer.run()?;

    let (mut sum, mut parsed, mut failures) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let mut records = consumer.records();
    while parsed < RECORDS - 2 || consumer.health().dead_lettered_records() < 2 {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!("only {parsed} records parsed in a minute").into());
        }
        let record = match records.next_timeout(Duration::from_millis(200)) {
            Polled::Record(r) => r,
            Polled::TimedOut => continue,
            Polled::Failed(e) => return Err(e.into()),
            Polled::Ended => break,
        };
        match std::str::from_utf8(record.data()).map(str::parse::<u64>) {
            Ok(Ok(n)) => {
                sum += n;
                parsed += 1;
            }
            _ => {
                failures += 1;
                println!(
                    "  {} of {}: not a number (attempt {}), asking for it again",
                    record.sequence_number(),
                    record.shard_id(),
                    record.attempt()
                );
                record.retry_later("not a number");
            }
        }
    }
    drop(records);
    let health = consumer.health();
    consumer.close()?;
    println!(
        "parsed {parsed} records (sum {sum}) in {:.1} s; {failures} failed deliveries, {} \
         retried, {} set aside",
        started.elapsed().as_secs_f64(),
        health.retried_records(),
        health.dead_lettered_records()
    );
    for letter in emulators.read_all(&dead)? {
        println!("dead letter: {}", String::from_utf8_lossy(&letter));
    }
    Ok(())
}
