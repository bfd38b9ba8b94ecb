//! Consumer configuration: the Go library's knobs with its defaults and validation rules,
//! plus the options this crate adds.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{Error, ErrorKind, Result};
use crate::stats::{NoListener, NoStats, ShardListener, Stats};

/// The longest any interval may be.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The most records the buffer may hold (its slots are allocated up front).
const MAX_BUFFER_SIZE: usize = 100_000;
/// Each commit is a DynamoDB write per shard: more often than this only costs.
const MIN_COMMIT_FREQUENCY: Duration = Duration::from_millis(100);

/// How long a client may go silent before others take its shards, by default.
const DEFAULT_FAILOVER_TIME: Duration = Duration::from_secs(15);
/// How long a fan-out subscription may stay silent: the Amazon KCL's limit.
const DEFAULT_SUBSCRIPTION_TIMEOUT: Duration = Duration::from_secs(35);

/// The default byte bound on records waiting for the caller.
const DEFAULT_BUFFER_BYTES: usize = 32 << 20;
const DEFAULT_FETCH_BYTES: usize = 8 << 20;

/// Where shards without a checkpoint start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitialPosition {
    /// The oldest record still in the stream (the default).
    TrimHorizon,
    /// Only records written after the shard is first read.
    Latest,
    /// Records arriving at or after this time (Kinesis resolves it to the second on some
    /// implementations).
    AtTimestamp(SystemTime),
}

/// `TRIM_HORIZON`, `LATEST`, or `AT_TIMESTAMP 2026-12-06T22:12:46Z` (as Kinesis names
/// them), for messages.
impl std::fmt::Display for InitialPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitialPosition::TrimHorizon => f.write_str("TRIM_HORIZON"),
            InitialPosition::Latest => f.write_str("LATEST"),
            InitialPosition::AtTimestamp(t) => {
                let nanos = t
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
                write!(f, "AT_TIMESTAMP {}", crate::clock::rfc3339(nanos))
            }
        }
    }
}

/// How the DynamoDB tables created by
/// [`Kinsumer::create_required_tables`](crate::Kinsumer::create_required_tables) are billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BillingMode {
    /// Provisioned capacity, from [`Config::with_dynamo_read_capacity`] and
    /// [`Config::with_dynamo_write_capacity`] (the default, as in Go).
    Provisioned,
    /// On-demand (`PAY_PER_REQUEST`); the capacities are ignored.
    OnDemand,
}

/// When a record counts as processed, and so may be checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointMode {
    /// A record is processed once the caller pulls the next item from the iterator (the
    /// body of the `for` loop has finished with it), or calls
    /// [`stop`](crate::Kinsumer::stop). The default.
    ///
    /// This assumes one thread pulls records from a consumer: the consumer keeps one
    /// "record in hand", and any pull completes it. To process records on several
    /// threads, use [`CheckpointMode::Manual`].
    Auto,
    /// The caller marks each record processed with
    /// [`Record::mark_processed`](crate::Record::mark_processed) (or a
    /// [`ProcessedMarker`](crate::ProcessedMarker)), from any thread and in any order.
    /// A shard's checkpoint advances over the contiguous prefix of processed records.
    Manual,
}

/// Configuration of a [`Kinsumer`](crate::Kinsumer).
///
/// Start from [`Config::default`] (the Go library's defaults, but for a failover time of
/// 15 s: see [`Config::with_failover_time`] and [`Config::go_defaults`]) and change what you need
/// with the by-value `with_*` setters. Values are checked by [`Config::validate`], which
/// every constructor of [`Kinsumer`](crate::Kinsumer) calls.
///
/// # Examples
///
/// ```
/// use kinsumer::{CheckpointMode, Config, InitialPosition};
/// use std::time::Duration;
///
/// let config = Config::default()
///     .with_shard_check_frequency(Duration::from_secs(10))
///     .with_leader_action_frequency(Duration::from_secs(10))
///     .with_initial_position(InitialPosition::Latest)
///     .with_checkpoint_mode(CheckpointMode::Manual);
/// assert!(config.validate().is_ok());
/// assert_eq!(config.buffer_size(), 100);
/// ```
#[derive(Clone)]
#[must_use]
pub struct Config {
    throttle_delay: Duration,
    commit_frequency: Duration,
    shard_check_frequency: Duration,
    load_balancing: bool,
    leader_action_frequency: Duration,
    buffer_size: usize,
    buffer_bytes: usize,
    fetch_bytes: usize,
    max_unmarked: u64,
    io_threads: usize,
    dynamo_read_capacity: i64,
    dynamo_write_capacity: i64,
    dynamo_waiter_delay: Duration,
    initial_position: InitialPosition,
    max_records: i32,
    max_batch_records: usize,
    billing_mode: BillingMode,
    checkpoint_mode: CheckpointMode,
    use_list_shards_for_readiness: bool,
    list_shards_page_size: Option<i32>,
    deaggregation: bool,
    handover_grace: Option<Duration>,
    idle_poll_delay: Option<Duration>,
    /// `None`: the Go library's lease time (5 × shard check).
    failover_time: Option<Duration>,
    stats: Arc<dyn Stats>,
    /// What the `metrics` feature measures of the consumer built with this config, and
    /// `stats` teed into it (set by the consumer, never by a user; a consumer built from
    /// a copy of this config measures itself afresh).
    #[cfg(feature = "metrics")]
    measured: Option<(Arc<crate::meter::Meters>, Arc<dyn Stats>)>,
    listener: Arc<dyn ShardListener>,
    fan_out: Option<FanOutConsumer>,
    subscription_timeout: Duration,
    role: Option<Role>,
    /// `None`: a record is retried for as long as it fails.
    max_attempts: Option<u32>,
    dead_letter: Option<Arc<dyn crate::DeadLetter>>,
}

/// The enhanced fan-out consumer shards are read through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FanOutConsumer {
    /// Registered already (the Go library's `consumerARN`).
    Arn(String),
    /// Registered on the stream by the crate if missing.
    Name(String),
}

