//! Txn: evaluate the compares, then run one branch's operations atomically at one revision.
//!
//! Like etcd, the branch taken by every nested txn is decided up front against the state before
//! the txn, and the chosen operations are checked before any of them runs, so a rejected txn
//! changes nothing.

use conclave_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use conclave_proto::etcdserverpb::request_op::Request;
use conclave_proto::etcdserverpb::response_op::Response;
use conclave_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use conclave_proto::mvccpb::KeyValue;

use super::range::range;
use super::span::KeySpan;
use super::store::{ReadView, StoreError, View};
use super::write::{header, Writer};
use crate::error::EtcdError;

/// The branch every txn in a tree takes: this txn's outcome, then one entry per nested txn in the
/// chosen branch, in order.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

/// Whether a txn only reads (no put or delete in any branch, at any depth).
pub fn is_read_only(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).all(|op| match &op.request {
        Some(Request::RequestRange(_)) | None => true,
        Some(Request::RequestTxn(inner)) => is_read_only(inner),
        Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => false,
    })
}

fn branch(txn: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded { &txn.success } else { &txn.failure }
}

fn choose_path(view: &impl View, txn: &TxnRequest) -> Result<Path, StoreError> {
    let mut succeeded = true;
    for compare in &txn.compare {
        if !holds(view, compare)? {
            succeeded = false;
            break;
        }
    }
    let mut nested = Vec::new();
    for op in branch(txn, succeeded) {
        if let Some(Request::RequestTxn(inner)) = &op.request {
            nested.push(choose_path(view, inner)?);
        }
    }
    Ok(Path { succeeded, nested })
}

/// A compare holds when every key in its range satisfies it; a missing single key compares as
/// zero values, except that a value compare on it fails.
fn holds(view: &impl View, compare: &Compare) -> Result<bool, StoreError> {
    let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
    let span = KeySpan::new(&compare.key, &compare.range_end);
    let revs: Vec<_> = view.index().range(&span, view.current_rev()).map(|(_, value)| value.rev).collect();
    if revs.is_empty() {
        return Ok(target != CompareTarget::Value && compares(compare, target, &KeyValue::default()));
    }
    for rev in revs {
        if !compares(compare, target, &view.load(rev)?) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn compares(compare: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    let ordering = match (target, &compare.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value[..].cmp(v.as_slice()),
        (CompareTarget::Value, _) => kv.value[..].cmp(&[]),
        (CompareTarget::Version, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => kv.create_revision.cmp(v),
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
        (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => kv.lease.cmp(v),
        // A target without its value compares against zero, as protobuf's default would.
        (CompareTarget::Version, _) => kv.version.cmp(&0),
        (CompareTarget::Create, _) => kv.create_revision.cmp(&0),
        (CompareTarget::Mod, _) => kv.mod_revision.cmp(&0),
        (CompareTarget::Lease, _) => kv.lease.cmp(&0),
    };
    match CompareResult::try_from(compare.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

/// Reject what etcd rejects before running anything: bad range revisions, puts naming a missing
/// previous key or an unknown lease.
fn check(view: &impl View, txn: &TxnRequest, path: &Path) -> Result<(), StoreError> {
    let mut nested = path.nested.iter();
    for op in branch(txn, path.succeeded) {
        match &op.request {
            Some(Request::RequestRange(r)) => check_range_revision(view, r)?,
            Some(Request::RequestPut(p)) => Writer::check_put(view, p)?,
            Some(Request::RequestTxn(inner)) => {
                check(view, inner, nested.next().expect("one path per nested txn"))?
            }
            Some(Request::RequestDeleteRange(_)) | None => {}
        }
    }
    Ok(())
}

fn check_range_revision(view: &impl View, req: &RangeRequest) -> Result<(), StoreError> {
    if req.revision > view.current_rev() {
        return Err(EtcdError::FutureRev.into());
    }
    if req.revision > 0 && req.revision < view.compact_rev() {
        return Err(EtcdError::Compacted.into());
    }
    Ok(())
}

/// Where a txn's operations run: a writer inside the raft apply loop, or a read view for
/// read-only txns served without the log.
pub trait TxnTarget: View {
    fn put(&mut self, req: &PutRequest) -> Result<Response, StoreError>;
    fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<Response, StoreError>;
}

/// Run `txn` against `target`; the response header holds the store revision afterwards.
pub fn txn(target: &mut impl TxnTarget, txn: &TxnRequest) -> Result<TxnResponse, StoreError> {
    crate::metrics::get().txns.inc();
    let path = choose_path(target, txn)?;
    check(target, txn, &path)?;
    let mut response = run(target, txn, &path)?;
    response.header = header(target.current_rev());
    Ok(response)
}

fn run(target: &mut impl TxnTarget, txn: &TxnRequest, path: &Path) -> Result<TxnResponse, StoreError> {
    let mut nested = path.nested.iter();
    let mut responses = Vec::new();
    for op in branch(txn, path.succeeded) {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => Response::ResponseRange(range(target, r)?),
            Some(Request::RequestPut(p)) => target.put(p)?,
            Some(Request::RequestDeleteRange(d)) => target.delete_range(d)?,
            Some(Request::RequestTxn(inner)) => {
                let inner_path = nested.next().expect("one path per nested txn");
                Response::ResponseTxn(run(target, inner, inner_path)?)
            }
            None => continue,
        };
        responses.push(ResponseOp { response: Some(response) });
    }
    Ok(TxnResponse {
        header: Some(ResponseHeader::default()),
        succeeded: path.succeeded,
        responses,
    })
}

/// Read-only txns (checked with [`is_read_only`]) run on a read view and never reach these.
impl TxnTarget for ReadView<'_> {
    fn put(&mut self, _: &PutRequest) -> Result<Response, StoreError> {
        Err(StoreError::Storage("a write in a read-only txn".into()))
    }
    fn delete_range(
        &mut self,
        _: &DeleteRangeRequest,
    ) -> Result<Response, StoreError> {
        Err(StoreError::Storage("a write in a read-only txn".into()))
    }
}

impl TxnTarget for Writer<'_, '_> {
    fn put(&mut self, req: &PutRequest) -> Result<Response, StoreError> {
        Writer::put(self, req).map(Response::ResponsePut)
    }
    fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<Response, StoreError> {
        Writer::delete_range(self, req).map(Response::ResponseDeleteRange)
    }
}
