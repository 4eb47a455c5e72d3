//! etcd's client-visible errors: the exact gRPC code and message etcd 3.4/3.5 sends, so clients
//! that match on them (etcdctl, clientv3's rpctypes, etcd-client) behave the same.
//!
//! The service layer answers every failure as an [`EtcdError`]; adapters map it at their edge
//! (gRPC status, HTTP status). Known errors cross the raft log and the peer network as numeric
//! codes ([`EtcdError::wire_code`]), never as message strings parsed back.

use tonic::{Code, Status};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: not capable")]
    NotCapable,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: cluster ID mismatch")]
    ClusterIdMismatch,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// Anything etcd has no fixed error for (raft or storage failures, a peer's answer passed on
    /// as it came): a gRPC code and a message.
    #[error("{message}")]
    Other { code: Code, message: String },
}

/// Every fixed error with its code on the raft log and the peer network. Codes are never reused.
const WIRE_CODES: [(u32, EtcdError); 37] = {
    use EtcdError::*;
    [
        (1, EmptyKey), (2, KeyNotFound), (3, ValueProvided), (4, LeaseProvided), (5, TooManyOps),
        (6, DuplicateKey), (7, RequestTooLarge), (8, Compacted), (9, FutureRev), (10, NoSpace),
        (11, LeaseNotFound), (12, LeaseExists), (13, LeaseTtlTooLarge), (14, NoLeader), (15, NotLeader),
        (16, Timeout), (17, Stopped), (18, MemberNotFound), (19, MemberExists), (20, PeerUrlExists),
        (21, MemberBadUrls), (22, NotEnoughStarted), (23, MemberNotLearner), (24, LearnerNotReady),
        (25, TooManyLearners), (26, Unhealthy), (27, NotSupportedForLearner), (28, NotCapable),
        (29, PermissionDenied), (30, ClusterIdMismatch), (31, BadLeaderTransferee), (32, LeaderTransferTimeout),
        (33, AuthNotEnabled), (34, RootUserNotExist), (35, UserNotFound), (36, RoleNotFound), (37, UserEmpty),
    ]
};

/// gRPC metadata a member puts on a peer answer that failed with a fixed error: its wire code.
pub const PEER_ERROR_METADATA: &str = "conclave-etcd-error";

impl EtcdError {
    pub fn code(&self) -> Code {
        use EtcdError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | RequestTooLarge | MemberBadUrls | UserEmpty => Code::InvalidArgument,
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            NoLeader | Timeout | Stopped | Unhealthy | NotSupportedForLearner | LeaderTransferTimeout => Code::Unavailable,
            NotCapable | NotLeader | BadLeaderTransferee | LeaseExists | MemberExists | PeerUrlExists | NotEnoughStarted
            | MemberNotLearner | LearnerNotReady | TooManyLearners | ClusterIdMismatch | AuthNotEnabled | RootUserNotExist
            | UserNotFound | RoleNotFound => Code::FailedPrecondition,
            PermissionDenied => Code::PermissionDenied,
            Other { code, .. } => *code,
        }
    }

    /// A failure without a fixed etcd error.
    pub fn other(code: Code, message: impl Into<String>) -> Self {
        EtcdError::Other { code, message: message.into() }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::other(Code::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::other(Code::Unavailable, message)
    }

    /// The code this error crosses the raft log and the peer network with (0: not a fixed error).
    pub fn wire_code(&self) -> u32 {
        WIRE_CODES.iter().find(|(_, e)| e == self).map_or(0, |(code, _)| *code)
    }

    /// The fixed error a wire code names.
    pub fn from_wire_code(code: u32) -> Option<Self> {
        WIRE_CODES.iter().find(|(c, _)| *c == code).map(|(_, e)| e.clone())
    }

    /// The gRPC status a peer answers with: as a client would get it, plus the wire code.
    pub fn to_peer_status(&self) -> Status {
        let mut status = Status::from(self.clone());
        if let Ok(value) = self.wire_code().to_string().parse() {
            status.metadata_mut().insert(PEER_ERROR_METADATA, value);
        }
        status
    }
}

/// A peer's answer, or any other gRPC failure: the fixed error it carries a wire code for, else
/// its code and message as they came.
impl From<Status> for EtcdError {
    fn from(status: Status) -> Self {
        let wire = status.metadata().get(PEER_ERROR_METADATA).and_then(|v| v.to_str().ok()?.parse().ok());
        match wire.and_then(EtcdError::from_wire_code) {
            Some(known) => known,
            None => EtcdError::other(status.code(), status.message()),
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_round_trip_and_are_unique() {
        for (code, error) in WIRE_CODES {
            assert_eq!(error.wire_code(), code);
            assert_eq!(EtcdError::from_wire_code(code), Some(error));
        }
        assert_eq!(EtcdError::internal("disk on fire").wire_code(), 0);
        assert_eq!(EtcdError::from_wire_code(0), None);
    }

    #[test]
    fn peer_statuses_carry_the_error_not_its_message() {
        let status = EtcdError::Compacted.to_peer_status();
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(status.message(), "etcdserver: mvcc: required revision has been compacted");
        assert_eq!(EtcdError::from(status), EtcdError::Compacted);
        // A status without the code passes through as it came, even with a known message.
        let plain = Status::unavailable("etcdserver: no leader");
        assert_eq!(EtcdError::from(plain), EtcdError::other(Code::Unavailable, "etcdserver: no leader"));
    }
}
