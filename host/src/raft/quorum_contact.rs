//! When a quorum last acknowledged this member as leader, on this process's own clock.
//!
//! openraft computes `millis_since_quorum_ack` when it publishes its metrics, so the figure is as
//! much too young as the metrics are old. Normally that is a tick at most; but a process stopped
//! (SIGSTOP, a paused VM) right after a publish reads, on resuming, the figure from before the
//! stop: a leader deposed meanwhile would believe a quorum answered it moments ago. So a task
//! turns each figure into an instant as it arrives, and ages it by the local clock; a figure that
//! arrives after the task itself was held up for longer than [`STALL`] may be from before the
//! stall, and is not trusted.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::metrics::{RaftDataMetrics, RaftServerMetrics};
use tokio::sync::watch;

use super::{MemberNode, NodeId, Raft};

/// How often the task wakes even with no new metrics, to notice a stall of the process.
const TICK: Duration = Duration::from_millis(10);
/// A wake this long after the previous one means the process (or its runtime) was held up.
const STALL: Duration = Duration::from_millis(100);

/// The instant of the last quorum acknowledgement of this member's leadership, kept up to date by
/// a task that follows raft's metrics until raft stops.
#[derive(Clone)]
pub struct QuorumContact {
    acked_at: Arc<Mutex<Contact>>,
}

impl QuorumContact {
    pub fn follow(raft: &Raft) -> Self {
        let contact = Self { acked_at: Arc::default() };
        // Raft's data metrics, which change only with what they hold: its full metrics are sent
        // again after each message raft handles, several times per write.
        tokio::spawn(stamp(raft.data_metrics(), raft.server_metrics(), contact.acked_at.clone()));
        contact
    }

    /// Whether this member leads and a quorum acknowledged it less than `within` ago.
    pub fn acked_within(&self, within: Duration) -> bool {
        self.acked_at.lock().expect("quorum contact lock").acked_within(Instant::now(), within)
    }
}

/// What the task last learned.
#[derive(Default)]
struct Contact {
    /// `None` while this member does not lead, no quorum has answered yet, or the last figure
    /// arrived after a stall.
    acked_at: Option<Instant>,
}

impl Contact {
    /// A figure from raft's metrics arrived at `now`: `millis_since_ack` if this member leads.
    fn observe(&mut self, now: Instant, stalled: bool, millis_since_ack: Option<u64>) {
        self.acked_at = match millis_since_ack {
            Some(ms) if !stalled => now.checked_sub(Duration::from_millis(ms)),
            _ => None,
        };
    }

    /// The figure may be up to [`STALL`] too young (published between two wakes of the task).
    fn acked_within(&self, now: Instant, within: Duration) -> bool {
        self.acked_at.is_some_and(|at| now.saturating_duration_since(at) + STALL < within)
    }
}

async fn stamp(
    mut metrics: watch::Receiver<RaftDataMetrics<NodeId>>,
    server: watch::Receiver<RaftServerMetrics<NodeId, MemberNode>>,
    contact: Arc<Mutex<Contact>>,
) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_wake = Instant::now();
    loop {
        let new = tokio::select! {
            changed = metrics.changed() => match changed {
                Ok(()) => true,
                Err(_) => return,
            },
            _ = ticks.tick() => metrics.has_changed().unwrap_or(false),
        };
        let now = Instant::now();
        let stalled = now.duration_since(last_wake) > STALL;
        last_wake = now;
        // A figure seen before ages by the clock alone; stamping it again would make it younger.
        if new {
            let figure = metrics.borrow_and_update().millis_since_quorum_ack;
            let figure = figure.filter(|_| server.borrow().state == openraft::ServerState::Leader);
            contact.lock().expect("quorum contact lock").observe(now, stalled, figure);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITHIN: Duration = Duration::from_millis(500);

    #[test]
    fn a_figure_ages_by_the_local_clock_from_its_arrival() {
        let arrival = Instant::now();
        let mut contact = Contact::default();
        contact.observe(arrival, false, Some(50));
        assert!(contact.acked_within(arrival, WITHIN));
        assert!(contact.acked_within(arrival + Duration::from_millis(300), WITHIN));
        // 50 ms old on arrival, plus the stall margin: past 500 ms by 400 ms after arrival.
        assert!(!contact.acked_within(arrival + Duration::from_millis(400), WITHIN));
        // A process stopped for seconds finds the figure it had as old as it is.
        assert!(!contact.acked_within(arrival + Duration::from_secs(3), WITHIN));
    }

    #[test]
    fn a_figure_that_arrives_after_a_stall_is_not_trusted_until_the_next_one() {
        let arrival = Instant::now();
        let mut contact = Contact::default();
        contact.observe(arrival, true, Some(10));
        assert!(!contact.acked_within(arrival, WITHIN));
        contact.observe(arrival + TICK, false, Some(3000));
        assert!(!contact.acked_within(arrival + TICK, WITHIN));
        contact.observe(arrival + 2 * TICK, false, Some(20));
        assert!(contact.acked_within(arrival + 2 * TICK, WITHIN));
    }

    #[test]
    fn a_member_that_does_not_lead_has_no_contact() {
        let now = Instant::now();
        let mut contact = Contact::default();
        assert!(!contact.acked_within(now, WITHIN));
        contact.observe(now, false, Some(10));
        contact.observe(now, false, None);
        assert!(!contact.acked_within(now, WITHIN));
    }
}
