//! etcd's Txn as a builder with nested txns as ordinary values:
//!
//! ```no_run
//! use conclave_guest::txn::{Compare, Op, OpResponse, Txn};
//! # fn main() -> conclave_guest::Result<()> {
//! let response = Txn::new()
//!     .when([Compare::version("lock/a").eq(0)])
//!     .and_then([Op::put("lock/a", "me"), Op::txn(Txn::new().and_then([Op::get("lock/")]))])
//!     .or_else([Op::get("lock/a")])
//!     .commit()?;
//! if let OpResponse::Txn(inner) = &response.responses[1] {
//!     assert!(inner.succeeded);
//! }
//! # Ok(()) }
//! ```
//!
//! WIT has no recursive types, so the wire form keeps nested txns in a side list referred to by
//! index; [`Txn::commit`] flattens the request into it and rebuilds the answer as a tree.

use crate::bindings::conclave::plugin::kv as wit;
use crate::errors::{Error, Result};
use crate::kv::{
    DeleteRangeRequest, DeleteRangeResponse, Header, PutRequest, PutResponse, RangeRequest, RangeResponse,
};

pub use wit::{Compare, CompareResult, CompareTarget};

/// One side of a comparison: a key (or range) and what of it is compared; finish it with
/// [`eq`](Self::eq), [`ne`](Self::ne), [`gt`](Self::gt) or [`lt`](Self::lt).
pub struct CompareOn<V> {
    key: Vec<u8>,
    range_end: Vec<u8>,
    target: fn(V) -> CompareTarget,
}

impl Compare {
    /// The key's version: 0 when it does not exist.
    pub fn version(key: impl Into<Vec<u8>>) -> CompareOn<i64> {
        CompareOn::new(key, CompareTarget::Version)
    }

    pub fn create_revision(key: impl Into<Vec<u8>>) -> CompareOn<i64> {
        CompareOn::new(key, CompareTarget::CreateRevision)
    }

    pub fn mod_revision(key: impl Into<Vec<u8>>) -> CompareOn<i64> {
        CompareOn::new(key, CompareTarget::ModRevision)
    }

    pub fn value(key: impl Into<Vec<u8>>) -> CompareOn<Vec<u8>> {
        CompareOn::new(key, CompareTarget::Value)
    }

    /// The id of the lease the key is attached to; 0 is none.
    pub fn lease(key: impl Into<Vec<u8>>) -> CompareOn<i64> {
        CompareOn::new(key, CompareTarget::Lease)
    }
}

impl<V> CompareOn<V> {
    fn new(key: impl Into<Vec<u8>>, target: fn(V) -> CompareTarget) -> Self {
        CompareOn { key: key.into(), range_end: Vec::new(), target }
    }

    /// Compare every key of `[key, range_end)` instead of `key` alone (all must match).
    pub fn range_end(mut self, range_end: impl Into<Vec<u8>>) -> Self {
        self.range_end = range_end.into();
        self
    }

    fn with(self, result: CompareResult, value: impl Into<V>) -> Compare {
        Compare { key: self.key, range_end: self.range_end, result, target: (self.target)(value.into()) }
    }

    pub fn eq(self, value: impl Into<V>) -> Compare {
        self.with(CompareResult::Equal, value)
    }

    pub fn ne(self, value: impl Into<V>) -> Compare {
        self.with(CompareResult::NotEqual, value)
    }

    pub fn gt(self, value: impl Into<V>) -> Compare {
        self.with(CompareResult::Greater, value)
    }

    pub fn lt(self, value: impl Into<V>) -> Compare {
        self.with(CompareResult::Less, value)
    }
}

/// One operation of a txn branch.
#[derive(Clone)]
pub enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(Txn),
}

impl Op {
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        Op::Range(RangeRequest::key(key))
    }

    pub fn get_prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Op::Range(RangeRequest::prefix(prefix))
    }

    pub fn range(request: RangeRequest) -> Self {
        Op::Range(request)
    }

    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put(PutRequest::new(key, value))
    }

    pub fn put_with_lease(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: i64) -> Self {
        Op::Put(PutRequest::new(key, value).lease(lease))
    }

    pub fn put_request(request: PutRequest) -> Self {
        Op::Put(request)
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Op::Delete(DeleteRangeRequest::key(key))
    }

    pub fn delete_prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Op::Delete(DeleteRangeRequest::prefix(prefix))
    }

    pub fn delete_range(request: DeleteRangeRequest) -> Self {
        Op::Delete(request)
    }

    pub fn txn(txn: Txn) -> Self {
        Op::Txn(txn)
    }
}

