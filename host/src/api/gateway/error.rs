//! gRPC statuses as etcd's gateway answers them over HTTP: grpc-gateway's status for the code,
//! and a JSON body naming the error (`error` and `code` as etcd 3.4 writes them, `message` as 3.5).

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;
use tonic::{Code, Status};

/// grpc-gateway's HTTP status for a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A failed call's whole answer.
pub fn response(status: &Status) -> Response<Body> {
    let body = json!({ "error": status.message(), "code": status.code() as i32, "message": status.message() });
    json_response(http_status(status.code()), body.to_string())
}

/// The line a stream ends with when its call fails after it has begun.
pub fn stream_line(status: &Status) -> String {
    let http = http_status(status.code());
    let error = json!({
        "grpc_code": status.code() as i32,
        "http_code": http.as_u16(),
        "message": status.message(),
        "http_status": http.canonical_reason().unwrap_or_default(),
    });
    format!("{}\n", json!({ "error": error }))
}

pub fn json_response(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
