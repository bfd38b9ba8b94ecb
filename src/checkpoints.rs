//! The `<app>_checkpoints` table: one row per shard, which is both the shard's checkpoint
//! and its lease.
//!
//! Attributes (the Go library's): `Shard` (key), `SequenceNumber` (S; absent or NULL =
//! nothing consumed yet), `LastUpdate` (N, Unix ns), `LastUpdateRFC`, `OwnerID` (S; absent
//! or NULL = unowned), `OwnerName`, `Finished` (N ns, once the shard was read to its end
//! and processed), `FinishedRFC`. This crate adds two attributes that the Go library
//! ignores: `AggregateSequenceNumber` (S) and `SubSequenceNumber` (N), present only while
//! a KPL aggregate is partly processed (see [`crate::watermark`]), and
//! [`START_POSITION`], written by a rewind ([`crate::Fleet::apply_rewind`]) in place of a
//! `SequenceNumber`, and by every write of a lease that began at LATEST before any
//! checkpoint (`AT_TIMESTAMP` of when reading began, so the next owner resumes there);
//! every checkpoint written afterwards removes it.
//!
//! Capture succeeds only if the row is unowned, already ours, or stale. Every later write
//! is conditional on `OwnerID = me`: a failed condition means another client took the
//! lease, and is reported as [`WriteError::LeaseLost`] so the caller stops at once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use crate::bridge::{Bridge, Later};
use crate::clock;
use crate::config::InitialPosition;
use crate::error::{Error, ErrorKind};
use crate::liveness::{self, Liveness, Version};
use crate::retry;
use crate::tables;
use crate::watermark::{Checkpoint, Partial};

/// Where a rewound shard starts (`TRIM_HORIZON`, `LATEST` or `AT_TIMESTAMP <Unix ns>`),
/// instead of the configured initial position; only while the row has no
/// `SequenceNumber`.
pub(crate) const START_POSITION: &str = "StartPosition";

/// The attribute value for `position`.
pub(crate) fn start_position_value(position: InitialPosition) -> String {
    match position {
        InitialPosition::Latest => "LATEST".to_owned(),
        InitialPosition::AtTimestamp(t) => format!("AT_TIMESTAMP {}", clock::unix_nanos(t)),
        _ => "TRIM_HORIZON".to_owned(),
    }
}

/// The position an attribute value names, if it is one.
pub(crate) fn parse_start_position(value: &str) -> Option<InitialPosition> {
    match value {
        "TRIM_HORIZON" => Some(InitialPosition::TrimHorizon),
        "LATEST" => Some(InitialPosition::Latest),
        other => {
            let ns: u64 = other.strip_prefix("AT_TIMESTAMP ")?.parse().ok()?;
            Some(InitialPosition::AtTimestamp(
                std::time::UNIX_EPOCH + Duration::from_nanos(ns),
            ))
        }
    }
}

/// Who this client is, as written into lease rows.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub(crate) id: String,
    pub(crate) name: String,
}

/// A shard parked after failing the same way three times in a row, as its row
/// records it (attributes the Go library ignores): `Failure` (why), `FailureBy` (the
/// client's name), `FailureTime`/`FailureRFC` (when) and `FailurePosition` (the row's
/// position attributes then). The mark is in effect while the position is unchanged:
/// a repair — a rewind, a fixed `SequenceNumber`, or removing `Failure` — lifts it, and
/// the shard's next checkpoint write removes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailureMark {
    pub(crate) reason: String,
    pub(crate) by: Option<String>,
    pub(crate) at: Option<String>,
}

impl std::fmt::Display for FailureMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)?;
        match (&self.by, &self.at) {
            (Some(by), Some(at)) => write!(f, " (parked by client {by} at {at})"),
            (Some(by), None) => write!(f, " (parked by client {by})"),
            (None, Some(at)) => write!(f, " (parked at {at})"),
            (None, None) => Ok(()),
        }
    }
}

/// The failure mark's attributes, for a `REMOVE` clause.
pub(crate) const FAILURE_ATTRIBUTES: &str =
    "Failure, FailureBy, FailureTime, FailureRFC, FailurePosition";

