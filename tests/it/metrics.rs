//! The `metrics` feature: every series family, read back from a recorder that keeps what
//! it is given (values, not just names), filtered by the test's application label so
//! that tests running side by side in this process do not see each other's figures.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kinsumer::{CheckpointMode, DeadLetter, DeadLetterError, Letter, Polled};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

use crate::support::outage::Outage;
use crate::support::{self, Env, TestResult};

/// Keeps every counter, gauge and histogram value, never resetting them.
struct Keeper(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for Keeper {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

/// The process's recorder (installed once; every test of this file reads it).
fn registry() -> TestResult<&'static Arc<Registry<Key, AtomicStorage>>> {
    static REGISTRY: OnceLock<Arc<Registry<Key, AtomicStorage>>> = OnceLock::new();
    let mut installed = Ok(());
    let registry = REGISTRY.get_or_init(|| {
        let registry = Arc::new(Registry::atomic());
        installed =
            metrics::set_global_recorder(Keeper(Arc::clone(&registry))).map_err(|e| e.to_string());
        registry
    });
    installed?;
    Ok(registry)
}

/// One application's series, by name and the labels other than stream and application.
pub(crate) struct Figures {
    app: String,
    registry: &'static Arc<Registry<Key, AtomicStorage>>,
}

pub(crate) type Labels = Vec<(String, String)>;

impl Figures {
    pub(crate) fn new(env: &Env) -> TestResult<Figures> {
        Ok(Figures {
            app: env.app.clone(),
            registry: registry()?,
        })
    }

    /// The key's labels other than stream and application, if it is of this application.
    fn mine(&self, key: &Key, name: &str) -> Option<Labels> {
        if key.name() != name
            || !key
                .labels()
                .any(|l| l.key() == "application" && l.value() == self.app)
        {
            return None;
        }
        let mut labels: Labels = key
            .labels()
            .filter(|l| l.key() != "application" && l.key() != "stream")
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        Some(labels)
    }

    fn counters(&self, name: &str) -> HashMap<Labels, u64> {
        self.registry
            .get_counter_handles()
            .into_iter()
            .filter_map(|(k, v)| {
                Some((
                    self.mine(&k, name)?,
                    v.load(std::sync::atomic::Ordering::SeqCst),
                ))
            })
            .collect()
    }

    pub(crate) fn gauges(&self, name: &str) -> HashMap<Labels, f64> {
        self.registry
            .get_gauge_handles()
            .into_iter()
            .filter_map(|(k, v)| {
                let bits = v.load(std::sync::atomic::Ordering::SeqCst);
                Some((self.mine(&k, name)?, f64::from_bits(bits)))
            })
            .collect()
    }

    fn histograms(&self, name: &str) -> HashMap<Labels, Vec<f64>> {
        self.registry
            .get_histogram_handles()
            .into_iter()
            .filter_map(|(k, v)| Some((self.mine(&k, name)?, v.data())))
            .collect()
    }

    /// The sum of a counter over every label set.
    pub(crate) fn total(&self, name: &str) -> u64 {
        self.counters(name).values().sum()
    }

    /// A counter's value per shard.
    fn per_shard(&self, name: &str) -> HashMap<String, u64> {
        self.counters(name)
            .into_iter()
            .filter_map(|(labels, v)| Some((shard_of(&labels)?, v)))
            .fold(HashMap::new(), |mut m, (s, v)| {
                *m.entry(s).or_default() += v;
                m
            })
    }
}

pub(crate) fn shard_of(labels: &Labels) -> Option<String> {
    labels
        .iter()
        .find(|(k, _)| k == "shard")
        .map(|(_, v)| v.clone())
}

fn label(labels: &Labels, key: &str) -> Option<String> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

#[test]
fn a_drain_is_counted_exactly_in_every_series_family() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let figures = Figures::new(&env)?;
    const N: u64 = 120;
    env.put_numbered(0, N, 7)?;
    let shards = env.shard_ids()?;
    let consumer = env.consumer("measured", support::fast_config())?;
    consumer.run()?;
    let mut bytes = 0u64;
    let mut per_shard: HashMap<String, u64> = HashMap::new();
    {
        let mut records = consumer.records();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0;
        while n < N {
            assert!(Instant::now() < deadline, "{n} records");
            if let Polled::Record(r) = records.next_timeout(Duration::from_millis(200)) {
                bytes += (r.data().len() + r.partition_key().len()) as u64;
                *per_shard.entry(r.shard_id().to_owned()).or_default() += 1;
                n += 1;
            }
        }
    }
    // Exported every second: wait for the figures to catch up with what was handed out.
    support::wait_for(Duration::from_secs(30), "records delivered counted", || {
        Ok(figures.total("kinsumer_records_delivered_total") == N)
    })?;
    assert_eq!(
        figures.per_shard("kinsumer_records_delivered_total"),
        per_shard
    );
    assert_eq!(figures.total("kinsumer_bytes_delivered_total"), bytes);
    assert_eq!(figures.total("kinsumer_records_fetched_total"), N);
    // The records were read in batches: every non-empty read is one sample, of its
    // size within the histogram's resolution (exact below 4, else 1/8 of the value).
    let batches = figures.histograms("kinsumer_batch_records");
    assert_eq!(batches.len(), shards.len(), "{batches:?}");
    for (labels, sizes) in &batches {
        let read = per_shard[&shard_of(labels).ok_or("no shard label")?] as f64;
        let sum: f64 = sizes.iter().sum();
        assert!(
            (sum - read).abs() <= read / 8.0,
            "{labels:?}: {sizes:?}, {read} read"
        );
    }
    // Every read is a request; requests are named by operation.
    let requests = figures.counters("kinsumer_requests_total");
    let get_records: u64 = requests
        .iter()
        .filter(|(l, _)| label(l, "operation").as_deref() == Some("GetRecords"))
        .map(|(_, v)| v)
        .sum();
    let reads = figures.total("kinsumer_reads_total");
    assert!(reads >= batches.values().map(Vec::len).sum::<usize>() as u64);
    assert!(
        get_records >= reads,
        "{get_records} requests, {reads} reads"
    );
    // Lag: one sample per record handed out (fewer than the sampling limit here), each
    // a plausible age.
    let lag: Vec<f64> = figures
        .histograms("kinsumer_delivery_lag_seconds")
        .into_values()
        .flatten()
        .collect();
    assert_eq!(lag.len() as u64, N);
    assert!(lag.iter().all(|s| (0.0..600.0).contains(s)), "{lag:?}");
    // Auto mode: each record is processed when the next one is pulled (the last at
    // the stop), and each mark that moves the prefix is a processing sample.
    support::wait_for(Duration::from_secs(30), "processing samples", || {
        let n: usize = figures
            .histograms("kinsumer_processing_seconds")
            .values()
            .map(Vec::len)
            .sum();
        Ok(n as u64 >= N - 2)
    })?;
    // Caught up with the tip: each shard says 0 ms behind.
    support::wait_for(Duration::from_secs(30), "millis behind at 0", || {
        let behind = figures.gauges("kinsumer_millis_behind_latest");
        Ok(behind.len() == shards.len() && behind.values().all(|v| *v == 0.0))
    })?;
    // Both leases are held and committed.
    let acquired: HashMap<Labels, u64> = figures
        .counters("kinsumer_lease_events_total")
        .into_iter()
        .filter(|(l, _)| label(l, "event").as_deref() == Some("acquired"))
        .collect();
    assert_eq!(acquired.len(), shards.len(), "{acquired:?}");
    assert!(acquired.values().all(|v| *v == 1), "{acquired:?}");
    assert_eq!(
        figures
            .gauges("kinsumer_leases_owned")
            .into_values()
            .collect::<Vec<_>>(),
        vec![shards.len() as f64]
    );
    let owned = figures.gauges("kinsumer_shard_owned");
    assert_eq!(owned.len(), shards.len());
    assert!(owned.values().all(|v| *v == 1.0), "{owned:?}");
    support::wait_for(Duration::from_secs(30), "a commit per shard", || {
        let commits = figures.per_shard("kinsumer_commits_total");
        Ok(commits.len() == shards.len() && commits.values().all(|v| *v >= 1))
    })?;
    assert_eq!(figures.total("kinsumer_commit_failures_total"), 0);
    assert_eq!(figures.total("kinsumer_records_retried_total"), 0);

    // The stop releases both leases; the last export says so.
    consumer.stop();
    let released = figures
        .counters("kinsumer_lease_events_total")
        .into_iter()
        .filter(|(l, _)| label(l, "event").as_deref() == Some("released"))
        .count();
    assert_eq!(released, shards.len());
    assert_eq!(
        figures
            .gauges("kinsumer_leases_owned")
            .into_values()
            .collect::<Vec<_>>(),
        vec![0.0]
    );
    assert!(
        figures
            .gauges("kinsumer_shard_owned")
            .values()
            .all(|v| *v == 0.0)
    );
    let processing: usize = figures
        .histograms("kinsumer_processing_seconds")
        .values()
        .map(Vec::len)
        .sum();
    assert!(processing as u64 >= N - 1, "{processing}");
    Ok(())
}

