//! Failed calls as tests compare them: the gRPC code and message, so an assertion reads like
//! the error etcd documents.

use etcd_client::Error;
use tonic::Code;

/// The gRPC code and message of a failed call.
pub fn status<T: std::fmt::Debug>(result: Result<T, Error>) -> (Code, String) {
    match result {
        Err(Error::GRpcStatus(status)) => (status.code(), status.message().to_string()),
        other => panic!("expected a gRPC error status, got {other:?}"),
    }
}

/// What [`status`] gives for a call failing with `code` and `message`.
pub fn err(code: Code, message: &str) -> (Code, String) {
    (code, message.to_string())
}
