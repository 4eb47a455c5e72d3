//! Between the WIT types of the contract and etcd's protobuf messages the service layer speaks.

use conclave_proto::etcdserverpb as pb;
use conclave_proto::mvccpb;
use tonic::Code;

use crate::error::EtcdError;
use crate::plugin::bindings::conclave::plugin::kv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, TxnBranches, TxnOutcome, TxnRequest,
    TxnResponse,
};
use crate::plugin::bindings::conclave::plugin::types::{Error, ErrorCode, Header, KeyValue};

pub fn to_guest_error(error: EtcdError) -> Error {
    let code = match (&error, error.code()) {
        (EtcdError::Compacted, _) => ErrorCode::Compacted,
        (EtcdError::FutureRev, _) => ErrorCode::FutureRevision,
        (EtcdError::NoSpace, _) => ErrorCode::Exhausted,
        (_, Code::InvalidArgument | Code::OutOfRange) => ErrorCode::InvalidArgument,
        (_, Code::PermissionDenied | Code::Unauthenticated) => ErrorCode::PermissionDenied,
        (_, Code::NotFound) => ErrorCode::NotFound,
        (_, Code::ResourceExhausted) => ErrorCode::Exhausted,
        (_, Code::Unavailable | Code::Aborted) => ErrorCode::Unavailable,
        (_, Code::DeadlineExceeded) => ErrorCode::Timeout,
        (_, Code::Cancelled) => ErrorCode::Cancelled,
        (_, Code::FailedPrecondition | Code::AlreadyExists) => ErrorCode::FailedPrecondition,
        _ => ErrorCode::Internal,
    };
    Error { code, message: error.to_string() }
}

/// The gRPC code a guest's own error reaches the plugin's caller with.
pub fn guest_error_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::Compacted | ErrorCode::FutureRevision => Code::OutOfRange,
        ErrorCode::Timeout => Code::DeadlineExceeded,
        ErrorCode::Exhausted => Code::ResourceExhausted,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Cancelled => Code::Cancelled,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::Internal => Code::Internal,
    }
}

pub fn header(header: Option<pb::ResponseHeader>) -> Header {
    let h = header.unwrap_or_default();
    Header { cluster_id: h.cluster_id, member_id: h.member_id, revision: h.revision, raft_term: h.raft_term }
}

pub fn key_value(kv: mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key.into(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.into(),
        lease: kv.lease,
    }
}

