//! An answer that cannot change is not retried forever: a shard that keeps failing with
//! an error retrying does not fix (here: access denied on every GetShardIterator) ends the
//! consumer with one fatal, clearly worded error.

use std::time::{Duration, Instant};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use kinsumer::{ErrorKind, Kinsumer};

use crate::support::{self, Env, TestResult};

/// Answers every GetShardIterator with a 400 AccessDeniedException.
#[derive(Debug)]
struct DenyIterators;

impl Intercept for DenyIterators {
    fn name(&self) -> &'static str {
        "DenyIterators"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<Metadata>().map(|m| m.name()) == Some("GetShardIterator") {
            let response = context.response_mut();
            *response.status_mut() = StatusCode::try_from(400)?;
            *response.body_mut() = SdkBody::from(
                r#"{"__type":"AccessDeniedException","message":"not authorized to read"}"#,
            );
        }
        Ok(())
    }
}

#[test]
fn a_shard_that_keeps_failing_the_same_way_ends_the_consumer() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    drop(env.consumer("creator", support::fast_config())?); // tables
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        env.kinesis
            .config()
            .to_builder()
            .interceptor(DenyIterators)
            .build(),
    );
    let consumer = Kinsumer::from_clients(
        &kinesis,
        &env.dynamodb,
        &env.stream,
        &env.app,
        "denied",
        support::fast_config(),
    )?;
    consumer.run()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = consumer.records();
    let mut transient = 0;
    let fatal = loop {
        if Instant::now() >= deadline {
            return Err("no fatal error within 60 s".into());
        }
        match records.next_timeout(Duration::from_millis(500)) {
            Some(Err(e)) if e.is_fatal() => break e,
            Some(Err(e)) if e.is_timeout() => {}
            Some(Err(e)) => {
                assert_eq!(e.aws_code(), Some("AccessDeniedException"), "{e}");
                transient += 1;
            }
            Some(Ok(r)) => return Err(format!("unexpected record {r:?}").into()),
            None => return Err("iteration ended without a fatal error".into()),
        }
    };
    assert_eq!(fatal.kind(), ErrorKind::ShardFailed);
    let text = fatal.to_string();
    assert!(text.contains("AccessDeniedException"), "{text}");
    assert!(text.contains("3 times in a row"), "{text}");
    assert!(transient >= 1, "each failure was reported as it happened");
    assert!(
        records.next().is_none(),
        "iteration goes on after a fatal error"
    );
    Ok(())
}
