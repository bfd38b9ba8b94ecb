//! Rebalance hooks: a caller that keeps per-shard totals and flushes them (marking their
//! records processed) only every 50 records — and when `ShardListener::revoking` says a
//! shard is being handed over — counts every record exactly once across a rebalance
//! under continuous writes. (Without the hook the handed-over shard's pending records
//! wait out the grace unmarked and are delivered again to the new owner.)

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use kinsumer::{CheckpointMode, Kinsumer, Polled, ProcessedMarker, ShardListener};
use parking_lot::Mutex;

use crate::support::{self, Env, Producer, TestResult};

/// One client's per-shard state and the durable sink it flushes into.
#[derive(Debug, Default)]
struct Totals {
    /// Per shard: the records counted since the last flush, and their markers.
    pending: HashMap<String, Vec<(String, ProcessedMarker)>>,
    /// Shards being handed over: their records are flushed at once.
    revoking: HashSet<String>,
    revokes: usize,
}

type Sink = Arc<Mutex<HashMap<String, u32>>>;

#[derive(Debug)]
struct Counter {
    totals: Mutex<Totals>,
    sink: Sink,
    /// Set once writes stop: from then on an idle caller flushes everything.
    quiet: Arc<AtomicBool>,
}

impl Counter {
    fn flush(&self, totals: &mut Totals, shard: &str) {
        let Some(pending) = totals.pending.remove(shard) else {
            return;
        };
        let mut sink = self.sink.lock();
        for (data, marker) in pending {
            *sink.entry(data).or_default() += 1;
            marker.mark();
        }
    }

    fn flush_all(&self) {
        let mut totals = self.totals.lock();
        let shards: Vec<String> = totals.pending.keys().cloned().collect();
        for shard in shards {
            self.flush(&mut totals, &shard);
        }
    }

    fn count(&self, shard: &str, data: String, marker: ProcessedMarker) {
        let mut totals = self.totals.lock();
        let pending = totals.pending.entry(shard.to_owned()).or_default();
        pending.push((data, marker));
        let full = pending.len() >= 50;
        if full || totals.revoking.contains(shard) {
            self.flush(&mut totals, shard);
        }
    }
}

impl ShardListener for Counter {
    fn assigned(&self, shard_id: &str) {
        self.totals.lock().revoking.remove(shard_id);
    }

    fn revoking(&self, shard_id: &str) {
        let mut totals = self.totals.lock();
        totals.revoking.insert(shard_id.to_owned());
        totals.revokes += 1;
        self.flush(&mut totals, shard_id);
    }
}

fn start(
    env: &mut Env,
    name: &str,
    sink: &Sink,
    quiet: &Arc<AtomicBool>,
) -> TestResult<(Arc<Counter>, JoinHandle<TestResult>, kinsumer::StopHandle)> {
    let counter = Arc::new(Counter {
        totals: Mutex::default(),
        sink: Arc::clone(sink),
        quiet: Arc::clone(quiet),
    });
    let config = support::fast_config()
        .with_checkpoint_mode(CheckpointMode::Manual)
        .with_shard_listener(counter.clone());
    let consumer: Kinsumer = env.consumer(name, config)?;
    consumer.run()?;
    let stop = consumer.stop_handle();
    let c = Arc::clone(&counter);
    let thread = std::thread::spawn(move || -> TestResult {
        let mut records = consumer.records();
        loop {
            match records.next_timeout(Duration::from_millis(200)) {
                Polled::Record(mut r) => {
                    let marker = r.processed_marker();
                    let data = String::from_utf8(r.take_data())?;
                    c.count(r.shard_id(), data, marker);
                }
                // Once writes stop, flush when idle (a caller's usual "flush when quiet").
                Polled::TimedOut if c.quiet.load(Ordering::SeqCst) => c.flush_all(),
                Polled::TimedOut => {}
                Polled::Failed(e) => return Err(e.into()),
                Polled::Ended => break,
            }
        }
        consumer.close()?;
        Ok(())
    });
    Ok((counter, thread, stop))
}

