//! [`Fleet`]: an operator's view of an application's tables — see who reads what and how
//! far behind, free a dead client's lease, rewind checkpoints for a replay. The
//! `kinsumer-ctl` example is a command line over it.
//!
//! Every read and write goes through the same table code the consumers use, and every
//! write is conditional, so a racing client is never overwritten.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::types::ShardIteratorType;

use crate::bridge::{Bridge, ClientConfigs};
use crate::checkpoints;
use crate::config::{Config, InitialPosition};
use crate::error::{Error, ErrorKind, Result};
use crate::metadata;
use crate::stream;
use crate::tables::{self, Names};

/// One shard as [`Fleet::status`] sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShardStatus {
    /// The shard id.
    pub shard_id: String,
    /// Its parent shards (one after a split, two after a merge).
    pub parents: Vec<String>,
    /// The lease holder's client id, if the shard is leased.
    pub owner_id: Option<String>,
    /// The lease holder's client name.
    pub owner_name: Option<String>,
    /// Time since the row was last written (a lease's heartbeat, or the last commit).
    pub lease_age: Option<Duration>,
    /// The checkpointed sequence number: the last record processed.
    pub checkpoint: Option<String>,
    /// How old the checkpointed record is (now minus its arrival time).
    pub checkpoint_age: Option<Duration>,
    /// Whether the shard was read to its end and fully processed.
    pub finished: bool,
    /// How far the checkpoint is behind the shard's tip, as Kinesis reports it for a read
    /// at the checkpoint (`None` when unknown or finished).
    pub millis_behind_latest: Option<i64>,
    /// Why the shard is parked, if it is: it kept failing, and no client reads it until
    /// its row is repaired (a [rewind](Fleet::apply_rewind), a valid `SequenceNumber`,
    /// or removing the row's `Failure` attribute).
    pub failure: Option<String>,
    /// Where a rewound shard will start, if it was rewound and not read since.
    pub start_position: Option<InitialPosition>,
    /// The shard's load as its owner last published it: fetched bytes per second plus
    /// [`RECORD_WEIGHT`](crate::balance::RECORD_WEIGHT) per record, smoothed over about a
    /// minute ([`balance`](crate::balance)).
    pub load: Option<f64>,
    /// The client id the leader moved the shard to, off the count-balanced assignment,
    /// if it did ([`balance`](crate::balance)).
    pub moved_to: Option<String>,
}

impl ShardStatus {
    /// The lease holder as `kinsumer-ctl status` names it: `name (first 8 of its id)`,
    /// or the id alone when it has no client row; `None` if nobody holds the lease.
    pub fn owner_label(&self) -> Option<String> {
        let id = self.owner_id.as_deref()?;
        Some(match &self.owner_name {
            Some(name) => label(name, id),
            None => id.to_owned(),
        })
    }
}

/// A client as operators see it: its name and the start of its id.
fn label(name: &str, id: &str) -> String {
    format!("{name} ({})", id.get(..8).unwrap_or(id))
}

/// One row of the clients table.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientStatus {
    /// The client's unique id.
    pub id: String,
    /// The client's name.
    pub name: String,
    /// Time since its last heartbeat.
    pub age: Duration,
    /// Whether it counts as live: its row written within the failover time it states (5 ×
    /// shard check frequency for Go clients).
    pub live: bool,
    /// How much longer it counts as live without writing again (`None` once it does not).
    pub live_for: Option<Duration>,
}

impl ClientStatus {
    /// `name (first 8 of its id)`, as `kinsumer-ctl status` names clients.
    pub fn label(&self) -> String {
        label(&self.name, &self.id)
    }
}

/// What [`Fleet::status`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FleetStatus {
    /// Every shard the stream lists, in listing order.
    pub shards: Vec<ShardStatus>,
    /// Every client row.
    pub clients: Vec<ClientStatus>,
    /// The leader's id, name and the age of its item.
    pub leader: Option<(String, String, Duration)>,
    /// The age of the shard cache the leader publishes.
    pub shard_cache_age: Option<Duration>,
}

