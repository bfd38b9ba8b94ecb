//! A model of fleets at scale, simulated (no servers): the assignment and the load
//! balancing as clients compute them, and the DynamoDB requests of the protocol as
//! implemented, for a stream of `--shards` (default 10,000) over `--clients` (100) with
//! a Zipf-skewed load (`--zipf S`, default 1.0), plus the 16-shard, 2-hot, 4-client case.
//!
//! ```text
//! cargo bench --bench scale [-- --shards N --clients C --zipf S]
//! ```
//!
//! Prints one `key=value` line per figure group (and the same as JSON).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use kinsumer::balance::{self, Plan, Rules};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    shards: usize,
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Zipf exponent of the shards' loads (0: even).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Ignored (cargo bench passes it).
    #[arg(long)]
    bench: bool,
}

fn shard_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("shardId-{i:012}")).collect()
}

/// Client ids as real clients make them: random UUID-like strings, sorted.
fn client_ids(n: usize, salt: u64) -> Vec<String> {
    let mut ids: Vec<String> = (0..n as u64).map(|i| uuid_like(i, salt)).collect();
    ids.sort();
    ids
}

fn uuid_like(i: u64, salt: u64) -> String {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
    let mut word = || {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    };
    let (a, b) = (word(), word());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Zipf loads: the shard of rank r carries `top / r^s` (ranks scattered over the ids).
fn zipf_loads(shards: &[String], s: f64, top: f64) -> HashMap<String, f64> {
    let n = shards.len();
    shards
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let rank = (i * 7_919) % n + 1;
            (id.clone(), top / (rank as f64).powf(s))
        })
        .collect()
}

