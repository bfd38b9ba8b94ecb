//! Shared test fixture: real AWS-compatible servers on loopback, real SDK clients.
//!
//! By default each [`Env`] starts its own embedded emulators — `ferrokinesis` (Kinesis) and
//! `dynoxide-rs` (DynamoDB), through the crate's own test kit (`kinsumer::testing`) — in
//! process on ephemeral 127.0.0.1 ports, and stops them on drop. With the AWS SDK's standard endpoint
//! variables set — `AWS_ENDPOINT_URL_KINESIS` and `AWS_ENDPOINT_URL_DYNAMODB`, or
//! `AWS_ENDPOINT_URL` for both — the same tests run against those servers instead
//! (and clean up the stream and tables they made). Every test gets a unique stream and
//! application name.
//!
//! This file is also compiled into examples and benches (`#[path]`), so not every item is
//! used everywhere.
#![allow(dead_code)]

pub mod calls;
pub mod golike;
pub mod kpl;
pub mod outage;
pub mod proxy;
pub mod sts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use kinsumer::{Config, Kinsumer, Polled};

/// A test failure: anything the fixture does can fail with a message.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub use kinsumer::testing::{Emulators, KinesisOptions};

/// A name no other test (or earlier run against the same external servers) uses.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() % 1_000_000_000);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub use kinsumer::testing::sdk_config;

/// A configuration with short intervals, for tests.
pub fn fast_config() -> Config {
    Config::default()
        .with_throttle_delay(Duration::from_millis(200))
        .with_commit_frequency(Duration::from_millis(200))
        .with_shard_check_frequency(Duration::from_secs(1))
        .with_leader_action_frequency(Duration::from_secs(1))
        .with_dynamo_waiter_delay(Duration::from_millis(50))
}

/// Emulators, test clients, and a stream with a unique name.
pub struct Env {
    pub emulators: Emulators,
    pub kinesis: aws_sdk_kinesis::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub stream: String,
    pub app: String,
    runtime: tokio::runtime::Runtime,
    tables_made: bool,
}

impl Env {
    /// Starts servers and creates a stream of `shards` shards.
    pub fn new(shards: i32) -> TestResult<Env> {
        Self::with_options(shards, KinesisOptions::default())
    }

    pub fn with_options(shards: i32, options: KinesisOptions) -> TestResult<Env> {
        let env = Self::without_stream(options)?;
        env.create_stream(&env.stream, shards)?;
        Ok(env)
    }