/// The row's position attributes in one string: what a repair changes.
pub(crate) fn position_fingerprint(item: &HashMap<String, AttributeValue>) -> String {
    let mut out = String::new();
    for name in [
        "SequenceNumber",
        "AggregateSequenceNumber",
        "SubSequenceNumber",
        START_POSITION,
        "Finished",
    ] {
        let value = match item.get(name) {
            None => "-".to_owned(),
            Some(AttributeValue::S(v)) => format!("S:{v}"),
            Some(AttributeValue::N(v)) => format!("N:{v}"),
            Some(AttributeValue::Null(_)) => "NULL".to_owned(),
            Some(other) => format!("{other:?}"),
        };
        out.push_str(&value);
        out.push('|');
    }
    out
}

/// The row's failure mark, if it is in effect (the row's position unchanged since).
pub(crate) fn failure_in_effect(item: &HashMap<String, AttributeValue>) -> Option<FailureMark> {
    let reason = string_attr(item, "Failure")?;
    let at = string_attr(item, "FailurePosition")?;
    (at == position_fingerprint(item)).then(|| FailureMark {
        reason,
        by: string_attr(item, "FailureBy"),
        at: string_attr(item, "FailureRFC"),
    })
}

/// Records on the shard's row that this client parked it, unless another client owns
/// the row now. Returns the row's position fingerprint it was marked at (or `None` when
/// the row is owned by another client now). Creates the row if there is none.
pub(crate) fn mark_failed(
    bridge: &Bridge,
    table: &str,
    shard: &str,
    owner: &Owner,
    reason: &str,
) -> Result<Option<String>, Error> {
    let item = read_row(bridge, table, shard)?.unwrap_or_default();
    let fingerprint = position_fingerprint(&item);
    let now = clock::now_nanos();
    let req = bridge
        .dynamodb()
        .update_item()
        .table_name(table)
        .key("Shard", s(shard))
        .update_expression(
            "SET Failure = :why, FailureBy = :name, FailureTime = :now, FailureRFC = :rfc, \
             FailurePosition = :pos",
        )
        .condition_expression(
            "attribute_not_exists(OwnerID) OR attribute_type(OwnerID, :null) OR OwnerID = :me",
        )
        .expression_attribute_values(":why", s(reason))
        .expression_attribute_values(":name", s(&owner.name))
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":rfc", s(&clock::rfc3339(now)))
        .expression_attribute_values(":pos", s(&fingerprint))
        .expression_attribute_values(":null", s("NULL"))
        .expression_attribute_values(":me", s(&owner.id));
    match bridge.block_on(req) {
        Ok(_) => Ok(Some(fingerprint)),
        Err(e) if retry::code(&e) == Some("ConditionalCheckFailedException") => Ok(None),
        Err(e) => Err(Error::aws(
            format!("marking shard {shard} failed in table {table}"),
            e,
        )),
    }
}

/// A consistent read of the shard's whole row.
pub(crate) fn read_row(
    bridge: &Bridge,
    table: &str,
    shard: &str,
) -> Result<Option<HashMap<String, AttributeValue>>, Error> {
    let out = bridge
        .block_on(
            bridge
                .dynamodb()
                .get_item()
                .table_name(table)
                .key("Shard", s(shard))
                .consistent_read(true),
        )
        .map_err(|e| {
            Error::aws(
                format!("reading the row of shard {shard} in table {table}"),
                e,
            )
        })?;
    Ok(out.item)
}

/// What a successful capture found in the row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Captured {
    pub(crate) checkpoint: Checkpoint,
    pub(crate) finished: bool,
    /// A rewind's start position, for a row without a checkpoint.
    pub(crate) start: Option<InitialPosition>,
    /// What was wrong with the row, if the capture repaired it.
    pub(crate) repaired: Option<String>,
    /// When the capturing write was sent: the lease counts from then.
    pub(crate) sent: Instant,
    /// The row's failure mark, if in effect: the shard is not to be read.
    pub(crate) parked: Option<FailureMark>,
    /// Whether the row named this client as its owner: nobody else wrote it since this
    /// client's last write (another client's capture, or any release, changes the owner).
    pub(crate) was_ours: bool,
    /// The load the row last published ([`LOAD`]), for the new owner's meter to start from.
    pub(crate) load: Option<f64>,
}

