//! The etcd KV service over gRPC: decode, call [`Service`], map the error.

use conclave_proto::etcdserverpb::kv_server::Kv;
use conclave_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use super::answer;
use crate::service::{Caller, Service};

pub struct KvService {
    service: Service,
}

impl KvService {
    pub fn new(service: Service) -> Self {
        KvService { service }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        answer(self.service.range(&Caller::client(), request.into_inner()).await)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        answer(self.service.put(&Caller::client(), request.into_inner()).await)
    }

    async fn delete_range(&self, request: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        answer(self.service.delete_range(&Caller::client(), request.into_inner()).await)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        answer(self.service.txn(&Caller::client(), request.into_inner()).await)
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        answer(self.service.compact(&Caller::client(), request.into_inner()).await)
    }
}
