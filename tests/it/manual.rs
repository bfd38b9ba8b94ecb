//! Manual checkpoint mode: records marked processed out of order, from several threads;
//! the checkpoint covers only the contiguous processed prefix.

use kinsumer::Polled;
use std::time::Duration;

use kinsumer::{CheckpointMode, ProcessedMarker};

use crate::support::{self, Env, TestResult};

#[test]
fn out_of_order_marks_from_threads_checkpoint_the_contiguous_prefix() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    const N: usize = 120;
    const HELD: usize = 50;
    env.put_numbered(0, N as u64, 5)?;
    let shard = env.shard_ids()?.remove(0);

    let config = support::fast_config().with_checkpoint_mode(CheckpointMode::Manual);
    let consumer = env.consumer("manual", config)?;
    consumer.run()?;
    let mut markers: Vec<ProcessedMarker> = Vec::new();
    let mut records = consumer.records();
    while markers.len() < N {
        match records.next_timeout(Duration::from_secs(30)) {
            Polled::Record(r) => markers.push(r.processed_marker()),
            other => return Err(format!("expected a record, got {other:?}").into()),
        }
    }
    // Pulling more never marks anything in manual mode.
    assert!(
        records
            .next_timeout(Duration::from_millis(300))
            .is_timed_out()
    );
    assert_eq!(env.checkpoint(&shard)?, None, "checkpoint before any mark");

    let held = markers.remove(HELD);
    let seq_before_gap = markers[HELD - 1].sequence_number().to_owned();
    let seq_last = markers[N - 2].sequence_number().to_owned();
    // Four workers mark the rest, each walking its share backwards.
    let mut shares: Vec<Vec<ProcessedMarker>> = (0..4).map(|_| Vec::new()).collect();
    for (i, m) in markers.into_iter().enumerate() {
        shares[i % 4].push(m);
    }
    let workers: Vec<_> = shares
        .into_iter()
        .map(|share| {
            std::thread::spawn(move || {
                for m in share.into_iter().rev() {
                    m.mark();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "worker panicked")?;
    }
    // Everything but record 50 is processed: the checkpoint stops right before it.
    support::wait_for(Duration::from_secs(10), "checkpoint at the gap", || {
        Ok(env.checkpoint(&shard)?.as_deref() == Some(seq_before_gap.as_str()))
    })?;
    held.mark();
    support::wait_for(Duration::from_secs(10), "checkpoint past the gap", || {
        Ok(env.checkpoint(&shard)?.as_deref() == Some(seq_last.as_str()))
    })?;
    consumer.stop();
    Ok(())
}

/// Counts `Stats::records_held_back` reports.
#[derive(Debug, Default)]
struct HeldBack {
    reports: std::sync::atomic::AtomicU64,
    oldest_ms: std::sync::atomic::AtomicU64,
    most: std::sync::atomic::AtomicU64,
}

impl kinsumer::Stats for HeldBack {
    fn records_held_back(&self, _shard: &str, count: u64, age: Duration) {
        use std::sync::atomic::Ordering;
        self.reports.fetch_add(1, Ordering::SeqCst);
        self.most.fetch_max(count, Ordering::SeqCst);
        self.oldest_ms
            .fetch_max(age.as_millis() as u64, Ordering::SeqCst);
    }
}

#[test]
fn a_record_never_marked_pauses_its_shard_at_the_bound_and_is_reported() -> TestResult {
    use std::sync::atomic::Ordering;
    support::init_logging();
    let mut env = Env::new(1)?;
    const N: u64 = 300;
    const BOUND: u64 = 50;
    env.put_numbered(0, N, 5)?;
    let stats = std::sync::Arc::new(HeldBack::default());
    let config = support::fast_config()
        .with_checkpoint_mode(CheckpointMode::Manual)
        .with_max_unmarked(BOUND)
        .with_stats(stats.clone());
    let consumer = env.consumer("forgetful", config)?;
    consumer.run()?;
    // The first record is kept and never marked; every other one is marked at once.
    let mut records = consumer.records();
    let first = match records.next_timeout(Duration::from_secs(30)) {
        Polled::Record(r) => r,
        other => return Err(format!("expected a record, got {other:?}").into()),
    };
    let mut received = 1u64;
    // The shard hands out up to the bound past the unmarked record, then pauses.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while received < BOUND {
        assert!(
            std::time::Instant::now() < deadline,
            "only {received} records"
        );
        if let Polled::Record(r) = records.next_timeout(Duration::from_millis(100)) {
            r.mark_processed();
            received += 1;
        }
    }
    // The hold-up is reported once it is a shard check (1 s) old …
    support::wait_for(Duration::from_secs(30), "the hold-up reported", || {
        Ok(stats.reports.load(Ordering::SeqCst) > 0)
    })?;
    assert!(stats.oldest_ms.load(Ordering::SeqCst) >= 1_000);
    // … and nothing more comes meanwhile.
    assert!(
        records
            .next_timeout(Duration::from_millis(300))
            .is_timed_out(),
        "a record handed out past the bound"
    );
    // Marking it lets the shard go on: everything arrives.
    first.mark_processed();
    while received < N {
        match records.next_timeout(Duration::from_secs(30)) {
            Polled::Record(r) => {
                r.mark_processed();
                received += 1;
            }
            other => return Err(format!("after {received}: {other:?}").into()),
        }
    }
    consumer.close()?;
    Ok(())
}

/// A caller paused on the one record it holds is told that one record holds the
/// checkpoint back, not how many wait in the buffer (which it has not seen). Before the
/// fix the count was every record sent to the buffer: 101 of them here.
#[test]
fn a_caller_paused_on_one_record_is_told_of_one_record_held_back() -> TestResult {
    use std::sync::atomic::Ordering;
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 300, 5)?;
    let stats = std::sync::Arc::new(HeldBack::default());
    let config = support::fast_config()
        .with_checkpoint_mode(CheckpointMode::Manual)
        .with_buffer_size(100)
        .with_stats(stats.clone());
    let consumer = env.consumer("paused", config)?;
    consumer.run()?;
    let mut records = consumer.records();
    let first = match records.next_timeout(Duration::from_secs(30)) {
        Polled::Record(r) => r,
        other => return Err(format!("expected a record, got {other:?}").into()),
    };
    // The buffer fills behind the record in hand …
    support::wait_for(Duration::from_secs(30), "a full buffer", || {
        Ok(consumer.health().buffered_bytes() > 0)
    })?;
    // … and the hold-up is reported once it is a shard check old: one record.
    support::wait_for(Duration::from_secs(30), "the hold-up reported", || {
        Ok(stats.reports.load(Ordering::SeqCst) >= 2)
    })?;
    assert_eq!(stats.most.load(Ordering::SeqCst), 1);
    first.mark_processed();
    drop(records);
    consumer.stop();
    Ok(())
}
