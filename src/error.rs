//! The crate's one error type.
//!
//! [`Error`] is opaque: match on [`Error::kind`] (every Go sentinel error has an
//! [`ErrorKind`] equivalent) or use the `is_*` predicates. `Display` is one line: what was
//! being done, what went wrong and, for an AWS failure, the service's error code and
//! message (or the transport failure) — the part a person needs. The SDK error itself is
//! the [`std::error::Error::source`], for programs; `Debug` lists the cause chain's
//! messages, never raw HTTP responses.

use std::fmt;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

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
    /// The commit frequency is under 100 ms or not under half the lease time (Go:
    /// `ErrConfigInvalidCommitFrequency`, for zero).
    InvalidCommitFrequency,
    /// The shard check frequency is zero (Go: `ErrConfigInvalidShardCheckFrequency`).
    InvalidShardCheckFrequency,
    /// The leader action frequency is zero or shorter than the shard check frequency
    /// (Go: `ErrConfigInvalidLeaderActionFrequency`).
    InvalidLeaderActionFrequency,
    /// A buffer bound (`buffer_size`, `buffer_bytes`, `fetch_bytes`, `max_unmarked`) is
    /// zero, or `buffer_size` over 100,000; the message names it (Go:
    /// `ErrConfigInvalidBufferSize`).
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
    /// Kinesis rejects a shard's checkpoint, and it is not merely older than the
    /// stream's retention (then reading resumes from the oldest record).
    InvalidCheckpoint,
    /// A DynamoDB table of the application's name exists with another key schema.
    TableSchema,
    /// A DynamoDB table exists but is not ACTIVE (or UPDATING).
    TableNotReady,
    /// A call or a wait did not finish within its time limit.
    Timeout,
    /// This client no longer owns a shard's lease: another client captured it.
    LeaseLost,
    /// An AWS request failed; [`source`](std::error::Error::source) has the SDK error.
    Aws,
    /// The consumer has been stopped.
    ///
    /// Kept so that code matching on it compiles; this crate does not return it today:
    /// after a stop the record iterator simply ends, and [`Kinsumer::run`] after a stop
    /// is [`ErrorKind::RunTwice`] (as in Go).
    ///
    /// [`Kinsumer::run`]: crate::Kinsumer::run
    Stopped,
    /// An internal thread or runtime could not be started, or ended unexpectedly.
    Internal,
    /// No AWS region is configured: set `AWS_REGION` (or a profile's region), or pass an
    /// `SdkConfig` with a region.
    NoRegion,
    /// No AWS credentials were found: the SDK's chain (environment, profile, web
    /// identity, container or instance role) found none, a profile named by
    /// `AWS_PROFILE` does not exist or holds none (the message names it), or the
    /// `SdkConfig` given has no credentials provider.
    NoCredentials,
    /// [`Config::with_max_attempts`](crate::Config::with_max_attempts) of 0, or without a
    /// dead-letter handler.
    InvalidMaxAttempts,
    /// [`Kinsumer::commit`](crate::Kinsumer::commit) could not make every processed
    /// record durable: the context names each shard and why (a failed write, a lease
    /// that ended, the time allowed).
    CommitFailed,
    /// [`InitialPosition::AtTimestamp`](crate::InitialPosition::AtTimestamp) is in the
    /// future: Kinesis rejects it.
    InvalidInitialPosition,
    /// An interval is longer than 24 hours (or, for the SDK's attempt timeout, not
    /// shorter than the lease time; for the subscription timeout, under 1 s); the
    /// context names it.
    InvalidDuration,
    /// The idle poll delay is shorter than the throttle delay.
    InvalidIdlePollDelay,
    /// The handover grace is not shorter than the lease time (5 × shard check frequency).
    InvalidHandoverGrace,
    /// Records were asked for before [`run`](crate::Kinsumer::run).
    NotRunning,
    /// [`close`](crate::Kinsumer::close) could not finish everything (the context says
    /// what).
    StopIncomplete,
    /// A lease's holder is alive ([`Fleet::release`](crate::Fleet::release)).
    LeaseHeld,
    /// Clients of the application are live, or took a shard during a rewind
    /// ([`Fleet::plan_rewind`](crate::Fleet::plan_rewind)).
    FleetRunning,
    /// A rewind's time is in the future or older than the stream's retention, or names a
    /// shard the stream does not have.
    InvalidRewind,
    /// A shard kept failing with an error that retrying does not fix. Fatal when the
    /// error concerns the whole client (access denied, a missing table): the consumer
    /// stopped rather than retry forever. Otherwise the shard is parked (see
    /// [`ParkedShard`](crate::ParkedShard)) and this kind is reported, not fatal.
    ShardFailed,
    /// The enhanced fan-out consumer does not exist (a
    /// [`with_consumer_arn`](crate::Config::with_consumer_arn) that was never registered,
    /// or one deregistered while in use).
    NoSuchConsumer,
    /// The enhanced fan-out consumer exists but is being deleted (or stayed CREATING past
    /// the waiter's limit).
    ConsumerNotActive,
    /// Kinesis refused this client access to the enhanced fan-out consumer or its
    /// registration (`kinesis:SubscribeToShard`, `kinesis:RegisterStreamConsumer`,
    /// `kinesis:DescribeStreamConsumer`).
    ConsumerAccessDenied,
    /// A role or consumer ARN is not an ARN of the right kind.
    InvalidArn,
    /// The number of I/O threads is outside 1..=64.
    InvalidIoThreads,
    /// The failover time is under 1 s.
    InvalidFailoverTime,
    /// STS refused to let this client assume the configured role
    /// ([`with_role_arn`](crate::Config::with_role_arn)).
    AssumeRoleFailed,
    /// The most records per batch is outside 1..=10,000
    /// ([`with_max_batch_records`](crate::Config::with_max_batch_records)).
    InvalidBatchSize,
    /// [`Kinsumer::process`](crate::Kinsumer::process) was asked for no worker threads,
    /// or more than 1,024.
    InvalidWorkers,
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
            ErrorKind::InvalidCommitFrequency => {
                "commit frequency must be at least 100ms and under half the lease time (5 x shard check frequency)"
            }
            ErrorKind::InvalidShardCheckFrequency => "shard check frequency is mandatory",
            ErrorKind::InvalidLeaderActionFrequency => {
                "leader action frequency is mandatory and must be at least as long as the shard check frequency"
            }
            ErrorKind::InvalidBufferSize => {
                "buffer sizes must be positive (buffer_size at most 100000)"
            }
            ErrorKind::InvalidDynamoCapacity => "dynamo read/write capacity must be positive",
            ErrorKind::StreamBusy => "stream is busy",
            ErrorKind::NoSuchStream => "no such stream",
            ErrorKind::InvalidMaxRecords => "max records per GetRecords call must be 1..=10000",
            ErrorKind::InvalidName => "invalid name",
            ErrorKind::TableNotFound => "table does not exist (see create_required_tables)",
            ErrorKind::TableNotReady => "table is not active",
            ErrorKind::TableSchema => "table has the wrong key schema",
            ErrorKind::InvalidCheckpoint => "the shard's checkpoint cannot be read from",
            ErrorKind::Timeout => "timed out",
            ErrorKind::LeaseLost => "shard lease lost to another client",
            ErrorKind::Aws => "AWS request failed",
            ErrorKind::Stopped => "consumer stopped",
            ErrorKind::Internal => "internal failure",
            ErrorKind::NoRegion => {
                "no AWS region configured (set AWS_REGION, or pass an SdkConfig with a region)"
            }
            ErrorKind::CommitFailed => "not every processed record could be checkpointed",
            ErrorKind::InvalidMaxAttempts => {
                "max attempts must be at least 1 and come with a dead-letter handler"
            }
            ErrorKind::NoCredentials => {
                "no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                 AWS_PROFILE to a profile that has credentials, or run with a role; or pass \
                 an SdkConfig with a credentials provider)"
            }
            ErrorKind::InvalidInitialPosition => {
                "the initial position's timestamp is in the future"
            }
            ErrorKind::InvalidDuration => "duration out of range",
            ErrorKind::InvalidIdlePollDelay => {
                "the idle poll delay must be at least the throttle delay"
            }
            ErrorKind::InvalidHandoverGrace => {
                "the handover grace must be shorter than the lease time (5 x shard check frequency)"
            }
            ErrorKind::StopIncomplete => "stopped, but not everything could be finished",
            ErrorKind::LeaseHeld => "the lease's holder is alive",
            ErrorKind::FleetRunning => "clients of the application are running",
            ErrorKind::InvalidRewind => "invalid rewind",
            ErrorKind::NotRunning => "the consumer is not running (call run() first)",
            ErrorKind::ShardFailed => {
                "a shard keeps failing with an error that retrying does not fix"
            }
            ErrorKind::NoSuchConsumer => "the enhanced fan-out consumer does not exist",
            ErrorKind::ConsumerNotActive => "the enhanced fan-out consumer is not active",
            ErrorKind::ConsumerAccessDenied => "access to the enhanced fan-out consumer was denied",
            ErrorKind::InvalidArn => "invalid ARN",
            ErrorKind::InvalidIoThreads => "the number of I/O threads must be 1..=64",
            ErrorKind::InvalidFailoverTime => "the failover time must be at least 1 s",
            ErrorKind::AssumeRoleFailed => "assuming the configured IAM role failed",
            ErrorKind::InvalidBatchSize => "max batch records must be 1..=10000",
            ErrorKind::InvalidWorkers => "the number of worker threads must be 1..=1024",
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
    /// The AWS service's error code, if it sent one.
    code: Option<String>,
    /// One line on the cause, for `Display`: the service's code and message, or the
    /// transport failure.
    detail: Option<String>,
    source: Option<BoxError>,
    fatal: bool,
    /// Retrying the same call later can succeed (throttling, 5xx, timeouts, …).
    transient: bool,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                context: None,
                code: None,
                detail: None,
                source: None,
                fatal: false,
                transient: false,
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

    /// Sets an AWS SDK error as the cause, keeping its code and a one-line account of it.
    pub(crate) fn with_aws_source<E>(mut self, err: SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.inner.transient = crate::retry::is_transient(&err);
        self.inner.code = err.code().map(str::to_owned);
        self.inner.detail = Some(describe_answer(&err));
        if let Some(detail) = missing_credentials(&err) {
            // Transient as the SDK says: a chain that found nothing during an instance
            // role's refresh may find them again.
            self.inner.kind = ErrorKind::NoCredentials;
            self.inner.detail = Some(detail);
        } else if let Some((code, detail)) = sts_refusal(&err) {
            // The call never left: STS would not give the role's credentials. Retrying
            // does not change STS's mind.
            self.inner.kind = ErrorKind::AssumeRoleFailed;
            self.inner.transient = false;
            self.inner.code = code;
            self.inner.detail = Some(format!("STS AssumeRole: {detail}"));
        }
        self.with_source(err)
    }

    /// Marks the error as one that retrying can fix.
    pub(crate) fn transient(mut self) -> Self {
        self.inner.transient = true;
        self
    }

    pub(crate) fn fatal(mut self) -> Self {
        self.inner.fatal = true;
        self
    }

    /// An AWS SDK failure while doing `what`.
    pub(crate) fn aws<E>(what: impl Into<String>, err: SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        Error::new(ErrorKind::Aws)
            .with_context(what)
            .with_aws_source(err)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The AWS service's error code (`AccessDeniedException`,
    /// `ResourceNotFoundException`, …) when an AWS service answered with one.
    pub fn aws_code(&self) -> Option<&str> {
        self.inner.code.as_deref()
    }

    /// Whether retrying the same call later can succeed: throttling, server errors,
    /// timeouts and connection failures. Access denied, a missing table or a rejected
    /// argument are not.
    pub fn is_transient(&self) -> bool {
        self.inner.transient
    }

    /// Whether this error ended consumption: it is the last item the record iterator
    /// yields; it yields no other errors. Errors from calls such as
    /// [`run`](crate::Kinsumer::run) are not fatal.
    pub fn is_fatal(&self) -> bool {
        self.inner.fatal
    }

    /// Whether a call or wait ran out of time.
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
                | ErrorKind::NoRegion
                | ErrorKind::InvalidHandoverGrace
                | ErrorKind::InvalidIdlePollDelay
                | ErrorKind::InvalidDuration
                | ErrorKind::InvalidInitialPosition
                | ErrorKind::InvalidArn
                | ErrorKind::InvalidIoThreads
                | ErrorKind::InvalidFailoverTime
                | ErrorKind::InvalidBatchSize
                | ErrorKind::InvalidWorkers
                | ErrorKind::InvalidMaxAttempts
        )
    }

    /// Whether an AWS request failed (the SDK error is the [`source`](std::error::Error::source)).
    pub fn is_aws(&self) -> bool {
        self.inner.kind == ErrorKind::Aws
    }

    /// Whether this failure concerns the whole client rather than one shard: its
    /// credentials or permissions, its tables, the stream or the fan-out consumer. A
    /// shard failing this way ends the consumer; a shard failing any other way (a
    /// checkpoint Kinesis rejects, a panic while handling its records) is parked and the
    /// client reads its other shards.
    pub(crate) fn concerns_whole_client(&self) -> bool {
        let kind = matches!(
            self.inner.kind,
            ErrorKind::TableNotFound
                | ErrorKind::TableSchema
                | ErrorKind::NoSuchStream
                | ErrorKind::NoRegion
                | ErrorKind::NoCredentials
                | ErrorKind::AssumeRoleFailed
                | ErrorKind::NoSuchConsumer
                | ErrorKind::ConsumerNotActive
                | ErrorKind::ConsumerAccessDenied
        );
        kind || self.aws_code().is_some_and(|code| {
            code.starts_with("KMS")
                || matches!(
                    code,
                    "AccessDeniedException"
                        | "AccessDenied"
                        | "UnrecognizedClientException"
                        | "InvalidSignatureException"
                        | "IncompleteSignature"
                        | "InvalidClientTokenId"
                        | "MissingAuthenticationToken"
                        | "ExpiredTokenException"
                        | "ExpiredToken"
                        | "ResourceNotFoundException"
                )
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(context) = &self.inner.context {
            write!(f, "{context}: ")?;
        }
        f.write_str(self.inner.kind.describe())?;
        if let Some(detail) = &self.inner.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

/// Concise: the kind, the whole `Display` message (with its hint: `main` returning a
/// `Result` prints this) and the messages of the cause chain — not the causes' own
/// `Debug`, which for SDK errors holds whole HTTP responses.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        d.field("message", &self.to_string());
        if let Some(code) = &self.inner.code {
            d.field("code", code);
        }
        if self.inner.fatal {
            d.field("fatal", &true);
        }
        let causes = cause_messages(std::error::Error::source(self));
        if !causes.is_empty() {
            d.field("causes", &causes);
        }
        d.finish()
    }
}

/// The `Display` of each error in a cause chain, without repeats.
fn cause_messages(mut next: Option<&(dyn std::error::Error + 'static)>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push(text);
        }
        next = e.source();
    }
    out
}

