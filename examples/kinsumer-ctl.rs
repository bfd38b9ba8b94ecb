//! `kinsumer-ctl`: see and steer a fleet from the command line — status, lag, release,
//! rewind — through [`kinsumer::Fleet`], the same table code the consumers use.
//!
//! ```text
//! cargo run --example kinsumer-ctl -- status  --stream S --app A [--json]
//! cargo run --example kinsumer-ctl -- release SHARD --stream S --app A [--force]
//! cargo run --example kinsumer-ctl -- rewind  --to TIME|trim-horizon|latest --stream S --app A
//!                                             [--shards ID,ID] [--yes]
//! ```
//!
//! Common options: `--shard-check SECONDS` (the fleet's shard check frequency, default 60:
//! a lease, or a Go client, is alive if it wrote within 5 × this; a Rust client's row
//! states its own failover time). TIME is RFC 3339
//! (`2026-11-26T10:00:00Z`) or Unix seconds. `rewind` without `--yes` is a dry run.
//!
//! AWS access comes from the SDK's standard chain (`AWS_REGION`, credentials, and
//! `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL_DYNAMODB` for emulators). Exit codes:
//! 0 done, 2 bad input (nothing written), 1 anything else.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use kinsumer::{Config, ErrorKind, Fleet, FleetStatus, Released, RewindPlan, RewindTo};

const USAGE: &str = "usage: kinsumer-ctl status|release SHARD|rewind --to TIME|trim-horizon|latest \
                     --stream S --app A [--json] [--force] [--shards ID,ID] [--yes] [--shard-check SECONDS]";

#[derive(Debug, Default)]
struct Args {
    command: String,
    shard: Option<String>,
    stream: String,
    app: String,
    json: bool,
    force: bool,
    yes: bool,
    to: Option<String>,
    shards: Option<Vec<String>>,
    shard_check: Option<u64>,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.peekable();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--stream" => a.stream = value("--stream")?,
            "--app" => a.app = value("--app")?,
            "--json" => a.json = true,
            "--force" => a.force = true,
            "--yes" => a.yes = true,
            "--to" => a.to = Some(value("--to")?),
            "--shards" => {
                a.shards = Some(value("--shards")?.split(',').map(str::to_owned).collect());
            }
            "--shard-check" => {
                let v = value("--shard-check")?;
                a.shard_check = Some(
                    v.parse()
                        .map_err(|_| format!("--shard-check {v:?}: not a number of seconds"))?,
                );
            }
            "-h" | "--help" => return Err(USAGE.into()),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            word if a.command.is_empty() => a.command = word.to_owned(),
            word if a.command == "release" && a.shard.is_none() => a.shard = Some(word.to_owned()),
            word => return Err(format!("unexpected argument {word:?}")),
        }
    }
    if a.command.is_empty() {
        return Err(USAGE.into());
    }
    if a.stream.is_empty() || a.app.is_empty() {
        return Err("--stream and --app are required".into());
    }
    Ok(a)
}

/// RFC 3339, or Unix seconds.
fn parse_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(UNIX_EPOCH + Duration::from_secs(secs));
    }
    let t = DateTime::from_str(text, Format::DateTime)
        .map_err(|e| format!("--to {text:?}: not RFC 3339 or Unix seconds ({e})"))?;
    SystemTime::try_from(t).map_err(|e| format!("--to {text:?}: {e}"))
}

