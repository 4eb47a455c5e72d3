//! Watch: one stream of watch requests, answered by a stream of responses (see [`crate::watch`]
//! for the worker that serves it). etcd's learners serve no watches.

use conclave_proto::etcdserverpb::{WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::Stream;

use super::{Caller, Service};
use crate::error::EtcdError;
use crate::watch::{run_stream, StreamSettings};

impl Service {
    /// Serve one watch stream: `requests` until it ends, answers into `out` until it closes.
    pub fn watch<S>(
        &self,
        _caller: &Caller,
        requests: S,
        out: mpsc::Sender<Result<WatchResponse, tonic::Status>>,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, EtcdError>
    where
        S: Stream<Item = WatchRequest> + Unpin + Send + 'static,
    {
        self.refuse_if_learner()?;
        let stream = StreamSettings {
            max_response_bytes: self.node.config.max_request_bytes + super::GRPC_OVERHEAD_BYTES,
            progress_interval: self.node.config.experimental_watch_progress_notify_interval,
        };
        Ok(run_stream(self.node.clone(), stream, requests, out))
    }
}
