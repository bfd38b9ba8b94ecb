//! DynamoDB outages: reading goes on while checkpoint writes stall, and a client that
//! cannot renew its leases stops delivering their shards before anyone else may take them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinsumer::{Kinsumer, Polled};
use parking_lot::Mutex;

use crate::support::outage::Outage;
use crate::support::{self, Env, Producer, Recorder, TestResult};

/// A consumer whose DynamoDB calls go through `outage`.
fn consumer_with_outage(
    env: &mut Env,
    name: &str,
    config: kinsumer::Config,
    outage: &Outage,
) -> TestResult<Kinsumer> {
    let dynamodb = outage.dynamodb(&env.dynamodb);
    let kinesis = env.kinesis.clone();
    env.consumer_with(&kinesis, &dynamodb, name, config)
}

/// Reading does not wait on DynamoDB: while checkpoint writes hang (a blackhole), records
/// keep coming. Shown by the order of events, not by timing: records are delivered
/// after a write was reported stuck and while it still is.
#[test]
fn reading_goes_on_while_dynamodb_stalls() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    // Lease time 10 s: a stall is well inside it.
    let stats = Arc::new(Recorder::default());
    let config = support::fast_config()
        .with_shard_check_frequency(Duration::from_secs(2))
        .with_leader_action_frequency(Duration::from_secs(2))
        .with_stats(stats.clone());
    let outage = Outage::blackhole()?;
    let consumer = consumer_with_outage(&mut env, "stalled", config, &outage)?;
    consumer.run()?;
    let producer = Producer::start(&env);
    let mut log = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 100)?;

    outage.arm(true);
    let lagging_before = Recorder::get(&stats.lagging);
    let mut after_stuck = 0;
    let mut records = consumer.records();
    let deadline = Instant::now() + Duration::from_secs(30);
    while after_stuck < 20 {
        if Instant::now() >= deadline {
            return Err(format!("{after_stuck} records delivered after a write got stuck").into());
        }
        match records.next_timeout(Duration::from_millis(100)) {
            Polled::Record(r) => {
                if Recorder::get(&stats.lagging) > lagging_before {
                    after_stuck += 1;
                }
                log.push(String::from_utf8_lossy(r.data()).into_owned());
            }
            Polled::TimedOut => {}
            other => return Err(format!("during the stall: {other:?}").into()),
        }
    }
    // Still stalled: no lease was given up, nothing committed meanwhile.
    assert_eq!(Recorder::get(&stats.lost), 0);
    drop(records);
    outage.arm(false);
    let written = producer.stop_and_catch_up(&consumer, &mut log)?;
    consumer.close()?;
    support::check_per_key_order(&log, written)?;
    Ok(())
}

/// (client, shard, data, when) for every delivery.
type Log = Arc<Mutex<Vec<(usize, String, String, Instant)>>>;

fn read_into(index: usize, consumer: Kinsumer, log: Log) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for item in consumer.records() {
            match item {
                Ok(r) => log.lock().push((
                    index,
                    r.shard_id().to_owned(),
                    String::from_utf8_lossy(r.data()).into_owned(),
                    Instant::now(),
                )),
                Err(_) => break,
            }
        }
        consumer.stop();
    })
}

/// Two clients over two shards under continuous writes, one lease each, delivering into
/// `log`: A (index 0), whose DynamoDB calls go through an outage, and B (index 1).
struct TwoClients {
    log: Log,
    /// A's shard.
    a_shard: String,
    producer: Producer,
    stops: [kinsumer::StopHandle; 2],
    readers: [std::thread::JoinHandle<()>; 2],
}

impl TwoClients {
    /// Returns once A delivers its shard.
    fn start(env: &mut Env, a_name: &str, outage: &Outage) -> TestResult<TwoClients> {
        let log: Log = Arc::default();
        let a = consumer_with_outage(env, a_name, support::fast_config(), outage)?;
        let a_id = a.client_id().to_owned();
        let a_stop = a.stop_handle();
        a.run()?;
        let reader_a = read_into(0, a, log.clone());
        let b = env.consumer("healthy", support::fast_config())?;
        let b_id = b.client_id().to_owned();
        let b_stop = b.stop_handle();
        b.run()?;
        let reader_b = read_into(1, b, log.clone());
        support::wait_for(Duration::from_secs(30), "one lease each", || {
            let owners = env.owners()?;
            Ok(owners.values().filter(|o| **o == a_id).count() == 1
                && owners.values().filter(|o| **o == b_id).count() == 1)
        })?;
        let a_shard = env
            .owners()?
            .into_iter()
            .find(|(_, o)| *o == a_id)
            .map(|(s, _)| s)
            .ok_or("no shard for A")?;
        let producer = Producer::start(env);
        support::wait_for(Duration::from_secs(30), "A delivering its shard", || {
            Ok(log
                .lock()
                .iter()
                .any(|(c, s, _, _)| *c == 0 && *s == a_shard))
        })?;
        Ok(TwoClients {
            log,
            a_shard,
            producer,
            stops: [a_stop, b_stop],
            readers: [reader_a, reader_b],
        })
    }