impl FleetStatus {
    /// The fleet's largest lag: the shard whose checkpoint is furthest behind its tip
    /// (of those Kinesis said it for), and by how much (`MillisBehindLatest`).
    pub fn max_lag(&self) -> Option<(&str, i64)> {
        self.shards
            .iter()
            .filter_map(|s| s.millis_behind_latest.map(|ms| (s.shard_id.as_str(), ms)))
            .max_by_key(|(_, ms)| *ms)
    }
}

/// Where [`Fleet::plan_rewind`] moves checkpoints to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RewindTo {
    /// The oldest record each shard still holds.
    TrimHorizon,
    /// Records written from now on: everything written before the rewind is skipped.
    Latest,
    /// Records that arrived at or after this time.
    Time(SystemTime),
}

/// One shard's part of a rewind.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RewindStep {
    /// The shard id.
    pub shard_id: String,
    /// Its checkpoint now (the rewind applies only if it is still this).
    pub from: Option<String>,
    /// Whether it is finished now (a rewind makes it readable again).
    pub finished: bool,
}

/// A rewind to apply with [`Fleet::apply_rewind`]; printing it is the dry run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RewindPlan {
    /// The position every shard of the plan starts from.
    pub to: RewindTo,
    /// The shards it moves.
    pub steps: Vec<RewindStep>,
}

/// What [`Fleet::release`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Released {
    /// The lease was freed; it had been held by this client.
    Freed(FormerHolder),
    /// Nobody held it.
    NotHeld,
}

/// Who held a lease [`Fleet::release`] freed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FormerHolder {
    /// Its client id.
    pub id: String,
    /// Its name, if it has a client row.
    pub name: Option<String>,
    /// How much longer the fleet counts it as a live client (its heartbeat is fresh:
    /// released with `force`). Assignment keeps its share of the shards for it until
    /// then, so a freed shard may wait that long for a new owner — unless the holder
    /// writes again, being alive after all. `None`: it does not count as live.
    pub counted_live_for: Option<Duration>,
}

impl FormerHolder {
    /// `name (first 8 of its id)`, as `kinsumer-ctl status` names clients; the id
    /// alone without a client row.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => label(name, &self.id),
            None => self.id.clone(),
        }
    }
}

/// An operator's handle on one application's tables and its stream.
///
/// # Examples
///
/// ```no_run
/// use kinsumer::{Config, Fleet};
///
/// # fn main() -> Result<(), kinsumer::Error> {
/// let fleet = Fleet::new("my-stream", "my-app", Config::default())?;
/// for shard in fleet.status()?.shards {
///     println!("{} owner {:?} behind {:?} ms", shard.shard_id, shard.owner_name, shard.millis_behind_latest);
/// }
/// # Ok(())
/// # }
/// ```
pub struct Fleet {
    names: Names,
    config: Config,
    bridge: Bridge,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("stream", &self.names.stream)
            .field("checkpoints", &self.names.checkpoints)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// A handle using the default AWS configuration chain. `config` supplies the shard
    /// check frequency (what counts as a live client or a fresh lease) and the waiter
    /// delay; use the fleet's own.
    ///
    /// # Errors
    ///
    /// Invalid names or configuration, [`ErrorKind::NoRegion`]; no network call is made.
    pub fn new(stream_name: &str, application_name: &str, config: Config) -> Result<Self> {
        Names::new(stream_name, application_name)?;
        config.validate()?;
        Self::build(
            ClientConfigs::load_default()?,
            stream_name,
            application_name,
            config,
        )
    }

    /// A handle whose clients are built from `sdk_config`.
    ///
    /// # Errors
    ///
    /// As [`Fleet::new`].
    pub fn from_sdk_config(
        sdk_config: &SdkConfig,
        stream_name: &str,
        application_name: &str,
        config: Config,
    ) -> Result<Self> {
        let configs = ClientConfigs::from_sdk_config(sdk_config);
        Self::build(configs, stream_name, application_name, config)
    }

