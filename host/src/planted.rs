//! Bugs planted on purpose, for the reliability suite to show that its checks find them, and the
//! model of a power loss their runs use. A debug build reads `CONCLAVE_PLANTED_BUG` and
//! `CONCLAVE_POWER_LOSS_MODEL` once; a release build has no switch at all, so no binary anyone
//! deploys can carry one.

/// A bug that can be planted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// `stale-reads`: linearizable reads are served from the local store at once, without
    /// asking the leader: a follower that is behind answers with old values.
    StaleReads,
    /// `drop-watch-event`: the first committed batch from revision 50 on reaches no watcher.
    DropWatchEvent,
    /// `ack-before-fsync`: the raft log tells raft (and the state machine) that a group of
    /// records is durable as soon as it is written, and syncs it only before a later group, at
    /// most every [`ACK_BEFORE_FSYNC_SYNC_EVERY`]: whatever the write rate, the newest groups
    /// acknowledged before a power loss are never synced.
    AckBeforeFsync,
}

/// How often the log syncs with [`Bug::AckBeforeFsync`] planted.
pub const ACK_BEFORE_FSYNC_SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

impl Bug {
    #[cfg(debug_assertions)]
    fn name(self) -> &'static str {
        match self {
            Bug::StaleReads => "stale-reads",
            Bug::DropWatchEvent => "drop-watch-event",
            Bug::AckBeforeFsync => "ack-before-fsync",
        }
    }
}

/// Whether `bug` is planted in this process.
#[cfg(debug_assertions)]
pub fn planted(bug: Bug) -> bool {
    static PLANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let planted = PLANTED.get_or_init(|| {
        let name = std::env::var("CONCLAVE_PLANTED_BUG").ok();
        if let Some(name) = &name {
            tracing::warn!("planted bug {name} is on: this member breaks its guarantees on purpose");
        }
        name
    });
    planted.as_deref() == Some(bug.name())
}

#[cfg(not(debug_assertions))]
pub fn planted(_bug: Bug) -> bool {
    false
}

/// Whether this process models a power loss at every kill: the raft log hands records to its
/// file only when it syncs them (what was written and not synced is in this process alone, and
/// goes with it), and a restart begins with an empty store, rebuilt from the snapshot and the
/// log as after a power loss that took everything sled had not synced (sled syncs before every
/// snapshot, so it would hold at least that much).
#[cfg(debug_assertions)]
pub fn power_loss_model() -> bool {
    static MODEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MODEL.get_or_init(|| std::env::var_os("CONCLAVE_POWER_LOSS_MODEL").is_some())
}

#[cfg(not(debug_assertions))]
pub fn power_loss_model() -> bool {
    false
}

/// With [`Bug::DropWatchEvent`] planted: whether the batch of events up to `revision` is the one
/// to lose (once per process).
pub fn drops_watch_batch(revision: i64) -> bool {
    static DROPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    planted(Bug::DropWatchEvent) && revision >= 50 && !DROPPED.swap(true, std::sync::atomic::Ordering::Relaxed)
}
