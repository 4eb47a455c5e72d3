//! The etcd Auth service over gRPC (see the service layer's auth: no users, auth disabled).

use conclave_proto::etcdserverpb::auth_server::Auth;
use conclave_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

use crate::error::EtcdError;
use crate::service::Service;

pub struct AuthService {
    service: Service,
}

impl AuthService {
    pub fn new(service: Service) -> Self {
        AuthService { service }
    }
}

/// A request the service refuses: its error as the answer.
fn refused<T>(outcome: Result<(), EtcdError>) -> Result<Response<T>, Status> {
    Err(Status::from(outcome.err().unwrap_or_else(|| EtcdError::internal("an auth request was not refused"))))
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(&self, _: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        refused(self.service.auth_enable())
    }

    async fn auth_disable(&self, _: Request<AuthDisableRequest>) -> Result<Response<AuthDisableResponse>, Status> {
        Ok(Response::new(AuthDisableResponse { header: self.service.auth_header().await }))
    }

    async fn auth_status(&self, _: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        let header = self.service.auth_header().await;
        Ok(Response::new(AuthStatusResponse { header, enabled: false, auth_revision: 0 }))
    }

    async fn authenticate(&self, _: Request<AuthenticateRequest>) -> Result<Response<AuthenticateResponse>, Status> {
        refused(self.service.authenticate())
    }

    async fn user_add(&self, _: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        refused(self.service.auth_add("user"))
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        refused(self.service.auth_user(&request.into_inner().name))
    }

    async fn user_list(&self, _: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        Ok(Response::new(AuthUserListResponse { header: self.service.auth_header().await, users: Vec::new() }))
    }

    async fn user_delete(&self, request: Request<AuthUserDeleteRequest>) -> Result<Response<AuthUserDeleteResponse>, Status> {
        refused(self.service.auth_user(&request.into_inner().name))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        refused(self.service.auth_user(&request.into_inner().name))
    }

    async fn user_grant_role(&self, request: Request<AuthUserGrantRoleRequest>) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        refused(self.service.auth_user(&request.into_inner().user))
    }

    async fn user_revoke_role(&self, request: Request<AuthUserRevokeRoleRequest>) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        refused(self.service.auth_user(&request.into_inner().name))
    }

    async fn role_add(&self, _: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        refused(self.service.auth_add("role"))
    }

    async fn role_get(&self, _: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        refused(self.service.auth_role())
    }

    async fn role_list(&self, _: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        Ok(Response::new(AuthRoleListResponse { header: self.service.auth_header().await, roles: Vec::new() }))
    }

    async fn role_delete(&self, _: Request<AuthRoleDeleteRequest>) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        refused(self.service.auth_role())
    }

    async fn role_grant_permission(
        &self,
        _: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        refused(self.service.auth_role())
    }

    async fn role_revoke_permission(
        &self,
        _: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        refused(self.service.auth_role())
    }
}
