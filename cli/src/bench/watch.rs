//! The watchers of the `watch` and `watch-latency` workloads: `--watchers` watches of the keys the
//! puts write, spread over `--streams` streams on the connections in turn. Each put's value starts
//! with the time it was sent, so a watcher knows each event's latency without asking which put
//! it was; each watcher counts its events, so one that missed any is told apart.
//!
//! Every watcher watches all the keys put, or (`--watch-each-key`) one key of the space each, as
//! a client that holds a watch per key (a service's instances, say) puts them all on one stream.
//!
//! The watchers are another client, as in a deployment: their own connections, on a thread of
//! their own. On the puts' thread a server that delivers while the puts run had its puts wait
//! behind the bench's own decoding of the events (put p99 2× etcd's, which delivers later).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use conclave_proto::etcdserverpb::watch_request::RequestUnion;
use conclave_proto::etcdserverpb::{WatchCreateRequest, WatchRequest};
use anyhow::Result;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::report::{Events, Part, Report};
use super::tally::{Tally, TallyCodec};
use super::workload::Keys;
use crate::connect::{connect, Dial};

/// How long to wait for the next event once the puts are done before counting the rest missing:
/// a large run may still be delivering long after its puts, so the wait is for a pause, not all.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// Where the stamps count from; one process puts and watches, so a monotonic clock serves.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// A stamp's bytes: microseconds since [`ORIGIN`], little-endian.
const STAMP: usize = 8;

/// A put's value: the time now, padded to `size` bytes (never shorter than the stamp).
pub fn stamped(size: usize) -> Vec<u8> {
    let mut value = (ORIGIN.elapsed().as_micros() as u64).to_le_bytes().to_vec();
    value.resize(size.max(STAMP), b'x');
    value
}

/// The stamp `value` starts with (`None` if it is too short for one: someone else's put).
pub fn stamp(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..STAMP)?.try_into().ok()?))
}

/// How long before `now` (since [`ORIGIN`]) a value was `stamp`ed (`None` if it is no stamp of
/// ours: someone else's put).
fn age(stamp: u64, now: Duration) -> Option<Duration> {
    now.checked_sub(Duration::from_micros(stamp))
}

/// How often the wait after the puts adds up the listeners' counts.
const COUNT_POLL: Duration = Duration::from_millis(5);

/// Events one listener received so far, alone on its cache line: one count shared by every
/// listener, bumped by both cores on every response, cost the bench more CPU per response than
/// decoding it, and so slowed most the server that answers soonest, in the most responses.
#[repr(align(128))]
#[derive(Default)]
struct Count(AtomicU64);

/// Events received so far by the listeners of `counts`.
fn received_by(counts: &[Arc<Count>]) -> u64 {
    counts.iter().map(|count| count.0.load(Ordering::Relaxed)).sum()
}

/// What one stream's watchers heard.
struct Heard {
    latencies: Histogram<u64>,
    /// Events per watcher.
    counts: Vec<u64>,
    /// Each watcher's key, as an index in the key space, if it watches one key.
    keys: Vec<Option<u64>>,
    /// Canceled watches and broken streams.
    part: Part,
    /// When the last event came.
    last_event: Option<Instant>,
    /// Responses with events.
    responses: u64,
}

/// What the watchers watch.
pub enum Watched {
    /// Every key put, `[key, range_end)`: each watcher hears every put.
    All(Vec<u8>, Vec<u8>),
    /// Watcher `i` the key `i` of the space (round it): each hears the puts of its key, as
    /// `puts` counts them (by the key's index).
    EachKey { keys: Keys, puts: Arc<[AtomicU64]> },
}

impl Watched {
    /// The request that creates watcher `i`, and the index of its key if it watches one.
    fn create(&self, i: usize) -> (WatchCreateRequest, Option<u64>) {
        match self {
            Watched::All(key, range_end) => (WatchCreateRequest { key: key.clone(), range_end: range_end.clone(), ..Default::default() }, None),
            Watched::EachKey { keys, puts } => {
                let index = (i % puts.len()) as u64;
                (WatchCreateRequest { key: keys.key(index), ..Default::default() }, Some(index))
            }
        }
    }

