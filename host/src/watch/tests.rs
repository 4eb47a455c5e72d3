//! Watch streams run over plain channels against a store and hub built in memory, no gRPC and
//! no node: live delivery, the permission check on create, and catching up after the store is
//! replaced by a snapshot (every missed event once, or a compacted cancel).

use std::sync::Arc;
use std::time::Duration;

use conclave_proto::etcdserverpb::watch_create_request::FilterType;
use conclave_proto::etcdserverpb::watch_request::RequestUnion;
use conclave_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, ResponseHeader, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use conclave_proto::mvccpb::KeyValue;
use futures::channel::mpsc;
use futures::StreamExt;

use super::hub::{self, Interest};
use super::{run_stream, Hub, StreamSettings, WatchContext};
use crate::error::EtcdError;
use crate::mvcc::{KeySpan, Store, StoreError, Writer};

/// Bound on each wait for a response.
const WAIT: Duration = Duration::from_secs(10);

/// A store and the hub its commits publish to: one member's watch side.
struct Member {
    store: Arc<Store>,
    hub: Arc<Hub>,
}

impl Member {
    fn new() -> Self {
        let tree = sled::Config::new().temporary(true).open().unwrap().open_tree("t").unwrap();
        Member { store: Arc::new(Store::open(tree).unwrap()), hub: Arc::default() }
    }

    /// One request in its own committed batch, like one applied log entry.
    fn write<T>(&self, f: impl FnOnce(&mut Writer<'_, '_>) -> Result<T, StoreError>) -> T {
        let mut batch = self.store.begin();
        let out = f(&mut Writer::new(&mut batch)).unwrap();
        batch.commit(Vec::new(), |events| self.hub.publish(events)).unwrap();
        out
    }

    fn put(&self, key: &str) {
        let request = PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() };
        self.write(|w| w.put(&request));
    }

    fn compact(&self, revision: i64) {
        self.write(|w| w.compact(&CompactionRequest { revision, physical: false }));
    }

    /// Replace this member's store with a copy of `source`'s, as a snapshot install does.
    fn install_snapshot_of(&self, source: &Member) {
        let mut bytes = Vec::new();
        source.store.export(&mut bytes, &[]).unwrap();
        self.store.import(&mut &bytes[..]).unwrap();
        self.hub.store_replaced();
    }

    fn context(&self) -> WatchContext {
        let header = Arc::new(|revision| Some(ResponseHeader { revision, ..Default::default() }));
        WatchContext { store: self.store.clone(), hub: self.hub.clone(), header, authorize: Arc::new(|_| Ok(())) }
    }
}

/// A client's end of one watch stream.
struct Client {
    requests: mpsc::UnboundedSender<WatchRequest>,
    responses: mpsc::Receiver<WatchResponse>,
}

impl Client {
    fn open(context: WatchContext) -> Client {
        let (requests, incoming) = mpsc::unbounded();
        let (out, responses) = mpsc::channel(8);
        let settings = StreamSettings { max_response_bytes: usize::MAX, progress_interval: Duration::from_secs(3600) };
        tokio::spawn(run_stream(context, settings, incoming, out));
        Client { requests, responses }
    }

    fn send(&self, request: RequestUnion) {
        self.requests.unbounded_send(WatchRequest { request_union: Some(request) }).unwrap();
    }

    /// Create a watcher on the keys starting with `prefix` and return its created response.
    async fn watch_prefix(&mut self, prefix: &str, watch_id: i64) -> WatchResponse {
        self.create_prefix(prefix, watch_id, 0);
        self.next().await
    }

