//! The `<app>_metadata` table: the fleet's leader and its shared shard list.
//!
//! Item `Leader` (`ID`, `Name`, `LastUpdate` ns, `LastUpdateRFC`) is held by conditional
//! put — it succeeds if the item has no ID, is ours, or is stale as this client observes
//! it ([`Liveness`]) — and refreshed at every shard check. Item `ShardCache` (`ShardIDs`: sorted list of strings, `LastUpdate`,
//! `LastUpdateRFC`) is written by the leader and read by every client, so all clients
//! assign from the same shard list without each calling ListShards. Item
//! `AssignmentMode` (`Mode`: `go` or `rendezvous`, `LastUpdate`, `LastUpdateRFC`) is this
//! crate's own (the Go library ignores it): the leader's word on which assignment scheme
//! the fleet uses (see [`AssignmentMode`](crate::AssignmentMode)). Item `LoadPlan`
//! (`Moves`: a map of shard id to client id, `Settling`, `LastUpdate`, `LastUpdateRFC`) is this
//! crate's own too: the leader's moves off the count-balanced assignment, by load (see
//! [`balance`](crate::balance)).

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::balance::{Moves, Plan};
use crate::bridge::Bridge;
use crate::checkpoints::Owner;
use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::liveness::{self, Liveness, Version};
use crate::retry;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

/// DynamoDB's item size limit is 400 KB; stay clear of it.
const MAX_CACHE_BYTES: usize = 390 * 1024;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

/// Takes or keeps the leadership. `Ok(false)` if another live client holds it. The
/// holder's row is judged stale by `liveness` (on this client's clock), and taken only
/// if it still has the version observed as stale.
pub(crate) fn claim_leadership(
    bridge: &Bridge,
    table: &str,
    me: &Owner,
    ttl: Duration,
    liveness: &Liveness,
) -> Result<bool> {
    let mut stale: Option<Version> = None;
    loop {
        let req = claim_request(bridge, table, me, ttl, stale.as_ref());
        let asked = Instant::now();
        match bridge.block_on(req) {
            Ok(_) => return Ok(true),
            Err(e) if retry::code(&e) == Some("ConditionalCheckFailedException") => {
                match holder_version(&e) {
                    Some(v)
                        if stale.is_none()
                            && (liveness.is_stale(
                                "leader",
                                Some(&v.owner),
                                v.last_update,
                                ttl,
                                asked,
                            ) || liveness.is_dead(&v.owner)) =>
                    {
                        stale = Some(v);
                    }
                    _ => return Ok(false),
                }
            }
            Err(e) => {
                return Err(Error::aws(
                    format!("claiming the leadership in table {table}"),
                    e,
                ));
            }
        }
    }
}

/// The conditional write of [`claim_leadership`]: free, ours, ancient, or still the
/// `stale` version this client saw go stale.
fn claim_request(
    bridge: &Bridge,
    table: &str,
    me: &Owner,
    ttl: Duration,
    stale: Option<&Version>,
) -> aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder {
    let now = clock::now_nanos();
    let mut condition = String::from(
        "attribute_not_exists(#id) OR attribute_type(#id, :null) OR #id = :me OR LastUpdate < :cutoff",
    );
    let mut req = bridge
        .dynamodb()
        .put_item()
        .table_name(table)
        .item("Key", s("Leader"))
        .item("ID", s(&me.id))
        .item("Name", s(&me.name))
        .item("LastUpdate", AttributeValue::N(now.to_string()))
        .item("LastUpdateRFC", s(&clock::rfc3339(now)))
        .expression_attribute_names("#id", "ID")
        .expression_attribute_values(":me", s(&me.id))
        .expression_attribute_values(":null", s("NULL"))
        .expression_attribute_values(
            ":cutoff",
            AttributeValue::N(liveness::ancient_cutoff(ttl).to_string()),
        )
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    if let Some(v) = stale {
        condition.push_str(" OR (#id = :seenid AND LastUpdate = :seenlast)");
        req = req
            .expression_attribute_values(":seenid", s(&v.owner))
            .expression_attribute_values(":seenlast", AttributeValue::N(v.last_update.to_string()));
    }
    req.condition_expression(condition)
}

