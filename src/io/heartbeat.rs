//! The task that rewrites this client's row in the clients table every membership
//! interval, renewing its [`Membership`] with each write that lands; see
//! [`membership`](crate::membership).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoints::Owner;
use crate::clients;
use crate::config::Config;
use crate::io::bridge::Bridge;
use crate::membership::Membership;

/// The task writing this client's row; dropping it tells the task to end (after the
/// write in flight, if any), [`Heartbeat::stop`] also waits for that.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    stop: Arc<tokio::sync::Notify>,
    /// Disconnects when the task has ended.
    done: crossbeam_channel::Receiver<()>,
    /// The longest a write may take.
    attempt: Duration,
}

impl Heartbeat {
    /// Ends the task and waits (up to one write's time limit, and at most `within`)
    /// until it has: no write of the row can land after this returns, so the row can be
    /// deleted. (Cut short by `within`, a late write may still land: the row then
    /// expires like a crashed client's.)
    pub(crate) fn stop(self, within: Duration) {
        self.stop.notify_one();
        let _ = self
            .done
            .recv_timeout((self.attempt + Duration::from_secs(1)).min(within));
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// Starts rewriting this client's row every [`Config::membership_interval`], renewing
/// `membership` with each write that lands, until the returned [`Heartbeat`] is dropped
/// (before the row is deleted, on a stop) or the I/O runtime ends.
pub(crate) fn start_heartbeat(
    bridge: &Bridge,
    table: &str,
    owner: &Arc<Owner>,
    config: &Config,
    membership: &Arc<Membership>,
) -> Heartbeat {
    let every = config.membership_interval();
    let failover = config.failover_time();
    let mut writer = RowWriter {
        dynamodb: bridge.dynamodb().clone(),
        table: table.to_owned(),
        owner: Arc::clone(owner),
        membership: Arc::clone(membership),
        every,
        failover,
        // A slow answer still counts from its send time: wait for it well past the
        // interval (a loaded server must not look like an unreachable one), within the
        // margin.
        attempt: failover / 2,
        retry_after: (every / 3).max(Duration::from_millis(100)),
        failing: 0,
    };
    let attempt = writer.attempt;
    let stop = Arc::new(tokio::sync::Notify::new());
    let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
    let told = Arc::clone(&stop);
    // Not aborted: a write cut off half sent could still land after the row is deleted.
    drop(bridge.spawn(async move {
        let _done = done_tx;
        let mut next = Instant::now() + every;
        loop {
            // A stop stores its permit if it comes while a write is in flight.
            if tokio::time::timeout_at(next.into(), told.notified())
                .await
                .is_ok()
            {
                return;
            }
            next = writer.write().await;
        }
    }));
    Heartbeat {
        stop,
        done,
        attempt,
    }
}

/// What the heartbeat task needs to write the row, and how its writes have gone.
struct RowWriter {
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    owner: Arc<Owner>,
    membership: Arc<Membership>,
    every: Duration,
    failover: Duration,
    attempt: Duration,
    retry_after: Duration,
    /// Failed writes in a row.
    failing: u32,
}

impl RowWriter {
    /// Writes the row once (one attempt), renewing the membership from the send if it
    /// lands; returns when to write next.
    async fn write(&mut self) -> Instant {
        let sent = Instant::now();
        let put = clients::put_row(&self.dynamodb, &self.table, &self.owner, self.failover)
            .customize()
            .config_override(crate::retry::single_attempt(self.attempt))
            .send()
            .await;
        let (table, name) = (&self.table, &self.owner.name);
        match put {
            Ok(_) => {
                self.membership.renewed(sent);
                if self.failing > 0 {
                    log::info!(
                        "client {name}: wrote its row in table {table} again after {} failed \
                         tries",
                        self.failing
                    );
                }
                self.failing = 0;
                (sent + self.every).max(Instant::now())
            }
            Err(e) => {
                self.failing += 1;
                let e = crate::error::Error::aws(
                    format!("writing the row of client {name} in table {table}"),
                    e,
                );
                if self.failing == 1 {
                    log::warn!("{e}; retrying in {:?}", self.retry_after);
                } else {
                    log::debug!("{e} ({} tries in a row)", self.failing);
                }
                Instant::now() + self.retry_after
            }
        }
    }
}
