//! etcd's client-visible errors: the exact gRPC code and message etcd 3.4/3.5 sends, so clients
//! that match on them (etcdctl, clientv3's rpctypes, etcd-client) behave the same.

use tonic::{Code, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
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
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
}

impl EtcdError {
    pub fn code(self) -> Code {
        use EtcdError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | RequestTooLarge | MemberBadUrls => Code::InvalidArgument,
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            NoLeader | Timeout | Stopped | Unhealthy | NotSupportedForLearner | LeaderTransferTimeout => Code::Unavailable,
            NotCapable | NotLeader | BadLeaderTransferee | LeaseExists | MemberExists | PeerUrlExists | NotEnoughStarted | MemberNotLearner
            | LearnerNotReady | TooManyLearners => Code::FailedPrecondition,
        }
    }

    /// Parse an error string recorded in a raft response back into the error.
    pub fn from_message(message: &str) -> Option<Self> {
        use EtcdError::*;
        [
            EmptyKey, KeyNotFound, ValueProvided, LeaseProvided, TooManyOps, DuplicateKey,
            RequestTooLarge, Compacted, FutureRev, NoSpace, LeaseNotFound, LeaseExists, LeaseTtlTooLarge,
            NoLeader, Timeout, Stopped, MemberNotFound, NotCapable,
        ]
        .into_iter()
        .find(|e| e.to_string() == message)
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
    fn messages_round_trip() {
        let e = EtcdError::Compacted;
        assert_eq!(EtcdError::from_message(&e.to_string()), Some(e));
        assert_eq!(Status::from(e).code(), Code::OutOfRange);
    }
}