    /// Servers and clients, but no stream is created.
    pub fn without_stream(options: KinesisOptions) -> TestResult<Env> {
        let emulators = Emulators::start_with(options)?;
        let sdk = sdk_config();
        let kinesis = aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(&sdk)
                .endpoint_url(emulators.kinesis_endpoint())
                .build(),
        );
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .endpoint_url(emulators.dynamodb_endpoint())
                .build(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Env {
            emulators,
            kinesis,
            dynamodb,
            stream: unique_name("stream"),
            app: unique_name("app"),
            runtime,
            tables_made: false,
        })
    }

    /// Runs an SDK future on the fixture's own runtime (the test thread only).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    pub fn create_stream(&self, name: &str, shards: i32) -> TestResult {
        self.block_on(
            self.kinesis
                .create_stream()
                .stream_name(name)
                .shard_count(shards)
                .send(),
        )?;
        wait_for(Duration::from_secs(30), "stream to become active", || {
            let out = self.block_on(
                self.kinesis
                    .describe_stream_summary()
                    .stream_name(name)
                    .send(),
            )?;
            Ok(out
                .stream_description_summary()
                .is_some_and(|s| *s.stream_status() == StreamStatus::Active))
        })
    }

    /// A consumer of this env's stream, built from the test clients, with the tables
    /// created.
    pub fn consumer(&mut self, client_name: &str, config: Config) -> TestResult<Kinsumer> {
        let consumer = self.consumer_with(
            &self.kinesis.clone(),
            &self.dynamodb.clone(),
            client_name,
            config,
        )?;
        Ok(consumer)
    }

    /// Like [`Env::consumer`], from other clients (e.g. with a fault injector).
    pub fn consumer_with(
        &mut self,
        kinesis: &aws_sdk_kinesis::Client,
        dynamodb: &aws_sdk_dynamodb::Client,
        client_name: &str,
        config: Config,
    ) -> TestResult<Kinsumer> {
        let consumer = Kinsumer::from_clients(
            kinesis,
            dynamodb,
            &self.stream,
            &self.app,
            client_name,
            config,
        )?;
        consumer.create_required_tables()?;
        self.tables_made = true;
        Ok(consumer)
    }

    /// Writes `data` records with the given partition keys, in order, 500 per call.
    pub fn put(&self, records: &[(String, String)]) -> TestResult {
        self.put_raw(
            records
                .iter()
                .map(|(key, data)| (key.clone(), data.as_bytes().to_vec())),
        )
    }

    /// Writes `(partition key, data)` records, in order (through the test kit).
    pub fn put_raw(&self, records: impl IntoIterator<Item = (String, Vec<u8>)>) -> TestResult {
        Ok(self.emulators.put(&self.stream, records)?)
    }

    /// Puts a checkpoint row for `shard` at `seq`, unowned and long stale, as a client
    /// (or an operator) might have left it.
    pub fn put_checkpoint_row(&self, shard: &str, seq: &str) -> TestResult {
        self.block_on(
            self.dynamodb
                .put_item()
                .table_name(format!("{}_checkpoints", self.app))
                .item("Shard", AttributeValue::S(shard.to_owned()))
                .item("SequenceNumber", AttributeValue::S(seq.to_owned()))
                .item("OwnerID", AttributeValue::Null(true))
                .item("LastUpdate", AttributeValue::N("1".into()))
                .send(),
        )?;
        Ok(())
    }

    /// The data of `shard`'s records, as strings (one GetRecords from TRIM_HORIZON).
    pub fn shard_data(&self, shard: &str) -> TestResult<Vec<String>> {
        let it = self.block_on(
            self.kinesis
                .get_shard_iterator()
                .stream_name(&self.stream)
                .shard_id(shard)
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                .send(),
        )?;
        let out = self.block_on(
            self.kinesis
                .get_records()
                .shard_iterator(it.shard_iterator().ok_or("no iterator")?)
                .send(),
        )?;
        Ok(out
            .records
            .into_iter()
            .map(|r| String::from_utf8_lossy(r.data.as_ref()).into_owned())
            .collect())
    }

    /// The sequence numbers of `shard`'s records (one GetRecords from TRIM_HORIZON).
    pub fn sequence_numbers(&self, shard: &str) -> TestResult<Vec<String>> {
        let it = self.block_on(
            self.kinesis
                .get_shard_iterator()
                .stream_name(&self.stream)
                .shard_id(shard)
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                .send(),
        )?;
        let out = self.block_on(
            self.kinesis
                .get_records()
                .shard_iterator(it.shard_iterator().ok_or("no iterator")?)
                .send(),
        )?;
        Ok(out.records.into_iter().map(|r| r.sequence_number).collect())
    }

    /// Starts a [`Member`] named `name` (a consumer with [`fast_config`]) logging into
    /// `log`.
    pub fn member(&mut self, index: usize, name: &str, log: &Deliveries) -> TestResult<Member> {
        let consumer = self.consumer(name, fast_config())?;
        Member::start(index, consumer, std::sync::Arc::clone(log))
    }

    /// Writes records `from..to` as `(key-<i % keys>, "<i>")`.
    pub fn put_numbered(&self, from: u64, to: u64, keys: u64) -> TestResult {
        let records: Vec<(String, String)> = (from..to)
            .map(|i| (format!("key-{}", i % keys), i.to_string()))
            .collect();
        self.put(&records)
    }

    /// The stream's ARN.
    pub fn stream_arn(&self) -> TestResult<String> {
        Ok(self
            .block_on(
                self.kinesis
                    .describe_stream_summary()
                    .stream_name(&self.stream)
                    .send(),
            )?
            .stream_description_summary
            .ok_or("no summary")?
            .stream_arn)
    }

    /// The shard ids of the stream.
    pub fn shard_ids(&self) -> TestResult<Vec<String>> {
        let out = self.block_on(self.kinesis.list_shards().stream_name(&self.stream).send())?;
        Ok(out
            .shards()
            .iter()
            .map(|s| s.shard_id().to_owned())
            .collect())
    }

    /// The checkpoint table's rows, by shard id.
    pub fn checkpoint_rows(&self) -> TestResult<HashMap<String, HashMap<String, AttributeValue>>> {
        let out = self.block_on(
            self.dynamodb
                .scan()
                .table_name(format!("{}_checkpoints", self.app))
                .consistent_read(true)
                .send(),
        )?;
        let mut rows = HashMap::new();
        for item in out.items.unwrap_or_default() {
            if let Some(AttributeValue::S(shard)) = item.get("Shard") {
                rows.insert(shard.clone(), item);
            }
        }
        Ok(rows)
    }

    /// The checkpointed sequence number of `shard`, if any.
    pub fn checkpoint(&self, shard: &str) -> TestResult<Option<String>> {
        Ok(self
            .checkpoint_rows()?
            .get(shard)
            .and_then(|row| match row.get("SequenceNumber") {
                Some(AttributeValue::S(s)) => Some(s.clone()),
                _ => None,
            }))
    }

    /// The client rows' ids.
    pub fn client_ids(&self) -> TestResult<Vec<String>> {
        let out = self.block_on(
            self.dynamodb
                .scan()
                .table_name(format!("{}_clients", self.app))
                .consistent_read(true)
                .send(),
        )?;
        Ok(out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| match i.get("ID") {
                Some(AttributeValue::S(id)) => Some(id.clone()),
                _ => None,
            })
            .collect())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Embedded servers vanish with their memory; external ones are cleaned up.
        if self.emulators.is_external() {
            let _ = self.block_on(
                self.kinesis
                    .delete_stream()
                    .stream_name(&self.stream)
                    .enforce_consumer_deletion(true)
                    .send(),
            );
            if self.tables_made {
                for suffix in ["clients", "checkpoints", "metadata"] {
                    let _ = self.block_on(
                        self.dynamodb
                            .delete_table()
                            .table_name(format!("{}_{suffix}", self.app))
                            .send(),
                    );
                }
            }
        }
    }
}

