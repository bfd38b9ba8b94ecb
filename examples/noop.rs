//! The Go `noopkinsumer` equivalent: consume a stream, do nothing with the records but
//! count them, and stop cleanly on Ctrl-C.
//!
//! Delivery guarantee: auto checkpoint mode, so a record is checkpointed once the loop
//! has moved past it; Ctrl-C ends the loop after the current record and the stop commits
//! everything processed and releases every shard for the rest of the fleet.
//!
//! ```text
//! cargo run --example noop -- --stream NAME [--app NAME] [--client NAME] [--create-tables]
//!     [--fan-out CONSUMER_NAME] [--role-arn ARN]
//! ```
//!
//! `--fan-out` reads through an enhanced fan-out consumer of that name (registered if
//! missing); `--role-arn` makes the Kinesis calls as that IAM role (the Go library's
//! `role` and `consumerARN`).
//!
//! Uses the default AWS configuration chain (environment, profile, instance role),
//! which also honours the standard endpoint variables: `AWS_ENDPOINT_URL_KINESIS` and
//! `AWS_ENDPOINT_URL_DYNAMODB` point it at emulators (the `emulators` example prints them).

use kinsumer::Polled;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use kinsumer::{Config, Kinsumer, Stats};

/// How often a status line is printed, records or not (an idle stream must not look
/// like a hung program).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Counts the shards this client owns, for the status line.
#[derive(Debug, Default)]
struct Owned(AtomicI64);

impl Stats for Owned {
    fn lease_acquired(&self, _shard_id: &str) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn lease_released(&self, _shard_id: &str) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    fn lease_lost(&self, _shard_id: &str) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Args {
    stream: String,
    app: String,
    client: String,
    create_tables: bool,
    /// Read through this enhanced fan-out consumer (registered if missing).
    consumer_name: Option<String>,
    /// Assume this IAM role for Kinesis calls.
    role_arn: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        stream: String::new(),
        app: "noopkinsumer".into(),
        client: format!("noop-{}", std::process::id()),
        create_tables: false,
        consumer_name: None,
        role_arn: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--stream" => args.stream = value("--stream")?,
            "--app" => args.app = value("--app")?,
            "--client" => args.client = value("--client")?,
            "--create-tables" => args.create_tables = true,
            "--fan-out" => args.consumer_name = Some(value("--fan-out")?),
            "--role-arn" => args.role_arn = Some(value("--role-arn")?),
            "-h" | "--help" => {
                return Err("usage: noop --stream NAME [--app NAME] [--client NAME] \
                     [--create-tables] [--fan-out CONSUMER_NAME] [--role-arn ARN]"
                    .into());
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if args.stream.is_empty() {
        return Err("--stream NAME is required (see --help)".into());
    }
    Ok(args)
}

fn consumer(args: &Args, owned: &Arc<Owned>) -> kinsumer::Result<Kinsumer> {
    let mut config = Config::default().with_stats(owned.clone());
    if let Some(name) = &args.consumer_name {
        config = config.with_consumer_name(name);
    }
    if let Some(role) = &args.role_arn {
        config = config.with_role_arn(role);
    }
    Kinsumer::new(&args.stream, &args.app, &args.client, config)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("kinsumer=info"))
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            eprintln!("  caused by: {cause}");
            source = cause.source();
        }
        std::process::exit(1);
    }
}

fn run(args: &Args) -> kinsumer::Result<()> {
    let owned = Arc::new(Owned::default());
    let consumer = consumer(args, &owned)?;
    if args.create_tables {
        consumer.create_required_tables()?;
    }
    let stop = consumer.stop_handle();
    if let Err(e) = ctrlc::set_handler(move || stop.stop()) {
        eprintln!("warning: no Ctrl-C handler ({e}); stop with SIGKILL");
    }
    consumer.run()?;
    println!(
        "consuming {} as {} — Ctrl-C to stop",
        args.stream,
        consumer.client_name()
    );
    let mut count: u64 = 0;
    let mut last = Instant::now();
    let mut records = consumer.records();
    loop {
        // Wake up at least once a second, so the status line comes on an idle stream too.
        match records.next_timeout(Duration::from_secs(1)) {
            Polled::Record(_) => count += 1,
            Polled::TimedOut => {}
            Polled::Failed(e) => return Err(e), // fatal: the consumer has ended
            Polled::Ended => break,
        }
        if last.elapsed() >= STATUS_EVERY {
            println!(
                "{count} records so far; {} shards owned",
                owned.0.load(Ordering::Relaxed)
            );
            last = Instant::now();
        }
    }
    consumer.stop();
    println!("stopped after {count} records");
    Ok(())
}
