//! The one thread that writes the log: it takes every write queued since its last fdatasync,
//! writes them with one system call, syncs once (group commit) and then completes them in order.
//! A group that nobody waits on (the committed index alone) is written but not synced: it becomes
//! durable with the next group, as etcd's HardState rides on the next entries' sync.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use openraft::storage::LogFlushed;

use super::durable::{Durable, Syncs};
use super::record::{COMMITTED, ENTRY, PURGED, TRUNCATED, VOTE};
use super::segment::{self, Segment};
use crate::planted::{planted, power_loss_model, Bug, ACK_BEFORE_FSYNC_SYNC_EVERY};
use crate::raft::TypeConfig;

/// A framed record queued for writing.
pub struct Pending {
    pub kind: u8,
    pub bytes: Vec<u8>,
    /// The entry's index, for an entry; the first index removed, for a truncation.
    pub index: Option<u64>,
}

/// Who waits for a write to be durable.
pub enum Done {
    Raft(LogFlushed<TypeConfig>),
    Notify(tokio::sync::oneshot::Sender<io::Result<()>>),
    /// Nobody: it is durable with the next sync (the committed index, which raft can recompute).
    Nobody,
    /// Nobody, but it is synced now: raft was told at once (a leader's own entries, see
    /// `LogStore::append`), and [`Durable`] tells when it is done.
    Told,
}

/// Records to write, and once they are durable, segments to delete whose entries are all at or
/// below `purge_upto`.
pub struct Write {
    pub records: Vec<Pending>,
    pub done: Done,
    pub purge_upto: Option<u64>,
}

/// Whether anyone waits for `batch` to be durable, or it deletes segments (which must not go
/// before the purge record that makes them unneeded is durable).
fn needs_sync(batch: &[Write]) -> bool {
    batch.iter().any(|w| !matches!(w.done, Done::Nobody) || w.purge_upto.is_some())
}

/// Syncs slower than this are logged (etcd warns about slow fdatasync the same way).
const SLOW_SYNC: Duration = Duration::from_millis(100);

pub struct Writer {
    dir: PathBuf,
    /// Bytes per segment.
    segment_bytes: u64,
    /// Oldest first; the last is being written.
    segments: Vec<Segment>,
    file: File,
    /// Where the next write goes in `file`.
    offset: u64,
    buffer: Vec<u8>,
    next_index: u64,
    /// The latest vote, committed and purged records: each new segment starts with them, so
    /// deleting old segments never loses them.
    state: [Option<Vec<u8>>; 3],
    /// Set by a failed write or sync: what reached the disk is then unknown, so nothing more is
    /// written until the member restarts and reads the log back.
    failed: Option<String>,
    syncs: Syncs,
    /// When the log last synced (only [`Bug::AckBeforeFsync`] looks).
    last_sync: Instant,
}

impl Writer {
    pub fn new(dir: PathBuf, segment_bytes: u64, segments: Vec<Segment>, file: File, offset: u64, next_index: u64, state: [Option<Vec<u8>>; 3]) -> Self {
        let syncs = Syncs::new(next_index.saturating_sub(1));
        Writer { dir, segment_bytes, segments, file, offset, buffer: Vec::new(), next_index, state, failed: None, syncs, last_sync: Instant::now() }
    }

    pub fn durable(&self) -> Durable {
        self.syncs.durable()
    }

    /// Starts the writer thread; writes sent to the returned channel are done in order.
    pub fn spawn(self) -> io::Result<mpsc::Sender<Write>> {
        let (writes, queued) = mpsc::channel();
        std::thread::Builder::new().name("raft log writer".into()).spawn(move || self.run(queued))?;
        Ok(writes)
    }

