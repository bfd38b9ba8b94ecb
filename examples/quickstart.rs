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

#[path = "../tests/support/mod.rs"]
mod support;

use kinsumer::Polled;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use kinsumer::Kinsumer;

const RECORDS: usize = 2_000;
const SHARDS: i32 = 4;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let started = Instant::now();
    let mut env = support::Env::new(SHARDS)?;
    println!(
        "emulators: kinesis {} · dynamodb {}{}",
        env.emulators.kinesis_endpoint,
        env.emulators.dynamodb_endpoint,
        if env.emulators.is_external() {
            " (external)"
        } else {
            " (embedded)"
        }
    );
    println!(
        "stream {} with {SHARDS} shards, application {}",
        env.stream, env.app
    );

    let consumer = env.consumer("quickstart", support::fast_config())?;
    consumer.run()?;
    println!(
        "consumer {} running ({})",
        consumer.client_name(),
        consumer.client_id()
    );

    let stream = env.stream.clone();
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
        let result = consume(&consumer, &env);
        let produced = producer.join();
        match produced {
            Ok(Ok(())) => result,
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err("producer panicked".into()),
        }
    })?;
    consumer.stop();

    println!(
        "done: {delivered} records in {:.2} s ({:.0} records/s, paced by the publisher's one \
         PutRecord at a time; see `cargo bench` for consumer throughput); total run {:.2} s",
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("final checkpoints after a clean stop (leases released: free):");
    print_checkpoints(&env)?;
    Ok(())
}

/// Reads until every published record arrived, printing progress twice a second.
fn consume(
    consumer: &Kinsumer,
    env: &support::Env,
) -> Result<(usize, Duration), Box<dyn std::error::Error + Send + Sync>> {
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
                checkpoints(env)?.join(" ")
            );
        }
    }
    Ok((seen.len(), start.elapsed()))
}

/// One short entry per shard: the checkpoint's last digits and the lease owner.
fn checkpoints(
    env: &support::Env,
) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
    let rows: BTreeMap<_, _> = env.checkpoint_rows()?.into_iter().collect();
    Ok(rows
        .into_iter()
        .map(|(shard, row)| {
            let seq = match row.get("SequenceNumber") {
                Some(AttributeValue::S(s)) => format!("…{}", &s[s.len().saturating_sub(6)..]),
                _ => "-".into(),
            };
            let owned = matches!(row.get("OwnerID"), Some(AttributeValue::S(_)));
            let short = shard.trim_start_matches("shardId-").trim_start_matches('0');
            format!(
                "[{}:{seq}{}]",
                if short.is_empty() { "0" } else { short },
                if owned { "" } else { " free" }
            )
        })
        .collect())
}

fn print_checkpoints(env: &support::Env) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    for entry in checkpoints(env)? {
        println!("    {entry}");
    }
    Ok(())
}
