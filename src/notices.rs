//! Where the library's threads report errors ([`Notices`]).

use crate::error::{Error, ErrorKind};
use crate::health::HealthState;
use crossbeam_channel::Sender;
use std::sync::Arc;

/// Where the library's threads report errors. A fatal error goes to the caller's
/// iterator through a channel of its own (the first one wins: it ends consumption);
/// anything else is counted in [`HealthState`] and passed to
/// [`Stats::error_reported`](crate::Stats::error_reported), never to the iterator.
#[derive(Debug, Clone)]
pub(crate) struct Notices {
    fatal: Sender<Error>,
    stats: Arc<dyn crate::stats::Stats>,
    health: Arc<HealthState>,
}

impl Notices {
    pub(crate) fn new(
        fatal: Sender<Error>,
        stats: Arc<dyn crate::stats::Stats>,
        health: Arc<HealthState>,
    ) -> Self {
        Notices {
            fatal,
            stats,
            health,
        }
    }

    pub(crate) fn report(&self, error: Error) {
        // STS refusing the role, or the fan-out consumer gone or forbidden, stops every
        // shard of this client: it ends the consumer at once, in its own words, rather
        // than after shards fail in turn.
        let error = if matches!(
            error.kind(),
            ErrorKind::AssumeRoleFailed
                | ErrorKind::NoSuchConsumer
                | ErrorKind::ConsumerNotActive
                | ErrorKind::ConsumerAccessDenied
        ) {
            error.fatal()
        } else {
            error
        };
        if error.is_fatal() {
            self.health.set_running(false);
            if let Err(e) = self.fatal.try_send(error) {
                log::debug!("a fatal error is already pending; also: {}", e.into_inner());
            }
        } else {
            self.health.record(&error);
            self.stats.error_reported(&error);
        }
    }

    pub(crate) fn health(&self) -> &HealthState {
        &self.health
    }

    pub(crate) fn shared_health(&self) -> Arc<HealthState> {
        Arc::clone(&self.health)
    }
}
