//! What a plugin instance's store holds: an empty WASI (stderr captured for the log), the memory
//! limiter, and the call being served — whose service and grants every import goes through.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::service::{Caller, Service};

/// How much of a call's stderr is kept for the log (a panic message fits many times over).
const STDERR_BYTES: usize = 64 * 1024;
/// Tables a guest may grow to (its function tables are small; this only stops a table bomb).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The call an instance serves.
pub struct CallContext {
    pub service: Service,
    pub caller: Caller,
    pub plugin: Arc<str>,
    /// Where a streaming method's messages go; `None` for a unary method.
    pub emit: Option<mpsc::Sender<Vec<u8>>>,
    pub max_payload_bytes: u64,
    /// The first key the plugin was refused: the call fails with it, whatever the guest answers.
    pub denied: Option<String>,
    /// Closed once the caller has gone away.
    pub caller_gone: watch::Receiver<()>,
    /// A message was emitted since the guest's fuel was last refilled: a streaming call's CPU
    /// limit is per message, so a long-lived stream does not run out.
    pub emitted: bool,
}

impl CallContext {
    /// Resolves once the caller has gone away.
    pub fn gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut gone = self.caller_gone.clone();
        async move { while gone.changed().await.is_ok() {} }
    }
}

pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
    pub limiter: MemoryLimiter,
    /// `None` while the runtime only reads a plugin's metadata: its imports then refuse.
    pub call: Option<CallContext>,
}

impl CallState {
    pub fn new(memory_bytes: u64, call: Option<CallContext>) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_BYTES);
        // No files, sockets, environment or arguments: only a clock, randomness and stderr.
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).allow_tcp(false).allow_udp(false).build();
        CallState {
            wasi,
            table: ResourceTable::new(),
            stderr,
            limiter: MemoryLimiter { memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX), refused: false },
            call,
        }
    }

    /// Whether the instance is as a call leaves it when all went well: no memory refused,
    /// nothing written to stderr, no WASI resource open. Only such an instance serves again.
    pub fn is_clean(&self) -> bool {
        !self.limiter.refused && self.stderr.contents().is_empty() && self.table.is_empty()
    }

    /// What the guest wrote to stderr.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).into_owned()
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Caps an instance's linear memory, remembering a refusal so the failed call can name the limit
/// (the guest usually traps on its own right after).
pub struct MemoryLimiter {
    memory_bytes: usize,
    pub refused: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
