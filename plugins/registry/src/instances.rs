//! The unary methods: an instance's entry on its lease, and the live entries of a service.

use conclave_guest::kv::{DeleteRangeRequest, PutRequest, RangeRequest};
use conclave_guest::{Error, kv, lease, Result};
use serde::Serialize;
use serde_json::Value;

use crate::endpoint::{self, Endpoint};

#[derive(Serialize)]
pub struct Registered {
    lease: i64,
    revision: i64,
}

#[derive(Serialize)]
pub struct Alive {
    ttl: i64,
}

#[derive(Serialize)]
pub struct Deregistered {
    deleted: bool,
    revision: i64,
}

#[derive(Serialize)]
pub struct Listed {
    instances: Vec<Listing>,
    revision: i64,
}

#[derive(Serialize)]
struct Listing {
    instance: String,
    addr: String,
    metadata: Value,
    lease: i64,
}

pub fn register(service: &str, instance: &str, endpoint: &Endpoint, ttl: i64) -> Result<Registered> {
    let key = endpoint::key(service, instance)?;
    if ttl <= 0 {
        return Err(Error::invalid_argument(format!("ttl must be a positive number of seconds, not {ttl}")));
    }
    let value = serde_json::to_vec(endpoint).map_err(|e| Error::internal(format!("cannot write endpoint JSON: {e}")))?;
    let grant = lease::grant(ttl)?;
    let put = kv::put_request(&PutRequest::new(key, value).lease(grant.id));
    match put {
        Ok(put) => Ok(Registered { lease: grant.id, revision: put.header.revision }),
        Err(e) => {
            // The lease would only wait out its TTL holding nothing.
            let _ = lease::revoke(grant.id);
            Err(e)
        }
    }
}

pub fn heartbeat(lease: i64) -> Result<Alive> {
    Ok(Alive { ttl: lease::keep_alive(lease)? })
}

pub fn deregister(service: &str, instance: &str) -> Result<Deregistered> {
    let key = endpoint::key(service, instance)?;
    let deleted = kv::delete_range(&DeleteRangeRequest::key(key).prev_kv())?;
    let Some(prev) = deleted.prev_kvs.first() else {
        return Ok(Deregistered { deleted: false, revision: deleted.header.revision });
    };
    if prev.lease != 0 && lease::time_to_live(prev.lease, true)?.keys.is_empty() {
        // Already expired or revoked by someone else is as good.
        let _ = lease::revoke(prev.lease);
    }
    Ok(Deregistered { deleted: true, revision: deleted.header.revision })
}

pub fn list(service: &str) -> Result<Listed> {
    let prefix = endpoint::prefix(service)?;
    let range = kv::range(&RangeRequest::prefix(prefix.as_str()))?;
    let mut instances = Vec::with_capacity(range.kvs.len());
    for kv in &range.kvs {
        let Endpoint { addr, metadata } = endpoint::decode(kv)?;
        instances.push(Listing { instance: endpoint::instance(&prefix, kv)?.to_string(), addr, metadata, lease: kv.lease });
    }
    Ok(Listed { instances, revision: range.header.revision })
}
