//! The etcd Cluster service. Membership changes arrive with multi-member clusters; until then the
//! member list is this one member.

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
        let identity = &self.node.identity;
        let member = Member {
            id: identity.member_id,
            name: identity.name.clone(),
            peer_ur_ls: identity.peer_urls.clone(),
            client_ur_ls: identity.client_urls.clone(),
            is_learner: false,
        };
        Ok(Response::new(MemberListResponse {
            header: self.node.header(0),
            members: vec![member],
        }))
    }

    async fn member_promote(&self, _request: Request<MemberPromoteRequest>) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(not_yet())
    }
}
