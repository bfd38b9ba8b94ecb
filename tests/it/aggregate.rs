//! KPL aggregated records: unpacked into user records, checkpointed inside an aggregate,
//! resumed without duplicates, compatible with Go-written rows.

use kinsumer::Polled;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use kinsumer::{CheckpointMode, Kinsumer, Record};

use crate::support::kpl::{self, UserRecord};
use crate::support::{self, Env, Recorder, TestResult};

/// Pulls `n` records (failing on an error item or after a minute), keeping them whole.
fn take(consumer: &Kinsumer, n: usize) -> TestResult<Vec<Record>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    let mut records = consumer.records();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timed out with {} of {n} records", out.len()).into());
        }
        match records.next_timeout(left.min(Duration::from_millis(500))) {
            Polled::Record(r) => out.push(r),
            Polled::TimedOut => {}
            Polled::Failed(e) => return Err(format!("error item: {e}").into()),
            Polled::Ended => return Err("iteration ended".into()),
        }
    }
    Ok(out)
}

fn text(r: &Record) -> String {
    String::from_utf8_lossy(r.data()).into_owned()
}

fn users(prefix: &str, n: usize) -> Vec<UserRecord> {
    (0..n)
        .map(|i| {
            let ehk = i.is_multiple_of(5).then(|| (i * 1_000_003).to_string());
            (
                format!("key-{}", i % 7),
                ehk,
                format!("{prefix}-{i}").into_bytes(),
            )
        })
        .collect()
}

fn attr_s(row: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    match row.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

#[test]
fn drain_unpacks_aggregates_and_leaves_other_records_alone() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    const AGGS: usize = 20;
    const PER: usize = 25;
    let mut puts: Vec<(String, Vec<u8>)> = Vec::new();
    for a in 0..AGGS {
        puts.push((format!("plain-{a}"), format!("plain-{a}").into_bytes()));
        puts.push((
            format!("agg-{a}"),
            kpl::aggregate(&users(&format!("a{a}"), PER)),
        ));
    }
    // Starts like an aggregate, but is not one: delivered as it is.
    let mut corrupt = vec![0xF3, 0x89, 0x9A, 0xC2];
    corrupt.extend_from_slice(b"not a protobuf body at all......");
    puts.push(("corrupt".into(), corrupt.clone()));
    env.put_raw(puts)?;

    let stats = Arc::new(Recorder::default());
    let consumer = env.consumer("c", support::fast_config().with_stats(stats.clone()))?;
    consumer.run()?;
    let got = take(&consumer, AGGS * PER + AGGS + 1)?;
    consumer.stop();

    let mut subs: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    let mut plain = 0;
    for r in &got {
        let data = text(r);
        if let Some(rest) = data.strip_prefix("plain-") {
            assert_eq!(r.partition_key(), data, "{rest}");
            assert_eq!(r.sub_sequence_number(), None);
            assert_eq!(r.explicit_hash_key(), None);
            plain += 1;
        } else if r.data() == corrupt.as_slice() {
            assert_eq!(r.partition_key(), "corrupt");
            assert_eq!(r.sub_sequence_number(), None);
        } else {
            let (agg, i) = data.split_once('-').ok_or("unexpected record")?;
            let i: usize = i.parse()?;
            assert_eq!(r.partition_key(), format!("key-{}", i % 7));
            let ehk = i.is_multiple_of(5).then(|| (i * 1_000_003).to_string());
            assert_eq!(r.explicit_hash_key(), ehk.as_deref());
            assert_eq!(r.sub_sequence_number(), Some(i as u64), "{data}");
            subs.entry(agg.to_owned())
                .or_default()
                .push((r.sequence_number().to_owned(), i as u64));
        }
    }
    assert_eq!(plain, AGGS);
    assert_eq!(subs.len(), AGGS);
    for (agg, seen) in &subs {
        // Every user record once, in order, all with the aggregate's sequence number.
        let order: Vec<u64> = seen.iter().map(|(_, i)| *i).collect();
        assert_eq!(order, (0..PER as u64).collect::<Vec<_>>(), "{agg}");
        assert!(seen.iter().all(|(seq, _)| *seq == seen[0].0), "{agg}");
    }
    assert_eq!(Recorder::get(&stats.corrupt_aggregates), 1);
    Ok(())
}

/// One shard holding a plain record, a 500-record aggregate and another plain record.
/// A first consumer takes `taken` records and stops; returns the second consumer's
/// records and the checkpoint row the first left.
fn stop_inside_the_aggregate(
    mode: CheckpointMode,
    taken: usize,
    mark: impl Fn(&[Record]),
) -> TestResult<(Vec<String>, HashMap<String, AttributeValue>, Env)> {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_raw([
        ("k".to_owned(), b"before".to_vec()),
        ("k".to_owned(), kpl::aggregate(&users("u", 500))),
        ("k".to_owned(), b"after".to_vec()),
    ])?;
    let shard = env.shard_ids()?.remove(0);
    let config = || support::fast_config().with_checkpoint_mode(mode);

    let first = env.consumer("first", config())?;
    first.run()?;
    let got = take(&first, taken)?;
    mark(&got);
    first.stop();
    let row = env
        .checkpoint_rows()?
        .remove(&shard)
        .ok_or("no checkpoint row")?;
    assert_eq!(
        attr_s(&row, "SequenceNumber").as_deref(),
        Some(got[0].sequence_number())
    );
    assert_eq!(
        attr_s(&row, "AggregateSequenceNumber").as_deref(),
        Some(got[1].sequence_number())
    );

    let second = env.consumer("second", config())?;
    second.run()?;
    let expected_rest = 502 - taken_processed(&row)?;
    let rest = take(&second, expected_rest)?;
    if mode == CheckpointMode::Manual {
        rest.iter().for_each(Record::mark_processed);
    }
    // Nothing more arrives.
    let mut records = second.records();
    match records.next_timeout(Duration::from_secs(1)) {
        Polled::TimedOut => {}
        other => return Err(format!("unexpected extra item: {other:?}").into()),
    }
    second.stop();
    Ok((rest.iter().map(text).collect(), row, env))
}

