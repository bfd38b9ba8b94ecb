//! The coordinator thread ("kinsumer-coordinator").
//!
//! Owns the set of shard threads and this client's row ([`membership`]: written by a
//! task on the I/O runtime every fifth of the failover time). Every shard-check interval
//! it reads the live clients; the first live client (by id) is the leader, which keeps
//! the shared shard list (`ShardCache`) fresh and removes the rows of clients found gone. Every
//! client reads that list (or ListShards, before there is one), computes its shards with
//! [`assignment`](crate::assignment), and starts or stops exactly the shard threads that
//! changed: the others keep delivering. It also restarts shard threads that exited with
//! a failure. Between shard checks it reads the clients table every membership interval
//! and the fleet-change epoch every second, and checks at once when either moved. It
//! never touches the records channel, so a caller that stops pulling records cannot
//! stall heartbeats, rebalancing or `stop()`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Select, Sender};

use crate::balance::{self, Plan};
use crate::batch::Batch;
use crate::bridge::Bridge;
use crate::checkpoints::{self, Owner};
use crate::clients;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::health::ParkedShard;
use crate::io::heartbeat::{self, Heartbeat};
use crate::lineage;
use crate::membership::Membership;
use crate::metadata;
use crate::notices::Notices;
use crate::scheme::{self, Phase};
use crate::shard::{self, ShardContext, ShardExit, ShardHandle};
use crate::stream;
use crate::tables::Names;

/// How long a stop waits for shard threads to commit and release.
const SHARD_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a whole stop may take (shard threads, resigning, deregistering): within the
/// consumer's own wait for the coordinator, so that what was left undone is reported.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(25);

/// How often a client looks for fleet changes (joins, clean leaves) between shard checks:
/// one consistent read of a small item.
const FLEET_POLL: Duration = Duration::from_secs(1);

/// How many times in a row a shard may fail with an error that retrying does not fix
/// before it is parked (not read until its row is repaired), or — when the error concerns
/// the whole client (credentials, tables, the stream) — the consumer ends with a fatal
/// error, rather than restart it at every shard check forever.
const MAX_SHARD_FAILURES: u32 = 3;

/// How soon a failed shard is restarted (at most a shard check). With
/// [`MAX_SHARD_FAILURES`], a failure must persist for about twice this before the
/// consumer gives up.
const RESTART_DELAY: Duration = Duration::from_secs(5);

/// Why a running shard thread is stopped at a refresh (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Departure {
    /// Still listed: the assignment gives it to another client.
    Moved,
    /// No longer in the shard list: finished (read to its end) or gone from the stream.
    Unlisted,
}

impl Departure {
    fn of(shard: &str, listed: &[String]) -> Self {
        if listed.iter().any(|s| s == shard) {
            Departure::Moved
        } else {
            Departure::Unlisted
        }
    }
}

impl std::fmt::Display for Departure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Departure::Moved => "moving it to another client",
            Departure::Unlisted => "it is finished or no longer in the stream",
        })
    }
}

/// A shard this client owns and does not read: it kept failing, or its row says so.
#[derive(Debug)]
struct Parked {
    reason: String,
    since: SystemTime,
    /// Whether the row carries the failure mark (written by this client, or found by the
    /// capture): a repair then lifts it. `false` while writing the mark failed.
    marked: bool,
    /// When it was last reported (see [`PARKED_REPORT_EVERY`]).
    reported: Instant,
}

/// How often a parked shard is reported again (at the shard check after this).
const PARKED_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Messages from the consumer to its coordinator.
#[derive(Debug)]
pub(crate) enum Command {
    /// Stop every shard (committing and releasing) and deregister.
    Stop,
    /// Simulated crash: end every thread without writing anything.
    #[cfg_attr(
        not(feature = "testing"),
        allow(
            dead_code,
            reason = "sent only by the `testing` feature's abandon_for_tests"
        )
    )]
    Abandon,
}

/// What the coordinator needs; moved into its thread.
#[derive(Debug)]
pub(crate) struct CoordinatorParts {
    pub(crate) names: Arc<Names>,
    pub(crate) owner: Arc<Owner>,
    pub(crate) config: Config,
    pub(crate) bridge: Bridge,
    pub(crate) records: Sender<Batch>,
    /// The byte bound on the records channel.
    pub(crate) budget: Arc<crate::budget::Budget>,
    /// What this client has seen of the fleet's rows (staleness on its own clock).
    pub(crate) liveness: Arc<crate::liveness::Liveness>,
    pub(crate) notices: Notices,
    pub(crate) commands: Receiver<Command>,
    /// Disconnects when the consumer stops: the coordinator's own calls (shard checks)
    /// then give up at once; shard threads and the shutdown's calls are not interrupted.
    pub(crate) interrupt: Receiver<()>,
    /// Where a commanded shutdown reports what it could not finish.
    pub(crate) closed: Sender<Vec<String>>,
    /// The enhanced fan-out consumer's ARN, when shards are read through one.
    pub(crate) consumer: Option<Arc<str>>,
}

