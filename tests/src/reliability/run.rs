//! One fault run: a cluster on loopback, concurrent clients and watchers recording a
//! [`History`], compactions behind the watchers, faults injected on a schedule drawn from a seed
//! (see [`faults`](super::faults)), then every check: the history against the log (see
//! [`check`]), and every member holding the same `HashKV` at the last revision.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use etcd_client::{Client, GetOptions};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::check::{Violation, check, grants_of_gone_keys};
use super::deploys::{self, Deploy, deploy_loop, deploys_converged};
use super::faults::{self, FaultKind, NotRecovered, SMALL_DISK_BYTES, snapshot_count};
use super::history::History;
use super::leases::{MAX_TTL, lease_loop};
use super::proxy::Network;
use super::recipes::{Recipe, recipe_loop};
use super::watchers::{SETTLE_TIMEOUT, compact_behind, the_log, watch_all};
use super::workload::{Clock, PREFIX, client_loop, header_revision};
use crate::cluster::MemberPorts;
use crate::small_disk::SmallDisk;
use crate::{Cluster, Kind, POLL, Schemes};

/// Violations a report prints in full (the first ones; the rest are counted).
const SHOWN_VIOLATIONS: usize = 10;
/// What a member logs when it installs a snapshot from its leader (Conclave's "applied incoming
/// snapshot", etcd's "finished applying incoming snapshot").
const SNAPSHOT_INSTALLED: &str = "incoming snapshot";

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub kind: Kind,
    pub members: usize,
    pub clients: usize,
    pub watchers: usize,
    /// Clients that grant leases and put keys under them.
    pub lease_clients: usize,
    /// Clients that take the lock, and clients that campaign in the election (each kind).
    pub recipe_clients: usize,
    /// Keys the clients share (few, so they contend).
    pub keys: usize,
    /// How long faults are injected while the clients run.
    pub duration: Duration,
    pub seed: u64,
    /// The kinds of fault to inject (all of them: [`FaultKind::ALL`]).
    pub faults: Vec<FaultKind>,
    /// A bug to plant in every member (`CONCLAVE_PLANTED_BUG`, debug builds of Conclave only).
    pub planted_bug: Option<&'static str>,
}

