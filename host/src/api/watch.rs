//! The etcd Watch service: each bidirectional stream is served by its own worker task.

use std::sync::Arc;

use conclave_proto::etcdserverpb::watch_server::Watch;
use conclave_proto::etcdserverpb::{WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::node::Node;
use crate::watch::{run_stream, StreamSettings};

/// Responses a stream may have waiting for the client before its worker waits too.
const RESPONSE_QUEUE: usize = 64;

pub struct WatchService {
    node: Arc<Node>,
    settings: StreamSettings,
}

impl WatchService {
    pub fn new(node: Arc<Node>) -> Self {
        let settings = StreamSettings {
            max_response_bytes: node.config.max_request_bytes,
            progress_interval: node.config.experimental_watch_progress_notify_interval,
        };
        WatchService { node, settings }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let (out, responses) = mpsc::channel(RESPONSE_QUEUE);
        tokio::spawn(run_stream(self.node.clone(), self.settings, request.into_inner(), out));
        Ok(Response::new(ReceiverStream::new(responses)))
    }
}
