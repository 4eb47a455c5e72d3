//! `grpc_server_started_total` and `grpc_server_handled_total` as go-grpc-prometheus counts them
//! for etcd: one start per call, one finish with the status code it ended with (from the
//! trailers, or the headers of a trailers-only answer; `Canceled` if the client left first).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{LazyLock, RwLock};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use tonic::Code;

use crate::metrics::{self, GrpcHandled, GrpcMethod};

/// The methods that stream, and which way.
fn grpc_type(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive") => "bidi_stream",
        ("etcdserverpb.Maintenance", "Snapshot") | ("v3electionpb.Election", "Observe") | ("conclave.plugin.Plugin", "InvokeStream") => {
            "server_stream"
        }
        _ => "unary",
    }
}

/// Method names seen, each kept once for the process (labels are `&'static str`, so counting a
/// call allocates nothing). Paths are routed here only under a known service, but the method
/// part is the client's: past this many names, further ones count as `unknown`, so no client
/// can grow the metrics without bound.
const MAX_METHODS: usize = 256;

static METHODS: LazyLock<RwLock<HashMap<String, GrpcMethod>>> = LazyLock::new(RwLock::default);

fn method_labels(path: &str) -> GrpcMethod {
    if let Some(known) = METHODS.read().unwrap_or_else(|e| e.into_inner()).get(path) {
        return *known;
    }
    let mut methods = METHODS.write().unwrap_or_else(|e| e.into_inner());
    if methods.len() >= MAX_METHODS {
        return GrpcMethod { grpc_type: "unary", grpc_service: "unknown", grpc_method: "unknown" };
    }
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service: &'static str = Box::leak(parts.next().unwrap_or_default().to_string().into_boxed_str());
    let method: &'static str = Box::leak(parts.next().unwrap_or_default().to_string().into_boxed_str());
    let labels = GrpcMethod { grpc_type: grpc_type(service, method), grpc_service: service, grpc_method: method };
    methods.insert(path.to_string(), labels);
    labels
}

/// The layer counting every call of the services below it.
#[derive(Clone, Copy)]
pub struct CountCalls;

impl<S> tower::Layer<S> for CountCalls {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
}

impl<S> tower::Service<Request<Body>> for Counted<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let method = method_labels(request.uri().path());
        metrics::get().grpc_started.get_or_create(&method).inc();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let mut call = Call { method: Some(method) };
            if let Some(code) = status(response.headers()) {
                call.finish(code);
            }
            Ok(response.map(|body| Body::new(CountedBody { body, call })))
        })
    }
}

/// A call not yet counted as handled.
struct Call {
    method: Option<GrpcMethod>,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if let Some(method) = self.method.take() {
            let handled = GrpcHandled {
                grpc_type: method.grpc_type,
                grpc_service: method.grpc_service,
                grpc_method: method.grpc_method,
                grpc_code: code_name(code),
            };
            metrics::get().grpc_handled.get_or_create(&handled).inc();
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

struct CountedBody {
    body: Body,
    call: Call,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(status) {
                    self.call.finish(code);
                }
            }
            Some(Err(_)) => self.call.finish(Code::Unknown),
            None => self.call.finish(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn status(headers: &HeaderMap) -> Option<Code> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(code))
}

/// The code as go-grpc-prometheus names it (`OK`, `NotFound`…).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
