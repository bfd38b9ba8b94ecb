//! The `retry` scenario: what a shard in retry costs. One shard holds a backlog of
//! `--records` records (default 10,000 × 100 B) whose first record fails every time
//! (`Record::retry_later`, no attempt limit): each attempt drops what was read and reads
//! the shard again from that record, after a delay doubling from the throttle delay up
//! to 30 s. Over `--seconds` (default 20) it reports the client's CPU per second and per
//! attempt (above the idle cost), the attempts, and the process's peak RSS; then the
//! record succeeds, the backlog drains, and the same shard idles at the tip for
//! `--seconds`: the idle cost the retry figures are set against.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kinsumer::Polled;

use super::{
    Args, BenchResult, Counters, Report, bench_config, client_cpu_ns, mib, mode_note, preload,
    record_id, status_kib, support,
};

pub(super) fn retry(args: &Args) -> BenchResult {
    let n = args.records.unwrap_or(10_000);
    let bytes = args.bytes.unwrap_or(100);
    let seconds = args.seconds.unwrap_or(20);
    let mut env = support::Env::new(1)?;
    preload(&env, n, bytes, None)?;
    let counters = Arc::new(Counters::default());
    let consumer = env.consumer("bench-retry", bench_config(args, &counters))?;
    consumer.run()?;
    let mut records = consumer.records();
    // The first delivery, then the window: every delivery of record 0 fails.
    let (mut deliveries, mut others) = (0u64, 0u64);
    let mut cpu_before = None;
    let started = Instant::now();
    let window = Duration::from_secs(seconds);
    while cpu_before.is_none() || started.elapsed() < window {
        match records.next_timeout(Duration::from_millis(100)) {
            Polled::Record(r) if record_id(r.data()) == Some(0) => {
                cpu_before.get_or_insert_with(client_cpu_ns);
                deliveries += 1;
                r.retry_later("benchmark: always fails");
            }
            Polled::Record(_) => others += 1,
            Polled::TimedOut => {}
            Polled::Failed(e) => return Err(e.into()),
            Polled::Ended => return Err("iteration ended".into()),
        }
    }
    let in_retry = client_cpu_ns().saturating_sub(cpu_before.unwrap_or(0));
    let in_retry_s = started.elapsed().as_secs_f64();
    let hwm_retry = status_kib("VmHWM");
    let calls_retry = counters
        .fetch_calls
        .load(std::sync::atomic::Ordering::Relaxed);
    // Then it succeeds: the backlog drains; then the shard idles at the tip, for the
    // cost of the same shard healthy and quiet.
    let (mut drained, drain_start) = (0u64, Instant::now());
    while drained < n {
        match records.next_timeout(Duration::from_millis(100)) {
            Polled::Record(_) => drained += 1,
            Polled::TimedOut if drain_start.elapsed() > window * 4 => {
                return Err(format!("drained {drained} of {n}").into());
            }
            Polled::TimedOut => {}
            Polled::Failed(e) => return Err(e.into()),
            Polled::Ended => return Err("iteration ended".into()),
        }
    }
    let (idle_before, idle_start) = (client_cpu_ns(), Instant::now());
    while idle_start.elapsed() < window {
        match records.next_timeout(Duration::from_millis(100)) {
            Polled::Record(_) => return Err("a record after the backlog".into()),
            Polled::TimedOut => {}
            Polled::Failed(e) => return Err(e.into()),
            Polled::Ended => return Err("iteration ended".into()),
        }
    }
    let idle = client_cpu_ns().saturating_sub(idle_before) as f64 / 1e6;
    let idle_s = idle_start.elapsed().as_secs_f64();
    drop(records);
    consumer.stop();
    let attempts = deliveries.saturating_sub(1).max(1);
    let in_retry_ms = in_retry as f64 / 1e6;
    let idle_rate = idle / idle_s;
    Report::new("retry")
        .num("records_behind", n)
        .num("bytes", bytes)
        .num("deliveries_of_the_failing_record", deliveries)
        .num("others_handed_out_meanwhile", others)
        .num("get_records_calls_in_retry", calls_retry)
        .f("in_retry_s", in_retry_s)
        .f("cpu_ms_per_s_in_retry", in_retry_ms / in_retry_s)
        .f("cpu_ms_per_s_idle", idle_rate)
        .f(
            "extra_cpu_ms_per_attempt",
            (in_retry_ms - idle_rate * in_retry_s) / attempts as f64,
        )
        .f("peak_rss_mib_in_retry", mib(hwm_retry))
        .num("drained_after", drained)
        .f("peak_rss_mib_at_end", mib(status_kib("VmHWM")))
        .print(mode_note(&env));
    Ok(())
}
