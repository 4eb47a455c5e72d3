//! Leadership transfer (etcd's MoveLeader), which openraft 0.9 lacks.
//!
//! The leader waits until the target holds every entry it has, stops its heartbeats and asks the
//! target to campaign. A voter refuses a candidate while its leader lease runs (it is renewed by
//! every message from the leader), but the leader's own lease dates from its election: a leader
//! elected more than a lease ago grants the target's vote and steps down, and with the target's
//! own vote that is a quorum of three. Otherwise (a leader elected just now, or more voters) the
//! stopped heartbeats let the other voters' leases run out, and the target, which as a candidate
//! campaigns again after an election timeout, wins then, before their own election timers fire.

use std::time::{Duration, Instant};

use openraft::ServerState;
use tonic::Status;

use super::peers::Peers;
use super::{MemberNode, NodeId, Raft};
use crate::error::EtcdError;

type Metrics = openraft::RaftMetrics<NodeId, MemberNode>;

/// Hand the leadership `raft` holds to the voter `target`; answered once `target` leads.
pub async fn move_leader(raft: &Raft, peers: &Peers, target: NodeId) -> Result<(), Status> {
    let metrics = raft.metrics().borrow().clone();
    if metrics.state != ServerState::Leader {
        return Err(EtcdError::NotLeader.into());
    }
    let membership = metrics.membership_config.membership();
    if !membership.voter_ids().any(|id| id == target) {
        return Err(EtcdError::BadLeaderTransferee.into());
    }
    if target == metrics.id {
        return Ok(());
    }
    let url = membership.get_node(&target).map(|node| node.peer_url().to_string()).unwrap_or_default();
    let term = metrics.current_term;
    let deadline = Instant::now() + transfer_timeout(raft);
    catch_up(raft, target, term, deadline).await?;
    // Only now: heartbeats stopped for a target that never catches up would start an election.
    raft.runtime_config().heartbeat(false);
    let moved = hand_over(raft, peers, &url, target, term, deadline).await;
    raft.runtime_config().heartbeat(true);
    moved
}

/// Wait until `target` holds every entry of this leader (of `term`): voters refuse a candidate
/// with a shorter log.
async fn catch_up(raft: &Raft, target: NodeId, term: u64, deadline: Instant) -> Result<(), Status> {
    let leading = |m: &Metrics| m.state == ServerState::Leader && m.current_term == term;
    let caught_up = |m: &Metrics| {
        let matched = m.replication.as_ref().and_then(|r| r.get(&target).copied()).flatten();
        matched.map(|id| id.index) >= m.last_log_index
    };
    let ready = raft
        .wait(Some(deadline.saturating_duration_since(Instant::now())))
        .metrics(|m| !leading(m) || caught_up(m), "the transferee has every entry")
        .await
        .map_err(|_| EtcdError::LeaderTransferTimeout)?;
    if !leading(&ready) {
        return Err(EtcdError::NotLeader.into());
    }
    Ok(())
}

/// Have `target` (at `url`) campaign for the leadership of this leader of `term`, and wait until
/// it leads.
async fn hand_over(raft: &Raft, peers: &Peers, url: &str, target: NodeId, term: u64, deadline: Instant) -> Result<(), Status> {
    peers.campaign(url, term).await?;
    raft.wait(Some(deadline.saturating_duration_since(Instant::now())))
        .metrics(|m| m.current_leader == Some(target), "the transferee leads")
        .await
        .map(|_| ())
        .map_err(|_| EtcdError::LeaderTransferTimeout.into())
}

/// Campaign at once, asked by the leader of `term`; a request from an older term is stale (a
/// later election already happened) and is ignored.
pub async fn campaign(raft: &Raft, term: u64) -> Result<(), Status> {
    if raft.metrics().borrow().current_term != term {
        return Ok(());
    }
    raft.trigger().elect().await.map_err(|e| Status::unavailable(e.to_string()))
}

/// How long a transfer may take: the target's first campaign may be refused (see the module
/// comment), and its second comes an election timeout later, after the voters' leases ran out.
fn transfer_timeout(raft: &Raft) -> Duration {
    Duration::from_millis(raft.config().election_timeout_max * 4)
}
