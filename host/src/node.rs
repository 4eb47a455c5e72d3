//! One Conclave member: its data directory, identity, raft instance and MVCC store, and the two
//! ways requests reach the store (a proposal through the log, or a local read).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::raft_response::Response as Resp;
use conclave_proto::conclave::raft::{MemberInfoResponse, RaftRequest};
use conclave_proto::etcdserverpb::ResponseHeader;
use openraft::{BasicNode, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::config::Config;
use crate::error::EtcdError;
use crate::lease::{IdGenerator, Lessor};
use crate::mvcc::Store;
use crate::raft::{on_leader, Answer, CommittedIndex, LogStore, Network, Peers, Proposer, Raft, StateMachine};
use crate::watch::Hub;

/// Who this member is; fixed when its data directory is first created.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    pub name: String,
    pub member_id: u64,
    pub cluster_id: u64,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    /// The members the cluster started with (empty in data dirs of one-member builds: this
    /// member alone).
    #[serde(default)]
    pub initial_cluster: Vec<InitialMember>,
}

/// One member of `--initial-cluster`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InitialMember {
    pub name: String,
    pub member_id: u64,
    pub peer_urls: Vec<String>,
}

impl Identity {
    /// The initial cluster, with this member alone for data dirs that did not record it.
    pub fn initial_members(&self) -> Vec<InitialMember> {
        if self.initial_cluster.is_empty() {
            let me = InitialMember { name: self.name.clone(), member_id: self.member_id, peer_urls: self.peer_urls.clone() };
            return vec![me];
        }
        self.initial_cluster.clone()
    }
}

pub struct Node {
    pub config: Config,
    pub identity: Identity,
    pub raft: Raft,
    proposer: Proposer,
    /// Connections to the other members.
    pub peers: Peers,
    /// How long a request waits for a leader during an election.
    pub leader_wait: Duration,
    /// Fans applied events out to watch streams.
    pub hub: Arc<Hub>,
    pub store: Arc<Store>,
    pub db: sled::Db,
    /// Lease deadlines, kept while this member leads.
    pub lessor: Lessor,
    /// Ids for leases granted without one.
    pub lease_ids: IdGenerator,
    /// The highest log index known committed (the raft index `endpoint status` shows).
    pub committed: CommittedIndex,
    /// Size of the database on disk, refreshed in the background (a stat per request is too dear).
    db_size: Arc<AtomicU64>,
}

/// etcd derives ids from hashes of the peer URLs and the cluster token; so do we (the values
/// differ from etcd's, which clients treat as opaque).
fn hash_id(parts: &[&str]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
}

/// A member's id: a hash of the cluster token and its sorted peer URLs.
fn member_id(token: &str, peer_urls: &[String]) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort();
    hash_id(&[&[token], urls.as_slice()].concat())
}

/// The cluster's id: a hash of the cluster token and its members' sorted ids.
fn cluster_id(token: &str, members: &[InitialMember]) -> u64 {
    let mut ids: Vec<u64> = members.iter().map(|m| m.member_id).collect();
    ids.sort();
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    let parts: Vec<&str> = std::iter::once(token).chain(ids.iter().map(String::as_str)).collect();
    hash_id(&parts)
}

/// `--initial-cluster` grouped by member (a name may appear once per peer URL), checked:
/// no peer URL twice, and a known `--initial-cluster-state`.
fn initial_cluster(config: &Config) -> anyhow::Result<Vec<InitialMember>> {
    match config.initial_cluster_state.as_str() {
        "new" => {}
        "existing" => bail!("--initial-cluster-state existing (joining a running cluster) is not supported yet"),
        other => bail!("--initial-cluster-state must be \"new\" or \"existing\", not {other:?}"),
    }
    let mut members: Vec<InitialMember> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, url) in config.initial_members()? {
        if !seen.insert(url.clone()) {
            bail!("--initial-cluster has peer URL {url} more than once");
        }
        match members.iter_mut().find(|m| m.name == name) {
            Some(member) => member.peer_urls.push(url),
            None => members.push(InitialMember { name, member_id: 0, peer_urls: vec![url] }),
        }
    }
    for member in &mut members {
        member.member_id = member_id(&config.initial_cluster_token, &member.peer_urls);
    }
    Ok(members)
}

