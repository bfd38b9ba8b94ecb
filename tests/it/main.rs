//! Integration tests: the library against real AWS-compatible servers (embedded
//! emulators by default; see `tests/support`). One binary with a module per behaviour
//! keeps link time and disk down.

#[path = "../support/mod.rs"]
mod support;

mod aggregate;
mod arn;
mod balance;
mod batches;
mod bridge;
mod compat;
mod crash;
mod ctl;
mod drain;
mod errors;
mod fanout;
mod faults;
mod fleet;
mod hopeless;
mod iam;
mod idle;
mod introspection;
mod isolation;
mod iterator;
mod large;
mod lease;
mod lifecycle;
mod manual;
mod metrics;
mod migration;
mod outage;
mod panics;
mod parallel;
mod positions;
mod processes;
mod rebalance;
mod resharding;
mod resume;
mod retry;
mod role;
mod stalled_caller;
mod startup;
mod threads;
