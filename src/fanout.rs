//! Enhanced fan-out: the consumer registration and a [`RecordSource`] that reads a shard
//! through `SubscribeToShard`.
//!
//! A subscription is a task on the consumer's I/O runtime (the "pump") that reads the
//! event stream one event at a time and hands each event to the shard thread through a
//! channel. The pump reads the next event only after the shard thread took the previous
//! one (a one-permit credit): with a slow caller, events wait in the HTTP connection
//! (flow control) rather than in memory. The shard thread waits on that channel and its
//! stop signal together, so a stop or a lost lease ends the subscription at once.
//!
//! Resubscribing (AWS ends a subscription after 5 minutes; errors end it sooner) starts
//! after the last record read, or where the previous subscription started when it read
//! none. (`ContinuationSequenceNumber` would do too, but servers differ on whether it
//! names the last record or the next position, and so on `AT_` vs `AFTER_`; the last
//! record read means the same everywhere.) At most one `SubscribeToShard` per second per
//! shard, as AWS allows; refused subscriptions back off.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardError;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{
    ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEvent,
};
use crossbeam_channel::{Receiver, Sender};

use crate::bridge::Bridge;
use crate::config::{FanOutConsumer, InitialPosition};
use crate::error::{Error, ErrorKind, Result};
use crate::io::pump::{Pump, Pumped};
use crate::retry::{self, Backoff};
use crate::source::{Batch, RecordSource, ShardRef, SourceError, StartAt, Waited};

/// AWS allows one `SubscribeToShard` per second per consumer and shard.
const SUBSCRIBE_INTERVAL: Duration = Duration::from_secs(1);

/// The longest pause between refused subscriptions.
const MAX_SUBSCRIBE_BACKOFF: Duration = Duration::from_secs(10);

/// Maps a consumer-level error code to its kind.
fn consumer_error<E>(what: String, err: SdkError<E>) -> Error
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = match retry::code(&err) {
        Some("ResourceNotFoundException") => ErrorKind::NoSuchConsumer,
        Some("AccessDeniedException") => ErrorKind::ConsumerAccessDenied,
        _ => ErrorKind::Aws,
    };
    Error::new(kind).with_context(what).with_aws_source(err)
}

/// A refused subscription whose answer is not an AWS error at all (an HTML page, say:
/// a proxy, or a server without enhanced fan-out). Retrying it for ever would read
/// nothing and say little, so it counts as the shard's failure: three in a row park the
/// shard, as for any failure retrying does not fix.
fn not_aws(what: String, e: SdkError<SubscribeToShardError>) -> SourceError {
    let (status, content_type) = e.raw_response().map_or((0, None), |r| {
        (
            r.status().as_u16(),
            r.headers().get("content-type").map(str::to_owned),
        )
    });
    let content_type = content_type.unwrap_or_else(|| "no content type".to_owned());
    SourceError::Fatal(
        Error::new(ErrorKind::Aws)
            .with_context(format!(
                "{what}: answered HTTP {status} ({content_type}) without an AWS error: \
                 the endpoint may not support enhanced fan-out (without a consumer name or \
                 ARN, shards are read by polling)"
            ))
            .with_aws_source(e),
    )
}

/// The stream name in a consumer ARN (`…:stream/NAME/consumer/…`).
fn stream_of(consumer_arn: &str) -> Option<&str> {
    let resource = consumer_arn.splitn(6, ':').nth(5)?;
    resource.strip_prefix("stream/")?.split('/').next()
}

/// The consumer's ARN once it is ACTIVE: registering it first if it is configured by
/// name and missing. Waits (polling every `delay`, up to `limit`) while it is CREATING.
pub(crate) fn resolve(
    bridge: &Bridge,
    stream: &str,
    consumer: &FanOutConsumer,
    delay: Duration,
    limit: Duration,
) -> Result<Arc<str>> {
    let arn = match consumer {
        FanOutConsumer::Arn(arn) => {
            if stream_of(arn) != Some(crate::stream::name_of(stream)) {
                return Err(Error::new(ErrorKind::InvalidArn).with_context(format!(
                    "consumer {arn} is not a consumer of stream {stream}"
                )));
            }
            arn.clone()
        }
        FanOutConsumer::Name(name) => register(bridge, stream, name)?,
    };
    let deadline = Instant::now() + limit;
    let mut waited = false;
    loop {
        match status(bridge, &arn)? {
            ConsumerStatus::Active => {
                log::info!("reading stream {stream} through enhanced fan-out consumer {arn}");
                return Ok(Arc::from(arn));
            }
            ConsumerStatus::Creating if Instant::now() < deadline => {
                if !waited {
                    log::info!("fan-out consumer {arn} is being created; waiting");
                    waited = true;
                }
                std::thread::sleep(delay.min(deadline.saturating_duration_since(Instant::now())));
            }
            other => {
                return Err(Error::new(ErrorKind::ConsumerNotActive)
                    .with_context(format!("fan-out consumer {arn} is {}", other.as_str())));
            }
        }
    }
}