/// The consumer's handle on the coordinator thread.
#[derive(Debug)]
pub(crate) struct CoordinatorHandle {
    join: JoinHandle<()>,
    /// Disconnects when the thread ends.
    done: Receiver<()>,
}

impl CoordinatorHandle {
    /// A receiver that disconnects when the thread ends, however it ends.
    pub(crate) fn done(&self) -> Receiver<()> {
        self.done.clone()
    }

    /// Joins the thread if it ends within `timeout`; `false` if it did not (it is then
    /// left to finish on its own).
    pub(crate) fn join_within(self, timeout: Duration) -> bool {
        if self.done.recv_timeout(timeout) == Err(crossbeam_channel::RecvTimeoutError::Timeout) {
            return false;
        }
        if self.join.join().is_err() {
            log::error!("the coordinator thread panicked");
        }
        true
    }
}

/// Starts the coordinator; returns after the client registered and the first shards
/// started (or with the error that prevented it).
pub(crate) fn start(parts: CoordinatorParts) -> Result<CoordinatorHandle> {
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<()>>(1);
    let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
    let join = std::thread::Builder::new()
        .name("kinsumer-coordinator".into())
        .spawn(move || {
            let _done = done_tx;
            let bridge = parts.bridge.interruptible(parts.interrupt.clone());
            let mut c = Coordinator::new(parts, &bridge);
            // A panic (in a user's `Stats` method, say) ends consumption with a fatal
            // error, and the shard threads are still stopped and their leases released.
            let started = catch_panic("starting", || c.startup());
            match started {
                Ok(()) => {
                    let _ = ready_tx.send(Ok(()));
                    if let Err(e) = catch_panic("running", || {
                        c.run();
                        Ok(())
                    }) {
                        log::error!("{e}");
                        c.parts.notices.report(e.fatal());
                        c.shutdown(false);
                    }
                }
                Err(e) => {
                    c.shutdown(false);
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| {
            Error::new(ErrorKind::Internal)
                .with_context("starting the coordinator thread")
                .with_source(e)
        })?;
    // Startup makes a handful of bounded SDK calls.
    match ready_rx.recv_timeout(Duration::from_secs(180)) {
        Ok(Ok(())) => Ok(CoordinatorHandle { join, done }),
        Ok(Err(e)) => {
            let _ = join.join();
            Err(e)
        }
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            Err(Error::new(ErrorKind::Timeout).with_context("starting the coordinator"))
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
            Err(Error::new(ErrorKind::Internal)
                .with_context("the coordinator thread ended while starting"))
        }
    }
}

/// Runs `f`, turning a panic into an [`ErrorKind::Internal`] error.
fn catch_panic(doing: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(Error::new(ErrorKind::Internal).with_context(format!(
            "the coordinator thread panicked while {doing}: {}",
            shard::panic_message(&*panic)
        )))
    })
}

/// When the coordinator next checks the shards, polls the fleet-change epoch and scans
/// the clients table. Between shard checks, the epoch is polled every `FLEET_POLL` and
/// the clients table read every membership interval (a client gone silent); not at all
/// when shard checks are that frequent.
struct Schedule {
    interval: Duration,
    scan_every: Duration,
    check: Instant,
    poll: Instant,
    scan: Instant,
}

impl Schedule {
    fn new(interval: Duration, scan_every: Duration) -> Self {
        let now = Instant::now();
        let mut at = Schedule {
            interval,
            scan_every,
            check: now + interval,
            poll: now,
            scan: now,
        };
        at.poll = at.poll_after(now);
        at.scan = at.scan_after(now);
        at
    }

    fn next_wake(&self) -> Instant {
        self.check.min(self.poll).min(self.scan)
    }

    fn poll_after(&self, now: Instant) -> Instant {
        if FLEET_POLL < self.interval {
            now + FLEET_POLL
        } else {
            self.check
        }
    }

    fn scan_after(&self, now: Instant) -> Instant {
        if self.scan_every < self.interval {
            now + self.scan_every
        } else {
            self.check
        }
    }

    /// A shard check starts at `now`: the next one is an interval away.
    fn checked(&mut self, now: Instant) {
        self.check = now + self.interval;
        self.poll = self.poll_after(now);
        self.scan = self.scan_after(now);
    }
}

enum Event {
    Command(Command),
    Exit(Arc<str>, ShardExit),
    Tick,
}

