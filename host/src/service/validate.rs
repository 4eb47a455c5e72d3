//! Checks etcd makes before a request reaches raft: required keys, flag combinations, txn size and
//! txns that would write one key twice.

use std::collections::HashSet;

use conclave_proto::etcdserverpb::request_op::Request;
use conclave_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

use crate::error::EtcdError;
use crate::mvcc::KeySpan;

pub fn range(req: &RangeRequest) -> Result<(), EtcdError> {
    require_key(&req.key)
}

pub fn put(req: &PutRequest) -> Result<(), EtcdError> {
    require_key(&req.key)?;
    if req.ignore_value && !req.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

pub fn delete_range(req: &DeleteRangeRequest) -> Result<(), EtcdError> {
    require_key(&req.key)
}

/// A txn is checked as etcd does: no branch (nor the compares) longer than `max_ops`, nested txns
/// sharing what is left of that budget, every op valid, and no key written twice in a branch.
pub fn txn(req: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    txn_ops(req, max_ops)?;
    footprint(&req.success)?;
    footprint(&req.failure)?;
    Ok(())
}

fn txn_ops(req: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    let widest = req.compare.len().max(req.success.len()).max(req.failure.len());
    if widest > max_ops {
        return Err(EtcdError::TooManyOps);
    }
    for compare in &req.compare {
        require_key(&compare.key)?;
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => range(r)?,
            Some(Request::RequestPut(p)) => put(p)?,
            Some(Request::RequestDeleteRange(d)) => delete_range(d)?,
            Some(Request::RequestTxn(t)) => txn_ops(t, max_ops - widest)?,
            None => {}
        }
    }
    Ok(())
}

fn require_key(key: &[u8]) -> Result<(), EtcdError> {
    if key.is_empty() { Err(EtcdError::EmptyKey) } else { Ok(()) }
}

/// The keys a branch puts and the spans it deletes, nested txns included.
struct Footprint {
    puts: HashSet<Vec<u8>>,
    deletes: Vec<KeySpan>,
}

impl Footprint {
    fn deletes(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|span| span.contains(key))
    }
}

/// A branch may not put a key twice, nor put a key it also deletes. The two branches of a nested
/// txn exclude each other, so they may put the same key.
fn footprint(ops: &[RequestOp]) -> Result<Footprint, EtcdError> {
    let mut seen = Footprint {
        puts: HashSet::new(),
        deletes: ops
            .iter()
            .filter_map(|op| match &op.request {
                // etcd checks a from-key delete (range_end "\0") as the empty interval [key, "\0"),
                // so it conflicts with no put; clients rely on that.
                Some(Request::RequestDeleteRange(d)) if d.range_end != [0] => Some(KeySpan::new(&d.key, &d.range_end)),
                _ => None,
            })
            .collect(),
    };
    for op in ops {
        let Some(Request::RequestTxn(nested)) = &op.request else { continue };
        let then = footprint(&nested.success)?;
        let otherwise = footprint(&nested.failure)?;
        for key in &then.puts {
            if seen.puts.contains(key) || seen.deletes(key) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        for key in &otherwise.puts {
            if (seen.puts.contains(key) && !then.puts.contains(key)) || seen.deletes(key) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        seen.puts.extend(then.puts.into_iter().chain(otherwise.puts));
        seen.deletes.extend(then.deletes.into_iter().chain(otherwise.deletes));
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else { continue };
        if seen.puts.contains(&p.key) || seen.deletes(&p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        seen.puts.insert(p.key.clone());
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest { key: key.into(), ..Default::default() })),
        }
    }

    fn del_op(key: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    fn txn_op(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp { request: Some(Request::RequestTxn(TxnRequest { success, failure, ..Default::default() })) }
    }

    fn check(success: Vec<RequestOp>) -> Result<(), EtcdError> {
        txn(&TxnRequest { success, ..Default::default() }, 128)
    }

    #[test]
    fn duplicate_keys() {
        assert_eq!(check(vec![put_op("a"), put_op("a")]), Err(EtcdError::DuplicateKey));
        assert_eq!(check(vec![put_op("a"), del_op("a", "b")]), Err(EtcdError::DuplicateKey));
        assert_eq!(check(vec![put_op("b"), del_op("a", "b")]), Ok(()));
        assert_eq!(check(vec![del_op("a", "c"), del_op("b", "d")]), Ok(()));
        // The branches of a nested txn exclude each other...
        assert_eq!(check(vec![txn_op(vec![put_op("a")], vec![put_op("a")])]), Ok(()));
        // ...but not the outer branch.
        assert_eq!(check(vec![put_op("a"), txn_op(vec![put_op("a")], vec![])]), Err(EtcdError::DuplicateKey));
        assert_eq!(check(vec![del_op("a", ""), txn_op(vec![], vec![put_op("a")])]), Err(EtcdError::DuplicateKey));
        // As in etcd, a from-key delete is not checked against puts.
        assert_eq!(check(vec![del_op("a", "\0"), put_op("b")]), Ok(()));
        assert_eq!(check(vec![put_op("b"), del_op("a", "\0")]), Ok(()));
    }

    #[test]
    fn op_budget_is_shared_with_nested_txns() {
        let wide = TxnRequest { success: vec![put_op("a"), put_op("b")], ..Default::default() };
        assert_eq!(txn(&wide, 1), Err(EtcdError::TooManyOps));
        let nested = TxnRequest { success: vec![txn_op(vec![put_op("a")], vec![])], ..Default::default() };
        assert_eq!(txn(&nested, 1), Err(EtcdError::TooManyOps));
        assert_eq!(txn(&nested, 2), Ok(()));
        assert_eq!(check(vec![put_op("")]), Err(EtcdError::EmptyKey));
    }
}