/// An IAM role to assume for Kinesis calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Role {
    pub(crate) arn: String,
    pub(crate) external_id: Option<String>,
    pub(crate) session_name: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            throttle_delay: Duration::from_millis(250),
            commit_frequency: Duration::from_secs(1),
            shard_check_frequency: Duration::from_secs(60),
            load_balancing: true,
            leader_action_frequency: Duration::from_secs(60),
            buffer_size: 100,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            fetch_bytes: DEFAULT_FETCH_BYTES,
            max_unmarked: 10_000,
            io_threads: 1,
            dynamo_read_capacity: 10,
            dynamo_write_capacity: 10,
            dynamo_waiter_delay: Duration::from_secs(3),
            initial_position: InitialPosition::TrimHorizon,
            max_records: 10_000,
            max_batch_records: 1_000,
            billing_mode: BillingMode::Provisioned,
            checkpoint_mode: CheckpointMode::Auto,
            use_list_shards_for_readiness: false,
            list_shards_page_size: None,
            deaggregation: true,
            handover_grace: None,
            idle_poll_delay: None,
            failover_time: Some(DEFAULT_FAILOVER_TIME),
            stats: Arc::new(NoStats),
            #[cfg(feature = "metrics")]
            measured: None,
            listener: Arc::new(NoListener),
            fan_out: None,
            subscription_timeout: DEFAULT_SUBSCRIPTION_TIMEOUT,
            role: None,
            max_attempts: None,
            dead_letter: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("throttle_delay", &self.throttle_delay)
            .field("commit_frequency", &self.commit_frequency)
            .field("shard_check_frequency", &self.shard_check_frequency)
            .field("load_balancing", &self.load_balancing)
            .field("leader_action_frequency", &self.leader_action_frequency)
            .field("buffer_size", &self.buffer_size)
            .field("buffer_bytes", &self.buffer_bytes)
            .field("max_unmarked", &self.max_unmarked)
            .field("io_threads", &self.io_threads)
            .field("dynamo_read_capacity", &self.dynamo_read_capacity)
            .field("dynamo_write_capacity", &self.dynamo_write_capacity)
            .field("dynamo_waiter_delay", &self.dynamo_waiter_delay)
            .field("initial_position", &self.initial_position)
            .field("max_records", &self.max_records)
            .field("max_batch_records", &self.max_batch_records)
            .field("fetch_bytes", &self.fetch_bytes)
            .field("billing_mode", &self.billing_mode)
            .field("checkpoint_mode", &self.checkpoint_mode)
            .field(
                "use_list_shards_for_readiness",
                &self.use_list_shards_for_readiness,
            )
            .field("deaggregation", &self.deaggregation)
            .field("handover_grace", &self.handover_grace())
            .field("idle_poll_delay", &self.idle_poll_delay())
            .field("failover_time", &self.failover_time())
            .field("stats", &self.stats)
            .field("listener", &self.listener)
            .field("fan_out", &self.fan_out)
            .field("subscription_timeout", &self.subscription_timeout)
            .field("role", &self.role)
            .field("max_attempts", &self.max_attempts)
            .field("dead_letter", &self.dead_letter)
            .finish()
    }
}

impl Config {
    /// Minimum pause between two GetRecords calls on one shard (default 250 ms, at least
    /// 200 ms: Kinesis allows 5 reads per second per shard).
    pub fn with_throttle_delay(mut self, delay: Duration) -> Self {
        self.throttle_delay = delay;
        self
    }

    /// The slowest a shard with nothing new is polled (default 1 s — the AWS guidance for
    /// one application — or the throttle delay if that is longer; must be at least the
    /// throttle delay, and equal to it turns adaptive polling off).
    ///
    /// After consecutive empty GetRecords responses at the tip of the shard
    /// (`MillisBehindLatest` 0), the pause between calls doubles from the throttle delay
    /// up to this; a response with records or lag goes straight back to the throttle
    /// delay. The trade-off: the first record after a quiet spell waits up to this long
    /// (instead of up to the throttle delay), and an idle shard costs this many times
    /// fewer calls. Kinesis allows 5 GetRecords per second per shard *for all
    /// applications reading the stream together*: with several applications, give each
    /// a throttle delay of at least `applications × 200 ms` (the Go library's advice) and
    /// let idle shards back off further.
    ///
    /// Once backed off all the way, a shard is polled by a task on the I/O runtime while
    /// its thread sleeps, until records (or lag, an error, the shard's end) come or its
    /// lease needs a heartbeat: an idle shard costs its calls and hardly anything else.
    pub fn with_idle_poll_delay(mut self, delay: Duration) -> Self {
        self.idle_poll_delay = Some(delay);
        self
    }

    /// The idle poll delay.
    pub fn idle_poll_delay(&self) -> Duration {
        self.idle_poll_delay
            .unwrap_or_else(|| Duration::from_secs(1).max(self.throttle_delay))
    }

    /// How often processed records are checkpointed (default 1 s; at least 100 ms — each
    /// commit is a DynamoDB write per shard — and under half the lease time, 5 × shard
    /// check frequency, since idle leases are heartbeated then).
    pub fn with_commit_frequency(mut self, frequency: Duration) -> Self {
        self.commit_frequency = frequency;
        self
    }

    /// How often the client heartbeats and re-reads the shard and client lists (default
    /// 1 min). Leases and client rows older than 5 × this are considered abandoned.
    pub fn with_shard_check_frequency(mut self, frequency: Duration) -> Self {
        self.shard_check_frequency = frequency;
        self
    }

    /// Whether the fleet's leader moves shards so that clients carry similar *load*, not
    /// only similar shard counts (default on). Each owner publishes its shards' smoothed
    /// throughput on their lease rows; the leader moves a few shards per shard check off
    /// the count-balanced [`assign_shards`](crate::assign_shards), and only when that
    /// clears a hysteresis band, so steady or quiet streams see no moves. The rule is in
    /// [`balance`](crate::balance). Off, the leader withdraws its moves and the fleet
    /// balances by count alone.
    ///
    /// The leader's setting is the one that counts: set it alike on every client. While
    /// Go clients share the application, the Go scheme applies and nothing is moved.
    ///
    /// ```
    /// let count_only = kinsumer::Config::default().with_load_balancing(false);
    /// assert!(!count_only.load_balancing());
    /// assert!(kinsumer::Config::default().load_balancing());
    /// ```
    pub fn with_load_balancing(mut self, on: bool) -> Self {
        self.load_balancing = on;
        self
    }

    /// How often the leader refreshes the shared shard list (default 1 min; must be at
    /// least the shard check frequency).
    pub fn with_leader_action_frequency(mut self, frequency: Duration) -> Self {
        self.leader_action_frequency = frequency;
        self
    }

    /// How many fetched records may wait for the caller (default 100, at most 100,000).
    /// Shard threads stall when it is full: memory stays bounded by this plus one batch
    /// per shard.
    pub fn with_buffer_size(mut self, size: usize) -> Self {
        self.buffer_size = size;
        self
    }

    /// Read capacity of tables created with provisioned billing (default 10).
    pub fn with_dynamo_read_capacity(mut self, capacity: i64) -> Self {
        self.dynamo_read_capacity = capacity;
        self
    }