/// A txn: if every comparison holds, the `and_then` ops run, otherwise the `or_else` ones.
#[derive(Clone, Default)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, compare: impl IntoIterator<Item = Compare>) -> Self {
        self.compare.extend(compare);
        self
    }

    pub fn and_then(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.success.extend(ops);
        self
    }

    pub fn or_else(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// Run it; one revision for all its writes.
    pub fn commit(self) -> Result<TxnResponse> {
        let response = wit::txn(&self.into_request())?;
        TxnResponse::from_wire(response)
    }

    /// The wire form: nested txns go to `nested`, each before the ones inside it, so an op only
    /// ever refers to a later entry.
    pub fn into_request(self) -> wit::TxnRequest {
        let mut nested = Vec::new();
        let success = flatten_ops(self.success, &mut nested);
        let failure = flatten_ops(self.failure, &mut nested);
        wit::TxnRequest { compare: self.compare, success, failure, nested }
    }
}

fn flatten_ops(ops: Vec<Op>, nested: &mut Vec<wit::TxnBranches>) -> Vec<wit::RequestOp> {
    ops.into_iter()
        .map(|op| match op {
            Op::Range(r) => wit::RequestOp::Range(r),
            Op::Put(p) => wit::RequestOp::Put(p),
            Op::Delete(d) => wit::RequestOp::DeleteRange(d),
            Op::Txn(txn) => {
                let index = nested.len();
                nested.push(wit::TxnBranches { compare: Vec::new(), success: Vec::new(), failure: Vec::new() });
                let success = flatten_ops(txn.success, nested);
                let failure = flatten_ops(txn.failure, nested);
                nested[index] = wit::TxnBranches { compare: txn.compare, success, failure };
                wit::RequestOp::Txn(u32::try_from(index).expect("fewer than 2^32 nested txns"))
            }
        })
        .collect()
}

/// The answer to a txn; a nested txn's answer carries the same header as the outer one.
#[derive(Clone, Debug)]
pub struct TxnResponse {
    pub header: Header,
    pub succeeded: bool,
    /// One per op of the branch that ran, in order.
    pub responses: Vec<OpResponse>,
}

/// The answer to one op.
#[derive(Clone, Debug)]
pub enum OpResponse {
    Range(RangeResponse),
    Put(PutResponse),
    Delete(DeleteRangeResponse),
    Txn(Box<TxnResponse>),
}

impl TxnResponse {
    /// Rebuild the tree from the wire form; each `nested` entry must be used exactly once.
    pub fn from_wire(response: wit::TxnResponse) -> Result<Self> {
        let mut nested: Vec<Option<wit::TxnOutcome>> = response.nested.into_iter().map(Some).collect();
        let header = response.header;
        let responses = unflatten_ops(header, response.responses, &mut nested)?;
        if nested.iter().any(Option::is_some) {
            return Err(Error::internal("txn response: a nested outcome no op refers to"));
        }
        Ok(TxnResponse { header, succeeded: response.succeeded, responses })
    }
}

