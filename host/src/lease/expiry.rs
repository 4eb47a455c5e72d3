//! Lease deadlines, kept by the leader only, and the task that revokes expired leases.
//!
//! Deadlines are not replicated. Whenever this member becomes leader (including after a restart)
//! every lease gets its full TTL again, as etcd's lessor does on promotion, so a restart or a
//! leader change never expires a lease early. Expired leases are revoked through the log like a
//! client's revoke, so every member deletes their keys at the same revision.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::etcdserverpb::LeaseRevokeRequest;

use super::LeaseTable;
use crate::node::Node;

/// How often deadlines are checked: expiry is late by at most about this much.
const TICK: Duration = Duration::from_millis(250);
/// Revocations proposed per tick: 1,000 a second like etcd, so a mass expiry can't crowd out
/// client writes.
const REVOKES_PER_TICK: usize = 250;

#[derive(Default)]
struct Deadlines {
    /// The raft term in which this member leads; `None` when it is not the leader.
    term: Option<u64>,
    at: HashMap<i64, Instant>,
    /// Expired leases whose revocation is in flight.
    revoking: HashSet<i64>,
}

/// The leader's view of when each lease expires.
#[derive(Default)]
pub struct Lessor {
    deadlines: Mutex<Deadlines>,
}

fn after(now: Instant, ttl: i64) -> Instant {
    now + Duration::from_secs(ttl.clamp(0, super::MAX_TTL) as u64)
}

impl Lessor {
    fn lock(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.deadlines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Match the deadlines to raft's leadership and to the table: a new term in office restarts
    /// every lease's TTL; leases granted meanwhile get a deadline, revoked ones lose theirs.
    pub fn sync(&self, leader_term: Option<u64>, table: &LeaseTable) {
        let mut d = self.lock();
        let now = Instant::now();
        if d.term != leader_term {
            d.term = leader_term;
            d.at.clear();
            d.revoking.clear();
        }
        if d.term.is_none() {
            return;
        }
        for (id, lease) in table.iter() {
            d.at.entry(id).or_insert_with(|| after(now, lease.ttl));
        }
        if d.at.len() > table.len() {
            d.at.retain(|id, _| table.contains(*id));
        }
        let Deadlines { at, revoking, .. } = &mut *d;
        revoking.retain(|id| at.contains_key(id));
    }

    /// A lease was granted (applied): on the leader its TTL starts now, wherever the grant came
    /// from, rather than at the next expiry check.
    pub fn granted(&self, id: i64, ttl: i64) {
        let mut d = self.lock();
        if d.term.is_some() {
            d.at.insert(id, after(Instant::now(), ttl));
        }
    }

    /// Restart a lease's TTL (a grant or keep-alive on the leader). Returns false if it has
    /// already expired (a keep-alive can't bring it back), and `None` if this member does not
    /// lead (any more): no deadline was restarted, so the keep-alive must go to the leader
    /// rather than be answered as renewed.
    pub fn refresh(&self, leader_term: Option<u64>, table: &LeaseTable, id: i64) -> Option<bool> {
        // A full sync walks every lease: only needed when leadership changed. Otherwise the
        // periodic expiry check keeps the deadlines in step with the table.
        if self.lock().term != leader_term {
            self.sync(leader_term, table);
        }
        let mut d = self.lock();
        d.term?;
        let Some(ttl) = table.get(id).map(|l| l.ttl) else { return Some(false) };
        let now = Instant::now();
        let deadline = d.at.entry(id).or_insert_with(|| after(now, ttl));
        if *deadline <= now {
            return Some(false);
        }
        *deadline = after(now, ttl);
        Some(true)
    }

    /// Whole seconds left (truncated, as etcd reports), or the granted TTL when this member
    /// does not keep deadlines.
    pub fn remaining(&self, id: i64, granted: i64) -> i64 {
        match self.lock().at.get(&id) {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()).as_secs() as i64,
            None => granted,
        }
    }

    /// When `id` expires, for ordering lease lists the way etcd does.
    pub fn deadline(&self, id: i64) -> Option<Instant> {
        self.lock().at.get(&id).copied()
    }

    /// Up to `limit` expired leases not yet being revoked, soonest first; marks them in flight.
    fn take_expired(&self, now: Instant, limit: usize) -> Vec<i64> {
        let mut d = self.lock();
        let mut expired: Vec<(Instant, i64)> = d
            .at
            .iter()
            .filter(|(id, at)| **at <= now && !d.revoking.contains(id))
            .map(|(id, at)| (*at, *id))
            .collect();
        expired.sort_unstable();
        expired.truncate(limit);
        let ids: Vec<i64> = expired.into_iter().map(|(_, id)| id).collect();
        d.revoking.extend(&ids);
        ids
    }

