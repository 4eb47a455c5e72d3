//! Persistence of the MVCC store in a sled tree, and the read and write views over it.
//!
//! Layout of the tree: `k` + revision → a record (one flag byte: 0 put, 1 tombstone, then the
//! protobuf `mvccpb.KeyValue`); `l` + lease id → a lease record (see [`crate::lease`]); `p` +
//! plugin name → a deployed plugin (protobuf `conclave.plugin.StoredPlugin`, outside every key
//! range a client can name, but in snapshots and hashes like the rest); `m/…` →
//! store metadata (current and compacted revision) and whatever metadata the caller commits with a
//! batch (the raft applied state).
//!
//! A committed batch reaches sled later, with those committed after it, in one atomic sled batch;
//! every read looks at those waiting first (see [`super::unflushed`]).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

use conclave_proto::mvccpb::event::EventType;
use conclave_proto::mvccpb::{Event, KeyValue};
use prost::Message;

use super::export;
use super::index::KeyIndex;
use super::revision::Revision;
use super::unflushed::{self, Overlaid, Unflushed};
use crate::error::EtcdError;
use crate::lease::{self, Lease, LeaseTable};

const RECORD_PREFIX: u8 = b'k';
const PLUGIN_PREFIX: u8 = b'p';
const META_REV: &[u8] = b"m/rev";
const META_COMPACT: &[u8] = b"m/compact";

/// Why a store operation failed: an etcd error for the client, or a broken disk/database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("storage: {0}")]
    Storage(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}

impl From<StoreError> for EtcdError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Etcd(e) => e,
            StoreError::Storage(msg) => EtcdError::internal(msg),
        }
    }
}

/// What a view sees besides the values: the key index and the revision counters.
pub struct State {
    pub(super) index: KeyIndex,
    /// The store revision: the main revision of the newest write (1 for an empty store).
    pub(super) rev: i64,
    /// The newest compacted revision, -1 when never compacted.
    pub(super) compact_rev: i64,
    /// Granted leases and the live keys attached to them.
    pub(super) leases: LeaseTable,
}

/// What [`Store::hash_kv`] computed, and at which revisions.
pub struct HashKv {
    pub hash: u32,
    /// The revision hashed up to.
    pub upto: i64,
    pub current: i64,
    pub compacted: i64,
}

/// The MVCC store of one node.
pub struct Store {
    /// The tree, through the writes committed and not yet in it.
    tree: Unflushed,
    state: RwLock<State>,
    /// Held shared by exports while they copy revision records, exclusively by compaction and
    /// import: the only changes to records an export has to wait for (new records have higher
    /// revisions).
    history_pin: RwLock<()>,
}

/// Reading the store at its current state; implemented by read and write views alike.
pub trait View {
    /// The index and revision counters this view sees.
    fn state(&self) -> &State;
    fn load(&self, rev: Revision) -> Result<KeyValue, StoreError>;

    fn index(&self) -> &KeyIndex {
        &self.state().index
    }
    fn current_rev(&self) -> i64 {
        self.state().rev
    }
    fn compact_rev(&self) -> i64 {
        self.state().compact_rev
    }
    fn leases(&self) -> &LeaseTable {
        &self.state().leases
    }

    /// The live value of `key` at the current revision.
    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        self.get_at(key, self.current_rev())
    }

    /// The value of `key` live at revision `at`, if its history is still held.
    fn get_at(&self, key: &[u8], at: i64) -> Result<Option<KeyValue>, StoreError> {
        match self.index().get(key, at) {
            Some(rev) => self.load(rev).map(Some),
            None => Ok(None),
        }
    }
}

impl Store {
    /// Open the store kept in `tree`, rebuilding the key index from the records.
    pub fn open(tree: sled::Tree) -> Result<Self, StoreError> {
        let state = load_state(&tree)?;
        Ok(Store { tree: Unflushed::new(tree), state: RwLock::new(state), history_pin: RwLock::new(()) })
    }

    /// The committed entries whose keys start with `prefix` (one of the prefixes above, none of
    /// them 0xff), in key order.
    fn scan_prefix(&self, prefix: u8) -> Overlaid<sled::Iter> {
        self.tree.scan(&[prefix], Some(&[prefix + 1]))
    }

