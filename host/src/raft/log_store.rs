//! openraft's log storage over the raft log in `wal`: reads are served from memory, and every
//! append, vote, truncation and purge goes to the log's writer thread, which acknowledges it only
//! once it is durable (fdatasync). Appends are completed in order; concurrent ones share a sync.
//!
//! Except a leader's own new entries: openraft 0.9 holds its core task until an append is
//! acknowledged, so a leader would send its entries to the followers only after its own sync, and
//! the two syncs of every write would follow each other instead of overlapping. A leader's own
//! entries are therefore acknowledged at once and synced behind, as etcd's leader counts its own
//! entries before its sync. That is safe because nothing acts on a commit before the leader's
//! copy is durable too: the state machine applies an entry (and so answers its client) only once
//! it is ([`Durable`]), and the leader tells followers of a commit only once it is
//! (`network.rs`). A follower's appends are acknowledged only once synced, as raft requires.
//!
//! A purge is made durable only once the snapshot on disk covers it. openraft purges a follower's
//! log as soon as it hands a received snapshot to the state machine, before the snapshot is
//! installed; made durable at once, a kill -9 in between left a member whose log was purged past
//! its snapshot, which it could neither start from nor catch up from.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, Vote};
use tokio::sync::watch;

use super::wal::{self, Done, Durable, Log, Pending, Write, COMMITTED, ENTRY, PURGED, VOTE};
use super::{decode, write_err, NodeId, TypeConfig};

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
    /// This member.
    id: NodeId,
    log: Arc<Mutex<Log>>,
    writer: mpsc::Sender<Write>,
    committed: CommittedIndex,
    durable: Durable,
    /// The last index in the snapshot on disk.
    snapshot: watch::Receiver<u64>,
    /// Purges to make durable, in order, each once the snapshot on disk covers it.
    purges: tokio::sync::mpsc::UnboundedSender<(LogId<NodeId>, Done)>,
}

impl LogStore {
    /// Opens member `id`'s log in `dir` (its `<data-dir>/wal`), first moving into it a log that
    /// an earlier version kept in the sled database `db`; `snapshot` tells the last index in the
    /// snapshot on disk. Must be called inside a tokio runtime.
    pub fn open(id: NodeId, dir: &Path, db: &sled::Db, snapshot: watch::Receiver<u64>) -> io::Result<Self> {
        let (mut log, mut writer) = wal::open(dir)?;
        if import_from_sled(db, &mut log, &mut writer)? {
            tracing::info!(log = %dir.display(), "moved the raft log out of the database");
        }
        log.vote = log.vote.map(|vote| no_longer_leading(id, vote));
        let committed = CommittedIndex::default();
        committed.set(log.committed.as_ref());
        let durable = writer.durable();
        let writer = writer.spawn()?;
        let (purges, waiting) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(record_purges(writer.clone(), waiting, snapshot.clone()));
        Ok(LogStore { id, log: Arc::new(Mutex::new(log)), writer, committed, durable, snapshot, purges })
    }

    /// How far the log is durable.
    pub fn durable(&self) -> Durable {
        self.durable.clone()
    }

    /// The committed index as raft saves it, readable while raft owns this store.
    pub fn committed_index(&self) -> CommittedIndex {
        self.committed.clone()
    }

    /// The last index to purge so that the log kept up to `through` holds `keep` client
    /// requests; `None` if it holds no more than that.
    pub fn purge_keeping(&self, through: u64, keep: u64) -> Option<u64> {
        self.log().purge_keeping(through, keep)
    }

    /// Refuses a log that ends before an entry this member committed or `applied`, unless the
    /// snapshot on disk (through `snapshot`) covers it: the log lost entries a crash cannot take
    /// (it cuts only an unsynced tail, before anything acts on it), so it is damaged; a damaged
    /// last record followed by zeros cannot be told from a torn one, but this tells. Left to
    /// raft, such a log stops it with an invariant's panic.
    pub fn check_holds(&self, dir: &Path, applied: u64, snapshot: u64) -> io::Result<()> {
        let log = self.log();
        let last = log.last_log_id().map_or(0, |id| id.index);
        let committed = log.committed.map_or(0, |id| id.index);
        let (needed, what) = if applied >= committed { (applied, "applied") } else { (committed, "committed") };
        if last >= needed || snapshot >= needed {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "corrupt raft log {}: it ends at entry {last}, but this member {what} entry {needed} and its snapshot ends at {snapshot}; \
             remove the member and add it back empty, or restore it from a snapshot",
            dir.display()
        )))
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, records: Vec<Pending>, done: Done, purge_upto: Option<u64>) -> Result<(), StorageError<NodeId>> {
        self.writer
            .send(Write { records, done, purge_upto })
            .map_err(|_| write_err(io::Error::other("raft log writer stopped")))
    }

    /// Writes `records` and waits until they are durable.
    async fn write(&self, records: Vec<Pending>, purge_upto: Option<u64>) -> Result<(), StorageError<NodeId>> {
        let (done, durable) = tokio::sync::oneshot::channel();
        self.send(records, Done::Notify(done), purge_upto)?;
        durable.await.map_err(|_| write_err(io::Error::other("raft log writer stopped")))?.map_err(write_err)
    }
}

