//! The etcd Watch service over gRPC: each bidirectional stream is served by its own worker task
//! (see [`Service::watch`]).

use conclave_proto::etcdserverpb::watch_server::Watch;
use conclave_proto::etcdserverpb::{WatchRequest, WatchResponse};
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::PollSender;
use tonic::{Request, Response, Status, Streaming};

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
        let requests = until_gone(request.into_inner(), out.clone());
        let worker = self.service.watch(&Caller::client(), requests, PollSender::new(out))?;
        tokio::spawn(worker);
        Ok(Response::new(ReceiverStream::new(responses).map(Ok).boxed()))
    }
}

/// The client's requests until it goes away. A client that only closes its side (as etcd's
/// gateway does once a request body is read) keeps its watches, as etcd keeps them, until it
/// stops reading; a broken request ends the stream at once.
fn until_gone(
    requests: Streaming<WatchRequest>,
    out: mpsc::Sender<WatchResponse>,
) -> impl futures::Stream<Item = WatchRequest> + Unpin + Send + 'static {
    let half_closed = async move {
        out.closed().await;
        None
    };
    let requests = requests.map(Some).chain(futures::stream::once(half_closed));
    tokio_stream::StreamExt::map_while(requests, |request| request.and_then(Result::ok)).boxed()
}