    fn run(mut self, queued: mpsc::Receiver<Write>) {
        while let Ok(first) = queued.recv() {
            let batch: Vec<Write> = std::iter::once(first).chain(queued.try_iter()).collect();
            let acked_unsynced = planted(Bug::AckBeforeFsync);
            if acked_unsynced && self.last_sync.elapsed() >= ACK_BEFORE_FSYNC_SYNC_EVERY {
                // Only the groups acknowledged before this one (a failure is kept for the next
                // write to report): the newest is always unsynced.
                let _ = self.write_batch(&[], true);
            }
            let durable = needs_sync(&batch) && !acked_unsynced;
            let started = Instant::now();
            let result = self.write_batch(&batch, durable);
            if durable {
                crate::metrics::get().wal_fsync.observe(started.elapsed().as_secs_f64());
            }
            match &result {
                Ok(()) if durable || acked_unsynced => self.syncs.synced(self.next_index.saturating_sub(1)),
                Ok(()) => {}
                // Even an unsynced write: the log is broken from here on, so whoever waits is told.
                Err(_) => self.syncs.failed(),
            }
            if started.elapsed() > SLOW_SYNC {
                tracing::warn!(took = ?started.elapsed(), writes = batch.len(), "raft log sync took too long");
            }
            // Before the purge is acknowledged, so whoever waited for it finds the segments gone.
            let purge_upto = batch.iter().filter_map(|write| write.purge_upto).max();
            if let (Ok(()), Some(upto)) = (&result, purge_upto) {
                self.delete_purged(upto);
            }
            for write in batch {
                let outcome = result.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string()));
                match write.done {
                    Done::Raft(callback) => callback.log_io_completed(outcome),
                    Done::Notify(waiter) => {
                        let _ = waiter.send(outcome);
                    }
                    Done::Nobody | Done::Told => {}
                }
            }
        }
    }

    /// Writes `batch`, and syncs it if `durable`; the first failure stops all later writes.
    fn write_batch(&mut self, batch: &[Write], durable: bool) -> io::Result<()> {
        if let Some(failed) = &self.failed {
            return Err(io::Error::other(format!("raft log unavailable after an earlier failure: {failed}")));
        }
        let records = batch.iter().flat_map(|w| &w.records).try_for_each(|record| self.add(record));
        let result = records.and_then(|()| if durable { self.sync() } else { self.write_out() });
        if let Err(e) = &result {
            tracing::error!("writing the raft log: {e}");
            self.failed = Some(e.to_string());
        }
        result
    }

    /// Writes `records` and returns once they are durable, before the thread starts (to import
    /// a log kept elsewhere).
    pub fn write_now(&mut self, records: &[Pending]) -> io::Result<()> {
        records.iter().try_for_each(|record| self.add(record))?;
        self.sync()
    }

    fn add(&mut self, record: &Pending) -> io::Result<()> {
        let used = self.offset + self.buffer.len() as u64;
        if used > 0 && used + record.bytes.len() as u64 > self.segment_bytes {
            self.rotate()?;
        }
        self.buffer.extend_from_slice(&record.bytes);
        match (record.kind, record.index) {
            (ENTRY, Some(index)) => {
                self.next_index = index + 1;
                self.segments.last_mut().expect("a segment is open").last_index = Some(index);
            }
            (TRUNCATED, Some(index)) => self.next_index = self.next_index.min(index),
            _ => {}
        }
        if let Some(slot) = [VOTE, COMMITTED, PURGED].iter().position(|&k| k == record.kind) {
            self.state[slot] = Some(record.bytes.clone());
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        let seq = self.segments.last().map_or(0, |s| s.seq + 1);
        let (segment, file) = segment::create(&self.dir, seq, self.next_index, self.segment_bytes)?;
        self.segments.push(segment);
        self.file = file;
        self.offset = 0;
        for record in self.state.iter().flatten() {
            self.buffer.extend_from_slice(record);
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.hand_to_file()?;
        self.file.sync_data()?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Hands the buffered records to the file: they survive the process, not yet a power loss
    /// (so under the power-loss model they stay here until they are synced).
    fn write_out(&mut self) -> io::Result<()> {
        if power_loss_model() {
            return Ok(());
        }
        self.hand_to_file()
    }

    fn hand_to_file(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.file.write_all_at(&self.buffer, self.offset)?;
            self.offset += self.buffer.len() as u64;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Deletes the segments before the current one whose entries are all purged.
    fn delete_purged(&mut self, upto: u64) {
        let current = self.segments.len() - 1;
        let purged = self.segments[..current].iter().take_while(|s| s.last_index.is_none_or(|last| last <= upto)).count();
        for segment in self.segments.drain(..purged) {
            if let Err(e) = std::fs::remove_file(&segment.path) {
                tracing::warn!("deleting purged raft log segment {}: {e}", segment.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId};

    use super::*;
    use crate::raft::wal::{open_with, pending};
    use crate::raft::NodeId;

    fn committed(index: u64) -> Write {
        let id: Option<LogId<NodeId>> = Some(LogId::new(CommittedLeaderId::new(1, 1), index));
        Write { records: vec![pending(COMMITTED, &id, None).unwrap()], done: Done::Nobody, purge_upto: None }
    }

    #[test]
    fn only_the_committed_index_goes_unsynced_yet_outlives_the_process() {
        let (waiter, _) = tokio::sync::oneshot::channel();
        let waited = Write { records: Vec::new(), done: Done::Notify(waiter), purge_upto: None };
        let purging = Write { purge_upto: Some(3), ..committed(3) };
        assert!(needs_sync(&[committed(1), waited]));
        assert!(needs_sync(&[purging]));
        let batch = [committed(1), committed(2)];
        assert!(!needs_sync(&batch));

        let dir = tempfile::tempdir().unwrap();
        let (_, handle) = open_with(dir.path(), 4096).unwrap();
        let mut writer = handle.0;
        writer.write_batch(&batch, false).unwrap();
        drop(writer);
        let (log, _) = open_with(dir.path(), 4096).unwrap();
        assert_eq!(log.committed.map(|id| id.index), Some(2));
    }
}
