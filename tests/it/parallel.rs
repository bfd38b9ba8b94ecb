//! `Kinsumer::process`: worker threads that never have two batches of one shard at work at
//! once and process each shard's batches in order — over 8 shards with 4 workers, across
//! a rebalance, a crash and a split; a handler's error stops the consumer with it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use kinsumer::{Batch, Kinsumer, ProcessError};
use parking_lot::{Condvar, Mutex};

use crate::support::{self, Env, Producer, TestResult};

/// What the handlers saw, shared by every worker (and every client of a test).
#[derive(Debug, Default)]
struct Tracker {
    state: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Records processed (their data), in the order the handlers took them.
    log: Vec<String>,
    /// Shards with a batch at work now, and how many batches are at work.
    at_work: HashSet<String>,
    now: usize,
    most: usize,
    /// A batch started while another of its shard was at work.
    overlaps: usize,
    /// Per shard: when its batches started and ended.
    times: HashMap<String, Vec<(Instant, Instant)>>,
}

impl Tracker {
    /// The handler's body: logs the batch, takes `work` for it.
    fn handle(&self, batch: &Batch, work: Duration) {
        let shard = batch.shard_id().to_owned();
        let start = Instant::now();
        {
            let mut st = self.state.lock();
            if !st.at_work.insert(shard.clone()) {
                st.overlaps += 1;
            }
            st.now += 1;
            st.most = st.most.max(st.now);
            for r in batch {
                st.log.push(String::from_utf8_lossy(r.data()).into_owned());
            }
        }
        std::thread::sleep(work); // the batch's work
        let mut st = self.state.lock();
        st.at_work.remove(&shard);
        st.now -= 1;
        st.times
            .entry(shard)
            .or_default()
            .push((start, Instant::now()));
    }

    fn count(&self) -> usize {
        self.state.lock().log.len()
    }
}

/// Runs `process` on a thread of its own with `workers` workers.
fn spawn_process(
    consumer: Arc<Kinsumer>,
    workers: usize,
    tracker: Arc<Tracker>,
    work: Duration,
) -> std::thread::JoinHandle<Result<(), ProcessError<std::convert::Infallible>>> {
    std::thread::spawn(move || {
        consumer.process(workers, |batch| {
            tracker.handle(&batch, work);
            Ok(())
        })
    })
}

fn join(
    t: std::thread::JoinHandle<Result<(), ProcessError<std::convert::Infallible>>>,
) -> TestResult {
    match t.join() {
        Ok(result) => Ok(result?),
        Err(_) => Err("process panicked".into()),
    }
}

#[test]
fn four_workers_over_eight_shards_keep_per_key_order_and_never_overlap_a_shard() -> TestResult {
    support::init_logging();
    let mut env = Env::new(8)?;
    const N: u64 = 1_600;
    env.put_numbered(0, N, 37)?;
    let consumer = Arc::new(env.consumer("pool", support::fast_config())?);
    consumer.run()?;
    let tracker = Arc::new(Tracker::default());
    let t = spawn_process(
        Arc::clone(&consumer),
        4,
        Arc::clone(&tracker),
        Duration::from_millis(5),
    );
    support::wait_for(Duration::from_secs(60), "every record", || {
        Ok(tracker.count() as u64 >= N)
    })?;
    consumer.stop_handle().stop();
    join(t)?;
    consumer.stop();
    let st = tracker.state.lock();
    support::check_per_key_order(&st.log, N)?;
    assert_eq!(st.overlaps, 0, "batches of one shard at work at once");
    assert!(st.most >= 2, "never more than one batch at work");
    println!("at most {} batches at work at once", st.most);
    Ok(())
}

#[test]
fn a_rebalance_while_batches_are_at_work_delivers_nothing_twice() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    let tracker = Arc::new(Tracker::default());
    let work = Duration::from_millis(20);
    let a = Arc::new(env.consumer("a", support::fast_config())?);
    a.run()?;
    let ta = spawn_process(Arc::clone(&a), 4, Arc::clone(&tracker), work);
    let producer = Producer::start(&env);
    support::wait_for(
        Duration::from_secs(60),
        "records on the first client",
        || Ok(tracker.count() >= 200),
    )?;
    // A second client joins: shards move while batches are at work on the first.
    let b = Arc::new(env.consumer("b", support::fast_config())?);
    b.run()?;
    let tb = spawn_process(Arc::clone(&b), 4, Arc::clone(&tracker), work);
    support::wait_for(
        Duration::from_secs(60),
        "the second client's shards",
        || Ok(b.health().owned_shards() >= 1 && a.health().owned_shards() <= 3),
    )?;
    let before = tracker.count();
    support::wait_for(Duration::from_secs(60), "records after the move", || {
        Ok(tracker.count() >= before + 200)
    })?;
    let written = producer.stop()?;
    support::wait_for(Duration::from_secs(60), "every record", || {
        Ok(tracker.count() as u64 >= written)
    })?;
    a.stop_handle().stop();
    b.stop_handle().stop();
    join(ta)?;
    join(tb)?;
    a.stop();
    b.stop();
    let st = tracker.state.lock();
    support::check_per_key_order(&st.log, written)?;
    assert_eq!(st.overlaps, 0, "batches of one shard at work at once");
    Ok(())
}

