//! Enhanced fan-out: reading through SubscribeToShard with the same delivery guarantees,
//! leases and tables as polling.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinsumer::{ErrorKind, Polled};

use crate::support::calls::CallLog;
use crate::support::outage::Outage;
use crate::support::proxy::Proxy;
use crate::support::{
    self, Deliveries, Env, KinesisOptions, Member, Producer, Recorder, TestResult,
};

fn fan_out_config(name: &str) -> kinsumer::Config {
    support::fast_config().with_consumer_name(name)
}

/// The consumers registered on the env's stream: (name, ARN).
fn registered(env: &Env) -> TestResult<Vec<(String, String)>> {
    let arn = env.stream_arn()?;
    let out = env.block_on(env.kinesis.list_stream_consumers().stream_arn(arn).send())?;
    Ok(out
        .consumers
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.consumer_name, c.consumer_arn))
        .collect())
}

/// A consumer whose SDK calls are logged.
fn logged_consumer(
    env: &mut Env,
    name: &str,
    config: kinsumer::Config,
) -> TestResult<(kinsumer::Kinsumer, CallLog)> {
    let log = CallLog::default();
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        env.kinesis
            .config()
            .to_builder()
            .interceptor(log.clone())
            .build(),
    );
    let dynamodb = env.dynamodb.clone();
    Ok((env.consumer_with(&kinesis, &dynamodb, name, config)?, log))
}

#[test]
fn drains_a_four_shard_stream_through_fan_out() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    const N: u64 = 2_000;
    env.put_numbered(0, N, 37)?;
    let stats = Arc::new(Recorder::default());
    let (consumer, calls) = logged_consumer(
        &mut env,
        "subscriber",
        fan_out_config("drain").with_stats(stats.clone()),
    )?;
    consumer.run()?;
    let seen = support::collect_until(&consumer, Duration::from_secs(60), |s| s.len() as u64 >= N)?;
    consumer.close()?;
    support::check_per_key_order(&seen, N)?;
    assert_eq!(Recorder::get(&stats.delivered), N);
    assert_eq!(Recorder::get(&stats.acquired), 4);
    assert_eq!(Recorder::get(&stats.released), 4);
    let names: Vec<String> = registered(&env)?.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["drain"]);
    // Read through subscriptions only.
    assert!(calls.count("SubscribeToShard") >= 4);
    assert_eq!(calls.count("GetRecords"), 0);
    assert_eq!(calls.count("GetShardIterator"), 0);
    // Every shard's checkpoint is the last record written to it.
    for shard in env.shard_ids()? {
        let last = env.sequence_numbers(&shard)?.pop();
        assert_eq!(env.checkpoint(&shard)?, last, "checkpoint of {shard}");
    }
    Ok(())
}

/// Takes `n` records from `consumer` (then the last one is still in hand).
fn take(consumer: &kinsumer::Kinsumer, n: usize) -> TestResult<Vec<String>> {
    support::collect_until(consumer, Duration::from_secs(60), |s| s.len() >= n)
}

#[test]
fn stop_and_resume_through_fan_out_repeats_nothing() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    const N: u64 = 1_200;
    env.put_numbered(0, N, 37)?;
    let first = env.consumer("first", fan_out_config("resume"))?;
    first.run()?;
    let mut seen = take(&first, 500)?;
    first.close()?;
    let first_unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        first_unique.len(),
        seen.len(),
        "the first client repeated records"
    );
    let second = env.consumer("second", fan_out_config("resume"))?;
    second.run()?;
    let rest = N as usize - seen.len();
    seen.extend(support::collect_until(
        &second,
        Duration::from_secs(60),
        |s| s.len() >= rest,
    )?);
    second.close()?;
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "records delivered twice");
    assert_eq!(unique.len() as u64, N, "records lost");
    Ok(())
}

#[test]
fn a_crash_repeats_only_the_uncommitted_window() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    const N: u64 = 600;
    env.put_numbered(0, N, 37)?;
    let first = env.consumer("doomed", fan_out_config("crash"))?;
    first.run()?;
    let seen = take(&first, 300)?;
    // Let a commit cover what was processed, then die without a word.
    support::let_time_pass(Duration::from_millis(600))?;
    let committed: Vec<Option<String>> = env
        .shard_ids()?
        .iter()
        .map(|s| env.checkpoint(s))
        .collect::<TestResult<_>>()?;
    first.abandon_for_tests();
    let second = env.consumer("heir", fan_out_config("crash"))?;
    second.run()?;
    let mut all: HashSet<String> = seen.iter().cloned().collect();
    let mut repeated = 0usize;
    let mut records = second.records();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (all.len() as u64) < N {
        if Instant::now() > deadline {
            return Err(format!("only {} of {N} records", all.len()).into());
        }
        if let Polled::Record(r) = records.next_timeout(Duration::from_millis(500))
            && !all.insert(String::from_utf8_lossy(r.data()).into_owned())
        {
            repeated += 1;
        }
    }
    second.close()?;
    // The crashed client had committed all it processed (it stood still for three
    // commit intervals): only the record it held, unprocessed, is read again.
    assert!(
        committed.iter().any(Option::is_some),
        "nothing was committed before the crash"
    );
    assert_eq!(repeated, 1, "records read again beyond the one in hand");
    println!(
        "crash via fan-out: {repeated} of {} records read again",
        seen.len()
    );
    Ok(())
}

