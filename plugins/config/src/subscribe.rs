//! `subscribe`: every version of a document from a version on, as the caller's stream.

use std::time::Duration;

use conclave_guest::kv::RangeRequest;
use conclave_guest::watch::{EventKind, Watcher};
use conclave_guest::{ErrorCode, Result, json, kv};
use serde_json::Value;

use crate::document::{self, Version};
use crate::versions;

/// How long one wait lasts before it is renewed; the call's own limit ends the stream.
const WAIT: Duration = Duration::from_secs(30);

/// Emit each version until the caller goes away; without `from_version`, the current one first.
pub fn subscribe(name: &str, from_version: Option<i64>) -> Result<()> {
    let key = document::key(name)?;
    let start = match from_version {
        Some(version) => version,
        None => {
            let range = kv::range(&RangeRequest::key(key.as_str()))?;
            if let Some(kv) = range.kvs.first()
                && !send(&document::decode(kv))?
            {
                return Ok(());
            }
            range.header.revision + 1
        }
    };
    let mut watcher = Watcher::key(key.as_str()).from_revision(start);
    loop {
        let events = match watcher.next(WAIT) {
            Ok(events) => events,
            Err(e) if e.is_cancelled() => return Ok(()),
            Err(e) if e.code == ErrorCode::Compacted => return Err(versions::compacted(name, &key, start)),
            Err(e) => return Err(e),
        };
        for event in events {
            let version = match event.kind {
                EventKind::Put => document::decode(&event.kv),
                EventKind::Delete => Version { version: event.kv.mod_revision, value: Value::Null },
            };
            if !send(&version)? {
                return Ok(());
            }
        }
    }
}

/// False once the caller has gone.
fn send(version: &Version) -> Result<bool> {
    match json::emit(version) {
        Err(e) if e.is_cancelled() => Ok(false),
        sent => sent.map(|()| true),
    }
}
