//! Config documents: `config/NAME` holds a JSON document, and its version is the key's mod
//! revision, so a version names one write and can be read back while it is not compacted.
//!
//! Methods (JSON payloads and answers):
//! - `publish` `{"name","value"}` → `{"version"}`
//! - `get` `{"name","version"?}` → `{"version","value"}`: the current document, or the one
//!   written at `version`
//! - `compare-and-publish` `{"name","value","version"}` → `{"version"}` if the document is still
//!   at `version` (0: it must not exist), else failed-precondition "stale version V, current is W"
//! - `history` `{"name","limit"?}` → `{"versions":[{"version","value"}…], "compacted"}`, newest
//!   first, back to the document's creation or (`compacted` true) to the compaction
//! - `subscribe` (streaming) `{"name","from_version"?}` → `{"version","value"}` per change from
//!   `from_version` on (`value` null for a delete); without it, the current document first.
//!   Resuming at the last version + 1 misses nothing.

mod document;
mod subscribe;
mod versions;

use conclave_guest::{Error, Metadata, Plugin, Result, json};
use serde::Deserialize;
use serde_json::Value;

const DEFAULT_HISTORY: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    name: String,
    value: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareAndPublish {
    name: String,
    value: Value,
    version: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Get {
    name: String,
    version: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct History {
    name: String,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    name: String,
    from_version: Option<i64>,
}

struct Config;

impl Plugin for Config {
    fn metadata() -> Metadata {
        Metadata::new("config", env!("CARGO_PKG_VERSION"))
            .unary("publish")
            .unary("get")
            .unary("compare-and-publish")
            .unary("history")
            .streaming("subscribe")
    }

    fn handle(method: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
        match method {
            "publish" => {
                let Publish { name, value } = json::parse(&payload)?;
                json::to_vec(&versions::publish(&name, &value)?)
            }
            "compare-and-publish" => {
                let CompareAndPublish { name, value, version } = json::parse(&payload)?;
                json::to_vec(&versions::compare_and_publish(&name, &value, version)?)
            }
            "get" => {
                let Get { name, version } = json::parse(&payload)?;
                json::to_vec(&versions::get(&name, version)?)
            }
            "history" => {
                let History { name, limit } = json::parse(&payload)?;
                json::to_vec(&versions::history(&name, limit.unwrap_or(DEFAULT_HISTORY))?)
            }
            "subscribe" => {
                let Subscribe { name, from_version } = json::parse(&payload)?;
                subscribe::subscribe(&name, from_version)?;
                Ok(Vec::new())
            }
            _ => Err(Error::unknown_method(method)),
        }
    }
}

conclave_guest::export_plugin!(Config);
