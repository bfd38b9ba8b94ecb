//! [`Kinsumer`]: the consumer handle, its record iterator and its stop handle.

use std::iter::FusedIterator;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};
use parking_lot::Mutex;

use crate::batch::{Batch, BatchHead, Batches};
use crate::bridge::{Bridge, ClientConfigs};
use crate::budget::Budget;
use crate::checkpoints::Owner;
use crate::config::{CheckpointMode, Config};
use crate::coordinator::{self, Command, CoordinatorHandle, CoordinatorParts};
use crate::error::{Error, ErrorKind, Result};
use crate::fanout;
use crate::health::{Health, HealthState, OwnedShard, Position};
use crate::notices::Notices;
use crate::record::{ProcessedMarker, Record};
use crate::stream;
use crate::tables::{self, Names};

/// Upper bound on `stop()` waiting for the coordinator.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The stop signal shared by the consumer, its stop handles and its iterators.
#[derive(Debug)]
struct StopSignal {
    requested: AtomicBool,
    /// Dropped on stop: wakes every iterator blocked on the channels.
    wake: Mutex<Option<Sender<()>>>,
}

impl StopSignal {
    fn request(&self) {
        self.requested.store(true, Ordering::Release);
        self.wake.lock().take();
    }

    fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }
}

/// Stops a [`Kinsumer`] from another thread (a signal handler, a supervisor). Cloneable.
///
/// [`stop`](StopHandle::stop) ends record iteration: the iterator returns `None` at its
/// next pull (in auto mode, after counting the previous record processed). The final
/// commit and lease release happen when the consumer itself is stopped or dropped,
/// normally right after the `for` loop.
///
/// # Examples
///
/// ```no_run
/// # fn demo(consumer: kinsumer::Kinsumer) -> Result<(), Box<dyn std::error::Error>> {
/// let handle = consumer.stop_handle();
/// ctrlc::set_handler(move || handle.stop())?;
/// for record in consumer.records() {
///     let record = record?;
///     println!("{}", String::from_utf8_lossy(record.data()));
/// }
/// consumer.stop(); // commits and releases every shard
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StopHandle {
    signal: Arc<StopSignal>,
}

impl StopHandle {
    /// Requests the stop. Idempotent; never blocks.
    pub fn stop(&self) {
        self.signal.request();
    }
}

enum RunState {
    NotStarted,
    Running {
        commands: Sender<Command>,
        /// Dropped to interrupt the coordinator's calls at once when stopping.
        interrupt: Sender<()>,
        coordinator: CoordinatorHandle,
    },
    Stopped,
}

/// A Kinesis stream consumer that shares the stream's shards with the other clients of
/// the same application.
///
/// Create it with [`Kinsumer::new`], [`Kinsumer::from_sdk_config`] or
/// [`Kinsumer::from_clients`], make sure the tables exist
/// ([`create_required_tables`](Kinsumer::create_required_tables)), [`run`](Kinsumer::run)
/// it, and iterate [`records`](Kinsumer::records). Stopping (explicitly or by dropping)
/// commits what was processed and releases every shard to the rest of the fleet.
///
/// # Examples
///
/// ```no_run
/// use kinsumer::{Config, Kinsumer};
///
/// # fn main() -> Result<(), kinsumer::Error> {
/// let consumer = Kinsumer::new("my-stream", "my-app", "worker-1", Config::default())?;
/// consumer.create_required_tables()?;
/// consumer.run()?;
/// for record in consumer.records() {
///     let record = record?;
///     println!("{}: {} bytes", record.shard_id(), record.data().len());
/// }
/// # Ok(())
/// # }
/// ```
pub struct Kinsumer {
    names: Arc<Names>,
    owner: Arc<Owner>,
    config: Config,
    /// The I/O runtime and SDK clients every thread of this consumer calls through.
    bridge: Bridge,
    state: Mutex<RunState>,
    signal: Arc<StopSignal>,
    wake: Receiver<()>,
    records_tx: Sender<Batch>,
    records: Receiver<Batch>,
    /// The record and byte bound on `records`.
    budget: Arc<Budget>,
    /// The batch `records()` is handing out one record at a time, with what is left of
    /// it: the next pull of any iterator goes on with it (a `batches()` iterator takes
    /// the rest whole).
    loose: Mutex<Option<(BatchHead, std::vec::IntoIter<Record>)>>,
    /// The error that ended consumption; capacity one: the first one wins.
    fatal_tx: Sender<Error>,
    fatal_rx: Receiver<Error>,
    /// What the coordinator could not finish when told to stop.
    closed_tx: Sender<Vec<String>>,
    closed_rx: Receiver<Vec<String>>,
    /// Disconnects when the coordinator thread ends, however it ends.
    /// Set once by `run()`; read on every pull without a lock.
    coordinator_done: std::sync::OnceLock<Receiver<()>>,
    health: Arc<HealthState>,
    /// Auto mode: the records iterators hold, for the threads that pulled them.
    hands: Arc<Hands>,
    fatal: AtomicBool,
    /// The `metrics` feature's export thread, from `run()` to the stop.
    #[cfg(feature = "metrics")]
    exporter: Mutex<Option<crate::meter::export::Exporter>>,
}

