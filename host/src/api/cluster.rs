//! The etcd Cluster service. The member list is raft's membership, named from the initial
//! cluster; other members' client URLs are asked of them over the peer service (and remembered).
//! Membership changes are not supported yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_proto::etcdserverpb::cluster_server::Cluster;
use conclave_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::node::Node;

/// How long a member list waits for a peer to say what its client URLs are.
const MEMBER_INFO_WAIT: Duration = Duration::from_millis(500);

pub struct ClusterService {
    node: Arc<Node>,
    /// Client URLs of other members, by member id, once they told us.
    client_urls: Mutex<HashMap<u64, Vec<String>>>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node, client_urls: Mutex::default() }
    }

    /// The client URLs of member `id` at peer URL `peer_url`: ours, remembered, or asked for
    /// (empty if it does not answer).
    async fn client_urls(&self, id: u64, peer_url: &str) -> Vec<String> {
        let identity = &self.node.identity;
        if id == identity.member_id {
            return identity.client_urls.clone();
        }
        if let Some(urls) = self.client_urls.lock().expect("client URL cache poisoned").get(&id) {
            return urls.clone();
        }
        let Some(info) = self.node.peers.member_info(peer_url, MEMBER_INFO_WAIT).await else { return Vec::new() };
        self.client_urls.lock().expect("client URL cache poisoned").insert(id, info.client_urls.clone());
        info.client_urls
    }
}

impl ClusterService {
    /// Every member of raft's membership (voters and learners), without client URLs; the initial
    /// cluster while this member has not heard from the others yet.
    fn members(&self) -> Vec<Member> {
        let initial = self.node.identity.initial_members();
        let metrics = self.node.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        if membership.nodes().next().is_none() {
            let member = |m: &crate::node::InitialMember| Member {
                id: m.member_id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: Vec::new(),
                is_learner: false,
            };
            return initial.iter().map(member).collect();
        }
        let voters: Vec<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(&id, node)| {
                let known = initial.iter().find(|m| m.member_id == id);
                Member {
                    id,
                    name: known.map(|m| m.name.clone()).unwrap_or_default(),
                    peer_ur_ls: known.map_or_else(|| vec![node.addr.clone()], |m| m.peer_urls.clone()),
                    client_ur_ls: Vec::new(),
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
        let members = futures::future::join_all(self.members().into_iter().map(|mut member| async move {
            member.client_ur_ls = self.client_urls(member.id, member.peer_ur_ls.first().map_or("", String::as_str)).await;
            member
        }))
        .await;
        Ok(Response::new(MemberListResponse { header: self.node.header(0), members }))
    }

    async fn member_promote(&self, _request: Request<MemberPromoteRequest>) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(not_yet())
    }
}
