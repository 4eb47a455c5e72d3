//! The member's space: the database's size for etcd's quota, and the free space on the data
//! dir's file system. Both are sampled (a stat per request is too dear) and topped up with what
//! the store committed since. Committed writes reach sled's files only when the store flushes
//! them (and sled writes its buffers), which may be seconds later when no write follows: a sample
//! flushes first, so the size it reads holds everything it stops counting as committed since.
//!
//! A disk that fills up stops a member: its log and store can no longer take writes. So before it
//! fills, while less than [`DISK_RESERVE_BYTES`] is left, the member raises etcd's NOSPACE alarm
//! (every member then refuses writes that add data, as when the quota is exceeded) and the
//! service refuses such writes itself. Nothing acknowledged is lost and raft keeps running;
//! once there is space again, an operator disarms the alarm (`etcdctl alarm disarm`), as after a
//! quota alarm.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use super::Node;
use crate::mvcc::Store;

/// Free space below which the member raises NOSPACE: room for a new log segment (preallocated)
/// and for what is in flight until the alarm is applied everywhere.
pub const DISK_RESERVE_BYTES: u64 = crate::raft::WAL_SEGMENT_BYTES + (32 << 20);
/// How often the space is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Default)]
struct Sample {
    /// sled's bytes on disk.
    on_disk: u64,
    /// Bytes free for this process on the data dir's file system.
    free: u64,
    /// The store's committed bytes when the sample was taken.
    committed: u64,
}

/// The last sample of the member's space.
pub(crate) struct Space {
    dir: PathBuf,
    sampled: Mutex<Sample>,
}

impl Space {
    /// The space of the member whose data dir is `dir`, sampled once.
    pub(crate) fn new(dir: &Path, db: &sled::Db, store: &Store) -> Space {
        let space = Space { dir: dir.to_path_buf(), sampled: Mutex::default() };
        space.sample(db, store);
        space
    }

    fn sample(&self, db: &sled::Db, store: &Store) {
        let committed = store.committed_bytes();
        let previous = *self.sampled.lock().unwrap_or_else(|e| e.into_inner());
        if committed != previous.committed
            && let Err(e) = store.flush()
        {
            // Sampled anyway: the top-up then starts from a size that may miss some writes.
            tracing::warn!(error = %e, "flushing the store to sample its size");
        }
        let on_disk = db.size_on_disk().unwrap_or(0);
        let free = free_bytes(&self.dir).unwrap_or_else(|e| {
            tracing::warn!(error = %e, dir = %self.dir.display(), "reading the free space on the data dir");
            u64::MAX
        });
        *self.sampled.lock().unwrap_or_else(|e| e.into_inner()) = Sample { on_disk, free, committed };
    }

    fn last(&self, store: &Store) -> (Sample, u64) {
        let sample = *self.sampled.lock().unwrap_or_else(|e| e.into_inner());
        (sample, store.committed_bytes().saturating_sub(sample.committed))
    }

    /// The database's size for the quota.
    pub(crate) fn db_size(&self, store: &Store) -> u64 {
        let (sample, since) = self.last(store);
        sample.on_disk + since
    }

    /// Whether less than [`DISK_RESERVE_BYTES`] is left on the data dir's file system.
    pub(crate) fn disk_short(&self, store: &Store) -> bool {
        let (sample, since) = self.last(store);
        sample.free.saturating_sub(since) < DISK_RESERVE_BYTES
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `path`.
fn free_bytes(path: &Path) -> io::Result<u64> {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Sample the space of `node` every [`SAMPLE_EVERY`] until it is gone, raising NOSPACE when the
/// disk runs short (once each time it does).
pub(crate) async fn watch(node: Weak<Node>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + SAMPLE_EVERY, SAMPLE_EVERY);
    let mut short = false;
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let sampled = node.clone();
        // The flush writes files: off the async workers.
        if tokio::task::spawn_blocking(move || sampled.space.sample(&sampled.db, &sampled.store)).await.is_err() {
            return;
        }
        let now_short = node.space.disk_short(&node.store);
        if now_short && !short {
            tracing::warn!(dir = %node.space.dir.display(), reserve = DISK_RESERVE_BYTES, "the data dir's disk is nearly full: raising NOSPACE");
        }
        short = now_short;
        if short && !node.alarms.no_space() {
            node.raise_no_space().await;
        }
    }
}
