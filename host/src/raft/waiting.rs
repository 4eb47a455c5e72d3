//! Clients waiting for the batch that carries their writes, answered by this member's state
//! machine as it applies the batch.
//!
//! Answering from the apply, right after its commit, spares each write the hand-offs from the
//! state machine back to raft's core and on to the proposer's task before its client hears: on a
//! leader, two wake-ups of another task; on a follower, also the wait for raft's metrics to show
//! the apply. The proposer still sees raft's outcome (or the leader's answer) and answers, from
//! it, whoever is still waiting: clients of a batch that failed, or whose entry this member never
//! applies itself (a snapshot installed past it).
//!
//! A leader's proposal also holds the proposer's slot for a batch in flight until it is applied,
//! so the next batch may go as soon as the clients of this one are answered.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use conclave_proto::conclave::raft::RaftResponse;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tonic::Status;

/// Where one client's write is answered.
pub type Reply = oneshot::Sender<Result<RaftResponse, Status>>;

/// A proposal's clients, and the proposer's slot it holds until applied (if it holds one).
pub struct Proposal {
    pub replies: Vec<Reply>,
    pub slot: Option<OwnedSemaphorePermit>,
}

/// This member's proposals waiting to be applied, by proposal id.
pub struct Waiting {
    next: AtomicU64,
    proposals: Mutex<HashMap<u64, Proposal>>,
    /// The last log index the state machine applied before answering: a client that heard back
    /// may ask for the applied index at once, before raft's metrics have it.
    applied: AtomicU64,
}

impl Default for Waiting {
    /// Proposal ids count up from a random start, so ids of other members and of this member's
    /// earlier runs (whose entries a restarted member applies again) do not meet ours: two
    /// counters 2^64 wide collide only if their starts fall within the proposals made between.
    fn default() -> Self {
        let start = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Waiting { next: AtomicU64::new(start), proposals: Mutex::default(), applied: AtomicU64::new(0) }
    }
}

impl Waiting {
    /// Wait for `proposal` to be applied, under the id it returns (never 0: no proposal).
    pub fn register(&self, proposal: Proposal) -> u64 {
        let id = loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                break id;
            }
        };
        self.lock().insert(id, proposal);
        id
    }

    /// Proposal `id`, if it is ours and its clients still wait; they are answered once.
    pub fn take(&self, id: u64) -> Option<Proposal> {
        if id == 0 {
            return None;
        }
        self.lock().remove(&id)
    }

    /// The state machine applied through `index` and is about to answer.
    pub fn applied_through(&self, index: u64) {
        self.applied.fetch_max(index, Ordering::Release);
    }

    /// The last index the state machine applied before answering clients (0: none yet).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Whether the clients of proposal `id` still wait.
    pub fn is_waiting(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Proposal>> {
        self.proposals.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Answer each client with its own response, in order.
pub fn reply_each(replies: Vec<Reply>, responses: Vec<RaftResponse>) {
    for (reply, response) in replies.into_iter().zip(responses) {
        let _ = reply.send(Ok(response));
    }
}

/// Answer every client with the same error.
pub fn reply_all(replies: Vec<Reply>, status: Status) {
    for reply in replies {
        let _ = reply.send(Err(status.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proposal_s_clients_are_answered_once_and_only_under_its_own_id() {
        let waiting = Waiting::default();
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let (reply, mut answer) = oneshot::channel();
        let slot = slots.clone().try_acquire_owned().ok();
        let id = waiting.register(Proposal { replies: vec![reply], slot });
        assert_ne!(id, 0);
        assert!(waiting.take(0).is_none());
        assert!(waiting.take(id.wrapping_add(1)).is_none());
        assert!(waiting.is_waiting(id));
        assert_eq!(slots.available_permits(), 0, "the slot is held while the proposal waits");
        reply_each(waiting.take(id).expect("registered").replies, vec![RaftResponse::default()]);
        assert_eq!(slots.available_permits(), 1, "and freed with it");
        assert!(!waiting.is_waiting(id));
        assert!(waiting.take(id).is_none());
        assert_eq!(answer.try_recv().expect("answered").expect("a response"), RaftResponse::default());
    }

    #[test]
    fn two_members_count_from_different_starts() {
        let (a, b) = (Waiting::default(), Waiting::default());
        let none = || Proposal { replies: Vec::new(), slot: None };
        assert_ne!(a.register(none()), b.register(none()));
    }
}
