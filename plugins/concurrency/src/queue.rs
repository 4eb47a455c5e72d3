//! A queue of lease keys under a prefix, ordered by create revision.

use std::time::Duration;

use conclave_guest::kv::{Header, RangeRequest, SortOrder, SortTarget};
use conclave_guest::watch::{EventKind, Watcher};
use conclave_guest::{Compare, Error, ErrorCode, KeyValue, Op, OpResponse, Result, Txn, kv, node};

/// Longest single watch wait; the deadline, not this, decides when to give up.
const WAIT_SLICE: Duration = Duration::from_secs(30);

/// When a wait gives up with `timeout` (None: only when the call itself ends).
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Option<u64>);

impl Deadline {
    pub const NEVER: Deadline = Deadline(None);

    /// `timeout` from now, on the member's monotonic clock.
    pub fn after(timeout: Duration) -> Self {
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        Deadline(Some(node::monotonic_ns().saturating_add(ns)))
    }

    /// `timeout_ms` from now, or never without one: a JSON method's optional `timeout_ms`.
    pub fn within_ms(timeout_ms: Option<u64>) -> Self {
        timeout_ms.map_or(Deadline::NEVER, |ms| Deadline::after(Duration::from_millis(ms)))
    }

    /// How long the next wait may take; None once passed.
    fn next_wait(self) -> Option<Duration> {
        match self.0 {
            None => Some(WAIT_SLICE),
            Some(at) => {
                let left = at.saturating_sub(node::monotonic_ns());
                (left > 0).then(|| Duration::from_nanos(left).min(WAIT_SLICE))
            }
        }
    }
}

/// Our place in the queue after [`enqueue`].
#[derive(Clone, Debug)]
pub struct Queued {
    pub key: Vec<u8>,
    /// Our key's create revision: its place in the queue (and a lock's fencing token).
    pub revision: i64,
    /// The key as it was before, when our lease already had one (it was kept, not rewritten).
    pub existing: Option<KeyValue>,
    /// The oldest key under the prefix (maybe ours).
    pub first: Option<KeyValue>,
    pub header: Header,
}

impl Queued {
    /// Whether our key is the oldest under the prefix.
    pub fn is_first(&self) -> bool {
        self.first.as_ref().is_none_or(|kv| kv.create_revision == self.revision)
    }
}

/// `prefix` followed by the lease id in lowercase hex, as etcd names a session's key.
pub fn lease_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// The oldest key under `prefix`.
fn first_request(prefix: &[u8]) -> RangeRequest {
    RangeRequest::prefix(prefix).sort(SortOrder::Ascend, SortTarget::Create).limit(1)
}

/// The oldest key under `prefix`, if any, and the header of the read.
pub fn first(prefix: &[u8]) -> Result<(Option<KeyValue>, Header)> {
    let range = kv::range(&first_request(prefix))?;
    Ok((range.kvs.into_iter().next(), range.header))
}

/// Join the queue in one txn, as etcd does: create our key with `value` on `lease` unless it
/// exists (a lease re-uses its key), and read the oldest key. A missing lease fails here.
pub fn enqueue(prefix: &[u8], lease: i64, value: &[u8]) -> Result<Queued> {
    let key = lease_key(prefix, lease);
    let response = Txn::new()
        .when([Compare::create_revision(key.clone()).eq(0)])
        .and_then([Op::put_with_lease(key.clone(), value.to_vec(), lease), Op::range(first_request(prefix))])
        .or_else([Op::get(key.clone()), Op::range(first_request(prefix))])
        .commit()?;
    let mut ranges = first_of_ranges(response.responses);
    let existing = if response.succeeded { None } else { ranges.next().flatten() };
    let first = ranges.next().flatten();
    let revision = existing.as_ref().map_or(response.header.revision, |kv| kv.create_revision);
    Ok(Queued { key, revision, existing, first, header: response.header })
}

/// The first key of each range among a txn's responses, in order.
fn first_of_ranges(responses: Vec<OpResponse>) -> impl Iterator<Item = Option<KeyValue>> {
    responses.into_iter().filter_map(|op| match op {
        OpResponse::Range(range) => Some(range.kvs.into_iter().next()),
        _ => None,
    })
}

/// Wait until `queued`'s key is the oldest under `prefix`: each time, wait for the deletion of
/// the youngest older key only, so one release wakes one waiter. Each read fetches our key with
/// the older ones, so the read that ends the wait also tells whether our key kept its place (a
/// waiter's lease may end while it waits): `Some(header of that read)` when it did, `None` as soon
/// as it is gone. A key that was first when queued needs no read (`Some` of the queuing txn's
/// header): no older key can appear after it.
pub fn wait_turn(prefix: &[u8], queued: &Queued, deadline: Deadline) -> Result<Option<Header>> {
    if queued.is_first() {
        return Ok(Some(queued.header.clone()));
    }
    let mut older = RangeRequest::prefix(prefix).sort(SortOrder::Descend, SortTarget::Create).limit(1);
    older.max_create_revision = queued.revision - 1;
    loop {
        let read = Txn::new().and_then([Op::range(older.clone()), Op::get(queued.key.clone())]).commit()?;
        let mut ranges = first_of_ranges(read.responses);
        let (last_older, ours) = (ranges.next().flatten(), ranges.next().flatten());
        if ours.is_none_or(|kv| kv.create_revision != queued.revision) {
            return Ok(None);
        }
        let Some(last) = last_older else {
            return Ok(Some(read.header));
        };
        wait_delete(&last.key, read.header.revision + 1, deadline)?;
    }
}

/// Wait for `key`'s deletion at or after `from_revision`.
fn wait_delete(key: &[u8], from_revision: i64, deadline: Deadline) -> Result<()> {
    let mut watcher = Watcher::key(key).from_revision(from_revision);
    loop {
        let wait = deadline.next_wait().ok_or_else(|| Error::new(ErrorCode::Timeout, "timed out waiting"))?;
        if watcher.next(wait)?.iter().any(|event| event.kind == EventKind::Delete) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_are_lowercase_hex_as_etcd_writes_them() {
        assert_eq!(lease_key(b"jobs/", 0x694d_77a1_9f0c_0a0b), b"jobs/694d77a19f0c0a0b");
        assert_eq!(lease_key(b"jobs/", 255), b"jobs/ff");
    }
}