/// Takes every letter.
#[derive(Debug)]
struct Bin;

impl DeadLetter for Bin {
    fn dead_letter(&self, _: &Letter<'_>) -> Result<(), DeadLetterError> {
        Ok(())
    }
}

#[test]
fn failed_commits_retries_and_dead_letters_are_counted() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let figures = Figures::new(&env)?;
    env.put_numbered(0, 10, 3)?;
    let outage = Outage::refused().only("UpdateItem");
    let dynamodb = outage.dynamodb(&env.dynamodb);
    let kinesis = env.kinesis.clone();
    let config = support::fast_config()
        .with_checkpoint_mode(CheckpointMode::Manual)
        .with_max_attempts(2)
        .with_dead_letter(Arc::new(Bin));
    let consumer = env.consumer_with(&kinesis, &dynamodb, "failing", config)?;
    consumer.run()?;
    let mut records = consumer.records();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Record "3" fails every time: retried once, then dead-lettered (the bin takes it:
    // processed); the others are processed.
    let mut attempts_of_3 = 0;
    let mut done = 0;
    while done < 9 || attempts_of_3 < 2 {
        assert!(
            Instant::now() < deadline,
            "{done} records, {attempts_of_3} attempts"
        );
        if let Polled::Record(r) = records.next_timeout(Duration::from_millis(200)) {
            if r.data() == b"3" {
                attempts_of_3 += 1;
                r.retry_later("not today");
            } else {
                done += 1;
                r.mark_processed();
            }
        }
    }
    support::wait_for(Duration::from_secs(30), "the retry counted", || {
        Ok(figures.total("kinsumer_records_retried_total") == 1
            && figures.total("kinsumer_records_dead_lettered_total") == 1)
    })?;
    support::wait_for(Duration::from_secs(30), "a commit", || {
        Ok(figures.total("kinsumer_commits_total") >= 1)
    })?;
    // DynamoDB refuses checkpoint writes: each failed commit is counted, and the
    // errors by kind and code.
    outage.arm(true);
    env.put_numbered(10, 12, 3)?;
    let mut more = 0;
    while more < 2 {
        assert!(Instant::now() < deadline, "{more} more records");
        if let Polled::Record(r) = records.next_timeout(Duration::from_millis(200)) {
            r.mark_processed();
            more += 1;
        }
    }
    support::wait_for(Duration::from_secs(30), "failed commits counted", || {
        Ok(figures.total("kinsumer_commit_failures_total") >= 1
            && figures.total("kinsumer_errors_total") >= 1)
    })?;
    outage.arm(false);
    drop(records);
    consumer.stop();
    Ok(())
}