/// The outcome of a capture attempt.
#[derive(Debug)]
pub(crate) enum Capture {
    Captured(Captured),
    /// Another client holds a lease that is not (yet) stale.
    HeldBy {
        holder: Option<String>,
        /// The row's owner and `LastUpdate`, when it has both.
        version: Option<Version>,
        /// When the write that found it was sent.
        asked: Instant,
    },
}

/// What a consistent read of a lease row found ([`Leases::capturable`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// Unowned, ours, missing or malformed: a plain capture takes it.
    Free,
    /// Held, but stale: a capture conditional on this version takes it.
    Stale(Version),
    /// Held by a client that looks alive.
    Held,
}

/// A conditional write failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The condition `OwnerID = me` failed: someone else owns the shard now.
    LeaseLost,
    /// Anything else (network, throttling, …): the lease may still be ours.
    Other { error: Error, transient: bool },
}

/// "another client owns the lease now", or the error's one line.
impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::LeaseLost => f.write_str("another client owns the lease now"),
            WriteError::Other { error, .. } => write!(f, "{error}"),
        }
    }
}

impl From<WriteError> for Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::LeaseLost => Error::new(ErrorKind::LeaseLost),
            WriteError::Other { error, .. } => error,
        }
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn string_attr(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

/// What is wrong with a row's lease attributes, if anything: `OwnerID` must be a string
/// or NULL, `LastUpdate` a number.
fn malformed(item: &HashMap<String, AttributeValue>) -> Option<String> {
    let kind = |v: &AttributeValue| format!("{v:?}").split('(').next().unwrap_or("?").to_owned();
    let mut wrong = Vec::new();
    match item.get("OwnerID") {
        None | Some(AttributeValue::S(_) | AttributeValue::Null(_)) => {}
        Some(other) => wrong.push(format!("OwnerID was of type {}", kind(other))),
    }
    match item.get("LastUpdate") {
        None => {}
        Some(AttributeValue::N(v)) if v.parse::<i64>().is_ok() => {}
        Some(other) => wrong.push(format!("LastUpdate was {}", kind(other))),
    }
    (!wrong.is_empty()).then(|| wrong.join(", "))
}

/// The checkpoint a row holds (see [`Checkpoint::from_row`]).
fn checkpoint_of(item: &HashMap<String, AttributeValue>) -> Checkpoint {
    let partial = match (
        item.get("AggregateSequenceNumber"),
        item.get("SubSequenceNumber"),
    ) {
        (Some(AttributeValue::S(aggregate)), Some(AttributeValue::N(sub))) => {
            sub.parse().ok().map(|sub_sequence_number| Partial {
                aggregate: aggregate.clone(),
                sub_sequence_number,
            })
        }
        _ => None,
    };
    Checkpoint::from_row(string_attr(item, "SequenceNumber"), partial)
}

/// The lease operations of one client on one table, run on the calling thread's bridge.
#[derive(Debug)]
pub(crate) struct Leases<'a> {
    pub(crate) bridge: &'a Bridge,
    pub(crate) table: &'a str,
    pub(crate) owner: &'a Owner,
    /// Where reading began, for a row without a checkpoint (an [`START_POSITION`]
    /// value): written with every write that carries no checkpoint, so that the next
    /// owner of a shard read from LATEST starts where this one did, not at a later tip.
    pub(crate) began: Option<&'a str>,
}

