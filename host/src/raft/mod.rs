//! Consensus: openraft's type configuration, the sled-backed log and state machine, the peer
//! network, and the proposer that batches client writes. Every log entry is a [`Request`]: a batch
//! of client writes; applying it yields a [`Response`] per write.

mod log_store;
mod network;
mod peer_service;
mod peers;
mod proposer;
mod state_machine;

use std::io::Cursor;

use conclave_proto::conclave::raft::{RaftBatch, RaftBatchResponse};
use openraft::{AnyError, BasicNode, StorageError, StorageIOError};
use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use log_store::{read_log, CommittedIndex, LogDump, LogStore};
pub use network::Network;
pub use peer_service::{serve_peers, KeepAlive, LocalMember, TimeToLive};
pub use peers::{on_leader, Answer, Peers};
pub use proposer::Proposer;
pub use state_machine::{read_snapshot_meta, StateMachine, APPLIED as APPLIED_META, MEMBERSHIP as MEMBERSHIP_META};

/// Raft member ids are etcd member ids.
pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;

openraft::declare_raft_types!(
    /// Conclave's raft types: log entries carry etcd requests; members are addressed by peer URL.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = tokio::fs::File,
);

/// A protobuf message that serde stores as its protobuf encoding, so raft can persist it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Proto<M>(pub M);

/// A batch of client write requests: one log entry.
pub type Request = Proto<RaftBatch>;

/// The outcomes of applying a [`Request`], one per client request.
pub type Response = Proto<RaftBatchResponse>;

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
        let req = Proto(RaftBatch { requests: vec![one.clone(), one] });
        let bytes = encode(&req).unwrap();
        assert_eq!(decode::<Request>(&bytes).unwrap(), req);
    }
}
