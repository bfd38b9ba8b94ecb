//! The README's IAM list is exactly what the library uses: every operation sent through
//! a consumer's and a `Fleet`'s clients while running, stopping, publishing, managing
//! tables and operating the fleet is recorded and compared with the list.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use kinsumer::{Fleet, Kinsumer, RewindTo};
use parking_lot::Mutex;

use crate::support::{self, Env, TestResult};

/// Records `service:Operation` for every request sent.
#[derive(Debug, Clone)]
struct Recorder {
    prefix: &'static str,
    seen: Arc<Mutex<BTreeSet<String>>>,
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "OperationRecorder"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            self.seen
                .lock()
                .insert(format!("{}:{}", self.prefix, m.name()));
        }
        Ok(())
    }
}

/// Every `kinesis:…` / `dynamodb:…` named in the README's IAM section.
fn documented() -> TestResult<BTreeSet<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let start = readme.find("## IAM permissions").ok_or("no IAM section")?;
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    Ok(section
        .split('`')
        .filter(|w| w.starts_with("kinesis:") || w.starts_with("dynamodb:"))
        .map(str::to_owned)
        .collect())
}

#[test]
fn the_readme_lists_exactly_the_operations_the_library_sends() -> TestResult {
    support::init_logging();
    let env = Env::new(2)?;
    env.put_numbered(0, 10, 3)?;
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        env.kinesis
            .config()
            .to_builder()
            .interceptor(Recorder {
                prefix: "kinesis",
                seen: Arc::clone(&seen),
            })
            .build(),
    );
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        env.dynamodb
            .config()
            .to_builder()
            .interceptor(Recorder {
                prefix: "dynamodb",
                seen: Arc::clone(&seen),
            })
            .build(),
    );
    let make = |config: kinsumer::Config| {
        Kinsumer::from_clients(&kinesis, &dynamodb, &env.stream, &env.app, "iam", config)
    };
    let consumer = make(support::fast_config())?;
    consumer.create_required_tables()?;
    consumer.run()?;
    consumer.publish(&env.stream, "k", b"published")?;
    support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 11)?;
    consumer.stop();
    let lister = make(support::fast_config().with_list_shards_for_readiness(true))?;
    lister.run()?;
    lister.stop();
    // Enhanced fan-out: registration, subscriptions, deregistration.
    let pushed = make(support::fast_config().with_consumer_name("iam"))?;
    pushed.run()?;
    pushed.publish(&env.stream, "k", b"pushed")?;
    support::collect_until(&pushed, Duration::from_secs(30), |s| !s.is_empty())?;
    pushed.stop();
    pushed.deregister_consumer()?;

    let fleet = Fleet::from_clients(
        &kinesis,
        &dynamodb,
        &env.stream,
        &env.app,
        support::fast_config(),
    )?;
    fleet.status()?;
    let shard = env.shard_ids()?.remove(0);
    fleet.release(&shard, false)?;
    let plan = fleet.plan_rewind(RewindTo::Time(std::time::SystemTime::now()), None)?;
    fleet.apply_rewind(&plan)?;
    consumer.delete_tables()?;

    let sent = seen.lock().clone();
    let listed = documented()?;
    let undocumented: Vec<&String> = sent.difference(&listed).collect();
    let unused: Vec<&String> = listed.difference(&sent).collect();
    eprintln!("operations sent: {sent:?}");
    assert!(
        undocumented.is_empty(),
        "sent but not in the README's IAM list: {undocumented:?}"
    );
    assert!(
        unused.is_empty(),
        "in the README's IAM list but never sent: {unused:?}"
    );
    Ok(())
}