impl Leases<'_> {
    /// Takes the lease on `shard` if it is unowned or ours, if it still has the `stale`
    /// version this client observed as stale ([`Leases::capturable`]), or if it was last
    /// written so long ago that no clock skew explains it. Creates the row if there is
    /// none.
    pub(crate) fn capture(
        &self,
        shard: &str,
        ttl: Duration,
        stale: Option<&Version>,
    ) -> Result<Capture, WriteError> {
        let req = self.capture_request(shard, ttl, stale);
        let asked = Instant::now();
        match self.bridge.block_on(req) {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                Ok(Capture::Captured(Captured {
                    checkpoint: checkpoint_of(&item),
                    finished: matches!(item.get("Finished"), Some(AttributeValue::N(_))),
                    start: string_attr(&item, START_POSITION)
                        .and_then(|v| parse_start_position(&v)),
                    repaired: malformed(&item),
                    sent: asked,
                    parked: failure_in_effect(&item),
                    was_ours: string_attr(&item, "OwnerID").is_some_and(|o| o == self.owner.id),
                    load: load_of(&item),
                }))
            }
            Err(e) if retry::code(&e) == Some("ConditionalCheckFailedException") => {
                let old = e.as_service_error().and_then(|se| match se {
                    UpdateItemError::ConditionalCheckFailedException(c) => c.item.as_ref(),
                    _ => None,
                });
                Ok(Capture::HeldBy {
                    holder: old.and_then(|item| string_attr(item, "OwnerName")),
                    version: old.and_then(version_of),
                    asked,
                })
            }
            Err(e) => Err(self.other(format!("capturing the lease of shard {shard}"), e)),
        }
    }

    /// The conditional write of [`capture`](Leases::capture).
    ///
    /// Built on the I/O thread (see [`Request`](crate::bridge::Request)).
    fn capture_request(
        &self,
        shard: &str,
        ttl: Duration,
        stale: Option<&Version>,
    ) -> impl crate::bridge::Request<
        Ok = aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        Err = UpdateItemError,
    > {
        let client = self.bridge.dynamodb().clone();
        let (table, shard) = (self.table.to_owned(), shard.to_owned());
        let owner = self.owner.clone();
        let stale = stale.cloned();
        Later(move || capture_request(&client, &table, &shard, &owner, ttl, stale.as_ref()).send())
    }
}

/// The conditional write of [`Leases::capture`].
fn capture_request(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shard: &str,
    owner: &Owner,
    ttl: Duration,
    stale: Option<&Version>,
) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
    let now = clock::now_nanos();
    let req = client
        .update_item()
        .table_name(table)
        .key("Shard", s(shard))
        .update_expression(
            "SET OwnerID = :me, OwnerName = :name, LastUpdate = :now, LastUpdateRFC = :rfc",
        )
        // The two `attribute_type` clauses take a row whose owner or time has a type
        // no client writes (hand-edited, or corrupt): it could never be captured
        // otherwise. The last one takes a row this client saw go stale, unchanged.
        .condition_expression(format!(
            "attribute_not_exists(OwnerID) OR attribute_type(OwnerID, :null) \
                 OR OwnerID = :me OR LastUpdate < :cutoff \
                 OR (NOT attribute_type(OwnerID, :str) AND NOT attribute_type(OwnerID, :null)) \
                 OR (attribute_exists(LastUpdate) AND NOT attribute_type(LastUpdate, :num)){}",
            if stale.is_some() {
                " OR (OwnerID = :seenowner AND LastUpdate = :seenlast)"
            } else {
                ""
            }
        ))
        .expression_attribute_values(":str", s("S"))
        .expression_attribute_values(":num", s("N"))
        .expression_attribute_values(":me", s(&owner.id))
        .expression_attribute_values(":name", s(&owner.name))
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":rfc", s(&clock::rfc3339(now)))
        .expression_attribute_values(":null", s("NULL"))
        .expression_attribute_values(":cutoff", n(liveness::ancient_cutoff(ttl)))
        // The old row: the capture changes none of the attributes read from it.
        .return_values(ReturnValue::AllOld)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    match stale {
        Some(v) => req
            .expression_attribute_values(":seenowner", s(&v.owner))
            .expression_attribute_values(":seenlast", n(v.last_update)),
        None => req,
    }
}

