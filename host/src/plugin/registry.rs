//! The plugins a member serves: the built-in ones (from the binary) and the deployed ones (from
//! the replicated store, followed as entries apply). Each name maps to one [`Loaded`] version; a
//! call takes the version current when it starts and runs wholly on it, so a redeploy swaps
//! versions between calls, never inside one. Compiled plugins are shared by content hash.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, Weak};

use conclave_proto::conclave::plugin::StoredPlugin;
use prost::Message;
use tokio::sync::{watch, Semaphore};

use super::builtin_list::BUILTINS;
use super::call::{self, Call, Failure};
use super::engine::{check_metadata, content_hash, Compiled, Runtime};
use super::idle::IdlePool;
use super::manifest::Manifest;
use crate::config::PluginFlags;
use crate::mvcc::Store;
use crate::node::Node;
use crate::service::{Caller, Service};

/// One version of a plugin, ready to call.
pub struct Loaded {
    pub name: Arc<str>,
    pub compiled: Arc<Compiled>,
    pub manifest: Manifest,
    /// The plugin as a caller of the service layer: its grants.
    pub caller: Caller,
    pub builtin: bool,
    /// Permits for concurrent calls (`limits.max_concurrent_calls`).
    pub calls: Arc<Semaphore>,
    /// Instances between calls, when the manifest allows reusing them.
    pub idle: Option<Arc<IdlePool>>,
}

impl Loaded {
    fn new(runtime: &Runtime, name: &str, compiled: Arc<Compiled>, manifest: Manifest, builtin: bool) -> Arc<Loaded> {
        let caller = Caller::restricted(format!("plugin {name}"), manifest.read_access(), manifest.write_access());
        let calls = Arc::new(Semaphore::new(manifest.limits.max_concurrent_calls as usize));
        let idle = manifest.reuse_instances.then(|| runtime.idle_pool());
        Arc::new(Loaded { name: name.into(), compiled, manifest, caller, builtin, calls, idle })
    }
}

type Serving = Arc<BTreeMap<String, Arc<Loaded>>>;

pub struct Registry {
    runtime: Arc<Runtime>,
    flags: PluginFlags,
    builtins: BTreeMap<String, Arc<Loaded>>,
    serving: RwLock<Serving>,
    /// Compiled plugins by content hash, while anything uses them.
    compiled: Mutex<HashMap<[u8; 32], Weak<Compiled>>>,
    /// The plugin-change generation (see [`crate::apply::Effects`]) served so far.
    synced: watch::Sender<u64>,
}

impl Registry {
    /// Compile the built-in plugins (or find them compiled in `cache_dir`). This needs no
    /// member, so a starting member does it before its raft node runs: the lease clocks start
    /// then, and clients cannot keep leases alive until it serves.
    pub async fn with_builtins(flags: &PluginFlags, cache_dir: Option<&Path>) -> anyhow::Result<Registry> {
        let runtime = Runtime::new(flags, cache_dir)?;
        let mut registry = Registry {
            runtime,
            flags: flags.clone(),
            builtins: BTreeMap::new(),
            serving: RwLock::new(Arc::default()),
            compiled: Mutex::new(HashMap::new()),
            synced: watch::Sender::new(0),
        };
        for (name, wasm, manifest) in BUILTINS {
            let manifest = Manifest::parse(manifest, &registry.flags)
                .map_err(|e| anyhow::anyhow!("built-in plugin {name}: {e}"))?;
            let compiled = registry.prepare(wasm).await.map_err(|e| anyhow::anyhow!("built-in plugin {name}: {e}"))?;
            registry.builtins.insert(name.to_string(), Loaded::new(&registry.runtime, name, compiled, manifest, true));
        }
        Ok(registry)
    }

