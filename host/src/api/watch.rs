//! The etcd Watch service over gRPC: each bidirectional stream is served by its own worker task
//! (see [`Service::watch`]).

use std::sync::Arc;

use conclave_proto::etcdserverpb::watch_server::Watch;
use conclave_proto::etcdserverpb::{WatchRequest, WatchResponse};
use futures::stream::{BoxStream, StreamExt};
use futures::{Sink, SinkExt, Stream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{PollSendError, PollSender};
use tonic::{Request, Response, Status, Streaming};

use crate::service::{Caller, Service};

/// Responses a stream may have waiting for the client before its worker waits too...
const RESPONSE_QUEUE: usize = 64;
/// ...and events they may hold together (a response counts one at least, and takes the whole
/// budget at most). Counted in responses only, a stream of a hundred watchers falling behind
/// queued 64 responses of a thousand events: 10,000 such watchers held 5 GB.
const QUEUED_EVENTS: u32 = 2048;

/// A response waiting for the client, with its share of [`QUEUED_EVENTS`].
type Queued = (WatchResponse, OwnedSemaphorePermit);

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
        let (out, worker_out, responses) = response_queue();
        let requests = until_gone(request.into_inner(), out);
        let worker = self.service.watch(&Caller::client(), requests, worker_out)?;
        tokio::spawn(worker);
        Ok(Response::new(responses.map(Ok).boxed()))
    }
}

/// The queue from a stream's worker to its client: a sender (closed once the client is gone), the
/// worker's end, which waits while [`QUEUED_EVENTS`] are queued, and the responses to send.
fn response_queue() -> (
    mpsc::Sender<Queued>,
    impl Sink<WatchResponse, Error = PollSendError<Queued>> + Unpin + Send + 'static,
    impl Stream<Item = WatchResponse> + Send + 'static,
) {
    let (out, responses) = mpsc::channel::<Queued>(RESPONSE_QUEUE);
    let budget = Arc::new(Semaphore::new(QUEUED_EVENTS as usize));
    let worker_out = PollSender::new(out.clone()).with(move |response: WatchResponse| {
        let budget = Arc::clone(&budget);
        Box::pin(async move {
            let events = (response.events.len() as u32).clamp(1, QUEUED_EVENTS);
            let share = budget.acquire_many_owned(events).await.expect("the budget is never closed");
            Ok::<_, PollSendError<Queued>>((response, share))
        })
    });
    // The share goes back as the response is taken for sending.
    let responses = ReceiverStream::new(responses).map(|(response, _share)| response);
    (out, worker_out, responses)
}

/// The client's requests until it goes away. A client that only closes its side (as etcd's
/// gateway does once a request body is read) keeps its watches, as etcd keeps them, until it
/// stops reading; a broken request ends the stream at once.
fn until_gone(
    requests: Streaming<WatchRequest>,
    out: mpsc::Sender<Queued>,
) -> impl Stream<Item = WatchRequest> + Unpin + Send + 'static {
    let half_closed = async move {
        out.closed().await;
        None
    };
    let requests = requests.map(Some).chain(futures::stream::once(half_closed));
    tokio_stream::StreamExt::map_while(requests, |request| request.and_then(Result::ok)).boxed()
}

#[cfg(test)]
mod tests {
    use conclave_proto::mvccpb::Event;
    use futures::FutureExt;

    use super::*;

    fn with_events(n: usize) -> WatchResponse {
        WatchResponse { events: vec![Event::default(); n], ..Default::default() }
    }

    #[tokio::test]
    async fn a_worker_waits_once_its_queued_responses_hold_the_event_budget() {
        let (_out, mut worker_out, responses) = response_queue();
        let mut responses = Box::pin(responses);
        worker_out.send(with_events(1000)).await.unwrap();
        worker_out.send(with_events(1000)).await.unwrap();
        let mut third = worker_out.send(with_events(1000));
        assert!((&mut third).now_or_never().is_none(), "3,000 events would be queued");
        assert_eq!(responses.next().await.unwrap().events.len(), 1000);
        third.await.unwrap();
        // A response larger than the whole budget still goes, alone.
        assert_eq!(responses.next().await.unwrap().events.len(), 1000);
        assert_eq!(responses.next().await.unwrap().events.len(), 1000);
        worker_out.send(with_events(5000)).await.unwrap();
        assert!(worker_out.send(with_events(0)).now_or_never().is_none(), "the budget is taken");
    }
}
