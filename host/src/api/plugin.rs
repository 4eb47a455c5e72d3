//! Conclave's Plugin service over gRPC: decode, call [`Service`], map the error.

use std::pin::Pin;

use conclave_proto::conclave::plugin::plugin_server::Plugin;
use conclave_proto::conclave::plugin::{
    DeployRequest, DeployResponse, GetRequest, GetResponse, InvokeRequest, InvokeResponse, ListRequest,
    ListResponse, RemoveRequest, RemoveResponse,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::answer;
use crate::service::{Caller, Service};

pub struct PluginService {
    service: Service,
}

impl PluginService {
    pub fn new(service: Service) -> Self {
        PluginService { service }
    }
}

type InvokeStream = Pin<Box<dyn Stream<Item = Result<InvokeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Plugin for PluginService {
    async fn deploy(&self, request: Request<DeployRequest>) -> Result<Response<DeployResponse>, Status> {
        answer(self.service.plugin_deploy(&Caller::client(), request.into_inner()).await)
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        answer(self.service.plugin_list(&Caller::client(), request.into_inner()).await)
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        answer(self.service.plugin_get(&Caller::client(), request.into_inner()).await)
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        answer(self.service.plugin_remove(&Caller::client(), request.into_inner()).await)
    }

    async fn invoke(&self, request: Request<InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
        answer(self.service.plugin_invoke(&Caller::client(), request.into_inner()).await)
    }

    type InvokeStreamStream = InvokeStream;

    async fn invoke_stream(&self, request: Request<InvokeRequest>) -> Result<Response<InvokeStream>, Status> {
        let answers = self.service.plugin_invoke_stream(&Caller::client(), request.into_inner()).await?;
        let answers = answers.map(|answer| answer.map_err(Status::from));
        Ok(Response::new(Box::pin(answers)))
    }
}
