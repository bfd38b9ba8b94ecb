//! The thread that passes a consumer's [`Meters`] to the `metrics` facade.
//!
//! Series (labels `stream`, `application`, and `shard` where it says so):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `kinsumer_records_delivered_total`, `kinsumer_bytes_delivered_total` | counter | shard |
//! | `kinsumer_records_fetched_total`, `kinsumer_reads_total` | counter | shard |
//! | `kinsumer_requests_total` | counter | shard, `operation` |
//! | `kinsumer_throttles_total` | counter | shard |
//! | `kinsumer_millis_behind_latest` | gauge | shard |
//! | `kinsumer_delivery_lag_seconds`, `kinsumer_processing_seconds` | histogram | shard |
//! | `kinsumer_batch_records` | histogram | shard |
//! | `kinsumer_commits_total`, `kinsumer_commit_failures_total`, `kinsumer_commits_lagging_total` | counter | shard |
//! | `kinsumer_lease_events_total` | counter | shard, `event` |
//! | `kinsumer_shard_owned` | gauge | shard |
//! | `kinsumer_records_retried_total`, `kinsumer_records_dead_lettered_total` | counter | shard |
//! | `kinsumer_iterators_renewed_total` | counter | shard |
//! | `kinsumer_shard_load` | gauge | shard |
//! | `kinsumer_leases_owned` | gauge | |
//! | `kinsumer_shards_moved_by_load_total` | counter | |
//! | `kinsumer_errors_total` | counter | `kind`, `code` |

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use metrics::{Counter, Gauge, Histogram, Label, Unit};

use super::{EXPORT_PERIOD, Meters, SAMPLES_PER_EXPORT, ShardMeter, take};

/// How long dropping the exporter waits for its last export: a recorder that blocks
/// must not hang the consumer's `stop()` or `close()`.
const LAST_EXPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The running export thread; dropping it exports one last time and joins it, waiting at
/// most [`LAST_EXPORT_WAIT`] (then the thread is left to finish alone).
#[derive(Debug)]
pub(crate) struct Exporter {
    stop: Option<Sender<()>>,
    /// Disconnects when the thread ends.
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    pub(crate) fn start(meters: Arc<Meters>) -> std::io::Result<Self> {
        Self::start_with(move |stopped| run(&meters, stopped))
    }

