//! Committed writes on their way to sled.
//!
//! The raft log holds every committed entry durably, so the store in sled only has to be a
//! consistent prefix of it: raft applies the log again from the applied id the store holds. Writing
//! each apply to sled as its own atomic batch was what cost most CPU per write (sled rolls and
//! writes its IO buffer for every batch), so committed writes wait here, in key order, and a
//! flusher thread hands them to sled in one atomic batch every [`FLUSH_AGE`] or so. Every read of
//! the store looks here first, then in sled.
//!
//! An entry leaves this map only after sled has it, and only if no later commit changed it
//! meanwhile, so a read always finds the newest committed value in one of the two places.

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sled::IVec;

use super::store::StoreError;

/// The flusher is woken once this many entries wait, ...
const FLUSH_ENTRIES: usize = 4096;
/// ... or they hold this many bytes, ...
const FLUSH_BYTES: usize = 8 << 20;
/// ... or the oldest of them waited this long (checked when a batch commits). Each flush holds
/// off sled's readers while it applies: 100 ms made batches long enough to double the p99 of 16
/// clients' puts, 20 ms costs no throughput. Unit tests flush when they mean to.
const FLUSH_AGE: Duration = if cfg!(test) { Duration::from_secs(3600) } else { Duration::from_millis(20) };
/// A committer that finds this many times the above waiting (the flusher cannot keep up) flushes
/// itself: memory stays bounded.
const BACKLOG_FACTOR: usize = 4;

/// A key written (or, with `None`, removed) and not yet flushed.
pub type Write = (IVec, Option<IVec>);

/// The committed writes sled has not been given yet, and the thread that gives them.
pub struct Unflushed {
    shared: Arc<Shared>,
    /// Bytes committed so far, flushed or not: what the space quota adds to sled's last known size.
    committed_bytes: AtomicU64,
    wake: Option<SyncSender<()>>,
    flusher: Option<JoinHandle<()>>,
}

struct Shared {
    tree: sled::Tree,
    waiting: RwLock<Waiting>,
    /// Held by whoever writes to the tree: one flush at a time, and none while it is replaced.
    writing: Mutex<()>,
}

#[derive(Default)]
struct Waiting {
    entries: BTreeMap<IVec, Pending>,
    /// Numbers each write, so a flush can tell whether an entry changed after it copied it.
    next_seq: u64,
    bytes: usize,
    oldest: Option<Instant>,
}

struct Pending {
    seq: u64,
    value: Option<IVec>,
}

fn size(key: &IVec, value: &Option<IVec>) -> usize {
    key.len() + value.as_ref().map_or(0, |v| v.len())
}

impl Unflushed {
    /// Writes on their way to `tree`, with a flusher thread of their own.
    pub fn new(tree: sled::Tree) -> Self {
        let shared = Arc::new(Shared { tree, waiting: RwLock::default(), writing: Mutex::new(()) });
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("store flusher".into())
                .spawn(move || {
                    while woken.recv().is_ok() {
                        if let Err(e) = shared.flush() {
                            // The writes stay here; the next flush tries again, and a committer
                            // meeting a full backlog gets the error.
                            tracing::error!(error = %e, "writing committed changes to sled");
                        }
                    }
                })
                .expect("spawning the store flusher")
        };
        Unflushed { shared, committed_bytes: AtomicU64::new(0), wake: Some(wake), flusher: Some(flusher) }
    }

    /// One entry as committed.
    pub fn get(&self, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        if let Some(pending) = self.shared.waiting().entries.get(key) {
            return Ok(pending.value.clone());
        }
        Ok(self.shared.tree.get(key)?)
    }

    /// The committed entries from `from` up to (not including) `to`, or to the end, in key order.
    /// The waiting ones in the range are copied first: a sled scan may or may not see what a flush
    /// writes while it runs, and either way the copy wins.
    pub fn scan(&self, from: &[u8], to: Option<&[u8]>) -> Overlaid<sled::Iter> {
        let range = (Bound::Included(IVec::from(from)), to.map_or(Bound::Unbounded, |to| Bound::Excluded(IVec::from(to))));
        let over: Vec<_> = self.shared.waiting().entries.range(range.clone()).map(|(k, p)| (k.clone(), p.value.clone())).collect();
        Overlaid { tree: self.shared.tree.range(range).peekable(), over: over.into_iter().peekable() }
    }

    /// Bytes of keys and values committed since this store was opened.
    pub fn committed_bytes(&self) -> u64 {
        self.committed_bytes.load(Ordering::Relaxed)
    }

    /// Add the writes of one committed batch, all at once as readers see it.
    pub fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let (due, backlogged) = {
            let mut waiting = self.shared.waiting_mut();
            waiting.oldest.get_or_insert_with(Instant::now);
            for (key, value) in writes {
                let added = size(&key, &value);
                waiting.bytes += added;
                self.committed_bytes.fetch_add(added as u64, Ordering::Relaxed);
                let seq = waiting.next_seq;
                waiting.next_seq += 1;
                if let Some(old) = waiting.entries.insert(key.clone(), Pending { seq, value }) {
                    waiting.bytes -= size(&key, &old.value);
                }
            }
            let (entries, bytes) = (waiting.entries.len(), waiting.bytes);
            let due = entries >= FLUSH_ENTRIES || bytes >= FLUSH_BYTES || waiting.oldest.is_some_and(|t| t.elapsed() >= FLUSH_AGE);
            (due, entries >= BACKLOG_FACTOR * FLUSH_ENTRIES || bytes >= BACKLOG_FACTOR * FLUSH_BYTES)
        };
        if backlogged {
            return self.shared.flush();
        }
        if due && let Some(wake) = &self.wake {
            // Full means a wake-up is already queued.
            let _ = wake.try_send(());
        }
        Ok(())
    }

    /// Give sled everything committed so far and have it write it to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.shared.flush()?;
        self.shared.tree.flush()?;
        Ok(())
    }

    /// The tree to change directly (replaced by a snapshot, metadata removed), no flush running
    /// until the guard is dropped.
    pub fn exclusive(&self) -> Exclusive<'_> {
        Exclusive { shared: &self.shared, _writing: self.shared.writing() }
    }
}

