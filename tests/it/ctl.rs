//! The operator's tools: `Fleet` (status, release, rewind) against the embedded
//! emulators, and the `kinsumer-ctl` binary's output and exit codes.

use kinsumer::Polled;
use std::process::Command;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;
use kinsumer::{ErrorKind, Fleet, Kinsumer, Released, RewindTo};

use crate::support::{self, Env, TestResult};

fn fleet(env: &Env) -> TestResult<Fleet> {
    Ok(Fleet::from_clients(
        &env.kinesis,
        &env.dynamodb,
        &env.stream,
        &env.app,
        support::fast_config(),
    )?)
}

#[test]
fn status_shows_owners_checkpoints_lag_clients_and_leader() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    env.put_numbered(0, 40, 7)?;
    let consumer = env.consumer("worker", support::fast_config())?;
    consumer.run()?;
    support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 40)?;
    let fleet = fleet(&env)?;
    support::wait_for(
        Duration::from_secs(10),
        "checkpoints on both shards, and a load published (at least a second in)",
        || {
            let shards = fleet.status()?.shards;
            Ok(shards.iter().all(|s| s.checkpoint.is_some())
                && shards.iter().any(|s| s.load.is_some_and(|l| l > 0.0)))
        },
    )?;
    let status = fleet.status()?;
    assert_eq!(status.shards.len(), 2);
    for s in &status.shards {
        assert_eq!(s.owner_id.as_deref(), Some(consumer.client_id()));
        assert_eq!(s.owner_name.as_deref(), Some("worker"));
        assert!(
            s.lease_age.is_some_and(|a| a < Duration::from_secs(10)),
            "{s:?}"
        );
        assert!(s.checkpoint_age.is_some(), "{s:?}");
        assert_eq!(s.millis_behind_latest, Some(0), "{s:?}");
        assert!(!s.finished);
        assert!(s.parents.is_empty());
        // Commits publish the shard's load; one client: nothing moved.
        assert!(s.load.is_some(), "{s:?}");
        assert_eq!(s.moved_to, None);
    }
    // Records arrived on at least one shard: its load is above zero.
    assert!(
        status
            .shards
            .iter()
            .any(|s| s.load.is_some_and(|l| l > 0.0)),
        "{status:?}"
    );
    assert_eq!(status.clients.len(), 1);
    assert!(status.clients[0].live);
    assert_eq!(status.leader.as_ref().map(|l| l.1.as_str()), Some("worker"));
    assert!(status.shard_cache_age.is_some());
    consumer.stop();
    Ok(())
}

#[test]
fn release_frees_a_dead_holders_lease_and_refuses_a_live_one() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let consumer = env.consumer("holder", support::fast_config())?;
    consumer.run()?;
    support::wait_for(Duration::from_secs(30), "both shards leased", || {
        Ok(env.owners()?.len() == 2)
    })?;
    let shards = env.shard_ids()?;
    let fleet = fleet(&env)?;
    let err = fleet
        .release(&shards[0], false)
        .expect_err("released a live lease");
    assert_eq!(err.kind(), ErrorKind::LeaseHeld);
    assert_eq!(env.owners()?.len(), 2, "a refused release wrote");
    assert!(err.to_string().contains("holder ("), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    // Forced: the holder still counts as live a while, and the answer says so.
    match fleet.release(&shards[0], true)? {
        Released::Freed(h) => {
            assert_eq!(h.id, consumer.client_id());
            assert_eq!(h.name.as_deref(), Some("holder"));
            assert!(h.counted_live_for.is_some(), "{h:?}");
            assert!(h.label().starts_with("holder ("), "{h:?}");
        }
        other => return Err(format!("expected a release, got {other:?}").into()),
    }
    consumer.stop();
    // A holder that is gone: no client row, a lease not written for an hour.
    env.block_on(
        env.dynamodb
            .put_item()
            .table_name(format!("{}_checkpoints", env.app))
            .item("Shard", AttributeValue::S(shards[1].clone()))
            .item("OwnerID", AttributeValue::S("ghost".into()))
            .item("LastUpdate", AttributeValue::N("1".into()))
            .send(),
    )?;
    match fleet.release(&shards[1], false)? {
        Released::Freed(h) => {
            assert_eq!((h.id.as_str(), h.name.as_deref()), ("ghost", None));
            assert_eq!(h.counted_live_for, None);
        }
        other => return Err(format!("expected a release, got {other:?}").into()),
    }
    assert!(env.owners()?.is_empty());
    assert_eq!(fleet.release(&shards[1], false)?, Released::NotHeld);
    let err = fleet
        .release("shardId-999", false)
        .expect_err("unknown shard");
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    Ok(())
}