    /// A handle built from explicit SDK clients' configurations.
    ///
    /// # Errors
    ///
    /// As [`Fleet::new`].
    pub fn from_clients(
        kinesis: &aws_sdk_kinesis::Client,
        dynamodb: &aws_sdk_dynamodb::Client,
        stream_name: &str,
        application_name: &str,
        config: Config,
    ) -> Result<Self> {
        let configs = ClientConfigs::from_clients(kinesis, dynamodb);
        Self::build(configs, stream_name, application_name, config)
    }

    fn build(configs: ClientConfigs, stream: &str, app: &str, config: Config) -> Result<Self> {
        let names = Names::new(stream, app)?;
        let bridge = crate::consumer::connect(&configs, &config)?;
        Ok(Fleet {
            names,
            config,
            bridge,
        })
    }

    /// Fails unless the tables exist and the stream does.
    fn check(&self) -> Result<()> {
        tables::check_ready(&self.bridge, &self.names, &self.config)?;
        stream::check_ready(&self.bridge, &self.names.stream, false)
    }

    /// Every checkpoint row, by shard id.
    fn rows(&self) -> Result<HashMap<String, HashMap<String, AttributeValue>>> {
        checkpoints::all_rows(&self.bridge, &self.names.checkpoints)
    }

    fn clients(&self) -> Result<Vec<ClientStatus>> {
        let rows =
            crate::clients::rows(&self.bridge, &self.names.clients, self.config.lease_ttl())?;
        Ok(rows
            .into_iter()
            .map(|row| ClientStatus {
                live: row.age < row.silence,
                live_for: row.silence.checked_sub(row.age).filter(|d| !d.is_zero()),
                id: row.id,
                name: row.name,
                age: row.age,
            })
            .collect())
    }

    /// Reads the whole picture: shards (owner, lease age, checkpoint and its age,
    /// finished, parents, lag to the tip), clients, the leader and the shard cache's age.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TableNotFound`], [`ErrorKind::NoSuchStream`], or an AWS failure.
    pub fn status(&self) -> Result<FleetStatus> {
        self.check()?;
        let listed = stream::list_shards(&self.bridge, &self.names.stream, None)?;
        let rows = self.rows()?;
        let plan = metadata::read_plan(&self.bridge, &self.names.metadata)?;
        let mut shards = Vec::with_capacity(listed.len());
        for info in listed {
            let row = rows.get(&info.id).map(checkpoints::RowView);
            let checkpoint = row.and_then(|r| r.sequence_number());
            let finished = row.is_some_and(|r| r.finished());
            let (checkpoint_age, behind) = if finished {
                (None, None)
            } else {
                self.lag(&info.id, checkpoint.as_deref())
            };
            shards.push(ShardStatus {
                parents: info
                    .parent
                    .iter()
                    .chain(&info.adjacent_parent)
                    .cloned()
                    .collect(),
                owner_id: row.and_then(|r| r.owner_id()),
                owner_name: row.and_then(|r| r.owner_name()),
                lease_age: row.and_then(|r| r.age()),
                checkpoint,
                checkpoint_age,
                finished,
                millis_behind_latest: behind,
                start_position: row
                    .and_then(|r| r.start_position())
                    .and_then(|v| checkpoints::parse_start_position(&v)),
                failure: row.and_then(|r| r.failure()).map(|mark| mark.to_string()),
                load: row.and_then(|r| checkpoints::load_of(r.0)),
                moved_to: plan.moves.get(&info.id).cloned(),
                shard_id: info.id,
            });
        }
        let leader = metadata::leader(&self.bridge, &self.names.metadata)?;
        let shard_cache_age = metadata::shard_cache_age(&self.bridge, &self.names.metadata)?;
        Ok(FleetStatus {
            shards,
            clients: self.clients()?,
            leader,
            shard_cache_age,
        })
    }

