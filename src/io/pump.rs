//! A fan-out subscription on the I/O runtime ([`Pump`]): subscribes, then reads one
//! event at a time, each only once the shard thread has taken the previous one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardError;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{SubscribeToShardEvent, SubscribeToShardEventStream};
use crossbeam_channel::Sender;

use crate::io::bridge::Bridge;

/// What the pump hands the shard thread, tagged with its subscription's number.
pub(crate) enum Pumped {
    Event(SubscribeToShardEvent),
    /// The server ended the subscription (AWS: after 5 minutes).
    Ended,
    SubscribeFailed(Box<SdkError<SubscribeToShardError>>),
    /// The event stream broke (the error's account: its type is not the SDK's usual).
    StreamFailed(String),
    /// No answer (to the subscription, or an event) for this long.
    Silent(Duration),
}

/// A running subscription's pump: dropping it ends the subscription.
pub(crate) struct Pump {
    /// One permit: the pump may read the next event.
    credit: Arc<tokio::sync::Semaphore>,
    task: tokio::task::AbortHandle,
}

impl Pump {
    /// Sends `request` no sooner than `not_before`, then pumps its events into `events`
    /// tagged with `number`, one per [`grant`](Pump::grant) (the first is granted).
    pub(crate) fn start(
        bridge: &Bridge,
        request: aws_sdk_kinesis::operation::subscribe_to_shard::builders::SubscribeToShardFluentBuilder,
        not_before: Instant,
        number: u64,
        events: Sender<(u64, Pumped)>,
        silence: Duration,
    ) -> Pump {
        let credit = Arc::new(tokio::sync::Semaphore::new(1));
        let pump_credit = Arc::clone(&credit);
        // The subscription's future is made on the I/O thread, in the heap: a shard
        // thread that built it would move it through its own stack (see `bridge::Request`).
        let task = bridge.spawn(async move {
            Box::pin(run(
                request,
                tokio::time::Instant::from_std(not_before),
                number,
                events,
                pump_credit,
                silence,
            ))
            .await;
        });
        Pump { credit, task }
    }

    /// Lets the pump read the next event.
    pub(crate) fn grant(&self) {
        self.credit.add_permits(1);
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes, then reads events one at a time as the shard thread takes them. Waits
/// for each answer (the subscription, then every event) at most `silence`: a connection
/// that died without closing must not stall the shard while its lease is renewed.
async fn run(
    request: aws_sdk_kinesis::operation::subscribe_to_shard::builders::SubscribeToShardFluentBuilder,
    not_before: tokio::time::Instant,
    number: u64,
    events: Sender<(u64, Pumped)>,
    credit: Arc<tokio::sync::Semaphore>,
    silence: Duration,
) {
    tokio::time::sleep_until(not_before).await;
    let mut out = match tokio::time::timeout(silence, request.send()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            let _ = events.try_send((number, Pumped::SubscribeFailed(Box::new(e))));
            return;
        }
        Err(_) => {
            let _ = events.try_send((number, Pumped::Silent(silence)));
            return;
        }
    };
    loop {
        match credit.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
        let item = match tokio::time::timeout(silence, out.event_stream.recv()).await {
            Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e)))) => Pumped::Event(e),
            Ok(Ok(Some(_))) => {
                // An event type this SDK does not know: nothing to deliver.
                credit.add_permits(1);
                continue;
            }
            Ok(Ok(None)) => Pumped::Ended,
            Ok(Err(e)) => Pumped::StreamFailed(stream_failure(&e)),
            Err(_) => Pumped::Silent(silence),
        };
        let last = !matches!(item, Pumped::Event(_));
        // The credit keeps the channel from filling; a full or closed one means the
        // shard thread has moved on.
        if events.try_send((number, item)).is_err() || last {
            return;
        }
    }
}

/// One line (the service's code and message, or the cause chain), never the raw
/// event-stream message the SDK's `Debug` would show.
pub(crate) fn stream_failure<R>(e: &SdkError<SubscribeToShardEventStreamError, R>) -> String
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    crate::error::describe_sdk_error(e)
}
