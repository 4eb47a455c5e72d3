//! One fault run: a cluster on loopback, concurrent clients and watchers recording a
//! [`History`], faults injected on a schedule drawn from a seed, then every check.
//!
//! Faults (each bounded, each healed before the next): kill -9 of a follower, of the leader or
//! of a quorum, then restart on the same data dir; SIGSTOP of a member, then SIGCONT; the peer
//! links into a member blackholed, or delayed 500 ms ± 100 ms (each member's peers reach it
//! through a [`PeerProxy`]). Once the
//! faults stop, the run waits for the cluster, reads the whole log from revision 1, checks the
//! history against it, and checks that every member holds the same `HashKV` at the last revision.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::check::{Violation, check};
use super::history::{Event, History, Nanos, Operation, Outcome, Request, Version, WatchRecord};
use super::proxy::{Link, PeerProxy};
use crate::cluster::MemberPorts;
use crate::{Cluster, Kind, POLL, Schemes};

/// Every key the workload touches starts with this.
const PREFIX: &str = "k/";
/// How long a client waits for one answer before counting it unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Violations a report prints in full (the first ones; the rest are counted).
const SHOWN_VIOLATIONS: usize = 10;
/// Bound on the waits once the faults stop (the cluster healing, watchers catching up).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub kind: Kind,
    pub members: usize,
    pub clients: usize,
    pub watchers: usize,
    /// Keys the clients share (few, so they contend).
    pub keys: usize,
    /// How long faults are injected while the clients run.
    pub duration: Duration,
    pub seed: u64,
    /// A bug to plant in every member (`CONCLAVE_PLANTED_BUG`, debug builds of Conclave only).
    pub planted_bug: Option<&'static str>,
}

/// What a run did and found.
pub struct Report {
    pub config: RunConfig,
    pub history: History,
    pub faults: Vec<String>,
    pub violations: Vec<Violation>,
    /// The members' data dirs (each with its log as `log.txt`), kept when a check failed.
    pub kept: Vec<std::path::PathBuf>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answered = self.history.operations.iter().filter(|op| op.completed.is_some()).count();
        writeln!(
            f,
            "seed {}: {} operations ({answered} answered), {} watchers, {} revisions, {} faults, {} violations",
            self.config.seed,
            self.history.operations.len(),
            self.history.watches.len(),
            self.history.log.len(),
            self.faults.len(),
            self.violations.len()
        )?;
        for fault in &self.faults {
            writeln!(f, "  fault: {fault}")?;
        }
        for violation in self.violations.iter().take(SHOWN_VIOLATIONS) {
            write!(f, "  {violation}")?;
        }
        if self.violations.len() > SHOWN_VIOLATIONS {
            writeln!(f, "  … and {} more", self.violations.len() - SHOWN_VIOLATIONS)?;
        }
        for dir in &self.kept {
            writeln!(f, "  kept: {}", dir.display())?;
        }
        Ok(())
    }
}

/// One clock for every client, fault and watcher of a run.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> Nanos {
        self.0.elapsed().as_nanos() as Nanos
    }
}

