//! The faults of a run, drawn from its seed, each bounded and healed before the next: kill -9
//! of a follower, of the leader, of a quorum or of every member at once (a power cut: Conclave's
//! debug builds then lose what a power loss would, see `CONCLAVE_POWER_LOSS_MODEL`), then a
//! restart on the same data dir; SIGSTOP,
//! then SIGCONT; a member's peer links cut both ways (isolated), only into it or only out of
//! it, delayed 500 ms ± 100 ms or losing chunks (and so connections), one way or both; and a
//! follower kept down while a burst of writes moves the log past it, so it must catch up from a
//! snapshot; a follower removed from the cluster and added back with an empty data dir.

use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::history::Operation;
use super::proxy::{Direction, Link, Network};
use super::run::RunConfig;
use super::workload::{Clock, put_burst};
use crate::{Cluster, Kind};

/// Entries a run's members take between snapshots (`--snapshot-count`), small so that a member
/// kept down for a burst of writes needs a snapshot to catch up.
pub fn snapshot_count(kind: Kind) -> usize {
    match kind {
        Kind::Conclave => 50,
        Kind::Etcd => 500,
    }
}

/// Writes (and how many at a time) that move the log far enough past a stopped follower that it
/// needs a snapshot: Conclave keeps a snapshot count of entries behind a snapshot and puts
/// concurrent writes into one entry, so it gets one write at a time; etcd 3.4 keeps 5,000
/// entries, one per write.
fn catch_up_burst(kind: Kind) -> (usize, usize) {
    match kind {
        Kind::Conclave => (3 * snapshot_count(kind), 1),
        Kind::Etcd => (5_000 + 2 * snapshot_count(kind), 32),
    }
}

/// How long, at least, a follower stays down after a catch-up burst.
const CATCH_UP_HOLD: Duration = Duration::from_secs(2);

/// The kinds of fault a run injects; the schedule goes through them in rounds, each round in a
/// seeded random order but for the catch-up (the slowest) last, so every kind comes up in every
/// run of a round or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultKind {
    KillFollower,
    KillLeader,
    KillQuorum,
    PowerCut,
    Pause,
    Isolate,
    CutInto,
    CutOutOf,
    Delay,
    Lossy,
    CatchUp,
    Replace,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::KillFollower,
        FaultKind::KillLeader,
        FaultKind::KillQuorum,
        FaultKind::PowerCut,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::CutInto,
        FaultKind::CutOutOf,
        FaultKind::Delay,
        FaultKind::Lossy,
        FaultKind::CatchUp,
        FaultKind::Replace,
    ];
}

/// One fault of the schedule.
enum Fault {
    Kill(Vec<usize>),
    Pause(usize),
    Links(usize, Direction, Link),
    /// A follower killed, restarted after a burst of writes (how many, how many at a time).
    CatchUp(usize, (usize, usize)),
    /// A follower removed from the cluster, then added back with an empty data dir.
    Replace(usize),
}

/// What the faults did: a line per fault, and the writes of the catch-up bursts.
pub struct Injected {
    pub faults: Vec<String>,
    pub operations: Vec<Operation>,
}