/// One scrape of a Prometheus `/metrics` endpoint: (name, labels text, value) per line.
fn scrape(addr: &str) -> TestResult<Vec<(String, String, f64)>> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").ok_or("no HTTP body")?.1;
    let mut series = Vec::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("line {line:?}"))?;
        let (name, labels) = match key.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (key, ""),
        };
        series.push((name.to_owned(), labels.to_owned(), value.parse()?));
    }
    Ok(series)
}

fn sum_of(series: &[(String, String, f64)], name: &str) -> f64 {
    series.iter().filter(|s| s.0 == name).map(|s| s.2).sum()
}

#[test]
fn the_prometheus_example_serves_the_series_during_a_drain() -> TestResult {
    const N: u64 = 3_000;
    const SHARDS: usize = 3;
    let env = Env::new(1)?;
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.to_string()
    };
    let mut child = crate::ctl::example(&env, "prometheus")?
        .args([
            "--listen",
            &addr,
            "--records",
            &N.to_string(),
            "--wave",
            "300",
        ])
        .args(["--shards", &SHARDS.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let (lines, reader) = crate::ctl::lines_of(&mut child)?;
    let outcome = (|| -> TestResult {
        let deadline = Instant::now() + Duration::from_secs(120);
        // Scraped while records are still being written and read.
        let mut during = Vec::new();
        loop {
            let line = lines
                .recv_deadline(deadline)
                .map_err(|_| format!("no drain within 120 s; scraped {during:?}"))?;
            if line.starts_with("consumed ") {
                let s = scrape(&addr)?;
                during.push(sum_of(&s, "kinsumer_records_delivered_total"));
            }
            if line.starts_with("drained ") {
                assert_eq!(line, format!("drained {N} records"));
                break;
            }
        }
        assert!(!during.is_empty());
        assert!(during.windows(2).all(|w| w[0] <= w[1]), "{during:?}");
        assert!(during.iter().all(|d| *d <= N as f64), "{during:?}");
        // Once drained: every record counted exactly, every shard caught up.
        let mut last = Vec::new();
        support::wait_for(Duration::from_secs(30), "the drain in the figures", || {
            last = scrape(&addr)?;
            let behind: Vec<f64> = last
                .iter()
                .filter(|s| s.0 == "kinsumer_millis_behind_latest")
                .map(|s| s.2)
                .collect();
            Ok(
                sum_of(&last, "kinsumer_records_delivered_total") == N as f64
                    && behind.len() == SHARDS
                    && behind.iter().all(|b| *b == 0.0),
            )
        })
        .map_err(|e| format!("{e}: {last:?}"))?;
        assert_eq!(sum_of(&last, "kinsumer_records_fetched_total"), N as f64);
        // Histograms are sampled (at most 256 samples per shard and second): their
        // count is of samples, at most one per record; the mean lag is plausible.
        let lag_count = sum_of(&last, "kinsumer_delivery_lag_seconds_count");
        let lag_sum = sum_of(&last, "kinsumer_delivery_lag_seconds_sum");
        assert!(
            lag_count >= SHARDS as f64 && lag_count <= N as f64,
            "{lag_count}"
        );
        assert!((0.0..600.0).contains(&(lag_sum / lag_count)), "{lag_sum}");
        assert_eq!(sum_of(&last, "kinsumer_leases_owned"), SHARDS as f64);
        assert!(sum_of(&last, "kinsumer_bytes_delivered_total") >= N as f64);
        assert!(sum_of(&last, "kinsumer_requests_total") >= SHARDS as f64);
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    outcome
}

#[test]
fn iterator_renewals_are_counted() -> TestResult {
    support::init_logging();
    let mut env = Env::with_options(
        1,
        kinsumer::testing::KinesisOptions::default().with_iterator_ttl(Duration::from_secs(1)),
    )?;
    let figures = Figures::new(&env)?;
    env.put_numbered(0, 20, 3)?;
    // A one-record buffer: the shard thread holds its next iterator while the caller
    // waits, so it expires.
    let config = support::fast_config().with_buffer_size(1);
    let consumer = env.consumer("renewing", config)?;
    consumer.run()?;
    support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 5)?;
    support::let_time_pass(Duration::from_millis(2_500))?;
    // The shard thread reads again once the rest is handed out: with an expired iterator.
    support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 15)?;
    support::wait_for(Duration::from_secs(30), "an iterator renewal", || {
        Ok(figures.total("kinsumer_iterators_renewed_total") >= 1)
    })?;
    consumer.stop();
    assert_eq!(figures.total("kinsumer_records_delivered_total"), 20);
    Ok(())
}

#[test]
fn throttles_are_counted_with_their_error_code() -> TestResult {
    use std::sync::atomic::{AtomicBool, Ordering};
    support::init_logging();
    let mut env = Env::new(1)?;
    let figures = Figures::new(&env)?;
    env.put_numbered(0, 10, 3)?;
    // GetRecords throttled (every SDK attempt) while armed.
    let armed = Arc::new(AtomicBool::new(false));
    let throttle = kinsumer::testing::AlwaysFail::new(
        "GetRecords",
        400,
        "ProvisionedThroughputExceededException",
    )
    .when(Arc::clone(&armed));
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        env.kinesis
            .config()
            .to_builder()
            .interceptor(throttle)
            .build(),
    );
    let dynamodb = env.dynamodb.clone();
    let consumer = env.consumer_with(&kinesis, &dynamodb, "throttled", support::fast_config())?;
    consumer.run()?;
    support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 10)?;
    assert_eq!(figures.total("kinsumer_throttles_total"), 0);
    armed.store(true, Ordering::SeqCst);
    support::wait_for(Duration::from_secs(30), "throttles counted", || {
        let throttled = figures
            .counters("kinsumer_errors_total")
            .into_iter()
            .filter(|(l, _)| {
                label(l, "code").as_deref() == Some("ProvisionedThroughputExceededException")
            })
            .map(|(_, v)| v)
            .sum::<u64>();
        Ok(figures.total("kinsumer_throttles_total") >= 2 && throttled >= 2)
    })?;
    armed.store(false, Ordering::SeqCst);
    // Reading goes on: what is written now arrives, every record counted once.
    env.put_numbered(10, 15, 3)?;
    support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 5)?;
    consumer.stop();
    assert_eq!(figures.total("kinsumer_records_delivered_total"), 15);
    Ok(())
}

