//! The sync–async bridge.
//!
//! Each consumer has one private I/O thread ("kinsumer-io") whose tokio current-thread
//! runtime is always inside `block_on`, and one set of Kinesis and DynamoDB clients.
//! Every other thread — the coordinator, each shard thread, the caller's thread for
//! admin calls — hands its SDK future to that runtime through [`Bridge::block_on`] and
//! waits for the answer on a channel. Every connection in the clients' pool is driven by
//! a runtime that never idles, so no call can stall on a connection whose driver lives
//! on a sleeping runtime.
//!
//! One runtime and one pool keep memory and sockets flat as shards grow (a runtime and
//! client set per thread was measured and dropped: see the CHANGELOG). By default HTTP
//! and JSON decoding for all shards run on that one thread; at the throttle delays
//! Kinesis allows a few shards, it has room to spare (see `BENCHMARKS.md`).
//! With [`Config::with_io_threads`](crate::Config::with_io_threads) above 1 the runtime
//! is multi-threaded: the I/O thread still drives it (inside `block_on`), and calls run
//! on that many workers (`kinsumer-io-worker`), sharing the one pool.
//!
//! Shared clients are safe here precisely because one runtime drives them all. A
//! caller-supplied HTTP client on the SDK config is used as given; clients the caller
//! already used on its own runtime, which then sits idle, do not stall the consumer
//! (`tests/it/bridge.rs` checks it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb as dynamodb;
use aws_sdk_kinesis as kinesis;
use kinesis::config::timeout::TimeoutConfig;
use kinesis::error::SdkError;
use parking_lot::Mutex;

use crate::config::Config;
use crate::endpoint::SeenEndpoint;
use crate::error::{Error, ErrorKind, Result};
use crate::retry;

/// Upper bound on one SDK operation (all its retries), unless the caller's config sets
/// its own: every wait in this crate is bounded.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Calls in flight on the I/O runtime at once. The connection pool opens a connection
/// per concurrent request, so this bounds sockets and their buffers; callers beyond it
/// wait on their own thread. Far above what a few shards need, far below what a
/// thousand idle shards polling together would otherwise open.
const MAX_IN_FLIGHT: usize = 64;

/// The service configurations every thread builds its clients from. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct ClientConfigs {
    kinesis: kinesis::Config,
    dynamodb: dynamodb::Config,
    /// The configuration the clients came from, when there is one: STS (for an assumed
    /// role) is reached as it says.
    base: Option<SdkConfig>,
}

impl ClientConfigs {
    pub(crate) fn from_sdk_config(sdk: &SdkConfig) -> Self {
        let (mut k, mut d) = (
            kinesis::config::Builder::from(sdk),
            dynamodb::config::Builder::from(sdk),
        );
        // A client without a behavior version panics when built: supply ours if the
        // caller's configuration has none.
        if sdk.behavior_version().is_none() {
            k.set_behavior_version(Some(behavior_version()));
            d.set_behavior_version(Some(behavior_version()));
        }
        let mut configs = Self::from_service_configs(k.build(), d.build());
        configs.base = Some(sdk.clone());
        configs
    }

    pub(crate) fn from_clients(kinesis: &kinesis::Client, dynamodb: &dynamodb::Client) -> Self {
        Self::from_service_configs(kinesis.config().clone(), dynamodb.config().clone())
    }

    fn from_service_configs(k: kinesis::Config, d: dynamodb::Config) -> Self {
        ClientConfigs {
            kinesis: k,
            dynamodb: d,
            base: None,
        }
    }

