//! Changes made by one write request: puts, range deletes and compaction, all sharing the request's
//! main revision, each change taking the next sub revision.

use bytes::Bytes;
use conclave_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, ResponseHeader,
};
use conclave_proto::mvccpb::KeyValue;

use super::revision::Revision;
use super::span::KeySpan;
use super::store::{ApplyBatch, StoreError, View};
use crate::error::EtcdError;
use crate::lease::Lease;

/// One write request in progress inside an [`ApplyBatch`].
pub struct Writer<'b, 'a> {
    pub(super) batch: &'b mut ApplyBatch<'a>,
    main: i64,
    sub: i64,
}

pub(super) fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

impl View for Writer<'_, '_> {
    fn state(&self) -> &super::store::State {
        self.batch.state()
    }
    fn load(&self, rev: Revision) -> Result<KeyValue, StoreError> {
        self.batch.load(rev)
    }
}

impl<'b, 'a> Writer<'b, 'a> {
    pub fn new(batch: &'b mut ApplyBatch<'a>) -> Self {
        let main = batch.current_rev() + 1;
        Writer { batch, main, sub: 0 }
    }

    fn next_rev(&mut self) -> Revision {
        let rev = Revision::new(self.main, self.sub);
        self.sub += 1;
        // The store revision moves at the first change so reads later in a txn see it.
        self.batch.state.rev = self.main;
        rev
    }

    /// Check a put against the current state: what etcd rejects at apply time.
    pub fn check_put(view: &impl View, req: &PutRequest) -> Result<(), StoreError> {
        if (req.ignore_value || req.ignore_lease) && view.index().get(&req.key, view.current_rev()).is_none() {
            return Err(EtcdError::KeyNotFound.into());
        }
        if req.lease != 0 && !req.ignore_lease && !view.leases().contains(req.lease) {
            return Err(EtcdError::LeaseNotFound.into());
        }
        Ok(())
    }

    /// The value a put replaces is read only when the request needs it: its create revision and
    /// version are in the index, its lease in the lease table, and a watcher that wants it with
    /// the event reads it then (as etcd's do).
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, StoreError> {
        Self::check_put(self.batch, req)?;
        crate::metrics::get().puts.inc();
        let replaced = self.batch.index().visible(&req.key, self.batch.current_rev());
        let prev = match replaced {
            Some(replaced) if req.prev_kv || req.ignore_value || req.ignore_lease => Some(self.batch.load(replaced.rev)?),
            _ => None,
        };
        let rev = self.next_rev();
        let (create_revision, version) = match replaced {
            Some(replaced) => (replaced.created, replaced.version + 1),
            None => (rev.main, 1),
        };
        let kv = KeyValue {
            key: req.key.clone().into(),
            create_revision,
            mod_revision: rev.main,
            version,
            value: match (&prev, req.ignore_value) {
                (Some(p), true) => p.value.clone(),
                _ => req.value.clone().into(),
            },
            lease: match (&prev, req.ignore_lease) {
                (Some(p), true) => p.lease,
                _ => req.lease,
            },
        };
        self.batch.state.leases.attach(&kv.key, kv.lease);
        self.batch.record(rev, kv, prev.clone(), false);
        Ok(PutResponse {
            header: header(self.main),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    /// Like a put, a delete reads the values it removes only when the request asks for them.
    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, StoreError> {
        crate::metrics::get().deletes.inc();
        let span = KeySpan::new(&req.key, &req.range_end);
        let at = self.batch.current_rev();
        let live: Vec<_> = self.batch.index().range(&span, at).map(|(key, value)| (Bytes::copy_from_slice(key), value.rev)).collect();
        let mut prev_kvs = Vec::with_capacity(if req.prev_kv { live.len() } else { 0 });
        for (key, rev) in &live {
            let prev = if req.prev_kv { Some(self.batch.load(*rev)?) } else { None };
            let tomb_rev = self.next_rev();
            let tombstone = KeyValue { key: key.clone(), mod_revision: tomb_rev.main, ..Default::default() };
            self.batch.record(tomb_rev, tombstone, prev.clone(), true);
            self.batch.state.leases.attach(key, 0);
            prev_kvs.extend(prev);
        }
        Ok(DeleteRangeResponse {
            header: header(self.batch.current_rev()),
            deleted: live.len() as i64,
            prev_kvs,
        })
    }

    /// Add a lease record (the lease module checks the request); false if the id is taken.
    pub fn grant_lease(&mut self, id: i64, ttl: i64) -> bool {
        let granted = self.batch.grant_lease(id, ttl);
        if granted {
            crate::metrics::get().leases_granted.inc();
        }
        granted
    }

    /// Remove a lease record, returning the lease with the keys still attached to it.
    pub fn revoke_lease(&mut self, id: i64) -> Option<Lease> {
        let revoked = self.batch.revoke_lease(id);
        if revoked.is_some() {
            crate::metrics::get().leases_revoked.inc();
        }
        revoked
    }

    /// Drop history before `req.revision`; the store revision does not move.
    pub fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, StoreError> {
        let current = self.batch.current_rev();
        if req.revision > current {
            return Err(EtcdError::FutureRev.into());
        }
        if req.revision <= self.batch.compact_rev() {
            return Err(EtcdError::Compacted.into());
        }
        self.batch.wait_for_exports();
        for rev in self.batch.state.index.compact(req.revision) {
            self.batch.forget(rev);
        }
        self.batch.state.compact_rev = req.revision;
        Ok(CompactionResponse { header: header(current) })
    }
}
