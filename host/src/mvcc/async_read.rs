//! Reading the store from async code without blocking a runtime worker: a write batch holds the
//! store for a whole apply, and a worker parked on that lock stalls every task queued on it.

use std::sync::Arc;

use conclave_proto::mvccpb::event::EventType;
use conclave_proto::mvccpb::Event;

use super::store::{HistoryChunk, ReadView, Store, StoreError, View};

impl Store {
    /// Run `read` on a consistent view (mutable, as a read-only `mvcc::txn` wants it). When no
    /// write batch holds the store it runs right here; otherwise it waits for the batch on
    /// tokio's blocking pool, where waiting costs no worker.
    pub async fn read_async<T, F>(self: &Arc<Self>, read: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut ReadView<'_>) -> T + Send + 'static,
    {
        if let Some(mut view) = self.try_read() {
            return read(&mut view);
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || read(&mut store.read()))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// The store's revision, read as [`Store::read_async`] reads.
    pub async fn current_rev_async(self: &Arc<Self>) -> i64 {
        self.read_async(|view| view.current_rev()).await
    }

    /// `events` with the values that the events at `places` replaced (a put's previous value, a
    /// delete's removed one), which the apply left out (see [`Writer::put`](super::Writer::put)),
    /// as far as the history still holds them.
    pub async fn with_replaced_values(self: &Arc<Self>, mut events: Vec<Event>, places: Vec<usize>) -> Result<Vec<Event>, StoreError> {
        self.read_async(move |view| {
            for i in places {
                let event = &mut events[i];
                let kv = event.kv.as_ref().expect("an event has its key");
                event.prev_kv = view.get_at(&kv.key, kv.mod_revision - 1)?;
            }
            Ok(events)
        })
        .await
    }

    /// [`Store::history`] without blocking the runtime, as [`Store::read_async`] reads.
    pub async fn history_async(self: &Arc<Self>, from: i64, upto: i64, chunk: HistoryChunk) -> Result<(Vec<Event>, i64), StoreError> {
        let store = self.clone();
        self.read_async(move |view| store.history_in(view, from, upto, chunk)).await
    }
}

/// Whether `event` changed a key that had a value (a put of a version past the first, or a
/// delete) and comes without that value.
pub fn lacks_replaced_value(event: &Event) -> bool {
    let replaced = event.r#type == EventType::Delete as i32 || event.kv.as_ref().is_some_and(|kv| kv.version > 1);
    replaced && event.prev_kv.is_none()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::mvcc::{View, Writer};
    use conclave_proto::etcdserverpb::PutRequest;

    fn store() -> Arc<Store> {
        Arc::new(Store::open(sled::Config::new().temporary(true).open().unwrap().open_tree("t").unwrap()).unwrap())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_read_during_a_write_batch_leaves_the_runtime_running() {
        let store = store();
        let batch_open = Arc::new(std::sync::Barrier::new(2));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let writer = {
            let (store, batch_open) = (store.clone(), batch_open.clone());
            std::thread::spawn(move || {
                let mut batch = store.begin();
                Writer::new(&mut batch).put(&PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() }).unwrap();
                batch_open.wait();
                // Not released in time: the runtime is stuck behind this batch (the bug).
                let stuck = released.recv_timeout(Duration::from_secs(10)).is_err();
                batch.commit(Vec::new(), |_| {}).unwrap();
                stuck
            })
        };
        batch_open.wait();
        let read = tokio::spawn({
            let store = store.clone();
            async move { store.read_async(|view| view.current_rev()).await }
        });
        // The only runtime thread keeps running other tasks while the read waits for the batch.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!read.is_finished());
        release.send(()).unwrap();
        assert_eq!(read.await.unwrap(), 2, "the read sees the committed batch");
        let (events, next) = store.history_async(2, 2, HistoryChunk { events: 10, bytes: usize::MAX }).await.unwrap();
        assert_eq!((events.len(), next), (1, 3));
        assert!(!writer.join().unwrap(), "the runtime was stuck behind the write batch");
    }
}
