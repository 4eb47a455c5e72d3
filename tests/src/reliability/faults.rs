//! The faults of a run, drawn from its seed, each bounded and healed before the next: kill -9
//! of a follower, of the leader, of a quorum or of every member at once (a power cut: Conclave's
//! debug builds then lose what a power loss would, see `CONCLAVE_POWER_LOSS_MODEL`), then a
//! restart on the same data dir; SIGSTOP,
//! then SIGCONT; a member's peer links cut both ways (isolated), only into it or only out of
//! it, delayed 500 ms ± 100 ms or losing chunks (and so connections), one way or both; and a
//! follower kept down while a burst of writes moves the log past it, so it must catch up from a
//! snapshot; a follower removed from the cluster and added back with an empty data dir; the disk
//! of a member's data dir filled up (Conclave: the member keeps its data on a small tmpfs of the
//! run's, which needs root), then given space back and the NOSPACE alarm disarmed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::history::Operation;
use super::proxy::{Direction, Link, Network};
use super::run::RunConfig;
use super::watchers::SETTLE_TIMEOUT;
use super::workload::{Clock, put_burst};
use crate::small_disk::SmallDisk;
use crate::{Cluster, Kind, POLL};

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

/// The small disk a run's last member keeps its data dir on, for the disk-full fault.
pub const SMALL_DISK_BYTES: u64 = 2 << 30;
/// Free space the disk-full fault leaves: below the 96 MiB a Conclave member keeps in reserve
/// (so it raises NOSPACE), more than a log segment (so its log can still move to a new one).
const FREE_WHEN_FULL: u64 = 80 << 20;

/// How long an alarm request may take: listing the alarms, or one round of disarming them.
const ALARMS_TIMEOUT: Duration = Duration::from_secs(5);

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
    DiskFull,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
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
        FaultKind::DiskFull,
    ];

    /// The kinds a run injects by default: every kind, but for etcd 3.4 (Debian's 3.4.23) no
    /// pauses. A leader SIGSTOPped past a lease's TTL revokes that lease when it resumes, before
    /// it learns it was deposed, and the new leader commits the revoke although the client kept
    /// the lease alive there: etcd issue #15247, fixed in 3.4 by PR #17465 (2024), after 3.4.23.
    /// The lease check finds it, so a run on etcd with pauses is not a baseline.
    pub fn defaults(kind: Kind) -> Vec<FaultKind> {
        match kind {
            Kind::Conclave => FaultKind::ALL.to_vec(),
            Kind::Etcd => FaultKind::ALL.into_iter().filter(|k| *k != FaultKind::Pause).collect(),
        }
    }
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
    /// The disk of a member's data dir filled up.
    DiskFull(usize),
}

/// A member did not start again after a fault, or the members agreed on no leader after it was
/// healed: the system under test did not recover (a broken guarantee, not a failure of the
/// harness).
#[derive(Debug)]
pub struct NotRecovered(pub anyhow::Error);

impl std::fmt::Display for NotRecovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the cluster did not recover: {:#}", self.0)
    }
}

impl std::error::Error for NotRecovered {}

/// What the faults did: a line per fault, and the writes of the catch-up bursts.
pub struct Injected {
    pub faults: Vec<String>,
    pub operations: Vec<Operation>,
}

/// Faults until `duration` has passed; then every member runs and every link is open, and no
/// alarm is raised. The last member keeps its data dir on `disk`, if the run has one (the
/// disk-full fault is left out without it).
pub async fn inject(cluster: &mut Cluster, network: &Network, disk: Option<&SmallDisk>, config: &RunConfig, clock: Clock) -> Result<Injected> {
    let kinds: Vec<FaultKind> = config.faults.iter().copied().filter(|kind| *kind != FaultKind::DiskFull || disk.is_some()).collect();
    if kinds.is_empty() {
        bail!("no fault to inject: disk-full needs a small disk (root, and Conclave)");
    }
    let mut injected = Injected { faults: Vec::new(), operations: Vec::new() };
    match schedule(cluster, network, disk, config, clock, &kinds, &mut injected).await {
        Ok(()) => Ok(injected),
        Err(e) => Err(e.context(format!("after these faults:\n  {}", injected.faults.join("\n  ")))),
    }
}

