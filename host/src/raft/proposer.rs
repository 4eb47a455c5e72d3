//! Batches concurrent client writes into log entries.
//!
//! openraft 0.9 appends, flushes and applies one entry per `client_write`. Writes that arrive
//! while earlier batches are in flight wait here and go together as the next entry, so a busy
//! node pays the per-entry cost once per batch instead of once per write; an idle node proposes
//! each write at once. Batches are handed to raft in arrival order.
//!
//! On a follower a batch goes whole to the leader over the peer service, which proposes it there
//! and answers once applied, with the entry's index; the follower answers its clients once it
//! applied the entry too. While no leader is known (an election) the batch waits a little for one.
//!
//! Either way the clients are usually answered by this member's state machine as it applies the
//! batch (see [`super::waiting`]); what happens here answers them when that does not happen.

use std::sync::Arc;

use std::time::Duration;

use conclave_proto::conclave::raft::{RaftBatch, RaftBatchResponse, RaftRequest, RaftResponse};
use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::Status;

use super::peer_service::NOT_LEADER;
use super::peers::{find_leader, on_leader, Answer, Leader, Peers};
use super::transfer::Handover;
use super::waiting::{reply_all, reply_each, Proposal, Reply, Waiting};
use super::{Proto, Raft};
use crate::error::EtcdError;

/// Batches proposed but not yet applied; the next one forms meanwhile. One, not two: each entry
/// costs openraft an append, a flush, an apply and their hand-offs, and writes that wait for the
/// batch in flight make one larger entry instead of a second small one (measured: 16 clients on
/// one member 9.4k -> 12.2k puts/s, 64 clients 20.2k -> 22.3k, three members +5%; one client the
/// same).
const IN_FLIGHT: usize = 1;
/// A batch stops growing past this many bytes of requests (a single larger request still goes):
/// one entry must reach the followers within a heartbeat interval, openraft's limit per message.
const MAX_BATCH_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<(RaftRequest, Reply)>,
}

impl Proposer {
    /// Start proposing to `raft` (through the leader at most `leader_wait` away, reached via
    /// `peers`; while this member hands its leadership over, see `handover`, batches wait), with
    /// the clients of each batch in `waiting` for the state machine to answer; a write not
    /// applied within `request_timeout` is answered "request timed out" (it may still be applied
    /// later, as with etcd). Must be called inside a tokio runtime.
    pub fn start(raft: Raft, peers: Peers, handover: Handover, waiting: Arc<Waiting>, leader_wait: Duration, request_timeout: Duration) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(propose_batches(Route { raft, peers, handover, waiting, leader_wait, request_timeout }, pending));
        Proposer { queue }
    }

    /// Propose one write and wait for the outcome of applying it.
    pub async fn propose(&self, request: RaftRequest) -> Result<RaftResponse, Status> {
        let (reply, outcome) = oneshot::channel();
        self.queue.send((request, reply)).map_err(|_| EtcdError::Stopped)?;
        outcome.await.map_err(|_| EtcdError::Stopped)?
    }
}

/// How batches reach the leader.
#[derive(Clone)]
struct Route {
    raft: Raft,
    peers: Peers,
    handover: Handover,
    waiting: Arc<Waiting>,
    leader_wait: Duration,
    request_timeout: Duration,
}

impl Route {
    /// Have the remote leader propose `batch` (or propose it here, should this member have become
    /// the leader meanwhile) and return the outcome once applied.
    async fn forward(self, batch: RaftBatch) -> Result<RaftBatchResponse, Status> {
        let peers = &self.peers;
        let batch = &batch;
        let answer = on_leader(&self.raft, self.leader_wait, |url| async move { peers.propose(&url, batch).await }).await?;
        match answer {
            Answer::Remote(written) => Ok(written),
            // Leadership moved meanwhile, maybe on again: for a client, there is no leader.
            Answer::Local => propose_as_leader(&self.raft, &self.handover, batch.clone())
                .await
                .map_err(|status| if status.message() == NOT_LEADER { EtcdError::NoLeader.into() } else { status }),
        }
    }

