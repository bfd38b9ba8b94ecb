//! A test kit for *your* consumers (feature `testing`, off by default): embedded Kinesis
//! and DynamoDB emulators on loopback, and fault injectors that make AWS calls fail the
//! way they fail in production — so `cargo test` exercises throttling, 5xx answers,
//! timeouts, access denied and crashes with nothing installed.
//!
//! [`Emulators`] starts `ferrokinesis` and `dynoxide` in-process on ephemeral
//! `127.0.0.1` ports, each on its own thread, and stops them when dropped. Its helpers are
//! blocking, like the rest of this crate. [`FaultInjector`] and [`AlwaysFail`] are SDK
//! interceptors: put them on the clients you build a consumer from.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kinsumer::testing::{Emulators, FaultCounts, FaultInjector};
//! use kinsumer::{Config, Polled};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let emulators = Emulators::start()?;
//! emulators.create_stream("orders", 2)?;
//! emulators.put("orders", (0..10).map(|i| (format!("key-{i}"), i.to_string().into_bytes())))?;
//!
//! // One call in five fails (throttling, a 500, or a timeout), on both services.
//! let counts = Arc::new(FaultCounts::default());
//! let faults = FaultInjector::new(5, counts.clone())?;
//! let config = Config::default().with_shard_check_frequency(Duration::from_secs(1))
//!     .with_leader_action_frequency(Duration::from_secs(1));
//! let consumer = emulators.consumer_with_faults("orders", "billing", "test-1", config, faults)?;
//! consumer.run()?;
//! let mut seen = 0;
//! let mut records = consumer.records();
//! while seen < 10 {
//!     match records.next_timeout(Duration::from_secs(60)) {
//!         Polled::Record(_) => seen += 1,
//!         other => panic!("unexpected {other:?}"),
//!     }
//! }
//! consumer.stop();
//! assert_eq!(seen, 10);
//! assert!(counts.calls() > 0);
//! # Ok(())
//! # }
//! ```
//!
//! With the AWS SDK's standard endpoint variables set (`AWS_ENDPOINT_URL_KINESIS` and
//! `AWS_ENDPOINT_URL_DYNAMODB`, or `AWS_ENDPOINT_URL`), [`Emulators::start`] uses those
//! servers instead of starting its own.
//!
//! This module is the one place besides the I/O bridge that uses tokio directly: the
//! emulators are async servers, each on its own runtime.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

use crate::config::Config;
use crate::consumer::Kinsumer;
use crate::error::{Error, ErrorKind, Result};

fn internal(what: &str, e: impl Into<crate::error::BoxError>) -> Error {
    Error::new(ErrorKind::Internal)
        .with_context(what.to_owned())
        .with_source(e)
}

/// Options for the embedded Kinesis emulator.
#[derive(Debug, Clone)]
#[must_use]
pub struct KinesisOptions {
    iterator_ttl_seconds: u64,
    create_stream_ms: u64,
    subscription_ms: u64,
}

impl Default for KinesisOptions {
    fn default() -> Self {
        KinesisOptions {
            iterator_ttl_seconds: 300,
            create_stream_ms: 0,
            subscription_ms: 300_000,
        }
    }
}

impl KinesisOptions {
    /// How long a shard iterator lives (real Kinesis: 300 s): shorten it to test
    /// iterator expiry.
    pub fn with_iterator_ttl(mut self, ttl: Duration) -> Self {
        self.iterator_ttl_seconds = ttl.as_secs().max(1);
        self
    }