fn new_identity(config: &Config) -> anyhow::Result<Identity> {
    let members = initial_cluster(config)?;
    let Some(ours) = members.iter().find(|m| m.name == config.name) else {
        bail!("couldn't find local name {:?} in the initial cluster configuration", config.name);
    };
    if ours.peer_urls != config.initial_advertise_peer_urls {
        bail!(
            "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
            config.name,
            ours.peer_urls.join(","),
            config.initial_advertise_peer_urls.join(",")
        );
    }
    Ok(Identity {
        name: config.name.clone(),
        member_id: ours.member_id,
        cluster_id: cluster_id(&config.initial_cluster_token, &members),
        peer_urls: ours.peer_urls.clone(),
        client_urls: config.advertise_client_urls.clone(),
        initial_cluster: members,
    })
}

const IDENTITY_FILE: &str = "member.json";

/// Load the identity stored in the data directory, or record a new one. It is checked before the
/// database is opened, so the data directory of another member is refused without being touched.
fn load_identity(config: &Config, dir: &Path) -> anyhow::Result<Identity> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: Identity = serde_json::from_slice(&bytes)
                .with_context(|| format!("data dir {}: member identity {} is corrupt", dir.display(), path.display()))?;
            if stored.name != config.name {
                bail!(
                    "data dir {} belongs to member {:?} (id {:x}), not {:?}",
                    dir.display(),
                    stored.name,
                    stored.member_id,
                    config.name
                );
            }
            Ok(stored)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join("db").exists() {
                bail!("data dir {} has a database but no {IDENTITY_FILE}: refusing to guess whose it is", dir.display());
            }
            let identity = new_identity(config)?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&identity)?)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            Ok(identity)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl Node {
    /// Open (or create) the data directory and start raft; returns once this member can serve.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Node>> {
        let dir = config.data_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating data dir {}", dir.display()))?;
        let fresh = !dir.join("db").exists();
        if config.restore_snapshot.is_some() && !fresh {
            bail!("--restore-snapshot needs a new data dir, and {} already has data", dir.display());
        }
        let identity = load_identity(&config, &dir)?;
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
        let state_machine = StateMachine::new(store.clone(), hub.clone(), dir.join("snap"))?;

        let raft_config = openraft::Config {
            cluster_name: config.initial_cluster_token.clone(),
            heartbeat_interval: config.heartbeat_interval,
            election_timeout_min: config.election_timeout,
            // openraft waits out a leader lease of election_timeout_max before voting, then a random
            // timeout in [min, max): a narrow range keeps failover near etcd's.
            election_timeout_max: config.election_timeout * 3 / 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
            // Like etcd, keep entries behind a snapshot for slow followers (etcd keeps 5,000),
            // but never more than a snapshot interval, so a small --snapshot-count bounds the log.
            max_in_snapshot_log_to_keep: config.snapshot_count.min(5_000),
            ..Default::default()
        }
        .validate()?;
        let peers = Peers::default();
        let network = Network::new(identity.member_id, peers.clone());
        let raft = Raft::new(identity.member_id, Arc::new(raft_config), network, log_store, state_machine)
            .await
            .context("starting raft")?;
        bootstrap(&raft, &identity, fresh).await?;

        let db_size = Arc::new(AtomicU64::new(db.size_on_disk().unwrap_or(0)));
        tokio::spawn(refresh_db_size(db.clone(), Arc::downgrade(&db_size)));
        let leader_wait = leader_wait(&config);
        let proposer = Proposer::start(raft.clone(), peers.clone(), leader_wait);
        let lease_ids = IdGenerator::new(identity.member_id);
        let node = Arc::new(Node {
            config,
            identity,
            raft,
            proposer,
            peers,
            leader_wait,
            hub,
            store,
            db,
            db_size,
            lessor: Lessor::default(),
            lease_ids,
            committed,
        });
        tokio::spawn(crate::lease::run_expiry(Arc::downgrade(&node)));
        Ok(node)
    }

    /// What this member tells its peers about itself.
    pub fn member_info(&self) -> MemberInfoResponse {
        MemberInfoResponse { name: self.identity.name.clone(), client_urls: self.identity.client_urls.clone() }
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

    /// Refuse writes once the database outgrows its quota, as etcd's NOSPACE alarm does.
    pub fn check_quota(&self) -> Result<(), Status> {
        if self.db_size() > self.config.quota_bytes() {
            return Err(EtcdError::NoSpace.into());
        }
        Ok(())
    }
}

