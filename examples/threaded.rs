//! Threaded: several worker threads consuming one fleet client, each shard's records in
//! order.
//!
//! Delivery guarantee shown here: `Kinsumer::process` hands each batch to one of the
//! worker threads, never two batches of one shard at once and each shard's batches in
//! order — so records of one partition key are processed in the order they were written,
//! whichever thread gets them. A batch is checkpointed only after the handler returned
//! `Ok` for it (and for every earlier batch of its shard); Ctrl-C stops cleanly: each
//! worker finishes its batch, everything processed is committed, every shard released.
//! After a crash, only batches not yet committed are delivered again.
//!
//! Starts embedded emulators (or uses `AWS_ENDPOINT_URL_KINESIS` /
//! `AWS_ENDPOINT_URL_DYNAMODB`), writes 8,000 records over 8 shards, and processes them on
//! 4 threads, checking per-key order as it goes.
//!
//! Run with `cargo run --example threaded` (Ctrl-C to stop early).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kinsumer::testing::Emulators;
use kinsumer::{Batch, Config};
use parking_lot::Mutex;

const RECORDS: u64 = 8_000;
const SHARDS: i32 = 8;
const WORKERS: usize = 4;
const KEYS: u64 = 100;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What the workers found, shared by all of them.
#[derive(Default)]
struct Progress {
    /// Per partition key, the last record number processed.
    last: HashMap<String, u64>,
    /// Records processed per worker thread.
    per_thread: BTreeMap<String, u64>,
    total: u64,
}

fn main() -> BoxResult<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let emulators = Emulators::start()?;
    let suffix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let (stream, app) = (format!("threaded-{suffix}"), format!("threaded-{suffix}"));
    emulators.create_stream(&stream, SHARDS)?;
    emulators.put(
        &stream,
        (0..RECORDS).map(|i| (format!("user-{}", i % KEYS), i.to_string().into_bytes())),
    )?;
    println!("stream {stream}: {RECORDS} records over {SHARDS} shards, {KEYS} keys");

    let config = Config::default()
        .with_throttle_delay(Duration::from_millis(200))
        .with_commit_frequency(Duration::from_millis(200))
        .with_shard_check_frequency(Duration::from_secs(1))
        .with_leader_action_frequency(Duration::from_secs(1));
    let consumer = emulators.consumer(&stream, &app, "threaded", config)?;
    let stop = consumer.stop_handle();
    ctrlc::set_handler(move || stop.stop())?;
    consumer.run()?;

    let progress = Mutex::new(Progress::default());
    let done = consumer.stop_handle();
    let started = Instant::now();
    consumer
        .process(WORKERS, |batch: Batch| -> Result<(), String> {
            // The CPU-bound part: runs on WORKERS threads at once.
            let digests: Vec<u64> = batch.iter().map(|r| digest(r.data())).collect();
            let thread = std::thread::current().name().unwrap_or("?").to_owned();
            let mut p = progress.lock();
            for (record, _digest) in batch.iter().zip(digests) {
                let n: u64 = std::str::from_utf8(record.data())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or("a record that is not a number")?;
                let key = record.partition_key().to_owned();
                if let Some(prev) = p.last.insert(key.clone(), n)
                    && prev > n
                {
                    return Err(format!("{key}: record {n} after {prev}"));
                }
            }
            p.total += batch.len() as u64;
            *p.per_thread.entry(thread).or_default() += batch.len() as u64;
            if p.total >= RECORDS {
                done.stop();
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    consumer.close()?;

    let p = progress.into_inner();
    println!(
        "processed {} records in {:.2} s on {WORKERS} threads, every key in order:",
        p.total,
        elapsed.as_secs_f64()
    );
    for (thread, n) in &p.per_thread {
        println!("    {thread}: {n} records");
    }
    Ok(())
}

/// Some CPU work per record: FNV-1a over the data, a thousand rounds.
fn digest(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..1_000 {
        for b in data {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}