/// Polls `condition` every 20 ms until it holds, failing after `timeout`.
pub fn wait_for(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> TestResult<bool>,
) -> TestResult {
    let deadline = Instant::now() + timeout;
    loop {
        if condition()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Collects records from `consumer` until `done` says so, failing on any error item or
/// after `timeout`. Returns the records' data as strings, in delivery order.
pub fn collect_until(
    consumer: &Kinsumer,
    timeout: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> TestResult<Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut records = consumer.records();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timed out after {timeout:?} with {} records", seen.len()).into());
        }
        match records.next_timeout(left.min(Duration::from_millis(500))) {
            Polled::Record(record) => seen.push(String::from_utf8(record.data().to_vec())?),
            Polled::TimedOut => {}
            Polled::Failed(e) => return Err(format!("error item: {e} ({:?})", e).into()),
            Polled::Ended => {
                return Err(format!("iteration ended after {} records", seen.len()).into());
            }
        }
    }
    Ok(seen)
}

/// Initialises logging once (RUST_LOG=kinsumer=debug to see it). The library's
/// warnings and errors are also kept, whatever RUST_LOG says, for [`logged`].
pub fn init_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let inner = env_logger::builder().is_test(true).build();
        let max = inner.filter().max(log::LevelFilter::Warn);
        if log::set_boxed_logger(Box::new(Tee { inner })).is_ok() {
            log::set_max_level(max);
        }
    });
}