/// What a run did and found.
pub struct Report {
    pub config: RunConfig,
    pub history: History,
    pub faults: Vec<String>,
    pub violations: Vec<Violation>,
    /// Lock and election grants of a key already gone when they were answered.
    pub grants_of_gone_keys: usize,
    /// Snapshots the members installed from their leaders (counted in their logs).
    pub snapshot_installs: usize,
    /// The plugin deploys made (Conclave only).
    pub deploys: Vec<Deploy>,
    /// The members' data dirs (each with its log as `log.txt`), kept when a check failed.
    pub kept: Vec<std::path::PathBuf>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answered = self.history.operations.iter().filter(|op| op.completed.is_some()).count();
        writeln!(
            f,
            "seed {}: {} operations ({answered} answered), {} leases, {} lock and election grants ({} of a key already gone), {} watchers ({} compactions met), {} revisions, {} compactions, {} faults, {} snapshot installs, {} plugin deploys ({} answered), {} violations",
            self.config.seed,
            self.history.operations.len(),
            self.history.leases.len(),
            self.history.grants.len(),
            self.grants_of_gone_keys,
            self.history.watches.len(),
            self.history.watches.iter().map(|w| w.compacted.len()).sum::<usize>(),
            self.history.log.len(),
            self.history.compactions.len(),
            self.faults.len(),
            self.snapshot_installs,
            self.deploys.len(),
            self.deploys.iter().filter(|d| d.answered).count(),
            self.violations.len()
        )?;
        for fault in &self.faults {
            writeln!(f, "  fault: {fault}")?;
        }
        let mut by_rule: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for violation in &self.violations {
            *by_rule.entry(violation.rule).or_default() += 1;
        }
        for (rule, count) in by_rule {
            writeln!(f, "  violations of {rule}: {count}")?;
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

pub async fn run(config: RunConfig) -> Result<Report> {
    // The deployer's plugin builds, made before the clock starts (etcd has no plugins).
    let builds = match config.kind {
        Kind::Conclave => Some(Arc::new(tokio::task::block_in_place(deploys::builds)?)),
        Kind::Etcd => None,
    };
    let (mut cluster, network, disk) = behind_proxies(&config).await?;
    tokio::task::block_in_place(|| cluster.launch_all())?;
    let endpoints = cluster.endpoints();
    let clock = Clock::start();
    let stop = Arc::new(AtomicBool::new(false));
    let (target, target_rx) = watch::channel(i64::MAX);

    let (recorder_next, recorder_rx) = watch::channel(1);
    let recorder = tokio::spawn(watch_all(usize::MAX, endpoints.clone(), 1, target_rx.clone(), recorder_next));
    let compactor = tokio::spawn(compact_behind(endpoints.clone(), recorder_rx, config.seed, stop.clone()));
    let mut watchers = JoinSet::new();
    for watcher in 0..config.watchers {
        let from_revision = 1 + watcher as i64 * 10;
        watchers.spawn(watch_all(watcher, endpoints.clone(), from_revision, target_rx.clone(), watch::channel(0).0));
    }
    let mut clients = JoinSet::new();
    for client in 0..config.clients {
        let rng = client_rng(config.seed, client);
        clients.spawn(client_loop(client, endpoints.clone(), config.keys, rng, clock, stop.clone()));
    }
    let mut recipe_clients = JoinSet::new();
    for (i, client) in (config.clients + config.lease_clients..).take(2 * config.recipe_clients).enumerate() {
        let rng = client_rng(config.seed, client);
        let recipe = if i % 2 == 0 { Recipe::Lock } else { Recipe::Election };
        recipe_clients.spawn(recipe_loop(client, recipe, endpoints.clone(), rng, clock, stop.clone()));
    }
    let mut lease_clients = JoinSet::new();
    for client in config.clients..config.clients + config.lease_clients {
        let rng = client_rng(config.seed, client);
        lease_clients.spawn(lease_loop(client, endpoints.clone(), rng, clock, stop.clone()));
    }

    let deployer = builds.map(|builds| (builds.clone(), tokio::spawn(deploy_loop(endpoints.clone(), builds, config.seed, stop.clone()))));

    let injected = match faults::inject(&mut cluster, &network, disk.as_ref(), &config, clock).await {
        Ok(injected) => injected,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            [recorder.abort_handle(), compactor.abort_handle()].iter().for_each(|task| task.abort());
            let kept: Vec<_> = cluster.members.iter_mut().map(|m| m.keep_data_dir()).collect();
            disk.map(SmallDisk::keep);
            if e.downcast_ref::<NotRecovered>().is_none() {
                let dirs: Vec<String> = kept.iter().map(|dir| dir.display().to_string()).collect();
                return Err(e.context(format!("seed {}: the faults stopped; members' data dirs and logs kept in {}", config.seed, dirs.join(", "))));
            }
            let mut evidence: Vec<String> = format!("{e:#}").lines().map(str::to_string).collect();
            for member in cluster.members.iter_mut() {
                if let Some(status) = member.exit_status() {
                    evidence.push(format!("{} exited on its own: {status}", member.name()));
                }
            }
            let violations = vec![Violation { rule: "recovery", detail: "the faults stopped: a member did not start again, or the members agreed on no leader, after one healed".into(), evidence }];
            return Ok(Report { config, history: History::default(), faults: Vec::new(), violations, grants_of_gone_keys: 0, snapshot_installs: 0, deploys: Vec::new(), kept });
        }
    };
    stop.store(true, Ordering::Relaxed);
    let mut operations = injected.operations;
    while let Some(done) = clients.join_next().await {
        operations.extend(done?);
    }
    let mut leases = Vec::new();
    while let Some(done) = lease_clients.join_next().await {
        let (of_client, lease_operations) = done?;
        leases.extend(of_client);
        operations.extend(lease_operations);
    }
    operations.sort_by_key(|op| op.invoked);
    let grants = recipe_clients.join_all().await.into_iter().flatten().collect();
    let compactions = compactor.await?;
    let deployed = match deployer {
        Some((builds, deployer)) => Some((builds, deployer.await?)),
        None => None,
    };
    let mut violations: Vec<Violation> = leased_keys_gone(&endpoints).await.into_iter().collect();

    let last = last_revision(&endpoints).await?;
    target.send_replace(last);
    let mut watches = Vec::new();
    while let Some(done) = watchers.join_next().await {
        watches.push(done?);
    }
    watches.sort_by_key(|w| w.watcher);
    let log = the_log(recorder.await?, last)?;
    let history = History { operations, watches, log, compactions, leases, grants };
    violations.extend(check(&history));
    let grants_of_gone_keys = grants_of_gone_keys(&history);
    violations.extend(converged(&cluster, last).await);
    if let Some((builds, deploys)) = &deployed {
        violations.extend(deploys_converged(&endpoints, builds, deploys).await);
    }
    let snapshot_installs = cluster.members.iter().map(|m| m.log().matches(SNAPSHOT_INSTALLED).count()).sum();
    let kept = if violations.is_empty() { Vec::new() } else { cluster.members.iter_mut().map(|m| m.keep_data_dir()).collect() };
    if !kept.is_empty() {
        // The last member's data dir is on it.
        disk.map(SmallDisk::keep);
    }
    let deploys = deployed.map_or_else(Vec::new, |(_, deploys)| deploys);
    Ok(Report { config, history, faults: injected.faults, violations, grants_of_gone_keys, snapshot_installs, deploys, kept })
}

/// Client `client`'s own random stream, from the run's seed.
fn client_rng(seed: u64, client: usize) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_add(1 + client as u64))
}

