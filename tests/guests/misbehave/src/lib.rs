//! A plugin that misbehaves on request, one way per method, for the plugin runtime's tests.
//! Grant it `allowed/` (read and write) and never `forbidden/`.
//!
//! Methods (payloads are text):
//! - `noop` → empty; `echo` → the payload; `version` → the metadata version
//! - `spin`: loops forever without a host call; `sleep` `MS`: busy-waits MS milliseconds on
//!   `monotonic-ns` (one host call per turn)
//! - `trap`: panics; `unreachable`: executes wasm `unreachable`
//! - `memory-bomb`: allocates and touches memory until it runs out
//! - `deep-recursion`: recurses until the stack runs out
//! - `forbidden-put`, `forbidden-get`, `forbidden-txn-op` (a txn whose success op puts
//!   `forbidden/x`), `forbidden-txn-compare` (a txn comparing `forbidden/x`), `forbidden-watch`
//!   (a wait on the prefix `forbidden/`): each fails with the host's error
//! - `allowed-put` `KEY=VALUE` (or `KEY`, value empty): puts `allowed/KEY`, answers the revision
//! - `big-output` `N`: answers N bytes
//! - `stuck-watch`: waits on `allowed/never` in 60 s turns, forever
//! - `watch-once` `KEY`: waits for the first event on `allowed/KEY` after the current revision and
//!   answers the value it wrote
//! - `emit` (streaming) `N`: emits "0".."N-1"; `emit-forever` (streaming): emits until emit fails
//! - `log` `TEXT`: logs TEXT at info and writes it to stderr
//! - `calls`: how many calls this instance has served, this one included (1 in a fresh instance)
//!
//! The version is "1", or `$MISBEHAVE_VERSION` when that is set at build time
//! (`MISBEHAVE_VERSION=2 cargo build --release --target wasm32-wasip2`), so a test can deploy a
//! second, different build of the same plugin.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use conclave_guest::watch::{WaitRequest, Watcher};
use conclave_guest::{Compare, Error, Metadata, Op, Plugin, Result, Txn, kv, node, prefix_end, watch};

const VERSION: &str = match option_env!("MISBEHAVE_VERSION") {
    Some(version) => version,
    None => "1",
};

const UNARY: &[&str] = &[
    "noop",
    "echo",
    "version",
    "spin",
    "sleep",
    "trap",
    "unreachable",
    "memory-bomb",
    "deep-recursion",
    "forbidden-put",
    "forbidden-get",
    "forbidden-txn-op",
    "forbidden-txn-compare",
    "forbidden-watch",
    "allowed-put",
    "big-output",
    "stuck-watch",
    "clean-up-when-cancelled",
    "watch-once",
    "log",
    "calls",
];

/// Calls this instance has served.
static CALLS: AtomicU32 = AtomicU32::new(0);

struct Misbehave;

impl Plugin for Misbehave {
    fn metadata() -> Metadata {
        let metadata = UNARY.iter().fold(Metadata::new("misbehave", VERSION), |m, name| m.unary(*name));
        metadata.streaming("emit").streaming("emit-forever").streaming("emit-then-spin")
    }

