//! Classifying AWS failures, and backing off between retries.
//!
//! Two layers retry a failed call. The SDK retries each call itself ([`sdk_retry_config`]:
//! standard mode, at most 3 attempts, backoff capped at 2 s), each attempt bounded by the
//! attempt timeout and the whole call by the operation timeout (see `bridge`). When the
//! SDK gives up, this crate retries at its own cadence: GetRecords with [`Backoff`] from
//! the throttle delay up to 10 s, commits at the next commit interval, captures at the
//! throttle delay, fleet checks at the next shard check. So a transient failure costs at
//! most one operation timeout before the crate's own schedule takes over, and only errors
//! that [`is_transient`] are retried at all. The error codes come from the SDK's own lists.

use std::time::Duration;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

/// Codes that mean "slow down" or "try again" beyond the SDK's lists
/// (`aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS}`): Kinesis'
/// KMS throttling.
const EXTRA_RETRYABLE_CODES: &[&str] = &["KMSThrottlingException"];

fn retryable_code(code: &str) -> bool {
    use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
    THROTTLING_ERRORS
        .iter()
        .chain(TRANSIENT_ERRORS)
        .chain(EXTRA_RETRYABLE_CODES)
        .any(|c| *c == code)
}

/// Whether an AWS error code means the request was throttled.
pub(crate) fn is_throttling(code: &str) -> bool {
    aws_runtime::retries::classifiers::THROTTLING_ERRORS
        .iter()
        .chain(EXTRA_RETRYABLE_CODES)
        .any(|c| *c == code)
}

/// The SDK's own retries under this crate's: standard mode, at most 3 attempts, backoff
/// capped at 2 s so that the crate's schedule takes over quickly.
pub(crate) fn sdk_retry_config() -> aws_sdk_kinesis::config::retry::RetryConfig {
    aws_sdk_kinesis::config::retry::RetryConfig::standard()
        .with_max_attempts(3)
        .with_max_backoff(Duration::from_secs(2))
}

/// The service's error code (`ExpiredIteratorException`, …), if it sent one.
pub(crate) fn code<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Option<&str> {
    err.code()
}

/// Whether retrying the same call later can succeed: timeouts, connection failures,
/// unparsable responses, 5xx answers and throttling.
pub(crate) fn is_transient<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => {
            let server_side = err
                .raw_response()
                .is_some_and(|r| r.status().as_u16() >= 500);
            server_side || err.code().is_some_and(retryable_code)
        }
        _ => false,
    }
}

/// Exponential backoff with jitter, from `base` doubling up to `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The next delay: base × 2^attempt, capped, with up to 25 % subtracted at random so
    /// that many shard threads failing together do not retry in lockstep.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(16);
        self.attempt = self.attempt.saturating_add(1);
        let delay = self.base.saturating_mul(factor).min(self.max);
        let jitter_permille = fastrand::u64(0..250);
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        delay.saturating_sub(Duration::from_millis(millis * jitter_permille / 1000))
    }

    /// How many delays were handed out since the last reset: consecutive failures.
    #[cfg(test)]
    pub(crate) fn failures(&self) -> u32 {
        self.attempt
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A config override for one attempt of at most `attempt`, no retries.
pub(crate) fn single_attempt(attempt: Duration) -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::default()
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(attempt)
                .operation_timeout(attempt)
                .build(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes_are_the_sdks_plus_kms_throttling() {
        for code in aws_runtime::retries::classifiers::THROTTLING_ERRORS {
            assert!(retryable_code(code), "{code}");
        }
        assert!(retryable_code("RequestTimeout"));
        assert!(retryable_code("KMSThrottlingException"));
        assert!(!retryable_code("AccessDeniedException"));
        assert!(!retryable_code("ValidationException"));
        assert!(!retryable_code("ResourceNotFoundException"));
    }

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let first = b.next_delay();
        assert!(first <= ms(100) && first >= ms(75), "{first:?}");
        let second = b.next_delay();
        assert!(second <= ms(200) && second >= ms(150), "{second:?}");
        for _ in 0..10 {
            assert!(b.next_delay() <= ms(1000));
        }
        assert!(b.next_delay() >= ms(750));
        assert_eq!(b.failures(), 13);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay() <= ms(100));
    }
}
