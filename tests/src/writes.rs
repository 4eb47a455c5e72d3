//! Writes as tests make them: single puts and txns that answer their revision, keys put one after
//! the other or by concurrent writers, and a load of writers running until stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Txn, TxnOp};
use tokio::sync::watch;

use crate::catch_up::{POLL, PROGRESS_TIMEOUT};

/// No write may hang longer than this (a hang is a failure to report, not to wait out).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Puts `key`; the revision it made.
pub async fn put(c: &mut Client, key: &str, value: &str) -> i64 {
    c.put(key, value, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

/// Runs the txn of `ops` (unconditionally); its revision.
pub async fn txn(c: &mut Client, ops: Vec<TxnOp>) -> i64 {
    c.txn(Txn::new().and_then(ops))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

/// Puts `{prefix}0`… `{prefix}{count-1}` with `value(i)` through `client`, one after the other;
/// every key with its value.
pub async fn put_keys(client: &mut Client, prefix: &str, count: usize, value: impl Fn(usize) -> String) -> HashMap<String, String> {
    let mut written = HashMap::new();
    for i in 0..count {
        let (key, val) = (format!("{prefix}{i}"), value(i));
        client.put(key.as_str(), val.as_str(), None).await.unwrap_or_else(|e| panic!("put {key}: {e}"));
        written.insert(key, val);
    }
    written
}

/// key → value of every acknowledged put, and how many there are.
#[derive(Clone)]
pub struct Acks {
    values: Arc<Mutex<HashMap<String, String>>>,
    count: Arc<watch::Sender<usize>>,
}

impl Acks {
    fn new() -> Self {
        Acks { values: Arc::default(), count: Arc::new(watch::channel(0).0) }
    }

    /// Waits until `n` puts in all were acknowledged.
    pub async fn wait_for(&self, n: usize) {
        let mut count = self.count.subscribe();
        let waited = tokio::time::timeout(PROGRESS_TIMEOUT, count.wait_for(|&c| c >= n)).await;
        assert!(waited.is_ok(), "fewer than {n} writes acknowledged in {PROGRESS_TIMEOUT:?}");
    }

    /// How many puts were acknowledged so far.
    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    pub fn snapshot(&self) -> HashMap<String, String> {
        self.values.lock().unwrap().clone()
    }
}

/// Writers putting distinct keys, one per endpoint given, until finished.
pub struct Load {
    pub acks: Acks,
    stop: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(endpoints: impl IntoIterator<Item = String>) -> Self {
        let (acks, stop) = (Acks::new(), Arc::new(AtomicBool::new(false)));
        let writers = endpoints
            .into_iter()
            .enumerate()
            .map(|(w, endpoint)| tokio::spawn(write_until_stopped(endpoint, w, acks.clone(), stop.clone())))
            .collect();
        Load { acks, stop, writers }
    }

    /// Stops the writers; every acknowledged key with its value.
    pub async fn finish(self) -> HashMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        for writer in self.writers {
            writer.await.expect("writer task");
        }
        self.acks.snapshot()
    }
}

/// Puts distinct keys through `endpoint` until `stop`; failed puts (member down, election) are
/// not acknowledged and not retried.
async fn write_until_stopped(endpoint: String, writer: usize, acks: Acks, stop: Arc<AtomicBool>) {
    let Ok(mut client) = Client::connect([endpoint], None).await else { return };
    for seq in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let (key, val) = (format!("w{writer}/{seq}"), format!("{writer}-{seq}"));
        match tokio::time::timeout(WRITE_TIMEOUT, client.put(key.as_str(), val.as_str(), None)).await {
            Ok(Ok(_)) => {
                acks.values.lock().unwrap().insert(key, val);
                acks.count.send_modify(|n| *n += 1);
            }
            Ok(Err(_)) => tokio::time::sleep(POLL).await,
            Err(_) => panic!("a put hung for {WRITE_TIMEOUT:?}"),
        }
    }
}

/// Puts `count` keys through `client` from `writers` concurrent tasks, put `i` writing
/// `item(i)` (key, value); the revision each put made → its `i`.
pub async fn put_concurrently(client: &Client, writers: usize, count: usize, item: fn(usize) -> (String, String)) -> BTreeMap<i64, usize> {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in (w..count).step_by(writers) {
                    let (key, value) = item(i);
                    revs.push((put(&mut client, &key, &value).await, i));
                }
                revs
            })
        })
        .collect();
    let mut written = BTreeMap::new();
    for task in tasks {
        written.extend(task.await.expect("writer task"));
    }
    assert_eq!(written.len(), count, "one revision per put");
    written
}
