//! Fencing: when another client takes a shard's lease, this client stops delivering
//! that shard and never overwrites the new owner's checkpoint.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::support::outage::Outage;
use crate::support::proxy::Proxy;
use crate::support::{self, Env, Producer, Recorder, TestResult};

#[test]
fn a_taken_lease_stops_delivery_and_is_never_overwritten() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 10, 2)?;
    let shard = env.shard_ids()?.remove(0);
    let stats = Arc::new(Recorder::default());
    let consumer = env.consumer("victim", support::fast_config().with_stats(stats.clone()))?;
    consumer.run()?;
    support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 10)?;

    // Another client takes the lease (as if ours had gone stale), with its own checkpoint.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)?
        .as_nanos()
        .to_string();
    env.block_on(
        env.dynamodb
            .update_item()
            .table_name(format!("{}_checkpoints", env.app))
            .key("Shard", AttributeValue::S(shard.clone()))
            .update_expression(
                "SET OwnerID = :o, OwnerName = :n, LastUpdate = :t, SequenceNumber = :s",
            )
            .expression_attribute_values(":o", AttributeValue::S("intruder-id".into()))
            .expression_attribute_values(":n", AttributeValue::S("intruder".into()))
            .expression_attribute_values(":t", AttributeValue::N(now))
            .expression_attribute_values(":s", AttributeValue::S("intruder-checkpoint".into()))
            .send(),
    )?;
    // The next write (a commit of the last record, or a heartbeat) finds out.
    env.put_numbered(10, 20, 2)?;
    support::wait_for(
        Duration::from_secs(15),
        "the lease loss to be noticed",
        || Ok(Recorder::get(&stats.lost) >= 1),
    )?;
    // Records written now are not delivered while the intruder's lease is fresh (5 s).
    env.put_numbered(20, 30, 2)?;
    let mut records = consumer.records();
    let mut late = Vec::new();
    for _ in 0..4 {
        if let kinsumer::Polled::Record(r) = records.next_timeout(Duration::from_millis(500)) {
            late.push(String::from_utf8_lossy(r.data()).into_owned());
        }
    }
    assert!(
        late.iter().all(|d| d.parse::<u64>().is_ok_and(|n| n < 20)),
        "delivered after the loss: {late:?}"
    );
    consumer.stop();
    let rows = env.checkpoint_rows()?;
    let row = rows.get(&shard).ok_or("row gone")?;
    assert_eq!(
        row.get("OwnerID"),
        Some(&AttributeValue::S("intruder-id".into()))
    );
    assert_eq!(
        row.get("SequenceNumber"),
        Some(&AttributeValue::S("intruder-checkpoint".into()))
    );
    Ok(())
}

/// Every error the consumer reports, as text.
#[derive(Debug, Default)]
struct Reported(parking_lot::Mutex<Vec<String>>);

impl kinsumer::Stats for Reported {
    fn error_reported(&self, error: &kinsumer::Error) {
        self.0.lock().push(error.to_string());
    }
}

impl Reported {
    fn count(&self, text: &str) -> usize {
        self.0.lock().iter().filter(|e| e.contains(text)).count()
    }
}

#[test]
fn a_failing_read_of_a_held_lease_is_reported_and_retried() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 10, 2)?;
    let shard = env.shard_ids()?.remove(0);
    // Reads of a held lease (and only they) are refused while armed.
    let outage = Outage::refused()
        .only("GetItem")
        .body_containing("OwnerID, LastUpdate");
    outage.arm(true);
    let reported = Arc::new(Reported::default());
    let dynamodb = outage.dynamodb(&env.dynamodb);
    let kinesis = env.kinesis.clone();
    let consumer = env.consumer_with(
        &kinesis,
        &dynamodb,
        "waiter",
        support::fast_config().with_stats(reported.clone()),
    )?;
    // A client that is not in the clients table holds the lease, freshly renewed: the
    // consumer waits for it to go stale, reading it.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)?
        .as_nanos()
        .to_string();
    env.block_on(
        env.dynamodb
            .put_item()
            .table_name(format!("{}_checkpoints", env.app))
            .item("Shard", AttributeValue::S(shard.clone()))
            .item("OwnerID", AttributeValue::S("ghost-id".into()))
            .item("OwnerName", AttributeValue::S("ghost".into()))
            .item("LastUpdate", AttributeValue::N(now))
            .send(),
    )?;
    consumer.run()?;
    let what = format!("reading the lease of shard {shard}");
    support::wait_for(
        Duration::from_secs(20),
        "the failing reads to be reported",
        || Ok(reported.count(&what) >= 2),
    )?;
    // Nothing was taken meanwhile, and the consumer is still running.
    assert_eq!(
        env.checkpoint_rows()?
            .get(&shard)
            .and_then(|r| r.get("OwnerID").cloned()),
        Some(AttributeValue::S("ghost-id".into()))
    );
    // The reads work again: the ghost's lease goes stale and is taken.
    outage.arm(false);
    let seen = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 10)?;
    consumer.close()?;
    support::check_per_key_order(&seen, 10)?;
    Ok(())
}

