//! One Conclave member: its identity, raft instance and MVCC store, and the primitives requests
//! reach them with: a proposal through the log, a linearizable-read barrier, a membership change
//! through the leader, and the response header. Starting a member is [`start`]'s job; the rules
//! of each request are the service layer's ([`crate::service`]).

mod space;
mod start;


use std::sync::Arc;
use std::time::Duration;

use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::raft_response::Response as Resp;
use conclave_proto::conclave::raft::{MemberChangeRequest, MemberChangeResponse, RaftRequest};
use conclave_proto::etcdserverpb::alarm_request::AlarmAction;
use conclave_proto::etcdserverpb::{AlarmRequest, AlarmType, ResponseHeader};
use tokio::sync::Notify;
use tonic::Status;

use crate::alarm::Alarms;
use crate::config::Config;
use crate::error::EtcdError;
use crate::identity::Identity;
use crate::lease::{IdGenerator, Lessor};
use crate::membership::Reconfigurer;
use crate::mvcc::Store;
use crate::raft::{check_quorum, on_leader, recognised_leader, Answer, CommittedIndex, Handover, PeerService, Peers, Proposer, QuorumContact, Raft, ReadRounds, Waiting};
use crate::watch::Hub;

/// A running member. Its parts are the crate's to use; the binary only starts, serves and stops it.
pub struct Node {
    pub(crate) config: Config,
    pub(crate) identity: Identity,
    pub(crate) raft: Raft,
    proposer: Proposer,
    /// Holds proposals back while this member hands its leadership over (MoveLeader).
    pub(crate) handover: Handover,
    /// Connections to the other members.
    pub(crate) peers: Peers,
    /// How long a request waits for a leader during an election.
    pub(crate) leader_wait: Duration,
    /// Fans applied events out to watch streams.
    pub(crate) hub: Arc<Hub>,
    pub(crate) store: Arc<Store>,
    pub(crate) db: sled::Db,
    /// Lease deadlines, kept while this member leads.
    pub(crate) lessor: Arc<Lessor>,
    /// Ids for leases granted without one.
    pub(crate) lease_ids: IdGenerator,
    /// The highest log index known committed (the raft index `endpoint status` shows).
    pub(crate) committed: CommittedIndex,
    /// This member's clients waiting for their writes, and the index applied before they hear.
    waiting: Arc<Waiting>,
    /// The database's size for the quota, and the disk's free space.
    space: space::Space,
    /// The active alarms (NOSPACE refuses writes that add data).
    pub(crate) alarms: Arc<Alarms>,
    /// Makes membership changes while this member leads.
    reconfigurer: Reconfigurer,
    /// Signalled once this member learns it was removed from the cluster: it must stop.
    pub(crate) removed: Notify,
    /// Bumped each time applying changes the deployed plugins; the plugin registry follows it.
    pub(crate) plugin_changes: tokio::sync::watch::Sender<u64>,
    /// The read index of this member's linearizable reads, from the leader wherever it is.
    reads: ReadRounds<EtcdError>,
    /// This member's own read index while it leads (for its reads and its followers').
    leader_reads: Arc<ReadRounds<Status>>,
    /// When a quorum last acknowledged this member as leader.
    quorum_contact: QuorumContact,
}

impl Node {
    /// What the peer service of this member answers from, with `duties` (the service layer).
    pub fn peer_service(&self, duties: Arc<dyn crate::raft::LeaderDuties>) -> PeerService {
        PeerService {
            raft: self.raft.clone(),
            cluster_id: self.identity.cluster_id,
            handover: self.handover.clone(),
            duties,
            reads: self.leader_reads.clone(),
        }
    }

    /// Resolves once this member learns it was removed from the cluster: it must stop.
    pub async fn removed(&self) {
        self.removed.notified().await
    }

