//! A record that fails: `retry_later` redelivers it from its shard after a growing delay
//! while the other shards go on; after `max_attempts` it goes to the dead-letter handler;
//! per-key order holds and nothing else is repeated or lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinsumer::{Batch, CheckpointMode, Config, DeadLetter, DeadLetterError, Letter, Polled};
use parking_lot::Mutex;

use crate::support::{self, Env, Producer, TestResult};

/// Records what the dead-letter handler took; fails its first `refusals` calls.
#[derive(Debug, Default)]
struct Letters {
    taken: Mutex<Vec<(String, u32, String)>>,
    refusals: Mutex<u32>,
}

impl DeadLetter for Letters {
    fn dead_letter(&self, letter: &Letter<'_>) -> Result<(), DeadLetterError> {
        let mut refusals = self.refusals.lock();
        if *refusals > 0 {
            *refusals -= 1;
            return Err("the dead-letter store is down".into());
        }
        self.taken.lock().push((
            String::from_utf8_lossy(letter.record().data()).into_owned(),
            letter.attempts(),
            letter.error().to_owned(),
        ));
        Ok(())
    }
}

/// `Stats` that keep the retries' delays.
#[derive(Debug, Default)]
struct Retries {
    delays: Mutex<Vec<(u32, Duration)>>,
    dead: Mutex<Vec<(String, u32)>>,
}

impl kinsumer::Stats for Retries {
    fn record_retried(&self, _shard: &str, _seq: &str, attempt: u32, delay: Duration) {
        self.delays.lock().push((attempt, delay));
    }

    fn record_dead_lettered(&self, _shard: &str, seq: &str, attempts: u32) {
        self.dead.lock().push((seq.to_owned(), attempts));
    }
}

/// Every record `0..written` but `poison` exactly once, each key's in order.
fn check_all_but(log: &[String], written: u64, poison: u64) -> TestResult {
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for d in log {
        let n: u64 = d.parse()?;
        assert!(seen.insert(n), "record {n} delivered twice");
        if let Some(prev) = last.insert(n % 37, n) {
            assert!(prev < n, "key-{}: {n} after {prev}", n % 37);
        }
    }
    let missing: Vec<u64> = (0..written)
        .filter(|n| *n != poison && !seen.contains(n))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    Ok(())
}

/// Pulls records until `log` holds `n`, giving each to `fail` with its data: a record it
/// names a reason for is asked again (`retry_later`), any other is logged and marked.
/// Fails after a minute.
fn consume_failing(
    records: &mut kinsumer::Records<'_>,
    n: usize,
    log: &mut Vec<String>,
    mut fail: impl FnMut(&kinsumer::Record, &str) -> Option<&'static str>,
) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.len() < n {
        if Instant::now() >= deadline {
            return Err(format!("{} of {n} records: {log:?}", log.len()).into());
        }
        if let Polled::Record(r) = records.next_timeout(Duration::from_millis(200)) {
            let data = String::from_utf8_lossy(r.data()).into_owned();
            match fail(&r, &data) {
                Some(why) => r.retry_later(why),
                None => {
                    r.mark_processed();
                    log.push(data);
                }
            }
        }
    }
    Ok(())
}

/// Pulls and logs records until the one whose data is `failing`, which is asked again.
fn consume_until_failing(
    records: &mut kinsumer::Records<'_>,
    failing: &str,
    log: &mut Vec<String>,
) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() >= deadline {
            return Err(format!("no record {failing}: {log:?}").into());
        }
        if let Polled::Record(r) = records.next_timeout(Duration::from_millis(200)) {
            let data = String::from_utf8_lossy(r.data()).into_owned();
            if data == failing {
                r.retry_later("not now");
                return Ok(());
            }
            log.push(data);
        }
    }
}

fn config() -> Config {
    support::fast_config()
}