    /// Hand every committed write to sled, and have sled write it to disk: before a snapshot,
    /// so the store is not behind the log the snapshot lets raft purge.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.tree.flush()
    }

    /// Bytes of keys and values committed since the store was opened, whether sled has them yet
    /// or not.
    pub fn committed_bytes(&self) -> u64 {
        self.tree.committed_bytes()
    }

    /// A consistent read-only view; writers wait while it is held.
    pub fn read(&self) -> ReadView<'_> {
        ReadView { store: self, state: self.state.read().unwrap_or_else(|e| e.into_inner()) }
    }

    /// A view if no write batch holds the store (or waits for it), without waiting.
    pub(super) fn try_read(&self) -> Option<ReadView<'_>> {
        let state = match self.state.try_read() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(ReadView { store: self, state })
    }

    /// Start applying writes; nothing is visible to readers or durable until `commit`.
    pub fn begin(&self) -> ApplyBatch<'_> {
        ApplyBatch {
            store: self,
            state: self.state.write().unwrap_or_else(|e| e.into_inner()),
            ops: Vec::new(),
            pending: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// A metadata value committed with a batch; names start with `m/`.
    pub fn meta(&self, name: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        self.tree.get(name)
    }

    /// Remove metadata entries (used when a copy of another member's store is adopted).
    pub fn forget_meta(&self, names: &[&[u8]]) -> Result<(), StoreError> {
        let tree = self.tree.exclusive();
        tree.forget(names);
        for name in names {
            tree.tree().remove(name)?;
        }
        Ok(())
    }

    /// The deployed plugins, as stored (`conclave.plugin.StoredPlugin`), in name order.
    pub fn plugins(&self) -> Result<Vec<sled::IVec>, StoreError> {
        self.scan_prefix(PLUGIN_PREFIX).map(|entry| entry.map(|(_, value)| value)).collect()
    }

    /// One deployed plugin, as stored.
    pub fn plugin(&self, name: &str) -> Result<Option<sled::IVec>, StoreError> {
        self.tree.get(&plugin_key(name))
    }

    /// Write every entry of the tree in the [`export`] format: a consistent copy of the whole
    /// store as of one revision. Returns the `capture` metadata values as of that copy.
    pub fn export(&self, out: &mut impl Write, capture: &[&[u8]]) -> io::Result<Vec<Option<sled::IVec>>> {
        let mut exporter = export::Exporter::start(out)?;
        let (_, captured) = self.for_each_entry(capture, |key, value| exporter.entry(key, value))?;
        exporter.finish()?;
        Ok(captured)
    }

    /// etcd's Hash: a CRC-32 of every entry of the tree but the `ignore`d ones (member-local
    /// metadata), as of one revision, which it returns too.
    pub fn hash(&self, ignore: &[&[u8]]) -> io::Result<(u32, i64)> {
        let mut hasher = crc32fast::Hasher::new();
        let (revision, _) = self.for_each_entry(&[], |key, value| {
            if !ignore.contains(&key) {
                hasher.update(key);
                hasher.update(value);
            }
            Ok(())
        })?;
        Ok((hasher.finalize(), revision))
    }

    /// Visit every entry of the tree as of one revision (returned, with the `capture` metadata
    /// values as of then).
    ///
    /// Writers are held off only while the revision, the metadata and the lease records are read;
    /// revision records are immutable once written, so they are visited while writes go on (those
    /// past the revision are left out), with compaction held off instead.
    fn for_each_entry(
        &self,
        capture: &[&[u8]],
        mut visit: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
    ) -> io::Result<(i64, Vec<Option<sled::IVec>>)> {
        let (revision, _compaction_waits, others, captured) = {
            let view = self.read();
            let pin = self.history_pin.read().unwrap_or_else(|e| e.into_inner());
            let captured: Vec<_> = capture.iter().map(|name| self.tree.get(name)).collect::<Result<_, _>>().map_err(io::Error::other)?;
            // Everything but the revision records: keys sorting before or after their prefix.
            let others: Vec<_> = self
                .tree
                .scan(&[], Some(&[RECORD_PREFIX]))
                .chain(self.tree.scan(&[RECORD_PREFIX + 1], None))
                .collect::<Result<_, _>>()
                .map_err(io::Error::other)?;
            (view.current_rev(), pin, others, captured)
        };
        self.for_each_record(revision, &mut visit)?;
        for (key, value) in &others {
            visit(key, value)?;
        }
        Ok((revision, captured))
    }

    /// Visit every revision record up to revision `upto`, in revision order. The caller holds
    /// off compaction (`history_pin`); records are immutable otherwise.
    fn for_each_record(&self, upto: i64, mut visit: impl FnMut(&[u8], &[u8]) -> io::Result<()>) -> io::Result<()> {
        for entry in self.scan_prefix(RECORD_PREFIX) {
            let (key, value) = entry.map_err(io::Error::other)?;
            let rev = Revision::from_bytes(&key[1..]).ok_or_else(|| io::Error::other("corrupt record key"))?;
            if rev.main > upto {
                break;
            }
            visit(&key, &value)?;
        }
        Ok(())
    }

    /// etcd's HashKV: a CRC-32 of every revision record up to `rev` (the current revision if 0),
    /// the same on every member that applied the same log (compaction included); with the
    /// current and the compacted revision. Only compaction waits while it runs.
    pub fn hash_kv(&self, rev: i64) -> Result<HashKv, StoreError> {
        let (current, compacted, _compaction_waits) = {
            let view = self.read();
            let pin = self.history_pin.read().unwrap_or_else(|e| e.into_inner());
            (view.current_rev(), view.compact_rev(), pin)
        };
        if rev > current {
            return Err(EtcdError::FutureRev.into());
        }
        if rev > 0 && rev <= compacted {
            return Err(EtcdError::Compacted.into());
        }
        let upto = if rev == 0 { current } else { rev };
        let mut hasher = crc32fast::Hasher::new();
        self.for_each_record(upto, |key, value| {
            hasher.update(key);
            hasher.update(value);
            Ok(())
        })
        .map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok(HashKv { hash: hasher.finalize(), upto, current, compacted })
    }

    /// Replace the whole store with a copy written by `export`. No apply runs meanwhile (raft
    /// installs a snapshot between applies; a restore comes before start-up), so the copy is
    /// read and checked before the store is locked. An export in progress (a snapshot being
    /// built) finishes first: it must not copy records of the new store as of the old one's
    /// revision. Removals go in first: a later insert of the same key in a batch wins.
    pub fn import(&self, input: &mut impl Read) -> Result<(), StoreError> {
        let mut imported = Vec::new();
        export::read(input, |key, value| imported.push((key, value))).map_err(|e| corrupt(&e))?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let _no_export = self.history_pin.write().unwrap_or_else(|e| e.into_inner());
        let tree = self.tree.exclusive();
        // Everything sled holds goes, read from sled itself with no flush running: a key whose
        // removal is still waiting is hidden from a scan of the store, yet would outlive the
        // waiting writes dropped here.
        let mut batch = sled::Batch::default();
        for entry in tree.tree().iter() {
            batch.remove(entry?.0);
        }
        for (key, value) in imported {
            batch.insert(key, value);
        }
        tree.forget_all();
        tree.tree().apply_batch(batch)?;
        *state = load_state(tree.tree())?;
        Ok(())
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Storage(format!("corrupt data: {what}"))
}

fn record_key(rev: Revision) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + Revision::ENCODED_LEN);
    key.push(RECORD_PREFIX);
    key.extend_from_slice(&rev.to_bytes());
    key
}