/// Longest detail kept in a message: a service's message is a sentence, but a
/// misbehaving endpoint could send anything.
const MAX_DETAIL: usize = 300;

/// What is missing, if a call failed because no credentials could be loaded (found in
/// its causes): the profile `AWS_PROFILE` names, or the default chain's sources, or a
/// client built without any credentials provider.
fn missing_credentials(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(CredentialsError::CredentialsNotLoaded(_)) = e.downcast_ref() {
            return Some(credentials_detail(
                std::env::var("AWS_PROFILE").ok().as_deref(),
            ));
        }
        // The SDK's words (its error type is private) for a client without any
        // credentials provider: it cannot sign.
        if e.to_string().contains("no identity resolver") {
            return Some("the AWS config has no credentials provider".to_owned());
        }
        cause = e.source();
    }
    None
}

/// Where the default chain looked for credentials: `profile` is `AWS_PROFILE`'s value.
fn credentials_detail(profile: Option<&str>) -> String {
    match profile {
        Some(p) => format!(
            "profile {p:?} (AWS_PROFILE) is not in ~/.aws/config or ~/.aws/credentials \
             (or AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE), or gives no credentials"
        ),
        None => "none of the SDK's sources had any: environment, profile \"default\", web \
                 identity, container or instance role"
            .to_owned(),
    }
}

