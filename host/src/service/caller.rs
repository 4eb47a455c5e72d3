//! Who is asking, and which keys they may touch.
//!
//! Every service call names its [`Caller`]. A gRPC client may touch every key (until etcd's RBAC
//! lands, when an authenticated user's roles will fill its grants); a plugin may touch only the
//! key ranges its manifest grants, for reading and for writing separately. Checks are made here,
//! per key range a request names, so every adapter gets the same answer: etcd's
//! "permission denied".

use std::borrow::Cow;

use conclave_proto::etcdserverpb::request_op::Request as Op;
use conclave_proto::etcdserverpb::TxnRequest;

use crate::error::EtcdError;
use crate::mvcc::KeySpan;

/// The key ranges a caller may use one way (read, or write).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// Every key.
    #[default]
    All,
    /// Only keys inside one of these spans; a request's span must lie inside a single one.
    Only(Vec<KeySpan>),
}

impl Access {
    fn permits(&self, span: &KeySpan) -> bool {
        match self {
            Access::All => true,
            Access::Only(granted) => granted.iter().any(|g| covers(g, span)),
        }
    }
}

/// Who makes a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// For logs and errors: "client", or the plugin's name.
    pub name: Cow<'static, str>,
    read: Access,
    write: Access,
    /// May make cluster-wide changes: compaction, alarms, defragment, membership, snapshots.
    admin: bool,
}

impl Caller {
    /// A client of the etcd API: every key, every operation (made per request: allocates nothing).
    pub fn client() -> Self {
        Caller { name: Cow::Borrowed("client"), read: Access::All, write: Access::All, admin: true }
    }

    /// A caller limited to the given key ranges, without administrative operations.
    pub fn restricted(name: impl Into<String>, read: Access, write: Access) -> Self {
        Caller { name: Cow::Owned(name.into()), read, write, admin: false }
    }

    /// May the caller read `[key, range_end)` (etcd's reading of the pair)?
    pub fn check_read(&self, key: &[u8], range_end: &[u8]) -> Result<(), EtcdError> {
        self.check_read_span(&KeySpan::new(key, range_end))
    }

    /// May the caller read every key of `span`?
    pub fn check_read_span(&self, span: &KeySpan) -> Result<(), EtcdError> {
        permit(self.read.permits(span))
    }

    /// May the caller write (put or delete) `[key, range_end)`?
    pub fn check_write(&self, key: &[u8], range_end: &[u8]) -> Result<(), EtcdError> {
        permit(self.write.permits(&KeySpan::new(key, range_end)))
    }

    /// May the caller make cluster-wide changes?
    pub fn check_admin(&self) -> Result<(), EtcdError> {
        permit(self.admin)
    }

    /// Check every compare and every op of a txn, nested txns included, as etcd's RBAC does: a
    /// compare or range reads, a put or delete writes, and asking for the previous values reads.
    pub fn check_txn(&self, txn: &TxnRequest) -> Result<(), EtcdError> {
        for compare in &txn.compare {
            self.check_read(&compare.key, &compare.range_end)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match &op.request {
                Some(Op::RequestRange(r)) => self.check_read(&r.key, &r.range_end)?,
                Some(Op::RequestPut(p)) => {
                    self.check_write(&p.key, &[])?;
                    if p.prev_kv {
                        self.check_read(&p.key, &[])?;
                    }
                }
                Some(Op::RequestDeleteRange(d)) => {
                    self.check_write(&d.key, &d.range_end)?;
                    if d.prev_kv {
                        self.check_read(&d.key, &d.range_end)?;
                    }
                }
                Some(Op::RequestTxn(nested)) => self.check_txn(nested)?,
                None => {}
            }
        }
        Ok(())
    }
}

fn permit(allowed: bool) -> Result<(), EtcdError> {
    if allowed { Ok(()) } else { Err(EtcdError::PermissionDenied) }
}

/// Whether every key of `span` lies in `granted`.
fn covers(granted: &KeySpan, span: &KeySpan) -> bool {
    let starts_inside = granted.contains(&span.start);
    match (&granted.end, &span.end) {
        (_, None) => starts_inside,
        // A single granted key covers only itself.
        (None, Some(_)) => false,
        (Some(None), Some(_)) => starts_inside,
        (Some(Some(_)), Some(None)) => false,
        (Some(Some(granted_end)), Some(Some(end))) => starts_inside && end <= granted_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp};

    fn plugin() -> Caller {
        let prefix = Access::Only(vec![KeySpan::new(b"app/", b"app0")]);
        Caller::restricted("lock", prefix.clone(), prefix)
    }

    #[test]
    fn a_client_may_do_anything() {
        let client = Caller::client();
        assert_eq!(client.check_read(b"a", b"\0"), Ok(()));
        assert_eq!(client.check_write(b"\0", b"\0"), Ok(()));
        assert_eq!(client.check_admin(), Ok(()));
    }

    #[test]
    fn a_restricted_caller_is_refused_keys_outside_its_ranges() {
        let caller = plugin();
        assert_eq!(caller.check_read(b"app/x", b""), Ok(()));
        assert_eq!(caller.check_write(b"app/", b"app0"), Ok(()));
        assert_eq!(caller.check_read(b"app/a", b"app/b"), Ok(()));
        assert_eq!(caller.check_read(b"other", b""), Err(EtcdError::PermissionDenied));
        assert_eq!(caller.check_read(b"app/", b"\0"), Err(EtcdError::PermissionDenied), "from-key runs past the grant");
        assert_eq!(caller.check_write(b"ap", b"app/z"), Err(EtcdError::PermissionDenied), "starts before the grant");
        assert_eq!(caller.check_write(b"app/", b"b"), Err(EtcdError::PermissionDenied), "ends after the grant");
        assert_eq!(caller.check_admin(), Err(EtcdError::PermissionDenied));
    }

    #[test]
    fn read_and_write_grants_are_separate() {
        let caller = Caller::restricted("reader", Access::All, Access::Only(vec![]));
        assert_eq!(caller.check_read(b"any", b"\0"), Ok(()));
        assert_eq!(caller.check_write(b"any", b""), Err(EtcdError::PermissionDenied));
    }

    #[test]
    fn every_part_of_a_txn_is_checked() {
        let caller = plugin();
        let put = |key: &str, prev_kv| RequestOp {
            request: Some(Op::RequestPut(PutRequest { key: key.into(), prev_kv, ..Default::default() })),
        };
        let range = |key: &str| RequestOp {
            request: Some(Op::RequestRange(RangeRequest { key: key.into(), ..Default::default() })),
        };
        let inside = TxnRequest {
            compare: vec![Compare { key: b"app/k".to_vec(), ..Default::default() }],
            success: vec![put("app/k", true)],
            failure: vec![range("app/j")],
        };
        assert_eq!(caller.check_txn(&inside), Ok(()));
        let compare_outside = TxnRequest { compare: vec![Compare { key: b"x".to_vec(), ..Default::default() }], ..inside.clone() };
        assert_eq!(caller.check_txn(&compare_outside), Err(EtcdError::PermissionDenied));
        let nested_outside = TxnRequest {
            failure: vec![RequestOp {
                request: Some(Op::RequestTxn(TxnRequest { success: vec![put("x", false)], ..Default::default() })),
            }],
            ..inside
        };
        assert_eq!(caller.check_txn(&nested_outside), Err(EtcdError::PermissionDenied));
    }
}