fn drain(env: &mut Env, n: usize) -> TestResult<Vec<String>> {
    let consumer = env.consumer("replayer", support::fast_config())?;
    consumer.run()?;
    let seen = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= n)?;
    // Nothing beyond.
    match consumer.records().next_timeout(Duration::from_secs(1)) {
        Polled::TimedOut => {}
        other => return Err(format!("unexpected extra item {other:?}").into()),
    }
    consumer.stop();
    Ok(seen)
}

#[test]
fn rewind_to_a_time_replays_exactly_what_arrived_after_it() -> TestResult {
    support::init_logging();
    let mut env = Env::new(1)?;
    env.put_numbered(0, 20, 3)?;
    support::let_time_pass(Duration::from_secs(2))?;
    let t = SystemTime::now();
    support::let_time_pass(Duration::from_secs(1))?;
    env.put_numbered(20, 40, 3)?;
    assert_eq!(drain(&mut env, 40)?.len(), 40);
    let shard = env.shard_ids()?.remove(0);
    let before = env.checkpoint(&shard)?;
    let fleet = fleet(&env)?;

    // Refused while a client is live.
    let live = env.consumer("live", support::fast_config())?;
    live.run()?;
    let err = fleet
        .plan_rewind(RewindTo::Time(t), None)
        .expect_err("rewound a live fleet");
    assert_eq!(err.kind(), ErrorKind::FleetRunning);
    live.stop();

    // Bad times.
    let future = SystemTime::now() + Duration::from_secs(3600);
    let err = fleet
        .plan_rewind(RewindTo::Time(future), None)
        .expect_err("future");
    assert_eq!(err.kind(), ErrorKind::InvalidRewind);
    let ancient = SystemTime::now() - Duration::from_secs(48 * 3600);
    let err = fleet
        .plan_rewind(RewindTo::Time(ancient), None)
        .expect_err("ancient");
    assert_eq!(err.kind(), ErrorKind::InvalidRewind);

    // A plan writes nothing; applying it does.
    let plan = fleet.plan_rewind(RewindTo::Time(t), None)?;
    assert_eq!(plan.steps.len(), 1);
    assert_eq!(plan.steps[0].from, before);
    assert_eq!(env.checkpoint(&shard)?, before, "the dry run wrote");
    fleet.apply_rewind(&plan)?;
    assert_eq!(env.checkpoint(&shard)?, None);

    let replayed = drain(&mut env, 20)?;
    let expected: Vec<String> = (20..40).map(|i| i.to_string()).collect();
    assert_eq!(replayed, expected);

    // And to the oldest record: everything again.
    let plan = fleet.plan_rewind(RewindTo::TrimHorizon, Some(&[shard]))?;
    fleet.apply_rewind(&plan)?;
    assert_eq!(drain(&mut env, 40)?.len(), 40);
    Ok(())
}

#[test]
fn a_rewind_loses_to_a_client_that_captured_the_shard_meanwhile() -> TestResult {
    let mut env = Env::new(1)?;
    drop(env.consumer("tables", support::fast_config())?);
    let fleet = fleet(&env)?;
    let plan = fleet.plan_rewind(RewindTo::TrimHorizon, None)?;
    let racer = env.consumer("racer", support::fast_config())?;
    racer.run()?;
    support::wait_for(Duration::from_secs(30), "the lease taken", || {
        Ok(env.owners()?.len() == 1)
    })?;
    let err = fleet
        .apply_rewind(&plan)
        .expect_err("overwrote a live lease");
    assert_eq!(err.kind(), ErrorKind::FleetRunning);
    assert_eq!(env.owners()?.len(), 1);
    racer.stop();
    Ok(())
}

/// A command for example `name`, pointed at this env's servers through the SDK's
/// standard variables.
pub(crate) fn example(env: &Env, name: &str) -> TestResult<Command> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or("no target dir")?;
    Ok(pointed_at(
        env,
        Command::new(dir.join("examples").join(name)),
    ))
}

/// `command` with the SDK's standard variables pointing at this env's servers.
fn pointed_at(env: &Env, mut command: Command) -> Command {
    command
        .env("AWS_ENDPOINT_URL_KINESIS", env.emulators.kinesis_endpoint())
        .env(
            "AWS_ENDPOINT_URL_DYNAMODB",
            env.emulators.dynamodb_endpoint(),
        )
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE");
    command
}

