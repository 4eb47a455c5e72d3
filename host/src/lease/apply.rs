//! Applying lease log entries: every member runs these in log order, so all agree on the table
//! and on the revision at which a revoked lease's keys disappear.

use conclave_proto::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    ResponseHeader,
};

use crate::error::EtcdError;
use crate::mvcc::{StoreError, View, Writer};

fn header(view: &impl View) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision: view.current_rev(), ..Default::default() })
}

/// Record a lease. The id and the minimum TTL were settled by the proposer, so the entry means
/// the same on every member.
pub fn grant(writer: &mut Writer<'_, '_>, req: &LeaseGrantRequest) -> Result<LeaseGrantResponse, StoreError> {
    if req.id == 0 {
        return Err(EtcdError::LeaseNotFound.into());
    }
    if req.ttl > super::MAX_TTL {
        return Err(EtcdError::LeaseTtlTooLarge.into());
    }
    if !writer.grant_lease(req.id, req.ttl) {
        return Err(EtcdError::LeaseExists.into());
    }
    Ok(LeaseGrantResponse { header: header(writer), id: req.id, ttl: req.ttl, error: String::new() })
}

/// Drop a lease and delete its keys, all at one new revision (none if it held no keys).
pub fn revoke(writer: &mut Writer<'_, '_>, req: &LeaseRevokeRequest) -> Result<LeaseRevokeResponse, StoreError> {
    let lease = writer.revoke_lease(req.id).ok_or(EtcdError::LeaseNotFound)?;
    // BTreeSet order: keys are deleted in key order, like etcd, each at the next sub revision.
    for key in lease.keys {
        writer.delete_range(&DeleteRangeRequest { key, ..Default::default() })?;
    }
    Ok(LeaseRevokeResponse { header: header(writer) })
}

#[cfg(test)]
mod tests {
    use conclave_proto::etcdserverpb::PutRequest;

    use super::*;
    use crate::mvcc::Store;

    fn put(key: &str, lease: i64) -> PutRequest {
        PutRequest { key: key.into(), value: b"v".to_vec(), lease, ..Default::default() }
    }

    fn grant_req(id: i64, ttl: i64) -> LeaseGrantRequest {
        LeaseGrantRequest { id, ttl }
    }

    /// Run one write request in its own committed batch, like one applied log entry.
    fn write<T>(store: &Store, f: impl FnOnce(&mut Writer<'_, '_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut batch = store.begin();
        let out = f(&mut Writer::new(&mut batch));
        batch.commit(Vec::new(), |_| {}).unwrap();
        out
    }

    #[test]
    fn grant_errors_like_etcd() {
        let store = Store::open(sled::Config::new().temporary(true).open().unwrap().open_tree("t").unwrap()).unwrap();
        write(&store, |w| grant(w, &grant_req(5, 10))).unwrap();
        fn err<T: std::fmt::Debug>(r: Result<T, StoreError>) -> EtcdError {
            match r {
                Err(StoreError::Etcd(e)) => e,
                other => panic!("expected an etcd error, got {other:?}"),
            }
        }
        assert_eq!(err(write(&store, |w| grant(w, &grant_req(5, 10)))), EtcdError::LeaseExists);
        assert_eq!(err(write(&store, |w| grant(w, &grant_req(6, super::super::MAX_TTL + 1)))), EtcdError::LeaseTtlTooLarge);
        assert_eq!(err(write(&store, |w| revoke(w, &LeaseRevokeRequest { id: 6 }))), EtcdError::LeaseNotFound);
        assert_eq!(err(write(&store, |w| w.put(&put("k", 6)))), EtcdError::LeaseNotFound);
    }

    #[test]
    fn table_survives_reopen_and_revoke_deletes_keys_at_one_revision() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = Store::open(db.open_tree("t").unwrap()).unwrap();
        write(&store, |w| grant(w, &grant_req(5, 10))).unwrap();
        write(&store, |w| grant(w, &grant_req(6, 20))).unwrap();
        for key in ["a", "b", "c"] {
            write(&store, |w| w.put(&put(key, 5))).unwrap();
        }
        // "c" moves to lease 6; "b" is deleted; both leave lease 5.
        write(&store, |w| w.put(&put("c", 6))).unwrap();
        write(&store, |w| w.delete_range(&DeleteRangeRequest { key: b"b".to_vec(), ..Default::default() })).unwrap();
        drop(store);

        let store = Store::open(db.open_tree("t").unwrap()).unwrap();
        {
            let view = store.read();
            let leases = view.leases();
            assert_eq!(leases.get(5).unwrap().ttl, 10);
            assert_eq!(leases.get(5).unwrap().keys.iter().collect::<Vec<_>>(), vec![&b"a".to_vec()]);
            assert_eq!(leases.get(6).unwrap().keys.iter().collect::<Vec<_>>(), vec![&b"c".to_vec()]);
        }
        let before = store.read().current_rev();
        write(&store, |w| w.put(&put("d", 5))).unwrap();
        let resp = write(&store, |w| revoke(w, &LeaseRevokeRequest { id: 5 })).unwrap();
        assert_eq!(resp.header.unwrap().revision, before + 2, "a and d go in one revision");
        let view = store.read();
        assert!(view.get(b"a").unwrap().is_none() && view.get(b"d").unwrap().is_none());
        assert!(view.get(b"c").unwrap().is_some());
        assert!(!view.leases().contains(5));
        drop(view);
        drop(store);
        assert!(!Store::open(db.open_tree("t").unwrap()).unwrap().read().leases().contains(5));
    }

    #[test]
    fn revoking_a_lease_without_keys_keeps_the_revision() {
        let store = Store::open(sled::Config::new().temporary(true).open().unwrap().open_tree("t").unwrap()).unwrap();
        write(&store, |w| grant(w, &grant_req(1, 10))).unwrap();
        let rev = store.read().current_rev();
        let resp = write(&store, |w| revoke(w, &LeaseRevokeRequest { id: 1 })).unwrap();
        assert_eq!(resp.header.unwrap().revision, rev);
    }
}