    /// With a role configured, Kinesis calls are signed with the role's credentials: an
    /// [`AssumeRoleProvider`](aws_config::sts::AssumeRoleProvider) (the SDK's own,
    /// refreshing before expiry through the client's identity cache) over the base
    /// credentials. DynamoDB keeps the base credentials. Makes no network call.
    pub(crate) fn with_role(self, config: &Config) -> Result<Self> {
        let Some(role) = config.role() else {
            return Ok(self);
        };
        // A client's configuration does not give its credentials back: the base
        // credentials must come from an SdkConfig (as in the Go library, where the role
        // applies to `New` and `NewWithSession`, not to clients passed in).
        let Some(mut base) = self.base.clone() else {
            return Err(
                Error::new(ErrorKind::AssumeRoleFailed).with_context(format!(
                    "role {}: from_clients takes ready-made clients; build the consumer with \
                 Kinsumer::new or from_sdk_config, or give it a Kinesis client that already \
                 assumes the role",
                    role.arn
                )),
            );
        };
        if base.time_source().is_none() {
            base = base
                .into_builder()
                .time_source(aws_smithy_async::time::SystemTimeSource::new())
                .build();
        }
        if base.behavior_version().is_none() {
            base = base
                .into_builder()
                .behavior_version(behavior_version())
                .build();
        }
        let mut provider = aws_config::sts::AssumeRoleProvider::builder(&role.arn).configure(&base);
        if let Some(id) = &role.external_id {
            provider = provider.external_id(id);
        }
        if let Some(name) = &role.session_name {
            provider = provider.session_name(name);
        }
        // Building reads no credentials and makes no call.
        let provider = runtime()?.block_on(provider.build());
        let kinesis = self
            .kinesis
            .to_builder()
            .credentials_provider(provider)
            .build();
        Ok(ClientConfigs { kinesis, ..self })
    }

    /// Fills in what the caller's configuration leaves open, so that every wait is
    /// bounded: an operation timeout (all of a call's attempts), an attempt timeout well
    /// inside the lease time, and the SDK retry policy ([`retry::sdk_retry_config`]).
    /// Settings the caller made are kept.
    pub(crate) fn with_defaults(self, config: &Config) -> Self {
        let attempt = attempt_timeout(config);
        let k = self.kinesis;
        let mut kb = k.to_builder();
        kb.set_timeout_config(Some(bounded(k.timeout_config(), attempt)));
        if k.retry_config().is_none() {
            kb.set_retry_config(Some(retry::sdk_retry_config()));
        }
        let d = self.dynamodb;
        let mut db = d.to_builder();
        db.set_timeout_config(Some(bounded(d.timeout_config(), attempt)));
        if d.retry_config().is_none() {
            db.set_retry_config(Some(retry::sdk_retry_config()));
        }
        ClientConfigs {
            kinesis: kb.build(),
            dynamodb: db.build(),
            base: self.base,
        }
    }

    /// The longer of the two clients' attempt timeouts (set by [`with_defaults`]).
    ///
    /// [`with_defaults`]: ClientConfigs::with_defaults
    pub(crate) fn attempt_timeout(&self) -> Duration {
        let of = |t: Option<&TimeoutConfig>| {
            t.and_then(TimeoutConfig::operation_attempt_timeout)
                .unwrap_or(OPERATION_TIMEOUT)
        };
        of(self.kinesis.timeout_config()).max(of(self.dynamodb.timeout_config()))
    }

    /// Whether both services have a region: without one, every call fails to sign.
    pub(crate) fn has_region(&self) -> bool {
        self.kinesis.region().is_some() && self.dynamodb.region().is_some()
    }

    /// Loads the default AWS configuration chain (environment, profile, IMDS, …).
    pub(crate) fn load_default() -> Result<Self> {
        let runtime = runtime()?;
        let sdk = runtime.block_on(
            aws_config::defaults(behavior_version())
                .retry_config(retry::sdk_retry_config())
                .load(),
        );
        Ok(Self::from_sdk_config(&sdk))
    }
}

/// The SDK behavior version this crate is written and tested against: pinned, so that an
/// SDK upgrade does not change retry or timeout defaults under the crate's own. (A library
/// must not turn on `behavior-version-latest` for its dependents.)
fn behavior_version() -> aws_config::BehaviorVersion {
    aws_config::BehaviorVersion::v2026_01_12()
}