impl std::fmt::Debug for Kinsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kinsumer")
            .field("stream", &self.names.stream)
            .field("client_name", &self.owner.name)
            .field("client_id", &self.owner.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Kinsumer {
    /// A consumer using the default AWS configuration chain (environment, profile,
    /// instance metadata, …) — the Go `New`.
    ///
    /// `stream_name` is the stream's name, or its ARN
    /// (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`): every Kinesis call then names the
    /// stream by ARN, which is how a stream of another account, shared with this one by
    /// a resource policy, is read without assuming a role. The tables are named after
    /// `application_name` either way. The same holds for every constructor here and for
    /// [`Fleet`](crate::Fleet).
    ///
    /// # Errors
    ///
    /// An empty or invalid stream or application name ([`ErrorKind::InvalidArn`] for a
    /// malformed stream ARN), an invalid [`Config`],
    /// [`ErrorKind::NoRegion`] when no AWS region is configured, or a runtime that cannot
    /// be built. No network call is made for bad input.
    pub fn new(
        stream_name: &str,
        application_name: &str,
        client_name: &str,
        config: Config,
    ) -> Result<Self> {
        Names::new(stream_name, application_name)?;
        config.validate()?;
        let configs = ClientConfigs::load_default()?;
        Self::build(configs, stream_name, application_name, client_name, config)
    }

    /// A consumer whose clients are built from `sdk_config` — the Go `NewWithSession`.
    ///
    /// # Errors
    ///
    /// As [`Kinsumer::new`].
    pub fn from_sdk_config(
        sdk_config: &SdkConfig,
        stream_name: &str,
        application_name: &str,
        client_name: &str,
        config: Config,
    ) -> Result<Self> {
        let configs = ClientConfigs::from_sdk_config(sdk_config);
        Self::build(configs, stream_name, application_name, client_name, config)
    }

    /// A consumer built from explicit SDK clients — the Go `NewWithInterfaces`. The
    /// consumer makes its own pair of clients from these clients' configurations
    /// (endpoints, credentials, interceptors, retry and timeout settings are kept) and
    /// drives them on its private I/O thread.
    ///
    /// # Errors
    ///
    /// As [`Kinsumer::new`].
    pub fn from_clients(
        kinesis: &aws_sdk_kinesis::Client,
        dynamodb: &aws_sdk_dynamodb::Client,
        stream_name: &str,
        application_name: &str,
        client_name: &str,
        config: Config,
    ) -> Result<Self> {
        let configs = ClientConfigs::from_clients(kinesis, dynamodb);
        Self::build(configs, stream_name, application_name, client_name, config)
    }

    fn build(
        configs: ClientConfigs,
        stream_name: &str,
        application_name: &str,
        client_name: &str,
        config: Config,
    ) -> Result<Self> {
        let names = Names::new(stream_name, application_name)?;
        if client_name.trim().is_empty() {
            return Err(Error::new(ErrorKind::InvalidName)
                .with_context("the client name must not be empty"));
        }
        #[cfg(feature = "metrics")]
        let config = config.measured(Arc::new(crate::meter::Meters::new(
            stream_name,
            application_name,
        )));
        let bridge = connect(&configs, &config)?;
        let (records_tx, records) = crossbeam_channel::bounded(config.buffer_size());
        let config_buffer_bytes = config.buffer_bytes();
        let config_buffer_records = config.buffer_size();
        let (fatal_tx, fatal_rx) = crossbeam_channel::bounded(1);
        let (closed_tx, closed_rx) = crossbeam_channel::bounded(1);
        let (wake_tx, wake) = crossbeam_channel::bounded(0);
        Ok(Kinsumer {
            names: Arc::new(names),
            owner: Arc::new(Owner {
                id: new_client_id(),
                name: client_name.to_owned(),
            }),
            bridge,
            config,
            state: Mutex::new(RunState::NotStarted),
            signal: Arc::new(StopSignal {
                requested: AtomicBool::new(false),
                wake: Mutex::new(Some(wake_tx)),
            }),
            wake,
            records_tx,
            records,
            fatal_tx,
            fatal_rx,
            closed_tx,
            closed_rx,
            coordinator_done: std::sync::OnceLock::new(),
            health: Arc::new(HealthState::default()),
            budget: Arc::new(Budget::new(config_buffer_records, config_buffer_bytes)),
            loose: Mutex::new(None),
            hands: Arc::default(),
            fatal: AtomicBool::new(false),
            #[cfg(feature = "metrics")]
            exporter: Mutex::new(None),
        })
    }

    /// The client name given at construction (Go: `GetClientName`).
    pub fn client_name(&self) -> &str {
        &self.owner.name
    }

    /// This client's unique id in the clients table and in lease rows.
    pub fn client_id(&self) -> &str {
        &self.owner.id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Creates the application's three DynamoDB tables if missing and waits until they
    /// are ACTIVE (polling at the waiter delay). Idempotent.
    ///
    /// # Errors
    ///
    /// An AWS failure, or [`ErrorKind::Timeout`] if the tables do not become active in
    /// time.
    pub fn create_required_tables(&self) -> Result<()> {
        tables::create(&self.bridge, &self.names, &self.config)
    }

    /// Deletes the application's three tables (those that exist) and waits until they
    /// are gone. Idempotent.
    ///
    /// # Errors
    ///
    /// An AWS failure, or [`ErrorKind::Timeout`].
    pub fn delete_tables(&self) -> Result<()> {
        tables::delete(&self.bridge, &self.names, &self.config)
    }

    /// Writes one record to `stream_name` (any stream, as Go's `Publish`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NoSuchStream`], or an AWS failure.
    pub fn publish(&self, stream_name: &str, partition_key: &str, data: &[u8]) -> Result<()> {
        stream::publish(&self.bridge, stream_name, partition_key, data)
    }

    /// Starts consuming, without blocking for records: checks that the tables and the
    /// stream are ready (waiting, at the waiter delay, for tables or a stream that another
    /// process is still creating), registers this client, starts the coordinator and one thread
    /// per shard assigned to this client. Records then arrive through
    /// [`records`](Kinsumer::records).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::RunTwice`] on a second call (also after a stop);
    /// [`ErrorKind::TableNotFound`] / [`ErrorKind::TableNotReady`];
    /// [`ErrorKind::NoSuchStream`] / [`ErrorKind::StreamBusy`]; AWS failures.
    pub fn run(&self) -> Result<()> {
        let mut state = self.state.lock();
        if !matches!(*state, RunState::NotStarted) {
            return Err(Error::new(ErrorKind::RunTwice));
        }
        tables::check_ready(&self.bridge, &self.names, &self.config)?;
        stream::wait_ready(
            &self.bridge,
            &self.names.stream,
            self.config.list_shards_for_readiness(),
            self.config.dynamo_waiter_delay(),
            tables::waiter_deadline(&self.config),
        )?;
        let consumer = match self.config.fan_out() {
            Some(c) => Some(fanout::resolve(
                &self.bridge,
                &self.names.stream,
                c,
                self.config.dynamo_waiter_delay(),
                tables::waiter_deadline(&self.config),
            )?),
            None => None,
        };
        let (commands, commands_rx) = crossbeam_channel::bounded(1);
        let (interrupt, interrupt_rx) = crossbeam_channel::bounded::<()>(0);
        let coordinator = coordinator::start(CoordinatorParts {
            names: Arc::clone(&self.names),
            owner: Arc::clone(&self.owner),
            config: self.config.clone(),
            bridge: self.bridge.clone(),
            records: self.records_tx.clone(),
            budget: Arc::clone(&self.budget),
            liveness: Arc::default(),
            notices: Notices::new(
                self.fatal_tx.clone(),
                Arc::clone(self.config.stats()),
                Arc::clone(&self.health),
            ),
            commands: commands_rx,
            interrupt: interrupt_rx,
            closed: self.closed_tx.clone(),
            consumer,
        })?;
        log::info!(
            "client {} ({}) consuming stream {}",
            self.owner.name,
            self.owner.id,
            self.names.stream
        );
        // `run()` succeeds once (RunTwice otherwise), so this is the only set.
        let _ = self.coordinator_done.set(coordinator.done());
        self.health.set_running(true);
        #[cfg(feature = "metrics")]
        if let Some(meters) = self.config.meters() {
            match crate::meter::export::Exporter::start(Arc::clone(meters)) {
                Ok(exporter) => *self.exporter.lock() = Some(exporter),
                // Consuming goes on unmeasured rather than not at all.
                Err(e) => log::warn!("cannot start the metrics export thread: {e}"),
            }
        }
        *state = RunState::Running {
            commands,
            interrupt,
            coordinator,
        };
        Ok(())
    }

    /// Deregisters the enhanced fan-out consumer configured with
    /// [`Config::with_consumer_name`] or [`Config::with_consumer_arn`]
    /// (`DeregisterStreamConsumer`). Call it when the application is retired, not while
    /// any client of the fleet still reads through the consumer: their subscriptions
    /// end, and they fail with [`ErrorKind::NoSuchConsumer`]. A consumer already gone is
    /// fine.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NoSuchConsumer`] if no fan-out consumer is configured;
    /// [`ErrorKind::ConsumerAccessDenied`]; AWS failures.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), kinsumer::Error> {
    /// let config = kinsumer::Config::default().with_consumer_name("billing");
    /// let consumer = kinsumer::Kinsumer::new("orders", "billing", "retire", config)?;
    /// consumer.deregister_consumer()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn deregister_consumer(&self) -> Result<()> {
        let Some(c) = self.config.fan_out() else {
            return Err(Error::new(ErrorKind::NoSuchConsumer)
                .with_context("no fan-out consumer is configured (Config::with_consumer_name)"));
        };
        fanout::deregister(&self.bridge, &self.names.stream, c)
    }

    /// The records, as an iterator of `Result<Record, Error>`.
    ///
    /// An `Err` item means the consumer can no longer deliver: it is fatal
    /// ([`Error::is_fatal`]), and iteration ends (`None`) right after it — so
    /// `let record = record?;` is the right way to write the loop. Trouble that retrying
    /// fixes (throttling, a DynamoDB blip, a shard being restarted) is never yielded: it is
    /// logged, passed to [`Stats::error_reported`](crate::Stats::error_reported) and counted
    /// in [`health`](Kinsumer::health). Iteration also ends after a stop. Called before
    /// [`run`](Kinsumer::run), the iterator yields one [`ErrorKind::NotRunning`] error and
    /// ends; it never blocks forever on a consumer that has ended.
    ///
    /// In [`CheckpointMode::Auto`], a record counts as processed when *the iterator that
    /// yielded it* is asked for the next item — never because another iterator or thread
    /// pulled. An iterator dropped with a record in hand (a `break` out of the loop) leaves
    /// it for its thread: the record counts as processed when that thread pulls from any
    /// iterator again or calls [`stop`](Kinsumer::stop); if the thread does neither, the
    /// record stays unprocessed (the next owner delivers it again). A panic in the loop
    /// body never counts its record.
    ///
    /// # Threads
    ///
    /// Several iterators may exist, on several threads; they share one stream of records,
    /// and each thread's records are checkpointed only once that thread is done with them.
    /// The correct pattern is one iterator per thread:
    ///
    /// ```no_run
    /// # fn work(_: &kinsumer::Record) {}
    /// # fn demo(consumer: &kinsumer::Kinsumer) -> Result<(), kinsumer::Error> {
    /// std::thread::scope(|s| {
    ///     for _ in 0..4 {
    ///         s.spawn(|| -> Result<(), kinsumer::Error> {
    ///             for record in consumer.records() {
    ///                 work(&record?); // processed once this thread pulls again
    ///             }
    ///             Ok(())
    ///         });
    ///     }
    /// });
    /// consumer.stop();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Records of one shard then go to whichever thread pulls next, so two records of one
    /// partition key may be processed at once, in either order. Where per-key order
    /// matters, route records to workers by [`Record::shard_id`] (or partition key) from
    /// one pulling thread in [`CheckpointMode::Manual`].
    pub fn records(&self) -> Records<'_> {
        Records {
            consumer: self,
            ended: false,
            in_hand: InHand::new(&self.hands),
        }
    }

    /// The records in [`Batch`]es, as an iterator of `Result<Batch, Error>`: consecutive
    /// records of one shard as one read brought them, at most
    /// [`Config::batch_records`] each. For processors that work a batch at a time (one
    /// write per batch, one transaction, one pass over the data): a batch costs one
    /// channel message and one wake-up, not one per record.
    ///
    /// The error contract is that of [`records`](Kinsumer::records): an `Err` is fatal and
    /// ends iteration. In [`CheckpointMode::Auto`], a batch counts as processed when the
    /// iterator that yielded it is asked for the next item (or its thread stops the
    /// consumer, as for records); in [`CheckpointMode::Manual`], call
    /// [`Batch::mark_processed`] or mark its records one by one.
    ///
    /// Several iterators on several threads share the batches: each batch goes to one of
    /// them, and two batches of one shard may then be at work at once. To process in
    /// parallel while keeping each shard's order, use [`process`](Kinsumer::process).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn demo(consumer: &kinsumer::Kinsumer) -> Result<(), kinsumer::Error> {
    /// for batch in consumer.batches() {
    ///     let batch = batch?;
    ///     let total: usize = batch.iter().map(|r| r.data().len()).sum();
    ///     println!("{}: {} records, {total} bytes", batch.shard_id(), batch.len());
    ///     // Auto mode: the batch is processed once the loop asks for the next one.
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn batches(&self) -> Batches<'_> {
        Batches {
            consumer: self,
            ended: false,
            in_hand: InHand::new(&self.hands),
        }
    }

    /// Whether the consumer is running: [`run`](Kinsumer::run) succeeded, and it has
    /// neither been stopped (also by a [`StopHandle`]) nor ended with a fatal error.
    pub fn is_running(&self) -> bool {
        self.health
            .snapshot(0, self.signal.is_requested())
            .is_running()
    }

    /// What the consumer can say about itself now: whether it runs, how many shards it
    /// reads, and the errors it met and retried.
    pub fn health(&self) -> Health {
        self.health
            .snapshot(self.budget.used(), self.signal.is_requested())
    }

    /// The shards this client owns now, by id: each with its [`ShardState`](crate::ShardState), the last
    /// record of it handed out ([`position`](Kinsumer::position)) and the last its
    /// durable checkpoint covers ([`committed`](Kinsumer::committed)). Empty before
    /// [`run`](Kinsumer::run) and after a stop.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn demo(consumer: &kinsumer::Kinsumer) {
    /// for shard in consumer.assignment() {
    ///     println!(
    ///         "{} {:?}: handed out {:?}, committed {:?}",
    ///         shard.shard_id(),
    ///         shard.state(),
    ///         shard.position().map(|p| &p.sequence_number),
    ///         shard.committed().map(|p| &p.sequence_number),
    ///     );
    /// }
    /// # }
    /// ```
    pub fn assignment(&self) -> Vec<OwnedShard> {
        self.health.owned()
    }

    /// The last record of `shard` handed out by this client under its current lease;
    /// `None` if it owns no lease of it or handed nothing out yet.
    pub fn position(&self, shard_id: &str) -> Option<Position> {
        self.health.owned_one(shard_id)?.position
    }

    /// The last record of `shard` its durable checkpoint covers, as this client knows it
    /// (read when it captured the lease, then as each of its commits wrote it); `None`
    /// if it owns no lease of it, or the shard was never checkpointed.
    pub fn committed(&self, shard_id: &str) -> Option<Position> {
        self.health.owned_one(shard_id)?.committed
    }

    /// Waits until every record marked processed so far (in any
    /// [mode](crate::CheckpointMode)) is durable in DynamoDB, shard by shard — for a
    /// caller that must acknowledge an upstream only once the checkpoint holds. Shards
    /// commit at their next commit slot (every
    /// [`commit_frequency`](Config::with_commit_frequency)); a shard with nothing new
    /// processed answers at once. Returns as soon as every shard's checkpoint covers its
    /// processed records, or with the first failures: a write that failed meanwhile (it
    /// is retried on schedule: call again), a lease that ended short of them, or
    /// `timeout`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::CommitFailed`], naming each shard that fell short and why.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn ack(_: &[String]) {}
    /// # fn demo(consumer: &kinsumer::Kinsumer) -> Result<(), kinsumer::Error> {
    /// use std::time::Duration;
    ///
    /// let mut done = Vec::new();
    /// for record in consumer.records().take(100) {
    ///     let record = record?;
    ///     done.push(record.sequence_number().to_owned());
    ///     record.mark_processed();
    /// }
    /// consumer.commit(Duration::from_secs(10))?;
    /// ack(&done); // the checkpoints hold
    /// # Ok(())
    /// # }
    /// ```
    pub fn commit(&self, timeout: Duration) -> Result<()> {
        // A timeout too large for the clock: a day is as good as forever here.
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(24 * 3600));
        let targets: Vec<_> = self
            .health
            .leases()
            .into_iter()
            .map(|(shard, p)| {
                let target = p.commit_target();
                (shard, p, target)
            })
            .collect();
        let short: Vec<String> = targets
            .into_iter()
            .filter_map(|(shard, p, target)| {
                p.wait_committed(target, deadline)
                    .err()
                    .map(|why| format!("{shard}: {why}"))
            })
            .collect();
        if short.is_empty() {
            return Ok(());
        }
        Err(Error::new(ErrorKind::CommitFailed).with_context(format!(
            "client {}: {}",
            self.owner.name,
            short.join("; ")
        )))
    }

    /// A handle that stops this consumer from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            signal: Arc::clone(&self.signal),
        }
    }

    /// Stops consuming: ends record iteration, commits every processed record, releases
    /// every lease (so other clients take the shards at once), and deregisters this
    /// client. In auto mode, the records this thread pulled last count as processed, as
    /// if the next ones had been pulled — whether their iterators are dropped (a `break`
    /// out of the `for` loop) or still alive (a `while let` over a named iterator): the
    /// thread that stops is done with them. Records other threads pulled stay
    /// unprocessed (the next owner delivers them again), since their loop bodies may
    /// still be at work on them. To end a loop from another thread, a [`StopHandle`] is
    /// the gentler way: the loop's next pull counts its record and ends.
    ///
    /// Records fetched but not yet handed out are dropped; the next owner reads them
    /// again. Idempotent, and bounded in time; also done by `Drop`.
    pub fn stop(&self) {
        let _ = self.finish(Command::Stop);
    }

    /// Stops as [`stop`](Kinsumer::stop) does and reports what could not be finished,
    /// where `stop` and `Drop` only log it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::StopIncomplete`], naming the shards whose final commit and release
    /// failed (their leases expire on their own, after 5 × shard check frequency, and the
    /// next owner re-reads what the failed commit would have covered), threads that did
    /// not stop in time, or a failed deregistration.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn demo(consumer: kinsumer::Kinsumer) {
    /// if let Err(e) = consumer.close() {
    ///     eprintln!("stopped, but: {e}");
    /// }
    /// # }
    /// ```
    pub fn close(self) -> Result<()> {
        let problems = self.finish(Command::Stop);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::StopIncomplete).with_context(problems.join("; ")))
        }
    }

    /// Ends every thread as a crash would: nothing is committed, released or
    /// deregistered; leases expire on their own. For tests of crash recovery (feature
    /// `testing`).
    #[cfg(feature = "testing")]
    pub fn abandon_for_tests(self) {
        self.crash_for_tests();
    }

    /// [`abandon_for_tests`](Kinsumer::abandon_for_tests) for a consumer that other
    /// threads still borrow (one in [`process`](Kinsumer::process), say): iteration ends
    /// there as after a stop, and nothing is committed or released (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn crash_for_tests(&self) {
        self.hands.clear();
        self.finish(Command::Abandon);
    }

    /// Stops everything; returns what could not be finished.
    fn finish(&self, command: Command) -> Vec<String> {
        self.signal.request();
        self.health.set_running(false);
        // A panic in the loop body must not count its record as processed, nor may a
        // stop from another thread while that thread may still be at work on it.
        if !std::thread::panicking() {
            self.hands.mark_mine(true);
        }
        self.hands.clear();
        let previous = std::mem::replace(&mut *self.state.lock(), RunState::Stopped);
        let RunState::Running {
            commands,
            interrupt,
            coordinator,
        } = previous
        else {
            return Vec::new();
        };
        // A shard check in progress (a slow ListShards, a DynamoDB blip) must not hold up
        // the stop: its calls give up now.
        drop(interrupt);
        let _ = commands.send(command);
        if !coordinator.join_within(STOP_TIMEOUT) {
            log::warn!(
                "client {}: coordinator did not stop within {STOP_TIMEOUT:?}; leaving it",
                self.owner.name
            );
            return vec![format!(
                "the coordinator did not stop within {STOP_TIMEOUT:?}"
            )];
        }
        let unfinished = self.closed_rx.try_recv().unwrap_or_default();
        // Every shard thread is done: the last export counts all they measured.
        #[cfg(feature = "metrics")]
        drop(self.exporter.lock().take());
        unfinished
    }

    /// Counts what `in_hand` holds processed (auto mode: the record or batch an iterator
    /// yielded last, processed now that the iterator moves on), and this thread's
    /// records left in dropped iterators.
    fn move_on(&self, in_hand: &mut InHand) -> bool {
        let auto = self.config.checkpoint_mode() == CheckpointMode::Auto;
        if let Some(f) = in_hand.take() {
            f.mark();
        }
        if auto {
            self.hands.mark_mine(false);
        }
        auto
    }

    /// The next record for an iterator that holds `in_hand`.
    fn next_item(&self, in_hand: &mut InHand, deadline: Option<Instant>) -> Polled {
        let auto = self.move_on(in_hand);
        loop {
            if self.signal.is_requested() || self.fatal.load(Ordering::Acquire) {
                return Polled::Ended;
            }
            let record = {
                let mut loose = self.loose.lock();
                let next = loose.as_mut().and_then(|(_, rest)| rest.next());
                if next.is_none() {
                    *loose = None;
                }
                next
            };
            let Some(record) = record else {
                match self.pull(deadline, None, &mut || self.take()) {
                    Pulled::Got(batch) if batch.tells_end_only() => {
                        // No record to hand out: nothing else waits for it.
                        batch.mark_end_processed();
                        continue;
                    }
                    Pulled::Got(batch) => {
                        *self.loose.lock() = Some(batch.into_parts());
                        continue;
                    }
                    Pulled::Failed(e) => return Polled::Failed(e),
                    Pulled::Ended => return Polled::Ended,
                    Pulled::TimedOut => return Polled::TimedOut,
                }
            };
            if !record.hand_out() {
                continue; // its lease is ending: the next owner delivers it
            }
            if auto {
                in_hand.hold(record.processed_marker());
            }
            self.config.stats().records_delivered(record.shard_id(), 1);
            return Polled::Record(record);
        }
    }

    /// The next batch for an iterator that holds `in_hand`: the rest of the batch
    /// `records()` was handing out, if any, else the next off the channel.
    pub(crate) fn next_batch(
        &self,
        in_hand: &mut InHand,
        deadline: Option<Instant>,
    ) -> Pulled<Batch> {
        let auto = self.move_on(in_hand);
        loop {
            if self.signal.is_requested() || self.fatal.load(Ordering::Acquire) {
                return Pulled::Ended;
            }
            let rest = self
                .loose
                .lock()
                .take()
                .and_then(|(head, rest)| Batch::from_parts(head, rest));
            let mut batch = match rest {
                Some(batch) => batch,
                None => match self.pull(deadline, None, &mut || self.take()) {
                    Pulled::Got(batch) => batch,
                    other => return other,
                },
            };
            if !batch.hand_out() {
                continue; // its lease is ending: the next owner delivers it
            }
            if auto {
                in_hand.hold(batch.processed_marker());
            } else {
                batch.end_on_drop();
            }
            if !batch.is_empty() {
                self.config
                    .stats()
                    .records_delivered(batch.shard_id(), batch.len());
            }
            return Pulled::Got(batch);
        }
    }

    /// Takes the next batch off the channel, giving its room in the buffer back.
    fn take(&self) -> std::result::Result<Option<Batch>, TryRecvError> {
        let batch = self.records.try_recv()?;
        self.release(&batch);
        Ok(Some(batch))
    }

    /// The channel batches come through.
    pub(crate) fn receiver(&self) -> &Receiver<Batch> {
        &self.records
    }

    /// Whether a stop was asked for.
    pub(crate) fn stop_requested(&self) -> bool {
        self.signal.is_requested()
    }

    /// Gives a batch's room in the buffer back.
    pub(crate) fn release(&self, batch: &Batch) {
        self.budget.release(batch.len(), batch.buffered_size());
    }

    /// What `take` takes, unless the consumer ended, failed, or `deadline` (or
    /// `abort`'s disconnection) came first. `take` looks at the channel: `Ok(None)` means
    /// it took something that is not for this caller, and the pull goes on.
    pub(crate) fn pull<T>(
        &self,
        deadline: Option<Instant>,
        abort: Option<&Receiver<()>>,
        take: &mut dyn FnMut() -> std::result::Result<Option<T>, TryRecvError>,
    ) -> Pulled<T> {
        let Some(done) = self.coordinator_done.get() else {
            return Pulled::Failed(
                Error::new(ErrorKind::NotRunning)
                    .with_context("iterating records")
                    .fatal(),
            );
        };
        loop {
            if self.signal.is_requested() || self.fatal.load(Ordering::Acquire) {
                return Pulled::Ended;
            }
            if let Ok(e) = self.fatal_rx.try_recv() {
                return Pulled::Failed(self.end_with(e));
            }
            match take() {
                Ok(Some(t)) => return Pulled::Got(t),
                Ok(None) => continue,
                Err(TryRecvError::Disconnected) => return Pulled::Ended,
                Err(TryRecvError::Empty) => {}
            }
            if let Err(TryRecvError::Disconnected) = done.try_recv() {
                // It reports why it stops before it ends; if it said nothing, it died
                // (or was stopped, which the loop checks first).
                let e = self.fatal_rx.try_recv().unwrap_or_else(|_| {
                    Error::new(ErrorKind::Internal)
                        .with_context("the coordinator thread ended unexpectedly")
                        .fatal()
                });
                if self.signal.is_requested() {
                    return Pulled::Ended;
                }
                return Pulled::Failed(self.end_with(e));
            }
            match self.wait(done, deadline, abort) {
                Waited::Ready => {}
                Waited::TimedOut => return Pulled::TimedOut,
                Waited::Aborted => return Pulled::Ended,
            }
        }
    }

    fn end_with(&self, e: Error) -> Error {
        self.fatal.store(true, Ordering::Release);
        self.health.set_running(false);
        e
    }

    /// Blocks until a batch or a fatal error may be there, the coordinator ended, a
    /// stop, `abort` or the deadline.
    fn wait(
        &self,
        done: &Receiver<()>,
        deadline: Option<Instant>,
        abort: Option<&Receiver<()>>,
    ) -> Waited {
        let mut sel = Select::new();
        sel.recv(&self.records);
        sel.recv(&self.fatal_rx);
        sel.recv(done);
        // Disconnected on a stop.
        sel.recv(&self.wake);
        let abort_op = abort.map(|a| sel.recv(a));
        let ready = match deadline {
            Some(d) => match sel.ready_deadline(d) {
                Ok(i) => i,
                Err(_) => return Waited::TimedOut,
            },
            None => sel.ready(),
        };
        if Some(ready) == abort_op {
            return Waited::Aborted;
        }
        Waited::Ready
    }
}