#[test]
fn split_and_merge_while_subscribed_keep_per_key_order() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let consumer = env.consumer("resharder", fan_out_config("reshard"))?;
    consumer.run()?;
    let producer = Producer::start(&env);
    let mut log = take(&consumer, 200)?;
    let shards = env.open_shards()?;
    env.split(&shards[0])?;
    log.extend(take(&consumer, 200)?);
    support::wait_for(Duration::from_secs(30), "the split", || {
        Ok(env.open_shards()?.len() == 3)
    })?;
    let open = env.open_shards()?;
    env.merge(&open[1], &open[2])?;
    log.extend(take(&consumer, 200)?);
    let written = producer.stop_and_catch_up(&consumer, &mut log)?;
    consumer.close()?;
    let delivered = support::check_per_key_order(&log, written)?;
    assert_eq!(delivered as u64, written);
    // Both parents were read to their end and marked finished.
    let finished = env
        .checkpoint_rows()?
        .values()
        .filter(|row| row.contains_key("Finished"))
        .count();
    assert!(finished >= 3, "{finished} shards finished");
    Ok(())
}

#[test]
fn subscriptions_cut_by_the_server_resume_without_loss_or_repeats() -> TestResult {
    support::init_logging();
    // The server ends every subscription after 700 ms (AWS: 5 minutes).
    let mut env = Env::with_options(
        2,
        KinesisOptions::default().with_subscription_lifetime(Duration::from_millis(700)),
    )?;
    let (consumer, calls) = logged_consumer(&mut env, "renewer", fan_out_config("cut"))?;
    consumer.run()?;
    let producer = Producer::start(&env);
    // Keep reading (a caller that stops reading stops the subscriptions too) until
    // the server has cut several of them.
    let mut log = support::collect_until(&consumer, Duration::from_secs(60), |_| {
        calls.count("SubscribeToShard") >= 10
    })?;
    let written = producer.stop_and_catch_up(&consumer, &mut log)?;
    consumer.close()?;
    support::check_per_key_order(&log, written)?;
    println!(
        "{} records through {} subscriptions",
        log.len(),
        calls.count("SubscribeToShard")
    );
    Ok(())
}

#[test]
fn polling_and_fan_out_clients_share_one_application() -> TestResult {
    support::init_logging();
    let mut env = Env::new(4)?;
    let deliveries: Deliveries = Arc::default();
    let polling = Member::start(
        0,
        env.consumer("poller", support::fast_config())?,
        deliveries.clone(),
    )?;
    let pushed = Member::start(
        1,
        env.consumer("pushed", fan_out_config("mixed"))?,
        deliveries.clone(),
    )?;
    let producer = Producer::start(&env);
    // Balanced: each client holds two of the four leases.
    support::wait_for(Duration::from_secs(30), "two leases each", || {
        let owners = env.owners()?;
        let mine = owners.values().filter(|o| **o == polling.id).count();
        let theirs = owners.values().filter(|o| **o == pushed.id).count();
        Ok(mine == 2 && theirs == 2)
    })?;
    support::wait_for(Duration::from_secs(30), "records through both", || {
        let log = deliveries.lock();
        Ok(log.iter().any(|(m, _)| *m == 0) && log.iter().any(|(m, _)| *m == 1))
    })?;
    // A clean leave of the fan-out client hands its shards to the polling one.
    pushed.stop()?;
    let written = producer.stop()?;
    support::wait_for(Duration::from_secs(60), "every record", || {
        Ok(deliveries.lock().len() as u64 >= written)
    })?;
    polling.stop()?;
    let log: Vec<String> = deliveries.lock().iter().map(|(_, d)| d.clone()).collect();
    support::check_per_key_order(&log, written)?;
    Ok(())
}

#[test]
fn registration_is_shared_by_clients_starting_together() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let a = env.consumer("a", fan_out_config("together"))?;
    let b = env.consumer("b", fan_out_config("together"))?;
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.run());
        let tb = s.spawn(|| b.run());
        (ta.join(), tb.join())
    });
    ra.map_err(|_| "run panicked")??;
    rb.map_err(|_| "run panicked")??;
    let consumers = registered(&env)?;
    assert_eq!(consumers.len(), 1, "{consumers:?}");
    assert_eq!(consumers[0].0, "together");
    a.close()?;
    b.close()?;
    // Deregistering removes it; again is fine.
    env.consumer("retire", fan_out_config("together"))?
        .deregister_consumer()?;
    support::wait_for(Duration::from_secs(10), "the consumer to go", || {
        Ok(registered(&env)?.is_empty())
    })?;
    env.consumer("retire", fan_out_config("together"))?
        .deregister_consumer()?;
    Ok(())
}

