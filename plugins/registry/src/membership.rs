//! `watch`: every join and leave of a service from a revision, as the caller's stream.

use std::time::Duration;

use conclave_guest::watch::{EventKind, Watcher, current_revision};
use conclave_guest::{Error, ErrorCode, Result, json};
use serde::Serialize;

use crate::endpoint;

/// How long one wait lasts before it is renewed; the call's own limit ends the stream.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Serialize)]
struct Change<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    instance: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<String>,
    revision: i64,
}

/// Emit each change until the caller goes away.
pub fn watch(service: &str, from_revision: i64) -> Result<()> {
    let prefix = endpoint::prefix(service)?;
    // The previous value tells a leave's address.
    let mut watcher = Watcher::prefix(prefix.as_str()).from_revision(from_revision).with_prev_kv();
    loop {
        let events = match watcher.next(WAIT) {
            Ok(events) => events,
            Err(e) if e.is_cancelled() => return Ok(()),
            Err(e) if e.code == ErrorCode::Compacted => return Err(compacted(watcher.next_revision(), e)),
            Err(e) => return Err(e),
        };
        for event in events {
            let (kind, addr) = match event.kind {
                EventKind::Put => ("join", endpoint::decode(&event.kv).ok().map(|e| e.addr)),
                EventKind::Delete => ("leave", event.prev_kv.as_ref().and_then(|kv| endpoint::decode(kv).ok()).map(|e| e.addr)),
            };
            let instance = endpoint::instance(&prefix, &event.kv)?;
            let change = Change { kind, instance, addr, revision: event.kv.mod_revision };
            match json::emit(&change) {
                Err(e) if e.is_cancelled() => return Ok(()),
                sent => sent?,
            }
        }
    }
}

/// The caller must list again: say from where.
fn compacted(revision: i64, e: Error) -> Error {
    let current = current_revision().map_or_else(|_| "unknown".to_string(), |r| r.to_string());
    Error::new(
        ErrorCode::Compacted,
        format!("revision {revision} is compacted ({}); the current revision is {current}: list and watch from there", e.message),
    )
}
