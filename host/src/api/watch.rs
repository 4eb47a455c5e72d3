//! The etcd Watch service over gRPC: each bidirectional stream is served by its own worker task
//! (see [`Service::watch`]).

use conclave_proto::etcdserverpb::watch_server::Watch;
use conclave_proto::etcdserverpb::{WatchRequest, WatchResponse};
use futures::channel::mpsc;
use futures::stream::{BoxStream, StreamExt};
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
    type WatchStream = BoxStream<'static, Result<WatchResponse, Status>>;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let (out, responses) = mpsc::channel(RESPONSE_QUEUE);
        let worker = self.service.watch(&Caller::client(), until_broken(request.into_inner()), out)?;
        tokio::spawn(worker);
        Ok(Response::new(responses.map(Ok).boxed()))
    }
}