fn rewind_target(to: Option<&str>) -> Result<RewindTo, String> {
    match to {
        Some("trim-horizon") => Ok(RewindTo::TrimHorizon),
        Some("latest") => Ok(RewindTo::Latest),
        Some(time) => parse_time(time).map(RewindTo::Time),
        None => Err("rewind needs --to TIME|trim-horizon|latest".into()),
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
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(message) => {
            eprintln!("kinsumer-ctl: {message}");
            std::process::exit(2);
        }
    };
    match run(&args) {
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

fn run(args: &Args) -> Result<String, Failure> {
    let mut config = Config::default();
    if let Some(secs) = args.shard_check {
        let every = Duration::from_secs(secs);
        config = config
            .with_shard_check_frequency(every)
            .with_leader_action_frequency(every);
    }
    let fleet = Fleet::new(&args.stream, &args.app, config)?;
    match args.command.as_str() {
        "status" => {
            let status = fleet.status()?;
            Ok(if args.json {
                status_json(&status)
            } else {
                status_table(&status)
            })
        }
        "release" => {
            let shard = args
                .shard
                .as_deref()
                .ok_or(Failure::Usage("release needs a SHARD".into()))?;
            Ok(match fleet.release(shard, args.force)? {
                Released::Freed(holder) => format!("released {shard} (was held by {holder})\n"),
                _ => format!("{shard} was not leased; nothing to do\n"),
            })
        }
        "rewind" => {
            let to = rewind_target(args.to.as_deref()).map_err(Failure::Usage)?;
            let plan = fleet.plan_rewind(to, args.shards.as_deref())?;
            let mut out = plan_text(&plan);
            if args.yes {
                fleet.apply_rewind(&plan)?;
                out.push_str("applied: start the fleet to replay\n");
            } else {
                out.push_str("dry run: nothing written (add --yes to apply)\n");
            }
            Ok(out)
        }
        other => Err(Failure::Usage(format!(
            "unknown command {other:?}; {USAGE}"
        ))),
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

fn status_table(st: &FleetStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<24} {:>9} {:>14} {:>10} {:>10} {:>8}  parents",
        "shard", "owner", "lease", "checkpoint", "ckpt age", "behind", "finished"
    );
    for s in &st.shards {
        let owner = match (&s.owner_name, &s.owner_id) {
            (Some(name), Some(id)) => format!("{name} ({})", id.get(..8).unwrap_or(id)),
            (None, Some(id)) => id.clone(),
            _ => "-".into(),
        };
        let behind = s
            .millis_behind_latest
            .map_or("-".into(), |ms| format!("{ms}ms"));
        let checkpoint = match &s.start_position {
            Some(p) if s.checkpoint.is_none() => format!("({p})"),
            _ => short(s.checkpoint.as_deref()),
        };
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:>9} {:>14} {:>10} {:>10} {:>8}  {}",
            s.shard_id,
            owner,
            secs(s.lease_age.filter(|_| s.owner_id.is_some())),
            checkpoint,
            secs(s.checkpoint_age),
            behind,
            if s.finished { "yes" } else { "no" },
            if s.parents.is_empty() {
                "-".into()
            } else {
                s.parents.join(",")
            },
        );
    }
    for s in st.shards.iter().filter(|s| s.failure.is_some()) {
        let _ = writeln!(
            out,
            "PARKED {}: {}",
            s.shard_id,
            s.failure.as_deref().unwrap_or_default()
        );
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
    let _ = writeln!(out, "shard cache: written {} ago", secs(st.shard_cache_age));
    out
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
                 \"checkpoint_age_s\":{},\"millis_behind_latest\":{},\"finished\":{},\"parents\":[{}],\"start_position\":{},\"failure\":{}}}",
                json_str(&s.shard_id),
                json_opt_str(s.owner_id.as_deref()),
                json_opt_str(s.owner_name.as_deref()),
                json_opt_secs(s.lease_age),
                json_opt_str(s.checkpoint.as_deref()),
                json_opt_secs(s.checkpoint_age),
                s.millis_behind_latest.map_or("null".into(), |m| m.to_string()),
                s.finished,
                parents.join(","),
                json_opt_str(s.start_position.as_deref()),
                json_opt_str(s.failure.as_deref()),
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
    format!(
        "{{\"shards\":[{}],\"clients\":[{}],\"leader\":{},\"shard_cache_age_s\":{}}}\n",
        shards.join(","),
        clients.join(","),
        leader,
        json_opt_secs(st.shard_cache_age)
    )
}

fn plan_text(plan: &RewindPlan) -> String {
    let to = match plan.to {
        RewindTo::TrimHorizon => "the oldest record (TRIM_HORIZON)".to_owned(),
        RewindTo::Time(t) => format!(
            "records arriving at or after {}",
            DateTime::from(t).fmt(Format::DateTime).unwrap_or_default()
        ),
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