/// What [`Kinsumer::pull`] found.
pub(crate) enum Pulled<T> {
    Got(T),
    /// The error that ended the consumer.
    Failed(Error),
    Ended,
    TimedOut,
}

enum Waited {
    Ready,
    TimedOut,
    Aborted,
}

impl Drop for Kinsumer {
    fn drop(&mut self) {
        let _ = self.finish(Command::Stop);
    }
}

/// Iterator over a consumer's records; see [`Kinsumer::records`].
#[derive(Debug)]
pub struct Records<'a> {
    consumer: &'a Kinsumer,
    /// This iterator yielded its last item (the consumer was not running).
    ended: bool,
    /// Auto mode: the record this iterator yielded last, processed when it moves on.
    in_hand: InHand,
}

/// The record an auto-mode iterator yielded last, with the thread that pulled it. Its
/// own type, so that dropping a [`Records`] needs no borrow of the consumer: an iterator
/// may outlive `close()`.
#[derive(Debug)]
pub(crate) struct InHand {
    /// Shared with [`Hands`] so that `stop()` on the pulling thread can count it. Only
    /// this iterator and a stop take the lock: it is never contended on a pull.
    slot: Arc<Slot>,
    hands: Arc<Hands>,
}

type Slot = Mutex<Option<(std::thread::ThreadId, ProcessedMarker)>>;