/// The faults of the schedule, each line added to `injected` once healed.
async fn schedule(cluster: &mut Cluster, network: &Network, disk: Option<&SmallDisk>, config: &RunConfig, clock: Clock, kinds: &[FaultKind], injected: &mut Injected) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let started = Instant::now();
    let mut round: Vec<FaultKind> = Vec::new();
    while started.elapsed() < config.duration {
        if round.is_empty() {
            round = kinds.to_vec();
            round.shuffle(&mut rng);
            // Taken from the back: the catch-up goes first in the list.
            round.sort_by_key(|kind| *kind != FaultKind::CatchUp);
        }
        let kind = round.pop().expect("a run has at least one kind of fault");
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let hold = Duration::from_millis(rng.random_range(200..2500));
        let size = cluster.members.len();
        // The last fault was healed with a leader agreed: losing it for good since is no recovery.
        let leader = cluster.leader().await.map_err(NotRecovered)?;
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
            FaultKind::DiskFull => (format!("fill the disk of a member's data dir ({} MiB left)", FREE_WHEN_FULL >> 20), Fault::DiskFull(size - 1)),
        };
        let victim = match &fault {
            Fault::Kill(members) => format!("{members:?}"),
            Fault::Pause(member) | Fault::Links(member, ..) | Fault::CatchUp(member, _) | Fault::Replace(member) | Fault::DiskFull(member) => format!("[{member}]"),
        };
        let mut line = format!("{at:.2}s {what} (m{victim})");
        match &fault {
            Fault::Kill(members) => members.iter().for_each(|&i| cluster.members[i].kill9()),
            Fault::Pause(member) => cluster.members[*member].pause(),
            Fault::Links(member, direction, link) => network.set(*member, *direction, *link),
            // Removed and added back at once: the hold after it is the new member catching up.
            // It waits for etcdctl and the new member blocking: off the async workers.
            Fault::Replace(member) => {
                let runtime = tokio::runtime::Handle::current();
                tokio::task::block_in_place(|| runtime.block_on(cluster.replace_member(*member)))?
            }
            Fault::DiskFull(_) => {
                let disk = disk.expect("disk-full runs only with a small disk");
                disk.resize(disk.used()? + FREE_WHEN_FULL)?;
            }
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
        if matches!(fault, Fault::DiskFull(_)) {
            line += if raised_alarms(&cluster.endpoints()).await.unwrap_or_default().is_empty() { " (no alarm raised yet)" } else { " (NOSPACE raised)" };
        }
        let healing = Instant::now();
        // A member that does not start again on its data dir is no recovery either.
        tokio::task::block_in_place(|| heal(cluster, network, &fault)).map_err(NotRecovered)?;
        if let (Fault::DiskFull(_), Some(disk)) = (&fault, disk) {
            disk.resize(SMALL_DISK_BYTES)?;
            disarm_all(&cluster.endpoints()).await?;
        }
        cluster.leader().await.map_err(NotRecovered)?;
        line += &format!(", then {:.1?} until the members agree on a leader", healing.elapsed());
        injected.faults.push(line);
    }
    Ok(())
}

/// Undo `fault`: resume a paused member, open the links, or start killed members again on their
/// data dirs (all launched before any is awaited: a member is only ready once a quorum runs).
/// Blocks until they are ready.
fn heal(cluster: &mut Cluster, network: &Network, fault: &Fault) -> Result<()> {
    match fault {
        Fault::Pause(member) => cluster.members[*member].resume(),
        Fault::Links(..) => network.heal(),
        Fault::Kill(members) => cluster.launch(members)?,
        Fault::CatchUp(member, _) => cluster.launch(&[*member])?,
        Fault::Replace(_) | Fault::DiskFull(_) => {}
    }
    Ok(())
}

/// The alarms raised in the cluster, by member.
async fn raised_alarms(endpoints: &[String]) -> Result<Vec<(u64, AlarmType)>> {
    let listed = async { Client::connect(endpoints, None).await?.alarm(AlarmAction::Get, AlarmType::None, None).await };
    let listed = tokio::time::timeout(ALARMS_TIMEOUT, listed).await.context("listing the alarms")??;
    Ok(listed.alarms().iter().map(|a| (a.member_id(), a.alarm())).collect())
}

/// Disarm every raised alarm until none is (a member raises NOSPACE again until it has seen
/// its disk's space back).
async fn disarm_all(endpoints: &[String]) -> Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let disarmed = async {
            let raised = raised_alarms(endpoints).await?;
            let mut client = Client::connect(endpoints, None).await?;
            for (member, alarm) in &raised {
                let mut options = AlarmOptions::new();
                options.with_member(*member);
                client.alarm(AlarmAction::Deactivate, *alarm, Some(options)).await?;
            }
            Ok::<_, anyhow::Error>(raised.is_empty())
        };
        let disarmed = tokio::time::timeout(ALARMS_TIMEOUT, disarmed).await.unwrap_or_else(|_| Err(anyhow!("no answer in {ALARMS_TIMEOUT:?}")));
        match disarmed {
            Ok(true) => return Ok(()),
            Ok(false) | Err(_) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
            Ok(false) => bail!("alarms still raised {SETTLE_TIMEOUT:?} after the disk had space again"),
            Err(e) => bail!("disarming the alarms after the disk had space again: {e}"),
        }
    }
}
