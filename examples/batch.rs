//! Batch: a CPU-bound batch processor whose output holds every record exactly once, across
//! a stop and a restart.
//!
//! Delivery guarantee shown here: each batch's output is one file, written to a temporary
//! name and renamed into place (atomic), named after the batch's shard and first sequence
//! number; the batch is marked processed only after the rename. So a record's effect is
//! durable before its checkpoint moves past it, and a batch delivered again (after a
//! crash between the rename and the checkpoint's write) rewrites the same file with the
//! same content: the output has every record exactly once, whatever happens. At least
//! once delivery, exactly once effect.
//!
//! Starts embedded emulators (or uses `AWS_ENDPOINT_URL_KINESIS` /
//! `AWS_ENDPOINT_URL_DYNAMODB`), writes records `user-<k>,<amount>` over 4 shards,
//! processes half of them on 2 worker threads, stops, starts a new client that processes
//! the rest from the checkpoints, and checks the output directory.
//!
//! Run with `cargo run --example batch`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kinsumer::testing::Emulators;
use kinsumer::{Batch, Config, Kinsumer};
use parking_lot::Mutex;

const RECORDS: u64 = 6_000;
const SHARDS: i32 = 4;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn config() -> Config {
    Config::default()
        .with_throttle_delay(Duration::from_millis(200))
        .with_commit_frequency(Duration::from_millis(200))
        .with_shard_check_frequency(Duration::from_secs(1))
        .with_leader_action_frequency(Duration::from_secs(1))
        .with_buffer_size(1_000)
        .with_max_batch_records(250)
}

fn main() -> BoxResult<()> {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,dynoxide=error"),
    )
    .init();
    let emulators = Emulators::start()?;
    let suffix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let (stream, app) = (format!("batch-{suffix}"), format!("batch-{suffix}"));
    emulators.create_stream(&stream, SHARDS)?;
    emulators.put(
        &stream,
        (0..RECORDS).map(|i| {
            let line = format!("user-{},{}", i % 40, i % 97);
            (format!("user-{}", i % 40), line.into_bytes())
        }),
    )?;
    let out = std::env::temp_dir().join(format!("kinsumer-batch-{suffix}"));
    fs::create_dir_all(&out)?;
    println!(
        "stream {stream}: {RECORDS} records; output in {}",
        out.display()
    );

    // The first run stops once about half the records are written out.
    let seen = Mutex::new(HashSet::new());
    let first = emulators.consumer(&stream, &app, "first", config())?;
    first.run()?;
    let n = run(&first, &out, &seen, RECORDS / 2)?;
    first.close()?;
    println!("first client: {n} records, stopped");
    // A new client resumes from the checkpoints.
    let second = emulators.consumer(&stream, &app, "second", config())?;
    second.run()?;
    let n = run(&second, &out, &seen, RECORDS)?;
    second.close()?;
    println!("second client: {n} records");

    let (records, files, totals) = count_output(&out).map(|(r, f)| (r, f, totals(&out)))?;
    println!("{files} batch files hold {records} records, each exactly once");
    let totals = totals?;
    let top: Vec<String> = totals
        .iter()
        .take(5)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("amount per user (first 5): {}", top.join(" "));
    fs::remove_dir_all(&out)?;
    if records != RECORDS {
        return Err(format!("{records} records in the output, {RECORDS} written").into());
    }
    Ok(())
}

/// Processes batches on 2 threads until the output holds `want` distinct records (`seen`
/// says which it holds); returns how many records this client wrote out.
fn run(
    consumer: &Kinsumer,
    out: &Path,
    seen: &Mutex<HashSet<String>>,
    want: u64,
) -> BoxResult<u64> {
    let written = AtomicU64::new(0);
    let stop = consumer.stop_handle();
    consumer.process(2, |batch: Batch| -> std::io::Result<()> {
        if batch.is_empty() {
            return Ok(()); // a closed shard's end, with no records
        }
        write_batch(out, &batch)?;
        // Only now is the batch marked processed (process() does it on `Ok`).
        written.fetch_add(batch.len() as u64, Ordering::SeqCst);
        let mut seen = seen.lock();
        seen.extend(batch.iter().map(id));
        if seen.len() as u64 >= want {
            stop.stop();
        }
        Ok(())
    })?;
    Ok(written.into_inner())
}

/// A record's id in the output: its shard and sequence number.
fn id(record: &kinsumer::Record) -> String {
    format!("{}/{}", record.shard_id(), record.sequence_number())
}

/// Parses and aggregates a batch (the CPU-bound part), then writes it as one file,
/// atomically: the record ids it covers and the amount per user.
fn write_batch(out: &Path, batch: &Batch) -> std::io::Result<()> {
    let mut per_user: BTreeMap<&str, u64> = BTreeMap::new();
    let mut ids = Vec::with_capacity(batch.len());
    for record in batch {
        let line = std::str::from_utf8(record.data()).unwrap_or("");
        let (user, amount) = line.split_once(',').unwrap_or((line, "0"));
        *per_user.entry(user).or_default() += amount.parse::<u64>().unwrap_or(0);
        ids.push(id(record));
    }
    let first = batch.records().first().map_or("", |r| r.sequence_number());
    let name = format!("{}-{first}", batch.shard_id());
    let mut text = String::new();
    for id in &ids {
        text.push_str("id ");
        text.push_str(id);
        text.push('\n');
    }
    for (user, total) in &per_user {
        text.push_str(&format!("sum {user} {total}\n"));
    }
    let tmp: PathBuf = out.join(format!(".{name}.tmp"));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, out.join(name))
}

/// The records (ids, checked unique) and files in the output.
fn count_output(out: &Path) -> BoxResult<(u64, usize)> {
    let mut ids = HashSet::new();
    let mut files = 0;
    for entry in fs::read_dir(out)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        files += 1;
        for line in fs::read_to_string(&path)?.lines() {
            if let Some(id) = line.strip_prefix("id ")
                && !ids.insert(id.to_owned())
            {
                return Err(format!("record {id} is in the output twice").into());
            }
        }
    }
    Ok((ids.len() as u64, files))
}

/// The amount per user over the whole output.
fn totals(out: &Path) -> BoxResult<BTreeMap<String, u64>> {
    let mut totals = BTreeMap::new();
    for entry in fs::read_dir(out)? {
        for line in fs::read_to_string(entry?.path())?.lines() {
            if let Some(rest) = line.strip_prefix("sum ")
                && let Some((user, n)) = rest.split_once(' ')
            {
                *totals.entry(user.to_owned()).or_default() += n.parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(totals)
}
