//! Where a shard's records come from.
//!
//! [`RecordSource`] is the seam between reading and everything else (leases,
//! checkpoints, delivery): the shard worker only asks for the next batch. [`Polling`]
//! reads with GetShardIterator/GetRecords; an enhanced fan-out source (SubscribeToShard)
//! can implement the same trait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::{ProvideErrorMetadata as _, SdkError};
use aws_sdk_kinesis::operation::get_records::{GetRecordsError, GetRecordsOutput};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Record as KinesisRecord, ShardIteratorType};
use crossbeam_channel::{Receiver, RecvTimeoutError, Select};

use crate::bridge::{Bridge, Later, Request};
use crate::config::InitialPosition;
use crate::error::{Error, ErrorKind};
use crate::io::watch::{Watch, WatchCalls};
use crate::retry;
use crate::stats::Stats;

/// One fetch's worth of records.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) records: Vec<KinesisRecord>,
    pub(crate) millis_behind_latest: Option<i64>,
    /// The shard is closed and this batch holds its last records.
    pub(crate) end_of_shard: bool,
}

/// Why a fetch failed.
#[derive(Debug)]
pub(crate) enum SourceError {
    /// Try again after a backoff.
    Transient(Error),
    /// This shard cannot be read by this thread (stream gone, access denied, …).
    Fatal(Error),
    /// The worker's [`Tick`] asked to give up waiting (a stop, a lost lease).
    Interrupted,
}

/// What a source calls while it waits on a slow call, about every [`TICK`]: the worker
/// keeps its lease alive (commits, renewals) meanwhile. `false` means stop waiting.
pub(crate) type Tick<'t> = &'t mut dyn FnMut() -> bool;

/// How often a waiting source ticks.
pub(crate) const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs an SDK call, ticking while it is in flight. `Err(None)` if the tick gave up.
#[allow(
    clippy::result_large_err,
    reason = "passes the SDK's own result type through unchanged"
)]
pub(crate) fn call_ticking<R: Request>(
    bridge: &Bridge,
    request: R,
    tick: Tick<'_>,
) -> Result<Result<R::Ok, aws_sdk_kinesis::error::SdkError<R::Err>>, SourceError> {
    let call = bridge.call(request);
    loop {
        if let Some(answer) = call.wait_for(TICK) {
            return Ok(answer);
        }
        if !tick() {
            return Err(SourceError::Interrupted);
        }
    }
}

/// How a wait for a pushing source ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// `next_batch` has something to return.
    Ready,
    /// Told to stop.
    Stop,
    /// The deadline passed.
    Timeout,
}

/// Waits until `ready` has a message (or is disconnected), `stop` fires or `deadline`
/// passes.
pub(crate) fn wait_ready_or_stop<T>(
    ready: &Receiver<T>,
    stop: &Receiver<()>,
    deadline: Instant,
) -> Waited {
    let mut sel = Select::new();
    let index = sel.recv(ready);
    sel.recv(stop);
    match sel.ready_deadline(deadline) {
        Ok(i) if i == index => Waited::Ready,
        Ok(_) => Waited::Stop,
        Err(_) => Waited::Timeout,
    }
}

/// A supplier of a shard's records, in order.
pub(crate) trait RecordSource {
    /// The next batch (possibly empty) of at most `limit` records. After a batch with
    /// `end_of_shard`, not called again. A pushing source never blocks here: it returns
    /// what has arrived (possibly nothing).
    fn next_batch(
        &mut self,
        bridge: &Bridge,
        limit: i32,
        tick: Tick<'_>,
    ) -> Result<Batch, SourceError>;

    /// Whether records are pushed (enhanced fan-out): the worker then waits with
    /// [`wait_ready`](RecordSource::wait_ready) instead of pacing calls itself.
    fn pushes(&self) -> bool {
        false
    }

    /// For a pushing or watching source: waits until `next_batch` has something to return, `stop`
    /// fires or `deadline` passes.
    fn wait_ready(
        &self,
        _stop: &crossbeam_channel::Receiver<()>,
        _deadline: std::time::Instant,
    ) -> Waited {
        Waited::Ready
    }