    /// One read at the checkpoint: the checkpointed record's age and how far behind the
    /// tip it is. Unknown (`None`) where the read fails, e.g. a checkpoint older than the
    /// stream's retention.
    fn lag(&self, shard: &str, checkpoint: Option<&str>) -> (Option<Duration>, Option<i64>) {
        let kinesis = self.bridge.kinesis();
        let req =
            stream::on_stream!(kinesis.get_shard_iterator(), &self.names.stream).shard_id(shard);
        let req = match checkpoint {
            Some(seq) => req
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq),
            None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let Some(iterator) = self
            .bridge
            .block_on(req)
            .ok()
            .and_then(|o| o.shard_iterator)
        else {
            return (None, None);
        };
        let Ok(out) = self
            .bridge
            .block_on(kinesis.get_records().shard_iterator(iterator).limit(1))
        else {
            return (None, None);
        };
        let age = checkpoint
            .and(out.records.first())
            .and_then(|r| r.approximate_arrival_timestamp)
            .and_then(|t| SystemTime::try_from(t).ok())
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        (age, out.millis_behind_latest)
    }

    /// Frees the lease on `shard`, for a holder that is gone. Refuses
    /// ([`ErrorKind::LeaseHeld`]) while the holder's heartbeat is fresh — its client row or
    /// the lease itself written within 5 × shard check frequency — unless `force`. The
    /// write is conditional on the holder read, so a lease captured meanwhile is kept.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LeaseHeld`]; [`ErrorKind::InvalidName`] for a shard the stream does not
    /// list; missing tables or stream; AWS failures.
    pub fn release(&self, shard: &str, force: bool) -> Result<Released> {
        self.check()?;
        let listed = stream::list_shards(&self.bridge, &self.names.stream, None)?;
        if !listed.iter().any(|s| s.id == shard) {
            return Err(Error::new(ErrorKind::InvalidName).with_context(format!(
                "shard {shard} is not in stream {}",
                self.names.stream
            )));
        }
        let row = self.rows()?.remove(shard);
        let row = row.as_ref().map(checkpoints::RowView);
        let Some(holder) = row.and_then(|r| r.owner_id()) else {
            return Ok(Released::NotHeld);
        };
        let ttl = self.config.lease_ttl();
        let lease_fresh = row.and_then(|r| r.age()).is_some_and(|age| age < ttl);
        let client = self.clients()?.into_iter().find(|c| c.id == holder);
        let former = FormerHolder {
            name: client.as_ref().map(|c| c.name.clone()),
            counted_live_for: client.as_ref().and_then(|c| c.live_for),
            id: holder,
        };
        if (lease_fresh || former.counted_live_for.is_some()) && !force {
            return Err(Error::new(ErrorKind::LeaseHeld).with_context(format!(
                "shard {shard} is leased by {}, whose heartbeat is fresh: it may be alive \
                 (if it is not, release with force: `kinsumer-ctl release --force`)",
                former.label()
            )));
        }
        if checkpoints::force_release(&self.bridge, &self.names.checkpoints, shard, &former.id)? {
            Ok(Released::Freed(former))
        } else {
            Err(Error::new(ErrorKind::LeaseHeld)
                .with_context(format!("shard {shard} changed hands meanwhile; look again")))
        }
    }

    /// Plans moving the checkpoints of `shards` (all the stream lists, if `None`) to `to`,
    /// without writing anything: print it as a dry run, then
    /// [`apply_rewind`](Fleet::apply_rewind).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::FleetRunning`] while any client of the application is live (stop the
    /// fleet first), unless every shard named is parked ([`ShardStatus::failure`]: a
    /// parked shard is read by nobody, and its owner reads it again once rewound); [`ErrorKind::InvalidRewind`] for a time in the future or older than
    /// the stream's retention, or a shard the stream does not list; missing tables or
    /// stream; AWS failures.
    pub fn plan_rewind(&self, to: RewindTo, shards: Option<&[String]>) -> Result<RewindPlan> {
        self.check()?;
        let live: Vec<String> = self
            .clients()?
            .into_iter()
            .filter(|c| c.live)
            .map(|c| {
                let ago = c.age.as_secs_f64();
                format!("{} (heartbeat {ago:.1}s ago)", c.label())
            })
            .collect();
        if let RewindTo::Time(t) = to {
            self.check_rewind_time(t)?;
        }
        let chosen = self.chosen_shards(shards)?;
        let rows = self.rows()?;
        if !live.is_empty() {
            // Parked shards are read by nobody: they may be rewound while the fleet runs
            // (the write is still conditional on the row being unowned and unchanged).
            let parked = |id: &&String| {
                rows.get(id.as_str())
                    .and_then(|r| checkpoints::RowView(r).failure())
                    .is_some()
            };
            let unparked: Vec<&str> = chosen
                .iter()
                .filter(|id| shards.is_none() || !parked(id))
                .map(String::as_str)
                .collect();
            if !unparked.is_empty() {
                return Err(Error::new(ErrorKind::FleetRunning).with_context(format!(
                    "rewinding: {} client(s) running: {} (only parked shards can be rewound \
                     while clients run; not parked: {})",
                    live.len(),
                    live.join(", "),
                    unparked.join(", ")
                )));
            }
        }
        let steps = chosen
            .into_iter()
            .map(|shard_id| {
                let row = rows.get(&shard_id).map(checkpoints::RowView);
                RewindStep {
                    from: row.and_then(|r| r.sequence_number()),
                    finished: row.is_some_and(|r| r.has_finished()),
                    shard_id,
                }
            })
            .collect();
        let to = match to {
            // Fixed now, so that applying later skips nothing written in between.
            RewindTo::Latest => RewindTo::Time(SystemTime::now()),
            other => other,
        };
        Ok(RewindPlan { to, steps })
    }

