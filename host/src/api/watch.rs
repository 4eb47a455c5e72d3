//! The etcd Watch service: each bidirectional stream is served by its own worker task.

use std::sync::Arc;

use conclave_proto::etcdserverpb::watch_server::Watch;
use conclave_proto::etcdserverpb::{WatchRequest, WatchResponse};
use futures::channel::mpsc;
use futures::stream::{BoxStream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::node::Node;
use crate::watch::{run_stream, StreamSettings, WatchContext};

/// Responses a stream may have waiting for the client before its worker waits too.
const RESPONSE_QUEUE: usize = 64;

pub struct WatchService {
    context: WatchContext,
    settings: StreamSettings,
}

impl WatchService {
    pub fn new(node: Arc<Node>) -> Self {
        let settings = StreamSettings {
            max_response_bytes: node.config.max_request_bytes + super::GRPC_OVERHEAD_BYTES,
            progress_interval: node.config.experimental_watch_progress_notify_interval,
        };
        let header_node = node.clone();
        let context = WatchContext::new(node.store.clone(), node.hub.clone(), Arc::new(move |revision| header_node.header(revision)));
        WatchService { context, settings }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = BoxStream<'static, Result<WatchResponse, Status>>;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let (out, responses) = mpsc::channel(RESPONSE_QUEUE);
        // A broken request stream ends the watch like a closed one.
        let requests = tokio_stream::StreamExt::map_while(request.into_inner(), Result::ok);
        tokio::spawn(run_stream(self.context.clone(), self.settings, requests, out));
        Ok(Response::new(responses.map(Ok).boxed()))
    }
}
