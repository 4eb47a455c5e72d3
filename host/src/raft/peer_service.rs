//! Raft's peer network, server side: the `conclave.raft.Peer` gRPC service on the peer URLs,
//! beside the direct connections ([`super::direct`]: appends, and followers' forwarded batches
//! read-index requests and lease renewals) that share the port. It hands openraft's votes and
//! snapshots to the local raft and answers with the postcard-encoded `Result`, and, when this
//! member leads, has the service layer ([`LeaderDuties`]) tell how long a lease has left and make
//! membership changes for followers; it
//! campaigns when the leader hands its leadership over to this member. Every call must come from
//! a member of this cluster (its id in the request metadata), except the question any member may
//! ask: what this member knows of the cluster.

use std::sync::Arc;

use conclave_proto::conclave::raft::peer_server::{Peer, PeerServer};
use conclave_proto::conclave::raft::{
    CampaignRequest, CampaignResponse, MemberChangeRequest, MemberChangeResponse, MembershipRequest, MembershipResponse, PeerMessage,
};
use conclave_proto::etcdserverpb::{
    LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::direct::{split_direct, Served};
use super::peers::{CLUSTER_ID_METADATA, MAX_PEER_MESSAGE};
use super::read_index::ReadRounds;
use super::transfer::Handover;
use super::{decode, encode, etcd_members, Raft};
use crate::error::EtcdError;
use crate::transport::{Listener, accepted};

/// Answer of a member that does not lead (any more): ask the leader instead.
pub const NOT_LEADER: &str = "conclave: not the raft leader";

/// What a leader does for its followers through the service layer (which implements this).
#[tonic::async_trait]
pub trait LeaderDuties: Send + Sync + 'static {
    /// Renew lease `id` if this member leads (`None` otherwise).
    async fn keep_alive(&self, id: i64) -> Option<LeaseKeepAliveResponse>;
    /// How long a lease has left if this member leads (`None` otherwise).
    async fn time_to_live(&self, request: LeaseTimeToLiveRequest) -> Option<LeaseTimeToLiveResponse>;
    /// Make a membership change if this member leads (NOT_LEADER otherwise).
    async fn change_membership(&self, change: MemberChangeRequest) -> Result<MemberChangeResponse, EtcdError>;
}

/// What the peer service answers from: this member's raft, its cluster, its leadership handover
/// (for the direct connections beside it), and the service layer's duties to followers.
pub struct PeerService {
    pub raft: Raft,
    pub cluster_id: u64,
    /// Holds forwarded proposals back while this member hands its leadership over.
    pub handover: Handover,
    pub duties: Arc<dyn LeaderDuties>,
    /// This member's read-index rounds, shared with its own linearizable reads.
    pub reads: Arc<ReadRounds<Status>>,
}

impl PeerService {
    /// Refuse a call from outside this cluster: another cluster's member (or a stray client) must
    /// never propose into this one, read its index, renew its leases or change its membership.
    fn check_cluster<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let theirs = request.metadata().get(CLUSTER_ID_METADATA).and_then(|v| u64::from_str_radix(v.to_str().ok()?, 16).ok());
        if theirs == Some(self.cluster_id) {
            return Ok(());
        }
        tracing::warn!(
            local = format!("{:x}", self.cluster_id),
            remote = theirs.map(|id| format!("{id:x}")),
            "refusing a peer request from another cluster (cluster ID mismatch)"
        );
        Err(EtcdError::ClusterIdMismatch.to_peer_status())
    }

    /// The openraft message in `message`, if it comes from a member of this cluster.
    fn decoded<T: DeserializeOwned>(&self, message: Request<PeerMessage>) -> Result<T, Status> {
        self.check_cluster(&message)?;
        decode(&message.into_inner().body).map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))
    }

    fn encoded<T: Serialize>(&self, outcome: &T) -> Result<Response<PeerMessage>, Status> {
        let body = encode(outcome).map_err(|e| Status::internal(format!("encoding a peer reply: {e}")))?;
        Ok(Response::new(PeerMessage { body }))
    }
}

/// What a leader-only answer becomes: `None` means this member does not lead.
fn as_leader<T>(answer: Option<T>) -> Result<Response<T>, Status> {
    answer.map(Response::new).ok_or_else(|| Status::failed_precondition(NOT_LEADER))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn vote(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        self.encoded(&self.raft.vote(self.decoded(request)?).await)
    }

    async fn install_snapshot(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        self.encoded(&self.raft.install_snapshot(self.decoded(request)?).await)
    }

    async fn change_membership(&self, request: Request<MemberChangeRequest>) -> Result<Response<MemberChangeResponse>, Status> {
        self.check_cluster(&request)?;
        match self.duties.change_membership(request.into_inner()).await {
            Ok(changed) => Ok(Response::new(changed)),
            Err(e) => Err(e.to_peer_status()),
        }
    }

    /// Answered to anyone: a member joining an existing cluster asks before it knows the id.
    async fn membership(&self, _request: Request<MembershipRequest>) -> Result<Response<MembershipResponse>, Status> {
        let config = self.raft.metrics().borrow().membership_config.clone();
        Ok(Response::new(MembershipResponse {
            cluster_id: self.cluster_id,
            members: etcd_members(config.membership()),
            config_index: config.log_id().map_or(0, |id| id.index),
        }))
    }

    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        self.check_cluster(&request)?;
        super::transfer::campaign(&self.raft, request.into_inner().term).await.map(|()| Response::new(CampaignResponse {}))
    }

    async fn lease_time_to_live(&self, request: Request<LeaseTimeToLiveRequest>) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.check_cluster(&request)?;
        as_leader(self.duties.time_to_live(request.into_inner()).await)
    }
}

/// Serve `service` on `listener` until the server fails.
pub async fn serve_peers(
    service: PeerService,
    listener: Listener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(), tonic::transport::Error> {
    let served = Served { raft: service.raft.clone(), cluster_id: service.cluster_id, handover: service.handover.clone(), reads: service.reads.clone(), duties: service.duties.clone() };
    let connections = split_direct(accepted(listener, tls, "peer"), served);
    let service = PeerServer::new(service)
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE);
    // Without TCP_NODELAY, Nagle held replies back until the follower's delayed ACK (~40 ms).
    tonic::transport::Server::builder().add_service(service).serve_with_incoming(connections).await
}
