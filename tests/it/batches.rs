//! `Kinsumer::batches()`: consecutive records of one shard per batch, in auto and manual
//! mode; a stop inside a batch resumes with nothing repeated that was processed and
//! nothing lost; `records()` and `batches()` share what was fetched.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kinsumer::{Batch, CheckpointMode, Kinsumer, PolledBatch};

use crate::support::{self, Env, TestResult};

/// The numbers of a batch's records (`"<n>"`).
fn numbers(batch: &Batch) -> TestResult<Vec<u64>> {
    batch
        .iter()
        .map(|r| Ok(std::str::from_utf8(r.data())?.parse()?))
        .collect()
}

/// Checks what every delivered batch must be: not empty, within the size bound, one
/// shard's records in shard order (after the last one seen of that shard), with a lag.
fn check_batch(batch: &Batch, cap: usize, last: &mut HashMap<String, String>) -> TestResult {
    assert!(
        (!batch.is_empty() || batch.is_shard_end()) && batch.len() <= cap,
        "{batch:?}"
    );
    assert!(batch.millis_behind_latest().is_some(), "{batch:?}");
    for r in batch {
        assert_eq!(r.shard_id(), batch.shard_id());
        let seq = r.sequence_number().to_owned();
        if let Some(prev) = last.insert(r.shard_id().to_owned(), seq.clone()) {
            // Decimal strings without leading zeros: longer is larger.
            let later = (seq.len(), seq.as_str()) > (prev.len(), prev.as_str());
            assert!(later, "shard {}: {seq} after {prev}", r.shard_id());
        }
    }
    Ok(())
}

/// Pulls batches until `want` records came; returns them (numbers, in delivery order).
fn take_batches(
    consumer: &Kinsumer,
    want: usize,
    cap: usize,
    mut each: impl FnMut(&Batch),
) -> TestResult<Vec<u64>> {
    let mut got = Vec::new();
    let mut last = HashMap::new();
    let mut batches = consumer.batches();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want {
        if Instant::now() > deadline {
            return Err(format!("only {} of {want} records", got.len()).into());
        }
        match batches.next_timeout(Duration::from_millis(500)) {
            PolledBatch::Batch(batch) => {
                check_batch(&batch, cap, &mut last)?;
                got.extend(numbers(&batch)?);
                each(&batch);
            }
            PolledBatch::TimedOut => {}
            other => return Err(format!("after {} records: {other:?}", got.len()).into()),
        }
    }
    Ok(got)
}

fn config() -> kinsumer::Config {
    support::fast_config()
        .with_buffer_size(200)
        .with_max_batch_records(25)
}

#[test]
fn auto_mode_batches_resume_after_a_stop_with_nothing_repeated_or_lost() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    const N: u64 = 800;
    env.put_numbered(0, N, 37)?;
    let first = env.consumer("first", config())?;
    first.run()?;
    assert_eq!(first.config().batch_records(), 25);
    let mut sizes = Vec::new();
    let seen = take_batches(&first, 300, 25, |b| sizes.push(b.len()))?;
    // Batches hold what a fetch brought, up to the bound: most are full.
    assert!(
        sizes.iter().filter(|&&n| n == 25).count() * 2 > sizes.len(),
        "batch sizes {sizes:?}"
    );
    // The stop comes on the pulling thread with a batch in hand: it counts as processed.
    first.close()?;
    let mut all: HashSet<u64> = HashSet::new();
    for n in &seen {
        assert!(all.insert(*n), "record {n} twice from the first client");
    }
    let second = env.consumer("second", config())?;
    second.run()?;
    let rest = take_batches(&second, N as usize - seen.len(), 25, |_| {})?;
    second.close()?;
    for n in rest {
        assert!(all.insert(n), "record {n} delivered again after the resume");
    }
    assert_eq!(all.len() as u64, N);
    Ok(())
}