    /// The events a watcher of `key` should have heard, after `puts` puts in all.
    fn expected(&self, key: Option<u64>, puts: u64) -> u64 {
        match (self, key) {
            (Watched::EachKey { puts: of_key, .. }, Some(index)) => of_key[index as usize].load(Ordering::Relaxed),
            _ => puts,
        }
    }
}

/// The watchers while they listen.
pub struct Watchers {
    /// What each listener heard, once all are stopped.
    heard: oneshot::Receiver<Vec<Heard>>,
    /// Each listener's.
    counts: Vec<Arc<Count>>,
    /// Dropped to stop the listeners.
    stop: watch::Sender<()>,
    watched: Watched,
    /// Each watcher's key, as [`Watched::create`] gave it.
    keys: Vec<Option<u64>>,
}

impl Watchers {
    /// `watchers` watches of what `watched` names over `streams` streams, on up to `conns`
    /// connections of their own to `dial`, listened to on a thread of their own; once every one
    /// is created.
    pub async fn open(dial: Dial, conns: usize, streams: usize, watchers: usize, watched: Watched) -> Result<Self> {
        let streams = streams.min(watchers);
        let (creates, keys): (Vec<_>, Vec<_>) = (0..watchers).map(|i| watched.create(i)).unzip();
        let mut first = 0;
        let of_streams: Vec<_> = (0..streams)
            .map(|stream| {
                let per_stream = watchers / streams + usize::from(stream < watchers % streams);
                first += per_stream;
                (creates[first - per_stream..first].to_vec(), keys[first - per_stream..first].to_vec())
            })
            .collect();
        let (stop, stopped) = watch::channel(());
        let (opened, counts) = oneshot::channel();
        let (heard_tx, heard) = oneshot::channel();
        std::thread::Builder::new().name("bench watchers".into()).spawn(move || {
            crate::rpc::block_on(async move {
                let started = async {
                    let mut channels = Vec::new();
                    for _ in 0..conns.min(streams).max(1) {
                        channels.push(connect(&dial).await?);
                    }
                    let open = of_streams.into_iter().enumerate().map(|(i, of_stream)| open_stream(channels[i % channels.len()].clone(), of_stream));
                    let (mut listeners, mut counts) = (JoinSet::new(), Vec::new());
                    for (requests, responses, ids) in futures::future::try_join_all(open).await.map_err(crate::rpc::status_error)? {
                        let count = Arc::new(Count::default());
                        listeners.spawn(listen(requests, responses, ids, count.clone(), stopped.clone()));
                        counts.push(count);
                    }
                    Ok::<_, anyhow::Error>((listeners, counts))
                };
                match started.await {
                    Ok((listeners, counts)) => {
                        let _ = opened.send(Ok(counts));
                        let _ = heard_tx.send(listeners.join_all().await);
                    }
                    Err(e) => {
                        let _ = opened.send(Err(e));
                    }
                }
                Ok(())
            })
        })?;
        let counts = match counts.await {
            Ok(counts) => counts?,
            Err(_) => anyhow::bail!("the watchers' thread ended before its watches were created"),
        };
        Ok(Watchers { heard, counts, stop, watched, keys })
    }

    /// After the puts of `report` since `started`: wait for their events to every watcher, then
    /// stop listening and add what they heard. A watcher short of its puts is missing events.
    pub async fn finish(self, started: Instant, report: &mut Report) {
        let puts = report.succeeded();
        let expected: u64 = self.keys.iter().map(|&key| self.watched.expected(key, puts)).sum();
        let (mut received, mut progressed) = (0, Instant::now());
        while received < expected && progressed.elapsed() < EVENT_WAIT {
            tokio::time::sleep(COUNT_POLL).await;
            let now = received_by(&self.counts);
            if now > received {
                (received, progressed) = (now, Instant::now());
            }
        }
        drop(self.stop);
        let (mut latencies, mut missing, mut last_event, mut responses) = (super::histogram(), 0, None, 0);
        for heard in self.heard.await.expect("the watchers' thread hands over what they heard") {
            latencies.add(&heard.latencies).expect("histograms with the same bounds");
            let expected = heard.keys.iter().map(|&key| self.watched.expected(key, puts));
            missing += heard.counts.iter().zip(expected).map(|(&count, expected)| expected.saturating_sub(count)).sum::<u64>();
            last_event = last_event.max(heard.last_event);
            responses += heard.responses;
            report.add(heard.part);
        }
        if missing > 0 {
            let mut part = Part::new();
            part.fail("missing events".into(), missing);
            report.add(part);
        }
        let delivered = received_by(&self.counts);
        let elapsed = last_event.map_or_else(|| started.elapsed(), |last| last.duration_since(started));
        report.events = Some(Events { latencies, delivered, responses, elapsed });
    }
}