/// The consumer's status.
fn status(bridge: &Bridge, arn: &str) -> Result<ConsumerStatus> {
    let out = bridge
        .block_on(
            bridge
                .kinesis()
                .describe_stream_consumer()
                .consumer_arn(arn),
        )
        .map_err(|e| consumer_error(format!("describing fan-out consumer {arn}"), e))?;
    Ok(out
        .consumer_description
        .map_or(ConsumerStatus::Deleting, |d| d.consumer_status))
}

/// The stream's ARN (as given, or described).
fn stream_arn(bridge: &Bridge, stream: &str) -> Result<String> {
    if crate::stream::is_arn(stream) {
        return Ok(stream.to_owned());
    }
    crate::stream::summary(bridge, stream)?
        .map(|s| s.stream_arn)
        .ok_or_else(|| {
            Error::new(ErrorKind::Aws).with_context(format!(
                "describing stream {stream}: no description returned"
            ))
        })
}

/// The names of the stream's registered consumers (`ListStreamConsumers`, every page);
/// `None` if the server cannot list them.
fn consumer_names(bridge: &Bridge, stream_arn: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = bridge.kinesis().list_stream_consumers();
        let req = match &token {
            Some(t) => req.next_token(t),
            None => req.stream_arn(stream_arn),
        };
        let out = bridge.block_on(req).ok()?;
        names.extend(out.consumers().iter().map(|c| c.consumer_name().to_owned()));
        match out.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Some(names),
        }
    }
}

/// Registers the consumer `name` on the stream, or finds the one registered already
/// (by another client of the fleet, say): its ARN. A new registration is a billed
/// consumer on AWS (at most 20 per stream), so it is logged as a warning naming the
/// consumers the stream had: a typo in the name does not go unseen.
fn register(bridge: &Bridge, stream: &str, name: &str) -> Result<String> {
    let stream_arn = stream_arn(bridge, stream)?;
    let existing = consumer_names(bridge, &stream_arn);
    let known = existing
        .as_ref()
        .is_some_and(|names| names.iter().any(|n| n == name));
    if !known {
        let registered = bridge.block_on(
            bridge
                .kinesis()
                .register_stream_consumer()
                .stream_arn(&stream_arn)
                .consumer_name(name),
        );
        match registered {
            Ok(out) => {
                let arn = out.consumer.map(|c| c.consumer_arn).unwrap_or_default();
                warn_registered(stream, name, &arn, existing.as_deref());
                if !arn.is_empty() {
                    return Ok(arn);
                }
            }
            // It exists (or is being deleted: the status check says so).
            Err(e) if retry::code(&e) == Some("ResourceInUseException") => {}
            Err(e) => {
                return Err(consumer_error(
                    format!("registering fan-out consumer {name} on stream {stream}"),
                    e,
                ));
            }
        }
    }
    let out = bridge
        .block_on(
            bridge
                .kinesis()
                .describe_stream_consumer()
                .stream_arn(&stream_arn)
                .consumer_name(name),
        )
        .map_err(|e| {
            consumer_error(
                format!("describing fan-out consumer {name} of stream {stream}"),
                e,
            )
        })?;
    out.consumer_description
        .map(|d| d.consumer_arn)
        .ok_or_else(|| {
            Error::new(ErrorKind::NoSuchConsumer)
                .with_context(format!("fan-out consumer {name} of stream {stream}"))
        })
}

/// Says that a new fan-out consumer was registered, and which the stream had.
fn warn_registered(stream: &str, name: &str, arn: &str, existing: Option<&[String]>) {
    let others = match existing {
        Some([]) => "it had none".to_owned(),
        Some(names) => {
            let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            format!("it had {}", quoted.join(", "))
        }
        None => "its consumers could not be listed".to_owned(),
    };
    log::warn!(
        "registered a new enhanced fan-out consumer {name:?} on stream {stream} ({arn}): \
         {others}. Each consumer is billed and a stream has at most 20; if the name is a \
         typo, deregister it (Kinsumer::deregister_consumer) and fix with_consumer_name"
    );
}

