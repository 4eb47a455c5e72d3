//! Cluster membership. The member list is raft's membership, which carries each member's name
//! and client URLs (published by the member once it runs); changes go to the leader, which checks
//! and makes them (see [`crate::membership`]).

use conclave_proto::conclave::raft::member_change_request::Change;
use conclave_proto::conclave::raft::{MemberChangeRequest, MemberChangeResponse};
use conclave_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};

use super::{Caller, Service};
use crate::error::EtcdError;
use crate::raft::etcd_members;

impl Service {
    /// Every member as this member knows them; the initial cluster while it has not heard from
    /// the others yet.
    fn members(&self) -> Vec<Member> {
        let membership = self.node.raft.metrics().borrow().membership_config.membership().clone();
        if membership.nodes().next().is_some() {
            return etcd_members(&membership);
        }
        let member = |m: crate::identity::InitialMember| Member {
            id: m.member_id,
            name: m.name,
            peer_ur_ls: m.peer_urls,
            client_ur_ls: Vec::new(),
            is_learner: false,
        };
        self.node.identity.initial_members().into_iter().map(member).collect()
    }

    async fn change(&self, caller: &Caller, change: Change) -> Result<MemberChangeResponse, EtcdError> {
        self.refuse_if_learner()?;
        caller.check_admin()?;
        self.node.change_membership(MemberChangeRequest { change: Some(change) }).await
    }

    /// Make a membership change for another member if this member leads (the peer service's
    /// answer to a follower; "not the leader" otherwise).
    pub async fn change_membership_as_leader(&self, change: MemberChangeRequest) -> Result<MemberChangeResponse, EtcdError> {
        self.node.change_membership_as_leader(change).await
    }

    pub async fn member_add(&self, caller: &Caller, req: MemberAddRequest) -> Result<MemberAddResponse, EtcdError> {
        let changed = self.change(caller, Change::Add(req)).await?;
        Ok(MemberAddResponse { header: self.node.header(0), member: changed.member, members: changed.members })
    }

    pub async fn member_remove(&self, caller: &Caller, req: MemberRemoveRequest) -> Result<MemberRemoveResponse, EtcdError> {
        let changed = self.change(caller, Change::Remove(req)).await?;
        Ok(MemberRemoveResponse { header: self.node.header(0), members: changed.members })
    }

    pub async fn member_update(&self, caller: &Caller, req: MemberUpdateRequest) -> Result<MemberUpdateResponse, EtcdError> {
        let changed = self.change(caller, Change::Update(req)).await?;
        Ok(MemberUpdateResponse { header: self.node.header(0), members: changed.members })
    }

    pub async fn member_list(&self, _caller: &Caller, _req: MemberListRequest) -> Result<MemberListResponse, EtcdError> {
        self.refuse_if_learner()?;
        Ok(MemberListResponse { header: self.node.header(0), members: self.members() })
    }

    pub async fn member_promote(&self, caller: &Caller, req: MemberPromoteRequest) -> Result<MemberPromoteResponse, EtcdError> {
        let changed = self.change(caller, Change::Promote(req)).await?;
        Ok(MemberPromoteResponse { header: self.node.header(0), members: changed.members })
    }
}