struct Coordinator<'a> {
    parts: CoordinatorParts,
    bridge: &'a Bridge,
    shards: HashMap<Arc<str>, ShardHandle>,
    /// Shards read to their end and finished: never restarted.
    finished: HashSet<Arc<str>>,
    /// Consecutive failed runs per shard (see [`MAX_SHARD_FAILURES`]).
    failures: HashMap<Arc<str>, u32>,
    /// Shards assigned here but not read until their rows are repaired.
    parked: HashMap<Arc<str>, Parked>,
    exits_tx: Sender<(Arc<str>, ShardExit)>,
    exits_rx: Receiver<(Arc<str>, ShardExit)>,
    abandon: Arc<AtomicBool>,
    /// Leases the shard threads could not release (see [`ShardContext`]).
    left_behind: Arc<parking_lot::Mutex<HashMap<Arc<str>, String>>>,
    /// What shard threads processed of leases that ran out before it was written (see
    /// [`ShardContext`]).
    unwritten: Arc<parking_lot::Mutex<HashMap<Arc<str>, crate::watermark::Checkpoint>>>,
    /// Whether this client holds the `Leader` item.
    leader: bool,
    /// The assignment scheme in use; `None` before the first refresh.
    phase: Option<Phase>,
    next_leader_action: Instant,
    /// The fleet-change epoch last seen ([`metadata::fleet_epoch`]).
    fleet_epoch: Option<i64>,
    /// Until when this client surely still counts as live; renewed by `heartbeat`.
    membership: Arc<Membership>,
    /// Writes this client's row; `None` before startup registered it, and once the row
    /// is to be deleted (or abandoned).
    heartbeat: Option<Heartbeat>,
    /// The live clients the last refresh assigned among.
    live: Vec<String>,
    /// The leader's load-balancing plan last read ([`balance`](crate::balance)).
    plan: Plan,
    /// As the leader: the shards' published loads, from this refresh's scan.
    loads: HashMap<String, f64>,
}

impl<'a> Coordinator<'a> {
    fn new(parts: CoordinatorParts, bridge: &'a Bridge) -> Self {
        let (exits_tx, exits_rx) = crossbeam_channel::unbounded();
        Coordinator {
            bridge,
            shards: HashMap::new(),
            finished: HashSet::new(),
            failures: HashMap::new(),
            parked: HashMap::new(),
            exits_tx,
            exits_rx,
            abandon: Arc::new(AtomicBool::new(false)),
            left_behind: Arc::default(),
            unwritten: Arc::default(),
            leader: false,
            phase: None,
            next_leader_action: Instant::now(),
            fleet_epoch: None,
            membership: Arc::new(Membership::new(parts.config.membership_margin())),
            heartbeat: None,
            live: Vec::new(),
            plan: Plan::default(),
            loads: HashMap::new(),
            parts,
        }
    }

    fn name(&self) -> &str {
        &self.parts.owner.name
    }

    fn startup(&mut self) -> Result<()> {
        let sent = Instant::now();
        clients::register(
            self.bridge,
            &self.parts.names.clients,
            &self.parts.owner,
            self.parts.config.failover_time(),
        )?;
        self.membership.renewed(sent);
        self.heartbeat = Some(heartbeat::start_heartbeat(
            self.bridge,
            &self.parts.names.clients,
            &self.parts.owner,
            &self.parts.config,
            &self.membership,
        ));
        self.announce();
        if self.refresh()? == 0 {
            // Normal in a fleet with more clients than shards, or while a departed
            // client's row is still fresh: not an error for the caller (unlike Go's
            // ErrNoShardsAssigned), the next shard checks assign shards as things change.
            log::info!("client {}: no shards assigned yet", self.name());
        }
        Ok(())
    }

    fn run(&mut self) {
        let mut at = Schedule::new(
            self.parts.config.shard_check_frequency(),
            self.parts.config.membership_interval(),
        );
        // Failed shard checks in a row whose error retrying does not fix.
        let mut hopeless = 0;
        loop {
            match self.next_event(at.next_wake()) {
                Event::Tick if Instant::now() < at.check => self.between_checks(&mut at),
                Event::Command(command) => {
                    let problems = self.shutdown(matches!(command, Command::Abandon));
                    let _ = self.parts.closed.try_send(problems);
                    return;
                }
                Event::Exit(shard, exit) => match self.on_exit(shard, exit) {
                    Ok(Some(after)) => at.check = at.check.min(Instant::now() + after),
                    Ok(None) => {}
                    Err(e) => {
                        log::error!("client {}: {e}; stopping", self.name());
                        self.parts.notices.report(e.fatal());
                        self.shutdown(false);
                        return;
                    }
                },
                Event::Tick => {
                    at.checked(Instant::now());
                    let Err(e) = self.refresh() else {
                        hopeless = 0;
                        continue;
                    };
                    if self.stopping() {
                        continue; // the stop command is next
                    }
                    hopeless = if e.is_transient() { 0 } else { hopeless + 1 };
                    if e.kind() == ErrorKind::NoSuchStream || hopeless >= MAX_SHARD_FAILURES {
                        log::error!(
                            "client {}: {e}; stopping ({hopeless} failed shard checks in a row)",
                            self.name()
                        );
                        self.parts.notices.report(e.fatal());
                        self.shutdown(false);
                        return;
                    }
                    log::warn!("client {}: {e}", self.name());
                    self.parts.notices.report(e);
                }
            }
        }
    }