    /// For a pushing source: whether `next_batch` would return something now.
    fn has_pending(&self) -> bool {
        true
    }

    /// Hands the polling of a shard that is empty at the tip to the I/O runtime:
    /// GetRecords every `period`, the first at `first`, until an answer brings records,
    /// lag, the shard's end or an error. Meanwhile the worker's thread sleeps in
    /// [`wait_ready`](RecordSource::wait_ready), and [`next_batch`](RecordSource::next_batch)
    /// then returns that answer. `false` if this source does not watch (it pushes, or
    /// holds no iterator yet).
    fn watch(&mut self, _bridge: &Bridge, _limit: i32, _first: Instant, _period: Duration) -> bool {
        false
    }

    /// Whether a [`watch`](RecordSource::watch) is running, or has ended with an answer
    /// `next_batch` has not taken yet.
    fn watching(&self) -> bool {
        false
    }
}

/// Where reading (re)starts.
#[derive(Debug, Clone)]
pub(crate) enum StartAt {
    After(String),
    /// At this record: an aggregate whose first user records are already processed.
    At(String),
    Initial(InitialPosition),
}

/// For messages: "after 4968…", "at 4968…", "TRIM_HORIZON".
impl std::fmt::Display for StartAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartAt::After(seq) => write!(f, "after {seq}"),
            StartAt::At(seq) => write!(f, "at {seq}"),
            StartAt::Initial(p) => write!(f, "{p}"),
        }
    }
}

/// A shard of a stream, for calls and messages about it.
#[derive(Debug, Clone)]
pub(crate) struct ShardRef {
    pub(crate) stream: Arc<str>,
    pub(crate) shard: Arc<str>,
}

/// GetRecords polling. Remembers the last sequence number it returned, so an expired or
/// rejected iterator is renewed right after the last delivered record.
#[derive(Debug)]
pub(crate) struct Polling {
    at: ShardRef,
    position: StartAt,
    iterator: Option<String>,
    stats: Arc<dyn Stats>,
    /// An idle shard's polling on the I/O runtime ([`RecordSource::watch`]).
    watch: Option<Watch>,
}

impl ShardRef {
    pub(crate) fn what(&self, op: &str) -> String {
        format!("{op} on shard {} of stream {}", self.shard, self.stream)
    }

    pub(crate) fn classify<E>(
        &self,
        op: &str,
        err: aws_sdk_kinesis::error::SdkError<E>,
    ) -> SourceError
    where
        E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if retry::code(&err) == Some("ResourceNotFoundException") {
            return SourceError::Fatal(
                Error::new(ErrorKind::NoSuchStream)
                    .with_context(self.what(op))
                    .with_aws_source(err),
            );
        }
        let transient = retry::is_transient(&err);
        let error = Error::aws(self.what(op), err);
        if transient {
            SourceError::Transient(error)
        } else {
            SourceError::Fatal(error)
        }
    }

    /// Kinesis rejected the checkpoint (servers answer InvalidArgument or Validation).
    /// If it lies before the shard's oldest record, it is older than the stream's
    /// retention: resume from TRIM_HORIZON, saying so. Anything else — not a sequence
    /// number, or one the shard never had — is reported and not guessed at: replaying
    /// the whole shard could deliver days of records again.
    pub(crate) fn checkpoint_rejected<E>(
        &self,
        bridge: &Bridge,
        position: &mut StartAt,
        e: aws_sdk_kinesis::error::SdkError<E>,
    ) -> Result<(), SourceError>
    where
        E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let seq = match &*position {
            StartAt::After(s) | StartAt::At(s) => s.clone(),
            StartAt::Initial(_) => return Ok(()),
        };
        let numeric = !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit());
        let oldest = if numeric { self.oldest(bridge)? } else { None };
        let expired = numeric
            && oldest
                .as_deref()
                .is_none_or(|o| crate::watermark::compare_sequence_numbers(&seq, o).is_lt());
        if !expired {
            return Err(SourceError::Fatal(
                Error::new(ErrorKind::InvalidCheckpoint)
                    .with_context(format!(
                        "shard {} of stream {}: checkpoint {seq:?} (repair it, or rewind \
                         the shard with kinsumer-ctl)",
                        self.shard, self.stream
                    ))
                    .with_aws_source(e),
            ));
        }
        log::warn!(
            "shard {}: checkpoint {seq} is older than the stream's retention (oldest record \
             {}); resuming from TRIM_HORIZON",
            self.shard,
            oldest.as_deref().unwrap_or("none: the shard is empty")
        );
        *position = StartAt::Initial(InitialPosition::TrimHorizon);
        Ok(())
    }

    /// The sequence number of the shard's oldest record, if it has one.
    pub(crate) fn oldest(&self, bridge: &Bridge) -> Result<Option<String>, SourceError> {
        let iterator = bridge
            .block_on(
                crate::stream::on_stream!(bridge.kinesis().get_shard_iterator(), &self.stream)
                    .shard_id(&*self.shard)
                    .shard_iterator_type(ShardIteratorType::TrimHorizon),
            )
            .map_err(|e| self.classify("GetShardIterator", e))?
            .shard_iterator;
        let Some(iterator) = iterator else {
            return Ok(None);
        };
        let out = bridge
            .block_on(
                bridge
                    .kinesis()
                    .get_records()
                    .shard_iterator(iterator)
                    .limit(1),
            )
            .map_err(|e| self.classify("GetRecords", e))?;
        Ok(out.records.into_iter().next().map(|r| r.sequence_number))
    }
}

