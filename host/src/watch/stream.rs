//! One client watch stream: its watchers and the loop that feeds them, in revision order, each
//! event once.
//!
//! Every watcher remembers the first revision it still needs (`next_rev`); an event is delivered
//! when its revision is at least that. Live batches, history replays for new watchers and the
//! catch-up after falling behind all go through that one rule, so overlaps never duplicate and
//! gaps are replayed from the store.
//!
//! The worker knows no transport: requests come from any stream and responses go to any sink,
//! so a gRPC stream, a plugin or an HTTP stream holds a watch the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conclave_proto::etcdserverpb::watch_request::RequestUnion;
use conclave_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use conclave_proto::etcdserverpb::watch_create_request::FilterType;
use conclave_proto::mvccpb::event::EventType;
use conclave_proto::mvccpb::{Event, KeyValue};
use futures::{Sink, SinkExt, Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;

use super::WatchContext;
use super::hub::{self, Interest, Published, Subscription};
use crate::error::EtcdError;
use crate::mvcc::{event_bytes, lacks_replaced_value, HistoryChunk, KeySpan, StoreError, View};

/// History read per step of a replay, so the store is never held for long, nor a stream's
/// memory taken by large values.
const REPLAY_CHUNK: HistoryChunk = HistoryChunk { events: 1000, bytes: 1 << 20 };

/// Most a stream that fell behind takes from its queue into one delivery (which it copies for
/// its watchers): a thousand events of 100 kB values held 100 MB per stream.
const COALESCE: HistoryChunk = HistoryChunk { events: 1000, bytes: 1 << 20 };

/// etcd's id for responses that belong to no watcher (progress, failed creates).
const NO_WATCHER: i64 = -1;

#[derive(Clone, Copy)]
pub struct StreamSettings {
    /// Responses of watchers that asked for fragmentation are split from this size on.
    pub max_response_bytes: usize,
    /// How often watchers that asked for progress notifications get one.
    pub progress_interval: Duration,
}

struct Watcher {
    filter: Filter,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
}

/// Which events a watcher wants. A stream's watchers often filter alike (many watchers of one
/// prefix): equal filters want the same events.
#[derive(Clone, PartialEq)]
struct Filter {
    // Compared in this order: the span, longest, last.
    next_rev: i64,
    no_put: bool,
    no_delete: bool,
    span: KeySpan,
}

impl Filter {
    fn wants(&self, event: &Event) -> bool {
        let Some(kv) = &event.kv else { return false };
        let is_put = event.r#type == EventType::Put as i32;
        kv.mod_revision >= self.next_rev
            && self.span.contains(&kv.key)
            && if is_put { !self.no_put } else { !self.no_delete }
    }
}

/// The client went away; the stream ends quietly.
struct Gone;

/// This stream and its watchers in the process's watch gauges, for as long as it runs.
struct Counted {
    watchers: i64,
}

impl Counted {
    fn stream() -> Self {
        crate::metrics::get().watch_streams.inc();
        Counted { watchers: 0 }
    }

    fn watchers(&mut self, now: usize) {
        let now = now as i64;
        crate::metrics::get().watchers.inc_by(now - self.watchers);
        self.watchers = now;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let metrics = crate::metrics::get();
        metrics.watchers.dec_by(self.watchers);
        metrics.watch_streams.dec();
    }
}

struct Worker<O> {
    ctx: WatchContext,
    settings: StreamSettings,
    out: O,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    /// Every event up to this revision has been offered to every watcher.
    seen: i64,
    /// Who watches which keys: the hub matches batches against it, and `deliver` finds a
    /// batch's watchers in it.
    interest: Arc<std::sync::Mutex<Interest>>,
}

/// Serve one watch stream until `requests` ends or `out` refuses a response (the client went
/// away). `out` is any sink: a `futures::channel::mpsc::Sender` as it is, a tokio `mpsc::Sender`
/// through `tokio_util::sync::PollSender`.
pub async fn run_stream<R, O>(ctx: WatchContext, settings: StreamSettings, mut requests: R, out: O)
where
    R: Stream<Item = WatchRequest> + Unpin + Send,
    O: Sink<WatchResponse> + Unpin + Send,
{
    let interest = Arc::default();
    let mut live = ctx.hub.subscribe(&ctx.store, Arc::clone(&interest)).await;
    let mut worker = Worker { seen: live.from, ctx, settings, out, watchers: BTreeMap::new(), next_id: 0, interest };
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + settings.progress_interval, settings.progress_interval);
    let mut counted = Counted::stream();
    // Ends with Err(Gone) when the client stops reading: nothing more to do either way.
    let _ended: Result<(), Gone> = async {
        loop {
            tokio::select! {
                request = requests.next() => match request {
                    Some(request) => worker.handle(request, &live).await?,
                    None => return Ok(()),
                },
                batch = live.batches.recv() => match batch {
                    Some(batch) => {
                        let batch = coalesce(batch, &mut live.batches);
                        worker.deliver(&batch.events, None, batch.revision).await?;
                        worker.seen = worker.seen.max(batch.revision);
                    }
                    None => {
                        // Dropped for falling behind, or the store was replaced by a snapshot:
                        // subscribe again, replay the gap from (the new) history.
                        tracing::info!("watch stream fell behind at revision {}; catching up from history", worker.seen);
                        worker.count_skipped();
                        live = worker.ctx.hub.subscribe(&worker.ctx.store, Arc::clone(&worker.interest)).await;
                        worker.replay(worker.seen + 1, live.from, None).await?;
                        worker.seen = live.from;
                    }
                },
                _ = progress.tick() => worker.notify_progress(&live).await?,
            }
            counted.watchers(worker.watchers.len());
        }
    }
    .await;
}