    /// Between shard checks: reads the clients table and the fleet-change epoch when due,
    /// and brings the next check forward when either moved.
    fn between_checks(&mut self, at: &mut Schedule) {
        let now = Instant::now();
        if now >= at.scan {
            at.scan = at.scan_after(now);
            if self.members_changed() {
                log::info!(
                    "client {}: the live clients changed; checking now",
                    self.name()
                );
                at.check = Instant::now();
            }
        }
        if now >= at.poll {
            at.poll = at.poll_after(Instant::now());
            if self.fleet_changed() {
                log::info!("client {}: the fleet changed; checking now", self.name());
                at.check = Instant::now();
            }
        }
    }

    /// Whether the consumer is stopping (its calls are being interrupted).
    fn stopping(&self) -> bool {
        self.parts.interrupt.try_recv() == Err(crossbeam_channel::TryRecvError::Disconnected)
    }

    /// Bumps the fleet-change epoch (best effort: others notice at their next check
    /// anyway), and remembers the epoch it set.
    fn announce(&mut self) {
        self.announce_with(&self.bridge.clone());
    }

    /// [`announce`](Coordinator::announce) through `bridge`.
    fn announce_with(&mut self, bridge: &Bridge) {
        let table = &self.parts.names.metadata;
        match metadata::announce_fleet_change(bridge, table)
            .and_then(|()| metadata::fleet_epoch(bridge, table))
        {
            Ok(epoch) => self.fleet_epoch = epoch,
            Err(e) => log::debug!("client {}: {e}", self.name()),
        }
    }

    /// Whether another client joined or left since the last look.
    fn fleet_changed(&mut self) -> bool {
        match metadata::fleet_epoch(self.bridge, &self.parts.names.metadata) {
            Ok(epoch) if epoch != self.fleet_epoch => {
                self.fleet_epoch = epoch;
                true
            }
            Ok(_) => false,
            Err(e) => {
                log::debug!("client {}: {e}", self.name());
                false
            }
        }
    }

    /// Waits for a command, a shard exit or the deadline. A dropped command sender (the
    /// consumer is gone without stopping) counts as a stop.
    fn next_event(&self, deadline: Instant) -> Event {
        let mut sel = Select::new();
        let cmd_op = sel.recv(&self.parts.commands);
        sel.recv(&self.exits_rx);
        match sel.select_deadline(deadline) {
            Ok(op) if op.index() == cmd_op => {
                Event::Command(op.recv(&self.parts.commands).unwrap_or(Command::Stop))
            }
            Ok(op) => match op.recv(&self.exits_rx) {
                Ok((shard, exit)) => Event::Exit(shard, exit),
                Err(_) => Event::Tick, // unreachable: we hold a sender
            },
            Err(_) => Event::Tick,
        }
    }

    /// Joins an ended shard thread. `Ok(Some(d))`: refresh within `d` — at once when the
    /// shard finished (its children may be ready), soon when it failed (to restart it).
    /// A shard that failed [`MAX_SHARD_FAILURES`] times in a row is parked. `Err`
    /// (fatal) if it ended because the stream is gone and a check confirms it, or failed
    /// that often in a way that concerns the whole client.
    fn on_exit(&mut self, shard: Arc<str>, exit: ShardExit) -> Result<Option<Duration>> {
        if let Some(handle) = self.shards.remove(&shard) {
            handle.join();
        }
        self.show_shards();
        log::debug!(
            "client {}: shard thread {shard} ended: {exit:?}",
            self.name()
        );
        let failures = self.count_failures(&shard, &exit);
        match exit {
            ShardExit::Failed(failure) if failures >= MAX_SHARD_FAILURES => {
                let why = format!(
                    "shard {shard} failed {failures} times in a row, last with \"{}\"",
                    failure.why
                );
                if failure.client_wide {
                    return Err(Error::new(ErrorKind::ShardFailed).with_context(why));
                }
                self.park(shard, why, true);
            }
            // The row says so already: parked at once, not tried three times.
            ShardExit::Parked(mark) => self.park(shard, mark.to_string(), false),
            ShardExit::Finished => {
                self.finished.insert(shard);
                return Ok(Some(Duration::ZERO));
            }
            ShardExit::Failed(_) => {
                return Ok(Some(
                    RESTART_DELAY.min(self.parts.config.shard_check_frequency()),
                ));
            }
            ShardExit::NoSuchStream => {
                let names = &self.parts.names;
                match stream::check_ready(
                    self.bridge,
                    &names.stream,
                    self.parts.config.list_shards_for_readiness(),
                ) {
                    Err(e) if e.kind() == ErrorKind::NoSuchStream => return Err(e),
                    _ => {} // only the shard is gone (trimmed); the refresh sorts it out
                }
            }
            // Lost shards are taken up again by the next refresh if still ours.
            _ => {}
        }
        Ok(None)
    }

