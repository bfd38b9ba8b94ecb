//! A fleet of OS processes: three clients in three processes share a stream; one is
//! killed with SIGKILL mid-stream. After its leases go stale, the others consume its
//! shards from the last checkpoints: nothing is lost, and the only records delivered
//! twice are ones the killed client had delivered (its uncommitted window).
//!
//! The child processes are this test binary itself, re-run with
//! `--ignored --exact processes::fleet_member_process` and the parent's server endpoints
//! in the environment.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kinsumer::Kinsumer;

use crate::support::{self, Env, Producer, TestResult};

const MEMBER: &str = "KINSUMER_TEST_FLEET_MEMBER";
/// Prefix of a child's "record delivered" line.
const RECORD_MARK: &str = "@record ";

/// One child: its process and the records it printed.
struct Process {
    child: Child,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn spawn_member(
    env: &Env,
    index: usize,
    log: &Arc<parking_lot::Mutex<Vec<(usize, String)>>>,
) -> TestResult<Process> {
    spawn_member_with(env, index, log, &MemberOptions::default())
}

/// How a member process runs.
#[derive(Debug, Default, Clone)]
struct MemberOptions {
    /// Its clock this far off (the test kit's clock hook).
    clock_offset_ms: i64,
    /// One AWS call attempt in this many fails (throttled, 500, or timed out).
    faults_every: Option<u64>,
    /// Its DynamoDB calls time out while this file exists.
    outage_file: Option<std::path::PathBuf>,
    /// The chaos test's timings instead of `fast_config`.
    chaos: bool,
    /// `Config::default()`'s timings instead of `fast_config`.
    defaults: bool,
    /// All its AWS calls (Kinesis and DynamoDB) time out while this file exists: a
    /// network partition.
    partition_file: Option<std::path::PathBuf>,
    /// Every record (with its shard and time) and lease acquisition it reports.
    events: Option<Events>,
}

/// What a member did, by its own wall clock (Unix ns).
#[derive(Debug, Clone)]
enum Event {
    Record {
        member: usize,
        data: String,
        shard: String,
        at: u64,
    },
    Acquired {
        member: usize,
        shard: String,
        at: u64,
    },
}

type Events = Arc<parking_lot::Mutex<Vec<Event>>>;

/// Prefix of a child's "lease acquired" line.
const ACQUIRED_MARK: &str = "@acquired ";

fn spawn_member_with(
    env: &Env,
    index: usize,
    log: &Arc<parking_lot::Mutex<Vec<(usize, String)>>>,
    options: &MemberOptions,
) -> TestResult<Process> {
    let mut command = Command::new(std::env::current_exe()?);
    command.env(
        "KINSUMER_TESTING_CLOCK_OFFSET_MS",
        options.clock_offset_ms.to_string(),
    );
    if let Some(every) = options.faults_every {
        command.env("KINSUMER_MEMBER_FAULTS", every.to_string());
    }
    if let Some(file) = &options.outage_file {
        command.env("KINSUMER_MEMBER_OUTAGE_FILE", file);
    }
    if options.chaos {
        command.env("KINSUMER_MEMBER_CHAOS", "1");
    }
    if options.defaults {
        command.env("KINSUMER_MEMBER_DEFAULTS", "1");
    }
    if let Some(file) = &options.partition_file {
        command.env("KINSUMER_MEMBER_PARTITION_FILE", file);
    }
    let mut child = command
        .args([
            "--ignored",
            "--exact",
            "processes::fleet_member_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MEMBER, format!("member-{index}"))
        .env("KINSUMER_MEMBER_STREAM", &env.stream)
        .env("KINSUMER_MEMBER_APP", &env.app)
        .env("KINSUMER_MEMBER_KINESIS", env.emulators.kinesis_endpoint())
        .env(
            "KINSUMER_MEMBER_DYNAMODB",
            env.emulators.dynamodb_endpoint(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(match std::env::var_os("KINSUMER_TEST_MEMBER_LOGS") {
            Some(dir) => Stdio::from(std::fs::File::create(
                std::path::Path::new(&dir).join(format!("member-{index}.log")),
            )?),
            None => Stdio::null(),
        })
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let log = Arc::clone(log);
    let events = options.events.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print "test … ... " before the first line on the same line.
            if let Some((_, rest)) = line.split_once(RECORD_MARK) {
                let mut parts = rest.split(' ');
                let data = parts.next().unwrap_or_default().to_owned();
                let shard = parts.next().unwrap_or_default().to_owned();
                let at = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                log.lock().push((index, data.clone()));
                if let Some(events) = &events {
                    events.lock().push(Event::Record {
                        member: index,
                        data,
                        shard,
                        at,
                    });
                }
            } else if let Some((_, rest)) = line.split_once(ACQUIRED_MARK) {
                let mut parts = rest.split(' ');
                let shard = parts.next().unwrap_or_default().to_owned();
                let at = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                if let Some(events) = &events {
                    events.lock().push(Event::Acquired {
                        member: index,
                        shard,
                        at,
                    });
                }
            }
        }
    });
    Ok(Process {
        child,
        reader: Some(reader),
    })
}

impl Process {
    /// Closes stdin (the member stops cleanly) and waits for the exit.
    fn stop(mut self) -> TestResult {
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                assert!(status.success(), "member exited with {status}");
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return Err("member did not stop within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(r) = self.reader.take() {
            r.join().map_err(|_| "reader panicked")?;
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigkill_of_one_process_loses_nothing_and_duplicates_only_its_window() -> TestResult {
    support::init_logging();
    if std::env::var_os(MEMBER).is_some() {
        return Ok(()); // this is a child, running the whole suite by mistake: no-op
    }
    let mut env = Env::new(6)?;
    env.consumer("table-maker", support::fast_config())?; // creates the tables
    let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let producer = Producer::start(&env);
    let mut members = (0..3)
        .map(|i| spawn_member(&env, i, &log))
        .collect::<TestResult<Vec<_>>>()?;
    // All three are consuming before the kill.
    support::wait_for(
        Duration::from_secs(60),
        "three processes owning shards",
        || {
            let owners: HashSet<String> = env.owners()?.into_values().collect();
            let delivering: HashSet<usize> = log.lock().iter().map(|(i, _)| *i).collect();
            Ok(owners.len() == 3 && delivering.len() == 3)
        },
    )?;
    let victim = members.remove(0);
    let mut victim = victim;
    victim.child.kill()?; // SIGKILL
    victim.child.wait()?;
    if let Some(r) = victim.reader.take() {
        r.join().map_err(|_| "reader panicked")?;
    }
    let killed_at = log.lock().len();

    // Keep writing across the failover, then let the survivors catch up.
    support::let_time_pass(Duration::from_secs(2))?;
    let written = producer.stop()?;
    let delivered = |log: &parking_lot::Mutex<Vec<(usize, String)>>| -> HashSet<String> {
        log.lock().iter().map(|(_, d)| d.clone()).collect()
    };
    if let Err(e) = support::wait_for(Duration::from_secs(60), "every record", || {
        Ok(delivered(&log).len() as u64 >= written)
    }) {
        let seen = delivered(&log);
        let missing: Vec<u64> = (0..written)
            .filter(|i| !seen.contains(&i.to_string()))
            .collect();
        return Err(format!(
            "{e}: {} of {written} missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        )
        .into());
    }
    for m in members {
        m.stop()?;
    }

    let deliveries = log.lock().clone();
    let seen: HashSet<&str> = deliveries.iter().map(|(_, d)| d.as_str()).collect();
    let expected: HashSet<String> = (0..written).map(|i| i.to_string()).collect();
    assert_eq!(seen.len(), expected.len());
    assert!(
        expected.iter().all(|d| seen.contains(d.as_str())),
        "records lost"
    );
    let mut by_record: HashMap<&str, Vec<usize>> = HashMap::new();
    for (who, d) in &deliveries {
        by_record.entry(d.as_str()).or_default().push(*who);
    }
    let duplicates: Vec<(&&str, &Vec<usize>)> =
        by_record.iter().filter(|(_, w)| w.len() > 1).collect();
    let victims_deliveries = deliveries[..killed_at]
        .iter()
        .filter(|(w, _)| *w == 0)
        .count();
    eprintln!(
        "{written} records; the killed process delivered {victims_deliveries}; \
         {} delivered twice",
        duplicates.len()
    );
    for (record, who) in &duplicates {
        assert_eq!(
            who.len(),
            2,
            "record {record} delivered {} times",
            who.len()
        );
        assert!(
            who.contains(&0),
            "duplicate {record} not from the killed process: {who:?}"
        );
    }
    Ok(())
}

/// A member whose clock runs 10 minutes fast, then one running 10 minutes slow, shares
/// 4 shards with an in-process client: no lease moves while both live (a fast clock
/// would see the other as dead and take its leases; a slow one would have its own taken),
/// and when the skewed member is SIGKILLed its shards fail over as usual.
#[test]
fn clock_skew_takes_no_live_lease_and_a_dead_skewed_member_fails_over() -> TestResult {
    support::init_logging();
    if std::env::var_os(MEMBER).is_some() {
        return Ok(());
    }
    for offset_ms in [600_000i64, -600_000] {
        let mut env = Env::new(4)?;
        let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let deliveries: support::Deliveries = Arc::default();
        let local = support::Member::start(
            9,
            env.consumer("local", support::fast_config())?,
            deliveries,
        )?;
        let mut skewed = spawn_member_with(
            &env,
            0,
            &log,
            &MemberOptions {
                clock_offset_ms: offset_ms,
                ..MemberOptions::default()
            },
        )?;
        support::wait_for(Duration::from_secs(60), "two leases each", || {
            let owners = env.owners()?;
            let local_n = owners.values().filter(|o| **o == local.id).count();
            Ok(owners.len() == 4 && local_n == 2)
        })?;
        let settled = env.owners()?;
        // Twice the lease time (5 s): every row has gone without change for longer than
        // any lease time by one of the two clocks.
        let watch = std::time::Instant::now();
        while watch.elapsed() < Duration::from_secs(10) {
            let now = env.owners()?;
            assert_eq!(
                now, settled,
                "a lease moved between live clients with a clock {offset_ms} ms off"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        skewed.child.kill()?;
        skewed.child.wait()?;
        let killed = std::time::Instant::now();
        support::wait_for(
            Duration::from_secs(60),
            "the local client owning all",
            || {
                let owners = env.owners()?;
                Ok(owners.len() == 4 && owners.values().all(|o| *o == local.id))
            },
        )?;
        let failover = killed.elapsed();
        println!("clock {offset_ms:+} ms: the dead member's shards moved after {failover:?}");
        // The lease time is 5 s, a shard check 1 s: the normal failover.
        assert!(
            failover < Duration::from_secs(15),
            "failover took {failover:?} with a clock {offset_ms} ms off"
        );
        local.stop()?;
    }
    Ok(())
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A member's lease acquisitions, on stdout for the parent.
#[derive(Debug)]
struct Announcer;

impl kinsumer::Stats for Announcer {
    fn lease_acquired(&self, shard_id: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{ACQUIRED_MARK}{shard_id} {}", unix_ns());
        let _ = out.flush();
    }
}

/// The chaos run's timings: a lease and failover time (35 s) longer than its 20 s
/// DynamoDB outage.
fn chaos_config() -> kinsumer::Config {
    support::fast_config()
        .with_shard_check_frequency(Duration::from_secs(7))
        .with_leader_action_frequency(Duration::from_secs(7))
        .with_failover_time(Duration::from_secs(35))
}

/// Not a test: the body of one fleet member process, run by the test above.
#[test]
#[ignore = "helper process for sigkill_of_one_process_loses_nothing_and_duplicates_only_its_window"]
fn fleet_member_process() -> TestResult {
    let Ok(name) = std::env::var(MEMBER) else {
        return Ok(());
    };
    let _ = env_logger::builder()
        .target(env_logger::Target::Stderr)
        .try_init();
    let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} not set"));
    let (kinesis, dynamodb) = support::clients_for(
        &var("KINSUMER_MEMBER_KINESIS")?,
        &var("KINSUMER_MEMBER_DYNAMODB")?,
    );
    let (mut kb, mut db) = (
        kinesis.config().to_builder(),
        dynamodb.config().to_builder(),
    );
    if let Ok(every) = var("KINSUMER_MEMBER_FAULTS") {
        let faults = kinsumer::testing::FaultInjector::new(
            every.parse()?,
            Arc::new(kinsumer::testing::FaultCounts::default()),
        )?;
        kb = kb.interceptor(faults.clone());
        db = db.interceptor(faults);
    }
    if let Ok(file) = var("KINSUMER_MEMBER_OUTAGE_FILE") {
        db = db.interceptor(
            crate::support::outage::Outage::blackhole()?.while_file_exists(file.into()),
        );
    }
    if let Ok(file) = var("KINSUMER_MEMBER_PARTITION_FILE") {
        let file = std::path::PathBuf::from(file);
        kb = kb.interceptor(
            crate::support::outage::Outage::blackhole()?.while_file_exists(file.clone()),
        );
        db = db.interceptor(crate::support::outage::Outage::blackhole()?.while_file_exists(file));
    }
    let (kinesis, dynamodb) = (
        aws_sdk_kinesis::Client::from_conf(kb.build()),
        aws_sdk_dynamodb::Client::from_conf(db.build()),
    );
    let config = if var("KINSUMER_MEMBER_CHAOS").is_ok() {
        chaos_config()
    } else if var("KINSUMER_MEMBER_DEFAULTS").is_ok() {
        kinsumer::Config::default().with_dynamo_waiter_delay(Duration::from_millis(50))
    } else {
        support::fast_config()
    };
    let consumer = Kinsumer::from_clients(
        &kinesis,
        &dynamodb,
        &var("KINSUMER_MEMBER_STREAM")?,
        &var("KINSUMER_MEMBER_APP")?,
        &name,
        config.with_stats(Arc::new(Announcer)),
    )?;
    consumer.run()?;
    // The parent closes stdin to ask for a clean stop.
    let stop = consumer.stop_handle();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stop.stop();
    });
    for record in consumer.records() {
        match record {
            Ok(r) => {
                // Locked per line: the lease announcements share stdout.
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "{RECORD_MARK}{} {} {}",
                    String::from_utf8_lossy(r.data()),
                    r.shard_id(),
                    unix_ns()
                )?;
                out.flush()?;
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(_) => {}
        }
    }
    consumer.stop();
    Ok(())
}

/// What a failing chaos run prints about one record: the stops, and every capture of
/// the record's shard and delivery of the record, in ms from the kill.
fn chaos_timeline(
    events: &[Event],
    record: &str,
    killed_at: u64,
    paused_at: u64,
    resumed_at: u64,
) -> String {
    let ms = |at: u64| (at as i128 - killed_at as i128) as f64 / 1e6;
    let shard = events.iter().find_map(|e| match e {
        Event::Record { data, shard, .. } if data == record => Some(shard.clone()),
        _ => None,
    });
    let mut out = format!(
        "killed member 0 at 0 ms, paused member 1 at {:.0} ms, resumed it at {:.0} ms\n",
        ms(paused_at),
        ms(resumed_at)
    );
    for e in events {
        match e {
            Event::Acquired {
                member,
                shard: s,
                at,
            } if Some(s) == shard.as_ref() => {
                out.push_str(&format!(
                    "{:>10.1} ms member {member} acquired {s}\n",
                    ms(*at)
                ));
            }
            Event::Record {
                member,
                data,
                shard: s,
                at,
            } if data == record => {
                out.push_str(&format!(
                    "{:>10.1} ms member {member} delivered {data} of {s}\n",
                    ms(*at)
                ));
            }
            _ => {}
        }
    }
    out
}

/// Sends `signal` (`-STOP`, `-CONT`) to a child.
fn signal(child: &Child, signal: &str) -> TestResult {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()?;
    if !status.success() {
        return Err(format!("kill {signal} failed: {status}").into());
    }
    Ok(())
}

/// Polls every shard's checkpoint until told to stop; returns the moves backwards seen.
fn watch_checkpoints(
    env: &Env,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<TestResult<(usize, Vec<String>)>> {
    let dynamodb = env.dynamodb.clone();
    let table = format!("{}_checkpoints", env.app);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut last: HashMap<String, String> = HashMap::new();
        let (mut polls, mut backwards) = (0usize, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let out = rt.block_on(
                dynamodb
                    .scan()
                    .table_name(&table)
                    .consistent_read(true)
                    .send(),
            )?;
            polls += 1;
            for item in out.items.unwrap_or_default() {
                use aws_sdk_dynamodb::types::AttributeValue;
                let (Some(AttributeValue::S(shard)), Some(AttributeValue::S(seq))) =
                    (item.get("Shard"), item.get("SequenceNumber"))
                else {
                    continue;
                };
                if let Some(prev) = last.get(shard) {
                    let key = |s: &str| (s.len(), s.to_owned());
                    if key(seq) < key(prev) {
                        backwards.push(format!("{shard}: {prev} -> {seq}"));
                    }
                }
                last.insert(shard.clone(), seq.clone());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok((polls, backwards))
    })
}

/// Three member processes under continuous writes with 10 % of AWS calls failing; a
/// split; one member SIGKILLed and one SIGSTOPped past its lease time (35 s) and resumed;
/// a 20 s DynamoDB outage for every member meanwhile; a merge. Nothing is lost, every
/// partition key's records first arrive in order, the only records delivered twice are
/// ones the killed or paused member delivered before it stopped, no checkpoint ever moves
/// backwards, and the resumed member delivers nothing of the shards it lost.
#[test]
fn chaos_loses_nothing_keeps_order_and_repeats_only_the_dead_and_paused_windows() -> TestResult {
    use std::sync::atomic::{AtomicBool, Ordering};
    support::init_logging();
    if std::env::var_os(MEMBER).is_some() {
        return Ok(());
    }
    let mut env = Env::new(4)?;
    env.consumer("table-maker", chaos_config())?; // creates the tables
    let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let events: Events = Arc::default();
    let outage_file = std::env::temp_dir().join(support::unique_name("chaos-outage"));
    let options = MemberOptions {
        faults_every: Some(10),
        outage_file: Some(outage_file.clone()),
        chaos: true,
        events: Some(events.clone()),
        ..MemberOptions::default()
    };
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = watch_checkpoints(&env, stop_watch.clone());
    let producer = Producer::start(&env);
    let mut members = (0..3)
        .map(|i| spawn_member_with(&env, i, &log, &options))
        .collect::<TestResult<Vec<_>>>()?;
    support::wait_for(Duration::from_secs(90), "three members delivering", || {
        let delivering: HashSet<usize> = log.lock().iter().map(|(i, _)| *i).collect();
        Ok(delivering.len() == 3)
    })?;
    let open = env.open_shards()?;
    env.split(&open[0])?;
    support::let_time_pass(Duration::from_secs(3))?;

    // Member 0 dies; member 1 freezes past its lease time.
    let mut victim = members.remove(0);
    victim.child.kill()?;
    victim.child.wait()?;
    let killed_at = unix_ns();
    signal(&members[0].child, "-STOP")?;
    let paused_at = unix_ns();
    let paused = std::time::Instant::now();
    support::let_time_pass(Duration::from_secs(2))?;
    // Every DynamoDB call of every member times out for 20 s.
    std::fs::write(&outage_file, b"down")?;
    support::let_time_pass(Duration::from_secs(20))?;
    std::fs::remove_file(&outage_file)?;
    // Past the 35 s lease time, then resumed.
    support::let_time_pass(Duration::from_secs(38).saturating_sub(paused.elapsed()))?;
    signal(&members[0].child, "-CONT")?;
    let resumed_at = unix_ns();
    support::let_time_pass(Duration::from_secs(5))?;
    let open = env.open_shards()?;
    env.merge(&open[open.len() - 2], &open[open.len() - 1])?;
    support::let_time_pass(Duration::from_secs(5))?;
    let written = producer.stop()?;
    support::wait_for(Duration::from_secs(120), "every record", || {
        let seen: HashSet<String> = log.lock().iter().map(|(_, d)| d.clone()).collect();
        Ok(seen.len() as u64 >= written)
    })?;
    for m in members {
        m.stop()?;
    }
    if let Some(r) = victim.reader.take() {
        r.join().map_err(|_| "reader panicked")?;
    }
    stop_watch.store(true, Ordering::SeqCst);
    let (polls, backwards) = watcher.join().map_err(|_| "watcher panicked")??;

    let mut events = events.lock().clone();
    events.sort_by_key(|e| match e {
        Event::Record { at, .. } | Event::Acquired { at, .. } => *at,
    });
    // Nothing lost; each key's records first arrive in order.
    let mut first: HashSet<&str> = HashSet::new();
    let mut firsts = Vec::new();
    let mut by_record: HashMap<&str, Vec<(usize, u64)>> = HashMap::new();
    for e in &events {
        if let Event::Record {
            member, data, at, ..
        } = e
        {
            by_record.entry(data).or_default().push((*member, *at));
            if first.insert(data) {
                firsts.push(data.clone());
            }
        }
    }
    let delivered = support::check_per_key_order(&firsts, written)?;
    // Repeats only of records the killed or paused member had delivered before it stopped.
    let repeated: Vec<(&&str, &Vec<(usize, u64)>)> =
        by_record.iter().filter(|(_, d)| d.len() > 1).collect();
    for (record, deliveries) in &repeated {
        if !deliveries
            .iter()
            .any(|(m, at)| (*m == 0 && *at <= killed_at) || (*m == 1 && *at <= paused_at))
        {
            return Err(format!(
                "record {record} repeated, not from a stopped member's window: {deliveries:?}\n{}",
                chaos_timeline(&events, record, killed_at, paused_at, resumed_at)
            )
            .into());
        }
    }
    // The resumed member delivers a shard only after capturing it anew.
    let mut held_since_resume: HashSet<&str> = HashSet::new();
    let commit = Duration::from_millis(200).as_nanos() as u64;
    for e in &events {
        match e {
            Event::Acquired {
                member: 1,
                shard,
                at,
            } if *at >= resumed_at => {
                held_since_resume.insert(shard);
            }
            Event::Record {
                member: 1,
                shard,
                at,
                data,
            } if *at > resumed_at + commit => {
                assert!(
                    held_since_resume.contains(shard.as_str()),
                    "the resumed member delivered record {data} of shard {shard}, which it had lost"
                );
            }
            _ => {}
        }
    }
    assert!(
        backwards.is_empty(),
        "checkpoints moved backwards: {backwards:?}"
    );
    let per_member: Vec<usize> = (0..3)
        .map(|m| {
            events
                .iter()
                .filter(|e| matches!(e, Event::Record { member, .. } if *member == m))
                .count()
        })
        .collect();
    eprintln!(
        "chaos: {written} records written, {delivered} delivered first, {} repeated; \
         deliveries per member {per_member:?}; {polls} checkpoint polls, none backwards",
        repeated.len()
    );
    Ok(())
}

/// One handover, from the parent's view: how long after the event the moved shards
/// delivered again (the slowest of them), and the longest pause in any moved shard's
/// deliveries (its old owner's last record to its new owner's first).
#[derive(Debug, Clone, Copy)]
struct Handover {
    after_event: Duration,
    pause: Duration,
}

/// The events so far, oldest first.
fn sorted_events(events: &Events) -> Vec<Event> {
    let mut all = events.lock().clone();
    all.sort_by_key(|e| match e {
        Event::Record { at, .. } | Event::Acquired { at, .. } => *at,
    });
    all
}

/// The shards `member` held at `at`: those it was the last to acquire.
fn held_by(events: &[Event], member: usize, at: u64) -> HashSet<String> {
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for e in events {
        if let Event::Acquired {
            member: m,
            shard,
            at: t,
        } = e
            && *t < at
        {
            owner.insert(shard, *m);
        }
    }
    owner
        .into_iter()
        .filter(|(_, m)| *m == member)
        .map(|(s, _)| s.to_owned())
        .collect()
}

/// When `shards` first delivered again after `from`, on members `heir` accepts; `None`
/// until every one of them has.
fn handover(
    events: &[Event],
    shards: &HashSet<String>,
    from: u64,
    heir: impl Fn(usize) -> bool,
) -> Option<Handover> {
    let (mut after_event, mut pause) = (Duration::ZERO, Duration::ZERO);
    for shard in shards {
        let first = events.iter().find_map(|e| match e {
            Event::Record {
                member,
                shard: s,
                at,
                ..
            } if s == shard && *at > from && heir(*member) => Some((*member, *at)),
            _ => None,
        })?;
        let last_before = events
            .iter()
            .filter_map(|e| match e {
                Event::Record {
                    member,
                    shard: s,
                    at,
                    ..
                } if s == shard && *at < first.1 && *member != first.0 => Some(*at),
                _ => None,
            })
            .max()
            .unwrap_or(from);
        after_event = after_event.max(Duration::from_nanos(first.1.saturating_sub(from)));
        pause = pause.max(Duration::from_nanos(first.1.saturating_sub(last_before)));
    }
    Some(Handover { after_event, pause })
}

/// Waits until `shards` deliver on a member `heir` accepts after `from`.
fn await_handover(
    events: &Events,
    shards: &HashSet<String>,
    from: u64,
    heir: impl Fn(usize) -> bool + Copy,
    what: &str,
) -> TestResult<Handover> {
    let mut found = None;
    support::wait_for(Duration::from_secs(120), what, || {
        found = handover(&sorted_events(events), shards, from, heir);
        Ok(found.is_some())
    })?;
    found.ok_or_else(|| format!("{what}: no handover").into())
}

/// The member at `index` joins at `from`: waits until it delivers from `share` shards.
fn await_join(events: &Events, index: usize, share: usize, from: u64) -> TestResult<Handover> {
    let mut shards = HashSet::new();
    support::wait_for(
        Duration::from_secs(120),
        "the joining member delivering its share",
        || {
            shards = sorted_events(events)
                .iter()
                .filter_map(|e| match e {
                    Event::Record {
                        member, shard, at, ..
                    } if *member == index && *at > from => Some(shard.clone()),
                    _ => None,
                })
                .collect();
            Ok(shards.len() >= share)
        },
    )?;
    await_handover(events, &shards, from, |m| m == index, "the join")
}

/// `(p50, p99, max)` by nearest rank.
fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.5), rank(0.99), v[v.len() - 1])
}

/// How soon shards flow again after each kind of handover, between member processes at
/// `Config::default()` timings (4 shards, an anchor member and one that comes and goes):
/// a join, a clean leave (stdin closed: `stop()`), a crash (SIGKILL), and a network
/// partition (every AWS call of the member times out). Prints the README's "How fast
/// shards move" table. One round by default; `KINSUMER_HANDOVER_TRIALS=N` runs N (the
/// README's figures). Checks what holds whatever the timings: every moved shard moves,
/// and nothing written is lost.
#[test]
fn handover_times_at_default_timings() -> TestResult {
    support::init_logging();
    if std::env::var_os(MEMBER).is_some() {
        return Ok(());
    }
    let trials: usize = std::env::var("KINSUMER_HANDOVER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut env = Env::new(4)?;
    env.consumer(
        "table-maker",
        kinsumer::Config::default().with_dynamo_waiter_delay(Duration::from_millis(50)),
    )?;
    let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let events: Events = Arc::default();
    let partition = std::env::temp_dir().join(support::unique_name("partition"));
    let options = MemberOptions {
        defaults: true,
        events: Some(events.clone()),
        ..MemberOptions::default()
    };
    let partitionable = MemberOptions {
        partition_file: Some(partition.clone()),
        ..options.clone()
    };
    let producer = Producer::start(&env);
    let anchor = spawn_member_with(&env, 0, &log, &options)?;
    support::wait_for(Duration::from_secs(60), "the anchor delivering", || {
        Ok(held_by(&sorted_events(&events), 0, unix_ns()).len() == 4)
    })?;
    let mut cases: HashMap<&str, Vec<Handover>> = HashMap::new();
    let mut index = 0;
    let anchor_only = |m: usize| m == 0;
    for _ in 0..trials {
        for case in ["leave", "crash", "partition"] {
            index += 1;
            let opts = if case == "partition" {
                &partitionable
            } else {
                &options
            };
            let from = unix_ns();
            let mut member = Some(spawn_member_with(&env, index, &log, opts)?);
            let joined = await_join(&events, index, 2, from)?;
            cases.entry("join").or_default().push(joined);
            let from = unix_ns();
            let moved = held_by(&sorted_events(&events), index, from);
            match (case, member.as_mut()) {
                ("leave", _) => member.take().ok_or("no member")?.stop()?,
                ("crash", Some(m)) => {
                    m.child.kill()?;
                    m.child.wait()?;
                }
                _ => std::fs::write(&partition, b"cut off")?,
            }
            let moved_over = await_handover(&events, &moved, from, anchor_only, case)?;
            cases.entry(case).or_default().push(moved_over);
            if case == "partition" {
                // Healed: it comes back, takes its share again, and leaves cleanly.
                std::fs::remove_file(&partition)?;
                let healed = unix_ns();
                support::wait_for(Duration::from_secs(120), "the healed member back", || {
                    Ok(
                        held_by(&sorted_events(&events), index, unix_ns()).len() == 2
                            && handover(
                                &sorted_events(&events),
                                &held_by(&sorted_events(&events), index, unix_ns()),
                                healed,
                                |m| m == index,
                            )
                            .is_some(),
                    )
                })?;
                let from = unix_ns();
                let moved = held_by(&sorted_events(&events), index, from);
                member.take().ok_or("no member")?.stop()?;
                let moved_over =
                    await_handover(&events, &moved, from, anchor_only, "leave after healing")?;
                cases.entry("leave").or_default().push(moved_over);
            }
        }
    }
    let written = producer.stop()?;
    support::wait_for(Duration::from_secs(120), "every record", || {
        let seen: HashSet<String> = log.lock().iter().map(|(_, d)| d.clone()).collect();
        Ok(seen.len() as u64 >= written)
    })?;
    anchor.stop()?;
    let _ = std::fs::remove_file(&partition);

    println!("handovers at Config::default(), {trials} round(s), {written} records, none lost:");
    println!("| event | n | after the event p50 / p99 / max | longest pause p50 / p99 / max |");
    println!("|---|---|---|---|");
    for case in ["join", "leave", "crash", "partition"] {
        let Some(samples) = cases.get(case) else {
            continue;
        };
        let (a50, a99, amax) = percentiles(samples.iter().map(|h| h.after_event).collect());
        let (p50, p99, pmax) = percentiles(samples.iter().map(|h| h.pause).collect());
        println!(
            "| {case} | {} | {:.1} / {:.1} / {:.1} s | {:.1} / {:.1} / {:.1} s |",
            samples.len(),
            a50.as_secs_f64(),
            a99.as_secs_f64(),
            amax.as_secs_f64(),
            p50.as_secs_f64(),
            p99.as_secs_f64(),
            pmax.as_secs_f64()
        );
    }
    Ok(())
}
