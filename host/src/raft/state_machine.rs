//! The replicated state machine as openraft sees it: log entries go to [`crate::apply`] (which
//! executes their client requests), membership changes and the last applied log id are recorded,
//! and the store is snapshotted and restored.
//!
//! Each `apply` call commits its whole batch of entries, the last applied log id and the membership
//! atomically to the store, which hands several such batches to sled at once: after a crash the
//! store is as of some earlier apply, and raft applies the log from there again. Snapshots are files in `<data-dir>/snap`, streamed from and to disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conclave_proto::conclave::raft::RaftBatchResponse;
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::snapshot_due::SnapshotDue;
use super::snapshot_writer::{at_low_priority, Trickle};
use super::waiting::{reply_each, Waiting};
use super::wal::Durable;
use super::{decode, encode, read_err, requests_in, write_err, MemberNode, NodeId, Proto, Response, TypeConfig};
use crate::alarm::Alarms;
use crate::apply::{Applier, Effects};
use crate::lease::Lessor;
use crate::mvcc::Store;
use crate::watch::Hub;

/// Store metadata holding the last applied log id and membership, written with each apply.
pub const APPLIED: &[u8] = b"m/applied";
pub const MEMBERSHIP: &[u8] = b"m/membership";
const SNAPSHOT_FILE: &str = "current.snap";
/// Where a snapshot is received, and built, before it becomes the current one.
const INCOMING_FILE: &str = "incoming.snap";
const BUILDING_FILE: &str = "building.snap";
/// Applies slower than this are logged, as etcd does.
const SLOW_APPLY: Duration = Duration::from_millis(100);
const SNAPSHOT_META_FILE: &str = "current.meta";

type StoredConfig = StoredMembership<NodeId, MemberNode>;