/// The vote member `id` starts with after a restart. openraft resumes leading at once when the
/// vote it reads at start-up is this member's committed one. But a leader's own entries are
/// acknowledged before they are written (see `append`), so after a crash this member may lack
/// entries it had already replicated in that term: leading the same term again would put other
/// entries at their indexes, and members would apply different logs. As not yet committed, the
/// vote still keeps this member from voting for another in that term, and it must win an
/// election in a later term before it leads.
fn no_longer_leading(id: NodeId, vote: Vote<NodeId>) -> Vote<NodeId> {
    match vote.leader_id().voted_for() {
        Some(leader) if leader == id && vote.is_committed() => Vote::new(vote.leader_id().term, id),
        _ => vote,
    }
}

/// Whether entry `log_id` is one member `id` proposes as the leader it is by `vote`: its vote,
/// granted by a quorum, is for itself, and the entry is of that leadership (a follower's vote is
/// for its leader, a candidate's is not granted yet).
fn proposed_here(id: NodeId, vote: Option<&Vote<NodeId>>, log_id: &LogId<NodeId>) -> bool {
    vote.is_some_and(|v| v.is_committed() && v.leader_id().voted_for() == Some(id) && *v.leader_id() == log_id.leader_id)
}

/// Moves the raft log and its metadata out of the sled trees an earlier version kept them in,
/// durably into the new log, then drops those trees. Whether there was one.
fn import_from_sled(db: &sled::Db, log: &mut Log, writer: &mut wal::WriterHandle) -> io::Result<bool> {
    const TREES: [&str; 2] = ["raft_log", "raft_meta"];
    if !db.tree_names().iter().any(|name| TREES.iter().any(|t| name == t.as_bytes())) {
        return Ok(false);
    }
    let meta = db.open_tree("raft_meta")?;
    let read = |name: &str| meta.get(name).map_err(io::Error::other);
    let mut records = Vec::new();
    if let Some(purged) = read("last_purged")? {
        let purged: LogId<NodeId> = decode(&purged).map_err(io::Error::other)?;
        records.push(wal::pending(PURGED, &purged, None)?);
        log.purge(purged);
    }
    if let Some(vote) = read("vote")? {
        let vote: Vote<NodeId> = decode(&vote).map_err(io::Error::other)?;
        records.push(wal::pending(VOTE, &vote, None)?);
        log.vote = Some(vote);
    }
    if let Some(committed) = read("committed")? {
        let committed: Option<LogId<NodeId>> = decode(&committed).map_err(io::Error::other)?;
        records.push(wal::pending(COMMITTED, &committed, None)?);
        log.committed = committed;
    }
    for item in db.open_tree("raft_log")?.iter() {
        let entry: Entry<TypeConfig> = decode(&item?.1).map_err(io::Error::other)?;
        if log.purged.is_some_and(|p| entry.log_id.index <= p.index) {
            continue;
        }
        records.push(wal::pending(ENTRY, &entry, Some(entry.log_id.index))?);
        log.append(entry).map_err(io::Error::other)?;
    }
    writer.write_now(&records)?;
    for tree in TREES {
        db.drop_tree(tree)?;
    }
    db.flush()?;
    Ok(true)
}

/// What a member's raft log holds, read without starting raft (for `conclavectl dump-log`).
pub struct LogDump {
    pub last_purged: Option<LogId<NodeId>>,
    pub committed: Option<LogId<NodeId>>,
    pub vote: Option<Vote<NodeId>>,
    pub entries: Vec<Entry<TypeConfig>>,
}

