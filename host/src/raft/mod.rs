//! Consensus: openraft's type configuration, the sled-backed log and state machine, the peer
//! network, the proposer that batches client writes, and leadership transfer. Every log entry is
//! a [`Request`]: a batch of client writes; applying it yields a [`Response`] per write.

// openraft's storage traits return its `StorageError` (over 200 bytes), and so do the helpers
// here that build one: boxing it would only be undone at every trait boundary.
#![allow(clippy::result_large_err)]

mod direct;
mod log_store;
mod network;
mod peer_service;
mod peers;
mod proposer;
mod quorum_contact;
mod read_index;
mod snapshot_due;
mod snapshot_writer;
mod state_machine;
mod transfer;
mod waiting;
mod wal;

use std::io::Cursor;

use conclave_proto::conclave::raft::{RaftBatch, RaftBatchResponse};
use openraft::{AnyError, StorageError, StorageIOError};
use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use log_store::{read_log, CommittedIndex, LogDump, LogStore};
pub use network::Network;
pub use peer_service::{serve_peers, LeaderDuties, PeerService, NOT_LEADER};
pub use peers::{check_quorum, on_leader, recognised_leader, Answer, Peers};
pub use proposer::Proposer;
pub use quorum_contact::QuorumContact;
pub use read_index::{leader_rounds, ReadRounds};
pub use snapshot_due::{ask_for_snapshots, purge_behind_snapshots, SnapshotDue};
pub use state_machine::{read_snapshot_meta, store_hash, StateMachine, APPLIED as APPLIED_META, MEMBERSHIP as MEMBERSHIP_META};
pub use transfer::{move_leader, Handover};
pub use waiting::Waiting;
pub use wal::SEGMENT_BYTES as WAL_SEGMENT_BYTES;

/// Raft member ids are etcd member ids.
pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
/// What raft publishes about itself.
type Metrics = openraft::RaftMetrics<NodeId, MemberNode>;

openraft::declare_raft_types!(
    /// Conclave's raft types: log entries carry etcd requests; members are etcd members.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = MemberNode,
        SnapshotData = tokio::fs::File,
);

/// A member as raft's membership records it, with etcd's member attributes. A member added but
/// not started yet has no name and no client URLs until it publishes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl MemberNode {
    /// The URL raft and the peer service reach this member at.
    pub fn peer_url(&self) -> &str {
        self.peer_urls.first().map_or("", String::as_str)
    }
}

/// Raft's membership configuration: voters (possibly joint) and every member's attributes.
pub type Membership = openraft::Membership<NodeId, MemberNode>;

/// The members of `membership` as etcd lists them (by id; learners are the non-voters).
pub fn etcd_members(membership: &Membership) -> Vec<conclave_proto::etcdserverpb::Member> {
    let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(&id, node)| conclave_proto::etcdserverpb::Member {
            id,
            name: node.name.clone(),
            peer_ur_ls: node.peer_urls.clone(),
            client_ur_ls: node.client_urls.clone(),
            is_learner: !voters.contains(&id),
        })
        .collect()
}

/// A protobuf message that serde stores as its protobuf encoding, so raft can persist it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Proto<M>(pub M);

/// A batch of client write requests: one log entry.
pub type Request = Proto<RaftBatch>;

/// The outcomes of applying a [`Request`], one per client request.
pub type Response = Proto<RaftBatchResponse>;

/// Client requests in a log entry, as etcd counts entries: one at least (a blank entry or a
/// membership change counts as one), for snapshots due and log kept behind them.
fn requests_in(entry: &openraft::Entry<TypeConfig>) -> u64 {
    match &entry.payload {
        openraft::EntryPayload::Normal(batch) => batch.0.requests.len().max(1) as u64,
        openraft::EntryPayload::Blank | openraft::EntryPayload::Membership(_) => 1,
    }
}

impl<M: Message> Serialize for Proto<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0.encode_to_vec())
    }
}

impl<'de, M: Message + Default> Deserialize<'de> for Proto<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        M::decode(Cursor::new(bytes.as_ref())).map(Proto).map_err(serde::de::Error::custom)
    }
}

/// Binary encoding for everything raft persists (entries, vote, log ids, membership).
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::new(&e)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::conclave::raft::{raft_request, RaftRequest};
    use conclave_proto::etcdserverpb::PutRequest;

    #[test]
    fn request_round_trips_through_postcard() {
        let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
        let one = RaftRequest { id: 7, request: Some(raft_request::Request::Put(put)) };
        let req = Proto(RaftBatch { requests: vec![one.clone(), one], proposal: 0 });
        let bytes = encode(&req).unwrap();
        assert_eq!(decode::<Request>(&bytes).unwrap(), req);
    }
}