impl InHand {
    pub(crate) fn new(hands: &Arc<Hands>) -> Self {
        let slot = Arc::new(Mutex::new(None));
        hands.live.lock().push(Arc::clone(&slot));
        InHand {
            slot,
            hands: Arc::clone(hands),
        }
    }

    fn take(&self) -> Option<ProcessedMarker> {
        self.slot.lock().take().map(|(_, m)| m)
    }

    fn hold(&self, marker: ProcessedMarker) {
        *self.slot.lock() = Some((std::thread::current().id(), marker));
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        self.hands
            .live
            .lock()
            .retain(|s| !Arc::ptr_eq(s, &self.slot));
        // Dropped with a record in hand (a `break`, a `?` or a panic in the loop body):
        // whether the body finished with it, only its thread can tell, by moving on.
        if let Some((puller, marker)) = self.slot.lock().take()
            && !std::thread::panicking()
        {
            self.hands.park(puller, marker);
        }
    }
}

/// The records auto-mode iterators hold, with the thread that pulled each: only that
/// thread's next pull (once its iterator is dropped) or stop counts one processed.
#[derive(Debug, Default)]
pub(crate) struct Hands {
    /// The slots of the iterators alive.
    live: Mutex<Vec<Arc<Slot>>>,
    /// Records left in dropped iterators.
    parked: Mutex<Vec<(std::thread::ThreadId, ProcessedMarker)>>,
    /// `parked` is not empty: a pull takes its lock only then.
    any_parked: AtomicBool,
}

