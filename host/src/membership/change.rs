//! Membership changes, made by the leader: etcd's member add, remove, update and promote, and a
//! member publishing its attributes. Each is checked as etcd 3.4 checks it (with its default
//! `--strict-reconfig-check`: a change must not leave the cluster without a working quorum) and
//! made as an openraft membership change, one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conclave_proto::conclave::raft::member_change_request::Change;
use conclave_proto::conclave::raft::{MemberAttributes, MemberChangeRequest, MemberChangeResponse};
use conclave_proto::etcdserverpb::{MemberAddRequest, MemberPromoteRequest, MemberRemoveRequest, MemberUpdateRequest};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tonic::Code;

use crate::error::EtcdError;
use crate::identity::added_member_id;
use crate::raft::{etcd_members, MemberNode, Membership, NodeId, Peers, Raft, NOT_LEADER};

/// A learner is ready for promotion once it has this share of the leader's log (etcd's rule).
const PROMOTE_READY: f64 = 0.9;
/// Pause before retrying while openraft finishes the previous membership change.
const IN_PROGRESS_PAUSE: Duration = Duration::from_millis(20);
/// etcd 3.4 allows one learner at a time.
const MAX_LEARNERS: usize = 1;

type Changes = ChangeMembers<NodeId, MemberNode>;

pub struct Reconfigurer {
    raft: Raft,
    peers: Peers,
    id: NodeId,
    /// `--initial-cluster-token`, hashed into the ids of added members.
    token: String,
    /// A peer counts as connected if it answered raft this recently.
    active_window: Duration,
    /// How long a change waits for the previous one to finish.
    wait: Duration,
    /// `--strict-reconfig-check`: refuse changes that could leave no working quorum.
    strict: bool,
    /// openraft makes one membership change at a time; changes queue here rather than fail.
    one_at_a_time: tokio::sync::Mutex<()>,
}

/// What a request changes, and the id of the member it adds.
struct Plan {
    changes: Changes,
    added: Option<NodeId>,
}

impl Plan {
    fn of(changes: Changes) -> Self {
        Plan { changes, added: None }
    }
}

impl Reconfigurer {
    pub fn new(raft: Raft, peers: Peers, id: NodeId, token: String, active_window: Duration, wait: Duration, strict: bool) -> Self {
        Reconfigurer { raft, peers, id, token, active_window, wait, strict, one_at_a_time: tokio::sync::Mutex::default() }
    }

