//! The gateway's paths and the gRPC method behind each: etcd 3.4's grpc-gateway bindings, plus
//! Conclave's plugin service.

use conclave_proto::conclave::plugin as plugin;
use conclave_proto::etcdserverpb as pb;
use conclave_proto::v3electionpb as election;
use conclave_proto::v3lockpb as lock;

use super::json::{DecodeRequest, EncodeResponse, request, response};

/// How many messages each side of a method carries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStream,
    /// A stream each way: the request body is a sequence of JSON values.
    Bidi,
}

/// One gateway path's gRPC method.
#[derive(Clone, Copy)]
pub struct Method {
    pub grpc_path: &'static str,
    pub shape: Shape,
    pub decode: DecodeRequest,
    pub encode: EncodeResponse,
    /// The request may carry a whole plugin, not only a key and value.
    pub carries_plugin: bool,
}

macro_rules! method {
    ($shape:ident, $grpc:literal, $req:ty, $resp:ty) => {
        Method {
            grpc_path: $grpc,
            shape: Shape::$shape,
            decode: request::<$req>,
            encode: response::<$resp>,
            carries_plugin: false,
        }
    };
}

/// Every path under a version prefix (`/v3/`, `/v3beta/`), with its method.
pub const METHODS: &[(&str, Method)] = &[
    ("kv/range", method!(Unary, "/etcdserverpb.KV/Range", pb::RangeRequest, pb::RangeResponse)),
    ("kv/put", method!(Unary, "/etcdserverpb.KV/Put", pb::PutRequest, pb::PutResponse)),
    ("kv/deleterange", method!(Unary, "/etcdserverpb.KV/DeleteRange", pb::DeleteRangeRequest, pb::DeleteRangeResponse)),
    ("kv/txn", method!(Unary, "/etcdserverpb.KV/Txn", pb::TxnRequest, pb::TxnResponse)),
    ("kv/compaction", method!(Unary, "/etcdserverpb.KV/Compact", pb::CompactionRequest, pb::CompactionResponse)),
    ("watch", method!(Bidi, "/etcdserverpb.Watch/Watch", pb::WatchRequest, pb::WatchResponse)),
    ("lease/grant", method!(Unary, "/etcdserverpb.Lease/LeaseGrant", pb::LeaseGrantRequest, pb::LeaseGrantResponse)),
    ("lease/revoke", method!(Unary, "/etcdserverpb.Lease/LeaseRevoke", pb::LeaseRevokeRequest, pb::LeaseRevokeResponse)),
    ("kv/lease/revoke", method!(Unary, "/etcdserverpb.Lease/LeaseRevoke", pb::LeaseRevokeRequest, pb::LeaseRevokeResponse)),
    (
        "lease/keepalive",
        method!(Bidi, "/etcdserverpb.Lease/LeaseKeepAlive", pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse),
    ),
    (
        "lease/timetolive",
        method!(Unary, "/etcdserverpb.Lease/LeaseTimeToLive", pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse),
    ),
    (
        "kv/lease/timetolive",
        method!(Unary, "/etcdserverpb.Lease/LeaseTimeToLive", pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse),
    ),
    ("lease/leases", method!(Unary, "/etcdserverpb.Lease/LeaseLeases", pb::LeaseLeasesRequest, pb::LeaseLeasesResponse)),
    ("kv/lease/leases", method!(Unary, "/etcdserverpb.Lease/LeaseLeases", pb::LeaseLeasesRequest, pb::LeaseLeasesResponse)),
    ("cluster/member/add", method!(Unary, "/etcdserverpb.Cluster/MemberAdd", pb::MemberAddRequest, pb::MemberAddResponse)),
    (
        "cluster/member/remove",
        method!(Unary, "/etcdserverpb.Cluster/MemberRemove", pb::MemberRemoveRequest, pb::MemberRemoveResponse),
    ),
    (
        "cluster/member/update",
        method!(Unary, "/etcdserverpb.Cluster/MemberUpdate", pb::MemberUpdateRequest, pb::MemberUpdateResponse),
    ),
    ("cluster/member/list", method!(Unary, "/etcdserverpb.Cluster/MemberList", pb::MemberListRequest, pb::MemberListResponse)),
    (
        "cluster/member/promote",
        method!(Unary, "/etcdserverpb.Cluster/MemberPromote", pb::MemberPromoteRequest, pb::MemberPromoteResponse),
    ),
    ("maintenance/alarm", method!(Unary, "/etcdserverpb.Maintenance/Alarm", pb::AlarmRequest, pb::AlarmResponse)),
    ("maintenance/status", method!(Unary, "/etcdserverpb.Maintenance/Status", pb::StatusRequest, pb::StatusResponse)),
    (
        "maintenance/defragment",
        method!(Unary, "/etcdserverpb.Maintenance/Defragment", pb::DefragmentRequest, pb::DefragmentResponse),
    ),
    ("maintenance/hash", method!(Unary, "/etcdserverpb.Maintenance/Hash", pb::HashRequest, pb::HashResponse)),
    ("maintenance/hashkv", method!(Unary, "/etcdserverpb.Maintenance/HashKV", pb::HashKvRequest, pb::HashKvResponse)),
    (
        "maintenance/snapshot",
        method!(ServerStream, "/etcdserverpb.Maintenance/Snapshot", pb::SnapshotRequest, pb::SnapshotResponse),
    ),
    (
        "maintenance/transfer-leadership",
        method!(Unary, "/etcdserverpb.Maintenance/MoveLeader", pb::MoveLeaderRequest, pb::MoveLeaderResponse),
    ),
    ("auth/enable", method!(Unary, "/etcdserverpb.Auth/AuthEnable", pb::AuthEnableRequest, pb::AuthEnableResponse)),
    ("auth/disable", method!(Unary, "/etcdserverpb.Auth/AuthDisable", pb::AuthDisableRequest, pb::AuthDisableResponse)),
    ("auth/status", method!(Unary, "/etcdserverpb.Auth/AuthStatus", pb::AuthStatusRequest, pb::AuthStatusResponse)),
    ("auth/authenticate", method!(Unary, "/etcdserverpb.Auth/Authenticate", pb::AuthenticateRequest, pb::AuthenticateResponse)),
    ("auth/user/add", method!(Unary, "/etcdserverpb.Auth/UserAdd", pb::AuthUserAddRequest, pb::AuthUserAddResponse)),
    ("auth/user/get", method!(Unary, "/etcdserverpb.Auth/UserGet", pb::AuthUserGetRequest, pb::AuthUserGetResponse)),
    ("auth/user/list", method!(Unary, "/etcdserverpb.Auth/UserList", pb::AuthUserListRequest, pb::AuthUserListResponse)),
    ("auth/user/delete", method!(Unary, "/etcdserverpb.Auth/UserDelete", pb::AuthUserDeleteRequest, pb::AuthUserDeleteResponse)),
    (
        "auth/user/changepw",
        method!(Unary, "/etcdserverpb.Auth/UserChangePassword", pb::AuthUserChangePasswordRequest, pb::AuthUserChangePasswordResponse),
    ),
    ("auth/user/grant", method!(Unary, "/etcdserverpb.Auth/UserGrantRole", pb::AuthUserGrantRoleRequest, pb::AuthUserGrantRoleResponse)),
    ("auth/user/revoke", method!(Unary, "/etcdserverpb.Auth/UserRevokeRole", pb::AuthUserRevokeRoleRequest, pb::AuthUserRevokeRoleResponse)),
    ("auth/role/add", method!(Unary, "/etcdserverpb.Auth/RoleAdd", pb::AuthRoleAddRequest, pb::AuthRoleAddResponse)),
    ("auth/role/get", method!(Unary, "/etcdserverpb.Auth/RoleGet", pb::AuthRoleGetRequest, pb::AuthRoleGetResponse)),
    ("auth/role/list", method!(Unary, "/etcdserverpb.Auth/RoleList", pb::AuthRoleListRequest, pb::AuthRoleListResponse)),
    ("auth/role/delete", method!(Unary, "/etcdserverpb.Auth/RoleDelete", pb::AuthRoleDeleteRequest, pb::AuthRoleDeleteResponse)),
    (
        "auth/role/grant",
        method!(Unary, "/etcdserverpb.Auth/RoleGrantPermission", pb::AuthRoleGrantPermissionRequest, pb::AuthRoleGrantPermissionResponse),
    ),
    (
        "auth/role/revoke",
        method!(Unary, "/etcdserverpb.Auth/RoleRevokePermission", pb::AuthRoleRevokePermissionRequest, pb::AuthRoleRevokePermissionResponse),
    ),
    ("lock/lock", method!(Unary, "/v3lockpb.Lock/Lock", lock::LockRequest, lock::LockResponse)),
    ("lock/unlock", method!(Unary, "/v3lockpb.Lock/Unlock", lock::UnlockRequest, lock::UnlockResponse)),
    (
        "election/campaign",
        method!(Unary, "/v3electionpb.Election/Campaign", election::CampaignRequest, election::CampaignResponse),
    ),
    (
        "election/proclaim",
        method!(Unary, "/v3electionpb.Election/Proclaim", election::ProclaimRequest, election::ProclaimResponse),
    ),
    ("election/leader", method!(Unary, "/v3electionpb.Election/Leader", election::LeaderRequest, election::LeaderResponse)),
    (
        "election/observe",
        method!(ServerStream, "/v3electionpb.Election/Observe", election::LeaderRequest, election::LeaderResponse),
    ),
    ("election/resign", method!(Unary, "/v3electionpb.Election/Resign", election::ResignRequest, election::ResignResponse)),
    (
        "plugin/deploy",
        Method { carries_plugin: true, ..method!(Unary, "/conclave.plugin.Plugin/Deploy", plugin::DeployRequest, plugin::DeployResponse) },
    ),
    ("plugin/list", method!(Unary, "/conclave.plugin.Plugin/List", plugin::ListRequest, plugin::ListResponse)),
    ("plugin/get", method!(Unary, "/conclave.plugin.Plugin/Get", plugin::GetRequest, plugin::GetResponse)),
    ("plugin/remove", method!(Unary, "/conclave.plugin.Plugin/Remove", plugin::RemoveRequest, plugin::RemoveResponse)),
    ("plugin/invoke", method!(Unary, "/conclave.plugin.Plugin/Invoke", plugin::InvokeRequest, plugin::InvokeResponse)),
    (
        "plugin/invokestream",
        method!(ServerStream, "/conclave.plugin.Plugin/InvokeStream", plugin::InvokeRequest, plugin::InvokeResponse),
    ),
];