#[test]
fn a_poison_record_is_retried_with_growing_delays_then_dead_lettered() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    const POISON: u64 = 137;
    let letters = Arc::new(Letters::default());
    *letters.refusals.lock() = 1;
    let stats = Arc::new(Retries::default());
    let consumer = env.consumer(
        "patient",
        config()
            .with_max_attempts(3)
            .with_dead_letter(letters.clone())
            .with_stats(stats.clone()),
    )?;
    consumer.run()?;
    let producer = Producer::start(&env);
    let mut log = Vec::new();
    let mut poison_seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut records = consumer.records();
    // Until the poison record is set aside and plenty came after it.
    while letters.taken.lock().is_empty() || log.len() < 400 {
        assert!(
            Instant::now() < deadline,
            "{} records, {poison_seen:?}",
            log.len()
        );
        match records.next_timeout(Duration::from_millis(200)) {
            Polled::Record(r) => {
                let data = String::from_utf8_lossy(r.data()).into_owned();
                if data == POISON.to_string() {
                    poison_seen.push((r.attempt(), Instant::now()));
                    r.retry_later(format!("cannot parse {data}"));
                } else {
                    log.push(data);
                }
            }
            Polled::TimedOut => {}
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    drop(records);
    // The rest: every record written but the one set aside.
    let written = producer.stop()?;
    let have = log.len() as u64;
    log.extend(support::collect_until(
        &consumer,
        Duration::from_secs(60),
        |s| have + s.len() as u64 >= written - 1,
    )?);
    let health = consumer.health();
    consumer.close()?;
    // Delivered three times (attempts 1, 2, 3), the gaps at least the growing delays.
    let attempts: Vec<u32> = poison_seen.iter().map(|(a, _)| *a).collect();
    assert_eq!(attempts, [1, 2, 3]);
    let delays = stats.delays.lock().clone();
    assert_eq!(delays.len(), 2, "{delays:?}");
    assert_eq!(delays[0].0, 2);
    assert_eq!(delays[1].1, delays[0].1 * 2, "{delays:?}");
    for (w, d) in poison_seen.windows(2).zip(&delays) {
        assert!(
            w[1].1 - w[0].1 >= d.1,
            "delivered again after {:?}",
            w[1].1 - w[0].1
        );
    }
    // Then set aside, once, after the handler's own failure.
    let taken = letters.taken.lock().clone();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].0, POISON.to_string());
    assert_eq!(taken[0].1, 3);
    assert!(taken[0].2.contains("cannot parse"), "{taken:?}");
    assert_eq!(stats.dead.lock().len(), 1);
    assert_eq!(health.retried_records(), 2, "{health:?}");
    assert_eq!(health.dead_lettered_records(), 1, "{health:?}");
    // Everything else once, in per-key order; the other shards never waited.
    check_all_but(&log, written, POISON)?;
    Ok(())
}

#[test]
fn a_record_that_fails_twice_then_succeeds_is_checkpointed_past_in_manual_mode() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 50, 5)?;
    let shard = env.shard_ids()?.remove(0);
    let last_seq = env.sequence_numbers(&shard)?.pop().ok_or("no records")?;
    let consumer = env.consumer(
        "manual",
        config().with_checkpoint_mode(CheckpointMode::Manual),
    )?;
    consumer.run()?;
    let mut log = Vec::new();
    let mut attempts = Vec::new();
    let mut records = consumer.records();
    consume_failing(&mut records, 50, &mut log, |r, data| {
        if data != "20" {
            return None;
        }
        attempts.push(r.attempt());
        (attempts.len() < 3).then_some("busy")
    })?;
    assert_eq!(attempts, [1, 2, 3]);
    // Records before the failed one stay processed: each record once.
    support::check_per_key_order(&log, 50)?;
    support::wait_for(Duration::from_secs(30), "the checkpoint past it", || {
        Ok(env.checkpoint(&shard)?.as_deref() == Some(last_seq.as_str()))
    })?;
    drop(records);
    consumer.close()?;
    Ok(())
}

#[test]
fn process_retries_a_batch_its_handler_asked_again_and_keeps_order() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    const N: u64 = 800;
    env.put_numbered(0, N, 37)?;
    let consumer = Arc::new(env.consumer("workers", config().with_max_batch_records(20))?);
    consumer.run()?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let asked = Arc::new(Mutex::new(0u32));
    let t = {
        let (consumer, log, asked) = (Arc::clone(&consumer), Arc::clone(&log), Arc::clone(&asked));
        std::thread::spawn(move || {
            consumer.process(3, |batch: Batch| -> Result<(), std::convert::Infallible> {
                let poisoned = batch.iter().any(|r| r.data() == b"300");
                if poisoned {
                    let mut asked = asked.lock();
                    if *asked < 2 {
                        *asked += 1;
                        batch.retry_later("downstream refused");
                        return Ok(());
                    }
                }
                let mut log = log.lock();
                log.extend(
                    batch
                        .iter()
                        .map(|r| String::from_utf8_lossy(r.data()).into_owned()),
                );
                Ok(())
            })
        })
    };
    support::wait_for(Duration::from_secs(90), "every record", || {
        Ok(log.lock().len() as u64 >= N)
    })?;
    consumer.stop_handle().stop();
    match t.join() {
        Ok(result) => result?,
        Err(_) => return Err("process panicked".into()),
    }
    assert_eq!(consumer.health().retried_records(), 2);
    consumer.stop();
    support::check_per_key_order(&log.lock(), N)?;
    Ok(())
}

