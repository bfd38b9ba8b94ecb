//! The three DynamoDB tables: their names, creation, deletion and readiness.
//!
//! Names and key schemas are the Go library's, so a Rust fleet and a Go fleet share
//! checkpoints: `<app>_clients` (hash key `ID`), `<app>_checkpoints` (`Shard`) and
//! `<app>_metadata` (`Key`), all string keys.

use std::time::{Duration, Instant};

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode as DynamoBilling, KeySchemaElement, KeyType,
    ProvisionedThroughput, ScalarAttributeType, TableStatus,
};

use crate::bridge::Bridge;
use crate::config::{BillingMode, Config};
use crate::error::{Error, ErrorKind, Result};
use crate::retry;

/// The stream and application names, validated, and the table names derived from them.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) stream: String,
    pub(crate) clients: String,
    pub(crate) checkpoints: String,
    pub(crate) metadata: String,
}

fn valid_chars(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Names {
    /// Checks the names before any network call: Kinesis stream names are 1–128 chars of
    /// `[A-Za-z0-9_.-]` (or a stream ARN, `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`);
    /// table names (the longest is `<app>_checkpoints`) 3–255 chars of the same set.
    pub(crate) fn new(stream: &str, application: &str) -> Result<Self> {
        if stream.is_empty() {
            return Err(Error::new(ErrorKind::NoStreamName));
        }
        if application.is_empty() {
            return Err(Error::new(ErrorKind::NoApplicationName));
        }
        if crate::stream::is_arn(stream) {
            if !crate::stream::is_stream_arn(stream) {
                return Err(Error::new(ErrorKind::InvalidArn).with_context(format!(
                    "stream ARN {stream:?} (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME, a \
                     12-digit account)"
                )));
            }
        } else if stream.len() > 128 || !valid_chars(stream) {
            return Err(Error::new(ErrorKind::InvalidName).with_context(format!(
                "stream name {stream:?} (1-128 characters of A-Z a-z 0-9 _ . -)"
            )));
        }
        let checkpoints = format!("{application}_checkpoints");
        if checkpoints.len() > 255 || !valid_chars(application) {
            return Err(Error::new(ErrorKind::InvalidName).with_context(format!(
                "application name {application:?} (characters A-Z a-z 0-9 _ . -, \
                 at most 243 so that {application}_checkpoints fits 255)"
            )));
        }
        Ok(Names {
            stream: stream.to_owned(),
            clients: format!("{application}_clients"),
            checkpoints,
            metadata: format!("{application}_metadata"),
        })
    }

    fn tables(&self) -> [(&str, &'static str); 3] {
        [
            (&self.clients, "ID"),
            (&self.checkpoints, "Shard"),
            (&self.metadata, "Key"),
        ]
    }
}

/// How long to wait for a table to become active or disappear.
pub(crate) fn waiter_deadline(config: &Config) -> Duration {
    config
        .dynamo_waiter_delay()
        .saturating_mul(100)
        .max(Duration::from_secs(60))
}

/// Creates any of the three tables that does not exist, then waits until all are ACTIVE.
pub(crate) fn create(bridge: &Bridge, names: &Names, config: &Config) -> Result<()> {
    for (table, key) in names.tables() {
        let mut req = bridge
            .dynamodb()
            .create_table()
            .table_name(table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(key)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| Error::new(ErrorKind::Internal).with_source(e))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(key)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| Error::new(ErrorKind::Internal).with_source(e))?,
            );
        req = match config.billing_mode() {
            BillingMode::OnDemand => req.billing_mode(DynamoBilling::PayPerRequest),
            BillingMode::Provisioned => req
                .billing_mode(DynamoBilling::Provisioned)
                .provisioned_throughput(
                    ProvisionedThroughput::builder()
                        .read_capacity_units(config.dynamo_read_capacity())
                        .write_capacity_units(config.dynamo_write_capacity())
                        .build()
                        .map_err(|e| Error::new(ErrorKind::Internal).with_source(e))?,
                ),
        };
        match bridge.block_on(req) {
            Ok(_) => log::info!("created table {table}"),
            Err(e) if retry::code(&e) == Some("ResourceInUseException") => {
                log::debug!("table {table} already exists")
            }
            Err(e) => return Err(Error::aws(format!("creating table {table}"), e)),
        }
    }
    for (table, key) in names.tables() {
        wait_for(bridge, table, config, true)?;
        check_schema(bridge, table, key)?;
    }
    Ok(())
}