    /// Write capacity of tables created with provisioned billing (default 10).
    pub fn with_dynamo_write_capacity(mut self, capacity: i64) -> Self {
        self.dynamo_write_capacity = capacity;
        self
    }

    /// Polling interval while waiting for tables to become active or be deleted
    /// (default 3 s).
    pub fn with_dynamo_waiter_delay(mut self, delay: Duration) -> Self {
        self.dynamo_waiter_delay = delay;
        self
    }

    /// Where shards without a checkpoint start (default [`InitialPosition::TrimHorizon`]).
    pub fn with_initial_position(mut self, position: InitialPosition) -> Self {
        self.initial_position = position;
        self
    }

    /// Maximum records per GetRecords call, 1..=10,000 (default 10,000).
    pub fn with_max_records(mut self, max: i32) -> Self {
        self.max_records = max;
        self
    }

    /// The most records one [`Batch`](crate::Batch) holds, 1..=10,000 (default 1,000).
    ///
    /// A batch is what one GetRecords answer (or fan-out event) brought, KPL aggregates
    /// unpacked; a larger answer is split. A batch never holds more than
    /// [`buffer_size`](Config::with_buffer_size) or
    /// [`max_unmarked`](Config::with_max_unmarked) records either, so with the default
    /// buffer of 100 records, batches hold at most 100: raise both for larger ones.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = kinsumer::Config::default()
    ///     .with_buffer_size(2_000)
    ///     .with_max_batch_records(2_000);
    /// assert_eq!(config.batch_records(), 2_000);
    /// assert!(kinsumer::Config::default().with_max_batch_records(0).validate().is_err());
    /// ```
    pub fn with_max_batch_records(mut self, max: usize) -> Self {
        self.max_batch_records = max;
        self
    }

    /// The most records one batch holds: [`with_max_batch_records`](Config::with_max_batch_records),
    /// but never more than the buffer or `max_unmarked` allow (default 100).
    pub fn batch_records(&self) -> usize {
        let unmarked = usize::try_from(self.max_unmarked).unwrap_or(usize::MAX);
        self.max_batch_records
            .min(self.buffer_size)
            .min(unmarked)
            .max(1)
    }

    /// Billing mode of the tables created by `create_required_tables` (default
    /// [`BillingMode::Provisioned`]).
    pub fn with_billing_mode(mut self, mode: BillingMode) -> Self {
        self.billing_mode = mode;
        self
    }

    /// When records count as processed (default [`CheckpointMode::Auto`]).
    pub fn with_checkpoint_mode(mut self, mode: CheckpointMode) -> Self {
        self.checkpoint_mode = mode;
        self
    }

    /// Check stream readiness with ListShards instead of DescribeStreamSummary (for
    /// credentials that may list shards but not describe the stream). Default false.
    pub fn with_list_shards_for_readiness(mut self, yes: bool) -> Self {
        self.use_list_shards_for_readiness = yes;
        self
    }

    /// Shards per ListShards page (default: the service's own, 1,000 on AWS). For tests
    /// of pagination (feature `testing`); not part of the stable API.
    #[cfg(feature = "testing")]
    pub fn with_list_shards_page_size(mut self, size: i32) -> Self {
        self.list_shards_page_size = Some(size);
        self
    }

    pub(crate) fn list_shards_page_size(&self) -> Option<i32> {
        self.list_shards_page_size
    }

    /// Whether records written by the Kinesis Producer Library (or another producer of its
    /// aggregation format) are unpacked into their user records (default true).
    ///
    /// Each user record is then delivered as its own [`Record`](crate::Record), with its
    /// own partition key and a [`sub_sequence_number`](crate::Record::sub_sequence_number),
    /// and checkpoints can fall inside an aggregate: a restart skips the user records
    /// already processed. A record that looks aggregated but is corrupt is delivered as it
    /// is, with a warning and [`Stats::aggregate_corrupt`]. Records that are not
    /// aggregated are delivered unchanged either way. With `false`, aggregates are
    /// delivered as single records holding the packed bytes (as the Go library does).
    ///
    /// ```
    /// let config = kinsumer::Config::default().with_deaggregation(false);
    /// assert!(!config.deaggregation());
    /// assert!(kinsumer::Config::default().deaggregation());
    /// ```
    pub fn with_deaggregation(mut self, yes: bool) -> Self {
        self.deaggregation = yes;
        self
    }

    /// Who is told when shards are assigned, about to be handed over, released, ended or
    /// lost (default: nobody); see [`ShardListener`].
    pub fn with_shard_listener(mut self, listener: Arc<dyn ShardListener>) -> Self {
        self.listener = listener;
        self
    }

    /// How long a shard being handed over (a rebalance, a stop) waits for the records
    /// already handed out to be processed before it commits and releases its lease
    /// (default: the commit frequency, at least 2 s). Records still unprocessed then are
    /// delivered again by the next owner. Must be shorter than the lease time
    /// (5 × shard check frequency).
    pub fn with_handover_grace(mut self, grace: Duration) -> Self {
        self.handover_grace = Some(grace);
        self
    }

    /// How long a client may go silent — crashed, cut off from DynamoDB, suspended —
    /// before the others take its shards (default 15 s; at least 1 s; capped at the
    /// lease time, 5 × shard check frequency).
    ///
    /// Each client writes its row in the clients table every fifth of this time (so 3 s
    /// by default, one small write), and reads the others' rows as often; a client whose
    /// row has not changed for this long, as another client sees it, is gone, and its
    /// shards move at once. A client that has not managed to write its row for four
    /// fifths of it stops delivering first, so two clients never deliver a shard at once.
    /// Lease rows are still heartbeated once per shard check, as the Go library expects.
    ///
    /// Each row states its client's failover time, so clients with different settings
    /// (and Go clients, judged by the Go rule) share a fleet. See the README's "How fast
    /// shards move" and `BENCHMARKS.md` for the trade-off in DynamoDB requests.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = kinsumer::Config::default();
    /// assert_eq!(config.failover_time(), Duration::from_secs(15));
    /// let slow = config.with_failover_time(Duration::from_secs(60));
    /// assert_eq!(slow.failover_time(), Duration::from_secs(60));
    /// // Never longer than the lease time (5 × the shard check frequency).
    /// let capped = slow.with_shard_check_frequency(Duration::from_secs(2));
    /// assert_eq!(capped.failover_time(), Duration::from_secs(10));
    /// ```
    pub fn with_failover_time(mut self, time: Duration) -> Self {
        self.failover_time = Some(time);
        self
    }

    /// The failover time in effect.
    pub fn failover_time(&self) -> Duration {
        let lease = self.lease_ttl();
        self.failover_time.map_or(lease, |t| t.min(lease))
    }

