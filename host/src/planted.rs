//! Bugs planted on purpose, for the reliability suite to show that its checks find them. A
//! debug build reads `CONCLAVE_PLANTED_BUG` once; a release build has no switch at all, so no
//! binary anyone deploys can carry one.

/// A bug that can be planted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// `stale-reads`: linearizable reads are served from the local store at once, without
    /// asking the leader: a follower that is behind answers with old values.
    StaleReads,
    /// `drop-watch-event`: the first committed batch from revision 50 on reaches no watcher.
    DropWatchEvent,
}

impl Bug {
    #[cfg(debug_assertions)]
    fn name(self) -> &'static str {
        match self {
            Bug::StaleReads => "stale-reads",
            Bug::DropWatchEvent => "drop-watch-event",
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

/// With [`Bug::DropWatchEvent`] planted: whether the batch of events up to `revision` is the one
/// to lose (once per process).
pub fn drops_watch_batch(revision: i64) -> bool {
    static DROPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    planted(Bug::DropWatchEvent) && revision >= 50 && !DROPPED.swap(true, std::sync::atomic::Ordering::Relaxed)
}