/// The loads with ±`noise` (a fraction) of deterministic jitter, seeded by `round`.
fn jittered(load: &HashMap<String, f64>, noise: f64, round: u64) -> HashMap<String, f64> {
    load.iter()
        .map(|(id, l)| {
            let h = id
                .bytes()
                .fold(round.wrapping_mul(0x100_0000_01b3), |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
            let unit = (h >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
            (id.clone(), l * (1.0 + noise * (2.0 * unit - 1.0)))
        })
        .collect()
}

struct Balance {
    max_over_mean: f64,
    lower_bound: f64,
}

fn balance_of(
    shards: &[String],
    clients: &[String],
    owners: &[usize],
    load: &HashMap<String, f64>,
) -> Balance {
    let mut carried = vec![0.0; clients.len()];
    for (s, &c) in owners.iter().enumerate() {
        carried[c] += load[&shards[s]];
    }
    let total: f64 = carried.iter().sum();
    let mean = total / clients.len() as f64;
    let hottest = shards.iter().map(|s| load[s]).fold(0.0, f64::max);
    Balance {
        max_over_mean: carried.iter().copied().fold(0.0, f64::max) / mean,
        lower_bound: (hottest / mean).max(1.0),
    }
}

/// Checks until the moves stop changing; returns them, the checks taken, and the shards
/// moved on the way (by owner, summed over checks).
fn settle(
    shards: &[String],
    clients: &[String],
    load: &HashMap<String, f64>,
    mut plan: Plan,
    limit: usize,
) -> (Plan, usize, usize) {
    let rules = Rules::for_clients(clients.len());
    let mut moved = 0;
    let mut owners = balance::owners(shards, clients, &plan.moves);
    for check in 0..limit {
        let next = balance::rebalance(shards, clients, load, &plan, &rules);
        if next == plan {
            return (plan, check, moved);
        }
        let after = balance::owners(shards, clients, &next.moves);
        moved += owners.iter().zip(&after).filter(|(a, b)| a != b).count();
        owners = after;
        plan = next;
    }
    (plan, limit, moved)
}

/// Shards whose owner (by id) differs between two (clients, owners) pairs.
fn moved_between(before: (&[String], &[usize]), after: (&[String], &[usize])) -> usize {
    before
        .1
        .iter()
        .zip(after.1)
        .filter(|(a, b)| before.0[**a] != after.0[**b])
        .count()
}

/// Shards moved over ten minutes of steady load from `settled`, at one check a minute,
/// each reading the loads with ±5 % noise.
fn moved_while_steady(
    shards: &[String],
    clients: &[String],
    load: &HashMap<String, f64>,
    settled: &Plan,
) -> usize {
    let rules = Rules::for_clients(clients.len());
    let mut plan = settled.clone();
    let mut moved = 0;
    for round in 0..10 {
        let next = balance::rebalance(shards, clients, &jittered(load, 0.05, round), &plan, &rules);
        moved += moved_between(
            (clients, &balance::owners(shards, clients, &plan.moves)),
            (clients, &balance::owners(shards, clients, &next.moves)),
        );
        plan = next;
    }
    moved
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A membership change (`after` clients) from a settled fleet: shards moved by the
/// count-balanced assignment alone, and by it plus balancing until settled.
fn membership_change(
    shards: &[String],
    before: &[String],
    after: &[String],
    load: &HashMap<String, f64>,
    settled: &Plan,
) -> (usize, usize, usize) {
    let count_only = moved_between(
        (before, &kinsumer::assign_shards(shards, before)),
        (after, &kinsumer::assign_shards(shards, after)),
    );
    let start = balance::owners(shards, before, &settled.moves);
    let (plan, checks, _) = settle(shards, after, load, settled.clone(), 500);
    let end = balance::owners(shards, after, &plan.moves);
    (
        count_only,
        moved_between((before, &start), (after, &end)),
        checks,
    )
}

fn report(name: &str, fields: &[(&str, String)]) {
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{name} {}", line.join(" "));
    let json: Vec<String> = fields
        .iter()
        .map(|(k, v)| match v.parse::<f64>() {
            Ok(_) => format!("\"{k}\":{v}"),
            Err(_) => format!("\"{k}\":\"{v}\""),
        })
        .collect();
    println!("{{\"scenario\":\"{name}\",{}}}", json.join(","));
}

fn fleet(args: &Args) {
    let shards = shard_ids(args.shards);
    let clients = client_ids(args.clients, 1);
    // Total 100 MB/s over the stream, Zipf-distributed.
    let raw = zipf_loads(&shards, args.zipf, 1.0);
    let sum: f64 = raw.values().sum();
    let load: HashMap<String, f64> = raw.into_iter().map(|(k, v)| (k, v * 1e8 / sum)).collect();
    let rules = Rules::for_clients(clients.len());
    // Time per check: the base assignment (every client, every shard check) and the
    // leader's rebalance (which includes one).
    let mut base_ms = Vec::new();
    let mut check_ms = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let base = kinsumer::assign_shards(&shards, &clients);
        base_ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(base);
        let t = Instant::now();
        let m = balance::rebalance(&shards, &clients, &load, &Plan::default(), &rules);
        check_ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(m);
    }
    let base = kinsumer::assign_shards(&shards, &clients);
    let before = balance_of(&shards, &clients, &base, &load);
    let (settled, checks, moved) = settle(&shards, &clients, &load, Plan::default(), 2_000);
    let after = balance_of(
        &shards,
        &clients,
        &balance::owners(&shards, &clients, &settled.moves),
        &load,
    );
    let steady_moved = moved_while_steady(&shards, &clients, &load, &settled);
    // A join, a leave (clean or crash: the same to the assignment).
    let mut joined = clients.clone();
    joined.push(uuid_like(10_000, 7));
    joined.sort();
    let (join_count, join_load, join_checks) =
        membership_change(&shards, &clients, &joined, &load, &settled);
    let left: Vec<String> = clients[1..].to_vec();
    let (leave_count, leave_load, leave_checks) =
        membership_change(&shards, &clients, &left, &load, &settled);
    let plan_bytes: usize = "Key".len()
        + "LoadPlan".len()
        + "Moves".len()
        + settled
            .moves
            .iter()
            .map(|(s, c)| s.len() + c.len() + 3)
            .sum::<usize>()
        + 128;
    let cache_bytes =
        64 + 64 + "ShardCache".len() + shards.iter().map(|s| s.len() + 3).sum::<usize>();
    report(
        "scale-assignment",
        &[
            ("shards", shards.len().to_string()),
            ("clients", clients.len().to_string()),
            ("zipf", format!("{}", args.zipf)),
            ("base_assignment_ms", format!("{:.1}", median(base_ms))),
            ("leader_check_ms", format!("{:.1}", median(check_ms))),
            (
                "count_max_over_mean",
                format!("{:.3}", before.max_over_mean),
            ),
            ("load_max_over_mean", format!("{:.3}", after.max_over_mean)),
            ("lower_bound", format!("{:.3}", after.lower_bound)),
            ("checks_to_settle", checks.to_string()),
            ("moved_to_settle", moved.to_string()),
            ("moves_in_plan", settled.moves.len().to_string()),
            ("plan_item_bytes", plan_bytes.to_string()),
            ("steady_10_checks_moved", steady_moved.to_string()),
            ("join_moved_count_only", join_count.to_string()),
            ("join_moved_by_load", join_load.to_string()),
            ("join_checks", join_checks.to_string()),
            ("leave_moved_count_only", leave_count.to_string()),
            ("leave_moved_by_load", leave_load.to_string()),
            ("leave_checks", leave_checks.to_string()),
            ("shard_cache_item_bytes", cache_bytes.to_string()),
            // The cache holds what fits in 390 KiB at ~23 bytes a shard id.
            (
                "shard_cache_limit_shards",
                ((390 * 1024 - 150) / 23).to_string(),
            ),
        ],
    );
    dynamo_model(shards.len(), clients.len());
}

/// The 16-shard stream with 2 shards at 10× the others' load, on 4 clients.
fn two_hot() {
    let shards = shard_ids(16);
    let mut worst: (f64, f64) = (0.0, 0.0);
    let (mut steady, mut join_ratio_max) = (0usize, 0.0f64);
    let (mut count_moved_sum, mut load_moved_sum) = (0usize, 0usize);
    let mut cases = 0;
    for salt in 0..50u64 {
        let clients = client_ids(4, salt);
        for (a, b) in [(0, 1), (3, 11), (5, 6), (2, 15)] {
            let load: HashMap<String, f64> = shards
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), if i == a || i == b { 1e7 } else { 1e6 }))
                .collect();
            let base = kinsumer::assign_shards(&shards, &clients);
            let count = balance_of(&shards, &clients, &base, &load).max_over_mean;
            let (settled, _, _) = settle(&shards, &clients, &load, Plan::default(), 100);
            let by_load = balance_of(
                &shards,
                &clients,
                &balance::owners(&shards, &clients, &settled.moves),
                &load,
            )
            .max_over_mean;
            worst = (worst.0.max(count), worst.1.max(by_load));
            steady += moved_while_steady(&shards, &clients, &load, &settled);
            let mut joined = clients.clone();
            joined.push(uuid_like(99, salt));
            joined.sort();
            let (count_moved, load_moved, _) =
                membership_change(&shards, &clients, &joined, &load, &settled);
            let left: Vec<String> = clients[1..].to_vec();
            let (lc, ll, _) = membership_change(&shards, &clients, &left, &load, &settled);
            for (c, l) in [(count_moved, load_moved), (lc, ll)] {
                count_moved_sum += c;
                load_moved_sum += l;
                if c > 0 {
                    join_ratio_max = join_ratio_max.max(l as f64 / c as f64);
                }
            }
            cases += 1;
        }
    }
    report(
        "scale-two-hot",
        &[
            ("cases", cases.to_string()),
            ("count_max_over_mean_worst", format!("{:.3}", worst.0)),
            ("load_max_over_mean_worst", format!("{:.3}", worst.1)),
            ("steady_10_checks_moved_total", steady.to_string()),
            (
                "join_leave_moved_vs_count_worst",
                format!("{join_ratio_max:.2}"),
            ),
            (
                "join_leave_moved_vs_count_overall",
                format!(
                    "{:.2}",
                    load_moved_sum as f64 / count_moved_sum.max(1) as f64
                ),
            ),
        ],
    );
}