    /// The Go library's defaults *and* timings: a silent client's shards move after the
    /// lease time (5 × shard check frequency, 5 min), as a Go client moves them, and
    /// each client writes its row once per shard check. For fleets that must keep the Go
    /// library's DynamoDB request rate; [`Config::default`] also shares tables with Go
    /// clients, and moves shards faster.
    ///
    /// ```
    /// use std::time::Duration;
    /// let go = kinsumer::Config::go_defaults();
    /// assert_eq!(go.failover_time(), Duration::from_secs(300));
    /// assert_eq!(go.shard_check_frequency(), Duration::from_secs(60));
    /// ```
    pub fn go_defaults() -> Config {
        Config {
            failover_time: None,
            ..Config::default()
        }
    }

    /// The handover grace.
    pub fn handover_grace(&self) -> Duration {
        self.handover_grace
            .unwrap_or_else(|| self.commit_frequency.max(Duration::from_secs(2)))
    }

    pub(crate) fn listener(&self) -> &Arc<dyn ShardListener> {
        &self.listener
    }

    /// Reads every shard through enhanced fan-out (`SubscribeToShard`) with this
    /// registered consumer, instead of polling `GetRecords` (the Go library's
    /// `consumerARN`). The consumer must belong to this stream and be ACTIVE
    /// ([`run`](crate::Kinsumer::run) waits while it is CREATING).
    ///
    /// Fan-out gives each consumer its own 2 MB/s per shard and pushes records as they
    /// arrive; polling shares 5 reads/s and 2 MB/s per shard among all applications. See
    /// the README's "Polling or enhanced fan-out". Delivery, checkpoints and leases are
    /// the same either way, and polling and fan-out clients may share one application's
    /// tables.
    ///
    /// ```
    /// let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/orders/consumer/billing:1700000000";
    /// let config = kinsumer::Config::default().with_consumer_arn(arn);
    /// assert_eq!(config.consumer_arn(), Some(arn));
    /// assert!(config.validate().is_ok());
    /// let bad = kinsumer::Config::default().with_consumer_arn("billing");
    /// assert_eq!(bad.validate().unwrap_err().kind(), kinsumer::ErrorKind::InvalidArn);
    /// ```
    pub fn with_consumer_arn(mut self, arn: impl Into<String>) -> Self {
        self.fan_out = Some(FanOutConsumer::Arn(arn.into()));
        self
    }

    /// Reads every shard through enhanced fan-out with the consumer of this name: `run`
    /// registers it on the stream (`RegisterStreamConsumer`) if it does not exist, or
    /// reuses it, and waits until it is ACTIVE. Clients of a fleet starting together
    /// share one registration. [`Kinsumer::deregister_consumer`](crate::Kinsumer::deregister_consumer)
    /// removes it. Names are 1 to 128 letters, digits, `_`, `.` and `-`. A new
    /// registration is logged as a warning naming the consumers the stream had — on AWS
    /// each is billed and a stream has at most 20, so a typo must not go unseen; to use
    /// only a consumer registered beforehand, give its ARN
    /// ([`with_consumer_arn`](Config::with_consumer_arn)) instead.
    ///
    /// ```
    /// let config = kinsumer::Config::default().with_consumer_name("billing");
    /// assert_eq!(config.consumer_name(), Some("billing"));
    /// ```
    pub fn with_consumer_name(mut self, name: impl Into<String>) -> Self {
        self.fan_out = Some(FanOutConsumer::Name(name.into()));
        self
    }

    /// The fan-out consumer's ARN, if one was given.
    pub fn consumer_arn(&self) -> Option<&str> {
        match &self.fan_out {
            Some(FanOutConsumer::Arn(arn)) => Some(arn),
            _ => None,
        }
    }

    /// The fan-out consumer's name, if one was given.
    pub fn consumer_name(&self) -> Option<&str> {
        match &self.fan_out {
            Some(FanOutConsumer::Name(name)) => Some(name),
            _ => None,
        }
    }

    pub(crate) fn fan_out(&self) -> Option<&FanOutConsumer> {
        self.fan_out.as_ref()
    }

    /// How long an enhanced fan-out subscription may go without an answer — the
    /// subscription itself, then each event — before it is given up and renewed from
    /// the last record read (default 35 s, as the Amazon KCL; at least 1 s). Kinesis
    /// sends an event every few seconds even on an idle shard, so silence this long
    /// means a connection that died without closing (a half-open HTTP/2 stream): without
    /// a limit, the shard would stall for good while its lease is still renewed.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = kinsumer::Config::default();
    /// assert_eq!(config.subscription_timeout(), Duration::from_secs(35));
    /// let short = config.with_subscription_timeout(Duration::from_secs(10));
    /// assert_eq!(short.subscription_timeout(), Duration::from_secs(10));
    /// let bad = kinsumer::Config::default().with_subscription_timeout(Duration::ZERO);
    /// assert_eq!(bad.validate().unwrap_err().kind(), kinsumer::ErrorKind::InvalidDuration);
    /// ```
    pub fn with_subscription_timeout(mut self, timeout: Duration) -> Self {
        self.subscription_timeout = timeout;
        self
    }

    /// The subscription timeout.
    pub fn subscription_timeout(&self) -> Duration {
        self.subscription_timeout
    }

    /// Makes every Kinesis call (reads, fan-out subscriptions, consumer registration)
    /// with the credentials of this IAM role, obtained with STS `AssumeRole` from the
    /// base credentials and renewed before they expire (the Go library's `role`):
    /// typically for a stream in another AWS account. DynamoDB calls keep the base
    /// credentials, so the coordination tables stay in the caller's account.
    ///
    /// STS is reached as the base configuration says (with
    /// [`Kinsumer::new`](crate::Kinsumer::new) and
    /// [`from_sdk_config`](crate::Kinsumer::from_sdk_config), `AWS_ENDPOINT_URL_STS` is
    /// honoured). A refusal (`AccessDenied`) ends the consumer with
    /// [`ErrorKind::AssumeRoleFailed`](crate::ErrorKind::AssumeRoleFailed).
    ///
    /// ```
    /// let config = kinsumer::Config::default()
    ///     .with_role_arn("arn:aws:iam::123456789012:role/stream-reader")
    ///     .with_role_external_id("partner-7")
    ///     .with_role_session_name("billing");
    /// assert!(config.validate().is_ok());
    /// let bad = kinsumer::Config::default().with_role_arn("stream-reader");
    /// assert_eq!(bad.validate().unwrap_err().kind(), kinsumer::ErrorKind::InvalidArn);
    /// ```
    pub fn with_role_arn(mut self, arn: impl Into<String>) -> Self {
        self.role.get_or_insert_with(Role::default).arn = arn.into();
        self
    }

