//! Lock safety under faults: 20 clients × 50 acquisitions through v3lock on a 3-member cluster,
//! clients spread over all members. Some holders are abandoned while holding (they stop keeping
//! their lease alive, as a killed process does, so the lock passes on only when it expires), some
//! waits have a short deadline, and the leader is killed -9 and restarted mid-run. Each holder does
//! a non-atomic read-modify-write of a counter, its write guarded by its fencing token (the lock
//! key's create revision). A checker over the recorded history then shows that no two holders
//! overlapped, no update was lost, every attempt acquired or timed out, and no key was left behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conclave_tests::{Cluster, Kind};
use conclave_tests::recipes::keys;
use etcd_client::{Client, Compare, CompareOp, LockOptions, Txn, TxnOp};
use tokio::sync::watch;

const CLIENTS: usize = 20;
const ACQUISITIONS: usize = 50;
const MEMBERS: usize = 3;
const NAME: &str = "safety";
const COUNTER: &str = "safety-counter";
/// Short, so an abandoned holder stalls the queue only briefly; long enough to outlive a leader
/// election while its keep-alives are retried on another member.
const TTL: i64 = 5;
const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(500);
/// A normal wait's deadline: far more than the whole queue takes.
const PATIENT: Duration = Duration::from_secs(60);
/// An impatient wait's deadline, shorter than a hand-off usually takes, so some do time out.
const IMPATIENT: Duration = Duration::from_millis(5);
/// Pause before retrying a call that failed on an unreachable member.
const RETRY: Duration = Duration::from_millis(50);
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The holders that are abandoned while holding: (client, acquisition).
const ABANDONED: [(usize, usize); 3] = [(3, 10), (11, 27), (17, 41)];

/// An acquisition with a short deadline, from a seeded schedule (every client's 7th, 19th…).
fn impatient(client: usize, attempt: usize) -> bool {
    (client * 31 + attempt * 17).is_multiple_of(12)
}

#[derive(Debug)]
enum Outcome {
    /// Held, read the counter, wrote `read + 1` guarded by `token` (`ambiguous`: the write's answer
    /// was lost with its member, so it may or may not have landed).
    Wrote { token: i64, acquired: Instant, read: u64, ambiguous: bool, releasing: Instant },
    /// Held, then abandoned at `abandoned` without unlocking or keeping its lease alive.
    Abandoned { token: i64, acquired: Instant, abandoned: Instant },
    /// Held, but the guarded write found the lock key gone (the lease expired while holding).
    Lost,
    /// The wait's deadline passed first.
    TimedOut,
    /// The lease expired while waiting.
    LeaseExpired,
}

/// A holder's time with the lock, as its client saw it.
struct Holder {
    token: i64,
    acquired: Instant,
    /// When it began releasing (or was abandoned).
    released: Instant,
    /// What a writer read, and whether its write is unconfirmed.
    write: Option<(u64, bool)>,
}

impl Holder {
    fn of(outcome: &Outcome) -> Option<Holder> {
        match *outcome {
            Outcome::Wrote { token, acquired, read, ambiguous, releasing } => {
                Some(Holder { token, acquired, released: releasing, write: Some((read, ambiguous)) })
            }
            Outcome::Abandoned { token, acquired, abandoned } => Some(Holder { token, acquired, released: abandoned, write: None }),
            _ => None,
        }
    }
}

/// One client's connections, one per member; calls go to `home` and move on when it is down.
struct Member {
    clients: Vec<Client>,
    home: usize,
}

impl Member {
    fn client(&self) -> Client {
        self.clients[self.home].clone()
    }

    async fn next_member(&mut self) {
        self.home = (self.home + 1) % self.clients.len();
        tokio::time::sleep(RETRY).await;
    }

    /// `call` on the current member until it answers; a member that is down or has no leader
    /// is left for the next one.
    async fn retry<T, F, Fut>(&mut self, call: F) -> T
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        loop {
            match call(self.client()).await {
                Ok(answer) => return answer,
                Err(e) => {
                    assert!(started.elapsed() < PATIENT, "no member answered for {PATIENT:?}: {e}");
                    self.next_member().await;
                }
            }
        }
    }
}

