//! Bad input is rejected with the matching error kind, before any network call where
//! possible; a missing table or stream fails `run()` clearly.

use std::time::{Duration, SystemTime};

use kinsumer::{Config, ErrorKind, InitialPosition, Kinsumer};

use crate::support::{self, Env, KinesisOptions, TestResult};

/// Clients pointing at a closed loopback port: any network call would fail with an AWS
/// error, not with the kinds asserted below.
fn unreachable_clients() -> (aws_sdk_kinesis::Client, aws_sdk_dynamodb::Client) {
    let sdk = support::sdk_config();
    let k = aws_sdk_kinesis::config::Builder::from(&sdk)
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let d = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .endpoint_url("http://127.0.0.1:9")
        .build();
    (
        aws_sdk_kinesis::Client::from_conf(k),
        aws_sdk_dynamodb::Client::from_conf(d),
    )
}

fn build_error(stream: &str, app: &str, config: Config) -> Option<ErrorKind> {
    let (k, d) = unreachable_clients();
    Kinsumer::from_clients(&k, &d, stream, app, "c", config)
        .err()
        .map(|e| e.kind())
}

#[test]
fn every_invalid_config_value_is_rejected_by_the_constructors() {
    let ms = Duration::from_millis;
    let cases = [
        (
            Config::default().with_throttle_delay(ms(100)),
            ErrorKind::InvalidThrottleDelay,
        ),
        (
            Config::default().with_commit_frequency(Duration::ZERO),
            ErrorKind::InvalidCommitFrequency,
        ),
        (
            Config::default().with_shard_check_frequency(Duration::ZERO),
            ErrorKind::InvalidShardCheckFrequency,
        ),
        (
            Config::default().with_leader_action_frequency(Duration::ZERO),
            ErrorKind::InvalidLeaderActionFrequency,
        ),
        (
            Config::default()
                .with_shard_check_frequency(Duration::from_secs(10))
                .with_leader_action_frequency(Duration::from_secs(5)),
            ErrorKind::InvalidLeaderActionFrequency,
        ),
        (
            Config::default().with_buffer_size(0),
            ErrorKind::InvalidBufferSize,
        ),
        (
            Config::default().with_dynamo_read_capacity(0),
            ErrorKind::InvalidDynamoCapacity,
        ),
        (
            Config::default().with_dynamo_write_capacity(0),
            ErrorKind::InvalidDynamoCapacity,
        ),
        (
            Config::default().with_max_records(0),
            ErrorKind::InvalidMaxRecords,
        ),
        (
            Config::default().with_max_records(10_001),
            ErrorKind::InvalidMaxRecords,
        ),
        (
            Config::default().with_initial_position(InitialPosition::AtTimestamp(
                SystemTime::now() + Duration::from_secs(600),
            )),
            ErrorKind::InvalidInitialPosition,
        ),
    ];
    for (config, kind) in cases {
        assert_eq!(build_error("stream", "app", config.clone()), Some(kind));
        let sdk = support::sdk_config();
        let err = Kinsumer::from_sdk_config(&sdk, "stream", "app", "c", config)
            .err()
            .map(|e| e.kind());
        assert_eq!(err, Some(kind));
    }
    assert_eq!(build_error("stream", "app", Config::default()), None);
}

#[test]
fn a_missing_region_is_a_config_error_that_names_the_fix() {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let err = Kinsumer::from_sdk_config(&sdk, "stream", "app", "c", Config::default())
        .expect_err("built without a region");
    assert_eq!(err.kind(), ErrorKind::NoRegion);
    assert!(err.is_config());
    assert!(err.to_string().contains("AWS_REGION"), "{err}");
}

#[test]
fn an_sdk_config_without_a_behavior_version_does_not_panic() -> TestResult {
    let sdk = aws_config::SdkConfig::builder()
        .region(aws_config::Region::new("us-east-1"))
        .build();
    let consumer = Kinsumer::from_sdk_config(&sdk, "stream", "app", "c", Config::default())?;
    assert_eq!(consumer.client_name(), "c");
    Ok(())
}

#[test]
fn an_empty_client_name_and_a_negative_capacity_say_what_is_wrong() {
    let (k, d) = unreachable_clients();
    let err = Kinsumer::from_clients(&k, &d, "s", "a", " ", Config::default())
        .expect_err("empty client name");
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    assert!(err.to_string().contains("client name"), "{err}");
    let err = Config::default()
        .with_dynamo_write_capacity(-5)
        .validate()
        .expect_err("negative capacity");
    assert!(err.to_string().contains("must be positive"), "{err}");
}