    /// Check and make `request` if this member leads; NOT_LEADER otherwise.
    pub async fn change(&self, request: MemberChangeRequest) -> Result<MemberChangeResponse, EtcdError> {
        let _turn = self.one_at_a_time.lock().await;
        let deadline = Instant::now() + self.wait;
        loop {
            // openraft refuses (and logs an error) while the last change is not committed yet.
            let committed = |m: &openraft::RaftMetrics<NodeId, MemberNode>| m.membership_config.log_id() <= &m.last_applied;
            let _ = self.raft.wait(Some(deadline.saturating_duration_since(Instant::now()))).metrics(committed, "membership committed").await;
            let membership = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                if metrics.current_leader != Some(self.id) {
                    return Err(not_leader());
                }
                metrics.membership_config.membership().clone()
            };
            let Some(plan) = self.plan(&membership, request.change.clone())? else {
                return Ok(MemberChangeResponse { member: None, members: etcd_members(&membership) });
            };
            match self.raft.change_membership(plan.changes, false).await {
                Ok(written) => {
                    let members = written.membership.as_ref().map(etcd_members).unwrap_or_default();
                    let member = plan.added.and_then(|id| members.iter().find(|m| m.id == id).cloned());
                    return Ok(MemberChangeResponse { member, members });
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(IN_PROGRESS_PAUSE).await;
                }
                Err(e) => return Err(refused(e)),
            }
        }
    }

    /// The openraft change that makes `change`, once checked; `None` if there is nothing to change.
    fn plan(&self, membership: &Membership, change: Option<Change>) -> Result<Option<Plan>, EtcdError> {
        let cluster = Cluster::new(membership, self);
        match change {
            Some(Change::Add(add)) => self.plan_add(&cluster, add).map(Some),
            Some(Change::Remove(MemberRemoveRequest { id })) => cluster.plan_remove(id).map(Some),
            Some(Change::Update(MemberUpdateRequest { id, peer_ur_ls })) => cluster.plan_update(id, peer_ur_ls).map(Some),
            Some(Change::Promote(MemberPromoteRequest { id })) => self.plan_promote(&cluster, id).map(Some),
            Some(Change::Publish(attributes)) => cluster.plan_publish(attributes),
            None => Err(EtcdError::other(Code::InvalidArgument, "empty membership change")),
        }
    }

    fn plan_add(&self, cluster: &Cluster<'_>, add: MemberAddRequest) -> Result<Plan, EtcdError> {
        check_urls(&add.peer_ur_ls)?;
        if self.strict && !add.is_learner && !cluster.ready_to_add_voter() {
            return Err(EtcdError::NotEnoughStarted);
        }
        if self.strict && !cluster.all_voters_connected() {
            return Err(EtcdError::Unhealthy);
        }
        cluster.check_urls_unused(None, &add.peer_ur_ls)?;
        if add.is_learner && cluster.learners().count() >= MAX_LEARNERS {
            return Err(EtcdError::TooManyLearners);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let id = (now..)
            .map(|salt| added_member_id(&self.token, &add.peer_ur_ls, salt))
            .find(|id| *id != 0 && cluster.membership.get_node(id).is_none())
            .expect("an unused id among 2^64");
        let node = BTreeMap::from([(id, MemberNode { peer_urls: add.peer_ur_ls, ..Default::default() })]);
        let changes = if add.is_learner { Changes::AddNodes(node) } else { Changes::AddVoters(node) };
        Ok(Plan { changes, added: Some(id) })
    }

    fn plan_promote(&self, cluster: &Cluster<'_>, id: NodeId) -> Result<Plan, EtcdError> {
        cluster.node(id)?;
        if cluster.voters.contains(&id) {
            return Err(EtcdError::MemberNotLearner);
        }
        let metrics = self.raft.metrics().borrow().clone();
        let leader_index = metrics.last_log_index.unwrap_or(0);
        let matched = metrics.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map_or(0, |log| log.index);
        if (matched as f64) < leader_index as f64 * PROMOTE_READY {
            return Err(EtcdError::LearnerNotReady);
        }
        if self.strict && !cluster.ready_to_add_voter() {
            return Err(EtcdError::NotEnoughStarted);
        }
        Ok(Plan::of(Changes::AddVoterIds(BTreeSet::from([id]))))
    }
}

/// The membership being changed, as the leader sees it.
struct Cluster<'a> {
    membership: &'a Membership,
    voters: BTreeSet<NodeId>,
    /// The leader making the change (its peers, settings).
    leader: &'a Reconfigurer,
}

impl<'a> Cluster<'a> {
    fn new(membership: &'a Membership, reconfigurer: &'a Reconfigurer) -> Self {
        Cluster {
            membership,
            voters: membership.voter_ids().collect(),
            leader: reconfigurer,
        }
    }