/// The GetShardIterator request for `position`.
fn iterator_request(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
    position: &StartAt,
) -> aws_sdk_kinesis::operation::get_shard_iterator::builders::GetShardIteratorFluentBuilder {
    let req = crate::stream::on_stream!(client.get_shard_iterator(), stream).shard_id(shard);
    match position {
        StartAt::After(seq) => req
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(seq),
        StartAt::At(seq) => req
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(seq),
        StartAt::Initial(InitialPosition::TrimHorizon) => {
            req.shard_iterator_type(ShardIteratorType::TrimHorizon)
        }
        StartAt::Initial(InitialPosition::Latest) => {
            req.shard_iterator_type(ShardIteratorType::Latest)
        }
        StartAt::Initial(InitialPosition::AtTimestamp(t)) => req
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from(*t)),
    }
}

impl Polling {
    pub(crate) fn new(
        stream: Arc<str>,
        shard: Arc<str>,
        start: StartAt,
        stats: Arc<dyn Stats>,
    ) -> Self {
        Polling {
            at: ShardRef { stream, shard },
            position: start,
            iterator: None,
            stats,
            watch: None,
        }
    }

    fn get_iterator(&mut self, bridge: &Bridge, tick: Tick<'_>) -> Result<String, SourceError> {
        // Built on the I/O thread (see `Request`): only the owned inputs cross over.
        let client = bridge.kinesis().clone();
        let (stream, shard, position) = (
            Arc::clone(&self.at.stream),
            Arc::clone(&self.at.shard),
            self.position.clone(),
        );
        let req = Later(move || iterator_request(&client, &stream, &shard, &position).send());
        let asked = std::time::SystemTime::now();
        let result = call_ticking(bridge, req, &mut *tick)?;
        if result.is_ok() && matches!(self.position, StartAt::Initial(InitialPosition::Latest)) {
            // An iterator renewed before the first record must not jump to the tip again,
            // skipping what arrived meanwhile: from now on "latest" means "since then".
            self.position = StartAt::Initial(InitialPosition::AtTimestamp(asked));
        }
        match result {
            Ok(out) => out.shard_iterator.ok_or_else(|| {
                SourceError::Transient(
                    Error::new(ErrorKind::Aws)
                        .with_context(self.at.what("GetShardIterator returned no iterator")),
                )
            }),
            Err(e)
                if matches!(
                    retry::code(&e),
                    Some("InvalidArgumentException" | "ValidationException")
                ) && matches!(self.position, StartAt::After(_) | StartAt::At(_)) =>
            {
                self.at.checkpoint_rejected(bridge, &mut self.position, e)?;
                self.get_iterator(bridge, tick)
            }
            Err(e) => Err(self.at.classify("GetShardIterator", e)),
        }
    }