#[test]
fn a_next_timeout_too_large_for_the_clock_waits_without_a_deadline() -> TestResult {
    let mut env = Env::new(1)?;
    env.put_numbered(0, 1, 1)?;
    let consumer = env.consumer("patient", support::fast_config())?;
    consumer.run()?;
    let mut records = consumer.records();
    assert!(matches!(
        records.next_timeout(Duration::MAX),
        kinsumer::Polled::Record(_)
    ));
    consumer.stop();
    Ok(())
}

#[test]
fn bad_names_are_rejected_before_any_network_call() {
    let ok = Config::default;
    assert_eq!(build_error("", "app", ok()), Some(ErrorKind::NoStreamName));
    assert_eq!(
        build_error("stream", "", ok()),
        Some(ErrorKind::NoApplicationName)
    );
    assert_eq!(
        build_error("with space", "app", ok()),
        Some(ErrorKind::InvalidName)
    );
    assert_eq!(
        build_error("stream", "a/b", ok()),
        Some(ErrorKind::InvalidName)
    );
    assert_eq!(
        build_error("stream", &"x".repeat(250), ok()),
        Some(ErrorKind::InvalidName)
    );
    assert_eq!(
        build_error(&"s".repeat(129), "app", ok()),
        Some(ErrorKind::InvalidName)
    );
    // A malformed stream ARN.
    assert_eq!(
        build_error("arn:aws:kinesis:us-east-1:42:stream/s", "app", ok()),
        Some(ErrorKind::InvalidArn)
    );
    // Same rules through the default-chain constructor.
    let err = Kinsumer::new("stream", "bad app", "c", ok())
        .err()
        .map(|e| e.kind());
    assert_eq!(err, Some(ErrorKind::InvalidName));
}

#[test]
fn run_twice_is_an_error_even_after_stop() -> TestResult {
    let mut env = Env::new(1)?;
    let consumer = env.consumer("twice", support::fast_config())?;
    consumer.run()?;
    let err = consumer.run().err().ok_or("second run succeeded")?;
    assert_eq!(err.kind(), ErrorKind::RunTwice);
    consumer.stop();
    consumer.stop(); // idempotent
    let err = consumer.run().err().ok_or("run after stop succeeded")?;
    assert_eq!(err.kind(), ErrorKind::RunTwice);
    Ok(())
}

#[test]
fn missing_tables_fail_run() -> TestResult {
    let env = Env::new(1)?;
    let consumer = Kinsumer::from_clients(
        &env.kinesis,
        &env.dynamodb,
        &env.stream,
        &env.app,
        "c",
        support::fast_config(),
    )?;
    let err = consumer.run().err().ok_or("run without tables succeeded")?;
    assert_eq!(err.kind(), ErrorKind::TableNotFound);
    assert!(err.to_string().contains(&env.app), "{err}");
    Ok(())
}

