//! Instances kept between the calls of a plugin whose manifest allows it (`reuse_instances`).
//! Making an instance and dropping it costs more than a short call's own work: at 64 concurrent
//! lock calls, about 45 µs of the 65 µs a call added to its host requests.
//!
//! An instance goes back only after a unary call that ended as the guest meant it to (an answer
//! or its own error) with no refused key, no refused memory, nothing written to stderr and no
//! WASI resource left open; anything else drops it, as does its `MAX_CALLS`th call. Its linear
//! memory is the guest's own from one call to the next, so only a plugin that keeps nothing of
//! one caller's for the next should allow it (the built-in recipes do).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use wasmtime::Store;

use super::bindings::Recipe;
use super::state::CallState;

/// Calls one instance serves before it is dropped: a guest that leaks a little per call (or
/// fragments its heap) starts again fresh long before that matters.
const MAX_CALLS: u32 = 10_000;
/// Idle instances one plugin keeps: enough for every client of a busy member to find one.
const PER_PLUGIN: usize = 256;

/// An instance between calls, with the store it lives in.
pub struct Kept {
    pub store: Store<CallState>,
    pub instance: Recipe,
    /// Calls it has served.
    pub calls: u32,
}

/// One plugin version's idle instances.
pub struct IdlePool {
    kept: Mutex<Vec<Kept>>,
    all: Arc<AllIdle>,
}

impl IdlePool {
    /// An instance to run the next call on, if one is idle.
    pub fn take(&self) -> Option<Kept> {
        let kept = lock(&self.kept).pop()?;
        self.all.release(1);
        Some(kept)
    }

    /// Keep `kept` for a later call, unless it has served its calls or no room is left (then it
    /// is dropped here).
    pub fn put(&self, mut kept: Kept) {
        kept.store.data_mut().call = None;
        if kept.calls >= MAX_CALLS || !self.all.reserve() {
            return;
        }
        let mut idle = lock(&self.kept);
        if idle.len() >= PER_PLUGIN {
            self.all.release(1);
            return;
        }
        idle.push(kept);
    }

    fn clear(&self) {
        let dropped = std::mem::take(&mut *lock(&self.kept));
        self.all.release(dropped.len());
    }
}

impl Drop for IdlePool {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Every idle pool of a member's engine, so idle instances never keep a call from its slot.
pub struct AllIdle {
    pools: Mutex<Vec<Weak<IdlePool>>>,
    count: AtomicUsize,
    /// Most instances idle at once, over all plugins: a part of the instance slots
    /// (`--plugin-instances`), which calls that run share with the idle.
    budget: usize,
}

impl AllIdle {
    pub fn new(instance_slots: u32) -> Arc<AllIdle> {
        Arc::new(AllIdle { pools: Mutex::new(Vec::new()), count: AtomicUsize::new(0), budget: instance_slots as usize / 4 })
    }

    /// A pool for one plugin version; its instances go with it.
    pub fn pool(self: &Arc<Self>) -> Arc<IdlePool> {
        let pool = Arc::new(IdlePool { kept: Mutex::new(Vec::new()), all: self.clone() });
        let mut pools = lock(&self.pools);
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        pool
    }

    /// Drop every idle instance: a call found no free slot. Whether there were any to drop.
    pub fn evict(&self) -> bool {
        let pools: Vec<_> = lock(&self.pools).iter().filter_map(Weak::upgrade).collect();
        let before = self.count.load(Ordering::Relaxed);
        pools.iter().for_each(|pool| pool.clear());
        before > 0
    }

    /// Room for one more idle instance, counted (and shown in `conclave_plugin_idle_instances`).
    fn reserve(&self) -> bool {
        let reserved = self.count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.budget).then_some(n + 1)).is_ok();
        if reserved {
            crate::metrics::get().plugin_idle_instances.inc();
        }
        reserved
    }

    /// `n` idle instances are gone (taken for a call, or dropped).
    fn release(&self, n: usize) {
        self.count.fetch_sub(n, Ordering::Relaxed);
        crate::metrics::get().plugin_idle_instances.dec_by(n as i64);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