pub fn range_request(r: RangeRequest) -> pb::RangeRequest {
    use pb::range_request::{SortOrder as O, SortTarget as T};
    let sort_order = match r.sort_order {
        SortOrder::None => O::None,
        SortOrder::Ascend => O::Ascend,
        SortOrder::Descend => O::Descend,
    };
    let sort_target = match r.sort_target {
        SortTarget::Key => T::Key,
        SortTarget::Version => T::Version,
        SortTarget::Create => T::Create,
        SortTarget::Mod => T::Mod,
        SortTarget::Value => T::Value,
    };
    pb::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

pub fn range_response(r: pb::RangeResponse) -> RangeResponse {
    RangeResponse { header: header(r.header), kvs: r.kvs.into_iter().map(key_value).collect(), more: r.more, count: r.count }
}

pub fn put_request(r: PutRequest) -> pb::PutRequest {
    pb::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn put_response(r: pb::PutResponse) -> PutResponse {
    PutResponse { header: header(r.header), prev_kv: r.prev_kv.map(key_value) }
}

pub fn delete_request(r: DeleteRangeRequest) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest { key: r.key, range_end: r.range_end, prev_kv: r.prev_kv }
}

pub fn delete_response(r: pb::DeleteRangeResponse) -> DeleteRangeResponse {
    DeleteRangeResponse { header: header(r.header), deleted: r.deleted, prev_kvs: r.prev_kvs.into_iter().map(key_value).collect() }
}

fn compare(c: Compare) -> pb::Compare {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match c.result {
        CompareResult::Equal => R::Equal,
        CompareResult::Greater => R::Greater,
        CompareResult::Less => R::Less,
        CompareResult::NotEqual => R::NotEqual,
    };
    let (target, union) = match c.target {
        CompareTarget::Version(v) => (T::Version, U::Version(v)),
        CompareTarget::CreateRevision(v) => (T::Create, U::CreateRevision(v)),
        CompareTarget::ModRevision(v) => (T::Mod, U::ModRevision(v)),
        CompareTarget::Value(v) => (T::Value, U::Value(v)),
        CompareTarget::Lease(v) => (T::Lease, U::Lease(v)),
    };
    pb::Compare { result: result as i32, target: target as i32, key: c.key, range_end: c.range_end, target_union: Some(union) }
}

/// Rebuild etcd's nested txn from the contract's flat form. A nested txn may be named once, and
/// only by an op before it (of the top level or an earlier nested txn), so the tree is finite and
/// no bigger than what was sent.
pub fn txn_request(r: TxnRequest) -> Result<pb::TxnRequest, EtcdError> {
    let mut nested: Vec<Option<TxnBranches>> = r.nested.into_iter().map(Some).collect();
    let top = TxnBranches { compare: r.compare, success: r.success, failure: r.failure };
    branches(top, None, &mut nested)
}

fn branches(b: TxnBranches, at: Option<u32>, nested: &mut [Option<TxnBranches>]) -> Result<pb::TxnRequest, EtcdError> {
    let ops = |list: Vec<RequestOp>, nested: &mut [Option<TxnBranches>]| -> Result<Vec<pb::RequestOp>, EtcdError> {
        list.into_iter().map(|op| request_op(op, at, nested)).collect()
    };
    let success = ops(b.success, nested)?;
    let failure = ops(b.failure, nested)?;
    Ok(pb::TxnRequest { compare: b.compare.into_iter().map(compare).collect(), success, failure })
}

fn request_op(op: RequestOp, at: Option<u32>, nested: &mut [Option<TxnBranches>]) -> Result<pb::RequestOp, EtcdError> {
    use pb::request_op::Request;
    let request = match op {
        RequestOp::Range(r) => Request::RequestRange(range_request(r)),
        RequestOp::Put(r) => Request::RequestPut(put_request(r)),
        RequestOp::DeleteRange(r) => Request::RequestDeleteRange(delete_request(r)),
        RequestOp::Txn(index) => {
            let bad = || EtcdError::other(Code::InvalidArgument, format!("txn names nested txn {index}, which is missing, used twice or not after it"));
            if at.is_some_and(|at| index <= at) {
                return Err(bad());
            }
            let inner = nested.get_mut(index as usize).and_then(Option::take).ok_or_else(bad)?;
            Request::RequestTxn(branches(inner, Some(index), nested)?)
        }
    };
    Ok(pb::RequestOp { request: Some(request) })
}

/// Flatten etcd's nested txn response into the contract's form.
pub fn txn_response(r: pb::TxnResponse) -> TxnResponse {
    let mut nested = Vec::new();
    let responses = response_ops(r.responses, &mut nested);
    TxnResponse { header: header(r.header), succeeded: r.succeeded, responses, nested }
}

fn response_ops(ops: Vec<pb::ResponseOp>, nested: &mut Vec<TxnOutcome>) -> Vec<ResponseOp> {
    use pb::response_op::Response;
    ops.into_iter()
        .filter_map(|op| {
            Some(match op.response? {
                Response::ResponseRange(r) => ResponseOp::Range(range_response(r)),
                Response::ResponsePut(r) => ResponseOp::Put(put_response(r)),
                Response::ResponseDeleteRange(r) => ResponseOp::DeleteRange(delete_response(r)),
                Response::ResponseTxn(t) => {
                    let index = nested.len();
                    nested.push(TxnOutcome { succeeded: t.succeeded, responses: Vec::new() });
                    let responses = response_ops(t.responses, nested);
                    nested[index].responses = responses;
                    ResponseOp::Txn(index as u32)
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease: 0,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        })
    }

    fn branch(success: Vec<RequestOp>) -> TxnBranches {
        TxnBranches { compare: vec![], success, failure: vec![] }
    }

    #[test]
    fn nested_txns_rebuild_as_a_tree() {
        let flat = TxnRequest {
            compare: vec![],
            success: vec![put("a"), RequestOp::Txn(0)],
            failure: vec![],
            nested: vec![branch(vec![RequestOp::Txn(1)]), branch(vec![put("b")])],
        };
        let txn = txn_request(flat).unwrap();
        let Some(pb::request_op::Request::RequestTxn(inner)) = &txn.success[1].request else { panic!("{txn:?}") };
        let Some(pb::request_op::Request::RequestTxn(innermost)) = &inner.success[0].request else { panic!("{inner:?}") };
        assert!(matches!(&innermost.success[0].request, Some(pb::request_op::Request::RequestPut(p)) if p.key == b"b"));
    }

    #[test]
    fn nested_txns_cannot_loop_or_repeat() {
        for (success, nested) in [
            (vec![RequestOp::Txn(0), RequestOp::Txn(0)], vec![branch(vec![])]),
            (vec![RequestOp::Txn(0)], vec![branch(vec![RequestOp::Txn(0)])]),
            (vec![RequestOp::Txn(1)], vec![branch(vec![]), branch(vec![RequestOp::Txn(0)])]),
            (vec![RequestOp::Txn(3)], vec![]),
        ] {
            let flat = TxnRequest { compare: vec![], success, failure: vec![], nested };
            assert_eq!(txn_request(flat).unwrap_err().code(), Code::InvalidArgument);
        }
    }

    #[test]
    fn nested_responses_flatten_in_order() {
        use pb::response_op::Response;
        let inner = pb::TxnResponse {
            succeeded: true,
            responses: vec![pb::ResponseOp { response: Some(Response::ResponsePut(pb::PutResponse::default())) }],
            ..Default::default()
        };
        let outer = pb::TxnResponse {
            succeeded: false,
            responses: vec![pb::ResponseOp { response: Some(Response::ResponseTxn(inner)) }],
            ..Default::default()
        };
        let flat = txn_response(outer);
        assert!(matches!(flat.responses[..], [ResponseOp::Txn(0)]));
        assert!(flat.nested[0].succeeded && matches!(flat.nested[0].responses[..], [ResponseOp::Put(_)]));
    }
}