/// Faults until `duration` has passed; then every member runs and every link is open.
pub async fn inject(cluster: &mut Cluster, network: &Network, config: &RunConfig, clock: Clock) -> Result<Injected> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut injected = Injected { faults: Vec::new(), operations: Vec::new() };
    let started = Instant::now();
    let mut round: Vec<FaultKind> = Vec::new();
    while started.elapsed() < config.duration {
        if round.is_empty() {
            round = config.faults.clone();
            round.shuffle(&mut rng);
            // Taken from the back: the catch-up goes first in the list.
            round.sort_by_key(|kind| *kind != FaultKind::CatchUp);
        }
        let kind = round.pop().expect("a run has at least one kind of fault");
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let hold = Duration::from_millis(rng.random_range(200..2500));
        let size = cluster.members.len();
        let leader = cluster.leader().await?;
        let follower = (leader + 1 + rng.random_range(0..size - 1)) % size;
        let anyone = rng.random_range(0..size);
        let (direction, ways) = [(Direction::Both, "both ways"), (Direction::Into, "into it"), (Direction::OutOf, "out of it")][rng.random_range(0..3)];
        let at = clock.now() as f64 / 1e9;
        let delay = Link::Delay { base: Duration::from_millis(500), jitter: Duration::from_millis(100) };
        let (what, fault) = match kind {
            FaultKind::KillFollower => ("kill -9 a follower".to_string(), Fault::Kill(vec![follower])),
            FaultKind::KillLeader => ("kill -9 the leader".to_string(), Fault::Kill(vec![leader])),
            FaultKind::KillQuorum => ("kill -9 a quorum".to_string(), Fault::Kill((0..size / 2 + 1).map(|i| (leader + i) % size).collect())),
            FaultKind::PowerCut => ("cut every member's power (kill -9 all at once)".to_string(), Fault::Kill((0..size).collect())),
            FaultKind::Pause => ("SIGSTOP a member".to_string(), Fault::Pause(anyone)),
            FaultKind::Isolate => ("isolate a member (its peer links blackholed both ways)".to_string(), Fault::Links(anyone, Direction::Both, Link::Blackhole)),
            FaultKind::CutInto => ("blackhole the peer links into a member".to_string(), Fault::Links(anyone, Direction::Into, Link::Blackhole)),
            FaultKind::CutOutOf => ("blackhole the peer links out of a member".to_string(), Fault::Links(anyone, Direction::OutOf, Link::Blackhole)),
            FaultKind::Delay => (format!("delay a member's peer links 500 ms ± 100 ms {ways}"), Fault::Links(anyone, direction, delay)),
            FaultKind::Lossy => (format!("lose 5% of the chunks on a member's peer links {ways}"), Fault::Links(anyone, direction, Link::Lossy(0.05))),
            FaultKind::CatchUp => ("keep a follower down until it must catch up from a snapshot".to_string(), Fault::CatchUp(follower, catch_up_burst(config.kind))),
            FaultKind::Replace => ("remove a follower, add it back with an empty data dir".to_string(), Fault::Replace(follower)),
        };
        let victim = match &fault {
            Fault::Kill(members) => format!("{members:?}"),
            Fault::Pause(member) | Fault::Links(member, ..) | Fault::CatchUp(member, _) | Fault::Replace(member) => format!("[{member}]"),
        };
        let mut line = format!("{at:.2}s {what} (m{victim})");
        match &fault {
            Fault::Kill(members) => members.iter().for_each(|&i| cluster.members[i].kill9()),
            Fault::Pause(member) => cluster.members[*member].pause(),
            Fault::Links(member, direction, link) => network.set(*member, *direction, *link),
            // Removed and added back at once: the hold after it is the new member catching up.
            Fault::Replace(member) => cluster.replace_member(*member).await?,
            Fault::CatchUp(member, (writes, concurrency)) => {
                cluster.members[*member].kill9();
                let live: Vec<String> = (0..size).filter(|i| i != member).map(|i| cluster.members[i].endpoint()).collect();
                let bursting = Instant::now();
                let burst = put_burst(&live, injected.faults.len(), *writes, *concurrency, clock).await;
                let answered = burst.iter().filter(|op| op.completed.is_some()).count();
                line += &format!(" through {answered} of {writes} writes (in {:.1?}),", bursting.elapsed());
                injected.operations.extend(burst);
            }
        }
        // After a burst, the leader purges its log at its next failed send to the stopped member
        // (it keeps the entries a send in flight may need): give it a few.
        let hold = if matches!(fault, Fault::CatchUp(..)) { hold.max(CATCH_UP_HOLD) } else { hold };
        line += &format!(" for {hold:?}");
        tokio::time::sleep(hold).await;
        let healing = Instant::now();
        heal(cluster, network, &fault)?;
        cluster.leader().await?;
        line += &format!(", then {:.1?} until the members agree on a leader", healing.elapsed());
        injected.faults.push(line);
    }
    Ok(injected)
}

/// Undo `fault`: resume a paused member, open the links, or start killed members again on their
/// data dirs (all launched before any is awaited: a member is only ready once a quorum runs).
fn heal(cluster: &mut Cluster, network: &Network, fault: &Fault) -> Result<()> {
    match fault {
        Fault::Pause(member) => cluster.members[*member].resume(),
        Fault::Links(..) => network.heal(),
        Fault::Kill(members) => cluster.launch(members)?,
        Fault::CatchUp(member, _) => cluster.launch(&[*member])?,
        Fault::Replace(_) => {}
    }
    Ok(())
}