/// STS's refusal to let this client assume its role (AccessDenied, an invalid token, …),
/// found in a failed call's causes, as (its error code if STS sent one, one line). An STS
/// outage is not a refusal.
fn sts_refusal(err: &(dyn std::error::Error + 'static)) -> Option<(Option<String>, String)> {
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(sts) = e.downcast_ref::<SdkError<AssumeRoleError>>() {
            return (!crate::retry::is_transient(sts))
                .then(|| (sts.code().map(str::to_owned), describe_answer(sts)));
        }
        cause = e.source();
    }
    None
}

/// [`describe_sdk_error`] for a call's HTTP answer: an answer that carried neither an
/// error code nor a message the SDK could read is told by its HTTP status (an
/// `unhandled error` says nothing to a user).
fn describe_answer<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(service) if err.code().is_none() && err.message().is_none() => {
            format!(
                "HTTP {} with no error code or message the SDK could read",
                service.raw().status().as_u16()
            )
        }
        _ => describe_sdk_error(err),
    }
}

/// One line on an SDK failure: the service's code and message for an answer from the
/// service (with the HTTP status when the answer had no code); else the transport
/// failure's cause chain ("dispatch failure: io error: Connection refused"). At most
/// [`MAX_DETAIL`] bytes.
///
/// (The SDK's `DisplayErrorContext` would print the same chain but then append the error's
/// `Debug`, which holds the raw HTTP response: too long for a log line.)
pub(crate) fn describe_sdk_error<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let mut text = match (err, err.code(), err.message()) {
        (_, Some(code), Some(message)) => format!("{code}: {message}"),
        (_, Some(code), None) => code.to_owned(),
        (SdkError::ServiceError(_), None, Some(message)) => message.to_owned(),
        _ => {
            let mut parts = vec![err.to_string()];
            parts.extend(cause_messages(std::error::Error::source(err)));
            parts.dedup();
            parts.join(": ")
        }
    };
    text = text.replace(['\n', '\r'], " ");
    if text.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
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

    use aws_sdk_kinesis::operation::get_records::GetRecordsError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn service_error(code: &str, message: &str) -> SdkError<GetRecordsError, Response> {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        let raw = Response::new(
            StatusCode::try_from(400).unwrap(),
            SdkBody::from(format!(
                "{{\"__type\":\"{code}\",\"message\":\"{message}\"}}"
            )),
        );
        SdkError::service_error(GetRecordsError::generic(meta), raw)
    }

    #[test]
    fn display_is_one_line_with_the_service_code_and_message() {
        let err = Error::aws(
            "GetRecords on shard shardId-1 of stream s",
            service_error("AccessDeniedException", "User: x is not authorized"),
        );
        assert_eq!(
            err.to_string(),
            "GetRecords on shard shardId-1 of stream s: AWS request failed: \
             AccessDeniedException: User: x is not authorized"
        );
        assert_eq!(err.aws_code(), Some("AccessDeniedException"));
        assert!(err.source().is_some());
        assert!(err.is_aws());
        assert!(!err.is_fatal());
        let debug = format!("{err:?}");
        assert!(debug.contains("AccessDeniedException"), "{debug}");
        // The raw HTTP response (its body, headers) is not dumped.
        assert!(!debug.contains("__type"), "{debug}");
        assert!(!debug.contains("SdkBody"), "{debug}");
    }

    #[test]
    fn missing_credentials_name_the_profile_or_the_sources() {
        let named = credentials_detail(Some("prod"));
        assert!(
            named.starts_with("profile \"prod\" (AWS_PROFILE) is not in"),
            "{named}"
        );
        let chain = credentials_detail(None);
        assert!(
            chain.contains("environment, profile \"default\""),
            "{chain}"
        );
    }

    #[test]
    fn debug_keeps_the_hint_that_display_gives() {
        let err = Error::new(ErrorKind::NoRegion).with_context("configuring the AWS clients");
        let debug = format!("{err:?}");
        assert!(debug.contains("set AWS_REGION"), "{debug}");
        assert!(debug.contains(&err.to_string()), "{debug}");
    }

    #[test]
    fn an_answer_without_code_or_message_is_told_by_its_status() {
        let raw = Response::new(
            StatusCode::try_from(403).unwrap(),
            SdkBody::from("<html>forbidden</html>"),
        );
        let meta = ErrorMetadata::builder().build();
        let err = Error::aws(
            "GetRecords",
            SdkError::service_error(GetRecordsError::generic(meta), raw),
        );
        assert_eq!(err.aws_code(), None);
        let text = err.to_string();
        assert!(text.contains("HTTP 403"), "{text}");
        assert!(!text.contains("unhandled"), "{text}");
    }

    #[test]
    fn transport_failures_name_their_cause() {
        let io = std::io::Error::other("connection refused");
        let err: SdkError<GetRecordsError, Response> = SdkError::dispatch_failure(
            aws_smithy_runtime_api::client::result::ConnectorError::io(io.into()),
        );
        let err = Error::aws("GetRecords", err);
        let text = err.to_string();
        assert!(
            text.starts_with("GetRecords: AWS request failed: dispatch failure"),
            "{text}"
        );
        assert!(text.contains("connection refused"), "{text}");
        assert_eq!(err.aws_code(), None);
        assert!(!text.contains('\n'));
    }

    #[test]
    fn long_details_are_cut() {
        let err = Error::aws("x", service_error("Code", &"é".repeat(400)));
        assert!(err.to_string().len() < 400 + 40);
        assert!(err.to_string().ends_with('…'));
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
