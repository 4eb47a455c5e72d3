//! Client-facing gRPC services, wire-compatible with etcd v3: thin adapters that decode a
//! request, call the [`Service`] layer as a client, and map its error to a gRPC status.

mod cluster;
mod election;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod plugin;
mod recipe;
mod watch;

use conclave_proto::conclave::plugin::plugin_server::PluginServer;
use conclave_proto::etcdserverpb::cluster_server::ClusterServer;
use conclave_proto::etcdserverpb::kv_server::KvServer;
use conclave_proto::etcdserverpb::lease_server::LeaseServer;
use conclave_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use conclave_proto::etcdserverpb::watch_server::WatchServer;
use conclave_proto::v3electionpb::election_server::ElectionServer;
use conclave_proto::v3lockpb::lock_server::LockServer;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tokio_stream::{Stream, StreamExt};
use tonic::{Response, Status, Streaming};

use crate::error::EtcdError;
use crate::service::{Service, GRPC_OVERHEAD_BYTES};
use crate::transport::{client_connections, message_size};

/// A client's request stream up to its end or its first broken message (which ends it too).
fn until_broken<T>(requests: Streaming<T>) -> impl Stream<Item = T> + Unpin + Send + 'static
where
    T: Send + 'static,
{
    requests.map_while(Result::ok)
}

/// A service answer as gRPC sends it.
fn answer<T>(outcome: Result<T, EtcdError>) -> Result<Response<T>, Status> {
    outcome.map(Response::new).map_err(Status::from)
}

/// Serve all client services on `listener` until the server fails.
pub async fn serve(service: Service, listener: TcpListener) -> Result<(), tonic::transport::Error> {
    let max_message = service.node().config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    // A deploy carries a whole plugin: up to --plugin-max-wasm-bytes, refused past it with a reason.
    let max_plugin_message = max_message.max(service.node().config.plugin.plugin_max_wasm_bytes) + GRPC_OVERHEAD_BYTES;
    Server::builder()
        .layer(tower::util::MapResponseLayer::new(message_size::as_grpc_go))
        .add_service(KvServer::new(kv::KvService::new(service.clone())).max_decoding_message_size(max_message))
        .add_service(LeaseServer::new(lease::LeaseService::new(service.clone())).max_decoding_message_size(max_message))
        .add_service(
            MaintenanceServer::new(maintenance::MaintenanceService::new(service.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(WatchServer::new(watch::WatchService::new(service.clone())).max_decoding_message_size(max_message))
        .add_service(ClusterServer::new(cluster::ClusterService::new(service.clone())).max_decoding_message_size(max_message))
        .add_service(LockServer::new(lock::LockService::new(service.clone())).max_decoding_message_size(max_message))
        .add_service(
            ElectionServer::new(election::ElectionService::new(service.clone())).max_decoding_message_size(max_message),
        )
        .add_service(PluginServer::new(plugin::PluginService::new(service)).max_decoding_message_size(max_plugin_message))
        .serve_with_incoming(client_connections(listener))
        .await
}