/// Reads every entry and the log metadata from `dir` (a member's `<data-dir>/wal`).
pub fn read_log(dir: &Path) -> io::Result<LogDump> {
    let log = wal::read(dir)?;
    Ok(LogDump { last_purged: log.purged, committed: log.committed, vote: log.vote, entries: log.entries().cloned().collect() })
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.log().range(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let log = self.log();
        Ok(LogState { last_purged_log_id: log.purged, last_log_id: log.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.log().vote = Some(*vote);
        self.write(vec![wal::pending(VOTE, vote, None).map_err(write_err)?], None).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.log().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        // Durable with the next sync; losing it only means re-applying from the last applied id.
        self.log().committed = committed;
        self.committed.set(committed.as_ref());
        self.send(vec![wal::pending(COMMITTED, &committed, None).map_err(write_err)?], Done::Nobody, None)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.log().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut records = Vec::new();
        let mut own = true;
        {
            let mut log = self.log();
            let vote = log.vote;
            for entry in entries {
                own &= proposed_here(self.id, vote.as_ref(), &entry.log_id);
                records.push(wal::pending(ENTRY, &entry, Some(entry.log_id.index)).map_err(write_err)?);
                log.append(entry).map_err(|e| write_err(io::Error::other(e)))?;
            }
        }
        if !own {
            return self.send(records, Done::Raft(callback), None);
        }
        self.send(records, Done::Told, None)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.log().truncate(log_id.index);
        self.write(vec![wal::truncation(log_id.index)], None).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.log().purge(log_id);
        // A snapshot interval of entries was just freed, scattered through the heap.
        tokio::task::spawn_blocking(crate::heap::release_free_pages);
        let (done, durable) = tokio::sync::oneshot::channel();
        let stopped = || write_err(io::Error::other("raft log writer stopped"));
        self.purges.send((log_id, Done::Notify(done))).map_err(|_| stopped())?;
        // Durable before this returns when a snapshot covers it already (every purge before it
        // is covered too), as for a member's own snapshots; later otherwise.
        if *self.snapshot.borrow() >= log_id.index {
            durable.await.map_err(|_| stopped())?.map_err(write_err)?;
        }
        Ok(())
    }
}

/// Make each purge durable (a record, and whole segments deleted) once the snapshot on disk
/// covers it: until then a restart finds the entries, and raft purges them again. Ends with the
/// state machine or the log.
async fn record_purges(
    writer: mpsc::Sender<Write>,
    mut waiting: tokio::sync::mpsc::UnboundedReceiver<(LogId<NodeId>, Done)>,
    mut snapshot: watch::Receiver<u64>,
) {
    while let Some((log_id, done)) = waiting.recv().await {
        if snapshot.wait_for(|&index| index >= log_id.index).await.is_err() {
            return;
        }
        let Ok(record) = wal::pending(PURGED, &log_id, None) else { return };
        if writer.send(Write { records: vec![record], done, purge_upto: Some(log_id.index) }).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload: EntryPayload::Blank }
    }

    async fn append(store: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
        let (done, durable) = tokio::sync::oneshot::channel();
        store.send(entries.iter().map(|e| wal::pending(ENTRY, e, Some(e.log_id.index)).unwrap()).collect(), Done::Notify(done), None).unwrap();
        {
            let mut log = store.log();
            entries.into_iter().for_each(|e| log.append(e).unwrap());
        }
        durable.await.unwrap().unwrap();
    }

    #[test]
    fn only_a_leaders_own_entries_are_acknowledged_before_their_sync() {
        let entry = |term, leader| LogId::new(CommittedLeaderId::new(term, leader), 7);
        assert!(proposed_here(1, Some(&Vote::new_committed(3, 1)), &entry(3, 1)));
        // A candidate, a follower, and a leader's entries of an earlier leadership.
        assert!(!proposed_here(1, Some(&Vote::new(3, 1)), &entry(3, 1)));
        assert!(!proposed_here(1, Some(&Vote::new_committed(3, 2)), &entry(3, 2)));
        assert!(!proposed_here(1, Some(&Vote::new_committed(4, 1)), &entry(3, 1)));
        assert!(!proposed_here(1, None, &entry(3, 1)));
    }

    /// A snapshot on disk that covers every purge.
    fn any_snapshot() -> watch::Receiver<u64> {
        watch::channel(u64::MAX).1
    }

    fn indexes(store: &mut LogStore) -> Vec<u64> {
        store.log().entries().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn entries_votes_truncations_and_purges_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut store = LogStore::open(1, &dir.path().join("wal"), &db, any_snapshot()).unwrap();
        append(&mut store, (1..=6).map(|i| entry(1, i)).collect()).await;
        store.truncate(LogId::new(CommittedLeaderId::new(1, 1), 5)).await.unwrap();
        append(&mut store, vec![entry(2, 5)]).await;
        store.purge(LogId::new(CommittedLeaderId::new(1, 1), 2)).await.unwrap();
        let vote = Vote::new(2, 1);
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(LogId::new(CommittedLeaderId::new(2, 1), 5))).await.unwrap();
        store.save_vote(&vote).await.unwrap();
        drop(store);

        let mut reopened = LogStore::open(1, &dir.path().join("wal"), &db, any_snapshot()).unwrap();
        assert_eq!(indexes(&mut reopened), [3, 4, 5]);
        assert_eq!(reopened.log().entries().last().unwrap().log_id.leader_id.term, 2);
        assert_eq!(reopened.read_vote().await.unwrap(), Some(vote));
        assert_eq!(reopened.committed_index().get(), 5);
        let state = reopened.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|id| id.index), Some(2));
        assert_eq!(reopened.try_get_log_entries(4..).await.unwrap().len(), 2);
    }

    /// Found by the reliability suite: a leader killed with an entry replicated but not yet
    /// written came back leading the same term, appended another entry at that index, and the
    /// members' logs (and stores) differed from there on.
    #[tokio::test]
    async fn a_member_that_led_before_a_restart_must_win_an_election_to_lead_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let wal = dir.path().join("wal");
        let mut store = LogStore::open(1, &wal, &db, any_snapshot()).unwrap();
        store.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
        drop(store);
        let mut reopened = LogStore::open(1, &wal, &db, any_snapshot()).unwrap();
        assert_eq!(reopened.read_vote().await.unwrap(), Some(Vote::new(4, 1)), "this member's own vote, no longer committed");
        assert!(!proposed_here(1, reopened.log().vote.as_ref(), &entry(4, 1).log_id), "nor are entries of term 4 its own any more");
        reopened.save_vote(&Vote::new_committed(5, 2)).await.unwrap();
        drop(reopened);
        let mut follower = LogStore::open(1, &wal, &db, any_snapshot()).unwrap();
        assert_eq!(follower.read_vote().await.unwrap(), Some(Vote::new_committed(5, 2)), "another leader's vote as it was");
    }

    #[tokio::test]
    async fn a_log_kept_in_sled_by_an_earlier_version_is_moved_over() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let meta = db.open_tree("raft_meta").unwrap();
        meta.insert("vote", super::super::encode(&Vote::<NodeId>::new(3, 2)).unwrap()).unwrap();
        meta.insert("last_purged", super::super::encode(&LogId::new(CommittedLeaderId::new(1, 1), 1)).unwrap()).unwrap();
        let old = db.open_tree("raft_log").unwrap();
        for i in 1..=3u64 {
            old.insert(i.to_be_bytes(), super::super::encode(&entry(1, i)).unwrap()).unwrap();
        }
        drop(LogStore::open(1, &dir.path().join("wal"), &db, any_snapshot()).unwrap());
        assert!(!db.tree_names().iter().any(|n| n == b"raft_log"));
        let mut store = LogStore::open(1, &dir.path().join("wal"), &db, any_snapshot()).unwrap();
        assert_eq!(indexes(&mut store), [2, 3]);
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    }

    #[tokio::test]
    async fn a_corrupt_segment_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let wal = dir.path().join("wal");
        let mut store = LogStore::open(1, &wal, &db, any_snapshot()).unwrap();
        append(&mut store, (1..=3).map(|i| entry(1, i)).collect()).await;
        drop(store);
        let segment = std::fs::read_dir(&wal).unwrap().next().unwrap().unwrap().path();
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&segment, bytes).unwrap();
        let error = LogStore::open(1, &wal, &db, any_snapshot()).err().unwrap().to_string();
        assert!(error.contains(&segment.display().to_string()), "{error}");
    }

    /// Found by `a_member_killed_while_catching_up_by_snapshot_still_catches_up`: openraft purges
    /// a follower's log as it hands a received snapshot to the state machine, and a kill -9
    /// before the snapshot was installed left a log purged past the snapshot on disk.
    #[tokio::test]
    async fn a_purge_past_the_snapshot_on_disk_is_not_made_durable() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let wal = dir.path().join("wal");
        let (snapshot, on_disk) = watch::channel(1);
        let mut store = LogStore::open(1, &wal, &db, on_disk).unwrap();
        append(&mut store, (1..=6).map(|i| entry(1, i)).collect()).await;
        store.purge(LogId::new(CommittedLeaderId::new(1, 1), 4)).await.unwrap();
        assert_eq!(indexes(&mut store), [5, 6], "purged from memory at once");
        // Killed before any snapshot covered index 4.
        drop(snapshot);
        drop(store);
        let mut reopened = LogStore::open(1, &wal, &db, any_snapshot()).unwrap();
        assert_eq!(indexes(&mut reopened), [1, 2, 3, 4, 5, 6]);
        assert_eq!(reopened.get_log_state().await.unwrap().last_purged_log_id, None);
    }
}