    /// The external id the role's trust policy asks for (with
    /// [`with_role_arn`](Config::with_role_arn)).
    pub fn with_role_external_id(mut self, id: impl Into<String>) -> Self {
        self.role.get_or_insert_with(Role::default).external_id = Some(id.into());
        self
    }

    /// The role session's name, as CloudTrail shows it (default: chosen by the SDK).
    pub fn with_role_session_name(mut self, name: impl Into<String>) -> Self {
        self.role.get_or_insert_with(Role::default).session_name = Some(name.into());
        self
    }

    /// The role assumed for Kinesis calls, if any.
    pub fn role_arn(&self) -> Option<&str> {
        self.role.as_ref().map(|r| r.arn.as_str())
    }

    pub(crate) fn role(&self) -> Option<&Role> {
        self.role.as_ref()
    }

    /// How many times a record that fails ([`Record::retry_later`](crate::Record::retry_later))
    /// is delivered before it goes to the [dead-letter handler](Config::with_dead_letter)
    /// instead (default: no limit — it is retried for as long as it fails). Needs a
    /// dead-letter handler; 1 sends a record there at its first failure.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kinsumer::{Config, DeadLetterStream, ErrorKind};
    ///
    /// let config = Config::default()
    ///     .with_max_attempts(3)
    ///     .with_dead_letter(Arc::new(DeadLetterStream::new("dead-letters")));
    /// assert_eq!(config.max_attempts(), Some(3));
    /// assert!(config.validate().is_ok());
    /// let without = Config::default().with_max_attempts(3);
    /// assert_eq!(without.validate().unwrap_err().kind(), ErrorKind::InvalidMaxAttempts);
    /// ```
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// The attempts a failing record gets, if limited.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// Where records go after [`max_attempts`](Config::with_max_attempts) failed
    /// deliveries; see [`DeadLetter`](crate::DeadLetter) and the ready
    /// [`DeadLetterStream`](crate::DeadLetterStream).
    pub fn with_dead_letter(mut self, handler: Arc<dyn crate::DeadLetter>) -> Self {
        self.dead_letter = Some(handler);
        self
    }

    pub(crate) fn dead_letter(&self) -> Option<&Arc<dyn crate::DeadLetter>> {
        self.dead_letter.as_ref()
    }

    /// Where metrics events go (default: nowhere).
    pub fn with_stats(mut self, stats: Arc<dyn Stats>) -> Self {
        self.stats = stats;
        self
    }

    /// The throttle delay.
    pub fn throttle_delay(&self) -> Duration {
        self.throttle_delay
    }
    /// The commit frequency.
    pub fn commit_frequency(&self) -> Duration {
        self.commit_frequency
    }
    /// The shard check frequency.
    pub fn shard_check_frequency(&self) -> Duration {
        self.shard_check_frequency
    }
    /// Whether the leader balances by load ([`Config::with_load_balancing`]).
    pub fn load_balancing(&self) -> bool {
        self.load_balancing
    }
    /// The leader action frequency.
    pub fn leader_action_frequency(&self) -> Duration {
        self.leader_action_frequency
    }
    /// The buffer size.
    pub fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// How many bytes of records (data and partition key) may wait for the caller
    /// (default 32 MiB), besides at most [`buffer_size`](Config::buffer_size) records.
    /// When the buffer is full the shard threads wait (and keep their leases alive). A
    /// record larger than this still goes through when the buffer is empty. Kinesis
    /// records are up to 1 MiB: with large records, this — not the record count — is
    /// what bounds memory.
    ///
    /// ```
    /// let config = kinsumer::Config::default().with_buffer_bytes(8 << 20);
    /// assert_eq!(config.buffer_bytes(), 8 << 20);
    /// assert!(kinsumer::Config::default().with_buffer_bytes(0).validate().is_err());
    /// ```
    pub fn with_buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// The byte bound on buffered records.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// About how many bytes of records (data and partition key) all shards together
    /// may hold fetched but not yet in the buffer (default 8 MiB; at least 1). Each
    /// shard sizes its GetRecords calls from the bytes per record it has seen so that
    /// what it holds stays within its share (this divided by the shards it reads): a
    /// backlog of 1 MiB records is fetched a few records at a time, not in 10 MB
    /// answers. A shard's first call asks for one record, to learn the size (the next
    /// follows at once); at least one record is always asked for. Small records are
    /// not affected: 8 MiB is 10,000 records of 800 B per shard at four shards.
    ///
    /// Peak memory is about `buffer_bytes` plus this plus the I/O's transient copies of
    /// one answer per shard.
    ///
    /// ```
    /// let config = kinsumer::Config::default().with_fetch_bytes(4 << 20);
    /// assert_eq!(config.fetch_bytes(), 4 << 20);
    /// assert!(kinsumer::Config::default().with_fetch_bytes(0).validate().is_err());
    /// ```
    pub fn with_fetch_bytes(mut self, bytes: usize) -> Self {
        self.fetch_bytes = bytes;
        self
    }

    /// The byte bound on records fetched ahead of the buffer, all shards together.
    pub fn fetch_bytes(&self) -> usize {
        self.fetch_bytes
    }

    /// How many records of one shard may be handed out past the oldest one not yet
    /// processed (default 10,000; at least 1).
    ///
    /// In [`CheckpointMode::Manual`], a record never marked holds its shard's checkpoint
    /// back, and every later mark has to be remembered until it is. At this bound the
    /// shard stops handing out records — it pauses, the other shards go on, its lease
    /// stays alive — until the oldest is marked; a closed shard does not finish (and its
    /// children do not start) while a record of it is unmarked. From one shard check on,
    /// the hold-up is logged and reported to
    /// [`Stats::records_held_back`](crate::Stats::records_held_back) with its age. In
    /// auto mode records are processed in order and this bound is never reached.
    ///
    /// ```
    /// let config = kinsumer::Config::default()
    ///     .with_checkpoint_mode(kinsumer::CheckpointMode::Manual)
    ///     .with_max_unmarked(500);
    /// assert_eq!(config.max_unmarked(), 500);
    /// assert!(kinsumer::Config::default().with_max_unmarked(0).validate().is_err());
    /// ```
    pub fn with_max_unmarked(mut self, records: u64) -> Self {
        self.max_unmarked = records;
        self
    }