    /// How long the server keeps a `SubscribeToShard` subscription open before ending it
    /// (real Kinesis: 5 minutes): shorten it to test resubscription.
    pub fn with_subscription_lifetime(mut self, lifetime: Duration) -> Self {
        self.subscription_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// How long a new stream stays CREATING (default 0).
    pub fn with_create_stream_delay(mut self, delay: Duration) -> Self {
        self.create_stream_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }
}

/// One embedded server: its address, and how to stop it.
struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds 127.0.0.1:0 and serves on a thread of its own with its own runtime.
    fn start<F, Fut>(name: &str, serve: F) -> Result<Server>
    where
        F: FnOnce(tokio::net::TcpListener, tokio::sync::oneshot::Receiver<()>) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let what = format!("starting the {name} emulator");
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| internal(&what, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| internal(&what, e))?;
        let addr = listener.local_addr().map_err(|e| internal(&what, e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| internal(&what, e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("emulator-{name}"))
            .spawn(move || {
                runtime.block_on(async move {
                    if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                        serve(listener, rx).await;
                    }
                });
            })
            .map_err(|e| internal(&what, e))?;
        Ok(Server {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The endpoint the SDK's configuration chain would use for a service (`KINESIS`,
/// `DYNAMODB`): `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL`.
fn endpoint_from_env(service: &str) -> Option<String> {
    std::env::var(format!("AWS_ENDPOINT_URL_{service}"))
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .ok()
        .filter(|v| !v.is_empty())
}

/// A Kinesis and a DynamoDB server for tests: embedded (the default) or external (from
/// the standard endpoint variables). Dropping it stops the embedded ones.
pub struct Emulators {
    kinesis_endpoint: String,
    dynamodb_endpoint: String,
    external: bool,
    runtime: tokio::runtime::Runtime,
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    _servers: Vec<Server>,
}

impl std::fmt::Debug for Emulators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulators")
            .field("kinesis_endpoint", &self.kinesis_endpoint)
            .field("dynamodb_endpoint", &self.dynamodb_endpoint)
            .field("external", &self.external)
            .finish_non_exhaustive()
    }
}

impl Emulators {
    /// Starts both emulators (or uses the servers the standard endpoint variables name).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Internal`] if a port, thread or runtime cannot be had.
    pub fn start() -> Result<Emulators> {
        Self::start_with(KinesisOptions::default())
    }

    /// Like [`start`](Emulators::start), with options for the Kinesis emulator.
    ///
    /// # Errors
    ///
    /// As [`start`](Emulators::start).
    pub fn start_with(options: KinesisOptions) -> Result<Emulators> {
        Self::launch(options, true)
    }

    /// Starts both emulators embedded, whatever the endpoint variables say (to serve
    /// other processes, say).
    ///
    /// # Errors
    ///
    /// As [`start`](Emulators::start).
    pub fn start_embedded(options: KinesisOptions) -> Result<Emulators> {
        Self::launch(options, false)
    }

    fn launch(options: KinesisOptions, from_env: bool) -> Result<Emulators> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| internal("building the test kit's runtime", e))?;
        let (kinesis_endpoint, dynamodb_endpoint, external, servers) =
            match (endpoint_from_env("KINESIS"), endpoint_from_env("DYNAMODB")) {
                (Some(k), Some(d)) if from_env => (k, d, true, Vec::new()),
                _ => {
                    let (k, d) = Self::embedded(&options)?;
                    let endpoints = (format!("http://{}", k.addr), format!("http://{}", d.addr));
                    (endpoints.0, endpoints.1, false, vec![k, d])
                }
            };
        let sdk = sdk_config();
        let kinesis = aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(&sdk)
                .endpoint_url(&kinesis_endpoint)
                .build(),
        );
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .endpoint_url(&dynamodb_endpoint)
                .build(),
        );
        Ok(Emulators {
            kinesis_endpoint,
            dynamodb_endpoint,
            external,
            runtime,
            kinesis,
            dynamodb,
            _servers: servers,
        })
    }

    fn embedded(options: &KinesisOptions) -> Result<(Server, Server)> {
        let store_options = ferrokinesis::store::StoreOptions {
            create_stream_ms: options.create_stream_ms,
            delete_stream_ms: 0,
            update_stream_ms: 0,
            shard_limit: 10_000,
            iterator_ttl_seconds: options.iterator_ttl_seconds,
            subscribe_to_shard_session_ms: options.subscription_ms,
            ..Default::default()
        };
        let kinesis = Server::start("kinesis", move |listener, stop| async move {
            let (app, _store) = ferrokinesis::create_app(store_options);
            let _ = ferrokinesis::serve_plain_http(listener, app, async move {
                let _ = stop.await;
            })
            .await;
        })?;
        let db = dynoxide::Database::memory()
            .map_err(|e| internal("starting the DynamoDB emulator", e.to_string()))?;
        let dynamodb = Server::start("dynamodb", move |listener, stop| async move {
            let _ = dynoxide::server::serve_with_shutdown(listener, db, async move {
                let _ = stop.await;
            })
            .await;
        })?;
        Ok((kinesis, dynamodb))
    }

    /// The Kinesis endpoint (`http://127.0.0.1:<port>` when embedded).
    pub fn kinesis_endpoint(&self) -> &str {
        &self.kinesis_endpoint
    }

    /// The DynamoDB endpoint.
    pub fn dynamodb_endpoint(&self) -> &str {
        &self.dynamodb_endpoint
    }

    /// Whether the servers are external (named by the endpoint variables).
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// A Kinesis client for these servers (test credentials, `us-east-1`, or the
    /// standard variables' region and credentials).
    pub fn kinesis_client(&self) -> &aws_sdk_kinesis::Client {
        &self.kinesis
    }

    /// A DynamoDB client for these servers.
    pub fn dynamodb_client(&self) -> &aws_sdk_dynamodb::Client {
        &self.dynamodb
    }

    /// Creates a stream and waits until it is ACTIVE.
    ///
    /// # Errors
    ///
    /// An AWS failure, or [`ErrorKind::Timeout`] after 30 s.
    pub fn create_stream(&self, name: &str, shards: i32) -> Result<()> {
        let kinesis = &self.kinesis;
        self.runtime
            .block_on(
                kinesis
                    .create_stream()
                    .stream_name(name)
                    .shard_count(shards)
                    .send(),
            )
            .map_err(|e| Error::aws(format!("creating stream {name}"), e))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self
                .runtime
                .block_on(kinesis.describe_stream_summary().stream_name(name).send())
                .map_err(|e| Error::aws(format!("describing stream {name}"), e))?;
            if out
                .stream_description_summary()
                .is_some_and(|s| *s.stream_status() == StreamStatus::Active)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::new(ErrorKind::Timeout)
                    .with_context(format!("waiting for stream {name} to become active")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes `(partition key, data)` records in order, in PutRecords calls of at most
    /// 500 records and 1 MiB of data.
    ///
    /// # Errors
    ///
    /// An AWS failure, or [`ErrorKind::Aws`] if the stream rejected some records.
    pub fn put(
        &self,
        stream: &str,
        records: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<()> {
        const MAX_CALL_BYTES: usize = 1 << 20;
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let mut entries = Vec::new();
            let mut bytes = 0;
            while let Some((key, data)) = records.next_if(|(k, d)| {
                entries.is_empty()
                    || (entries.len() < 500 && bytes + k.len() + d.len() <= MAX_CALL_BYTES)
            }) {
                bytes += key.len() + data.len();
                entries.push(
                    PutRecordsRequestEntry::builder()
                        .partition_key(key)
                        .data(Blob::new(data))
                        .build()
                        .map_err(|e| internal("building a PutRecords entry", e))?,
                );
            }
            let out = self
                .runtime
                .block_on(
                    self.kinesis
                        .put_records()
                        .stream_name(stream)
                        .set_records(Some(entries))
                        .send(),
                )
                .map_err(|e| Error::aws(format!("writing to stream {stream}"), e))?;
            if out.failed_record_count.unwrap_or(0) > 0 {
                return Err(Error::new(ErrorKind::Aws).with_context(format!(
                    "writing to stream {stream}: some records were rejected"
                )));
            }
        }
        Ok(())
    }

    /// The data of every record `stream` holds now, shard by shard, oldest first (read
    /// with GetRecords from TRIM_HORIZON until a read comes back empty).
    ///
    /// # Errors
    ///
    /// An AWS failure.
    pub fn read_all(&self, stream: &str) -> Result<Vec<Vec<u8>>> {
        let shards = self
            .runtime
            .block_on(self.kinesis.list_shards().stream_name(stream).send())
            .map_err(|e| Error::aws(format!("listing the shards of stream {stream}"), e))?;
        let mut all = Vec::new();
        for shard in shards.shards() {
            let mut iterator = self
                .runtime
                .block_on(
                    self.kinesis
                        .get_shard_iterator()
                        .stream_name(stream)
                        .shard_id(shard.shard_id())
                        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                        .send(),
                )
                .map_err(|e| Error::aws(format!("reading stream {stream}"), e))?
                .shard_iterator;
            while let Some(it) = iterator.take() {
                let out = self
                    .runtime
                    .block_on(self.kinesis.get_records().shard_iterator(it).send())
                    .map_err(|e| Error::aws(format!("reading stream {stream}"), e))?;
                if out.records().is_empty() {
                    break;
                }
                all.extend(out.records().iter().map(|r| r.data().as_ref().to_vec()));
                iterator = out.next_shard_iterator;
            }
        }
        Ok(all)
    }

    /// A consumer of `stream` on these servers, with its tables created.
    ///
    /// # Errors
    ///
    /// As [`Kinsumer::from_clients`] and
    /// [`create_required_tables`](Kinsumer::create_required_tables).
    pub fn consumer(
        &self,
        stream: &str,
        application: &str,
        client_name: &str,
        config: Config,
    ) -> Result<Kinsumer> {
        let consumer = Kinsumer::from_clients(
            &self.kinesis,
            &self.dynamodb,
            stream,
            application,
            client_name,
            config,
        )?;
        consumer.create_required_tables()?;
        Ok(consumer)
    }

    /// Like [`consumer`](Emulators::consumer), with `faults` on both services' clients
    /// (the tables are created through them too).
    ///
    /// # Errors
    ///
    /// As [`consumer`](Emulators::consumer).
    pub fn consumer_with_faults(
        &self,
        stream: &str,
        application: &str,
        client_name: &str,
        config: Config,
        faults: impl Intercept + Clone + 'static,
    ) -> Result<Kinsumer> {
        let kinesis = aws_sdk_kinesis::Client::from_conf(
            self.kinesis
                .config()
                .to_builder()
                .interceptor(faults.clone())
                .build(),
        );
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            self.dynamodb
                .config()
                .to_builder()
                .interceptor(faults)
                .build(),
        );
        let consumer = Kinsumer::from_clients(
            &kinesis,
            &dynamodb,
            stream,
            application,
            client_name,
            config,
        )?;
        consumer.create_required_tables()?;
        Ok(consumer)
    }
}

