//! Integration tests: the library against real AWS-compatible servers (embedded
//! emulators by default; see `tests/support`). One binary with a module per behaviour
//! keeps link time and disk down.

#[path = "../support/mod.rs"]
mod support;

mod drain;
mod crash;
mod manual;
mod resume;