impl Leases<'_> {
    /// Whether `shard` can be captured now — unowned, ours, or stale as `liveness` sees
    /// it — by a consistent read: waiting for a lease costs reads, not failed conditional
    /// writes (which consume write capacity on provisioned tables).
    pub(crate) fn capturable(
        &self,
        shard: &str,
        ttl: Duration,
        liveness: &Liveness,
    ) -> Result<LeaseState, WriteError> {
        let asked = Instant::now();
        let client = self.bridge.dynamodb().clone();
        let (table, key) = (self.table.to_owned(), s(shard));
        let out = self
            .bridge
            .block_on(Later(move || {
                client
                    .get_item()
                    .table_name(table)
                    .key("Shard", key)
                    .consistent_read(true)
                    .projection_expression("OwnerID, LastUpdate")
                    .send()
            }))
            .map_err(|e| self.other(format!("reading the lease of shard {shard}"), e))?;
        let Some(item) = out.item else {
            return Ok(LeaseState::Free);
        };
        if string_attr(&item, "OwnerID").is_none_or(|o| o == self.owner.id) {
            return Ok(LeaseState::Free);
        }
        Ok(match version_of(&item) {
            // An owner or time of a type no client writes: the capture repairs it.
            None => LeaseState::Free,
            Some(v) if liveness.lease_is_stale(shard, &v, ttl, asked) => LeaseState::Stale(v),
            Some(_) => LeaseState::Held,
        })
    }

    /// Starts heartbeating the lease and, with `checkpoint`, moving the checkpoint,
    /// without waiting: the shard keeps reading while the write is in flight.
    ///
    /// One attempt, of at most `attempt` (the next commit interval sends a fresh write): a
    /// write hung on a dead connection must not hold back the next renewal for the SDK's
    /// retries. Only one commit is in flight per shard, so they land in order.
    /// `load`, when given, is published with it ([`LOAD`]).
    pub(crate) fn start_commit(
        &self,
        shard: &str,
        checkpoint: Option<&Checkpoint>,
        attempt: Duration,
        load: Option<f64>,
    ) -> PendingWrite {
        let mut req = self.owned_update_request(shard, COMMIT_SET, checkpoint);
        req.load = load;
        let req = Later(move || {
            req.build()
                .customize()
                .config_override(retry::single_attempt(attempt))
                .send()
        });
        PendingWrite {
            call: self.bridge.call(req),
            what: format!(
                "committing the checkpoint of shard {shard} in table {}",
                self.table
            ),
        }
    }

    /// Moves the checkpoint of a lease this client holds (and heartbeats it), waiting
    /// for the answer.
    pub(crate) fn commit(&self, shard: &str, checkpoint: &Checkpoint) -> Result<(), WriteError> {
        self.owned_update(
            shard,
            COMMIT_SET,
            Some(checkpoint),
            "committing the checkpoint",
        )
    }

    /// Gives the lease up (OwnerID NULL, as the Go library writes it), moving the
    /// checkpoint first if given.
    pub(crate) fn release(
        &self,
        shard: &str,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), WriteError> {
        self.owned_update(shard, RELEASE_SET, checkpoint, "releasing the lease")
    }

    /// [`release`](Leases::release) in a single attempt of at most `attempt`, for a lease
    /// that ran out here: no retries that would outlast it further.
    pub(crate) fn release_once(
        &self,
        shard: &str,
        checkpoint: Option<&Checkpoint>,
        attempt: Duration,
    ) -> Result<(), WriteError> {
        let req = self.owned_update_request(shard, RELEASE_SET, checkpoint);
        let req = Later(move || {
            req.build()
                .customize()
                .config_override(retry::single_attempt(attempt))
                .send()
        });
        interpret_write(
            self.bridge.block_on(req),
            format!(
                "releasing the lease of shard {shard} in table {}",
                self.table
            ),
        )
    }

    /// Marks the shard read to its end and fully processed, and releases it.
    pub(crate) fn finish(
        &self,
        shard: &str,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), WriteError> {
        self.owned_update(
            shard,
            "Finished = :now, FinishedRFC = :rfc, OwnerID = :nullv, \
             LastUpdate = :now, LastUpdateRFC = :rfc",
            checkpoint,
            "finishing the shard",
        )
    }

    /// An update conditional on this client owning the row: `set` (which may use
    /// `:now`, `:rfc` and `:nullv`) plus, with a checkpoint, its attributes.
    fn owned_update(
        &self,
        shard: &str,
        set: &'static str,
        checkpoint: Option<&Checkpoint>,
        what: &str,
    ) -> Result<(), WriteError> {
        let req = self.owned_update_request(shard, set, checkpoint);
        interpret_write(
            self.bridge.block_on(req),
            format!("{what} of shard {shard} in table {}", self.table),
        )
    }

    /// The write of [`owned_update`](Leases::owned_update), built on the I/O thread (see
    /// [`Request`](crate::bridge::Request)): only owned inputs cross over.
    fn owned_update_request(
        &self,
        shard: &str,
        set: &'static str,
        checkpoint: Option<&Checkpoint>,
    ) -> OwnedUpdate {
        OwnedUpdate {
            client: self.bridge.dynamodb().clone(),
            table: self.table.to_owned(),
            shard: shard.to_owned(),
            owner_id: self.owner.id.clone(),
            set,
            checkpoint: checkpoint.cloned(),
            began: self.began.map(str::to_owned),
            load: None,
        }
    }

    fn other<E>(&self, what: String, e: aws_sdk_dynamodb::error::SdkError<E>) -> WriteError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        WriteError::Other {
            transient: retry::is_transient(&e),
            error: Error::aws(format!("{what} in table {}", self.table), e),
        }
    }
}

