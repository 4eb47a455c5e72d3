//! Keys: etcd's Range, Put and DeleteRange, with shorthands for one key and for a prefix.
//! Txns are in [`crate::txn`].

use crate::bindings::conclave::plugin::kv as wit;
use crate::errors::Result;

pub use crate::bindings::conclave::plugin::types::{Header, KeyValue};
pub use wit::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, SortOrder,
    SortTarget,
};

/// etcd's "prefix end": the `range-end` that makes `[prefix, range-end)` every key starting with
/// `prefix`. The last byte below 0xff is incremented and what follows it dropped; a prefix of only
/// 0xff bytes (or an empty one) has no end, so it is "\0": every key from `prefix` on.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

impl RangeRequest {
    /// `[key, range_end)` at the latest revision, every option off; empty `range_end` is `key` alone.
    pub fn new(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        RangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            limit: 0,
            revision: 0,
            sort_order: SortOrder::None,
            sort_target: SortTarget::Key,
            serializable: false,
            keys_only: false,
            count_only: false,
            min_mod_revision: 0,
            max_mod_revision: 0,
            min_create_revision: 0,
            max_create_revision: 0,
        }
    }

    /// One key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::new(key, Vec::new())
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let prefix = prefix.into();
        let end = prefix_end(&prefix);
        Self::new(prefix, end)
    }

    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    pub fn at_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }

    pub fn sort(mut self, order: SortOrder, target: SortTarget) -> Self {
        self.sort_order = order;
        self.sort_target = target;
        self
    }

    /// Serve from this member's store without asking the leader.
    pub fn serializable(mut self) -> Self {
        self.serializable = true;
        self
    }

    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }
}

impl PutRequest {
    /// Put `value` at `key`, with no lease and every option off.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        PutRequest {
            key: key.into(),
            value: value.into(),
            lease: 0,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        }
    }

    pub fn lease(mut self, lease: i64) -> Self {
        self.lease = lease;
        self
    }

    /// Answer with the key's previous value.
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    /// Keep the current value (only the lease changes).
    pub fn ignore_value(mut self) -> Self {
        self.ignore_value = true;
        self
    }

    /// Keep the current lease (only the value changes).
    pub fn ignore_lease(mut self) -> Self {
        self.ignore_lease = true;
        self
    }
}

impl DeleteRangeRequest {
    /// Delete `[key, range_end)`; empty `range_end` is `key` alone.
    pub fn new(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        DeleteRangeRequest { key: key.into(), range_end: range_end.into(), prev_kv: false }
    }

    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::new(key, Vec::new())
    }

    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let prefix = prefix.into();
        let end = prefix_end(&prefix);
        Self::new(prefix, end)
    }

    /// Answer with the deleted keys' last values.
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// etcd's Range in full.
pub fn range(request: &RangeRequest) -> Result<RangeResponse> {
    Ok(wit::range(request)?)
}

/// One key's current value, or `None` when it does not exist.
pub fn get(key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
    Ok(range(&RangeRequest::key(key))?.kvs.into_iter().next())
}

/// Every key starting with `prefix`, in key order.
pub fn get_prefix(prefix: impl Into<Vec<u8>>) -> Result<Vec<KeyValue>> {
    Ok(range(&RangeRequest::prefix(prefix))?.kvs)
}

/// etcd's Put in full: the header's revision is the write's, `prev_kv` is set when asked for.
pub fn put_request(request: &PutRequest) -> Result<PutResponse> {
    Ok(wit::put(request)?)
}

/// Put `value` at `key`; the answer is the revision of the write.
pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<i64> {
    Ok(put_request(&PutRequest::new(key, value))?.header.revision)
}

/// Put `value` at `key` attached to `lease`; the answer is the revision of the write.
pub fn put_with_lease(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: i64) -> Result<i64> {
    Ok(put_request(&PutRequest::new(key, value).lease(lease))?.header.revision)
}

/// Put `value` at `key`; the answer is the revision of the write and the key's previous value.
pub fn put_returning_prev(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<(i64, Option<KeyValue>)> {
    let response = put_request(&PutRequest::new(key, value).prev_kv())?;
    Ok((response.header.revision, response.prev_kv))
}

/// etcd's DeleteRange in full.
pub fn delete_range(request: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
    Ok(wit::delete_range(request)?)
}

/// Delete one key; the answer is how many keys went (0 or 1).
pub fn delete(key: impl Into<Vec<u8>>) -> Result<i64> {
    Ok(delete_range(&DeleteRangeRequest::key(key))?.deleted)
}

/// Delete every key starting with `prefix`; the answer is how many went.
pub fn delete_prefix(prefix: impl Into<Vec<u8>>) -> Result<i64> {
    Ok(delete_range(&DeleteRangeRequest::prefix(prefix))?.deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"counter/"), b"counter0");
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b");
        assert_eq!(prefix_end(&[0x01, 0xfe, 0xff, 0xff]), [0x01, 0xff]);
    }

    #[test]
    fn prefix_end_of_no_end_is_every_key_on() {
        assert_eq!(prefix_end(&[0xff, 0xff]), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }

    #[test]
    fn prefix_requests_use_the_prefix_end() {
        let r = RangeRequest::prefix("a/").limit(3);
        assert_eq!((r.key.as_slice(), r.range_end.as_slice(), r.limit), (&b"a/"[..], &b"a0"[..], 3));
        let d = DeleteRangeRequest::prefix("a/");
        assert_eq!(d.range_end, b"a0");
        assert!(RangeRequest::key("k").range_end.is_empty());
    }
}
