//! Leadership transfer (etcd's MoveLeader), which openraft 0.9 lacks.
//!
//! A voter refuses a candidate while its leader lease runs: a follower's lease is renewed by every
//! message from the leader, the leader's own dates from its election. So the leader holds new
//! proposals back (as etcd's leader does while it transfers), waits until the target holds every
//! entry it has, stops its heartbeats, waits until a lease has passed since its election, and asks
//! the target to campaign: the leader grants the vote and steps down, and with the target's own
//! vote that is a quorum of three. With more voters, the stopped heartbeats let the others' leases
//! run out too, and the target, which as a candidate campaigns again after an election timeout,
//! wins before their own election timers fire.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::{watch, OwnedRwLockWriteGuard, RwLock, RwLockReadGuard};
use tonic::Status;

use super::peers::Peers;
use super::{MemberNode, Metrics, NodeId, Raft};
use crate::error::EtcdError;

type ServerMetrics = openraft::metrics::RaftServerMetrics<NodeId, MemberNode>;

/// Whether this member is handing its leadership over (new proposals wait until it is done, as a
/// target that must hold every entry to win would never catch up under load), and since when it
/// leads. Cheap to clone.
#[derive(Clone)]
pub struct Handover {
    /// Proposals hold it shared until raft has them; a transfer holds it alone (new proposals
    /// queue behind it, tokio's lock being fair).
    proposals: Arc<RwLock<()>>,
    /// The term this member last became leader in, and when.
    elected: Arc<Mutex<Option<(u64, Instant)>>>,
}

impl Handover {
    /// Follow the elections of `raft`. Must be called inside a tokio runtime.
    pub fn new(raft: &Raft) -> Self {
        let handover = Handover { proposals: Arc::default(), elected: Arc::default() };
        tokio::spawn(track_elections(raft.server_metrics(), Arc::downgrade(&handover.elected)));
        handover
    }

    /// Wait until no transfer is in progress; hold what this returns until raft has the proposal.
    pub async fn proposing(&self) -> RwLockReadGuard<'_, ()> {
        self.proposals.read().await
    }

    /// Wait out the lease this member's own vote holds since it was elected in `term` (all of it
    /// if it is not known when): until then it refuses to vote for the target.
    async fn lease_over(&self, raft: &Raft, term: u64) {
        let lease = Duration::from_millis(raft.config().election_timeout_max);
        let elected = *self.elected.lock().expect("election record poisoned");
        let since = elected.filter(|(t, _)| *t == term).map_or_else(Instant::now, |(_, at)| at);
        tokio::time::sleep_until((since + lease).into()).await;
    }
}

/// Record when this member becomes leader, from the server metrics (which change only with the
/// vote, state or membership), until the [`Handover`] is gone.
async fn track_elections(mut metrics: watch::Receiver<ServerMetrics>, elected: Weak<Mutex<Option<(u64, Instant)>>>) {
    while metrics.changed().await.is_ok() {
        let Some(elected) = elected.upgrade() else { return };
        let m = metrics.borrow_and_update();
        let term = m.vote.leader_id().term;
        let mut elected = elected.lock().expect("election record poisoned");
        if m.state == ServerState::Leader && elected.is_none_or(|(t, _)| t != term) {
            *elected = Some((term, Instant::now()));
        }
    }
}

/// A transfer in progress on `raft`; when dropped (also when the caller gives up), proposals and
/// heartbeats resume.
struct Transferring<'a> {
    raft: &'a Raft,
    _proposals: OwnedRwLockWriteGuard<()>,
}

impl<'a> Transferring<'a> {
    /// Once every proposal that passed before is with raft (raft handles its calls in order).
    async fn start(raft: &'a Raft, handover: &Handover) -> Result<Self, EtcdError> {
        let proposals = handover.proposals.clone().write_owned().await;
        raft.with_raft_state(|_| ()).await.map_err(|_| EtcdError::Stopped)?;
        Ok(Transferring { raft, _proposals: proposals })
    }
}

impl Drop for Transferring<'_> {
    fn drop(&mut self) {
        self.raft.runtime_config().heartbeat(true);
    }
}

/// Hand the leadership `raft` holds to the voter `target`, holding proposals back through
/// `handover` meanwhile; answered once `target` leads.
pub async fn move_leader(raft: &Raft, peers: &Peers, handover: &Handover, target: NodeId) -> Result<(), Status> {
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
    let _transferring = Transferring::start(raft, handover).await?;
    catch_up(raft, target, term, deadline).await?;
    // Only now: heartbeats stopped for a target that never catches up would start an election.
    raft.runtime_config().heartbeat(false);
    handover.lease_over(raft, term).await;
    hand_over(raft, peers, &url, target, term, deadline).await
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

/// How long a transfer may take: a lease may have to be waited out first, the target's first
/// campaign may be refused (see the module comment) and its second comes an election timeout
/// later. 4.5 s with the default --election-timeout, within etcdctl's 5 s command timeout (3 s
/// was overrun on a starved machine: eight clusters under writes on two cores).
fn transfer_timeout(raft: &Raft) -> Duration {
    Duration::from_millis(raft.config().election_timeout_max * 6)
}
