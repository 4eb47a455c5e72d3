//! Writing and reading versions: the version is the key's mod revision, so an old version is a
//! range at that revision, and the one before it a range at its revision - 1.

use conclave_guest::kv::RangeRequest;
use conclave_guest::{Compare, Error, ErrorCode, KeyValue, Op, OpResponse, Result, Txn, kv};
use serde::Serialize;
use serde_json::Value;

use crate::document::{self, Version};

#[derive(Serialize)]
pub struct Published {
    version: i64,
}

#[derive(Serialize)]
pub struct History {
    versions: Vec<Version>,
    /// The walk stopped at the compaction: older versions are gone.
    compacted: bool,
}

pub fn publish(name: &str, value: &Value) -> Result<Published> {
    let version = kv::put(document::key(name)?, document::encode(value)?)?;
    Ok(Published { version })
}

pub fn compare_and_publish(name: &str, value: &Value, version: i64) -> Result<Published> {
    let key = document::key(name)?;
    let unchanged = if version == 0 { Compare::version(key.as_str()).eq(0) } else { Compare::mod_revision(key.as_str()).eq(version) };
    let response = Txn::new()
        .when([unchanged])
        .and_then([Op::put(key.as_str(), document::encode(value)?)])
        .or_else([Op::get(key.as_str())])
        .commit()?;
    if response.succeeded {
        return Ok(Published { version: response.header.revision });
    }
    let current = match response.responses.first() {
        Some(OpResponse::Range(range)) => range.kvs.first().map_or(0, |kv| kv.mod_revision),
        _ => return Err(Error::internal("txn failure branch did not answer its get")),
    };
    Err(Error::failed_precondition(format!("config {name}: stale version {version}, current is {current}")))
}

pub fn get(name: &str, version: Option<i64>) -> Result<Version> {
    let key = document::key(name)?;
    let Some(version) = version else {
        return kv::get(key.as_str())?.map(|kv| document::decode(&kv)).ok_or_else(|| not_found(name));
    };
    match at(&key, version) {
        Ok(Some(kv)) if kv.mod_revision == version => Ok(document::decode(&kv)),
        Ok(_) => Err(Error::not_found(format!("config {name} has no version {version}"))),
        Err(e) if e.code == ErrorCode::FutureRevision => Err(Error::not_found(format!("config {name} has no version {version} yet"))),
        Err(e) if e.code == ErrorCode::Compacted => Err(compacted(name, &key, version)),
        Err(e) => Err(e),
    }
}

/// Newest first, from the current version back through each one's revision - 1.
pub fn history(name: &str, limit: usize) -> Result<History> {
    let key = document::key(name)?;
    let mut versions = Vec::new();
    let mut next = kv::get(key.as_str())?;
    while let Some(kv) = next {
        if versions.len() == limit {
            break;
        }
        versions.push(document::decode(&kv));
        if kv.version == 1 {
            break;
        }
        next = match at(&key, kv.mod_revision - 1) {
            Ok(kv) => kv,
            Err(e) if e.code == ErrorCode::Compacted => return Ok(History { versions, compacted: true }),
            Err(e) => return Err(e),
        };
    }
    Ok(History { versions, compacted: false })
}

/// A clear answer for a version that is gone, naming the one to use instead.
pub fn compacted(name: &str, key: &str, version: i64) -> Error {
    let now = match kv::get(key) {
        Ok(Some(kv)) => format!("the current version is {}", kv.mod_revision),
        Ok(None) => "the document does not exist now".to_string(),
        Err(e) => format!("the current version is unknown ({e})"),
    };
    Error::new(ErrorCode::Compacted, format!("config {name}: version {version} is compacted; {now}"))
}

fn at(key: &str, revision: i64) -> Result<Option<KeyValue>> {
    Ok(kv::range(&RangeRequest::key(key).at_revision(revision))?.kvs.into_iter().next())
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!("config {name} does not exist"))
}