#[test]
fn a_crash_repeats_only_the_batches_that_were_at_work() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    const N: u64 = 800;
    env.put_numbered(0, N, 37)?;
    let first = Arc::new(env.consumer("doomed", support::fast_config())?);
    first.run()?;
    // After 300 records, the batches that start wait at a gate until after the crash:
    // they were handed out and never finished.
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let done: Arc<Mutex<Vec<String>>> = Arc::default();
    let held: Arc<Mutex<Vec<String>>> = Arc::default();
    let t = {
        let (first, gate, done, held) = (
            Arc::clone(&first),
            Arc::clone(&gate),
            Arc::clone(&done),
            Arc::clone(&held),
        );
        std::thread::spawn(move || {
            first.process(2, |batch: Batch| -> Result<(), std::convert::Infallible> {
                let data: Vec<String> = batch
                    .iter()
                    .map(|r| String::from_utf8_lossy(r.data()).into_owned())
                    .collect();
                if done.lock().len() < 300 {
                    done.lock().extend(data);
                    return Ok(());
                }
                held.lock().extend(data);
                let (open, cv) = &*gate;
                let mut open = open.lock();
                while !*open {
                    cv.wait(&mut open);
                }
                Ok(())
            })
        })
    };
    support::wait_for(Duration::from_secs(60), "two batches at the gate", || {
        Ok(done.lock().len() >= 300 && !held.lock().is_empty())
    })?;
    // Let commits cover what was processed, then die without a word.
    support::let_time_pass(Duration::from_millis(800))?;
    first.crash_for_tests();
    {
        let (open, cv) = &*gate;
        *open.lock() = true;
        cv.notify_all();
    }
    join(t)?;
    let second = env.consumer("heir", support::fast_config())?;
    second.run()?;
    let mut all: HashSet<String> = done.lock().iter().cloned().collect();
    let mut repeated = HashSet::new();
    let rest = support::collect_until(&second, Duration::from_secs(60), |seen| {
        (seen.iter().filter(|d| !all.contains(*d)).count() + all.len()) as u64 >= N
    })?;
    second.close()?;
    for d in rest {
        if !all.insert(d.clone()) {
            repeated.insert(d);
        }
    }
    assert_eq!(all.len() as u64, N, "records lost");
    // Only what was at work (handed out, not finished) is read again.
    let held: HashSet<String> = held.lock().iter().cloned().collect();
    let repeated_done: Vec<&String> = repeated.iter().filter(|d| !held.contains(*d)).collect();
    assert!(
        repeated_done.is_empty(),
        "processed records read again: {repeated_done:?}"
    );
    Ok(())
}

#[test]
fn a_closed_shards_children_start_only_after_its_last_batch() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let parent = env.open_shards()?.remove(0);
    env.put_numbered(0, 300, 37)?;
    let consumer = Arc::new(env.consumer("splitter", support::fast_config())?);
    consumer.run()?;
    let tracker = Arc::new(Tracker::default());
    let t = spawn_process(
        Arc::clone(&consumer),
        2,
        Arc::clone(&tracker),
        Duration::from_millis(30),
    );
    support::wait_for(Duration::from_secs(60), "the first records", || {
        Ok(tracker.count() >= 50)
    })?;
    env.split(&parent)?;
    support::wait_for(Duration::from_secs(30), "the split", || {
        Ok(env.open_shards()?.len() == 2)
    })?;
    env.put_numbered(300, 600, 37)?;
    support::wait_for(Duration::from_secs(60), "every record", || {
        Ok(tracker.count() >= 600)
    })?;
    consumer.stop_handle().stop();
    join(t)?;
    consumer.stop();
    let st = tracker.state.lock();
    support::check_per_key_order(&st.log, 600)?;
    let parent_end = st.times[&parent]
        .iter()
        .map(|(_, end)| *end)
        .max()
        .ok_or("no batch of the parent")?;
    let children: Vec<&String> = st.times.keys().filter(|s| **s != parent).collect();
    assert_eq!(children.len(), 2, "{:?}", st.times.keys());
    for child in children {
        let first = st.times[child].iter().map(|(start, _)| *start).min();
        assert!(
            first.is_some_and(|f| f >= parent_end),
            "{child} started before its parent's last batch ended"
        );
    }
    Ok(())
}

