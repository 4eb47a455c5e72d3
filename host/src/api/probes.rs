//! What load balancers and operators probe over plain HTTP, as etcd answers: `/version`,
//! `/health` (3.4's body; a reason when unhealthy), and 3.5's `/livez` and `/readyz`.

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::routing::get;
use http::{Response, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::gateway::json_response;
use crate::service::{Check, Service, VERSION, cluster_version};

/// `/health` alone: what a separate metrics listener serves beside `/metrics`.
pub fn health(service: Service) -> Router {
    Router::new().route("/health", get(health_answer)).with_state(service)
}

/// Every probe.
pub fn routes(service: Service) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(service.clone())
        .merge(health(service))
}

/// `/version`'s body, its fields in etcd's order.
#[derive(Serialize)]
struct Versions {
    etcdserver: &'static str,
    etcdcluster: String,
}

async fn version() -> Response<Body> {
    let body = Versions { etcdserver: VERSION, etcdcluster: format!("{}.0", cluster_version()) };
    json_response(StatusCode::OK, serde_json::to_vec(&body).expect("JSON of strings"))
}

/// `/health`'s body: etcd 3.4's, with 3.5's reason when unhealthy.
#[derive(Serialize)]
struct Health {
    health: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct HealthQuery {
    #[serde(default)]
    serializable: Option<String>,
}

async fn health_answer(State(service): State<Service>, Query(query): Query<HealthQuery>) -> Response<Body> {
    let serializable = query.serializable.as_deref() == Some("true");
    let (status, mut body) = match service.health(serializable).await {
        Ok(()) => (StatusCode::OK, Health { health: "true", reason: None }),
        Err(reason) => {
            tracing::warn!(%reason, "serving /health false");
            (StatusCode::SERVICE_UNAVAILABLE, Health { health: "false", reason: Some(reason) })
        }
    };
    let mut text = serde_json::to_vec(&body).expect("JSON of strings");
    if body.reason.take().is_some() {
        text.push(b'\n');
    }
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, "text/plain; charset=utf-8".parse().expect("a header value"));
    response
}

#[derive(Deserialize, Default)]
struct ProbeQuery {
    verbose: Option<String>,
    /// A comma-separated list of checks to skip (`exclude=linearizable_read`).
    #[serde(default)]
    exclude: Option<String>,
}

async fn livez(State(service): State<Service>, Query(query): Query<ProbeQuery>) -> Response<Body> {
    probe(&service, "livez", &[Check::SerializableRead], &query).await
}

async fn readyz(State(service): State<Service>, Query(query): Query<ProbeQuery>) -> Response<Body> {
    probe(&service, "readyz", &[Check::DataCorruption, Check::SerializableRead, Check::LinearizableRead], &query).await
}

/// Kubernetes-style probe output, as etcd 3.5 writes it: `ok`, or a line per check with
/// `?verbose` or when one fails.
async fn probe(service: &Service, name: &str, checks: &[Check], query: &ProbeQuery) -> Response<Body> {
    let excluded: Vec<&str> = query.exclude.as_deref().unwrap_or_default().split(',').collect();
    let mut lines = String::new();
    let mut failed = false;
    for check in checks {
        if excluded.contains(&check.name()) {
            lines.push_str(&format!("[+]{} excluded: ok\n", check.name()));
            continue;
        }
        match service.check(*check).await {
            Ok(()) => lines.push_str(&format!("[+]{} ok\n", check.name())),
            Err(reason) => {
                failed = true;
                lines.push_str(&format!("[-]{} failed: {reason}\n", check.name()));
            }
        }
    }
    let (status, body) = match (failed, query.verbose.is_some()) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, format!("{lines}{name} check failed\n")),
        (false, true) => (StatusCode::OK, format!("{lines}{name} check passed\n")),
        (false, false) => (StatusCode::OK, "ok\n".to_string()),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, "text/plain; charset=utf-8".parse().expect("a header value"));
    response
}