/// Keeps `lease` alive every [`KEEP_ALIVE_EVERY`] through whichever member answers, until aborted.
fn keep_alive(clients: Vec<Client>, home: usize, lease: i64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut member = Member { clients, home };
        loop {
            let Ok((mut keeper, mut answers)) = member.client().lease_keep_alive(lease).await else {
                member.next_member().await;
                continue;
            };
            let mut tick = tokio::time::interval(KEEP_ALIVE_EVERY);
            loop {
                tick.tick().await;
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match answers.message().await {
                    Ok(Some(answer)) if answer.ttl() > 0 => {}
                    Ok(Some(_)) => return,
                    _ => break,
                }
            }
            member.next_member().await;
        }
    })
}

/// Whether a failed call says the lease is gone (the only failure that is not the member's).
fn lease_gone(e: &etcd_client::Error) -> bool {
    e.to_string().contains("requested lease not found")
}

/// One acquisition: lease, lock (retried on other members with the same lease, which keeps its
/// key and place), then the guarded read-modify-write and unlock, or abandonment.
async fn acquire_once(member: &mut Member, client: usize, attempt: usize) -> Outcome {
    let lease = member.retry(|mut c| async move { c.lease_grant(TTL, None).await }).await.id();
    let keeper = keep_alive(member.clients.clone(), member.home, lease);
    let deadline = Instant::now() + if impatient(client, attempt) { IMPATIENT } else { PATIENT };
    let key = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let mut client = member.client();
        match tokio::time::timeout(wait, client.lock(NAME, Some(LockOptions::new().with_lease(lease)))).await {
            Ok(Ok(locked)) => break locked.key().to_vec(),
            Ok(Err(e)) if lease_gone(&e) => {
                keeper.abort();
                return Outcome::LeaseExpired;
            }
            Ok(Err(_)) => member.next_member().await,
            Err(_) => {
                keeper.abort();
                revoke(member, lease).await;
                return Outcome::TimedOut;
            }
        }
    };
    let acquired = Instant::now();
    let kv = member.retry(|mut c| {
        let key = key.clone();
        async move { c.get(key, None).await }
    });
    let token = kv.await.kvs().first().expect("the holder's key exists").create_revision();

    if ABANDONED.contains(&(client, attempt)) {
        keeper.abort();
        return Outcome::Abandoned { token, acquired, abandoned: Instant::now() };
    }

    let counter = member.retry(|mut c| async move { c.get(COUNTER, None).await }).await;
    let read = counter.kvs().first().map_or(0, |kv| kv.value_str().unwrap().parse::<u64>().unwrap());
    // Widen the window between read and write, as real work between them would.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let guarded = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, token)])
        .and_then([TxnOp::put(COUNTER, (read + 1).to_string(), None)]);
    let (wrote, ambiguous) = match member.client().txn(guarded).await {
        Ok(answer) => (answer.succeeded(), false),
        Err(_) => {
            member.next_member().await;
            (true, true)
        }
    };
    let releasing = Instant::now();
    member.retry(|mut c| {
        let key = key.clone();
        async move { c.unlock(key).await }
    })
    .await;
    keeper.abort();
    revoke(member, lease).await;
    if wrote { Outcome::Wrote { token, acquired, read, ambiguous, releasing } } else { Outcome::Lost }
}

async fn revoke(member: &mut Member, lease: i64) {
    member
        .retry(|mut c| async move {
            match c.lease_revoke(lease).await {
                Err(e) if lease_gone(&e) => Ok(()),
                other => other.map(drop),
            }
        })
        .await;
}

