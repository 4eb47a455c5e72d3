//! The etcd Maintenance service over gRPC: decode, call [`Service`], map the error.

use std::pin::Pin;

use conclave_proto::etcdserverpb::maintenance_server::Maintenance;
use conclave_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::answer;
use crate::service::{Caller, Service};

pub struct MaintenanceService {
    service: Service,
}

impl MaintenanceService {
    pub fn new(service: Service) -> Self {
        MaintenanceService { service }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        answer(self.service.alarm(&Caller::client(), request.into_inner()).await)
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        answer(self.service.status(&Caller::client(), request.into_inner()).await)
    }

    async fn defragment(&self, request: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        answer(self.service.defragment(&Caller::client(), request.into_inner()).await)
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        answer(self.service.hash(&Caller::client(), request.into_inner()).await)
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        answer(self.service.hash_kv(&Caller::client(), request.into_inner()).await)
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(&self, _request: Request<SnapshotRequest>) -> Result<Response<SnapshotStream>, Status> {
        let chunks = self.service.snapshot(&Caller::client())?;
        Ok(Response::new(Box::pin(ReceiverStream::new(chunks).map(|chunk| chunk.map_err(Status::from)))))
    }

    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        answer(self.service.move_leader(&Caller::client(), request.into_inner()).await)
    }

    async fn downgrade(&self, request: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        answer(self.service.downgrade(&Caller::client(), request.into_inner()).await)
    }
}
