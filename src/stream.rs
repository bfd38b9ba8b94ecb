//! Stream-level Kinesis calls: readiness, the shard list, publishing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::StreamStatus;

use crate::bridge::Bridge;
use crate::error::{Error, ErrorKind, Result};
use crate::retry;

/// Whether `stream` is a stream ARN rather than a name (checked well-formed by
/// [`Names::new`](crate::tables::Names::new)).
pub(crate) fn is_arn(stream: &str) -> bool {
    stream.starts_with("arn:")
}

/// The stream's name: the name itself, or the last part of its ARN.
pub(crate) fn name_of(stream: &str) -> &str {
    if is_arn(stream) {
        stream.rsplit('/').next().unwrap_or(stream)
    } else {
        stream
    }
}

/// Whether `arn` is a Kinesis stream ARN: `arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME`
/// with a 12-digit account and a valid stream name.
pub(crate) fn is_stream_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    let name_ok = |n: &str| {
        (1..=128).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    *prefix == "arn"
        && partition.starts_with("aws")
        && *service == "kinesis"
        && !region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.strip_prefix("stream/").is_some_and(name_ok)
}

/// Sets the stream of a Kinesis request builder: by ARN when the stream was given as one
/// (a stream of another account, shared by a resource policy, needs it), else by name.
macro_rules! on_stream {
    ($builder:expr, $stream:expr) => {{
        let stream: &str = $stream;
        if $crate::stream::is_arn(stream) {
            $builder.stream_arn(stream)
        } else {
            $builder.stream_name(stream)
        }
    }};
}
pub(crate) use on_stream;

/// A shard as ListShards describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardInfo {
    pub(crate) id: String,
    pub(crate) parent: Option<String>,
    pub(crate) adjacent_parent: Option<String>,
}

/// Maps the stream-level error codes to the Go sentinels' kinds. A stream not found
/// names the region and endpoint asked: the stream may live in another.
fn stream_error<E>(bridge: &Bridge, what: String, err: aws_sdk_kinesis::error::SdkError<E>) -> Error
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match retry::code(&err) {
        Some("ResourceNotFoundException") => Error::new(ErrorKind::NoSuchStream)
            .with_context(format!("{what} ({})", bridge.kinesis_place()))
            .with_aws_source(err),
        Some("ResourceInUseException") => Error::new(ErrorKind::StreamBusy)
            .with_context(what)
            .with_aws_source(err),
        _ => Error::aws(what, err),
    }
}

/// Whether the stream can be read now.
enum Readiness {
    Ready,
    /// Being created: ready soon.
    Creating,
}

/// Checks the stream can be read: ACTIVE or UPDATING (or, if `use_list_shards`, that
/// ListShards answers). A stream being created is [`ErrorKind::StreamBusy`].
pub(crate) fn check_ready(bridge: &Bridge, stream: &str, use_list_shards: bool) -> Result<()> {
    match readiness(bridge, stream, use_list_shards)? {
        Readiness::Ready => Ok(()),
        Readiness::Creating => Err(Error::new(ErrorKind::StreamBusy)
            .with_context(format!("stream {stream} is being created"))),
    }
}

/// Like [`check_ready`], but waits (polling every `delay`, up to `limit`) while the
/// stream is being created — for a client that starts while another process creates it.
pub(crate) fn wait_ready(
    bridge: &Bridge,
    stream: &str,
    use_list_shards: bool,
    delay: Duration,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let busy = match readiness(bridge, stream, use_list_shards) {
            Ok(Readiness::Ready) => return Ok(()),
            Ok(Readiness::Creating) => None,
            // ListShards answers ResourceInUse while the stream is being created.
            Err(e) if use_list_shards && e.kind() == ErrorKind::StreamBusy => Some(e),
            Err(e) => return Err(e),
        };
        if Instant::now() >= deadline {
            return Err(busy.unwrap_or_else(|| {
                Error::new(ErrorKind::StreamBusy).with_context(format!(
                    "waiting {limit:?} for stream {stream} to become active"
                ))
            }));
        }
        log::info!("stream {stream} is being created; waiting");
        std::thread::sleep(delay.min(deadline.saturating_duration_since(Instant::now())));
    }
}

