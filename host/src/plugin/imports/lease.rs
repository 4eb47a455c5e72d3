//! `conclave:plugin/lease`: grant, revoke, one keep-alive, time-to-live.

use conclave_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest};

use super::convert;
use crate::error::EtcdError;
use crate::plugin::bindings::conclave::plugin::lease::{Host, LeaseGrant, LeaseStatus};
use crate::plugin::bindings::conclave::plugin::types::{Error, Header};
use crate::plugin::state::CallState;

impl Host for CallState {
    async fn grant(&mut self, ttl: i64, id: i64) -> Result<LeaseGrant, Error> {
        let call = self.context()?;
        let granted = call.service.lease_grant(&call.caller, LeaseGrantRequest { ttl, id }).await.map_err(convert::to_guest_error)?;
        Ok(LeaseGrant { header: convert::header(granted.header), id: granted.id, ttl: granted.ttl })
    }

    async fn revoke(&mut self, id: i64) -> Result<Header, Error> {
        let call = self.context()?;
        match call.service.lease_revoke(&call.caller, LeaseRevokeRequest { id }).await {
            Ok(revoked) => Ok(convert::header(revoked.header)),
            Err(e) => Err(self.refused(e, || format!("revoke of lease {id:x}, which holds a key"))),
        }
    }

    async fn keep_alive(&mut self, id: i64) -> Result<i64, Error> {
        let call = self.context()?;
        let renewed = call.service.lease_keep_alive(&call.caller, id).await.map_err(convert::to_guest_error)?;
        if renewed.ttl <= 0 {
            return Err(convert::to_guest_error(EtcdError::LeaseNotFound));
        }
        Ok(renewed.ttl)
    }

    async fn time_to_live(&mut self, id: i64, keys: bool) -> Result<LeaseStatus, Error> {
        let call = self.context()?;
        let status = call
            .service
            .lease_time_to_live(&call.caller, LeaseTimeToLiveRequest { id, keys })
            .await
            .map_err(convert::to_guest_error)?;
        Ok(LeaseStatus {
            header: convert::header(status.header),
            id: status.id,
            ttl: status.ttl,
            granted_ttl: status.granted_ttl,
            keys: status.keys,
        })
    }
}