    /// Stops writing, waits until every record written was delivered, stops both
    /// clients; returns how many records were written.
    fn finish(self) -> TestResult<u64> {
        let written = self.producer.stop()?;
        support::wait_for(Duration::from_secs(60), "every record", || {
            let log = self.log.lock();
            let distinct: std::collections::HashSet<&String> = log.iter().map(|e| &e.2).collect();
            Ok(distinct.len() as u64 >= written)
        })?;
        for stop in &self.stops {
            stop.stop();
        }
        for reader in self.readers {
            let _ = reader.join();
        }
        Ok(written)
    }
}

#[test]
fn a_client_cut_off_from_dynamodb_stops_delivering_before_its_shards_move() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let outage = Outage::refused();
    let pair = TwoClients::start(&mut env, "cut-off", &outage)?;
    let (log, a_shard) = (pair.log.clone(), pair.a_shard.clone());

    // A loses DynamoDB: it can neither renew its lease nor learn that it moved.
    outage.arm(true);
    let cut = Instant::now();
    // Let B read A's shard for a while: a client that never learns it was cut off
    // would keep delivering it meanwhile.
    support::wait_for(Duration::from_secs(60), "B delivering A's shard", || {
        Ok(log
            .lock()
            .iter()
            .filter(|(c, s, _, t)| *c == 1 && *s == a_shard && *t > cut)
            .count()
            >= 300)
    })?;
    let written = pair.finish()?;

    let log = log.lock();
    let a_last = log
        .iter()
        .filter(|(c, s, _, _)| *c == 0 && *s == a_shard)
        .map(|e| e.3)
        .max()
        .ok_or("A never delivered its shard")?;
    let b_first = log
        .iter()
        .filter(|(c, s, _, t)| *c == 1 && *s == a_shard && *t > cut)
        .map(|e| e.3)
        .min()
        .ok_or("B never delivered A's shard")?;
    println!(
        "A delivered its shard until {:?} after the cut; B from {:?} after it",
        a_last.saturating_duration_since(cut),
        b_first.saturating_duration_since(cut)
    );
    assert!(
        a_last < b_first,
        "both clients delivered shard {a_shard}: A until {:?}, B from {:?} after the cut",
        a_last.saturating_duration_since(cut),
        b_first.saturating_duration_since(cut)
    );
    // Nothing lost; repeats only of A's records not yet committed when it was cut off.
    let mut per_record: HashMap<&String, usize> = HashMap::new();
    for (_, _, d, _) in log.iter() {
        *per_record.entry(d).or_default() += 1;
    }
    assert_eq!(per_record.len() as u64, written);
    let repeated: Vec<&&String> = per_record
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(d, _)| d)
        .collect();
    for d in &repeated {
        assert!(
            log.iter().any(|(c, s, x, t)| *c == 0
                && *s == a_shard
                && x == **d
                && *t > cut - Duration::from_secs(2)),
            "record {d} repeated, but not one A held when it was cut off"
        );
    }
    println!("{} records, {} read twice", written, repeated.len());
    Ok(())
}

