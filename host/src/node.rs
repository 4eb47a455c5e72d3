//! One Conclave member: its data directory, identity, raft instance and MVCC store, the two ways
//! requests reach the store (a proposal through the log, or a local read), and membership changes
//! (made by the leader).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::raft_response::Response as Resp;
use conclave_proto::conclave::raft::{MemberChangeRequest, MemberChangeResponse, RaftRequest};
use conclave_proto::etcdserverpb::alarm_request::AlarmAction;
use conclave_proto::etcdserverpb::{AlarmRequest, AlarmType, ResponseHeader};
use openraft::SnapshotPolicy;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tonic::Status;

use crate::alarm::Alarms;
use crate::config::Config;
use crate::error::EtcdError;
use crate::identity::{load_identity, Identity};
use crate::lease::{IdGenerator, Lessor};
use crate::membership::{self, Reconfigurer};
use crate::mvcc::Store;
use crate::raft::{on_leader, Answer, CommittedIndex, Handover, LogStore, MemberNode, Network, Peers, Proposer, Raft, StateMachine};
use crate::watch::Hub;

pub struct Node {
    pub config: Config,
    pub identity: Identity,
    pub raft: Raft,
    proposer: Proposer,
    /// Holds proposals back while this member hands its leadership over (MoveLeader).
    pub handover: Handover,
    /// Connections to the other members.
    pub peers: Peers,
    /// How long a request waits for a leader during an election.
    pub leader_wait: Duration,
    /// Fans applied events out to watch streams.
    pub hub: Arc<Hub>,
    pub store: Arc<Store>,
    pub db: sled::Db,
    /// Lease deadlines, kept while this member leads.
    pub lessor: Arc<Lessor>,
    /// Ids for leases granted without one.
    pub lease_ids: IdGenerator,
    /// The highest log index known committed (the raft index `endpoint status` shows).
    pub committed: CommittedIndex,
    /// Size of the database on disk, refreshed in the background (a stat per request is too dear).
    db_size: Arc<AtomicU64>,
    /// The active alarms (NOSPACE refuses writes that add data).
    pub alarms: Arc<Alarms>,
    /// Makes membership changes while this member leads.
    reconfigurer: Reconfigurer,
    /// Signalled once this member learns it was removed from the cluster: it must stop.
    pub removed: Notify,
}

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
        let peers = Peers::default();
        let identity = load_identity(&config, &dir, &peers).await?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .open()
            .with_context(|| format!("opening data dir {} (corrupt, or in use by another process?)", dir.display()))?;
        let store = Arc::new(
            Store::open(db.open_tree("mvcc")?)
                .with_context(|| format!("loading the key-value store in {}", dir.display()))?,
        );
        if let Some(snapshot) = &config.restore_snapshot {
            restore(&store, snapshot)?;
            db.flush()?;
        }
        let log_store = LogStore::open(&db)?;
        let committed = log_store.committed_index();
        let hub = Arc::new(Hub::default());
        let alarms = Arc::new(Alarms::load(&store)?);
        let lessor = Arc::new(Lessor::default());
        let state_machine = StateMachine::new(store.clone(), hub.clone(), alarms.clone(), lessor.clone(), dir.join("snap"))?;

        let raft_config = openraft::Config {
            cluster_name: config.initial_cluster_token.clone(),
            heartbeat_interval: config.heartbeat_interval,
            // A follower that stops hearing from the leader waits out openraft's leader lease
            // (election_timeout_max) and then its own random timeout in [min, max) before it
            // campaigns: 1.25-1.5 x --election-timeout in all, within etcd's [1, 2) x range.
            election_timeout_min: config.election_timeout / 2,
            election_timeout_max: config.election_timeout * 3 / 4,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
            // Like etcd, keep entries behind a snapshot for slow followers (etcd keeps 5,000),
            // but never more than a snapshot interval, so a small --snapshot-count bounds the log.
            max_in_snapshot_log_to_keep: config.snapshot_count.min(5_000),
            // A snapshot goes in 1 MiB chunks, and the last one is answered only once the whole
            // store is imported: openraft's 200 ms per chunk would fail (and retry forever) any
            // snapshot of more than a few MiB.
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT.as_millis() as u64,
            ..Default::default()
        }
        .validate()?;
        let network = Network::new(identity.member_id, identity.cluster_id, peers.clone());
        let raft = Raft::new(identity.member_id, Arc::new(raft_config), network, log_store, state_machine)
            .await
            .context("starting raft")?;
        bootstrap(&raft, &identity, fresh).await?;

        let db_size = Arc::new(AtomicU64::new(db.size_on_disk().unwrap_or(0)));
        tokio::spawn(refresh_db_size(db.clone(), Arc::downgrade(&db_size)));
        let leader_wait = leader_wait(&config);
        let handover = Handover::new(&raft);
        let proposer = Proposer::start(raft.clone(), peers.clone(), handover.clone(), leader_wait, request_timeout(&config));
        let lease_ids = IdGenerator::new(identity.member_id);
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
            db_size,
            lessor,
            lease_ids,
            alarms,
            reconfigurer,
            removed: Notify::new(),
            committed,
        });
        tokio::spawn(crate::lease::run_expiry(Arc::downgrade(&node)));
        tokio::spawn(crate::compactor::run(Arc::downgrade(&node), node.config.auto_compaction()?));
        tokio::spawn(membership::watch_removal(Arc::downgrade(&node)));
        Ok(node)
    }

    pub fn db_size(&self) -> u64 {
        self.db_size.load(Ordering::Relaxed)
    }

    /// A response header as etcd fills it: cluster, member, raft term and store revision.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            revision,
            raft_term: self.raft.metrics().borrow().current_term,
        })
    }

    /// The current raft term if this member is the leader.
    pub fn leader_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.state == openraft::ServerState::Leader).then_some(metrics.current_term)
    }

    /// Complete a header the store filled with a revision.
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = self.header(revision);
    }

    /// Put a write through the log and wait for its outcome once applied.
    pub async fn propose(&self, request: Req) -> Result<Resp, Status> {
        let request = RaftRequest { id: 0, request: Some(request) };
        if prost::Message::encoded_len(&request) > self.config.max_request_bytes {
            return Err(EtcdError::RequestTooLarge.into());
        }
        let response = self.proposer.propose(request).await?;
        if !response.error.is_empty() {
            return Err(EtcdError::from_message(&response.error)
                .map(Status::from)
                .unwrap_or_else(|| Status::unknown(response.error)));
        }
        response.response.ok_or_else(|| Status::internal("apply produced no response"))
    }

    /// Wait until this member has applied everything committed before now (raft ReadIndex: the
    /// leader's own, or, on a follower, the leader's read index once applied here).
    pub async fn linearize(&self) -> Result<(), Status> {
        let peers = &self.peers;
        let answer = on_leader(&self.raft, self.leader_wait, |url| async move { peers.read_index(&url).await }).await?;
        match answer {
            Answer::Local => self.raft.ensure_linearizable().await.map(|_| ()).map_err(|_| EtcdError::NoLeader.into()),
            Answer::Remote(index) => self
                .raft
                .wait(Some(self.leader_wait))
                .applied_index_at_least(Some(index), "read index applied")
                .await
                .map(|_| ())
                .map_err(|_| EtcdError::Timeout.into()),
        }
    }

    /// Have the leader make a membership change (here, if this member leads).
    pub async fn change_membership(&self, change: MemberChangeRequest) -> Result<MemberChangeResponse, Status> {
        let peers = &self.peers;
        let answer = on_leader(&self.raft, self.leader_wait, |url| {
            let change = change.clone();
            async move { peers.change_membership(&url, change).await }
        })
        .await?;
        match answer {
            Answer::Local => self.reconfigurer.change(change).await,
            Answer::Remote(changed) => Ok(changed),
        }
    }

    /// Make a membership change for another member if this member leads (NOT_LEADER otherwise).
    pub async fn change_membership_as_leader(&self, change: MemberChangeRequest) -> Result<MemberChangeResponse, Status> {
        self.reconfigurer.change(change).await
    }

    /// Whether this member is a learner (a member that does not vote).
    pub fn is_learner(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let me = self.identity.member_id;
        membership.get_node(&me).is_some() && !membership.voter_ids().any(|id| id == me)
    }

    /// etcd's learners serve only serializable reads and status: refuse anything else.
    pub fn refuse_if_learner(&self) -> Result<(), Status> {
        if self.is_learner() {
            return Err(EtcdError::NotSupportedForLearner.into());
        }
        Ok(())
    }

    /// Refuse writes that add data once the database outgrows its quota, raising etcd's NOSPACE
    /// alarm for this member (through the log, so every member refuses them until an operator
    /// disarms it), or while the alarm is active.
    pub async fn check_quota(&self) -> Result<(), Status> {
        if self.alarms.no_space() {
            return Err(EtcdError::NoSpace.into());
        }
        if self.db_size() <= self.config.quota_bytes() {
            return Ok(());
        }
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.identity.member_id,
            alarm: AlarmType::Nospace as i32,
        };
        if let Err(status) = self.propose(Req::Alarm(raise)).await {
            tracing::warn!(error = %status.message(), "raising the NOSPACE alarm failed");
        }
        Err(EtcdError::NoSpace.into())
    }
}

/// Size of the chunks a snapshot is sent in.
const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// How long one snapshot chunk may take, the last one including the import of the whole store.
const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(5 * 60);

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

async fn refresh_db_size(db: sled::Db, size: std::sync::Weak<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(size) = size.upgrade() else { return };
        size.store(db.size_on_disk().unwrap_or(0), Ordering::Relaxed);
    }
}
