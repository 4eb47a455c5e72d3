//! The one internal API of a member: every etcd operation as plain etcd messages plus a
//! [`Caller`], answered with `Result<_, EtcdError>`. The gRPC services in [`crate::api`], the peer
//! service (for what a leader does on a follower's behalf), plugins and, later, the HTTP
//! gateway all call it, so every request rule lives here once: learner refusal, validation, the
//! caller's key-range permissions, the space quota, lease TTL floors and ids, forwarding to the
//! leader, and the response header.

mod auth;
mod caller;
mod cluster;
mod kv;
mod lease;
mod health;
mod maintenance;
mod plugin;
mod validate;
mod watch;

use std::sync::Arc;

use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::raft_response::Response as Resp;
use conclave_proto::conclave::raft::{MemberChangeRequest, MemberChangeResponse};
use conclave_proto::etcdserverpb::{
    LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

pub use caller::{Access, Caller};
pub use health::Check;
pub use maintenance::{VERSION, cluster_version};

use crate::error::EtcdError;
use crate::node::Node;
use crate::plugin::Registry;
use crate::raft::LeaderDuties;

/// etcd lets gRPC messages exceed `--max-request-bytes` by this much, so that an oversized request
/// reaches the server and gets etcd's own "request is too large" error; watch responses are
/// fragmented (for watchers that ask) from the same size on.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The service layer of one member; cheap to clone.
#[derive(Clone)]
pub struct Service {
    node: Arc<Node>,
    plugins: Arc<Registry>,
}

impl Service {
    /// The service layer of `node`, serving the built-in plugins of `plugins` and the ones
    /// deployed in `node`'s store.
    pub async fn start(node: Arc<Node>, plugins: Registry) -> Self {
        let plugins = plugins.follow(&node).await;
        Service { node, plugins }
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// etcd's learners serve only serializable reads and status: refuse anything else.
    fn refuse_if_learner(&self) -> Result<(), EtcdError> {
        if self.node.is_learner() {
            return Err(EtcdError::NotSupportedForLearner);
        }
        Ok(())
    }

    /// Refuse writes that add data once the database outgrows its quota or the data dir's disk
    /// is nearly full, raising etcd's NOSPACE alarm for this member (through the log, so every
    /// member refuses them until an operator disarms it), or while the alarm is active.
    async fn check_quota(&self) -> Result<(), EtcdError> {
        if self.node.alarms.no_space() {
            return Err(EtcdError::NoSpace);
        }
        if self.node.db_size() <= self.node.config.quota_bytes() && !self.node.disk_short() {
            return Ok(());
        }
        self.node.raise_no_space().await;
        Err(EtcdError::NoSpace)
    }

    /// Put a write through the log; `pick` takes the response of the request's kind.
    async fn write<T>(&self, request: Req, pick: fn(Resp) -> Option<T>) -> Result<T, EtcdError> {
        let what = request_kind(&request);
        let response = self.node.propose(request).await?;
        pick(response).ok_or_else(|| EtcdError::internal(format!("raft applied a {what} request but returned another response")))
    }
}

/// What the peer service asks of this member on a follower's behalf when it leads.
#[tonic::async_trait]
impl LeaderDuties for Service {
    async fn keep_alive(&self, id: i64) -> Option<LeaseKeepAliveResponse> {
        self.keep_alive_as_leader(id).await
    }

    async fn time_to_live(&self, request: LeaseTimeToLiveRequest) -> Option<LeaseTimeToLiveResponse> {
        self.time_to_live_as_leader(request).await
    }

    async fn change_membership(&self, change: MemberChangeRequest) -> Result<MemberChangeResponse, EtcdError> {
        self.change_membership_as_leader(change).await
    }
}

fn request_kind(request: &Req) -> &'static str {
    match request {
        Req::Put(_) => "put",
        Req::DeleteRange(_) => "delete",
        Req::Txn(_) => "txn",
        Req::Compaction(_) => "compaction",
        Req::LeaseGrant(_) => "lease grant",
        Req::LeaseRevoke(_) => "lease revoke",
        Req::Alarm(_) => "alarm",
        Req::PluginDeploy(_) => "plugin deploy",
        Req::PluginRemove(_) => "plugin remove",
    }
}

#[cfg(test)]
mod tests;
