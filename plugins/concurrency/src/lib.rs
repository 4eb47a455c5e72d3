//! What etcd's `client/v3/concurrency` package builds its Mutex and Election from, on the guest
//! SDK, so the lock and election plugins keep etcd's key layout and ordering: each waiter owns
//! `PREFIX<lease hex>` attached to its lease, the oldest key (lowest create revision) is first,
//! and each waiter waits only for the deletion of the key just older than its own.

pub mod queue;
pub mod wire;

pub use queue::{Deadline, Queued, enqueue, first, wait_turn};