/// The library's warnings and errors logged so far (by every test of this binary) that
/// contain `needle`.
pub fn logged(needle: &str) -> Vec<String> {
    KEPT.lock()
        .iter()
        .filter(|line| line.contains(needle))
        .cloned()
        .collect()
}

/// Warnings and errors of the library, as logged (the newest 10,000).
static KEPT: parking_lot::Mutex<std::collections::VecDeque<String>> =
    parking_lot::Mutex::new(std::collections::VecDeque::new());

/// env_logger, and a copy of the library's warnings and errors into [`KEPT`].
struct Tee {
    inner: env_logger::Logger,
}

impl Tee {
    fn kept(metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn && metadata.target().starts_with("kinsumer")
    }
}

impl log::Log for Tee {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        Self::kept(metadata) || self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if Self::kept(record.metadata()) {
            let mut kept = KEPT.lock();
            if kept.len() == 10_000 {
                kept.pop_front();
            }
            kept.push_back(format!("{} {}", record.level(), record.args()));
        }
        if self.inner.matches(record) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// A [`kinsumer::Stats`] that counts every event.
#[derive(Debug, Default)]
pub struct Recorder {
    pub fetched: AtomicU64,
    pub delivered: AtomicU64,
    pub commits: AtomicU64,
    pub acquired: AtomicU64,
    pub released: AtomicU64,
    pub lost: AtomicU64,
    pub renewed: AtomicU64,
    pub retried: AtomicU64,
    pub fetch_calls: AtomicU64,
    pub aggregate_commits: AtomicU64,
    pub corrupt_aggregates: AtomicU64,
    /// Reports of a checkpoint write in flight for more than a commit interval.
    pub lagging: AtomicU64,
    pub modes: parking_lot::Mutex<Vec<kinsumer::AssignmentMode>>,
    /// When each GetRecords answer was reported, per shard.
    pub fetch_times: parking_lot::Mutex<Vec<(String, Instant)>>,
}

impl Recorder {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    /// The gaps between `shard`'s consecutive GetRecords answers from the `skip`-th on.
    pub fn fetch_gaps(&self, shard: &str, skip: usize) -> Vec<Duration> {
        let times: Vec<Instant> = self
            .fetch_times
            .lock()
            .iter()
            .filter(|(s, _)| s == shard)
            .map(|(_, t)| *t)
            .skip(skip)
            .collect();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

impl kinsumer::Stats for Recorder {
    fn records_fetched(&self, shard: &str, count: usize, _behind: Option<i64>) {
        self.fetch_times
            .lock()
            .push((shard.to_owned(), Instant::now()));
        self.fetch_calls.fetch_add(1, Ordering::SeqCst);
        self.fetched.fetch_add(count as u64, Ordering::SeqCst);
    }
    fn records_delivered(&self, _shard: &str, count: usize) {
        self.delivered.fetch_add(count as u64, Ordering::SeqCst);
    }
    fn checkpoint_committed(&self, _shard: &str, _seq: &str) {
        self.commits.fetch_add(1, Ordering::SeqCst);
    }
    fn lease_acquired(&self, _shard: &str) {
        self.acquired.fetch_add(1, Ordering::SeqCst);
    }
    fn lease_released(&self, _shard: &str) {
        self.released.fetch_add(1, Ordering::SeqCst);
    }
    fn lease_lost(&self, _shard: &str) {
        self.lost.fetch_add(1, Ordering::SeqCst);
    }
    fn iterator_renewed(&self, _shard: &str) {
        self.renewed.fetch_add(1, Ordering::SeqCst);
    }
    fn retried(&self, _op: &str, _backoff: Duration) {
        self.retried.fetch_add(1, Ordering::SeqCst);
    }
    fn aggregate_checkpoint_committed(&self, _shard: &str, _seq: &str, _sub: u64) {
        self.aggregate_commits.fetch_add(1, Ordering::SeqCst);
    }
    fn aggregate_corrupt(&self, _shard: &str, _seq: &str, _reason: &str) {
        self.corrupt_aggregates.fetch_add(1, Ordering::SeqCst);
    }
    fn commit_lagging(&self, _shard: &str, _for: Duration) {
        self.lagging.fetch_add(1, Ordering::SeqCst);
    }
    fn assignment_mode_changed(&self, mode: kinsumer::AssignmentMode) {
        self.modes.lock().push(mode);
    }
}

/// Waits until the wall clock has moved on by `d`: for tests whose condition *is* the
/// passing of time (an iterator aging, a timestamp boundary), polled like any other.
pub fn let_time_pass(d: Duration) -> TestResult {
    let until = Instant::now() + d;
    wait_for(d + Duration::from_secs(5), "time to pass", || {
        Ok(Instant::now() >= until)
    })
}

/// Writes numbered records (`"<n>"`, keys `key-<n % 37>`) from a thread of its own, a
/// batch of 20 every 50 ms, until stopped. Uses its own runtime and client (never share
/// an SDK client across runtimes).
pub struct Producer {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<JoinHandle<TestResult<u64>>>,
}

impl Producer {
    pub fn start(env: &Env) -> Producer {
        let config = env.kinesis.config().clone();
        let stream = env.stream.clone();
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::spawn(move || -> TestResult<u64> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let client = aws_sdk_kinesis::Client::from_conf(config);
            let mut next = 0u64;
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(50))
            {
                let entries = (next..next + 20)
                    .map(|i| {
                        PutRecordsRequestEntry::builder()
                            .partition_key(format!("key-{}", i % 37))
                            .data(Blob::new(i.to_string()))
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let out = rt.block_on(
                    client
                        .put_records()
                        .stream_name(&stream)
                        .set_records(Some(entries))
                        .send(),
                )?;
                if out.failed_record_count.unwrap_or(0) > 0 {
                    return Err("PutRecords rejected some records".into());
                }
                next += 20;
            }
            Ok(next)
        });
        Producer {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops writing; returns how many records were written (`0..n`).
    pub fn stop(mut self) -> TestResult<u64> {
        self.stop.take();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err("producer thread panicked".into()),
        }
    }
}

impl Producer {
    /// Stops writing, then reads from `consumer` into `log` until every record written
    /// is there (the caller checks for repeats); returns how many were written.
    pub fn stop_and_catch_up(self, consumer: &Kinsumer, log: &mut Vec<String>) -> TestResult<u64> {
        let written = self.stop()?;
        let have = log.len();
        log.extend(collect_until(consumer, Duration::from_secs(60), |s| {
            (have + s.len()) as u64 >= written
        })?);
        Ok(written)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A consumer iterating on a thread of its own, recording every delivery as
/// `(member index, data)` into a shared log.
pub struct Member {
    pub id: String,
    stop: kinsumer::StopHandle,
    thread: Option<JoinHandle<Result<(), String>>>,
}

pub type Deliveries = std::sync::Arc<parking_lot::Mutex<Vec<(usize, String)>>>;

impl Member {
    pub fn start(index: usize, consumer: Kinsumer, log: Deliveries) -> TestResult<Member> {
        consumer.run()?;
        let id = consumer.client_id().to_owned();
        let stop = consumer.stop_handle();
        let thread = std::thread::spawn(move || {
            for item in consumer.records() {
                match item {
                    Ok(r) => log
                        .lock()
                        .push((index, String::from_utf8_lossy(r.data()).into_owned())),
                    Err(e) if e.is_fatal() => return Err(format!("member {index}: {e}")),
                    Err(e) => eprintln!("member {index}: non-fatal: {e}"),
                }
            }
            consumer.stop();
            Ok(())
        });
        Ok(Member {
            id,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops cleanly (ends iteration, commits, releases, deregisters) and joins.
    pub fn stop(mut self) -> TestResult {
        self.stop.stop();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e.into()),
            _ => Err("member thread panicked".into()),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Env {
    /// Lease owner (OwnerID) of each shard that has one.
    pub fn owners(&self) -> TestResult<HashMap<String, String>> {
        Ok(self
            .checkpoint_rows()?
            .into_iter()
            .filter_map(|(shard, row)| match row.get("OwnerID") {
                Some(AttributeValue::S(owner)) => Some((shard, owner.clone())),
                _ => None,
            })
            .collect())
    }

    /// The application's metadata items, by `Key`.
    pub fn metadata(&self) -> TestResult<HashMap<String, HashMap<String, AttributeValue>>> {
        let out = self.block_on(
            self.dynamodb
                .scan()
                .table_name(format!("{}_metadata", self.app))
                .consistent_read(true)
                .send(),
        )?;
        let mut items = HashMap::new();
        for item in out.items.unwrap_or_default() {
            if let Some(AttributeValue::S(key)) = item.get("Key") {
                items.insert(key.clone(), item);
            }
        }
        Ok(items)
    }
}

/// Test clients for explicit endpoints (a child process talking to its parent's servers).
pub fn clients_for(
    kinesis_endpoint: &str,
    dynamodb_endpoint: &str,
) -> (aws_sdk_kinesis::Client, aws_sdk_dynamodb::Client) {
    let sdk = sdk_config();
    (
        aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(&sdk)
                .endpoint_url(kinesis_endpoint)
                .build(),
        ),
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .endpoint_url(dynamodb_endpoint)
                .build(),
        ),
    )
}

impl Env {
    /// Splits `shard` at the middle of its hash range.
    pub fn split(&self, shard: &str) -> TestResult {
        let out = self.block_on(self.kinesis.list_shards().stream_name(&self.stream).send())?;
        let s = out
            .shards()
            .iter()
            .find(|s| s.shard_id() == shard)
            .ok_or("no such shard")?;
        let range = s.hash_key_range().ok_or("no hash range")?;
        let lo: u128 = range.starting_hash_key().parse()?;
        let hi: u128 = range.ending_hash_key().parse()?;
        self.block_on(
            self.kinesis
                .split_shard()
                .stream_name(&self.stream)
                .shard_to_split(shard)
                .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
                .send(),
        )?;
        Ok(())
    }

    /// Merges two adjacent shards.
    pub fn merge(&self, shard: &str, adjacent: &str) -> TestResult {
        self.block_on(
            self.kinesis
                .merge_shards()
                .stream_name(&self.stream)
                .shard_to_merge(shard)
                .adjacent_shard_to_merge(adjacent)
                .send(),
        )?;
        Ok(())
    }

    /// Open shards (no ending sequence number), sorted by starting hash key.
    pub fn open_shards(&self) -> TestResult<Vec<String>> {
        let out = self.block_on(self.kinesis.list_shards().stream_name(&self.stream).send())?;
        let mut open: Vec<(u128, String)> = out
            .shards()
            .iter()
            .filter(|s| {
                s.sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_none())
            })
            .map(|s| {
                let start = s
                    .hash_key_range()
                    .and_then(|r| r.starting_hash_key().parse().ok())
                    .unwrap_or(0);
                (start, s.shard_id().to_owned())
            })
            .collect();
        open.sort_unstable();
        Ok(open.into_iter().map(|(_, id)| id).collect())
    }
}

/// Checks a delivery log of producer records (`"<n>"`, key `key-<n % 37>`): every
/// record `0..written` delivered, none twice, and for each partition key the records in
/// increasing order. Returns the number of deliveries.
pub fn check_per_key_order(deliveries: &[String], written: u64) -> TestResult<usize> {
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for d in deliveries {
        let n: u64 = d.parse()?;
        if !seen.insert(n) {
            return Err(format!("record {n} delivered twice").into());
        }
        let key = n % 37;
        if let Some(prev) = last.insert(key, n)
            && prev > n
        {
            return Err(format!("key-{key}: record {n} delivered after {prev}").into());
        }
    }
    let missing = (0..written).filter(|n| !seen.contains(n)).count();
    if missing > 0 {
        return Err(format!("{missing} of {written} records lost").into());
    }
    Ok(deliveries.len())
}
