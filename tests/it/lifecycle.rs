//! Stream lifecycle: a stream deleted while consuming ends iteration with a typed fatal
//! error (distinguishable from a stop), and the consumer still stops cleanly.

use std::time::{Duration, Instant};

use kinsumer::ErrorKind;

use crate::support::{self, Env, TestResult};

#[test]
fn deleting_the_stream_is_a_fatal_no_such_stream_error() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    env.put_numbered(0, 20, 3)?;
    let consumer = env.consumer("orphan", support::fast_config())?;
    consumer.run()?;
    support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 20)?;
    env.block_on(env.kinesis.delete_stream().stream_name(&env.stream).send())?;

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut records = consumer.records();
    let fatal = loop {
        if Instant::now() > deadline {
            return Err("no fatal error within 30 s".into());
        }
        match records.next_timeout(Duration::from_millis(500)) {
            Some(Err(e)) if e.is_fatal() => break e,
            Some(Err(e)) if e.is_timeout() => {}
            // Shard threads report their own failures first, as non-fatal items.
            Some(Err(e)) => assert_eq!(e.kind(), ErrorKind::NoSuchStream, "{e}"),
            Some(Ok(r)) => return Err(format!("unexpected record {r:?}").into()),
            None => return Err("iteration ended without a fatal error".into()),
        }
    };
    assert_eq!(fatal.kind(), ErrorKind::NoSuchStream);
    assert!(
        records.next().is_none(),
        "iteration goes on after a fatal error"
    );
    assert!(records.next().is_none());
    consumer.stop();
    assert!(env.client_ids()?.is_empty(), "client not deregistered");
    Ok(())
}