impl Hands {
    fn park(&self, puller: std::thread::ThreadId, marker: ProcessedMarker) {
        let mut parked = self.parked.lock();
        parked.push((puller, marker));
        self.any_parked.store(true, Ordering::Release);
    }

    /// Marks the records this thread left in dropped iterators and, on a stop
    /// (`with_live`), those its live iterators hold: the thread that stops is done with
    /// what it pulled.
    fn mark_mine(&self, with_live: bool) {
        let me = std::thread::current().id();
        let mut mine: Vec<ProcessedMarker> = Vec::new();
        if with_live {
            for slot in self.live.lock().iter() {
                let mut held = slot.lock();
                if held.as_ref().is_some_and(|(puller, _)| *puller == me)
                    && let Some((_, marker)) = held.take()
                {
                    mine.push(marker);
                }
            }
        }
        if self.any_parked.load(Ordering::Acquire) {
            let mut parked = self.parked.lock();
            // Records other threads left (and may never come back for) must not cost
            // this thread's pulls more than a look.
            if parked.iter().any(|(puller, _)| *puller == me) {
                let (own, others) = std::mem::take(&mut *parked)
                    .into_iter()
                    .partition::<Vec<_>, _>(|(puller, _)| *puller == me);
                *parked = others;
                self.any_parked.store(!parked.is_empty(), Ordering::Release);
                mine.extend(own.into_iter().map(|(_, m)| m));
            }
        }
        for marker in mine {
            marker.mark();
        }
    }

