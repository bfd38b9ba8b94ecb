//! `kinsumer-ctl`: see and steer a kinsumer fleet from the command line — status, lag,
//! release, rewind — through [`kinsumer::Fleet`], the same table code the consumers use.
//!
//! ```text
//! cargo install --path . --features cli
//! kinsumer-ctl status  --stream S --app A [--json] [--watch SECONDS]
//! kinsumer-ctl release SHARD --stream S --app A [--force]
//! kinsumer-ctl rewind  --to TIME|trim-horizon|latest --stream S --app A [--shards ID,ID] [--yes]
//! kinsumer-ctl --help
//! ```
//!
//! AWS access comes from the SDK's standard chain (`AWS_REGION`, credentials, and
//! `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL_DYNAMODB` for emulators). Exit codes:
//! 0 done, 2 bad input (nothing written; one line on stderr), 1 anything else.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use kinsumer::{
    Config, ErrorKind, Fleet, FleetStatus, InitialPosition, Released, RewindPlan, RewindTo,
};

/// See and steer a kinsumer fleet: the shards, their leases and checkpoints, the clients.
#[derive(Debug, Parser)]
#[command(name = "kinsumer-ctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which fleet: a stream and an application name.
#[derive(Debug, Args)]
struct FleetArgs {
    /// The Kinesis stream: its name, or its ARN (a stream of another account).
    #[arg(long)]
    stream: String,
    /// The application name (the tables are `<app>_clients`, `<app>_checkpoints`,
    /// `<app>_metadata`).
    #[arg(long)]
    app: String,
    /// The fleet's shard check frequency (default 60): a lease, or a Go client, is alive
    /// if it wrote within 5 × this.
    #[arg(long, value_name = "SECONDS")]
    shard_check: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Per shard: owner, lease age, checkpoint and its age, lag, load, finished, parents, and
    /// parked shards; then the clients, the leader and the shard cache.
    Status {
        #[command(flatten)]
        fleet: FleetArgs,
        /// One JSON object, for scripts (with --watch, one per line).
        #[arg(long)]
        json: bool,
        /// Redraw every SECONDS until interrupted (Ctrl-C).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
        watch: Option<u64>,
    },
    /// Frees the lease of a shard whose holder is gone.
    Release {
        /// The shard id.
        shard: String,
        #[command(flatten)]
        fleet: FleetArgs,
        /// Even if the holder or the lease looks alive.
        #[arg(long)]
        force: bool,
    },
    /// Moves checkpoints for a replay (the fleet stopped, or only parked shards). Without
    /// --yes, prints the plan only.
    Rewind {
        /// RFC 3339 with Z or an offset (2026-11-26T10:00:00Z, 2026-11-26T11:00:00+01:00,
        /// the output of `date -Iseconds`), Unix seconds, trim-horizon or latest.
        #[arg(long, value_name = "TIME|trim-horizon|latest")]
        to: String,
        /// Only these shards (comma-separated); default all.
        #[arg(long, value_delimiter = ',', value_name = "ID,ID")]
        shards: Option<Vec<String>>,
        /// Apply the plan.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        fleet: FleetArgs,
    },
}

/// The forms `--to` takes, for its help and its errors.
const TIME_FORMS: &str = "RFC 3339 with Z or an offset (2026-11-26T10:00:00Z, \
     2026-11-26T11:00:00+01:00, `date -Iseconds`, `date --rfc-3339=seconds`), \
     Unix seconds, trim-horizon or latest";

/// RFC 3339 (any offset, `T` or a space between date and time), or Unix seconds.
fn parse_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(UNIX_EPOCH + Duration::from_secs(secs));
    }
    let t = text
        .parse::<jiff::Timestamp>()
        .map_err(|e| format!("--to {text:?} is not a time ({e}); use {TIME_FORMS}"))?;
    SystemTime::try_from(t).map_err(|e| format!("--to {text:?}: {e}"))
}

