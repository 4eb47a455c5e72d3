//! The etcd Watch service over gRPC: each bidirectional stream is served by its own worker task
//! (see [`Service::watch`]).

use conclave_proto::etcdserverpb::watch_server::Watch;
use conclave_proto::etcdserverpb::{WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::until_broken;
use crate::service::{Caller, Service};

/// Responses a stream may have waiting for the client before its worker waits too.
const RESPONSE_QUEUE: usize = 64;

pub struct WatchService {
    service: Service,
}

impl WatchService {
    pub fn new(service: Service) -> Self {
        WatchService { service }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let (out, responses) = mpsc::channel(RESPONSE_QUEUE);
        let requests = until_broken(request.into_inner());
        let worker = self.service.watch(&Caller::client(), requests, out)?;
        tokio::spawn(worker);
        Ok(Response::new(ReceiverStream::new(responses)))
    }
}
