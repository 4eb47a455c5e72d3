//! Running one call of a plugin: an instance of the plugin's pre-linked component, the
//! manifest's limits (fuel for CPU, a memory cap, a wall-clock timeout, a concurrency cap, payload
//! sizes), and an error that names the plugin, the method and the limit when one is hit. The
//! instance is dropped after the call, whatever happened, unless the plugin's manifest allows
//! reusing instances and the call ended cleanly (see [`super::idle`]).
//!
//! A call runs in its caller's task; when its caller goes away, it moves to a task of its own,
//! where the guest's waits (watch, emit) end with `cancelled` and it may still clean up (delete
//! the key it made, say) within its time.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::FutureExt;

use tokio::sync::{mpsc, watch};
use tonic::Code;
use wasmtime::{CallHook, Store, Trap};

use super::bindings::Recipe;
use super::engine::Runtime;
use super::idle::Kept;
use super::imports::guest_error_code;
use super::registry::Loaded;
use super::state::{CallContext, CallState};
use crate::error::EtcdError;
use crate::service::Service;

/// Fuel a guest burns between yields to the async runtime: a busy guest shares its thread, and
/// the wall-clock timeout can fire, within about a millisecond.
const YIELD_FUEL: u64 = 1_000_000;
/// Limits for reading a plugin's metadata at deploy.
const METADATA_FUEL: u64 = 100_000_000;
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// One call: which method, with what, and where a streaming method's messages go.
pub struct Call {
    pub method: String,
    pub payload: Vec<u8>,
    pub emit: Option<mpsc::Sender<Vec<u8>>>,
}

/// Why a call failed.
#[derive(Debug)]
pub enum Failure {
    /// The guest answered with an error of its own: its code and its words.
    Guest { plugin: Arc<str>, method: String, error: EtcdError },
    /// The host stopped the call (a limit, a trap, a refused key…), naming the plugin and method.
    Host(EtcdError),
}

impl Failure {
    /// The error for the plugin's own callers: a guest's error prefixed with the plugin and
    /// method, like the host's.
    pub fn named(self) -> EtcdError {
        match self {
            Failure::Guest { plugin, method, error } => {
                EtcdError::other(error.code(), format!("plugin {plugin}: method {method}: {error}"))
            }
            Failure::Host(error) => error,
        }
    }
}

/// Run `call` on `plugin` as the plugin's caller of `service`, in a task of its own that learns
/// (through its waits) when this future is dropped.
pub async fn run(runtime: Arc<Runtime>, plugin: Arc<Loaded>, service: Service, call: Call) -> Result<Vec<u8>, Failure> {
    let (caller_here, caller_gone) = watch::channel(());
    let started = std::time::Instant::now();
    let (name, method) = (plugin.name.clone(), call.method.clone());
    let running = AssertUnwindSafe(async move { execute(&runtime, &plugin, service, call, caller_gone).await }).catch_unwind();
    let outcome = Detachable::new(running, caller_here)
        .await
        .unwrap_or_else(|_| Err(Failure::Host(EtcdError::internal("plugin call failed: the host panicked"))));
    let label = match &outcome {
        Ok(_) => "ok".to_string(),
        Err(Failure::Guest { .. }) => "guest_error".to_string(),
        Err(Failure::Host(e)) => snake_case(&format!("{:?}", e.code())),
    };
    crate::metrics::get().plugin_call(&name, &method, &label, started.elapsed());
    outcome
}

/// A call run in its caller's task, so a short call costs no hand-off to another thread and back
/// (at one client, two cross-thread wake-ups were a fifth of a lock's time). Dropped before it
/// ends, it tells the call its caller is gone and moves the rest to a task of its own, where
/// the guest's waits end with `cancelled` and it may still clean up.
struct Detachable<F: Future + Send + 'static> {
    call: Option<Pin<Box<F>>>,
    caller_here: Option<watch::Sender<()>>,
}

impl<F: Future + Send + 'static> Detachable<F>
where
    F::Output: Send,
{
    fn new(call: F, caller_here: watch::Sender<()>) -> Self {
        Detachable { call: Some(Box::pin(call)), caller_here: Some(caller_here) }
    }
}

impl<F: Future + Send + 'static> Future for Detachable<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let call = self.call.as_mut().expect("a finished call is not polled again");
        let outcome = ready!(call.as_mut().poll(cx));
        self.call = None;
        Poll::Ready(outcome)
    }
}

impl<F: Future + Send + 'static> Drop for Detachable<F> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            drop(self.caller_here.take());
            // The call is boxed: moving the box to another task leaves the call where it is.
            tokio::spawn(async move {
                call.await;
            });
        }
    }
}

/// `DeadlineExceeded` → `deadline_exceeded`, as metric labels are written.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