    /// A rewind time must be past, and within the stream's retention.
    fn check_rewind_time(&self, t: SystemTime) -> Result<()> {
        let retention = stream::retention(&self.bridge, &self.names.stream)?;
        let now = SystemTime::now();
        let invalid = |why: &str| {
            Err(Error::new(ErrorKind::InvalidRewind).with_context(format!("rewinding: {why}")))
        };
        if t > now {
            return invalid("the time is in the future");
        }
        if now.duration_since(t).unwrap_or_default() > retention {
            return invalid(&format!(
                "the time is older than the stream's retention ({} h)",
                retention.as_secs() / 3600
            ));
        }
        Ok(())
    }

    /// The shards a rewind covers: `shards`, each one the stream lists, or all it lists.
    fn chosen_shards(&self, shards: Option<&[String]>) -> Result<Vec<String>> {
        let listed = stream::list_shards(&self.bridge, &self.names.stream, None)?;
        let Some(wanted) = shards else {
            return Ok(listed.into_iter().map(|s| s.id).collect());
        };
        if let Some(unknown) = wanted.iter().find(|w| !listed.iter().any(|s| s.id == **w)) {
            return Err(Error::new(ErrorKind::InvalidRewind).with_context(format!(
                "rewinding: shard {unknown} is not in stream {}",
                self.names.stream
            )));
        }
        Ok(wanted.to_vec())
    }

    /// Applies a plan: each shard's row loses its checkpoint (and `Finished`) and gets the
    /// plan's start position, which the next owner starts from. Each write is conditional
    /// on the row being unowned and its checkpoint unchanged since the plan; the shard
    /// cache is dropped so that clients list the shards afresh.
    ///
    /// Only this crate's clients know the start position: a Go client treats a rewound row
    /// as never consumed (its own initial position).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::FleetRunning`] if a row was captured or moved since the plan (the
    /// rows before it are rewound, the rest untouched); AWS failures.
    pub fn apply_rewind(&self, plan: &RewindPlan) -> Result<()> {
        let position = match plan.to {
            RewindTo::TrimHorizon => InitialPosition::TrimHorizon,
            RewindTo::Latest => InitialPosition::Latest,
            RewindTo::Time(t) => InitialPosition::AtTimestamp(t),
        };
        let value = checkpoints::start_position_value(position);
        for step in &plan.steps {
            self.rewind_row(step, &value)?;
        }
        metadata::delete_shard_cache(&self.bridge, &self.names.metadata)
    }

    fn rewind_row(&self, step: &RewindStep, position: &str) -> Result<()> {
        let table = &self.names.checkpoints;
        let from = step.from.as_deref();
        if checkpoints::rewind(&self.bridge, table, &step.shard_id, from, position)? {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::FleetRunning).with_context(format!(
                "rewinding shard {}: it was captured or moved since the plan",
                step.shard_id
            )))
        }
    }
}
