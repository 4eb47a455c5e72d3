//! The protobuf messages the etcd recipe services share (etcdserverpb.ResponseHeader,
//! mvccpb.KeyValue), with the same field numbers, from the SDK's records.

use conclave_guest::KeyValue;
use conclave_guest::kv::Header;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

impl From<Header> for ResponseHeader {
    fn from(h: Header) -> Self {
        ResponseHeader { cluster_id: h.cluster_id, member_id: h.member_id, revision: h.revision, raft_term: h.raft_term }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WireKeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

impl From<KeyValue> for WireKeyValue {
    fn from(kv: KeyValue) -> Self {
        WireKeyValue {
            key: kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value,
            lease: kv.lease,
        }
    }
}

/// Decode a request, or fail with `invalid-argument`.
pub fn decode<M: prost::Message + Default>(payload: &[u8]) -> conclave_guest::Result<M> {
    M::decode(payload).map_err(|e| conclave_guest::Error::invalid_argument(format!("bad protobuf payload: {e}")))
}
