//! Fans out each applied batch of events to the subscribed watch streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use conclave_proto::mvccpb::Event;
use tokio::sync::mpsc;

use crate::mvcc::{Store, View};

/// Batches a stream may have queued before it is considered behind and dropped (each batch holds
/// all the events of one apply, often many writes).
const STREAM_QUEUE: usize = 64;

/// Events of consecutive revisions, as committed by one apply.
pub struct Published {
    pub events: Vec<Event>,
    /// The newest revision among the events.
    pub revision: i64,
}

#[derive(Default)]
pub struct Hub {
    streams: Mutex<HashMap<u64, mpsc::Sender<Arc<Published>>>>,
    next_id: AtomicU64,
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
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Arc<Published>>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the apply loop while it still holds the store's write lock.
    pub fn publish(&self, events: Vec<Event>) {
        let revision = events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision).max().unwrap_or(0);
        if crate::planted::drops_watch_batch(revision) {
            return;
        }
        let batch = Arc::new(Published { events, revision });
        self.lock().retain(|_, stream| stream.try_send(batch.clone()).is_ok());
    }

    /// The store was replaced wholesale (a snapshot was installed): end every live feed, so each
    /// stream replays what it missed from the new store and subscribes again. Call it once the
    /// new store is readable, before the next apply: batches already queued are older than the
    /// snapshot and still delivered first.
    pub fn store_replaced(&self) {
        self.lock().clear();
    }

    /// Start receiving every batch committed from now on. Holding the store's read lock while
    /// registering means no commit can fall between the revision read and the registration.
    pub async fn subscribe(self: &Arc<Self>, store: &Arc<Store>) -> Subscription {
        let hub = self.clone();
        store
            .read_async(move |view| {
                let (sender, batches) = mpsc::channel(STREAM_QUEUE);
                let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
                hub.lock().insert(id, sender);
                Subscription { batches, from: view.current_rev(), id, hub }
            })
            .await
    }
}