/// What the checker concludes from the history; panics on a violation.
fn check(history: &[(usize, usize, Outcome)], counter: u64) -> (usize, usize, usize) {
    for (client, attempt, outcome) in history {
        assert!(
            matches!(outcome, Outcome::Wrote { .. } | Outcome::Abandoned { .. } | Outcome::TimedOut),
            "client {client} acquisition {attempt}: {outcome:?}"
        );
    }
    // Every holder, in fencing order.
    let mut holders: Vec<Holder> = history.iter().filter_map(|(_, _, outcome)| Holder::of(outcome)).collect();
    holders.sort_by_key(|h| h.token);
    for pair in holders.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        assert!(before.token < after.token, "two holders with fencing token {}", before.token);
        assert!(
            after.acquired > before.released,
            "holder {} acquired {:?} before holder {} released",
            after.token,
            before.released - after.acquired,
            before.token
        );
    }
    // Each writer read what the writers before it wrote: a lost update shows as a repeated read.
    let writers: Vec<(i64, u64, bool)> =
        holders.iter().filter_map(|h| h.write.map(|(read, ambiguous)| (h.token, read, ambiguous))).collect();
    let (mut expected, mut maybe_not_landed) = (0, false);
    for &(token, read, ambiguous) in &writers {
        let landed_or_not = maybe_not_landed && read + 1 == expected;
        assert!(read == expected || landed_or_not, "holder {token} read {read}, want {expected}");
        (expected, maybe_not_landed) = (read + 1, ambiguous);
    }
    let definite = writers.iter().filter(|w| !w.2).count() as u64;
    let ambiguous = writers.len() as u64 - definite;
    assert!(
        (definite..=definite + ambiguous).contains(&counter),
        "the counter is {counter} after {definite} writes (+{ambiguous} unconfirmed)"
    );
    let timed_out = history.iter().filter(|h| matches!(h.2, Outcome::TimedOut)).count();
    (writers.len(), timed_out, ambiguous as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_never_overlap_through_abandoned_holders_and_a_leader_restart() {
    let mut cluster = Cluster::start(Kind::subject(), MEMBERS, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let endpoints = cluster.endpoints();
    let mut connections = Vec::new();
    for endpoint in &endpoints {
        connections.push(Client::connect([endpoint.as_str()], None).await.expect("connect"));
    }
    let (progress, mut done) = watch::channel(0usize);
    let progress = Arc::new(progress);
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let mut member = Member { clients: connections.clone(), home: client % MEMBERS };
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut history = Vec::new();
                for attempt in 0..ACQUISITIONS {
                    let outcome = acquire_once(&mut member, client, attempt).await;
                    history.push((client, attempt, outcome));
                    progress.send_modify(|n| *n += 1);
                }
                history
            })
        })
        .collect();

    // A third of the way in, the leader dies; it comes back once the others made progress without it.
    done.wait_for(|&n| n >= CLIENTS * ACQUISITIONS / 3).await.expect("workers run");
    let leader = cluster.leader().await.expect("a leader");
    cluster.members[leader].kill9();
    let killed_at = *done.borrow();
    done.wait_for(|&n| n >= killed_at + CLIENTS * 5).await.expect("workers run");
    tokio::task::block_in_place(|| cluster.members[leader].restart()).unwrap_or_else(|e| panic!("{e:#}"));

    let mut history = Vec::new();
    for worker in workers {
        history.extend(tokio::time::timeout(RUN_TIMEOUT, worker).await.expect("the run ends").expect("a worker panicked"));
    }
    let elapsed = started.elapsed();
    let mut client = connections[(leader + 1) % MEMBERS].clone();
    let counter = client.get(COUNTER, None).await.expect("get").kvs().first().map_or(0, |kv| kv.value_str().unwrap().parse().unwrap());
    let (writes, timed_out, ambiguous) = check(&history, counter);
    eprintln!(
        "{} acquisitions in {elapsed:.1?}: {writes} guarded writes ({ambiguous} unconfirmed), {} abandoned, {timed_out} timed out; counter {counter}; leader m{leader} killed after {killed_at}",
        history.len(),
        ABANDONED.len()
    );
    assert!(timed_out > 0 && writes > CLIENTS * ACQUISITIONS / 2, "the schedule exercised both outcomes");
    // The abandoned holders' leases have expired by now (each had to, to pass the lock on).
    assert_eq!(keys(&mut client, &format!("{NAME}/")).await, Vec::<String>::new(), "keys left behind");
}
