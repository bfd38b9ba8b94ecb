//! A stream given by its ARN (a stream of another account, shared by a resource policy,
//! is reached so): every Kinesis call then names the stream by ARN; the tables still
//! come from the application name.

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use kinsumer::{Fleet, Kinsumer};
use parking_lot::Mutex;

use crate::support::{self, Env, TestResult};

/// Checks that every request naming a stream names it by ARN — the calls a stream of
/// another account needs — and, since the embedded emulator takes `StreamARN` only in
/// PutRecord(s) and the consumer calls, rewrites it to the stream's name in the others
/// before the request leaves.
#[derive(Debug, Clone)]
struct ByArn {
    arn: String,
    name: String,
    /// Operations that named the stream by name (must stay empty), and by ARN.
    by_name: Arc<Mutex<Vec<String>>>,
    by_arn: Arc<Mutex<Vec<String>>>,
}

impl Intercept for ByArn {
    fn name(&self) -> &'static str {
        "ByArn"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg.load::<Metadata>().map_or("?", |m| m.name()).to_owned();
        let body = context.request().body().bytes().unwrap_or_default();
        let text = String::from_utf8_lossy(body).into_owned();
        if text.contains("\"StreamName\"") {
            self.by_name.lock().push(op);
        } else if text.contains("\"StreamARN\"") {
            self.by_arn.lock().push(op.clone());
            if !matches!(
                op.as_str(),
                "DescribeStreamSummary" | "ListShards" | "GetShardIterator"
            ) {
                // The emulator takes StreamARN here (PutRecord, the consumer calls).
                return Ok(());
            }
            let rewritten = text.replace(
                &format!("\"StreamARN\":\"{}\"", self.arn),
                &format!("\"StreamName\":\"{}\"", self.name),
            );
            let request = context.request_mut();
            request
                .headers_mut()
                .insert("content-length", rewritten.len().to_string());
            *request.body_mut() = SdkBody::from(rewritten);
        }
        Ok(())
    }
}

#[test]
fn a_stream_given_by_its_arn_is_read_polled_and_through_fan_out_and_published_to() -> TestResult {
    support::init_logging();
    let env = Env::new(2)?;
    env.put_numbered(0, 100, 37)?;
    let arn = env.stream_arn()?;
    let check = ByArn {
        arn: arn.clone(),
        name: env.stream.clone(),
        by_name: Arc::default(),
        by_arn: Arc::default(),
    };
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        env.kinesis
            .config()
            .to_builder()
            .interceptor(check.clone())
            .build(),
    );
    let by_arn = |name: &str, config: kinsumer::Config| -> TestResult<Kinsumer> {
        let c = Kinsumer::from_clients(&kinesis, &env.dynamodb, &arn, &env.app, name, config)?;
        c.create_required_tables()?;
        Ok(c)
    };
    let polling = by_arn("polling", support::fast_config())?;
    polling.run()?;
    polling.publish(&arn, "key-26", b"100")?; // key-<100 % 37>
    let seen = support::collect_until(&polling, Duration::from_secs(60), |s| s.len() >= 101)?;
    support::check_per_key_order(&seen, 101)?;
    polling.close()?;
    // The operator's view through the ARN too.
    let fleet = Fleet::from_clients(
        &kinesis,
        &env.dynamodb,
        &arn,
        &env.app,
        support::fast_config(),
    )?;
    assert_eq!(fleet.status()?.shards.len(), 2);
    // Enhanced fan-out, registered on the stream the ARN names, from the start again.
    let fan_out = by_arn(
        "fan-out",
        support::fast_config()
            .with_consumer_name("by-arn")
            .with_initial_position(kinsumer::InitialPosition::TrimHorizon),
    )?;
    env.block_on(
        env.dynamodb
            .delete_table()
            .table_name(format!("{}_checkpoints", env.app))
            .send(),
    )?;
    fan_out.create_required_tables()?;
    fan_out.run()?;
    let seen = support::collect_until(&fan_out, Duration::from_secs(60), |s| s.len() >= 101)?;
    support::check_per_key_order(&seen, 101)?;
    fan_out.deregister_consumer()?;
    fan_out.close()?;
    // Every call named the stream by its ARN.
    assert!(
        check.by_name.lock().is_empty(),
        "{:?}",
        check.by_name.lock()
    );
    let by_arn = check.by_arn.lock().clone();
    for op in [
        "DescribeStreamSummary",
        "ListShards",
        "GetShardIterator",
        "GetRecords",
    ] {
        if op != "GetRecords" {
            assert!(
                by_arn.iter().any(|o| o == op),
                "{op} not by ARN: {by_arn:?}"
            );
        }
    }
    assert!(by_arn.iter().any(|o| o == "PutRecord"), "{by_arn:?}");
    Ok(())
}
