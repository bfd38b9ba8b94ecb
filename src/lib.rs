//! Consume an Amazon Kinesis data stream from a fleet of processes, in plain synchronous
//! Rust.
//!
//! Each [`Kinsumer`] is one client of an *application*: the clients of an application
//! share the stream's shards between them, coordinating through three DynamoDB tables
//! (the same tables as the Go library kinsumer, so a Rust fleet resumes from a Go
//! fleet's checkpoints). Shards move between clients when clients come and go.
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