/// The timeout config to install, if `existing` has no operation timeout.
fn bounded(existing: Option<&TimeoutConfig>, attempt: Duration) -> TimeoutConfig {
    let mut t = existing.map_or_else(TimeoutConfig::builder, TimeoutConfig::to_builder);
    if existing
        .and_then(TimeoutConfig::operation_timeout)
        .is_none()
    {
        t = t.operation_timeout(OPERATION_TIMEOUT);
    }
    if existing
        .and_then(TimeoutConfig::operation_attempt_timeout)
        .is_none()
    {
        t = t.operation_attempt_timeout(attempt);
    }
    t.build()
}

/// One attempt's limit: half the lease time (a hung call must not outlive a lease),
/// between 2 s and 10 s.
fn attempt_timeout(config: &Config) -> Duration {
    (config.lease_ttl() / 2).clamp(Duration::from_secs(2), Duration::from_secs(10))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    io_runtime(1)
}

/// The I/O runtime: one thread (the one that drives it), or `threads` workers.
fn io_runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads).thread_name("kinsumer-io-worker");
        b
    };
    builder.enable_all().build().map_err(|e| {
        Error::new(ErrorKind::Internal)
            .with_context("building a tokio runtime")
            .with_source(e)
    })
}

/// Resolves once [`Shutdown::trigger`] was called: the I/O thread's `block_on` target.
#[derive(Debug, Default)]
struct Shutdown {
    done: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Shutdown {
    fn trigger(&self) {
        self.done.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().take() {
            w.wake();
        }
    }
}

struct ShutdownFuture(Arc<Shutdown>);

impl Future for ShutdownFuture {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.done.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        *self.0.waker.lock() = Some(cx.waker().clone());
        // Re-check: a trigger between the load and storing the waker must not be lost.
        if self.0.done.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The I/O thread; stopped and joined when the last [`Bridge`] clone goes away.
struct IoThread {
    handle: tokio::runtime::Handle,
    /// [`MAX_IN_FLIGHT`] call slots: a call's task holds one while it runs.
    permits: Arc<tokio::sync::Semaphore>,
    shutdown: Arc<Shutdown>,
    join: Option<JoinHandle<()>>,
    /// Disconnects when the I/O thread ends.
    done: crossbeam_channel::Receiver<()>,
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(join) = self.join.take() {
            // Never join ourselves (a last clone dropped by a task on the I/O thread), and
            // never wait without a deadline (a DNS lookup can hang on a blocking thread).
            if join.thread().id() == std::thread::current().id() {
                return;
            }
            if self.done.recv_timeout(IO_STOP_TIMEOUT)
                == Err(crossbeam_channel::RecvTimeoutError::Timeout)
            {
                log::warn!(
                    "the kinsumer I/O thread did not stop within {IO_STOP_TIMEOUT:?}; leaving it"
                );
                return;
            }
            if join.join().is_err() {
                log::error!("the kinsumer I/O thread panicked");
            }
        }
    }
}

/// How long dropping the last handle waits for the I/O thread to end.
const IO_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a call waits for the I/O runtime's answer: past every operation timeout
/// this crate sets (a caller's own, longer one is cut here).
const CALL_WAIT_LIMIT: Duration = Duration::from_secs(120);

/// A handle on the consumer's I/O runtime and SDK clients. Cheap to clone; every thread
/// of a consumer holds one.
#[derive(Clone)]
pub(crate) struct Bridge {
    io: Arc<IoThread>,
    kinesis: kinesis::Client,
    dynamodb: dynamodb::Client,
    /// When this disconnects (or sends), a call waiting in [`Bridge::block_on`] gives up
    /// at once and is cancelled ([`Bridge::interruptible`]).
    interrupt: Option<crossbeam_channel::Receiver<()>>,
    /// A call waiting in [`Bridge::block_on`] gives up (and is cancelled) at this time
    /// ([`Bridge::until`]).
    deadline: Option<std::time::Instant>,
    /// Where the Kinesis calls went, for errors that depend on it.
    kinesis_endpoint: SeenEndpoint,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").finish_non_exhaustive()
    }
}

