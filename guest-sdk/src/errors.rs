//! The error every SDK call returns: the host's `error` record as an ordinary Rust error.

use std::fmt;

use crate::bindings::conclave::plugin::types as wit;

pub use wit::ErrorCode;

/// What went wrong: a code to act on and a message for people (etcd's text where etcd has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

/// The result of every SDK call and of [`crate::Plugin::handle`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }

    pub fn exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Exhausted, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The answer to a method name the plugin does not serve.
    pub fn unknown_method(method: &str) -> Self {
        Self::invalid_argument(format!("unknown method {method:?}"))
    }

    /// The caller of a streaming method has gone away: stop emitting.
    pub fn is_cancelled(&self) -> bool {
        self.code == ErrorCode::Cancelled
    }

    /// A wait ended with no answer because the call's own time is running out.
    pub fn is_timeout(&self) -> bool {
        self.code == ErrorCode::Timeout
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.message)
    }
}

impl std::error::Error for Error {}

/// The WIT name of a code, as it reads in logs.
pub fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "invalid-argument",
        ErrorCode::PermissionDenied => "permission-denied",
        ErrorCode::NotFound => "not-found",
        ErrorCode::Compacted => "compacted",
        ErrorCode::FutureRevision => "future-revision",
        ErrorCode::Timeout => "timeout",
        ErrorCode::Exhausted => "exhausted",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Cancelled => "cancelled",
        ErrorCode::FailedPrecondition => "failed-precondition",
        ErrorCode::Internal => "internal",
    }
}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        Error { code: e.code, message: e.message }
    }
}

impl From<Error> for wit::Error {
    fn from(e: Error) -> Self {
        wit::Error { code: e.code, message: e.message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_code() {
        let e = Error::failed_precondition("stale version");
        assert_eq!(e.to_string(), "failed-precondition: stale version");
        assert!(!e.is_cancelled());
        assert!(Error::new(ErrorCode::Cancelled, "gone").is_cancelled());
    }

    #[test]
    fn converts_both_ways() {
        let e = Error::not_found("etcdserver: requested lease not found");
        let w: wit::Error = e.clone().into();
        assert_eq!(Error::from(w), e);
    }
}
