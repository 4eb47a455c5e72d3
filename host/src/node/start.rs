//! Starting a member: its data directory (a new one, a restored snapshot, or the one it left),
//! the sled database, the MVCC store, raft with etcd's timing translated to openraft's, the static
//! bootstrap of a new cluster, and the background tasks a member runs (lease expiry, compaction,
//! removal watch, database size).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use openraft::SnapshotPolicy;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::space::{self, Space};
use super::Node;
use crate::alarm::Alarms;
use crate::config::Config;
use crate::identity::{load_identity, Identity};
use crate::lease::{IdGenerator, Lessor};
use crate::membership::{self, Reconfigurer};
use crate::mvcc::Store;
use crate::raft::{ask_for_snapshots, purge_behind_snapshots, Handover, LogStore, MemberNode, Network, Peers, Proposer, QuorumContact, Raft, SnapshotDue, StateMachine, Waiting};
use crate::watch::Hub;

/// sled's page cache. Its default (1 GiB) made a member hold several times etcd's memory for the
/// same keys; the key index and recent values live in memory anyway, so older revisions are what
/// the cache serves.
const SLED_CACHE_BYTES: u64 = 64 << 20;

impl Node {
    /// Open (or create) the data directory and start raft. The member serves clients once it has
    /// also published itself (see [`membership::publish`]), which needs the peer service running.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Node>> {
        config.validate()?;
        let dir = config.data_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating data dir {}", dir.display()))?;
        let fresh = !dir.join("db").exists();
        if config.restore_snapshot.is_some() && !fresh {
            bail!("--restore-snapshot needs a new data dir, and {} already has data", dir.display());
        }
        let peers = Peers::new(crate::transport::tls::peer_client(&config)?);
        let identity = load_identity(&config, &dir, &peers).await?;
        peers.set_cluster_id(identity.cluster_id);
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
            .with_context(|| format!("opening data dir {} (corrupt, or in use by another process?)", dir.display()))?;
        let tree = db.open_tree("mvcc")?;
        if crate::planted::power_loss_model() && !fresh {
            tracing::warn!("power-loss model: starting from an empty store, rebuilt from the snapshot and the raft log");
            tree.clear()?;
        }
        let store = Arc::new(Store::open(tree).with_context(|| format!("loading the key-value store in {}", dir.display()))?);
        if let Some(snapshot) = &config.restore_snapshot {
            restore(&store, snapshot)?;
            db.flush()?;
        }
        // The last index in the snapshot on disk: the state machine tells, the log's purges wait,
        // and the purge behind each new snapshot follows.
        let snapshot_on_disk = tokio::sync::watch::Sender::new(0);
        let mut new_snapshots = snapshot_on_disk.subscribe();
        let log_store = LogStore::open(identity.member_id, &dir.join("wal"), &db, snapshot_on_disk.subscribe())
            .with_context(|| format!("opening the raft log in {}", dir.join("wal").display()))?;
        let committed = log_store.committed_index();
        let hub = Arc::new(Hub::default());
        let alarms = Arc::new(Alarms::load(&store)?);
        let lessor = Arc::new(Lessor::default());
        let plugin_changes = tokio::sync::watch::Sender::new(0);
        let snapshot_due = SnapshotDue::new(config.snapshot_count);
        let waiting = Arc::new(Waiting::default());
        let state_machine = StateMachine::new(
            store.clone(),
            hub.clone(),
            alarms.clone(),
            lessor.clone(),
            plugin_changes.clone(),
            dir.join("snap"),
            log_store.durable(),
            snapshot_due.clone(),
            snapshot_on_disk,
            waiting.clone(),
        )?;
        // The snapshot found at start is no new one.
        new_snapshots.mark_unchanged();
        log_store.check_holds(&dir.join("wal"), state_machine.applied_index()?, *new_snapshots.borrow())?;

        let raft_config = raft_config(&config)?;
        let network = Network::new(identity.member_id, peers.clone(), log_store.durable());
        let raft = Raft::new(identity.member_id, Arc::new(raft_config), network, log_store.clone(), state_machine)
            .await
            .context("starting raft")?;
        bootstrap(&raft, &identity, fresh).await?;
        tokio::spawn(ask_for_snapshots(raft.clone(), snapshot_due));
        tokio::spawn(purge_behind_snapshots(raft.clone(), log_store, new_snapshots, config.snapshot_count));

