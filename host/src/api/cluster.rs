//! The etcd Cluster service over gRPC: decode, call [`Service`], map the error.

use conclave_proto::etcdserverpb::cluster_server::Cluster;
use conclave_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::answer;
use crate::service::{Caller, Service};

pub struct ClusterService {
    service: Service,
}

impl ClusterService {
    pub fn new(service: Service) -> Self {
        ClusterService { service }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        answer(self.service.member_add(&Caller::client(), request.into_inner()).await)
    }

    async fn member_remove(&self, request: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        answer(self.service.member_remove(&Caller::client(), request.into_inner()).await)
    }

    async fn member_update(&self, request: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        answer(self.service.member_update(&Caller::client(), request.into_inner()).await)
    }

    async fn member_list(&self, request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        answer(self.service.member_list(&Caller::client(), request.into_inner()).await)
    }

    async fn member_promote(&self, request: Request<MemberPromoteRequest>) -> Result<Response<MemberPromoteResponse>, Status> {
        answer(self.service.member_promote(&Caller::client(), request.into_inner()).await)
    }
}