pub async fn run(config: RunConfig) -> Result<Report> {
    let (mut cluster, proxies) = behind_proxies(&config).await?;
    cluster.launch_all()?;
    let endpoints = cluster.endpoints();
    let clock = Clock(Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let (target, target_rx) = watch::channel(i64::MAX);

    let mut watchers = JoinSet::new();
    for watcher in 0..config.watchers {
        let from_revision = 1 + watcher as i64 * 10;
        watchers.spawn(watch_all(watcher, endpoints.clone(), from_revision, target_rx.clone()));
    }
    let mut clients = JoinSet::new();
    for client in 0..config.clients {
        let rng = StdRng::seed_from_u64(config.seed.wrapping_add(1 + client as u64));
        clients.spawn(client_loop(client, endpoints.clone(), config.keys, rng, clock, stop.clone()));
    }

    let mut rng = StdRng::seed_from_u64(config.seed);
    let faults = inject_faults(&mut cluster, &proxies, &mut rng, clock, config.duration).await?;
    stop.store(true, Ordering::Relaxed);
    let mut operations = Vec::new();
    while let Some(done) = clients.join_next().await {
        operations.extend(done?);
    }
    operations.sort_by_key(|op| op.invoked);

    let last = last_revision(&endpoints).await?;
    target.send_replace(last);
    let mut watches = Vec::new();
    while let Some(done) = watchers.join_next().await {
        watches.push(done?);
    }
    watches.sort_by_key(|w| w.watcher);
    let log = read_log(&endpoints[0], last).await?;
    let history = History { operations, watches, log };
    let mut violations = check(&history);
    violations.extend(converged(&cluster, last).await);
    let kept = if violations.is_empty() { Vec::new() } else { cluster.members.iter_mut().map(|m| m.keep_data_dir()).collect() };
    Ok(Report { config, history, faults, violations, kept })
}

/// A client's loop until `stop`: random requests on the shared keys, each recorded.
async fn client_loop(client: usize, endpoints: Vec<String>, keys: usize, mut rng: StdRng, clock: Clock, stop: Arc<AtomicBool>) -> Vec<Operation> {
    let options = ConnectOptions::new().with_timeout(REQUEST_TIMEOUT).with_connect_timeout(REQUEST_TIMEOUT);
    let mut connection = None;
    let mut operations = Vec::new();
    let mut seen_mod_revision = vec![0i64; keys];
    for sequence in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if connection.is_none() {
            connection = Client::connect(&endpoints, Some(options.clone())).await.ok();
        }
        let Some(etcd) = connection.as_mut() else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let index = rng.random_range(0..keys);
        let key = format!("{PREFIX}{index}");
        let value = format!("c{client}-{sequence}");
        let request = match rng.random_range(0..100) {
            0..40 => Request::Put { key, value },
            40..65 => Request::Get { key, serializable: false },
            65..75 => Request::Get { key, serializable: true },
            75..85 => Request::Delete { key },
            _ => Request::CompareAndPut { key, expect: seen_mod_revision[index], value },
        };
        let invoked = clock.now();
        let outcome = send(etcd, &request).await;
        let completed = (!matches!(outcome, Outcome::Unknown(_))).then(|| clock.now());
        match &outcome {
            Outcome::Written { revision } => seen_mod_revision[index] = if matches!(request, Request::Delete { .. }) { 0 } else { *revision },
            Outcome::Read { found, .. } => seen_mod_revision[index] = found.as_ref().map_or(0, |v| v.mod_revision),
            _ => {}
        }
        if matches!(outcome, Outcome::Unknown(_)) {
            connection = None;
        }
        operations.push(Operation { client, request, invoked, completed, outcome });
    }
    operations
}