#[test]
fn per_shard_totals_flushed_on_revoke_count_every_record_once() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    let sink: Sink = Arc::default();
    let quiet = Arc::new(AtomicBool::new(false));
    let producer = Producer::start(&env);
    let (a, a_thread, a_stop) = start(&mut env, "a", &sink, &quiet)?;
    support::wait_for(Duration::from_secs(30), "a reads all four shards", || {
        Ok(env.owners()?.len() == 4 && sink.lock().len() > 100)
    })?;
    // b joins: about half of a's shards are handed over to it.
    let (b, b_thread, b_stop) = start(&mut env, "b", &sink, &quiet)?;
    support::wait_for(Duration::from_secs(30), "b reads its share", || {
        let owners = env.owners()?;
        Ok(owners.len() == 4 && owners.values().collect::<HashSet<_>>().len() == 2)
    })?;
    // Keep writing through the handover, so that no caller is idle meanwhile.
    support::let_time_pass(Duration::from_secs(3))?;
    let written = producer.stop()?;
    quiet.store(true, Ordering::SeqCst);
    support::wait_for(Duration::from_secs(30), "every record counted", || {
        Ok(sink.lock().len() as u64 >= written)
    })?;
    a_stop.stop();
    b_stop.stop();
    a_thread.join().map_err(|_| "a panicked")??;
    b_thread.join().map_err(|_| "b panicked")??;

    let sink = sink.lock();
    let twice: Vec<(&String, &u32)> = sink.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} records counted twice, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    let missing = (0..written)
        .filter(|i| !sink.contains_key(&i.to_string()))
        .count();
    assert_eq!(missing, 0, "records never counted");
    let revokes = a.totals.lock().revokes;
    assert!(revokes >= 2, "a was told of {revokes} handovers");
    eprintln!(
        "{written} records counted once each; a flushed on {revokes} revokes, b on {}",
        b.totals.lock().revokes
    );
    Ok(())
}

/// At the default timings (a shard check a minute), a clean join and a clean leave move
/// shards in seconds: clients announce joins and leaves (the `FleetChange` item) and poll
/// for them every second between shard checks.
#[test]
fn a_clean_join_and_leave_move_shards_within_seconds_at_default_timings() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    let config = || kinsumer::Config::default().with_dynamo_waiter_delay(Duration::from_millis(50));
    let log: support::Deliveries = Arc::default();
    let a = support::Member::start(0, env.consumer("first", config())?, log.clone())?;
    support::wait_for(
        Duration::from_secs(30),
        "the first client owning all",
        || Ok(env.owners()?.len() == 4),
    )?;
    let producer = Producer::start(&env);
    let joined = std::time::Instant::now();
    let b = support::Member::start(1, env.consumer("second", config())?, log.clone())?;
    support::wait_for(
        Duration::from_secs(30),
        "two shards each, both delivering",
        || {
            let owners = env.owners()?;
            let b_owns = owners.values().filter(|o| **o == b.id).count();
            Ok(owners.len() == 4 && b_owns == 2 && log.lock().iter().any(|(m, _)| *m == 1))
        },
    )?;
    let join = joined.elapsed();
    let left = std::time::Instant::now();
    let b_id = b.id.clone();
    b.stop()?;
    support::wait_for(
        Duration::from_secs(30),
        "the first client owning all again",
        || {
            let owners = env.owners()?;
            Ok(owners.len() == 4 && owners.values().all(|o| *o == a.id && *o != b_id))
        },
    )?;
    let leave = left.elapsed();
    let written = producer.stop()?;
    support::wait_for(Duration::from_secs(60), "every record", || {
        let seen: std::collections::HashSet<String> =
            log.lock().iter().map(|(_, d)| d.clone()).collect();
        Ok(seen.len() as u64 >= written)
    })?;
    a.stop()?;
    println!("default timings: a join moved shards in {join:?}, a clean leave in {leave:?}");
    // Without the announcements, both wait for the next shard check: up to a minute.
    assert!(join < Duration::from_secs(15), "join took {join:?}");
    assert!(leave < Duration::from_secs(15), "leave took {leave:?}");
    Ok(())
}