/// Runs the `kinsumer-ctl` binary against this env's servers. Returns (exit code,
/// stdout, stderr).
fn ctl(env: &Env, args: &[&str]) -> TestResult<(i32, String, String)> {
    let out = pointed_at(env, Command::new(env!("CARGO_BIN_EXE_kinsumer-ctl")))
        .args(args)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn kinsumer_ctl_prints_status_and_exits_2_on_bad_input() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    let consumer: Kinsumer = env.consumer("worker", support::fast_config())?;
    consumer.run()?;
    let (stream, app) = (env.stream.clone(), env.app.clone());
    let base = ["--stream", stream.as_str(), "--app", app.as_str()];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        extra.iter().copied().chain(base.iter().copied()).collect()
    };

    let (code, out, err) = ctl(&env, &with(&["status"]))?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("shardId-000000000000") && out.contains("worker"),
        "{out}"
    );
    let (code, out, _) = ctl(&env, &with(&["status", "--json"]))?;
    assert_eq!(code, 0);
    assert!(out.starts_with("{\"shards\":[{\"shard_id\":"), "{out}");

    // Live clients: a rewind is refused, nothing written; it names them as status does.
    let (code, _, err) = ctl(&env, &with(&["rewind", "--to", "trim-horizon", "--yes"]))?;
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("1 client(s) running: worker ("), "{err}");
    // A live holder's lease: refused without --force (the flag named), and when forced,
    // the answer says the holder still counts as live for a while.
    let shard = "shardId-000000000000";
    let (code, _, err) = ctl(&env, &with(&["release", shard]))?;
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("leased by worker (") && err.contains("--force"),
        "{err}"
    );
    let (code, out, err) = ctl(&env, &with(&["release", shard, "--force"]))?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("was held by worker ("), "{out}");
    assert!(out.contains("still counts as a live client for"), "{out}");
    consumer.stop();

    // Bad input, each one line on stderr and exit code 2.
    for args in [
        with(&["rewind", "--to", "2999-01-01T00:00:00Z"]),
        with(&["rewind", "--to", "yesterday-ish"]),
        with(&["rewind"]),
        vec![
            "status",
            "--stream",
            "no-such-stream",
            "--app",
            app.as_str(),
        ],
        vec![
            "status",
            "--stream",
            stream.as_str(),
            "--app",
            "no-such-app",
        ],
        with(&["frobnicate"]),
    ] {
        let (code, out, err) = ctl(&env, &args)?;
        assert_eq!(code, 2, "{args:?}: {out} {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    // Help and version: printed, exit 0.
    for args in [
        vec!["--help"],
        vec!["-h"],
        vec!["rewind", "--help"],
        vec!["--version"],
    ] {
        let (code, out, err) = ctl(&env, &args)?;
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            out.contains("kinsumer-ctl") || out.contains("Usage"),
            "{args:?}: {out}"
        );
    }
    let (_, out, _) = ctl(&env, &["--help"])?;
    for command in ["status", "release", "rewind"] {
        assert!(out.contains(command), "{out}");
    }
    // RFC 3339 in the forms `date` prints: any offset, `T` or a space.
    let then =
        (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60)).round(jiff::Unit::Second)?;
    let utc = format!("{then:.0}");
    let forms = [
        utc.clone(),
        format!("{:.0}", then.display_with_offset(jiff::tz::offset(1))),
        format!("{:.0}", then.display_with_offset(jiff::tz::offset(0))).replace('T', " "),
        format!("{:.0}", then.display_with_offset(jiff::tz::offset(-5))),
    ];
    let rewind = |to: &str, yes: bool| -> TestResult<(i32, String, String)> {
        let mut args = vec!["rewind", "--to", to];
        if yes {
            args.push("--yes");
        }
        args.extend(base);
        ctl(&env, &args)
    };
    for form in &forms {
        let (code, out, err) = rewind(form, false)?;
        assert_eq!(code, 0, "{form}: {err}");
        assert!(
            out.contains(&format!("records arriving at or after {utc}")),
            "{form}: {out}"
        );
    }
    // A rewound shard's start shows as a time, on a line of its own.
    let (code, _, err) = rewind(&forms[1], true)?;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = ctl(&env, &with(&["status"]))?;
    assert!(
        out.contains(&format!(
            "starts at records arriving at or after {utc} (AT_TIMESTAMP)"
        )),
        "{out}"
    );
    assert!(out.contains("(rewound)"), "{out}");
    assert!(
        !out.split(|c: char| !c.is_ascii_digit())
            .any(|d| d.len() >= 19),
        "raw nanoseconds: {out}"
    );
    // The dry run, then the real thing.
    let (code, out, _) = ctl(&env, &with(&["rewind", "--to", "trim-horizon"]))?;
    assert_eq!(code, 0);
    assert!(out.contains("dry run"), "{out}");
    let (code, out, _) = ctl(&env, &with(&["rewind", "--to", "latest", "--yes"]))?;
    assert_eq!(code, 0);
    assert!(out.contains("applied"), "{out}");
    Ok(())
}