#[derive(Clone)]
pub struct StateMachine {
    store: Arc<Store>,
    hub: Arc<Hub>,
    alarms: Arc<Alarms>,
    lessor: Arc<Lessor>,
    /// Bumped whenever applying changes the deployed plugins (see [`crate::apply::Effects`]).
    plugins: tokio::sync::watch::Sender<u64>,
    snap_dir: PathBuf,
    /// Held while the current snapshot's file and metadata are replaced or opened together: a
    /// build runs beside applies and installs, and a snapshot sent with another's metadata would
    /// make its receiver apply entries twice or skip some.
    current: Arc<std::sync::Mutex<()>>,
    /// This member's raft log: an entry is applied only once it is durable here (a leader's own
    /// entries may commit before, see `log_store.rs`).
    durable: Durable,
    /// Counts applied requests towards the next snapshot.
    snapshot_due: Arc<SnapshotDue>,
    /// The last index in the snapshot on disk (the raft log's purges wait for it, and the purge
    /// behind a new one follows it).
    on_disk: tokio::sync::watch::Sender<u64>,
    /// This member's clients waiting for their batches, answered once each is applied.
    waiting: Arc<Waiting>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotInfo {
    meta: SnapshotMeta<NodeId, MemberNode>,
}

impl StateMachine {
    /// A state machine applying to `store`, publishing to `hub`, keeping `alarms`, and starting
    /// the TTL of leases it grants in `lessor` (which only the leader's keeps), and telling the
    /// plugin registry through `plugins` when the deployed plugins change; applying each entry
    /// once `durable` says this member's log holds it, counting requests in `snapshot_due`, and
    /// telling `on_disk` the last index in the snapshot on disk; answering the clients in
    /// `waiting` as their batches are applied.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        hub: Arc<Hub>,
        alarms: Arc<Alarms>,
        lessor: Arc<Lessor>,
        plugins: tokio::sync::watch::Sender<u64>,
        snap_dir: PathBuf,
        durable: Durable,
        snapshot_due: Arc<SnapshotDue>,
        on_disk: tokio::sync::watch::Sender<u64>,
        waiting: Arc<Waiting>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&snap_dir)?;
        let snapshot = read_snapshot_meta(&snap_dir)?;
        on_disk.send_replace(snapshot.as_ref().and_then(|meta| meta.last_log_id).map_or(0, |id| id.index));
        let current = Arc::default();
        let machine = StateMachine { store, hub, alarms, lessor, plugins, snap_dir, current, durable, snapshot_due, on_disk, waiting };
        machine.catch_up_with_snapshot(snapshot)?;
        Ok(machine)
    }

    /// The log is purged only up to a snapshot, whose file is synced, while sled makes the store
    /// durable on its own schedule, not against power loss: after one, the store can be behind
    /// the purged log. It then restarts from the snapshot, as a member that fell behind would.
    /// Either way the snapshot is read whole and checked: a damaged one is refused here, naming
    /// its file, before it could be restored or sent to a member.
    fn catch_up_with_snapshot(&self, snapshot: Option<SnapshotMeta<NodeId, MemberNode>>) -> std::io::Result<()> {
        let Some(meta) = snapshot else { return Ok(()) };
        let path = self.snapshot_path(SNAPSHOT_FILE);
        let applied = self.applied().map_err(std::io::Error::other)?.0;
        let mut snapshot = std::io::BufReader::new(std::fs::File::open(&path).map_err(|e| damaged(&path, e))?);
        if meta.last_log_id <= applied {
            return check_whole(&path, &mut snapshot);
        }
        tracing::warn!(?applied, snapshot = ?meta.last_log_id, "the store is behind its snapshot (lost on power loss?): restoring the snapshot");
        // The import checks the snapshot before it applies any of it.
        self.store.import(&mut snapshot).map_err(|e| damaged(&path, e))?;
        self.alarms.reload(&self.store).map_err(std::io::Error::other)
    }

    /// The last index applied to the store.
    pub fn applied_index(&self) -> std::io::Result<u64> {
        Ok(self.applied().map_err(std::io::Error::other)?.0.map_or(0, |id| id.index))
    }

    fn applied(&self) -> Result<(Option<LogId<NodeId>>, StoredConfig), StorageError<NodeId>> {
        let applied = self.store.meta(APPLIED).map_err(read_err)?;
        let membership = self.store.meta(MEMBERSHIP).map_err(read_err)?;
        Ok((decode_meta(applied.as_deref())?, decode_meta(membership.as_deref())?))
    }

    fn snapshot_path(&self, name: &str) -> PathBuf {
        self.snap_dir.join(name)
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, ()> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current snapshot, its file opened under the same lock its metadata is read under.
    fn open_current(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let _current = self.lock_current();
        let Some(meta) = read_snapshot_meta(&self.snap_dir).map_err(read_err)? else { return Ok(None) };
        let file = std::fs::File::open(self.snapshot_path(SNAPSHOT_FILE)).map_err(read_err)?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }))
    }

    /// Make the snapshot file `name` (described by `meta`) the current one, unless the current
    /// one is as new already: a snapshot installed while this one was built stays. Returns the
    /// snapshot that is current.
    fn publish(&self, name: &str, meta: SnapshotMeta<NodeId, MemberNode>) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let path = self.snapshot_path(name);
        {
            let _current = self.lock_current();
            let newer = read_snapshot_meta(&self.snap_dir).map_err(read_err)?.filter(|current| current.last_log_id >= meta.last_log_id);
            if newer.is_some() {
                std::fs::remove_file(&path).map_err(write_err)?;
            } else {
                std::fs::rename(&path, self.snapshot_path(SNAPSHOT_FILE)).map_err(write_err)?;
                save_snapshot_info(&self.snapshot_path(SNAPSHOT_META_FILE), &meta)?;
                self.on_disk.send_replace(meta.last_log_id.map_or(0, |id| id.index));
            }
        }
        self.open_current()?.ok_or_else(|| read_err(std::io::Error::other("the current snapshot is gone")))
    }

    /// Answer this member's clients of the batches just applied (and committed: a read right after
    /// sees their writes). Raft gets an answered batch's response without its per-request
    /// responses: the proposer then finds no one left to answer.
    fn answer_waiting(&self, responses: &mut [Response], proposals: Vec<(usize, u64)>) {
        for (at, proposal) in proposals {
            if let Some(waiting) = self.waiting.take(proposal) {
                reply_each(waiting.replies, std::mem::take(&mut responses[at].0.responses));
            }
        }
    }
}

