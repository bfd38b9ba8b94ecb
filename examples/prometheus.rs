//! Prometheus: a consumer's metrics served at `http://127.0.0.1:9898/metrics` while it
//! drains a stream that is being written to.
//!
//! The `metrics` feature emits every series through the `metrics` crate's facade; here
//! `metrics-exporter-prometheus` is installed as its recorder and serves them over HTTP.
//! A producer thread writes records in waves, so `kinsumer_millis_behind_latest` and
//! `kinsumer_delivery_lag_seconds` show the consumer catching up, then falling to 0 once
//! it has; `kinsumer_records_delivered_total` ends at exactly the number written.
//!
//! Starts embedded emulators (or uses `AWS_ENDPOINT_URL_KINESIS` /
//! `AWS_ENDPOINT_URL_DYNAMODB`), then keeps serving after the drain until Ctrl-C:
//!
//! ```text
//! cargo run --example prometheus
//! curl -s http://127.0.0.1:9898/metrics | grep kinsumer_
//! ```

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use kinsumer::testing::Emulators;
use kinsumer::{Config, Polled};
use metrics_exporter_prometheus::PrometheusBuilder;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser)]
#[command(about = "Serve a consumer's metrics to Prometheus while it drains a stream")]
struct Args {
    /// Where to serve `/metrics` (a loopback address unless you mean to expose it).
    #[arg(long, default_value = "127.0.0.1:9898")]
    listen: SocketAddr,
    /// Records to write, in waves of `--wave`.
    #[arg(long, default_value_t = 5_000)]
    records: u64,
    /// Records per wave (one every 200 ms).
    #[arg(long, default_value_t = 500)]
    wave: u64,
    /// Shards of the stream.
    #[arg(long, default_value_t = 4)]
    shards: i32,
    /// Stop once every record was consumed (instead of serving until Ctrl-C).
    #[arg(long)]
    exit_when_drained: bool,
}

fn main() -> BoxResult<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    if args.wave == 0 || args.shards < 1 {
        return Err("--wave and --shards must be at least 1".into());
    }
    PrometheusBuilder::new()
        .with_http_listener(args.listen)
        .install()
        .map_err(|e| format!("cannot serve metrics at {}: {e}", args.listen))?;
    println!("serving metrics at http://{}/metrics", args.listen);

    let emulators = Emulators::start()?;
    let suffix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let (stream, app) = (
        format!("prometheus-{suffix}"),
        format!("prometheus-{suffix}"),
    );
    emulators.create_stream(&stream, args.shards)?;
    let config = Config::default()
        .with_throttle_delay(Duration::from_millis(200))
        .with_commit_frequency(Duration::from_millis(200))
        .with_shard_check_frequency(Duration::from_secs(1))
        .with_leader_action_frequency(Duration::from_secs(1));
    let consumer = emulators.consumer(&stream, &app, "prometheus", config)?;
    let stop = consumer.stop_handle();
    ctrlc::set_handler(move || stop.stop())?;
    consumer.run()?;

    std::thread::scope(|s| -> BoxResult<()> {
        let producer = s.spawn(|| -> BoxResult<()> {
            let mut written = 0;
            while written < args.records {
                let wave = args.wave.min(args.records - written);
                let records = (written..written + wave)
                    .map(|i| (format!("key-{}", i % 64), i.to_string().into_bytes()));
                emulators.put(&stream, records)?;
                written += wave;
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        });
        let mut consumed = 0u64;
        let mut records = consumer.records();
        while consumed < args.records {
            match records.next_timeout(Duration::from_secs(1)) {
                Polled::Record(_) => {
                    consumed += 1;
                    if consumed.is_multiple_of(args.wave) {
                        println!("consumed {consumed} of {}", args.records);
                    }
                }
                Polled::TimedOut => {}
                Polled::Failed(e) => return Err(e.into()),
                // Ctrl-C before the end.
                Polled::Ended => break,
            }
        }
        drop(records);
        producer.join().map_err(|_| "the producer panicked")??;
        println!("drained {consumed} records");
        Ok(())
    })?;
    if !args.exit_when_drained {
        println!("still serving; Ctrl-C to stop");
        for rec in consumer.records() {
            rec?;
        }
    }
    consumer.close()?;
    Ok(())
}