/// A write conditional on owning the row, with everything it needs owned, so the SDK's
/// builder is assembled on the I/O thread, not on a shard thread's stack.
pub(crate) struct OwnedUpdate {
    client: aws_sdk_dynamodb::Client,
    table: String,
    shard: String,
    owner_id: String,
    set: &'static str,
    checkpoint: Option<Checkpoint>,
    began: Option<String>,
    /// The shard's load, to publish ([`LOAD`]).
    load: Option<f64>,
}

impl OwnedUpdate {
    fn build(self) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let OwnedUpdate {
            client,
            table,
            shard,
            owner_id,
            set,
            checkpoint,
            began,
            load,
        } = self;
        let checkpoint = checkpoint.as_ref();
        let now = clock::now_nanos();
        let mut expression = format!("SET {set}");
        let mut req = client
            .update_item()
            .table_name(table)
            .key("Shard", s(&shard))
            .condition_expression("OwnerID = :me")
            .expression_attribute_values(":me", s(&owner_id))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":rfc", s(&clock::rfc3339(now)));
        if let Some(load) = load {
            expression.push_str(&format!(", {LOAD} = :load"));
            req = req.expression_attribute_values(":load", AttributeValue::N(format!("{load:.0}")));
        }
        if let (None, Some(began)) = (checkpoint, began) {
            expression.push_str(", StartPosition = :began");
            req = req.expression_attribute_values(":began", s(&began));
        }
        if let Some(c) = checkpoint {
            if let Some(seq) = &c.sequence_number {
                expression.push_str(", SequenceNumber = :seq");
                req = req.expression_attribute_values(":seq", s(seq));
            }
            match &c.partial {
                Some(p) => {
                    expression.push_str(
                        ", AggregateSequenceNumber = :agg, SubSequenceNumber = :sub \
                         REMOVE StartPosition, ",
                    );
                    expression.push_str(FAILURE_ATTRIBUTES);
                    req = req
                        .expression_attribute_values(":agg", s(&p.aggregate))
                        .expression_attribute_values(
                            ":sub",
                            AttributeValue::N(p.sub_sequence_number.to_string()),
                        );
                }
                None => {
                    expression.push_str(
                        " REMOVE AggregateSequenceNumber, SubSequenceNumber, StartPosition, ",
                    );
                    expression.push_str(FAILURE_ATTRIBUTES);
                }
            }
        }
        if set.contains(":nullv") {
            req = req.expression_attribute_values(":nullv", AttributeValue::Null(true));
        }
        req.update_expression(expression)
    }
}

impl crate::bridge::Request for OwnedUpdate {
    type Ok = aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
    type Err = UpdateItemError;
    fn send(
        self,
    ) -> impl std::future::Future<
        Output = Result<Self::Ok, aws_sdk_dynamodb::error::SdkError<Self::Err>>,
    > + Send {
        self.build().send()
    }
}

/// The row attribute in which a shard's owner publishes its load (bytes per second,
/// records weighted: see [`balance`](crate::balance)); the Go library ignores it.
pub(crate) const LOAD: &str = "FetchLoad";