    /// Ask for a watcher on the keys starting with `prefix` from `start_revision` (0: from now).
    fn create_prefix(&self, prefix: &str, watch_id: i64, start_revision: i64) {
        let mut range_end = prefix.as_bytes().to_vec();
        *range_end.last_mut().unwrap() += 1;
        self.send(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.into(),
            range_end,
            watch_id,
            start_revision,
            ..Default::default()
        }));
    }

    async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(WAIT, self.responses.next()).await.expect("a response in time").expect("stream open")
    }

    /// (revision, key) of every event until one at `last`.
    async fn events_until(&mut self, last: i64) -> Vec<(i64, String)> {
        let mut got: Vec<(i64, String)> = Vec::new();
        while got.last().is_none_or(|e| e.0 < last) {
            let response = self.next().await;
            assert!(!response.canceled, "{response:?}");
            let kvs = response.events.iter().filter_map(|e| e.kv.as_ref());
            got.extend(kvs.map(|kv| (kv.mod_revision, String::from_utf8_lossy(&kv.key).into_owned())));
        }
        got
    }
}

#[tokio::test]
async fn a_watch_runs_over_plain_channels() {
    let member = Member::new();
    let mut client = Client::open(member.context());
    let created = client.watch_prefix("k", 0).await;
    assert!(created.created && !created.canceled && created.watch_id == 0, "{created:?}");
    member.put("k1");
    member.put("other");
    member.put("k2");
    assert_eq!(client.events_until(4).await, [(2, "k1".into()), (4, "k2".into())]);
    client.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id: 0 }));
    let canceled = client.next().await;
    assert!(canceled.canceled && canceled.watch_id == 0, "{canceled:?}");
    drop(client.requests);
    assert!(client.responses.next().await.is_none(), "the worker ends with its request stream");
}

#[tokio::test]
async fn a_create_the_permission_check_refuses_is_created_and_canceled() {
    let member = Member::new();
    let mut context = member.context();
    context.authorize = Arc::new(|span| if span.contains(b"secret") { Err(EtcdError::NotCapable) } else { Ok(()) });
    let mut client = Client::open(context);
    let refused = client.watch_prefix("sec", 7).await;
    assert!(refused.created && refused.canceled && refused.watch_id == 7, "{refused:?}");
    assert_eq!(refused.cancel_reason, format!("rpc error: code = {:?} desc = {}", EtcdError::NotCapable.code(), EtcdError::NotCapable));
    let allowed = client.watch_prefix("k", 0).await;
    assert!(allowed.created && !allowed.canceled, "the stream goes on: {allowed:?}");
}

#[tokio::test]
async fn after_a_snapshot_every_watcher_gets_each_missed_event_once() {
    let (member, leader) = (Member::new(), Member::new());
    for m in [&member, &leader] {
        m.put("k0");
    }
    let mut client = Client::open(member.context());
    client.watch_prefix("k", 0).await;
    // The leader moves on while this member hears nothing, then sends its store.
    for i in 1..=20 {
        leader.put(&format!("k{i}"));
    }
    member.install_snapshot_of(&leader);
    let want: Vec<(i64, String)> = (1..=20).map(|i| (i + 2, format!("k{i}"))).collect();
    assert_eq!(client.events_until(22).await, want);
    member.put("k-live");
    assert_eq!(client.events_until(23).await, [(23, "k-live".into())], "nothing twice, nothing stray");
}

#[tokio::test]
async fn after_a_snapshot_that_compacted_what_a_watcher_needs_it_is_canceled_as_compacted() {
    let (member, leader) = (Member::new(), Member::new());
    let mut client = Client::open(member.context());
    client.watch_prefix("k", 0).await;
    for i in 1..=10 {
        leader.put(&format!("k{i}"));
    }
    leader.compact(8);
    member.install_snapshot_of(&leader);
    let canceled = client.next().await;
    assert!(canceled.canceled && canceled.compact_revision == 8 && canceled.events.is_empty(), "{canceled:?}");
}