impl Bridge {
    /// Starts the I/O thread (returning once its runtime is built, with `threads`
    /// workers if more than one) and the clients.
    pub(crate) fn new(configs: &ClientConfigs, threads: usize) -> Result<Self> {
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let shutdown = Arc::new(Shutdown::default());
        let stop = ShutdownFuture(Arc::clone(&shutdown));
        let join = std::thread::Builder::new()
            .name("kinsumer-io".into())
            .spawn(move || match io_runtime(threads) {
                Ok(rt) => {
                    let _done = done_tx;
                    let _ = ready_tx.send(Ok(rt.handle().clone()));
                    rt.block_on(stop);
                    rt.shutdown_timeout(Duration::from_secs(5));
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| {
                Error::new(ErrorKind::Internal)
                    .with_context("starting the I/O thread")
                    .with_source(e)
            })?;
        let handle = match ready_rx.recv() {
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => {
                let _ = join.join();
                return Err(e);
            }
            Err(_) => {
                let _ = join.join();
                return Err(Error::new(ErrorKind::Internal).with_context("starting the I/O thread"));
            }
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let kinesis_endpoint = SeenEndpoint::default();
        Ok(Bridge {
            io: Arc::new(IoThread {
                handle,
                permits,
                shutdown,
                join: Some(join),
                done,
            }),
            kinesis: kinesis::Client::from_conf(
                configs
                    .kinesis
                    .to_builder()
                    .interceptor(kinesis_endpoint.clone())
                    .build(),
            ),
            dynamodb: dynamodb::Client::from_conf(configs.dynamodb.clone()),
            interrupt: None,
            deadline: None,
            kinesis_endpoint,
        })
    }

    /// Where the Kinesis calls go: "region R, endpoint E".
    pub(crate) fn kinesis_place(&self) -> String {
        let region = self.kinesis.config().region().map(|r| r.as_ref());
        crate::endpoint::describe(region, self.kinesis_endpoint.get())
    }

    /// This bridge, but its [`block_on`](Bridge::block_on) calls give up at `deadline`
    /// (failing as a call the runtime did not answer in time, and cancelled): for work
    /// with a bound of its own, such as a stop's last writes.
    pub(crate) fn until(&self, deadline: std::time::Instant) -> Bridge {
        Bridge {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    /// This bridge, but its [`block_on`](Bridge::block_on) calls end as soon as `by`
    /// disconnects, failing with [`interrupted`] and cancelling the call: for a thread
    /// whose work must not hold up a stop (the coordinator's shard checks).
    pub(crate) fn interruptible(&self, by: crossbeam_channel::Receiver<()>) -> Bridge {
        Bridge {
            interrupt: Some(by),
            ..self.clone()
        }
    }

    pub(crate) fn kinesis(&self) -> &kinesis::Client {
        &self.kinesis
    }

    pub(crate) fn dynamodb(&self) -> &dynamodb::Client {
        &self.dynamodb
    }

    /// Runs one SDK call on the I/O runtime and waits for its result on this thread,
    /// bounded by the operation timeout of the clients' configs and by
    /// [`CALL_WAIT_LIMIT`]. If the runtime is gone or the call's task panicked, the call
    /// fails with an error that is not retried (a construction failure naming the I/O
    /// runtime): shards then fail and, failing again, end the consumer with that message,
    /// instead of retrying a dead runtime forever.
    ///
    /// Takes the request (the SDK's fluent builder), not its future: see [`Request`].
    #[allow(
        clippy::result_large_err,
        reason = "passes the SDK's own result type through unchanged"
    )]
    pub(crate) fn block_on<R: Request>(&self, request: R) -> Result<R::Ok, SdkError<R::Err>> {
        let call = self.call(request);
        let limit = match self.deadline {
            Some(d) => d
                .saturating_duration_since(std::time::Instant::now())
                .min(CALL_WAIT_LIMIT),
            None => CALL_WAIT_LIMIT,
        };
        let late = if limit < CALL_WAIT_LIMIT {
            "no answer before the deadline (the stop's time ran out)"
        } else {
            NO_ANSWER
        };
        call.wait(limit, self.interrupt.as_ref(), late)
    }

    /// Starts one SDK call on the I/O runtime (once a call slot is free) without waiting
    /// for it: [`Call::wait`] or [`Call::try_result`] collect the answer. A commit in
    /// flight must not hold up reading.
    pub(crate) fn call<R: Request>(&self, request: R) -> Call<R::Ok, R::Err> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let permits = Arc::clone(&self.io.permits);
        let task = self.io.handle.spawn(async move {
            // The semaphore is never closed.
            let Ok(_slot) = permits.acquire().await else {
                return;
            };
            // Built here, on the I/O thread, and boxed: see [`Request`].
            let future = Box::pin(request.send());
            let _ = tx.send(future.await);
        });
        Call {
            answer: rx,
            task: task.abort_handle(),
        }
    }
}

/// An SDK request, ready to send: the fluent builder of one operation.
///
/// Threads hand the bridge the builder (a few hundred bytes), never the SDK's future:
/// that future is 6–8 KiB, and moved by value through the spawn it lands in every frame
/// on the way, so each shard thread touched ~70 KiB of stack it then kept resident
/// (1,000 idle shards: 72 MiB of the 153 MiB RSS). The I/O task calls `send` itself and
/// boxes the future, so it is built on the I/O thread, straight into the heap.
pub(crate) trait Request: Send + 'static {
    type Ok: Send + 'static;
    type Err: Send + 'static;
    fn send(self) -> impl Future<Output = Result<Self::Ok, SdkError<Self::Err>>> + Send;
}

/// A [`Request`] made by a closure, for requests that are not a plain fluent builder
/// (a customized operation): the closure runs on the I/O thread.
pub(crate) struct Later<F>(pub(crate) F);

impl<F, Fut, T, E> Request for Later<F>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, SdkError<E>>> + Send,
    T: Send + 'static,
    E: Send + 'static,
{
    type Ok = T;
    type Err = E;
    fn send(self) -> impl Future<Output = Result<T, SdkError<E>>> + Send {
        (self.0)()
    }
}

/// [`Request`] for the fluent builders of the operations this crate calls.
macro_rules! requests {
    ($($sdk:ident :: $op:ident :: $builder:ident => $out:ident, $err:ident;)*) => {$(
        impl Request for $sdk::operation::$op::builders::$builder {
            type Ok = $sdk::operation::$op::$out;
            type Err = $sdk::operation::$op::$err;
            fn send(self) -> impl Future<Output = Result<Self::Ok, SdkError<Self::Err>>> + Send {
                $sdk::operation::$op::builders::$builder::send(self)
            }
        }
    )*};
}

requests! {
    kinesis::get_records::GetRecordsFluentBuilder => GetRecordsOutput, GetRecordsError;
    kinesis::get_shard_iterator::GetShardIteratorFluentBuilder
        => GetShardIteratorOutput, GetShardIteratorError;
    kinesis::list_shards::ListShardsFluentBuilder => ListShardsOutput, ListShardsError;
    kinesis::describe_stream_summary::DescribeStreamSummaryFluentBuilder
        => DescribeStreamSummaryOutput, DescribeStreamSummaryError;
    kinesis::describe_stream_consumer::DescribeStreamConsumerFluentBuilder
        => DescribeStreamConsumerOutput, DescribeStreamConsumerError;
    kinesis::register_stream_consumer::RegisterStreamConsumerFluentBuilder
        => RegisterStreamConsumerOutput, RegisterStreamConsumerError;
    kinesis::deregister_stream_consumer::DeregisterStreamConsumerFluentBuilder
        => DeregisterStreamConsumerOutput, DeregisterStreamConsumerError;
    kinesis::list_stream_consumers::ListStreamConsumersFluentBuilder
        => ListStreamConsumersOutput, ListStreamConsumersError;
    kinesis::put_record::PutRecordFluentBuilder => PutRecordOutput, PutRecordError;
    dynamodb::get_item::GetItemFluentBuilder => GetItemOutput, GetItemError;
    dynamodb::put_item::PutItemFluentBuilder => PutItemOutput, PutItemError;
    dynamodb::update_item::UpdateItemFluentBuilder => UpdateItemOutput, UpdateItemError;
    dynamodb::delete_item::DeleteItemFluentBuilder => DeleteItemOutput, DeleteItemError;
    dynamodb::scan::ScanFluentBuilder => ScanOutput, ScanError;
    dynamodb::query::QueryFluentBuilder => QueryOutput, QueryError;
    dynamodb::create_table::CreateTableFluentBuilder => CreateTableOutput, CreateTableError;
    dynamodb::delete_table::DeleteTableFluentBuilder => DeleteTableOutput, DeleteTableError;
    dynamodb::describe_table::DescribeTableFluentBuilder
        => DescribeTableOutput, DescribeTableError;
    dynamodb::update_time_to_live::UpdateTimeToLiveFluentBuilder
        => UpdateTimeToLiveOutput, UpdateTimeToLiveError;
}

/// An SDK call running on the I/O runtime. Dropping it cancels the call if it is still
/// running (or still waiting for a call slot), as reqwest's blocking client does: work
/// nobody waits for must not hold one of the [`MAX_IN_FLIGHT`] slots.
pub(crate) struct Call<T, E> {
    answer: crossbeam_channel::Receiver<Result<T, SdkError<E>>>,
    task: tokio::task::AbortHandle,
}

impl<T, E> Drop for Call<T, E> {
    fn drop(&mut self) {
        // A no-op once the task has finished.
        self.task.abort();
    }
}

impl<T, E> Call<T, E> {
    /// Waits up to `limit` for the answer. If the runtime is gone or the call's task
    /// panicked, the call fails with an error that is not retried (a construction failure
    /// naming the I/O runtime); if the time runs out, with `late`. Gives up at once (with
    /// [`interrupted`]) when `by` disconnects or sends; the caller then drops the call,
    /// which cancels it.
    #[allow(
        clippy::result_large_err,
        reason = "passes the SDK's own result type through unchanged"
    )]
    pub(crate) fn wait(
        &self,
        limit: Duration,
        by: Option<&crossbeam_channel::Receiver<()>>,
        late: &'static str,
    ) -> Result<T, SdkError<E>> {
        let mut sel = crossbeam_channel::Select::new();
        let answer = sel.recv(&self.answer);
        if let Some(by) = by {
            sel.recv(by);
        }
        match sel.select_timeout(limit) {
            Ok(op) if op.index() == answer => op.recv(&self.answer).unwrap_or_else(|_| Err(lost())),
            Ok(op) => {
                if let Some(by) = by {
                    let _ = op.recv(by);
                }
                Err(interrupted())
            }
            Err(_) => Err(SdkError::construction_failure(late)),
        }
    }

    /// Waits up to `slice` for the answer: `None` if it has not come yet (the call goes on).
    #[allow(
        clippy::result_large_err,
        reason = "passes the SDK's own result type through unchanged"
    )]
    pub(crate) fn wait_for(&self, slice: Duration) -> Option<Result<T, SdkError<E>>> {
        match self.answer.recv_timeout(slice) {
            Ok(answer) => Some(answer),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Some(Err(lost())),
        }
    }

    /// The answer if it has come (`Some(Err(…))` if the runtime lost the call).
    #[allow(
        clippy::result_large_err,
        reason = "passes the SDK's own result type through unchanged"
    )]
    pub(crate) fn try_result(&self) -> Option<Result<T, SdkError<E>>> {
        match self.answer.try_recv() {
            Ok(answer) => Some(answer),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => Some(Err(lost())),
        }
    }
}