fn encode_record(kv: &KeyValue, tombstone: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + kv.encoded_len());
    out.push(tombstone as u8);
    kv.encode(&mut out).expect("Vec grows as needed");
    out
}

fn decode_record(bytes: &[u8]) -> Result<(KeyValue, bool), StoreError> {
    let (flag, body) = bytes.split_first().ok_or_else(|| corrupt("empty record"))?;
    let kv = KeyValue::decode(body).map_err(|e| corrupt(&format!("record: {e}")))?;
    Ok((kv, *flag == 1))
}

fn read_i64(tree: &sled::Tree, name: &[u8]) -> Result<Option<i64>, StoreError> {
    match tree.get(name)? {
        None => Ok(None),
        Some(bytes) => {
            let raw: [u8; 8] = bytes.as_ref().try_into().map_err(|_| corrupt("meta value"))?;
            Ok(Some(i64::from_be_bytes(raw)))
        }
    }
}

fn load_state(tree: &sled::Tree) -> Result<State, StoreError> {
    let mut leases = LeaseTable::default();
    for entry in tree.scan_prefix([lease::RECORD_PREFIX]) {
        let (key, value) = entry?;
        let (id, ttl) = lease::decode_record(&key, &value).ok_or_else(|| corrupt("lease record"))?;
        leases.grant(id, ttl);
    }
    // Records come in revision order: each live key ends attached to the lease its newest names.
    let mut index = KeyIndex::default();
    for entry in tree.scan_prefix([RECORD_PREFIX]) {
        let (key, value) = entry?;
        let rev = Revision::from_bytes(&key[1..]).ok_or_else(|| corrupt("record key"))?;
        let (kv, tombstone) = decode_record(&value)?;
        if tombstone {
            index.tombstone(&kv.key, rev);
            leases.attach(&kv.key, 0);
        } else {
            index.put(&kv.key, rev, kv.create_revision, kv.version);
            leases.attach(&kv.key, kv.lease);
        }
    }
    Ok(State {
        index,
        rev: read_i64(tree, META_REV)?.unwrap_or(1),
        compact_rev: read_i64(tree, META_COMPACT)?.unwrap_or(-1),
        leases,
    })
}

