//! Raft's peer network, client side: each openraft RPC is postcard-encoded and sent to the
//! target's peer URL (`MemberNode::peer_url`) with this member's cluster id: AppendEntries over
//! a direct connection ([`super::direct`]), votes and snapshots as a `PeerMessage` over
//! the `conclave.raft.Peer` gRPC service (the id in the call's metadata). A peer that cannot be
//! reached is reported `Unreachable` (openraft backs off), an RPC that outlives its `RPCOption`
//! deadline `Timeout`, and the target's own raft error comes back as a `RemoteError`.
//! AppendEntries carry at most [`MAX_APPEND_BYTES`] of entries; snapshots go in the chunks the
//! raft config sets.

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::{AnyError, Entry, EntryPayload};
use prost::Message;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use conclave_proto::conclave::raft::peer_client::PeerClient;
use conclave_proto::conclave::raft::PeerMessage;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::error::EtcdError;

use super::direct::{DirectClient, DirectError, Kind};
use super::peers::Peers;
use super::wal::Durable;
use super::{decode, encode, MemberNode, NodeId, TypeConfig};

/// Makes connections from member `id` to its peers (calls carry the cluster id `peers` sends).
#[derive(Clone)]
pub struct Network {
    id: NodeId,
    peers: Peers,
    durable: Durable,
}

impl Network {
    /// Member `id`'s connections, telling a commit only once `durable` says its log holds it.
    pub fn new(id: NodeId, peers: Peers, durable: Durable) -> Self {
        Network { id, peers, durable }
    }
}

/// Raft's connection to one peer.
pub struct PeerConnection {
    id: NodeId,
    target: NodeId,
    url: String,
    peers: Peers,
    client: Result<PeerClient<Channel>, Status>,
    appends: DirectClient,
    durable: Durable,
}

/// The calls that go over gRPC.
#[derive(Clone, Copy)]
enum GrpcCall {
    Vote,
    InstallSnapshot,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerConnection {
        let client = self.peers.client(node.peer_url());
        let url = node.peer_url().to_string();
        let appends = self.peers.direct_client(&url, Kind::Append);
        PeerConnection { id: self.id, target, url, peers: self.peers.clone(), client, appends, durable: self.durable.clone() }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, MemberNode, E>>;

impl PeerConnection {
    /// Send `request` as `call` and decode the target's `Result<Resp, RaftError<E>>`.
    async fn call<Req, Resp, E>(&mut self, call: GrpcCall, request: &Req, option: &RPCOption) -> RpcResult<Resp, RaftError<NodeId, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = encode(request).map_err(|e| network(&e))?;
        let mut client = match &self.client {
            Ok(client) => client.clone(),
            Err(status) => return Err(self.unreachable(status.message())),
        };
        let message = self.peers.request(PeerMessage { body });
        let action = match call {
            GrpcCall::Vote => RPCTypes::Vote,
            GrpcCall::InstallSnapshot => RPCTypes::InstallSnapshot,
        };
        let sent = async move {
            match call {
                GrpcCall::Vote => client.vote(message).await,
                GrpcCall::InstallSnapshot => client.install_snapshot(message).await,
            }
        };
        let timeout = option.hard_ttl();
        let reply = match tokio::time::timeout(timeout, sent).await {
            Err(_) => return Err(self.timeout(action, timeout)),
            Ok(Err(status)) if status.code() == Code::Unavailable => return Err(self.unreachable(status.message())),
            Ok(Err(status)) => return Err(network(&status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        self.answered(&reply.body)
    }

    /// Send AppendEntries `request` over the append connection, once this leader's log holds
    /// what it says is committed: the leader counts its own entries before they are synced (see
    /// `log_store.rs`), and a follower must not apply an entry that could still be lost with the
    /// leader's copy.
    async fn append<E>(&mut self, request: &AppendEntriesRequest<TypeConfig>, option: &RPCOption) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId, E>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let body = encode(request).map_err(|e| network(&e))?;
        let timeout = option.hard_ttl();
        let cluster_id = self.peers.cluster_id();
        let committed = request.leader_commit.map_or(0, |id| id.index);
        let (durable, appends) = (&mut self.durable, &self.appends);
        let sent = async move {
            durable.reached(committed).await?;
            Ok::<_, std::io::Error>(appends.exchange(cluster_id, &body).await)
        };
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(self.timeout(RPCTypes::AppendEntries, timeout)),
            // This member's own log failed.
            Ok(Err(e)) => Err(network(&e)),
            Ok(Ok(Err(DirectError::Unreachable(e) | DirectError::Broken(e)))) => Err(self.unreachable(&e.to_string())),
            Ok(Ok(Err(DirectError::Refused))) => Err(network(&EtcdError::ClusterIdMismatch)),
            Ok(Ok(Ok(reply))) => self.answered(&reply),
        }
    }

    /// The target's answer `body`, a `Result<Resp, RaftError<E>>`.
    fn answered<Resp, E>(&self, body: &[u8]) -> RpcResult<Resp, RaftError<NodeId, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.peers.answered(self.target);
        let outcome: Result<Resp, RaftError<NodeId, E>> = decode(body).map_err(|e| network(&e))?;
        outcome.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn unreachable<E: std::error::Error>(&self, error: &str) -> RPCError<NodeId, MemberNode, E> {
        self.peers.unreachable(self.target, &self.url, error);
        RPCError::Unreachable(Unreachable::new(&AnyError::error(error)))
    }

    fn timeout<E: std::error::Error>(&self, action: RPCTypes, timeout: std::time::Duration) -> RPCError<NodeId, MemberNode, E> {
        RPCError::Timeout(Timeout { action, id: self.id, target: self.target, timeout })
    }
}

/// The most entry bytes one AppendEntries carries (unless a single entry is larger): small
/// enough to cross within a heartbeat interval on a busy machine.
const MAX_APPEND_BYTES: usize = 2 * 1024 * 1024;

/// Roughly how many bytes `entry` adds to an AppendEntries message.
fn entry_bytes(entry: &Entry<TypeConfig>) -> usize {
    match &entry.payload {
        EntryPayload::Normal(batch) => batch.0.encoded_len(),
        EntryPayload::Membership(_) | EntryPayload::Blank => 1024,
    }
}

fn network<E: std::error::Error>(e: &(impl std::error::Error + 'static)) -> RPCError<NodeId, MemberNode, E> {
    RPCError::Network(NetworkError::new(e))
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        // openraft sends up to 300 entries at once, and gives each message one heartbeat
        // interval: to a member far behind on large values such a message can't make it in
        // time (or at all, past the largest peer message), and would be retried the same way
        // forever. Ask openraft for fewer entries per message instead.
        let bytes: usize = rpc.entries.iter().map(entry_bytes).sum();
        if bytes > MAX_APPEND_BYTES && rpc.entries.len() > 1 {
            let fitting = (rpc.entries.len() * MAX_APPEND_BYTES / bytes).max(1) as u64;
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fitting)));
        }
        self.append(&rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call(GrpcCall::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.call(GrpcCall::Vote, &rpc, &option).await
    }
}
