//! Wall-clock timestamps in the two forms the tables store: Unix nanoseconds (`N`) and a
//! human-readable RFC 3339 string (`...RFC` attributes, informational only).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time in nanoseconds, as the Go library writes `LastUpdate` (an int64).
pub(crate) fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

pub(crate) fn now_nanos() -> i64 {
    unix_nanos(SystemTime::now())
}

/// Nanoseconds `age` before now: rows last updated before this are stale.
pub(crate) fn cutoff_nanos(age: Duration) -> i64 {
    let age = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
    now_nanos().saturating_sub(age)
}

/// `2026-11-26T11:47:28.123456789Z` for a Unix-nanosecond time.
pub(crate) fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29T12:34:56.5Z: a leap day.
        assert_eq!(
            rfc3339(951_827_696_500_000_000),
            "2000-02-29T12:34:56.500000000Z"
        );
        assert_eq!(
            rfc3339(1_795_700_000_000_000_001),
            "2026-11-26T13:33:20.000000001Z"
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
