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

use crate::mvcc::event_bytes;
use crate::service::{Caller, Service};

/// Responses a stream may have waiting for the client before its worker waits too. Few: while
/// the worker waits, the commits it has not delivered queue up, and it then sends each watcher
/// one response for all of them. With 64 queued, 10,000 watchers (100 streams) fed by 64
/// writers got 6 events per response; with 8, 8 to 12, for about 5 % more events delivered...
const RESPONSE_QUEUE: usize = 8;
/// ...and the memory they may hold together, by [`queued_size`] (a response takes the whole
/// budget at most, so one always goes). Counted in responses only, a stream of a hundred
/// watchers falling behind queued 64 responses of a thousand events: 10,000 such watchers held
/// 5 GB.
const QUEUED_BYTES: u32 = 1 << 20;

/// A response waiting for the client, with its share of [`QUEUED_BYTES`].
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
/// worker's end, which waits while [`QUEUED_BYTES`] are queued, and the responses to send.
fn response_queue() -> (
    mpsc::Sender<Queued>,
    impl Sink<WatchResponse, Error = PollSendError<Queued>> + Unpin + Send + 'static,
    impl Stream<Item = WatchResponse> + Send + 'static,
) {
    let (out, responses) = mpsc::channel::<Queued>(RESPONSE_QUEUE);
    let budget = Arc::new(Semaphore::new(QUEUED_BYTES as usize));
    let worker_out = PollSender::new(out.clone()).with(move |response: WatchResponse| {
        let budget = Arc::clone(&budget);
        Box::pin(async move {
            let size = queued_size(&response).clamp(1, QUEUED_BYTES as usize) as u32;
            let share = budget.acquire_many_owned(size).await.expect("the budget is never closed");
            Ok::<_, PollSendError<Queued>>((response, share))
        })
    });
    // The share goes back as the response is taken for sending.
    let responses = ReceiverStream::new(responses).map(|(response, _share)| response);
    (out, worker_out, responses)
}

/// About the memory `response` holds (counting whole the buffers a stream's watchers share).
fn queued_size(response: &WatchResponse) -> usize {
    response.events.iter().map(event_bytes).sum()
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
    use conclave_proto::mvccpb::{Event, KeyValue};
    use futures::FutureExt;

    use super::*;

    /// A response of `n` events, each a put of a 10-byte key and a `value_len`-byte value.
    fn with_events(n: usize, value_len: usize) -> WatchResponse {
        let kv = KeyValue { key: vec![b'k'; 10].into(), value: vec![b'v'; value_len].into(), ..Default::default() };
        let event = Event { kv: Some(kv), ..Default::default() };
        WatchResponse { events: vec![event; n], ..Default::default() }
    }

    #[tokio::test]
    async fn a_worker_waits_once_its_queued_responses_hold_the_memory_budget() {
        let (_out, mut worker_out, responses) = response_queue();
        let mut responses = Box::pin(responses);
        // A thousand events of 256-byte values: about 0.4 MB.
        let response = || with_events(1000, 256);
        assert!(queued_size(&response()) * 2 < QUEUED_BYTES as usize);
        worker_out.send(response()).await.unwrap();
        worker_out.send(response()).await.unwrap();
        let mut third = worker_out.send(response());
        assert!((&mut third).now_or_never().is_none(), "three would hold more than the budget");
        assert_eq!(responses.next().await.unwrap().events.len(), 1000);
        third.await.unwrap();
        assert_eq!(responses.next().await.unwrap().events.len(), 1000);
        assert_eq!(responses.next().await.unwrap().events.len(), 1000);
        // A response larger than the whole budget (one 1.5 MiB value) still goes, alone.
        worker_out.send(with_events(1, 3 << 19)).await.unwrap();
        assert!(worker_out.send(with_events(1, 0)).now_or_never().is_none(), "the budget is taken");
    }
}
