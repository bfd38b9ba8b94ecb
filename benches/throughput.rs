//! Throughput, CPU, memory, latency and scale of the consumer.
//!
//! ```text
//! cargo bench --bench throughput -- <scenario> [--shards S] [--records N] [--bytes B] [--seconds T]
//!     [--aggregated K] [--idle-poll MS] [--shard-check SECONDS] [--throttle MS] [--io-threads N]
//!     [--read polling|fan-out|both]
//! ```
//!
//! `--read fan-out` (or `--fan-out`) reads through an enhanced fan-out consumer
//! (SubscribeToShard) instead of polling; `--read both` runs the scenario once each way,
//! each in a process of its own, and prints both rows.
//!
//! `slow-caller` takes `--caller-ms MS` (the caller's work per record, default 1): with
//! `--bytes 1000000 --records 200 --caller-ms 40 --seconds 8` it measures peak RSS over a
//! backlog of 1 MB records (run it against external emulators).
//!
//! Scenarios: `drain` (default 4 shards, 200,000 × 100 B; with `--aggregated K` the
//! records are written as KPL aggregates of K user records each, and the figures are per
//! user record), `latency` (200 puts 20 ms
//! apart), `latency-busy` (the same while the other shards take 10,000 records/s),
//! `idle-scale` (256 idle shards for 30 s; reports GetRecords calls per second),
//! `latency-after-idle` (20 shards quiet for 60 s, then one record each, the puts spread
//! over one idle poll period), `sdk-floor`
//! (1,000 idle shards polled once a second through the SDK alone, no kinsumer: the CPU
//! floor under `idle-scale`), `slow-caller` (a caller sleeping 1 ms
//! per record for 20 s over a 4-shard backlog), `dynamo-cost` (DynamoDB requests per hour
//! of a 3-client fleet over 32 shards, idle and busy, at `Config::default()` and
//! `Config::go_defaults()`), `join-writes` (DynamoDB requests while a 4th client joins a
//! 3-client fleet over 64 shards), `parallel` (8 shards: client CPU per record of
//! `records()` against `batches()`, then records/s with `--work-us US` of CPU per record,
//! default 50, for `records()` on one thread against `process()` with 1 and 2 workers;
//! see `benches/scenarios/parallel.rs`), `retry` (the CPU and memory of a shard whose first
//! record fails every time, over a backlog behind it; see `benches/scenarios/retry.rs`),
//! `all`. `--idle-poll MS` sets the idle poll
//! delay (250 = the throttle delay: adaptive polling off, the old behaviour). Each prints a table row and one
//! JSON line.
//!
//! `--recorder prometheus` installs a Prometheus recorder first (the `metrics` feature's
//! series then go somewhere; without it they go nowhere).
//!
//! Servers: embedded emulators in this process by default; set
//! `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL_DYNAMODB` (e.g. from
//! `cargo run --release --example emulators`) to keep the servers out of the process.
//! Client CPU is measured per thread (`/proc/self/task/*/schedstat`): the library's
//! threads (`kinsumer-*`) plus the consuming thread, so in-process emulators are
//! excluded. Peak RSS (VmHWM) covers the whole process: meaningful in external mode only.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "scenarios/parallel.rs"]
mod parallel;

#[path = "scenarios/retry.rs"]
mod retry;

use kinsumer::Polled;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kinsumer::{Kinsumer, Stats};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Clone)]
struct Args {
    scenario: String,
    shards: Option<i32>,
    records: Option<u64>,
    bytes: Option<usize>,
    seconds: Option<u64>,
    aggregated: Option<usize>,
    /// `--idle-poll MS`: the idle poll delay (equal to the throttle: the old behaviour).
    idle_poll: Option<u64>,
    /// `--shard-check SECONDS`: the shard check and leader action frequency (default 1).
    shard_check: Option<u64>,
    /// `--read polling|fan-out|both`: how shards are read (default polling); `both` runs
    /// the scenario once each way, each in a process of its own (so peak RSS is each
    /// one's own), and prints both rows.
    read: String,
    /// `--throttle MS`: the throttle delay (default 200).
    throttle: Option<u64>,
    /// `--io-threads N`: the consumer's I/O threads (default 1).
    io_threads: Option<usize>,
    /// `--caller-ms MS`: how long the `slow-caller` scenario's caller works on each
    /// record (default 1).
    caller_ms: Option<u64>,
    /// `--work-us US`: the `parallel` scenario's CPU work per record.
    work_us: Option<u64>,
    /// `--recorder prometheus`: a recorder installed for the `metrics` feature.
    recorder: bool,
    /// `--clients N`: the `dynamo-cost` fleet's size (default 3).
    clients: Option<usize>,
    /// `--only default-idle` etc.: one `dynamo-cost` row (timing-load) instead of four.
    only: Option<String>,
}