#[test]
fn fan_out_subscriptions_are_counted_as_requests() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let figures = Figures::new(&env)?;
    const N: u64 = 200;
    env.put_numbered(0, N, 7)?;
    let config = support::fast_config().with_consumer_name("measured");
    let consumer = env.consumer("subscriber", config)?;
    consumer.run()?;
    support::collect_until(&consumer, Duration::from_secs(60), |s| s.len() as u64 >= N)?;
    consumer.close()?;
    let requests = figures.counters("kinsumer_requests_total");
    let by = |op: &str| -> u64 {
        requests
            .iter()
            .filter(|(l, _)| label(l, "operation").as_deref() == Some(op))
            .map(|(_, v)| v)
            .sum()
    };
    assert!(by("SubscribeToShard") >= 2, "{requests:?}");
    assert_eq!(by("GetRecords"), 0, "{requests:?}");
    assert_eq!(figures.total("kinsumer_records_delivered_total"), N);
    assert_eq!(figures.total("kinsumer_records_fetched_total"), N);
    assert!(figures.total("kinsumer_reads_total") >= 1);
    Ok(())
}

/// Commits answered late (1.5 s, against a 200 ms commit interval) are counted as
/// lagging while in flight, and still land.
#[test]
fn commits_answered_late_are_counted_as_lagging() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    let figures = Figures::new(&env)?;
    let proxy = crate::support::proxy::Proxy::start(env.emulators.dynamodb_endpoint())?;
    proxy.delay_answers(Duration::from_millis(1500));
    let redirect = Outage::commits_to(proxy.endpoint());
    let dynamodb = redirect.dynamodb(&env.dynamodb);
    let kinesis = env.kinesis.clone();
    let consumer = env.consumer_with(&kinesis, &dynamodb, "lagging", support::fast_config())?;
    consumer.run()?;
    env.put_numbered(0, 20, 3)?;
    let seen = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 20)?;
    let counted = support::wait_for(
        Duration::from_secs(20),
        "lagging and landed commits exported",
        || {
            Ok(figures.total("kinsumer_commits_lagging_total") >= 1
                && figures.total("kinsumer_commits_total") >= 1)
        },
    );
    consumer.stop();
    counted?;
    assert_eq!(seen.len(), 20);
    Ok(())
}
