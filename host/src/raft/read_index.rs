//! Linearizable reads share read-index rounds, as etcd's linearizable read loop does.
//!
//! openraft confirms leadership for every `get_read_log_id` with a heartbeat to each voter, and a
//! follower asked the leader once per read: under load, two RPCs per read. Here a read joins the
//! next round instead. Rounds run one at a time, and a round answers exactly the reads that
//! joined before it started, so each read's index comes from a leadership check made after the
//! read arrived: what makes reading at that index linearizable.

use std::future::Future;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::peer_service::NOT_LEADER;
use super::Raft;
use crate::error::EtcdError;

type Waiter<E> = oneshot::Sender<Result<u64, E>>;

/// Rounds of one way of getting a read index, each shared by the reads that joined it.
pub struct ReadRounds<E> {
    joining: mpsc::UnboundedSender<Waiter<E>>,
}

impl<E: Clone + Send + From<EtcdError> + 'static> ReadRounds<E> {
    /// Rounds of `round`, run by a task on the current tokio runtime until this is dropped.
    pub fn start<F, Fut>(round: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, E>> + Send,
    {
        let (joining, mut joined) = mpsc::unbounded_channel::<Waiter<E>>();
        tokio::spawn(async move {
            while let Some(first) = joined.recv().await {
                let mut waiters = vec![first];
                while let Ok(next) = joined.try_recv() {
                    waiters.push(next);
                }
                let outcome = round().await;
                for waiter in waiters {
                    let _ = waiter.send(outcome.clone());
                }
            }
        });
        ReadRounds { joining }
    }

    /// The read index of the next round to start.
    pub async fn next(&self) -> Result<u64, E> {
        let (waiter, answer) = oneshot::channel();
        self.joining.send(waiter).map_err(|_| E::from(EtcdError::Stopped))?;
        answer.await.map_err(|_| E::from(EtcdError::Stopped))?
    }
}

/// Rounds of this member's own read index, which only a leader has: what its linearizable reads
/// and its followers' read-index requests wait for. A round's leadership check is tried again
/// for up to `patience` when a quorum did not answer it in time.
pub fn leader_rounds(raft: Raft, patience: Duration) -> ReadRounds<Status> {
    ReadRounds::start(move || {
        let raft = raft.clone();
        confirmed(
            move || {
                let raft = raft.clone();
                async move {
                    match raft.get_read_log_id().await {
                        Ok((read, _applied)) => Check::Index(read.map_or(0, |id| id.index)),
                        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => Check::Unconfirmed,
                        Err(RaftError::APIError(_)) => Check::NotLeader,
                        Err(e) => Check::Failed(e.to_string()),
                    }
                }
            },
            patience,
        )
    })
}

/// Between leadership checks a quorum did not answer.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// What one leadership check says.
enum Check {
    /// Leadership confirmed: the read index.
    Index(u64),
    /// This member does not lead.
    NotLeader,
    /// Too few voters answered in time.
    Unconfirmed,
    Failed(String),
}

/// The read index of the first of `check`s that confirms leadership. openraft gives each voter
/// one heartbeat interval to answer a check: on a loaded machine a round trip can take longer,
/// and failing such a read at once (etcd's read index waits for a quorum as long as the request
/// may) left every linearizable read failing with "no leader" while the cluster had one.
async fn confirmed<F, Fut>(check: F, patience: Duration) -> Result<u64, Status>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Check>,
{
    let deadline = Instant::now() + patience;
    loop {
        match check().await {
            Check::Index(index) => return Ok(index),
            // A pause: voters that are down refuse at once, and the check would spin.
            Check::Unconfirmed if Instant::now() < deadline => tokio::time::sleep(RETRY_PAUSE).await,
            Check::Unconfirmed | Check::NotLeader => return Err(Status::failed_precondition(NOT_LEADER)),
            Check::Failed(e) => return Err(Status::unavailable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_check_too_few_voters_answered_in_time_is_tried_again() {
        let attempts = AtomicU64::new(0);
        let check = || {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst);
            async move { if attempt < 3 { Check::Unconfirmed } else { Check::Index(7) } }
        };
        assert_eq!(confirmed(check, Duration::from_secs(60)).await.unwrap(), 7);
        assert_eq!(attempts.load(Ordering::SeqCst), 4);

        let never = || async { Check::Unconfirmed };
        assert_eq!(confirmed(never, Duration::ZERO).await.unwrap_err().message(), NOT_LEADER);
        let deposed = || async { Check::NotLeader };
        assert_eq!(confirmed(deposed, Duration::from_secs(60)).await.unwrap_err().message(), NOT_LEADER);
    }

    #[tokio::test]
    async fn reads_joining_during_a_round_share_the_next_one() {
        let (release, gate) = mpsc::unbounded_channel::<()>();
        let gate = Arc::new(tokio::sync::Mutex::new(gate));
        let started = Arc::new(AtomicU64::new(0));
        let rounds = Arc::new(ReadRounds::<EtcdError>::start({
            let (gate, started) = (gate.clone(), started.clone());
            move || {
                let gate = gate.clone();
                let round = started.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    gate.lock().await.recv().await;
                    Ok(round)
                }
            }
        }));
        let read = || {
            let rounds = rounds.clone();
            tokio::spawn(async move { rounds.next().await })
        };
        let first = read();
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        let (second, third) = (read(), read());
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 1, "no round starts while one runs");
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(1));
        settle().await;
        assert_eq!(started.load(Ordering::SeqCst), 2);
        release.send(()).unwrap();
        assert_eq!((second.await.unwrap(), third.await.unwrap()), (Ok(2), Ok(2)), "both joined after round 1 began");
    }
}
