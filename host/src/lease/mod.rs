//! Leases: ids with a time to live; keys put with a lease are deleted when it is revoked or expires.
//!
//! The lease *table* ([`LeaseTable`]: id → granted TTL and attached keys) is replicated state: it
//! lives beside the key index in the MVCC store, grants and revokes are raft log entries applied by
//! [`apply`], and lease records are written in the same sled batch as the key records (so a grant
//! and the puts attaching keys to it commit together). Deadlines are *not* replicated: the leader
//! keeps them in memory ([`Lessor`]), restarting every lease's full TTL whenever it takes office,
//! and proposes revocations for expired leases through the normal write path.

pub mod apply;
mod expiry;
mod ids;
mod table;

pub use expiry::{run_expiry, Lessor};
pub use ids::IdGenerator;
pub use table::{decode_record, encode_record, record_key, Lease, LeaseTable, RECORD_PREFIX};

/// etcd's upper bound on a lease TTL, in seconds.
pub const MAX_TTL: i64 = 9_000_000_000;

/// The shortest TTL etcd grants: one and a half election timeouts, rounded up to whole seconds,
/// so a lease cannot expire during a leader change. Shorter requests are raised to it.
pub fn min_ttl(heartbeat_ms: u64, election_ms: u64) -> i64 {
    let heartbeat_ms = heartbeat_ms.max(1);
    let election_ticks = election_ms / heartbeat_ms;
    let min_ms = (3 * election_ticks / 2) * heartbeat_ms;
    min_ms.div_ceil(1000) as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn minimum_ttl_matches_etcd_defaults() {
        // etcd 3.4 with --heartbeat-interval 100 --election-timeout 1000 grants 2 s for `lease grant 1`.
        assert_eq!(super::min_ttl(100, 1000), 2);
        assert_eq!(super::min_ttl(100, 2000), 3);
    }
}
