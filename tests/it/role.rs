//! Assume-role: Kinesis calls signed with the role's temporary credentials (renewed as
//! they expire), DynamoDB calls with the base credentials; a refusal is fatal and says so.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::config::{Credentials, SharedCredentialsProvider};
use kinsumer::{ErrorKind, Kinsumer, Polled};

use crate::support::sts::{Endpoints, Signers, Sts};
use crate::support::{self, Env, Producer, TestResult};

const ROLE: &str = "arn:aws:iam::111122223333:role/stream-reader";
const BASE_KEY: &str = "AKIABASE0001";

/// An SdkConfig with base credentials, per-service endpoints (the emulators and the STS
/// responder) and an HTTP client that records who signed what.
fn sdk_config(env: &Env, sts: &Sts, signers: &Signers) -> SdkConfig {
    SdkConfig::builder()
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            BASE_KEY,
            "base-secret",
            None,
            None,
            "base",
        )))
        .http_client(signers.http_client())
        .service_config(Endpoints(HashMap::from([
            ("Kinesis", env.emulators.kinesis_endpoint().to_owned()),
            ("DynamoDB", env.emulators.dynamodb_endpoint().to_owned()),
            ("STS", sts.endpoint.clone()),
        ])))
        .behavior_version(BehaviorVersion::v2026_01_12())
        .build()
}

fn role_consumer(env: &Env, sdk: &SdkConfig) -> TestResult<Kinsumer> {
    let consumer = Kinsumer::from_sdk_config(
        sdk,
        &env.stream,
        &env.app,
        "assumer",
        support::fast_config()
            .with_role_arn(ROLE)
            .with_role_external_id("partner-7")
            .with_role_session_name("kinsumer-test"),
    )?;
    consumer.create_required_tables()?;
    Ok(consumer)
}

#[test]
fn kinesis_uses_the_role_and_dynamodb_the_base_credentials_renewed_without_a_pause() -> TestResult {
    support::init_logging();
    let env = Env::new(2)?;
    // Credentials that expire 12 s after issue: the SDK renews them 10 s before, so
    // about every 2 s.
    let sts = Sts::start(Duration::from_secs(12))?;
    let signers = Signers::default();
    let consumer = role_consumer(&env, &sdk_config(&env, &sts, &signers))?;
    consumer.run()?;
    let producer = Producer::start(&env);
    let mut log = support::collect_until(&consumer, Duration::from_secs(60), |_| {
        sts.issued.load(Ordering::SeqCst) >= 3
    })?;
    let written = producer.stop_and_catch_up(&consumer, &mut log)?;
    consumer.close()?;
    support::check_per_key_order(&log, written)?;

    let kinesis: HashSet<String> = signers.keys("kinesis").into_iter().collect();
    let dynamodb: HashSet<String> = signers.keys("dynamodb").into_iter().collect();
    let sts_signers: HashSet<String> = signers.keys("sts").into_iter().collect();
    println!(
        "{} records; {} credentials issued; Kinesis signed by {kinesis:?}",
        log.len(),
        sts.issued.load(Ordering::SeqCst)
    );
    assert!(
        kinesis.iter().all(|k| k.starts_with("ASIAROLE")),
        "Kinesis requests signed with {kinesis:?}"
    );
    assert!(
        kinesis.len() >= 2,
        "the role's credentials were never renewed"
    );
    assert_eq!(dynamodb, HashSet::from([BASE_KEY.to_owned()]));
    assert_eq!(sts_signers, HashSet::from([BASE_KEY.to_owned()]));
    let requests = sts.requests.lock();
    let first = requests.first().ok_or("no AssumeRole request")?;
    assert_eq!(first.get("Action").map(String::as_str), Some("AssumeRole"));
    assert_eq!(first.get("RoleArn").map(String::as_str), Some(ROLE));
    assert_eq!(
        first.get("ExternalId").map(String::as_str),
        Some("partner-7")
    );
    assert_eq!(
        first.get("RoleSessionName").map(String::as_str),
        Some("kinsumer-test")
    );
    Ok(())
}

#[test]
fn a_refused_role_is_a_clear_error_at_start_and_fatal_later() -> TestResult {
    support::init_logging();
    let env = Env::new(1)?;
    let sts = Sts::start(Duration::from_secs(12))?;
    let signers = Signers::default();
    let sdk = sdk_config(&env, &sts, &signers);

    sts.deny.store(true, Ordering::SeqCst);
    let refused = role_consumer(&env, &sdk)?;
    let err = refused.run().expect_err("a refused role must not start");
    assert_eq!(err.kind(), ErrorKind::AssumeRoleFailed, "{err}");
    assert_eq!(err.aws_code(), Some("AccessDenied"));
    assert!(err.to_string().contains("sts:AssumeRole"), "{err}");
    assert!(!err.is_transient());
    drop(refused);

    // Granted at start, refused at renewal: consumption ends with that error.
    sts.deny.store(false, Ordering::SeqCst);
    let consumer = role_consumer(&env, &sdk)?;
    consumer.run()?;
    sts.deny.store(true, Ordering::SeqCst);
    let mut records = consumer.records();
    let err = loop {
        match records.next_timeout(Duration::from_secs(60)) {
            Polled::Failed(e) => break e,
            Polled::Record(_) => {}
            other => return Err(format!("expected the refusal, got {other:?}").into()),
        }
    };
    assert!(err.is_fatal());
    assert_eq!(err.kind(), ErrorKind::AssumeRoleFailed, "{err}");
    assert!(matches!(
        records.next_timeout(Duration::from_secs(10)),
        Polled::Ended
    ));
    let _ = consumer.close();
    Ok(())
}

#[test]
fn a_role_needs_base_credentials_from_an_sdk_config() -> TestResult {
    let mut env = Env::new(1)?;
    let err = env
        .consumer("clients", support::fast_config().with_role_arn(ROLE))
        .expect_err("from_clients cannot take a role");
    assert!(err.to_string().contains("from_sdk_config"), "{err}");
    let bad = Kinsumer::from_sdk_config(
        &support::sdk_config(),
        &env.stream,
        &env.app,
        "c",
        support::fast_config().with_role_arn("arn:aws:iam::1:user/someone"),
    )
    .expect_err("not a role ARN");
    assert_eq!(bad.kind(), ErrorKind::InvalidArn);
    Ok(())
}