impl Store {
    fn load_record(&self, rev: Revision) -> Result<KeyValue, StoreError> {
        let bytes = self.tree.get(&record_key(rev))?.ok_or_else(|| corrupt("indexed revision has no record"))?;
        Ok(decode_record(&bytes)?.0)
    }

    /// The events of revisions `from..=upto` (about as many as `chunk` allows, whole revisions
    /// only), from the stored history, each with the value it replaced; and the revision to read
    /// from next. Errors with `Compacted` when part of that history is gone.
    pub fn history(&self, from: i64, upto: i64, chunk: HistoryChunk) -> Result<(Vec<Event>, i64), StoreError> {
        self.history_in(&self.read(), from, upto, chunk)
    }

    /// [`Store::history`] as `view` sees it.
    pub(super) fn history_in(&self, view: &ReadView<'_>, from: i64, upto: i64, chunk: HistoryChunk) -> Result<(Vec<Event>, i64), StoreError> {
        if from < view.compact_rev() {
            return Err(EtcdError::Compacted.into());
        }
        let upto = upto.min(view.current_rev());
        let mut events = Vec::new();
        let start = record_key(Revision::new(from, 0));
        let end = record_key(Revision::new(upto + 1, 0));
        let mut next = upto + 1;
        let mut bytes = 0;
        for entry in self.tree.scan(&start, Some(&end)) {
            let (key, value) = entry?;
            let rev = Revision::from_bytes(&key[1..]).ok_or_else(|| corrupt("record key"))?;
            if (events.len() >= chunk.events || bytes >= chunk.bytes) && rev.sub == 0 {
                next = rev.main;
                break;
            }
            let (kv, tombstone) = decode_record(&value)?;
            let prev = view.get_at(&kv.key, rev.main - 1)?;
            let event = event(kv, prev, tombstone);
            bytes += event_bytes(&event);
            events.push(event);
        }
        Ok((events, next))
    }
}

/// How much history one read returns: it ends at the first revision boundary past either limit.
#[derive(Clone, Copy, Debug)]
pub struct HistoryChunk {
    pub events: usize,
    /// By [`event_bytes`].
    pub bytes: usize,
}

/// About the memory `event` holds: its struct, and its key-values' keys and values.
pub fn event_bytes(event: &Event) -> usize {
    let kv_bytes = |kv: &Option<KeyValue>| kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len());
    std::mem::size_of::<Event>() + kv_bytes(&event.kv) + kv_bytes(&event.prev_kv)
}

/// A read-only view of the store at its current revision.
pub struct ReadView<'a> {
    store: &'a Store,
    state: RwLockReadGuard<'a, State>,
}

impl View for ReadView<'_> {
    fn state(&self) -> &State {
        &self.state
    }
    fn load(&self, rev: Revision) -> Result<KeyValue, StoreError> {
        self.store.load_record(rev)
    }
}

/// Writes in progress: applied to the index at once (so later requests in the batch see them)
/// and to the store's entries all at once, together with the caller's metadata, at `commit`.
pub struct ApplyBatch<'a> {
    store: &'a Store,
    pub(super) state: RwLockWriteGuard<'a, State>,
    /// The entries written (`None`: removed), in order.
    ops: Vec<unflushed::Write>,
    pending: HashMap<Revision, KeyValue>,
    events: Vec<Event>,
}

