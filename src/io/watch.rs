//! The polling of an idle shard on the I/O runtime ([`Watch`]); see
//! [`RecordSource::watch`](crate::source::RecordSource::watch).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::get_records::{GetRecordsError, GetRecordsOutput};
use crossbeam_channel::Receiver;

use crate::io::bridge::{Bridge, CallSlots};
use crate::stats::Stats;

/// The polling of an idle shard, running on the I/O runtime. Dropping it ends the task.
///
/// Why: a thousand idle shards polled from their own threads cost each call two thread
/// wake-ups (the shard thread's timer, then the I/O thread's answer) on top of the SDK's
/// own work, and each shard thread woke again for every commit interval. A task on the
/// runtime that is awake anyway makes the same calls with neither, and the shard thread
/// sleeps until records come or its lease needs it.
#[derive(Debug)]
pub(crate) struct Watch {
    pub(crate) answer: Receiver<WatchEnd>,
    task: tokio::task::AbortHandle,
}

impl Watch {
    /// Starts polling `iterator` at `first`, then every `calls.period`.
    pub(crate) fn start(
        bridge: &Bridge,
        calls: WatchCalls,
        iterator: String,
        first: Instant,
    ) -> Watch {
        let (tx, answer) = crossbeam_channel::bounded(1);
        // The watch's future is made on the I/O thread, in the heap: a shard thread
        // that built it would move it through its own stack (see `bridge::Request`).
        let task = bridge.spawn(async move {
            let _ = tx.send(Box::pin(calls.run(iterator, first)).await);
        });
        Watch { answer, task }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a watch ended: the first answer that was not "empty at the tip", and the
/// iterator it was asked with (for renewing after an expired or rejected one).
#[derive(Debug)]
pub(crate) struct WatchEnd {
    pub(crate) iterator: String,
    pub(crate) result: Result<GetRecordsOutput, SdkError<GetRecordsError>>,
}

/// What a watch needs to make its calls.
pub(crate) struct WatchCalls {
    pub(crate) client: aws_sdk_kinesis::Client,
    pub(crate) slots: CallSlots,
    pub(crate) shard: Arc<str>,
    pub(crate) stats: Arc<dyn Stats>,
    pub(crate) limit: i32,
    pub(crate) period: Duration,
}

impl WatchCalls {
    /// GetRecords on `iterator` at `first`, then every `period` after each call was
    /// sent, while the answers are empty at the tip (each reported to `Stats` as any
    /// fetch is); returns the first other answer. Each call holds a call slot.
    async fn run(self, mut iterator: String, first: Instant) -> WatchEnd {
        let mut at = first;
        loop {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            let sent = Instant::now();
            self.stats.request_sent(&self.shard, "GetRecords");
            let result = {
                let _slot = self.slots.acquire().await;
                // Boxed: between calls (almost all of an idle shard's time) the watch
                // holds no call state, only the sleep.
                Box::pin(
                    self.client
                        .get_records()
                        .shard_iterator(&iterator)
                        .limit(self.limit)
                        .send(),
                )
                .await
            };
            // Empty at the tip goes on; anything else, the shard's end included (the
            // worker finishes that), goes back to the worker.
            let next = match result {
                Ok(mut out) if out.records.is_empty() && out.millis_behind_latest == Some(0) => {
                    match out.next_shard_iterator.take() {
                        Some(next) => next,
                        None => {
                            return WatchEnd {
                                iterator,
                                result: Ok(out),
                            };
                        }
                    }
                }
                result => return WatchEnd { iterator, result },
            };
            self.stats.records_fetched(&self.shard, 0, Some(0));
            iterator = next;
            at = sent + self.period;
        }
    }
}
