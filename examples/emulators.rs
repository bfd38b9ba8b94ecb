//! Runs the embedded Kinesis and DynamoDB emulators as loopback servers until Ctrl-C, so
//! other programs (the `noop` example, a fleet of processes) can share them.
//!
//! ```text
//! cargo run --example emulators -- [--stream NAME --shards N] [--records N]
//! ```
//!
//! Prints an `export` line with the AWS SDK's standard variables (`AWS_ENDPOINT_URL_KINESIS`,
//! `AWS_ENDPOINT_URL_DYNAMODB`, a region and test credentials): with them set, any program
//! using the default AWS configuration chain — `Kinsumer::new`, the `noop` example, the
//! test suite, the benchmark — talks to these servers.
//! With `--stream`, creates that stream (`--shards`, default 4) and writes `--records`
//! numbered records (default 0) into it.

use kinsumer::testing::{Emulators, KinesisOptions};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut stream = None;
    let mut shards = 4;
    let mut records = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--stream" => stream = Some(value),
            "--shards" => shards = value.parse()?,
            "--records" => records = value.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let emulators = Emulators::start_embedded(KinesisOptions::default())?;
    if let Some(name) = &stream {
        emulators.create_stream(name, shards)?;
        emulators.put(
            name,
            (0..records).map(|i| (format!("key-{}", i % 97), i.to_string().into_bytes())),
        )?;
    }
    report(&emulators, stream.as_deref(), shards, records);
    wait_for_ctrl_c()
}

fn report(emulators: &Emulators, stream: Option<&str>, shards: i32, records: u64) {
    println!(
        "export AWS_ENDPOINT_URL_KINESIS={} AWS_ENDPOINT_URL_DYNAMODB={} \
         AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test",
        emulators.kinesis_endpoint(),
        emulators.dynamodb_endpoint()
    );
    if let Some(name) = stream {
        println!("# stream {name}: {shards} shards, {records} records written");
    }
    println!("# Ctrl-C to stop");
}

fn wait_for_ctrl_c() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })?;
    let _ = rx.recv();
    Ok(())
}