/// A consumer name that is new to the stream (a typo, say) registers a second, billed
/// consumer: that is a warning naming the consumers the stream had, while reusing a
/// registered name is not.
#[test]
fn a_new_consumer_name_is_registered_with_a_warning_naming_the_others() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let first = env.consumer("a", fan_out_config("billing"))?;
    first.run()?;
    first.close()?;
    let again = env.consumer("b", fan_out_config("billing"))?;
    again.run()?;
    again.close()?;
    let typo = env.consumer("c", fan_out_config("billling"))?;
    typo.run()?;
    typo.close()?;
    let stream = format!("on stream {} ", env.stream);
    let warned = support::logged(&stream);
    let new_ones: Vec<&String> = warned
        .iter()
        .filter(|l| l.contains("registered a new enhanced fan-out consumer"))
        .collect();
    assert_eq!(new_ones.len(), 2, "{warned:#?}");
    assert!(new_ones[0].contains("\"billing\"") && new_ones[0].contains("it had none"));
    assert!(
        new_ones[1].contains("\"billling\"") && new_ones[1].contains("it had \"billing\""),
        "{}",
        new_ones[1]
    );
    let mut names: Vec<String> = registered(&env)?.into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["billing", "billling"]);
    Ok(())
}

#[test]
fn a_consumer_arn_that_does_not_exist_is_a_clear_error() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let arn = format!(
        "arn:aws:kinesis:us-east-1:000000000000:stream/{}/consumer/ghost:1700000000",
        env.stream
    );
    let consumer = env.consumer("c", support::fast_config().with_consumer_arn(&arn))?;
    let err = consumer
        .run()
        .expect_err("an unknown consumer must not start");
    assert_eq!(err.kind(), ErrorKind::NoSuchConsumer, "{err}");
    assert!(err.to_string().contains("ghost"), "{err}");
    // A consumer of another stream is refused before any call.
    let other = "arn:aws:kinesis:us-east-1:000000000000:stream/other/consumer/c:1";
    let consumer = env.consumer("d", support::fast_config().with_consumer_arn(other))?;
    assert_eq!(
        consumer.run().map_err(|e| e.kind()),
        Err(ErrorKind::InvalidArn)
    );
    // Without a fan-out consumer there is nothing to deregister.
    let plain = env.consumer("e", support::fast_config())?;
    assert_eq!(
        plain.deregister_consumer().map_err(|e| e.kind()),
        Err(ErrorKind::NoSuchConsumer)
    );
    Ok(())
}

#[test]
fn a_consumer_deregistered_while_in_use_ends_iteration_with_its_error() -> TestResult {
    support::init_logging();
    // Subscriptions end after a second, so the next one finds the consumer gone (AWS
    // ends them at deregistration).
    let mut env = Env::with_options(
        2,
        KinesisOptions::default().with_subscription_lifetime(Duration::from_secs(1)),
    )?;
    env.put_numbered(0, 50, 37)?;
    let consumer = env.consumer("victim", fan_out_config("doomed"))?;
    consumer.run()?;
    take(&consumer, 50)?;
    env.consumer("admin", fan_out_config("doomed"))?
        .deregister_consumer()?;
    let mut records = consumer.records();
    let deadline = Instant::now() + Duration::from_secs(60);
    let err = loop {
        match records.next_timeout(Duration::from_millis(500)) {
            Polled::Failed(e) => break e,
            Polled::Ended => return Err("ended without an error".into()),
            _ if Instant::now() > deadline => return Err("no error within 60 s".into()),
            _ => {}
        }
    };
    assert!(err.is_fatal());
    assert_eq!(err.kind(), ErrorKind::NoSuchConsumer, "{err}");
    let _ = consumer.close();
    Ok(())
}

#[test]
fn stop_ends_many_subscriptions_at_once() -> TestResult {
    support::init_logging();
    const SHARDS: u64 = 64;
    let mut env = Env::new(SHARDS as i32)?;
    let stats = Arc::new(Recorder::default());
    let (consumer, calls) = logged_consumer(
        &mut env,
        "many",
        fan_out_config("many").with_stats(stats.clone()),
    )?;
    consumer.run()?;
    support::wait_for(Duration::from_secs(60), "every shard subscribed", || {
        Ok(Recorder::get(&stats.acquired) == SHARDS
            && calls.count("SubscribeToShard") as u64 >= SHARDS)
    })?;
    let started = Instant::now();
    consumer.close()?;
    println!(
        "close() with {SHARDS} subscribed shards took {:?}",
        started.elapsed()
    );
    assert_eq!(Recorder::get(&stats.released), SHARDS);
    assert!(env.owners()?.is_empty(), "leases left behind");
    Ok(())
}

