//! Start-up races: a client that starts while another process is still creating the
//! tables or the stream waits for them (bounded, at the waiter delay) instead of failing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::types::TableStatus;
use aws_sdk_kinesis::types::StreamStatus;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use kinsumer::Kinsumer;

use crate::support::{self, Env, KinesisOptions, TestResult};

fn stream_status(env: &Env) -> TestResult<Option<StreamStatus>> {
    let out = env.block_on(
        env.kinesis
            .describe_stream_summary()
            .stream_name(&env.stream)
            .send(),
    )?;
    Ok(out
        .stream_description_summary()
        .map(|s| s.stream_status().clone()))
}

#[test]
fn run_waits_for_a_stream_being_created() -> TestResult {
    support::init_logging();
    let options =
        KinesisOptions::default().with_create_stream_delay(std::time::Duration::from_millis(1_500));
    let mut env = Env::without_stream(options)?;
    let consumer = env.consumer("early", support::fast_config())?;
    env.block_on(
        env.kinesis
            .create_stream()
            .stream_name(&env.stream)
            .shard_count(1)
            .send(),
    )?;
    assert_eq!(stream_status(&env)?, Some(StreamStatus::Creating));
    consumer.run()?;
    assert_eq!(stream_status(&env)?, Some(StreamStatus::Active));
    consumer.stop();
    Ok(())
}

/// Answers the first `remaining` DescribeTable calls with the table still CREATING.
#[derive(Debug)]
struct StillCreating {
    remaining: AtomicU64,
    rewritten: Arc<AtomicU64>,
}

impl Intercept for StillCreating {
    fn name(&self) -> &'static str {
        "StillCreating"
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Ok(output)) = context.output_or_error_mut() else {
            return Ok(());
        };
        let Some(out) = output.downcast_mut::<DescribeTableOutput>() else {
            return Ok(());
        };
        let Some(table) = out.table.as_mut() else {
            return Ok(());
        };
        let left = self.remaining.load(Ordering::SeqCst);
        if left > 0 && table.table_status == Some(TableStatus::Active) {
            self.remaining.store(left - 1, Ordering::SeqCst);
            self.rewritten.fetch_add(1, Ordering::SeqCst);
            table.table_status = Some(TableStatus::Creating);
        }
        Ok(())
    }
}

#[test]
fn run_waits_for_tables_being_created() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    drop(env.consumer("creator", support::fast_config())?); // the tables exist now
    let rewritten = Arc::new(AtomicU64::new(0));
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        env.dynamodb
            .config()
            .to_builder()
            .interceptor(StillCreating {
                remaining: AtomicU64::new(3),
                rewritten: Arc::clone(&rewritten),
            })
            .build(),
    );
    let consumer = Kinsumer::from_clients(
        &env.kinesis,
        &dynamodb,
        &env.stream,
        &env.app,
        "late",
        support::fast_config(),
    )?;
    consumer.run()?;
    assert_eq!(
        rewritten.load(Ordering::SeqCst),
        3,
        "run() saw CREATING 3 times"
    );
    consumer.stop();
    Ok(())
}