/// The leader item's holder and `LastUpdate`, from a refused claim's old item.
fn holder_version(e: &aws_sdk_dynamodb::error::SdkError<PutItemError>) -> Option<Version> {
    let item = e.as_service_error().and_then(|se| match se {
        PutItemError::ConditionalCheckFailedException(c) => c.item.as_ref(),
        _ => None,
    })?;
    match (item.get("ID"), item.get("LastUpdate")) {
        (Some(AttributeValue::S(id)), Some(AttributeValue::N(t))) => Some(Version {
            owner: id.clone(),
            last_update: t.parse().ok()?,
        }),
        _ => None,
    }
}

/// Gives the leadership up, if it is ours.
pub(crate) fn resign(bridge: &Bridge, table: &str, me: &Owner) -> Result<()> {
    let req = bridge
        .dynamodb()
        .delete_item()
        .table_name(table)
        .key("Key", s("Leader"))
        .condition_expression("#id = :me")
        .expression_attribute_names("#id", "ID")
        .expression_attribute_values(":me", s(&me.id));
    match bridge.block_on(req) {
        Ok(_) => Ok(()),
        Err(e) if retry::code(&e) == Some("ConditionalCheckFailedException") => Ok(()),
        Err(e) => Err(Error::aws(
            format!("resigning the leadership in table {table}"),
            e,
        )),
    }
}

/// The `Leader` item as a tool sees it: holder id, name, and time since its last write.
pub(crate) fn leader(bridge: &Bridge, table: &str) -> Result<Option<(String, String, Duration)>> {
    Ok(read_item(bridge, table, "Leader")?.and_then(|item| {
        let id = match item.get("ID") {
            Some(AttributeValue::S(id)) => id.clone(),
            _ => return None,
        };
        let name = match item.get("Name") {
            Some(AttributeValue::S(n)) => n.clone(),
            _ => String::new(),
        };
        Some((id, name, age_of(&item)?))
    }))
}

/// Time since the `ShardCache` item was written, if there is one.
pub(crate) fn shard_cache_age(bridge: &Bridge, table: &str) -> Result<Option<Duration>> {
    Ok(read_item(bridge, table, "ShardCache")?.and_then(|item| age_of(&item)))
}

/// Now minus an item's `LastUpdate` (Unix ns), by this machine's clock.
fn age_of(item: &std::collections::HashMap<String, AttributeValue>) -> Option<Duration> {
    let Some(AttributeValue::N(v)) = item.get("LastUpdate") else {
        return None;
    };
    let then: i64 = v.parse().ok()?;
    let age = clock::now_nanos().saturating_sub(then);
    Some(Duration::from_nanos(u64::try_from(age).unwrap_or(0)))
}

/// The item with key `key`, if there is one.
pub(crate) fn read_item(
    bridge: &Bridge,
    table: &str,
    key: &str,
) -> Result<Option<std::collections::HashMap<String, AttributeValue>>> {
    bridge
        .block_on(
            bridge
                .dynamodb()
                .get_item()
                .table_name(table)
                .key("Key", s(key))
                .consistent_read(true),
        )
        .map(|out| out.item)
        .map_err(|e| Error::aws(format!("reading item {key} in table {table}"), e))
}

/// Deletes the shard cache: clients list the shards themselves until the leader
/// publishes it again.
pub(crate) fn delete_shard_cache(bridge: &Bridge, table: &str) -> Result<()> {
    bridge
        .block_on(
            bridge
                .dynamodb()
                .delete_item()
                .table_name(table)
                .key("Key", s("ShardCache")),
        )
        .map(|_| ())
        .map_err(|e| Error::aws(format!("deleting the shard cache in table {table}"), e))
}

/// The metadata item clients bump when they join or leave (this crate's own; the Go
/// library ignores it).
const FLEET_CHANGE: &str = "FleetChange";

