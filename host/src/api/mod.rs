//! Client-facing gRPC services, wire-compatible with etcd v3: thin adapters that decode a
//! request, call the [`Service`] layer as a client, and map its error to a gRPC status.

mod auth;
mod cluster;
mod election;
mod gateway;
mod grpc_metrics;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod metrics;
mod plugin;
mod probes;
mod recipe;
mod watch;

use conclave_proto::conclave::plugin::plugin_server::PluginServer;
use conclave_proto::etcdserverpb::auth_server::AuthServer;
use conclave_proto::etcdserverpb::cluster_server::ClusterServer;
use conclave_proto::etcdserverpb::kv_server::KvServer;
use conclave_proto::etcdserverpb::lease_server::LeaseServer;
use conclave_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use conclave_proto::etcdserverpb::watch_server::WatchServer;
use conclave_proto::v3electionpb::election_server::ElectionServer;
use conclave_proto::v3lockpb::lock_server::LockServer;
use std::sync::Arc;

use axum::Router;
use axum::middleware::Next;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tokio_stream::{Stream, StreamExt};
use tonic::{Response, Status, Streaming};

use crate::error::EtcdError;
use crate::service::{Service, GRPC_OVERHEAD_BYTES};
use crate::transport::{Listener, client_connections, message_size};

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

/// Every client-facing route: the gRPC services, etcd's JSON gateway onto them, and the probes.
pub fn client_routes(service: Service) -> Router {
    let grpc = grpc_routes(&service);
    let limits = gateway::Limits { message: max_message(&service), plugin: max_plugin_message(&service) };
    let http = gateway::routes(grpc.clone(), limits)
        .merge(probes::routes(service.clone()))
        .merge(metrics::routes(service))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(cors));
    grpc.merge(http)
}

/// What a separate metrics listener (`--listen-metrics-urls`) serves, as etcd: `/metrics` and
/// `/health`.
pub fn metrics_routes(service: Service) -> Router {
    metrics::routes(service.clone()).merge(probes::health(service)).fallback(not_found)
}

fn max_message(service: &Service) -> usize {
    service.node().config.max_request_bytes + GRPC_OVERHEAD_BYTES
}

/// A deploy carries a whole plugin: up to --plugin-max-wasm-bytes, refused past it with a reason.
fn max_plugin_message(service: &Service) -> usize {
    max_message(service).max(service.node().config.plugin.plugin_max_wasm_bytes) + GRPC_OVERHEAD_BYTES
}

/// The gRPC services, each under its `/package.Service/` prefix as tonic routes them.
fn grpc_routes(service: &Service) -> Router {
    let max_message = max_message(service);
    let max_plugin_message = max_plugin_message(service);
    let s = || service.clone();
    Router::new()
        .grpc(KvServer::new(kv::KvService::new(s())).max_decoding_message_size(max_message))
        .grpc(AuthServer::new(auth::AuthService::new(s())).max_decoding_message_size(max_message))
        .grpc(LeaseServer::new(lease::LeaseService::new(s())).max_decoding_message_size(max_message))
        .grpc(MaintenanceServer::new(maintenance::MaintenanceService::new(s())).max_decoding_message_size(max_message))
        .grpc(WatchServer::new(watch::WatchService::new(s())).max_decoding_message_size(max_message))
        .grpc(ClusterServer::new(cluster::ClusterService::new(s())).max_decoding_message_size(max_message))
        .grpc(LockServer::new(lock::LockService::new(s())).max_decoding_message_size(max_message))
        .grpc(ElectionServer::new(election::ElectionService::new(s())).max_decoding_message_size(max_message))
        .grpc(PluginServer::new(plugin::PluginService::new(s())).max_decoding_message_size(max_plugin_message))
        .layer(tower::util::MapResponseLayer::new(message_size::as_grpc_go))
        .layer(grpc_metrics::CountCalls)
}

/// Routing a gRPC service by its name.
trait GrpcRoute {
    fn grpc<S>(self, service: S) -> Self
    where
        S: tower::Service<http::Request<axum::body::Body>, Error = std::convert::Infallible> + NamedService + Clone + Send + Sync + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static;
}

impl GrpcRoute for Router {
    fn grpc<S>(self, service: S) -> Self
    where
        S: tower::Service<http::Request<axum::body::Body>, Error = std::convert::Infallible> + NamedService + Clone + Send + Sync + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.route_service(&format!("/{}/{{*method}}", S::NAME), service)
    }
}

/// An unknown path: gRPC's Unimplemented for a gRPC client, etcd's 404 for anyone else.
async fn not_found(request: http::Request<axum::body::Body>) -> http::Response<axum::body::Body> {
    let grpc = request.headers().get(http::header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return Status::unimplemented("").into_http();
    }
    gateway::text_response(http::StatusCode::NOT_FOUND, "404 page not found\n")
}

/// etcd's client port allows any origin (its CORS headers are on every answer); a preflight
/// `OPTIONS` is answered with them alone.
async fn cors(request: http::Request<axum::body::Body>, next: Next) -> http::Response<axum::body::Body> {
    let mut response = match request.method() {
        &http::Method::OPTIONS => http::Response::new(axum::body::Body::empty()),
        _ => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert("access-control-allow-origin", http::HeaderValue::from_static("*"));
    headers.insert("access-control-allow-methods", http::HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"));
    headers.insert("access-control-allow-headers", http::HeaderValue::from_static("accept, content-type, authorization"));
    response
}

/// Serve `routes` on `listener` (gRPC over HTTP/2, and HTTP/1.1 for the gateway and probes)
/// until the server fails.
pub async fn serve(routes: Router, listener: Listener, tls: Option<Arc<rustls::ServerConfig>>) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .accept_http1(true)
        .add_routes(Routes::from(routes))
        .serve_with_incoming(client_connections(listener, tls))
        .await
}