/// The run's members, not launched yet, each reached by its peers through a proxy of its own,
/// taking snapshots often; the last one keeps its data dir on a small disk of the run's, for the
/// disk-full fault (Conclave only: etcd 3.4 has no guard against a full disk and stops; left out
/// where a tmpfs cannot be mounted).
async fn behind_proxies(config: &RunConfig) -> Result<(Cluster, Network, Option<SmallDisk>)> {
    let mut ports: Vec<MemberPorts> = (0..config.members).map(|_| MemberPorts::free()).collect();
    let network = Network::start(&ports.iter().map(|p| p.peer).collect::<Vec<_>>())?;
    for (member, ports) in ports.iter_mut().enumerate() {
        ports.advertised_peer = network.port(member);
    }
    let snapshot_count = snapshot_count(config.kind).to_string();
    let mut cluster = Cluster::unstarted(config.kind, &ports, &["--snapshot-count", &snapshot_count], Schemes::PLAIN)?;
    if config.kind == Kind::Conclave {
        // Debug builds lose at each kill what a power loss would (release builds ignore it).
        cluster.members.iter_mut().for_each(|m| m.set_env("CONCLAVE_POWER_LOSS_MODEL", "1"));
    }
    if let Some(bug) = config.planted_bug {
        cluster.members.iter_mut().for_each(|m| m.set_env("CONCLAVE_PLANTED_BUG", bug));
    }
    let disk = match (config.kind, config.faults.contains(&FaultKind::DiskFull)) {
        (Kind::Conclave, true) => match SmallDisk::mount(SMALL_DISK_BYTES) {
            Ok(disk) => Some(disk),
            Err(e) => {
                eprintln!("the disk-full fault is left out: {e}");
                None
            }
        },
        _ => None,
    };
    if let (Some(disk), Some(last)) = (&disk, cluster.members.last_mut()) {
        last.place_data_dir_in(disk.path())?;
    }
    Ok((cluster, network, disk))
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

/// Once nobody keeps a lease alive, every key under a lease goes within the longest TTL (and the
/// time a quorum takes to come back).
async fn leased_keys_gone(endpoints: &[String]) -> Option<Violation> {
    let deadline = Instant::now() + Duration::from_secs(MAX_TTL as u64) + SETTLE_TIMEOUT;
    let prefix = format!("{PREFIX}lease");
    loop {
        let read = async { Client::connect(endpoints, None).await?.get(prefix.as_str(), Some(GetOptions::new().with_prefix().with_keys_only())).await };
        let left: Vec<String> = match read.await {
            Ok(got) if got.kvs().is_empty() => return None,
            Ok(got) => got.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect(),
            Err(e) => vec![e.to_string()],
        };
        if Instant::now() > deadline {
            let detail = format!("keys under leases nobody keeps alive are still there {MAX_TTL} s (and {SETTLE_TIMEOUT:?}) after the run");
            return Some(Violation { rule: "lease never expired", detail, evidence: left });
        }
        tokio::time::sleep(POLL).await;
    }
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
