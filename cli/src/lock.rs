//! `lock NAME [--ttl N] [COMMAND…]`, like `etcdctl lock`: take the lock through etcd's v3lock
//! service on a lease of our own, then run COMMAND while holding it and exit with its status,
//! or print the key and hold until Ctrl-C. Either way the lease is revoked at the end, which
//! releases the lock.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use conclave_proto::v3lockpb::LockRequest;
use conclave_proto::v3lockpb::lock_client::LockClient;

use crate::connect::connect;
use crate::global::GlobalArgs;
use crate::rpc::{block_on, status_error};
use crate::session::Session;

#[derive(Args, Debug)]
pub struct LockArgs {
    /// The lock's name: its holders' keys are NAME/<lease id in hex>.
    name: String,
    /// TTL in seconds of the lease the lock is held on (kept alive while holding).
    #[arg(long, default_value_t = 60)]
    ttl: i64,
    /// A command to run while holding the lock (after `--` when it has flags of its own).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(args: LockArgs, global: &GlobalArgs, out: &mut impl Write) -> Result<ExitCode> {
    block_on(async {
        let channel = connect(&global.dial()).await?;
        let mut session = Session::grant(channel.clone(), args.ttl, global.command_timeout).await?;
        let held = tokio::select! {
            held = hold(LockClient::new(channel), &args, &mut session, out) => held,
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
async fn hold(mut client: LockClient<tonic::transport::Channel>, args: &LockArgs, session: &mut Session, out: &mut impl Write) -> Result<ExitCode> {
    let request = LockRequest { name: args.name.clone().into_bytes(), lease: session.lease() };
    let response = client.lock(request).await.map_err(status_error)?.into_inner();
    let key = String::from_utf8_lossy(&response.key).into_owned();
    let Some((program, rest)) = args.command.split_first() else {
        writeln!(out, "{key}")?;
        out.flush()?;
        return Err(session.lost().await);
    };
    let revision = response.header.map_or(0, |h| h.revision);
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