#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused record {}", self.0)
    }
}

impl std::error::Error for Refused {}

#[test]
fn a_handlers_error_ends_the_consumer_with_it_and_releases_every_lease() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    const N: u64 = 300;
    env.put_numbered(0, N, 37)?;
    let consumer = env.consumer("picky", support::fast_config())?;
    consumer.run()?;
    let ended = consumer.process(3, |batch: Batch| {
        match batch.iter().find(|r| r.data() == b"157") {
            Some(r) => Err(Refused(String::from_utf8_lossy(r.data()).into_owned())),
            None => Ok(()),
        }
    });
    let Err(ProcessError::Handler {
        shard_id, error, ..
    }) = ended
    else {
        return Err(format!("expected the handler's error, got {ended:?}").into());
    };
    assert_eq!(error.0, "157");
    assert!(!consumer.is_running());
    // Every lease released at once (no waiting for it to expire).
    let rows = env.checkpoint_rows()?;
    assert_eq!(rows.len(), 2);
    for (shard, row) in &rows {
        assert_eq!(
            row.get("OwnerID"),
            Some(&AttributeValue::Null(true)),
            "{shard}"
        );
    }
    drop(consumer);
    // The failed batch was not marked: the next client gets its records again.
    let next = env.consumer("next", support::fast_config())?;
    next.run()?;
    let seen = support::collect_until(&next, Duration::from_secs(60), |s| {
        s.iter().any(|d| d == "157")
    })?;
    next.close()?;
    assert!(seen.iter().any(|d| d == "157"), "{shard_id}");
    Ok(())
}

#[test]
fn process_refuses_no_workers_and_a_consumer_not_running() -> TestResult {
    let mut env = Env::new(1)?;
    let consumer = env.consumer("idle", support::fast_config())?;
    let ok = |_: Batch| -> Result<(), std::convert::Infallible> { Ok(()) };
    match consumer.process(1, ok) {
        Err(ProcessError::Consumer(e)) => assert_eq!(e.kind(), kinsumer::ErrorKind::NotRunning),
        other => return Err(format!("expected NotRunning, got {other:?}").into()),
    }
    consumer.run()?;
    match consumer.process(0, ok) {
        Err(ProcessError::Consumer(e)) => {
            assert_eq!(e.kind(), kinsumer::ErrorKind::InvalidWorkers);
            assert!(e.is_config());
        }
        other => return Err(format!("expected InvalidWorkers, got {other:?}").into()),
    }
    consumer.close()?;
    Ok(())
}

#[test]
fn a_shard_whose_batch_is_at_work_does_not_hold_the_buffer_for_the_others() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    const N: u64 = 400;
    env.put_numbered(0, N, 37)?;
    // A small buffer: two batches of two records fill it.
    let config = support::fast_config()
        .with_buffer_size(4)
        .with_max_batch_records(2);
    let consumer = Arc::new(env.consumer("hold", config)?);
    consumer.run()?;
    // The first batch's handler waits (at most 30 s) until 60 records of the other shard
    // were processed meanwhile: its shard's next batches must not take all the room.
    let seen: Mutex<HashMap<String, usize>> = Mutex::default();
    let progress = Condvar::new();
    let first: Mutex<Option<String>> = Mutex::default();
    let others_while_held = AtomicUsize::new(0);
    let stop = consumer.stop_handle();
    let result = consumer.process(2, |batch: Batch| {
        let shard = batch.shard_id().to_owned();
        let held = first.lock().get_or_insert_with(|| shard.clone()).clone();
        let mut counts = seen.lock();
        *counts.entry(shard.clone()).or_default() += batch.len();
        progress.notify_all();
        if shard == held && counts[&shard] == batch.len() {
            let deadline = Instant::now() + Duration::from_secs(30);
            let others = |c: &HashMap<String, usize>| {
                c.iter().filter(|(s, _)| **s != held).map(|(_, n)| *n).sum()
            };
            while others(&counts) < 60 && !progress.wait_until(&mut counts, deadline).timed_out() {}
            others_while_held.store(others(&counts), Ordering::SeqCst);
        }
        if counts.values().sum::<usize>() as u64 >= N {
            stop.stop();
        }
        Ok::<(), std::convert::Infallible>(())
    });
    result?;
    consumer.stop();
    let others = others_while_held.load(Ordering::SeqCst);
    assert!(
        others >= 60,
        "the other shard processed {others} records while one batch was at work"
    );
    assert_eq!(seen.lock().values().sum::<usize>() as u64, N);
    Ok(())
}