/// An `SdkConfig` for tests: region and credentials from the standard variables
/// (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), else
/// `us-east-1` and test credentials, which the emulators accept. No endpoint: set one per
/// service, as [`Emulators::kinesis_client`] does.
pub fn sdk_config() -> aws_config::SdkConfig {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    aws_config::SdkConfig::builder()
        .region(Region::new(
            var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
        ))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            var("AWS_ACCESS_KEY_ID").unwrap_or_else(|| "test".into()),
            var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|| "test".into()),
            var("AWS_SESSION_TOKEN"),
            None,
            "kinsumer-testing",
        )))
        .behavior_version(BehaviorVersion::v2026_01_12())
        .build()
}

/// How many calls a [`FaultInjector`] saw and what it did to them.
#[derive(Debug, Default)]
pub struct FaultCounts {
    calls: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    timeouts: AtomicU64,
}

impl FaultCounts {
    /// Calls (attempts) seen.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
    /// Calls answered with a throttling error.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
    /// Calls answered with a 500.
    pub fn server_errors(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
    }
    /// Calls sent where nobody answers, so that they time out.
    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }
    /// All faults injected.
    pub fn injected(&self) -> u64 {
        self.throttled() + self.server_errors() + self.timeouts()
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Throttle,
    ServerError,
    Timeout,
}

