//! When a snapshot is due: after `--snapshot-count` applied requests, as etcd counts them; and
//! how much log is kept behind one: the entries holding the last 5,000 requests, as etcd keeps
//! 5,000 entries for followers that lag a little.
//!
//! openraft counts log entries, in its snapshot policy and in the log it keeps behind a snapshot,
//! but an entry here carries a batch of client requests (the proposer groups concurrent ones),
//! and the log is kept in memory until purged. Counted in entries, 1 M puts from 64 clients made
//! 54 k entries, no snapshot, and 330 MB of log held in memory; and with snapshots counted in
//! requests, the 5,000 entries kept behind one held 545 k puts from 1,000 clients, 250 MB more on
//! every member than etcd, one request per entry, keeps. The state machine counts the requests it
//! applies here, and tasks ask raft for a snapshot once enough have been applied since the last
//! one began, and for a purge once one is on disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::{LogStore, Raft};

/// Requests kept in the log behind a snapshot (etcd's 5,000 entries), at most a snapshot interval.
const CATCH_UP_REQUESTS: u64 = 5_000;
/// How long a built snapshot may take to reach raft's state before its purge is left to the next.
const SNAPSHOT_RECORDED: Duration = Duration::from_secs(10);

pub struct SnapshotDue {
    /// Requests applied since the last snapshot began to be built.
    applied: AtomicU64,
    snapshot_count: u64,
    due: Notify,
}

impl SnapshotDue {
    pub fn new(snapshot_count: u64) -> Arc<Self> {
        Arc::new(SnapshotDue { applied: AtomicU64::new(0), snapshot_count, due: Notify::new() })
    }

    /// `requests` more were applied.
    pub fn applied(&self, requests: u64) {
        if self.applied.fetch_add(requests, Ordering::Relaxed) + requests >= self.snapshot_count {
            self.due.notify_one();
        }
    }

    /// A snapshot is being built: it holds everything applied so far.
    pub fn building(&self) {
        self.applied.store(0, Ordering::Relaxed);
    }

    pub(super) fn is_due(&self) -> bool {
        self.applied.load(Ordering::Relaxed) >= self.snapshot_count
    }
}

/// Ask `raft` for a snapshot each time one is due, until raft shuts down. A request while one is
/// being built is ignored by raft; one left over from before that build began finds none due.
pub async fn ask_for_snapshots(raft: Raft, due: Arc<SnapshotDue>) {
    loop {
        due.due.notified().await;
        if due.is_due() && raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

/// Each time `on_disk` tells of a new snapshot on disk (its last index), have `raft` purge the
/// log `log` holds behind it but the entries with the last [`CATCH_UP_REQUESTS`], at most
/// `snapshot_count` (openraft's own purge, which counts entries, is off), until the state machine
/// or raft stops. A snapshot installed from the leader has raft purge up to it already.
pub async fn purge_behind_snapshots(raft: Raft, log: LogStore, mut on_disk: watch::Receiver<u64>, snapshot_count: u64) {
    let keep = CATCH_UP_REQUESTS.min(snapshot_count);
    while on_disk.changed().await.is_ok() {
        let index = *on_disk.borrow_and_update();
        // raft refuses to purge past the snapshot it knows of: wait until it has this one.
        let recorded = raft
            .wait(Some(SNAPSHOT_RECORDED))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= index), "snapshot recorded")
            .await;
        if recorded.is_err() {
            continue;
        }
        let Some(upto) = log.purge_keeping(index, keep) else { continue };
        if raft.trigger().purge_log(upto).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_after_snapshot_count_requests_since_the_last_began() {
        let due = SnapshotDue::new(10);
        due.applied(6);
        assert!(!due.is_due());
        due.applied(4);
        assert!(due.is_due());
        due.building();
        assert!(!due.is_due());
        due.applied(1);
        assert!(!due.is_due());
    }
}
