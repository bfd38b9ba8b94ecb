//! Panics are contained: a panicking shard thread (here, in a user's `Stats` method) has
//! its shard restarted, nothing lost; a panicking coordinator ends consumption with a
//! fatal error instead of leaving the iterator idle, and still releases every lease.

use kinsumer::Polled;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use kinsumer::{AssignmentMode, ErrorKind, Stats};

use crate::support::{self, Env, TestResult};

/// Panics once in `records_fetched` (a shard thread), or in `assignment_mode_changed`
/// (the coordinator) once armed.
#[derive(Debug, Default)]
struct Panicky {
    fetch_panicked: AtomicBool,
    panic_in_fetch: bool,
    armed: AtomicBool,
}

impl Stats for Panicky {
    fn records_fetched(&self, _shard: &str, _count: usize, _behind: Option<i64>) {
        if self.panic_in_fetch && !self.fetch_panicked.swap(true, Ordering::SeqCst) {
            panic!("a bug in the user's metrics code");
        }
    }

    fn assignment_mode_changed(&self, _mode: AssignmentMode) {
        if self.armed.load(Ordering::SeqCst) {
            panic!("a bug in the user's metrics code");
        }
    }
}

#[test]
fn a_shard_thread_that_panics_is_restarted_and_nothing_is_lost() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 50, 5)?;
    let stats = Arc::new(Panicky {
        panic_in_fetch: true,
        ..Panicky::default()
    });
    let consumer = env.consumer("panicky", support::fast_config().with_stats(stats.clone()))?;
    consumer.run()?;
    let seen = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 50)?;
    assert!(stats.fetch_panicked.load(Ordering::SeqCst));
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 50);
    let health = consumer.health();
    assert!(
        health.last_error().is_some_and(|e| e.contains("panicked")),
        "{health:?}"
    );
    assert!(health.is_running());
    consumer.stop();
    Ok(())
}

#[test]
fn a_coordinator_that_panics_ends_iteration_with_a_fatal_error_and_releases() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let stats = Arc::new(Panicky::default());
    let consumer = env.consumer("panicky", support::fast_config().with_stats(stats.clone()))?;
    consumer.run()?;
    support::wait_for(Duration::from_secs(30), "both shards leased", || {
        Ok(env.owners()?.len() == 2)
    })?;
    // A Go client's row (no scheme mark) changes the assignment mode at the next shard
    // check, which calls the armed hook on the coordinator thread.
    stats.armed.store(true, Ordering::SeqCst);
    env.block_on(
        env.dynamodb
            .put_item()
            .table_name(format!("{}_clients", env.app))
            .item("ID", AttributeValue::S("0-go-client".into()))
            .item("Name", AttributeValue::S("go".into()))
            .item(
                "LastUpdate",
                AttributeValue::N(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_nanos()
                        .to_string(),
                ),
            )
            .send(),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut records = consumer.records();
    let fatal = loop {
        if Instant::now() >= deadline {
            return Err("no fatal error within 30 s".into());
        }
        match records.next_timeout(Duration::from_millis(500)) {
            Polled::TimedOut => {}
            Polled::Failed(e) => break e,
            other => return Err(format!("unexpected {other:?}").into()),
        }
    };
    assert!(fatal.is_fatal());
    assert_eq!(fatal.kind(), ErrorKind::Internal);
    assert!(fatal.to_string().contains("panicked"), "{fatal}");
    assert!(records.next().is_none());
    // Its shards were stopped and released, not left leased and unread.
    support::wait_for(Duration::from_secs(30), "leases released", || {
        Ok(env.owners()?.is_empty())
    })?;
    consumer.stop();
    Ok(())
}

/// Panics inside an SDK call on the I/O runtime (here, in an interceptor).
#[derive(Debug)]
struct PanickyInterceptor;

impl aws_smithy_runtime_api::client::interceptors::Intercept for PanickyInterceptor {
    fn name(&self) -> &'static str {
        "PanickyInterceptor"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let op = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| m.name());
        if op == Some("GetRecords") {
            panic!("a bug inside an SDK call");
        }
        Ok(())
    }
}

/// A call whose task dies on the I/O runtime is not mistaken for a timeout and retried
/// forever: the shard fails, and failing three times parks it, saying why.
#[test]
fn a_call_that_panics_on_the_io_runtime_is_not_retried_as_a_timeout() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        env.kinesis
            .config()
            .to_builder()
            .interceptor(PanickyInterceptor)
            .build(),
    );
    let dynamodb = env.dynamodb.clone();
    let consumer = env.consumer_with(&kinesis, &dynamodb, "doomed", support::fast_config())?;
    consumer.run()?;
    support::wait_for(Duration::from_secs(60), "the shard parked", || {
        Ok(!consumer.health().parked_shards().is_empty())
    })?;
    let health = consumer.health();
    let reason = health.parked_shards()[0].reason();
    assert!(reason.contains("I/O runtime"), "{reason}");
    assert!(reason.contains("3 times in a row"), "{reason}");
    assert!(health.is_running(), "{health:?}");
    consumer.stop();
    Ok(())
}

/// Panics whenever a shard is being revoked.
#[derive(Debug)]
struct PanickyListener;

impl kinsumer::ShardListener for PanickyListener {
    fn revoking(&self, _shard: &str) {
        panic!("a bug in the user's flush code");
    }
}

/// A panic in `ShardListener::revoking` is reported and the lease is still released at
/// once (the next owner does not wait for it to expire).
#[test]
fn a_listener_that_panics_while_revoking_does_not_keep_the_lease() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 10, 2)?;
    let config = support::fast_config().with_shard_listener(Arc::new(PanickyListener));
    let consumer = env.consumer("flusher", config)?;
    consumer.run()?;
    support::collect_until(&consumer, Duration::from_secs(30), |seen| seen.len() >= 10)?;
    let id = consumer.client_id().to_owned();
    assert!(env.owners()?.values().any(|o| *o == id));
    let errors_before = consumer.health().errors();
    consumer.stop();
    let health = consumer.health();
    assert!(health.errors() > errors_before, "{health:?}");
    assert!(
        health
            .last_error()
            .is_some_and(|e| e.contains("panicked in `revoking`")),
        "{health:?}"
    );
    // Released by the stop itself: no owner left on the row.
    assert!(env.owners()?.is_empty(), "{:?}", env.owners()?);
    Ok(())
}