async fn execute(
    runtime: &Runtime,
    plugin: &Arc<Loaded>,
    service: Service,
    call: Call,
    caller_gone: watch::Receiver<()>,
) -> Result<Vec<u8>, Failure> {
    let limits = &plugin.manifest.limits;
    let fail = |code: Code, why: String| EtcdError::other(code, format!("plugin {}: method {}: {why}", plugin.name, call.method));
    if call.payload.len() as u64 > limits.max_payload_bytes {
        return Err(Failure::Host(fail(
            Code::InvalidArgument,
            format!("payload of {} bytes is above limits.max_payload_bytes {}", call.payload.len(), limits.max_payload_bytes),
        )));
    }
    let Ok(_permit) = plugin.calls.clone().try_acquire_owned() else {
        return Err(Failure::Host(fail(
            Code::ResourceExhausted,
            format!("too many concurrent calls (limits.max_concurrent_calls {})", limits.max_concurrent_calls),
        )));
    };
    let streaming = call.emit.is_some();
    let context = CallContext {
        service,
        caller: plugin.caller.clone(),
        plugin: plugin.name.clone(),
        emit: call.emit,
        max_payload_bytes: limits.max_payload_bytes,
        denied: None,
        caller_gone,
        emitted: false,
    };
    let (timeout_name, timeout_ms) = if streaming { limits.stream_timeout() } else { ("timeout_ms", limits.timeout_ms) };
    let idle = plugin.idle.as_ref().filter(|_| !streaming);
    let (mut store, reused) = match idle.and_then(|idle| idle.take()) {
        Some(mut kept) => {
            kept.store.data_mut().call = Some(context);
            kept.store.set_fuel(limits.fuel).expect("fuel is enabled on the engine");
            (kept.store, Some((kept.instance, kept.calls)))
        }
        None => (new_store(runtime, limits.memory_bytes, limits.fuel, Some(context)), None),
    };
    let metrics = crate::metrics::get();
    metrics.plugin_instances.inc();
    let outcome = tokio::time::timeout(Duration::from_millis(timeout_ms), async {
        let (instance, calls) = match reused {
            Some(reused) => reused,
            None => (instantiate(runtime, plugin, &mut store).await?, 0),
        };
        let answer = instance.conclave_plugin_plugin().call_handle(&mut store, &call.method, &call.payload).await?;
        Ok::<_, wasmtime::Error>((answer, instance, calls))
    })
    .await;
    metrics.plugin_instances.dec();
    // The instance of a call that ended as the guest meant it to, which may serve another.
    let (outcome, finished) = match outcome {
        Ok(Ok((answer, instance, calls))) => (Ok(Ok(answer)), Some((instance, calls))),
        Ok(Err(e)) => (Ok(Err(e)), None),
        Err(elapsed) => (Err(elapsed), None),
    };
    // A stream's fuel is refilled after each message: this counts what its last message used.
    let fuel = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(limits.fuel));
    metrics.plugin_fuel(&plugin.name, &call.method, fuel);
    let state = store.data();
    log_stderr(&plugin.name, &call.method, state);
    let denied = state.call.as_ref().and_then(|c| c.denied.clone());
    let result = match (outcome, denied) {
        (_, Some(denied)) => Err(fail(Code::PermissionDenied, format!("{}: {denied}", EtcdError::PermissionDenied))),
        (Err(_elapsed), None) => Err(fail(Code::DeadlineExceeded, format!("call timed out (limits.{timeout_name} {timeout_ms})"))),
        (Ok(Err(e)), None) => Err(fail_trap(e, state, limits, &fail)),
        (Ok(Ok(Err(guest))), None) => {
            let error = EtcdError::other(guest_error_code(guest.code), guest.message);
            Ok(Err(Failure::Guest { plugin: plugin.name.clone(), method: call.method.clone(), error }))
        }
        (Ok(Ok(Ok(output))), None) if output.len() as u64 > limits.max_payload_bytes => Err(fail(
            Code::ResourceExhausted,
            format!("output of {} bytes is above limits.max_payload_bytes {}", output.len(), limits.max_payload_bytes),
        )),
        (Ok(Ok(Ok(output))), None) => Ok(Ok(output)),
    };
    match result {
        Ok(answered) => {
            if let (Some(idle), Some((instance, calls))) = (idle, finished)
                && store.data().is_clean()
            {
                idle.put(Kept { store, instance, calls: calls + 1 });
            }
            answered
        }
        Err(e) => {
            tracing::warn!(plugin = &*plugin.name, method = call.method, "plugin call failed: {e}");
            Err(Failure::Host(e))
        }
    }
}

/// A new instance of `plugin`. When every instance slot is taken, idle instances (of any plugin)
/// make room first.
async fn instantiate(runtime: &Runtime, plugin: &Loaded, store: &mut Store<CallState>) -> wasmtime::Result<Recipe> {
    match plugin.compiled.pre.instantiate_async(&mut *store).await {
        Err(e) if is_pool_exhausted(&e) && runtime.evict_idle() => plugin.compiled.pre.instantiate_async(store).await,
        instantiated => instantiated,
    }
}

