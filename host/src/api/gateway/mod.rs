//! etcd's HTTP/JSON gateway on the client port: `POST /v3/<service>/<method>` (and the `/v3beta/`
//! spellings etcd 3.4 still serves) with a JSON body, answered in JSON. Each path is one gRPC
//! method ([`methods`]), called in-process through the same routes remote gRPC clients use
//! ([`grpc`]), so the gateway adds no rules of its own: only the JSON mapping ([`json`]) and
//! HTTP's way of saying what failed ([`error`]).

mod error;
mod grpc;
mod json;
mod methods;

use axum::Router;
use axum::body::Body;
use std::time::Duration;

use axum::routing::{any, post};
use bytes::Bytes;
use futures::channel::oneshot;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tonic::Status;

pub use error::{json_response, text_response};
use methods::{METHODS, Method, Shape};

/// The version prefixes the gateway answers under.
const PREFIXES: [&str; 2] = ["/v3/", "/v3beta/"];

/// Limits on request bodies: base64 makes JSON a third larger than the protobuf it carries.
#[derive(Clone, Copy)]
pub struct Limits {
    /// Largest gRPC message of any method.
    pub message: usize,
    /// Largest gRPC message of a plugin deploy.
    pub plugin: usize,
}

impl Limits {
    fn body(&self, method: &Method) -> usize {
        let message = if method.carries_plugin { self.plugin } else { self.message };
        message / 3 * 4 + 64 * 1024
    }
}

/// How long a client may take to send a request body (a stream's body may take forever).
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway's routes, calling the gRPC services of `grpc`.
pub fn routes(grpc: Router, limits: Limits) -> Router {
    let mut router = Router::new();
    for prefix in PREFIXES {
        for (path, method) in METHODS {
            let grpc = grpc.clone();
            let limit = limits.body(method);
            let route = post(move |request| answer(grpc, method, limit, request)).fallback(method_not_allowed);
            router = router.route(&format!("{prefix}{path}"), route);
        }
        // Anything else under a version prefix is the gateway's "Not Found", as etcd's.
        router = router.route(&format!("{prefix}{{*path}}"), any(unknown_path));
    }
    router
}

async fn method_not_allowed() -> Response<Body> {
    text_response(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
}

async fn unknown_path() -> Response<Body> {
    text_response(StatusCode::NOT_FOUND, "Not Found\n")
}

async fn answer(grpc: Router, method: &'static Method, limit: usize, request: Request<Body>) -> Response<Body> {
    let body = request.into_body();
    let (requests, broken) = match method.shape {
        Shape::Unary | Shape::ServerStream => {
            let bytes = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(e)) => return body_error(&*e, limit),
                Err(_) => {
                    let status = Status::cancelled(format!("the request body did not arrive within {BODY_TIMEOUT:?}"));
                    return error::response(&status);
                }
            };
            match (method.decode)(&bytes) {
                Ok(message) => (futures::stream::once(async { message }).boxed(), None),
                Err(e) => return error::response(&Status::invalid_argument(e.to_string())),
            }
        }
        Shape::Bidi => {
            let (requests, broken) = request_stream(body, method, limit);
            (requests.boxed(), Some(broken))
        }
    };
    let mut responses = grpc::call(grpc, method.grpc_path, requests).await.boxed();
    let first = match responses.next().await {
        None => return error::response(&Status::unknown("the call ended without an answer")),
        Some(Err(status)) => return error::response(&status),
        Some(Ok(first)) => first,
    };
    if method.shape == Shape::Unary {
        // Read the call to its end (its status), as a remote client would.
        if let Some(Err(status)) = responses.next().await {
            return error::response(&status);
        }
        return match (method.encode)(&first) {
            Ok(json) => error::call_response(StatusCode::OK, json),
            Err(e) => error::response(&Status::internal(e)),
        };
    }
    let encode = method.encode;
    let lines = futures::stream::once(async { Ok(first) }).chain(responses).boxed();
    let lines = match broken {
        Some(broken) => until_broken(lines, broken).boxed(),
        None => lines,
    };
    let lines = lines.map(move |message| {
        let line = message.and_then(|message| encode(&message).map_err(Status::internal)).map(|json| {
            let mut line = Vec::with_capacity(json.len() + 12);
            line.extend_from_slice(b"{\"result\":");
            line.extend_from_slice(&json);
            line.extend_from_slice(b"}\n");
            Bytes::from(line)
        });
        Ok::<_, std::convert::Infallible>(line.unwrap_or_else(|status| Bytes::from(error::stream_line(&status))))
    });
    error::call_response(StatusCode::OK, Body::from_stream(lines))
}

/// A request body's JSON values as messages, read as they arrive; a malformed or oversized value
/// ends the stream and is reported through the second half.
fn request_stream(
    body: Body,
    method: &'static Method,
    limit: usize,
) -> (impl Stream<Item = Vec<u8>> + Send + 'static, oneshot::Receiver<Status>) {
    let (report, broken) = oneshot::channel();
    let state = (body.into_data_stream(), json::ValueSplitter::default(), Some(report));
    let messages = futures::stream::unfold(state, move |(mut body, mut splitter, mut report)| async move {
        let fail = |report: &mut Option<oneshot::Sender<Status>>, status: Status| {
            if let Some(report) = report.take() {
                let _ = report.send(status);
            }
        };
        loop {
            report.as_ref()?;
            match splitter.next_value() {
                Some(Ok(value)) => match (method.decode)(&value) {
                    Ok(message) => return Some((message, (body, splitter, report))),
                    Err(e) => fail(&mut report, Status::invalid_argument(e.to_string())),
                },
                Some(Err(e)) => fail(&mut report, Status::invalid_argument(e.to_string())),
                None if splitter.pending() > limit => {
                    fail(&mut report, Status::resource_exhausted(format!("a request in the stream is over {limit} bytes")))
                }
                None => match body.next().await {
                    Some(Ok(bytes)) => splitter.push(&bytes),
                    // The client finished (or went away): the call goes on until it ends.
                    Some(Err(_)) | None => {
                        report.take();
                        return None;
                    }
                },
            }
        }
    });
    (messages, broken)
}

/// `responses` until the request stream breaks, then that error; a request stream that simply
/// ends leaves the responses going (a watch outlives the body that created it).
fn until_broken(
    responses: BoxStream<'static, Result<Bytes, Status>>,
    broken: oneshot::Receiver<Status>,
) -> impl Stream<Item = Result<Bytes, Status>> + Send {
    futures::stream::unfold((responses, Some(broken)), |(mut responses, broken)| async move {
        let Some(mut broken) = broken else {
            return responses.next().await.map(|item| (item, (responses, None)));
        };
        tokio::select! {
            item = responses.next() => item.map(|item| (item, (responses, Some(broken)))),
            status = &mut broken => match status {
                Ok(status) => Some((Err(status), (futures::stream::empty().boxed(), None))),
                Err(oneshot::Canceled) => responses.next().await.map(|item| (item, (responses, None))),
            },
        }
    })
}

fn body_error(error: &(dyn std::error::Error + Send + Sync + 'static), limit: usize) -> Response<Body> {
    if error.is::<LengthLimitError>() {
        let status = Status::resource_exhausted(format!("request body is over the gateway's limit of {limit} bytes"));
        return error::response(&status);
    }
    error::response(&Status::invalid_argument(format!("reading the request body: {error}")))
}
