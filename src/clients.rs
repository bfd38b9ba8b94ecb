//! The `<app>_clients` table: who is in the fleet.
//!
//! Each client puts its row (`ID`, `Name`, `LastUpdate` ns, `LastUpdateRFC`,
//! [`FAILOVER_ATTRIBUTE`]) at start and every fifth of its failover time
//! ([`membership`](crate::membership)), and deletes it on a clean stop. A row that has not
//! changed for the failover time it states — the lease time, 5 × shard check frequency,
//! if it states none — as this client observes it ([`Liveness`]), belongs to a client
//! that is gone.
//!
//! Rust clients add [`SCHEME_ATTRIBUTE`] to their row; the Go library ignores attributes
//! it does not know, so a live row without it is a Go client's (see
//! [`AssignmentMode`](crate::AssignmentMode)).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::bridge::Bridge;
use crate::checkpoints::Owner;
use crate::clock;
use crate::error::{Error, Result};
use crate::liveness::{DeadClient, Liveness};
use crate::tables;

/// The attribute that marks a Rust client's row, and its value: the assignment scheme
/// the client speaks.
pub(crate) const SCHEME_ATTRIBUTE: &str = "AssignmentScheme";
const SCHEME: &str = "rendezvous";

/// The attribute in which a Rust client states its failover time, in milliseconds: how
/// long its row may stay unchanged before it counts as gone. Rows without it (Go
/// clients, earlier versions of this crate) are judged by the lease time.
pub(crate) const FAILOVER_ATTRIBUTE: &str = "FailoverMillis";

/// The put of this client's row, stating `failover` (see [`FAILOVER_ATTRIBUTE`]).
pub(crate) fn put_row(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    me: &Owner,
    failover: Duration,
) -> aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder {
    let now = clock::now_nanos();
    dynamodb
        .put_item()
        .table_name(table)
        .item("ID", AttributeValue::S(me.id.clone()))
        .item("Name", AttributeValue::S(me.name.clone()))
        .item("LastUpdate", AttributeValue::N(now.to_string()))
        .item("LastUpdateRFC", AttributeValue::S(clock::rfc3339(now)))
        .item(SCHEME_ATTRIBUTE, AttributeValue::S(SCHEME.to_owned()))
        .item(
            FAILOVER_ATTRIBUTE,
            AttributeValue::N(failover.as_millis().to_string()),
        )
}

/// Puts (or refreshes) this client's row.
pub(crate) fn register(bridge: &Bridge, table: &str, me: &Owner, failover: Duration) -> Result<()> {
    bridge
        .block_on(put_row(bridge.dynamodb(), table, me, failover))
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

/// Deletes the row of client `id` if it is still the version last written at
/// `last_update`: a client found gone but back since keeps its new row. `Ok(false)` if
/// the row had changed.
pub(crate) fn delete_if_unchanged(
    bridge: &Bridge,
    table: &str,
    id: &str,
    last_update: i64,
) -> Result<bool> {
    let req = bridge
        .dynamodb()
        .delete_item()
        .table_name(table)
        .key("ID", AttributeValue::S(id.to_owned()));
    // A row without a numeric `LastUpdate` (hand-edited) is read as written at 0.
    let req = if last_update == 0 {
        req.condition_expression(
            "attribute_not_exists(LastUpdate) OR NOT attribute_type(LastUpdate, :n)",
        )
        .expression_attribute_values(":n", AttributeValue::S("N".to_owned()))
    } else {
        req.condition_expression("LastUpdate = :seen")
            .expression_attribute_values(":seen", AttributeValue::N(last_update.to_string()))
    };
    match bridge.block_on(req) {
        Ok(_) => Ok(true),
        Err(e) if crate::retry::code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(Error::aws(
            format!("deleting client {id} from table {table}"),
            e,
        )),
    }
}

/// Deletes the row of client `id`.
pub(crate) fn delete(bridge: &Bridge, table: &str, id: &str) -> Result<()> {
    bridge
        .block_on(
            bridge
                .dynamodb()
                .delete_item()
                .table_name(table)
                .key("ID", AttributeValue::S(id.to_owned())),
        )
        .map(|_| ())
        .map_err(|e| Error::aws(format!("deleting client {id} from table {table}"), e))
}

/// The clients table as seen by one scan.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    /// Ids of the clients whose rows are fresher than their failover time, sorted.
    pub(crate) live: Vec<String>,
    /// Those of them whose rows lack the scheme mark: Go clients.
    pub(crate) go: Vec<String>,
    /// Clients found gone, with their rows' `LastUpdate`: the leader deletes the rows,
    /// so clients that start later never count them.
    pub(crate) gone: Vec<(String, i64)>,
}