    /// Consecutive failed runs of `shard`, this `exit` included (0 once it ran well).
    fn count_failures(&mut self, shard: &Arc<str>, exit: &ShardExit) -> u32 {
        if let ShardExit::Failed(_) = exit {
            let n = self.failures.entry(Arc::clone(shard)).or_insert(0);
            *n += 1;
            *n
        } else {
            self.failures.remove(shard);
            0
        }
    }

    /// Parks a shard: with `write_mark`, records it on the shard's row (so that no other
    /// client tries it again before a repair; else the row says so already), reports it,
    /// and reads it no more until a repair lifts the mark ([`Coordinator::check_parked`]).
    fn park(&mut self, shard: Arc<str>, reason: String, write_mark: bool) {
        let marked = !write_mark
            || match checkpoints::mark_failed(
                self.bridge,
                &self.parts.names.checkpoints,
                &shard,
                &self.parts.owner,
                &reason,
            ) {
                Ok(marked) => marked.is_some(),
                Err(e) => {
                    log::warn!(
                        "client {}: {e}; trying again at the next shard check",
                        self.name()
                    );
                    false
                }
            };
        let parked = Parked {
            reason,
            since: SystemTime::now(),
            marked,
            reported: Instant::now(),
        };
        self.report_parked(&shard, &parked);
        self.parked.insert(shard, parked);
        self.show_shards();
    }

    /// Says, loudly, that a shard is parked and how to repair it.
    fn report_parked(&self, shard: &str, parked: &Parked) {
        log::error!(
            "client {}: shard {shard} is parked and not read: {}. The client's other shards \
             are read. Repair its checkpoint row (`kinsumer-ctl rewind --shards {shard} --to ...`, \
             a valid SequenceNumber, or remove its Failure attribute) and it is read again \
             at the next shard check",
            self.name(),
            parked.reason
        );
        self.parts
            .config
            .stats()
            .shard_parked(shard, &parked.reason);
        self.parts
            .notices
            .report(Error::new(ErrorKind::ShardFailed).with_context(parked.reason.clone()));
    }