/// `t` in RFC 3339, UTC, to the second.
fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map_or_else(
        |_| format!("{t:?}"),
        |ts| format!("{:.0}", ts.round(jiff::Unit::Second).unwrap_or(ts)),
    )
}

fn rewind_target(to: &str) -> Result<RewindTo, String> {
    match to {
        "trim-horizon" => Ok(RewindTo::TrimHorizon),
        "latest" => Ok(RewindTo::Latest),
        time => parse_time(time).map(RewindTo::Time),
    }
}

/// Failures, with the exit code they map to.
enum Failure {
    Usage(String),
    Kinsumer(kinsumer::Error),
}

impl From<kinsumer::Error> for Failure {
    fn from(e: kinsumer::Error) -> Self {
        Failure::Kinsumer(e)
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version: printed to stdout, exit 0.
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            // One line: clap's first, without its usage block.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("kinsumer-ctl: {first} (see kinsumer-ctl --help)");
            std::process::exit(2);
        }
    };
    match run(&cli.command) {
        Ok(output) => print!("{output}"),
        Err(Failure::Usage(message)) => {
            eprintln!("kinsumer-ctl: {message}");
            std::process::exit(2);
        }
        Err(Failure::Kinsumer(e)) => {
            eprintln!("kinsumer-ctl: {e}");
            let bad_input = e.is_config()
                || matches!(
                    e.kind(),
                    ErrorKind::NoSuchStream
                        | ErrorKind::TableNotFound
                        | ErrorKind::InvalidName
                        | ErrorKind::NoStreamName
                        | ErrorKind::NoApplicationName
                        | ErrorKind::InvalidRewind
                        | ErrorKind::LeaseHeld
                        | ErrorKind::FleetRunning
                );
            std::process::exit(if bad_input { 2 } else { 1 });
        }
    }
}

fn open(args: &FleetArgs) -> Result<Fleet, Failure> {
    let mut config = Config::default();
    if let Some(secs) = args.shard_check {
        let every = Duration::from_secs(secs);
        config = config
            .with_shard_check_frequency(every)
            .with_leader_action_frequency(every);
    }
    Ok(Fleet::new(&args.stream, &args.app, config)?)
}

fn run(command: &Command) -> Result<String, Failure> {
    match command {
        Command::Status {
            fleet,
            json,
            watch: None,
        } => Ok(status_text(&open(fleet)?.status()?, *json)),
        Command::Status {
            fleet,
            json,
            watch: Some(every),
        } => {
            let fleet = open(fleet)?;
            loop {
                let status = fleet.status()?;
                if *json {
                    print!("{}", status_json(&status));
                } else {
                    // Clear the screen, then draw.
                    print!("\x1b[2J\x1b[H{}", status_table(&status));
                }
                let _ = std::io::Write::flush(&mut std::io::stdout());
                std::thread::sleep(Duration::from_secs(*every));
            }
        }
        Command::Release {
            shard,
            fleet,
            force,
        } => Ok(match open(fleet)?.release(shard, *force)? {
            Released::Freed(holder) => released_text(shard, &holder),
            _ => format!("{shard} was not leased; nothing to do\n"),
        }),
        Command::Rewind {
            to,
            shards,
            yes,
            fleet,
        } => {
            let to = rewind_target(to).map_err(Failure::Usage)?;
            let fleet = open(fleet)?;
            let plan = fleet.plan_rewind(to, shards.as_deref())?;
            let mut out = plan_text(&plan);
            if *yes {
                fleet.apply_rewind(&plan)?;
                out.push_str("applied: start the fleet to replay\n");
            } else {
                out.push_str("dry run: nothing written (add --yes to apply)\n");
            }
            Ok(out)
        }
    }
}

/// What `release` says: whose lease it was, and whether the fleet still counts that
/// client live (then its shards move only once its heartbeat is that old).
fn released_text(shard: &str, holder: &kinsumer::FormerHolder) -> String {
    let mut out = format!("released {shard} (was held by {})\n", holder.label());
    if let Some(left) = holder.counted_live_for {
        let _ = writeln!(
            out,
            "note: {} still counts as a live client for {} (its last heartbeat is fresh): \
             the fleet moves its shards only after that, unless it writes again",
            holder.label(),
            secs(Some(left))
        );
    }
    out
}