#[test]
fn a_stop_during_the_delay_loses_nothing_and_the_next_owner_delivers_it() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 30, 5)?;
    // A long first delay: the stop comes while the shard waits.
    let slow = || config().with_throttle_delay(Duration::from_secs(3));
    let first = env.consumer("first", slow())?;
    first.run()?;
    let mut log = Vec::new();
    let mut records = first.records();
    consume_until_failing(&mut records, "10", &mut log)?;
    // The shard waits: nothing more of it comes.
    assert!(
        records
            .next_timeout(Duration::from_millis(500))
            .is_timed_out()
    );
    drop(records);
    first.close()?;
    let second = env.consumer("second", config())?;
    second.run()?;
    let rest = support::collect_until(&second, Duration::from_secs(60), |s| s.len() >= 20)?;
    second.close()?;
    assert_eq!(rest.first().map(String::as_str), Some("10"));
    log.extend(rest);
    support::check_per_key_order(&log, 30)?;
    Ok(())
}

#[test]
fn a_failed_record_inside_an_aggregate_resumes_at_its_sub_record() -> TestResult {
    use crate::support::kpl;
    support::init_logging();
    let mut env = Env::new(1)?;
    let users: Vec<kpl::UserRecord> = (0..50)
        .map(|i| (format!("key-{i}"), None, format!("u-{i}").into_bytes()))
        .collect();
    env.put_raw([
        ("k".to_owned(), b"before".to_vec()),
        ("k".to_owned(), kpl::aggregate(&users)),
        ("k".to_owned(), b"after".to_vec()),
    ])?;
    let consumer = env.consumer("unpacker", config())?;
    consumer.run()?;
    let mut log = Vec::new();
    let mut attempts = Vec::new();
    let mut records = consumer.records();
    consume_failing(&mut records, 52, &mut log, |r, data| {
        if data != "u-20" {
            return None;
        }
        attempts.push(r.attempt());
        (attempts.len() < 3).then_some("not yet")
    })?;
    drop(records);
    consumer.close()?;
    // Read again from its sub-record: the ones before it are not delivered again.
    let mut want = vec!["before".to_owned()];
    want.extend((0..50).map(|i| format!("u-{i}")));
    want.push("after".to_owned());
    assert_eq!(log, want);
    assert_eq!(attempts, [1, 2, 3]);
    Ok(())
}

#[test]
fn an_auto_mode_batch_asked_again_comes_again_whole() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 100, 5)?;
    let consumer = env.consumer("batcher", config().with_max_batch_records(10))?;
    consumer.run()?;
    let mut log: Vec<String> = Vec::new();
    let mut failed_once = None;
    let mut batches = consumer.batches();
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.len() < 100 {
        assert!(Instant::now() < deadline, "{log:?}");
        let kinsumer::PolledBatch::Batch(b) = batches.next_timeout(Duration::from_millis(200))
        else {
            continue;
        };
        let data: Vec<String> = b
            .iter()
            .map(|r| String::from_utf8_lossy(r.data()).into_owned())
            .collect();
        if failed_once.is_none() && data.iter().any(|d| d == "42") {
            failed_once = Some(data);
            b.retry_later("try again");
            continue;
        }
        if let Some(first) = &failed_once
            && data.first() == first.first()
        {
            assert_eq!(b.records()[0].attempt(), 2, "{b:?}");
        }
        log.extend(data);
    }
    drop(batches);
    consumer.close()?;
    assert!(failed_once.is_some());
    support::check_per_key_order(&log, 100)?;
    Ok(())
}