    /// Compile the plugins deployed in `node`'s store, and follow the store from then on.
    pub async fn follow(self, node: &Arc<Node>) -> Arc<Registry> {
        let registry = Arc::new(self);
        let mut changes = node.plugin_changes.subscribe();
        let generation = *changes.borrow_and_update();
        registry.reconcile(&node.store, generation).await;
        tokio::spawn(follow(Arc::downgrade(&registry), node.store.clone(), changes));
        registry
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn flags(&self) -> &PluginFlags {
        &self.flags
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtins.contains_key(name)
    }

    /// The version of `name` a call made now runs on.
    pub fn get(&self, name: &str) -> Option<Arc<Loaded>> {
        self.serving().get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Loaded>> {
        self.serving().values().cloned().collect()
    }

    fn serving(&self) -> Serving {
        self.serving.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Call `plugin`.
    pub async fn call(&self, plugin: &Arc<Loaded>, service: Service, call: Call) -> Result<Vec<u8>, Failure> {
        call::run(self.runtime.clone(), plugin.clone(), service, call).await
    }

    /// Resolves once this member serves the plugins as of `generation` of the applied changes.
    pub async fn synced_to(&self, generation: u64) {
        let mut synced = self.synced.subscribe();
        // The registry lives as long as its sender, which this borrows: waiting cannot fail.
        let _ = synced.wait_for(|served| *served >= generation).await;
    }

    /// Compile `wasm` (or find it compiled), check it and read its metadata: the deployer hears
    /// why bytes are refused before anything is proposed.
    pub async fn prepare(&self, wasm: &[u8]) -> Result<Arc<Compiled>, String> {
        let hash = content_hash(wasm);
        if let Some(compiled) = self.cached(&hash) {
            return Ok(compiled);
        }
        let runtime = self.runtime.clone();
        let bytes = wasm.to_vec();
        let (_component, pre) = tokio::task::spawn_blocking(move || runtime.compile(&bytes, &hash))
            .await
            .map_err(|e| format!("compiling failed: {e}"))??;
        let metadata = call::metadata(&self.runtime, &pre, self.flags.plugin_max_memory_bytes).await?;
        check_metadata(&metadata)?;
        let compiled = Arc::new(Compiled { hash, size: wasm.len(), pre, metadata });
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, weak| weak.strong_count() > 0);
        cache.insert(hash, Arc::downgrade(&compiled));
        Ok(compiled)
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<Arc<Compiled>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner()).get(hash).and_then(Weak::upgrade)
    }

    /// Serve what the store holds now (as of `generation`): unchanged plugins keep their version,
    /// new or changed ones are compiled (or found compiled), removed ones go.
    async fn reconcile(&self, store: &Store, generation: u64) {
        let stored = match store.plugins() {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!("reading the deployed plugins failed: {e}");
                return;
            }
        };
        let before = self.serving();
        let mut serving = self.builtins.clone();
        for bytes in stored {
            let plugin = match StoredPlugin::decode(&bytes[..]) {
                Ok(plugin) => plugin,
                Err(e) => {
                    tracing::error!("a stored plugin does not decode: {e}");
                    continue;
                }
            };
            if serving.contains_key(&plugin.name) {
                continue;
            }
            match self.load(&plugin, before.get(&plugin.name)).await {
                Ok(loaded) => {
                    serving.insert(plugin.name.clone(), loaded);
                }
                Err(e) => tracing::error!(plugin = plugin.name, "the deployed plugin cannot be served on this member: {e}"),
            }
        }
        *self.serving.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(serving);
        self.synced.send_modify(|served| *served = (*served).max(generation));
    }

    async fn load(&self, plugin: &StoredPlugin, current: Option<&Arc<Loaded>>) -> Result<Arc<Loaded>, String> {
        let manifest: Manifest = serde_json::from_str(&plugin.manifest).map_err(|e| format!("stored manifest: {e}"))?;
        if let Some(current) = current.filter(|c| c.compiled.hash == content_hash(&plugin.wasm) && c.manifest == manifest) {
            return Ok(current.clone());
        }
        let compiled = self.prepare(&plugin.wasm).await?;
        Ok(Loaded::new(&self.runtime, &plugin.name, compiled, manifest, false))
    }
}

/// Serve each new generation of the deployed plugins, until the member or the registry goes.
async fn follow(registry: Weak<Registry>, store: Arc<Store>, mut changes: watch::Receiver<u64>) {
    while changes.changed().await.is_ok() {
        let generation = *changes.borrow_and_update();
        let Some(registry) = registry.upgrade() else { return };
        registry.reconcile(&store, generation).await;
    }
}
