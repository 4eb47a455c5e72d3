//! v3lockpb's Lock and Unlock in protobuf, as etcd's lock service serves them.

use concurrency::Deadline;
use concurrency::wire::{ResponseHeader, decode};
use conclave_guest::{Result, kv};
use prost::Message;

use crate::mutex::{Wait, lock as take};

#[derive(Clone, PartialEq, Message)]
struct LockRequest {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
    #[prost(int64, tag = "2")]
    lease: i64,
}

#[derive(Clone, PartialEq, Message)]
struct LockResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(bytes = "vec", tag = "2")]
    key: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct UnlockRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct UnlockResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

/// Wait as long as the call may: etcd's Lock waits until its caller gives up.
pub fn lock(payload: &[u8]) -> Result<Vec<u8>> {
    let request: LockRequest = decode(payload)?;
    let held = take(&request.name, request.lease, Wait::Until(Deadline::NEVER))?;
    Ok(LockResponse { header: Some(held.header.into()), key: held.key }.encode_to_vec())
}

/// Delete the key, held or not, as etcd does.
pub fn unlock(payload: &[u8]) -> Result<Vec<u8>> {
    let request: UnlockRequest = decode(payload)?;
    let deleted = kv::delete_range(&kv::DeleteRangeRequest::key(request.key))?;
    Ok(UnlockResponse { header: Some(deleted.header.into()) }.encode_to_vec())
}