/// `first` and the batches queued behind it, up to about [`COALESCE`], as one batch. A
/// stream that keeps up gets each batch on its own; one that fell behind (its watchers busy with
/// thousands of others) catches up with one response per watcher for several batches, as etcd's
/// watchers catch up, instead of paying a response for each.
fn coalesce(first: Arc<Published>, queued: &mut mpsc::Receiver<Arc<Published>>) -> Arc<Published> {
    let Ok(second) = queued.try_recv() else { return first };
    let mut merged = Published { events: first.events.clone(), revision: first.revision };
    let mut bytes: usize = first.events.iter().map(event_bytes).sum();
    let mut next = Some(second);
    while let Some(batch) = next.take() {
        merged.events.extend_from_slice(&batch.events);
        merged.revision = merged.revision.max(batch.revision);
        bytes += batch.events.iter().map(event_bytes).sum::<usize>();
        if merged.events.len() < COALESCE.events && bytes < COALESCE.bytes {
            next = queued.try_recv().ok();
        }
    }
    Arc::new(merged)
}

impl<O: Sink<WatchResponse> + Unpin> Worker<O> {
    async fn send(&mut self, response: WatchResponse) -> Result<(), Gone> {
        self.out.send(response).await.map_err(|_| Gone)
    }

    /// Count as seen what the hub skipped for having nothing for these watchers. Only between
    /// batches: a batch taken from the queue is then delivered, and the hub skips into
    /// `skipped_through` only while none is queued.
    fn count_skipped(&mut self) {
        self.seen = self.seen.max(hub::lock(&self.interest).skipped_through());
    }

    /// [`Worker::count_skipped`], and up to the newest commit when nothing is queued for this
    /// stream: a progress report names the revision all events up to which were sent, as
    /// etcd's does once its watchers are synced.
    fn count_caught_up(&mut self, live: &Subscription) {
        self.count_skipped();
        if let Some(published) = self.ctx.hub.caught_up(live) {
            self.seen = self.seen.max(published);
        }
    }

    /// Drop watcher `id` and its span from the interest; whether it was there.
    fn forget(&mut self, id: i64) -> bool {
        let Some(gone) = self.watchers.remove(&id) else { return false };
        hub::lock(&self.interest).remove(id, &gone.filter.span);
        true
    }