fn parse_args() -> BenchResult<Args> {
    let mut args = Args {
        scenario: "all".into(),
        shards: None,
        records: None,
        bytes: None,
        seconds: None,
        aggregated: None,
        idle_poll: None,
        shard_check: None,
        read: "polling".into(),
        throttle: None,
        io_threads: None,
        caller_ms: None,
        work_us: None,
        recorder: false,
        clients: None,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--shards" => args.shards = Some(it.next().ok_or("--shards N")?.parse()?),
            "--records" => args.records = Some(it.next().ok_or("--records N")?.parse()?),
            "--bytes" => args.bytes = Some(it.next().ok_or("--bytes N")?.parse()?),
            "--seconds" => args.seconds = Some(it.next().ok_or("--seconds N")?.parse()?),
            "--shard-check" => {
                args.shard_check = Some(it.next().ok_or("--shard-check SECONDS")?.parse()?);
            }
            "--read" => args.read = it.next().ok_or("--read polling|fan-out|both")?,
            "--fan-out" => args.read = "fan-out".into(),
            "--io-threads" => args.io_threads = Some(it.next().ok_or("--io-threads N")?.parse()?),
            "--throttle" => args.throttle = Some(it.next().ok_or("--throttle MS")?.parse()?),
            "--caller-ms" => args.caller_ms = Some(it.next().ok_or("--caller-ms MS")?.parse()?),
            "--work-us" => args.work_us = Some(it.next().ok_or("--work-us US")?.parse()?),
            "--recorder" => match it.next().as_deref() {
                Some("prometheus") => args.recorder = true,
                other => return Err(format!("--recorder {other:?}: prometheus").into()),
            },
            "--clients" => args.clients = Some(it.next().ok_or("--clients N")?.parse()?),
            "--only" => args.only = Some(it.next().ok_or("--only TIMING-LOAD")?),
            "--idle-poll" => args.idle_poll = Some(it.next().ok_or("--idle-poll MS")?.parse()?),
            "--aggregated" => {
                args.aggregated = Some(it.next().ok_or("--aggregated K")?.parse()?);
            }
            s if !s.starts_with('-') => args.scenario = s.to_owned(),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

/// Counts for the bench: fetch calls and leases.
#[derive(Debug, Default)]
struct Counters {
    fetch_calls: AtomicU64,
    acquired: AtomicU64,
}

impl Stats for Counters {
    fn records_fetched(&self, _: &str, _: usize, _: Option<i64>) {
        self.fetch_calls.fetch_add(1, Ordering::Relaxed);
    }
    fn lease_acquired(&self, _: &str) {
        self.acquired.fetch_add(1, Ordering::Relaxed);
    }
}

// ---- process measurements -------------------------------------------------------

/// CPU time (ns) of the library's threads and of the calling thread.
fn client_cpu_ns() -> u64 {
    client_cpu_by_thread().iter().sum()
}

/// CPU time (ns) by thread group: the I/O threads (`kinsumer-io*`), the shard threads,
/// the other library threads (the coordinator), the calling thread, and the worker
/// threads of `Kinsumer::process` (`kinsumer-worker-*`).
fn client_cpu_by_thread() -> [u64; 5] {
    let me = current_tid();
    let mut groups = [0u64; 5];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return groups;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let tid = task
            .file_name()
            .to_string_lossy()
            .parse::<u64>()
            .unwrap_or(0);
        let group = if tid == me {
            3
        } else if comm.starts_with("kinsumer-io") {
            0
        } else if comm.starts_with("kinsumer-shard") {
            1
        } else if comm.starts_with("kinsumer-worke") {
            // (`comm` holds 15 bytes of the name.)
            4
        } else if comm.starts_with("kinsumer-") {
            2
        } else {
            continue;
        };
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        groups[group] += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    groups
}

fn current_tid() -> u64 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|fds| {
            fds.flatten()
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---- reporting -------------------------------------------------------------------

/// One scenario's figures, printed as a table row and a JSON line.
#[derive(Default)]
struct Report {
    fields: Vec<(&'static str, String)>,
}

impl Report {
    fn new(scenario: &str) -> Self {
        let mut r = Report::default();
        r.fields.push(("scenario", format!("\"{scenario}\"")));
        r
    }
    fn num(mut self, key: &'static str, v: impl std::fmt::Display) -> Self {
        self.fields.push((key, v.to_string()));
        self
    }
    fn f(self, key: &'static str, v: f64) -> Self {
        self.num(key, format!("{v:.3}"))
    }
    fn print(&self, note: &str) {
        let mut table = String::new();
        for (k, v) in &self.fields {
            let _ = write!(table, "{k}={} ", v.trim_matches('"'));
        }
        println!("{table}");
        if !note.is_empty() {
            println!("  note: {note}");
        }
        let json: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        println!("{{{}}}", json.join(","));
    }
}

fn mode_note(env: &support::Env) -> &'static str {
    if env.emulators.is_external() {
        "external servers: peak RSS is the client's alone"
    } else {
        "embedded emulators: peak RSS includes them (set AWS_ENDPOINT_URL_KINESIS/_DYNAMODB for client-only RSS); CPU is client threads only"
    }
}

fn bench_config(args: &Args, counters: &Arc<Counters>) -> kinsumer::Config {
    let config = support::fast_config()
        .with_commit_frequency(Duration::from_secs(1))
        .with_stats(counters.clone());
    let config = match args.io_threads {
        Some(n) => config.with_io_threads(n),
        None => config,
    };
    let config = match args.throttle {
        Some(ms) => config.with_throttle_delay(Duration::from_millis(ms)),
        None => config,
    };
    let config = if args.read == "fan-out" {
        config.with_consumer_name("bench")
    } else {
        config
    };
    let config = match args.shard_check {
        Some(secs) => config
            .with_shard_check_frequency(Duration::from_secs(secs))
            .with_leader_action_frequency(Duration::from_secs(secs)),
        None => config,
    };
    match args.idle_poll {
        Some(ms) => config.with_idle_poll_delay(Duration::from_millis(ms)),
        None => config,
    }
}

// ---- preload ---------------------------------------------------------------------

/// Writes `n` records of `bytes` bytes: the record id as 8 little-endian bytes, then
/// filler; spread over 1,024 partition keys. With `aggregated`, packs them that many to
/// a Kinesis record, as the KPL does.
fn preload(env: &support::Env, n: u64, bytes: usize, aggregated: Option<usize>) -> BenchResult {
    let bytes = bytes.max(8);
    let record = move |i: u64| {
        let mut data = vec![b'x'; bytes];
        data[..8].copy_from_slice(&i.to_le_bytes());
        (format!("k{}", i % 1024), data)
    };
    match aggregated {
        None => env.put_raw((0..n).map(record)),
        Some(k) => {
            let k = k.max(1) as u64;
            env.put_raw((0..n.div_ceil(k)).map(|a| {
                let users: Vec<support::kpl::UserRecord> = (a * k..((a + 1) * k).min(n))
                    .map(|i| {
                        let (key, data) = record(i);
                        (key, None, data)
                    })
                    .collect();
                (format!("agg{a}"), support::kpl::aggregate(&users))
            }))
        }
    }
}

fn record_id(data: &[u8]) -> Option<u64> {
    data.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

// ---- scenarios -------------------------------------------------------------------

fn drain(args: &Args, default_shards: i32) -> BenchResult {
    let shards = args.shards.unwrap_or(default_shards);
    let n = args.records.unwrap_or(200_000);
    let bytes = args.bytes.unwrap_or(100);
    let mut env = support::Env::new(shards)?;
    preload(&env, n, bytes, args.aggregated)?;
    let counters = Arc::new(Counters::default());
    let consumer = env.consumer("bench-drain", bench_config(args, &counters))?;
    let mut seen = vec![false; n as usize];
    let (mut lost, mut duplicates, mut count) = (n, 0u64, 0u64);
    let cpu_before = client_cpu_ns();
    let groups_before = client_cpu_by_thread();
    let start = Instant::now();
    consumer.run()?;
    let mut first = None;
    let mut records = consumer.records();
    while count < n {
        match records.next_timeout(Duration::from_secs(60)) {
            Polled::Record(r) => {
                first.get_or_insert_with(|| start.elapsed());
                count += 1;
                match record_id(r.data()).and_then(|id| seen.get_mut(id as usize)) {
                    Some(slot) if *slot => duplicates += 1,
                    Some(slot) => {
                        *slot = true;
                        lost -= 1;
                    }
                    None => return Err("foreign record".into()),
                }
            }
            Polled::TimedOut => return Err("drain stalled for 60 s".into()),
            Polled::Failed(e) => return Err(e.into()),
            Polled::Ended => return Err("iteration ended".into()),
        }
    }
    let wall = start.elapsed();
    let cpu = client_cpu_ns().saturating_sub(cpu_before);
    let groups = client_cpu_by_thread();
    let group_ms = |i: usize| groups[i].saturating_sub(groups_before[i]) as f64 / 1e6;
    let hwm = status_kib("VmHWM");
    consumer.stop();
    Report::new("drain")
        .num("read", quoted(&args.read))
        .num("io_threads", args.io_threads.unwrap_or(1))
        .f("cpu_io_ms", group_ms(0))
        .f("cpu_shards_ms", group_ms(1))
        .f("cpu_coordinator_ms", group_ms(2))
        .f("cpu_caller_ms", group_ms(3))
        .num("aggregated", args.aggregated.unwrap_or(1))
        .num("shards", shards)
        .num("records", n)
        .num("bytes", bytes)
        .f("wall_s", wall.as_secs_f64())
        .f("records_per_s", n as f64 / wall.as_secs_f64())
        .f(
            "first_record_ms",
            first.unwrap_or_default().as_secs_f64() * 1e3,
        )
        .f("cpu_us_per_record", cpu as f64 / 1e3 / n as f64)
        .f("peak_rss_mib", mib(hwm))
        .num("lost", lost)
        .num("duplicates", duplicates)
        .num(
            "get_records_calls",
            counters.fetch_calls.load(Ordering::Relaxed),
        )
        .print(mode_note(&env));
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// When a latency record was put: its bytes 9..17 (after the marker and the id).
fn sent_ns(data: &[u8]) -> BenchResult<u64> {
    Ok(data
        .get(9..17)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or("short record")?)
}

/// Marks a background-load record; latency records start with 0.
const LOAD: u8 = 0xff;

/// Put -> delivery latency of `n` records put one at a time 20 ms apart, all to the
/// first shard. With `busy`, the other shards meanwhile take a steady backlog of 10,000
/// records/s that the consumer must deliver too.
fn latency(args: &Args, busy: bool) -> BenchResult {
    let shards = args.shards.unwrap_or(4);
    let n = args.records.unwrap_or(200);
    if busy && shards < 2 {
        return Err("latency-busy needs at least 2 shards".into());
    }
    let mut env = support::Env::new(shards)?;
    let counters = Arc::new(Counters::default());
    let consumer = env.consumer("bench-latency", bench_config(args, &counters))?;
    consumer.run()?;
    // Caught up: every shard has been polled at least once.
    support::wait_for(Duration::from_secs(30), "every shard polled", || {
        Ok(counters.fetch_calls.load(Ordering::Relaxed) >= shards as u64)
    })?;
    // Shards split the 128-bit hash key space evenly, in order: hash key 0 is in the
    // first shard, and `width * k` starts shard k.
    let width = u128::MAX / shards as u128;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = busy.then(|| {
        let mut i = 0u128;
        put_until(
            &env,
            Arc::clone(&done),
            Duration::from_millis(50),
            move || {
                (0..500)
                    .map(|_| {
                        i += 1;
                        let shard = 1 + i % (shards as u128 - 1);
                        PutRecordsRequestEntry::builder()
                            .partition_key("load")
                            .explicit_hash_key((width * shard + 1).to_string())
                            .data(Blob::new(vec![LOAD; 100]))
                            .build()
                    })
                    .collect()
            },
        )
    });
    // Every record to the first shard.
    let producer = put_timed(
        &env,
        vec!["0".to_owned(); n as usize],
        Duration::from_millis(20),
    );
    let mut latencies = Vec::with_capacity(n as usize);
    let mut background = 0u64;
    let mut records = consumer.records();
    while (latencies.len() as u64) < n {
        match records.next_timeout(Duration::from_secs(30)) {
            Polled::Record(r) if r.data().first() == Some(&LOAD) => background += 1,
            Polled::Record(r) => {
                let sent = sent_ns(r.data())?;
                latencies.push(now_ns().saturating_sub(sent) as f64 / 1e6);
            }
            Polled::TimedOut => return Err("no record for 30 s".into()),
            Polled::Failed(e) => return Err(e.into()),
            Polled::Ended => return Err("iteration ended".into()),
        }
    }
    producer.join().map_err(|_| "producer panicked")??;
    done.store(true, Ordering::Relaxed);
    if let Some(load) = load {
        load.join().map_err(|_| "load thread panicked")??;
    }
    consumer.stop();
    latencies.sort_by(f64::total_cmp);
    Report::new(if busy { "latency-busy" } else { "latency" })
        .num("read", quoted(&args.read))
        .num("shards", shards)
        .num("records", n)
        .f("p50_ms", percentile(&latencies, 0.50))
        .f("p90_ms", percentile(&latencies, 0.90))
        .f("p99_ms", percentile(&latencies, 0.99))
        .f("max_ms", latencies.last().copied().unwrap_or(0.0))
        .num("throttle_ms", args.throttle.unwrap_or(200))
        .num("background_records", background)
        .print(match (busy, args.read.as_str()) {
            (true, _) => "put -> delivery on one shard while the others carry 10,000 records/s",
            (false, "fan-out") => {
                "put -> delivery, one record every 20 ms; the embedded Kinesis emulator \
                 pushes subscription events every 200 ms"
            }
            (false, _) => "put -> delivery, one record every 20 ms",
        });
    Ok(())
}

fn idle_scale(args: &Args) -> BenchResult {
    let shards = args.shards.unwrap_or(256);
    let seconds = args.seconds.unwrap_or(30);
    let mut env = support::Env::new(shards)?;
    let counters = Arc::new(Counters::default());
    let mut config = bench_config(args, &counters).with_throttle_delay(Duration::from_millis(250));
    if args.idle_poll.is_none() {
        config = config.with_idle_poll_delay(Duration::from_secs(1));
    }
    let consumer = env.consumer("bench-idle", config)?;
    let start = Instant::now();
    consumer.run()?;
    support::wait_for(Duration::from_secs(120), "every lease", || {
        Ok(counters.acquired.load(Ordering::Relaxed) >= shards as u64)
    })?;
    let ready = start.elapsed();
    // Let every shard settle into its idle rhythm before measuring.
    support::let_time_pass(Duration::from_secs(5))?;
    let cpu_before = client_cpu_ns();
    let calls_before = counters.fetch_calls.load(Ordering::Relaxed);
    let measured = Instant::now();
    support::let_time_pass(Duration::from_secs(seconds))?;
    let cpu = client_cpu_ns().saturating_sub(cpu_before);
    let calls = counters.fetch_calls.load(Ordering::Relaxed) - calls_before;
    let elapsed = measured.elapsed().as_secs_f64();
    let (rss, hwm, threads, socks) = (
        status_kib("VmRSS"),
        status_kib("VmHWM"),
        status_kib("Threads"),
        sockets(),
    );
    let stop_started = Instant::now();
    consumer.stop();
    let stop = stop_started.elapsed();
    Report::new("idle-scale")
        .num("shards", shards)
        .f("ready_s", ready.as_secs_f64())
        .f("rss_mib", mib(rss))
        .f("peak_rss_mib", mib(hwm))
        .num("threads", threads)
        .num("sockets", socks)
        .f(
            "cpu_us_per_shard_per_s",
            cpu as f64 / 1e3 / f64::from(shards) / elapsed,
        )
        .f("stop_s", stop.as_secs_f64())
        .num("idle_poll_ms", args.idle_poll.unwrap_or(1000))
        .num("shard_check_s", args.shard_check.unwrap_or(1))
        .num("get_records_calls", calls)
        .f("seconds", elapsed)
        .f("get_records_per_s", calls as f64 / elapsed)
        .print(mode_note(&env));
    Ok(())
}

/// Puts one timed record (its send time, read back by [`sent_ns`]) to each hash key in
/// turn, `pause` apart, from a thread of its own; record `i` has partition key `k{i}`.
fn put_timed(
    env: &support::Env,
    hash_keys: Vec<String>,
    pause: Duration,
) -> std::thread::JoinHandle<BenchResult> {
    let kinesis_config = env.kinesis.config().clone();
    let stream = env.stream.clone();
    std::thread::spawn(move || -> BenchResult {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = aws_sdk_kinesis::Client::from_conf(kinesis_config);
        for (i, hash_key) in hash_keys.into_iter().enumerate() {
            let mut data = vec![0u8];
            data.extend_from_slice(&(i as u64).to_le_bytes());
            data.extend_from_slice(&now_ns().to_le_bytes());
            rt.block_on(
                client
                    .put_record()
                    .stream_name(&stream)
                    .partition_key(format!("k{i}"))
                    .explicit_hash_key(hash_key)
                    .data(Blob::new(data))
                    .send(),
            )?;
            std::thread::sleep(pause);
        }
        Ok(())
    })
}

/// The AWS SDK's own cost of polling idle shards, with no kinsumer in the loop: the
/// floor under `idle-scale`'s CPU figure. One thread runs a current-thread tokio runtime
/// (as the consumer's I/O thread does) with a task per shard that calls GetRecords
/// every `--idle-poll` ms (default 1,000) on an empty shard, at most 64 calls in flight;
/// the CPU measured is that thread's alone.
fn sdk_floor(args: &Args) -> BenchResult {
    let shards = args.shards.unwrap_or(1000);
    let seconds = args.seconds.unwrap_or(20);
    let period = Duration::from_millis(args.idle_poll.unwrap_or(1000));
    let env = support::Env::new(shards)?;
    let ids = env.shard_ids()?;
    // The settings a consumer adds to the caller's client (`ClientConfigs::with_defaults`
    // at the default lease time): a bounded operation and attempt, the SDK's standard
    // retries capped at 3 attempts.
    let conf = env
        .kinesis
        .config()
        .to_builder()
        .timeout_config(
            aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(60))
                .operation_attempt_timeout(Duration::from_secs(10))
                .build(),
        )
        .retry_config(
            aws_sdk_kinesis::config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_max_backoff(Duration::from_secs(2)),
        );
    let client = aws_sdk_kinesis::Client::from_conf(conf.build());
    let stream = env.stream.clone();
    let measure = std::thread::spawn(move || -> BenchResult<(u64, u64, f64)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let calls = Arc::new(AtomicU64::new(0));
            let slots = Arc::new(tokio::sync::Semaphore::new(64));
            let mut tasks = tokio::task::JoinSet::new();
            for shard in ids {
                tasks.spawn(poll_idle_shard(
                    client.clone(),
                    stream.clone(),
                    shard,
                    Arc::clone(&calls),
                    Arc::clone(&slots),
                    period,
                ));
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            let (cpu0, calls0, t0) = (
                thread_cpu_ns(),
                calls.load(Ordering::Relaxed),
                Instant::now(),
            );
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let (cpu1, calls1) = (thread_cpu_ns(), calls.load(Ordering::Relaxed));
            let elapsed = t0.elapsed().as_secs_f64();
            if let Some(Ok(Err(e))) = tasks.try_join_next() {
                return Err(e);
            }
            tasks.abort_all();
            Ok((cpu1 - cpu0, calls1 - calls0, elapsed))
        })
    });
    let (cpu, calls, elapsed) = measure.join().map_err(|_| "sdk-floor thread panicked")??;
    Report::new("sdk-floor")
        .num("shards", shards)
        .num("idle_poll_ms", period.as_millis())
        .num("get_records_calls", calls)
        .f("seconds", elapsed)
        .f("get_records_per_s", calls as f64 / elapsed)
        .f("cpu_us_per_call", cpu as f64 / 1e3 / calls.max(1) as f64)
        .f(
            "cpu_us_per_shard_per_s",
            cpu as f64 / 1e3 / f64::from(shards) / elapsed,
        )
        .print("the SDK alone: GetRecords on idle shards from one runtime thread, no kinsumer");
    Ok(())
}

/// One shard's part of `sdk-floor`: GetRecords every `period` from the tip, for ever.
async fn poll_idle_shard(
    client: aws_sdk_kinesis::Client,
    stream: String,
    shard: String,
    calls: Arc<AtomicU64>,
    slots: Arc<tokio::sync::Semaphore>,
    period: Duration,
) -> BenchResult {
    let mut iterator = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::Latest)
        .send()
        .await?
        .shard_iterator
        .ok_or("no iterator")?;
    loop {
        let sent = tokio::time::Instant::now();
        let out = {
            let _slot = slots.acquire().await?;
            client
                .get_records()
                .shard_iterator(&iterator)
                .send()
                .await?
        };
        calls.fetch_add(1, Ordering::Relaxed);
        iterator = out.next_shard_iterator.ok_or("shard closed")?;
        tokio::time::sleep_until(sent + period).await;
    }
}

/// CPU time (ns) of the calling thread.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The first record after a quiet spell: `--shards` shards (default 20) idle for
/// `--seconds` (default 60), then one record put to each shard at once; put -> delivery
/// per record, one trial per shard.
fn latency_after_idle(args: &Args) -> BenchResult {
    let shards = args.shards.unwrap_or(20);
    let quiet = args.seconds.unwrap_or(60);
    let mut env = support::Env::new(shards)?;
    let counters = Arc::new(Counters::default());
    let config = bench_config(args, &counters).with_throttle_delay(Duration::from_millis(250));
    let idle_poll = config.idle_poll_delay();
    let consumer = env.consumer("bench-after-idle", config)?;
    consumer.run()?;
    support::wait_for(Duration::from_secs(60), "every lease", || {
        Ok(counters.acquired.load(Ordering::Relaxed) >= shards as u64)
    })?;
    support::let_time_pass(Duration::from_secs(quiet))?;
    // The shards poll in one phase: putting each shard's record a step later than the
    // last, the steps spanning one idle poll period, samples every point of the cycle.
    let hash_keys: Vec<String> = env
        .block_on(env.kinesis.list_shards().stream_name(&env.stream).send())?
        .shards()
        .iter()
        .map(|s| {
            s.hash_key_range()
                .map_or("0", |r| r.starting_hash_key())
                .to_owned()
        })
        .collect();
    let trials = hash_keys.len();
    let step = idle_poll / u32::try_from(trials.max(1))?;
    let producer = put_timed(&env, hash_keys, step);
    let mut latencies = Vec::with_capacity(trials);
    let mut records = consumer.records();
    while latencies.len() < trials {
        match records.next_timeout(Duration::from_secs(30)) {
            Polled::Record(r) => {
                let sent = sent_ns(r.data())?;
                latencies.push(now_ns().saturating_sub(sent) as f64 / 1e6);
            }
            Polled::TimedOut => return Err("no record for 30 s".into()),
            Polled::Failed(e) => return Err(e.into()),
            Polled::Ended => return Err("iteration ended".into()),
        }
    }
    producer.join().map_err(|_| "producer panicked")??;
    consumer.stop();
    latencies.sort_by(f64::total_cmp);
    Report::new("latency-after-idle")
        .num("shards", shards)
        .num("trials", trials)
        .num("quiet_s", quiet)
        .num("idle_poll_ms", idle_poll.as_millis())
        .num("throttle_ms", 250)
        .f("p50_ms", percentile(&latencies, 0.50))
        .f("p99_ms", percentile(&latencies, 0.99))
        .f("max_ms", latencies.last().copied().unwrap_or(0.0))
        .print(
            "first record per shard after the quiet spell, the puts spread over one idle \
             poll period; bound: idle poll + throttle",
        );
    Ok(())
}

fn slow_caller(args: &Args) -> BenchResult {
    let shards = args.shards.unwrap_or(4);
    let n = args.records.unwrap_or(100_000);
    let bytes = args.bytes.unwrap_or(100);
    let seconds = args.seconds.unwrap_or(20);
    let mut env = support::Env::new(shards)?;
    preload(&env, n, bytes, None)?;
    let counters = Arc::new(Counters::default());
    let consumer: Kinsumer = env.consumer("bench-slow", bench_config(args, &counters))?;
    consumer.run()?;
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut next_sample = start + Duration::from_secs(1);
    let mut count = 0u64;
    let mut records = consumer.records();
    while start.elapsed() < Duration::from_secs(seconds) {
        match records.next_timeout(Duration::from_secs(10)) {
            Polled::Record(_) => count += 1,
            Polled::TimedOut => return Err("no record for 10 s".into()),
            Polled::Failed(e) => return Err(e.into()),
            Polled::Ended => return Err("iteration ended".into()),
        }
        std::thread::sleep(Duration::from_millis(args.caller_ms.unwrap_or(1)));
        if Instant::now() >= next_sample {
            samples.push(status_kib("VmRSS"));
            next_sample += Duration::from_secs(1);
        }
    }
    consumer.stop();
    let first = samples.first().copied().unwrap_or(0);
    let peak = samples.iter().copied().max().unwrap_or(0);
    let last = samples.last().copied().unwrap_or(0);
    Report::new("slow-caller")
        .num("read", quoted(&args.read))
        .num("shards", shards)
        .num("records", count)
        .num("bytes", bytes)
        .f("rss_after_1s_mib", mib(first))
        .f("rss_peak_mib", mib(peak))
        .f("rss_end_mib", mib(last))
        .f("peak_rss_mib", mib(status_kib("VmHWM")))
        .print(mode_note(&env));
    Ok(())
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// Runs this bench again once per read mode, each in its own process.
fn both_ways() -> BenchResult {
    let original: Vec<String> = std::env::args().skip(1).collect();
    for mode in ["polling", "fan-out"] {
        let mut child_args = Vec::new();
        let mut it = original.iter();
        while let Some(a) = it.next() {
            if a == "--read" {
                it.next();
            } else if a != "--fan-out" {
                child_args.push(a.clone());
            }
        }
        child_args.extend(["--read".to_owned(), mode.to_owned()]);
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(&child_args)
            .status()?;
        if !status.success() {
            return Err(format!("the {mode} run failed: {status}").into());
        }
    }
    Ok(())
}

/// A fleet of consumers in this process whose DynamoDB requests are all logged.
struct CostFleet {
    log: support::calls::CallLog,
    members: Vec<(kinsumer::StopHandle, std::thread::JoinHandle<()>)>,
}

impl CostFleet {
    fn new() -> Self {
        CostFleet {
            log: support::calls::CallLog::default(),
            members: Vec::new(),
        }
    }

    /// Starts one more client, draining its records on a thread of its own.
    fn join(&mut self, env: &mut support::Env, config: kinsumer::Config) -> BenchResult {
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            env.dynamodb
                .config()
                .to_builder()
                .interceptor(self.log.clone())
                .build(),
        );
        let kinesis = env.kinesis.clone();
        let name = format!("cost-{}", self.members.len());
        let consumer = env.consumer_with(&kinesis, &dynamodb, &name, config)?;
        consumer.run()?;
        let stop = consumer.stop_handle();
        let thread = std::thread::spawn(move || for _ in consumer.records() {});
        self.members.push((stop, thread));
        Ok(())
    }

    /// Requests sent so far, by operation.
    fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for call in self.log.calls() {
            *counts.entry(call.operation).or_insert(0) += 1;
        }
        counts
    }

    fn stop(self) {
        for (stop, _) in &self.members {
            stop.stop();
        }
        for (_, thread) in self.members {
            let _ = thread.join();
        }
    }
}

