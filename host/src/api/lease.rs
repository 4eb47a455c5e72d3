//! The etcd Lease service: grants and revokes go through raft; keep-alives and time-to-live are
//! answered by the leader, which alone keeps deadlines (a follower passes them on, as etcd does);
//! lists are answered from the local lease table, as etcd does too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::raft_response::Response as Resp;
use conclave_proto::etcdserverpb::lease_server::Lease;
use conclave_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, ResponseHeader,
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
    let remote = |url: String| async move { peers.keep_alive(&url, id).await };
    here_or_on_leader(node, remote, |node| keep_alive(node, id), |renewed| &mut renewed.header).await
}

/// How long a lease has left by this member's deadlines, with its granted TTL (and keys if
/// asked). etcd 3.4 answers an unknown lease with TTL -1, not an error.
fn time_to_live(node: &Node, req: &LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse {
    let view = node.store.read();
    let header = node.header(view.current_rev());
    match view.leases().get(req.id) {
        Some(lease) => LeaseTimeToLiveResponse {
            header,
            id: req.id,
            ttl: node.lessor.remaining(req.id, lease.ttl),
            granted_ttl: lease.ttl,
            keys: if req.keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
        },
        None => LeaseTimeToLiveResponse { header, id: req.id, ttl: -1, ..Default::default() },
    }
}

/// A lease's time to live if this member leads (the peer service's answer to a follower).
pub fn time_to_live_as_leader(node: &Node, req: LeaseTimeToLiveRequest) -> Option<LeaseTimeToLiveResponse> {
    node.leader_term()?;
    Some(time_to_live(node, &req))
}

/// Answer with `local` if this member leads, else with the leader's answer to `remote`. The
/// header is always this member's, at its own revision: etcd fills it where the client asked.
async fn here_or_on_leader<T, Fut>(
    node: &Node,
    remote: impl Fn(String) -> Fut,
    local: impl FnOnce(&Node) -> T,
    header: impl FnOnce(&mut T) -> &mut Option<ResponseHeader>,
) -> Result<T, Status>
where
    Fut: Future<Output = Result<T, Status>>,
{
    match on_leader(&node.raft, node.leader_wait, remote).await? {
        Answer::Local => Ok(local(node)),
        Answer::Remote(mut answer) => {
            *header(&mut answer) = node.header(node.store.read().current_rev());
            Ok(answer)
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut req = request.into_inner();
        self.node.check_quota().await?;
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
        let peers = &self.node.peers;
        let remote = |url: String| {
            let req = req.clone();
            async move { peers.time_to_live(&url, req).await }
        };
        let resp = here_or_on_leader(&self.node, remote, |node| time_to_live(node, &req), |resp| &mut resp.header).await?;
        Ok(Response::new(resp))
    }

    async fn lease_leases(&self, _request: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        // Local on every member, as in etcd 3.4 (a follower's lessor lists its applied leases).
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
