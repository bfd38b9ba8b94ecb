//! Quickstart: the whole job on one machine, nothing to install.
//!
//! Starts embedded Kinesis and DynamoDB emulators on loopback (or uses the servers that
//! `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL_DYNAMODB` name), creates a 4-shard stream
//! and the consumer's tables, publishes records from one thread while consuming them on
//! another, prints progress (records/s, each shard's checkpoint) and stops cleanly.
//!
//! Delivery guarantee shown here: auto checkpoint mode — a record is checkpointed only
//! after the loop body that received it has finished; a clean stop commits everything
//! processed and releases every shard.
//!
//! Run with `cargo run --example quickstart` (`RUST_LOG=kinsumer=info` for the library's
//! log).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kinsumer::testing::Emulators;
use kinsumer::{Config, Fleet, Kinsumer, Polled};

const RECORDS: usize = 2_000;
const SHARDS: i32 = 4;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Short intervals, so the demo moves quickly.
fn config() -> Config {
    Config::default()
        .with_throttle_delay(Duration::from_millis(200))
        .with_commit_frequency(Duration::from_millis(200))
        .with_shard_check_frequency(Duration::from_secs(1))
        .with_leader_action_frequency(Duration::from_secs(1))
        .with_dynamo_waiter_delay(Duration::from_millis(50))
}

fn main() -> BoxResult<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let started = Instant::now();
    let emulators = Emulators::start()?;
    println!(
        "emulators: kinesis {} · dynamodb {}{}",
        emulators.kinesis_endpoint(),
        emulators.dynamodb_endpoint(),
        if emulators.is_external() {
            " (external)"
        } else {
            " (embedded)"
        }
    );
    let suffix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let (stream, app) = (
        format!("quickstart-{suffix}"),
        format!("quickstart-{suffix}"),
    );
    emulators.create_stream(&stream, SHARDS)?;
    println!("stream {stream} with {SHARDS} shards, application {app}");

    let consumer = emulators.consumer(&stream, &app, "quickstart", config())?;
    let fleet = Fleet::from_clients(
        emulators.kinesis_client(),
        emulators.dynamodb_client(),
        &stream,
        &app,
        config(),
    )?;
    consumer.run()?;
    println!(
        "consumer {} running ({})",
        consumer.client_name(),
        consumer.client_id()
    );

    let (delivered, elapsed) = std::thread::scope(|scope| {
        // The producer: `publish` is callable from any thread.
        let producer = scope.spawn(|| -> kinsumer::Result<()> {
            for i in 0..RECORDS {
                consumer.publish(
                    &stream,
                    &format!("user-{}", i % 50),
                    format!("event {i}").as_bytes(),
                )?;
            }
            Ok(())
        });
        let result = consume(&consumer, &fleet);
        let produced = producer.join();
        match produced {
            Ok(Ok(())) => result,
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err("producer panicked".into()),
        }
    })?;
    consumer.close()?;

    println!(
        "done: {delivered} records in {:.2} s ({:.0} records/s, paced by the publisher's one \
         PutRecord at a time; see `cargo bench` for consumer throughput); total run {:.2} s",
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("final checkpoints after a clean stop (leases released: free):");
    for entry in checkpoints(&fleet)? {
        println!("    {entry}");
    }
    Ok(())
}

/// Reads until every published record arrived, printing progress twice a second.
fn consume(consumer: &Kinsumer, fleet: &Fleet) -> BoxResult<(usize, Duration)> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    let mut seen = HashSet::new();
    let mut per_shard: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_report = Instant::now();
    let mut records = consumer.records();
    while seen.len() < RECORDS {
        if Instant::now() > deadline {
            return Err(format!("only {} of {RECORDS} records after 120 s", seen.len()).into());
        }
        match records.next_timeout(Duration::from_millis(500)) {
            Polled::Record(record) => {
                *per_shard.entry(record.shard_id().to_owned()).or_default() += 1;
                seen.insert(String::from_utf8_lossy(record.data()).into_owned());
            }
            Polled::TimedOut => {}
            Polled::Failed(e) => return Err(e.into()), // fatal: the consumer has ended
            Polled::Ended => return Err("consumer stopped".into()),
        }
        if last_report.elapsed() >= Duration::from_millis(500) || seen.len() == RECORDS {
            last_report = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            println!(
                "  {:>5}/{RECORDS} records · {:>6.0} records/s · per shard {:?} · checkpoints {}",
                seen.len(),
                seen.len() as f64 / secs,
                per_shard.values().collect::<Vec<_>>(),
                checkpoints(fleet)?.join(" ")
            );
        }
    }
    Ok((seen.len(), start.elapsed()))
}

/// One short entry per shard, from the operator's view of the tables: the checkpoint's
/// last digits and whether the lease is held.
fn checkpoints(fleet: &Fleet) -> BoxResult<Vec<String>> {
    Ok(fleet
        .status()?
        .shards
        .into_iter()
        .map(|s| {
            let seq = s.checkpoint.map_or("-".into(), |c| {
                format!("…{}", &c[c.len().saturating_sub(6)..])
            });
            let short = s
                .shard_id
                .trim_start_matches("shardId-")
                .trim_start_matches('0');
            format!(
                "[{}:{seq}{}]",
                if short.is_empty() { "0" } else { short },
                if s.owner_id.is_some() { "" } else { " free" }
            )
        })
        .collect())
}
