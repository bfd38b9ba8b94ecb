//! A "Go-like" client for mixed-fleet tests: it treats the tables as the Go library does —
//! a client row without the scheme mark, the Go assignment (the shard at position `i` of
//! the `ShardCache` list goes to the live client at position `i mod n`, clients sorted by
//! `ID`), conditional lease capture, a checkpoint on hand-out, release when a shard moves
//! away or on stop — written directly against the SDK, independent of the crate's code.

use std::collections::HashMap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_kinesis::types::ShardIteratorType;
use crossbeam_channel::{RecvTimeoutError, Sender};

use super::{Deliveries, Env, TestResult};

type Ddb = aws_sdk_dynamodb::Client;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A running Go-like client.
pub struct GoLike {
    pub id: String,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl GoLike {
    /// Starts a client with id `id` that logs its deliveries as `(index, data)`, checking
    /// the fleet every `check` and reading its shards every 200 ms.
    pub fn start(env: &Env, index: usize, id: &str, check: Duration, log: Deliveries) -> GoLike {
        let mut client = Client {
            kinesis: aws_sdk_kinesis::Client::from_conf(env.kinesis.config().clone()),
            dynamodb: Ddb::from_conf(env.dynamodb.config().clone()),
            stream: env.stream.clone(),
            app: env.app.clone(),
            id: id.to_owned(),
            index,
            check,
            log,
            held: HashMap::new(),
            owned: Vec::new(),
        };
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let mut next_check = Instant::now();
            loop {
                if Instant::now() >= next_check {
                    rt.block_on(client.membership())
                        .map_err(|e| format!("go-like: {e}"))?;
                    next_check = Instant::now() + client.check;
                }
                rt.block_on(client.read_all())
                    .map_err(|e| format!("go-like: {e}"))?;
                match stopped.recv_timeout(Duration::from_millis(200)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            rt.block_on(client.leave())
                .map_err(|e| format!("go-like: {e}"))
        });
        GoLike {
            id: id.to_owned(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Leaves cleanly: releases every lease with its checkpoint, deletes its row.
    pub fn stop(mut self) -> TestResult {
        self.stop.take();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result.map_err(Into::into),
            _ => Err("go-like thread panicked".into()),
        }
    }
}

impl Drop for GoLike {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A held lease: where reading goes on from.
struct Held {
    seq: Option<String>,
    iterator: Option<String>,
}

struct Client {
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: Ddb,
    stream: String,
    app: String,
    id: String,
    index: usize,
    check: Duration,
    log: Deliveries,
    held: HashMap<String, Held>,
    /// The shards the Go assignment gives this client.
    owned: Vec<String>,
}

impl Client {
    fn table(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.app)
    }

    /// Heartbeat, client list, shard cache, assignment; releases shards that moved away.
    async fn membership(&mut self) -> TestResult {
        let now = now_ns();
        self.dynamodb
            .put_item()
            .table_name(self.table("clients"))
            .item("ID", s(&self.id))
            .item("Name", s("go-like"))
            .item("LastUpdate", n(now))
            .item("LastUpdateRFC", s("2026-11-26T00:00:00Z"))
            .send()
            .await?;
        let cutoff = now - 5 * self.check.as_nanos() as i64;
        let rows = self
            .dynamodb
            .scan()
            .table_name(self.table("clients"))
            .consistent_read(true)
            .send()
            .await?;
        let mut live: Vec<String> = rows
            .items()
            .iter()
            .filter(|r| matches!(r.get("LastUpdate"), Some(AttributeValue::N(t)) if t.parse::<i64>().unwrap_or(0) > cutoff))
            .filter_map(|r| match r.get("ID") {
                Some(AttributeValue::S(id)) => Some(id.clone()),
                _ => None,
            })
            .collect();
        live.sort_unstable();
        let me = live
            .iter()
            .position(|c| *c == self.id)
            .ok_or("not in the client list")?;
        let cache = self
            .dynamodb
            .get_item()
            .table_name(self.table("metadata"))
            .key("Key", s("ShardCache"))
            .consistent_read(true)
            .send()
            .await?;
        let shards: Vec<String> = match cache.item().and_then(|i| i.get("ShardIDs")) {
            Some(AttributeValue::L(list)) => {
                list.iter().filter_map(|v| v.as_s().ok().cloned()).collect()
            }
            _ => Vec::new(),
        };
        self.owned = shards.into_iter().skip(me).step_by(live.len()).collect();
        let moved: Vec<String> = self
            .held
            .keys()
            .filter(|k| !self.owned.contains(k))
            .cloned()
            .collect();
        for shard in moved {
            self.release(&shard).await?;
        }
        for shard in self.held.keys() {
            // Heartbeat (the Go library only writes when the checkpoint moves).
            self.owned_write(shard, None, false).await?;
        }
        Ok(())
    }

    /// Captures the owned shards not held yet, then reads each held shard once.
    async fn read_all(&mut self) -> TestResult {
        for shard in self.owned.clone() {
            if !self.held.contains_key(&shard) {
                self.capture(&shard).await?;
            }
        }
        let shards: Vec<String> = self.held.keys().cloned().collect();
        for shard in shards {
            self.read(&shard).await?;
        }
        Ok(())
    }

    async fn capture(&mut self, shard: &str) -> TestResult {
        let now = now_ns();
        let cutoff = now - 5 * self.check.as_nanos() as i64;
        let out = self
            .dynamodb
            .update_item()
            .table_name(self.table("checkpoints"))
            .key("Shard", s(shard))
            .update_expression("SET OwnerID = :me, OwnerName = :name, LastUpdate = :now")
            .condition_expression(
                "attribute_not_exists(OwnerID) OR attribute_type(OwnerID, :null) \
                 OR OwnerID = :me OR LastUpdate < :cutoff",
            )
            .expression_attribute_values(":me", s(&self.id))
            .expression_attribute_values(":name", s("go-like"))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":null", s("NULL"))
            .expression_attribute_values(":cutoff", n(cutoff))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let item = match out {
            Ok(out) => out.attributes.unwrap_or_default(),
            // Held by another client: try again on the next round.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if item.contains_key("Finished") {
            self.held.insert(
                shard.to_owned(),
                Held {
                    seq: None,
                    iterator: None,
                },
            );
            return self.release(shard).await;
        }
        let seq = match item.get("SequenceNumber") {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        };
        self.held.insert(
            shard.to_owned(),
            Held {
                seq,
                iterator: None,
            },
        );
        Ok(())
    }

    async fn read(&mut self, shard: &str) -> TestResult {
        let Some(held) = self.held.get(shard) else {
            return Ok(());
        };
        let iterator = match &held.iterator {
            Some(it) => it.clone(),
            None => {
                let req = self
                    .kinesis
                    .get_shard_iterator()
                    .stream_name(&self.stream)
                    .shard_id(shard);
                let req = match &held.seq {
                    Some(seq) => req
                        .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                        .starting_sequence_number(seq),
                    None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
                };
                req.send().await?.shard_iterator.ok_or("no iterator")?
            }
        };
        let out = self
            .kinesis
            .get_records()
            .shard_iterator(iterator)
            .limit(1000)
            .send()
            .await?;
        let last = out.records().last().map(|r| r.sequence_number().to_owned());
        {
            // Hand-out, then checkpoint at once: the Go library's order.
            let mut log = self.log.lock();
            for r in out.records() {
                log.push((
                    self.index,
                    String::from_utf8_lossy(r.data().as_ref()).into_owned(),
                ));
            }
        }
        if let Some(seq) = &last
            && !self.owned_write(shard, Some(seq), false).await?
        {
            self.held.remove(shard);
            return Ok(());
        }
        let ended = out.next_shard_iterator.is_none();
        if let Some(h) = self.held.get_mut(shard) {
            if last.is_some() {
                h.seq = last;
            }
            h.iterator = out.next_shard_iterator;
        }
        if ended {
            self.owned_write(shard, None, true).await?;
            self.held.remove(shard);
        }
        Ok(())
    }

    /// A write conditional on owning the row: heartbeat, checkpoint, or (with `finish`)
    /// Finished + release. `false` if the lease was lost.
    async fn owned_write(&self, shard: &str, seq: Option<&str>, finish: bool) -> TestResult<bool> {
        let now = now_ns();
        let mut set = "SET LastUpdate = :now".to_owned();
        let mut req = self
            .dynamodb
            .update_item()
            .table_name(self.table("checkpoints"))
            .key("Shard", s(shard))
            .condition_expression("OwnerID = :me")
            .expression_attribute_values(":me", s(&self.id))
            .expression_attribute_values(":now", n(now));
        if let Some(seq) = seq {
            set.push_str(", SequenceNumber = :seq");
            req = req.expression_attribute_values(":seq", s(seq));
        }
        if finish {
            set.push_str(", Finished = :now, OwnerID = :null");
            req = req.expression_attribute_values(":null", AttributeValue::Null(true));
        }
        match req.update_expression(set).send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn release(&mut self, shard: &str) -> TestResult {
        self.held.remove(shard);
        self.dynamodb
            .update_item()
            .table_name(self.table("checkpoints"))
            .key("Shard", s(shard))
            .update_expression("SET OwnerID = :null, LastUpdate = :now")
            .condition_expression("OwnerID = :me")
            .expression_attribute_values(":me", s(&self.id))
            .expression_attribute_values(":null", AttributeValue::Null(true))
            .expression_attribute_values(":now", n(now_ns()))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| match e.as_service_error() {
                Some(se) if se.is_conditional_check_failed_exception() => Ok(()),
                _ => Err(e.into()),
            })
    }

    async fn leave(&mut self) -> TestResult {
        let shards: Vec<String> = self.held.keys().cloned().collect();
        for shard in shards {
            self.release(&shard).await?;
        }
        self.dynamodb
            .delete_item()
            .table_name(self.table("clients"))
            .key("ID", s(&self.id))
            .send()
            .await?;
        Ok(())
    }
}