impl View for ApplyBatch<'_> {
    fn state(&self) -> &State {
        &self.state
    }
    fn load(&self, rev: Revision) -> Result<KeyValue, StoreError> {
        match self.pending.get(&rev) {
            Some(kv) => Ok(kv.clone()),
            None => self.store.load_record(rev),
        }
    }
}

impl ApplyBatch<'_> {
    /// Record a change of one key at `rev`: a new value, or a delete (`kv` then holds only the key
    /// and revision). `prev` is the value it replaces, if read, carried by the watch event.
    pub(super) fn record(&mut self, rev: Revision, kv: KeyValue, prev: Option<KeyValue>, tombstone: bool) {
        if tombstone {
            self.state.index.tombstone(&kv.key, rev);
        } else {
            self.state.index.put(&kv.key, rev, kv.create_revision, kv.version);
        }
        self.set(record_key(rev), encode_record(&kv, tombstone));
        self.events.push(event(kv.clone(), prev, tombstone));
        self.pending.insert(rev, kv);
    }

    /// Add a lease to the table and its record to the batch; false if the id is taken.
    pub(super) fn grant_lease(&mut self, id: i64, ttl: i64) -> bool {
        if !self.state.leases.grant(id, ttl) {
            return false;
        }
        self.set(&lease::record_key(id)[..], &lease::encode_record(ttl)[..]);
        true
    }

    /// Remove a lease from the table and its record from the store.
    pub(super) fn revoke_lease(&mut self, id: i64) -> Option<Lease> {
        let lease = self.state.leases.revoke(id)?;
        self.unset(&lease::record_key(id)[..]);
        Some(lease)
    }

    /// Store a deployed plugin (replacing one of the same name) with the batch.
    pub fn put_plugin(&mut self, name: &str, stored: Vec<u8>) {
        self.set(plugin_key(name), stored);
    }

    /// Remove a deployed plugin with the batch.
    pub fn remove_plugin(&mut self, name: &str) {
        self.unset(plugin_key(name));
    }

    /// Wait for exports copying revision records to finish, before compaction deletes some. (No
    /// export can start meanwhile: it needs the read lock this batch holds until committed.)
    pub(super) fn wait_for_exports(&self) {
        drop(self.store.history_pin.write().unwrap_or_else(|e| e.into_inner()));
    }

    pub(super) fn forget(&mut self, rev: Revision) {
        self.pending.remove(&rev);
        self.unset(record_key(rev));
    }

    fn set(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    fn unset(&mut self, key: impl Into<sled::IVec>) {
        self.ops.push((key.into(), None));
    }

    /// Make the batch visible, atomically with `meta`, then hand its events (in revision order)
    /// to `publish` while readers still wait, so nobody who reads the new revision can register
    /// for events after it and miss these. The batch reaches sled with the next flush.
    pub fn commit(mut self, meta: Vec<(&[u8], Vec<u8>)>, publish: impl FnOnce(Vec<Event>)) -> Result<(), StoreError> {
        let (rev, compact_rev) = (self.state.rev, self.state.compact_rev);
        self.set(META_REV, &rev.to_be_bytes()[..]);
        self.set(META_COMPACT, &compact_rev.to_be_bytes()[..]);
        for (name, value) in meta {
            debug_assert!(name.starts_with(b"m/"));
            self.set(name, value);
        }
        self.store.tree.commit(std::mem::take(&mut self.ops))?;
        if !self.events.is_empty() {
            publish(std::mem::take(&mut self.events));
        }
        Ok(())
    }
}

fn plugin_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(PLUGIN_PREFIX);
    key.extend_from_slice(name.as_bytes());
    key
}

