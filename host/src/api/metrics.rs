//! `/metrics`: the member's counters in the Prometheus text format.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use http::{HeaderValue, Response, header};

use crate::service::Service;

pub fn routes(service: Service) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(service)
}

async fn scrape(State(service): State<Service>) -> Response<Body> {
    let text = crate::metrics::scrape(service.node()).await;
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
