//! A multi-member cluster of server processes on loopback: every member's ports are chosen up
//! front (its `--initial-cluster` names them all), every member is launched, then each is awaited
//! until it serves clients.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_client::Client;

use crate::clients::same_on_both;
use crate::etcdctl::etcdctl;
use crate::node::{Kind, Node, Schemes, free_port};

/// How long a cluster may take to agree on a leader (several election timeouts).
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between polls of the members' status.
const POLL: Duration = Duration::from_millis(50);
/// How long a member may take to answer a status request while the leader is sought.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a membership change may be refused because the cluster is not ready for it (etcd
/// refuses changes until its members have been connected for a few seconds).
const RECONFIG_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a removed member may take to notice and exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Cluster {
    pub members: Vec<Node>,
}

/// Where a member listens, and the peer port its peers are told to dial: the same, or a proxy's.
#[derive(Clone, Copy, Debug)]
pub struct MemberPorts {
    pub client: u16,
    pub peer: u16,
    pub advertised_peer: u16,
}

impl MemberPorts {
    /// Free ports, peers dialing the member directly.
    pub fn free() -> Self {
        let peer = free_port();
        MemberPorts { client: free_port(), peer, advertised_peer: peer }
    }
}

impl Cluster {
    /// Starts `size` members named `m0`, `m1`… with extra server flags, and waits until each
    /// serves clients.
    pub fn start(kind: Kind, size: usize, extra_args: &[&str]) -> Result<Cluster> {
        Cluster::start_with(kind, size, extra_args, Schemes::PLAIN)
    }

    /// [`Cluster::start`] with `https` URLs where `schemes` asks (the TLS flags in `extra_args`).
    pub fn start_with(kind: Kind, size: usize, extra_args: &[&str], schemes: Schemes) -> Result<Cluster> {
        let ports: Vec<MemberPorts> = (0..size).map(|_| MemberPorts::free()).collect();
        let mut cluster = Cluster::unstarted(kind, &ports, extra_args, schemes)?;
        cluster.launch_all()?;
        Ok(cluster)
    }

