//! `elect NAME PROPOSAL [--ttl N]` and `elect --listen NAME`, like `etcdctl elect`: campaign
//! through etcd's v3election service on a kept-alive lease of our own, print the leader's key and
//! proposal once elected and hold until Ctrl-C, then resign; or print each leader proposal as it
//! changes. The lease is revoked at the end either way.

use std::io::Write;

use anyhow::{Result, bail};
use clap::Args;
use conclave_proto::v3electionpb::election_client::ElectionClient;
use conclave_proto::v3electionpb::{CampaignRequest, LeaderRequest, LeaderResponse, ResignRequest};
use tonic::transport::Channel;

use crate::connect::connect;
use crate::global::GlobalArgs;
use crate::rpc::{block_on, status_error, unary};
use crate::session::Session;

#[derive(Args, Debug)]
pub struct ElectArgs {
    /// The election's name: its candidates' keys are NAME/<lease id in hex>.
    name: String,
    /// What to proclaim once elected (not with --listen).
    proposal: Option<String>,
    /// Print each leader proposal as it changes instead of campaigning.
    #[arg(short = 'l', long)]
    listen: bool,
    /// TTL in seconds of the lease the candidacy stands on (kept alive while campaigning).
    #[arg(long, default_value_t = 60)]
    ttl: i64,
}

pub fn run(args: ElectArgs, global: &GlobalArgs, out: &mut impl Write) -> Result<()> {
    let proposal = match (&args.proposal, args.listen) {
        (Some(_), true) => bail!("--listen takes only the election's name, no proposal"),
        (None, false) => bail!("no proposal argument but --listen is not set"),
        (proposal, _) => proposal.clone(),
    };
    block_on(async {
        let channel = connect(&global.dial()?).await?;
        match proposal {
            None => listen(ElectionClient::new(channel), &args.name, out).await,
            Some(proposal) => campaign(channel, &args, &proposal, global, out).await,
        }
    })
}

/// Print the leader's key and value as etcdctl's simple output does: one line each.
fn print(out: &mut impl Write, answer: &LeaderResponse) -> Result<()> {
    if let Some(kv) = &answer.kv {
        writeln!(out, "{}\n{}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value))?;
        out.flush()?;
    }
    Ok(())
}

/// Follow the election until Ctrl-C.
async fn listen(mut client: ElectionClient<Channel>, name: &str, out: &mut impl Write) -> Result<()> {
    let request = LeaderRequest { name: name.as_bytes().to_vec() };
    let mut answers = client.observe(request).await.map_err(status_error)?.into_inner();
    loop {
        tokio::select! {
            answer = answers.message() => match answer.map_err(status_error)? {
                Some(answer) => print(out, &answer)?,
                None => bail!("the observe stream ended"),
            },
            interrupted = tokio::signal::ctrl_c() => return Ok(interrupted?),
        }
    }
}

/// Campaign, hold the leadership until Ctrl-C (or until the lease is lost), resign, revoke.
async fn campaign(channel: Channel, args: &ElectArgs, proposal: &str, global: &GlobalArgs, out: &mut impl Write) -> Result<()> {
    let mut session = Session::grant(channel.clone(), args.ttl, global.command_timeout).await?;
    let mut client = ElectionClient::new(channel);
    let request = CampaignRequest { name: args.name.clone().into_bytes(), lease: session.lease(), value: proposal.into() };
    let held = tokio::select! {
        campaigned = client.campaign(request) => match campaigned {
            Ok(response) => {
                let leader = response.into_inner().leader;
                let key = leader.as_ref().map(|l| String::from_utf8_lossy(&l.key).into_owned()).unwrap_or_default();
                writeln!(out, "{key}\n{proposal}")?;
                out.flush()?;
                tokio::select! {
                    interrupted = tokio::signal::ctrl_c() => interrupted.map_err(Into::into),
                    lost = session.lost() => Err(lost.context("elect: session expired")),
                }
                .map(|()| leader)
            }
            Err(status) => Err(status_error(status)),
        },
        // Dropping the waiting Campaign call makes the server remove our key.
        interrupted = tokio::signal::ctrl_c() => interrupted.map(|()| None).map_err(Into::into),
    };
    let resigned = match &held {
        Ok(Some(leader)) => unary(global.command_timeout, client.resign(ResignRequest { leader: Some(leader.clone()) }))
            .await
            .map(drop),
        _ => Ok(()),
    };
    let closed = session.close(global.command_timeout).await;
    held?;
    resigned?;
    closed
}
