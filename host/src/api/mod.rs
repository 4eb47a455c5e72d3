//! Client-facing gRPC services, wire-compatible with etcd v3.

mod cluster;
pub mod h2_compat;
mod kv;
mod maintenance;
mod validate;

use std::sync::Arc;

use conclave_proto::etcdserverpb::cluster_server::ClusterServer;
use conclave_proto::etcdserverpb::kv_server::KvServer;
use conclave_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use tonic::transport::server::Router;
use tonic::transport::Server;

use crate::node::Node;

pub use maintenance::VERSION;

/// etcd lets gRPC messages exceed `--max-request-bytes` by this much, so that an oversized request
/// reaches the server and gets etcd's own "request is too large" error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// All client services of `node`, ready to serve on any listener.
pub fn router(node: Arc<Node>) -> Router {
    let max_message = node.config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    Server::builder()
        .add_service(KvServer::new(kv::KvService::new(node.clone())).max_decoding_message_size(max_message))
        .add_service(
            MaintenanceServer::new(maintenance::MaintenanceService::new(node.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(ClusterServer::new(cluster::ClusterService::new(node)).max_decoding_message_size(max_message))
}