/// Why an instance stopped: the limit it hit, or the trap with what the guest printed last
/// (a Rust panic's message).
fn fail_trap(
    error: wasmtime::Error,
    state: &CallState,
    limits: &super::manifest::Limits,
    fail: &impl Fn(Code, String) -> EtcdError,
) -> EtcdError {
    if state.limiter.refused {
        return fail(Code::ResourceExhausted, format!("memory limit exceeded (limits.memory_bytes {})", limits.memory_bytes));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => fail(Code::ResourceExhausted, format!("CPU limit exceeded (limits.fuel {})", limits.fuel)),
        Some(Trap::StackOverflow) => fail(Code::ResourceExhausted, "stack overflow (the native stack is limited to 512 KiB)".into()),
        Some(trap) => fail(Code::Internal, format!("trapped: {trap}{}", last_words(&state.stderr()))),
        None if is_pool_exhausted(&error) => fail(Code::ResourceExhausted, "no free instance slot on this member (--plugin-instances)".into()),
        None if is_out_of_memory(&error) => fail(
            Code::ResourceExhausted,
            "the member could not map memory for another instance (memory, or the kernel's vm.max_map_count)".into(),
        ),
        None => fail(Code::Internal, format!("malformed call or answer: {}", one_line(&format!("{error:#}")))),
    }
}

/// The end of what a trapped guest printed — for a Rust guest, its panic: "panicked at FILE:LINE"
/// and the message (the hint about backtraces left out).
fn last_words(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("note: run with")).collect();
    match lines.len() {
        0 => String::new(),
        n => format!(" ({})", lines[n.saturating_sub(2)..].join(" ")),
    }
}

/// A multi-line error as one line, for a gRPC status a CLI prints on one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_pool_exhausted(error: &wasmtime::Error) -> bool {
    error.chain().any(|e| e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some())
}

/// ENOMEM from mapping an instance's memory or stack (the mapping layers report it as an OS
/// error, not as one type).
fn is_out_of_memory(error: &wasmtime::Error) -> bool {
    error.chain().any(|e| e.to_string().contains("(os error 12)"))
}

fn log_stderr(plugin: &str, method: &str, state: &CallState) {
    for line in state.stderr().lines().filter(|l| !l.trim().is_empty()) {
        tracing::info!(plugin, method, "stderr: {line}");
    }
}

fn new_store(runtime: &Runtime, memory_bytes: u64, fuel: u64, call: Option<CallContext>) -> Store<CallState> {
    let streaming = call.as_ref().is_some_and(|c| c.emit.is_some());
    let mut store = Store::new(runtime.engine(), CallState::new(memory_bytes, call));
    store.limiter(|state| &mut state.limiter);
    store.set_fuel(fuel).expect("fuel is enabled on the engine");
    store.fuel_async_yield_interval(Some(YIELD_FUEL)).expect("fuel is enabled on the engine");
    if streaming {
        // A stream's CPU limit is per message: back from an emit, the guest has its fuel again.
        store.call_hook(move |mut store, hook| {
            let refill = matches!(hook, CallHook::ReturningFromHost)
                && store.data_mut().call.as_mut().is_some_and(|c| std::mem::take(&mut c.emitted));
            if refill {
                store.set_fuel(fuel)?;
            }
            Ok(())
        });
    }
    store
}

/// Read a compiled plugin's metadata in a throwaway instance that may use no imports.
pub async fn metadata(
    runtime: &Runtime,
    pre: &super::bindings::RecipePre<CallState>,
    memory_bytes: u64,
) -> Result<super::bindings::exports::conclave::plugin::plugin::PluginMetadata, String> {
    let mut store = new_store(runtime, memory_bytes, METADATA_FUEL, None);
    let outcome = tokio::time::timeout(METADATA_TIMEOUT, async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.conclave_plugin_plugin().call_metadata(&mut store).await
    })
    .await;
    match outcome {
        Err(_elapsed) => Err("reading the plugin's metadata timed out".into()),
        Ok(Err(e)) => Err(format!("reading the plugin's metadata failed: {e:#}")),
        Ok(Ok(metadata)) => Ok(metadata),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_call_finishes_in_place_and_its_caller_is_told_nothing() {
        let (caller_here, mut caller_gone) = watch::channel(());
        let call = Detachable::new(async { 7 }, caller_here);
        assert_eq!(call.await, 7);
        // The sender went with the finished call; nothing was signalled while it ran.
        assert!(caller_gone.changed().await.is_err());
    }

    #[tokio::test]
    async fn a_call_dropped_by_its_caller_hears_so_and_runs_to_its_end_elsewhere() {
        let (caller_here, mut caller_gone) = watch::channel(());
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let cleaned_up = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let cleaned = cleaned_up.clone();
        let call = Detachable::new(
            async move {
                started_tx.send(()).expect("the test waits for the start");
                // A guest's wait: it ends when the caller goes away.
                let _ = caller_gone.changed().await;
                cleaned.store(true, Ordering::SeqCst);
                done_tx.send(()).expect("the test waits for the end");
            },
            caller_here,
        );
        let mut call = Box::pin(call);
        tokio::select! {
            _ = &mut call => panic!("the call cannot end before its caller goes away"),
            _ = started => {}
        }
        drop(call);
        done.await.expect("the detached call ran to its end");
        assert!(cleaned_up.load(Ordering::SeqCst));
    }
}