    fn handle(method: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
        let served = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        match method {
            "calls" => Ok(served.to_string().into_bytes()),
            "noop" => Ok(Vec::new()),
            "echo" => Ok(payload),
            "version" => Ok(VERSION.as_bytes().to_vec()),
            "spin" => loop {
                std::hint::black_box(());
            },
            "sleep" => {
                let end = node::monotonic_ns() + number(&payload)? * 1_000_000;
                while node::monotonic_ns() < end {}
                Ok(Vec::new())
            }
            "trap" => panic!("misbehave: trap requested"),
            "unreachable" => core::arch::wasm32::unreachable(),
            "memory-bomb" => memory_bomb(),
            "deep-recursion" => Ok(recurse(0).to_string().into_bytes()),
            "forbidden-put" => Ok(kv::put("forbidden/x", "x")?.to_string().into_bytes()),
            "forbidden-get" => Ok(kv::get("forbidden/x")?.map(|kv| kv.value).unwrap_or_default()),
            "forbidden-txn-op" => {
                Txn::new().and_then([Op::put("forbidden/x", "x")]).commit()?;
                Ok(Vec::new())
            }
            "forbidden-txn-compare" => {
                Txn::new()
                    .when([Compare::version("forbidden/x").eq(0)])
                    .and_then([Op::put("allowed/x", "x")])
                    .commit()?;
                Ok(Vec::new())
            }
            "forbidden-watch" => {
                let request = WaitRequest {
                    key: b"forbidden/".to_vec(),
                    range_end: prefix_end(b"forbidden/"),
                    start_revision: 0,
                    prev_kv: false,
                    timeout_ms: 1000,
                };
                watch::wait(&request)?;
                Ok(Vec::new())
            }
            "allowed-put" => {
                let text = text(&payload)?;
                let (key, value) = text.split_once('=').unwrap_or((text, ""));
                Ok(kv::put(format!("allowed/{key}"), value)?.to_string().into_bytes())
            }
            "big-output" => {
                Ok(vec![b'x'; usize::try_from(number(&payload)?).map_err(|_| Error::invalid_argument("too big"))?])
            }
            "stuck-watch" => {
                let mut watcher = Watcher::key("allowed/never");
                loop {
                    watcher.next(Duration::from_secs(60))?;
                }
            }
            // Leave a mark, wait; once the caller has gone, remove the mark (as a lock waiter
            // removes its key).
            "clean-up-when-cancelled" => {
                let key = format!("allowed/{}", text(&payload)?);
                kv::put(key.as_str(), "waiting")?;
                let mut watcher = Watcher::key("allowed/never");
                loop {
                    match watcher.next(Duration::from_secs(60)) {
                        Err(e) if e.is_cancelled() => {
                            kv::delete(key.as_str())?;
                            return Err(e);
                        }
                        other => other?,
                    };
                }
            }
            "watch-once" => {
                let key = format!("allowed/{}", text(&payload)?);
                let mut watcher = Watcher::key(key).from_revision(watch::current_revision()? + 1);
                loop {
                    if let Some(event) = watcher.next(Duration::from_secs(60))?.into_iter().next() {
                        return Ok(event.kv.value);
                    }
                }
            }
            "emit" => {
                for i in 0..number(&payload)? {
                    conclave_guest::emit(i.to_string().as_bytes())?;
                }
                Ok(Vec::new())
            }
            "emit-then-spin" => {
                conclave_guest::emit(b"spinning")?;
                loop {
                    std::hint::black_box(());
                }
            }
            "emit-forever" => {
                let mut i = 0u64;
                while conclave_guest::emit(i.to_string().as_bytes()).is_ok() {
                    i += 1;
                }
                Ok(Vec::new())
            }
            "log" => {
                let text = String::from_utf8_lossy(&payload);
                conclave_guest::info!("{text}");
                eprintln!("{text}");
                Ok(Vec::new())
            }
            _ => Err(Error::unknown_method(method)),
        }
    }
}

conclave_guest::export_plugin!(Misbehave);

fn text(payload: &[u8]) -> Result<&str> {
    std::str::from_utf8(payload).map_err(|_| Error::invalid_argument("the payload is not UTF-8"))
}

fn number(payload: &[u8]) -> Result<u64> {
    text(payload)?.trim().parse().map_err(|_| Error::invalid_argument("the payload is not a decimal number"))
}

/// Keep every MiB allocated and written to, so none of it is optimised away or left untouched.
fn memory_bomb() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        hoard.push(std::hint::black_box(chunk));
    }
}

/// A frame that must stay on the stack: its array is used after the recursive call returns.
#[expect(unconditional_recursion, reason = "running out of stack is the point")]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 32]);
    recurse(depth + 1) + frame[(depth % 32) as usize]
}