/// How many of the shard's records the row says are processed ("before" + the user
/// records through `SubSequenceNumber`).
fn taken_processed(row: &HashMap<String, AttributeValue>) -> TestResult<usize> {
    match row.get("SubSequenceNumber") {
        Some(AttributeValue::N(n)) => Ok(1 + n.parse::<usize>()? + 1),
        other => Err(format!("no SubSequenceNumber: {other:?}").into()),
    }
}

fn expected_after(first_unprocessed: usize) -> Vec<String> {
    (first_unprocessed..500)
        .map(|i| format!("u-{i}"))
        .chain(["after".to_owned()])
        .collect()
}

#[test]
fn auto_mode_stop_inside_an_aggregate_resumes_without_duplicates() -> TestResult {
    // "before" and u-0..u-199; the last is in hand and counts processed on stop.
    let (rest, row, env) = stop_inside_the_aggregate(CheckpointMode::Auto, 201, |_| {})?;
    assert_eq!(
        row.get("SubSequenceNumber"),
        Some(&AttributeValue::N("199".into()))
    );
    assert_eq!(rest, expected_after(200));
    // Once the aggregate is done, the row is a plain checkpoint again.
    let row = env
        .checkpoint_rows()?
        .into_values()
        .next()
        .ok_or("no row")?;
    assert!(!row.contains_key("AggregateSequenceNumber"), "{row:?}");
    assert!(!row.contains_key("SubSequenceNumber"), "{row:?}");
    Ok(())
}

#[test]
fn manual_mode_checkpoints_the_processed_prefix_inside_an_aggregate() -> TestResult {
    // Marked: "before", u-0..u-149 and, beyond a gap, u-170..u-199. The checkpoint
    // covers only the contiguous prefix, so u-150 comes first on resuming.
    let (rest, row, _env) = stop_inside_the_aggregate(CheckpointMode::Manual, 201, |got| {
        got[..151].iter().for_each(Record::mark_processed);
        got[171..].iter().for_each(Record::mark_processed);
    })?;
    assert_eq!(
        row.get("SubSequenceNumber"),
        Some(&AttributeValue::N("149".into()))
    );
    assert_eq!(rest, expected_after(150));
    Ok(())
}

#[test]
fn go_rows_without_or_with_stale_aggregate_attributes_resume_after_their_sequence_number()
-> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_raw([
        ("k".to_owned(), kpl::aggregate(&users("u", 10))),
        ("k".to_owned(), b"p1".to_vec()),
        ("k".to_owned(), b"p2".to_vec()),
    ])?;
    let shard = env.shard_ids()?.remove(0);
    let agg_seq = env.sequence_numbers(&shard)?.remove(0);
    let consumer = env.consumer("rust", support::fast_config())?;
    drop(consumer); // tables made
    for extra in [false, true] {
        put_go_row(&env, &shard, &agg_seq, extra)?;
        let consumer = env.consumer("rust", support::fast_config())?;
        consumer.run()?;
        let got: Vec<String> = take(&consumer, 2)?.iter().map(text).collect();
        assert_eq!(got, ["p1", "p2"], "extra attributes: {extra}");
        consumer.stop();
    }
    Ok(())
}

/// A checkpoint row as the Go library writes it, unowned, at `seq`; with `extra`, also the
/// aggregate attributes a Rust client left before a Go client moved the checkpoint on.
fn put_go_row(env: &Env, shard: &str, seq: &str, extra: bool) -> TestResult {
    let mut req = env
        .dynamodb
        .put_item()
        .table_name(format!("{}_checkpoints", env.app))
        .item("Shard", AttributeValue::S(shard.to_owned()))
        .item("SequenceNumber", AttributeValue::S(seq.to_owned()))
        .item("OwnerID", AttributeValue::Null(true))
        .item("LastUpdate", AttributeValue::N("1".into()));
    if extra {
        req = req
            .item("AggregateSequenceNumber", AttributeValue::S(seq.to_owned()))
            .item("SubSequenceNumber", AttributeValue::N("3".into()));
    }
    env.block_on(req.send())?;
    Ok(())
}

#[test]
fn deaggregation_off_delivers_the_packed_bytes() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let packed = kpl::aggregate(&users("u", 5));
    env.put_raw([
        ("k".to_owned(), packed.clone()),
        ("k".to_owned(), b"plain".to_vec()),
    ])?;
    let consumer = env.consumer("c", support::fast_config().with_deaggregation(false))?;
    consumer.run()?;
    let got = take(&consumer, 2)?;
    consumer.stop();
    assert_eq!(got[0].data(), packed.as_slice());
    assert_eq!(got[0].sub_sequence_number(), None);
    assert_eq!(got[1].data(), b"plain");
    Ok(())
}