/// Decode a metadata value written with the batch; absent means never written.
fn decode_meta<T: Default + for<'de> Deserialize<'de>>(bytes: Option<&[u8]>) -> Result<T, StorageError<NodeId>> {
    match bytes {
        Some(bytes) => decode(bytes).map_err(read_err),
        None => Ok(T::default()),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, StoredConfig), StorageError<NodeId>> {
        self.applied()
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            self.durable.reached(last.log_id.index).await.map_err(write_err)?;
        }
        let started = Instant::now();
        let (_, mut membership) = self.applied()?;
        let mut applier = Applier::begin(&self.store, &self.alarms);
        let locked = started.elapsed();
        let mut responses = Vec::new();
        // Where in `responses` each batch proposed with an id is, and the id.
        let mut proposals = Vec::new();
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id);
            self.snapshot_due.applied(requests_in(&entry));
            let response = match entry.payload {
                EntryPayload::Blank => RaftBatchResponse::default(),
                EntryPayload::Normal(requests) => {
                    proposals.push((responses.len(), requests.0.proposal));
                    RaftBatchResponse {
                        index: entry.log_id.index,
                        responses: requests
                            .0
                            .requests
                            .iter()
                            .map(|request| applier.execute(request))
                            .collect::<Result<_, _>>()
                            .map_err(|e| StorageIOError::apply(entry.log_id, AnyError::error(e.to_string())))?,
                    }
                }
                EntryPayload::Membership(m) => {
                    membership = StoredConfig::new(Some(entry.log_id), m);
                    RaftBatchResponse::default()
                }
            };
            responses.push(Proto(response));
        }
        if last.is_none() {
            return Ok(responses);
        }
        let meta = vec![
            (APPLIED, encode(&last).map_err(write_err)?),
            (MEMBERSHIP, encode(&membership).map_err(write_err)?),
        ];
        let executed = started.elapsed();
        let effects = Effects { hub: &self.hub, alarms: &self.alarms, lessor: &self.lessor, plugins: &self.plugins };
        applier.commit(meta, effects).map_err(write_err)?;
        if let Some(last) = last {
            self.waiting.applied_through(last.index);
        }
        self.answer_waiting(&mut responses, proposals);
        let took = started.elapsed();
        crate::metrics::get().backend_commit.observe((took - executed).as_secs_f64());
        if took > SLOW_APPLY {
            crate::metrics::get().slow_applies.inc();
            // Like etcd's "apply request took too long": where the time went, for whoever looks.
            tracing::warn!(?took, ?locked, ?executed, entries = responses.len(), "apply took too long");
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let file = tokio::fs::File::create(self.snapshot_path(INCOMING_FILE)).await.map_err(write_err)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MemberNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        snapshot.sync_all().await.map_err(write_err)?;
        drop(snapshot);
        // Checked whole, then kept on disk before the store takes it: a crash in between restarts
        // from the snapshot (see `catch_up_with_snapshot`). Taken by the store first, a crash
        // before it was kept could leave the store applied past both the snapshot and the log,
        // from which the member cannot start.
        let path = self.snapshot_path(INCOMING_FILE);
        let incoming = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let mut file = std::fs::File::open(&path)?;
            check_whole(&path, &mut std::io::BufReader::new(&mut file))?;
            std::io::Seek::rewind(&mut file)?;
            Ok(file)
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)?;
        self.publish(INCOMING_FILE, meta.clone())?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.import(&mut std::io::BufReader::new(incoming)))
            .await
            .map_err(write_err)?
            .map_err(write_err)?;
        // Watch streams saw none of the revisions the snapshot skipped: each catches up from the
        // new store, now readable (no apply runs before this returns).
        self.hub.store_replaced();
        self.alarms.reload(&self.store).map_err(write_err)?;
        self.plugins.send_modify(|generation| *generation += 1);
        tracing::info!(snapshot = %meta.snapshot_id, last_log_id = ?meta.last_log_id, "applied incoming snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.open_current()
    }
}

/// etcd's Hash of the whole store, the same on members that applied the same log: the applied log
/// id is left out, as etcd leaves out its consistent index, so entries that change no data (a new
/// leader's blank entry) do not make a member that applied them differ from one yet to.
pub fn store_hash(store: &Store) -> std::io::Result<(u32, i64)> {
    store.hash(&[APPLIED])
}

/// The metadata of the snapshot kept in `snap_dir` (a member's `<data-dir>/snap`), if any.
pub fn read_snapshot_meta(snap_dir: &std::path::Path) -> std::io::Result<Option<SnapshotMeta<NodeId, MemberNode>>> {
    let bytes = match std::fs::read(snap_dir.join(SNAPSHOT_META_FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let info: SnapshotInfo = serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::other(format!("corrupt snapshot metadata {}: {e}", snap_dir.join(SNAPSHOT_META_FILE).display())))?;
    Ok(Some(info.meta))
}

/// Reads the snapshot file at `path` whole from `snapshot`, checking it without applying any of it.
fn check_whole(path: &std::path::Path, snapshot: &mut impl std::io::Read) -> std::io::Result<()> {
    crate::mvcc::export::read(snapshot, |_, _| ()).map_err(|e| damaged(path, e))
}

/// An error reading or checking the snapshot file at `path`, naming it.
fn damaged(path: &std::path::Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("corrupt snapshot {}: {e}", path.display()))
}