#[test]
fn refused_subscriptions_back_off_and_are_never_yielded() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 100, 37)?;
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let calls = CallLog::default();
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        env.kinesis
            .config()
            .to_builder()
            .interceptor(calls.clone())
            .interceptor(
                kinsumer::testing::AlwaysFail::new(
                    "SubscribeToShard",
                    400,
                    "ResourceInUseException",
                )
                .when(armed.clone()),
            )
            .build(),
    );
    let dynamodb = env.dynamodb.clone();
    let consumer = env.consumer_with(&kinesis, &dynamodb, "patient", fan_out_config("busy"))?;
    consumer.run()?;
    // Refused for a while: retried, slower and slower, and never an error item.
    let mut records = consumer.records();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        match records.next_timeout(Duration::from_millis(200)) {
            Polled::TimedOut => {}
            other => return Err(format!("while refused: {other:?}").into()),
        }
    }
    // At most one a second (AWS's limit), backing off from there: 1 s, 2 s, …. Gaps are
    // lower bounds, whatever the machine's load.
    let sent = calls.sent("SubscribeToShard");
    assert!(sent.len() >= 2, "{} subscriptions in 4 s", sent.len());
    let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(900)),
        "subscribed again sooner than a second: {gaps:?}"
    );
    assert!(consumer.health().errors() >= 1);
    armed.store(false, std::sync::atomic::Ordering::SeqCst);
    let seen = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 100)?;
    consumer.close()?;
    support::check_per_key_order(&seen, 100)?;
    Ok(())
}

/// A server that answers `SubscribeToShard` with an HTML error page (no AWS error): the
/// shard fails, three times in a row, and is parked saying why — not retried for ever
/// with nothing read.
#[test]
fn subscriptions_answered_with_an_html_page_park_the_shard_saying_why() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 10, 3)?;
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        env.kinesis
            .config()
            .to_builder()
            .interceptor(
                kinsumer::testing::AlwaysFail::new("SubscribeToShard", 500, "").with_body(
                    "text/html",
                    "<html><body><h1>500 Internal Server Error</h1></body></html>",
                ),
            )
            .build(),
    );
    let dynamodb = env.dynamodb.clone();
    let consumer = env.consumer_with(&kinesis, &dynamodb, "html", fan_out_config("html"))?;
    consumer.run()?;
    let mut records = consumer.records();
    support::wait_for(Duration::from_secs(60), "the shard parked", || {
        match records.next_timeout(Duration::from_millis(100)) {
            Polled::TimedOut => {}
            other => return Err(format!("expected nothing, got {other:?}").into()),
        }
        Ok(!consumer.health().parked_shards().is_empty())
    })?;
    let health = consumer.health();
    let reason = health.parked_shards()[0].reason().to_owned();
    assert!(reason.contains("HTTP 500 (text/html)"), "{reason}");
    assert!(reason.contains("enhanced fan-out"), "{reason}");
    assert!(health.is_running(), "{health:?}");
    drop(records);
    consumer.close()?;
    Ok(())
}

#[test]
fn a_subscription_that_goes_silent_is_renewed_from_the_last_record() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    // Subscriptions, and only they, go through a proxy that can freeze a connection.
    let proxy = Proxy::start(env.emulators.kinesis_endpoint())?;
    let redirect = Outage::to(proxy.endpoint()).only("SubscribeToShard");
    redirect.arm(true);
    let kinesis = redirect.kinesis(&env.kinesis);
    let dynamodb = env.dynamodb.clone();
    let config = fan_out_config("silence").with_subscription_timeout(Duration::from_secs(2));
    let consumer = env.consumer_with(&kinesis, &dynamodb, "subscriber", config)?;
    env.put_numbered(0, 40, 5)?;
    consumer.run()?;
    let mut seen = support::collect_until(&consumer, Duration::from_secs(60), |s| s.len() >= 40)?;
    let before = proxy.connections();
    assert!(before >= 1, "the subscription went through the proxy");
    // The open subscription's connection goes silent without closing: no event, no end.
    proxy.freeze_open_connections();
    env.put_numbered(40, 80, 5)?;
    let rest = support::collect_until(&consumer, Duration::from_secs(60), |s| s.len() >= 40)?;
    seen.extend(rest);
    consumer.close()?;
    support::check_per_key_order(&seen, 80)?;
    assert_eq!(seen.len(), 80, "nothing delivered twice");
    assert!(
        proxy.connections() > before,
        "the records came through a new subscription"
    );
    Ok(())
}