    /// Forgets every record held: after a stop, what other threads hold stays
    /// unprocessed.
    fn clear(&self) {
        for slot in self.live.lock().iter() {
            slot.lock().take();
        }
        self.parked.lock().clear();
        self.any_parked.store(false, Ordering::Release);
    }
}

impl Records<'_> {
    /// Like [`next`](Iterator::next), but waits at most `timeout`: a record, the fatal
    /// error that ended the consumer, [`Polled::TimedOut`] if nothing came in time (and
    /// iteration goes on), or [`Polled::Ended`]. A timeout too large to add to the
    /// current time waits without a deadline.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn demo(consumer: &kinsumer::Kinsumer) -> Result<(), kinsumer::Error> {
    /// use kinsumer::Polled;
    /// use std::time::Duration;
    ///
    /// let mut records = consumer.records();
    /// loop {
    ///     match records.next_timeout(Duration::from_secs(1)) {
    ///         Polled::Record(record) => println!("{} bytes", record.data().len()),
    ///         Polled::TimedOut => println!("idle"),
    ///         Polled::Failed(e) => return Err(e),
    ///         Polled::Ended => return Ok(()),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Polled {
        if self.ended {
            return Polled::Ended;
        }
        let polled = self
            .consumer
            .next_item(&mut self.in_hand, Instant::now().checked_add(timeout));
        self.note(polled)
    }

    /// Like [`next_timeout`](Records::next_timeout) without waiting: a record or error
    /// already there, else [`Polled::TimedOut`].
    pub fn try_next(&mut self) -> Polled {
        self.next_timeout(Duration::ZERO)
    }

    fn note(&mut self, polled: Polled) -> Polled {
        if matches!(&polled, Polled::Failed(e) if e.kind() == ErrorKind::NotRunning) {
            self.ended = true;
        }
        polled
    }
}

