//! etcd's v3lock service, served by the `lock` plugin.

use conclave_proto::v3lockpb::lock_server::Lock;
use conclave_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use super::recipe::call;
use crate::service::Service;

pub struct LockService {
    service: Service,
}

impl LockService {
    pub fn new(service: Service) -> Self {
        LockService { service }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        call(&self.service, "lock", "v3lock-lock", request.into_inner()).await
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        call(&self.service, "lock", "v3lock-unlock", request.into_inner()).await
    }
}