#[tokio::test]
async fn a_stream_behind_its_queue_gets_the_queued_batches_in_one_response_per_watcher() {
    let member = Member::new();
    let mut client = Client::open(member.context());
    client.watch_prefix("k", 0).await;
    client.watch_prefix("k", 1).await;
    // The test's runtime has one thread: the worker runs only once this test waits, with all ten
    // commits queued.
    for i in 1..=10 {
        member.put(&format!("k{i}"));
    }
    let want: Vec<(i64, String)> = (1..=10).map(|i| (i + 1, format!("k{i}"))).collect();
    for watch_id in [0, 1] {
        let response = client.next().await;
        assert_eq!(response.watch_id, watch_id);
        assert_eq!(response.header.as_ref().map(|h| h.revision), Some(11));
        let got: Vec<(i64, String)> = response.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| (kv.mod_revision, String::from_utf8_lossy(&kv.key).into_owned())).collect();
        assert_eq!(got, want);
    }
    member.put("k-live");
    assert_eq!(client.events_until(12).await, [(12, "k-live".into())], "nothing twice");
}

#[tokio::test]
async fn watchers_of_one_stream_that_filter_alike_or_not_each_get_what_they_asked_for() {
    let member = Member::new();
    let mut client = Client::open(member.context());
    // In order of id: alike, alike, no puts, alike again, a narrower prefix.
    for (watch_id, prefix, filters) in [(0, "k", vec![]), (1, "k", vec![]), (2, "k", vec![FilterType::Noput as i32]), (3, "k", vec![]), (4, "k1", vec![])] {
        let mut range_end = prefix.as_bytes().to_vec();
        *range_end.last_mut().unwrap() += 1;
        let create = WatchCreateRequest { key: prefix.into(), range_end, watch_id, filters, ..Default::default() };
        client.send(RequestUnion::CreateRequest(create));
        assert!(client.next().await.created);
    }
    // Queued behind each other (one thread), so delivered as one batch.
    for i in 1..=10 {
        member.put(&format!("k{i}"));
    }
    let keys = |response: &WatchResponse| response.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect::<Vec<_>>();
    let all: Vec<String> = (1..=10).map(|i| format!("k{i}")).collect();
    for (watch_id, want) in [(0, all.clone()), (1, all.clone()), (3, all), (4, vec!["k1".to_string(), "k10".to_string()])] {
        let response = client.next().await;
        assert_eq!((response.watch_id, keys(&response)), (watch_id, want));
    }
    member.put("k11");
    for watch_id in [0, 1, 3, 4] {
        let response = client.next().await;
        assert_eq!((response.watch_id, keys(&response)), (watch_id, vec!["k11".to_string()]));
    }
}

#[tokio::test]
async fn a_watcher_asking_for_previous_values_gets_them_though_the_writer_did_not() {
    let member = Member::new();
    let mut client = Client::open(member.context());
    for (watch_id, prev_kv) in [(0, true), (1, false)] {
        let create = WatchCreateRequest { key: b"k".to_vec(), watch_id, prev_kv, ..Default::default() };
        client.send(RequestUnion::CreateRequest(create));
        assert!(client.next().await.created);
    }
    let put = |value: &str, prev_kv| PutRequest { key: b"k".to_vec(), value: value.into(), prev_kv, ..Default::default() };
    member.write(|w| w.put(&put("a", false)));
    member.write(|w| w.put(&put("b", false)));
    member.write(|w| w.put(&put("c", true)));
    member.write(|w| w.delete_range(&DeleteRangeRequest { key: b"k".to_vec(), ..Default::default() }));
    member.write(|w| w.put(&put("d", false)));
    let values = |response: &WatchResponse| {
        let value = |kv: Option<&KeyValue>| kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        response.events.iter().map(|e| (value(e.kv.as_ref()).unwrap(), value(e.prev_kv.as_ref()))).collect::<Vec<_>>()
    };
    let mut got = [Vec::new(), Vec::new()];
    while got.iter().map(Vec::len).sum::<usize>() < 10 {
        let response = client.next().await;
        got[response.watch_id as usize].extend(values(&response));
    }
    let replaced = |value: &str| Some(value.to_string());
    let (a, b, c, deleted, d) = ("a".to_string(), "b".to_string(), "c".to_string(), String::new(), "d".to_string());
    assert_eq!(got[0], [(a.clone(), None), (b.clone(), replaced("a")), (c.clone(), replaced("b")), (deleted.clone(), replaced("c")), (d.clone(), None)]);
    assert_eq!(got[1], [(a, None), (b, None), (c, None), (deleted, None), (d, None)]);
}

