//! The Range request: which keys, at which revision, filtered, sorted and limited as etcd does.

use std::cmp::Ordering;

use conclave_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use conclave_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use conclave_proto::mvccpb::KeyValue;

use super::span::KeySpan;
use super::store::{StoreError, View};
use crate::error::EtcdError;

/// Serve a Range against `view`. The header carries only the store revision; the API layer fills
/// in the cluster fields.
pub fn range(view: &impl View, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
    let current = view.current_rev();
    let at = if req.revision <= 0 { current } else { req.revision };
    if at > current {
        return Err(EtcdError::FutureRev.into());
    }
    if at < view.compact_rev() {
        return Err(EtcdError::Compacted.into());
    }

    let span = KeySpan::new(&req.key, &req.range_end);
    let order = effective_order(req);
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // Without sorting or filtering, keys come in order and one past the limit tells `more`.
    let early_stop = order == SortOrder::None && !filtered && req.limit > 0;

    let mut count = 0i64;
    let mut kvs = Vec::new();
    for (_, rev) in view.index().range(&span, at) {
        count += 1;
        if req.count_only || (early_stop && kvs.len() as i64 > req.limit) {
            continue;
        }
        let kv = view.load(rev)?;
        if passes_filters(req, &kv) {
            kvs.push(kv);
        }
    }

    sort(&mut kvs, req, order);
    let more = req.limit > 0 && kvs.len() as i64 > req.limit;
    if more {
        kvs.truncate(req.limit as usize);
    }
    if req.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    Ok(RangeResponse {
        header: Some(ResponseHeader { revision: current, ..Default::default() }),
        kvs,
        more,
        count,
    })
}

/// etcd sorts ascending by default when a target other than the key is named.
fn effective_order(req: &RangeRequest) -> SortOrder {
    let order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    if order == SortOrder::None && target != SortTarget::Key {
        SortOrder::Ascend
    } else {
        order
    }
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    let above = |value: i64, min: i64| min == 0 || value >= min;
    let below = |value: i64, max: i64| max == 0 || value <= max;
    above(kv.mod_revision, req.min_mod_revision)
        && below(kv.mod_revision, req.max_mod_revision)
        && above(kv.create_revision, req.min_create_revision)
        && below(kv.create_revision, req.max_create_revision)
}

fn sort(kvs: &mut [KeyValue], req: &RangeRequest, order: SortOrder) {
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let compare = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(compare),
        SortOrder::Descend => kvs.sort_by(|a, b| compare(b, a)),
    }
}