fn unflatten_ops(
    header: Header,
    ops: Vec<wit::ResponseOp>,
    nested: &mut [Option<wit::TxnOutcome>],
) -> Result<Vec<OpResponse>> {
    ops.into_iter()
        .map(|op| {
            Ok(match op {
                wit::ResponseOp::Range(r) => OpResponse::Range(r),
                wit::ResponseOp::Put(p) => OpResponse::Put(p),
                wit::ResponseOp::DeleteRange(d) => OpResponse::Delete(d),
                wit::ResponseOp::Txn(index) => {
                    let outcome = usize::try_from(index)
                        .ok()
                        .and_then(|i| nested.get_mut(i))
                        .and_then(Option::take)
                        .ok_or_else(|| Error::internal(format!("txn response: bad nested index {index}")))?;
                    let responses = unflatten_ops(header, outcome.responses, nested)?;
                    OpResponse::Txn(Box::new(TxnResponse { header, succeeded: outcome.succeeded, responses }))
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header { cluster_id: 1, member_id: 2, revision: 7, raft_term: 3 }
    }

    fn put_response() -> wit::ResponseOp {
        wit::ResponseOp::Put(PutResponse { header: header(), prev_kv: None })
    }

    fn keys(ops: &[wit::RequestOp]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                wit::RequestOp::Range(r) => format!("get {}", String::from_utf8_lossy(&r.key)),
                wit::RequestOp::Put(p) => format!("put {}", String::from_utf8_lossy(&p.key)),
                wit::RequestOp::DeleteRange(d) => format!("del {}", String::from_utf8_lossy(&d.key)),
                wit::RequestOp::Txn(i) => format!("txn {i}"),
            })
            .collect()
    }

    #[test]
    fn compare_builders_fill_the_wire_record() {
        let c = Compare::mod_revision("k").lt(5);
        assert_eq!((c.key.as_slice(), c.result), (&b"k"[..], CompareResult::Less));
        assert!(matches!(c.target, CompareTarget::ModRevision(5)));
        let c = Compare::value("k").range_end("l").eq(b"x");
        assert_eq!(c.range_end, b"l");
        assert!(matches!(c.target, CompareTarget::Value(ref v) if v == b"x"));
        assert!(matches!(Compare::version("k").ne(0).target, CompareTarget::Version(0)));
        assert!(matches!(Compare::create_revision("k").gt(2).target, CompareTarget::CreateRevision(2)));
        assert!(matches!(Compare::lease("k").eq(9).target, CompareTarget::Lease(9)));
    }

    #[test]
    fn a_flat_txn_has_no_nested_entries() {
        let request = Txn::new()
            .when([Compare::version("a").eq(0)])
            .and_then([Op::put("a", "1"), Op::get("b")])
            .or_else([Op::delete("c")])
            .into_request();
        assert_eq!(request.compare.len(), 1);
        assert_eq!(keys(&request.success), ["put a", "get b"]);
        assert_eq!(keys(&request.failure), ["del c"]);
        assert!(request.nested.is_empty());
    }

    #[test]
    fn nested_txns_refer_only_to_later_entries() {
        let deepest = Txn::new().and_then([Op::put("d", "")]);
        let inner = Txn::new().when([Compare::value("i").eq("x")]).and_then([Op::txn(deepest)]).or_else([Op::get("f")]);
        let second = Txn::new().or_else([Op::delete("s")]);
        let request = Txn::new().and_then([Op::txn(inner), Op::get("a")]).or_else([Op::txn(second)]).into_request();

        assert_eq!(keys(&request.success), ["txn 0", "get a"]);
        assert_eq!(keys(&request.failure), ["txn 2"]);
        assert_eq!(request.nested.len(), 3);
        assert_eq!(request.nested[0].compare.len(), 1);
        assert_eq!(keys(&request.nested[0].success), ["txn 1"]);
        assert_eq!(keys(&request.nested[0].failure), ["get f"]);
        assert_eq!(keys(&request.nested[1].success), ["put d"]);
        assert_eq!(keys(&request.nested[2].failure), ["del s"]);
        for (i, branches) in request.nested.iter().enumerate() {
            for op in branches.success.iter().chain(&branches.failure) {
                if let wit::RequestOp::Txn(j) = op {
                    assert!(*j as usize > i);
                }
            }
        }
    }

    #[test]
    fn nested_outcomes_come_back_as_a_tree() {
        let wire = wit::TxnResponse {
            header: header(),
            succeeded: true,
            responses: vec![wit::ResponseOp::Txn(1), put_response()],
            nested: vec![
                wit::TxnOutcome { succeeded: true, responses: vec![put_response()] },
                wit::TxnOutcome { succeeded: false, responses: vec![wit::ResponseOp::Txn(0)] },
            ],
        };
        let response = TxnResponse::from_wire(wire).unwrap();
        assert!(response.succeeded);
        assert_eq!(response.responses.len(), 2);
        let OpResponse::Txn(outer) = &response.responses[0] else { panic!("not a txn") };
        assert!(!outer.succeeded);
        assert_eq!(outer.header.revision, 7);
        let OpResponse::Txn(inner) = &outer.responses[0] else { panic!("not a txn") };
        assert!(inner.succeeded);
        assert!(matches!(inner.responses[..], [OpResponse::Put(_)]));
    }

    #[test]
    fn bad_nested_indices_are_errors() {
        let cyclic = wit::TxnResponse {
            header: header(),
            succeeded: true,
            responses: vec![wit::ResponseOp::Txn(0)],
            nested: vec![wit::TxnOutcome { succeeded: true, responses: vec![wit::ResponseOp::Txn(0)] }],
        };
        assert!(TxnResponse::from_wire(cyclic).is_err());
        let missing = wit::TxnResponse {
            header: header(),
            succeeded: true,
            responses: vec![wit::ResponseOp::Txn(4)],
            nested: Vec::new(),
        };
        assert!(TxnResponse::from_wire(missing).is_err());
        let unused = wit::TxnResponse {
            header: header(),
            succeeded: true,
            responses: Vec::new(),
            nested: vec![wit::TxnOutcome { succeeded: true, responses: Vec::new() }],
        };
        assert!(TxnResponse::from_wire(unused).is_err());
    }
}
