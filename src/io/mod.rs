//! Everything that runs on the consumer's private I/O runtime, and the only code that
//! uses tokio (the `testing` kit's emulators aside; `.ci/run` checks it):
//!
//! - [`bridge`]: the runtime thread, the SDK clients, and the calls other threads hand
//!   to it and wait for;
//! - [`watch`]: the polling of an idle shard while its thread sleeps;
//! - [`pump`]: a fan-out subscription, read one event at a time as its shard takes them;
//! - [`heartbeat`]: the task that rewrites this client's row in the clients table.
//!
//! The rest of the crate is plain threads and channels: it starts these tasks through
//! the handles here and never awaits anything itself.

pub(crate) mod bridge;
pub(crate) mod heartbeat;
pub(crate) mod pump;
pub(crate) mod watch;
