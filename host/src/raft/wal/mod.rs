//! The raft log: segment files of checksummed records, each group of appends made durable with
//! one fdatasync, as etcd's WAL does; the entries not yet purged are also kept in memory, where
//! raft reads them (as etcd keeps its raft log in memory too).
//!
//! Entries, the vote, the committed id, purges and truncations are all records, replayed in order
//! at start. Purged segments are deleted whole once a purge is durable; every segment begins with
//! the latest vote, committed and purged records, so those outlive the segments they were first
//! written to.

mod durable;
mod record;
mod segment;

pub use segment::SEGMENT_BYTES;
mod writer;

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use openraft::{Entry, LogId, Vote};

pub use record::{COMMITTED, ENTRY, PURGED, TRUNCATED, VOTE};
pub use durable::Durable;
pub use writer::{Done, Pending, Write};

use super::{decode, encode, requests_in, NodeId, TypeConfig};
use writer::Writer;

/// The log as replayed: what raft reads.
#[derive(Default)]
pub struct Log {
    /// The index of `entries[0]` (or of the next entry, when empty).
    first: u64,
    entries: VecDeque<Entry<TypeConfig>>,
    pub vote: Option<Vote<NodeId>>,
    pub committed: Option<LogId<NodeId>>,
    pub purged: Option<LogId<NodeId>>,
}

impl Log {
    pub fn append(&mut self, entry: Entry<TypeConfig>) -> Result<(), String> {
        let index = entry.log_id.index;
        let next = self.first + self.entries.len() as u64;
        if index < next {
            self.truncate(index);
        }
        if self.entries.is_empty() {
            self.first = index;
        } else if index != next {
            return Err(format!("raft log entry {index} does not follow entry {}", next - 1));
        }
        self.entries.push_back(entry);
        Ok(())
    }

    /// Removes the entries from `index` on.
    pub fn truncate(&mut self, index: u64) {
        let keep = index.saturating_sub(self.first) as usize;
        self.entries.truncate(keep);
    }

    /// Forgets the entries up to `upto`.
    pub fn purge(&mut self, upto: LogId<NodeId>) {
        while self.entries.front().is_some_and(|e| e.log_id.index <= upto.index) {
            self.entries.pop_front();
            self.first += 1;
        }
        if self.entries.is_empty() {
            self.first = self.first.max(upto.index + 1);
        }
        self.purged = Some(upto);
    }

    pub fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries.back().map(|e| e.log_id).or(self.purged)
    }

    pub fn range(&self, range: impl RangeBounds<u64>) -> Vec<Entry<TypeConfig>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        let from = start.saturating_sub(self.first).min(self.entries.len() as u64) as usize;
        let to = end.saturating_sub(self.first).min(self.entries.len() as u64) as usize;
        self.entries.range(from..to.max(from)).cloned().collect()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry<TypeConfig>> {
        self.entries.iter()
    }

    /// The last index to purge so that the entries kept up to `through` hold at least `keep`
    /// client requests (an entry carries a batch of them); `None` while they hold fewer.
    pub fn purge_keeping(&self, through: u64, keep: u64) -> Option<u64> {
        let mut kept = 0;
        for entry in self.entries.iter().rev().skip_while(|e| e.log_id.index > through) {
            if kept >= keep {
                return Some(entry.log_id.index);
            }
            kept += requests_in(entry);
        }
        None
    }

    fn replay(&mut self, kind: u8, payload: &[u8]) -> Result<Option<u64>, String> {
        let bad = |e: postcard::Error| format!("undecodable raft log record of kind {kind}: {e}");
        match kind {
            ENTRY => {
                let entry: Entry<TypeConfig> = decode(payload).map_err(bad)?;
                let index = entry.log_id.index;
                self.append(entry)?;
                return Ok(Some(index));
            }
            VOTE => self.vote = Some(decode(payload).map_err(bad)?),
            COMMITTED => self.committed = decode(payload).map_err(bad)?,
            PURGED => self.purge(decode(payload).map_err(bad)?),
            TRUNCATED => self.truncate(u64::from_le_bytes(payload.try_into().map_err(|_| "bad truncation record".to_string())?)),
            other => return Err(format!("unknown raft log record kind {other}")),
        }
        Ok(None)
    }
}

