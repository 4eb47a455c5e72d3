//! Fans out each applied batch of events to the subscribed watch streams that want it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use conclave_proto::mvccpb::Event;
use tokio::sync::mpsc;

use crate::mvcc::{KeySpan, Store, View};

/// Batches a stream may have queued before it is considered behind and dropped (each batch holds
/// all the events of one apply, often many writes).
const STREAM_QUEUE: usize = 64;
/// Most distinct key ranges other than prefixes the hub matches a batch against for a stream; a
/// stream with more takes every batch, as matching each event against many ranges in the apply
/// loop would cost more than its wake-up. Single keys and prefixes have no such limit: they are
/// looked up, not scanned.
const MAX_INTEREST_RANGES: usize = 8;

/// Events of consecutive revisions, as committed by one apply.
pub struct Published {
    pub events: Vec<Event>,
    /// The newest revision among the events.
    pub revision: i64,
}

/// Who in a stream watches which keys: the hub asks whether anyone wants a batch, and skips the
/// batches no one wants, so a stream is not woken by every commit whatever keys it watches (64
/// lock waiters each watching one key were woken 64 times per commit); the stream's worker asks
/// who, so a commit costs it the watchers of its keys, not a pass over all (etcd's clients put
/// every watch of a client on one stream: thousands of watchers of one key, or of one prefix,
/// each). The worker updates it as watchers come and go, under the same lock the hub checks it
/// with.
#[derive(Default)]
pub struct Interest {
    /// The watchers of each single key.
    keys: HashMap<Vec<u8>, BTreeSet<i64>>,
    /// The watchers of each prefix (`--prefix` watches).
    prefixes: HashMap<Vec<u8>, BTreeSet<i64>>,
    /// How many of `prefixes` have each length: an event's key is looked up at these lengths only.
    prefix_lengths: BTreeMap<usize, usize>,
    /// The watchers of each other range of keys.
    ranges: Vec<(KeySpan, BTreeSet<i64>)>,
    /// The newest revision the hub skipped while the stream had no batch queued: the stream has
    /// had every batch up to it that its watchers wanted, and may count it as seen.
    skipped_through: i64,
}

impl Interest {
    fn add(&mut self, watcher: i64, span: &KeySpan) {
        if span.end.is_none() {
            self.keys.entry(span.start.clone()).or_default().insert(watcher);
        } else if let Some(prefix) = span.as_prefix() {
            let watchers = self.prefixes.entry(prefix.to_vec()).or_default();
            if watchers.is_empty() {
                *self.prefix_lengths.entry(prefix.len()).or_default() += 1;
            }
            watchers.insert(watcher);
        } else {
            match self.ranges.iter_mut().find(|(s, _)| s == span) {
                Some((_, watchers)) => {
                    watchers.insert(watcher);
                }
                None => self.ranges.push((span.clone(), BTreeSet::from([watcher]))),
            }
        }
    }

    /// `watcher` of `span` went (its stream's worker calls this without the hub's lock: a span
    /// kept a moment too long only costs a wake-up).
    pub fn remove(&mut self, watcher: i64, span: &KeySpan) {
        if span.end.is_none() {
            forget(&mut self.keys, &span.start, watcher);
        } else if let Some(prefix) = span.as_prefix() {
            if forget(&mut self.prefixes, prefix, watcher)
                && let Some(count) = self.prefix_lengths.get_mut(&prefix.len())
            {
                *count -= 1;
                if *count == 0 {
                    self.prefix_lengths.remove(&prefix.len());
                }
            }
        } else if let Some(i) = self.ranges.iter().position(|(s, _)| s == span) {
            self.ranges[i].1.remove(&watcher);
            if self.ranges[i].1.is_empty() {
                self.ranges.swap_remove(i);
            }
        }
    }

    pub fn skipped_through(&self) -> i64 {
        self.skipped_through
    }

    fn wants(&self, events: &[Event]) -> bool {
        self.ranges.len() > MAX_INTEREST_RANGES
            || keys_of(events).any(|key| {
                self.keys.contains_key(key)
                    || self.prefixes_of(key).next().is_some()
                    || self.ranges.iter().any(|(span, _)| span.contains(key))
            })
    }

    /// The watchers of the watched prefixes of `key`.
    fn prefixes_of<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a BTreeSet<i64>> + 'a {
        self.prefix_lengths.keys().take_while(move |len| **len <= key.len()).filter_map(move |len| self.prefixes.get(&key[..*len]))
    }

    /// The watchers with a key of `events` in their span, in order of id.
    pub fn watchers_of(&self, events: &[Event]) -> Vec<i64> {
        let mut watchers: Vec<i64> = keys_of(events)
            .flat_map(|key| self.keys.get(key).into_iter().chain(self.prefixes_of(key)))
            .flatten()
            .copied()
            .collect();
        for (span, of_span) in &self.ranges {
            if keys_of(events).any(|key| span.contains(key)) {
                watchers.extend(of_span);
            }
        }
        watchers.sort_unstable();
        watchers.dedup();
        watchers
    }
}