    /// `written` once this member has applied its entry too: etcd answers a write once the
    /// member the client asked applied it, so a serializable read there right after sees it.
    /// (Its clients were usually answered by that apply already; then there is nothing to wait
    /// for.)
    async fn applied_here(self, proposal: u64, written: RaftBatchResponse) -> Result<RaftBatchResponse, Status> {
        if !self.waiting.is_waiting(proposal) {
            return Ok(written);
        }
        // Raft's data metrics, borrowed in place: `Raft::wait` would copy all metrics at each change.
        let mut applied = self.raft.data_metrics();
        applied
            .wait_for(|m| m.last_applied.map_or(0, |id| id.index) >= written.index)
            .await
            .map_err(|_| EtcdError::Stopped)?;
        Ok(written)
    }

    /// Answer the clients of `proposal` still waiting (the state machine answered the others as
    /// it applied their batch) with `outcome`.
    fn answer(&self, proposal: u64, outcome: Result<RaftBatchResponse, Status>) {
        let Some(Proposal { replies, .. }) = self.waiting.take(proposal) else { return };
        match outcome {
            Ok(written) => reply_each(replies, written.responses),
            Err(status) => reply_all(replies, status),
        }
    }
}

async fn propose_batches(route: Route, mut pending: mpsc::UnboundedReceiver<(RaftRequest, Reply)>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let Some(first) = pending.recv().await else { return };
        let mut bytes = first.0.encoded_len();
        let mut batch = vec![first];
        while bytes < MAX_BATCH_BYTES {
            let Ok(next) = pending.try_recv() else { break };
            bytes += next.0.encoded_len();
            batch.push(next);
        }
        let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        // Then where the leader is: a transfer this member made moved it. Held until raft has the
        // batch (or it is forwarded).
        let _proposing = route.handover.proposing().await;
        let leader = find_leader(&route.raft, route.leader_wait).await;
        if leader.is_none() {
            reply_all(replies, EtcdError::NoLeader.into());
            continue;
        }
        let request_timeout = route.request_timeout;
        if leader != Some(Leader::Local) {
            let proposal = route.waiting.register(Proposal { replies, slot: None });
            let batch = RaftBatch { requests, proposal };
            let route = route.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + request_timeout;
                let forwarded = route.clone().forward(batch);
                let forwarded = tokio::time::timeout_at(deadline, forwarded).await.unwrap_or(Err(EtcdError::Timeout.into()));
                // The leader applied the batch: its slot is free while this member catches up.
                drop(permit);
                let outcome = match forwarded {
                    Ok(written) => tokio::time::timeout_at(deadline, route.clone().applied_here(proposal, written))
                        .await
                        .unwrap_or(Err(EtcdError::Timeout.into())),
                    Err(status) => Err(status),
                };
                route.answer(proposal, outcome);
            });
            continue;
        }
        // Here the proposal holds its slot until applied.
        let proposal = route.waiting.register(Proposal { replies, slot: Some(permit) });
        let batch = RaftBatch { requests, proposal };
        let applied = match route.raft.client_write_ff(Proto(batch)).await {
            Ok(applied) => applied,
            Err(fatal) => {
                route.answer(proposal, Err(Status::unavailable(fatal.to_string())));
                continue;
            }
        };
        let route = route.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(request_timeout, applied).await;
            let outcome = match outcome {
                Ok(Ok(Ok(written))) => Ok(written.data.0),
                Ok(Ok(Err(ClientWriteError::ForwardToLeader(_)))) => Err(EtcdError::NoLeader.into()),
                Ok(Ok(Err(e))) => Err(Status::unavailable(e.to_string())),
                Ok(Err(_)) => Err(EtcdError::Stopped.into()),
                Err(_) => Err(EtcdError::Timeout.into()),
            };
            route.answer(proposal, outcome);
        });
    }
}

/// Propose `batch` here as the leader, held back while this member hands its leadership over, and
/// return the outcome once applied; FAILED_PRECONDITION [`NOT_LEADER`] if it does not lead.
pub async fn propose_as_leader(raft: &Raft, handover: &Handover, batch: RaftBatch) -> Result<RaftBatchResponse, Status> {
    let _proposing = handover.proposing().await;
    match raft.client_write(Proto(batch)).await {
        Ok(written) => Ok(written.data.0),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(Status::failed_precondition(NOT_LEADER)),
        Err(e) => Err(Status::unavailable(e.to_string())),
    }
}