/// The load a row publishes, if it has a usable one.
pub(crate) fn load_of(item: &HashMap<String, AttributeValue>) -> Option<f64> {
    match item.get(LOAD) {
        Some(AttributeValue::N(v)) => v.parse::<f64>().ok().filter(|l| l.is_finite() && *l >= 0.0),
        _ => None,
    }
}

/// A held row's owner and `LastUpdate`, if both have the types clients write.
fn version_of(item: &HashMap<String, AttributeValue>) -> Option<Version> {
    match (item.get("OwnerID"), item.get("LastUpdate")) {
        (Some(AttributeValue::S(owner)), Some(AttributeValue::N(t))) => Some(Version {
            owner: owner.clone(),
            last_update: t.parse().ok()?,
        }),
        _ => None,
    }
}

/// What a commit sets besides the checkpoint: the heartbeat.
const COMMIT_SET: &str = "LastUpdate = :now, LastUpdateRFC = :rfc";

type UpdateResult = Result<
    aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
    aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
>;

/// An owned-row update's outcome: a failed condition means the lease is someone else's.
fn interpret_write(result: UpdateResult, what: String) -> Result<(), WriteError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if retry::code(&e) == Some("ConditionalCheckFailedException") => {
            Err(WriteError::LeaseLost)
        }
        Err(e) => Err(WriteError::Other {
            transient: retry::is_transient(&e),
            error: Error::aws(what, e),
        }),
    }
}

/// A commit in flight ([`Leases::start_commit`]).
pub(crate) struct PendingWrite {
    call: crate::bridge::Call<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        aws_sdk_dynamodb::operation::update_item::UpdateItemError,
    >,
    what: String,
}

impl std::fmt::Debug for PendingWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingWrite")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl PendingWrite {
    /// The outcome, once the write has finished.
    pub(crate) fn outcome(&self) -> Option<Result<(), WriteError>> {
        self.call
            .try_result()
            .map(|r| interpret_write(r, self.what.clone()))
    }
}

/// What a release sets: no owner (a NULL, as the Go library writes it).
const RELEASE_SET: &str = "OwnerID = :nullv, LastUpdate = :now, LastUpdateRFC = :rfc";

/// Every checkpoint row, by shard id (a consistent scan), for tools that look at rows.
pub(crate) fn all_rows(
    bridge: &Bridge,
    table: &str,
) -> Result<HashMap<String, HashMap<String, AttributeValue>>, Error> {
    let mut rows = HashMap::new();
    tables::scan_all(bridge, table, None, |item| {
        if let Some(AttributeValue::S(shard)) = item.get("Shard") {
            rows.insert(shard.clone(), item);
        }
    })?;
    Ok(rows)
}

/// What a tool reads of a checkpoint row ([`all_rows`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowView<'a>(pub(crate) &'a HashMap<String, AttributeValue>);

impl RowView<'_> {
    /// The lease holder's client id, if leased.
    pub(crate) fn owner_id(&self) -> Option<String> {
        string_attr(self.0, "OwnerID")
    }

    /// The lease holder's name, if leased.
    pub(crate) fn owner_name(&self) -> Option<String> {
        self.owner_id().and(string_attr(self.0, "OwnerName"))
    }

    /// The checkpointed sequence number.
    pub(crate) fn sequence_number(&self) -> Option<String> {
        string_attr(self.0, "SequenceNumber")
    }

    /// Whether the row says the shard was read to its end (a number, as clients write it).
    pub(crate) fn finished(&self) -> bool {
        matches!(self.0.get("Finished"), Some(AttributeValue::N(_)))
    }

    /// Whether the row has a `Finished` attribute at all.
    pub(crate) fn has_finished(&self) -> bool {
        self.0.contains_key("Finished")
    }

    /// A rewind's start position, if any.
    pub(crate) fn start_position(&self) -> Option<String> {
        string_attr(self.0, START_POSITION)
    }

    /// Time since the row was last written, by this machine's clock.
    pub(crate) fn age(&self) -> Option<Duration> {
        let Some(AttributeValue::N(v)) = self.0.get("LastUpdate") else {
            return None;
        };
        let then: i64 = v.parse().ok()?;
        let age = clock::now_nanos().saturating_sub(then);
        Some(Duration::from_nanos(u64::try_from(age).unwrap_or(0)))
    }

    /// The failure mark, if in effect ([`failure_in_effect`]).
    pub(crate) fn failure(&self) -> Option<FailureMark> {
        failure_in_effect(self.0)
    }
}

