//! A document's key and its stored form: the JSON text, so `etcdctl get config/NAME` shows it.

use conclave_guest::{Error, KeyValue, Result};
use serde::Serialize;
use serde_json::Value;

/// One version of a document; `value` is null once deleted.
#[derive(Serialize)]
pub struct Version {
    pub version: i64,
    pub value: Value,
}

pub fn key(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::invalid_argument("a config document needs a name"));
    }
    Ok(format!("config/{name}"))
}

pub fn encode(value: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::internal(format!("cannot write JSON: {e}")))
}

/// A value written by hand that is not JSON reads as a JSON string of its text.
pub fn decode(kv: &KeyValue) -> Version {
    let value = serde_json::from_slice(&kv.value)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&kv.value).into_owned()));
    Version { version: kv.mod_revision, value }
}