/// A client whose lease writes go through but whose row writes do not (a throttled or
/// half-partitioned table) is counted gone by the others after the failover time, and
/// they take its leases at once. It must have stopped delivering, and handed its
/// leases back, before: no record is delivered twice, then or when it comes back.
#[test]
fn a_client_that_cannot_write_its_row_hands_its_shards_over_and_repeats_nothing() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let outage = Outage::refused().only("PutItem");
    let pair = TwoClients::start(&mut env, "rowless", &outage)?;
    let (log, a_shard) = (pair.log.clone(), pair.a_shard.clone());

    // A's row can no longer be written; its lease writes still go through.
    outage.arm(true);
    let cut = Instant::now();
    support::wait_for(Duration::from_secs(60), "B delivering A's shard", || {
        Ok(log
            .lock()
            .iter()
            .filter(|(c, s, _, t)| *c == 1 && *s == a_shard && *t > cut)
            .count()
            >= 100)
    })?;
    let b_took = log
        .lock()
        .iter()
        .filter(|(c, s, _, t)| *c == 1 && *s == a_shard && *t > cut)
        .map(|e| e.3)
        .min()
        .ok_or("B never delivered A's shard")?;
    let a_last = log
        .lock()
        .iter()
        .filter(|(c, _, _, t)| *c == 0 && *t < b_took)
        .map(|e| e.3)
        .max()
        .ok_or("A never delivered")?;
    // A's row is written again: it takes its share back by a clean handover.
    outage.arm(false);
    let back = Instant::now();
    support::wait_for(Duration::from_secs(60), "A delivering again", || {
        Ok(log.lock().iter().any(|(c, _, _, t)| *c == 0 && *t > back))
    })?;
    let written = pair.finish()?;

    let log = log.lock();
    println!(
        "A delivered until {:?} after its row writes failed; B took its shard {:?} after",
        a_last.saturating_duration_since(cut),
        b_took.saturating_duration_since(cut)
    );
    assert!(a_last < b_took);
    let mut per_record: HashMap<&String, Vec<usize>> = HashMap::new();
    for (c, _, d, _) in log.iter() {
        per_record.entry(d).or_default().push(*c);
    }
    assert_eq!(per_record.len() as u64, written);
    let repeated: Vec<(&&String, &Vec<usize>)> =
        per_record.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(
        repeated.is_empty(),
        "{} records delivered twice (by clients): {:?}",
        repeated.len(),
        repeated.iter().take(5).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn a_kinesis_stall_does_not_stop_lease_renewals() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let outage = Outage::blackhole()?;
    let kinesis = outage.kinesis(&env.kinesis);
    let stats = Arc::new(support::Recorder::default());
    let dynamodb = env.dynamodb.clone();
    // Lease time 5 s, given up locally after 4 s without a renewal.
    let consumer = env.consumer_with(
        &kinesis,
        &dynamodb,
        "patient",
        support::fast_config().with_stats(stats.clone()),
    )?;
    consumer.run()?;
    env.put_numbered(0, 10, 3)?;
    let mut log = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 10)?;
    // Every Kinesis call hangs for 7 s: longer than the lease may go unrenewed.
    outage.arm(true);
    support::let_time_pass(Duration::from_secs(7))?;
    outage.arm(false);
    env.put_numbered(10, 20, 3)?;
    log.extend(support::collect_until(
        &consumer,
        Duration::from_secs(60),
        |s| s.len() >= 10,
    )?);
    consumer.close()?;
    support::check_per_key_order(&log, 20)?;
    assert_eq!(
        support::Recorder::get(&stats.lost),
        0,
        "the lease was given up while Kinesis stalled"
    );
    Ok(())
}

/// A DynamoDB outage longer than the failover time: the client stops delivering (another
/// client may take its shards), cannot hand its leases back, and when DynamoDB answers
/// again captures them again — rows unchanged since it last wrote them. It goes on from
/// what it had processed, not from the last checkpoint that landed: nothing delivered
/// twice.
#[test]
fn a_client_that_comes_back_after_an_outage_repeats_nothing() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let outage = Outage::refused();
    let consumer = consumer_with_outage(&mut env, "returning", support::fast_config(), &outage)?;
    consumer.run()?;
    let producer = Producer::start(&env);
    let mut log = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 100)?;
    outage.arm(true);
    // Longer than the failover time (5 s here): delivery stops at 4/5 of it.
    let until = Instant::now() + Duration::from_secs(8);
    let mut fewest_owned = usize::MAX;
    log.extend(support::collect_until(
        &consumer,
        Duration::from_secs(20),
        |_| {
            fewest_owned = fewest_owned.min(consumer.health().owned_shards());
            Instant::now() >= until
        },
    )?);
    outage.arm(false);
    // The health query said so while the shards were not read.
    assert_eq!(fewest_owned, 0, "health() counted shards nobody read");
    let written = producer.stop_and_catch_up(&consumer, &mut log)?;
    consumer.close()?;
    support::check_per_key_order(&log, written)?;
    Ok(())
}

/// `close()` during a DynamoDB blackhole returns within its bound and names every lease
/// it could not release (they expire on their own), rather than only saying that the
/// coordinator did not stop in time.
#[test]
fn close_during_a_dynamodb_blackhole_names_the_leases_it_left_behind() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let outage = Outage::blackhole()?;
    let consumer = consumer_with_outage(&mut env, "blackholed", support::fast_config(), &outage)?;
    consumer.run()?;
    env.put_numbered(0, 20, 5)?;
    support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 20)?;
    let shards = env.shard_ids()?;
    support::wait_for(Duration::from_secs(30), "both leases taken", || {
        Ok(env.owners()?.len() == 2)
    })?;
    outage.arm(true);
    let started = Instant::now();
    let closed = consumer.close();
    let took = started.elapsed();
    eprintln!("close() during a DynamoDB blackhole took {took:?}: {closed:?}");
    let err = closed
        .err()
        .ok_or("close() hid the leases it left behind")?;
    assert_eq!(err.kind(), kinsumer::ErrorKind::StopIncomplete, "{err}");
    let text = err.to_string();
    for shard in &shards {
        assert!(text.contains(shard.as_str()), "{shard} not named: {text}");
    }
    assert!(
        !text.contains("coordinator did not stop"),
        "the stop ran out of time: {text}"
    );
    outage.arm(false);
    Ok(())
}