#[derive(Debug, Clone, Copy)]
struct Planned(Fault);

impl Storable for Planned {
    type Storer = StoreReplace<Self>;
}

/// An SDK interceptor that makes every n-th call attempt fail, in rotation:
/// **throttling** (the real response replaced by a 400
/// `ProvisionedThroughputExceededException` after the server executed the call — the
/// hardest case for idempotency), **5xx** (a 500 `InternalFailure`), and **timeout** (the
/// request goes to a loopback listener that never answers; give the client an attempt
/// timeout). Deterministic, so runs are reproducible.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    every: u64,
    counts: Arc<FaultCounts>,
    blackhole: Arc<TcpListener>,
}

impl FaultInjector {
    /// Fails one attempt in `every`, counting into `counts`.
    ///
    /// # Errors
    ///
    /// If the loopback listener for timeouts cannot be bound.
    pub fn new(every: u64, counts: Arc<FaultCounts>) -> std::io::Result<Self> {
        Ok(FaultInjector {
            every: every.max(1),
            counts,
            // Never accepted: the kernel completes the handshake, nobody answers.
            blackhole: Arc::new(TcpListener::bind("127.0.0.1:0")?),
        })
    }
}

impl Intercept for FaultInjector {
    fn name(&self) -> &'static str {
        "FaultInjector"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let n = self.counts.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_multiple_of(self.every) {
            return Ok(());
        }
        let fault = match (n / self.every) % 3 {
            0 => Fault::Throttle,
            1 => Fault::ServerError,
            _ => Fault::Timeout,
        };
        if let Fault::Timeout = fault {
            let addr = self.blackhole.local_addr()?;
            context.request_mut().set_uri(format!("http://{addr}/"))?;
            self.counts.timeouts.fetch_add(1, Ordering::Relaxed);
        } else {
            cfg.interceptor_state().store_put(Planned(fault));
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let Some(Planned(fault)) = cfg.load::<Planned>().copied() else {
            return Ok(());
        };
        cfg.interceptor_state().unset::<Planned>();
        let (status, body, counter) = match fault {
            Fault::Throttle => (
                400,
                r#"{"__type":"ProvisionedThroughputExceededException","message":"injected throttling"}"#,
                &self.counts.throttled,
            ),
            _ => (
                500,
                r#"{"__type":"InternalFailure","message":"injected server error"}"#,
                &self.counts.server_errors,
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let response = context.response_mut();
        *response.status_mut() = StatusCode::try_from(status)?;
        *response.body_mut() = SdkBody::from(body);
        Ok(())
    }
}

/// An SDK interceptor that answers every call of one operation with the same service
/// error — for failures retrying never fixes (access denied, a rejected argument) —
/// always, or only while armed.
#[derive(Debug, Clone)]
pub struct AlwaysFail {
    operation: &'static str,
    status: u16,
    code: &'static str,
    armed: Option<Arc<AtomicBool>>,
    /// A body (and its content type) instead of an AWS error.
    body: Option<(&'static str, &'static str)>,
}

impl AlwaysFail {
    /// Fails every `operation` (as the SDK names it: `GetShardIterator`) with HTTP
    /// `status` and error `code` (`AccessDeniedException`).
    pub fn new(operation: &'static str, status: u16, code: &'static str) -> Self {
        AlwaysFail {
            operation,
            status,
            code,
            armed: None,
            body: None,
        }
    }

    /// Answers with this body and content type instead of an AWS error: what a proxy or
    /// a server that does not know the operation may send (an HTML error page).
    #[must_use]
    pub fn with_body(mut self, content_type: &'static str, body: &'static str) -> Self {
        self.body = Some((content_type, body));
        self
    }

    /// Fails only while `armed` is set.
    #[must_use]
    pub fn when(mut self, armed: Arc<AtomicBool>) -> Self {
        self.armed = Some(armed);
        self
    }
}

impl Intercept for AlwaysFail {
    fn name(&self) -> &'static str {
        "AlwaysFail"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let armed = self.armed.as_ref().is_none_or(|a| a.load(Ordering::SeqCst));
        let operation = cfg.load::<Metadata>().map(|m| m.name());
        if armed && operation == Some(self.operation) {
            let response = context.response_mut();
            *response.status_mut() = StatusCode::try_from(self.status)?;
            if let Some((content_type, body)) = self.body {
                response.headers_mut().insert("content-type", content_type);
                *response.body_mut() = SdkBody::from(body);
                return Ok(());
            }
            *response.body_mut() = SdkBody::from(format!(
                r#"{{"__type":"{}","message":"injected {} for {}"}}"#,
                self.code, self.code, self.operation
            ));
        }
        Ok(())
    }
}