    fn fetch(
        &mut self,
        bridge: &Bridge,
        limit: i32,
        renewed: bool,
        tick: Tick<'_>,
    ) -> Result<Batch, SourceError> {
        let iterator = match self.iterator.take() {
            Some(it) => it,
            None => self.get_iterator(bridge, &mut *tick)?,
        };
        self.stats.request_sent(&self.at.shard, "GetRecords");
        let (client, it) = (bridge.kinesis().clone(), iterator.clone());
        let request = Later(move || client.get_records().shard_iterator(it).limit(limit).send());
        let result = match call_ticking(bridge, request, &mut *tick) {
            Ok(result) => result,
            Err(interrupted) => {
                self.iterator = Some(iterator);
                return Err(interrupted);
            }
        };
        self.take_answer(bridge, limit, renewed, iterator, result, tick)
    }

    /// Takes GetRecords' answer to `iterator`: the batch, or a renewed iterator's
    /// (once), or the error classified.
    fn take_answer(
        &mut self,
        bridge: &Bridge,
        limit: i32,
        renewed: bool,
        iterator: String,
        result: Result<GetRecordsOutput, SdkError<GetRecordsError>>,
        tick: Tick<'_>,
    ) -> Result<Batch, SourceError> {
        match result {
            Ok(out) => {
                if let Some(last) = out.records.last() {
                    self.position = StartAt::After(last.sequence_number.clone());
                }
                self.iterator = out.next_shard_iterator;
                Ok(Batch {
                    end_of_shard: self.iterator.is_none(),
                    records: out.records,
                    millis_behind_latest: out.millis_behind_latest,
                })
            }
            Err(e)
                if !renewed
                    && matches!(
                        retry::code(&e),
                        Some("ExpiredIteratorException" | "InvalidArgumentException")
                    ) =>
            {
                log::info!(
                    "shard {}: iterator {} ({}); renewing {}",
                    self.at.shard,
                    retry::code(&e).unwrap_or_default(),
                    e.message().unwrap_or_default(),
                    self.position
                );
                self.stats.iterator_renewed(&self.at.shard);
                self.fetch(bridge, limit, true, tick)
            }
            Err(e) => {
                let err = self.at.classify("GetRecords", e);
                if matches!(err, SourceError::Transient(_)) {
                    self.iterator = Some(iterator);
                }
                Err(err)
            }
        }
    }
}

impl RecordSource for Polling {
    fn next_batch(
        &mut self,
        bridge: &Bridge,
        limit: i32,
        tick: Tick<'_>,
    ) -> Result<Batch, SourceError> {
        let Some(watch) = self.watch.take() else {
            return self.fetch(bridge, limit, false, tick);
        };
        let end = loop {
            match watch.answer.recv_timeout(TICK) {
                Ok(end) => break end,
                Err(RecvTimeoutError::Timeout) => {
                    if !tick() {
                        self.watch = Some(watch);
                        return Err(SourceError::Interrupted);
                    }
                }
                // The iterator went with it: the next fetch gets one from the position.
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self
                        .at
                        .classify("GetRecords", crate::bridge::lost::<GetRecordsError>()));
                }
            }
        };
        self.take_answer(bridge, limit, false, end.iterator, end.result, tick)
    }

    fn watch(&mut self, bridge: &Bridge, limit: i32, first: Instant, period: Duration) -> bool {
        if self.watch.is_some() {
            return true;
        }
        let Some(iterator) = self.iterator.take() else {
            return false;
        };
        let calls = WatchCalls {
            client: bridge.kinesis().clone(),
            slots: bridge.call_slots(),
            shard: Arc::clone(&self.at.shard),
            stats: Arc::clone(&self.stats),
            limit,
            period,
        };
        self.watch = Some(Watch::start(bridge, calls, iterator, first));
        true
    }

    fn watching(&self) -> bool {
        self.watch.is_some()
    }

    fn wait_ready(&self, stop: &Receiver<()>, deadline: Instant) -> Waited {
        match &self.watch {
            Some(watch) => wait_ready_or_stop(&watch.answer, stop, deadline),
            None => Waited::Ready,
        }
    }
}
