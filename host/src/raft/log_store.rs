//! The raft log and vote in sled, acknowledged only once durable.
//!
//! Appends go into sled at once and their callbacks queue for a single flusher thread: each flush
//! (an fsync) covers every append queued before it started, so concurrent writers share fsyncs
//! (group commit), and callbacks complete in append order. The thread calls sled's blocking
//! `flush`: `flush_async` hands every call to sled's IO thread pool, which under load costs more
//! in thread wake-ups than the flushes themselves.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, Vote};
use std::sync::mpsc;

use super::{decode, encode, read_err, write_err, NodeId, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The highest log index this member knows to be committed: what etcd reports as the raft index
/// (openraft's metrics only tell the last appended and the last applied index).
#[derive(Clone, Default)]
pub struct CommittedIndex(Arc<AtomicU64>);

impl CommittedIndex {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, committed: Option<&LogId<NodeId>>) {
        self.0.store(committed.map_or(0, |id| id.index), Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    /// Entries keyed by big-endian index.
    entries: sled::Tree,
    /// Vote, committed and last purged log ids.
    meta: sled::Tree,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    committed: CommittedIndex,
}

impl LogStore {
    /// Open the log kept in `db`, starting its flusher thread.
    pub fn open(db: &sled::Db) -> std::io::Result<Self> {
        let (flusher, pending) = mpsc::channel();
        let flushed = db.clone();
        std::thread::Builder::new().name("log flusher".into()).spawn(move || flush_loop(flushed, pending))?;
        let store = LogStore {
            db: db.clone(),
            entries: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
            flusher,
            committed: CommittedIndex::default(),
        };
        let committed = store.read_meta::<Option<LogId<NodeId>>>(COMMITTED).map_err(io::Error::other)?.flatten();
        store.committed.set(committed.as_ref());
        Ok(store)
    }

    /// The committed index as raft saves it, readable while raft owns this store.
    pub fn committed_index(&self) -> CommittedIndex {
        self.committed.clone()
    }

    fn read_meta<T: for<'de> serde::Deserialize<'de>>(&self, name: &[u8]) -> Result<Option<T>, StorageError<NodeId>> {
        match self.meta.get(name).map_err(read_err)? {
            Some(bytes) => decode(&bytes).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, name: &[u8], value: &T) -> Result<(), StorageError<NodeId>> {
        self.meta.insert(name, encode(value).map_err(write_err)?).map_err(write_err)?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError<NodeId>> {
        self.db.flush_async().await.map_err(write_err)?;
        Ok(())
    }

    /// Every entry in the log, for dumping.
    pub fn all_entries(&self) -> impl Iterator<Item = Result<Entry<TypeConfig>, StorageError<NodeId>>> + '_ {
        self.entries.iter().map(|item| {
            let (_, bytes) = item.map_err(read_err)?;
            decode(&bytes).map_err(read_err)
        })
    }
}

/// What the log kept in a member's sled database holds, read without starting raft (for
/// `conclavectl dump-log`).
pub struct LogDump {
    pub last_purged: Option<LogId<NodeId>>,
    pub committed: Option<LogId<NodeId>>,
    pub vote: Option<Vote<NodeId>>,
    pub entries: Vec<Entry<TypeConfig>>,
}

/// Reads every entry and the log metadata from `db` (a member's `<data-dir>/db`).
pub fn read_log(db: &sled::Db) -> Result<LogDump, StorageError<NodeId>> {
    let meta = db.open_tree("raft_meta").map_err(read_err)?;
    let read_meta = |name: &[u8]| -> Result<Option<sled::IVec>, StorageError<NodeId>> { meta.get(name).map_err(read_err) };
    let last_purged = read_meta(LAST_PURGED)?.map(|b| decode(&b)).transpose().map_err(read_err)?;
    let committed = read_meta(COMMITTED)?.map(|b| decode::<Option<LogId<NodeId>>>(&b)).transpose().map_err(read_err)?.flatten();
    let vote = read_meta(VOTE)?.map(|b| decode(&b)).transpose().map_err(read_err)?;
    let entries = db
        .open_tree("raft_log")
        .map_err(read_err)?
        .iter()
        .map(|item| {
            let (_, bytes) = item.map_err(read_err)?;
            decode(&bytes).map_err(read_err)
        })
        .collect::<Result<_, _>>()?;
    Ok(LogDump { last_purged, committed, vote, entries })
}

/// Flushes slower than this are logged (etcd warns about slow fdatasync the same way).
const SLOW_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

fn flush_loop(db: sled::Db, pending: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = pending.recv() {
        let batch: Vec<_> = std::iter::once(first).chain(pending.try_iter()).collect();
        let started = std::time::Instant::now();
        let result = db.flush();
        crate::metrics::get().wal_fsync.observe(started.elapsed().as_secs_f64());
        if started.elapsed() > SLOW_FLUSH {
            tracing::warn!(took = ?started.elapsed(), appends = batch.len(), "log flush took too long");
        }
        for callback in batch {
            let outcome = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            callback.log_io_completed(outcome);
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.entries
            .range::<[u8; 8], _>((start, end))
            .map(|item| {
                let (_, bytes) = item.map_err(read_err)?;
                decode(&bytes).map_err(read_err)
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.read_meta(LAST_PURGED)?;
        let last_log_id = match self.entries.last().map_err(read_err)? {
            Some((_, bytes)) => Some(decode::<Entry<TypeConfig>>(&bytes).map_err(read_err)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(VOTE, vote)?;
        self.flush().await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        // Durable on the next flush; losing it only means re-applying from the last applied id.
        self.write_meta(COMMITTED, &committed)?;
        self.committed.set(committed.as_ref());
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.read_meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&index_key(entry.log_id.index), encode(&entry).map_err(write_err)?);
        }
        self.entries.apply_batch(batch).map_err(write_err)?;
        self.flusher
            .send(callback)
            .map_err(|_| write_err(io::Error::other("log flusher stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut batch = sled::Batch::default();
        for item in self.entries.range(index_key(log_id.index)..) {
            batch.remove(item.map_err(read_err)?.0);
        }
        self.entries.apply_batch(batch).map_err(write_err)?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point durably first, so a crash mid-purge never leaves a gap unexplained.
        self.write_meta(LAST_PURGED, &log_id)?;
        self.flush().await?;
        // From here raft never reads those entries again (the log state reports the purge point),
        // so they are deleted in the background, in small batches: deleting a whole snapshot
        // interval in one batch held up appends, and with them every write, for most of a second.
        let entries = self.entries.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = delete_upto(&entries, log_id.index) {
                tracing::warn!("deleting purged raft log entries: {e}");
            }
        });
        Ok(())
    }
}

/// Entries removed per sled batch by a background purge.
const PURGE_CHUNK: usize = 1024;

fn delete_upto(entries: &sled::Tree, index: u64) -> sled::Result<()> {
    loop {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for item in entries.range(..=index_key(index)).take(PURGE_CHUNK) {
            batch.remove(item?.0);
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        entries.apply_batch(batch)?;
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    #[tokio::test]
    async fn committed_index_follows_saves_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut store = LogStore::open(&db).unwrap();
        let committed = store.committed_index();
        assert_eq!(committed.get(), 0);
        store.save_committed(Some(LogId::new(CommittedLeaderId::new(2, 1), 7))).await.unwrap();
        assert_eq!(committed.get(), 7);
        drop(store);
        assert_eq!(LogStore::open(&db).unwrap().committed_index().get(), 7);
    }
}