fn event(kv: KeyValue, prev_kv: Option<KeyValue>, tombstone: bool) -> Event {
    let kind = if tombstone { EventType::Delete } else { EventType::Put };
    Event { r#type: kind as i32, kv: Some(kv), prev_kv }
}

#[cfg(test)]
mod tests {
    use conclave_proto::etcdserverpb::{CompactionRequest, PutRequest};

    use super::*;
    use crate::mvcc::Writer;

    fn store() -> Store {
        Store::open(sled::Config::new().temporary(true).open().unwrap().open_tree("mvcc").unwrap()).unwrap()
    }

    /// Put `key` (value "v"), committing `meta` with it.
    fn put(store: &Store, key: &str, meta: Vec<(&[u8], Vec<u8>)>) {
        let mut batch = store.begin();
        let put = PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() };
        Writer::new(&mut batch).put(&put).unwrap();
        batch.commit(meta, |_| {}).unwrap();
    }

    fn records(store: &Store) -> usize {
        store.scan_prefix(RECORD_PREFIX).count()
    }

    #[test]
    fn committed_writes_are_read_alike_before_and_after_they_reach_sled() {
        let store = store();
        put(&store, "a", vec![(b"m/applied".as_slice(), b"1".to_vec())]);
        put(&store, "a", Vec::new());
        put(&store, "b", Vec::new());
        let mut batch = store.begin();
        batch.put_plugin("p", b"stored".to_vec());
        batch.commit(Vec::new(), |_| {}).unwrap();
        assert!(store.tree.exclusive().tree().is_empty(), "nothing reached sled yet");

        let read = |store: &Store| {
            let view = store.read();
            let values = (view.current_rev(), view.get(b"a").unwrap().unwrap().version, view.get(b"b").unwrap().is_some());
            drop(view);
            let (events, next) = store.history(2, 4, HistoryChunk { events: 100, bytes: usize::MAX }).unwrap();
            (values, events.len(), next, store.meta(b"m/applied").unwrap(), store.plugins().unwrap(), store.hash(&[]).unwrap())
        };
        let before = read(&store);
        assert_eq!(before.0, (4, 2, true));
        assert_eq!((before.1, before.2), (3, 5));
        assert_eq!(before.3.as_deref(), Some(&b"1"[..]));
        assert_eq!(before.4, vec![sled::IVec::from(&b"stored"[..])]);
        store.flush().unwrap();
        assert!(!store.tree.exclusive().tree().is_empty());
        assert_eq!(read(&store), before);
    }

    #[test]
    fn an_unflushed_removal_hides_what_sled_still_holds() {
        let store = store();
        for _ in 0..3 {
            put(&store, "k", Vec::new());
        }
        store.flush().unwrap();
        let mut batch = store.begin();
        Writer::new(&mut batch).compact(&CompactionRequest { revision: 4, physical: false }).unwrap();
        batch.commit(Vec::new(), |_| {}).unwrap();
        assert_eq!(store.tree.exclusive().tree().scan_prefix([RECORD_PREFIX]).count(), 3, "sled has not seen the compaction");
        assert_eq!(records(&store), 1);
        assert_eq!(store.hash_kv(0).unwrap().compacted, 4);
    }

    #[test]
    fn a_crash_before_the_flush_leaves_the_store_as_of_an_earlier_commit() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = Store::open(db.open_tree("mvcc").unwrap()).unwrap();
        put(&store, "a", vec![(b"m/applied".as_slice(), b"1".to_vec())]);
        store.flush().unwrap();
        put(&store, "b", vec![(b"m/applied".as_slice(), b"2".to_vec())]);
        // A crash: nothing runs on the way out.
        std::mem::forget(store);

        let reopened = Store::open(db.open_tree("mvcc").unwrap()).unwrap();
        assert_eq!(reopened.meta(b"m/applied").unwrap().as_deref(), Some(&b"1"[..]));
        let view = reopened.read();
        assert_eq!(view.current_rev(), 2);
        assert!(view.get(b"a").unwrap().is_some() && view.get(b"b").unwrap().is_none());
    }

    #[test]
    fn an_import_replaces_the_whole_store_with_the_export() {
        let (source, target) = (store(), store());
        put(&source, "kept", Vec::new());
        for _ in 0..3 {
            put(&target, "replaced", Vec::new());
        }
        let mut export = Vec::new();
        source.export(&mut export, &[]).unwrap();
        target.import(&mut &export[..]).unwrap();
        let view = target.read();
        assert_eq!(view.current_rev(), 2);
        assert!(view.get(b"replaced").unwrap().is_none());
        assert_eq!(view.get(b"kept").unwrap().unwrap().value, b"v".as_slice());
    }

    #[test]
    fn an_import_drops_what_sled_holds_under_a_removal_still_waiting() {
        let (source, target) = (store(), store());
        put(&source, "kept", Vec::new());
        for _ in 0..3 {
            put(&target, "replaced", Vec::new());
        }
        target.flush().unwrap();
        let mut batch = target.begin();
        // Removes the records of revisions 2 and 3; the export has one of revision 2 only.
        Writer::new(&mut batch).compact(&CompactionRequest { revision: 4, physical: false }).unwrap();
        batch.commit(Vec::new(), |_| {}).unwrap();
        let mut export = Vec::new();
        source.export(&mut export, &[]).unwrap();
        target.import(&mut &export[..]).unwrap();
        target.flush().unwrap();
        assert_eq!(target.tree.exclusive().tree().scan_prefix([RECORD_PREFIX]).count(), 1, "only the snapshot's record is left");
        assert_eq!(target.hash(&[]).unwrap(), source.hash(&[]).unwrap());
    }

    /// An export's output that stops at its second write (the first entry, past the magic)
    /// until told to go on.
    struct HeldOutput {
        wrote: Vec<u8>,
        writes: usize,
        reached: std::sync::mpsc::Sender<()>,
        resume: std::sync::mpsc::Receiver<()>,
    }

    impl Write for HeldOutput {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            if self.writes == 2 {
                self.reached.send(()).unwrap();
                self.resume.recv().unwrap();
            }
            self.wrote.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_import_waits_for_an_export_copying_the_store_it_replaces() {
        // Enough records to span many of sled's nodes: a scan reads past the one it began in.
        let (old, new) = (std::sync::Arc::new(store()), store());
        for _ in 0..2000 {
            put(&old, "old", Vec::new());
            put(&new, "new", Vec::new());
        }
        old.flush().unwrap();
        let (mut before, mut replacement) = (Vec::new(), Vec::new());
        old.export(&mut before, &[]).unwrap();
        new.export(&mut replacement, &[]).unwrap();
        let (reached, reached_rx) = std::sync::mpsc::channel();
        let (resume, resume_rx) = std::sync::mpsc::channel();
        let exporting = std::thread::spawn({
            let old = old.clone();
            move || {
                let mut out = HeldOutput { wrote: Vec::new(), writes: 0, reached, resume: resume_rx };
                old.export(&mut out, &[]).unwrap();
                out.wrote
            }
        });
        reached_rx.recv().unwrap();
        let importing = std::thread::spawn({
            let old = old.clone();
            move || old.import(&mut &replacement[..]).unwrap()
        });
        // Time for an import that does not wait to replace the store under the export.
        std::thread::sleep(std::time::Duration::from_millis(200));
        resume.send(()).unwrap();
        assert!(exporting.join().unwrap() == before, "the export is of the store as it was when it began");
        importing.join().unwrap();
        assert_eq!(old.hash(&[]).unwrap(), new.hash(&[]).unwrap());
    }

    #[test]
    fn hash_covers_the_data_and_not_the_entries_ignored() {
        let (a, b) = (store(), store());
        put(&a, "k", vec![(b"m/local".as_slice(), b"a".to_vec())]);
        put(&b, "k", vec![(b"m/local".as_slice(), b"b".to_vec())]);
        let ignore: &[&[u8]] = &[b"m/local"];
        assert_eq!(a.hash(ignore).unwrap(), b.hash(ignore).unwrap());
        assert_eq!(a.hash(ignore).unwrap().1, 2, "the revision hashed");
        assert_ne!(a.hash(&[]).unwrap(), b.hash(&[]).unwrap());
        put(&b, "k2", Vec::new());
        assert_ne!(a.hash(ignore).unwrap().0, b.hash(ignore).unwrap().0);
    }

    #[test]
    fn a_history_read_ends_at_the_revision_past_its_byte_limit() {
        let store = store();
        for key in ["a", "b", "c"] {
            let mut batch = store.begin();
            let put = PutRequest { key: key.into(), value: vec![b'v'; 1000], ..Default::default() };
            Writer::new(&mut batch).put(&put).unwrap();
            batch.commit(Vec::new(), |_| {}).unwrap();
        }
        let one = event_bytes(&store.history(2, 2, HistoryChunk { events: 10, bytes: usize::MAX }).unwrap().0[0]);
        assert!(one > 1000);
        let (events, next) = store.history(2, 4, HistoryChunk { events: 10, bytes: one + 1 }).unwrap();
        assert_eq!((events.len(), next), (2, 4), "the second event passed the limit; the third was not read");
        let (events, next) = store.history(2, 4, HistoryChunk { events: 10, bytes: 1 }).unwrap();
        assert_eq!((events.len(), next), (1, 3), "a read takes one revision at least");
    }
}