/// Tells the fleet that this client joined or left: bumps `FleetChange.Epoch`, which
/// every client polls between shard checks, so shards move in about a second instead of
/// at the next shard check.
pub(crate) fn announce_fleet_change(bridge: &Bridge, table: &str) -> Result<()> {
    let now = clock::now_nanos();
    bridge
        .block_on(
            bridge
                .dynamodb()
                .update_item()
                .table_name(table)
                .key("Key", s(FLEET_CHANGE))
                .update_expression(
                    "SET Epoch = if_not_exists(Epoch, :zero) + :one, LastUpdate = :now, \
                     LastUpdateRFC = :rfc",
                )
                .expression_attribute_values(":zero", AttributeValue::N("0".into()))
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .expression_attribute_values(":rfc", s(&clock::rfc3339(now))),
        )
        .map(|_| ())
        .map_err(|e| Error::aws(format!("announcing a fleet change in table {table}"), e))
}

/// The fleet-change epoch (`None` before any client announced one).
pub(crate) fn fleet_epoch(bridge: &Bridge, table: &str) -> Result<Option<i64>> {
    Ok(
        match read_item(bridge, table, FLEET_CHANGE)?
            .as_ref()
            .and_then(|i| i.get("Epoch"))
        {
            Some(AttributeValue::N(n)) => n.parse().ok(),
            _ => None,
        },
    )
}

/// The shard ids the leader last published, if it has.
pub(crate) fn read_shard_cache(bridge: &Bridge, table: &str) -> Result<Option<Vec<String>>> {
    let out = bridge
        .block_on(
            bridge
                .dynamodb()
                .get_item()
                .table_name(table)
                .key("Key", s("ShardCache"))
                .consistent_read(true),
        )
        .map_err(|e| Error::aws(format!("reading the shard cache in table {table}"), e))?;
    let Some(item) = out.item else {
        return Ok(None);
    };
    match item.get("ShardIDs") {
        Some(AttributeValue::L(list)) => Ok(Some(
            list.iter()
                .filter_map(|v| match v {
                    AttributeValue::S(id) => Some(id.clone()),
                    _ => None,
                })
                .collect(),
        )),
        // A Go writer may store a string set.
        Some(AttributeValue::Ss(set)) => {
            let mut ids = set.clone();
            ids.sort_unstable();
            Ok(Some(ids))
        }
        _ => Ok(None),
    }
}

/// Publishes the shard list (sorted here).
///
/// # Errors
///
/// An AWS failure, or [`ErrorKind::Internal`] if the list would not fit one DynamoDB
/// item (about 17,000 shard ids of the usual 20 characters): the cache item is then
/// deleted, so that no client goes on assigning from a stale list, and every client
/// falls back to ListShards.
pub(crate) fn write_shard_cache(bridge: &Bridge, table: &str, ids: &[String]) -> Result<()> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let bytes = cache_item_bytes(&sorted);
    if bytes > MAX_CACHE_BYTES {
        delete_shard_cache(bridge, table)?;
        return Err(Error::new(ErrorKind::Internal).with_context(format!(
            "writing the shard cache in table {table}: {} shard ids take ~{bytes} bytes, over the \
             {MAX_CACHE_BYTES}-byte item budget",
            sorted.len()
        )));
    }
    let ids = AttributeValue::L(sorted.iter().map(|id| s(id)).collect());
    put_stamped(
        bridge,
        table,
        "ShardCache",
        [("ShardIDs", ids)],
        "the shard cache",
    )
}

/// Puts the item `key` with `attributes` and `LastUpdate`/`LastUpdateRFC` of now.
fn put_stamped<const N: usize>(
    bridge: &Bridge,
    table: &str,
    key: &str,
    attributes: [(&str, AttributeValue); N],
    what: &str,
) -> Result<()> {
    let now = clock::now_nanos();
    let mut req = bridge
        .dynamodb()
        .put_item()
        .table_name(table)
        .item("Key", s(key))
        .item("LastUpdate", AttributeValue::N(now.to_string()))
        .item("LastUpdateRFC", s(&clock::rfc3339(now)));
    for (name, value) in attributes {
        req = req.item(name, value);
    }
    bridge
        .block_on(req)
        .map(|_| ())
        .map_err(|e| Error::aws(format!("writing {what} in table {table}"), e))
}