/// Frames `value` as a record of `kind`.
pub fn pending<T: serde::Serialize>(kind: u8, value: &T, index: Option<u64>) -> io::Result<Pending> {
    let payload = encode(value).map_err(io::Error::other)?;
    Ok(Pending { kind, bytes: record::frame(kind, &payload), index })
}

/// The record removing entries from `index` on.
pub fn truncation(index: u64) -> Pending {
    Pending { kind: TRUNCATED, bytes: record::frame(TRUNCATED, &index.to_le_bytes()), index: Some(index) }
}

struct Replayed {
    log: Log,
    segments: Vec<segment::Segment>,
    /// Where the valid records of the newest segment end, and whether garbage follows.
    end: u64,
    torn: bool,
}

fn replay(dir: &Path, segment_bytes: u64) -> io::Result<Replayed> {
    let mut segments = segment::list(dir)?;
    let mut log = Log::default();
    let (mut end, mut torn) = (0, false);
    let count = segments.len();
    for (n, segment) in segments.iter_mut().enumerate() {
        let bytes = std::fs::read(&segment.path)?;
        let scan = record::scan(&segment.path, &bytes, n + 1 == count, segment_bytes as usize).map_err(io::Error::other)?;
        for record in &scan.records {
            let index = log.replay(record.kind, record.payload).map_err(|e| io::Error::other(format!("{}: {e}", segment.path.display())))?;
            segment.last_index = index.or(segment.last_index);
        }
        end = scan.end as u64;
        torn = bytes[scan.end..].iter().any(|&b| b != 0);
    }
    Ok(Replayed { log, segments, end, torn })
}

/// Reads the log in `dir` without writing to it (for `conclavectl dump-log`).
pub fn read(dir: &Path) -> io::Result<Log> {
    Ok(replay(dir, segment::SEGMENT_BYTES)?.log)
}

/// Opens (or creates) the log in `dir`: what it holds, and the writer for what comes next. A
/// write torn by a crash at the end is cut off; any other damage is an error naming the file.
pub fn open(dir: &Path) -> io::Result<(Log, WriterHandle)> {
    open_with(dir, segment::SEGMENT_BYTES)
}

fn open_with(dir: &Path, segment_bytes: u64) -> io::Result<(Log, WriterHandle)> {
    std::fs::create_dir_all(dir)?;
    let Replayed { log, mut segments, end, torn } = replay(dir, segment_bytes)?;
    let next_index = log.last_log_id().map_or(0, |id| id.index + 1);
    let (file, offset) = match segments.last() {
        Some(newest) => {
            let file = OpenOptions::new().read(true).write(true).open(&newest.path)?;
            if torn {
                tracing::warn!(segment = %newest.path.display(), offset = end, "cutting off a torn write at the end of the raft log");
                segment::cut(&file, end, segment_bytes)?;
            }
            (file, end)
        }
        None => {
            let (segment, file) = segment::create(dir, 0, next_index, segment_bytes)?;
            segments.push(segment);
            (file, 0)
        }
    };
    let state = [
        log.vote.as_ref().map(|v| pending(VOTE, v, None)).transpose()?.map(|p| p.bytes),
        Some(pending(COMMITTED, &log.committed, None)?.bytes),
        log.purged.as_ref().map(|p| pending(PURGED, p, None)).transpose()?.map(|p| p.bytes),
    ];
    Ok((log, WriterHandle(Writer::new(dir.to_path_buf(), segment_bytes, segments, file, offset, next_index, state))))
}

/// The log's writer before its thread starts.
pub struct WriterHandle(Writer);

impl WriterHandle {
    /// Writes `records` durably at once (importing a log kept elsewhere).
    pub fn write_now(&mut self, records: &[Pending]) -> io::Result<()> {
        self.0.write_now(records)
    }

    /// How far the log is durable, as the writer goes on.
    pub fn durable(&self) -> Durable {
        self.0.durable()
    }