/// DynamoDB requests of the protocol as implemented, at `Config::default()`: per client
/// a row PutItem and a clients-table Scan every failover/5 (3 s), a `FleetChange`
/// GetItem a second, and per shard check (1 min) GetItems of `ShardCache`,
/// `AssignmentMode` and `LoadPlan`; per shard an UpdateItem a second while busy (the
/// commit, carrying the heartbeat and the load) or a shard check when idle; the leader
/// also puts `Leader` and scans the checkpoints table (paged) every shard check.
fn dynamo_model(shards: usize, clients: usize) {
    let per_hour = |every: Duration| 3600.0 / every.as_secs_f64();
    let c = clients as f64;
    let s = shards as f64;
    // Consistent reads: 1 unit per 4 KB; writes: 1 unit per 1 KB.
    let client_row = 150.0;
    let checkpoint_row = 330.0;
    let scan_units = |rows: f64, bytes: f64| (rows * bytes / 4096.0).ceil();
    let row_writes = c * per_hour(Duration::from_secs(3));
    let client_scans = c * per_hour(Duration::from_secs(3)) * scan_units(c, client_row);
    let fleet_polls = c * per_hour(Duration::from_secs(1));
    let check_reads = c * 3.0 * per_hour(Duration::from_secs(60));
    let leader_scan_units = scan_units(s, checkpoint_row);
    let leader_scan_pages = (s * checkpoint_row / 1e6).ceil();
    let leader = per_hour(Duration::from_secs(60)) * (1.0 + leader_scan_units);
    // Requests a minute by operation, idle, to compare with a real run
    // (`cargo bench --bench throughput -- dynamo-cost --only default-idle`).
    let per_minute = |per_h: f64| per_h / 60.0;
    report(
        "scale-dynamodb-requests-per-minute-idle",
        &[
            ("shards", shards.to_string()),
            ("clients", clients.to_string()),
            ("PutItem", format!("{:.0}", per_minute(row_writes + 60.0))),
            (
                "Scan",
                format!(
                    "{:.0}",
                    per_minute(c * per_hour(Duration::from_secs(3)) + 60.0 * leader_scan_pages)
                ),
            ),
            (
                "GetItem",
                format!("{:.0}", per_minute(fleet_polls + check_reads)),
            ),
            ("UpdateItem", format!("{:.0}", s)),
        ],
    );
    for (label, commits) in [("idle", s * 60.0), ("busy", s * 3600.0)] {
        let writes = row_writes + commits + per_hour(Duration::from_secs(60));
        let reads = client_scans + fleet_polls + check_reads + leader;
        let dollars = writes * 1.25e-6 + reads * 0.25e-6;
        report(
            &format!("scale-dynamodb-{label}"),
            &[
                ("shards", shards.to_string()),
                ("clients", clients.to_string()),
                ("write_units_per_s", format!("{:.0}", writes / 3600.0)),
                ("read_units_per_s", format!("{:.0}", reads / 3600.0)),
                ("commits_per_s", format!("{:.0}", commits / 3600.0)),
                (
                    "client_scans_read_units_per_s",
                    format!("{:.0}", client_scans / 3600.0),
                ),
                ("leader_scan_pages", format!("{leader_scan_pages:.0}")),
                ("leader_scan_read_units", format!("{leader_scan_units:.0}")),
                ("on_demand_dollars_per_hour", format!("{dollars:.2}")),
            ],
        );
    }
}

fn main() {
    let args = Args::parse();
    two_hot();
    fleet(&args);
}
