//! `conclave:plugin/watch`: one wait for the next events of a key range, served by a client's
//! watch (same history catch-up, same permission check), dropped once it has answered. A guest
//! that carries `next-revision` from one wait to the next sees every event exactly once.

use std::time::Duration;

use conclave_proto::etcdserverpb::watch_request::RequestUnion;
use conclave_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use conclave_proto::mvccpb::event::EventType;
use futures::StreamExt;

use super::convert;
use crate::error::EtcdError;
use crate::plugin::bindings::conclave::plugin::types::{Error, ErrorCode};
use crate::plugin::bindings::conclave::plugin::watch::{Event, EventKind, Host, WaitRequest, WaitResponse};
use crate::plugin::state::CallState;

impl Host for CallState {
    async fn wait(&mut self, request: WaitRequest) -> Result<WaitResponse, Error> {
        let call = self.context()?;
        let what = format!("watch of {}", super::span_text(&request.key, &request.range_end));
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: request.key,
                range_end: request.range_end,
                start_revision: request.start_revision,
                prev_kv: request.prev_kv,
                ..Default::default()
            })),
        };
        // The request stream stays open: the worker serves until its answers are refused.
        let requests = futures::stream::iter([create]).chain(futures::stream::pending());
        let (sink, mut answers) = futures::channel::mpsc::channel::<WatchResponse>(4);
        let worker = call.service.watch(&call.caller, requests, sink).map_err(convert::to_guest_error)?;
        let timeout = Duration::from_millis(request.timeout_ms.into());
        let start = request.start_revision;
        let gone = call.gone();
        let outcome = tokio::select! {
            () = worker => Err(Outcome::Failed(EtcdError::unavailable("the watch ended"))),
            outcome = next_events(&mut answers, start, timeout) => outcome,
            () = gone => return Err(super::caller_gone()),
        };
        match outcome {
            Ok(response) => Ok(response),
            Err(Outcome::Failed(e)) => Err(self.refused(e, || what)),
            Err(Outcome::Compacted(revision)) => Err(Error {
                code: ErrorCode::Compacted,
                message: format!("{}; compact revision {revision}", EtcdError::Compacted),
            }),
        }
    }

    async fn current_revision(&mut self) -> Result<i64, Error> {
        let call = self.context()?;
        Ok(call.service.node().store.current_rev_async().await)
    }
}

enum Outcome {
    Failed(EtcdError),
    /// The history from the start revision is gone: compacted at this revision.
    Compacted(i64),
}

/// The watch's first events, or none once `timeout` has passed.
async fn next_events(
    answers: &mut futures::channel::mpsc::Receiver<WatchResponse>,
    start: i64,
    timeout: Duration,
) -> Result<WaitResponse, Outcome> {
    let ended = || Outcome::Failed(EtcdError::unavailable("the watch ended"));
    let created = answers.next().await.ok_or_else(ended)?;
    if created.compact_revision > 0 {
        return Err(Outcome::Compacted(created.compact_revision));
    }
    if created.canceled {
        return Err(Outcome::Failed(if created.cancel_reason.contains("permission denied") {
            EtcdError::PermissionDenied
        } else {
            EtcdError::unavailable(created.cancel_reason)
        }));
    }
    // Where a wait that sees nothing leaves off: the start, or after the revision it began at.
    let from = if start > 0 { start } else { created.header.as_ref().map_or(1, |h| h.revision + 1) };
    let waited = tokio::time::timeout(timeout, async {
        loop {
            let answer = answers.next().await.ok_or_else(ended)?;
            if answer.compact_revision > 0 {
                return Err(Outcome::Compacted(answer.compact_revision));
            }
            // Progress notifications carry no events: keep waiting.
            if !answer.events.is_empty() {
                return Ok(answer);
            }
        }
    })
    .await;
    match waited {
        Err(_elapsed) => Ok(WaitResponse { header: convert::header(created.header), events: Vec::new(), next_revision: from }),
        Ok(answer) => {
            let answer = answer?;
            let last = answer.events.last().and_then(|e| e.kv.as_ref()).map_or(from - 1, |kv| kv.mod_revision);
            let events = answer.events.into_iter().map(event).collect();
            Ok(WaitResponse { header: convert::header(answer.header), events, next_revision: last + 1 })
        }
    }
}

fn event(e: conclave_proto::mvccpb::Event) -> Event {
    let kind = if e.r#type == EventType::Delete as i32 { EventKind::Delete } else { EventKind::Put };
    Event { kind, kv: convert::key_value(e.kv.unwrap_or_default()), prev_kv: e.prev_kv.map(convert::key_value) }
}