fn status_text(status: &FleetStatus, json: bool) -> String {
    if json {
        status_json(status)
    } else {
        status_table(status)
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}s", d.as_secs_f64()))
}

fn short(seq: Option<&str>) -> String {
    match seq {
        Some(s) if s.len() > 16 => format!("…{}", &s[s.len() - 12..]),
        Some(s) => s.to_owned(),
        None => "-".into(),
    }
}

/// One shard's line of the status table.
fn shard_line(s: &kinsumer::ShardStatus) -> String {
    let owner = s.owner_label().unwrap_or_else(|| "-".into());
    let behind = s
        .millis_behind_latest
        .map_or("-".into(), |ms| format!("{ms}ms"));
    let checkpoint = match &s.start_position {
        Some(_) if s.checkpoint.is_none() => "(rewound)".to_owned(),
        _ => short(s.checkpoint.as_deref()),
    };
    format!(
        "{:<24} {:<24} {:>9} {:>14} {:>10} {:>10} {:>10} {:>8}  {}\n",
        s.shard_id,
        owner,
        secs(s.lease_age.filter(|_| s.owner_id.is_some())),
        checkpoint,
        secs(s.checkpoint_age),
        behind,
        load_text(s.load, s.moved_to.is_some()),
        if s.finished { "yes" } else { "no" },
        if s.parents.is_empty() {
            "-".into()
        } else {
            s.parents.join(",")
        },
    )
}

/// A published load, e.g. `1.2MB/s`, marked `*` when the leader moved the shard by load.
fn load_text(load: Option<f64>, moved: bool) -> String {
    let Some(l) = load else {
        return "-".into();
    };
    let text = if l >= 1e6 {
        format!("{:.1}MB/s", l / 1e6)
    } else if l >= 1e3 {
        format!("{:.1}kB/s", l / 1e3)
    } else {
        format!("{l:.0}B/s")
    };
    if moved { format!("{text}*") } else { text }
}

fn status_table(st: &FleetStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<24} {:>9} {:>14} {:>10} {:>10} {:>10} {:>8}  parents",
        "shard", "owner", "lease", "checkpoint", "ckpt age", "behind", "load", "finished"
    );
    for s in &st.shards {
        out.push_str(&shard_line(s));
    }
    if st.shards.iter().any(|s| s.moved_to.is_some()) {
        out.push_str("* moved off the count-balanced assignment by the leader, for load\n");
    }
    for s in st.shards.iter().filter(|s| s.failure.is_some()) {
        let _ = writeln!(
            out,
            "PARKED {}: {}",
            s.shard_id,
            s.failure.as_deref().unwrap_or_default()
        );
    }
    for s in &st.shards {
        if let (Some(p), None) = (&s.start_position, &s.checkpoint) {
            let _ = writeln!(
                out,
                "REWOUND {}: starts at {}",
                s.shard_id,
                position_text(p)
            );
        }
    }
    match st.max_lag() {
        Some((shard, ms)) => {
            let _ = writeln!(out, "fleet: {ms}ms behind at most ({shard})");
        }
        None => out.push_str("fleet: lag unknown\n"),
    }
    let _ = writeln!(out, "\nclients:");
    for c in &st.clients {
        let _ = writeln!(
            out,
            "  {:<20} {}  heartbeat {} ago{}",
            c.name,
            c.id,
            secs(Some(c.age)),
            if c.live { "" } else { " (gone)" }
        );
    }
    match &st.leader {
        Some((id, name, age)) => {
            let _ = writeln!(
                out,
                "leader: {name} ({id}), item written {} ago",
                secs(Some(*age))
            );
        }
        None => out.push_str("leader: none\n"),
    }
    match st.shard_cache_age {
        Some(age) => {
            let _ = writeln!(out, "shard cache: written {} ago", secs(Some(age)));
        }
        None => out.push_str("shard cache: none yet (the leader writes it)\n"),
    }
    out
}

