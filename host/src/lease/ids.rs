//! Lease ids the server picks when a client asks for id 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Like etcd's request id generator: the member id's low 16 bits on top (so members never pick
/// the same id), the start time in milliseconds below, then a counter. Ids are positive.
pub struct IdGenerator {
    next: AtomicU64,
}

impl IdGenerator {
    pub fn new(member_id: u64) -> Self {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let prefix = (member_id & 0xffff) << 48;
        let suffix = (millis & 0xff_ffff_ffff) << 8;
        IdGenerator { next: AtomicU64::new(prefix | suffix) }
    }

    /// A fresh positive id (never 0, which means "no lease").
    pub fn next(&self) -> i64 {
        loop {
            let id = (self.next.fetch_add(1, Ordering::Relaxed) & i64::MAX as u64) as i64;
            if id != 0 {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_and_distinct() {
        let ids = IdGenerator::new(u64::MAX);
        let a = ids.next();
        let b = ids.next();
        assert!(a > 0 && b > 0);
        assert_ne!(a, b);
    }
}