        let space = Space::new(&dir, &db, &store);
        let leader_wait = leader_wait(&config);
        let handover = Handover::new(&raft);
        let proposer = Proposer::start(raft.clone(), peers.clone(), handover.clone(), waiting.clone(), leader_wait, request_timeout(&config));
        let lease_ids = IdGenerator::new(identity.member_id);
        let quorum_contact = QuorumContact::follow(&raft);
        let leader_reads = Arc::new(crate::raft::leader_rounds(raft.clone(), leader_wait));
        let reads = super::read_rounds(raft.clone(), peers.clone(), leader_wait, leader_reads.clone());
        let reconfigurer = Reconfigurer::new(
            raft.clone(),
            peers.clone(),
            identity.member_id,
            config.initial_cluster_token.clone(),
            Duration::from_millis(config.election_timeout),
            leader_wait,
            config.strict_reconfig_check,
        );
        let node = Arc::new(Node {
            config,
            identity,
            raft,
            proposer,
            handover,
            peers,
            leader_wait,
            hub,
            store,
            db,
            space,
            lessor,
            lease_ids,
            alarms,
            reconfigurer,
            removed: Notify::new(),
            committed,
            waiting,
            plugin_changes,
            reads,
            leader_reads,
            quorum_contact,
        });
        tokio::spawn(space::watch(Arc::downgrade(&node)));
        tokio::spawn(crate::lease::run_expiry(Arc::downgrade(&node)));
        tokio::spawn(crate::compactor::run(Arc::downgrade(&node), node.config.auto_compaction()?));
        tokio::spawn(membership::watch_removal(Arc::downgrade(&node)));
        tokio::spawn(crate::metrics::follow_leader(node.raft.clone()));
        Ok(node)
    }
}

/// Size of the chunks a snapshot is sent in.
const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// How long one snapshot chunk may take, the last one including the import of the whole store.
const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// openraft's settings for etcd's flags.
fn raft_config(config: &Config) -> anyhow::Result<openraft::Config> {
    Ok(openraft::Config {
        cluster_name: config.initial_cluster_token.clone(),
        heartbeat_interval: config.heartbeat_interval,
        // A follower that stops hearing from the leader waits out openraft's leader lease
        // (election_timeout_max) and then its own random timeout in [min, max) before it
        // campaigns: 1.25-1.5 x --election-timeout in all, within etcd's [1, 2) x range.
        election_timeout_min: config.election_timeout / 2,
        election_timeout_max: config.election_timeout * 3 / 4,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        // openraft's own purge after a snapshot is off: it counts entries, and would also move
        // back behind a purge postponed while a follower reads the log (which it refuses).
        // `purge_behind_snapshots` purges instead, keeping 5,000 requests as etcd keeps 5,000
        // entries, never more than a snapshot interval.
        max_in_snapshot_log_to_keep: u64::MAX,
        // A snapshot goes in 1 MiB chunks, and the last one is answered only once the whole
        // store is imported: openraft's 200 ms per chunk would fail (and retry forever) any
        // snapshot of more than a few MiB.
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT.as_millis() as u64,
        ..Default::default()
    }
    .validate()?)
}

/// How long a write may take before it is answered "request timed out": etcd's 5 s plus two
/// election timeouts.
fn request_timeout(config: &Config) -> Duration {
    Duration::from_secs(5) + Duration::from_millis(config.election_timeout.saturating_mul(2))
}

/// How long requests wait for a leader: a few election timeouts.
fn leader_wait(config: &Config) -> Duration {
    Duration::from_millis(config.election_timeout.saturating_mul(5))
}

/// Static bootstrap like etcd's: in a new data dir, the member with the lowest id initializes
/// raft with the whole initial cluster and the others wait to hear from it. A restarted member
/// never initializes again (a one-member cluster may finish an interrupted first start), nor does
/// a member that joined a running cluster.
async fn bootstrap(raft: &Raft, identity: &Identity, fresh: bool) -> anyhow::Result<()> {
    let members = identity.initial_members();
    let lowest = members.iter().map(|m| m.member_id).min();
    let initializes = lowest == Some(identity.member_id) && !identity.joined && (fresh || members.len() == 1);
    if !initializes || raft.is_initialized().await? {
        return Ok(());
    }
    // Members publish their client URLs once they run.
    let nodes: BTreeMap<_, _> = members
        .iter()
        .map(|m| (m.member_id, MemberNode { name: m.name.clone(), peer_urls: m.peer_urls.clone(), client_urls: Vec::new() }))
        .collect();
    raft.initialize(nodes).await.context("initializing the cluster")?;
    Ok(())
}

/// Load a snapshot taken with the Maintenance API: the store export, zero padding, and the
/// SHA-256 of both (checked, so a truncated or damaged file is refused).
fn restore(store: &Store, path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading snapshot {}", path.display()))?;
    let Some(body_len) = bytes.len().checked_sub(32) else { bail!("snapshot {} is too short", path.display()) };
    let (body, digest) = bytes.split_at(body_len);
    if Sha256::digest(body).as_slice() != digest {
        bail!("snapshot {} fails its SHA-256 check (truncated or damaged)", path.display());
    }
    store.import(&mut &body[..]).with_context(|| format!("restoring {}", path.display()))?;
    // The raft state in the copy belongs to the cluster it came from.
    store.forget_meta(&[crate::raft::APPLIED_META, crate::raft::MEMBERSHIP_META])?;
    Ok(())
}