/// A start position in words.
fn position_text(p: &InitialPosition) -> String {
    match p {
        InitialPosition::TrimHorizon => "the oldest record (TRIM_HORIZON)".to_owned(),
        InitialPosition::Latest => "the tip (LATEST)".to_owned(),
        InitialPosition::AtTimestamp(t) => {
            format!(
                "records arriving at or after {} (AT_TIMESTAMP)",
                rfc3339(*t)
            )
        }
        other => other.to_string(),
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt_str(s: Option<&str>) -> String {
    s.map_or("null".into(), json_str)
}

fn json_opt_secs(d: Option<Duration>) -> String {
    d.map_or("null".into(), |d| format!("{:.3}", d.as_secs_f64()))
}

fn status_json(st: &FleetStatus) -> String {
    let shards: Vec<String> = st
        .shards
        .iter()
        .map(|s| {
            let parents: Vec<String> = s.parents.iter().map(|p| json_str(p)).collect();
            format!(
                "{{\"shard_id\":{},\"owner_id\":{},\"owner_name\":{},\"lease_age_s\":{},\"checkpoint\":{},\
                 \"checkpoint_age_s\":{},\"millis_behind_latest\":{},\"finished\":{},\"parents\":[{}],\"start_position\":{},\"failure\":{},\
                 \"load\":{},\"moved_to\":{}}}",
                json_str(&s.shard_id),
                json_opt_str(s.owner_id.as_deref()),
                json_opt_str(s.owner_name.as_deref()),
                json_opt_secs(s.lease_age),
                json_opt_str(s.checkpoint.as_deref()),
                json_opt_secs(s.checkpoint_age),
                s.millis_behind_latest.map_or("null".into(), |m| m.to_string()),
                s.finished,
                parents.join(","),
                json_opt_str(s.start_position.map(|p| p.to_string()).as_deref()),
                json_opt_str(s.failure.as_deref()),
                s.load.map_or("null".into(), |l| format!("{l:.0}")),
                json_opt_str(s.moved_to.as_deref()),
            )
        })
        .collect();
    let clients: Vec<String> = st
        .clients
        .iter()
        .map(|c| {
            format!(
                "{{\"id\":{},\"name\":{},\"age_s\":{:.3},\"live\":{}}}",
                json_str(&c.id),
                json_str(&c.name),
                c.age.as_secs_f64(),
                c.live
            )
        })
        .collect();
    let leader = st.leader.as_ref().map_or("null".into(), |(id, name, age)| {
        format!(
            "{{\"id\":{},\"name\":{},\"age_s\":{:.3}}}",
            json_str(id),
            json_str(name),
            age.as_secs_f64()
        )
    });
    let max_lag = st.max_lag().map_or("null".into(), |(shard, ms)| {
        format!(
            "{{\"shard_id\":{},\"millis_behind_latest\":{ms}}}",
            json_str(shard)
        )
    });
    format!(
        "{{\"shards\":[{}],\"clients\":[{}],\"leader\":{},\"shard_cache_age_s\":{},\"max_lag\":{}}}\n",
        shards.join(","),
        clients.join(","),
        leader,
        json_opt_secs(st.shard_cache_age),
        max_lag
    )
}

fn plan_text(plan: &RewindPlan) -> String {
    let to = match plan.to {
        RewindTo::TrimHorizon => position_text(&InitialPosition::TrimHorizon),
        RewindTo::Latest => position_text(&InitialPosition::Latest),
        RewindTo::Time(t) => position_text(&InitialPosition::AtTimestamp(t)),
        other => format!("{other:?}"),
    };
    let mut out = format!("rewind {} shard(s) to {to}:\n", plan.steps.len());
    for step in &plan.steps {
        let _ = writeln!(
            out,
            "  {:<24} checkpoint {}{}",
            step.shard_id,
            short(step.from.as_deref()),
            if step.finished {
                " (finished: will be read again)"
            } else {
                ""
            }
        );
    }
    out
}
