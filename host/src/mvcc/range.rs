//! The Range request: which keys, at which revision, filtered, sorted and limited as etcd does.

use std::cmp::Ordering;

use conclave_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use conclave_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use conclave_proto::mvccpb::KeyValue;

use super::index::Visible;
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
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // Without sorting or filtering, keys come in order and one past the limit tells `more`.
    let early_stop = order == SortOrder::None && !filtered && req.limit > 0;

    // The filters, and sorting by key, create or mod revision, need only what the index knows:
    // only the values of the keys answered are read.
    let mut count = 0i64;
    let mut picked = Vec::new();
    for (_, value) in view.index().range(&span, at) {
        count += 1;
        if req.count_only || (early_stop && picked.len() as i64 > req.limit) {
            continue;
        }
        if passes_filters(req, value.rev.main, value.created) {
            picked.push(value);
        }
    }

    // Sorting by version or value needs every picked value; any other order is known already.
    let by_value = order != SortOrder::None && matches!(target, SortTarget::Version | SortTarget::Value);
    if !by_value {
        sort_by_index(&mut picked, target, order);
        picked.truncate(limit_plus_one(req.limit, picked.len()));
    }
    let mut kvs = picked.iter().map(|value| view.load(value.rev)).collect::<Result<Vec<_>, _>>()?;
    if by_value {
        sort_by_value(&mut kvs, target, order);
    }
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

fn passes_filters(req: &RangeRequest, mod_revision: i64, create_revision: i64) -> bool {
    let above = |value: i64, min: i64| min == 0 || value >= min;
    let below = |value: i64, max: i64| max == 0 || value <= max;
    above(mod_revision, req.min_mod_revision)
        && below(mod_revision, req.max_mod_revision)
        && above(create_revision, req.min_create_revision)
        && below(create_revision, req.max_create_revision)
}

/// How many of `len` sorted keys to read: one past the limit tells `more`.
fn limit_plus_one(limit: i64, len: usize) -> usize {
    match usize::try_from(limit) {
        Ok(limit) if limit > 0 => len.min(limit.saturating_add(1)),
        _ => len,
    }
}

/// Sort keys (in key order) by key, create or mod revision, stably, as etcd does.
fn sort_by_index(values: &mut [Visible], target: SortTarget, order: SortOrder) {
    match target {
        SortTarget::Create => sort_stably(values, order, |a, b| a.created.cmp(&b.created)),
        SortTarget::Mod => sort_stably(values, order, |a, b| a.rev.main.cmp(&b.rev.main)),
        _ if order == SortOrder::Descend => values.reverse(),
        _ => {}
    }
}

/// Sort values by version or value, stably, as etcd does.
fn sort_by_value(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    if target == SortTarget::Value {
        sort_stably(kvs, order, |a, b| a.value.cmp(&b.value));
    } else {
        sort_stably(kvs, order, |a, b| a.version.cmp(&b.version));
    }
}

fn sort_stably<T>(items: &mut [T], order: SortOrder, compare: impl Fn(&T, &T) -> Ordering) {
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => items.sort_by(compare),
        SortOrder::Descend => items.sort_by(|a, b| compare(b, a)),
    }
}

#[cfg(test)]
mod tests {
    use conclave_proto::etcdserverpb::{CompactionRequest, PutRequest};

    use super::*;
    use crate::mvcc::{Store, Writer};

    fn write(store: &Store, change: impl FnOnce(&mut Writer)) {
        let mut batch = store.begin();
        change(&mut Writer::new(&mut batch));
        batch.commit(Vec::new(), |_| {}).unwrap();
    }

    /// The keys under `q/` by `target` in `order`, at most `limit`, created at or before
    /// `max_create` (0: any): (key, create revision, mod revision) each, and `more`.
    fn queue(store: &Store, order: SortOrder, target: SortTarget, limit: i64, max_create: i64) -> (Vec<(String, i64, i64)>, bool) {
        let req = RangeRequest {
            key: b"q/".to_vec(),
            range_end: b"q0".to_vec(),
            sort_order: order as i32,
            sort_target: target as i32,
            limit,
            max_create_revision: max_create,
            ..Default::default()
        };
        let answer = range(&store.read(), &req).unwrap();
        let kvs = answer.kvs.iter().map(|kv| (String::from_utf8(kv.key.to_vec()).unwrap(), kv.create_revision, kv.mod_revision));
        (kvs.collect(), answer.more)
    }

    #[test]
    fn revision_sorts_and_filters_hold_after_rewrites_compaction_and_a_restart() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = Store::open(db.open_tree("mvcc").unwrap()).unwrap();
        // q/a is created at 2 and rewritten at 5: the oldest create revision, the newest mod.
        for key in ["q/a", "q/b", "q/c", "q/a"] {
            write(&store, |w| {
                w.put(&PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() }).unwrap();
            });
        }
        write(&store, |w| {
            w.compact(&CompactionRequest { revision: 5, physical: false }).unwrap();
        });
        store.flush().unwrap();
        let reopened = Store::open(db.open_tree("mvcc").unwrap()).unwrap();
        for store in [&store, &reopened] {
            let (a, b, c) = (("q/a".to_string(), 2, 5), ("q/b".to_string(), 3, 3), ("q/c".to_string(), 4, 4));
            assert_eq!(queue(store, SortOrder::Ascend, SortTarget::Create, 1, 0), (vec![a.clone()], true));
            assert_eq!(queue(store, SortOrder::Descend, SortTarget::Create, 1, 3), (vec![b.clone()], true));
            assert_eq!(queue(store, SortOrder::Descend, SortTarget::Create, 0, 3), (vec![b.clone(), a.clone()], false));
            assert_eq!(queue(store, SortOrder::Descend, SortTarget::Mod, 2, 0), (vec![a.clone(), c.clone()], true));
            assert_eq!(queue(store, SortOrder::Descend, SortTarget::Key, 3, 0), (vec![c, b, a], false));
        }
    }
}