/// Requests between two snapshots: `(writes, reads, "Op=n ...")`.
fn request_delta(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> (u64, u64, String) {
    let (mut writes, mut reads, mut by_op) = (0, 0, String::new());
    for (op, n) in after {
        let n = n - before.get(op).copied().unwrap_or(0);
        if n == 0 {
            continue;
        }
        match op.as_str() {
            "PutItem" | "UpdateItem" | "DeleteItem" => writes += n,
            _ => reads += n,
        }
        let _ = write!(by_op, "{op}={n} ");
    }
    (writes, reads, by_op.trim_end().to_owned())
}

/// Writes a batch from `batch` every `pause` until `stop`, on a thread and runtime of its
/// own.
fn put_until(
    env: &support::Env,
    stop: Arc<std::sync::atomic::AtomicBool>,
    pause: Duration,
    mut batch: impl FnMut() -> Result<Vec<PutRecordsRequestEntry>, aws_sdk_kinesis::error::BuildError>
    + Send
    + 'static,
) -> std::thread::JoinHandle<BenchResult> {
    let client = aws_sdk_kinesis::Client::from_conf(env.kinesis.config().clone());
    let stream = env.stream.clone();
    std::thread::spawn(move || -> BenchResult {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        while !stop.load(Ordering::Relaxed) {
            rt.block_on(
                client
                    .put_records()
                    .stream_name(&stream)
                    .set_records(Some(batch()?))
                    .send(),
            )?;
            std::thread::sleep(pause);
        }
        Ok(())
    })
}

/// Writes 4 records per shard every 250 ms, spread over the stream's shards by distinct
/// partition keys, until `stop`.
fn spread_load(
    env: &support::Env,
    shards: i32,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<BenchResult> {
    let mut n = 0u64;
    put_until(env, stop, Duration::from_millis(250), move || {
        (0..shards * 4)
            .map(|_| {
                n += 1;
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("k{n}"))
                    .data(Blob::new(n.to_string()))
                    .build()
            })
            .collect()
    })
}

/// Waits until `clients` clients hold every one of `shards` leases, each its share.
fn await_balance(env: &support::Env, shards: i32, clients: usize) -> BenchResult {
    let least = shards as usize / clients;
    support::wait_for(Duration::from_secs(300), "a balanced fleet", || {
        let owners = env.owners()?;
        let mut per: std::collections::HashMap<&String, usize> = Default::default();
        for o in owners.values() {
            *per.entry(o).or_default() += 1;
        }
        Ok(owners.len() == shards as usize
            && per.len() == clients
            && per.values().all(|n| *n >= least))
    })?;
    Ok(())
}

/// DynamoDB requests of a `--clients` fleet (default 3) over `--shards` shards (default 32), measured
/// for `--seconds` (default 60) once the fleet is balanced: at `Config::default()` and
/// `Config::go_defaults()`, idle and busy (every shard taking records). Prints requests
/// per hour for the fleet, per client and per shard, by operation. `--only default-idle`
/// (or `default-busy`, `go_defaults-idle`, `go_defaults-busy`) runs one row.
fn dynamo_cost(args: &Args) -> BenchResult {
    let shards = args.shards.unwrap_or(32);
    let seconds = args.seconds.unwrap_or(60);
    let clients = args.clients.unwrap_or(3);
    for (timing, base) in [
        ("default", kinsumer::Config::default()),
        ("go_defaults", kinsumer::Config::go_defaults()),
    ] {
        for busy in [false, true] {
            let row = format!("{timing}-{}", if busy { "busy" } else { "idle" });
            if args.only.as_ref().is_some_and(|only| *only != row) {
                continue;
            }
            let mut env = support::Env::new(shards)?;
            let config = base
                .clone()
                .with_dynamo_waiter_delay(Duration::from_millis(50));
            let mut fleet = CostFleet::new();
            for _ in 0..clients {
                fleet.join(&mut env, config.clone())?;
            }
            await_balance(&env, shards, clients)?;
            let stop_load = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let load = busy.then(|| spread_load(&env, shards, stop_load.clone()));
            // Past the rebalancing and, when busy, into a steady rate of commits.
            support::let_time_pass(Duration::from_secs(10))?;
            let before = fleet.counts();
            let measured = Instant::now();
            support::let_time_pass(Duration::from_secs(seconds))?;
            let (writes, reads, by_op) = request_delta(&before, &fleet.counts());
            let hours = measured.elapsed().as_secs_f64() / 3600.0;
            stop_load.store(true, Ordering::Relaxed);
            if let Some(load) = load {
                load.join().map_err(|_| "load thread panicked")??;
            }
            fleet.stop();
            let per_hour = |n: u64| n as f64 / hours;
            Report::new("dynamo-cost")
                .num("timing", quoted(timing))
                .num("load", quoted(if busy { "busy" } else { "idle" }))
                .num("clients", clients)
                .num("shards", shards)
                .f("writes_per_hour", per_hour(writes))
                .f("reads_per_hour", per_hour(reads))
                .f("writes_per_client_hour", per_hour(writes) / clients as f64)
                .f("reads_per_client_hour", per_hour(reads) / clients as f64)
                .f(
                    "writes_per_shard_hour",
                    per_hour(writes) / f64::from(shards),
                )
                .f("reads_per_shard_hour", per_hour(reads) / f64::from(shards))
                .num("requests", quoted(&by_op))
                .f("seconds", hours * 3600.0)
                .print("DynamoDB requests of the whole fleet in the window, scaled to an hour");
        }
    }
    Ok(())
}

/// DynamoDB requests while a 4th client joins a balanced 3-client fleet over
/// `--shards` shards (default 64), at `Config::default()`: from its start until it holds
/// its share, plus 5 s.
fn join_writes(args: &Args) -> BenchResult {
    let shards = args.shards.unwrap_or(64);
    let mut env = support::Env::new(shards)?;
    let config = kinsumer::Config::default().with_dynamo_waiter_delay(Duration::from_millis(50));
    let mut fleet = CostFleet::new();
    for _ in 0..3 {
        fleet.join(&mut env, config.clone())?;
    }
    await_balance(&env, shards, 3)?;
    support::let_time_pass(Duration::from_secs(5))?;
    let before = fleet.counts();
    let started = Instant::now();
    fleet.join(&mut env, config)?;
    await_balance(&env, shards, 4)?;
    let balanced = started.elapsed();
    support::let_time_pass(Duration::from_secs(5))?;
    let (writes, reads, by_op) = request_delta(&before, &fleet.counts());
    let window = started.elapsed().as_secs_f64();
    fleet.stop();
    Report::new("join-writes")
        .num("shards", shards)
        .f("balanced_s", balanced.as_secs_f64())
        .f("window_s", window)
        .num("writes", writes)
        .num("reads", reads)
        .f("writes_per_s", writes as f64 / window)
        .f("reads_per_s", reads as f64 / window)
        .num("requests", quoted(&by_op))
        .print("a 4th client joins a balanced 3-client fleet at Config::default()");
    Ok(())
}

fn main() -> BenchResult {
    support::init_logging();
    let args = parse_args()?;
    if args.recorder {
        // Every series goes to a Prometheus recorder (its listener on a free loopback
        // port, its upkeep thread running): the cost of the `metrics` feature in use.
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(([127, 0, 0, 1], 0))
            .install()?;
    }
    match args.read.as_str() {
        "polling" | "fan-out" => {}
        "both" => return both_ways(),
        other => return Err(format!("--read {other:?}: polling, fan-out or both").into()),
    }
    match args.scenario.as_str() {
        "drain" => drain(&args, 4)?,
        "latency" => latency(&args, false)?,
        "latency-busy" => latency(&args, true)?,
        "idle-scale" => idle_scale(&args)?,
        "sdk-floor" => sdk_floor(&args)?,
        "latency-after-idle" => latency_after_idle(&args)?,
        "slow-caller" => slow_caller(&args)?,
        "dynamo-cost" => dynamo_cost(&args)?,
        "join-writes" => join_writes(&args)?,
        "parallel" => parallel::parallel(&args)?,
        "retry" => retry::retry(&args)?,
        "all" => {
            drain(&args, 1)?;
            drain(&args, 4)?;
            latency(&args, false)?;
            latency(&args, true)?;
            idle_scale(&args)?;
            slow_caller(&args)?;
        }
        other => {
            return Err(format!(
                "unknown scenario {other:?}: drain, latency, latency-busy, latency-after-idle, \
                 idle-scale, sdk-floor, slow-caller, dynamo-cost, join-writes, parallel, retry, \
                 all"
            )
            .into());
        }
    }
    Ok(())
}