/// A stream with the watches `creates` makes (of the keys `keys`), once all are created: the
/// stream's requests (kept open, as closing them may end the stream), its responses and the
/// watchers' ids with their keys.
async fn open_stream(
    channel: Channel,
    (creates, keys): (Vec<WatchCreateRequest>, Vec<Option<u64>>),
) -> Result<(mpsc::Sender<WatchRequest>, Streaming<Tally>, Vec<(i64, Option<u64>)>), Status> {
    let count = creates.len();
    // etcd answers the call (its headers) only with a first response, so the creates go
    // before the call is awaited, as for the keep-alive stream.
    let (requests, queue) = mpsc::channel(count);
    for create in creates {
        let request = WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
        requests.send(request).await.map_err(|_| Status::internal("watch queue closed"))?;
    }
    // As etcd's Go client, take responses of any size: a watcher catching up on large values gets
    // more than gRPC's default 4 MiB in one.
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("watch service not ready: {e}")))?;
    let path = PathAndQuery::from_static("/etcdserverpb.Watch/Watch");
    let mut responses = grpc.streaming(tonic::Request::new(ReceiverStream::new(queue)), path, TallyCodec).await?.into_inner();
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let Some(response) = responses.message().await? else {
            return Err(Status::unavailable("watch stream ended before its watches were created"));
        };
        if response.canceled {
            return Err(Status::failed_precondition(format!("watch canceled: {}", response.cancel_reason)));
        }
        if response.created {
            ids.push(response.watch_id);
        }
    }
    // Both systems answer creates in the order they were asked.
    Ok((requests, responses, ids.into_iter().zip(keys).collect()))
}

/// Count and time each watcher's events until stopped (or the stream fails).
async fn listen(
    _requests: mpsc::Sender<WatchRequest>,
    mut responses: Streaming<Tally>,
    watchers: Vec<(i64, Option<u64>)>,
    count: Arc<Count>,
    mut stop: watch::Receiver<()>,
) -> Heard {
    let watcher: HashMap<i64, usize> = watchers.iter().enumerate().map(|(index, &(id, _))| (id, index)).collect();
    let keys = watchers.into_iter().map(|(_, key)| key).collect();
    let mut heard = Heard { latencies: super::histogram(), counts: vec![0; watcher.len()], keys, part: Part::new(), last_event: None, responses: 0 };
    let mut received = 0;
    loop {
        let response = tokio::select! {
            response = responses.message() => response,
            _ = stop.changed() => break,
        };
        let response = match response {
            Ok(Some(response)) => response,
            Ok(None) => {
                heard.part.fail("watch stream ended".into(), 1);
                break;
            }
            Err(status) => {
                heard.part.record(Duration::ZERO, Some(status));
                break;
            }
        };
        if response.canceled {
            heard.part.fail(format!("watch canceled: {}", response.cancel_reason), 1);
        }
        let Some(&index) = watcher.get(&response.watch_id) else { continue };
        // One clock read per response: per event, it was a tenth of the bench's CPU.
        let now = ORIGIN.elapsed();
        for age in response.stamps.iter().filter_map(|&stamp| age(stamp, now)) {
            heard.latencies.saturating_record(age.as_micros().max(1) as u64);
        }
        if response.events == 0 {
            continue;
        }
        heard.counts[index] += response.events;
        heard.responses += 1;
        received += response.events;
        count.0.store(received, Ordering::Relaxed);
        heard.last_event = Some(Instant::now());
    }
    heard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_tells_its_age_and_fills_the_value() {
        let value = stamped(32);
        assert_eq!(value.len(), 32);
        assert_eq!(stamped(3).len(), STAMP);
        assert_eq!(stamp(b"short"), None);
        let age = age(stamp(&value).unwrap(), ORIGIN.elapsed()).unwrap();
        assert!(age < Duration::from_secs(60), "{age:?}");
        assert_eq!(super::age(u64::MAX, ORIGIN.elapsed()), None, "a stamp from the future is none of ours");
    }
}
