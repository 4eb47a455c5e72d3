//! The service layer without gRPC: a one-member node started in-process, called directly as a
//! client and as a restricted caller (the plugin host's view).

use clap::Parser;
use conclave_proto::etcdserverpb::request_op::Request as Op;
use conclave_proto::etcdserverpb::watch_request::RequestUnion;
use conclave_proto::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};

use super::{Access, Caller, Service};
use crate::config::Config;
use crate::error::EtcdError;
use crate::mvcc::KeySpan;
use crate::node::Node;
use crate::plugin::registry::Registry;

/// A one-member node in `dir` (its peer URL is never dialled: a single member needs no peers).
async fn service(dir: &tempfile::TempDir) -> Service {
    let config = Config::parse_from([
        "conclave",
        "--data-dir",
        dir.path().join("member").to_str().expect("temp dir is UTF-8"),
        "--listen-peer-urls",
        "http://127.0.0.1:1",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:1",
    ]);
    let plugins = Registry::with_builtins(&config.plugin, None).await.expect("the built-in plugins load");
    Service::start(Node::start(config).await.expect("the node starts"), plugins).await
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

fn app_only() -> Caller {
    let app = Access::Only(vec![KeySpan::new(b"app/", b"app0")]);
    Caller::restricted("test-plugin", app.clone(), app)
}

#[tokio::test]
async fn a_restricted_caller_is_refused_keys_outside_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(&dir).await;
    let client = Caller::client();
    let plugin = app_only();
    service.put(&client, put("secret", "s")).await.unwrap();

    assert_eq!(service.put(&plugin, put("app/lock", "me")).await.map(|_| ()), Ok(()));
    let read = |key: &str| RangeRequest { key: key.into(), ..Default::default() };
    assert_eq!(service.range(&plugin, read("app/lock")).await.unwrap().kvs.len(), 1);

    assert_eq!(service.put(&plugin, put("secret", "mine")).await.err(), Some(EtcdError::PermissionDenied));
    assert_eq!(service.range(&plugin, read("secret")).await.err(), Some(EtcdError::PermissionDenied));
    let everything = RangeRequest { key: b"\0".to_vec(), range_end: b"\0".to_vec(), ..Default::default() };
    assert_eq!(service.range(&plugin, everything).await.err(), Some(EtcdError::PermissionDenied));
    let wipe = DeleteRangeRequest { key: b"app/".to_vec(), range_end: b"\0".to_vec(), ..Default::default() };
    assert_eq!(service.delete_range(&plugin, wipe).await.err(), Some(EtcdError::PermissionDenied));
    let sneaky = TxnRequest {
        success: vec![RequestOp { request: Some(Op::RequestPut(put("secret", "txn"))) }],
        ..Default::default()
    };
    assert_eq!(service.txn(&plugin, sneaky).await.err(), Some(EtcdError::PermissionDenied));

    // Revoking a lease deletes its keys: a caller may revoke only a lease whose keys it may write.
    let lease = service.lease_grant(&client, LeaseGrantRequest { ttl: 60, id: 0 }).await.unwrap().id;
    service.put(&client, PutRequest { lease, ..put("secret2", "s") }).await.unwrap();
    assert_eq!(service.lease_revoke(&plugin, LeaseRevokeRequest { id: lease }).await.err(), Some(EtcdError::PermissionDenied));

    // Nothing the refused calls named changed.
    let secret = service.range(&client, read("secret")).await.unwrap();
    assert_eq!(secret.kvs[0].value, b"s".as_slice());
    assert_eq!(service.range(&client, read("secret2")).await.unwrap().kvs.len(), 1);
}

#[tokio::test]
async fn a_watch_runs_over_a_plain_stream() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(&dir).await;
    let client = Caller::client();
    let (mut requests, responses) = watch(&service, &client);
    requests.send(create(b"k", b"l")).await.unwrap();
    let mut responses = responses;
    assert!(responses.next().await.unwrap().created);

    service.put(&client, put("k1", "one")).await.unwrap();
    service.put(&client, put("other", "not watched")).await.unwrap();
    service.put(&client, put("k2", "two")).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let response = responses.next().await.expect("the watch stays open");
        seen.extend(response.events.into_iter().map(|e| e.kv.unwrap().key));
    }
    assert_eq!(seen, [b"k1".to_vec(), b"k2".to_vec()]);
    // Ending the request stream ends the watch.
    drop(requests);
    assert!(responses.next().await.is_none());
}

#[tokio::test]
async fn a_restricted_caller_may_watch_only_what_it_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(&dir).await;
    let (mut requests, mut responses) = watch(&service, &app_only());
    requests.send(create(b"secret", b"")).await.unwrap();
    let refused = responses.next().await.unwrap();
    assert!(refused.created && refused.canceled, "{refused:?}");
    assert_eq!(refused.cancel_reason, "rpc error: code = PermissionDenied desc = etcdserver: permission denied");
    // The stream goes on serving what the caller may watch.
    requests.send(create(b"app/", b"app0")).await.unwrap();
    let created = responses.next().await.unwrap();
    assert!(created.created && !created.canceled, "{created:?}");
    service.put(&Caller::client(), put("secret", "s")).await.unwrap();
    service.put(&Caller::client(), put("app/x", "x")).await.unwrap();
    let event = responses.next().await.unwrap();
    assert_eq!(event.events[0].kv.as_ref().unwrap().key, b"app/x".as_slice());
}

/// A watch stream served by `service` for `caller`, over plain channels.
fn watch(service: &Service, caller: &Caller) -> (mpsc::Sender<WatchRequest>, mpsc::Receiver<WatchResponse>) {
    let (requests, incoming) = mpsc::channel(4);
    let (out, responses) = mpsc::channel(16);
    tokio::spawn(service.watch(caller, incoming, out).unwrap());
    (requests, responses)
}

fn create(key: &[u8], range_end: &[u8]) -> WatchRequest {
    let create = WatchCreateRequest { key: key.to_vec(), range_end: range_end.to_vec(), ..Default::default() };
    WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }
}
