//! Raft's peer network, server side: the `conclave.raft.Peer` gRPC service on the peer URLs. It
//! hands openraft's messages from members of the same cluster to the local raft and answers with
//! the postcard-encoded `Result`, and, when this member leads, proposes batches forwarded by
//! followers, tells them its read index, renews leases, tells how long a lease has left and makes
//! membership changes for them; it also tells any member asking what it knows of the cluster, and
//! campaigns when the leader hands its leadership over to this member.

use conclave_proto::conclave::raft::peer_server::{Peer, PeerServer};
use conclave_proto::conclave::raft::{
    CampaignRequest, CampaignResponse, MemberChangeRequest, MemberChangeResponse, MembershipRequest, MembershipResponse, PeerMessage, RaftBatch,
    RaftBatchResponse, ReadIndexRequest, ReadIndexResponse,
};
use futures::future::BoxFuture;
use conclave_proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use openraft::error::{ClientWriteError, RaftError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use futures::TryStreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::peers::MAX_PEER_MESSAGE;
use super::transfer::Handover;
use super::{decode, encode, etcd_members, Proto, Raft};

/// Answer of a member that does not lead (any more): ask the leader instead.
pub const NOT_LEADER: &str = "conclave: not the raft leader";

/// Renews a lease if this member leads (`None` otherwise).
pub type KeepAlive = Box<dyn Fn(i64) -> Option<LeaseKeepAliveResponse> + Send + Sync>;
/// A lease's remaining TTL if this member leads (`None` otherwise).
pub type TimeToLive = Box<dyn Fn(LeaseTimeToLiveRequest) -> Option<LeaseTimeToLiveResponse> + Send + Sync>;

/// Makes a membership change if this member leads (NOT_LEADER otherwise).
pub type MemberChanger = Box<dyn Fn(MemberChangeRequest) -> BoxFuture<'static, Result<MemberChangeResponse, Status>> + Send + Sync>;

/// What the peer service answers from.
pub struct LocalMember {
    pub raft: Raft,
    /// Holds forwarded proposals back while this member hands its leadership over.
    pub handover: Handover,
    pub cluster_id: u64,
    pub keep_alive: KeepAlive,
    pub time_to_live: TimeToLive,
    pub change_membership: MemberChanger,
}

struct PeerService {
    member: LocalMember,
}

impl PeerService {
    /// The openraft message in `message`, if it comes from a member of this cluster.
    fn decoded<T: DeserializeOwned>(&self, message: Request<PeerMessage>) -> Result<T, Status> {
        let message = message.into_inner();
        if message.cluster_id != self.member.cluster_id {
            tracing::warn!(
                local = format!("{:x}", self.member.cluster_id),
                remote = format!("{:x}", message.cluster_id),
                "refusing a raft message from another cluster (cluster ID mismatch)"
            );
            return Err(Status::failed_precondition("etcdserver: cluster ID mismatch"));
        }
        decode(&message.body).map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))
    }

    fn encoded<T: Serialize>(&self, outcome: &T) -> Result<Response<PeerMessage>, Status> {
        let body = encode(outcome).map_err(|e| Status::internal(format!("encoding a peer reply: {e}")))?;
        Ok(Response::new(PeerMessage { body, cluster_id: self.member.cluster_id }))
    }
}


/// What a leader-only answer becomes: `None` means this member does not lead.
fn as_leader<T>(answer: Option<T>) -> Result<Response<T>, Status> {
    answer.map(Response::new).ok_or_else(|| Status::failed_precondition(NOT_LEADER))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        self.encoded(&self.member.raft.append_entries(self.decoded(request)?).await)
    }

    async fn vote(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        self.encoded(&self.member.raft.vote(self.decoded(request)?).await)
    }

    async fn install_snapshot(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        self.encoded(&self.member.raft.install_snapshot(self.decoded(request)?).await)
    }

    async fn propose(&self, request: Request<RaftBatch>) -> Result<Response<RaftBatchResponse>, Status> {
        let _proposing = self.member.handover.proposing().await;
        match self.member.raft.client_write(Proto(request.into_inner())).await {
            Ok(written) => Ok(Response::new(written.data.0)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(Status::failed_precondition(NOT_LEADER)),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn read_index(&self, _request: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        match self.member.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(Response::new(ReadIndexResponse { index: read.map_or(0, |id| id.index) })),
            Err(RaftError::APIError(_)) => Err(Status::failed_precondition(NOT_LEADER)),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn change_membership(&self, request: Request<MemberChangeRequest>) -> Result<Response<MemberChangeResponse>, Status> {
        (self.member.change_membership)(request.into_inner()).await.map(Response::new)
    }

    async fn membership(&self, _request: Request<MembershipRequest>) -> Result<Response<MembershipResponse>, Status> {
        let config = self.member.raft.metrics().borrow().membership_config.clone();
        Ok(Response::new(MembershipResponse {
            cluster_id: self.member.cluster_id,
            members: etcd_members(config.membership()),
            config_index: config.log_id().map_or(0, |id| id.index),
        }))
    }

    async fn lease_keep_alive(&self, request: Request<LeaseKeepAliveRequest>) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        as_leader((self.member.keep_alive)(request.into_inner().id))
    }

    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        super::transfer::campaign(&self.member.raft, request.into_inner().term).await.map(|()| Response::new(CampaignResponse {}))
    }

    async fn lease_time_to_live(&self, request: Request<LeaseTimeToLiveRequest>) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        as_leader((self.member.time_to_live)(request.into_inner()))
    }
}

/// Serve the peer service of `member` on `listener` until the server fails.
pub async fn serve_peers(member: LocalMember, listener: TcpListener) -> Result<(), tonic::transport::Error> {
    let service = PeerServer::new(PeerService { member })
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE);
    // tonic applies its TCP options only to listeners it binds itself: without TCP_NODELAY on
    // these connections, Nagle held replies back until the follower's delayed ACK (~40 ms).
    let connections = TcpListenerStream::new(listener).map_ok(|tcp| {
        let _ = tcp.set_nodelay(true);
        tcp
    });
    tonic::transport::Server::builder().add_service(service).serve_with_incoming(connections).await
}
