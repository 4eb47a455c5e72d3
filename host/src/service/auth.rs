//! etcd's Auth API as a cluster with authentication disabled and no users or roles answers it:
//! status says disabled, authenticating is refused, lists are empty, and every user or role
//! named is not found. Adding users and roles is RBAC, which Conclave does not have yet: those
//! requests are refused with a reason rather than accepted and forgotten.

use conclave_proto::etcdserverpb::ResponseHeader;
use tonic::Code;

use super::Service;
use crate::error::EtcdError;

impl Service {
    /// The header of an auth answer (etcd fills it like any other).
    pub async fn auth_header(&self) -> Option<ResponseHeader> {
        self.node.header(self.node.store.current_rev_async().await)
    }

    /// `auth enable`: etcd needs a root user first, and there are no users.
    pub fn auth_enable(&self) -> Result<(), EtcdError> {
        self.refuse_if_learner()?;
        Err(EtcdError::RootUserNotExist)
    }

    pub fn authenticate(&self) -> Result<(), EtcdError> {
        Err(EtcdError::AuthNotEnabled)
    }

    /// A user named in a request: none exists.
    pub fn auth_user(&self, name: &str) -> Result<(), EtcdError> {
        if name.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        Err(EtcdError::UserNotFound)
    }

    /// A role named in a request: none exists.
    pub fn auth_role(&self) -> Result<(), EtcdError> {
        Err(EtcdError::RoleNotFound)
    }

    /// Adding a user or a role.
    pub fn auth_add(&self, what: &str) -> Result<(), EtcdError> {
        Err(EtcdError::other(
            Code::Unimplemented,
            format!("etcdserver: adding {what}s is not supported yet (Conclave has no users or roles)"),
        ))
    }
}
