//! Leases: etcd's LeaseGrant, LeaseRevoke, one keep-alive and LeaseTimeToLive.

use crate::bindings::conclave::plugin::lease as wit;
use crate::errors::Result;
use crate::kv::Header;

pub use wit::{LeaseGrant, LeaseStatus};

/// Grant a lease of `ttl` seconds with an id the member chooses.
pub fn grant(ttl: i64) -> Result<LeaseGrant> {
    grant_with_id(ttl, 0)
}

/// Grant a lease of `ttl` seconds with the given id (0: the member chooses).
pub fn grant_with_id(ttl: i64, id: i64) -> Result<LeaseGrant> {
    Ok(wit::grant(ttl, id)?)
}

/// Revoke a lease and delete its keys (each must be in the plugin's write grant).
pub fn revoke(id: i64) -> Result<Header> {
    Ok(wit::revoke(id)?)
}

/// Renew a lease once; the answer is its TTL in seconds.
pub fn keep_alive(id: i64) -> Result<i64> {
    Ok(wit::keep_alive(id)?)
}

/// A lease's remaining and granted TTL, with its keys when `keys` is set.
pub fn time_to_live(id: i64, keys: bool) -> Result<LeaseStatus> {
    Ok(wit::time_to_live(id, keys)?)
}
