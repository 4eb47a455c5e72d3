//! The etcd Cluster service. The member list is raft's membership, named from the initial
//! cluster; membership changes are not supported yet.

use std::sync::Arc;

use conclave_proto::etcdserverpb::cluster_server::Cluster;
use conclave_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::node::Node;

pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node }
    }
}

impl ClusterService {
    /// Every member of raft's membership (voters and learners). Client URLs are known for this
    /// member only.
    fn members(&self) -> Vec<Member> {
        let identity = &self.node.identity;
        let initial = identity.initial_members();
        let metrics = self.node.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(&id, node)| {
                let known = initial.iter().find(|m| m.member_id == id);
                Member {
                    id,
                    name: known.map(|m| m.name.clone()).unwrap_or_default(),
                    peer_ur_ls: known.map_or_else(|| vec![node.addr.clone()], |m| m.peer_urls.clone()),
                    client_ur_ls: if id == identity.member_id { identity.client_urls.clone() } else { Vec::new() },
                    is_learner: !voters.contains(&id),
                }
            })
            .collect()
    }
}

fn not_yet() -> Status {
    Status::unimplemented("membership changes need a multi-member build of Conclave")
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, _request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        Err(not_yet())
    }

    async fn member_remove(&self, _request: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(not_yet())
    }

    async fn member_update(&self, _request: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(not_yet())
    }

    async fn member_list(&self, _request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse { header: self.node.header(0), members: self.members() }))
    }

    async fn member_promote(&self, _request: Request<MemberPromoteRequest>) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(not_yet())
    }
}
