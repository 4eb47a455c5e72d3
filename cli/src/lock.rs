//! `lock NAME [--ttl N] [--timeout D | --try] [COMMAND…]`, like `etcdctl lock`: take the lock
//! through etcd's v3lock service on a lease of our own, then run COMMAND while holding it and exit
//! with its status, or print the key and hold until Ctrl-C. Either way the lease is revoked at the
//! end, which releases the lock. `--timeout` gives up waiting (the server removes the abandoned
//! key, as etcd's does); `--try` does not wait at all (the lock plugin's `try-acquire`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use conclave_proto::v3lockpb::LockRequest;
use conclave_proto::v3lockpb::lock_client::LockClient;
use serde_json::json;

use crate::connect::connect;
use crate::global::GlobalArgs;
use crate::recipe::Recipe;
use crate::rpc::{block_on, status_error};
use crate::session::Session;

#[derive(Args, Debug)]
pub struct LockArgs {
    /// The lock's name: its holders' keys are NAME/<lease id in hex>.
    name: String,
    /// TTL in seconds of the lease the lock is held on (kept alive while holding).
    #[arg(long, default_value_t = 60)]
    ttl: i64,
    /// Give up when the lock is not taken within this long (e.g. `5s`, `500ms`).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "try_lock")]
    timeout: Option<Duration>,
    /// Fail at once when another holds the lock, instead of waiting.
    #[arg(long = "try")]
    try_lock: bool,
    /// A command to run while holding the lock (after `--` when it has flags of its own).
    #[arg(trailing_var_arg = true)]
    command: Vec<String>,
}

pub fn run(args: LockArgs, global: &GlobalArgs, out: &mut impl Write) -> Result<ExitCode> {
    block_on(async {
        let channel = connect(&global.dial()?).await?;
        let mut session = Session::grant(channel.clone(), args.ttl, global.command_timeout).await?;
        let held = tokio::select! {
            held = hold(LockClient::new(channel), &args, global, &mut session, out) => held,
            // Dropping the waiting Lock call makes the server remove our key.
            interrupted = tokio::signal::ctrl_c() => interrupted.map(|()| ExitCode::SUCCESS).map_err(Into::into),
        };
        let closed = session.close(global.command_timeout).await;
        let code = held?;
        closed?;
        Ok(code)
    })
}

/// Take the lock, then run the command or wait for Ctrl-C; fails if the lease is lost first.
async fn hold(
    client: LockClient<tonic::transport::Channel>,
    args: &LockArgs,
    global: &GlobalArgs,
    session: &mut Session,
    out: &mut impl Write,
) -> Result<ExitCode> {
    let (key, revision) = take(client, args, global, session.lease()).await?;
    let Some((program, rest)) = args.command.split_first() else {
        writeln!(out, "{key}")?;
        out.flush()?;
        return Err(session.lost().await);
    };
    // etcdctl's variables, so scripts written for `etcdctl lock` read the same.
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .env("ETCD_LOCK_KEY", &key)
        .env("ETCD_LOCK_REV", revision.to_string())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    tokio::select! {
        status = child.wait() => {
            let status = status?;
            match status.code() {
                Some(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
                None => bail!("{program} was killed by a signal ({status})"),
            }
        }
        lost = session.lost() => Err(lost.context("the lock was lost while the command ran")),
    }
}

/// The lock's key and the revision it was taken at: waiting through v3lock (up to `--timeout`),
/// or with `--try` not at all.
async fn take(mut client: LockClient<tonic::transport::Channel>, args: &LockArgs, global: &GlobalArgs, lease: i64) -> Result<(String, i64)> {
    if args.try_lock {
        let mut lock = Recipe::connect(global, "lock").await?;
        let held = lock.call("try-acquire", &json!({"name": args.name, "lease": lease})).await?;
        let key = held["key"].as_str().context("try-acquire answered without a key")?.to_string();
        return Ok((key, held["revision"].as_i64().unwrap_or(0)));
    }
    let request = LockRequest { name: args.name.clone().into_bytes(), lease };
    let locked = client.lock(request);
    let response = match args.timeout {
        // Dropping the call on timeout makes the server remove our key.
        Some(timeout) => tokio::time::timeout(timeout, locked)
            .await
            .map_err(|_| anyhow!("timed out after {} waiting for lock {}", humantime::format_duration(timeout), args.name))?,
        None => locked.await,
    };
    let response = response.map_err(status_error)?.into_inner();
    Ok((String::from_utf8_lossy(&response.key).into_owned(), response.header.map_or(0, |h| h.revision)))
}
