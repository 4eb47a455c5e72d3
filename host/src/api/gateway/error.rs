//! gRPC statuses as etcd's gateway answers them over HTTP: grpc-gateway's status for the code,
//! and a JSON body naming the error (`error` and `code` as etcd 3.4 writes them, `message` as 3.5).

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;
use tonic::{Code, Status};

/// grpc-gateway's HTTP status for a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
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

/// A failed call's body, its fields in etcd's order.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: i32,
}

/// A failed call's whole answer.
pub fn response(status: &Status) -> Response<Body> {
    let body = ErrorBody { error: status.message(), message: status.message(), code: status.code() as i32 };
    json_response(http_status(status.code()), serde_json::to_vec(&body).expect("JSON of strings"))
}

#[derive(Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'a str,
}

/// The line a stream ends with when its call fails after it has begun.
pub fn stream_line(status: &Status) -> Vec<u8> {
    let http = http_status(status.code());
    let error = StreamError {
        grpc_code: status.code() as i32,
        http_code: http.as_u16(),
        message: status.message(),
        http_status: http.canonical_reason().unwrap_or_default(),
    };
    let mut line = serde_json::to_vec(&serde_json::json!({ "error": error })).expect("JSON of strings");
    line.push(b'\n');
    line
}

pub fn json_response(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A gateway answer from the gRPC call behind it, with the header etcd's gateway adds.
pub fn call_response(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut response = json_response(status, body);
    response.headers_mut().insert("grpc-metadata-content-type", HeaderValue::from_static("application/grpc"));
    response
}

/// A plain-text answer as Go's `http.Error` writes it.
pub fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
