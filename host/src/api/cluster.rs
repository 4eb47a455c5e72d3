//! The etcd Cluster service. The member list is raft's membership, which carries each member's
//! name and client URLs (published by the member once it runs); changes go to the leader, which
//! checks and makes them (see [`crate::membership`]).

use std::sync::Arc;

use conclave_proto::conclave::raft::member_change_request::Change;
use conclave_proto::conclave::raft::{MemberChangeRequest, MemberChangeResponse};
use conclave_proto::etcdserverpb::cluster_server::Cluster;
use conclave_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::raft::etcd_members;

pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node }
    }

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

    async fn change(&self, change: Change) -> Result<MemberChangeResponse, Status> {
        self.node.refuse_if_learner()?;
        self.node.change_membership(MemberChangeRequest { change: Some(change) }).await
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        let changed = self.change(Change::Add(request.into_inner())).await?;
        Ok(Response::new(MemberAddResponse {
            header: self.node.header(0),
            member: changed.member,
            members: changed.members,
        }))
    }

    async fn member_remove(&self, request: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        let changed = self.change(Change::Remove(request.into_inner())).await?;
        Ok(Response::new(MemberRemoveResponse { header: self.node.header(0), members: changed.members }))
    }

    async fn member_update(&self, request: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        let changed = self.change(Change::Update(request.into_inner())).await?;
        Ok(Response::new(MemberUpdateResponse { header: self.node.header(0), members: changed.members }))
    }

    async fn member_list(&self, _request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        self.node.refuse_if_learner()?;
        Ok(Response::new(MemberListResponse { header: self.node.header(0), members: self.members() }))
    }

    async fn member_promote(&self, request: Request<MemberPromoteRequest>) -> Result<Response<MemberPromoteResponse>, Status> {
        let changed = self.change(Change::Promote(request.into_inner())).await?;
        Ok(Response::new(MemberPromoteResponse { header: self.node.header(0), members: changed.members }))
    }
}