/// Send one request; a write without an answer is unknown (it may still commit), a read without
/// one changed nothing.
async fn send(etcd: &mut Client, request: &Request) -> Outcome {
    let answer: Result<Outcome, etcd_client::Error> = async {
        Ok(match request {
            Request::Put { key, value } => Outcome::Written { revision: header_revision(etcd.put(key.as_str(), value.as_str(), None).await?.header()) },
            Request::Delete { key } => {
                let deleted = etcd.delete(key.as_str(), None).await?;
                let revision = header_revision(deleted.header());
                if deleted.deleted() > 0 { Outcome::Written { revision } } else { Outcome::Read { revision, found: None } }
            }
            Request::Get { key, serializable } => {
                let options = serializable.then(|| GetOptions::new().with_serializable());
                let got = etcd.get(key.as_str(), options).await?;
                Outcome::Read { revision: header_revision(got.header()), found: got.kvs().first().map(version) }
            }
            Request::CompareAndPut { key, expect, value } => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, *expect)])
                    .and_then([TxnOp::put(key.as_str(), value.as_str(), None)])
                    .or_else([TxnOp::get(key.as_str(), None)]);
                let done = etcd.txn(txn).await?;
                let revision = header_revision(done.header());
                if done.succeeded() {
                    Outcome::Written { revision }
                } else {
                    let found = done.op_responses().into_iter().find_map(|op| match op {
                        TxnOpResponse::Get(got) => Some(got.kvs().first().map(version)),
                        _ => None,
                    });
                    Outcome::Read { revision, found: found.flatten() }
                }
            }
        })
    }
    .await;
    match answer {
        Ok(outcome) => outcome,
        Err(e) if matches!(request, Request::Get { .. }) => Outcome::Failed(e.to_string()),
        Err(e) => Outcome::Unknown(e.to_string()),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

fn version(kv: &etcd_client::KeyValue) -> Version {
    Version { value: String::from_utf8_lossy(kv.value()).into_owned(), mod_revision: kv.mod_revision() }
}

/// The run's members, not launched yet, each reached by its peers through a proxy of its own.
async fn behind_proxies(config: &RunConfig) -> Result<(Cluster, Vec<PeerProxy>)> {
    let mut ports = Vec::new();
    let mut proxies = Vec::new();
    for _ in 0..config.members {
        let mut member = MemberPorts::free();
        let proxy = PeerProxy::start(member.peer).await?;
        member.advertised_peer = proxy.port();
        ports.push(member);
        proxies.push(proxy);
    }
    let mut cluster = Cluster::unstarted(config.kind, &ports, &[], Schemes::PLAIN)?;
    if let Some(bug) = config.planted_bug {
        cluster.members.iter_mut().for_each(|m| m.set_env("CONCLAVE_PLANTED_BUG", bug));
    }
    Ok((cluster, proxies))
}

/// One fault of the schedule.
enum Fault {
    Kill(Vec<usize>),
    Pause(usize),
    Link(usize, Link),
}

/// Faults until `duration` has passed, each healed before the next; then every member runs.
async fn inject_faults(cluster: &mut Cluster, proxies: &[PeerProxy], rng: &mut StdRng, clock: Clock, duration: Duration) -> Result<Vec<String>> {
    let mut faults = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let hold = Duration::from_millis(rng.random_range(200..2500));
        let size = cluster.members.len();
        let leader = cluster.leader().await?;
        let follower = (leader + 1 + rng.random_range(0..size - 1)) % size;
        let anyone = rng.random_range(0..size);
        let at = clock.now() as f64 / 1e9;
        let (what, fault) = match rng.random_range(0..6) {
            0 => ("kill -9 a follower", Fault::Kill(vec![follower])),
            1 => ("kill -9 the leader", Fault::Kill(vec![leader])),
            2 => ("kill -9 a quorum", Fault::Kill((0..size / 2 + 1).map(|i| (leader + i) % size).collect())),
            3 => ("SIGSTOP a member", Fault::Pause(anyone)),
            4 => ("blackhole the peer links into a member", Fault::Link(anyone, Link::Blackhole)),
            _ => {
                let delay = Link::Delay { base: Duration::from_millis(500), jitter: Duration::from_millis(100) };
                ("delay the peer links into a member 500 ms ± 100 ms", Fault::Link(anyone, delay))
            }
        };
        let victims = match &fault {
            Fault::Kill(members) => members.clone(),
            Fault::Pause(member) | Fault::Link(member, _) => vec![*member],
        };
        faults.push(format!("{at:.2}s {what} (m{victims:?}) for {hold:?}"));
        match &fault {
            Fault::Kill(members) => members.iter().for_each(|&i| cluster.members[i].kill9()),
            Fault::Pause(member) => cluster.members[*member].pause(),
            Fault::Link(member, link) => proxies[*member].set(*link),
        }
        tokio::time::sleep(hold).await;
        heal(cluster, proxies, &fault)?;
    }
    Ok(faults)
}

/// Undo `fault`: resume a paused member, open a link, or start killed members again on their
/// data dirs (all launched before any is awaited: a member is only ready once a quorum runs).
fn heal(cluster: &mut Cluster, proxies: &[PeerProxy], fault: &Fault) -> Result<()> {
    match fault {
        Fault::Pause(member) => cluster.members[*member].resume(),
        Fault::Link(member, _) => proxies[*member].set(Link::Open),
        Fault::Kill(members) => cluster.launch(members)?,
    }
    Ok(())
}

