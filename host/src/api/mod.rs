//! Client-facing gRPC services, wire-compatible with etcd v3.

mod cluster;
mod h2_compat;
mod kv;
mod lease;
mod maintenance;
mod message_size;
mod validate;
mod watch;

use std::sync::Arc;

use conclave_proto::etcdserverpb::cluster_server::ClusterServer;
use conclave_proto::etcdserverpb::kv_server::KvServer;
use conclave_proto::etcdserverpb::lease_server::LeaseServer;
use conclave_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use conclave_proto::etcdserverpb::watch_server::WatchServer;
use futures::TryStreamExt;
use h2_compat::AuthorityFix;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use crate::node::Node;

pub use lease::{keep_alive_as_leader, time_to_live_as_leader};

/// etcd lets gRPC messages exceed `--max-request-bytes` by this much, so that an oversized request
/// reaches the server and gets etcd's own "request is too large" error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// A proposal came back with a response of another kind than the request's: a bug, not a client error.
fn unexpected(what: &str) -> tonic::Status {
    tonic::Status::internal(format!("raft applied a {what} request but returned another response"))
}

/// Refuses every call while this member is a learner (etcd's learners serve no leases or
/// watches; the KV and Maintenance services check per call, as they allow some).
fn learner_guard(node: Arc<Node>) -> impl tonic::service::Interceptor + Clone {
    move |request: tonic::Request<()>| node.refuse_if_learner().map(|()| request)
}

/// Serve all client services of `node` on `listener` until the server fails.
pub async fn serve(node: Arc<Node>, listener: TcpListener) -> Result<(), tonic::transport::Error> {
    // Small request/response messages: send each at once rather than waiting to coalesce.
    let connections = TcpListenerStream::new(listener).map_ok(|tcp| {
        let _ = tcp.set_nodelay(true);
        AuthorityFix::new(tcp)
    });
    let max_message = node.config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    Server::builder()
        .layer(tower::util::MapResponseLayer::new(message_size::as_grpc_go))
        .add_service(KvServer::new(kv::KvService::new(node.clone())).max_decoding_message_size(max_message))
        .add_service(InterceptedService::new(
            LeaseServer::new(lease::LeaseService::new(node.clone())).max_decoding_message_size(max_message),
            learner_guard(node.clone()),
        ))
        .add_service(
            MaintenanceServer::new(maintenance::MaintenanceService::new(node.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(InterceptedService::new(
            WatchServer::new(watch::WatchService::new(node.clone())).max_decoding_message_size(max_message),
            learner_guard(node.clone()),
        ))
        .add_service(ClusterServer::new(cluster::ClusterService::new(node)).max_decoding_message_size(max_message))
        .serve_with_incoming(connections)
        .await
}