fn save_snapshot_info(path: &std::path::Path, meta: &SnapshotMeta<NodeId, MemberNode>) -> Result<(), StorageError<NodeId>> {
    let bytes = serde_json::to_vec(&SnapshotInfo { meta: meta.clone() }).map_err(write_err)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(write_err)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)?;
    // The renames (the snapshot file's before, then this) outlive a power cut only once their
    // directory is synced; the raft log's purges wait for this snapshot.
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(write_err)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        self.snapshot_due.building();
        let store = self.store.clone();
        let path = self.snapshot_path(BUILDING_FILE);
        let captured = at_low_priority(move || {
            // The snapshot lets raft purge the log it covers: sled must hold all of that first.
            store.flush().map_err(std::io::Error::other)?;
            let mut out = std::io::BufWriter::new(Trickle::new(std::fs::File::create(&path)?));
            let captured = store.export(&mut out, &[APPLIED, MEMBERSHIP])?;
            let file = out.into_inner().map_err(|e| e.into_error())?.into_file();
            file.sync_all()?;
            Ok(captured)
        })
        .await
        .map_err(write_err)?;
        let last_log_id: Option<LogId<NodeId>> = decode_meta(captured[0].as_deref())?;
        let last_membership: StoredConfig = decode_meta(captured[1].as_deref())?;
        let snapshot_id = match &last_log_id {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "empty".to_string(),
        };
        self.publish(BUILDING_FILE, SnapshotMeta { last_log_id, last_membership, snapshot_id })
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};

    use super::*;

    /// A state machine on a fresh (empty) store, with the snapshot kept in `snap_dir`.
    fn try_machine(snap_dir: &std::path::Path) -> std::io::Result<StateMachine> {
        let store = Arc::new(Store::open(sled::Config::new().temporary(true).open().unwrap().open_tree("mvcc").unwrap()).unwrap());
        let alarms = Arc::new(Alarms::load(&store).unwrap());
        let plugins = tokio::sync::watch::Sender::new(0);
        StateMachine::new(store, Arc::default(), alarms, Arc::default(), plugins, snap_dir.to_path_buf(), Durable::everything(), SnapshotDue::new(u64::MAX), tokio::sync::watch::Sender::new(0), Arc::default())
    }

    fn machine(snap_dir: &std::path::Path) -> StateMachine {
        try_machine(snap_dir).unwrap()
    }

    #[tokio::test]
    async fn a_store_behind_its_snapshot_is_restored_from_it_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = machine(dir.path());
        let applied = LogId::new(CommittedLeaderId::new(3, 1), 9);
        first.apply([Entry { log_id: applied, payload: EntryPayload::Blank }]).await.unwrap();
        first.build_snapshot().await.unwrap();

        let mut lost = machine(dir.path());
        assert_eq!(lost.applied_state().await.unwrap().0, Some(applied));
    }

    /// etcd's --snapshot-count counts requests: an entry batching three puts counts three.
    #[tokio::test]
    async fn a_snapshot_is_due_after_snapshot_count_requests_however_they_are_batched() {
        use conclave_proto::conclave::raft::{raft_request, RaftBatch, RaftRequest};
        use conclave_proto::etcdserverpb::PutRequest;

        let dir = tempfile::tempdir().unwrap();
        let due = SnapshotDue::new(3);
        let mut machine = StateMachine { snapshot_due: due.clone(), ..machine(dir.path()) };
        let put = |key: &str| RaftRequest { id: 1, request: Some(raft_request::Request::Put(PutRequest { key: key.into(), ..Default::default() })) };
        let batch = Proto(RaftBatch { requests: vec![put("a"), put("b"), put("c")], proposal: 0 });
        machine.apply([Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), 1), payload: EntryPayload::Normal(batch) }]).await.unwrap();
        assert!(due.is_due(), "one entry of three requests");
        machine.build_snapshot().await.unwrap();
        assert!(!due.is_due(), "the snapshot holds them");
    }

    #[tokio::test]
    async fn the_apply_answers_this_member_s_waiting_clients_once_their_writes_are_readable() {
        use conclave_proto::conclave::raft::{raft_request, raft_response, RaftBatch, RaftRequest};
        use conclave_proto::etcdserverpb::{PutRequest, RangeRequest};

        let dir = tempfile::tempdir().unwrap();
        let waiting = Arc::new(Waiting::default());
        let mut machine = StateMachine { waiting: waiting.clone(), ..machine(dir.path()) };
        let put = |key: &str| RaftRequest { id: 0, request: Some(raft_request::Request::Put(PutRequest { key: key.into(), ..Default::default() })) };
        let (replies, answers): (Vec<_>, Vec<_>) = (0..2).map(|_| tokio::sync::oneshot::channel()).unzip();
        let ours = waiting.register(crate::raft::waiting::Proposal { replies, slot: None });
        // Another member's batch: its proposal id is not waited for here.
        let theirs = ours.wrapping_add(1);
        let entry = |index, requests, proposal| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proto(RaftBatch { requests, proposal })),
        };
        let applied = machine.apply([entry(1, vec![put("a"), put("b")], ours), entry(2, vec![put("c")], theirs)]).await.unwrap();

        let revisions: Vec<i64> = answers
            .into_iter()
            .map(|mut answer| match answer.try_recv().expect("answered by the apply").expect("a response").response {
                Some(raft_response::Response::Put(put)) => put.header.expect("a header").revision,
                other => panic!("not a put's response: {other:?}"),
            })
            .collect();
        assert_eq!(revisions, [2, 3]);
        let range = RangeRequest { key: b"b".to_vec(), ..Default::default() };
        assert_eq!(crate::mvcc::range(&machine.store.read(), &range).unwrap().kvs.len(), 1, "the write is readable once answered");
        assert!(!waiting.is_waiting(ours));
        assert_eq!(waiting.applied(), 2, "the applied index a client that heard back may ask for");
        // Raft gets the answered batch without its responses, the other member's whole.
        assert_eq!((applied[0].0.index, applied[0].0.responses.len()), (1, 0));
        assert_eq!((applied[1].0.index, applied[1].0.responses.len()), (2, 1));
    }

    #[tokio::test]
    async fn a_snapshot_installed_while_one_was_built_stays_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let machine = machine(dir.path());
        let meta = |index| SnapshotMeta { last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), index)), ..Default::default() };
        std::fs::write(dir.path().join(INCOMING_FILE), b"installed").unwrap();
        machine.publish(INCOMING_FILE, meta(20)).unwrap();
        std::fs::write(dir.path().join(BUILDING_FILE), b"built from before").unwrap();

        let current = machine.publish(BUILDING_FILE, meta(10)).unwrap();
        assert_eq!(current.meta.last_log_id, meta(20).last_log_id);
        assert_eq!(std::fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap(), b"installed");
        assert!(!dir.path().join(BUILDING_FILE).exists());
    }

    #[tokio::test]
    async fn a_damaged_incoming_snapshot_is_refused_and_the_one_on_disk_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut machine = machine(dir.path());
        machine.apply([Entry { log_id: LogId::new(CommittedLeaderId::new(3, 1), 9), payload: EntryPayload::Blank }]).await.unwrap();
        let kept = machine.build_snapshot().await.unwrap().meta;
        let mut incoming = machine.begin_receiving_snapshot().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut incoming, b"not a snapshot").await.unwrap();
        let meta = SnapshotMeta { last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 20)), ..Default::default() };

        let refused = machine.install_snapshot(&meta, incoming).await.expect_err("a damaged snapshot is refused").to_string();
        assert!(refused.contains("corrupt snapshot"), "{refused}");
        assert_eq!(read_snapshot_meta(dir.path()).unwrap().unwrap().last_log_id, kept.last_log_id);
        assert_eq!(machine.applied_index().unwrap(), 9);
    }

    #[tokio::test]
    async fn a_damaged_snapshot_a_store_behind_needs_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = machine(dir.path());
        first.apply([Entry { log_id: LogId::new(CommittedLeaderId::new(3, 1), 9), payload: EntryPayload::Blank }]).await.unwrap();
        first.build_snapshot().await.unwrap();
        let file = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5a;
        std::fs::write(&file, bytes).unwrap();

        let refused = try_machine(dir.path()).err().expect("a damaged snapshot is refused").to_string();
        assert!(refused.starts_with(&format!("corrupt snapshot {}: ", file.display())), "{refused}");
    }
}