    fn node(&self, id: NodeId) -> Result<&'a MemberNode, EtcdError> {
        self.membership.get_node(&id).ok_or(EtcdError::MemberNotFound)
    }

    fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.membership.nodes().map(|(id, _)| *id).filter(|id| !self.voters.contains(id))
    }

    /// A member is started once it has published its name.
    fn started(&self, id: NodeId) -> bool {
        self.membership.get_node(&id).is_some_and(|node| !node.name.is_empty())
    }

    fn connected(&self, id: NodeId) -> bool {
        id == self.leader.id || self.leader.peers.active_within(id, self.leader.active_window)
    }

    /// One more voter still leaves a quorum of started voters (etcd's IsReadyToAddVotingMember).
    fn ready_to_add_voter(&self) -> bool {
        let started = self.voters.iter().filter(|id| self.started(**id)).count();
        started >= quorum(self.voters.len() + 1)
    }

    fn all_voters_connected(&self) -> bool {
        self.voters.iter().all(|id| self.connected(*id))
    }

    /// No member but `except` uses any of `urls`.
    fn check_urls_unused(&self, except: Option<NodeId>, urls: &[String]) -> Result<(), EtcdError> {
        let taken = self
            .membership
            .nodes()
            .filter(|(id, _)| Some(**id) != except)
            .any(|(_, node)| node.peer_urls.iter().any(|url| urls.contains(url)));
        if taken {
            return Err(EtcdError::PeerUrlExists);
        }
        Ok(())
    }

    fn plan_remove(&self, id: NodeId) -> Result<Plan, EtcdError> {
        self.node(id)?;
        if !self.voters.contains(&id) {
            return Ok(Plan::of(Changes::RemoveNodes(BTreeSet::from([id]))));
        }
        if !self.leader.strict {
            return Ok(Plan::of(Changes::RemoveVoters(BTreeSet::from([id]))));
        }
        let remaining: Vec<NodeId> = self.voters.iter().copied().filter(|v| *v != id).collect();
        let started = remaining.iter().filter(|v| self.started(**v)).count();
        if started < quorum(remaining.len()) {
            return Err(EtcdError::NotEnoughStarted);
        }
        // Removing a member that is down takes nothing from the working quorum.
        let connected = remaining.iter().filter(|v| self.connected(**v)).count();
        if self.connected(id) && connected < quorum(remaining.len()) {
            return Err(EtcdError::Unhealthy);
        }
        Ok(Plan::of(Changes::RemoveVoters(BTreeSet::from([id]))))
    }

    fn plan_update(&self, id: NodeId, peer_urls: Vec<String>) -> Result<Plan, EtcdError> {
        check_urls(&peer_urls)?;
        let node = self.node(id)?;
        self.check_urls_unused(Some(id), &peer_urls)?;
        let updated = MemberNode { peer_urls, ..node.clone() };
        Ok(Plan::of(Changes::SetNodes(BTreeMap::from([(id, updated)]))))
    }

    fn plan_publish(&self, attributes: MemberAttributes) -> Result<Option<Plan>, EtcdError> {
        let node = self.node(attributes.id)?;
        if node.name == attributes.name && node.client_urls == attributes.client_urls {
            return Ok(None);
        }
        let updated = MemberNode { name: attributes.name, client_urls: attributes.client_urls, ..node.clone() };
        Ok(Some(Plan::of(Changes::SetNodes(BTreeMap::from([(attributes.id, updated)])))))
    }
}

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Peer URLs must be absolute http(s) URLs with a host and port, as etcd's `types.NewURLs` wants.
fn check_urls(urls: &[String]) -> Result<(), EtcdError> {
    let valid = |url: &String| {
        url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && u.port().is_some())
    };
    if urls.is_empty() || !urls.iter().all(valid) {
        return Err(EtcdError::MemberBadUrls);
    }
    Ok(())
}

/// This member does not lead (any more): the follower that asked tries the leader.
fn not_leader() -> EtcdError {
    EtcdError::other(Code::FailedPrecondition, NOT_LEADER)
}

/// openraft's refusal of a change, as the client sees it.
fn refused(e: RaftError<NodeId, ClientWriteError<NodeId, MemberNode>>) -> EtcdError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => not_leader(),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::LearnerNotFound(_))) => {
            EtcdError::MemberNotFound
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))) => {
            EtcdError::Timeout
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::EmptyMembership(_))) => {
            EtcdError::Unhealthy
        }
        RaftError::Fatal(fatal) => EtcdError::unavailable(fatal.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_must_be_absolute_with_a_port() {
        assert!(check_urls(&["http://127.0.0.1:2380".into()]).is_ok());
        assert!(check_urls(&["https://node.example:2380".into(), "http://10.0.0.1:7001".into()]).is_ok());
        for bad in ["foo", "http://host", "ftp://host:21", ""] {
            assert!(check_urls(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(check_urls(&[]).is_err());
    }

    #[test]
    fn quorum_is_a_majority() {
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(3), 2);
        assert_eq!(quorum(4), 3);
        assert_eq!(quorum(5), 3);
    }
}
