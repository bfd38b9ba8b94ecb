//! Consume an Amazon Kinesis data stream from a fleet of processes, in plain synchronous
//! Rust.
//!
//! Each [`Kinsumer`] is one client of an *application*: the clients of an application
//! share the stream's shards between them, coordinating through three DynamoDB tables
//! (the same tables as the Go library kinsumer, so a Rust fleet resumes from a Go
//! fleet's checkpoints). Shards move between clients when clients come and go, and —
//! when some shards carry much more than others — so that clients carry similar load
//! ([`balance`], [`Config::with_load_balancing`]); [`assign_shards`] is the count-balanced
//! base every client computes alike.
//!
//! ```no_run
//! use kinsumer::{Config, Kinsumer};
//!
//! # fn main() -> Result<(), kinsumer::Error> {
//! let consumer = Kinsumer::new("my-stream", "my-app", "worker-1", Config::default())?;
//! consumer.create_required_tables()?;
//! consumer.run()?;
//! for record in consumer.records() {
//!     let record = record?;
//!     println!("{} {}", record.partition_key(), String::from_utf8_lossy(record.data()));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Delivery
//!
//! At least once, and exactly once across clean stops and rebalances. A record's shard
//! checkpoint moves past it only once the caller has *processed* it: in
//! [`CheckpointMode::Auto`] when the caller pulls the next record (or stops), in
//! [`CheckpointMode::Manual`] when the caller calls [`Record::mark_processed`]. After a
//! crash, the next owner re-reads from the last checkpoint, so records processed within
//! the last commit interval may be delivered again; none is lost.
//!
//! # Metrics
//!
//! With the `metrics` feature, each consumer emits through the [`metrics`](https://docs.rs/metrics)
//! crate's facade, so any exporter installed as its recorder (Prometheus, StatsD,
//! OpenTelemetry…) serves them; `examples/prometheus.rs` serves `/metrics`. Without a
//! recorder, nothing is emitted. Labels: `stream`, `application`, and `shard` where the
//! table says so.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `kinsumer_records_delivered_total`, `kinsumer_bytes_delivered_total` | counter | shard |
//! | `kinsumer_records_fetched_total`, `kinsumer_reads_total` | counter | shard |
//! | `kinsumer_requests_total` (GetRecords, SubscribeToShard) | counter | shard, `operation` |
//! | `kinsumer_throttles_total` | counter | shard |
//! | `kinsumer_millis_behind_latest` | gauge | shard |
//! | `kinsumer_delivery_lag_seconds` (arrival to hand-out) | histogram | shard |
//! | `kinsumer_processing_seconds` (hand-out to processed) | histogram | shard |
//! | `kinsumer_batch_records` (records per read) | histogram | shard |
//! | `kinsumer_commits_total`, `kinsumer_commit_failures_total`, `kinsumer_commits_lagging_total` | counter | shard |
//! | `kinsumer_lease_events_total` (acquired, released, lost) | counter | shard, `event` |
//! | `kinsumer_shard_owned` (1 or 0) | gauge | shard |
//! | `kinsumer_records_retried_total`, `kinsumer_records_dead_lettered_total` | counter | shard |
//! | `kinsumer_iterators_renewed_total` | counter | shard |
//! | `kinsumer_shard_load` (bytes/s, records weighted: [`balance`]) | gauge | shard |
//! | `kinsumer_leases_owned` | gauge | |
//! | `kinsumer_shards_moved_by_load_total` (as the leader) | counter | |
//! | `kinsumer_errors_total` (errors retried or worked around) | counter | `kind`, `code` |
//!
//! The library's threads only add to plain numbers (a hand-out's figures under the lock
//! it takes anyway); one export thread per consumer hands them to the recorder every
//! second, and once more at the stop. An exporter that is slow or blocks holds up that
//! thread alone, never a shard thread, the caller or the I/O thread. Histograms are
//! kept in buckets within 1/8 of the value, and sampled: at most 256 samples per shard
//! and second reach the recorder, drawn from every bucket in proportion, so the mean
//! and the quantiles hold but a histogram's count is of samples (count records with
//! `kinsumer_records_delivered_total`). A throttle is counted once the SDK's own
//! attempts gave up. A shard that moved to another client keeps its last values here
//! (`kinsumer_shard_owned` 0): an exporter's idle timeout drops such series.
//!
//! # Implementation
//!
//! One OS thread per owned shard plus a coordinator thread, all making their AWS calls
//! through one private I/O thread whose tokio current-thread runtime is always polling;
//! records reach the caller through a bounded channel, so a slow caller stalls the shard
//! threads instead of growing memory.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod aggregate;
mod assignment;
pub mod balance;
mod io;
use io::bridge;
mod batch;
mod budget;
mod checkpoints;
mod clients;
mod clock;
mod config;
mod consumer;
mod coordinator;
mod dead_letter;
mod endpoint;
mod error;
mod fanout;
mod fleet;
mod health;
mod lineage;
mod liveness;
mod membership;
mod metadata;
#[cfg(feature = "metrics")]
mod meter;
mod notices;
mod parallel;
mod record;
mod retry;
mod scheme;
mod shard;
mod source;
mod stats;
mod stream;
mod tables;
#[cfg(feature = "testing")]
pub mod testing;
mod watermark;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use assignment::{AssignmentMode, assign_shards};
pub use batch::{Batch, Batches, PolledBatch};
pub use config::{BillingMode, CheckpointMode, Config, InitialPosition};
pub use consumer::{Kinsumer, Polled, Records, StopHandle};
pub use dead_letter::{DeadLetter, DeadLetterError, DeadLetterStream, Letter};
pub use error::{Error, ErrorKind, Result};
pub use fleet::{
    ClientStatus, Fleet, FleetStatus, FormerHolder, Released, RewindPlan, RewindStep, RewindTo,
    ShardStatus,
};
pub use health::{Health, OwnedShard, ParkedShard, Position, ShardState};
pub use parallel::ProcessError;
pub use record::{ProcessedMarker, Record};
pub use stats::{NoListener, NoStats, ShardListener, Stats};