/// Fails unless `table` is keyed by the string hash key `key` alone, as the Go library
/// made it: a table of the right name but another shape would fail every later call.
fn check_schema(bridge: &Bridge, table: &str, key: &str) -> Result<()> {
    let out = bridge
        .block_on(bridge.dynamodb().describe_table().table_name(table))
        .map_err(|e| Error::aws(format!("describing table {table}"), e))?;
    let Some(t) = out.table else {
        return Err(Error::new(ErrorKind::TableNotFound).with_context(format!("table {table}")));
    };
    let keys: Vec<(String, KeyType)> = t
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
        .collect();
    let string_typed = t
        .attribute_definitions()
        .iter()
        .any(|d| d.attribute_name() == key && *d.attribute_type() == ScalarAttributeType::S);
    if keys == [(key.to_owned(), KeyType::Hash)] && string_typed {
        return Ok(());
    }
    // Each key with its role and its attribute type: "Shard (HASH, type N)".
    let type_of = |name: &str| {
        t.attribute_definitions()
            .iter()
            .find(|d| d.attribute_name() == name)
            .map_or("?", |d| d.attribute_type().as_str())
            .to_owned()
    };
    let found: Vec<String> = keys
        .iter()
        .map(|(name, kind)| format!("{name} ({}, type {})", kind.as_str(), type_of(name)))
        .collect();
    Err(Error::new(ErrorKind::TableSchema).with_context(format!(
        "table {table} is keyed by {}, not by the string (type S) hash key {key} alone",
        found.join(" + ")
    )))
}

/// Deletes the three tables (those that exist), then waits until they are gone.
pub(crate) fn delete(bridge: &Bridge, names: &Names, config: &Config) -> Result<()> {
    for (table, _) in names.tables() {
        match bridge.block_on(bridge.dynamodb().delete_table().table_name(table)) {
            Ok(_) => log::info!("deleting table {table}"),
            Err(e) if retry::code(&e) == Some("ResourceNotFoundException") => {}
            Err(e) => return Err(Error::aws(format!("deleting table {table}"), e)),
        }
    }
    for (table, _) in names.tables() {
        wait_for(bridge, table, config, false)?;
    }
    Ok(())
}

/// The table's status, or `None` if it does not exist.
fn status(bridge: &Bridge, table: &str) -> Result<Option<TableStatus>> {
    match bridge.block_on(bridge.dynamodb().describe_table().table_name(table)) {
        Ok(out) => Ok(out.table.and_then(|t| t.table_status)),
        Err(e) if retry::code(&e) == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(Error::aws(format!("describing table {table}"), e)),
    }
}

/// Polls at the waiter delay until the table is ACTIVE (`present`) or gone (`!present`).
fn wait_for(bridge: &Bridge, table: &str, config: &Config, present: bool) -> Result<()> {
    let deadline = Instant::now() + waiter_deadline(config);
    loop {
        let done = match status(bridge, table)? {
            Some(TableStatus::Active) => present,
            Some(_) => false,
            None => !present,
        };
        if done {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let goal = if present {
                "become active"
            } else {
                "be deleted"
            };
            return Err(Error::new(ErrorKind::Timeout).with_context(format!(
                "waiting {:?} for table {table} to {goal}",
                waiter_deadline(config)
            )));
        }
        std::thread::sleep(config.dynamo_waiter_delay());
    }
}