/// Reads every client row (consistent, paginated scan), telling `liveness` which
/// clients are gone: a row unchanged for the failover time it states, or for `ttl` (the
/// lease time) if it states none.
pub(crate) fn scan(
    bridge: &Bridge,
    table: &str,
    ttl: Duration,
    liveness: &Liveness,
) -> Result<Clients> {
    let mut clients = Clients::default();
    let mut dead = HashMap::new();
    let mut present = HashSet::new();
    let asked = Instant::now();
    tables::scan_all(bridge, table, None, |item| {
        let Some(AttributeValue::S(id)) = item.get("ID") else {
            return;
        };
        present.insert(id.clone());
        let updated = match item.get("LastUpdate") {
            Some(AttributeValue::N(v)) => v.parse::<i64>().unwrap_or(0),
            _ => 0,
        };
        let row_ttl = match item.get(FAILOVER_ATTRIBUTE) {
            Some(AttributeValue::N(v)) => v
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .map_or(ttl, Duration::from_millis),
            _ => ttl,
        };
        if !liveness.is_stale(&format!("client/{id}"), None, updated, row_ttl, asked) {
            clients.live.push(id.clone());
            if !matches!(item.get(SCHEME_ATTRIBUTE), Some(AttributeValue::S(v)) if v == SCHEME) {
                clients.go.push(id.clone());
            }
        } else {
            dead.insert(
                id.clone(),
                DeadClient {
                    last_update: updated,
                    grace: crate::config::membership_margin_for(row_ttl),
                },
            );
            clients.gone.push((id.clone(), updated));
        }
    })?;
    clients.live.sort_unstable();
    // A deleted dead client's leases may not have moved yet: it stays dead here for a
    // few lease times, by when its leases are stale on their own.
    liveness.set_dead_clients(dead, &present, ttl.saturating_mul(4));
    Ok(clients)
}

/// One client row as a tool sees it: id, name, time since its last write (by this
/// machine's clock), and how long the row may stay unchanged before the client counts
/// as gone (its stated failover time, else `ttl`: a Go client's lease time).
pub(crate) fn rows(bridge: &Bridge, table: &str, ttl: Duration) -> Result<Vec<ClientRow>> {
    let mut rows = Vec::new();
    tables::scan_all(bridge, table, None, |item| {
        let Some(AttributeValue::S(id)) = item.get("ID") else {
            return;
        };
        let age = match item.get("LastUpdate") {
            Some(AttributeValue::N(v)) => v.parse::<i64>().ok().map(|then| {
                let age = clock::now_nanos().saturating_sub(then);
                Duration::from_nanos(u64::try_from(age).unwrap_or(0))
            }),
            _ => None,
        }
        .unwrap_or(Duration::MAX);
        let silence = match item.get(FAILOVER_ATTRIBUTE) {
            Some(AttributeValue::N(ms)) => ms.parse().map_or(ttl, Duration::from_millis),
            _ => ttl,
        };
        let name = match item.get("Name") {
            Some(AttributeValue::S(n)) => n.clone(),
            _ => String::new(),
        };
        rows.push(ClientRow {
            id: id.clone(),
            name,
            age,
            silence,
        });
    })?;
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rows)
}

/// See [`rows`].
#[derive(Debug, Clone)]
pub(crate) struct ClientRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) age: Duration,
    pub(crate) silence: Duration,
}
