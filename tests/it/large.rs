//! Large records: the largest the embedded emulator accepts (1 MiB of data; Kinesis
//! streams set to larger records, up to 10 MiB, take the same path) pass through
//! `publish`, the byte-bounded buffer — alone, when larger than `buffer_bytes` — and
//! size-learning fetches, plain and as a KPL aggregate of about 1 MiB.

use std::time::Duration;

use kinsumer::Polled;

use crate::support::{self, Env, TestResult, kpl};

/// The emulator's bound on a record's data.
const MAX_DATA: usize = 1 << 20;

#[test]
fn records_of_the_largest_size_pass_a_smaller_buffer_alone_and_in_order() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    // A buffer far smaller than one record, and a fetch share of two of them.
    let config = support::fast_config()
        .with_buffer_bytes(64 << 10)
        .with_fetch_bytes(2 * MAX_DATA);
    let consumer = env.consumer("large", config)?;
    let big = |i: u8| vec![i; MAX_DATA];
    for i in 0..4u8 {
        consumer.publish(&env.stream, "big", &big(i))?;
    }
    // A KPL aggregate of about 1 MiB: four user records of 256 KiB less framing.
    let users: Vec<kpl::UserRecord> = (0..4u8)
        .map(|i| ("user".to_owned(), None, vec![10 + i; (MAX_DATA / 4) - 256]))
        .collect();
    let aggregate = kpl::aggregate(&users);
    assert!(aggregate.len() > MAX_DATA - 2048 && aggregate.len() <= MAX_DATA);
    env.put_raw([("agg".to_owned(), aggregate)])?;
    consumer.publish(&env.stream, "big", &big(4))?;
    consumer.run()?;
    let mut got: Vec<(u8, usize)> = Vec::new();
    let mut records = consumer.records();
    while got.len() < 9 {
        match records.next_timeout(Duration::from_secs(30)) {
            Polled::Record(r) => {
                let first = r.data().first().copied().ok_or("an empty record")?;
                assert!(r.data().iter().all(|b| *b == first), "record data mangled");
                // A record larger than the buffer passes alone: at most one waits.
                let buffered = consumer.health().buffered_bytes();
                assert!(buffered <= MAX_DATA + 16, "{buffered} bytes buffered");
                got.push((first, r.data().len()));
            }
            other => return Err(format!("after {} records: {other:?}", got.len()).into()),
        }
    }
    let user = (MAX_DATA / 4) - 256;
    assert_eq!(
        got,
        vec![
            (0, MAX_DATA),
            (1, MAX_DATA),
            (2, MAX_DATA),
            (3, MAX_DATA),
            (10, user),
            (11, user),
            (12, user),
            (13, user),
            (4, MAX_DATA),
        ]
    );
    drop(records);
    consumer.close()?;
    Ok(())
}