    /// Starts the thread running `body` until it returns; `body` is told to stop by the
    /// receiver disconnecting.
    fn start_with(body: impl FnOnce(&Receiver<()>) + Send + 'static) -> std::io::Result<Self> {
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("kinsumer-metrics".into())
            .spawn(move || {
                let _done = done_tx;
                body(&stopped);
            })?;
        Ok(Exporter {
            stop: Some(stop),
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        drop(self.stop.take());
        let Some(t) = self.thread.take() else { return };
        match self.done.recv_timeout(LAST_EXPORT_WAIT) {
            Err(RecvTimeoutError::Timeout) => log::warn!(
                "the metrics export thread did not finish its last export within                  {LAST_EXPORT_WAIT:?} (a recorder blocking?); leaving it"
            ),
            _ => {
                let _ = t.join();
            }
        }
    }
}

fn run(meters: &Meters, stopped: &Receiver<()>) {
    describe();
    let mut series = Series::new(meters);
    loop {
        let last = !matches!(
            stopped.recv_timeout(EXPORT_PERIOD),
            Err(RecvTimeoutError::Timeout)
        );
        series.export(meters);
        if last {
            return;
        }
    }
}

/// The handles of every series, registered once (labels are built only then).
struct Series {
    base: Vec<Label>,
    shards: HashMap<Arc<str>, ShardSeries>,
    leases_owned: Gauge,
    moved_by_load: Counter,
    errors: HashMap<(crate::ErrorKind, Option<String>), Counter>,
}

struct ShardSeries {
    delivered: Counter,
    bytes: Counter,
    fetched: Counter,
    reads: Counter,
    get_records: Counter,
    subscribe: Counter,
    throttles: Counter,
    behind: Gauge,
    lag: Histogram,
    processing: Histogram,
    batch_records: Histogram,
    commits: Counter,
    commit_failures: Counter,
    commits_lagging: Counter,
    acquired: Counter,
    released: Counter,
    lost: Counter,
    owned: Gauge,
    load: Gauge,
    retried: Counter,
    dead_lettered: Counter,
    iterators_renewed: Counter,
}

fn with(labels: &[Label], extra: &[(&'static str, &str)]) -> Vec<Label> {
    let mut v = labels.to_vec();
    v.extend(extra.iter().map(|(k, val)| Label::new(*k, val.to_string())));
    v
}

impl ShardSeries {
    fn new(base: &[Label], shard: &str) -> Self {
        let l = with(base, &[("shard", shard)]);
        let counter = |name: &'static str| metrics::counter!(name, l.iter());
        let op = |o: &str| {
            metrics::counter!(
                "kinsumer_requests_total",
                with(&l, &[("operation", o)]).iter()
            )
        };
        let event = |e: &str| {
            metrics::counter!(
                "kinsumer_lease_events_total",
                with(&l, &[("event", e)]).iter()
            )
        };
        ShardSeries {
            delivered: counter("kinsumer_records_delivered_total"),
            bytes: counter("kinsumer_bytes_delivered_total"),
            fetched: counter("kinsumer_records_fetched_total"),
            reads: counter("kinsumer_reads_total"),
            get_records: op("GetRecords"),
            subscribe: op("SubscribeToShard"),
            throttles: counter("kinsumer_throttles_total"),
            behind: metrics::gauge!("kinsumer_millis_behind_latest", l.iter()),
            lag: metrics::histogram!("kinsumer_delivery_lag_seconds", l.iter()),
            processing: metrics::histogram!("kinsumer_processing_seconds", l.iter()),
            batch_records: metrics::histogram!("kinsumer_batch_records", l.iter()),
            commits: counter("kinsumer_commits_total"),
            commit_failures: counter("kinsumer_commit_failures_total"),
            commits_lagging: counter("kinsumer_commits_lagging_total"),
            acquired: event("acquired"),
            released: event("released"),
            lost: event("lost"),
            owned: metrics::gauge!("kinsumer_shard_owned", l.iter()),
            load: metrics::gauge!("kinsumer_shard_load", l.iter()),
            retried: counter("kinsumer_records_retried_total"),
            dead_lettered: counter("kinsumer_records_dead_lettered_total"),
            iterators_renewed: counter("kinsumer_iterators_renewed_total"),
        }
    }

    /// Passes on what `m` counted since the last export; whether the shard is owned.
    fn export(&self, m: &ShardMeter) -> bool {
        let flow = m.take_flow();
        self.delivered.increment(flow.records);
        self.bytes.increment(flow.bytes);
        for (us, n) in flow.lag_us.sampled(SAMPLES_PER_EXPORT) {
            self.lag.record_many(us / 1e6, n as usize);
        }
        for (us, n) in flow.processing_us.sampled(SAMPLES_PER_EXPORT) {
            self.processing.record_many(us / 1e6, n as usize);
        }
        for (records, n) in m.batch_records.take().sampled(SAMPLES_PER_EXPORT) {
            self.batch_records.record_many(records, n as usize);
        }
        let c = &m.counts;
        for (counter, count) in [
            (&self.fetched, &c.fetched),
            (&self.reads, &c.reads),
            (&self.get_records, &c.get_records),
            (&self.subscribe, &c.subscribe),
            (&self.throttles, &c.throttles),
            (&self.commits, &c.commits),
            (&self.commit_failures, &c.commit_failures),
            (&self.commits_lagging, &c.commits_lagging),
            (&self.acquired, &c.acquired),
            (&self.released, &c.released),
            (&self.lost, &c.lost),
            (&self.retried, &c.retried),
            (&self.dead_lettered, &c.dead_lettered),
            (&self.iterators_renewed, &c.iterators_renewed),
        ] {
            let n = take(count);
            if n > 0 {
                counter.increment(n);
            }
        }
        let owned = m.owned.load(Ordering::Relaxed);
        self.owned.set(if owned { 1.0 } else { 0.0 });
        let behind = m.behind_ms.load(Ordering::Relaxed);
        if owned && behind >= 0 {
            self.behind.set(behind as f64);
        }
        let load = m.load.load(Ordering::Relaxed);
        if owned && load != u64::MAX {
            self.load.set(f64::from_bits(load));
        }
        owned
    }
}

impl Series {
    fn new(meters: &Meters) -> Self {
        let base = vec![
            Label::new("stream", meters.stream.clone()),
            Label::new("application", meters.application.clone()),
        ];
        Series {
            leases_owned: metrics::gauge!("kinsumer_leases_owned", base.iter()),
            moved_by_load: metrics::counter!("kinsumer_shards_moved_by_load_total", base.iter()),
            base,
            shards: HashMap::new(),
            errors: HashMap::new(),
        }
    }

    fn export(&mut self, meters: &Meters) {
        let mut owned = 0usize;
        for (shard, m) in meters.snapshot() {
            let base = &self.base;
            let s = self
                .shards
                .entry(shard)
                .or_insert_with_key(|shard| ShardSeries::new(base, shard));
            owned += usize::from(s.export(&m));
        }
        self.leases_owned.set(owned as f64);
        let moved = take(&meters.moved_by_load);
        if moved > 0 {
            self.moved_by_load.increment(moved);
        }
        for (key, n) in meters.take_errors() {
            let base = &self.base;
            self.errors
                .entry(key)
                .or_insert_with_key(|(kind, code)| {
                    let kind = format!("{kind:?}");
                    let code = code.as_deref().unwrap_or("none");
                    metrics::counter!(
                        "kinsumer_errors_total",
                        with(base, &[("kind", &kind), ("code", code)]).iter()
                    )
                })
                .increment(n);
        }
    }
}

/// Units and help texts (the Prometheus exporter prints them as `# HELP`).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "kinsumer_records_delivered_total",
        Unit::Count,
        "Records handed to the caller"
    );
    describe_counter!(
        "kinsumer_bytes_delivered_total",
        Unit::Bytes,
        "Bytes handed to the caller (data plus partition key, as Kinesis counts them)"
    );
    describe_counter!(
        "kinsumer_records_fetched_total",
        Unit::Count,
        "Records read from Kinesis (KPL aggregates count once)"
    );
    describe_counter!(
        "kinsumer_reads_total",
        Unit::Count,
        "Reads answered: GetRecords responses and fan-out events"
    );
    describe_counter!(
        "kinsumer_requests_total",
        Unit::Count,
        "GetRecords and SubscribeToShard requests sent"
    );
    describe_counter!(
        "kinsumer_throttles_total",
        Unit::Count,
        "Reads Kinesis throttled"
    );
    describe_gauge!(
        "kinsumer_millis_behind_latest",
        Unit::Milliseconds,
        "How far the shard's last read was behind the tip, as Kinesis reports it"
    );
    describe_histogram!(
        "kinsumer_delivery_lag_seconds",
        Unit::Seconds,
        "A record's approximate arrival in Kinesis to its hand-out (one per hand-out)"
    );
    describe_histogram!(
        "kinsumer_processing_seconds",
        Unit::Seconds,
        "Hand-out to processed (one per mark that moves the checkpoint)"
    );
    describe_histogram!(
        "kinsumer_batch_records",
        Unit::Count,
        "Records per read that brought any"
    );
    describe_counter!("kinsumer_commits_total", Unit::Count, "Checkpoints written");
    describe_counter!(
        "kinsumer_commit_failures_total",
        Unit::Count,
        "Checkpoint writes that failed (tried again)"
    );
    describe_counter!(
        "kinsumer_commits_lagging_total",
        Unit::Count,
        "Commit intervals a checkpoint write was still in flight"
    );
    describe_counter!(
        "kinsumer_lease_events_total",
        Unit::Count,
        "Leases acquired, released and lost"
    );
    describe_gauge!(
        "kinsumer_shard_owned",
        Unit::Count,
        "1 while this client holds the shard's lease"
    );
    describe_gauge!(
        "kinsumer_shard_load",
        "The shard's load as published for balancing: fetched bytes/s plus 512 per record/s"
    );
    describe_counter!(
        "kinsumer_shards_moved_by_load_total",
        Unit::Count,
        "Shards this client moved by load as the fleet's leader"
    );
    describe_gauge!(
        "kinsumer_leases_owned",
        Unit::Count,
        "Shards this client holds"
    );
    describe_counter!(
        "kinsumer_records_retried_total",
        Unit::Count,
        "Records delivered again after retry_later"
    );
    describe_counter!(
        "kinsumer_records_dead_lettered_total",
        Unit::Count,
        "Records given to the dead-letter handler"
    );
    describe_counter!(
        "kinsumer_iterators_renewed_total",
        Unit::Count,
        "Shard iterators renewed after expiring or being rejected"
    );
    describe_counter!(
        "kinsumer_errors_total",
        Unit::Count,
        "Errors retried or worked around, by kind and AWS error code"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn dropping_gives_up_on_a_thread_that_never_finishes() {
        let (release, blocked) = crossbeam_channel::bounded::<()>(0);
        let finished = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        let exporter = Exporter::start_with(move |_stopped| {
            // A recorder stuck until the test lets it go.
            let _ = blocked.recv();
            flag.store(true, Ordering::SeqCst);
        })
        .expect("spawn");
        drop(exporter);
        // Drop returned while the thread was still blocked.
        assert!(!finished.load(Ordering::SeqCst));
        drop(release);
    }

    #[test]
    fn dropping_joins_a_thread_that_finishes() {
        let finished = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        let exporter = Exporter::start_with(move |stopped| {
            let _ = stopped.recv();
            flag.store(true, Ordering::SeqCst);
        })
        .expect("spawn");
        drop(exporter);
        assert!(finished.load(Ordering::SeqCst));
    }
}
