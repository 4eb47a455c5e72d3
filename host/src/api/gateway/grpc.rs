//! Calling the gRPC services in-process, as etcd's gateway calls its own gRPC server: a request
//! is a stream of encoded messages, the answer a stream of encoded messages ending in the call's
//! status. Going through the same routes as a remote client means the gateway gets every rule,
//! limit and error of the gRPC API without restating any of them.

use std::convert::Infallible;

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderValue, Request, header};
use http_body_util::BodyExt;
use tonic::{Code, Status};
use tower::ServiceExt;

/// gRPC's length prefix: a compression flag and a 4-byte big-endian length.
const PREFIX: usize = 5;

/// One message with its gRPC length prefix.
fn framed(message: Vec<u8>) -> Bytes {
    let mut frame = BytesMut::with_capacity(PREFIX + message.len());
    frame.extend_from_slice(&[0]);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame.freeze()
}

/// Call `path` (e.g. `/etcdserverpb.KV/Range`) on `routes` with the encoded `requests`; the answer
/// is the encoded responses, then an error if the call did not end with OK.
pub async fn call<R>(routes: axum::Router, path: &str, requests: R) -> impl Stream<Item = Result<Bytes, Status>> + Send
where
    R: Stream<Item = Vec<u8>> + Send + 'static,
{
    let body = Body::from_stream(requests.map(|message| Ok::<_, Infallible>(framed(message))));
    let mut request = Request::post(path).body(body).expect("a valid gRPC request");
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    let response = routes.oneshot(request).await.unwrap_or_else(|never: Infallible| match never {});
    // A trailers-only answer carries its status in the headers.
    let early = Status::from_header_map(response.headers()).filter(|status| status.code() != Code::Ok);
    let responses = Responses { body: response.into_body(), buffer: BytesMut::new(), done: early.is_some() };
    futures::stream::iter(early.map(Err)).chain(futures::stream::unfold(responses, Responses::next).boxed())
}

/// The response body being split into messages.
struct Responses {
    body: Body,
    buffer: BytesMut,
    done: bool,
}

impl Responses {
    async fn next(mut self) -> Option<(Result<Bytes, Status>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(message) = self.take_message() {
                return Some((message, self));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        self.done = true;
                        let trailers = frame.trailers_ref().cloned().unwrap_or_default();
                        let status = Status::from_header_map(&trailers)
                            .unwrap_or_else(|| Status::unknown("the call ended without a status"));
                        if status.code() != Code::Ok {
                            return Some((Err(status), self));
                        }
                    }
                },
                Some(Err(e)) => {
                    self.done = true;
                    return Some((Err(Status::unavailable(format!("the call broke: {e}"))), self));
                }
                None => {
                    self.done = true;
                    if !self.buffer.is_empty() {
                        return Some((Err(Status::internal("the call ended inside a message")), self));
                    }
                }
            }
        }
    }

    /// The next whole message in the buffer, if one has arrived.
    fn take_message(&mut self) -> Option<Result<Bytes, Status>> {
        if self.buffer.len() < PREFIX {
            return None;
        }
        if self.buffer[0] != 0 {
            self.done = true;
            return Some(Err(Status::internal("compressed gRPC message")));
        }
        let len = u32::from_be_bytes(self.buffer[1..PREFIX].try_into().expect("4 bytes")) as usize;
        if self.buffer.len() < PREFIX + len {
            return None;
        }
        self.buffer.advance(PREFIX);
        Some(Ok(self.buffer.split_to(len).freeze()))
    }
}