    fn response(&self, watch_id: i64, revision: i64) -> WatchResponse {
        WatchResponse { header: (self.ctx.header)(revision), watch_id, ..Default::default() }
    }

    async fn handle(&mut self, request: WatchRequest, live: &Subscription) -> Result<(), Gone> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.forget(cancel.watch_id) {
                    // Read first: a `&self` held across the wait would need the sink to be `Sync`.
                    let revision = self.ctx.store.current_rev_async().await;
                    let mut response = self.response(cancel.watch_id, revision);
                    response.canceled = true;
                    self.send(response).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.count_caught_up(live);
                let response = self.response(NO_WATCHER, self.seen);
                self.send(response).await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) -> Result<(), Gone> {
        let (current, compacted) = self.ctx.store.read_async(|view| (view.current_rev(), view.compact_rev())).await;
        // etcd reads an empty key as "\0", the smallest key.
        let key = if create.key.is_empty() { vec![0] } else { create.key };
        let span = KeySpan::new(&key, &create.range_end);
        // The permission check, first as in etcd; its refusal names the requested id.
        if let Err(denied) = (self.ctx.authorize)(&span) {
            // etcd's reason is the gRPC error string of the refusal.
            let reason = format!("rpc error: code = {:?} desc = {denied}", denied.code());
            return self.refuse(create.watch_id, current, &reason).await;
        }
        if span.end.is_some() && span.bounds().is_none() {
            return self.refuse(NO_WATCHER, current, "mvcc: watcher range is empty").await;
        }
        let id = if create.watch_id != 0 {
            if self.watchers.contains_key(&create.watch_id) {
                return self.refuse(NO_WATCHER, current, "mvcc: duplicate watch ID provided on the WatchStream").await;
            }
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let filters: Vec<_> = create.filters.iter().filter_map(|f| FilterType::try_from(*f).ok()).collect();
        let start = if create.start_revision > 0 { create.start_revision } else { current + 1 };
        let filter = Filter {
            next_rev: start,
            no_put: filters.contains(&FilterType::Noput),
            no_delete: filters.contains(&FilterType::Nodelete),
            span,
        };
        let watcher = Watcher { filter, prev_kv: create.prev_kv, progress_notify: create.progress_notify, fragment: create.fragment };
        // Commits after `published` the hub sends if this watcher wants them; the earlier ones
        // (some skipped while its keys were no one's interest) it reads from history below.
        let published = self.ctx.hub.watch_span(&self.interest, id, &watcher.filter.span);
        self.watchers.insert(id, watcher);
        let mut created = self.response(id, current);
        created.created = true;
        self.send(created).await?;
        if start < compacted {
            return self.cancel_compacted(id, compacted).await;
        }
        let upto = self.seen.max(published);
        if start <= upto {
            self.replay(start, upto, Some(id)).await?;
            // Batches still queued are no newer than `upto`: the replay has given their events.
            if let Some(watcher) = self.watchers.get_mut(&id) {
                watcher.filter.next_rev = watcher.filter.next_rev.max(upto + 1);
            }
        }
        Ok(())
    }

    async fn refuse(&mut self, watch_id: i64, revision: i64, reason: &str) -> Result<(), Gone> {
        let mut response = self.response(watch_id, revision);
        response.created = true;
        response.canceled = true;
        response.cancel_reason = reason.to_string();
        self.send(response).await
    }

    async fn cancel_compacted(&mut self, id: i64, compact_revision: i64) -> Result<(), Gone> {
        self.forget(id);
        // etcd's compaction notice carries no revision in its header.
        let mut response = self.response(id, 0);
        response.compact_revision = compact_revision;
        response.canceled = true;
        self.send(response).await
    }

    /// Deliver stored revisions `from..=upto` to one watcher, or to all.
    async fn replay(&mut self, mut from: i64, upto: i64, only: Option<i64>) -> Result<(), Gone> {
        while from <= upto {
            match self.ctx.store.history_async(from, upto, REPLAY_CHUNK).await {
                Ok((events, next)) => {
                    self.deliver(&events, only, (next - 1).min(upto)).await?;
                    from = next;
                }
                Err(StoreError::Etcd(EtcdError::Compacted)) => {
                    // History this stream still needed is gone: those watchers end as etcd's do.
                    let compacted = self.ctx.store.read_async(|view| view.compact_rev()).await;
                    let lost: Vec<i64> = self
                        .watchers
                        .iter()
                        .filter(|(id, w)| only.is_none_or(|o| o == **id) && w.filter.next_rev < compacted)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in lost {
                        self.cancel_compacted(id, compacted).await?;
                    }
                    from = from.max(compacted);
                }
                Err(e) => {
                    tracing::error!("watch replay failed: {e}");
                    return Err(Gone);
                }
            }
        }
        Ok(())
    }

    /// Offer events (in revision order) to the watchers; `revision` goes in the headers. Puts and
    /// deletes come without the values they replaced unless the writer asked for them: watchers
    /// that want those get them read from the history here.
    /// Each watcher's response is sent before the next is built: a thousand events for each of a
    /// hundred watchers, all built first, held 20 MB per stream.
    async fn deliver(&mut self, events: &[Event], only: Option<i64>, revision: i64) -> Result<(), Gone> {
        // One header for all: it reads the raft term, shared with every other stream.
        let header = (self.ctx.header)(revision);
        let ids: Vec<i64> = match only {
            Some(id) => vec![id],
            None => hub::lock(&self.interest).watchers_of(events),
        };
        // Only the events some watcher wants with their previous values are read for: the
        // stream's other watchers are not looked at per event.
        let lacking: Vec<usize> = {
            let wanting_prev: Vec<&Watcher> = ids.iter().filter_map(|id| self.watchers.get(id)).filter(|w| w.prev_kv).collect();
            if wanting_prev.is_empty() {
                Vec::new()
            } else {
                events
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| lacks_replaced_value(e) && wanting_prev.iter().any(|w| w.filter.wants(e)))
                    .map(|(i, _)| i)
                    .collect()
            }
        };
        let completed;
        let events = if lacking.is_empty() {
            events
        } else {
            completed = match self.ctx.store.with_replaced_values(events.to_vec(), lacking).await {
                Ok(completed) => completed,
                Err(e) => {
                    tracing::error!("reading the values replaced by watched changes failed: {e}");
                    return Err(Gone);
                }
            };
            &completed[..]
        };
        let mut copies = StreamCopies::new(events, ids.len() > 1);
        // The places in `events` that `filter` wants: worked out once per run of watchers that
        // filter alike (they come in order of id), not once per watcher.
        let (mut filter, mut places) = (None::<Filter>, Vec::new());
        for id in ids {
            let Some(watcher) = self.watchers.get_mut(&id) else { continue };
            if filter.as_ref() != Some(&watcher.filter) {
                places.clear();
                places.extend(events.iter().enumerate().filter(|(_, e)| watcher.filter.wants(e)).map(|(i, _)| i));
                filter = Some(watcher.filter.clone());
            }
            let mut matched = Vec::with_capacity(places.len());
            for &i in &places {
                let event = copies.get(i);
                // Each watcher gets its own event: the previous value only if it asked for it.
                matched.push(Event { r#type: event.r#type, kv: event.kv.clone(), prev_kv: if watcher.prev_kv { event.prev_kv.clone() } else { None } });
            }
            let Some(last) = matched.last().and_then(|e| e.kv.as_ref()) else { continue };
            watcher.filter.next_rev = last.mod_revision + 1;
            let whole = WatchResponse { header, watch_id: id, events: matched, ..Default::default() };
            // Only a watcher that asked for fragments pays for measuring its response.
            if !watcher.fragment {
                self.send(whole).await?;
                continue;
            }
            for response in fragments(whole, self.settings.max_response_bytes) {
                self.send(response).await?;
            }
        }
        Ok(())
    }

    async fn notify_progress(&mut self, live: &Subscription) -> Result<(), Gone> {
        self.count_caught_up(live);
        let ids: Vec<i64> = self.watchers.iter().filter(|(_, w)| w.progress_notify).map(|(id, _)| *id).collect();
        for id in ids {
            let response = self.response(id, self.seen);
            self.send(response).await?;
        }
        Ok(())
    }
}

/// This stream's own copies of a batch's events, made the first time one of its watchers wants
/// each. An event's key and value are reference-counted buffers, and every copy of an event
/// handed to a watcher bumps their count (encoding it no longer does: see
/// `conclave_proto::codec`): with the batch's buffers, which every stream shares, thousands of
/// watchers on both cores fought over those counts (a third of the member's CPU with 10,000
/// watchers of one key, counting the encoding's). A stream's own copy keeps the counting in it.
/// Only worth it where several watchers share it: one watcher takes the events as they are.
struct StreamCopies<'a> {
    events: &'a [Event],
    /// `None` when the events are taken as they are.
    copies: Option<Vec<Option<Event>>>,
}

impl<'a> StreamCopies<'a> {
    fn new(events: &'a [Event], shared_by_watchers: bool) -> Self {
        StreamCopies { events, copies: shared_by_watchers.then(|| vec![None; events.len()]) }
    }