/// The cluster's revision, from a linearizable read once it serves one.
async fn last_revision(endpoints: &[String]) -> Result<i64> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let read = async { Client::connect(endpoints, None).await?.get(PREFIX, None).await };
        match read.await {
            Ok(got) => return Ok(header_revision(got.header())),
            Err(e) if Instant::now() > deadline => bail!("the cluster serves no read after the faults: {e}"),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// A watcher of every workload key from `from_revision`, moving to another member whenever its
/// stream breaks, until it has seen revision `target` (once known) or the settle time is up.
async fn watch_all(watcher: usize, endpoints: Vec<String>, from_revision: i64, mut target: watch::Receiver<i64>) -> WatchRecord {
    let mut events: Vec<Event> = Vec::new();
    let mut attempt = watcher;
    let mut target_known_at: Option<Instant> = None;
    loop {
        let next = events.last().map_or(from_revision, |e| e.revision + 1);
        if next > *target.borrow() || target_known_at.is_some_and(|t| t.elapsed() > SETTLE_TIMEOUT) {
            break;
        }
        if target_known_at.is_none() && *target.borrow() != i64::MAX {
            target_known_at = Some(Instant::now());
        }
        attempt = attempt.wrapping_add(1);
        let endpoint = &endpoints[attempt % endpoints.len()];
        let Ok(mut client) = Client::connect([endpoint], None).await else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let options = WatchOptions::new().with_prefix().with_start_revision(next);
        let Ok(mut stream) = client.watch(PREFIX, Some(options)).await else { continue };
        // Once the target is known, a stream that stops short of it is left after the settle time.
        let settle = async {
            match target_known_at {
                Some(at) => tokio::time::sleep_until((at + SETTLE_TIMEOUT).into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(settle);
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                // The target is known now: start the settle time on a fresh stream.
                _ = target.changed(), if target_known_at.is_none() => break,
                () = &mut settle => break,
            };
            let Ok(Some(response)) = message else { break };
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let value = (event.event_type() == etcd_client::EventType::Put).then(|| String::from_utf8_lossy(kv.value()).into_owned());
                events.push(Event { revision: kv.mod_revision(), key: String::from_utf8_lossy(kv.key()).into_owned(), value });
            }
            if events.last().is_some_and(|e| e.revision >= *target.borrow()) {
                break;
            }
        }
    }
    WatchRecord { watcher, from_revision, events }
}

/// Every workload event from revision 1 to `last`, from a fresh watch on `endpoint`.
async fn read_log(endpoint: &str, last: i64) -> Result<Vec<Event>> {
    let mut record = watch_all(usize::MAX, vec![endpoint.to_string()], 1, watch::channel(last).1).await;
    if record.events.last().map_or(1, |e| e.revision) < last {
        bail!("the log read from {endpoint} ends before revision {last}");
    }
    record.events.retain(|e| e.revision <= last);
    Ok(record.events)
}

/// Every member reaches `revision` and then holds the same key-value history there.
async fn converged(cluster: &Cluster, revision: i64) -> Vec<Violation> {
    let mut hashes = Vec::new();
    let mut found = Vec::new();
    for member in &cluster.members {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let hashed = async { Client::connect([member.endpoint()], None).await?.hash_kv(revision).await };
            match hashed.await {
                Ok(h) => break hashes.push((member.name().to_string(), h.hash())),
                Err(e) if Instant::now() > deadline => {
                    let detail = format!("{} did not serve HashKV at revision {revision} within {SETTLE_TIMEOUT:?}", member.name());
                    break found.push(Violation { rule: "convergence", detail, evidence: vec![e.to_string()] });
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }
    if hashes.iter().any(|(_, h)| *h != hashes[0].1) {
        let evidence = hashes.iter().map(|(name, hash)| format!("{name}: {hash:#x}")).collect();
        found.push(Violation { rule: "convergence", detail: format!("members differ in HashKV at revision {revision}"), evidence });
    }
    found
}