/// Deregisters the configured consumer; done already is fine.
pub(crate) fn deregister(bridge: &Bridge, stream: &str, consumer: &FanOutConsumer) -> Result<()> {
    let req = bridge.kinesis().deregister_stream_consumer();
    let (req, what) = match consumer {
        FanOutConsumer::Arn(arn) => (req.consumer_arn(arn), arn.clone()),
        FanOutConsumer::Name(name) => (
            req.stream_arn(stream_arn(bridge, stream)?)
                .consumer_name(name),
            format!("{name} of stream {stream}"),
        ),
    };
    match bridge.block_on(req) {
        Ok(_) => {
            log::info!("deregistered fan-out consumer {what}");
            Ok(())
        }
        Err(e) if retry::code(&e) == Some("ResourceNotFoundException") => Ok(()),
        Err(e) => Err(consumer_error(
            format!("deregistering fan-out consumer {what}"),
            e,
        )),
    }
}

/// The shard thread's handle on a running subscription: dropping it ends the pump.
struct Subscription {
    number: u64,
    pump: Pump,
}

/// Reads a shard through `SubscribeToShard`; see the module docs.
pub(crate) struct FanOut {
    at: ShardRef,
    stats: std::sync::Arc<dyn crate::Stats>,
    consumer: Arc<str>,
    /// Where the next subscription starts: after the last record read.
    position: StartAt,
    subscription: Option<Subscription>,
    subscriptions: u64,
    events: Receiver<(u64, Pumped)>,
    events_tx: Sender<(u64, Pumped)>,
    /// When the last subscription was asked for.
    last_subscribe: Option<Instant>,
    backoff: Backoff,
    /// The next subscription waits for this, after a refusal.
    delay: Duration,
    /// Where the current subscription was asked to start, until a record past it
    /// arrives: records before it are dropped (see [`Floor`]).
    floor: Option<Floor>,
    /// Records dropped for lying before their subscription's start.
    dropped: u64,
    /// How long a subscription may go without an answer before it is renewed.
    silence: Duration,
}

/// The start a subscription asked for. A server that sends records before it (one
/// emulator ignores the starting sequence number and timestamp, and starts at the
/// shard's beginning) would otherwise deliver them again; Kinesis never does, so on AWS
/// this check drops nothing.
#[derive(Debug, Clone)]
enum Floor {
    After(String),
    At(String),
    Since(SystemTime),
}

impl Floor {
    fn admits(&self, r: &aws_sdk_kinesis::types::Record) -> bool {
        use crate::watermark::compare_sequence_numbers as cmp;
        match self {
            Floor::After(seq) => cmp(&r.sequence_number, seq).is_gt(),
            Floor::At(seq) => cmp(&r.sequence_number, seq).is_ge(),
            Floor::Since(t) => r
                .approximate_arrival_timestamp
                .and_then(|a| SystemTime::try_from(a).ok())
                // Arrival times have millisecond precision.
                .is_none_or(|a| a + Duration::from_millis(1) > *t),
        }
    }
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("shard", &self.at.shard)
            .field("consumer", &self.consumer)
            .field("position", &self.position)
            .field("subscriptions", &self.subscriptions)
            .finish_non_exhaustive()
    }
}

impl FanOut {
    pub(crate) fn new(
        at: ShardRef,
        consumer: Arc<str>,
        start: StartAt,
        silence: Duration,
        stats: Arc<dyn crate::Stats>,
    ) -> Self {
        // One event waiting plus, at most, the subscription's last word.
        let (events_tx, events) = crossbeam_channel::bounded(2);
        FanOut {
            at,
            stats,
            consumer,
            position: start,
            subscription: None,
            subscriptions: 0,
            events,
            events_tx,
            last_subscribe: None,
            backoff: Backoff::new(SUBSCRIBE_INTERVAL, MAX_SUBSCRIBE_BACKOFF),
            delay: Duration::ZERO,
            floor: None,
            dropped: 0,
            silence,
        }
    }

