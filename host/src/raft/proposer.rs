//! Batches concurrent client writes into log entries.
//!
//! openraft 0.9 appends, flushes and applies one entry per `client_write`. Writes that arrive
//! while earlier batches are in flight wait here and go together as the next entry, so a busy
//! node pays the per-entry cost once per batch instead of once per write; an idle node proposes
//! each write at once. Batches are handed to raft in arrival order.

use std::sync::Arc;

use conclave_proto::conclave::raft::{RaftBatch, RaftRequest, RaftResponse};
use openraft::error::ClientWriteError;
use prost::Message;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::Status;

use super::{Proto, Raft};
use crate::error::EtcdError;

/// Batches proposed but not yet applied; one more can form meanwhile.
const IN_FLIGHT: usize = 2;
/// A batch stops growing past this many bytes of requests (a single larger request still goes).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

type Reply = oneshot::Sender<Result<RaftResponse, Status>>;

#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<(RaftRequest, Reply)>,
}

impl Proposer {
    /// Start proposing to `raft`; must be called inside a tokio runtime.
    pub fn start(raft: Raft) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(propose_batches(raft, pending));
        Proposer { queue }
    }

    /// Propose one write and wait for the outcome of applying it.
    pub async fn propose(&self, request: RaftRequest) -> Result<RaftResponse, Status> {
        let (reply, outcome) = oneshot::channel();
        self.queue.send((request, reply)).map_err(|_| EtcdError::Stopped)?;
        outcome.await.map_err(|_| EtcdError::Stopped)?
    }
}

async fn propose_batches(raft: Raft, mut pending: mpsc::UnboundedReceiver<(RaftRequest, Reply)>) {
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
        let applied = match raft.client_write_ff(Proto(RaftBatch { requests })).await {
            Ok(applied) => applied,
            Err(fatal) => {
                reply_all(replies, Status::unavailable(fatal.to_string()));
                continue;
            }
        };
        tokio::spawn(async move {
            let outcome = applied.await;
            drop(permit);
            match outcome {
                Ok(Ok(written)) => {
                    for (reply, response) in replies.into_iter().zip(written.data.0.responses) {
                        let _ = reply.send(Ok(response));
                    }
                }
                Ok(Err(ClientWriteError::ForwardToLeader(_))) => reply_all(replies, EtcdError::NoLeader.into()),
                Ok(Err(e)) => reply_all(replies, Status::unavailable(e.to_string())),
                Err(_) => reply_all(replies, EtcdError::Stopped.into()),
            }
        });
    }
}

fn reply_all(replies: Vec<Reply>, status: Status) {
    for reply in replies {
        let _ = reply.send(Err(status.clone()));
    }
}
