//! etcd's v3election service, served by the `election` plugin.

use std::pin::Pin;

use conclave_proto::v3electionpb::election_server::Election;
use conclave_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse, ResignRequest,
    ResignResponse,
};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::recipe::{call, call_stream};
use crate::service::Service;

const PLUGIN: &str = "election";

pub struct ElectionService {
    service: Service,
}

impl ElectionService {
    pub fn new(service: Service) -> Self {
        ElectionService { service }
    }
}

type Observe = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        call(&self.service, PLUGIN, "v3election-campaign", request.into_inner()).await
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        call(&self.service, PLUGIN, "v3election-proclaim", request.into_inner()).await
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        call(&self.service, PLUGIN, "v3election-leader", request.into_inner()).await
    }

    type ObserveStream = Observe;

    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<Observe>, Status> {
        let answers = call_stream(&self.service, PLUGIN, "v3election-observe", request.into_inner()).await?;
        Ok(Response::new(Box::pin(answers)))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        call(&self.service, PLUGIN, "v3election-resign", request.into_inner()).await
    }
}
