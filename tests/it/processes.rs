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
    spawn_member_with_clock(env, index, log, 0)
}

/// A member whose clock is `offset_ms` off (the test kit's clock hook).
fn spawn_member_with_clock(
    env: &Env,
    index: usize,
    log: &Arc<parking_lot::Mutex<Vec<(usize, String)>>>,
    offset_ms: i64,
) -> TestResult<Process> {
    let mut child = Command::new(std::env::current_exe()?)
        .env("KINSUMER_TESTING_CLOCK_OFFSET_MS", offset_ms.to_string())
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
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print "test … ... " before the first record on the same line.
            if let Some((_, data)) = line.split_once(RECORD_MARK) {
                log.lock().push((index, data.to_owned()));
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
        let mut skewed = spawn_member_with_clock(&env, 0, &log, offset_ms)?;
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
    let consumer = Kinsumer::from_clients(
        &kinesis,
        &dynamodb,
        &var("KINSUMER_MEMBER_STREAM")?,
        &var("KINSUMER_MEMBER_APP")?,
        &name,
        support::fast_config(),
    )?;
    consumer.run()?;
    // The parent closes stdin to ask for a clean stop.
    let stop = consumer.stop_handle();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stop.stop();
    });
    let mut out = std::io::stdout().lock();
    for record in consumer.records() {
        match record {
            Ok(r) => {
                writeln!(out, "{RECORD_MARK}{}", String::from_utf8_lossy(r.data()))?;
                out.flush()?;
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(_) => {}
        }
    }
    consumer.stop();
    Ok(())
}
