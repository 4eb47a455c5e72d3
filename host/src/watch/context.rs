//! What a watch stream needs from the server, and nothing more: the store it replays history
//! from, the hub that feeds it live events, how its response headers are filled, and who may
//! watch which keys. Any caller (the gRPC service, a plugin, an HTTP stream) builds one.

use std::sync::Arc;

use conclave_proto::etcdserverpb::ResponseHeader;

use super::Hub;
use crate::error::EtcdError;
use crate::mvcc::{KeySpan, Store};

/// A response header (cluster, member, raft term) for a store revision.
pub type HeaderFn = Arc<dyn Fn(i64) -> Option<ResponseHeader> + Send + Sync>;

/// The permission check on a watch create: called with the range the watcher asks for, after
/// etcd's key normalisation (an empty key is `"\0"`). An error refuses the create the way etcd
/// refuses a watch it does not permit: one response, created and canceled, with the error as
/// its `cancel_reason`; the stream and its other watchers go on.
pub type Authorize = Arc<dyn Fn(&KeySpan) -> Result<(), EtcdError> + Send + Sync>;

#[derive(Clone)]
pub struct WatchContext {
    pub store: Arc<Store>,
    pub hub: Arc<Hub>,
    pub header: HeaderFn,
    pub authorize: Authorize,
}