/// How long requests wait for a leader: a few election timeouts.
fn leader_wait(config: &Config) -> Duration {
    Duration::from_millis(config.election_timeout.saturating_mul(5))
}

/// Static bootstrap like etcd's: in a new data dir, the member with the lowest id initializes
/// raft with the whole initial cluster and the others wait to hear from it. A restarted member
/// never initializes again (a one-member cluster may finish an interrupted first start).
async fn bootstrap(raft: &Raft, identity: &Identity, fresh: bool) -> anyhow::Result<()> {
    let members = identity.initial_members();
    let lowest = members.iter().map(|m| m.member_id).min();
    if lowest != Some(identity.member_id) || !(fresh || members.len() == 1) || raft.is_initialized().await? {
        return Ok(());
    }
    let nodes: BTreeMap<_, _> = members
        .iter()
        .map(|m| (m.member_id, BasicNode::new(m.peer_urls.first().cloned().unwrap_or_default())))
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    const CLUSTER: &str = "a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=http://127.0.0.1:3";

    fn config(name: &str, peer: &str, extra: &[&str]) -> Config {
        let args = ["conclave", "--name", name, "--initial-advertise-peer-urls", peer, "--initial-cluster", CLUSTER];
        Config::parse_from(args.iter().chain(extra))
    }

    #[test]
    fn every_member_computes_the_same_cluster() {
        let a = new_identity(&config("a", "http://127.0.0.1:1", &[])).unwrap();
        let c = new_identity(&config("c", "http://127.0.0.1:3", &[])).unwrap();
        assert_eq!(a.cluster_id, c.cluster_id);
        assert_eq!(a.initial_cluster, c.initial_cluster);
        let names: Vec<_> = a.initial_cluster.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(c.member_id, a.initial_cluster[2].member_id);
        assert_ne!(a.member_id, c.member_id);
    }

    #[test]
    fn the_token_changes_every_id() {
        let one = new_identity(&config("a", "http://127.0.0.1:1", &[])).unwrap();
        let other = new_identity(&config("a", "http://127.0.0.1:1", &["--initial-cluster-token", "t2"])).unwrap();
        assert_ne!(one.member_id, other.member_id);
        assert_ne!(one.cluster_id, other.cluster_id);
    }

    #[test]
    fn one_member_ids_are_unchanged() {
        // Ids as the one-member build computed them, so existing data dirs keep their headers.
        let identity = new_identity(&Config::parse_from(["conclave"])).unwrap();
        let id = hash_id(&["etcd-cluster", "http://localhost:2380"]);
        assert_eq!(identity.member_id, id);
        assert_eq!(identity.cluster_id, hash_id(&["etcd-cluster", &id.to_string()]));
    }

    #[test]
    fn inconsistent_flags_are_refused() {
        let error = |config: Config| new_identity(&config).unwrap_err().to_string();
        assert!(error(config("a", "http://127.0.0.1:9", &[])).contains("--initial-advertise-peer-urls"));
        assert!(error(config("d", "http://127.0.0.1:1", &[])).contains("couldn't find local name"));
        assert!(error(config("a", "http://127.0.0.1:1", &["--initial-cluster-state", "existing"])).contains("not supported"));
        assert!(error(config("a", "http://127.0.0.1:1", &["--initial-cluster-state", "old"])).contains("must be"));
        let twice = Config::parse_from(["conclave", "--name", "a", "--initial-advertise-peer-urls", "http://h:1", "--initial-cluster", "a=http://h:1,b=http://h:1"]);
        assert!(error(twice).contains("more than once"));
    }
}