    fn get(&mut self, i: usize) -> &Event {
        let Some(copies) = &mut self.copies else { return &self.events[i] };
        copies[i].get_or_insert_with(|| {
            let event = &self.events[i];
            Event { r#type: event.r#type, kv: event.kv.as_ref().map(deep_copy), prev_kv: event.prev_kv.as_ref().map(deep_copy) }
        })
    }
}

fn deep_copy(kv: &KeyValue) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(&kv.key),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: Bytes::copy_from_slice(&kv.value),
        lease: kv.lease,
    }
}

/// Split like etcd: a response under `limit` bytes (header included), or with one event, goes
/// whole; otherwise events go into fragments, each closed before the event that would take it to
/// `limit` (but holding at least one), all marked as fragments except the last.
fn fragments(mut whole: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if whole.events.len() < 2 || whole.encoded_len() < limit {
        return vec![whole];
    }
    let events = std::mem::take(&mut whole.events);
    whole.fragment = true;
    let empty_len = whole.encoded_len();
    let mut responses = Vec::new();
    let mut current = WatchResponse { events: Vec::new(), ..whole.clone() };
    let mut size = empty_len;
    for event in events {
        let len = event.encoded_len();
        let field_len = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if !current.events.is_empty() && size + field_len >= limit {
            responses.push(std::mem::replace(&mut current, WatchResponse { events: Vec::new(), ..whole.clone() }));
            size = empty_len;
        }
        size += field_len;
        current.events.push(event);
    }
    current.fragment = false;
    responses.push(current);
    responses
}

#[cfg(test)]
mod coalesce_tests {
    use super::*;

    fn batch(revision: i64, value_len: usize) -> Arc<Published> {
        let kv = KeyValue { key: Bytes::from_static(b"k"), value: vec![b'v'; value_len].into(), mod_revision: revision, ..Default::default() };
        Arc::new(Published { events: vec![Event { kv: Some(kv), ..Default::default() }], revision })
    }

    #[test]
    fn a_stream_behind_takes_queued_batches_up_to_a_megabyte_of_values() {
        let (queue, mut queued) = mpsc::channel(64);
        for revision in 2..20 {
            queue.try_send(batch(revision, 300_000)).unwrap();
        }
        let merged = coalesce(batch(1, 300_000), &mut queued);
        assert_eq!((merged.events.len(), merged.revision), (4, 4), "four values of 300 kB pass a megabyte");
        let small = coalesce(batch(1, 10), &mut mpsc::channel(1).1);
        assert_eq!(small.events.len(), 1, "nothing was queued");
        assert_eq!(coalesce(queued.try_recv().unwrap(), &mut queued).revision, 8);
    }
}
