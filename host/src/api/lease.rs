//! The etcd Lease service: grants and revokes go through raft; keep-alives, time-to-live and
//! lists are answered from the local lease table and the leader's deadlines; a follower passes
//! keep-alives on to the leader.

use std::pin::Pin;
use std::sync::Arc;

use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::raft_response::Response as Resp;
use conclave_proto::etcdserverpb::lease_server::Lease;
use conclave_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::lease;
use crate::mvcc::View;
use crate::node::Node;
use crate::raft::{on_leader, Answer};
use super::unexpected;

pub struct LeaseService {
    node: Arc<Node>,
}

impl LeaseService {
    pub fn new(node: Arc<Node>) -> Self {
        LeaseService { node }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

/// Renew one lease: its granted TTL, or 0 if it is unknown or already expired (etcd answers a
/// keep-alive for a missing lease with TTL 0 rather than an error).
fn keep_alive(node: &Node, id: i64) -> LeaseKeepAliveResponse {
    let view = node.store.read();
    let leases = view.leases();
    let alive = node.lessor.refresh(node.leader_term(), leases, id);
    let ttl = match leases.get(id) {
        Some(lease) if alive => lease.ttl,
        _ => 0,
    };
    LeaseKeepAliveResponse { header: node.header(view.current_rev()), id, ttl }
}

/// Renew a lease if this member leads (the peer service's answer to a follower).
pub fn keep_alive_as_leader(node: &Node, id: i64) -> Option<LeaseKeepAliveResponse> {
    node.leader_term()?;
    Some(keep_alive(node, id))
}

/// Renew a lease here if this member leads, else through the leader.
async fn keep_alive_anywhere(node: &Node, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
    let peers = &node.peers;
    match on_leader(&node.raft, node.leader_wait, |url| async move { peers.keep_alive(&url, id).await }).await? {
        Answer::Local => Ok(keep_alive(node, id)),
        Answer::Remote(mut renewed) => {
            node.fill(&mut renewed.header);
            Ok(renewed)
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut req = request.into_inner();
        self.node.check_quota()?;
        // Settled before proposing, so every member applies the same id and TTL.
        let config = &self.node.config;
        req.ttl = req.ttl.max(lease::min_ttl(config.heartbeat_interval, config.election_timeout));
        if req.id == 0 {
            let view = self.node.store.read();
            req.id = std::iter::repeat_with(|| self.node.lease_ids.next())
                .find(|id| !view.leases().contains(*id))
                .expect("repeat_with never ends");
        }
        let mut resp = match self.node.propose(Req::LeaseGrant(req)).await? {
            Resp::LeaseGrant(resp) => resp,
            _ => return Err(unexpected("lease grant")),
        };
        let view = self.node.store.read();
        self.node.lessor.refresh(self.node.leader_term(), view.leases(), resp.id);
        self.node.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_revoke(&self, request: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        match self.node.propose(Req::LeaseRevoke(request.into_inner())).await? {
            Resp::LeaseRevoke(mut resp) => {
                self.node.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("lease revoke")),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let node = self.node.clone();
        tokio::spawn(async move {
            while let Some(next) = requests.next().await {
                let Ok(req) = next else { return };
                let renewed = keep_alive_anywhere(&node, req.id).await;
                let failed = renewed.is_err();
                if tx.send(renewed).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let view = self.node.store.read();
        let resp = match view.leases().get(req.id) {
            Some(lease) => LeaseTimeToLiveResponse {
                header: self.node.header(view.current_rev()),
                id: req.id,
                ttl: self.node.lessor.remaining(req.id, lease.ttl),
                granted_ttl: lease.ttl,
                keys: if req.keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
            },
            // etcd 3.4 answers an unknown lease with TTL -1, not an error.
            None => LeaseTimeToLiveResponse {
                header: self.node.header(view.current_rev()),
                id: req.id,
                ttl: -1,
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(&self, _request: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        let view = self.node.store.read();
        // etcd lists leases soonest-expiring first.
        let mut leases: Vec<_> = view.leases().iter().map(|(id, _)| (self.node.lessor.deadline(id), id)).collect();
        leases.sort();
        Ok(Response::new(LeaseLeasesResponse {
            header: self.node.header(view.current_rev()),
            leases: leases.into_iter().map(|(_, id)| LeaseStatus { id }).collect(),
        }))
    }
}
