//! Go compatibility: a Rust client resumes from checkpoint rows written the way the Go
//! library writes them, and the rows it writes itself have the same attribute names and
//! types.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::types::ShardIteratorType;

use crate::support::{self, Env, TestResult};

/// Every record of `shard` as (sequence number, data), oldest first.
fn read_shard(env: &Env, shard: &str) -> TestResult<Vec<(String, String)>> {
    let it = env.block_on(
        env.kinesis
            .get_shard_iterator()
            .stream_name(&env.stream)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send(),
    )?;
    let out = env.block_on(
        env.kinesis
            .get_records()
            .shard_iterator(it.shard_iterator().ok_or("no iterator")?)
            .send(),
    )?;
    Ok(out
        .records
        .into_iter()
        .map(|r| {
            let data = String::from_utf8_lossy(r.data.as_ref()).into_owned();
            (r.sequence_number, data)
        })
        .collect())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// A Unix-nanosecond `N` attribute within a minute of now.
fn assert_recent_nanos(item: &HashMap<String, AttributeValue>, name: &str) -> TestResult {
    let Some(AttributeValue::N(v)) = item.get(name) else {
        return Err(format!("{name} is not N: {:?}", item.get(name)).into());
    };
    let t: i64 = v.parse()?;
    assert!(
        (now_nanos() - t).abs() < 60_000_000_000,
        "{name} = {t} is not Unix ns of now"
    );
    Ok(())
}

fn assert_rfc(item: &HashMap<String, AttributeValue>, name: &str) {
    match item.get(name) {
        Some(AttributeValue::S(v)) => {
            assert!(
                v.len() >= 20 && v.contains('T') && v.ends_with('Z'),
                "{name} = {v}"
            )
        }
        other => panic!("{name} is not S: {other:?}"),
    }
}

#[test]
fn resumes_from_go_rows_and_writes_go_rows() -> TestResult {
    support::init_logging();
    let mut env = Env::new(3)?;
    env.put_numbered(0, 60, 60)?;
    let mut shards = env.shard_ids()?;
    shards.sort_unstable();
    let records: Vec<Vec<(String, String)>> = shards
        .iter()
        .map(|sh| read_shard(&env, sh))
        .collect::<TestResult<_>>()?;
    assert!(
        records.iter().all(|r| r.len() >= 4),
        "test data too unevenly spread"
    );

    // The tables must exist before the rows: make the consumer first.
    let consumer = env.consumer("rust-client", support::fast_config())?;
    // Rows as the Go library leaves them after its clients stopped: shard 0 checkpointed
    // after its third record, shard 1 never consumed (NULL sequence number), shard 2
    // finished. OwnerID NULL = unowned.
    let table = format!("{}_checkpoints", env.app);
    let old = now_nanos() - 3_600_000_000_000;
    let go_row = |shard: &str, seq: AttributeValue, finished: bool| {
        let mut req = env
            .dynamodb
            .put_item()
            .table_name(&table)
            .item("Shard", s(shard))
            .item("SequenceNumber", seq)
            .item("OwnerID", AttributeValue::Null(true))
            .item("OwnerName", s("go-client"))
            .item("LastUpdate", n(old))
            .item("LastUpdateRFC", s("2026-11-26T10:47:28.123456789Z"));
        if finished {
            req = req
                .item("Finished", n(old))
                .item("FinishedRFC", s("2026-11-26T10:47:28.123456789Z"));
        }
        req.send()
    };
    env.block_on(go_row(&shards[0], s(&records[0][2].0), false))?;
    env.block_on(go_row(&shards[1], AttributeValue::Null(true), false))?;
    let last2 = &records[2].last().ok_or("empty")?.0;
    env.block_on(go_row(&shards[2], s(last2), true))?;

    consumer.run()?;
    let expected: HashSet<String> = records[0][3..]
        .iter()
        .chain(records[1].iter())
        .map(|(_, d)| d.clone())
        .collect();
    let seen = support::collect_until(&consumer, Duration::from_secs(30), |s| {
        s.len() >= expected.len()
    })?;
    // Nothing from the finished shard or before the checkpoint follows.
    assert!(
        consumer
            .records()
            .next_timeout(Duration::from_millis(800))
            .is_timed_out()
    );
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), expected);
    assert_eq!(seen.len(), expected.len());

    // While running: the client row, the leader item and the shard cache.
    let client_rows = env.block_on(
        env.dynamodb
            .scan()
            .table_name(format!("{}_clients", env.app))
            .consistent_read(true)
            .send(),
    )?;
    let client = client_rows.items().first().ok_or("no client row")?;
    assert_eq!(client.get("ID"), Some(&s(consumer.client_id())));
    assert_eq!(client.get("Name"), Some(&s("rust-client")));
    assert_recent_nanos(client, "LastUpdate")?;
    assert_rfc(client, "LastUpdateRFC");
    support::wait_for(
        Duration::from_secs(10),
        "leader and shard cache items",
        || {
            let meta = env.metadata()?;
            Ok(meta.contains_key("Leader") && meta.contains_key("ShardCache"))
        },
    )?;
    let meta = env.metadata()?;
    let leader = &meta["Leader"];
    assert_eq!(leader.get("ID"), Some(&s(consumer.client_id())));
    assert_eq!(leader.get("Name"), Some(&s("rust-client")));
    assert_recent_nanos(leader, "LastUpdate")?;
    assert_rfc(leader, "LastUpdateRFC");
    let cache = &meta["ShardCache"];
    let expected_cache: Vec<AttributeValue> = shards[..2].iter().map(|id| s(id)).collect();
    assert_eq!(
        cache.get("ShardIDs"),
        Some(&AttributeValue::L(expected_cache))
    );
    assert_recent_nanos(cache, "LastUpdate")?;

    // After a clean stop: checkpoints as strings, owner NULL, times in Unix ns.
    consumer.stop();
    let rows = env.checkpoint_rows()?;
    for (i, shard) in shards[..2].iter().enumerate() {
        let row = &rows[shard];
        let last = &records[i].last().ok_or("empty")?.0;
        assert_eq!(row.get("SequenceNumber"), Some(&s(last)), "{shard}");
        assert_eq!(
            row.get("OwnerID"),
            Some(&AttributeValue::Null(true)),
            "{shard}"
        );
        assert!(matches!(row.get("OwnerName"), Some(AttributeValue::S(_))));
        assert_recent_nanos(row, "LastUpdate")?;
        assert_rfc(row, "LastUpdateRFC");
        assert!(!row.contains_key("Finished"));
    }
    // The finished shard's row is as Go left it.
    assert_eq!(rows[&shards[2]].get("Finished"), Some(&n(old)));
    assert_eq!(rows[&shards[2]].get("OwnerName"), Some(&s("go-client")));
    Ok(())
}