/// What [`Records::next_timeout`] and [`Records::try_next`] found. Exhaustive, like
/// crossbeam's `RecvTimeoutError`: these are all the outcomes there can be.
#[derive(Debug)]
pub enum Polled {
    /// The next record.
    Record(Record),
    /// The error that ended the consumer (always [fatal](Error::is_fatal)); iteration is
    /// over.
    Failed(Error),
    /// Nothing came in time; iteration goes on.
    TimedOut,
    /// Iteration has ended: after a stop, or after the fatal error was yielded.
    Ended,
}

impl Polled {
    /// The item [`Iterator::next`] would have returned; `None` for both
    /// [`TimedOut`](Polled::TimedOut) and [`Ended`](Polled::Ended).
    pub fn into_item(self) -> Option<Result<Record>> {
        match self {
            Polled::Record(r) => Some(Ok(r)),
            Polled::Failed(e) => Some(Err(e)),
            Polled::TimedOut | Polled::Ended => None,
        }
    }

    /// Whether nothing came in time.
    pub fn is_timed_out(&self) -> bool {
        matches!(self, Polled::TimedOut)
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        // Without a deadline there is no TimedOut.
        let polled = self.consumer.next_item(&mut self.in_hand, None);
        self.note(polled).into_item()
    }
}

impl FusedIterator for Records<'_> {}

