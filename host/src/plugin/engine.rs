//! The WebAssembly engine every plugin of a member runs on, and turning wasm bytes into a
//! [`Compiled`] plugin: compiled once (by content hash, see [`super::registry`]; kept across
//! restarts, see [`super::compiled_cache`]), checked against the `recipe` world, linked, and
//! asked for its metadata.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::exports::conclave::plugin::plugin::{MethodKind, PluginMetadata};
use super::bindings::{Recipe, RecipePre};
use super::compiled_cache::CompiledCache;
use super::idle::{AllIdle, IdlePool};
use super::state::CallState;
use crate::config::PluginFlags;

/// Native stack a guest may use (a recursion bomb traps here).
const MAX_WASM_STACK: usize = 512 * 1024;
/// The fiber stack each call runs on: the guest's native stack plus the host's calls below it.
const ASYNC_STACK: usize = MAX_WASM_STACK + 512 * 1024;
/// Core instances, memories and tables a component may hold (a Rust guest has a few shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Bytes of a memory or table slot kept mapped between calls and zeroed in place: more than a
/// plugin call usually touches (its data, stack and heap).
const KEEP_RESIDENT: usize = 4 * 1024 * 1024;
/// Longest method name, and most methods, a plugin may declare.
const MAX_METHOD_NAME: usize = 128;
const MAX_METHODS: usize = 256;

/// One member's engine and the linker with Conclave's imports (and an empty WASI).
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    cache: Option<CompiledCache>,
    idle: Arc<AllIdle>,
}

/// A plugin ready to instantiate: compiled, linked against the imports, its metadata read.
pub struct Compiled {
    pub hash: [u8; 32],
    pub size: usize,
    pub pre: RecipePre<CallState>,
    pub metadata: PluginMetadata,
}

impl Compiled {
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }

    pub fn method(&self, name: &str) -> Option<MethodKind> {
        self.metadata.methods.iter().find(|m| m.name == name).map(|m| m.kind)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn content_hash(wasm: &[u8]) -> [u8; 32] {
    Sha256::digest(wasm).into()
}

impl Runtime {
    /// The engine, keeping compiled plugins in `cache_dir` if there is one.
    pub fn new(flags: &PluginFlags, cache_dir: Option<&Path>) -> anyhow::Result<Arc<Runtime>> {
        let max_memory = usize::try_from(flags.plugin_max_memory_bytes)?;
        let instances = flags.plugin_instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .total_memories(instances)
            .total_tables(instances.saturating_mul(4))
            .total_stacks(instances)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(1)
            .max_tables_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memory_size(max_memory)
            // A slot is reset for its next call by zeroing the pages the last one touched
            // (found with the kernel's PAGEMAP_SCAN) instead of madvise, which costs a TLB
            // shootdown across cores and page faults on every call.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .async_stack_size(ASYNC_STACK)
            // Slots the size of the largest memory allowed, with explicit bounds checks: 10,000
            // waiting calls must fit in the address space.
            .memory_reservation(flags.plugin_max_memory_bytes)
            .memory_reservation_for_growth(0)
            .memory_guard_size(64 * 1024)
            // A copy-on-write image splits each memory into more mappings (the kernel allows a
            // process 65,530 by default: with it, about 10,000 calls could wait at once, with
            // plain copies of a plugin's few kilobytes of data, 16,000).
            .memory_init_cow(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Recipe::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        let cache = cache_dir.map(|dir| CompiledCache::new(dir, &engine));
        Ok(Arc::new(Runtime { engine, linker, cache, idle: AllIdle::new(instances) }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Where a plugin version that allows it keeps its instances between calls.
    pub fn idle_pool(&self) -> Arc<IdlePool> {
        self.idle.pool()
    }

    /// Drop every idle instance (a call found no free slot); whether there were any.
    pub fn evict_idle(&self) -> bool {
        self.idle.evict()
    }

    /// Compile `wasm` and link it: refuses (with a reason for the deployer) bytes that are no
    /// component, a component for another world, or one whose imports Conclave does not give.
    pub fn compile(&self, wasm: &[u8], hash: &[u8; 32]) -> Result<(Component, RecipePre<CallState>), String> {
        if !wasm.starts_with(b"\0asm") {
            return Err("not WebAssembly: the file does not start with the \\0asm header".into());
        }
        if is_core_module(wasm) {
            return Err("not a component: this is a core WebAssembly module (build for wasm32-wasip2, or wrap it with `wasm-tools component new`)".into());
        }
        let cached = self.cache.as_ref().and_then(|cache| cache.load(&self.engine, hash));
        let compiled_now = cached.is_none();
        let component = match cached {
            Some(component) => component,
            None => Component::new(&self.engine, wasm).map_err(|e| format!("not a valid WebAssembly component: {}", super::call::one_line(&format!("{e:#}"))))?,
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| {
                let why = super::call::one_line(&format!("{e:#}"));
                format!("the component needs imports Conclave does not provide (is it built for conclave:plugin@0.1.0?): {why}")
            })?;
        let pre = RecipePre::new(pre)
            .map_err(|e| {
                let why = super::call::one_line(&format!("{e:#}"));
                format!("the component does not export the conclave:plugin@0.1.0 `recipe` world: {why}")
            })?;
        // Only what links: a refused deploy leaves nothing in the cache.
        if compiled_now && let Some(cache) = &self.cache {
            cache.store(hash, &component);
        }
        Ok((component, pre))
    }
}

/// A core module starts with the same magic as a component, then version 1 and layer 0.
fn is_core_module(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && wasm[..4] == *b"\0asm" && wasm[4..8] == [1, 0, 0, 0]
}

/// Refuse metadata no caller could use: no name or version, a method without a usable name, or
/// one declared twice.
pub fn check_metadata(metadata: &PluginMetadata) -> Result<(), String> {
    if metadata.name.is_empty() || metadata.version.is_empty() {
        return Err("the plugin's metadata has no name or no version".into());
    }
    if metadata.methods.len() > MAX_METHODS {
        return Err(format!("the plugin declares {} methods (at most {MAX_METHODS})", metadata.methods.len()));
    }
    for (i, method) in metadata.methods.iter().enumerate() {
        if method.name.is_empty() || method.name.len() > MAX_METHOD_NAME {
            return Err(format!("the plugin declares a method with an empty or too long name ({:?})", method.name));
        }
        if metadata.methods[..i].iter().any(|m| m.name == method.name) {
            return Err(format!("the plugin declares method {:?} twice", method.name));
        }
    }
    Ok(())
}
