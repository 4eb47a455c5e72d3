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