/// The fleet's assignment scheme, as the leader (or a client that saw a Go client)
/// last wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchemeWord {
    /// A Go client is (or was just) live: use the Go library's scheme.
    Go,
    /// No Go client is live: use the crate's own scheme.
    Rendezvous,
}

impl SchemeWord {
    fn as_str(self) -> &'static str {
        match self {
            SchemeWord::Go => "go",
            SchemeWord::Rendezvous => "rendezvous",
        }
    }
}

/// The scheme word, if one was written.
pub(crate) fn read_scheme(bridge: &Bridge, table: &str) -> Result<Option<SchemeWord>> {
    let item = read_item(bridge, table, "AssignmentMode")?;
    Ok(match item.as_ref().and_then(|i| i.get("Mode")) {
        Some(AttributeValue::S(m)) if m == "go" => Some(SchemeWord::Go),
        Some(AttributeValue::S(m)) if m == "rendezvous" => Some(SchemeWord::Rendezvous),
        _ => None,
    })
}

/// Writes the scheme word.
pub(crate) fn write_scheme(bridge: &Bridge, table: &str, word: SchemeWord) -> Result<()> {
    put_stamped(
        bridge,
        table,
        "AssignmentMode",
        [("Mode", s(word.as_str()))],
        "the assignment mode",
    )
}

/// An upper estimate of the cache item's size as DynamoDB counts it: attribute names and
/// values, plus a few bytes of overhead per list element.
fn cache_item_bytes(ids: &[String]) -> usize {
    let fixed = "Key".len() + "ShardCache".len() + "ShardIDs".len() + 64 + 64;
    fixed + ids.iter().map(|id| id.len() + 3).sum::<usize>()
}

/// The metadata item of the leader's load-balancing moves.
const LOAD_PLAN: &str = "LoadPlan";

/// The leader's plan ([`balance`](crate::balance)); none if it wrote none. Entries
/// that are not strings are skipped.
pub(crate) fn read_plan(bridge: &Bridge, table: &str) -> Result<Plan> {
    let item = read_item(bridge, table, LOAD_PLAN)?;
    let settling = matches!(
        item.as_ref().and_then(|i| i.get("Settling")),
        Some(AttributeValue::Bool(true))
    );
    let moves = match item.as_ref().and_then(|i| i.get("Moves")) {
        Some(AttributeValue::M(m)) => m
            .iter()
            .filter_map(|(shard, client)| match client {
                AttributeValue::S(c) => Some((shard.clone(), c.clone())),
                _ => None,
            })
            .collect(),
        _ => Moves::new(),
    };
    Ok(Plan { moves, settling })
}

/// Writes the leader's plan (an empty map when there are no moves, so a client reading
/// it knows the fleet balances by count alone).
pub(crate) fn write_plan(bridge: &Bridge, table: &str, plan: &Plan) -> Result<()> {
    let moves = plan
        .moves
        .iter()
        .map(|(shard, client)| (shard.clone(), s(client)))
        .collect();
    put_stamped(
        bridge,
        table,
        LOAD_PLAN,
        [
            ("Moves", AttributeValue::M(moves)),
            ("Settling", AttributeValue::Bool(plan.settling)),
        ],
        "the load plan",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_thousand_shard_ids_fit_one_item() {
        let ids: Vec<String> = (0..5_000).map(|i| format!("shardId-{i:012}")).collect();
        assert!(cache_item_bytes(&ids) < MAX_CACHE_BYTES / 3);
        let huge: Vec<String> = (0..20_000).map(|i| format!("shardId-{i:012}")).collect();
        assert!(cache_item_bytes(&huge) > MAX_CACHE_BYTES);
    }
}