    fn starting_position(&mut self) -> Result<StartingPosition, SourceError> {
        self.floor = match &self.position {
            StartAt::After(seq) => Some(Floor::After(seq.clone())),
            StartAt::At(seq) => Some(Floor::At(seq.clone())),
            StartAt::Initial(InitialPosition::AtTimestamp(t)) => Some(Floor::Since(*t)),
            StartAt::Initial(_) => None,
        };
        let b = StartingPosition::builder();
        let b = match &self.position {
            StartAt::After(seq) => b
                .r#type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            StartAt::At(seq) => b
                .r#type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(seq),
            StartAt::Initial(InitialPosition::TrimHorizon) => {
                b.r#type(ShardIteratorType::TrimHorizon)
            }
            StartAt::Initial(InitialPosition::Latest) => {
                // A resubscription before the first record must not jump to the tip
                // again, skipping what arrived meanwhile: "latest" means "since now".
                self.position = StartAt::Initial(InitialPosition::AtTimestamp(SystemTime::now()));
                b.r#type(ShardIteratorType::Latest)
            }
            StartAt::Initial(InitialPosition::AtTimestamp(t)) => b
                .r#type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from(*t)),
        };
        b.build().map_err(|e| {
            SourceError::Fatal(
                Error::new(ErrorKind::Internal)
                    .with_context(
                        self.at
                            .what("building SubscribeToShard's starting position"),
                    )
                    .with_source(e),
            )
        })
    }

    /// Starts the next subscription's pump, no sooner than AWS allows.
    fn subscribe(&mut self, bridge: &Bridge) -> Result<(), SourceError> {
        let start = self.starting_position()?;
        let now = Instant::now();
        let not_before = self
            .last_subscribe
            .map_or(now, |t| t + SUBSCRIBE_INTERVAL)
            .max(now + self.delay);
        self.last_subscribe = Some(not_before);
        self.subscriptions += 1;
        self.stats.request_sent(&self.at.shard, "SubscribeToShard");
        let number = self.subscriptions;
        let request = bridge
            .kinesis()
            .subscribe_to_shard()
            .consumer_arn(&*self.consumer)
            .shard_id(&*self.at.shard)
            .starting_position(start);
        log::debug!(
            "shard {}: subscribing ({number}) {}",
            self.at.shard,
            self.position
        );
        let pump = Pump::start(
            bridge,
            request,
            not_before,
            number,
            self.events_tx.clone(),
            self.silence,
        );
        self.subscription = Some(Subscription { number, pump });
        Ok(())
    }

    /// A refused subscription: what to do about it.
    fn refused(&mut self, bridge: &Bridge, e: SdkError<SubscribeToShardError>) -> SourceError {
        let what = self.at.what("SubscribeToShard");
        match retry::code(&e) {
            Some("ResourceNotFoundException") => {
                // The consumer, the stream or the shard: ask which.
                match status(bridge, &self.consumer) {
                    Err(gone) if gone.kind() == ErrorKind::NoSuchConsumer => {
                        SourceError::Fatal(gone)
                    }
                    _ => self.at.classify("SubscribeToShard", e),
                }
            }
            Some("AccessDeniedException") => SourceError::Fatal(
                Error::new(ErrorKind::ConsumerAccessDenied)
                    .with_context(what)
                    .with_aws_source(e),
            ),
            Some("ResourceInUseException") => {
                // The previous subscription is still open on the server's side, or the
                // consumer is not ACTIVE: fatal only if it is being deleted.
                match status(bridge, &self.consumer) {
                    Ok(ConsumerStatus::Active | ConsumerStatus::Creating) | Err(_) => {
                        self.retry_later(Error::aws(what, e))
                    }
                    Ok(other) => SourceError::Fatal(
                        Error::new(ErrorKind::ConsumerNotActive)
                            .with_context(format!(
                                "fan-out consumer {} is {}",
                                self.consumer,
                                other.as_str()
                            ))
                            .with_aws_source(e),
                    ),
                }
            }
            Some("InvalidArgumentException" | "ValidationException")
                if matches!(self.position, StartAt::After(_) | StartAt::At(_)) =>
            {
                match self.at.checkpoint_rejected(bridge, &mut self.position, e) {
                    // Resuming from TRIM_HORIZON instead: try again.
                    Ok(()) => self.retry_later(
                        Error::new(ErrorKind::InvalidCheckpoint)
                            .with_context(self.at.what("checkpoint older than the retention"))
                            .transient(),
                    ),
                    Err(e) => e,
                }
            }
            None if e.raw_response().is_some() => not_aws(what, e),
            _ => match self.at.classify("SubscribeToShard", e) {
                SourceError::Transient(error) => self.retry_later(error),
                fatal => fatal,
            },
        }
    }

