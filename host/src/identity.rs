//! Who a member is: its name, member id and cluster id, fixed in `<data-dir>/member.json` when
//! the data directory is created — from `--initial-cluster` for a new cluster, or, for a member
//! joining a running cluster (`--initial-cluster-state existing`), from what the running members
//! say (the member must have been added with `member add` first).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::raft::Peers;

/// How long a joining member waits for each running member to describe the cluster.
const JOIN_ASK_WAIT: Duration = Duration::from_secs(2);
/// How long a new member waits for each other member to say which cluster it runs.
const PEER_CHECK_WAIT: Duration = Duration::from_millis(500);

/// Who this member is; fixed when its data directory is first created.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    pub name: String,
    pub member_id: u64,
    pub cluster_id: u64,
    pub peer_urls: Vec<String>,
    /// The members the cluster started with (empty in data dirs of one-member builds: this
    /// member alone), or had when this member joined it.
    #[serde(default)]
    pub initial_cluster: Vec<InitialMember>,
    /// This member joined a running cluster: it never initializes raft itself.
    #[serde(default)]
    pub joined: bool,
    /// The layout of the data dir (see [`DATA_FORMAT`]); absent in data dirs of earlier builds.
    #[serde(default)]
    pub data_format: u32,
}

/// The data dir layout this build writes and reads. 1: raft's membership records etcd's member
/// attributes (earlier builds recorded only a peer URL, which this build cannot decode).
pub const DATA_FORMAT: u32 = 1;

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

/// The id of a member added to a running cluster: a hash of the cluster token, its peer URLs and
/// `salt` (the time of the request, as etcd does, so a member re-added on the same URLs gets a
/// new id).
pub fn added_member_id(token: &str, peer_urls: &[String], salt: u128) -> u64 {
    let salt = salt.to_string();
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort();
    hash_id(&[&[token, salt.as_str()], urls.as_slice()].concat())
}

/// `--initial-cluster` grouped by member (a name may appear once per peer URL), checked:
/// no peer URL twice, and a known `--initial-cluster-state`.
fn initial_cluster(config: &Config) -> anyhow::Result<Vec<InitialMember>> {
    if !matches!(config.initial_cluster_state.as_str(), "new" | "existing") {
        bail!("--initial-cluster-state must be \"new\" or \"existing\", not {:?}", config.initial_cluster_state);
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

/// A new member must not start next to running members of another cluster: the usual cause is
/// an `--initial-cluster` (or token) that differs from the one the others started with, or a new
/// member started with `new` instead of `existing`. Members that do not answer are not running
/// yet, which is normal while a new cluster starts.
async fn refuse_running_other_cluster(identity: &Identity, peers: &Peers) -> anyhow::Result<()> {
    let others = identity.initial_cluster.iter().filter(|m| m.member_id != identity.member_id);
    for url in others.flat_map(|m| m.peer_urls.iter()) {
        let Ok(theirs) = peers.membership(url, PEER_CHECK_WAIT).await else { continue };
        if theirs.cluster_id != identity.cluster_id && !theirs.members.is_empty() {
            bail!(
                "the member at {url} belongs to cluster {:x}, but --initial-cluster and --initial-cluster-token \
                 describe cluster {:x}: give every member the same --initial-cluster, or, to join a running \
                 cluster, add this member with `etcdctl member add` and start it with --initial-cluster-state existing",
                theirs.cluster_id,
                identity.cluster_id
            );
        }
    }
    Ok(())
}

/// This member's entry of `--initial-cluster`, which must match `--initial-advertise-peer-urls`.
fn own_entry<'a>(config: &Config, members: &'a [InitialMember]) -> anyhow::Result<&'a InitialMember> {
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
    Ok(ours)
}

fn new_identity(config: &Config) -> anyhow::Result<Identity> {
    let members = initial_cluster(config)?;
    let ours = own_entry(config, &members)?;
    Ok(Identity {
        name: config.name.clone(),
        member_id: ours.member_id,
        cluster_id: cluster_id(&config.initial_cluster_token, &members),
        peer_urls: ours.peer_urls.clone(),
        initial_cluster: members,
        joined: false,
        data_format: DATA_FORMAT,
    })
}

