//! Calling the server: `--command-timeout` on unary calls, and failures in etcdctl's words.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, anyhow};
use tonic::{Response, Status};

/// What etcdctl (Go's context package) says when time runs out.
pub const DEADLINE_EXCEEDED: &str = "context deadline exceeded";

pub async fn unary<T>(timeout: Duration, call: impl Future<Output = Result<Response<T>, Status>>) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status_error(status)),
        Err(_) => Err(anyhow!(DEADLINE_EXCEEDED)),
    }
}

/// Run one command's calls on a runtime of its own.
pub fn block_on<T>(call: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(call)
}

/// The status message alone, as etcdctl prints it; the code only when there is no message. A
/// connection that broke (a refused TLS handshake, say) adds why.
pub fn status_error(status: Status) -> anyhow::Error {
    let mut text = if status.message().is_empty() { status.code().to_string() } else { status.message().to_string() };
    let mut cause = std::error::Error::source(&status);
    while let Some(error) = cause {
        let line = error.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        cause = error.source();
    }
    anyhow!(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_message_is_the_error() {
        assert_eq!(status_error(Status::not_found("plugin counter: not found")).to_string(), "plugin counter: not found");
        assert_eq!(status_error(Status::unavailable("")).to_string(), Status::unavailable("").code().to_string());
    }

    #[tokio::test]
    async fn a_slow_call_is_a_deadline() {
        let call = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(Response::new(()))
        };
        assert_eq!(unary(Duration::from_millis(10), call).await.unwrap_err().to_string(), DEADLINE_EXCEEDED);
    }
}