/// An operator's release of a lease whose holder is gone: conditional on `holder` still
/// holding it. `Ok(false)` if it changed hands meanwhile.
pub(crate) fn force_release(
    bridge: &Bridge,
    table: &str,
    shard: &str,
    holder: &str,
) -> Result<bool, Error> {
    let now = clock::now_nanos();
    let req = bridge
        .dynamodb()
        .update_item()
        .table_name(table)
        .key("Shard", s(shard))
        .update_expression(format!("SET {RELEASE_SET}"))
        .condition_expression("OwnerID = :holder")
        .expression_attribute_values(":holder", s(holder))
        .expression_attribute_values(":nullv", AttributeValue::Null(true))
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":rfc", s(&clock::rfc3339(now)));
    match bridge.block_on(req) {
        Ok(_) => Ok(true),
        Err(e) if retry::code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(Error::aws(format!("releasing shard {shard}"), e)),
    }
}

/// A rewind of one row: its checkpoint (and `Finished`, and a failure mark) removed and
/// `position` (a [`START_POSITION`] value) set, conditional on the row being unowned and
/// its checkpoint still `from`. `Ok(false)` if it was captured or moved since.
pub(crate) fn rewind(
    bridge: &Bridge,
    table: &str,
    shard: &str,
    from: Option<&str>,
    position: &str,
) -> Result<bool, Error> {
    let now = clock::now_nanos();
    let unchanged = match from {
        Some(_) => "SequenceNumber = :old",
        None => {
            "(attribute_not_exists(SequenceNumber) OR attribute_type(SequenceNumber, :nulltype))"
        }
    };
    let mut req = bridge
        .dynamodb()
        .update_item()
        .table_name(table)
        .key("Shard", s(shard))
        .update_expression(format!(
            "SET StartPosition = :pos, LastUpdate = :now, LastUpdateRFC = :rfc \
             REMOVE SequenceNumber, Finished, FinishedRFC, AggregateSequenceNumber, \
             SubSequenceNumber, {FAILURE_ATTRIBUTES}"
        ))
        .condition_expression(format!(
            "(attribute_not_exists(OwnerID) OR attribute_type(OwnerID, :nulltype)) AND {unchanged}"
        ))
        .expression_attribute_values(":pos", s(position))
        .expression_attribute_values(":nulltype", s("NULL"))
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":rfc", s(&clock::rfc3339(now)));
    if let Some(old) = from {
        req = req.expression_attribute_values(":old", s(old));
    }
    match bridge.block_on(req) {
        Ok(_) => Ok(true),
        Err(e) if retry::code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(Error::aws(format!("rewinding shard {shard}"), e)),
    }
}

/// The shards whose rows carry `Finished`: read to their end and fully processed.
pub(crate) fn finished_shards(bridge: &Bridge, table: &str) -> Result<HashSet<String>, Error> {
    Ok(scan_rows(bridge, table)?.finished)
}

/// What the leader reads of every row in one scan (paged by DynamoDB's 1 MB limit).
#[derive(Debug, Default)]
pub(crate) struct Rows {
    /// Shards read to their end.
    pub(crate) finished: HashSet<String>,
    /// The load each row last published ([`LOAD`]).
    pub(crate) load: HashMap<String, f64>,
}

/// Scans the checkpoints table for [`Rows`].
pub(crate) fn scan_rows(bridge: &Bridge, table: &str) -> Result<Rows, Error> {
    let mut rows = Rows::default();
    // `Shard` is a reserved word in expressions.
    tables::scan_all(
        bridge,
        table,
        Some((&format!("#shard, Finished, {LOAD}"), ("#shard", "Shard"))),
        |item| {
            let Some(AttributeValue::S(shard)) = item.get("Shard") else {
                return;
            };
            if let Some(AttributeValue::N(_)) = item.get("Finished") {
                rows.finished.insert(shard.clone());
            }
            if let Some(load) = load_of(&item) {
                rows.load.insert(shard.clone(), load);
            }
        },
    )?;
    Ok(rows)
}
