//! Watching: wait for the events of a key or range. [`Watcher`] keeps the position between
//! waits, so a loop over [`Watcher::next`] sees every event once, in order.

use std::time::Duration;

use crate::bindings::conclave::plugin::watch as wit;
use crate::errors::Result;
use crate::kv::prefix_end;

pub use wit::{Event, EventKind, WaitRequest, WaitResponse};

/// One wait, in full: the events of the first revisions at or after `start_revision` that have
/// some, or none once `timeout_ms` has passed.
pub fn wait(request: &WaitRequest) -> Result<WaitResponse> {
    Ok(wit::wait(request)?)
}

/// The store's current revision on this member.
pub fn current_revision() -> Result<i64> {
    Ok(wit::current_revision()?)
}

/// A watch on a key or range that remembers where the next wait starts.
#[derive(Clone, Debug)]
pub struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    next_revision: i64,
    prev_kv: bool,
}

impl Watcher {
    /// Watch `[key, range_end)`; empty `range_end` is `key` alone. Starts after the current
    /// revision unless [`from_revision`](Self::from_revision) says otherwise.
    pub fn range(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        Watcher { key: key.into(), range_end: range_end.into(), next_revision: 0, prev_kv: false }
    }

    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::range(key, Vec::new())
    }

    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let prefix = prefix.into();
        let end = prefix_end(&prefix);
        Self::range(prefix, end)
    }

    /// Start with the events of `revision` (0: after the current revision).
    pub fn from_revision(mut self, revision: i64) -> Self {
        self.next_revision = revision;
        self
    }

    /// Deliver each event with the key's previous value.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    /// Where the next wait starts; 0 until the first wait has answered when started with 0.
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// The next events, or none when `timeout` passes first (the position still moves on, so
    /// nothing is missed or repeated). `timeout` is cut to whole milliseconds, at most `u32::MAX`.
    pub fn next(&mut self, timeout: Duration) -> Result<Vec<Event>> {
        Ok(self.next_response(timeout)?.events)
    }

    /// [`next`](Self::next) with the whole answer: the events and the header of the wait.
    pub fn next_response(&mut self, timeout: Duration) -> Result<WaitResponse> {
        let request = WaitRequest {
            key: self.key.clone(),
            range_end: self.range_end.clone(),
            start_revision: self.next_revision,
            prev_kv: self.prev_kv,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        };
        let response = wait(&request)?;
        self.next_revision = response.next_revision;
        Ok(response)
    }
}
