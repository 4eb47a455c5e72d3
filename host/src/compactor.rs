//! Automatic compaction (`--auto-compaction-mode`, `--auto-compaction-retention`), as etcd's
//! compactor does it. Every member samples its revision; only the leader compacts, through the
//! log like a client's compaction, so every member compacts at the same revision.
//!
//! - periodic: keep a time window of history. The revision is sampled every tenth of the window
//!   (of at most 10 minutes), and once per window (of at most an hour) history is compacted up
//!   to the revision sampled a whole window ago.
//! - revision: every 5 minutes, compact up to the current revision minus the retention.

use std::collections::VecDeque;
use std::sync::Weak;
use std::time::{Duration, Instant};

use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::etcdserverpb::CompactionRequest;

use crate::config::AutoCompaction;
use crate::mvcc::View;
use crate::node::Node;

/// How often revision mode compacts (etcd's fixed interval).
const REVISION_MODE_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Periodic mode samples the revision this many times per window.
const SAMPLES_PER_WINDOW: u32 = 10;
/// The longest periodic sampling window and compaction interval.
const MAX_SAMPLE_WINDOW: Duration = Duration::from_secs(10 * 60);
const MAX_COMPACT_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// The revisions sampled over the last window, oldest first.
struct Samples {
    revisions: VecDeque<i64>,
    capacity: usize,
}

impl Samples {
    fn new(capacity: usize) -> Self {
        Samples { revisions: VecDeque::with_capacity(capacity), capacity }
    }

    /// Record `revision`; the revision sampled a whole window ago once enough were taken.
    fn push(&mut self, revision: i64) -> Option<i64> {
        if self.revisions.len() == self.capacity {
            self.revisions.pop_front();
        }
        self.revisions.push_back(revision);
        (self.revisions.len() == self.capacity).then(|| self.revisions[0])
    }
}

/// Run the compactor `mode` asks for while the node lives.
pub async fn run(node: Weak<Node>, mode: AutoCompaction) {
    match mode {
        AutoCompaction::Off => {}
        AutoCompaction::Periodic(retention) => periodic(node, retention).await,
        AutoCompaction::Revision(keep) => by_revision(node, keep).await,
    }
}

async fn periodic(node: Weak<Node>, retention: Duration) {
    let sample_every = (retention.min(MAX_SAMPLE_WINDOW) / SAMPLES_PER_WINDOW).max(Duration::from_millis(1));
    let compact_every = retention.min(MAX_COMPACT_INTERVAL);
    // Samples spanning the whole retention window, plus the one at its start.
    let capacity = (retention.as_nanos() / sample_every.as_nanos()) as usize + 1;
    let mut samples = Samples::new(capacity);
    let mut last_compaction = Instant::now();
    let mut tick = tokio::time::interval(sample_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let window_start = samples.push(node.store.current_rev_async().await);
        if last_compaction.elapsed() < compact_every {
            continue;
        }
        if let Some(revision) = window_start
            && compact(&node, revision, &format!("retention {}", humantime::format_duration(retention))).await
        {
            last_compaction = Instant::now();
        }
    }
}

async fn by_revision(node: Weak<Node>, keep: i64) {
    let mut tick = tokio::time::interval(REVISION_MODE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let revision = node.store.current_rev_async().await - keep;
        if revision > 0 {
            compact(&node, revision, &format!("retention {keep} revisions")).await;
        }
    }
}

/// Compact up to `revision` if this member leads and it is past the last compaction; whether a
/// compaction was made.
async fn compact(node: &Node, revision: i64, why: &str) -> bool {
    if node.leader_term().is_none() || revision <= node.store.read_async(|view| view.compact_rev()).await {
        return false;
    }
    tracing::info!(revision, why, "starting auto-compaction");
    match node.propose(Req::Compaction(CompactionRequest { revision, physical: false })).await {
        Ok(_) => {
            tracing::info!(revision, "finished auto-compaction");
            true
        }
        Err(status) => {
            tracing::warn!(revision, error = %status, "auto-compaction failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_name_the_revision_a_window_ago_once_full() {
        let mut samples = Samples::new(3);
        assert_eq!(samples.push(10), None);
        assert_eq!(samples.push(11), None);
        assert_eq!(samples.push(12), Some(10));
        assert_eq!(samples.push(13), Some(11));
    }
}
