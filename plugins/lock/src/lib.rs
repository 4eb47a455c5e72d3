//! etcd's server-side lock (the v3lock service) as a plugin. A lock NAME is held by the oldest
//! key under `NAME/`; each caller's key is `NAME/<lease id in hex>` on its own lease, so a holder
//! whose lease ends releases the lock, and `etcdctl lock` (the same layout, client-side) and
//! this plugin's callers exclude each other. The key's create revision is the fencing token.
//!
//! Methods:
//! - `v3lock-lock`, `v3lock-unlock`: the protobuf bytes of v3lockpb's Lock/Unlock request and
//!   response, for the v3lock gRPC adapter.
//! - `acquire` `{"name": "jobs", "lease": 7587, "timeout_ms": 5000}` (timeout optional: none
//!   waits as long as the call may) → `{"key": "jobs/1da3", "revision": 42}`; on timeout the
//!   key is removed and the call fails with `timeout`.
//! - `try-acquire` `{"name", "lease"}`: the same without waiting; when another key holds the
//!   lock, ours is removed and the call fails with failed-precondition `locked by KEY`.
//! - `release` `{"key"}` → `{"key", "revision"}` (the deleting revision); failed-precondition
//!   when the key does not exist (not held).

mod json_api;
mod mutex;
mod v3lock;

use conclave_guest::{Error, Metadata, Plugin, Result};

struct Lock;

impl Plugin for Lock {
    fn metadata() -> Metadata {
        Metadata::new("lock", env!("CARGO_PKG_VERSION"))
            .unary("v3lock-lock")
            .unary("v3lock-unlock")
            .unary("acquire")
            .unary("try-acquire")
            .unary("release")
    }

    fn handle(method: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
        match method {
            "v3lock-lock" => v3lock::lock(&payload),
            "v3lock-unlock" => v3lock::unlock(&payload),
            "acquire" => json_api::acquire(&payload),
            "try-acquire" => json_api::try_acquire(&payload),
            "release" => json_api::release(&payload),
            _ => Err(Error::unknown_method(method)),
        }
    }
}

conclave_guest::export_plugin!(Lock);
