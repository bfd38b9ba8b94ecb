//! Wall-clock timestamps in the two forms the tables store: Unix nanoseconds (`N`) and a
//! human-readable RFC 3339 string (`...RFC` attributes, informational only).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};

/// Unix time in nanoseconds, as the Go library writes `LastUpdate` (an int64).
pub(crate) fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

pub(crate) fn now_nanos() -> i64 {
    unix_nanos(SystemTime::now()).saturating_add(test_offset())
}

/// Test builds only (feature `testing`): `KINSUMER_TESTING_CLOCK_OFFSET_MS` shifts this
/// process's timestamps, to run a fleet member whose clock is wrong.
#[cfg(feature = "testing")]
fn test_offset() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("KINSUMER_TESTING_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
            .map_or(0, |ms| ms.saturating_mul(1_000_000))
    })
}

#[cfg(not(feature = "testing"))]
fn test_offset() -> i64 {
    0
}

/// Nanoseconds `age` before now: rows last updated before this are stale.
pub(crate) fn cutoff_nanos(age: Duration) -> i64 {
    let age = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
    now_nanos().saturating_sub(age)
}

/// RFC 3339 (`2026-11-26T11:47:28.123456Z`: microseconds, trailing zeros of the fraction
/// dropped) for a Unix-nanosecond time, by the SDK's own formatter. Informational only:
/// nothing parses it (the Go library writes `RFC3339Nano`, which parses the same).
pub(crate) fn rfc3339(nanos: i64) -> String {
    DateTime::from_nanos(i128::from(nanos))
        .ok()
        .and_then(|t| t.fmt(DateTimeFormat::DateTime).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // A leap day.
        assert_eq!(rfc3339(951_827_696_500_000_000), "2000-02-29T12:34:56.5Z");
        // The SDK's formatter keeps microseconds (the attribute is informational).
        assert_eq!(
            rfc3339(1_795_700_000_123_456_789),
            "2026-11-26T13:33:20.123456Z"
        );
    }

    #[test]
    fn cutoff_is_in_the_past() {
        let now = now_nanos();
        let cutoff = cutoff_nanos(Duration::from_secs(5));
        assert!(cutoff <= now - 5_000_000_000 + 1_000_000_000);
        assert!(cutoff > 0);
    }
}