#[test]
fn manual_mode_marks_batches_and_records_and_a_resume_starts_at_the_first_unmarked() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    const N: u64 = 300;
    env.put_numbered(0, N, 5)?;
    let manual = || config().with_checkpoint_mode(CheckpointMode::Manual);
    let first = env.consumer("first", manual())?;
    first.run()?;
    let mut batches = first.batches();
    let mut processed = Vec::new();
    let mut kept = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Whole batches marked at once (one by hand, the next by a marker from another
    // thread), until more than 100 records are processed; then half a batch record by
    // record, the rest of it left unmarked.
    while kept.is_none() {
        assert!(
            Instant::now() < deadline,
            "only {} records",
            processed.len()
        );
        let PolledBatch::Batch(batch) = batches.next_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let numbers = numbers(&batch)?;
        if processed.len() < 100 {
            if processed.len() % 2 == 0 {
                batch.mark_processed();
            } else {
                let marker = batch.processed_marker();
                std::thread::spawn(move || marker.mark())
                    .join()
                    .map_err(|_| "marker thread panicked")?;
            }
            processed.extend(numbers);
        } else {
            let half = batch.len() / 2;
            for r in &batch.records()[..half] {
                r.mark_processed();
            }
            processed.extend(&numbers[..half]);
            kept = Some(numbers[half]);
        }
    }
    drop(batches);
    first.close()?;
    let second = env.consumer("second", manual())?;
    second.run()?;
    let rest = take_batches(&second, (N as usize) - processed.len(), 25, |b| {
        b.mark_processed()
    })?;
    second.close()?;
    // It resumes exactly at the first record not marked: nothing processed repeats,
    // nothing is lost (one shard: the numbers are in shard order).
    assert_eq!(rest.first().copied(), kept);
    let all: Vec<u64> = processed.iter().chain(&rest).copied().collect();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn records_and_batches_share_what_was_fetched() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    const N: u64 = 200;
    env.put_numbered(0, N, 5)?;
    let consumer = env.consumer("both", config())?;
    consumer.run()?;
    // A few records one by one, from the first batch …
    let firsts = support::collect_until(&consumer, Duration::from_secs(60), |s| s.len() >= 3)?;
    let mut all: Vec<u64> = firsts.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    // … then the rest of that batch comes whole, then the others.
    let rest = take_batches(&consumer, (N as usize) - all.len(), 25, |_| {})?;
    all.extend(rest);
    consumer.close()?;
    assert_eq!(all, (0..N).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn batches_before_run_say_so_and_end() -> TestResult {
    let mut env = Env::new(1)?;
    let consumer = env.consumer("early", config())?;
    let mut batches = consumer.batches();
    match batches.next() {
        Some(Err(e)) => assert_eq!(e.kind(), kinsumer::ErrorKind::NotRunning),
        other => return Err(format!("expected NotRunning, got {other:?}").into()),
    }
    assert!(batches.next().is_none());
    Ok(())
}

#[test]
fn a_closed_shard_ends_with_one_batch_that_says_so() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let parent = env.open_shards()?.remove(0);
    env.put_numbered(0, 60, 5)?;
    env.split(&parent)?;
    support::wait_for(Duration::from_secs(30), "the split", || {
        Ok(env.open_shards()?.len() == 2)
    })?;
    env.put_numbered(60, 120, 5)?;
    let consumer = env.consumer("ender", config())?;
    consumer.run()?;
    let mut ends = Vec::new();
    let mut parent_done = false;
    let got = take_batches(&consumer, 120, 25, |b| {
        // No record of the children comes before the parent's last record.
        if b.shard_id() == parent && !b.is_empty() {
            assert!(!parent_done, "records of {parent} after its children's");
        } else if b.shard_id() != parent {
            parent_done = true;
        }
        if b.is_shard_end() {
            ends.push(b.shard_id().to_owned());
        }
    })?;
    consumer.close()?;
    // Exactly one batch says the parent ended (the children are open).
    assert_eq!(ends, [parent]);
    assert_eq!(got.len(), 120);
    Ok(())
}

/// A closed shard whose last read brought no records ends with an empty batch; its
/// children are read only once that batch is processed (here, in manual mode: dropped),
/// so a processor can flush per-shard state on it before any child's record comes.
/// Before the fix the shard finished as soon as its records were marked and the
/// children's records came while the end batch was still in hand.
#[test]
fn the_children_wait_for_the_empty_end_batch_to_be_processed() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let parent = env.open_shards()?.remove(0);
    env.put_numbered(0, 20, 5)?;
    let consumer = env.consumer(
        "holder",
        config().with_checkpoint_mode(CheckpointMode::Manual),
    )?;
    consumer.run()?;
    let mut batches = consumer.batches();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < 20 {
        match batches.next_timeout(deadline.saturating_duration_since(Instant::now())) {
            PolledBatch::Batch(b) => {
                seen += b.len();
                b.mark_processed();
            }
            other => return Err(format!("before the split: {other:?}").into()),
        }
    }
    // Read to the tip: the read after the split finds the end and no records.
    env.split(&parent)?;
    env.put_numbered(20, 40, 5)?;
    let end = match batches.next_timeout(deadline.saturating_duration_since(Instant::now())) {
        PolledBatch::Batch(b) if b.is_shard_end() => b,
        other => return Err(format!("expected the end, got {other:?}").into()),
    };
    assert!(end.is_empty(), "{end:?}");
    assert_eq!(end.shard_id(), parent);
    // Several shard checks pass with the end batch in hand: no child is read.
    let held = Instant::now() + Duration::from_secs(4);
    while Instant::now() < held {
        match batches.next_timeout(held.saturating_duration_since(Instant::now())) {
            PolledBatch::TimedOut => {}
            other => return Err(format!("with the end batch in hand: {other:?}").into()),
        }
    }
    drop(end);
    let mut children = 0;
    while children < 20 {
        match batches.next_timeout(deadline.saturating_duration_since(Instant::now())) {
            PolledBatch::Batch(b) => {
                assert_ne!(b.shard_id(), parent, "{b:?}");
                children += b.len();
                b.mark_processed();
            }
            other => return Err(format!("the children's records: {other:?}").into()),
        }
    }
    drop(batches);
    consumer.close()?;
    assert_eq!(children, 20);
    Ok(())
}