#[tokio::test]
async fn a_commit_with_nothing_for_a_streams_watchers_does_not_wake_it() {
    let member = Member::new();
    let interest = Arc::new(std::sync::Mutex::new(Interest::default()));
    let mut live = member.hub.subscribe(&member.store, interest.clone()).await;
    assert_eq!(member.hub.watch_span(&interest, 0, &KeySpan::single(b"a")), 0, "nothing published yet");
    member.put("b");
    assert!(live.batches.try_recv().is_err(), "a commit of another key is not sent");
    assert_eq!(hub::lock(&interest).skipped_through(), 2);
    member.put("a");
    member.put("b");
    assert_eq!(live.batches.try_recv().map(|batch| batch.revision).ok(), Some(3));
    assert!(live.batches.try_recv().is_err(), "revision 4 was skipped too");
    assert_eq!(hub::lock(&interest).skipped_through(), 2, "skipped behind a queued batch, 4 does not count as seen");
    hub::lock(&interest).remove(0, &KeySpan::single(b"a"));
    member.put("a");
    assert!(live.batches.try_recv().is_err(), "a stream without watchers gets nothing");
}

#[tokio::test]
async fn a_stream_watching_many_single_keys_is_not_woken_by_other_keys() {
    let member = Member::new();
    let interest = Arc::new(std::sync::Mutex::new(Interest::default()));
    let mut live = member.hub.subscribe(&member.store, interest.clone()).await;
    // More than the ranges the hub matches a batch against: single keys are looked up instead.
    for i in 0..100 {
        member.hub.watch_span(&interest, i, &KeySpan::single(format!("k{i}").as_bytes()));
    }
    member.put("other");
    assert!(live.batches.try_recv().is_err(), "a commit of no watcher's key is not sent");
    member.put("k42");
    assert_eq!(live.batches.try_recv().map(|batch| batch.revision).ok(), Some(3));
}

#[tokio::test]
async fn a_stream_watching_many_prefixes_is_not_woken_by_other_keys() {
    let member = Member::new();
    let interest = Arc::new(std::sync::Mutex::new(Interest::default()));
    let mut live = member.hub.subscribe(&member.store, interest.clone()).await;
    // More than the ranges the hub matches a batch against: prefixes are looked up instead.
    for i in 0..100 {
        member.hub.watch_span(&interest, i, &KeySpan::prefix(format!("svc/{i}/").as_bytes()));
    }
    member.hub.watch_span(&interest, 100, &KeySpan::prefix(b"svc/4"));
    member.put("svc/");
    member.put("svc/100/a");
    assert!(live.batches.try_recv().is_err(), "a commit under no watcher's prefix is not sent");
    member.put("svc/42/a");
    let batch = live.batches.try_recv().expect("a commit under a watched prefix is sent");
    assert_eq!(hub::lock(&interest).watchers_of(&batch.events), [42, 100], "both prefixes of the key");
    hub::lock(&interest).remove(42, &KeySpan::prefix(b"svc/42/"));
    hub::lock(&interest).remove(100, &KeySpan::prefix(b"svc/4"));
    member.put("svc/42/b");
    assert!(live.batches.try_recv().is_err(), "nobody watches those prefixes any more");
    member.put("svc/7/a");
    assert_eq!(live.batches.try_recv().map(|batch| batch.revision).ok(), Some(6));
}