    /// Starts the writer thread: writes sent to the channel are made durable in order.
    pub fn spawn(self) -> io::Result<std::sync::mpsc::Sender<Write>> {
        self.0.spawn()
    }
}

#[cfg(test)]
mod tests {
    use conclave_proto::conclave::raft::{RaftBatch, RaftRequest};
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    fn write(writes: &std::sync::mpsc::Sender<Write>, records: Vec<Pending>, purge_upto: Option<u64>) {
        let (done, durable) = tokio::sync::oneshot::channel();
        writes.send(Write { records, done: Done::Notify(done), purge_upto }).unwrap();
        durable.blocking_recv().unwrap().unwrap();
    }

    fn segments(dir: &Path) -> usize {
        segment::list(dir).unwrap().len()
    }

    #[test]
    fn full_segments_rotate_and_purged_ones_go_without_losing_the_vote() {
        let dir = tempfile::tempdir().unwrap();
        let (_, writer) = open_with(dir.path(), 256).unwrap();
        let writes = writer.spawn().unwrap();
        write(&writes, vec![pending(VOTE, &Vote::<NodeId>::new(4, 2), None).unwrap()], None);
        for index in 1..=40 {
            write(&writes, vec![pending(ENTRY, &entry(index), Some(index)).unwrap()], None);
        }
        let before = segments(dir.path());
        assert!(before >= 3, "{before} segments");
        let upto = LogId::new(CommittedLeaderId::new(1, 1), 30);
        write(&writes, vec![pending(PURGED, &upto, None).unwrap()], Some(30));
        assert!(segments(dir.path()) < before);
        drop(writes);

        let (log, _) = open_with(dir.path(), 256).unwrap();
        assert_eq!(log.entries().map(|e| e.log_id.index).collect::<Vec<_>>(), (31..=40).collect::<Vec<_>>());
        assert_eq!(log.vote, Some(Vote::new(4, 2)));
        assert_eq!(log.purged, Some(upto));
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_writing_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, writer) = open_with(dir.path(), 4096).unwrap();
        let writes = writer.spawn().unwrap();
        write(&writes, vec![pending(ENTRY, &entry(1), Some(1)).unwrap()], None);
        drop(writes);
        let path = segment::list(dir.path()).unwrap().remove(0).path;
        let mut bytes = std::fs::read(&path).unwrap();
        let end = pending(ENTRY, &entry(1), Some(1)).unwrap().bytes.len();
        bytes[end..end + 6].copy_from_slice(&[40, 0, 0, 0, 1, 2]);
        std::fs::write(&path, bytes).unwrap();

        let (log, writer) = open_with(dir.path(), 4096).unwrap();
        assert_eq!(log.entries().count(), 1);
        let writes = writer.spawn().unwrap();
        write(&writes, vec![pending(ENTRY, &entry(2), Some(2)).unwrap()], None);
        drop(writes);
        let (log, _) = open_with(dir.path(), 4096).unwrap();
        assert_eq!(log.entries().map(|e| e.log_id.index).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn the_purge_keeps_the_entries_that_hold_the_last_requests_wanted() {
        let mut log = Log::default();
        // Entries 1-10: entry i carries i requests (entry 1 is a blank one, counted as one).
        log.append(entry(1)).unwrap();
        for index in 2..=10 {
            let batch = RaftBatch { requests: vec![RaftRequest::default(); index as usize], proposal: 0 };
            let payload = EntryPayload::Normal(super::super::Proto(batch));
            log.append(Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload }).unwrap();
        }
        // Through 9: 9 + 8 = 17 requests in 8-9, so 7 and before may go.
        assert_eq!(log.purge_keeping(9, 17), Some(7));
        assert_eq!(log.purge_keeping(9, 18), Some(6));
        // Entries after `through` are kept anyway and not counted.
        assert_eq!(log.purge_keeping(9, 1), Some(8));
        assert_eq!(log.purge_keeping(9, 0), Some(9));
        // Everything through 9 holds 45 requests: nothing may go to keep more.
        assert_eq!(log.purge_keeping(9, 45), None);
        assert_eq!(log.purge_keeping(9, 100), None);
    }
}