    /// How many threads run the consumer's SDK calls — the HTTP exchanges and the decoding
    /// of responses — for all its shards (default 1; at most 64).
    ///
    /// One thread with one connection pool is the cheapest in memory and sockets, and
    /// has room to spare at the read rates Kinesis allows a few shards; it saturates
    /// near 300,000 records/s of 100 B. A CPU-bound batch consumer of many busy shards on
    /// a machine with cores to spare reads faster with 2 or more (see `BENCHMARKS.md`,
    /// "I/O threads"). Shard threads and the caller are not affected.
    ///
    /// ```
    /// let config = kinsumer::Config::default().with_io_threads(2);
    /// assert_eq!(config.io_threads(), 2);
    /// assert!(kinsumer::Config::default().with_io_threads(0).validate().is_err());
    /// ```
    pub fn with_io_threads(mut self, threads: usize) -> Self {
        self.io_threads = threads;
        self
    }

    /// The number of I/O threads.
    pub fn io_threads(&self) -> usize {
        self.io_threads
    }

    /// The bound on records handed out past the oldest unprocessed one, per shard.
    pub fn max_unmarked(&self) -> u64 {
        self.max_unmarked
    }
    /// The DynamoDB read capacity.
    pub fn dynamo_read_capacity(&self) -> i64 {
        self.dynamo_read_capacity
    }
    /// The DynamoDB write capacity.
    pub fn dynamo_write_capacity(&self) -> i64 {
        self.dynamo_write_capacity
    }
    /// The DynamoDB waiter delay.
    pub fn dynamo_waiter_delay(&self) -> Duration {
        self.dynamo_waiter_delay
    }
    /// The initial position.
    pub fn initial_position(&self) -> InitialPosition {
        self.initial_position
    }
    /// The maximum records per GetRecords call.
    pub fn max_records(&self) -> i32 {
        self.max_records
    }
    /// The table billing mode.
    pub fn billing_mode(&self) -> BillingMode {
        self.billing_mode
    }
    /// The checkpoint mode.
    pub fn checkpoint_mode(&self) -> CheckpointMode {
        self.checkpoint_mode
    }
    /// Whether KPL aggregated records are unpacked.
    pub fn deaggregation(&self) -> bool {
        self.deaggregation
    }
    /// Whether stream readiness is checked with ListShards.
    pub fn list_shards_for_readiness(&self) -> bool {
        self.use_list_shards_for_readiness
    }
    pub(crate) fn stats(&self) -> &Arc<dyn Stats> {
        #[cfg(feature = "metrics")]
        if let Some((_, both)) = &self.measured {
            return both;
        }
        &self.stats
    }

    /// Measures the consumer for the `metrics` feature: its stats hooks also count into
    /// `meters`.
    #[cfg(feature = "metrics")]
    pub(crate) fn measured(mut self, meters: Arc<crate::meter::Meters>) -> Self {
        let both: Arc<dyn Stats> = Arc::new(crate::meter::Both {
            user: Arc::clone(&self.stats),
            meters: Arc::clone(&meters),
        });
        self.measured = Some((meters, both));
        self
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn meters(&self) -> Option<&Arc<crate::meter::Meters>> {
        self.measured.as_ref().map(|(m, _)| m)
    }

    /// How old a lease, the leader's row or a Go client's row may get before it counts as
    /// abandoned: 5 × shard check, the Go library's rule.
    pub(crate) fn lease_ttl(&self) -> Duration {
        self.shard_check_frequency.saturating_mul(5)
    }

    /// How often this client's row is written: a fifth of the failover time.
    pub(crate) fn membership_interval(&self) -> Duration {
        membership_interval_for(self.failover_time())
    }

    /// How long after its row was last written this client still delivers: the failover
    /// time less one row interval, so it has stopped before any other client may count
    /// it gone.
    pub(crate) fn membership_margin(&self) -> Duration {
        membership_margin_for(self.failover_time())
    }

    /// Checks every value with the Go library's rules (plus the GetRecords limit).
    ///
    /// # Errors
    ///
    /// The first invalid value, as [`ErrorKind::InvalidThrottleDelay`],
    /// [`ErrorKind::InvalidCommitFrequency`], [`ErrorKind::InvalidShardCheckFrequency`],
    /// [`ErrorKind::InvalidLeaderActionFrequency`], [`ErrorKind::InvalidBufferSize`],
    /// [`ErrorKind::InvalidDynamoCapacity`], [`ErrorKind::InvalidMaxRecords`] or
    /// [`ErrorKind::InvalidInitialPosition`] (a timestamp in the future).
    pub fn validate(&self) -> Result<()> {
        let fail = |kind| Err(Error::new(kind).with_context("validating the configuration"));
        self.validate_intervals()?;
        if self.throttle_delay < Duration::from_millis(200) {
            return fail(ErrorKind::InvalidThrottleDelay);
        }
        if self.shard_check_frequency.is_zero() {
            return fail(ErrorKind::InvalidShardCheckFrequency);
        }
        // Idle leases are heartbeated when a commit falls due: commits must come well
        // within the lease time.
        if self.commit_frequency < MIN_COMMIT_FREQUENCY
            || self.commit_frequency >= self.lease_ttl() / 2
        {
            return fail(ErrorKind::InvalidCommitFrequency);
        }
        if self.leader_action_frequency.is_zero()
            || self.leader_action_frequency < self.shard_check_frequency
        {
            return fail(ErrorKind::InvalidLeaderActionFrequency);
        }
        for (name, bad) in [
            (
                "buffer_size (1..=100000)",
                self.buffer_size == 0 || self.buffer_size > MAX_BUFFER_SIZE,
            ),
            ("buffer_bytes (at least 1)", self.buffer_bytes == 0),
            ("fetch_bytes (at least 1)", self.fetch_bytes == 0),
            ("max_unmarked (at least 1)", self.max_unmarked == 0),
        ] {
            if bad {
                return Err(Error::new(ErrorKind::InvalidBufferSize)
                    .with_context(format!("validating the configuration: {name}")));
            }
        }
        self.validate_sizes()?;
        if self
            .idle_poll_delay
            .is_some_and(|d| d < self.throttle_delay)
        {
            return fail(ErrorKind::InvalidIdlePollDelay);
        }
        if self.handover_grace.is_some_and(|g| g >= self.lease_ttl()) {
            return fail(ErrorKind::InvalidHandoverGrace);
        }
        if self
            .failover_time
            .is_some_and(|t| t < Duration::from_secs(1))
        {
            return fail(ErrorKind::InvalidFailoverTime);
        }
        if self.subscription_timeout < Duration::from_secs(1) {
            return Err(Error::new(ErrorKind::InvalidDuration).with_context(
                "validating the configuration: subscription_timeout (at least 1 s)",
            ));
        }
        self.validate_fan_out_and_role()?;
        // Kinesis rejects it at every try: an answer that cannot change.
        if let InitialPosition::AtTimestamp(t) = self.initial_position
            && t > SystemTime::now()
        {
            return fail(ErrorKind::InvalidInitialPosition);
        }
        Ok(())
    }
}

impl Config {
    /// Every interval is added to clock readings: a huge one must be an error here, not
    /// a panic in a thread later.
    fn validate_intervals(&self) -> Result<()> {
        for (name, d) in [
            ("throttle_delay", Some(self.throttle_delay)),
            ("commit_frequency", Some(self.commit_frequency)),
            ("shard_check_frequency", Some(self.shard_check_frequency)),
            (
                "leader_action_frequency",
                Some(self.leader_action_frequency),
            ),
            ("dynamo_waiter_delay", Some(self.dynamo_waiter_delay)),
            ("idle_poll_delay", self.idle_poll_delay),
            ("handover_grace", self.handover_grace),
            ("failover_time", self.failover_time),
            ("subscription_timeout", Some(self.subscription_timeout)),
        ] {
            if d.is_some_and(|d| d > MAX_INTERVAL) {
                return Err(Error::new(ErrorKind::InvalidDuration)
                    .with_context(format!("validating the configuration: {name}")));
            }
        }
        Ok(())
    }