/// What a call that got no answer within its wait says.
const NO_ANSWER: &str = "no answer from the kinsumer I/O runtime in time";

/// The error of a call given up because the consumer is stopping.
pub(crate) fn interrupted<E>() -> SdkError<E> {
    SdkError::construction_failure("interrupted: the consumer is stopping")
}

/// The error of a call the I/O runtime lost (its thread ended, or the call panicked).
pub(crate) fn lost<E>() -> SdkError<E> {
    SdkError::construction_failure(
        "the kinsumer I/O runtime lost the call (its thread ended, or the call panicked)",
    )
}

/// The I/O runtime's call slots, for a task that makes calls of its own: each call holds
/// one of the [`MAX_IN_FLIGHT`] slots while it runs, as calls through [`Bridge::call`] do.
#[derive(Clone, Debug)]
pub(crate) struct CallSlots(Arc<tokio::sync::Semaphore>);

impl CallSlots {
    /// Waits for a free slot; the call runs while the returned guard lives.
    pub(crate) async fn acquire(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed.
        self.0.acquire().await.ok()
    }
}

impl Bridge {
    /// The call slots, for [`spawn`](Bridge::spawn)ed tasks that make short calls.
    pub(crate) fn call_slots(&self) -> CallSlots {
        CallSlots(Arc::clone(&self.io.permits))
    }

