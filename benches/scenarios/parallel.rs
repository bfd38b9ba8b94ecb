//! The `parallel` scenario: one record at a time, batches, and the worker pool, over an
//! 8-shard backlog with W µs of real CPU per record (a hash loop).
//!
//! - W = 0: client CPU per record, `records()` against `batches()`.
//! - W = 50 µs (`--work-us`): records/s with `records()` on one thread against
//!   `process()` with 1 and 2 workers.
//!
//! Every run checks each shard's order (record ids rise within a shard), and that nothing
//! is lost or repeated. Each run reports the CPU per thread group.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kinsumer::{Batch, Kinsumer, Polled, PolledBatch};
use parking_lot::Mutex;

use super::{
    Args, BenchResult, Counters, Report, bench_config, client_cpu_by_thread, mode_note, preload,
    record_id, support,
};

/// CPU (ns) of the worker threads that have ended: `process()` joins its workers before
/// it returns, so each adds its own CPU as it exits (a thread-local's destructor).
static ENDED_WORKERS_NS: AtomicU64 = AtomicU64::new(0);

struct CountOnExit;

impl Drop for CountOnExit {
    fn drop(&mut self) {
        let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0);
        ENDED_WORKERS_NS.fetch_add(ns, Ordering::Relaxed);
    }
}

thread_local! {
    static COUNT_ON_EXIT: CountOnExit = const { CountOnExit };
}

/// How a run consumes.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Records,
    Batches,
    Workers(usize),
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Records => "records".into(),
            Mode::Batches => "batches".into(),
            Mode::Workers(n) => format!("process-{n}"),
        }
    }
}

/// Hash rounds per µs of this machine, measured once.
fn rounds_per_us() -> u64 {
    let start = Instant::now();
    let mut h = 0u64;
    let mut rounds = 0u64;
    while start.elapsed() < Duration::from_millis(200) {
        h = spin(h, 10_000);
        rounds += 10_000;
    }
    std::hint::black_box(h);
    (rounds as f64 / start.elapsed().as_secs_f64() / 1e6).max(1.0) as u64
}

/// `rounds` rounds of an FNV-style hash: real CPU work the optimiser cannot drop.
fn spin(mut h: u64, rounds: u64) -> u64 {
    for i in 0..rounds {
        h = (h ^ i).wrapping_mul(0x0000_0100_0000_01b3);
    }
    std::hint::black_box(h)
}

/// What the runs check: each record once, each shard's ids rising.
#[derive(Default)]
struct Check {
    seen: Vec<bool>,
    last: HashMap<String, u64>,
    count: u64,
    duplicates: u64,
    out_of_order: u64,
}

impl Check {
    fn new(n: u64) -> Self {
        Check {
            seen: vec![false; n as usize],
            ..Check::default()
        }
    }

    fn record(&mut self, shard: &str, data: &[u8]) -> BenchResult {
        let id = record_id(data).ok_or("foreign record")?;
        let slot = self.seen.get_mut(id as usize).ok_or("foreign record")?;
        if *slot {
            self.duplicates += 1;
        }
        *slot = true;
        self.count += 1;
        match self.last.get_mut(shard) {
            Some(last) if *last > id => self.out_of_order += 1,
            Some(last) => *last = id,
            None => {
                self.last.insert(shard.to_owned(), id);
            }
        }
        Ok(())
    }

    fn lost(&self) -> usize {
        self.seen.iter().filter(|s| !**s).count()
    }
}

pub(crate) fn parallel(args: &Args) -> BenchResult {
    let work_us = args.work_us.unwrap_or(50);
    let per_us = rounds_per_us();
    println!("hash loop: {per_us} rounds per µs");
    let runs: [(Mode, u64, u64); 5] = [
        (Mode::Records, 0, args.records.unwrap_or(200_000)),
        (Mode::Batches, 0, args.records.unwrap_or(200_000)),
        (Mode::Records, work_us, args.records.unwrap_or(60_000)),
        (Mode::Workers(1), work_us, args.records.unwrap_or(60_000)),
        (Mode::Workers(2), work_us, args.records.unwrap_or(60_000)),
    ];
    for (mode, w, n) in runs {
        run(args, mode, w, w * per_us, n)?;
    }
    Ok(())
}

