//! The `<app>_clients` table: who is in the fleet.
//!
//! Each client puts its row (`ID`, `Name`, `LastUpdate` ns, `LastUpdateRFC`) at start and
//! at every shard check, and deletes it on a clean stop. A row that has not changed for
//! the lease TTL (5 × shard check frequency), as this client observes it
//! ([`Liveness`]), belongs to a client that is gone.
//!
//! Rust clients add [`SCHEME_ATTRIBUTE`] to their row; the Go library ignores attributes
//! it does not know, so a live row without it is a Go client's (see
//! [`AssignmentMode`](crate::AssignmentMode)).

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::bridge::Bridge;
use crate::checkpoints::Owner;
use crate::clock;
use crate::error::{Error, Result};
use crate::liveness::Liveness;
use crate::tables;

/// The attribute that marks a Rust client's row, and its value: the assignment scheme
/// the client speaks.
pub(crate) const SCHEME_ATTRIBUTE: &str = "AssignmentScheme";
const SCHEME: &str = "rendezvous";

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
                .item(SCHEME_ATTRIBUTE, AttributeValue::S(SCHEME.to_owned()))
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
    delete(bridge, table, &me.id).map_err(|e| {
        e.with_context(format!(
            "deregistering client {} from table {table}",
            me.name
        ))
    })
}

/// Deletes the row of client `id`.
pub(crate) fn delete(bridge: &Bridge, table: &str, id: &str) -> Result<()> {
    bridge
        .block_on(
            bridge
                .dynamodb()
                .delete_item()
                .table_name(table)
                .key("ID", AttributeValue::S(id.to_owned()))
                .send(),
        )
        .map(|_| ())
        .map_err(|e| Error::aws(format!("deleting client {id} from table {table}"), e))
}

/// The clients table as seen by one scan.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    /// Ids of the clients whose rows are fresher than the TTL, sorted.
    pub(crate) live: Vec<String>,
    /// Those of them whose rows lack the scheme mark: Go clients.
    pub(crate) go: Vec<String>,
    /// Ids of rows not updated for [`ANCIENT`]: the leader deletes them.
    pub(crate) ancient: Vec<String>,
}

/// Rows this old belong to clients that will not come back.
pub(crate) const ANCIENT: Duration = Duration::from_secs(48 * 3600);

/// Reads every client row (consistent, paginated scan), telling `liveness` which
/// clients are gone.
pub(crate) fn scan(
    bridge: &Bridge,
    table: &str,
    ttl: Duration,
    liveness: &Liveness,
) -> Result<Clients> {
    let ancient = clock::cutoff_nanos(ANCIENT);
    let mut clients = Clients::default();
    let mut dead = std::collections::HashSet::new();
    tables::scan_all(bridge, table, None, |item| {
        let Some(AttributeValue::S(id)) = item.get("ID") else {
            return;
        };
        let updated = match item.get("LastUpdate") {
            Some(AttributeValue::N(v)) => v.parse::<i64>().unwrap_or(0),
            _ => 0,
        };
        if !liveness.is_stale(&format!("client/{id}"), None, updated, ttl) {
            clients.live.push(id.clone());
            if !matches!(item.get(SCHEME_ATTRIBUTE), Some(AttributeValue::S(v)) if v == SCHEME) {
                clients.go.push(id.clone());
            }
        } else {
            dead.insert(id.clone());
            if updated < ancient {
                clients.ancient.push(id.clone());
            }
        }
    })?;
    clients.live.sort_unstable();
    liveness.set_dead_clients(dead);
    Ok(clients)
}
