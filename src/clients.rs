//! The `<app>_clients` table: who is in the fleet.
//!
//! Each client puts its row (`ID`, `Name`, `LastUpdate` ns, `LastUpdateRFC`) at start and
//! at every shard check, and deletes it on a clean stop. A row older than the lease TTL
//! (5 × shard check frequency) belongs to a client that is gone.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::bridge::Bridge;
use crate::checkpoints::Owner;
use crate::clock;
use crate::error::{Error, Result};

/// Puts (or refreshes) this client's row.
pub(crate) fn register(bridge: &Bridge, table: &str, me: &Owner) -> Result<()> {
    let now = clock::now_nanos();
    bridge
        .block_on(
            bridge
                .dynamodb()
                .put_item()
                .table_name(table)
                .item("ID", AttributeValue::S(me.id.clone()))
                .item("Name", AttributeValue::S(me.name.clone()))
                .item("LastUpdate", AttributeValue::N(now.to_string()))
                .item("LastUpdateRFC", AttributeValue::S(clock::rfc3339(now)))
                .send(),
        )
        .map(|_| ())
        .map_err(|e| {
            Error::aws(
                format!("registering client {} in table {table}", me.name),
                e,
            )
        })
}

/// Deletes this client's row.
pub(crate) fn deregister(bridge: &Bridge, table: &str, me: &Owner) -> Result<()> {
    bridge
        .block_on(
            bridge
                .dynamodb()
                .delete_item()
                .table_name(table)
                .key("ID", AttributeValue::S(me.id.clone()))
                .send(),
        )
        .map(|_| ())
        .map_err(|e| {
            Error::aws(
                format!("deregistering client {} from table {table}", me.name),
                e,
            )
        })
}

/// The ids of the clients whose rows are fresher than `ttl`, sorted.
pub(crate) fn live(bridge: &Bridge, table: &str, ttl: Duration) -> Result<Vec<String>> {
    let cutoff = clock::cutoff_nanos(ttl);
    let mut ids = Vec::new();
    let mut start = None;
    loop {
        let out = bridge
            .block_on(
                bridge
                    .dynamodb()
                    .scan()
                    .table_name(table)
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send(),
            )
            .map_err(|e| Error::aws(format!("scanning table {table}"), e))?;
        for item in out.items.unwrap_or_default() {
            let fresh = match item.get("LastUpdate") {
                Some(AttributeValue::N(v)) => v.parse::<i64>().is_ok_and(|t| t > cutoff),
                _ => false,
            };
            if let (true, Some(AttributeValue::S(id))) = (fresh, item.get("ID")) {
                ids.push(id.clone());
            }
        }
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    ids.sort_unstable();
    Ok(ids)
}