fn run(args: &Args, mode: Mode, work_us: u64, rounds: u64, n: u64) -> BenchResult {
    let shards = args.shards.unwrap_or(8);
    let bytes = args.bytes.unwrap_or(100);
    let mut env = support::Env::new(shards)?;
    preload(&env, n, bytes, None)?;
    let counters = Arc::new(Counters::default());
    let consumer = env.consumer("bench-parallel", bench_config(args, &counters))?;
    let check = Mutex::new(Check::new(n));
    let before = client_cpu_by_thread();
    let workers_before = ENDED_WORKERS_NS.load(Ordering::Relaxed);
    let start = Instant::now();
    consumer.run()?;
    match mode {
        Mode::Records => by_record(&consumer, &check, n, rounds)?,
        Mode::Batches => by_batch(&consumer, &check, n, rounds)?,
        Mode::Workers(w) => by_workers(&consumer, &check, n, rounds, w)?,
    }
    let wall = start.elapsed();
    let mut after = client_cpu_by_thread();
    after[4] += ENDED_WORKERS_NS.load(Ordering::Relaxed) - workers_before;
    consumer.stop();
    let ms = |i: usize| after[i].saturating_sub(before[i]) as f64 / 1e6;
    let total_ms: f64 = (0..5).map(ms).sum();
    // The caller's (or workers') own work is the user's: left out of the client's CPU.
    let work_ms = (n * work_us) as f64 / 1e3;
    let check = check.into_inner();
    Report::new("parallel")
        .num("mode", format!("\"{}\"", mode.name()))
        .num("work_us", work_us)
        .num("shards", shards)
        .num("records", n)
        .f("wall_s", wall.as_secs_f64())
        .f("records_per_s", n as f64 / wall.as_secs_f64())
        .f("cpu_io_ms", ms(0))
        .f("cpu_shards_ms", ms(1))
        .f("cpu_coordinator_ms", ms(2))
        .f("cpu_caller_ms", ms(3))
        .f("cpu_workers_ms", ms(4))
        .f(
            "client_cpu_us_per_record",
            (total_ms - work_ms).max(0.0) * 1e3 / n as f64,
        )
        .num("lost", check.lost())
        .num("duplicates", check.duplicates)
        .num("out_of_order", check.out_of_order)
        .print(mode_note(&env));
    if check.lost() > 0 || check.duplicates > 0 || check.out_of_order > 0 {
        return Err(format!("{}: records lost, repeated or out of order", mode.name()).into());
    }
    Ok(())
}

fn by_record(consumer: &Kinsumer, check: &Mutex<Check>, n: u64, rounds: u64) -> BenchResult {
    let mut records = consumer.records();
    let mut check = check.lock();
    while check.count < n {
        match records.next_timeout(Duration::from_secs(60)) {
            Polled::Record(r) => {
                spin(0, rounds);
                check.record(r.shard_id(), r.data())?;
            }
            Polled::TimedOut => return Err("stalled for 60 s".into()),
            Polled::Failed(e) => return Err(e.into()),
            Polled::Ended => return Err("iteration ended".into()),
        }
    }
    Ok(())
}

fn by_batch(consumer: &Kinsumer, check: &Mutex<Check>, n: u64, rounds: u64) -> BenchResult {
    let mut batches = consumer.batches();
    let mut check = check.lock();
    while check.count < n {
        match batches.next_timeout(Duration::from_secs(60)) {
            PolledBatch::Batch(b) => {
                for r in &b {
                    spin(0, rounds);
                    check.record(r.shard_id(), r.data())?;
                }
            }
            PolledBatch::TimedOut => return Err("stalled for 60 s".into()),
            PolledBatch::Failed(e) => return Err(e.into()),
            PolledBatch::Ended => return Err("iteration ended".into()),
        }
    }
    Ok(())
}

fn by_workers(
    consumer: &Kinsumer,
    check: &Mutex<Check>,
    n: u64,
    rounds: u64,
    workers: usize,
) -> BenchResult {
    let stop = consumer.stop_handle();
    let done = consumer.process(workers, |batch: Batch| -> BenchResult {
        COUNT_ON_EXIT.with(|_| {});
        for _ in &batch {
            spin(0, rounds);
        }
        let mut check = check.lock();
        for r in &batch {
            check.record(r.shard_id(), r.data())?;
        }
        if check.count >= n {
            stop.stop();
        }
        Ok(())
    });
    done.map_err(|e| match e {
        kinsumer::ProcessError::Consumer(e) => e.into(),
        kinsumer::ProcessError::Handler { error, .. } => error,
    })
}