    /// Stop raft and make everything applied durable.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        self.raft.shutdown().await.ok();
        self.db.flush_async().await?;
        Ok(())
    }

    pub fn db_size(&self) -> u64 {
        self.space.db_size(&self.store)
    }

    /// Whether the data dir's disk is nearly full (see [`space`]).
    pub fn disk_short(&self) -> bool {
        self.space.disk_short(&self.store)
    }

    /// Raise etcd's NOSPACE alarm for this member, through the log (so every member refuses
    /// writes that add data until an operator disarms it).
    pub(crate) async fn raise_no_space(&self) {
        let raise = AlarmRequest { action: AlarmAction::Activate as i32, member_id: self.identity.member_id, alarm: AlarmType::Nospace as i32 };
        if let Err(e) = self.propose(Req::Alarm(raise)).await {
            tracing::warn!(error = %e, "raising the NOSPACE alarm failed");
        }
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

    /// The leader this member recognises now (`None` during an election, or on a leader cut off
    /// from its quorum), as `endpoint status` and `/health` report it.
    pub fn recognised_leader(&self) -> Option<u64> {
        recognised_leader(&self.raft.metrics().borrow(), check_quorum(&self.raft))
    }

    /// Whether this member still leads with no other member possibly elected meanwhile, as a
    /// lease renewal needs: a new leader counts every lease's TTL from its own election, so a
    /// renewal by a replaced leader promises a key a life it does not get (etcd 3.4 answers
    /// such renewals; 3.5 confirms leadership first). Confirmed for free while a quorum
    /// answered within openraft's shortest election timeout by this process's clock (a voter
    /// votes for nobody else for a leader lease of the longest one after hearing from its
    /// leader), else by a read-index round with a quorum.
    pub async fn confirm_leadership(&self) -> bool {
        let within = Duration::from_millis(self.raft.config().election_timeout_min);
        self.quorum_contact.acked_within(within) || self.leads_by_quorum().await
    }

    /// Whether this member still leads, by a read-index round with a quorum, whatever raft's
    /// metrics last said (a member just back from a pause reads metrics from before it).
    pub async fn leads_by_quorum(&self) -> bool {
        self.leader_reads.next().await.is_ok()
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
    pub async fn propose(&self, request: Req) -> Result<Resp, EtcdError> {
        let request = RaftRequest { id: 0, request: Some(request) };
        if prost::Message::encoded_len(&request) > self.config.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        let metrics = crate::metrics::get();
        metrics.proposals_pending.inc();
        let response = self.proposer.propose(request).await;
        metrics.proposals_pending.dec();
        let response = response.inspect_err(|_| {
            metrics.proposals_failed.inc();
        })?;
        if response.error_code != 0 {
            let refused = EtcdError::from_wire_code(response.error_code)
                .unwrap_or_else(|| EtcdError::internal(format!("unknown apply error code {}", response.error_code)));
            return Err(refused);
        }
        response.response.ok_or_else(|| EtcdError::internal("apply produced no response"))
    }

    /// Wait until this member has applied everything committed before now (raft ReadIndex: the
    /// leader's own, or, on a follower, the leader's read index once applied here).
    /// Concurrent reads share one read index ([`ReadRounds`]).
    pub async fn linearize(&self) -> Result<(), EtcdError> {
        if crate::planted::planted(crate::planted::Bug::StaleReads) {
            return Ok(());
        }
        let index = self.reads.next().await?;
        self.raft
            .wait(Some(self.leader_wait))
            .applied_index_at_least(Some(index), "read index applied")
            .await
            .map(|_| ())
            .map_err(|_| EtcdError::Timeout)
    }

    /// Have the leader make a membership change (here, if this member leads).
    pub async fn change_membership(&self, change: MemberChangeRequest) -> Result<MemberChangeResponse, EtcdError> {
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
    pub async fn change_membership_as_leader(&self, change: MemberChangeRequest) -> Result<MemberChangeResponse, EtcdError> {
        self.reconfigurer.change(change).await
    }

    /// The last log index this member applied, as `endpoint status` and `/metrics` report it. The
    /// state machine answers a write's client before raft's metrics learn of the apply: a client
    /// that heard back finds its write's index here.
    pub fn applied_index(&self) -> u64 {
        let raft_applied = self.raft.data_metrics().borrow().last_applied.map_or(0, |id| id.index);
        raft_applied.max(self.waiting.applied())
    }

    /// Whether this member is a learner (a member that does not vote).
    pub fn is_learner(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let me = self.identity.member_id;
        membership.get_node(&me).is_some() && !membership.voter_ids().any(|id| id == me)
    }
}

/// Read-index rounds for this member's linearizable reads: the leader's (`leader_reads` when this
/// member leads, else asked of the leader over the peer service), one request per round.
fn read_rounds(raft: Raft, peers: Peers, leader_wait: Duration, leader_reads: Arc<ReadRounds<Status>>) -> ReadRounds<EtcdError> {
    ReadRounds::start(move || {
        let (raft, peers, leader_reads) = (raft.clone(), peers.clone(), leader_reads.clone());
        async move {
            let peers = &peers;
            match on_leader(&raft, leader_wait, |url| async move { peers.read_index(&url).await }).await? {
                Answer::Local => leader_reads.next().await.map_err(|_| EtcdError::NoLeader),
                Answer::Remote(index) => Ok(index),
            }
        }
    })
}