#[test]
fn a_late_membership_renewal_ends_the_lease_instead_of_dropping_records() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    // This client's row writes reach the table on time (nobody counts it gone) but their
    // answers can be held back, past the membership margin, through a proxy.
    let proxy = Proxy::start(env.emulators.dynamodb_endpoint())?;
    let redirect = Outage::to(proxy.endpoint())
        .only("PutItem")
        .body_containing(&format!("{}_clients", env.app));
    redirect.arm(true);
    let dynamodb = redirect.dynamodb(&env.dynamodb);
    let kinesis = env.kinesis.clone();
    let stats = Arc::new(Recorder::default());
    // Failover 2 s: a row write every 0.4 s, each answered within 1 s, the membership
    // valid 1.6 s from the last one sent that landed. Commit slots far apart (20 s), so a
    // shard thread does not look at its membership before the late answer renews it.
    let config = support::fast_config()
        .with_shard_check_frequency(Duration::from_secs(10))
        .with_leader_action_frequency(Duration::from_secs(10))
        .with_commit_frequency(Duration::from_secs(20))
        .with_handover_grace(Duration::from_secs(2))
        .with_failover_time(Duration::from_secs(2))
        .with_idle_poll_delay(Duration::from_millis(200))
        .with_stats(stats.clone());
    let consumer = env.consumer_with(&kinesis, &dynamodb, "late", config)?;
    let producer = Producer::start(&env);
    consumer.run()?;
    let mut seen = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 100)?;
    // Hold the answers for 2.5 s while records are handed out: the membership lapses
    // (hand-outs are refused), then a write answered late renews it.
    proxy.hold_answers(true);
    let until = Instant::now() + Duration::from_millis(2500);
    seen.extend(support::collect_until(
        &consumer,
        Duration::from_secs(10),
        |_| Instant::now() >= until,
    )?);
    proxy.hold_answers(false);
    // The refusal gave the lease up; the client takes it again from the checkpoint.
    support::wait_for(
        Duration::from_secs(40),
        "the lease to be taken again",
        || Ok(Recorder::get(&stats.acquired) >= 2),
    )?;
    let written = producer.stop_and_catch_up(&consumer, &mut seen)?;
    consumer.close()?;
    // Nothing lost, nothing repeated, every key in order.
    support::check_per_key_order(&seen, written)?;
    assert!(
        Recorder::get(&stats.released) >= 1,
        "the lease was given up"
    );
    Ok(())
}

/// A slow but working DynamoDB (every checkpoint write answered 3 s late, more than the
/// old one-attempt bound of 2 s) still renews the leases and lands the checkpoints: the
/// attempt lasts as long as the lease allows, and the renewal counts from the send.
#[test]
fn checkpoint_writes_answered_seconds_late_still_renew_the_lease() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let proxy = Proxy::start(env.emulators.dynamodb_endpoint())?;
    proxy.delay_answers(Duration::from_secs(3));
    let redirect = Outage::commits_to(proxy.endpoint());
    let dynamodb = redirect.dynamodb(&env.dynamodb);
    let kinesis = env.kinesis.clone();
    let stats = Arc::new(Recorder::default());
    // Shard check 2 s: a lease of 10 s, surely this client's for 8 s after a renewal.
    let config = support::fast_config()
        .with_shard_check_frequency(Duration::from_secs(2))
        .with_leader_action_frequency(Duration::from_secs(2))
        .with_stats(stats.clone());
    let consumer = env.consumer_with(&kinesis, &dynamodb, "patient", config)?;
    let producer = Producer::start(&env);
    consumer.run()?;
    // Longer than the lease: without renewals every lease would have been given up.
    let until = Instant::now() + Duration::from_secs(16);
    let mut seen = support::collect_until(&consumer, Duration::from_secs(40), |_| {
        Instant::now() >= until
    })?;
    assert_eq!(Recorder::get(&stats.lost), 0, "a lease was given up");
    assert!(
        Recorder::get(&stats.commits) >= 4,
        "{} checkpoints landed",
        Recorder::get(&stats.commits)
    );
    assert_eq!(
        Recorder::get(&stats.acquired),
        2,
        "a lease was taken again (given up, then recaptured)"
    );
    let written = producer.stop_and_catch_up(&consumer, &mut seen)?;
    consumer.close()?;
    support::check_per_key_order(&seen, written)?;
    Ok(())
}