#[tokio::test]
async fn watchers_of_single_keys_and_of_a_prefix_on_one_stream_each_get_their_keys() {
    let member = Member::new();
    let mut client = Client::open(member.context());
    for watch_id in 0..20 {
        let create = WatchCreateRequest { key: format!("k{watch_id}").into(), watch_id, ..Default::default() };
        client.send(RequestUnion::CreateRequest(create));
        assert!(client.next().await.created);
    }
    // After the single keys in order of id: k1, k10 to k19.
    client.watch_prefix("k1", 20).await;
    // Queued behind each other (one thread), so delivered as one batch.
    member.put("other");
    member.put("k3");
    member.put("k15");
    member.put("k1");
    let mut got = Vec::new();
    while got.len() < 5 {
        let response = client.next().await;
        let kvs = response.events.iter().filter_map(|e| e.kv.as_ref());
        got.extend(kvs.map(|kv| (response.watch_id, kv.mod_revision, String::from_utf8_lossy(&kv.key).into_owned())));
    }
    assert_eq!(got, [(1, 5, "k1".into()), (3, 3, "k3".into()), (15, 4, "k15".into()), (20, 4, "k15".into()), (20, 5, "k1".into())]);
}

#[tokio::test]
async fn a_watcher_that_starts_among_commits_its_stream_skipped_gets_them_from_history() {
    let member = Member::new();
    let mut client = Client::open(member.context());
    client.watch_prefix("a", 0).await;
    member.put("b1");
    member.put("b2");
    client.send(RequestUnion::ProgressRequest(WatchProgressRequest {}));
    let progress = client.next().await;
    assert_eq!(progress.header.map(|h| h.revision), Some(3), "the skipped commits count as seen");
    client.create_prefix("b", 1, 2);
    let created = client.next().await;
    assert!(created.created && created.watch_id == 1, "{created:?}");
    assert_eq!(client.events_until(3).await, [(2, "b1".into()), (3, "b2".into())]);
    member.put("b3");
    assert_eq!(client.events_until(4).await, [(4, "b3".into())], "live, once");
    member.put("a1");
    assert_eq!(client.events_until(5).await, [(5, "a1".into())], "the first watcher still has its own");
}

/// A stream watching `a` with a1's commit (revision 2) still queued when the hub skips b1's
/// (revision 3): the test's runtime has one thread, so the worker runs only once the test waits.
async fn b1_skipped_behind_a1_queued() -> (Member, Client) {
    let member = Member::new();
    let mut client = Client::open(member.context());
    client.watch_prefix("a", 0).await;
    member.put("a1");
    member.put("b1");
    (member, client)
}

#[tokio::test]
async fn a_watcher_that_starts_among_commits_skipped_behind_a_queued_one_gets_them_too() {
    let (member, mut client) = b1_skipped_behind_a1_queued().await;
    client.create_prefix("b", 1, 3);
    let mut got = Vec::new();
    while got.len() < 2 {
        let response = client.next().await;
        for kv in response.events.iter().filter_map(|e| e.kv.as_ref()) {
            got.push((response.watch_id, kv.mod_revision, String::from_utf8_lossy(&kv.key).into_owned()));
        }
    }
    got.sort();
    assert_eq!(got, [(0, 2, "a1".into()), (1, 3, "b1".into())]);
    member.put("b2");
    assert_eq!(client.events_until(4).await, [(4, "b2".into())], "nothing twice");
}

#[tokio::test]
async fn progress_names_the_newest_commit_once_nothing_is_queued() {
    let (_member, mut client) = b1_skipped_behind_a1_queued().await;
    assert_eq!(client.events_until(2).await, [(2, "a1".into())]);
    client.send(RequestUnion::ProgressRequest(WatchProgressRequest {}));
    let progress = client.next().await;
    assert_eq!((progress.watch_id, progress.header.map(|h| h.revision)), (-1, Some(3)));
}