    /// Starts a long-lived task on the I/O runtime (a fan-out subscription, an idle
    /// shard's polling) outside the [`MAX_IN_FLIGHT`] call slots: a subscription holds
    /// its connection for minutes; a task making short calls takes a slot for each
    /// through [`call_slots`](Bridge::call_slots). The task ends when the returned handle
    /// is aborted (or on its own).
    pub(crate) fn spawn(
        &self,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::AbortHandle {
        self.io.handle.spawn(task).abort_handle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::config::retry::RetryConfig;

    fn configs(k: kinesis::config::Builder, d: dynamodb::config::Builder) -> ClientConfigs {
        ClientConfigs::from_service_configs(k.build(), d.build())
    }

    fn bare_bridge() -> Bridge {
        let configs = configs(
            kinesis::Config::builder().behavior_version(behavior_version()),
            dynamodb::Config::builder().behavior_version(behavior_version()),
        );
        Bridge::new(&configs, 1).unwrap()
    }

    fn never() -> impl Future<Output = Result<(), SdkError<()>>> + Send + 'static {
        std::future::pending()
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_call_nobody_waits_for_any_more_gives_its_slot_back() {
        let bridge = bare_bridge();
        let permits = Arc::clone(&bridge.io.permits);
        // More calls than slots: the last ones wait for a slot.
        let calls: Vec<_> = (0..MAX_IN_FLIGHT + 8)
            .map(|_| bridge.call(Later(never)))
            .collect();
        wait_until("every slot taken", || permits.available_permits() == 0);
        assert!(
            calls[0].wait_for(Duration::from_millis(20)).is_none(),
            "a pending call has no answer"
        );
        // A caller that times out gives up too.
        let timed_out = calls[1].wait(Duration::from_millis(20), None, NO_ANSWER);
        assert!(timed_out.is_err());
        drop(calls);
        wait_until("every slot free again", || {
            permits.available_permits() == MAX_IN_FLIGHT
        });
        // And the runtime serves new calls.
        let answer = bridge.block_on(Later(|| async { Ok::<_, SdkError<()>>(7) }));
        assert_eq!(answer.unwrap(), 7);
    }

    #[test]
    fn every_call_gets_bounded_and_the_callers_settings_are_kept() {
        let fast = Config::default().with_shard_check_frequency(Duration::from_secs(1));
        let filled =
            configs(kinesis::Config::builder(), dynamodb::Config::builder()).with_defaults(&fast);
        let t = filled.kinesis.timeout_config().unwrap();
        assert_eq!(t.operation_timeout(), Some(OPERATION_TIMEOUT));
        // Half the 5 s lease time.
        assert_eq!(
            t.operation_attempt_timeout(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            filled.dynamodb.retry_config().unwrap().max_attempts(),
            retry::sdk_retry_config().max_attempts()
        );
        let mine = TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_millis(700))
            .build();
        let kept = configs(
            kinesis::Config::builder()
                .timeout_config(mine)
                .retry_config(RetryConfig::standard().with_max_attempts(7)),
            dynamodb::Config::builder(),
        )
        .with_defaults(&Config::default());
        let t = kept.kinesis.timeout_config().unwrap();
        assert_eq!(
            t.operation_attempt_timeout(),
            Some(Duration::from_millis(700))
        );
        assert_eq!(t.operation_timeout(), Some(OPERATION_TIMEOUT));
        assert_eq!(kept.kinesis.retry_config().unwrap().max_attempts(), 7);
        // Default config: half of 5 min, capped at 10 s.
        let t = kept.dynamodb.timeout_config().unwrap();
        assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(10)));
    }
}