/// The `noop` example on an idle stream prints a status line every few seconds, so it
/// does not look hung.
#[test]
fn noop_prints_a_status_line_on_an_idle_stream() -> TestResult {
    let env = Env::new(1)?;
    let mut child = example(&env, "noop")?
        .args([
            "--stream",
            &env.stream,
            "--app",
            &env.app,
            "--create-tables",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let (rx, reader) = lines_of(&mut child)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut status = None;
    while let Ok(line) = rx.recv_deadline(deadline) {
        if line.contains("records so far") {
            status = Some(line);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let status = status.ok_or("no status line within 30 s")?;
    assert!(status.starts_with("0 records so far; "), "{status}");
    assert!(status.contains("shards owned"), "{status}");
    Ok(())
}

/// A profile that does not exist (`AWS_PROFILE=prod`, no config files) is named in the
/// one-line error, with the ways to provide credentials.
#[test]
fn kinsumer_ctl_names_a_missing_profile() -> TestResult {
    support::init_logging();
    let env = Env::new(1)?;
    let missing = std::env::temp_dir().join(format!("kinsumer-no-such-file-{}", env.app));
    let mut command = pointed_at(&env, Command::new(env!("CARGO_BIN_EXE_kinsumer-ctl")));
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        command.env_remove(var);
    }
    let out = command
        .env("AWS_PROFILE", "prod")
        .env("AWS_CONFIG_FILE", &missing)
        .env("AWS_SHARED_CREDENTIALS_FILE", &missing)
        // Never ask an instance metadata service (not a loopback address).
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["status", "--stream", &env.stream, "--app", &env.app])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no AWS credentials found"), "{err}");
    assert!(err.contains("profile \"prod\" (AWS_PROFILE)"), "{err}");
    Ok(())
}

/// `status` names the fleet's largest lag (also in `--json`), and `--watch` redraws.
#[test]
fn kinsumer_ctl_status_shows_the_max_lag_and_watch_redraws() -> TestResult {
    support::init_logging();
    let mut env = Env::new(2)?;
    env.put_numbered(0, 20, 5)?;
    let consumer = env.consumer("lagging", support::fast_config())?;
    consumer.run()?;
    let _ = support::collect_until(&consumer, Duration::from_secs(30), |s| s.len() >= 20)?;
    consumer.stop();
    let base = ["--stream", env.stream.as_str(), "--app", env.app.as_str()];
    let (code, out, err) = ctl(&env, &[&["status"][..], &base].concat())?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("fleet: ") && out.contains("behind at most (shardId-"),
        "{out}"
    );
    let (_, json, _) = ctl(&env, &[&["status", "--json"][..], &base].concat())?;
    assert!(
        json.contains("\"max_lag\":{\"shard_id\":\"shardId-"),
        "{json}"
    );
    // Two frames of --watch 1, then it is stopped.
    let mut child = pointed_at(&env, Command::new(env!("CARGO_BIN_EXE_kinsumer-ctl")))
        .args([&["status", "--watch", "1", "--json"][..], &base].concat())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let (rx, reader) = lines_of(&mut child)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut frames = 0;
    while frames < 2 {
        match rx.recv_deadline(deadline) {
            Ok(line) if line.starts_with("{\"shards\":") => frames += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    child.kill()?;
    child.wait()?;
    let _ = reader.join();
    assert_eq!(frames, 2, "frames of --watch");
    let (code, _, err) = ctl(&env, &[&["status", "--watch", "0"][..], &base].concat())?;
    assert_eq!(code, 2, "{err}");
    Ok(())
}

/// The lines `child` prints, read on a thread (so that a wait for them has a deadline).
pub(crate) fn lines_of(
    child: &mut std::process::Child,
) -> TestResult<(
    crossbeam_channel::Receiver<String>,
    std::thread::JoinHandle<()>,
)> {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((rx, reader))
}
