//! The etcd Lease service over gRPC: decode, call [`Service`], map the error.

use std::pin::Pin;

use conclave_proto::etcdserverpb::lease_server::Lease;
use conclave_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{answer, until_broken};
use crate::service::{Caller, Service};

pub struct LeaseService {
    service: Service,
}

impl LeaseService {
    pub fn new(service: Service) -> Self {
        LeaseService { service }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        answer(self.service.lease_grant(&Caller::client(), request.into_inner()).await)
    }

    async fn lease_revoke(&self, request: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        answer(self.service.lease_revoke(&Caller::client(), request.into_inner()).await)
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let ids = until_broken(request.into_inner()).map(|r| r.id);
        let renewals = self.service.lease_keep_alive_stream(&Caller::client(), ids)?;
        let renewals = ReceiverStream::new(renewals).map(|renewed| renewed.map_err(Status::from));
        Ok(Response::new(Box::pin(renewals)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        answer(self.service.lease_time_to_live(&Caller::client(), request.into_inner()).await)
    }

    async fn lease_leases(&self, request: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        answer(self.service.lease_leases(&Caller::client(), request.into_inner()).await)
    }
}
