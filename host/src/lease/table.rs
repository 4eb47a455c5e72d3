//! The replicated lease table and the encoding of its records in the store's sled tree.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Lease records live under this prefix: `l` + id (8 bytes, big-endian) → granted TTL (8 bytes).
pub const RECORD_PREFIX: u8 = b'l';

/// One granted lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// TTL in seconds, as granted (after raising it to the minimum).
    pub ttl: i64,
    /// Live keys whose latest put named this lease.
    pub keys: BTreeSet<Vec<u8>>,
}

/// Every granted, not yet revoked lease.
#[derive(Clone, Debug, Default)]
pub struct LeaseTable {
    leases: BTreeMap<i64, Lease>,
    /// The lease each live key with one is attached to: a put moves its key without reading the
    /// value it replaces.
    attached: HashMap<Vec<u8>, i64>,
}

impl LeaseTable {
    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Ids and granted TTLs, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &Lease)> {
        self.leases.iter().map(|(id, lease)| (*id, lease))
    }

    /// Add a lease; returns false (and changes nothing) if the id is taken.
    pub fn grant(&mut self, id: i64, ttl: i64) -> bool {
        if self.leases.contains_key(&id) {
            return false;
        }
        self.leases.insert(id, Lease { ttl, keys: BTreeSet::new() });
        true
    }

    /// Remove a lease, handing back what it held.
    pub fn revoke(&mut self, id: i64) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        for key in &lease.keys {
            self.attached.remove(key);
        }
        Some(lease)
    }

    /// Attach `key` to lease `to` (0: to none), detaching it from the one it had. An unknown `to`
    /// counts as none: puts are checked against the table before they run.
    pub fn attach(&mut self, key: &[u8], to: i64) {
        let from = self.attached.get(key).copied().unwrap_or(0);
        if from == to {
            return;
        }
        if let Some(lease) = self.leases.get_mut(&from) {
            lease.keys.remove(key);
        }
        match self.leases.get_mut(&to) {
            Some(lease) => {
                lease.keys.insert(key.to_vec());
                self.attached.insert(key.to_vec(), to);
            }
            None => {
                self.attached.remove(key);
            }
        }
    }
}

pub fn record_key(id: i64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = RECORD_PREFIX;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

pub fn encode_record(ttl: i64) -> [u8; 8] {
    ttl.to_be_bytes()
}

/// The (id, granted TTL) of a record, `None` if it is malformed.
pub fn decode_record(key: &[u8], value: &[u8]) -> Option<(i64, i64)> {
    let id = i64::from_be_bytes(key.strip_prefix(&[RECORD_PREFIX])?.try_into().ok()?);
    let ttl = i64::from_be_bytes(value.try_into().ok()?);
    Some((id, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_refuses_taken_ids() {
        let mut table = LeaseTable::default();
        assert!(table.grant(7, 10));
        assert!(!table.grant(7, 20));
        assert_eq!(table.get(7).unwrap().ttl, 10);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn keys_move_between_leases() {
        let mut table = LeaseTable::default();
        table.grant(1, 10);
        table.grant(2, 10);
        table.attach(b"k", 1);
        assert!(table.get(1).unwrap().keys.contains(b"k".as_slice()));
        table.attach(b"k", 2);
        assert!(table.get(1).unwrap().keys.is_empty());
        assert!(table.get(2).unwrap().keys.contains(b"k".as_slice()));
        table.attach(b"k", 0);
        assert!(table.get(2).unwrap().keys.is_empty());
        // A lease that is gone counts as none.
        table.attach(b"k", 1);
        table.attach(b"k", 99);
        assert!(table.get(1).unwrap().keys.is_empty());
        table.attach(b"k", 1);
        assert_eq!(table.get(1).unwrap().keys.len(), 1);
    }

    #[test]
    fn a_revoked_lease_lets_go_of_its_keys() {
        let mut table = LeaseTable::default();
        table.grant(1, 10);
        table.grant(2, 10);
        table.attach(b"k", 1);
        table.revoke(1);
        table.attach(b"k", 2);
        assert_eq!(table.get(2).unwrap().keys.len(), 1);
        table.grant(1, 10);
        table.attach(b"k", 0);
        assert!(table.get(2).unwrap().keys.is_empty(), "detached from the lease it was attached to");
    }

    #[test]
    fn revoke_returns_attached_keys() {
        let mut table = LeaseTable::default();
        table.grant(5, 10);
        table.attach(b"a", 5);
        table.attach(b"b", 5);
        let lease = table.revoke(5).unwrap();
        assert_eq!(lease.keys.into_iter().collect::<Vec<_>>(), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(table.revoke(5).is_none());
        assert!(table.is_empty());
    }

    #[test]
    fn records_round_trip() {
        for id in [1, -3, i64::MAX] {
            assert_eq!(decode_record(&record_key(id), &encode_record(42)), Some((id, 42)));
        }
        assert_eq!(decode_record(b"lshort", &encode_record(1)), None);
    }
}