fn readiness(bridge: &Bridge, stream: &str, use_list_shards: bool) -> Result<Readiness> {
    if use_list_shards {
        return bridge
            .block_on(on_stream!(bridge.kinesis().list_shards(), stream).max_results(1))
            .map(|_| Readiness::Ready)
            .map_err(|e| {
                stream_error(bridge, format!("listing the shards of stream {stream}"), e)
            });
    }
    let what = || format!("describing stream {stream}");
    let out = bridge
        .block_on(on_stream!(
            bridge.kinesis().describe_stream_summary(),
            stream
        ))
        .map_err(|e| stream_error(bridge, what(), e))?;
    match out.stream_description_summary().map(|s| s.stream_status()) {
        Some(StreamStatus::Active | StreamStatus::Updating) => Ok(Readiness::Ready),
        Some(StreamStatus::Creating) => Ok(Readiness::Creating),
        status => Err(Error::new(ErrorKind::StreamBusy).with_context(format!(
            "{}: status {:?}",
            what(),
            status.map(|s| s.as_str())
        ))),
    }
}

/// The stream's summary (DescribeStreamSummary).
pub(crate) fn summary(
    bridge: &Bridge,
    stream: &str,
) -> Result<Option<aws_sdk_kinesis::types::StreamDescriptionSummary>> {
    bridge
        .block_on(on_stream!(
            bridge.kinesis().describe_stream_summary(),
            stream
        ))
        .map(|out| out.stream_description_summary)
        .map_err(|e| stream_error(bridge, format!("describing stream {stream}"), e))
}

/// The stream's retention period.
pub(crate) fn retention(bridge: &Bridge, stream: &str) -> Result<Duration> {
    let hours = summary(bridge, stream)?.map_or(24, |s| s.retention_period_hours());
    Ok(Duration::from_secs(
        u64::try_from(hours).unwrap_or(24) * 3600,
    ))
}

/// Every shard of the stream, in listing order, `page_size` per call (Kinesis' default
/// when `None`).
///
/// Pages are followed with `NextToken`, as AWS documents. If a `NextToken` call fails
/// (some emulators reject it), the same page is asked for again with `StreamName` and
/// `ExclusiveStartShardId` (the last shard id seen), which AWS accepts too.
pub(crate) fn list_shards(
    bridge: &Bridge,
    stream: &str,
    page_size: Option<i32>,
) -> Result<Vec<ShardInfo>> {
    let mut shards: Vec<ShardInfo> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut token: Option<String> = None;
    loop {
        let after = shards.last().map(|s| s.id.clone());
        let out = list_page(bridge, stream, page_size, token.take(), after.as_deref())?;
        let page = out.shards.unwrap_or_default();
        let before = shards.len();
        for s in page {
            // A page that repeats shards (a misbehaving server) must not loop forever.
            if !seen.insert(s.shard_id.clone()) {
                continue;
            }
            shards.push(ShardInfo {
                id: s.shard_id,
                parent: s.parent_shard_id,
                adjacent_parent: s.adjacent_parent_shard_id,
            });
        }
        match out.next_token {
            Some(t) if shards.len() > before => token = Some(t),
            _ => return Ok(shards),
        }
    }
}

/// One page of ListShards: by `token` if there is one and it works (a token can expire),
/// else by the stream's name from the shard `after`.
fn list_page(
    bridge: &Bridge,
    stream: &str,
    page_size: Option<i32>,
    token: Option<String>,
    after: Option<&str>,
) -> Result<aws_sdk_kinesis::operation::list_shards::ListShardsOutput> {
    if let Some(t) = token {
        let by_token = bridge.block_on(
            bridge
                .kinesis()
                .list_shards()
                .next_token(t)
                .set_max_results(page_size),
        );
        match by_token {
            Ok(out) => return Ok(out),
            Err(e) => log::debug!("ListShards by NextToken failed ({e}); paging by shard id"),
        }
    }
    let mut req = on_stream!(bridge.kinesis().list_shards(), stream).set_max_results(page_size);
    if let Some(last) = after {
        req = req.exclusive_start_shard_id(last);
    }
    bridge
        .block_on(req)
        .map_err(|e| stream_error(bridge, format!("listing the shards of stream {stream}"), e))
}

/// Writes one record.
pub(crate) fn publish(bridge: &Bridge, stream: &str, key: &str, data: &[u8]) -> Result<()> {
    bridge
        .block_on(
            on_stream!(bridge.kinesis().put_record(), stream)
                .partition_key(key)
                .data(Blob::new(data)),
        )
        .map(|_| ())
        .map_err(|e| stream_error(bridge, format!("putting a record into stream {stream}"), e))
}