    /// A revocation finished (or failed and should be retried at the next tick).
    fn revoked(&self, id: i64) {
        self.lock().revoking.remove(&id);
    }
}

/// Check deadlines every tick while the node lives, proposing revocations for expired leases.
pub async fn run_expiry(node: Weak<Node>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let sweeper = node.clone();
        let expired = node
            .store
            .read_async(move |view| {
                sweeper.lessor.sync(sweeper.leader_term(), crate::mvcc::View::leases(&*view));
                sweeper.lessor.take_expired(Instant::now(), REVOKES_PER_TICK)
            })
            .await;
        // A leader paused or cut off past some leases' TTLs may still believe it leads when it
        // comes back, before it hears of its successor, which counts those TTLs from its own
        // election: its revokes would delete keys their clients kept alive there (etcd 3.4's
        // #15247). Revoke only once a quorum confirmed this member still leads.
        if !expired.is_empty() && !node.leads_by_quorum().await {
            expired.iter().for_each(|&id| node.lessor.revoked(id));
            continue;
        }
        for id in expired {
            let node = node.clone();
            // Concurrent proposals share log entries (the proposer batches them).
            tokio::spawn(async move {
                if let Err(e) = node.propose(Req::LeaseRevoke(LeaseRevokeRequest { id })).await {
                    tracing::debug!(lease = id, error = %e, "revoking an expired lease");
                }
                node.lessor.revoked(id);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(leases: &[(i64, i64)]) -> LeaseTable {
        let mut table = LeaseTable::default();
        for (id, ttl) in leases {
            table.grant(*id, *ttl);
        }
        table
    }

    #[test]
    fn only_the_leader_keeps_deadlines() {
        let lessor = Lessor::default();
        let t = table(&[(1, 10)]);
        lessor.sync(None, &t);
        assert_eq!(lessor.deadline(1), None);
        assert_eq!(lessor.remaining(1, 10), 10);
        lessor.sync(Some(2), &t);
        assert!(lessor.deadline(1).is_some());
        assert!((9..=10).contains(&lessor.remaining(1, 10)));
    }

    #[test]
    fn a_member_that_no_longer_leads_renews_nothing() {
        let lessor = Lessor::default();
        let t = table(&[(1, 10)]);
        assert_eq!(lessor.refresh(Some(3), &t, 1), Some(true));
        // Leadership ended between choosing to answer here and renewing: no renewal may be
        // reported (the leader's deadline was not restarted), whether the lease exists or not.
        assert_eq!(lessor.refresh(None, &t, 1), None);
        assert_eq!(lessor.refresh(None, &t, 99), None);
    }

    #[test]
    fn expired_leases_are_taken_once_and_limited() {
        let lessor = Lessor::default();
        let t = table(&[(1, 0), (2, 0), (3, 0), (4, 100)]);
        lessor.sync(Some(1), &t);
        let now = Instant::now();
        let first = lessor.take_expired(now, 2);
        assert_eq!(first.len(), 2);
        let second = lessor.take_expired(now, 10);
        assert_eq!(second.len(), 1);
        assert!(lessor.take_expired(now, 10).is_empty());
        // A failed revocation is retried.
        lessor.revoked(second[0]);
        assert_eq!(lessor.take_expired(now, 10), second);
    }

    #[test]
    fn new_term_restarts_every_ttl_and_expired_leases_stay_expired() {
        let lessor = Lessor::default();
        let t = table(&[(1, 0)]);
        lessor.sync(Some(1), &t);
        assert_eq!(lessor.refresh(Some(1), &t, 1), Some(false), "a keep-alive can't revive an expired lease");
        let t = table(&[(1, 60)]);
        lessor.sync(Some(2), &t);
        assert_eq!(lessor.refresh(Some(2), &t, 1), Some(true));
        assert!(lessor.remaining(1, 60) >= 59);
        assert_eq!(lessor.refresh(Some(2), &t, 99), Some(false), "unknown lease");
    }

    #[test]
    fn revoked_leases_lose_their_deadline() {
        let lessor = Lessor::default();
        lessor.sync(Some(1), &table(&[(1, 10), (2, 10)]));
        lessor.sync(Some(1), &table(&[(2, 10)]));
        assert_eq!(lessor.deadline(1), None);
        assert!(lessor.deadline(2).is_some());
    }
}