/// Remove `watcher` from those of `key`; whether that left the key with none (and so removed it).
fn forget(map: &mut HashMap<Vec<u8>, BTreeSet<i64>>, key: &[u8], watcher: i64) -> bool {
    let Some(watchers) = map.get_mut(key) else { return false };
    watchers.remove(&watcher);
    if !watchers.is_empty() {
        return false;
    }
    map.remove(key);
    true
}

fn keys_of(events: &[Event]) -> impl Iterator<Item = &[u8]> {
    events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| &kv.key[..])
}

/// A subscribed stream: its feed and what it wants.
struct Stream {
    feed: mpsc::Sender<Arc<Published>>,
    interest: Arc<Mutex<Interest>>,
}

#[derive(Default)]
pub struct Hub {
    streams: Mutex<HashMap<u64, Stream>>,
    next_id: AtomicU64,
    /// The newest revision published (written under the `streams` lock).
    last_published: AtomicI64,
}

/// A stream's live feed: every batch with revisions after `from` arrives on `batches`, until the
/// channel closes (the stream fell behind or the hub went away).
pub struct Subscription {
    pub batches: mpsc::Receiver<Arc<Published>>,
    /// Everything up to this revision was committed before the subscription started.
    pub from: i64,
    id: u64,
    hub: Arc<Hub>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().remove(&self.id);
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Stream>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the apply loop while it still holds the store's write lock.
    pub fn publish(&self, events: Vec<Event>) {
        let revision = events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision).max().unwrap_or(0);
        if crate::planted::drops_watch_batch(revision) {
            return;
        }
        let batch = Arc::new(Published { events, revision });
        let mut streams = self.lock();
        self.last_published.fetch_max(revision, Ordering::Relaxed);
        streams.retain(|_, stream| {
            let mut interest = lock(&stream.interest);
            if !interest.wants(&batch.events) {
                // With a batch still queued, the stream has not had everything before this one.
                if stream.feed.capacity() == stream.feed.max_capacity() {
                    interest.skipped_through = interest.skipped_through.max(revision);
                }
                return true;
            }
            drop(interest);
            stream.feed.try_send(batch.clone()).is_ok()
        });
    }

    /// `watcher` of `span` joined the stream of `interest`. Returns the newest revision
    /// published: every later commit with a key in `span` is sent to the stream, and the earlier
    /// ones (skipped or not) are the new watcher's to read from history.
    pub fn watch_span(&self, interest: &Mutex<Interest>, watcher: i64, span: &KeySpan) -> i64 {
        let _no_publish = self.lock();
        lock(interest).add(watcher, span);
        self.last_published.load(Ordering::Relaxed)
    }

    /// The newest revision published, if `subscription` has had every batch up to it that its
    /// watchers want: it is still fed and has none queued. For its worker, between batches.
    pub fn caught_up(&self, subscription: &Subscription) -> Option<i64> {
        let streams = self.lock();
        let fed = streams.contains_key(&subscription.id) && subscription.batches.is_empty();
        fed.then(|| self.last_published.load(Ordering::Relaxed))
    }

    /// The store was replaced wholesale (a snapshot was installed): end every live feed, so each
    /// stream replays what it missed from the new store and subscribes again. Call it once the
    /// new store is readable, before the next apply: batches already queued are older than the
    /// snapshot and still delivered first.
    pub fn store_replaced(&self) {
        self.lock().clear();
    }

    /// Start receiving every batch committed from now on that `interest` wants. Holding the
    /// store's read lock while registering means no commit can fall between the revision read
    /// and the registration.
    pub async fn subscribe(self: &Arc<Self>, store: &Arc<Store>, interest: Arc<Mutex<Interest>>) -> Subscription {
        let hub = self.clone();
        store
            .read_async(move |view| {
                let (feed, batches) = mpsc::channel(STREAM_QUEUE);
                let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
                hub.lock().insert(id, Stream { feed, interest });
                Subscription { batches, from: view.current_rev(), id, hub }
            })
            .await
    }
}

/// An interest's lock (a panic elsewhere leaves the spans as they were: still usable).
pub fn lock(interest: &Mutex<Interest>) -> std::sync::MutexGuard<'_, Interest> {
    interest.lock().unwrap_or_else(|e| e.into_inner())
}