/// The identity of a member joining a running cluster: the cluster id and this member's id as
/// the other members of `--initial-cluster` know them. Like etcd, their membership must list
/// exactly the peer URLs of `--initial-cluster` (what `etcdctl member add` printed).
async fn joining_identity(config: &Config, peers: &Peers) -> anyhow::Result<Identity> {
    let members = initial_cluster(config)?;
    let ours = own_entry(config, &members)?;
    let others = members.iter().filter(|m| m.name != config.name).flat_map(|m| m.peer_urls.iter());
    let mut failures = Vec::new();
    let mut cluster = None;
    for url in others {
        match peers.membership(url, JOIN_ASK_WAIT).await {
            Ok(answer) => {
                cluster = Some(answer);
                break;
            }
            Err(status) => failures.push(format!("{url}: {}", status.message())),
        }
    }
    let Some(cluster) = cluster else {
        bail!("cannot fetch cluster info from the peer URLs of --initial-cluster ({})", failures.join("; "));
    };
    let sorted = |urls: &[String]| {
        let mut urls = urls.to_vec();
        urls.sort();
        urls
    };
    let mut local: Vec<Vec<String>> = members.iter().map(|m| sorted(&m.peer_urls)).collect();
    let mut remote: Vec<Vec<String>> = cluster.members.iter().map(|m| sorted(&m.peer_ur_ls)).collect();
    local.sort();
    remote.sort();
    if local != remote {
        bail!(
            "--initial-cluster does not match the running cluster's members (peer URLs {:?}); \
             add this member with `etcdctl member add` and start it with the ETCD_INITIAL_CLUSTER it prints",
            remote
        );
    }
    let own_urls = sorted(&ours.peer_urls);
    let own = cluster.members.iter().find(|m| sorted(&m.peer_ur_ls) == own_urls).expect("matched above");
    let initial_cluster = cluster
        .members
        .iter()
        .map(|m| InitialMember { name: m.name.clone(), member_id: m.id, peer_urls: m.peer_ur_ls.clone() })
        .collect();
    Ok(Identity {
        name: config.name.clone(),
        member_id: own.id,
        cluster_id: cluster.cluster_id,
        peer_urls: ours.peer_urls.clone(),
        initial_cluster,
        joined: true,
        data_format: DATA_FORMAT,
    })
}

const IDENTITY_FILE: &str = "member.json";

/// Load the identity stored in the data directory, or record a new one. It is checked before the
/// database is opened, so the data directory of another member is refused without being touched.
pub async fn load_identity(config: &Config, dir: &Path, peers: &Peers) -> anyhow::Result<Identity> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: Identity = serde_json::from_slice(&bytes)
                .with_context(|| format!("data dir {}: member identity {} is corrupt", dir.display(), path.display()))?;
            if stored.data_format != DATA_FORMAT {
                bail!(
                    "data dir {} was written by a Conclave build with data format {} and this build reads format \
                     {DATA_FORMAT}: save a snapshot with the old build (`etcdctl snapshot save`) and start a new data \
                     dir from it with --restore-snapshot",
                    dir.display(),
                    stored.data_format
                );
            }
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
            let identity = match config.initial_cluster_state.as_str() {
                "existing" => joining_identity(config, peers).await?,
                _ => {
                    let identity = new_identity(config)?;
                    refuse_running_other_cluster(&identity, peers).await?;
                    identity
                }
            };
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&identity)?)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            Ok(identity)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
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
        assert!(error(config("a", "http://127.0.0.1:1", &["--initial-cluster-state", "old"])).contains("must be"));
        let twice = Config::parse_from(["conclave", "--name", "a", "--initial-advertise-peer-urls", "http://h:1", "--initial-cluster", "a=http://h:1,b=http://h:1"]);
        assert!(error(twice).contains("more than once"));
    }
}