impl<'a> IntoIterator for &'a Kinsumer {
    type Item = Result<Record>;
    type IntoIter = Records<'a>;

    fn into_iter(self) -> Records<'a> {
        self.records()
    }
}

/// Checks the configuration and the clients' region, then starts the I/O thread.
pub(crate) fn connect(configs: &ClientConfigs, config: &Config) -> Result<Bridge> {
    config.validate()?;
    if !configs.has_region() {
        return Err(Error::new(ErrorKind::NoRegion).with_context("configuring the AWS clients"));
    }
    let configs = configs.clone().with_defaults(config).with_role(config)?;
    if configs.attempt_timeout() >= config.lease_ttl() {
        return Err(Error::new(ErrorKind::InvalidDuration).with_context(
            "the SDK client's attempt timeout must be shorter than the lease time \
             (5 x shard check frequency)",
        ));
    }
    Bridge::new(&configs, config.io_threads())
}

// The public handles may move between and be shared by threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Kinsumer>();
    send_sync::<Records<'static>>();
    send_sync::<Batches<'static>>();
    send_sync::<Batch>();
    send_sync::<StopHandle>();
    send_sync::<Record>();
    send_sync::<crate::record::ProcessedMarker>();
    send_sync::<crate::Fleet>();
    send_sync::<Error>();
};

/// A random (v4) UUID: the client's id in the clients table and in lease rows.
fn new_client_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_unique_and_uuid_shaped() {
        let a = new_client_id();
        let b = new_client_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }
}