#[test]
fn missing_stream_fails_run() -> TestResult {
    let mut env = Env::without_stream(KinesisOptions::default())?;
    let consumer = env.consumer("c", support::fast_config())?;
    let err = consumer
        .run()
        .err()
        .ok_or("run without a stream succeeded")?;
    assert_eq!(err.kind(), ErrorKind::NoSuchStream);
    // One line that says what was done and what the service answered; a `Debug` that
    // lists causes without dumping the HTTP response.
    let text = err.to_string();
    // The region and endpoint asked: the stream may live in another region.
    assert!(
        text.starts_with(&format!(
            "describing stream {} (region us-east-1, endpoint {}): no such stream: \
             ResourceNotFoundException",
            env.stream,
            env.emulators.kinesis_endpoint().trim_end_matches('/')
        )),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    assert_eq!(err.aws_code(), Some("ResourceNotFoundException"));
    let debug = format!("{err:?}");
    assert!(debug.len() < 600, "{debug}");
    assert!(!debug.contains("headers"), "{debug}");
    // Same through the ListShards readiness check.
    let config = support::fast_config().with_list_shards_for_readiness(true);
    let consumer = env.consumer("c2", config)?;
    let err = consumer
        .run()
        .err()
        .ok_or("run without a stream succeeded")?;
    assert_eq!(err.kind(), ErrorKind::NoSuchStream);
    // And publishing to it.
    let err = consumer
        .publish(&env.stream, "k", b"x")
        .err()
        .ok_or("publish succeeded")?;
    assert_eq!(err.kind(), ErrorKind::NoSuchStream);
    Ok(())
}

/// A table of the application's name but another key schema fails `create_required_tables`
/// and `run()` with a clear error, instead of one failed call per shard forever.
#[test]
fn a_table_with_the_wrong_key_schema_is_reported() -> TestResult {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let env = Env::new(1)?;
    env.block_on(
        env.dynamodb
            .create_table()
            .table_name(format!("{}_checkpoints", env.app))
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("ShardId")
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("ShardId")
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send(),
    )?;
    let consumer = Kinsumer::from_clients(
        &env.kinesis,
        &env.dynamodb,
        &env.stream,
        &env.app,
        "c",
        support::fast_config(),
    )?;
    let err = consumer
        .create_required_tables()
        .expect_err("accepted a wrongly keyed table");
    assert_eq!(err.kind(), ErrorKind::TableSchema);
    let text = err.to_string();
    assert!(text.contains("ShardId") && text.contains("Shard"), "{text}");
    let err = consumer.run().expect_err("ran on a wrongly keyed table");
    assert_eq!(err.kind(), ErrorKind::TableSchema);
    Ok(())
}

/// The right key name with the wrong type: the message names the type it found.
#[test]
fn a_key_of_the_wrong_type_is_named_with_its_type() -> TestResult {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let env = Env::new(1)?;
    env.block_on(
        env.dynamodb
            .create_table()
            .table_name(format!("{}_checkpoints", env.app))
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("Shard")
                    .attribute_type(ScalarAttributeType::N)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("Shard")
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send(),
    )?;
    let consumer = Kinsumer::from_clients(
        &env.kinesis,
        &env.dynamodb,
        &env.stream,
        &env.app,
        "c",
        support::fast_config(),
    )?;
    let err = consumer
        .create_required_tables()
        .expect_err("accepted a number-keyed table");
    assert_eq!(err.kind(), ErrorKind::TableSchema);
    let text = err.to_string();
    assert!(text.contains("Shard (HASH, type N)"), "{text}");
    assert!(text.contains("type S"), "{text}");
    Ok(())
}

#[test]
fn tables_are_created_idempotently_and_deleted() -> TestResult {
    let mut env = Env::new(1)?;
    let consumer = env.consumer("tables", support::fast_config())?;
    consumer.create_required_tables()?; // second time: no error
    consumer.delete_tables()?;
    consumer.delete_tables()?; // already gone: no error
    let err = consumer.run().err().ok_or("run after delete succeeded")?;
    assert_eq!(err.kind(), ErrorKind::TableNotFound);
    Ok(())
}

#[test]
fn publish_and_client_name() -> TestResult {
    let mut env = Env::new(1)?;
    let consumer = env.consumer("publisher", support::fast_config())?;
    assert_eq!(consumer.client_name(), "publisher");
    consumer.publish(&env.stream, "key", b"hello")?;
    consumer.run()?;
    let seen = support::collect_until(&consumer, Duration::from_secs(30), |s| !s.is_empty())?;
    assert_eq!(seen, ["hello"]);
    Ok(())
}

/// Clients without any credentials provider: `run` fails at once with `NoCredentials`,
/// saying what is missing and how to provide it, in `Display` and `Debug` alike.
#[test]
fn missing_credentials_are_named_with_the_ways_to_provide_them() -> TestResult {
    let env = Env::new(1)?;
    let bare = aws_config::SdkConfig::builder()
        .region(aws_config::Region::new("us-east-1"))
        .behavior_version(aws_config::BehaviorVersion::v2026_01_12())
        .build();
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(&bare)
            .endpoint_url(env.emulators.kinesis_endpoint())
            .build(),
    );
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&bare)
            .endpoint_url(env.emulators.dynamodb_endpoint())
            .build(),
    );
    let consumer = Kinsumer::from_clients(
        &kinesis,
        &dynamodb,
        &env.stream,
        &env.app,
        "nocreds",
        support::fast_config(),
    )?;
    let err = consumer
        .create_required_tables()
        .err()
        .ok_or("tables created without credentials")?;
    assert_eq!(err.kind(), ErrorKind::NoCredentials, "{err}");
    let run = consumer.run().err().ok_or("ran without credentials")?;
    assert_eq!(run.kind(), ErrorKind::NoCredentials, "{run}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(text.contains("no AWS credentials found"), "{text}");
        assert!(text.contains("AWS_ACCESS_KEY_ID"), "{text}");
        assert!(text.contains("has no credentials provider"), "{text}");
    }
    Ok(())
}