/// The tree held against flushes; see [`Unflushed::exclusive`].
pub struct Exclusive<'a> {
    shared: &'a Shared,
    _writing: MutexGuard<'a, ()>,
}

impl Exclusive<'_> {
    pub fn tree(&self) -> &sled::Tree {
        &self.shared.tree
    }

    /// Drop every waiting write.
    pub fn forget_all(&self) {
        *self.shared.waiting_mut() = Waiting::default();
    }

    /// Drop the waiting writes of `keys`.
    pub fn forget(&self, keys: &[&[u8]]) {
        let mut waiting = self.shared.waiting_mut();
        for key in keys {
            if let Some(old) = waiting.entries.remove(*key) {
                waiting.bytes -= size(&IVec::from(*key), &old.value);
            }
        }
    }
}

impl Drop for Unflushed {
    /// What a clean stop leaves is all in sled, so a restart has nothing to apply again.
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        if let Err(e) = self.shared.flush() {
            tracing::error!(error = %e, "writing the store's last changes to sled");
        }
    }
}

impl Shared {
    fn waiting(&self) -> RwLockReadGuard<'_, Waiting> {
        self.waiting.read().unwrap_or_else(|e| e.into_inner())
    }

    fn waiting_mut(&self) -> RwLockWriteGuard<'_, Waiting> {
        self.waiting.write().unwrap_or_else(|e| e.into_inner())
    }

    fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copy what waits (whole commits only: they are added under one lock), write it to sled in
    /// one atomic batch, then let go of the entries no commit changed meanwhile.
    fn flush(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.writing();
        let copied: Vec<(IVec, u64, Option<IVec>)> = {
            let mut waiting = self.waiting_mut();
            waiting.oldest = None;
            waiting.entries.iter().map(|(key, pending)| (key.clone(), pending.seq, pending.value.clone())).collect()
        };
        if copied.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, _, value) in &copied {
            match value {
                Some(value) => batch.insert(key.clone(), value.clone()),
                None => batch.remove(key.clone()),
            }
        }
        self.tree.apply_batch(batch)?;
        let mut waiting = self.waiting_mut();
        for (key, seq, value) in copied {
            if waiting.entries.get(&key).is_some_and(|pending| pending.seq == seq) {
                waiting.entries.remove(&key);
                waiting.bytes -= size(&key, &value);
            }
        }
        if waiting.entries.is_empty() {
            waiting.oldest = None;
        }
        Ok(())
    }
}

/// A scan of the tree with waiting entries laid over it: both in key order, a waiting entry
/// replacing (or, if `None`, removing) the tree's entry of the same key.
pub struct Overlaid<I: Iterator<Item = sled::Result<(IVec, IVec)>>> {
    tree: Peekable<I>,
    over: Peekable<std::vec::IntoIter<Write>>,
}

impl<I: Iterator<Item = sled::Result<(IVec, IVec)>>> Iterator for Overlaid<I> {
    type Item = Result<(IVec, IVec), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::cmp::Ordering;
        loop {
            let order = match (self.tree.peek(), self.over.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(Ok(_)), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(Ok((tree_key, _))), Some((over_key, _))) => tree_key.cmp(over_key),
            };
            if order == Ordering::Less {
                return self.tree.next().map(|entry| entry.map_err(StoreError::from));
            }
            if order == Ordering::Equal {
                self.tree.next();
            }
            if let Some((key, Some(value))) = self.over.next() {
                return Some(Ok((key, value)));
            }
        }
    }
}
