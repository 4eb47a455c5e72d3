//! The `lock-recipe` workload: a lock taken and released with etcd's client-side recipe
//! (clientv3/concurrency's Mutex, what `etcdctl lock` runs) over the KV and Watch APIs, so the
//! server-side locks (etcd's v3lock, Conclave's lock plugin) can be set against it on the same
//! server.
//!
//! The recipe: in one txn, create `NAME/LEASE` on the client's lease unless it exists, and read
//! the oldest key under `NAME/`; if that is not ours, wait for the deletion of the youngest older
//! key, again until none is left; check our key still exists (the lease may have ended); hold;
//! delete our key.

use conclave_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use conclave_proto::etcdserverpb::kv_client::KvClient;
use conclave_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use conclave_proto::etcdserverpb::request_op::Request as Op;
use conclave_proto::etcdserverpb::response_op::Response as OpResponse;
use conclave_proto::etcdserverpb::watch_client::WatchClient;
use conclave_proto::etcdserverpb::watch_request::RequestUnion;
use conclave_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use conclave_proto::mvccpb::KeyValue;
use conclave_proto::mvccpb::event::EventType;
use conclave_host::mvcc::prefix_end;
use tonic::Status;
use tonic::transport::Channel;

/// Take the lock `name` for `lease`, waiting for older holders, then release it.
pub async fn lock_and_unlock(channel: &Channel, name: &[u8], lease: i64) -> Result<(), Status> {
    let mut kv = KvClient::new(channel.clone());
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let mut key = prefix.clone();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    let (revision, first) = enqueue(&mut kv, &prefix, &key, lease).await?;
    if first.is_some_and(|kv| kv.create_revision != revision) {
        wait_deletes(&mut kv, channel, &prefix, revision - 1).await?;
        let ours = kv.range(RangeRequest { key: key.clone(), ..Default::default() }).await?.into_inner();
        if ours.kvs.is_empty() {
            return Err(Status::failed_precondition("mutex: session is expired"));
        }
    }
    kv.delete_range(DeleteRangeRequest { key, ..Default::default() }).await.map(drop)
}

/// The oldest key under `prefix` (`descending`: the youngest), at most `max_create_revision`.
fn edge(prefix: &[u8], descending: bool, max_create_revision: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: if descending { SortOrder::Descend } else { SortOrder::Ascend } as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision,
        ..Default::default()
    }
}

/// Join the queue: our key's create revision, and the oldest key under `prefix`.
async fn enqueue(kv: &mut KvClient<Channel>, prefix: &[u8], key: &[u8], lease: i64) -> Result<(i64, Option<KeyValue>), Status> {
    let absent = Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(0)),
        ..Default::default()
    };
    let op = |request: Op| RequestOp { request: Some(request) };
    let put = Op::RequestPut(PutRequest { key: key.to_vec(), lease, ..Default::default() });
    let ours = Op::RequestRange(RangeRequest { key: key.to_vec(), ..Default::default() });
    let first = || Op::RequestRange(edge(prefix, false, 0));
    let txn = TxnRequest { compare: vec![absent], success: vec![op(put), op(first())], failure: vec![op(ours), op(first())] };
    let response = kv.txn(txn).await?.into_inner();
    let mut ranges = response.responses.into_iter().filter_map(|r| match r.response {
        Some(OpResponse::ResponseRange(range)) => Some(range.kvs.into_iter().next()),
        _ => None,
    });
    let revision = if response.succeeded {
        response.header.map_or(0, |h| h.revision)
    } else {
        ranges.next().flatten().map_or(0, |kv| kv.create_revision)
    };
    Ok((revision, ranges.next().flatten()))
}

/// Wait until no key under `prefix` was created at or before `max_create_revision`, one
/// deletion of the youngest such key at a time.
async fn wait_deletes(kv: &mut KvClient<Channel>, channel: &Channel, prefix: &[u8], max_create_revision: i64) -> Result<(), Status> {
    loop {
        let older = kv.range(edge(prefix, true, max_create_revision)).await?.into_inner();
        let Some(last) = older.kvs.into_iter().next() else { return Ok(()) };
        let from = older.header.map_or(0, |h| h.revision);
        wait_delete(channel, last.key.to_vec(), from).await?;
    }
}

/// Wait for `key`'s deletion at or after `from`, on a watch stream of its own.
async fn wait_delete(channel: &Channel, key: Vec<u8>, from: i64) -> Result<(), Status> {
    let create = WatchCreateRequest { key, start_revision: from, ..Default::default() };
    let request = WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
    // The request stream stays open while we wait: a closed one may end the watch.
    let (requests, queue) = tokio::sync::mpsc::channel(1);
    requests.send(request).await.map_err(|_| Status::internal("watch request queue closed"))?;
    let mut responses = WatchClient::new(channel.clone()).watch(tokio_stream::wrappers::ReceiverStream::new(queue)).await?.into_inner();
    while let Some(response) = responses.message().await? {
        if response.canceled {
            return Err(Status::aborted(format!("watch canceled: {}", response.cancel_reason)));
        }
        if response.events.iter().any(|event| event.r#type == EventType::Delete as i32) {
            return Ok(());
        }
    }
    Err(Status::unavailable("watch stream ended"))
}

