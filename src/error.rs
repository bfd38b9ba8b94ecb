//! The crate's one error type.
//!
//! [`Error`] is opaque: match on [`Error::kind`] (every Go sentinel error has an
//! [`ErrorKind`] equivalent) or use the `is_*` predicates. `Display` says what was being
//! done and what went wrong; the underlying cause (an AWS SDK error, say) is only in
//! [`std::error::Error::source`], never repeated in the message.

use std::fmt;

/// The boxed cause carried by an [`Error`].
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure an [`Error`] is.
///
/// The first group maps one-to-one to the Go library's `Err*` sentinels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `run()` was called a second time (Go: `ErrRunTwice`).
    RunTwice,
    /// The stream name is empty (Go: `ErrNoStreamName`).
    NoStreamName,
    /// The application name is empty (Go: `ErrNoApplicationName`).
    NoApplicationName,
    /// This client's row is missing from the clients table and could not be restored
    /// (Go: `ErrThisClientNotInDynamo`).
    ClientNotInTable,
    /// The stream has shards but this client was assigned none (Go: `ErrNoShardsAssigned`).
    ///
    /// Kept so code ported from Go can match on it; this crate does not return it, since a
    /// client with no shards (more clients than shards, or a departed client's row not yet
    /// stale) is a normal fleet state: it is logged, and later shard checks assign shards.
    NoShardsAssigned,
    /// The throttle delay is below 200 ms (Go: `ErrConfigInvalidThrottleDelay`).
    InvalidThrottleDelay,
    /// The commit frequency is zero (Go: `ErrConfigInvalidCommitFrequency`).
    InvalidCommitFrequency,
    /// The shard check frequency is zero (Go: `ErrConfigInvalidShardCheckFrequency`).
    InvalidShardCheckFrequency,
    /// The leader action frequency is zero or shorter than the shard check frequency
    /// (Go: `ErrConfigInvalidLeaderActionFrequency`).
    InvalidLeaderActionFrequency,
    /// The buffer size is zero (Go: `ErrConfigInvalidBufferSize`).
    InvalidBufferSize,
    /// A DynamoDB read or write capacity is zero (Go: `ErrConfigInvalidDynamoCapacity`).
    InvalidDynamoCapacity,
    /// The stream is being created, deleted or is otherwise not usable yet
    /// (Go: `ErrStreamBusy`).
    StreamBusy,
    /// The stream does not exist (Go: `ErrNoSuchStream`).
    NoSuchStream,

    /// The maximum records per GetRecords call is outside 1..=10,000.
    InvalidMaxRecords,
    /// A stream or application name breaks the Kinesis or DynamoDB naming rules.
    InvalidName,
    /// One of the application's DynamoDB tables does not exist; see
    /// [`Kinsumer::create_required_tables`](crate::Kinsumer::create_required_tables).
    TableNotFound,
    /// A DynamoDB table exists but is not ACTIVE (or UPDATING).
    TableNotReady,
    /// A call or a wait did not finish within its time limit.
    Timeout,
    /// This client no longer owns a shard's lease: another client captured it.
    LeaseLost,
    /// An AWS request failed; [`source`](std::error::Error::source) has the SDK error.
    Aws,
    /// The consumer has been stopped.
    Stopped,
    /// An internal thread or runtime could not be started, or ended unexpectedly.
    Internal,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::RunTwice => "run() can only ever be run once",
            ErrorKind::NoStreamName => "need a kinesis stream name",
            ErrorKind::NoApplicationName => "need an application name for the dynamo table names",
            ErrorKind::ClientNotInTable => "unable to find this client in the client list",
            ErrorKind::NoShardsAssigned => "we found shards, but got assigned none",
            ErrorKind::InvalidThrottleDelay => {
                "throttle delay must be at least 200ms (preferably 250ms)"
            }
            ErrorKind::InvalidCommitFrequency => "commit frequency is mandatory",
            ErrorKind::InvalidShardCheckFrequency => "shard check frequency is mandatory",
            ErrorKind::InvalidLeaderActionFrequency => {
                "leader action frequency is mandatory and must be at least as long as the shard check frequency"
            }
            ErrorKind::InvalidBufferSize => "buffer size is mandatory",
            ErrorKind::InvalidDynamoCapacity => "dynamo read/write capacity cannot be 0",
            ErrorKind::StreamBusy => "stream is busy",
            ErrorKind::NoSuchStream => "no such stream",
            ErrorKind::InvalidMaxRecords => "max records per GetRecords call must be 1..=10000",
            ErrorKind::InvalidName => "invalid name",
            ErrorKind::TableNotFound => "table does not exist (see create_required_tables)",
            ErrorKind::TableNotReady => "table is not active",
            ErrorKind::Timeout => "timed out",
            ErrorKind::LeaseLost => "shard lease lost to another client",
            ErrorKind::Aws => "AWS request failed",
            ErrorKind::Stopped => "consumer stopped",
            ErrorKind::Internal => "internal failure",
        }
    }
}

