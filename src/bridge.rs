//! The sync–async bridge: the only module that touches tokio.
//!
//! Every thread that calls AWS (each shard thread, the coordinator, and the caller's
//! thread for admin calls) owns a [`Bridge`]: a tokio current-thread runtime plus its
//! *own* Kinesis and DynamoDB clients, built from one shared [`ClientConfigs`]. Every SDK
//! call goes through [`Bridge::block_on`] on the owning thread.
//!
//! Why one client set per thread rather than clients shared by all: an SDK client owns a
//! hyper connection pool, and a pooled connection is driven by a task spawned on the
//! runtime that opened it. If thread A reuses a connection opened by thread B while B's
//! runtime is idle (B is blocked on a channel, not inside `block_on`), A's request waits
//! until B happens to poll again — seconds — or fails with "dispatch task is gone" once
//! B's runtime is dropped. With a client per thread, every connection is driven by the
//! runtime of the only thread that uses it. A client built from a config without an
//! explicit HTTP client gets a fresh default one (and so a fresh pool): that is what
//! [`Bridge::new`] relies on. A caller-supplied HTTP client (set on the SDK config) is
//! shared as given — its owner has chosen its threading model.
//!
//! The credentials provider's cache is shared across threads (it lives in the config);
//! its own HTTP calls are rare (refreshes) and retried by the SDK.
//!
//! The alternative — one private runtime thread that is always inside `block_on` and
//! serves all threads — is the fallback if the per-thread pools cost too much memory or
//! sockets at high shard counts (measured in the benchmark issue).

use std::future::Future;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb as dynamodb;
use aws_sdk_kinesis as kinesis;
use kinesis::config::timeout::TimeoutConfig;

use crate::error::{Error, ErrorKind, Result};

/// Upper bound on one SDK operation (all its retries), unless the caller's config sets
/// its own: every wait in this crate is bounded.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The service configurations every thread builds its clients from. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct ClientConfigs {
    kinesis: kinesis::Config,
    dynamodb: dynamodb::Config,
}

impl ClientConfigs {
    pub(crate) fn from_sdk_config(sdk: &SdkConfig) -> Self {
        Self::from_service_configs(kinesis::Config::from(sdk), dynamodb::Config::from(sdk))
    }

    pub(crate) fn from_clients(kinesis: &kinesis::Client, dynamodb: &dynamodb::Client) -> Self {
        Self::from_service_configs(kinesis.config().clone(), dynamodb.config().clone())
    }

    fn from_service_configs(k: kinesis::Config, d: dynamodb::Config) -> Self {
        let k = match bounded(k.timeout_config()) {
            Some(t) => k.to_builder().timeout_config(t).build(),
            None => k,
        };
        let d = match bounded(d.timeout_config()) {
            Some(t) => d.to_builder().timeout_config(t).build(),
            None => d,
        };
        ClientConfigs {
            kinesis: k,
            dynamodb: d,
        }
    }

    /// Loads the default AWS configuration chain (environment, profile, IMDS, …).
    pub(crate) fn load_default() -> Result<Self> {
        let runtime = runtime()?;
        let sdk = runtime.block_on(aws_config::load_defaults(
            aws_config::BehaviorVersion::latest(),
        ));
        Ok(Self::from_sdk_config(&sdk))
    }
}

/// The timeout config to install, if `existing` has no operation timeout.
fn bounded(existing: Option<&TimeoutConfig>) -> Option<TimeoutConfig> {
    match existing {
        Some(t) if t.operation_timeout().is_some() => None,
        Some(t) => Some(t.to_builder().operation_timeout(OPERATION_TIMEOUT).build()),
        None => Some(
            TimeoutConfig::builder()
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        ),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Error::new(ErrorKind::Internal)
                .with_context("building a tokio runtime")
                .with_source(e)
        })
}

/// One thread's runtime and SDK clients. Not shared between threads.
pub(crate) struct Bridge {
    runtime: tokio::runtime::Runtime,
    kinesis: kinesis::Client,
    dynamodb: dynamodb::Client,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").finish_non_exhaustive()
    }
}

impl Bridge {
    /// Builds a runtime and a fresh pair of clients for the calling thread.
    pub(crate) fn new(configs: &ClientConfigs) -> Result<Self> {
        Ok(Bridge {
            runtime: runtime()?,
            kinesis: kinesis::Client::from_conf(configs.kinesis.clone()),
            dynamodb: dynamodb::Client::from_conf(configs.dynamodb.clone()),
        })
    }

    pub(crate) fn kinesis(&self) -> &kinesis::Client {
        &self.kinesis
    }

    pub(crate) fn dynamodb(&self) -> &dynamodb::Client {
        &self.dynamodb
    }

    /// Runs one SDK call (or a short sequence of them) to completion on this thread.
    /// Bounded by the operation timeout of the clients' configs.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}