#[test]
fn a_closed_shards_children_wait_for_its_record_in_retry() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let parent = env.open_shards()?.remove(0);
    env.put_numbered(0, 40, 37)?;
    env.split(&parent)?;
    support::wait_for(Duration::from_secs(30), "the split", || {
        Ok(env.open_shards()?.len() == 2)
    })?;
    env.put_numbered(40, 80, 37)?;
    let consumer = env.consumer("splitter", config())?;
    consumer.run()?;
    let mut log = Vec::new();
    let mut failures = 0;
    let mut records = consumer.records();
    consume_failing(&mut records, 80, &mut log, |_, data| {
        let fail = data == "39" && failures < 2;
        failures += u32::from(fail);
        fail.then_some("later")
    })?;
    drop(records);
    consumer.close()?;
    support::check_per_key_order(&log, 80)?;
    // The parent's last record came (processed) before any of its children's.
    let at = |n: &str| log.iter().position(|d| d == n);
    let first_child = log
        .iter()
        .position(|d| d.parse::<u64>().is_ok_and(|n| n >= 40));
    assert!(at("39") < first_child, "{log:?}");
    Ok(())
}

#[test]
fn a_crash_during_the_delay_loses_nothing() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 30, 5)?;
    let shard = env.shard_ids()?.remove(0);
    let nine = env.sequence_numbers(&shard)?.remove(9);
    let first = env.consumer(
        "doomed",
        config().with_throttle_delay(Duration::from_secs(5)),
    )?;
    first.run()?;
    let mut log = Vec::new();
    {
        let mut records = first.records();
        consume_until_failing(&mut records, "10", &mut log)?;
        // Records 0–9 processed and committed; 10 waits out its delay.
        support::wait_for(Duration::from_secs(30), "the commit before it", || {
            Ok(env.checkpoint(&shard)?.as_deref() == Some(nine.as_str()))
        })?;
    }
    first.crash_for_tests();
    let second = env.consumer("heir", config())?;
    second.run()?;
    let rest = support::collect_until(&second, Duration::from_secs(60), |s| s.len() >= 20)?;
    second.close()?;
    assert_eq!(rest.first().map(String::as_str), Some("10"));
    log.extend(rest);
    support::check_per_key_order(&log, 30)?;
    drop(first);
    Ok(())
}

#[test]
fn the_dead_letter_stream_gets_the_record_with_its_metadata() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let dlq = format!("{}-dead", env.stream);
    env.emulators.create_stream(&dlq, 1)?;
    env.put_numbered(0, 10, 5)?;
    let consumer = env.consumer(
        "dlq",
        config()
            .with_max_attempts(1)
            .with_dead_letter(Arc::new(kinsumer::DeadLetterStream::new(dlq.clone()))),
    )?;
    consumer.run()?;
    let mut log = Vec::new();
    let mut records = consumer.records();
    consume_failing(&mut records, 9, &mut log, |_, data| {
        (data == "4").then_some("bad \"json\"\nline")
    })?;
    drop(records);
    support::wait_for(Duration::from_secs(30), "the dead letter counted", || {
        Ok(consumer.health().dead_lettered_records() == 1)
    })?;
    consumer.close()?;
    let dlq_shard = env
        .block_on(env.kinesis.list_shards().stream_name(&dlq).send())?
        .shards()
        .first()
        .map(|s| s.shard_id().to_owned())
        .ok_or("no shard")?;
    let iterator = env
        .block_on(
            env.kinesis
                .get_shard_iterator()
                .stream_name(&dlq)
                .shard_id(dlq_shard)
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                .send(),
        )?
        .shard_iterator
        .ok_or("no iterator")?;
    let out = env.block_on(env.kinesis.get_records().shard_iterator(iterator).send())?;
    let letters: Vec<String> = out
        .records()
        .iter()
        .map(|r| String::from_utf8_lossy(r.data().as_ref()).into_owned())
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(out.records()[0].partition_key(), "key-4");
    for part in [
        "\"shard_id\":\"shardId-000000000000\"",
        "\"sub_sequence_number\":null",
        "\"partition_key\":\"key-4\"",
        "\"attempts\":1",
        "\"error\":\"bad \\\"json\\\"\\nline\"",
        // "4" in base64.
        "\"data\":\"NA==\"",
    ] {
        assert!(letter.contains(part), "{part} not in {letter}");
    }
    support::check_per_key_order(&[log, vec!["4".to_owned()]].concat(), 10)?;
    Ok(())
}

/// `examples/dead_letter.rs` runs to its end against this env's servers: two records
/// set aside in the dead-letter stream, the other 998 summed.
#[test]
fn the_dead_letter_example_sets_two_records_aside() -> TestResult {
    let env = Env::new(1)?;
    let out = crate::ctl::example(&env, "dead_letter")?.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("parsed 998 records (sum 498500)"),
        "{stdout}"
    );
    assert!(stdout.contains("2 set aside"), "{stdout}");
    assert_eq!(stdout.matches("dead letter: {").count(), 2, "{stdout}");
    Ok(())
}