/// The error type of every fallible operation in this crate.
///
/// # Examples
///
/// ```
/// use kinsumer::{Config, ErrorKind};
/// use std::time::Duration;
///
/// let err = Config::default()
///     .with_throttle_delay(Duration::from_millis(10))
///     .validate()
///     .unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidThrottleDelay);
/// assert!(err.is_config());
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    context: Option<String>,
    source: Option<BoxError>,
    fatal: bool,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                context: None,
                source: None,
                fatal: false,
            }),
        }
    }

    /// Adds what was being done ("GetRecords on shard X of stream Y").
    pub(crate) fn with_context(mut self, context: impl Into<String>) -> Self {
        self.inner.context = Some(context.into());
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn fatal(mut self) -> Self {
        self.inner.fatal = true;
        self
    }

    /// An AWS SDK failure while doing `what`.
    pub(crate) fn aws(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::new(ErrorKind::Aws)
            .with_context(what)
            .with_source(source)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether this error ended consumption: it is the last item the record iterator
    /// yields. Errors that are not fatal are reported and the consumer carries on.
    pub fn is_fatal(&self) -> bool {
        self.inner.fatal
    }

    /// Whether a call or wait ran out of time (including
    /// [`Records::next_timeout`](crate::Records::next_timeout) finding nothing).
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::Timeout
    }

    /// Whether this is an invalid configuration value.
    pub fn is_config(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::InvalidThrottleDelay
                | ErrorKind::InvalidCommitFrequency
                | ErrorKind::InvalidShardCheckFrequency
                | ErrorKind::InvalidLeaderActionFrequency
                | ErrorKind::InvalidBufferSize
                | ErrorKind::InvalidDynamoCapacity
                | ErrorKind::InvalidMaxRecords
        )
    }

    /// Whether an AWS request failed (the SDK error is the [`source`](std::error::Error::source)).
    pub fn is_aws(&self) -> bool {
        self.inner.kind == ErrorKind::Aws
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.context {
            Some(context) => write!(f, "{context}: {}", self.inner.kind.describe()),
            None => f.write_str(self.inner.kind.describe()),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(context) = &self.inner.context {
            d.field("context", context);
        }
        if self.inner.fatal {
            d.field("fatal", &true);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_has_context_and_kind_but_not_the_source() {
        let cause = std::io::Error::other("connection reset by peer");
        let err = Error::aws("GetRecords on shard shardId-1 of stream s", cause);
        let text = err.to_string();
        assert_eq!(
            text,
            "GetRecords on shard shardId-1 of stream s: AWS request failed"
        );
        assert!(!text.contains("reset"));
        assert!(err.source().unwrap().to_string().contains("reset"));
        assert!(err.is_aws());
        assert!(!err.is_fatal());
    }

    #[test]
    fn fatal_flag_and_predicates() {
        let err = Error::new(ErrorKind::NoSuchStream).fatal();
        assert!(err.is_fatal());
        assert!(!err.is_config());
        assert_eq!(err.to_string(), "no such stream");
        assert!(Error::new(ErrorKind::Timeout).is_timeout());
        assert!(Error::new(ErrorKind::InvalidBufferSize).is_config());
    }
}
