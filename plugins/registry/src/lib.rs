//! A service registry in etcd's naming layout, so gRPC clients that resolve services through
//! etcd (`client/v3/naming`) find the instances registered here, and instances registered that
//! way are listed here: `SERVICE/INSTANCE` → `{"Addr":…,"Metadata":…}` on the instance's lease.
//!
//! Methods (JSON payloads and answers):
//! - `register` `{"service","instance","addr","metadata"?,"ttl"?}` → a lease of `ttl` seconds
//!   (default 10) holding the entry: `{"lease", "revision"}`
//! - `heartbeat` `{"lease"}` → one keep-alive: `{"ttl"}`
//! - `deregister` `{"service","instance"}` → the entry deleted, and its lease revoked when it
//!   held nothing else: `{"deleted", "revision"}`
//! - `list` `{"service"}` → `{"instances": [{"instance","addr","metadata","lease"}], "revision"}`
//! - `watch` (streaming) `{"service","from_revision"?}` → `{"type":"join"|"leave","instance",
//!   "addr"?,"revision"}` per change from `from_revision` (default: after the current one);
//!   resuming at the last revision + 1 misses nothing. A put is a join (etcd's resolver treats a
//!   re-put as a replacing add, too).

mod endpoint;
mod instances;
mod membership;

use conclave_guest::{Error, Metadata, Plugin, Result, json};
use serde::Deserialize;
use serde_json::Value;

const DEFAULT_TTL: i64 = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    service: String,
    instance: String,
    addr: String,
    #[serde(default)]
    metadata: Value,
    #[serde(default = "default_ttl")]
    ttl: i64,
}

fn default_ttl() -> i64 {
    DEFAULT_TTL
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Heartbeat {
    lease: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Instance {
    service: String,
    instance: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Service {
    service: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Watch {
    service: String,
    #[serde(default)]
    from_revision: i64,
}

struct Registry;

impl Plugin for Registry {
    fn metadata() -> Metadata {
        Metadata::new("registry", env!("CARGO_PKG_VERSION"))
            .unary("register")
            .unary("heartbeat")
            .unary("deregister")
            .unary("list")
            .streaming("watch")
    }

    fn handle(method: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
        match method {
            "register" => {
                let r: Register = json::parse(&payload)?;
                let endpoint = endpoint::Endpoint { addr: r.addr, metadata: r.metadata };
                json::to_vec(&instances::register(&r.service, &r.instance, &endpoint, r.ttl)?)
            }
            "heartbeat" => {
                let Heartbeat { lease } = json::parse(&payload)?;
                json::to_vec(&instances::heartbeat(lease)?)
            }
            "deregister" => {
                let Instance { service, instance } = json::parse(&payload)?;
                json::to_vec(&instances::deregister(&service, &instance)?)
            }
            "list" => {
                let Service { service } = json::parse(&payload)?;
                json::to_vec(&instances::list(&service)?)
            }
            "watch" => {
                let Watch { service, from_revision } = json::parse(&payload)?;
                membership::watch(&service, from_revision)?;
                Ok(Vec::new())
            }
            _ => Err(Error::unknown_method(method)),
        }
    }
}

conclave_guest::export_plugin!(Registry);
