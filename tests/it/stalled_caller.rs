//! A caller that stops pulling records does not stall the library: leases keep being
//! heartbeated (no other client could take them), the client row stays fresh, and
//! `stop()` still completes promptly.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::support::{self, Env, TestResult};

fn last_update(row: &std::collections::HashMap<String, AttributeValue>) -> i64 {
    match row.get("LastUpdate") {
        Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
        _ => 0,
    }
}

#[test]
fn a_stalled_caller_does_not_stop_heartbeats_or_stop() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    env.put_numbered(0, 500, 11)?;
    let consumer = env.consumer("stalled", support::fast_config().with_buffer_size(5))?;
    consumer.run()?;
    let mut records = consumer.records();
    let first = records.next_timeout(Duration::from_secs(30));
    assert!(matches!(first, kinsumer::Polled::Record(_)), "{first:?}");

    // The caller now does nothing for longer than the lease TTL (5 s); shard threads
    // are blocked on the full channel. Leases must stay fresh meanwhile.
    let paused_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as i64;
    support::let_time_pass(Duration::from_secs(6))?;
    let rows = env.checkpoint_rows()?;
    assert_eq!(rows.len(), 2);
    for (shard, row) in &rows {
        assert!(
            last_update(row) > paused_at + 3_000_000_000,
            "lease of {shard} not heartbeated while the caller stalled"
        );
        assert_eq!(
            row.get("OwnerID"),
            Some(&AttributeValue::S(consumer.client_id().into()))
        );
    }
    let clients = env.client_ids()?;
    assert_eq!(clients, [consumer.client_id()]);

    let started = Instant::now();
    consumer.stop();
    let took = started.elapsed();
    eprintln!("stop() with blocked shard threads took {took:?}");
    // Bounded: well under the library's own limits (20 s per shard thread, 30 s total).
    assert!(took < Duration::from_secs(15), "stop took {took:?}");
    assert!(env.client_ids()?.is_empty());
    Ok(())
}

#[test]
fn large_records_are_bounded_by_bytes_not_only_by_count() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    const RECORD: usize = 512 << 10;
    const N: usize = 40;
    const LIMIT: usize = 2 << 20;
    env.put_raw((0..N).map(|i| {
        let mut data = vec![b'x'; RECORD];
        data[..4].copy_from_slice(&(i as u32).to_le_bytes());
        (format!("k{i}"), data)
    }))?;
    let consumer = env.consumer(
        "big",
        support::fast_config()
            .with_buffer_size(100)
            .with_buffer_bytes(LIMIT),
    )?;
    consumer.run()?;
    // The caller reads nothing for a while: the buffer fills to its byte bound and stays
    // there (a count bound of 100 alone would let all 20 MiB in).
    let mut peak = 0;
    support::wait_for(Duration::from_secs(30), "a full buffer", || {
        peak = peak.max(consumer.health().buffered_bytes());
        Ok(peak >= LIMIT - RECORD)
    })?;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(1) {
        peak = peak.max(consumer.health().buffered_bytes());
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("buffered at most {peak} bytes of {} written", N * RECORD);
    assert!(peak <= LIMIT, "{peak} bytes buffered, bound {LIMIT}");
    // Then everything arrives, once.
    let mut seen = std::collections::HashSet::new();
    let mut records = consumer.records();
    while seen.len() < N {
        match records.next_timeout(Duration::from_secs(30)) {
            kinsumer::Polled::Record(r) => {
                let id = u32::from_le_bytes(r.data()[..4].try_into()?);
                assert!(seen.insert(id), "record {id} twice");
            }
            other => return Err(format!("after {} records: {other:?}", seen.len()).into()),
        }
    }
    consumer.close()?;
    Ok(())
}
