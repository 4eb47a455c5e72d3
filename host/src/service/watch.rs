//! Watch: one stream of watch requests, answered on a sink of responses (see [`crate::watch`] for
//! the worker that serves it). The caller may watch only key ranges it may read; etcd's learners
//! serve no watches.

use std::future::Future;
use std::sync::Arc;

use conclave_proto::etcdserverpb::{WatchRequest, WatchResponse};
use futures::{Sink, Stream};

use super::{Caller, Service, GRPC_OVERHEAD_BYTES};
use crate::error::EtcdError;
use crate::watch::{run_stream, StreamSettings, WatchContext};

impl Service {
    /// The worker serving one watch stream: `requests` until it ends, answers into `out` until
    /// it refuses them (the caller went away). Refused at once on a learner.
    pub fn watch<R, O>(&self, caller: &Caller, requests: R, out: O) -> Result<impl Future<Output = ()> + Send + 'static, EtcdError>
    where
        R: Stream<Item = WatchRequest> + Unpin + Send + 'static,
        O: Sink<WatchResponse> + Unpin + Send + 'static,
    {
        self.refuse_if_learner()?;
        let config = &self.node.config;
        let settings = StreamSettings {
            max_response_bytes: config.max_request_bytes + GRPC_OVERHEAD_BYTES,
            progress_interval: config.experimental_watch_progress_notify_interval,
        };
        let node = self.node.clone();
        let header = Arc::new(move |revision| node.header(revision));
        let caller = caller.clone();
        let context = WatchContext {
            store: self.node.store.clone(),
            hub: self.node.hub.clone(),
            header,
            authorize: Arc::new(move |span| caller.check_read_span(span)),
        };
        Ok(run_stream(context, settings, requests, out))
    }
}
