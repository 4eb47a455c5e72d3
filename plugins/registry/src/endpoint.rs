//! etcd's naming layout (`client/v3/naming/endpoints`): the key `SERVICE/INSTANCE` holds the
//! JSON of Go's `endpoints.Endpoint{Addr, Metadata}`, field names as Go marshals them.

use conclave_guest::{Error, KeyValue, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Serialize, Deserialize)]
pub struct Endpoint {
    #[serde(rename = "Addr")]
    pub addr: String,
    /// Go's `interface{}`: `null` when unset, as etcd writes it.
    #[serde(rename = "Metadata", default)]
    pub metadata: Value,
}

/// The prefix every instance of `service` is under: what etcd's resolver watches for a target.
pub fn prefix(service: &str) -> Result<String> {
    if service.is_empty() {
        return Err(Error::invalid_argument("a service needs a name"));
    }
    Ok(format!("{service}/"))
}

pub fn key(service: &str, instance: &str) -> Result<String> {
    if instance.is_empty() {
        return Err(Error::invalid_argument("an instance needs an id"));
    }
    Ok(format!("{}{instance}", prefix(service)?))
}

/// The instance id: the key after the service's prefix.
pub fn instance<'a>(prefix: &str, kv: &'a KeyValue) -> Result<&'a str> {
    std::str::from_utf8(&kv.key)
        .ok()
        .and_then(|key| key.strip_prefix(prefix))
        .ok_or_else(|| Error::internal(format!("{} is not under {prefix}", String::from_utf8_lossy(&kv.key))))
}

pub fn decode(kv: &KeyValue) -> Result<Endpoint> {
    serde_json::from_slice(&kv.value).map_err(|e| {
        Error::failed_precondition(format!("{} does not hold etcd endpoint JSON: {e}", String::from_utf8_lossy(&kv.key)))
    })
}
