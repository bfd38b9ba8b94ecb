//! One bad shard does not stop the fleet: a shard that keeps failing the same way is
//! parked — reported in `health()`, `Stats` and `Fleet::status` — while its client reads
//! its other shards; the next owner does not try it again before a repair; a repair
//! (a rewind, with the fleet running) brings it back without restarting anyone.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kinsumer::{Fleet, Kinsumer, Polled, RewindTo};
use parking_lot::Mutex;

use crate::support::{self, Env, TestResult};

/// Pulls records until `stop` is set, logging `(client, data)`; returns the fatal error
/// if iteration ended with one.
fn collect(
    name: &'static str,
    consumer: &Kinsumer,
    log: &Mutex<Vec<(&'static str, String)>>,
    stop: &AtomicBool,
) -> Option<String> {
    let mut records = consumer.records();
    while !stop.load(Ordering::SeqCst) {
        match records.next_timeout(Duration::from_millis(100)) {
            Polled::Record(r) => log
                .lock()
                .push((name, String::from_utf8_lossy(r.data()).into_owned())),
            Polled::TimedOut => {}
            Polled::Failed(e) => return Some(e.to_string()),
            Polled::Ended => return None,
        }
    }
    None
}

fn parked_here(consumer: &Kinsumer, shard: &str) -> Option<String> {
    consumer
        .health()
        .parked_shards()
        .iter()
        .find(|p| p.shard_id() == shard)
        .map(|p| p.reason().to_owned())
}

#[test]
fn a_shard_that_keeps_failing_is_parked_and_the_fleet_reads_on_until_it_is_repaired() -> TestResult
{
    support::init_logging();
    let mut env = Env::new(4)?;
    env.put_numbered(0, 400, 40)?;
    let shards = env.shard_ids()?;
    let bad = shards[0].clone();
    let on_bad: HashSet<String> = env.shard_data(&bad)?.into_iter().collect();
    assert!(!on_bad.is_empty(), "no records on {bad}");
    let healthy: HashSet<String> = (0..400)
        .map(|i| i.to_string())
        .filter(|d| !on_bad.contains(d))
        .collect();
    let a = env.consumer("alpha", support::fast_config())?;
    env.put_checkpoint_row(&bad, "not-a-sequence-number")?;
    let b = env.consumer("beta", support::fast_config())?;
    a.run()?;
    b.run()?;
    let fleet = Fleet::from_clients(
        &env.kinesis,
        &env.dynamodb,
        &env.stream,
        &env.app,
        support::fast_config(),
    )?;
    let log = Mutex::new(Vec::new());
    let stop_a = AtomicBool::new(false);
    let stop_b = AtomicBool::new(false);
    let delivered = |log: &Mutex<Vec<(&str, String)>>| -> HashSet<String> {
        log.lock().iter().map(|(_, d)| d.clone()).collect()
    };
    std::thread::scope(|scope| -> TestResult {
        let ta = scope.spawn(|| collect("alpha", &a, &log, &stop_a));
        let tb = scope.spawn(|| collect("beta", &b, &log, &stop_b));

        // Every healthy shard is read by both clients together, and the bad one is parked
        // by whichever client it is assigned to; neither client ends.
        support::wait_for(
            Duration::from_secs(60),
            "the healthy shards read and the bad one parked",
            || {
                let got = delivered(&log);
                Ok(healthy.is_subset(&got)
                    && (parked_here(&a, &bad).is_some() || parked_here(&b, &bad).is_some()))
            },
        )?;
        let (parker, parker_name, other, other_name, stop_parker, stop_other) =
            if parked_here(&a, &bad).is_some() {
                (&a, "alpha", &b, "beta", &stop_a, &stop_b)
            } else {
                (&b, "beta", &a, "alpha", &stop_b, &stop_a)
            };
        let reason = parked_here(parker, &bad).ok_or("parked shard vanished")?;
        assert!(reason.contains("3 times in a row"), "{reason}");
        assert!(reason.contains("not-a-sequence-number"), "{reason}");
        assert!(parker.health().is_running() && other.health().is_running());
        assert!(other.health().parked_shards().is_empty());
        assert!(
            delivered(&log).is_disjoint(&on_bad),
            "records of the bad shard were delivered"
        );
        // The operator sees it, and why, in the fleet's status.
        let status = fleet.status()?;
        let row = status
            .shards
            .iter()
            .find(|s| s.shard_id == bad)
            .ok_or("bad shard not in status")?;
        let failure = row.failure.as_deref().ok_or("status shows no failure")?;
        assert!(
            failure.contains(&format!("parked by client {parker_name}")),
            "{failure}"
        );
        assert!(
            row.owner_id.is_none(),
            "a parked shard stays leased: {row:?}"
        );
        assert!(
            status
                .shards
                .iter()
                .filter(|s| s.shard_id != bad)
                .all(|s| s.failure.is_none())
        );

        // The client that parked it leaves: the other one is assigned the shard and
        // parks it at once, from the mark on its row, instead of failing three times.
        stop_parker.store(true, Ordering::SeqCst);
        parker.stop();
        support::wait_for(
            Duration::from_secs(30),
            "the other client to park the shard",
            || Ok(parked_here(other, &bad).is_some()),
        )?;
        let reason = parked_here(other, &bad).ok_or("parked shard vanished")?;
        assert!(
            reason.contains(&format!("parked by client {parker_name}")),
            "{other_name} tried the shard again: {reason}"
        );

        // A repair while the fleet runs: rewind the parked shard. The client reads it
        // again at its next shard check, from the rewound position.
        let plan = fleet.plan_rewind(RewindTo::TrimHorizon, Some(std::slice::from_ref(&bad)))?;
        fleet.apply_rewind(&plan)?;
        support::wait_for(Duration::from_secs(60), "the repaired shard read", || {
            Ok(on_bad.is_subset(&delivered(&log)))
        })?;
        assert!(other.health().parked_shards().is_empty());
        assert!(other.health().is_running());
        support::wait_for(Duration::from_secs(20), "the failure mark gone", || {
            Ok(fleet.status()?.shards.iter().all(|s| s.failure.is_none()))
        })?;
        stop_other.store(true, Ordering::SeqCst);
        for (name, t) in [("first", ta), ("second", tb)] {
            match t.join() {
                Ok(None) => {}
                Ok(Some(fatal)) => return Err(format!("{name} client ended: {fatal}").into()),
                Err(_) => return Err("collector panicked".into()),
            }
        }
        Ok(())
    })?;
    let all = delivered(&log);
    for i in 0..400 {
        assert!(all.contains(&i.to_string()), "record {i} never delivered");
    }
    a.stop();
    b.stop();
    Ok(())
}