    /// At a shard check: parked shards no longer assigned here are forgotten (their next
    /// owner finds the mark on the row); those whose row was repaired are unparked (and
    /// started by the caller); the others are reported again.
    fn check_parked(&mut self, mine: &HashSet<String>) {
        self.parked.retain(|shard, _| mine.contains(&**shard));
        let shards: Vec<Arc<str>> = self.parked.keys().cloned().collect();
        for shard in shards {
            let table = &self.parts.names.checkpoints;
            let marked = self.parked.get(&shard).is_some_and(|p| p.marked);
            let repaired = if marked {
                match checkpoints::read_row(self.bridge, table, &shard) {
                    Ok(row) => row
                        .as_ref()
                        .is_none_or(|r| checkpoints::failure_in_effect(r).is_none()),
                    Err(e) => {
                        log::debug!("client {}: {e}", self.name());
                        false
                    }
                }
            } else {
                let reason = self.parked.get(&shard).map(|p| p.reason.clone());
                if let Some(reason) = reason {
                    match checkpoints::mark_failed(
                        self.bridge,
                        table,
                        &shard,
                        &self.parts.owner,
                        &reason,
                    ) {
                        Ok(Some(_)) => {
                            if let Some(p) = self.parked.get_mut(&shard) {
                                p.marked = true;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => log::debug!("client {}: {e}", self.name()),
                    }
                }
                false
            };
            if repaired {
                log::info!(
                    "client {}: the row of parked shard {shard} was repaired; reading it again",
                    self.name()
                );
                self.parked.remove(&shard);
                self.failures.remove(&shard);
                self.parts.config.stats().shard_unparked(&shard);
            } else if let Some(p) = self
                .parked
                .get_mut(&shard)
                .filter(|p| p.reported.elapsed() >= PARKED_REPORT_EVERY)
            {
                p.reported = Instant::now();
                let p = &self.parked[&shard];
                self.report_parked(&shard, p);
            }
        }
        self.show_shards();
    }

    /// Updates the health query's view of the shards: read, and parked.
    fn show_shards(&self) {
        let health = self.parts.notices.health();
        health.set_owned_shards(self.shards.len());
        health.sync_shards(self.shards.keys(), self.parked.keys());
        let mut parked: Vec<ParkedShard> = self
            .parked
            .iter()
            .map(|(shard, p)| ParkedShard::new(shard.to_string(), p.reason.clone(), p.since))
            .collect();
        parked.sort_by(|a, b| a.shard_id().cmp(b.shard_id()));
        health.set_parked(parked);
    }

    /// Whether the live clients differ from those the last refresh assigned among (one
    /// crashed or was cut off, or came back). A failed scan says no: the next shard
    /// check sees it.
    fn members_changed(&mut self) -> bool {
        match clients::scan(
            self.bridge,
            &self.parts.names.clients,
            self.parts.config.lease_ttl(),
            &self.parts.liveness,
        ) {
            Ok(clients) => clients.live != self.live,
            Err(e) => {
                log::debug!("client {}: {e}", self.name());
                false
            }
        }
    }

    /// Reconciles running shard threads with this client's assignment. Returns how many
    /// shards are assigned to this client.
    fn refresh(&mut self) -> Result<usize> {
        let names = Arc::clone(&self.parts.names);
        let clients = clients::scan(
            self.bridge,
            &names.clients,
            self.parts.config.lease_ttl(),
            &self.parts.liveness,
        )?;
        // Rows looked at every shard check stay; those of shards long handed off go.
        self.parts
            .liveness
            .forget_unobserved(self.parts.config.lease_ttl().saturating_mul(4));
        let live = clients.live;
        self.live.clone_from(&live);
        if !live.contains(&self.parts.owner.id) {
            // Its row could not be written for the failover time: the others count this
            // client gone, and its shard threads stopped delivering before they could.
            // It takes part again once a write of its row lands.
            return Err(Error::new(ErrorKind::ClientNotInTable)
                .with_context(format!(
                    "client {} in table {}: its row was not written for the failover time; \
                     waiting for the next write",
                    self.name(),
                    names.clients
                ))
                .transient());
        }
        let first = live.first().is_some_and(|id| *id == self.parts.owner.id);
        let mut cache = metadata::read_shard_cache(self.bridge, &names.metadata)?;
        match self.lead(first, &clients.gone, &mut cache) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NoSuchStream => return Err(e),
            // Leadership is best effort: the shard list below still works without it.
            Err(e) => {
                log::warn!("client {}: {e}", self.name());
                self.parts.notices.report(e);
            }
        }
        let listed: Vec<String> = match cache {
            Some(ids) => ids,
            None => self.ready_shards(None)?,
        };
        let shard_ids: Vec<String> = listed
            .iter()
            .filter(|id| !self.finished.contains(id.as_str()))
            .cloned()
            .collect();
        let phase = self.choose_scheme(!clients.go.is_empty())?;
        self.balance(phase, &shard_ids, &live);
        let mut mine = phase.owned(
            &listed,
            &shard_ids,
            &live,
            &self.plan.moves,
            &self.parts.owner.id,
        );
        mine.retain(|id| !self.finished.contains(id.as_str()));
        self.check_parked(&mine);
        self.reconcile(&mine, &shard_ids);
        Ok(mine.len())
    }

    /// Stops the shard threads no longer in `mine` (they release and report their exits)
    /// and starts those of `mine` not running or parked. `listed`: the shards still
    /// to read, to say why one stops.
    fn reconcile(&mut self, mine: &HashSet<String>, listed: &[String]) {
        let gone: Vec<Arc<str>> = self
            .shards
            .keys()
            .filter(|s| !mine.contains(&***s))
            .cloned()
            .collect();
        for shard in gone {
            let why = Departure::of(&shard, listed);
            log::info!("client {}: stopping shard {shard}: {why}", self.name());
            if let Some(h) = self.shards.get_mut(&shard) {
                // The thread releases and reports its exit; `on_exit` joins it.
                h.request_stop();
            }
        }
        for shard in mine {
            if self.shards.contains_key(shard.as_str()) || self.parked.contains_key(shard.as_str())
            {
                continue;
            }
            let shard: Arc<str> = Arc::from(shard.as_str());
            let names = Arc::clone(&self.parts.names);
            let ctx = ShardContext {
                shard_id: Arc::clone(&shard),
                stream: Arc::from(names.stream.as_str()),
                names: Arc::clone(&names),
                owner: Arc::clone(&self.parts.owner),
                config: self.parts.config.clone(),
                bridge: self.parts.bridge.clone(),
                records: self.parts.records.clone(),
                budget: Arc::clone(&self.parts.budget),
                liveness: Arc::clone(&self.parts.liveness),
                membership: Arc::clone(&self.membership),
                notices: self.parts.notices.clone(),
                exits: self.exits_tx.clone(),
                abandon: Arc::clone(&self.abandon),
                left_behind: Arc::clone(&self.left_behind),
                unwritten: Arc::clone(&self.unwritten),
                consumer: self.parts.consumer.clone(),
            };
            match shard::spawn(ctx) {
                Ok(handle) => {
                    self.shards.insert(shard, handle);
                }
                Err(e) => self.parts.notices.report(e),
            }
        }
        self.show_shards();
    }

    /// Reads (and, when this client should, writes) the fleet's scheme word and moves
    /// this client's assignment phase on ([`scheme`]).
    fn choose_scheme(&mut self, go_live: bool) -> Result<Phase> {
        let table = &self.parts.names.metadata;
        let mut word = metadata::read_scheme(self.bridge, table)?;
        if let Some(w) = scheme::word_to_write(self.leader, go_live, word) {
            metadata::write_scheme(self.bridge, table, w)?;
            word = Some(w);
        }
        let window = self.parts.config.shard_check_frequency().saturating_mul(2);
        let phase = match self.phase {
            None => Phase::initial(go_live, word),
            Some(p) => p.next(go_live, word, Instant::now(), window),
        };
        if self.phase.map(Phase::mode) != Some(phase.mode()) {
            log::info!(
                "client {}: assignment scheme: {}{}",
                self.name(),
                phase.mode(),
                if go_live {
                    " (Go clients are live)"
                } else {
                    ""
                }
            );
            self.parts
                .config
                .stats()
                .assignment_mode_changed(phase.mode());
        }
        self.phase = Some(phase);
        Ok(phase)
    }

    /// Reads the leader's load-balancing plan into `self.plan` (none under the Go
    /// scheme, which ignores them) and, as the leader under [`assign_shards`], takes the
    /// next step of [the rule](crate::balance) from the loads its scan read, writing the
    /// moves when they change. Best effort: on a failure the last moves stay.
    fn balance(&mut self, phase: Phase, ready: &[String], live: &[String]) {
        if phase == Phase::Go {
            self.plan = Plan::default();
            return;
        }
        let table = &self.parts.names.metadata;
        let last = match metadata::read_plan(self.bridge, table) {
            Ok(plan) => plan,
            Err(e) => {
                log::warn!("client {}: {e}", self.name());
                return;
            }
        };
        if !(self.leader && phase == Phase::Rendezvous) {
            self.plan = last;
            return;
        }
        let next = if self.parts.config.load_balancing() {
            balance::rebalance(
                ready,
                live,
                &self.loads,
                &last,
                &balance::Rules::for_clients(live.len()),
            )
        } else {
            Plan::default()
        };
        if next != last {
            let changed = next
                .moves
                .iter()
                .filter(|(shard, client)| last.moves.get(*shard) != Some(*client))
                .count()
                + last
                    .moves
                    .keys()
                    .filter(|shard| !next.moves.contains_key(*shard))
                    .count();
            match metadata::write_plan(self.bridge, table, &next) {
                Ok(()) if changed > 0 => {
                    log::info!(
                        "client {}: load balancing: {changed} shards move ({} off the count-balanced assignment)",
                        self.name(),
                        next.moves.len()
                    );
                    self.parts.config.stats().shards_moved_by_load(changed);
                }
                Ok(()) => {}
                Err(e) => {
                    log::warn!("client {}: {e}", self.name());
                    self.plan = last;
                    return;
                }
            }
        }
        self.plan = next;
    }

    /// The shards to assign now: listed, unfinished, and with every parent finished or
    /// trimmed ([`lineage`]). `finished`: the finished shards, if just read.
    fn ready_shards(&self, finished: Option<&HashSet<String>>) -> Result<Vec<String>> {
        let names = &self.parts.names;
        let listed = stream::list_shards(
            self.bridge,
            &names.stream,
            self.parts.config.list_shards_page_size(),
        )?;
        let scanned;
        let finished = match finished {
            Some(f) => f,
            None => {
                scanned = checkpoints::finished_shards(self.bridge, &names.checkpoints)?;
                &scanned
            }
        };
        Ok(lineage::ready_shards(&listed, finished))
    }

    /// Claims or keeps the leadership if this client is first among the live ones,
    /// resigns it otherwise, and as the leader deletes the rows of clients found `gone`
    /// (so clients starting later do not count them live for a failover time) and
    /// rebuilds the shard cache when due or as soon as a cached shard has finished (its
    /// children may be ready), updating `cache` to what was written.
    fn lead(
        &mut self,
        first: bool,
        gone: &[(String, i64)],
        cache: &mut Option<Vec<String>>,
    ) -> Result<()> {
        let names = Arc::clone(&self.parts.names);
        let held = if first {
            metadata::claim_leadership(
                self.bridge,
                &names.metadata,
                &self.parts.owner,
                self.parts.config.lease_ttl(),
                &self.parts.liveness,
            )?
        } else {
            if self.leader {
                metadata::resign(self.bridge, &names.metadata, &self.parts.owner)?;
            }
            false
        };
        if held != self.leader {
            self.leader = held;
            log::info!(
                "client {}: {} the leader",
                self.name(),
                if held { "became" } else { "is no longer" }
            );
            self.parts.config.stats().leadership_changed(held);
            self.next_leader_action = Instant::now();
        }
        if !self.leader {
            return Ok(());
        }
        self.remove_gone(gone);
        let due = Instant::now() >= self.next_leader_action;
        // One scan a shard check: finished shards, and the loads balancing reads.
        let rows = checkpoints::scan_rows(self.bridge, &names.checkpoints)?;
        self.loads = rows.load;
        let stale = match cache.as_deref() {
            None => true,
            Some(ids) => ids.iter().any(|id| rows.finished.contains(id)),
        };
        if !due && !stale {
            return Ok(());
        }
        self.next_leader_action = Instant::now() + self.parts.config.leader_action_frequency();
        let ids = self.ready_shards(Some(&rows.finished))?;
        // This client assigns from what it just computed, even if publishing fails.
        let written = metadata::write_shard_cache(self.bridge, &names.metadata, &ids);
        log::debug!(
            "client {}: shard cache has {} shards",
            self.name(),
            ids.len()
        );
        *cache = Some(ids);
        written?;
        Ok(())
    }

    /// As the leader: deletes the rows of clients found `gone` (best effort: the next
    /// refresh tries again), each only if unchanged since it was seen.
    fn remove_gone(&self, gone: &[(String, i64)]) {
        let table = &self.parts.names.clients;
        for (id, last_update) in gone {
            match clients::delete_if_unchanged(self.bridge, table, id, *last_update) {
                Ok(true) => log::info!(
                    "client {}: removed client {id}, silent for its failover time",
                    self.name()
                ),
                Ok(false) => {}
                Err(e) => log::debug!("client {}: {e}", self.name()),
            }
        }
    }

    /// Stops every shard thread (waiting a bounded time for their final commits), then
    /// deregisters — or, when abandoning, just lets everything go.
    ///
    /// Returns what could not be finished: shards whose final commit and release failed
    /// or that did not stop in time, and a failed deregistration.
    fn shutdown(&mut self, abandon: bool) -> Vec<String> {
        let budget = Instant::now() + SHUTDOWN_BUDGET;
        self.abandon.store(abandon, Ordering::Release);
        if abandon {
            // A crash writes nothing more, its row included.
            self.heartbeat = None;
        }
        let mut problems = self.stop_shards();
        if abandon {
            return problems;
        }
        let mut left: Vec<(Arc<str>, String)> = self.left_behind.lock().drain().collect();
        left.sort();
        for (shard, why) in left {
            problems.push(format!("shard {shard} was not released: {why}"));
        }
        problems.extend(self.leave(budget));
        problems
    }

    /// Tells every shard thread to stop and waits (at most [`SHARD_STOP_TIMEOUT`]) for
    /// their final commits and releases; says which did not stop in time.
    fn stop_shards(&mut self) -> Vec<String> {
        for handle in self.shards.values_mut() {
            handle.request_stop();
        }
        let deadline = Instant::now() + SHARD_STOP_TIMEOUT;
        while !self.shards.is_empty() {
            let Ok((shard, _)) = self.exits_rx.recv_deadline(deadline) else {
                let left: Vec<&Arc<str>> = self.shards.keys().collect();
                log::warn!(
                    "client {}: shard threads {left:?} did not stop within {SHARD_STOP_TIMEOUT:?}; leaving them",
                    self.name()
                );
                return vec![format!(
                    "shards {left:?} did not stop within {SHARD_STOP_TIMEOUT:?}"
                )];
            };
            if let Some(h) = self.shards.remove(&shard) {
                h.join();
            }
        }
        // Stopped: no shard is owned any more.
        self.parts
            .notices
            .health()
            .sync_shards(std::iter::empty(), std::iter::empty());
        Vec::new()
    }

    /// Resigns the leadership, stops the heartbeat and deletes this client's row, all by
    /// `budget` (the last calls end by then, whatever DynamoDB does); says what failed.
    fn leave(&mut self, budget: Instant) -> Vec<String> {
        let bridge = self.parts.bridge.until(budget);
        if self.leader {
            match metadata::resign(&bridge, &self.parts.names.metadata, &self.parts.owner) {
                Ok(()) => {
                    log::info!("client {}: gave up the leadership", self.name());
                    self.parts.config.stats().leadership_changed(false);
                }
                Err(e) => log::warn!("client {}: {e}", self.name()),
            }
            self.leader = false;
        }
        // The row is deleted next: no write of it may land after that.
        if let Some(h) = self.heartbeat.take() {
            h.stop(budget.saturating_duration_since(Instant::now()));
        }
        match clients::deregister(&bridge, &self.parts.names.clients, &self.parts.owner) {
            Ok(()) => {
                log::info!("client {}: stopped and deregistered", self.name());
                // The others take its shards now rather than at their next check.
                self.announce_with(&bridge);
                Vec::new()
            }
            Err(e) => {
                log::warn!("client {}: {e}", self.name());
                vec![e.to_string()]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departures_say_what_happened() {
        let listed = vec!["shard-1".to_owned()];
        assert_eq!(Departure::of("shard-1", &listed), Departure::Moved);
        assert_eq!(Departure::of("shard-0", &listed), Departure::Unlisted);
        assert_eq!(
            Departure::Unlisted.to_string(),
            "it is finished or no longer in the stream"
        );
        assert!(!Departure::Moved.to_string().contains("handing"));
    }
}