    /// Members named `m0`, `m1`… on `ports`, none launched yet (see [`Cluster::launch_all`]).
    pub fn unstarted(kind: Kind, ports: &[MemberPorts], extra_args: &[&str], schemes: Schemes) -> Result<Cluster> {
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}={}://127.0.0.1:{}", schemes.peer, p.advertised_peer))
            .collect::<Vec<_>>()
            .join(",");
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut member = Node::member(kind, &format!("m{i}"), p.client, p.peer, &initial_cluster, extra_args)?;
                member.set_schemes(schemes);
                if p.advertised_peer != p.peer {
                    member.advertise_peer_port(p.advertised_peer);
                }
                Ok(member)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Cluster { members })
    }

    /// kill -9 every member, then start them all again on their data dirs (all launched before
    /// any is awaited: a member may only be ready once a quorum runs).
    pub fn restart_all(&mut self) -> Result<()> {
        self.members.iter_mut().for_each(Node::kill9);
        self.launch_all()
    }

    /// Launch every member, then wait until each serves clients.
    pub fn launch_all(&mut self) -> Result<()> {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.launch(&all)
    }

    /// Launch the members at `indices` on their data dirs, then wait until each serves clients.
    pub fn launch(&mut self, indices: &[usize]) -> Result<()> {
        let starting = indices.iter().map(|&i| self.members[i].launch().map(|s| (i, s))).collect::<Result<Vec<_>>>()?;
        for (i, starting) in starting {
            self.members[i].wait_ready(starting)?;
        }
        Ok(())
    }

    /// Adds a member with `etcdctl member add` (as a learner if asked), then starts it the way
    /// etcd documents: with the `ETCD_INITIAL_CLUSTER` etcdctl printed and
    /// `--initial-cluster-state existing`. Returns its index once it serves clients.
    pub fn add_member(&mut self, learner: bool, extra_args: &[&str]) -> Result<usize> {
        let index = self.members.len();
        let name = format!("m{index}");
        let (client, peer) = (free_port(), free_port());
        let peer_url = format!("http://127.0.0.1:{peer}");
        let peer_urls = format!("--peer-urls={peer_url}");
        let mut args = vec!["member", "add", &name, &peer_urls];
        if learner {
            args.push("--learner");
        }
        let initial_cluster = initial_cluster_printed(&self.reconfigure(&args)?)?;
        let mut extra: Vec<&str> = vec!["--initial-cluster-state", "existing"];
        extra.extend_from_slice(extra_args);
        let kind = self.members[0].kind();
        let mut member = Node::member(kind, &name, client, peer, &initial_cluster, &extra)?;
        let starting = member.launch()?;
        member.wait_ready(starting)?;
        self.members.push(member);
        Ok(index)
    }

    /// Runs an etcdctl membership command against the first running member (one of the initial
    /// members, never a learner: learners refuse membership calls) until the cluster takes it
    /// (retrying while it is not ready: "unhealthy", i.e. not yet connected to every member, or a
    /// learner still catching up); its stdout.
    pub fn reconfigure(&self, args: &[&str]) -> Result<String> {
        self.reconfigure_avoiding(None, args)
    }

    /// [`Cluster::reconfigure`] through a member other than `avoid` (etcd answers a member's own
    /// removal with "server stopped").
    fn reconfigure_avoiding(&self, avoid: Option<usize>, args: &[&str]) -> Result<String> {
        let via = (0..self.members.len()).find(|&i| Some(i) != avoid && self.members[i].is_running());
        let endpoint = self.members[via.context("no other member runs")?].endpoint();
        let deadline = Instant::now() + RECONFIG_TIMEOUT;
        loop {
            let out = etcdctl(&endpoint, args, None)?;
            if out.code == 0 {
                return Ok(out.stdout);
            }
            let not_ready = ["unhealthy cluster", "which is in sync with leader"].iter().any(|e| out.stderr.contains(e));
            if !not_ready || Instant::now() > deadline {
                bail!("etcdctl {args:?} failed: {}", out.stderr);
            }
            std::thread::sleep(POLL);
        }
    }

    /// The member id of the member at `index`, as its status reports it.
    pub async fn member_id(&self, index: usize) -> Result<u64> {
        Ok(status(&self.members[index].endpoint()).await?.0)
    }

    /// Removes the member at `index` with `etcdctl member remove`, then waits until its process
    /// notices and exits.
    pub async fn remove_member(&mut self, index: usize) -> Result<()> {
        let id = format!("{:x}", self.member_id(index).await?);
        self.reconfigure_avoiding(Some(index), &["member", "remove", &id])?;
        let member = &mut self.members[index];
        if !member.wait_exit(EXIT_TIMEOUT) {
            bail!("{} still runs {EXIT_TIMEOUT:?} after it was removed; its output:\n{}", member.name(), member.log());
        }
        Ok(())
    }

    /// Removes the member at `index` (see [`Cluster::remove_member`]), then adds it back under
    /// its name and peer URL with an empty data dir, as etcd documents for replacing a member,
    /// and waits until it serves clients.
    pub async fn replace_member(&mut self, index: usize) -> Result<()> {
        self.remove_member(index).await?;
        let (name, peer_url) = (self.members[index].name().to_string(), self.members[index].peer_url());
        let peer_urls = format!("--peer-urls={peer_url}");
        let initial_cluster = initial_cluster_printed(&self.reconfigure(&["member", "add", &name, &peer_urls])?)?;
        let mut member = self.members[index].rejoining(&initial_cluster)?;
        let starting = member.launch()?;
        member.wait_ready(starting)?;
        self.members[index] = member;
        Ok(())
    }

    /// Client URLs of the members that run.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().filter(|m| m.is_running()).map(Node::endpoint).collect()
    }

    /// The index of the leader, once every running member agrees on one that runs (polled, up to
    /// a bounded timeout).
    pub async fn leader(&self) -> Result<usize> {
        self.leader_among(&(0..self.members.len()).collect::<Vec<_>>()).await
    }

    /// The index of the leader, once the running members among `indices` agree on one of them
    /// (polled, up to a bounded timeout): the others, stopped or cut off, are not asked.
    pub async fn leader_among(&self, indices: &[usize]) -> Result<usize> {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            if let Some(leader) = self.agreed_leader(indices).await {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("no agreed leader among members {indices:?} after {LEADER_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn agreed_leader(&self, indices: &[usize]) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for &index in indices {
            let member = &self.members[index];
            if !member.is_running() {
                continue;
            }
            // Bounded: a member that hangs counts as one that disagrees.
            let status = tokio::time::timeout(STATUS_TIMEOUT, status(&member.endpoint())).await.ok()?.ok()?;
            ids.push((index, status.0));
            leaders.push(status.1);
        }
        let first = *leaders.first()?;
        if leaders.iter().any(|&l| l != first) {
            return None;
        }
        ids.iter().find(|(_, id)| *id == first).map(|(index, _)| *index)
    }
}

/// Runs `check` on a fresh `size`-member etcd cluster, then on one of the subject (each member
/// with `extra_args`), and asserts that both produced the same transcript. Returns it. Assertions
/// inside `check` are thereby proven to hold for etcd before they judge the subject.
pub async fn same_on_etcd_and_subject_clusters<F, Fut, T>(size: usize, extra_args: &[&str], check: F) -> T
where
    F: Fn(Cluster) -> Fut,
    Fut: Future<Output = T>,
    T: PartialEq + Debug,
{
    same_on_both(|kind| Cluster::start(kind, size, extra_args), check).await
}

/// (member id, leader id) as the member at `endpoint` reports them.
async fn status(endpoint: &str) -> Result<(u64, u64)> {
    let mut client = Client::connect([endpoint], None).await.context("connect")?;
    let status = client.status().await.context("status")?;
    let header = status.header().context("status has a header")?;
    Ok((header.member_id(), status.leader()))
}

/// The `ETCD_INITIAL_CLUSTER` that `etcdctl member add` printed.
fn initial_cluster_printed(out: &str) -> Result<String> {
    let line = out.lines().find_map(|line| line.strip_prefix("ETCD_INITIAL_CLUSTER=\"")).and_then(|rest| rest.strip_suffix('"'));
    Ok(line.with_context(|| format!("no ETCD_INITIAL_CLUSTER in: {out}"))?.to_string())
}