    /// Threads, table capacities and the records per call.
    fn validate_sizes(&self) -> Result<()> {
        let fail = |kind| Err(Error::new(kind).with_context("validating the configuration"));
        if !(1..=64).contains(&self.io_threads) {
            return fail(ErrorKind::InvalidIoThreads);
        }
        if self.dynamo_read_capacity <= 0 || self.dynamo_write_capacity <= 0 {
            return fail(ErrorKind::InvalidDynamoCapacity);
        }
        if !(1..=10_000).contains(&self.max_records) {
            return fail(ErrorKind::InvalidMaxRecords);
        }
        if !(1..=10_000).contains(&self.max_batch_records) {
            return fail(ErrorKind::InvalidBatchSize);
        }
        match (self.max_attempts, &self.dead_letter) {
            (Some(0), _) => {
                return Err(Error::new(ErrorKind::InvalidMaxAttempts)
                    .with_context("validating the configuration: max_attempts of 0"));
            }
            (Some(_), None) => {
                return Err(Error::new(ErrorKind::InvalidMaxAttempts).with_context(
                    "validating the configuration: max_attempts without a dead-letter handler \
                     (with_dead_letter): the last failure of a record would have nowhere to go",
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn validate_fan_out_and_role(&self) -> Result<()> {
        let bad = |kind, what: String| {
            Err(Error::new(kind).with_context(format!("validating the configuration: {what}")))
        };
        match &self.fan_out {
            Some(FanOutConsumer::Arn(arn)) if !is_consumer_arn(arn) => {
                return bad(
                    ErrorKind::InvalidArn,
                    format!(
                        "consumer ARN {arn:?} (expected \
                         arn:aws:kinesis:REGION:ACCOUNT:stream/STREAM/consumer/NAME:TIMESTAMP)"
                    ),
                );
            }
            Some(FanOutConsumer::Name(name)) if !is_consumer_name(name) => {
                return bad(
                    ErrorKind::InvalidName,
                    format!("consumer name {name:?} (1 to 128 letters, digits, '_', '.', '-')"),
                );
            }
            _ => {}
        }
        if let Some(role) = &self.role {
            if !is_role_arn(&role.arn) {
                return bad(
                    ErrorKind::InvalidArn,
                    format!(
                        "role ARN {:?} (expected arn:aws:iam::ACCOUNT:role/NAME)",
                        role.arn
                    ),
                );
            }
            let allowed = |c: char, extra: &str| c.is_ascii_alphanumeric() || extra.contains(c);
            if let Some(id) = &role.external_id
                && !((2..=1224).contains(&id.len()) && id.chars().all(|c| allowed(c, "_+=,.@:/-")))
            {
                return bad(ErrorKind::InvalidArn, format!("role external id {id:?}"));
            }
            if let Some(name) = &role.session_name
                && !((2..=64).contains(&name.len()) && name.chars().all(|c| allowed(c, "_+=,.@-")))
            {
                return bad(
                    ErrorKind::InvalidArn,
                    format!(
                        "role session name {name:?} (2 to 64 characters of [A-Za-z0-9_+=,.@-])"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE` split in its six parts.
fn arn_parts(arn: &str) -> Option<[&str; 6]> {
    let mut it = arn.splitn(6, ':');
    let parts = [
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    ];
    (parts[0] == "arn" && !parts[1].is_empty() && !parts[5].is_empty()).then_some(parts)
}

fn is_consumer_arn(arn: &str) -> bool {
    arn_parts(arn).is_some_and(|[_, _, service, region, account, resource]| {
        service == "kinesis"
            && !region.is_empty()
            && !account.is_empty()
            && resource.starts_with("stream/")
            && resource.contains("/consumer/")
    })
}

fn is_consumer_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn is_role_arn(arn: &str) -> bool {
    arn_parts(arn).is_some_and(|[_, _, service, _, account, resource]| {
        service == "iam"
            && !account.is_empty()
            && resource.len() > "role/".len()
            && resource.starts_with("role/")
    })
}

/// How often a client whose failover time is `failover` writes its row.
pub(crate) fn membership_interval_for(failover: Duration) -> Duration {
    failover / 5
}

/// How long after its row was last written a client whose failover time is `failover`
/// still delivers (its own membership margin), and so how long after a dead client's
/// last row its lease writes may still be its own (the dead-client grace): one
/// expression for both, which must stay equal.
pub(crate) fn membership_margin_for(failover: Duration) -> Duration {
    failover.saturating_sub(membership_interval_for(failover))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(c: Config) -> Option<ErrorKind> {
        c.validate().err().map(|e| e.kind())
    }

    #[test]
    fn defaults_match_go_and_are_valid() {
        let c = Config::default();
        assert_eq!(c.throttle_delay(), Duration::from_millis(250));
        assert_eq!(c.commit_frequency(), Duration::from_secs(1));
        assert_eq!(c.shard_check_frequency(), Duration::from_secs(60));
        assert_eq!(c.leader_action_frequency(), Duration::from_secs(60));
        assert_eq!(c.buffer_size(), 100);
        assert_eq!(c.dynamo_read_capacity(), 10);
        assert_eq!(c.dynamo_write_capacity(), 10);
        assert_eq!(c.dynamo_waiter_delay(), Duration::from_secs(3));
        assert_eq!(c.max_records(), 10_000);
        assert_eq!(c.initial_position(), InitialPosition::TrimHorizon);
        assert_eq!(c.checkpoint_mode(), CheckpointMode::Auto);
        assert_eq!(c.billing_mode(), BillingMode::Provisioned);
        assert!(!c.list_shards_for_readiness());
        assert_eq!(c.lease_ttl(), Duration::from_secs(300));
        assert_eq!(kind(c), None);
    }

    #[test]
    fn fan_out_and_role_settings_are_checked() {
        let d = Config::default;
        let arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/s/consumer/c:1";
        assert_eq!(kind(d().with_consumer_arn(arn)), None);
        for bad in [
            "",
            "c",
            "arn:aws:kinesis:eu-west-1:123456789012:stream/s",
            "arn:aws:iam::123456789012:role/r",
            "arn:aws:kinesis::123456789012:stream/s/consumer/c:1",
        ] {
            assert_eq!(
                kind(d().with_consumer_arn(bad)),
                Some(ErrorKind::InvalidArn),
                "{bad:?}"
            );
        }
        assert_eq!(kind(d().with_consumer_name("a.b-c_9")), None);
        for bad in ["", "a b", "ä", &"x".repeat(129)] {
            assert_eq!(
                kind(d().with_consumer_name(bad)),
                Some(ErrorKind::InvalidName),
                "{bad:?}"
            );
        }
        let role = "arn:aws:iam::123456789012:role/path/reader";
        assert_eq!(kind(d().with_role_arn(role)), None);
        for bad in [
            "reader",
            "arn:aws:iam::123456789012:user/u",
            "arn:aws:iam::1:role/",
        ] {
            assert_eq!(
                kind(d().with_role_arn(bad)),
                Some(ErrorKind::InvalidArn),
                "{bad:?}"
            );
        }
        // An external id or session name without a role has no role ARN to assume.
        assert_eq!(
            kind(d().with_role_external_id("abc")),
            Some(ErrorKind::InvalidArn)
        );
        assert_eq!(
            kind(d().with_role_arn(role).with_role_external_id("x")),
            Some(ErrorKind::InvalidArn)
        );
        assert_eq!(
            kind(d().with_role_arn(role).with_role_session_name("a b")),
            Some(ErrorKind::InvalidArn)
        );
        assert_eq!(
            kind(
                d().with_role_arn(role)
                    .with_role_session_name("kinsumer@host")
            ),
            None
        );
        assert_eq!(d().with_role_arn(role).role_arn(), Some(role));
    }

    #[test]
    fn initial_positions_read_as_kinesis_names_them() {
        assert_eq!(InitialPosition::TrimHorizon.to_string(), "TRIM_HORIZON");
        assert_eq!(InitialPosition::Latest.to_string(), "LATEST");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_595_151);
        assert_eq!(
            InitialPosition::AtTimestamp(t).to_string(),
            "AT_TIMESTAMP 2026-12-06T22:12:31Z"
        );
    }

    #[test]
    fn a_bad_buffer_setting_is_named() {
        for (config, name) in [
            (Config::default().with_buffer_bytes(0), "buffer_bytes"),
            (Config::default().with_buffer_size(0), "buffer_size"),
            (Config::default().with_fetch_bytes(0), "fetch_bytes"),
        ] {
            let Err(e) = config.validate() else {
                panic!("{name} 0 accepted");
            };
            assert_eq!(e.kind(), ErrorKind::InvalidBufferSize);
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn every_rule_has_its_error() {
        use ErrorKind::*;
        let d = Config::default;
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let max = Duration::MAX;
        let at = |t| d().with_initial_position(InitialPosition::AtTimestamp(t));
        let hour = secs(3600);
        let cases = [
            (d().with_throttle_delay(ms(199)), Some(InvalidThrottleDelay)),
            (d().with_throttle_delay(ms(200)), None),
            (
                d().with_commit_frequency(Duration::ZERO),
                Some(InvalidCommitFrequency),
            ),
            (
                d().with_commit_frequency(Duration::from_nanos(1)),
                Some(InvalidCommitFrequency),
            ),
            (d().with_commit_frequency(ms(100)), None),
            // A lease heartbeated too late.
            (
                d().with_commit_frequency(secs(150)),
                Some(InvalidCommitFrequency),
            ),
            (
                d().with_shard_check_frequency(Duration::ZERO),
                Some(InvalidShardCheckFrequency),
            ),
            (
                d().with_leader_action_frequency(Duration::ZERO),
                Some(InvalidLeaderActionFrequency),
            ),
            (
                d().with_leader_action_frequency(secs(59)),
                Some(InvalidLeaderActionFrequency),
            ),
            (d().with_buffer_size(0), Some(InvalidBufferSize)),
            (d().with_buffer_size(1 << 40), Some(InvalidBufferSize)),
            (d().with_buffer_size(usize::MAX), Some(InvalidBufferSize)),
            (d().with_buffer_size(100_000), None),
            (d().with_fetch_bytes(0), Some(InvalidBufferSize)),
            (
                d().with_dynamo_read_capacity(0),
                Some(InvalidDynamoCapacity),
            ),
            (
                d().with_dynamo_write_capacity(-1),
                Some(InvalidDynamoCapacity),
            ),
            (d().with_max_records(0), Some(InvalidMaxRecords)),
            (d().with_max_records(10_001), Some(InvalidMaxRecords)),
            (d().with_max_records(1), None),
            (d().with_max_batch_records(0), Some(InvalidBatchSize)),
            (d().with_max_batch_records(10_001), Some(InvalidBatchSize)),
            (d().with_max_batch_records(10_000), None),
            // Too large for clock arithmetic.
            (d().with_throttle_delay(max), Some(InvalidDuration)),
            (d().with_shard_check_frequency(max), Some(InvalidDuration)),
            (d().with_dynamo_waiter_delay(max), Some(InvalidDuration)),
            (d().with_idle_poll_delay(max), Some(InvalidDuration)),
            (d().with_failover_time(max), Some(InvalidDuration)),
            (
                d().with_idle_poll_delay(ms(100)),
                Some(InvalidIdlePollDelay),
            ),
            (d().with_idle_poll_delay(ms(250)), None),
            (d().with_failover_time(ms(999)), Some(InvalidFailoverTime)),
            (d().with_failover_time(ms(1000)), None),
            (at(SystemTime::now() + hour), Some(InvalidInitialPosition)),
            (at(SystemTime::now() - hour), None),
        ];
        for (i, (config, expected)) in cases.into_iter().enumerate() {
            assert_eq!(kind(config), expected, "case {i}");
        }
        // Unset, it follows a long throttle delay rather than reject it.
        assert_eq!(d().with_throttle_delay(secs(3)).idle_poll_delay(), secs(3));
    }
}