/// Reads every item of `table` (consistent, following pages), handing each to `each`.
/// `projection` is a projection expression and its one attribute-name placeholder.
pub(crate) fn scan_all(
    bridge: &Bridge,
    table: &str,
    projection: Option<(&str, (&str, &str))>,
    mut each: impl FnMut(HashMap<String, AttributeValue>),
) -> Result<()> {
    let mut start = None;
    loop {
        let mut req = bridge
            .dynamodb()
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take());
        if let Some((expression, (placeholder, name))) = projection {
            req = req
                .projection_expression(expression)
                .expression_attribute_names(placeholder, name);
        }
        let out = bridge
            .block_on(req)
            .map_err(|e| Error::aws(format!("scanning table {table}"), e))?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .for_each(&mut each);
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(()),
        }
    }
}

/// Checks all three tables exist and are ACTIVE or UPDATING, waiting (as
/// `create_required_tables` does) for any that is being created.
pub(crate) fn check_ready(bridge: &Bridge, names: &Names, config: &Config) -> Result<()> {
    let deadline = Instant::now() + waiter_deadline(config);
    for (table, key) in names.tables() {
        loop {
            match status(bridge, table)? {
                Some(TableStatus::Active | TableStatus::Updating) => {
                    check_schema(bridge, table, key)?;
                    break;
                }
                None => {
                    return Err(
                        Error::new(ErrorKind::TableNotFound).with_context(format!("table {table}"))
                    );
                }
                // Another process is creating it: wait, as its creator does.
                Some(TableStatus::Creating) if Instant::now() < deadline => {
                    log::info!("table {table} is being created; waiting");
                    std::thread::sleep(config.dynamo_waiter_delay());
                }
                Some(other) => {
                    return Err(Error::new(ErrorKind::TableNotReady)
                        .with_context(format!("table {table} is {}", other.as_str())));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(stream: &str, app: &str) -> Option<ErrorKind> {
        Names::new(stream, app).err().map(|e| e.kind())
    }

    #[test]
    fn names_follow_the_aws_rules() {
        assert_eq!(kind("", "app"), Some(ErrorKind::NoStreamName));
        assert_eq!(kind("s", ""), Some(ErrorKind::NoApplicationName));
        assert_eq!(kind("bad name", "app"), Some(ErrorKind::InvalidName));
        assert_eq!(kind(&"s".repeat(129), "app"), Some(ErrorKind::InvalidName));
        assert_eq!(kind("s", "app/x"), Some(ErrorKind::InvalidName));
        assert_eq!(kind("s", "ünï"), Some(ErrorKind::InvalidName));
        assert_eq!(kind("s", &"a".repeat(244)), Some(ErrorKind::InvalidName));
        assert_eq!(kind("s", &"a".repeat(243)), None);
        assert_eq!(kind(&"s".repeat(128), "a"), None);
        // Stream ARNs: well formed, or an InvalidArn before any call.
        let arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders";
        assert_eq!(kind(arn, "app"), None);
        assert_eq!(
            kind("arn:aws-cn:kinesis:cn-north-1:123456789012:stream/o", "a"),
            None
        );
        for bad in [
            "arn:aws:kinesis:eu-west-1:1234:stream/orders",
            "arn:aws:sqs:eu-west-1:123456789012:stream/orders",
            "arn:aws:kinesis:eu-west-1:123456789012:table/orders",
            "arn:aws:kinesis:eu-west-1:123456789012:stream/",
            "arn:aws:kinesis:eu-west-1:123456789012:stream/bad name",
            "arn:aws:kinesis::123456789012:stream/orders",
            "arn:",
        ] {
            assert_eq!(kind(bad, "app"), Some(ErrorKind::InvalidArn), "{bad}");
        }
        assert_eq!(crate::stream::name_of(arn), "orders");
        assert_eq!(crate::stream::name_of("orders"), "orders");
        let names = Names::new("my-stream.1", "my_app").unwrap();
        assert_eq!(names.clients, "my_app_clients");
        assert_eq!(names.checkpoints, "my_app_checkpoints");
        assert_eq!(names.metadata, "my_app_metadata");
    }
}