    /// An event's records, less any before the subscription's start; remembers where the
    /// next subscription starts, and ends this one at the shard's end.
    fn take_event(&mut self, event: SubscribeToShardEvent) -> Batch {
        let SubscribeToShardEvent {
            mut records,
            continuation_sequence_number,
            millis_behind_latest,
            child_shards,
            ..
        } = event;
        if let Some(floor) = self.floor.take() {
            let before = records.len();
            records.retain(|r| floor.admits(r));
            let dropped = (before - records.len()) as u64;
            if dropped > 0 {
                if self.dropped == 0 {
                    log::warn!(
                        "shard {}: the server sent records before the subscription's \
                         start ({}); dropping them",
                        self.at.shard,
                        self.position
                    );
                }
                self.dropped += dropped;
            }
            if records.is_empty() {
                // Not past the start yet.
                self.floor = Some(floor);
            }
        }
        if let Some(last) = records.last() {
            self.position = StartAt::After(last.sequence_number.clone());
        }
        // AWS ends a shard with an event that lists its children and has no
        // continuation; some servers list the children on every event once the
        // shard is closed and end it with one that has no records.
        let children = child_shards.as_ref().is_some_and(|c| !c.is_empty());
        let end_of_shard =
            continuation_sequence_number.is_empty() || (children && records.is_empty());
        if end_of_shard {
            self.subscription = None;
        }
        Batch {
            records,
            millis_behind_latest: Some(millis_behind_latest),
            end_of_shard,
        }
    }

    /// The subscription broke (`what` happened): resubscribe from the last record read,
    /// after a back-off.
    fn broken(&mut self, what: String) -> SourceError {
        self.subscription = None;
        let error = Error::new(ErrorKind::Aws)
            .with_context(format!(
                "{}: {what}; resubscribing {}",
                self.at.what("SubscribeToShard"),
                self.position
            ))
            .transient();
        self.retry_later(error)
    }

    fn retry_later(&mut self, error: Error) -> SourceError {
        self.delay = self.backoff.next_delay();
        SourceError::Transient(error)
    }
}

impl RecordSource for FanOut {
    fn next_batch(
        &mut self,
        bridge: &Bridge,
        _limit: i32,
        _tick: crate::source::Tick<'_>,
    ) -> Result<Batch, SourceError> {
        let empty = || Batch {
            records: Vec::new(),
            millis_behind_latest: None,
            end_of_shard: false,
        };
        let Some(current) = self.subscription.as_ref().map(|s| s.number) else {
            self.subscribe(bridge)?;
            return Ok(empty());
        };
        let (number, item) = loop {
            match self.events.try_recv() {
                Ok((n, _)) if n != current => {}
                Ok(got) => break got,
                Err(_) => return Ok(empty()),
            }
        };
        debug_assert_eq!(number, current);
        match item {
            Pumped::Event(event) => {
                if let Some(s) = &self.subscription {
                    s.pump.grant();
                }
                self.backoff.reset();
                self.delay = Duration::ZERO;
                Ok(self.take_event(event))
            }
            Pumped::Ended => {
                log::debug!(
                    "shard {}: subscription ended; resubscribing {}",
                    self.at.shard,
                    self.position
                );
                self.subscription = None;
                self.subscribe(bridge)?;
                Ok(empty())
            }
            Pumped::SubscribeFailed(e) => {
                self.subscription = None;
                Err(self.refused(bridge, *e))
            }
            Pumped::StreamFailed(why) => {
                Err(self.broken(format!("the event stream failed ({why})")))
            }
            Pumped::Silent(silence) => Err(self.broken(format!(
                "no answer for {silence:?} (a connection that died without closing?)"
            ))),
        }
    }

    fn pushes(&self) -> bool {
        true
    }

    fn wait_ready(&self, stop: &Receiver<()>, deadline: Instant) -> Waited {
        if self.has_pending() {
            return Waited::Ready;
        }
        crate::source::wait_ready_or_stop(&self.events, stop, deadline)
    }

    fn has_pending(&self) -> bool {
        self.subscription.is_none() || !self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_read_from_a_consumer_arn() {
        let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/orders/consumer/billing:17";
        assert_eq!(stream_of(arn), Some("orders"));
        assert_eq!(stream_of("arn:aws:kinesis:us-east-1:1:stream/"), Some(""));
        assert_eq!(stream_of("billing"), None);
    }
}
