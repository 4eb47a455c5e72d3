//! Named counters: `counter/NAME` holds a decimal i64, and every change is a txn that holds only
//! if nobody wrote the key since it was read, so concurrent `add`s never lose an update.
//!
//! Methods (payloads and answers are JSON; a counter that was never written is 0):
//! - `add` `{"name": "x", "delta": 1}` → `{"name": "x", "value": 1, "revision": 5}`
//! - `get` `{"name": "x"}` → the same shape; `revision` is the key's mod revision (0 if absent)
//! - `watch` (streaming) `{"name": "x", "from_revision": 0}` → one such object per change from
//!   `from_revision` on (0: after the current revision), `value` null when the key was deleted;
//!   it ends when the caller goes away.
//!
//! A counter is also a barrier: `arrive` `{"name": "x"}` adds 1 (answering like `add`), and
//! `wait` `{"name": "x", "count": 3}` answers like `get` once the counter is at least `count`
//! (blocking until then, or until the call's time runs out).

use std::time::Duration;

use conclave_guest::kv::RangeRequest;
use conclave_guest::watch::{EventKind, Watcher};
use conclave_guest::{Compare, Error, KeyValue, Metadata, Op, OpResponse, Plugin, Result, Txn, json, kv};
use serde::{Deserialize, Serialize};

/// More failed compare-and-swaps in a row than this is a counter too hot to serve.
const MAX_ATTEMPTS: usize = 64;
const WAIT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Add {
    name: String,
    delta: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Name {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchRequest {
    name: String,
    #[serde(default)]
    from_revision: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitRequest {
    name: String,
    count: i64,
}

#[derive(Serialize)]
struct Value<'a> {
    name: &'a str,
    value: Option<i64>,
    revision: i64,
}

struct Counter;

impl Plugin for Counter {
    fn metadata() -> Metadata {
        Metadata::new("counter", env!("CARGO_PKG_VERSION"))
            .unary("add")
            .unary("get")
            .streaming("watch")
            .unary("arrive")
            .unary("wait")
    }

    fn handle(method: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
        match method {
            "add" => {
                let Add { name, delta } = json::parse(&payload)?;
                let (value, revision) = add(&key(&name)?, delta)?;
                json::to_vec(&Value { name: &name, value: Some(value), revision })
            }
            "arrive" => {
                let Name { name } = json::parse(&payload)?;
                let (value, revision) = add(&key(&name)?, 1)?;
                json::to_vec(&Value { name: &name, value: Some(value), revision })
            }
            "get" => {
                let Name { name } = json::parse(&payload)?;
                let (value, revision) = get(&key(&name)?)?;
                json::to_vec(&Value { name: &name, value: Some(value), revision })
            }
            "wait" => {
                let WaitRequest { name, count } = json::parse(&payload)?;
                let (value, revision) = wait(&key(&name)?, count)?;
                json::to_vec(&Value { name: &name, value: Some(value), revision })
            }
            "watch" => {
                let WatchRequest { name, from_revision } = json::parse(&payload)?;
                watch(&name, from_revision)?;
                Ok(Vec::new())
            }
            _ => Err(Error::unknown_method(method)),
        }
    }
}

conclave_guest::export_plugin!(Counter);

fn key(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::invalid_argument("a counter needs a name"));
    }
    Ok(format!("counter/{name}"))
}

fn decode(kv: &KeyValue) -> Result<i64> {
    std::str::from_utf8(&kv.value).ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
        Error::failed_precondition(format!("{} does not hold a decimal i64", String::from_utf8_lossy(&kv.key)))
    })
}

/// The value and its mod revision; a counter never written is 0 at revision 0.
fn get(key: &str) -> Result<(i64, i64)> {
    match kv::get(key)? {
        Some(kv) => Ok((decode(&kv)?, kv.mod_revision)),
        None => Ok((0, 0)),
    }
}

/// Block until the counter is at least `count`: read it, then follow its changes from the
/// revision after that read, so no write in between is missed.
fn wait(key: &str, count: i64) -> Result<(i64, i64)> {
    let range = kv::range(&RangeRequest::key(key))?;
    if let Some(kv) = range.kvs.first() {
        let value = decode(kv)?;
        if value >= count {
            return Ok((value, kv.mod_revision));
        }
    }
    let mut watcher = Watcher::key(key).from_revision(range.header.revision + 1);
    loop {
        for event in watcher.next(WAIT)? {
            if event.kind == EventKind::Put {
                let value = decode(&event.kv)?;
                if value >= count {
                    return Ok((value, event.kv.mod_revision));
                }
            }
        }
    }
}

/// Add `delta` by compare-and-swap; the answer is the new value and the revision that wrote it.
fn add(key: &str, delta: i64) -> Result<(i64, i64)> {
    let mut current = kv::get(key)?;
    for _ in 0..MAX_ATTEMPTS {
        let (old, unchanged) = match &current {
            Some(kv) => (decode(kv)?, Compare::mod_revision(key).eq(kv.mod_revision)),
            None => (0, Compare::version(key).eq(0)),
        };
        let new = old.checked_add(delta).ok_or_else(|| Error::failed_precondition(format!("{key} would overflow")))?;
        let response =
            Txn::new().when([unchanged]).and_then([Op::put(key, new.to_string())]).or_else([Op::get(key)]).commit()?;
        if response.succeeded {
            return Ok((new, response.header.revision));
        }
        current = match response.responses.into_iter().next() {
            Some(OpResponse::Range(range)) => range.kvs.into_iter().next(),
            _ => return Err(Error::internal("txn failure branch did not answer its get")),
        };
    }
    Err(Error::exhausted(format!("{key}: {MAX_ATTEMPTS} concurrent writes in a row won the race")))
}

/// Emit every change of the counter until the caller goes away.
fn watch(name: &str, from_revision: i64) -> Result<()> {
    let mut watcher = Watcher::key(key(name)?).from_revision(from_revision);
    loop {
        for event in watcher.next(WAIT)? {
            let value = match event.kind {
                EventKind::Put => Some(decode(&event.kv)?),
                EventKind::Delete => None,
            };
            let message = Value { name, value, revision: event.kv.mod_revision };
            match json::emit(&message) {
                Err(e) if e.is_cancelled() => return Ok(()),
                sent => sent?,
            }
        }
    }
}
